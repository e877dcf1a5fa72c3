//! The HTTP load the benches send: a built-in client (keep-alive HTTP/1 connections on a thread
//! and runtime of its own, as a separate client would be, each sending its next request as soon
//! as the previous answer is read) or wrk, with the same connections and duration, as an outside
//! cross-check.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::rt::TokioIo;

use super::percentile;

/// Load sent before the measurement starts, then measured.
pub(super) const WARMUP: Duration = Duration::from_millis(300);
pub(super) const MEASURE: Duration = Duration::from_millis(1500);

/// Keep-alive connections the load is sent over, unless `--http-connections` says otherwise.
pub const DEFAULT_CONNECTIONS: u16 = 16;

/// What sends the HTTP load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HttpLoad {
    #[default]
    Builtin,
    Wrk,
}

/// Who sends the HTTP load, over how many keep-alive connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadClient {
    pub sender: HttpLoad,
    pub connections: usize,
}

impl Default for LoadClient {
    fn default() -> Self {
        LoadClient {
            sender: HttpLoad::Builtin,
            connections: usize::from(DEFAULT_CONNECTIONS),
        }
    }
}

/// Whether `wrk` can be run.
pub fn wrk_found() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// One kind of request the load client sends again and again.
#[derive(Debug, Clone)]
pub(super) struct Shot {
    pub method: Method,
    pub path: String,
    pub body: Option<Bytes>,
    /// The exact answer expected, when it is known; otherwise any 2xx.
    pub expect: Option<Bytes>,
}

#[derive(Debug, Default)]
pub(super) struct Load {
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    /// CPU seconds the built-in client's thread used (it runs in this process, so a
    /// measurement of the console's own CPU takes it out); 0 for wrk.
    pub client_cpu: f64,
}

impl Load {
    /// Each figure's median over the rounds (errors summed).
    pub(super) fn median(loads: Vec<Load>) -> Load {
        let middle = |pick: fn(&Load) -> f64| super::median(loads.iter().map(pick));
        Load {
            rate: middle(|l| l.rate),
            p50_us: middle(|l| l.p50_us),
            p99_us: middle(|l| l.p99_us),
            errors: loads.iter().map(|l| l.errors).sum(),
            client_cpu: loads.iter().map(|l| l.client_cpu).sum(),
        }
    }
}

/// One request, its 2xx body (or why not).
pub(super) async fn once(
    address: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
) -> Result<Bytes, String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|err| err.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|err| err.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, address.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|err| err.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| err.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| err.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "{path}: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(body)
}

pub(super) async fn send_load(client: LoadClient, address: SocketAddr, shot: Shot) -> Load {
    let connections = client.connections;
    match client.sender {
        HttpLoad::Builtin => load_from_another_thread(address, shot, connections).await,
        HttpLoad::Wrk => tokio::task::spawn_blocking(move || wrk(address, &shot, connections))
            .await
            .unwrap_or_else(|err| Err(err.to_string()))
            .unwrap_or_else(|why| {
                eprintln!("bench: wrk: {why}");
                Load::default()
            }),
    }
}

/// The same load from wrk: one thread, the same connections, warm-up plus measurement.
/// wrk counts every answer; those that are not 2xx are the errors (it cannot compare bodies).
fn wrk(address: SocketAddr, shot: &Shot, connections: usize) -> Result<Load, String> {
    let script = std::env::temp_dir().join(format!(
        "switchboard-wrk-{}-{}.lua",
        std::process::id(),
        shot.path.len() + shot.body.as_ref().map_or(0, Bytes::len)
    ));
    let body = shot
        .body
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    // Lua long brackets hold the JSON as it is.
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"{}\"\nwrk.body = [==[{body}]==]\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
            shot.method
        ),
    )
    .map_err(|err| err.to_string())?;
    let seconds = (WARMUP + MEASURE).as_secs_f64().ceil() as u64;
    let output = std::process::Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{address}{}", shot.path))
        .output();
    let _ = std::fs::remove_file(&script);
    let output = output.map_err(|err| err.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("cannot read wrk's report:\n{text}"))
}

