//! Liveness probes (`probe = { http | tcp | command }`): the heartbeat of a program that has
//! none. One task per instance checks it `every` so often; `failures` failed checks in a row
//! are a hang, and the instance kills its process group as it does for a silent heartbeat.
//!
//! Failures count once the program has passed a check, or once `startup_timeout` has gone
//! by since its spawn: a program still starting is not hung. Until its first pass it is
//! checked more often ([`FIRST_PASS_EVERY`]), so that a plain program that is ready at its
//! first pass (no `ready_line`) is seen ready soon after it is.
//!
//! A command probe is spawned by the console's spawner, like a service, with the instance's
//! lineage: it is in the stray sweep, and a probe that outlives its timeout is SIGKILLed with
//! its group and reaped here.

use std::{
    ffi::OsString,
    path::PathBuf,
    time::{Duration, Instant},
};

use http_body_util::Empty;
use hyper::body::Bytes;
use tokio::{io::AsyncReadExt, sync::mpsc};
use tokio_util::sync::CancellationToken;

use super::{
    InstanceEvent,
    spawn::{LaunchCommand, Spawner, signal_group},
    strays::Sweeper,
};
use crate::{
    logs::{LogStore, Stream},
    registry::InstanceId,
    stack::{ProbeCheck, ProbeSpec, ResourceLimits},
};

/// How often a program is checked before its first pass, when `every` is longer.
pub const FIRST_PASS_EVERY: Duration = Duration::from_millis(500);
/// The output of a command probe kept for the failure message, per pipe.
const OUTPUT_KEPT: u64 = 4096;

/// Everything one instance's probe needs; built at the spawn.
pub struct Prober {
    pub id: InstanceId,
    pub service: std::sync::Arc<str>,
    pub spec: ProbeSpec,
    /// The service's environment (its lineage included), for `${NAME}` in the probe and for a
    /// command probe's process.
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// The instance becomes ready at the first pass (a plain program without `ready_line`).
    pub ready_on_pass: bool,
    pub startup_timeout: Duration,
    pub spawner: Spawner,
    pub sweeper: Sweeper,
    pub logs: std::sync::Arc<LogStore>,
    pub events: mpsc::Sender<InstanceEvent>,
}

