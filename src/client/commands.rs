//! What `switchboard ps`, `restart`, `stop`, `start`, `kill`, `scale`, `logs` and `run` print
//! when they talk to a running instance.

use std::time::Duration;

use hyper::Method;

use super::{Client, ClientError};
use crate::{
    gateway::admin::{Done, JobRuns, RunStarted, ScaleRequest},
    tui::view::{ConsoleView, LogView},
};

/// How often `run` polls a job's progress.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Percent-encodes a path segment (service names are plain, but a typo should not make a
/// different path).
fn segment(text: &str) -> String {
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
        "stack {} up {}s, gateway {}\n",
        view.stack,
        view.uptime.as_secs(),
        view.gateway.as_deref().unwrap_or("-")
    );
    out.push_str(&format!(
        "{:<16} {:<9} {:>7} {:>8} {:>8} {:>6} {:>9} {:>8} {:>7} {:<9}\n",
        "NAME", "STATE", "READY", "PID", "RESTARTS", "CPU%", "RSS", "REQ/S", "ERR/S", "BREAKER"
    ));
    for s in &view.services {
        out.push_str(&format!(
            "{:<16} {:<9} {:>7} {:>8} {:>8} {:>6.1} {:>9} {:>8.1} {:>7.1} {:<9}\n",
            s.name,
            s.state.as_str(),
            format!("{}/{}", s.ready, s.replicas),
            s.pid.map_or("-".into(), |p| p.to_string()),
            s.restarts,
            s.cpu,
            format!("{:.1}M", s.rss as f64 / (1024.0 * 1024.0)),
            s.request_rate,
            s.error_rate,
            s.breaker,
        ));
    }
    out
}

/// `restart`, `stop`, `start` or `kill` NAME.
pub async fn action(client: &Client, action: &str, name: &str) -> Result<(), ClientError> {
    let path = format!("/admin/services/{}/{action}", segment(name));
    let _: Done = client.json(Method::POST, &path, None::<&()>).await?;
    println!("{name}: {action} requested");
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
            println!("{job} #{run}: {progress}");
            last = progress;
        }
        let outcome = runs
            .runs
            .iter()
            .find(|r| r.run == run)
            .and_then(|r| r.outcome.clone());
        match outcome {
            Some(Ok(result)) => {
                println!("{job} #{run}: done: {result}");
                return Ok(true);
            }
            Some(Err(err)) => {
                println!("{job} #{run}: failed: {err}");
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
