//! Starting and stopping the gateway.
//!
//! `start` resolves the token, refuses a non-loopback address without one, binds (port 0 picks
//! a free port), and writes the bound address with the console's pid to
//! `RUN_DIR/gateway.json`, where the CLI client finds it. `stop` cancels the shutdown token
//! (axum stops accepting, finishes in-flight requests, and event streams end) and waits, a
//! bounded time, for the server task tracked in a `TaskTracker`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    AppState, Bind, GatewayError, GatewayState, app, auth,
    listener::{CappedListener, IDLE_TIMEOUT, MAX_CONNECTIONS},
};
use crate::supervisor::Supervisor;

/// The discovery file in the run directory.
pub const DISCOVERY_FILE: &str = "gateway.json";
/// How long `stop` waits for in-flight requests before giving up on them.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The contents of `RUN_DIR/gateway.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// The bound address, e.g. `127.0.0.1:8787`.
    pub address: SocketAddr,
    /// The console's pid.
    pub pid: u32,
}

/// A running gateway.
/// How [`Gateway::start`] went.
pub enum Started {
    On(Gateway),
    /// Off, as asked (`--gateway off`, `bind = "off"`).
    Off,
    /// The stack file's address could not be bound; the stack runs without a gateway, and
    /// `problem` says so, naming the address and how to choose another.
    Taken {
        address: SocketAddr,
        problem: String,
    },
}

pub struct Gateway {
    address: SocketAddr,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    discovery: PathBuf,
    /// Where the admin token is, when it was generated (for the start-up message).
    pub token_file: Option<PathBuf>,
}

impl Gateway {
    /// Starts the gateway asked for by `bind`; `Ok(None)` when it is off.
    ///
    /// When the stack file's address (not one given with `--gateway`) cannot be bound, the
    /// console runs without a gateway: a second stack on the default port, or a test run
    /// beside a running console, must still be able to supervise. That is [`Started::Taken`],
    /// which the front ends say loudly. Any other error (a non-loopback address without a
    /// token, a bad route) stops the start-up.
    pub async fn start(supervisor: &Supervisor, bind: Bind) -> Result<Started, GatewayError> {
        let addr = match bind {
            Bind::Off => return Ok(Started::Off),
            Bind::FromStack => match supervisor.stack().gateway.bind {
                Some(addr) => addr,
                None => return Ok(Started::Off),
            },
            Bind::At(addr) => addr,
        };
        match Self::start_at(supervisor, addr).await {
            Ok(gateway) => Ok(Started::On(gateway)),
            Err(err @ GatewayError::Bind { .. }) if bind == Bind::FromStack => {
                tracing::warn!(cause = %err, "running without the HTTP gateway (use --gateway ADDR)");
                Ok(Started::Taken {
                    address: addr,
                    problem: format!(
                        "no HTTP gateway: {err}; choose another address with --gateway \
                         127.0.0.1:0 (any free port) or `[gateway] bind` in the stack file"
                    ),
                })
            }
            Err(err) => Err(err),
        }
    }

    pub async fn start_at(
        supervisor: &Supervisor,
        addr: SocketAddr,
    ) -> Result<Gateway, GatewayError> {
        let spec = &supervisor.stack().gateway;
        let run_dir = &supervisor.stack().run_dir;
        if !addr.ip().is_loopback() && auth::from_env(spec.token_env.as_deref()).is_none() {
            return Err(GatewayError::NotLoopback(addr));
        }
        // Checked before anything is bound or written.
        super::routes::validate(&spec.routes)?;
        let token = auth::Token::resolve(spec.token_env.as_deref(), run_dir)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Bind { addr, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| GatewayError::Bind { addr, source })?;
        let shutdown = CancellationToken::new();
        let token_file =
            (token.source == auth::TokenSource::Generated).then(|| run_dir.join(auth::TOKEN_FILE));
        let state = AppState::new(GatewayState {
            supervisor: supervisor.clone(),
            config: Arc::new(spec.clone()),
            token,
            address: Some(address.to_string().into()),
            taken: None,
            loopback: address.ip().is_loopback(),
            started: Instant::now(),
            shutdown: shutdown.clone(),
        });
        let app = app(state, super::Access::Token)?;
        let discovery = run_dir.join(DISCOVERY_FILE);
        write_discovery(
            &discovery,
            &Discovery {
                address,
                pid: std::process::id(),
            },
        )
        .map_err(GatewayError::Discovery)?;
        let tracker = TaskTracker::new();
        let stopping = shutdown.clone();
        tracker.spawn(async move {
            let listener = CappedListener::new(listener, MAX_CONNECTIONS, IDLE_TIMEOUT);
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stopping.cancelled_owned())
                .await;
            if let Err(err) = served {
                tracing::error!(cause = %err, "the gateway stopped serving");
            }
        });
        tracker.close();
        tracing::info!(%address, "gateway listening");
        Ok(Gateway {
            address,
            shutdown,
            tracker,
            discovery,
            token_file,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting, lets in-flight requests finish (at most a few seconds), and removes the
    /// discovery file.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if tokio::time::timeout(STOP_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("gateway requests still in flight at shutdown were abandoned");
        }
        // Only our own file: another console may have started on the same run directory since.
        if read_discovery(&self.discovery).is_ok_and(|d| d.pid == std::process::id()) {
            let _ = std::fs::remove_file(&self.discovery);
        }
        tracing::info!("gateway stopped");
    }
}

/// Written to a temporary file and renamed, so a reader never sees half of it.
fn write_discovery(path: &Path, discovery: &Discovery) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_vec(discovery).map_err(std::io::Error::other)?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

pub fn read_discovery(path: &Path) -> std::io::Result<Discovery> {
    let text = std::fs::read(path)?;
    serde_json::from_slice(&text).map_err(std::io::Error::other)
}
