//! The real `switchboard` binary as a process: headless mode, signals, `check`, and what is left
//! when the console itself is killed, and `SWITCHBOARD_BUSY_POLL=0`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{SWITCHBOARD, alive, signal, spawn_reading_lines, stack_file};
use rustix::process::Signal;

const STACK: &str = r#"
name = "pids"
[services.one]
command = "sh"
args = ["-c", "echo pid $$; exec sleep 600"]
shutdown_grace = "300ms"
[services.two]
builtin = "probe"
[services.three]
command = "sh"
args = ["-c", "echo pid $$; read x"]
"#;

/// Starts `switchboard up FILE --headless` and collects its stdout lines on a thread.
fn headless(stack: &str) -> (Child, mpsc::Receiver<String>, tempfile::TempDir) {
    let (dir, path) = stack_file(stack);
    let (child, lines) = spawn_reading_lines(
        Command::new(SWITCHBOARD).args(["up", path.to_str().unwrap(), "--headless"]),
        |_| true,
    );
    (child, lines, dir)
}

/// Reads lines until `count` service pids were printed ("pid N" log lines and "spawned pid N"
/// events for services that print nothing).
fn service_pids(lines: &mpsc::Receiver<String>, count: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut pids = Vec::new();
    while pids.len() < count && Instant::now() < deadline {
        let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        if let Some((_, pid)) = line.rsplit_once("spawned pid ") {
            let pid: u32 = pid.trim().parse().unwrap();
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn wait_gone(pids: &[u32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pids.iter().all(|&p| !alive(p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn no_service_survives_the_console_being_killed() {
    let (mut console, lines, _dir) = headless(STACK);
    let pids = service_pids(&lines, 3);
    assert_eq!(pids.len(), 3, "services did not all start: {pids:?}");
    assert!(pids.iter().all(|&p| alive(p)));
    console.kill().unwrap(); // SIGKILL: no chance to clean up.
    console.wait().unwrap();
    assert!(
        wait_gone(&pids, Duration::from_secs(5)),
        "survivors: {:?}",
        pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
    );
}

#[test]
fn sigterm_shuts_down_cleanly_with_exit_code_zero() {
    let (mut console, lines, _dir) = headless(STACK);
    let pids = service_pids(&lines, 3);
    assert_eq!(pids.len(), 3);
    signal(console.id(), Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = console.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "console did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    // `one` and `three` are plain programs, asked with SIGTERM, which ends them; `two` speaks
    // the protocol and exits on Shutdown. None needs more: the stop is clean.
    assert!(wait_gone(&pids, Duration::from_secs(2)));
    let printed: Vec<String> = lines.try_iter().collect();
    let verdict = printed
        .iter()
        .find(|l| l.contains("switchboard: stopped"))
        .expect("no final line");
    assert!(verdict.contains("(clean)"), "{verdict}");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_clean_shutdown_exits_zero() {
    let (mut console, lines, _dir) = headless(
        r#"
        name = "tidy"
        [services.reader]
        command = "sh"
        args = ["-c", "read x"]
        [services.probe]
        builtin = "probe"
        "#,
    );
    let pids = service_pids(&lines, 2);
    assert_eq!(pids.len(), 2);
    signal(console.id(), Signal::TERM);
    let status = console.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // The console exits only once every child has exited: none is left behind, not even for
    // a moment after it.
    let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(
        left.is_empty(),
        "left running after the console exited: {left:?}"
    );
}

#[test]
fn a_hangup_moves_headless_output_to_the_console_log_and_supervision_goes_on() {
    let (mut console, lines, dir) = headless(
        r#"
        name = "hup"
        [services.reader]
        command = "sh"
        args = ["-c", "read x"]
        [services.probe]
        builtin = "probe"
        "#,
    );
    let pids = service_pids(&lines, 2);
    assert_eq!(pids.len(), 2);
    signal(console.id(), Signal::HUP);
    // Its stdout (our pipe) is let go of: the output moved to RUN_DIR/console.log.
    let start = Instant::now();
    while lines.recv_timeout(Duration::from_millis(100)).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "stdout never let go of"
        );
    }
    assert!(console.try_wait().unwrap().is_none(), "the hangup ended it");
    assert!(pids.iter().all(|&pid| common::alive(pid)), "services died");
    let log = dir.path().join(".switchboard/run/console.log");
    // Written by the output thread, just after the output moved.
    let said = |what: &str| {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(what) || start.elapsed() > Duration::from_secs(10) {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let text = said("terminal hung up; going on");
    assert!(text.contains("terminal hung up; going on"), "{text}");
    signal(console.id(), Signal::TERM);
    assert_eq!(console.wait().unwrap().code(), Some(0));
    assert!(wait_gone(&pids, Duration::from_secs(10)));
    let text = said("stopped (clean)");
    assert!(text.contains("stopped (clean)"), "{text}");
}

#[test]
fn check_reports_errors_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\n[services.a]\ncommand = \"true\"\nrestrat = \"always\"\n",
    )
    .unwrap();
    let output = Command::new(SWITCHBOARD)
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("{}:4:1:", path.display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("restrat"), "{stderr}");

    let output = Command::new(SWITCHBOARD).arg("check").output().unwrap();
    assert!(output.status.success(), "the demo stack must check");

    // A command not found is warned about, and the file still checks.
    std::fs::write(
        &path,
        "name = \"ghost\"\n[services.a]\ncommand = \"/nonexistent/x/y\"\n",
    )
    .unwrap();
    let output = Command::new(SWITCHBOARD)
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning: service `a`: command `/nonexistent/x/y` not found"),
        "{stdout}"
    );
}

#[test]
fn bench_refuses_what_it_cannot_measure() {
    for (args, says) in [
        (
            &["bench", "--only", "nothing"][..],
            "no measurement `nothing`",
        ),
        (
            &["bench", "--only", "gateway", "--http-connections", "0"][..],
            "1..=1024",
        ),
        (
            &["bench", "--only", "gateway", "--http-connections", "many"][..],
            "many",
        ),
    ] {
        let output = Command::new(SWITCHBOARD).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// The routing bench's hubs, run with the real peers: with one frame in flight the client
/// times each round trip, and only then.
#[test]
fn the_hubs_measure_their_median_round_trip_with_one_in_flight() {
    use switchboard::bench::pipes::{HubRun, batched_hub, polling_hub};
    let exe = std::path::Path::new(SWITCHBOARD);
    let check = |which: &str, run: HubRun| {
        let p50 = run
            .p50
            .unwrap_or_else(|| panic!("{which}: no round trip measured"));
        // 300 round trips fit in the run, and half of them are at least the median.
        let elapsed = 300.0 / run.rate;
        assert!(
            p50 > Duration::ZERO && p50.as_secs_f64() * 150.0 <= elapsed,
            "{which}: p50 {p50:?} of a {elapsed} s run"
        );
    };
    check("blocking hub", batched_hub(exe, 1, 300, 30).unwrap());
    check("polling hub", polling_hub(exe, 300, 30).unwrap());
    let many = batched_hub(exe, 8, 300, 30).unwrap();
    assert!(many.rate > 0.0);
    assert_eq!(many.p50, None, "round trips overlap with 8 in flight");
    // The hub's threads and both peers did some work for each round trip, and not a second.
    assert!(
        many.cpu_us > 0.0 && many.cpu_us < 1e6,
        "CPU per round trip {} µs",
        many.cpu_us
    );
}

/// The growth bench's bare hub deals one client's frames out over several echo processes and
/// passes their answers back: every round trip comes back (a frame dealt to no echo, or cut at
/// the wrong byte, would leave the client waiting), with more echoes than frames in flight
/// and fewer, through blocking echoes and through ones on a tokio runtime, and its CPU per
/// round trip is measured.
#[test]
fn the_spread_hub_deals_frames_over_the_echoes_and_back() {
    use switchboard::bench::spread_hub;
    for (echo, echoes, in_flight) in [
        ("echo", 1, 4),
        ("echo", 7, 5),
        ("echo", 3, 64),
        ("tokio-echo", 5, 8),
    ] {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let exe = std::path::Path::new(SWITCHBOARD);
            let _ = done.send(spread_hub::run(exe, echo, echoes, in_flight, 3000, 300));
        });
        let run = finished
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!("{echoes} of {echo}, {in_flight} in flight: round trips lost")
            })
            .unwrap();
        let cpu = run.user_us + run.system_us;
        assert!(run.rate > 0.0, "{echoes} echoes: rate {}", run.rate);
        assert!(
            cpu > 0.0 && cpu < 1e6,
            "{echoes} echoes: {cpu} µs a round trip"
        );
        // The echoes are measured from their first frame, not their start-up.
        assert!(
            run.echoes_us > 0.0 && run.echoes_us < 1e6,
            "{echoes} of {echo}: {} µs a round trip",
            run.echoes_us
        );
    }
}

/// The cross-core ping-pong pins its two ends to two of the CPUs this thread may use, and is
/// not measured where it may use only one.
#[test]
fn the_cross_core_ping_pong_needs_two_cpus() {
    use switchboard::bench::pipes::ping_pong_across_cores;
    let exe = std::path::Path::new(SWITCHBOARD);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let times = ping_pong_across_cores(exe, 200).unwrap();
    if cpus >= 2 {
        assert_eq!(times.map(|t| t.len()), Some(200));
    } else {
        eprintln!("skipped: the two-CPU half of this test (this machine offers {cpus} CPU)");
    }
    // On a thread allowed one CPU only.
    let one = std::thread::spawn(move || {
        let mut set = rustix::thread::CpuSet::new();
        set.set(0);
        rustix::thread::sched_setaffinity(None, &set).unwrap();
        ping_pong_across_cores(exe, 200).unwrap()
    })
    .join()
    .unwrap();
    assert!(one.is_none(), "measured across cores on one CPU");
}

#[test]
fn switchboard_run_runs_a_job_with_parameters_and_prints_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.toml");
    std::fs::write(
        &path,
        "name = \"jobs\"\n[services.count]\nkind = \"job\"\nbuiltin = \"probe-job\"\n",
    )
    .unwrap();
    let output = Command::new(SWITCHBOARD)
        .args([
            "run",
            "count",
            "-f",
            path.to_str().unwrap(),
            "--",
            "steps=4",
            "pace_ms=150",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("probe steps"),
        "no progress printed: {stdout}"
    );
    assert!(stdout.contains("\"sum\":10"), "no result: {stdout}");

    let failing = Command::new(SWITCHBOARD)
        .args([
            "run",
            "count",
            "-f",
            path.to_str().unwrap(),
            "--",
            r#"{"steps": 2, "fail": true}"#,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!failing.status.success());
    assert!(String::from_utf8_lossy(&failing.stdout).contains("failed on purpose"));
}

/// A plain program is asked to stop with its `stop_signal` at once (not after a grace spent
/// waiting on stdin), and one that exits when asked has stopped cleanly: exit code 0.
#[test]
fn a_plain_program_gets_its_stop_signal_first_and_stops_clean() {
    let (mut console, lines, _dir) = headless(
        r#"
        name = "asked"
        [services.waiter]
        command = "sh"
        args = ["-c", "trap 'echo asked with USR1; exit 0' USR1; echo listening; while :; do sleep 0.05; done"]
        stop_signal = "USR1"
        # Were the signal sent only after the grace, this test would outwait its bound.
        stop_grace = "60s"
        "#,
    );
    // Its trap is set once it says so (a spawn is announced before the shell runs).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut printed = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "the program never started");
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            let done = line.contains("listening");
            printed.push(line);
            if done {
                break;
            }
        }
    }
    signal(console.id(), Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = console.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the stop waited for the grace");
        std::thread::sleep(Duration::from_millis(20));
    };
    printed.extend(lines.try_iter());
    assert!(
        printed.iter().any(|l| l.contains("asked with USR1")),
        "{printed:#?}"
    );
    assert!(
        printed
            .iter()
            .any(|l| l.contains("sent SIGUSR1 to the process group")),
        "{printed:#?}"
    );
    assert!(
        printed
            .iter()
            .any(|l| l.contains("switchboard: stopped (clean)")),
        "{printed:#?}"
    );
    assert_eq!(status.code(), Some(0));
}

/// A plain program that ignores its stop signal is SIGKILLed after the grace, and the stop
/// says it was forced (exit code 3).
#[test]
fn a_plain_program_that_ignores_its_stop_signal_is_killed_and_the_stop_is_forced() {
    let (mut console, lines, _dir) = headless(
        r#"
        name = "deaf"
        [services.deaf]
        command = "sh"
        args = ["-c", "trap '' TERM; echo deaf from now on; while :; do sleep 0.05; done"]
        stop_grace = "300ms"
        "#,
    );
    // Its trap is set once it says so (a spawn is announced before the shell runs).
    let deadline = Instant::now() + Duration::from_secs(15);
    while !lines
        .recv_timeout(Duration::from_millis(200))
        .is_ok_and(|l| l.contains("deaf from now on"))
    {
        assert!(Instant::now() < deadline, "the program never started");
    }
    signal(console.id(), Signal::TERM);
    let status = console.wait().unwrap();
    let printed: Vec<String> = lines.try_iter().collect();
    let verdict = printed
        .iter()
        .find(|l| l.contains("switchboard: stopped"))
        .expect("no final line");
    assert!(verdict.contains("forced: deaf#0 (SIGKILL)"), "{verdict}");
    assert_eq!(status.code(), Some(3));
}

/// A stack whose gateway address is taken (a second stack on 8787) runs without a gateway and
/// says so loudly, naming the address and how to choose another; `bind = "off"` is accepted.
#[test]
fn a_taken_gateway_address_is_said_loudly_and_bind_off_is_accepted() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let stack = format!(
        "name = \"taken\"\n[gateway]\nbind = \"{address}\"\n[services.one]\ncommand = \"sh\"\nargs = [\"-c\", \"read x\"]\n"
    );
    let (mut console, lines, _dir) = headless(&stack);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut said = Vec::new();
    while Instant::now() < deadline {
        let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let done = line.contains("no HTTP gateway");
        said.push(line);
        if done {
            break;
        }
    }
    signal(console.id(), Signal::TERM);
    console.wait().unwrap();
    let line = said.iter().find(|l| l.contains("no HTTP gateway"));
    let line = line.unwrap_or_else(|| panic!("not said: {said:#?}"));
    for must in [
        address.to_string().as_str(),
        "--gateway 127.0.0.1:0",
        "[gateway] bind",
    ] {
        assert!(line.contains(must), "{must} missing: {line}");
    }

    let (dir, path) =
        stack_file("name = \"off\"\n[gateway]\nbind = \"off\"\n[services.a]\ncommand = \"sh\"\n");
    let output = Command::new(SWITCHBOARD)
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    drop(dir);
}

#[test]
fn init_writes_the_demo_stack_and_will_not_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(SWITCHBOARD)
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    assert!(run(&["init"]).status.success());
    let written = std::fs::read_to_string(dir.path().join("stack.toml")).unwrap();
    assert_eq!(written, switchboard::stack::DEMO_TOML);
    assert!(run(&["check", "stack.toml"]).status.success());
    std::fs::write(dir.path().join("stack.toml"), "name = \"mine\"\n").unwrap();
    let refused = run(&["init"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stack.toml")).unwrap(),
        "name = \"mine\"\n"
    );
    assert!(run(&["init", "--force"]).status.success());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stack.toml")).unwrap(),
        switchboard::stack::DEMO_TOML
    );
}

/// `--fresh` empties the data directory before anything starts; SIGINT stops a headless stack
/// as SIGTERM does, cleanly.
#[test]
fn fresh_empties_the_data_dir_and_sigint_stops_headless_cleanly() {
    let (dir, path) = stack_file(
        r#"
        name = "fresh"
        data_dir = "data"
        [services.reader]
        command = "sh"
        args = ["-c", "read x"]
        "#,
    );
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("old.db"), b"from an earlier run").unwrap();
    let (mut console, lines) = spawn_reading_lines(
        Command::new(SWITCHBOARD).args(["up", path.to_str().unwrap(), "--headless", "--fresh"]),
        |_| true,
    );
    assert_eq!(service_pids(&lines, 1).len(), 1);
    assert!(!data.join("old.db").exists(), "--fresh kept the old data");
    signal(console.id(), Signal::INT);
    let status = console.wait().unwrap();
    let printed: Vec<String> = lines.try_iter().collect();
    assert!(
        printed
            .iter()
            .any(|l| l.contains("switchboard: stopped (clean)")),
        "{printed:#?}"
    );
    assert_eq!(status.code(), Some(0));
}

/// One `GET /metrics` over plain HTTP/1.1 on loopback; the body.
fn scrape(address: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The value of the first sample of `metric` whose labels contain every one of `labels`.
fn sample(scrape: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(metric))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Runs a stack where `caller` calls `echo` as fast as it can, headless, with
/// `SWITCHBOARD_BUSY_POLL=0` or without; after 1000 routed calls, the console's busy-polling
/// seconds from `/metrics` and whether echo's environment holds the setting.
fn busy_polled_under_load(off: bool) -> (f64, bool) {
    let (_dir, path) = stack_file(
        r#"
        name = "polling"
        [services.echo]
        builtin = "probe"
        [services.caller]
        builtin = "probe"
        env = { PROBE_LOAD_TARGET = "echo.echo", PROBE_LOAD_RATE = "20000" }
        calls = ["echo"]
        "#,
    );
    let mut command = Command::new(SWITCHBOARD);
    command.args([
        "up",
        path.to_str().unwrap(),
        "--headless",
        "--gateway",
        "127.0.0.1:0",
    ]);
    if off {
        command.env("SWITCHBOARD_BUSY_POLL", "0");
    } else {
        command.env_remove("SWITCHBOARD_BUSY_POLL");
    }
    let (mut console, lines) = spawn_reading_lines(&mut command, |_| true);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut address = None;
    let mut pids = Vec::new();
    while (address.is_none() || pids.len() < 2) && Instant::now() < deadline {
        let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        if let Some(rest) = line.split("gateway on http://").nth(1) {
            address = rest.split(' ').next().map(str::to_string);
        }
        if let Some((_, pid)) = line.rsplit_once("spawned pid ") {
            pids.push(pid.trim().parse::<u32>().unwrap());
        }
    }
    let address = address.expect("the gateway never said where it listens");
    let said = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
            env.split(|&b| b == 0)
                .any(|v| v == b"SWITCHBOARD_BUSY_POLL=0")
        })
    };
    let services_told = pids.len() == 2 && pids.iter().all(|&pid| said(pid));
    let polled = loop {
        let text = scrape(&address);
        let calls = sample(
            &text,
            "switchboard_route_requests_total",
            &["from=\"caller\"", "to=\"echo\""],
        );
        assert_eq!(
            sample(
                &text,
                "switchboard_route_errors_total",
                &["from=\"caller\""]
            )
            .unwrap_or(0.0),
            0.0,
            "the caller's calls failed"
        );
        if calls.is_some_and(|c| c >= 1000.0) {
            break sample(&text, "switchboard_router_busy_poll_seconds_total", &[])
                .expect("no busy_poll_seconds_total in /metrics");
        }
        assert!(
            Instant::now() < deadline,
            "caller never made 1000 calls in 60 s: {calls:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    signal(console.id(), Signal::TERM);
    console.wait().unwrap();
    (polled, services_told)
}

/// `SWITCHBOARD_BUSY_POLL=0` turns busy polling off in the console (its polling seconds stay
/// 0 under a stream of routed calls) and is passed on to the services it starts, whose SDK
/// reads it. Without it the same traffic is polled for, where there are two CPUs to poll on.
#[test]
fn busy_poll_zero_turns_polling_off_in_the_console_and_its_services() {
    let (polled, told) = busy_polled_under_load(true);
    assert_eq!(
        polled, 0.0,
        "the console busy-polled with SWITCHBOARD_BUSY_POLL=0"
    );
    assert!(told, "the services were not given SWITCHBOARD_BUSY_POLL=0");
    if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
        eprintln!("one CPU: no busy polling either way, the comparison run is skipped");
        return;
    }
    let (polled, told) = busy_polled_under_load(false);
    assert!(
        polled > 0.0,
        "the same traffic was not polled for without the setting"
    );
    assert!(!told);
}

