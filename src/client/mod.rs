//! The CLI's client for a running instance: `switchboard ps`, `restart`, `stop`, `start`,
//! `kill`, `scale`, `logs` and `run` talk to its admin API over HTTP.
//!
//! - [`Target`]: finding the instance: `--address`, else `RUN_DIR/gateway.json` of the same
//!   stack `up` would run; the token from `--token`, else the stack's `token_env` variable or
//!   `SWITCHBOARD_TOKEN`, else `RUN_DIR/token`.
//! - [`Client`]: requests over hyper's own HTTP/1 client connection (hyper is already in the
//!   build for axum), one connection per request: the CLI makes a handful.
//! - [`commands`]: the subcommands' output.

pub mod commands;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    gateway::{DISCOVERY_FILE, auth, error::ErrorResponse, server::read_discovery},
    stack::Stack,
};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an event stream may stay silent before the link counts as dead: three of the
/// console stream's keep-alives.
const STREAM_SILENCE: Duration = Duration::from_secs(15);
/// How long a plain (not streamed) request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no running instance of stack `{stack}` (no live console in {run_dir}); start one with `switchboard up`, or pass --address"
    )]
    NotRunning { stack: String, run_dir: String },
    #[error("no admin token: pass --token, set SWITCHBOARD_TOKEN, or check {0}")]
    NoToken(String),
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: Endpoint,
        source: std::io::Error,
    },
    #[error("HTTP error talking to {address}: {source}")]
    Http {
        address: Endpoint,
        source: hyper::Error,
    },
    #[error("{address} did not answer within {}s", .limit.as_secs())]
    Timeout { address: Endpoint, limit: Duration },
    #[error("{message} ({status}, {code})")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the console: {0}")]
    Decode(String),
}

/// Where a running instance's admin API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The TCP gateway (with the bearer token).
    Tcp(SocketAddr),
    /// The run directory's Unix socket (no token).
    Unix(PathBuf),
}

impl From<SocketAddr> for Endpoint {
    fn from(address: SocketAddr) -> Self {
        Endpoint::Tcp(address)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(address) => write!(f, "{address}"),
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Where a running instance is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: Endpoint,
    pub token: Option<String>,
}

impl Target {
    /// Finds the instance running `stack`, unless `address` says where it is: its admin
    /// socket first (no token needed), else the TCP address in its discovery file. A token
    /// given on the command line asks for TCP (the socket takes none).
    pub fn find(
        stack: &Stack,
        address: Option<SocketAddr>,
        token: Option<String>,
    ) -> Result<Target, ClientError> {
        let run_dir = &stack.run_dir;
        let not_running = || ClientError::NotRunning {
            stack: stack.name.clone(),
            run_dir: run_dir.display().to_string(),
        };
        let address = match (address, &token) {
            (Some(address), _) => Endpoint::Tcp(address),
            (None, Some(_)) => discover_tcp(run_dir)
                .map(Endpoint::Tcp)
                .ok_or_else(not_running)?,
            (None, None) => discover(run_dir).ok_or_else(not_running)?,
        };
        if matches!(address, Endpoint::Unix(_)) {
            return Ok(Target {
                address,
                token: None,
            });
        }
        let token = token
            .or_else(|| auth::from_env(stack.gateway.token_env.as_deref()))
            .or_else(|| {
                std::fs::read_to_string(run_dir.join(auth::TOKEN_FILE))
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        Ok(Target { address, token })
    }
}

/// Where the instance running in `run_dir` listens: its admin socket while it holds the
/// run directory's lock, else the address in `RUN_DIR/gateway.json` when the console that
/// wrote it is still alive.
pub fn discover(run_dir: &Path) -> Option<Endpoint> {
    let socket = crate::gateway::socket::socket_path(run_dir);
    if crate::lock::holder(run_dir).is_some() && socket.exists() {
        return Some(Endpoint::Unix(socket));
    }
    discover_tcp(run_dir).map(Endpoint::Tcp)
}

/// The TCP gateway's address in `RUN_DIR/gateway.json`, when the console that wrote it is
/// still alive.
pub fn discover_tcp(run_dir: &Path) -> Option<SocketAddr> {
    let discovery = read_discovery(&run_dir.join(DISCOVERY_FILE)).ok()?;
    Path::new(&format!("/proc/{}", discovery.pid))
        .exists()
        .then_some(discovery.address)
}

/// How a client names itself in the instance's audit log: `WHAT USER@HOST pid N`.
pub fn who(what: &str) -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{what} {user}@{host} pid {}", std::process::id())
}

/// A response read to the end.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    /// The error body's code, when it is one.
    pub fn error_code(&self) -> Option<String> {
        serde_json::from_slice::<ErrorResponse>(&self.body)
            .ok()
            .map(|e| e.error.code)
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    pub target: Target,
    /// Who this client is, for the instance's audit log (`attach root@host pid 7`).
    pub name: Option<String>,
}

impl Client {
    pub fn new(target: Target) -> Self {
        Client { target, name: None }
    }

