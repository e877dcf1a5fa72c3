//! The HTTP gateway: the stack's front door and the console's admin API, served by axum on the
//! console's own runtime.
//!
//! - [`server`]: binding (127.0.0.1:8787 by default, `--gateway ADDR|off`), the discovery file
//!   `RUN_DIR/gateway.json`, graceful stop.
//! - [`socket`]: the admin API on `RUN_DIR/admin.sock`, for local clients without a token.
//! - [`listener`]: the TCP listener, capped at [`listener::MAX_CONNECTIONS`] open connections.
//! - [`routes`]: the stack's `[gateway] routes` and `POST /call/{service}/{method}`, each a
//!   router call under the caller name `gateway`.
//! - [`admin`]: `/admin/...`, the operator's API behind a bearer token ([`auth`]).
//! - [`events`]: server-sent event streams of lifecycle events and followed logs.
//! - [`console`]: the console stream an attached console draws from.
//! - [`metrics`]: `GET /metrics` in the Prometheus text format.
//! - [`error`]: the JSON error body every failure is sent as.
//!
//! `GET /healthz` answers `{"status":"ok"}` without a token, and so does `/metrics` on a
//! loopback address: both are meant for probes and scrapers on the same host. On any other
//! address `/metrics` needs the token as well.

pub mod admin;
pub mod auth;
pub mod console;
pub mod error;
pub mod events;
pub mod listener;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod socket;
pub mod stream;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio_util::sync::CancellationToken;

pub use self::{
    auth::Token,
    error::ApiError,
    server::{DISCOVERY_FILE, Discovery, Gateway, Started},
    socket::AdminSocket,
};
use crate::{api::ConsoleView, stack::GatewaySpec, supervisor::Supervisor};

/// Where the gateway listens, as asked on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bind {
    /// The stack file's `[gateway] bind` (default 127.0.0.1:8787).
    #[default]
    FromStack,
    At(SocketAddr),
    /// No gateway at all.
    Off,
}

impl std::str::FromStr for Bind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "off" | "none" | "no" => Ok(Bind::Off),
            _ => text.parse().map(Bind::At).map_err(|_| {
                format!("`{text}` is neither `off` nor an address like 127.0.0.1:8787")
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "refusing to listen on {0}, which is not a loopback address, without a token: set the \
         variable named by `[gateway] token_env` or SWITCHBOARD_TOKEN, or bind 127.0.0.1 and \
         use `ssh -L`"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot create the admin token: {0}")]
    Token(std::io::Error),
    #[error("cannot write the gateway's discovery file: {0}")]
    Discovery(std::io::Error),
    #[error("cannot serve the admin socket {}: {source}", .path.display())]
    Socket {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("gateway route `{route}`: {why}")]
    Route { route: String, why: String },
}

/// What every handler can reach. axum clones the state for every request, so it is one `Arc`:
/// cloning the parts (the supervisor's handles, a cancellation token that takes a lock to
/// clone) cost several percent of the console's time under HTTP load.
#[derive(Clone)]
pub struct AppState(Arc<GatewayState>);

impl AppState {
    pub fn new(state: GatewayState) -> AppState {
        AppState(Arc::new(state))
    }
}

impl std::ops::Deref for AppState {
    type Target = GatewayState;

    fn deref(&self) -> &GatewayState {
        &self.0
    }
}

pub struct GatewayState {
    pub supervisor: Supervisor,
    pub config: Arc<GatewaySpec>,
    pub token: Token,
    /// The TCP gateway's bound address, shown in the console view (none when it is off).
    pub address: Option<Arc<str>>,
    /// The stack file's gateway address when it was taken (the stack runs without one).
    pub taken: Option<Arc<str>>,
    /// Whether it is a loopback address (else `/metrics` needs the token too).
    pub loopback: bool,
    pub started: Instant,
    /// Cancelled when the gateway stops: ends open event streams.
    pub shutdown: CancellationToken,
}

impl GatewayState {
    /// The console's snapshot, with the gateway's address filled in.
    pub fn view(&self) -> ConsoleView {
        let mut view = self.supervisor.view(self.started);
        view.gateway = self.address.as_ref().map(|a| a.to_string());
        view.gateway_taken = self.taken.as_ref().map(|a| a.to_string());
        view
    }

    /// The `Retry-After` hint for a 503 from `service`: its breaker's cooldown, else a second.
    pub fn retry_after(&self, service: &str) -> Duration {
        self.supervisor
            .stack()
            .service(service)
            .map(|s| s.breaker.cooldown)
            .filter(|_| {
                self.supervisor.router().breaker_state(service)
                    == Some(crate::router::breaker::BreakerState::Open)
            })
            .unwrap_or(Duration::from_secs(1))
    }
}

/// How a request reached the gateway, which decides what it must prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Over TCP: `/admin` wants the bearer token.
    Token,
    /// Over the run directory's Unix socket (mode 0600): only the stack's own user can
    /// connect, so no token is asked for.
    Socket,
}

impl Access {
    /// The audit log's actor for an admin action, naming the attached console or CLI when
    /// it said who it is (the `x-switchboard-client` header).
    pub fn actor(self, headers: &axum::http::HeaderMap) -> String {
        let base = match self {
            Access::Token => admin::ACTOR,
            Access::Socket => admin::SOCKET_ACTOR,
        };
        let client = headers
            .get(CLIENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.chars()
                    .filter(|c| !c.is_control())
                    .take(80)
                    .collect::<String>()
            })
            .filter(|v| !v.trim().is_empty());
        match client {
            Some(client) => format!("{base} ({client})"),
            None => base.to_string(),
        }
    }
}

/// The header in which a client names itself for the audit log (`attach root@host pid 7`).
pub const CLIENT_HEADER: &str = "x-switchboard-client";

/// The whole application: service routes, `/admin` behind the token (unless it came over the
/// socket), `/metrics`, `/healthz`, JSON 404/405 for everything else, and a per-request
/// timeout. Routes are validated first (axum panics on overlapping ones).
pub fn app(state: AppState, access: Access) -> Result<axum::Router, GatewayError> {
    routes::validate(&state.config.routes)?;
    let guard = auth::Guard {
        token: state.token.clone(),
        audit: state.supervisor.audit().cloned(),
        prefix: "/admin",
    };
    let mut admin = admin::router().layer(axum::Extension(access));
    if access == Access::Token {
        admin = admin.layer(middleware::from_fn_with_state(
            guard.clone(),
            auth::require_token,
        ));
    }
    // On a loopback address /metrics is open to local scrapers; anywhere else it shows
    // service names and load to the network, so it wants the token too.
    let mut scrape = get(metrics::scrape);
    if !state.loopback && access == Access::Token {
        let guard = auth::Guard {
            prefix: "",
            ..guard
        };
        scrape = scrape.layer(middleware::from_fn_with_state(guard, auth::require_token));
    }
    let app = routes::router(&state.config.routes)
        .nest("/admin", admin)
        .route("/metrics", scrape)
        .route("/healthz", get(healthz))
        .fallback(routes::unknown_route)
        .method_not_allowed_fallback(routes::wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), time_limit))
        .with_state(state);
    Ok(app)
}

async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "stack": state.supervisor.stack().name}))
}

/// Bounds how long a request may take to produce its response (a streamed body, like an event
/// stream, is not counted). Hand-written rather than tower-http's `TimeoutLayer`, whose
/// timeout is an empty response: every error of the gateway is the JSON [`ApiError`]. Service calls carry the same deadline and are answered `timeout`
/// by the router first; this catches everything else.
async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.config.request_timeout + Duration::from_secs(2);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout("the request took too long").into_response(),
    }
}
