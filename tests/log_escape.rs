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
