//! Deliberately broken services (the scripts in `tests/fixtures/hostile/`) next to a healthy
//! probe, on a real supervisor running in this test process.
//!
//! Each test checks what the console does about the broken service, and that meanwhile
//! - the console stays responsive: routed echo calls to the probe keep answering within
//!   [`RESPONSIVE`];
//! - its memory stays bounded: this process's VmRSS (the supervisor runs in it) grows by less
//!   than [`MEMORY_BOUND`].
//!
//! The tests take turns ([`SERIAL`]): the RSS figure is the whole process's, and the machine's
//! cores are shared.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Running, alive, all_gone, code, is_state, request, signal, stack, start};
use ratatui::{Terminal, backend::TestBackend};
use rustix::process::Signal;
use switchboard::{
    event::EventKind,
    registry::{self, InstanceHandle, InstanceState},
    router::{GATEWAY, Router},
    tui::{render, state::UiState, theme::Theme},
};
use switchboard_protocol::ErrorCode;

const LIMIT: Duration = Duration::from_secs(10);
/// The longest an echo call to the healthy probe may take while a neighbour misbehaves: a bound
/// no load reaches (calls take milliseconds, under a CPU hog too), not a speed gate. A console
/// that stalled behind the abuse, which never ends by itself, would not answer at all within
/// the call's 5 s deadline. How fast it answers is `switchboard bench`'s to say.
const RESPONSIVE: Duration = Duration::from_secs(3);
/// The most this process's resident memory may grow while a neighbour misbehaves.
const MEMORY_BOUND: u64 = 48 << 20;
/// How long each test lets the hostile service do its worst, at least.
const ABUSE: Duration = Duration::from_secs(3);
/// How long a flood may take to reach the volume that makes it a flood: a bound no load
/// reaches (the floods below write it in well under a second here), not a speed gate.
const FLOOD_LIMIT: Duration = Duration::from_secs(60);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/hostile/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A stack of the healthy probe and `hostile` (TOML keys of one service, without its header).
fn hostile_stack(hostile: &str) -> (switchboard::stack::Stack, tempfile::TempDir) {
    stack(&format!(
        r#"
        name = "hostile"
        [services.healthy]
        builtin = "probe"
        [services.hostile]
        protocol = true
        heartbeat_timeout = "off"
        shutdown_grace = "200ms"
        {hostile}
        "#
    ))
}

/// This process's resident set size, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("no VmRSS");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

fn assert_memory_bounded(before: u64, what: &str) {
    let after = rss();
    let growth = after.saturating_sub(before);
    eprintln!("{what}: RSS {} MiB -> {} MiB", before >> 20, after >> 20);
    assert!(
        growth < MEMORY_BOUND,
        "{what}: RSS grew by {} MiB (bound {} MiB)",
        growth >> 20,
        MEMORY_BOUND >> 20
    );
}

/// Calls the healthy probe's echo over and over until stopped, timing each call.
struct Pinger {
    stop: Arc<AtomicBool>,
    /// Calls answered so far.
    answered: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<(usize, Duration)>,
}

impl Pinger {
    fn start(router: Router) -> Pinger {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = answered.clone();
        let task = tokio::spawn(async move {
            let (mut calls, mut slowest) = (0, Duration::ZERO);
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                let answer = router
                    .call(
                        GATEWAY,
                        request("healthy", "echo", "ping", Duration::from_secs(5)),
                    )
                    .await;
                let took = started.elapsed();
                assert_eq!(code(&answer), None, "healthy probe failed: {answer:?}");
                assert!(
                    took < RESPONSIVE,
                    "healthy probe answered in {took:?} (call {calls})"
                );
                calls += 1;
                counter.store(calls, Ordering::Relaxed);
                slowest = slowest.max(took);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (calls, slowest)
        });
        Pinger {
            stop,
            answered,
            task,
        }
    }

    /// Stops, once it has made its ten calls (however fast the abuse went), and checks that
    /// the probe answered throughout.
    async fn finish(self, what: &str) {
        let deadline = Instant::now() + LIMIT;
        while self.answered.load(Ordering::Relaxed) < 10 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let (calls, slowest) = self
            .task
            .await
            .expect("the healthy probe stopped answering");
        eprintln!("{what}: {calls} echo calls to the healthy probe, slowest {slowest:?}");
        assert!(calls >= 10, "{what}: only {calls} echo calls got through");
    }
}

fn handle(running: &Running, service: &str) -> Arc<InstanceHandle> {
    running.handle(service)
}

