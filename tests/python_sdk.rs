//! The Python SDK (`services/python/switchboard_sdk.py`), written from `protocol/SPEC.md` alone,
//! against the real `switchboard` binary: a Python job (`order_report.py`) calls a Python service
//! (`tests/fixtures/fake_order.py`) through the console, reports progress in its segment and hands
//! back a result. Also runs the SDK's own unit tests (golden frames of SPEC §8).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use common::{SWITCHBOARD, spawn_reading};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn script(relative: &str) -> String {
    let path: PathBuf = repo().join(relative);
    assert!(path.is_file(), "missing {}", path.display());
    path.to_str().unwrap().to_string()
}

/// The stack: the fake order service, and the report job that calls it.
fn stack(order_env: &str, report_extra: &str) -> String {
    format!(
        r#"
name = "python"

[services.order]
command = "python3"
args = ["{order}"]
protocol = true
shutdown_grace = "2s"
{order_env}

[services.report]
kind = "job"
command = "python3"
args = ["{report}"]
protocol = true
calls = ["order"]
{report_extra}
"#,
        order = script("tests/fixtures/fake_order.py"),
        report = script("services/python/order_report.py"),
    )
}

/// A line of `switchboard run`'s stdout and when it arrived.
struct Line {
    at: Instant,
    text: String,
}

/// What `switchboard run` did: its exit status, its stdout, how long it took, and the stack's
/// directory (its logs are under `.switchboard/run/logs`).
struct Outcome {
    status: ExitStatus,
    lines: Vec<Line>,
    elapsed: Duration,
    dir: tempfile::TempDir,
}

/// Runs `switchboard run report -f STACK -- ARGS`, killing it after `limit`.
fn run_job(stack: &str, args: &[&str], limit: Duration) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.toml");
    std::fs::write(&path, stack).unwrap();
    let started = Instant::now();
    let (mut child, rx) = spawn_reading(
        Command::new(SWITCHBOARD)
            .args(["run", "report", "-f", path.to_str().unwrap(), "--"])
            .args(args),
        |text| {
            Some(Line {
                at: Instant::now(),
                text,
            })
        },
    );
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            let seen: Vec<String> = rx.try_iter().map(|l| l.text).collect();
            panic!("`switchboard run` took more than {limit:?}; printed:\n{seen:#?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    // The reader thread ends at EOF, once the console's stdout is closed.
    let lines: Vec<Line> = rx.iter().collect();
    Outcome {
        status,
        lines,
        elapsed,
        dir,
    }
}

/// Asserts the job printed exactly the report of the 137 orders of fake_order.py in pages of 20;
/// returns the index of the result line.
fn assert_exact_report(lines: &[Line]) -> usize {
    let all = printed(lines);
    let done = lines
        .iter()
        .position(|l| l.text.contains(": done: "))
        .unwrap_or_else(|| panic!("no result line:\n{all}"));
    let json = lines[done].text.split_once(": done: ").unwrap().1;
    let result: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(
        result,
        serde_json::json!({
            "orders": 137,
            "revenue_cents": 359_311,
            "by_status": {"cancelled": 27, "paid": 55, "pending": 27, "shipped": 28},
            "top_items": [
                ["thingamajig", 55], ["doohickey", 53], ["gizmo", 51],
                ["whatsit", 49], ["sprocket", 48]
            ],
            "customers": 23,
            "pages": 7
        }),
        "{all}"
    );
    done
}

