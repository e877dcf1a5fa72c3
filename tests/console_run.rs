//! `tui::run`, the console's whole loop, driven on a `TestBackend` with a fake
//! `ConsoleSource`: keys go in as terminal events, commands come out at the source, and the
//! loop ends the way the operator chose, and it draws no more often than its cap. No
//! terminal, no supervisor.
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
    view: Arc<Mutex<ConsoleView>>,
    /// Told when the console asks the stack to stop (`None`: it cannot show a stop).
    stop: Option<tokio::sync::mpsc::UnboundedSender<()>>,
    commands: Arc<Mutex<Vec<Command>>>,
    events: broadcast::Sender<EventView>,
    logs: watch::Sender<u64>,
    refuse: bool,
    lines: Arc<Mutex<Vec<LogView>>>,
    /// The event feed has ended (an attached console's stream gone for good).
    events_closed: bool,
}

impl FakeSource {
    fn new(refuse: bool) -> FakeSource {
        FakeSource {
            view: Arc::new(Mutex::new(ConsoleView {
                stack: "fake".into(),
                services: vec![
                    ServiceRow::new("alpha", InstanceState::Ready),
                    ServiceRow::new("beta", InstanceState::Ready),
                ],
                ..ConsoleView::default()
            })),
            stop: None,
            commands: Arc::default(),
            events: broadcast::channel(16).0,
            logs: watch::Sender::new(0),
            refuse,
            lines: Arc::new(Mutex::new((0..100).map(line).collect())),
            events_closed: false,
        }
    }

    /// `n` more log lines arrive, and the console is told.
    fn append(&self, n: u64) {
        let mut lines = self.lines.lock().unwrap();
        let next = lines.len() as u64;
        lines.extend((next..next + n).map(line));
        self.logs.send_modify(|v| *v += 1);
    }
}

fn line(i: u64) -> LogView {
    LogView {
        seq: i,
        at: std::time::UNIX_EPOCH,
        service: "alpha".into(),
        replica: 0,
        console: false,
        stderr: false,
        text: format!("line {i:03}"),
    }
}

impl ConsoleSource for FakeSource {
    fn view(&self) -> ConsoleView {
        self.view.lock().unwrap().clone()
    }
    fn stop_stack(&self) -> Option<BoxFuture<'static, ()>> {
        let stop = self.stop.clone()?;
        Some(
            async move {
                let _ = stop.send(());
            }
            .boxed(),
        )
    }
    fn logs(&self, _: Option<&str>, _: usize) -> Vec<LogView> {
        self.lines.lock().unwrap().clone()
    }
    fn events(&self) -> EventFeed {
        if self.events_closed {
            // Its sender dropped at once: every receive answers Closed.
            return EventFeed::Remote(broadcast::channel(1).1);
        }
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
    let steps = keys.into_iter().map(Step::Key).collect();
    let (exit, screen, _) = drive_steps(source, steps).await;
    (exit, screen)
}

/// What the operator does next, or what arrives meanwhile.
enum Step {
    Key(std::io::Result<Event>),
    /// This many log lines arrive.
    Lines(u64),
}

/// Runs the steps, a pause after each; returns how the console ended, its last screen, and
/// what it put on the clipboard.
async fn drive_steps(source: FakeSource, steps: Vec<Step>) -> (Exit, String, Vec<String>) {
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
    let (mut typing, input) = mpsc::channel(16);
    let feeder = source.clone();
    let typist = tokio::spawn(async move {
        for step in steps {
            tokio::time::sleep(Duration::from_millis(60)).await;
            match step {
                Step::Key(event) => typing.send(event).await.unwrap(),
                Step::Lines(n) => feeder.append(n),
            }
        }
        // Keep the input open: the loop must end by what was typed, not by the input's end.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(typing);
    });
    let mut copied = Vec::new();
    let exit = run(&mut terminal, source, input, &mut |text| {
        copied.push(text.to_string())
    })
    .await;
    typist.abort();
    (exit, format!("{}", terminal.backend()), copied)
}

/// `tui::run` with nothing to end it but its input; fails the test after ten seconds.
async fn run(
    terminal: &mut Terminal<TestBackend>,
    source: FakeSource,
    input: impl futures::Stream<Item = std::io::Result<Event>> + Unpin,
    clipboard: &mut dyn FnMut(&str),
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
            clipboard,
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
    let exit = run(&mut terminal, FakeSource::new(false), input, &mut |_| {}).await;
    assert!(matches!(exit, Exit::TerminalLost(_)), "{exit:?}");
}