    /// Names this client in the instance's audit log.
    pub fn named(mut self, name: String) -> Self {
        self.name = Some(name);
        self
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.host());
        if let Some(name) = &self.name {
            builder = builder.header(crate::gateway::CLIENT_HEADER, name.as_str());
        }
        if let Some(token) = &self.target.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|err| ClientError::Decode(err.to_string()))
    }

    /// The Host header: the address, or `localhost` over the socket.
    fn host(&self) -> String {
        match &self.target.address {
            Endpoint::Tcp(address) => address.to_string(),
            Endpoint::Unix(_) => "localhost".into(),
        }
    }

    /// Sends one request and returns the response head, its body still streaming.
    async fn open(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let address = &self.target.address;
        let timeout = |_| ClientError::Timeout {
            address: address.clone(),
            limit: CONNECT_TIMEOUT,
        };
        let connect = |source| ClientError::Connect {
            address: address.clone(),
            source,
        };
        let http = |source| ClientError::Http {
            address: address.clone(),
            source,
        };
        let mut sender = match address {
            Endpoint::Tcp(tcp) => {
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(tcp))
                        .await
                        .map_err(timeout)?
                        .map_err(connect)?;
                let _ = stream.set_nodelay(true);
                handshake(stream).await.map_err(http)?
            }
            Endpoint::Unix(path) => {
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(path))
                        .await
                        .map_err(timeout)?
                        .map_err(connect)?;
                handshake(stream).await.map_err(http)?
            }
        };
        sender.send_request(request).await.map_err(http)
    }

    /// Sends a request and reads the whole response, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<RawResponse, ClientError> {
        let address = self.target.address.clone();
        let request = self.request(method, path, body)?;
        let exchange = async {
            let response = self.open(request).await?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|source| ClientError::Http {
                    address: address.clone(),
                    source,
                })?
                .to_bytes();
            Ok(RawResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                address,
                limit: REQUEST_TIMEOUT,
            })?
    }

    /// A JSON request whose 2xx answer is decoded as `T`; any other status is an
    /// [`ClientError::Api`] with the server's code and message.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|err| ClientError::Decode(err.to_string()))?;
        let response = self.send(method, path, body).await?;
        if !response.status.is_success() {
            return Err(api_error(&response));
        }
        serde_json::from_slice(&response.body).map_err(|err| ClientError::Decode(err.to_string()))
    }

    /// Follows a server-sent event stream, calling `on_event(name, data)` for each event until
    /// it returns false or the stream ends.
    pub async fn events(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), ClientError> {
        let address = self.target.address.clone();
        let request = self.request(Method::GET, path, None)?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.open(request))
            .await
            .map_err(|_| ClientError::Timeout {
                address: address.clone(),
                limit: REQUEST_TIMEOUT,
            })??;
        if !response.status().is_success() {
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(api_error(&RawResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            }));
        }
        let mut body = response.into_body();
        let mut parser = SseParser::default();
        // The instance sends at least a keep-alive every few seconds; a link silent for much
        // longer is dead even if no error said so (a peer gone without a FIN).
        let silent = |_| ClientError::Timeout {
            address: address.clone(),
            limit: STREAM_SILENCE,
        };
        while let Some(frame) = tokio::time::timeout(STREAM_SILENCE, body.frame())
            .await
            .map_err(silent)?
        {
            let frame = frame.map_err(|source| ClientError::Http {
                address: address.clone(),
                source,
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for (name, data) in parser.push(&data) {
                if !on_event(&name, &data) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// An HTTP/1 connection over `stream`; its task ends with the response body (or the server
/// closing it).
async fn handshake<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// The error an unsuccessful answer stands for.
pub fn api_error(response: &RawResponse) -> ClientError {
    match serde_json::from_slice::<ErrorResponse>(&response.body) {
        Ok(body) => ClientError::Api {
            status: response.status,
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => ClientError::Api {
            status: response.status,
            code: "http".into(),
            message: String::from_utf8_lossy(&response.body).into_owned(),
        },
    }
}

/// A minimal server-sent events parser: `event:` and `data:` lines, events split by a blank
/// line, comments (keep-alives) ignored. A partial line waits for the next chunk.
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    name: String,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds a chunk; returns the events it completed as (name, data).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<(String, String)> {
        self.pending.extend_from_slice(chunk);
        let mut done = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() || !self.name.is_empty() {
                    let name = std::mem::take(&mut self.name);
                    let name = if name.is_empty() {
                        "message".into()
                    } else {
                        name
                    };
                    done.push((name, self.data.join("\n")));
                    self.data.clear();
                }
            } else if let Some(value) = line.strip_prefix("event:") {
                self.name = value.trim_start().to_string();
            } else if let Some(value) = line.strip_prefix("data:") {
                self.data
                    .push(value.strip_prefix(' ').unwrap_or(value).to_string());
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut parser = SseParser::default();
        assert!(parser.push(b": keep-alive\n\nevent: st").is_empty());
        let events = parser.push(b"ate\ndata: {\"a\":1}\n\ndata: x\ndata: y\n\n");
        assert_eq!(
            events,
            vec![
                ("state".to_string(), "{\"a\":1}".to_string()),
                ("message".to_string(), "x\ny".to_string())
            ]
        );
    }
}