fn state(running: &Running, service: &str) -> InstanceState {
    registry::read(running.supervisor.registry())
        .service(service)
        .unwrap()
        .state()
}

/// The last `flood BYTES FRAMES` progress line the flooder logged.
fn flood_progress(running: &Running) -> (u64, u64) {
    running
        .supervisor
        .logs()
        .tail("hostile", 200)
        .iter()
        .rev()
        .find_map(|line| {
            let mut words = line.text.strip_prefix("flood ")?.split_whitespace();
            Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
        })
        .unwrap_or((0, 0))
}

/// Lets the hostile service `pid` run for [`ABUSE`] and until `enough` holds (bounded by
/// [`FLOOD_LIMIT`], failing with `what` there), sampling where it waits in the kernel, and
/// returns how many of the samples found it blocked writing to its stdout pipe: back-pressure,
/// the console reading no faster than it can handle.
async fn abuse_counting_backpressure(
    pid: u32,
    what: &str,
    enough: impl Fn() -> bool,
) -> (usize, usize) {
    let (mut samples, mut blocked) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < ABUSE || !enough() {
        assert!(
            started.elapsed() < FLOOD_LIMIT,
            "{what}: not reached in {FLOOD_LIMIT:?}"
        );
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        samples += 1;
        // `pipe_write`, or `anon_pipe_write` on newer kernels.
        if wchan.ends_with("pipe_write") {
            blocked += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (samples, blocked)
}

async fn stop_and_check_gone(running: Running, pids: &[u32]) {
    running.stop().await;
    assert!(all_gone(pids, LIMIT).await, "a process survived: {pids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_valid_frames_is_read_at_the_consoles_pace() {
    let _serial = SERIAL.lock().await;
    for mode in ["events", "requests"] {
        let (stack, _dir) = hostile_stack(&format!(
            r#"command = "python3"
            args = ["{}", "{mode}"]"#,
            fixture("flood.py")
        ));
        let running = start(stack).await;
        running.ready(LIMIT, &["healthy", "hostile"]).await;
        let pid = handle(&running, "hostile").pid;
        let before = rss();
        let pinger = Pinger::start(running.supervisor.router().clone());
        // Volume, not speed: however slowly the flood goes, it goes on until it is one.
        let what = format!("{mode}: 20,000 frames");
        let (samples, blocked) =
            abuse_counting_backpressure(pid, &what, || flood_progress(&running).1 >= 20_000).await;
        pinger.finish(mode).await;
        eprintln!("{mode}: the flooder was blocked on its pipe in {blocked} of {samples} samples");
        assert!(blocked > 0, "{mode}: never back-pressured");
        assert_memory_bounded(before, mode);
        let (bytes, frames) = flood_progress(&running);
        eprintln!(
            "{mode}: the flooder wrote {frames} frames, {} MiB",
            bytes >> 20
        );
        assert!(frames >= 20_000, "{mode}: no real flood: {frames} frames");
        // Flooding with valid frames is not a fault: it is simply read no faster than the
        // console routes, and stays up.
        assert_eq!(
            handle(&running, "hostile")
                .bad_frames
                .load(Ordering::Relaxed),
            0
        );
        assert_eq!(state(&running, "hostile"), InstanceState::Ready);
        stop_and_check_gone(running, &[pid]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frames_are_dropped_as_they_arrive() {
    let _serial = SERIAL.lock().await;
    let (stack, _dir) = hostile_stack(&format!(
        r#"command = "python3"
        args = ["{}", "giant"]"#,
        fixture("flood.py")
    ));
    let running = start(stack).await;
    running.ready(LIMIT, &["healthy", "hostile"]).await;
    let hostile = handle(&running, "hostile");
    let before = rss();
    let pinger = Pinger::start(running.supervisor.router().clone());
    let (samples, blocked) = abuse_counting_backpressure(hostile.pid, "giant: 96 MiB", || {
        flood_progress(&running).0 > 2 * MEMORY_BOUND
    })
    .await;
    pinger.finish("giant").await;
    eprintln!("giant: the writer was blocked on its pipe in {blocked} of {samples} samples");
    assert!(blocked > 0, "giant: never back-pressured");
    assert_memory_bounded(before, "giant");
    let (bytes, _) = flood_progress(&running);
    eprintln!("giant: {} MiB written", bytes >> 20);
    // Far more than the frame limit (1 MiB) and than the memory bound: it was not buffered.
    assert!(bytes > 2 * MEMORY_BOUND, "only {bytes} bytes written");
    // Three closed 2 MiB frames were dropped and counted; the last one never ends.
    assert_eq!(hostile.bad_frames.load(Ordering::Relaxed), 3);
    let dropped = running
        .supervisor
        .logs()
        .tail("hostile", 1000)
        .iter()
        .filter(|l| l.text.starts_with("bad frame on stdout (TooLarge"))
        .count();
    assert_eq!(dropped, 3);
    stop_and_check_gone(running, &[hostile.pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_stdout_is_counted_and_flags_the_service_degraded() {
    garbage("after").await;
}

/// Garbage before the handshake counts too: the service is flagged once it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_the_handshake_flags_the_service_once_ready() {
    garbage("before").await;
}

async fn garbage(when: &str) {
    let _serial = SERIAL.lock().await;
    let (stack, _dir) = hostile_stack(&format!(
        r#"command = "python3"
        args = ["{}", "{when}"]"#,
        fixture("garbage.py")
    ));
    let mut running = start(stack).await;
    // Not waiting for `hostile` to be ready: it may already be degraded by then.
    running.ready(LIMIT, &["healthy"]).await;
    assert!(
        running
            .until(LIMIT, |r| r.service("hostile").unwrap().instances[0]
                .handle
                .is_some())
            .await
    );
    let hostile = handle(&running, "hostile");
    let before = rss();
    let pinger = Pinger::start(running.supervisor.router().clone());
    let alert = running
        .event(LIMIT, |e| {
            e.service == "hostile" && matches!(e.kind, EventKind::Alert { .. })
        })
        .await
        .expect("no alert about bad frames");
    eprintln!("garbage {when}: {alert:?}");
    assert!(
        running
            .until(LIMIT, |r| r.service("hostile").unwrap().state()
                == InstanceState::Degraded)
            .await,
        "not flagged degraded"
    );
    // All 200 writes arrive (each is one bad frame at least, more where its random bytes hold
    // a zero); nothing in them made the console close the pipe.
    let garbage_done = running
        .until(LIMIT, |_| {
            running
                .supervisor
                .logs()
                .tail("hostile", 1000)
                .iter()
                .any(|l| l.text == "garbage written")
        })
        .await;
    assert!(garbage_done);
    // Written is not yet read: wait for the console to have counted what it can.
    let deadline = Instant::now() + LIMIT;
    while hostile.bad_frames.load(Ordering::Relaxed) < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bad = hostile.bad_frames.load(Ordering::Relaxed);
    eprintln!("garbage {when}: {bad} bad frames");
    assert!(bad >= 200, "{bad} bad frames counted");
    pinger.finish(when).await;
    assert_memory_bounded(before, when);
    assert!(
        alive(hostile.pid),
        "a garbage writer is flagged, not killed"
    );
    stop_and_check_gone(running, &[hostile.pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scribbled_segment_is_flagged_and_the_console_view_survives_it() {
    scribbled_segment("slots").await;
}

/// Huge counters in the segment (the service writes them) must not overflow the sampler's
/// sums: a panic there would end the sampler task, and no service's figures would update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_segment_counters_do_not_stop_the_metrics_sampler() {
    scribbled_segment("counters").await;
}

async fn scribbled_segment(mode: &str) {
    let _serial = SERIAL.lock().await;
    let (stack, _dir) = hostile_stack(&format!(
        r#"command = "python3"
        args = ["{}", "{mode}"]"#,
        fixture("segment.py")
    ));
    let running = start(stack).await;
    let started = Instant::now();
    running.ready(LIMIT, &["healthy", "hostile"]).await;
    let hostile = handle(&running, "hostile");
    let segment = hostile
        .segment
        .clone()
        .expect("a protocol service has a segment");
    let before = rss();
    let pinger = Pinger::start(running.supervisor.router().clone());
    let (mut torn, mut absurd, mut bad_header, mut reads) = (0, 0, 0, 0);
    let mut terminal = Terminal::new(TestBackend::new(140, 40)).unwrap();
    let ui = UiState::new();
    // How many figures the sampler (once a second) has taken of each service.
    let samples = || {
        let metrics = switchboard::monitor::metrics::read(running.supervisor.metrics());
        let samples = |service: &str| metrics.service(service).map_or(0, |m| m.rate_history.len());
        (samples("hostile"), samples("healthy"))
    };
    // For ABUSE at least, and on until every kind of scribble was seen and the sampler took
    // three figures of each service through it: counts, not a race against the clock.
    let abused = Instant::now();
    loop {
        let (hostile_samples, healthy_samples) = samples();
        let seen = bad_header > 0 && torn > 0 && absurd > 0;
        if abused.elapsed() >= ABUSE && seen && hostile_samples >= 3 && healthy_samples >= 3 {
            break;
        }
        assert!(
            abused.elapsed() < FLOOD_LIMIT,
            "{mode}: after {FLOOD_LIMIT:?}: {bad_header} bad headers, {torn} torn, {absurd} \
             absurd; the sampler stopped at {hostile_samples} and {healthy_samples} samples"
        );
        let snapshot = segment.read();
        reads += 1;
        if !snapshot.header_ok {
            bad_header += 1;
        }
        for problem in &snapshot.problems {
            if problem.ends_with(": torn") {
                torn += 1;
            } else if problem.starts_with("slot ") {
                absurd += 1;
            }
        }
        // The console's own path: the sampler's figures, the view built from them, the frame.
        let console = running.supervisor.view(started);
        terminal
            .draw(|frame| {
                render::draw(frame, &console, &ui, &[], &Theme::monochrome());
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    pinger.finish(mode).await;
    assert_memory_bounded(before, mode);
    eprintln!(
        "{mode}: {reads} reads, {bad_header} with a bad header, {torn} torn slots, {absurd} absurd"
    );
    // The sampler kept going over the scribbles: the loop above waited for its figures.
    assert!(alive(hostile.pid));
    stop_and_check_gone(running, &[hostile.pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_reads_stdin_is_congested_and_its_callers_overloaded() {
    let _serial = SERIAL.lock().await;
    let (stack, _dir) = hostile_stack(&format!(
        r#"command = "python3"
        args = ["{}"]"#,
        fixture("deaf.py")
    ));
    let running = start(stack).await;
    running.ready(LIMIT, &["healthy", "hostile"]).await;
    let hostile = handle(&running, "hostile");
    let before = rss();
    let pinger = Pinger::start(running.supervisor.router().clone());
    let router = running.supervisor.router().clone();
    // Big enough that the queue's worth of requests overfills the 64 KiB pipe: the writer then
    // stays blocked, and the service congested.
    let text = "anyone? ".repeat(32);
    let calls: Vec<_> = (0..5000)
        .map(|_| {
            router.call(
                GATEWAY,
                request("hostile", "echo", &text, Duration::from_secs(1)),
            )
        })
        .collect();
    let started = Instant::now();
    // A bound no load reaches, not a speed gate: the calls' deadline is 1 s, and a caller held
    // past it by a deaf service would wait for ever.
    let answers = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(calls))
        .await
        .expect("callers were held past their deadline");
    let took = started.elapsed();
    pinger.finish("deaf").await;
    assert_memory_bounded(before, "deaf");
    let count = |wanted: ErrorCode| answers.iter().filter(|a| code(a) == Some(wanted)).count();
    let overloaded = count(ErrorCode::Overloaded);
    let timeouts = count(ErrorCode::Timeout);
    let refused = count(ErrorCode::CircuitOpen);
    eprintln!(
        "deaf: {timeouts} timed out, {overloaded} overloaded, {refused} refused by the open \
         breaker, in {took:?}"
    );
    // What the pipe and the queue took times out; the first calls past a full queue are
    // overloaded, and those failures open the breaker, which refuses the rest at once.
    assert_eq!(
        overloaded + timeouts + refused,
        answers.len(),
        "every call failed one of these ways"
    );
    assert!(overloaded >= 1 && timeouts >= 1, "{answers:?}");
    assert!(hostile.congested.load(Ordering::Relaxed));
    // It never sees stdin close either, so only the stop sequence's SIGTERM ends it.
    let (report, events) = running.stop().await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Signalled { signal: "SIGTERM" })),
        "{report:?}"
    );
    assert!(all_gone(&[hostile.pid], LIMIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_children_left_behind_do_not_survive_their_parent() {
    let _serial = SERIAL.lock().await;
    let (stack, dir) = hostile_stack(&format!(
        r#"command = "sh"
        args = ["{}"]
        restart = "never""#,
        fixture("forker.sh")
    ));
    let data = stack.data_dir.clone();
    let mut running = start(stack).await;
    running.ready(LIMIT, &["healthy"]).await;
    let before = rss();
    let pinger = Pinger::start(running.supervisor.router().clone());
    // It never handshakes; the file of pids is the sign it is done forking.
    let children_file = data.join("children");
    let started = Instant::now();
    while !children_file.exists() && started.elapsed() < LIMIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let children: Vec<u32> = std::fs::read_to_string(&children_file)
        .expect("the forker never wrote its children")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(children.len(), 100);
    // `$!` is known as soon as the shell forks, before the child has exec'd `sleep`: wait for
    // each to become one (on a loaded machine that takes a moment).
    let is_sleep = |pid: u32| {
        alive(pid)
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .starts_with(b"sleep")
    };
    let deadline = Instant::now() + LIMIT;
    while !children.iter().all(|&pid| is_sleep(pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for &pid in &children {
        assert!(is_sleep(pid), "child {pid} is not a live sleep");
    }
    let parent = handle(&running, "hostile").pid;
    // A hundred extra processes on the machine: the healthy probe still answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(data.join("go"), b"").unwrap();
    assert!(
        running
            .event(LIMIT, |e| is_state(e, "hostile", InstanceState::Exited))
            .await
            .is_some(),
        "the forker did not exit"
    );
    // Reaping the parent took its whole group with it.
    assert!(
        all_gone(&children, Duration::from_secs(5)).await,
        "children outlived their parent: {:?}",
        children.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
    );
    pinger.finish("forker").await;
    assert_memory_bounded(before, "forker");
    stop_and_check_gone(running, &[parent]).await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_closes_stdout_is_killed_and_restarted() {
    let _serial = SERIAL.lock().await;
    let (stack, _dir) = hostile_stack(&format!(
        r#"command = "python3"
        args = ["{}"]
        restart = "on-failure"
        backoff = {{ initial = "10ms", jitter = 0.0 }}"#,
        fixture("mute.py")
    ));
    let mut running = start(stack).await;
    running.ready(LIMIT, &["healthy", "hostile"]).await;
    let first = handle(&running, "hostile").pid;
    let before = rss();
    let pinger = Pinger::start(running.supervisor.router().clone());
    let crashed = running
        .event(LIMIT, |e| is_state(e, "hostile", InstanceState::Crashed))
        .await;
    assert!(crashed.is_some(), "a mute service was left running");
    assert!(all_gone(&[first], LIMIT).await, "the mute process survived");
    let killed = running
        .supervisor
        .logs()
        .tail("hostile", 50)
        .iter()
        .any(|l| {
            l.text
                .starts_with("stdout closed while the process runs on")
        });
    assert!(killed, "no word of why it was killed");
    // The restart policy applies: a fresh instance comes up (and will go the same way).
    let restarted = running
        .until(LIMIT, |r| {
            r.service("hostile").unwrap().instances[0]
                .pid
                .is_some_and(|p| p != first)
        })
        .await;
    assert!(restarted, "not restarted");
    let second = registry::read(running.supervisor.registry())
        .service("hostile")
        .unwrap()
        .instances[0]
        .pid
        .unwrap();
    pinger.finish("mute").await;
    assert_memory_bounded(before, "mute");
    stop_and_check_gone(running, &[first, second]).await;
}

/// A grandchild that calls `setsid()` leaves the service's process group, so the group kill
/// misses it; it still carries the service's lineage, and the stray sweep kills it once the
/// service is reaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grandchild_that_calls_setsid_does_not_outlive_its_service() {
    let _serial = SERIAL.lock().await;
    let (stack, _dir) = common::stack(
        r#"
        name = "escape"
        [services.parent]
        command = "sh"
        args = ["-c", "setsid sleep 600 & echo escaped $!; read x"]
        ready_line = "escaped"
        "#,
    );
    let running = start(stack).await;
    // Killed while the console runs on: its stray goes with it.
    let first = escaped_pid(&running, None).await;
    running
        .supervisor
        .command(switchboard::supervisor::Command::Kill("parent".into()))
        .await
        .unwrap();
    assert_gone_or_kill(first).await;
    // The restarted instance escapes again; stopping the console takes that one too.
    let second = escaped_pid(&running, Some(first)).await;
    running.stop().await;
    assert_gone_or_kill(second).await;
}

/// The pid the `parent` service's newest `escaped PID` line names (not `not`), once it is alive.
async fn escaped_pid(running: &Running, not: Option<u32>) -> u32 {
    let deadline = Instant::now() + LIMIT;
    loop {
        let found = running
            .supervisor
            .logs()
            .tail("parent", 50)
            .into_iter()
            .rev()
            .find_map(|l| l.text.strip_prefix("escaped ")?.trim().parse::<u32>().ok())
            .filter(|pid| Some(*pid) != not && alive(*pid));
        if let Some(pid) = found {
            return pid;
        }
        assert!(Instant::now() < deadline, "no (new) escaped grandchild");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn assert_gone_or_kill(escaped: u32) {
    let gone = all_gone(&[escaped], Duration::from_secs(2)).await;
    if !gone {
        signal(escaped, Signal::KILL);
    }
    assert!(gone, "the setsid grandchild {escaped} survived its service");
}