fn special(code: KeyCode) -> Step {
    Step::Key(Ok(Event::Key(KeyEvent::new(code, KeyModifiers::NONE))))
}

/// The number of the bottom log line on screen (`line 094` → 94).
fn bottom_line(screen: &str) -> Option<u32> {
    screen
        .lines()
        .rev()
        .find_map(|l| l.split("line ").nth(1)?.get(..3)?.parse().ok())
}

/// Paused (scrolled back five lines), the pane stays on the lines it shows while twenty more
/// arrive; it used to keep an offset from the newest, and so kept scrolling under `[paused]`.
#[tokio::test]
async fn a_paused_log_pane_stays_put_as_lines_arrive() {
    let mut steps = vec![special(KeyCode::Tab)];
    steps.extend((0..5).map(|_| Step::Key(key('k'))));
    steps.extend([Step::Lines(20), Step::Key(key('q')), Step::Key(key('d'))]);
    let (_, screen, _) = drive_steps(FakeSource::new(false), steps).await;
    assert!(screen.contains("[paused"), "{screen}");
    assert_eq!(bottom_line(&screen), Some(94), "{screen}");
    // Following, it shows the newest.
    let steps = vec![
        special(KeyCode::Tab),
        Step::Lines(20),
        Step::Key(key('q')),
        Step::Key(key('d')),
    ];
    let (_, screen, _) = drive_steps(FakeSource::new(false), steps).await;
    assert_eq!(bottom_line(&screen), Some(119), "{screen}");
}

/// `v` then `y` with the view moved back by a search copies the line on screen, not the newest
/// (which the operator never saw).
#[tokio::test]
async fn v_selects_what_is_on_screen() {
    let mut steps = vec![special(KeyCode::Tab), Step::Key(key('/'))];
    steps.extend("line 040".chars().map(|c| Step::Key(key(c))));
    steps.extend([special(KeyCode::Enter), Step::Key(key('N'))]);
    steps.extend([Step::Key(key('v')), Step::Key(key('y'))]);
    steps.extend([Step::Key(key('q')), Step::Key(key('d'))]);
    let (_, screen, copied) = drive_steps(FakeSource::new(false), steps).await;
    let [text] = copied.as_slice() else {
        panic!("copied {copied:?}\n{screen}")
    };
    let n: u32 = text
        .split("line ")
        .nth(1)
        .and_then(|n| n.get(..3)?.parse().ok())
        .unwrap();
    let bottom = bottom_line(&screen).unwrap();
    assert!(
        (30..=bottom).contains(&n) && bottom < 99,
        "copied {text}, not on screen:\n{screen}"
    );
}

/// A scale the supervisor has done is reported with its number.
#[tokio::test]
async fn a_done_scale_says_scaled_to() {
    let mut steps: Vec<Step> = ":scale alpha 2"
        .chars()
        .map(|c| Step::Key(key(c)))
        .collect();
    steps.push(special(KeyCode::Enter));
    steps.extend([Step::Key(key('q')), Step::Key(key('d'))]);
    let (_, screen, _) = drive_steps(FakeSource::new(false), steps).await;
    assert!(screen.contains("scaled alpha to 2"), "{screen}");
}

/// Runs the console until `during` ends; returns how many frames it drew and for how long it
/// ran.
async fn draws_while(source: FakeSource, during: impl Future<Output = ()>) -> (usize, Duration) {
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
    // Held open: the loop must end by the shutdown, not by the input's end.
    let (_typing, input) = mpsc::channel::<std::io::Result<Event>>(16);
    let started = std::time::Instant::now();
    let exit = tokio::time::timeout(
        Duration::from_secs(20),
        tui::run(
            &mut terminal,
            source,
            input,
            async {
                during.await;
                Exit::Shutdown("measured".into())
            },
            Theme::from_env(),
            || {},
            &mut |_| {},
        ),
    )
    .await
    .expect("the console did not end");
    assert_eq!(exit, Exit::Shutdown("measured".into()));
    (terminal.get_frame().count(), started.elapsed())
}

