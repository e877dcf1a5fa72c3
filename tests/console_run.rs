//! `tui::run`, the console's whole loop, driven on a `TestBackend` with a fake
//! `ConsoleSource`: keys go in as terminal events, commands come out at the source, and the
//! loop ends the way the operator chose. No terminal, no supervisor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{FutureExt, SinkExt, channel::mpsc, future::BoxFuture};
use ratatui::{
    Terminal,
    backend::TestBackend,
    crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers},
};
use switchboard::{
    api::{ConsoleView, EventView, HopView, LogView, RouteView, ServiceRow},
    registry::InstanceState,
    supervisor::{Command, Reply},
    tui::{self, ConsoleSource, EventFeed, Exit, LogFeed, state::Quit, theme::Theme},
};
use tokio::sync::{broadcast, watch};

#[derive(Clone)]
struct FakeSource {
    view: ConsoleView,
    commands: Arc<Mutex<Vec<Command>>>,
    events: broadcast::Sender<EventView>,
    logs: watch::Sender<u64>,
    refuse: bool,
    lines: Vec<LogView>,
}

impl FakeSource {
    fn new(refuse: bool) -> FakeSource {
        FakeSource {
            view: ConsoleView {
                stack: "fake".into(),
                services: vec![
                    ServiceRow::new("alpha", InstanceState::Ready),
                    ServiceRow::new("beta", InstanceState::Ready),
                ],
                ..ConsoleView::default()
            },
            commands: Arc::default(),
            events: broadcast::channel(16).0,
            logs: watch::Sender::new(0),
            refuse,
            lines: (0..100)
                .map(|i| LogView {
                    seq: i,
                    at: std::time::UNIX_EPOCH,
                    service: "alpha".into(),
                    replica: 0,
                    console: false,
                    text: format!("line {i:03}"),
                })
                .collect(),
        }
    }
}

impl ConsoleSource for FakeSource {
    fn view(&self) -> ConsoleView {
        self.view.clone()
    }
    fn logs(&self, _: Option<&str>, _: usize) -> Vec<LogView> {
        self.lines.clone()
    }
    fn events(&self) -> EventFeed {
        EventFeed::Remote(self.events.subscribe())
    }
    fn log_feed(&self) -> LogFeed {
        LogFeed::Remote(self.logs.subscribe())
    }
    fn command(&self, command: Command) -> BoxFuture<'static, Result<Reply, String>> {
        self.commands.lock().unwrap().push(command.clone());
        let refuse = self.refuse;
        async move {
            if refuse {
                Err(format!("read-only console: `{command}` refused"))
            } else {
                Ok(Reply::Done)
            }
        }
        .boxed()
    }
    fn calls(&self, _: Option<&str>, _: usize) -> Vec<HopView> {
        Vec::new()
    }
    fn routes(&self, _: Option<&str>) -> Vec<RouteView> {
        Vec::new()
    }
}

fn key(c: char) -> std::io::Result<Event> {
    Ok(Event::Key(KeyEvent::new(
        KeyCode::Char(c),
        KeyModifiers::NONE,
    )))
}

/// Runs the console on a 100×30 `TestBackend`, typing `keys` (a pause after each), and
/// returns how it ended with the last screen.
async fn drive(source: FakeSource, keys: &str) -> (Exit, String) {
    drive_keys(source, keys.chars().map(key).collect()).await
}

async fn drive_keys(source: FakeSource, keys: Vec<std::io::Result<Event>>) -> (Exit, String) {
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
    let (mut typing, input) = mpsc::channel(16);
    let typist = tokio::spawn(async move {
        for event in keys {
            tokio::time::sleep(Duration::from_millis(60)).await;
            typing.send(event).await.unwrap();
        }
        // Keep the input open: the loop must end by what was typed, not by the input's end.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(typing);
    });
    let exit = run(&mut terminal, source, input).await;
    typist.abort();
    (exit, format!("{}", terminal.backend()))
}

/// `tui::run` with nothing to end it but its input; fails the test after ten seconds.
async fn run(
    terminal: &mut Terminal<TestBackend>,
    source: FakeSource,
    input: impl futures::Stream<Item = std::io::Result<Event>> + Unpin,
) -> Exit {
    tokio::time::timeout(
        Duration::from_secs(10),
        tui::run(
            terminal,
            source,
            input,
            std::future::pending::<Exit>(),
            Theme::from_env(),
            || {},
            &mut |_| {},
        ),
    )
    .await
    .expect("the console did not end")
}

#[tokio::test]
async fn r_restarts_the_selected_service_and_q_then_d_detaches() {
    let source = FakeSource::new(false);
    let commands = source.commands.clone();
    let (exit, _) = drive(source, "jrqd").await;
    assert_eq!(exit, Exit::Quit(Quit::Detach));
    assert_eq!(*commands.lock().unwrap(), [Command::Restart("beta".into())]);
}

#[tokio::test]
async fn q_then_s_stops_and_n_stays() {
    let (exit, _) = drive(FakeSource::new(false), "qnqs").await;
    assert_eq!(exit, Exit::Quit(Quit::Stop));
}

#[tokio::test]
async fn a_refused_command_is_a_sentence_on_the_status_line() {
    let source = FakeSource::new(true);
    let (exit, screen) = drive(source, "r+qd").await;
    assert_eq!(exit, Exit::Quit(Quit::Detach));
    // The source's own words, and no Rust Debug text such as `Restart("alpha")`.
    assert!(screen.contains("refused"), "{screen}");
    assert!(!screen.contains("(\""), "{screen}");
}

#[tokio::test]
async fn after_g_the_log_pane_scrolls_down_again_and_k_at_the_top_does_not_pile_up() {
    let tab = Ok(Event::Key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE)));
    let top = |s: &str| -> Option<u32> {
        s.lines()
            .find_map(|l| l.split("line ").nth(1)?.get(..3)?.parse().ok())
    };
    // Tab to the logs, g to the top: the oldest line is on screen.
    let (_, screen) = drive_keys(
        FakeSource::new(false),
        vec![tab, key('g'), key('q'), key('d')],
    )
    .await;
    assert_eq!(top(&screen), Some(0), "{screen}");
    // Five j after g: five lines further down, at once (not after scrolling off an unseen
    // distance first); and k at the top, again and again, then one j: one line down.
    let tab = || Ok(Event::Key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE)));
    let mut keys = vec![tab(), key('g')];
    keys.extend((0..5).map(|_| key('j')));
    keys.extend([key('q'), key('d')]);
    let (_, screen) = drive_keys(FakeSource::new(false), keys).await;
    assert_eq!(top(&screen), Some(5), "{screen}");
    let mut keys = vec![tab(), key('g')];
    keys.extend((0..5).map(|_| key('k')));
    keys.extend([key('j'), key('q'), key('d')]);
    let (_, screen) = drive_keys(FakeSource::new(false), keys).await;
    assert_eq!(top(&screen), Some(1), "{screen}");
}

#[tokio::test]
async fn the_end_of_terminal_input_ends_the_ui_as_a_lost_terminal() {
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let input = futures::stream::iter(Vec::<std::io::Result<Event>>::new());
    let exit = run(&mut terminal, FakeSource::new(false), input).await;
    assert!(matches!(exit, Exit::TerminalLost(_)), "{exit:?}");
}
