//! What `switchboard ps`, `restart`, `stop`, `start`, `kill`, `scale`, `logs` and `run` print
//! when they talk to a running instance.

use std::time::Duration;

use hyper::Method;

use super::{Client, ClientError};
use crate::{
    api::{ConsoleView, LogView},
    gateway::admin::{Done, JobRuns, RunStarted, ScaleRequest},
    logs::line_codec::visible,
};

/// How often `run` polls a job's progress.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Percent-encodes a path segment (service names are plain, but a typo should not make a
/// different path).
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `switchboard ps`: the service table.
pub async fn ps(client: &Client) -> Result<(), ClientError> {
    let view: ConsoleView = client
        .json(Method::GET, "/admin/services", None::<&()>)
        .await?;
    print!("{}", ps_table(&view));
    Ok(())
}

pub fn ps_table(view: &ConsoleView) -> String {
    let mut out = format!(
        "stack {} up {}, gateway {}\n",
        view.stack,
        crate::api::human::duration(view.uptime),
        view.gateway.as_deref().unwrap_or("-")
    );
    // A stack on several hosts says where each service runs, after its name.
    let hosts = view.services.iter().any(|s| s.host.is_some());
    let name = |name: &str, host: Option<&str>| match host {
        Some(host) if hosts => format!("{name}@{host}"),
        _ => name.to_string(),
    };
    let name_width = view
        .services
        .iter()
        .map(|s| name(&s.name, s.host.as_deref()).chars().count() + 1)
        .max()
        .unwrap_or(0)
        .max(16);
    out.push_str(&format!(
        "{:<name_width$} {:<11} {:>7} {:>8} {:>8} {:>6} {:>9} {:>8} {:>7} {:<9} {}\n",
        "NAME",
        "STATE",
        "READY",
        "PID",
        "RESTARTS",
        "CPU%",
        "RSS",
        "REQ/S",
        "ERR/S",
        "BREAKER",
        "NEXT"
    ));
    for s in &view.services {
        out.push_str(&format!(
            "{:<name_width$} {:<11} {:>7} {:>8} {:>8} {:>6.1} {:>9} {:>8.1} {:>7.1} {:<9} {}\n",
            name(&s.name, s.host.as_deref()),
            s.state.as_str(),
            format!("{}/{}", s.ready, s.replicas),
            // The first replica's, and how many more run.
            match s.pid {
                None => "-".to_string(),
                Some(pid) if s.ready > 1 => format!("{pid}+{}", s.ready - 1),
                Some(pid) => pid.to_string(),
            },
            s.restarts,
            s.cpu,
            if s.pid.is_some() {
                format!("{:.1}M", s.rss as f64 / (1024.0 * 1024.0))
            } else {
                "-".to_string()
            },
            s.request_rate,
            s.error_rate,
            s.breaker,
            next(s),
        ));
    }
    out
}

/// What happens next without anyone acting: the next restart of a failed or backing-off
/// service, or the breaker's next probe.
fn next(service: &crate::api::ServiceRow) -> String {
    let mut next = Vec::new();
    if let Some(retry) = service.retry_in {
        next.push(format!("retry in {}", crate::api::human::duration(retry)));
    }
    if let Some(cooldown) = service.breaker_cooldown {
        next.push(format!(
            "probe in {}",
            crate::api::human::duration(cooldown)
        ));
    }
    if next.is_empty() {
        "-".into()
    } else {
        next.join(", ")
    }
}

/// `restart`, `stop`, `start`, `kill` or `breaker/reset` NAME.
pub async fn action(client: &Client, action: &str, name: &str) -> Result<(), ClientError> {
    let path = format!("/admin/services/{}/{action}", segment(name));
    let _: Done = client.json(Method::POST, &path, None::<&()>).await?;
    match action {
        "breaker/reset" => println!("{name}: breaker closed"),
        _ => println!("{name}: {action} requested"),
    }
    Ok(())
}

pub async fn scale(client: &Client, name: &str, replicas: u32) -> Result<(), ClientError> {
    let path = format!("/admin/services/{}/scale", segment(name));
    let _: Done = client
        .json(Method::POST, &path, Some(&ScaleRequest { replicas }))
        .await?;
    println!("{name}: scaling to {replicas}");
    Ok(())
}

fn print_log(line: &LogView) {
    println!("{}#{} | {}", line.service, line.replica, line.text);
}

/// `logs NAME [-n N] [-f]`.
pub async fn logs(
    client: &Client,
    name: &str,
    tail: usize,
    follow: bool,
) -> Result<(), ClientError> {
    let path = format!("/admin/services/{}/logs?tail={tail}", segment(name));
    if !follow {
        let lines: Vec<LogView> = client.json(Method::GET, &path, None::<&()>).await?;
        lines.iter().for_each(print_log);
        return Ok(());
    }
    client
        .events(&format!("{path}&follow=true"), |event, data| {
            if event == "log"
                && let Ok(line) = serde_json::from_str::<LogView>(data)
            {
                print_log(&line);
            } else if event == "lagged" {
                println!("switchboard: {data} lines not shown (too slow)");
            }
            true
        })
        .await
}

