//! A service that floods its log cannot hurt routing: the real `switchboard` binary runs
//! headless with a plain program writing `yes` to both stdout and stderr beside a protocol
//! service, and calls through the gateway keep being answered while the flood goes on. The
//! lines over the flooder's budget are dropped and counted (`/metrics`), its log says so, and
//! headless stdout holds to its own output budget and says so too. No timing is checked here:
//! speed is measured by `switchboard bench --only noisy`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    process::{Child, Command},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{SWITCHBOARD, spawn_reading_lines, stack_file};
use hyper::Method;
use switchboard::client::Client;

const STACK: &str = r#"
name = "flood"
[console]
output_budget = { lines = 50, bytes = "64KiB" }
[services.echo]
builtin = "probe"
[services.flood]
command = "sh"
# Stops its floods when stdin closes, so the console's stop is a clean one.
args = ["-c", "yes 'flood to stderr' >&2 & e=$!; yes 'flood line' & o=$!; read x; kill $e $o"]
log_budget = { lines = 200, bytes = "64KiB" }
shutdown_grace = "300ms"
"#;

/// Calls made through the gateway while the flood runs.
const CALLS: usize = 300;
const LIMIT: Duration = Duration::from_secs(30);

/// The console under test, SIGKILLed if the test fails before stopping it.
struct Console {
    child: Child,
    _dir: tempfile::TempDir,
    client: Client,
    /// Headless stdout: the console's own lines and the notes of lines not printed.
    said: mpsc::Receiver<String>,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Console {
    let (dir, stack) = stack_file(STACK);
    let (child, said) = spawn_reading_lines(
        Command::new(SWITCHBOARD)
            .args(["up", stack.to_str().unwrap(), "--headless"])
            .args(["--gateway", "127.0.0.1:0"])
            .env_remove("SWITCHBOARD_TOKEN"),
        |line| line.starts_with("switchboard:"),
    );
    let deadline = Instant::now() + LIMIT;
    let address = loop {
        let line = said
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the console did not print its gateway address");
        if let Some(address) = common::gateway_address(&line) {
            break address;
        }
    };
    let client = common::gateway_client(dir.path(), address);
    Console {
        child,
        _dir: dir,
        client,
        said,
    }
}

impl Console {
    async fn text(&self, path: &str) -> String {
        let response = self.client.send(Method::GET, path, None).await.unwrap();
        assert!(response.status.is_success(), "{path}: {}", response.status);
        String::from_utf8_lossy(&response.body).into_owned()
    }

    async fn echo(&self, text: &str) -> Result<String, String> {
        self.client
            .json::<String>(Method::POST, "/call/echo/echo", Some(&text))
            .await
            .map_err(|err| err.to_string())
    }

    /// The flooder's dropped-lines counter in `/metrics`.
    async fn dropped(&self) -> f64 {
        let scrape = self.text("/metrics").await;
        scrape
            .lines()
            .find_map(|line| {
                line.strip_prefix("switchboard_log_lines_dropped_total{service=\"flood\"} ")
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no dropped-lines counter for flood:\n{scrape}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_service_beside_routed_calls_is_held_to_its_budget() {
    let mut console = start();
    // The probe answers once ready; the flood is running by then.
    let deadline = Instant::now() + LIMIT;
    while console.echo("up?").await.is_err() {
        assert!(Instant::now() < deadline, "echo never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = console.dropped().await;

    for i in 0..CALLS {
        let text = format!("call {i}");
        assert_eq!(console.echo(&text).await, Ok(text), "call {i} of {CALLS}");
    }

    // Both pipes flood far past 200 lines a second: the counter keeps growing.
    let after = console.dropped().await;
    assert!(
        after > before,
        "no lines counted as dropped: {before} then {after}"
    );
    assert!(
        console.child.try_wait().unwrap().is_none(),
        "the console died"
    );

    // The flooder's log holds what was kept, from both pipes, and the notes of what was not.
    let deadline = Instant::now() + LIMIT;
    let logs = loop {
        let logs = console.text("/admin/services/flood/logs?tail=2000").await;
        if logs.contains("lines dropped: over the log budget of 200 lines/s, 64KiB/s") {
            break logs;
        }
        assert!(Instant::now() < deadline, "no dropped-lines note:\n{logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(logs.contains("flood line"), "{logs}");
    assert!(logs.contains("flood to stderr"), "{logs}");

    // Headless stdout prints 50 lines a second of it, and says what it left out.
    let deadline = Instant::now() + LIMIT;
    loop {
        let line = console
            .said
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("headless never said it left lines out");
        if line.contains("log lines not printed: over the output budget of 50 lines/s") {
            break;
        }
    }

    common::signal(console.child.id(), rustix::process::Signal::TERM);
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = console.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the console did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "not a clean stop");
}