/// Requests/s, p50, p99 and non-2xx answers from wrk's `--latency` report.
fn parse_wrk(report: &str) -> Option<Load> {
    let mut load = Load::default();
    let mut rate = None;
    for line in report.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => rate = value.parse().ok(),
            ["50%", value] => load.p50_us = wrk_duration_us(value)?,
            ["99%", value] => load.p99_us = wrk_duration_us(value)?,
            ["Non-2xx", "or", "3xx", "responses:", n] => load.errors = n.parse().ok()?,
            _ => {}
        }
    }
    load.rate = rate?;
    Some(load)
}

/// `812.00us`, `1.25ms`, `2.01s` in µs.
fn wrk_duration_us(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    Some(number.parse::<f64>().ok()? * scale)
}

async fn load_from_another_thread(address: SocketAddr, shot: Shot, connections: usize) -> Load {
    let client = std::thread::Builder::new()
        .name("bench-http-load".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut load = runtime.block_on(load(address, shot, connections));
            load.client_cpu = super::thread_cpu_seconds();
            Ok::<_, std::io::Error>(load)
        });
    let Ok(client) = client else {
        return Load::default();
    };
    match tokio::task::spawn_blocking(move || client.join()).await {
        Ok(Ok(Ok(load))) => load,
        _ => Load::default(),
    }
}

async fn load(address: SocketAddr, shot: Shot, connections: usize) -> Load {
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + MEASURE;
    let mut workers = Vec::new();
    for _ in 0..connections {
        workers.push(tokio::spawn(connection(
            address,
            shot.clone(),
            measure_from,
            end,
        )));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        if let Ok((times, failed)) = worker.await {
            latencies.extend(times);
            errors += failed;
        } else {
            errors += 1;
        }
    }
    latencies.sort_by(f64::total_cmp);
    Load {
        rate: latencies.len() as f64 / MEASURE.as_secs_f64(),
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
        errors,
        client_cpu: 0.0,
    }
}

/// One keep-alive connection sending requests back to back; latencies (µs) measured after
/// the warm-up.
async fn connection(
    address: SocketAddr,
    shot: Shot,
    measure_from: Instant,
    end: Instant,
) -> (Vec<f64>, u64) {
    let mut times = Vec::new();
    let mut errors = 0;
    let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
        return (times, 1);
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await
    else {
        return (times, 1);
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    while Instant::now() < end {
        let Ok(request) = hyper::Request::builder()
            .method(shot.method.clone())
            .uri(&shot.path)
            .header(hyper::header::HOST, address.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(shot.body.clone().unwrap_or_default()))
        else {
            return (times, errors + 1);
        };
        let sent = Instant::now();
        let ok = match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                let body = response.into_body().collect().await;
                status.is_success()
                    && body.is_ok_and(|b| shot.expect.as_ref().is_none_or(|e| b.to_bytes() == e))
            }
            Err(_) => return (times, errors + 1),
        };
        if !ok {
            errors += 1;
        } else if sent >= measure_from {
            times.push(sent.elapsed().as_secs_f64() * 1e6);
        }
    }
    (times, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let report = "Running 3s test @ http://127.0.0.1:8080/users/1
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.50us  300.00us   9.12ms   90.00%
    Req/Sec    19.50k     1.00k   21.00k    70.00%
  Latency Distribution
     50%  780.00us
     75%    0.90ms
     90%    1.10ms
     99%    2.50ms
  58500 requests in 3.00s, 10.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  19500.25
Transfer/sec:      3.33MB
";
        let load = parse_wrk(report).unwrap();
        assert_eq!(load.rate, 19500.25);
        assert_eq!(load.p50_us, 780.0);
        assert_eq!(load.p99_us, 2500.0);
        assert_eq!(load.errors, 3);
        assert!(parse_wrk("wrk: connection refused").is_none());
    }
}