/// The console redraws at most `MAX_FPS` times a second however fast things change, and when
/// nothing changes only for the snapshot tick (twice a second). Both are upper bounds on the
/// frames drawn in the time the run really took: load only makes for fewer frames, so no load
/// can fail this.
#[tokio::test]
async fn redraws_are_capped_while_the_logs_flood_and_rare_while_idle() {
    let flooding = Duration::from_millis(1500);
    let source = FakeSource::new(false);
    let feeder = source.clone();
    let lines = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sent = lines.clone();
    let (frames, took) = draws_while(source, async move {
        let start = std::time::Instant::now();
        // A new log line about every millisecond: each would be a frame without the cap.
        while start.elapsed() < flooding {
            feeder.append(1);
            sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let lines = lines.load(std::sync::atomic::Ordering::Relaxed);
    let cap = (took.as_secs_f64() * f64::from(tui::MAX_FPS)).ceil() as usize + 2;
    assert!(
        frames <= cap,
        "{frames} frames in {took:?} ({lines} log changes): over the cap of {}/s",
        tui::MAX_FPS
    );
    assert!(
        lines as usize > 2 * cap,
        "the flood was too thin to test the cap: {lines}"
    );
    assert!(frames >= 2, "no redraws while lines arrived: {frames}");

    // Idle: the first frame, then one per snapshot tick (500 ms), nothing else.
    let (frames, took) = draws_while(FakeSource::new(false), async {
        tokio::time::sleep(flooding).await;
    })
    .await;
    let ticks = (took.as_secs_f64() / 0.5).ceil() as usize + 2;
    assert!(
        frames <= ticks,
        "{frames} frames in {took:?} with nothing changing"
    );
}

/// A terminal of `width`×`height` whose frames a test can wait for (see [`Recording`]).
fn recording(width: u16, height: u16) -> (Terminal<Recording>, watch::Receiver<String>) {
    let (frames_tx, frames) = watch::channel(String::new());
    let backend = Recording {
        inner: TestBackend::new(width, height),
        frames: frames_tx,
    };
    (Terminal::new(backend).unwrap(), frames)
}

/// A `TestBackend` that publishes each frame it is given, so a test can wait for a screen
/// while the console runs (rather than sleep and hope).
struct Recording {
    inner: TestBackend,
    frames: watch::Sender<String>,
}

impl ratatui::backend::Backend for Recording {
    type Error = <TestBackend as ratatui::backend::Backend>::Error;
    fn draw<'a, I>(&mut self, content: I) -> Result<(), Self::Error>
    where
        I: Iterator<Item = (u16, u16, &'a ratatui::buffer::Cell)>,
    {
        self.inner.draw(content)
    }
    fn hide_cursor(&mut self) -> Result<(), Self::Error> {
        self.inner.hide_cursor()
    }
    fn show_cursor(&mut self) -> Result<(), Self::Error> {
        self.inner.show_cursor()
    }
    fn get_cursor_position(&mut self) -> Result<ratatui::layout::Position, Self::Error> {
        self.inner.get_cursor_position()
    }
    fn set_cursor_position<P: Into<ratatui::layout::Position>>(
        &mut self,
        position: P,
    ) -> Result<(), Self::Error> {
        self.inner.set_cursor_position(position)
    }
    fn clear(&mut self) -> Result<(), Self::Error> {
        self.inner.clear()
    }
    fn clear_region(&mut self, kind: ratatui::backend::ClearType) -> Result<(), Self::Error> {
        self.inner.clear_region(kind)
    }
    fn size(&self) -> Result<ratatui::layout::Size, Self::Error> {
        self.inner.size()
    }
    fn window_size(&mut self) -> Result<ratatui::backend::WindowSize, Self::Error> {
        self.inner.window_size()
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush()?;
        self.frames.send_replace(self.inner.to_string());
        Ok(())
    }
}

fn replicas(row: &mut ServiceRow, states: &[InstanceState]) {
    row.instances = states
        .iter()
        .enumerate()
        .map(|(i, state)| switchboard::api::ReplicaView {
            replica: i as u32,
            state: *state,
            pid: None,
            uptime: None,
            restarts: 0,
            cpu: 0.0,
            rss: 0,
            stale: false,
            retry_in: None,
            backlog: Default::default(),
        })
        .collect();
}

/// After `q` and `s` the console asks the stack to stop and stays, saying what is left, until
/// nothing runs; then it ends.
#[tokio::test]
async fn quitting_shows_what_is_left_to_stop() {
    use InstanceState::{Ready, Stopped, Stopping};
    let (stop_tx, mut stop_asked) = tokio::sync::mpsc::unbounded_channel();
    let mut source = FakeSource::new(false);
    source.stop = Some(stop_tx);
    let set = |source: &FakeSource, alpha: &[InstanceState], beta: &[InstanceState]| {
        let mut view = source.view.lock().unwrap();
        replicas(&mut view.services[0], alpha);
        replicas(&mut view.services[1], beta);
    };
    set(&source, &[Ready, Ready], &[Ready]);
    let (mut terminal, mut frames) = recording(100, 30);
    let (mut typing, input) = mpsc::channel(16);
    let mut clipboard = |_: &str| {};
    let ui = tui::run(
        &mut terminal,
        source.clone(),
        input,
        std::future::pending::<Exit>(),
        Theme::from_env(),
        || {},
        &mut clipboard,
    );
    tokio::pin!(ui);
    let script = async {
        typing.send(key('q')).await.unwrap();
        typing.send(key('s')).await.unwrap();
        stop_asked.recv().await.unwrap();
        let all = "stopping: 3 of 3 left: alpha#0, alpha#1, beta#0";
        frames.wait_for(|s| s.contains(all)).await.unwrap();
        // alpha#1 is being stopped: it comes first; alpha#0 is gone. (The console reads the
        // view again on its snapshot tick.)
        set(&source, &[Stopped, Stopping], &[Ready]);
        let two = "stopping: 2 of 3 left: alpha#1, beta#0";
        frames.wait_for(|s| s.contains(two)).await.unwrap();
    };
    tokio::select! {
        exit = &mut ui => panic!("the console ended with services running: {exit:?}"),
        () = within(script) => {}
    }
    set(&source, &[Stopped, Stopped], &[Stopped]);
    assert_eq!(within(ui).await, Exit::Quit(Quit::Stop));
    // The input stays open to the end: the console ended because nothing ran.
    drop(typing);
}

/// Awaits `what`, failing the test after ten seconds (a guard, not a timing).
async fn within<F: std::future::Future>(what: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), what)
        .await
        .expect("the console did not get there")
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given, nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// An event feed that has ended leaves the console idle: asked again, a closed feed answers
/// at once, and the loop spun on it (a core at 100 %). On this one-thread runtime the console
/// runs on the test's thread, so the thread's CPU time is the console's. The bound is a
/// quarter of the wall time: idle uses milliseconds; a spin, however loaded the machine, its
/// whole share of a core.
#[tokio::test]
async fn a_closed_event_feed_leaves_the_console_idle() {
    let mut source = FakeSource::new(false);
    source.events_closed = true;
    let before = thread_cpu();
    let (_, took) = draws_while(source, tokio::time::sleep(Duration::from_millis(1500))).await;
    let used = thread_cpu() - before;
    assert!(
        used < took / 4,
        "{used:?} of CPU in {took:?} with a closed event feed: the console spins"
    );
}

/// Expanded replica lines survive the snapshot refresh (the view is read again on every tick,
/// as an attached console's is rebuilt on every update), and `r` on one restarts its service.
#[tokio::test]
async fn replica_rows_survive_a_refresh_and_r_on_one_restarts_its_service() {
    let source = FakeSource::new(false);
    let pids = |source: &FakeSource, first: u32| {
        let mut view = source.view.lock().unwrap();
        let beta = &mut view.services[1];
        replicas(beta, &[InstanceState::Ready, InstanceState::Ready]);
        for (pid, replica) in (first..).zip(&mut beta.instances) {
            replica.pid = Some(pid);
        }
    };
    pids(&source, 4100);
    let (mut terminal, mut frames) = recording(100, 30);
    let (mut typing, input) = mpsc::channel(16);
    let mut clipboard = |_: &str| {};
    let ui = tui::run(
        &mut terminal,
        source.clone(),
        input,
        std::future::pending::<Exit>(),
        Theme::from_env(),
        || {},
        &mut clipboard,
    );
    tokio::pin!(ui);
    let press = |code| Ok(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
    let script = async {
        for code in [KeyCode::Down, KeyCode::Right, KeyCode::Down, KeyCode::Down] {
            typing.send(press(code)).await.unwrap();
        }
        frames.wait_for(|s| s.contains("4101")).await.unwrap();
        // New PIDs: the console picks them up on its snapshot tick, still expanded.
        pids(&source, 4200);
        frames.wait_for(|s| s.contains("4201")).await.unwrap();
        typing.send(key('r')).await.unwrap();
        frames
            .wait_for(|s| s.contains("restarting beta"))
            .await
            .unwrap();
    };
    tokio::select! {
        exit = &mut ui => panic!("the console ended: {exit:?}"),
        () = within(script) => {}
    }
    assert_eq!(
        *source.commands.lock().unwrap(),
        [Command::Restart("beta".into())]
    );
}