impl Prober {
    /// Checks until `stop`, or until the probe fails `failures` times in a row: then the
    /// supervisor is told, `failed` is cancelled (the instance kills its group), and it ends.
    pub async fn run(self, failed: CancellationToken, stop: CancellationToken) {
        let check = self.expanded();
        let started = Instant::now();
        let mut passed = false;
        let mut in_a_row = 0u32;
        loop {
            let pause = if passed {
                self.spec.every
            } else {
                self.spec.every.min(FIRST_PASS_EVERY)
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            // Not raced against `stop`: a command probe is always waited for and reaped, and
            // a check ends within its timeout.
            match self.check_once(&check).await {
                Ok(()) => {
                    if in_a_row > 0 && passed {
                        self.note(format!("probe passes again ({check})"));
                    }
                    in_a_row = 0;
                    if !passed {
                        passed = true;
                        if self.ready_on_pass && !stop.is_cancelled() {
                            let _ = self.events.send(InstanceEvent::Ready { id: self.id }).await;
                        }
                    }
                }
                Err(error) if passed || started.elapsed() >= self.startup_timeout => {
                    in_a_row += 1;
                    self.note(format!(
                        "probe failed ({in_a_row} of {} in a row): {check}: {error}",
                        self.spec.failures
                    ));
                    if in_a_row >= self.spec.failures && !stop.is_cancelled() {
                        let report = InstanceEvent::ProbeFailed {
                            id: self.id,
                            probe: check.to_string(),
                            failures: in_a_row,
                            error,
                        };
                        let _ = self.events.send(report).await;
                        failed.cancel();
                        return;
                    }
                }
                // Still starting: not counted.
                Err(_) => {}
            }
        }
    }

    fn note(&self, line: String) {
        self.logs
            .push(&self.service, self.id.replica, Stream::Console, line);
    }

    /// The check with `${NAME}` expanded from the service's environment.
    fn expanded(&self) -> ProbeCheck {
        let lookup = |name: &str| {
            self.env
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
                .or_else(|| std::env::var(name).ok())
        };
        let expand = |text: &str| super::launch::expand(text, &lookup);
        match &self.spec.check {
            ProbeCheck::Http { url } => ProbeCheck::Http { url: expand(url) },
            ProbeCheck::Tcp { address } => ProbeCheck::Tcp {
                address: expand(address),
            },
            ProbeCheck::Command { argv } => ProbeCheck::Command {
                argv: argv.iter().map(|arg| expand(arg)).collect(),
            },
        }
    }

    async fn check_once(&self, check: &ProbeCheck) -> Result<(), String> {
        let timeout = self.spec.timeout;
        let timed_out = || format!("no answer within {}ms", timeout.as_millis());
        match check {
            ProbeCheck::Tcp { address } => {
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address.as_str()))
                    .await
                    .map_err(|_| timed_out())?
                    .map(drop)
                    .map_err(|err| err.to_string())
            }
            ProbeCheck::Http { url } => tokio::time::timeout(timeout, http_get(url))
                .await
                .map_err(|_| timed_out())?,
            ProbeCheck::Command { argv } => self.command(argv).await,
        }
    }

    async fn command(&self, argv: &[String]) -> Result<(), String> {
        let Some((program, args)) = argv.split_first() else {
            return Err("no program".into());
        };
        let launch = LaunchCommand {
            program: OsString::from(program),
            args: args.iter().map(OsString::from).collect(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            segment: None,
            limits: ResourceLimits::default(),
        };
        let mut child = self
            .spawner
            .spawn(launch)
            .await
            .map_err(|err| format!("cannot start: {err}"))?;
        let pid = child.id().unwrap_or(0);
        drop(child.stdin.take());
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let ran = tokio::time::timeout(self.spec.timeout, async {
            let (out, err, status) = tokio::join!(kept(stdout), kept(stderr), child.wait());
            (out, err, status)
        })
        .await;
        let outcome = match ran {
            Ok((_, _, Ok(status))) if status.success() => Ok(()),
            Ok((out, err, Ok(status))) => {
                let said = last_line(&err).or_else(|| last_line(&out));
                Err(match said {
                    Some(line) => format!("{status}: {line}"),
                    None => status.to_string(),
                })
            }
            Ok((_, _, Err(err))) => Err(err.to_string()),
            Err(_) => {
                signal_group(pid, libc::SIGKILL);
                let _ = child.wait().await;
                Err(format!(
                    "still running after {}ms: killed",
                    self.spec.timeout.as_millis()
                ))
            }
        };
        self.sweeper.forget(pid);
        outcome
    }
}

/// One `GET`: 2xx and 3xx pass; anything else, or no answer, fails.
async fn http_get(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|err| format!("bad URL: {err}"))?;
    let host = uri.host().ok_or("no host in the URL")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|err| err.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|err| err.to_string())?;
    let connection = tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "switchboard-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|err| err.to_string())?;
    let answer = sender.send_request(request).await;
    connection.abort();
    let status = answer.map_err(|err| err.to_string())?.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// Up to [`OUTPUT_KEPT`] bytes of a pipe; the rest is read and dropped, so a chatty probe
/// never blocks on a full pipe.
async fn kept(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let Some(pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut limited = pipe.take(OUTPUT_KEPT);
    let _ = limited.read_to_end(&mut kept).await;
    let _ = tokio::io::copy(&mut limited.into_inner(), &mut tokio::io::sink()).await;
    kept
}

/// The last non-empty line, trimmed and cut, with control characters made harmless.
fn last_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().rev().find(|line| !line.trim().is_empty())?;
    Some(
        line.trim()
            .chars()
            .take(200)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_said_is_kept_and_made_harmless() {
        assert_eq!(last_line(b"one\ntwo\x1b[2J\n\n"), Some("two?[2J".into()));
        assert_eq!(last_line(b"\n \n"), None);
    }

    #[tokio::test]
    async fn an_http_probe_passes_on_2xx_and_3xx_and_fails_otherwise() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/ok", axum::routing::get(|| async { "ok" }))
            .route(
                "/moved",
                axum::routing::get(|| async { axum::response::Redirect::to("/ok") }),
            )
            .route(
                "/sick",
                axum::routing::get(|| async { hyper::StatusCode::SERVICE_UNAVAILABLE }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        assert_eq!(http_get(&format!("http://{address}/ok")).await, Ok(()));
        assert_eq!(http_get(&format!("http://{address}/moved")).await, Ok(()));
        let sick = http_get(&format!("http://{address}/sick")).await;
        assert_eq!(sick, Err("answered 503 Service Unavailable".into()));
        assert_eq!(
            http_get(&format!("http://{address}/missing")).await,
            Err("answered 404 Not Found".into())
        );
    }
}