/// `THP_enabled` of /proc/PID/status: 0 once the process turned transparent huge pages off.
fn huge_pages_enabled(pid: u32) -> Option<u8> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))?
        .trim()
        .parse()
        .ok()
}

#[test]
fn the_console_runs_without_huge_pages_and_its_plain_programs_as_they_were() {
    if huge_pages_enabled(std::process::id()) != Some(1) {
        return; // This kernel or its parent already decided; nothing to tell apart.
    }
    let (mut console, lines, _dir) = headless(STACK);
    let pids = service_pids(&lines, 3);
    assert_eq!(pids.len(), 3, "services did not all start: {pids:?}");
    assert_eq!(huge_pages_enabled(console.id()), Some(0), "the console");
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let builtin = String::from_utf8_lossy(&cmdline).contains("switchboard");
        // A builtin turns them off itself (MIMALLOC_ALLOW_THP=0), once it has started.
        if !builtin {
            assert_eq!(huge_pages_enabled(pid), Some(1), "plain program {pid}");
        }
    }
    signal(console.id(), Signal::TERM);
    console.wait().unwrap();
}

/// A console that is itself a service of another stack has `SWITCHBOARD_SEGMENT_FD` in its
/// environment; its plain programs (no segment of their own) must not inherit it, and its
/// protocol services get their own.
#[test]
fn a_plain_program_never_inherits_the_console_s_own_segment_variable() {
    let (dir, path) = stack_file(
        r#"
name = "nested"
[services.plain]
command = "sh"
args = ["-c", "echo \"fd=$${SWITCHBOARD_SEGMENT_FD-unset} service=$SWITCHBOARD_SERVICE\"; read x"]
shutdown_grace = "1s"
"#,
    );
    let (mut child, lines) = spawn_reading_lines(
        Command::new(SWITCHBOARD)
            .args(["up", path.to_str().unwrap(), "--headless"])
            .env("SWITCHBOARD_SEGMENT_FD", "3")
            .env("SWITCHBOARD_SERVICE", "outer"),
        |line| line.contains("fd="),
    );
    let line = lines.recv_timeout(Duration::from_secs(15));
    signal(child.id(), rustix::process::Signal::TERM);
    let _ = child.wait();
    drop(dir);
    let line = line.expect("the program's line never came");
    assert!(line.contains("fd=unset service=plain"), "{line}");
}