/// `run JOB [params]` on a running instance: starts the run, prints its progress as it
/// changes and its result. Returns whether the run succeeded.
pub async fn run(client: &Client, job: &str, params: Option<&str>) -> Result<bool, ClientError> {
    let params: Option<serde_json::Value> = params
        .map(serde_json::from_str)
        .transpose()
        .map_err(|err| ClientError::Decode(format!("job parameters: {err}")))?;
    let started: RunStarted = client
        .json(
            Method::POST,
            &format!("/admin/jobs/{}/run", segment(job)),
            params.as_ref(),
        )
        .await?;
    let run = started.run;
    let path = format!("/admin/jobs/{}/runs", segment(job));
    let mut last = String::new();
    loop {
        let runs: JobRuns = client.json(Method::GET, &path, None::<&()>).await?;
        let progress = runs
            .tasks
            .iter()
            .map(|t| format!("{} {}/{}", t.label, t.done, t.total))
            .collect::<Vec<_>>()
            .join(", ");
        if !progress.is_empty() && progress != last {
            println!("{job} #{run}: {}", visible(&progress));
            last = progress;
        }
        let outcome = runs
            .runs
            .iter()
            .find(|r| r.run == run)
            .and_then(|r| r.outcome.clone());
        match outcome {
            Some(Ok(result)) => {
                println!("{job} #{run}: done: {}", visible(&result.to_string()));
                return Ok(true);
            }
            Some(Err(err)) => {
                println!("{job} #{run}: failed: {}", visible(&err.to_string()));
                return Ok(false);
            }
            None if runs.state == crate::registry::InstanceState::Failed => {
                println!("{job} #{run}: failed: the job failed");
                return Ok(false);
            }
            None => tokio::time::sleep(POLL_EVERY).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::ps_table;
    use crate::{
        api::{ConsoleView, ServiceRow},
        registry::InstanceState,
    };

    fn row(name: &str, state: InstanceState, ready: u32, pid: Option<u32>) -> ServiceRow {
        ServiceRow {
            ready,
            replicas: ready.max(1),
            pid,
            rss: 20 * 1024 * 1024,
            ..ServiceRow::new(name, state)
        }
    }

    #[test]
    fn ps_counts_the_replicas_beyond_the_first_pid_and_shows_no_memory_for_a_stopped_service() {
        let view = ConsoleView {
            stack: "shop".into(),
            uptime: Duration::from_secs(79),
            gateway: Some("127.0.0.1:8787".into()),
            console_cpu: 0.0,
            console_rss: 0,
            services: vec![
                row("order", InstanceState::Ready, 3, Some(4242)),
                row("user", InstanceState::Ready, 1, Some(4243)),
                row("report", InstanceState::Stopped, 0, None),
            ],
            ..ConsoleView::default()
        };
        let table = ps_table(&view);
        let line = |name: &str| -> Vec<String> {
            table
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        assert!(table.starts_with("stack shop up 1m19s,"), "{table}");
        assert_eq!(
            line("order")[3..7],
            ["4242+2", "0", "0.0", "20.0M"],
            "{table}"
        );
        assert_eq!(line("user")[3], "4243", "{table}");
        assert_eq!(line("report")[3..7], ["-", "0", "0.0", "-"], "{table}");
        assert!(table.lines().next().is_some(), "{table}");
        assert!(line("user").ends_with(&["-".to_string()]), "{table}");
    }

    #[test]
    fn ps_says_when_a_failed_service_is_retried_and_when_its_breaker_probes() {
        let view = ConsoleView {
            services: vec![ServiceRow {
                retry_in: Some(Duration::from_secs(28)),
                breaker: "open".into(),
                breaker_cooldown: Some(Duration::from_secs(4)),
                ..row("order", InstanceState::Failed, 0, None)
            }],
            ..ConsoleView::default()
        };
        let table = ps_table(&view);
        let order = table.lines().find(|l| l.starts_with("order")).unwrap();
        assert!(
            order.ends_with("open      retry in 28s, probe in 4s"),
            "{table}"
        );
    }

    #[test]
    fn ps_names_the_host_of_a_service_elsewhere_and_keeps_its_columns() {
        let mut mail = row("notification", InstanceState::Unreachable, 0, None);
        mail.host = Some("mail-server-2".into());
        let view = ConsoleView {
            stack: "shop".into(),
            services: vec![row("order", InstanceState::Ready, 1, Some(7)), mail],
            ..ConsoleView::default()
        };
        let table = ps_table(&view);
        let state_at = |line: &str| {
            line.find(|c: char| c.is_whitespace())
                .map(|end| end + line[end..].find(|c: char| !c.is_whitespace()).unwrap_or(0))
        };
        let lines: Vec<&str> = table.lines().skip(1).collect();
        assert!(
            lines[2].starts_with("notification@mail-server-2  unreachable"),
            "{table}"
        );
        assert!(lines[1].starts_with("order "), "{table}");
        let columns: Vec<Option<usize>> = lines.iter().map(|l| state_at(l)).collect();
        assert!(columns.windows(2).all(|w| w[0] == w[1]), "{table}");
        // The READY column lines up too, after the longest state.
        let ready_at: Vec<Option<usize>> = lines
            .iter()
            .map(|l| l.find("/1").or(l.find("READY").map(|r| r + 3)))
            .collect();
        assert!(ready_at.windows(2).all(|w| w[0] == w[1]), "{table}");
    }
}
