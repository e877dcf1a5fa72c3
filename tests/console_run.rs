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
        }
    }
}

impl ConsoleSource for FakeSource {
    fn view(&self) -> ConsoleView {
        self.view.clone()
    }
    fn logs(&self, _: Option<&str>, _: usize) -> Vec<LogView> {
        Vec::new()
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
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
    let (mut typing, input) = mpsc::channel(16);
    let keys: Vec<char> = keys.chars().collect();
    let typist = tokio::spawn(async move {
        for c in keys {
            tokio::time::sleep(Duration::from_millis(60)).await;
            typing.send(key(c)).await.unwrap();
        }
        // Keep the input open: the loop must end by what was typed, not by the input's end.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(typing);
    });
    let exit = tokio::time::timeout(
        Duration::from_secs(10),
        tui::run(
            &mut terminal,
            source,
            input,
            std::future::pending::<Exit>(),
            Theme::from_env(),
            || {},
            &mut |_| {},
        ),
    )
    .await
    .expect("the console did not end");
    typist.abort();
    (exit, format!("{}", terminal.backend()))
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
async fn the_end_of_terminal_input_ends_the_ui_as_a_lost_terminal() {
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let input = futures::stream::iter(Vec::<std::io::Result<Event>>::new());
    let exit = tokio::time::timeout(
        Duration::from_secs(10),
        tui::run(
            &mut terminal,
            FakeSource::new(false),
            input,
            std::future::pending::<Exit>(),
            Theme::from_env(),
            || {},
            &mut |_| {},
        ),
    )
    .await
    .unwrap();
    assert!(matches!(exit, Exit::TerminalLost(_)), "{exit:?}");
}