fn printed(lines: &[Line]) -> String {
    lines
        .iter()
        .map(|l| l.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn python_sdk_unit_tests_pass() {
    let output = Command::new("python3")
        .args(["-m", "unittest", "-v", "tests/fixtures/test_sdk.py"])
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .expect("python3 must be installed");
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    // Not vacuous: the golden-frame tests ran.
    let ran: usize = report
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("no `Ran N tests` line");
    assert!(ran >= 25, "only {ran} tests ran:\n{report}");
    for name in [
        "test_hello_golden",
        "test_request_golden",
        "test_golden_examples",
        "test_requests_get_answers_in_their_encoding",
        "test_report_job_fails_with_the_callee_error_code",
    ] {
        assert!(report.contains(name), "{name} did not run:\n{report}");
    }
}

#[test]
fn python_report_job_pages_through_order_and_returns_the_exact_report() {
    let stack = stack("", r#"depends_on = { order = "ready" }"#);
    let Outcome { status, lines, .. } =
        run_job(&stack, &["page=20", "pace_ms=200"], Duration::from_secs(60));
    let all = printed(&lines);
    assert!(status.success(), "job failed:\n{all}");

    let done = assert_exact_report(&lines);

    // Progress, read from the job's segment by the console while the job ran: several distinct
    // pages, in order, each printed before the result and spread over time.
    let pages: Vec<(usize, &Line)> = lines[..done]
        .iter()
        .filter_map(|l| {
            let rest = l.text.split_once("report: page ")?.1;
            let (done, total) = rest.split_once('/')?;
            (total.trim() == "7").then_some((done.trim().parse().ok()?, l))
        })
        .collect();
    assert!(pages.len() >= 3, "too little progress seen:\n{all}");
    assert!(
        pages.windows(2).all(|w| w[0].0 < w[1].0),
        "pages out of order:\n{all}"
    );
    assert!(pages[0].0 < 7, "first progress only at the end:\n{all}");
    let first = pages.first().unwrap().1.at;
    let last = pages.last().unwrap().1.at;
    assert!(
        last.duration_since(first) >= Duration::from_millis(300),
        "progress lines arrived together, not while the job ran:\n{all}"
    );
}

#[test]
fn python_report_job_fails_clearly_when_order_is_down() {
    // `order` exits at once and is not restarted: no ready instance to call. The console holds
    // calls to a service it still wants until their deadline, so each attempt ends in `timeout`
    // after `call_timeout_ms`; the job retries four times with backoff, then gives up.
    let stack = stack("restart = \"never\"\nenv = { FAKE_ORDER_EXIT = \"1\" }", "");
    let Outcome {
        status,
        lines,
        elapsed,
        ..
    } = run_job(
        &stack,
        &["pace_ms=10", "call_timeout_ms=800"],
        Duration::from_secs(40),
    );
    let all = printed(&lines);
    assert!(!status.success(), "the job succeeded without order:\n{all}");
    let failed = lines
        .iter()
        .find(|l| l.text.contains(": failed: "))
        .unwrap_or_else(|| panic!("no failure line:\n{all}"));
    assert!(
        failed
            .text
            .contains("failed: unavailable: order service unavailable after 5 attempts"),
        "{all}"
    );
    // Five attempts with 0.25 + 0.5 + 1 + 2 s of backoff between them.
    assert!(
        elapsed >= Duration::from_millis(3750),
        "no retries? {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(20), "too slow: {elapsed:?}");
}

#[test]
fn python_report_job_survives_order_crashing_mid_run() {
    // `order` dies without answering its third request; the console answers the job's call
    // `unavailable`, restarts `order` and holds the retried call until it is ready again.
    let stack = stack(
        "env = { FAKE_ORDER_CRASH_ON = \"3\" }",
        r#"depends_on = { order = "ready" }"#,
    );
    let outcome = run_job(&stack, &["page=20", "pace_ms=50"], Duration::from_secs(60));
    let all = printed(&outcome.lines);
    assert!(outcome.status.success(), "job failed:\n{all}");
    assert_exact_report(&outcome.lines);
    assert!(
        outcome.dir.path().join("order-crashed").exists(),
        "order never crashed: the test proves nothing"
    );
    let log = std::fs::read_to_string(outcome.dir.path().join(".switchboard/run/logs/report.log"))
        .unwrap();
    assert!(
        log.contains("attempt 1: unavailable"),
        "the job did not see the crash as `unavailable`:\n{log}"
    );
}
