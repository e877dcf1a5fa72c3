//! A service's output cannot drive the operator's terminal: control bytes it prints (ESC
//! sequences, NUL, BEL) reach the console's log lines and the log file only as visible text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

const STACK: &str = r#"
name = "escape"
[services.hostile]
command = "sh"
args = ["-c", "printf '\\033[2J\\033]0;owned\\007 \\000 done\\n'; printf 'to stderr \\033[31m\\n' >&2; read x"]
shutdown_grace = "1s"
"#;

fn clean(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() && c != '\t' && c != '\n')
}

#[tokio::test]
async fn control_bytes_from_a_service_are_escaped_in_logs_and_log_files() {
    let (stack, dir) = common::stack(STACK);
    let running = common::start(stack).await;
    let seen = running
        .until(Duration::from_secs(10), |_| {
            let lines = running.supervisor.logs().tail("hostile", 50);
            lines.iter().any(|l| l.text.contains("done"))
                && lines.iter().any(|l| l.text.contains("to stderr"))
        })
        .await;
    assert!(seen, "the service's lines never arrived");
    let lines: Vec<String> = running
        .supervisor
        .logs()
        .tail("hostile", 50)
        .iter()
        .map(|l| l.text.clone())
        .collect();
    let out = lines.iter().find(|l| l.contains("done")).unwrap();
    assert_eq!(out, "^[[2J^[]0;owned^G ^@ done");
    assert!(lines.iter().all(|l| clean(l)), "{lines:?}");
    let (report, _) = running.stop().await;
    assert!(report.clean());
    let file =
        std::fs::read_to_string(dir.path().join(".switchboard/run/logs/hostile.log")).unwrap();
    assert!(file.contains("^[[2J"), "{file}");
    assert!(clean(&file), "raw control bytes in the log file: {file:?}");
    // Each line starts with its time in RFC 3339 (UTC, milliseconds), not epoch milliseconds.
    for line in file.lines() {
        let at = line.split(' ').next().unwrap();
        let shape: String = at
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "9999-99-99T99:99:99.999Z", "{line}");
    }
}

/// A directory with `job.py`, a Python job whose task label and error carry ESC sequences and
/// a bell, and `stack.toml` running it as the job `hostile` (`extra`: more keys for it).
fn hostile_job(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sdk = concat!(env!("CARGO_MANIFEST_DIR"), "/services/python");
    std::fs::write(
        dir.path().join("job.py"),
        format!(
            r#"
import sys, time
sys.path.insert(0, "{sdk}")
from switchboard_sdk import Service, JobFailed

def main(params, service):
    task = service.task("\x1b]0;owned\x07\x1b[2J page", total=2)
    task.update(done=1)
    time.sleep(1.0)
    raise JobFailed("\x1b[31mred\x1b[0m and a bell \x07")

raise SystemExit(Service("hostile").run_job(main))
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("stack.toml"),
        format!("name = \"escape-run\"\n[services.hostile]\nkind = \"job\"\ncommand = \"python3\"\nargs = [\"job.py\"]\nprotocol = true\n{extra}\n"),
    )
    .unwrap();
    dir
}

/// What a job tells `switchboard run` (a task's label from its segment, its error) reaches
/// the operator's terminal with its control characters made visible.
#[test]
fn a_job_s_label_and_error_cannot_drive_the_terminal_of_switchboard_run() {
    let dir = hostile_job("");
    let output = std::process::Command::new(common::SWITCHBOARD)
        .args(["run", "hostile", "-f", "stack.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "the job failed: {stdout}");
    assert!(stdout.contains("page 1/2"), "no progress line: {stdout:?}");
    assert!(
        stdout.contains("^[[31mred"),
        "the error is not shown: {stdout:?}"
    );
    assert!(
        clean(&stdout),
        "control characters reached stdout: {stdout:?}"
    );
}
