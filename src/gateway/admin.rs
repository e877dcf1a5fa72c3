//! The admin API, under `/admin`, behind the bearer token ([`super::auth`]). It drives the same
//! supervisor commands as the console's keys, and every command is written to the audit log
//! with the actor `api:token` over TCP or `api:socket` over the run directory's socket, followed
//! by the client's own name when it gives one (`api:socket (attach root@host pid 7)`).
//!
//! | route | what |
//! |---|---|
//! | `GET /admin/services` | the console's snapshot ([`ConsoleView`]): state, pid, restarts, rates, CPU, memory |
//! | `POST /admin/services/{name}/{restart,stop,start,kill}` | the command; `{"ok":true}` |
//! | `POST /admin/services/{name}/scale` | body `{"replicas":N}` |
//! | `POST /admin/services/{name}/breaker/reset` | close the breaker in front of NAME by hand; `{"ok":true}` |
//! | `GET /admin/services/{name}/logs?tail=N` | the last N (default 100) log lines; `&follow=true` streams them as server-sent events |
//! | `POST /admin/jobs/{name}/run` | body: the job's JSON parameters (optional); `{"run":N}` |
//! | `GET /admin/jobs/{name}/runs` | the job's state, task progress and recent runs |
//! | `GET /admin/events` | lifecycle events as server-sent events ([`super::events`]) |
//! | `GET /admin/console?logs=N` | the console stream: the view, then its changes, events and log lines ([`super::console`]) |
//! | `POST /admin/shutdown` | stop every service in dependency order and end the instance (`switchboard down`); `{"ok":true}` |
//! | `GET /admin/routes?service=NAME` | the totals of the routes from or to NAME (all without it), busiest first ([`RouteView`]) |
//! | `GET /admin/calls?service=NAME&limit=N` | the last N (default 100) routed calls, of one service or all, oldest first ([`HopView`]) |
//! | `GET /admin/traces/{trace}` | every recorded hop of one trace (the `x-switchboard-trace` header of an answer) |

use axum::{
    Extension, Json,
    extract::{Path, Query, Request, State, rejection::PathRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

use super::{Access, AppState, error::ApiError, events, routes};
use crate::{
    api::{ConsoleView, HopView, LogView, RouteView, RunView, TaskView},
    supervisor::{Command, Reply},
};

/// The audit log's actor for admin API actions over TCP (with the token).
pub const ACTOR: &str = "api:token";
/// The audit log's actor for admin API actions over the run directory's socket.
pub const SOCKET_ACTOR: &str = "api:socket";
/// Log lines returned when `tail` is not given, and the most ever returned.
const DEFAULT_TAIL: usize = 100;
const MAX_TAIL: usize = 10_000;

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/services", get(services))
        .route("/services/{name}/logs", get(logs))
        .route("/services/{name}/{action}", post(service_action))
        .route("/services/{name}/breaker/reset", post(reset_breaker))
        .route("/jobs/{name}/run", post(run_job))
        .route("/jobs/{name}/runs", get(job_runs))
        .route("/events", get(events::lifecycle))
        .route("/console", get(super::console::stream))
        .route("/routes", get(routes_of))
        .route("/shutdown", post(shutdown))
        .route("/calls", get(calls))
        .route("/traces/{trace}", get(trace))
}

async fn services(State(state): State<AppState>) -> Json<ConsoleView> {
    Json(state.view())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleRequest {
    pub replicas: u32,
}

/// The body of `POST /admin/services/{name}/scale`.
pub fn scale_request(body: &[u8]) -> Result<ScaleRequest, ApiError> {
    let Some(value) = routes::parse_json(body)? else {
        return Err(ApiError::bad_request(
            "scale needs a body like {\"replicas\": 3}",
        ));
    };
    serde_json::from_value(value)
        .map_err(|err| ApiError::bad_request(format!("scale needs {{\"replicas\": N}}: {err}")))
}

async fn service_action(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Result<Json<Done>, ApiError> {
    let Path((name, action)) = path.map_err(bad_path)?;
    let command = match action.as_str() {
        "scale" => {
            let (parts, body) = request.into_parts();
            let body = routes::read_body(&parts, body, state.config.body_limit).await?;
            Command::Scale(name, scale_request(&body)?.replicas)
        }
        other => Command::from_action(other, name).map_err(|_| {
            ApiError::not_found(format!(
                "no action `{other}` (restart, stop, start, kill, scale)"
            ))
        })?,
    };
    command_audited(&state, command, &access.actor(&headers)).await?;
    Ok(Json(Done { ok: true }))
}

/// Closes a breaker by hand; audited like every command.
async fn reset_breaker(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Done>, ApiError> {
    let Path(name) = path.map_err(bad_path)?;
    command_audited(&state, Command::ResetBreaker(name), &access.actor(&headers)).await?;
    Ok(Json(Done { ok: true }))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStarted {
    pub run: u64,
}

async fn run_job(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Json<RunStarted>, ApiError> {
    let Path(name) = path.map_err(bad_path)?;
    let (parts, body) = request.into_parts();
    let body = routes::read_body(&parts, body, state.config.body_limit).await?;
    // Parsed only to refuse malformed JSON here, with a 400, rather than in the job.
    let params = routes::parse_json(&body)?.map(|v| v.to_string());
    let actor = access.actor(&headers);
    let run = match command_audited(&state, Command::RunJob(name, params), &actor).await? {
        Reply::JobRun(run) => run,
        Reply::Done => 0,
    };
    Ok(Json(RunStarted { run }))
}

/// A job's state, its task progress and its recent runs (newest first).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRuns {
    pub job: String,
    pub state: crate::registry::InstanceState,
    pub tasks: Vec<TaskView>,
    pub runs: Vec<RunView>,
}

async fn job_runs(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<JobRuns>, ApiError> {
    let Path(name) = path.map_err(bad_path)?;
    let view = state.view();
    let Some(row) = view.services.into_iter().find(|s| s.name == name) else {
        return Err(ApiError::not_found(format!("no service named `{name}`")));
    };
    if !row.job {
        return Err(ApiError::bad_request(format!("`{name}` is not a job")));
    }
    Ok(Json(JobRuns {
        job: row.name,
        state: row.state,
        tasks: row.tasks,
        runs: row.runs,
    }))
}

/// The query of `GET /admin/services/{name}/logs`.
#[derive(Debug, Deserialize)]
pub struct LogQuery {
    pub tail: Option<usize>,
    #[serde(default)]
    pub follow: bool,
}

/// How a `GET /admin/services/{name}/logs` query axum cannot read is answered.
pub fn log_query_refused() -> ApiError {
    ApiError::bad_request("use ?tail=N and optionally &follow=true")
}

async fn logs(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(bad_path)?;
    let Query(query) = query.map_err(|_| log_query_refused())?;
    if crate::registry::read(state.supervisor.registry())
        .service(&name)
        .is_none()
    {
        return Err(ApiError::not_found(format!("no service named `{name}`")));
    }
    let tail = query.tail.unwrap_or(DEFAULT_TAIL).min(MAX_TAIL);
    // Subscribed before the tail is read, so no line falls between the two.
    let feed = state.supervisor.logs().subscribe();
    let lines: Vec<LogView> = state
        .supervisor
        .logs()
        .tail(&name, tail)
        .iter()
        .map(|l| LogView::from(l.as_ref()))
        .collect();
    if query.follow {
        Ok(events::log_follow(&state, name, lines, feed))
    } else {
        Ok(Json(lines).into_response())
    }
}

/// The query of `GET /admin/calls`.
#[derive(Debug, Deserialize)]
pub struct CallsQuery {
    pub service: Option<String>,
    pub limit: Option<usize>,
}

async fn calls(
    State(state): State<AppState>,
    query: Result<Query<CallsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<HopView>>, ApiError> {
    let Query(query) =
        query.map_err(|_| ApiError::bad_request("use ?limit=N and optionally &service=NAME"))?;
    if let Some(name) = &query.service
        && crate::registry::read(state.supervisor.registry())
            .service(name)
            .is_none()
    {
        return Err(ApiError::not_found(format!("no service named `{name}`")));
    }
    let limit = query
        .limit
        .unwrap_or(DEFAULT_TAIL)
        .min(crate::router::trace::HOPS_KEPT);
    let hops = state
        .supervisor
        .router()
        .hops_of(query.service.as_deref(), limit);
    Ok(Json(hops.iter().map(HopView::from).collect()))
}

async fn routes_of(
    State(state): State<AppState>,
    query: Result<Query<CallsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<RouteView>>, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::bad_request("use ?service=NAME"))?;
    Ok(Json(crate::supervisor::snapshot::routes_of(
        state.supervisor.router().routes(),
        query.service.as_deref(),
    )))
}

/// Stops every service in dependency order; the instance then ends (`switchboard down`).
async fn shutdown(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
) -> Json<Done> {
    let actor = access.actor(&headers);
    if let Some(audit) = &state.supervisor.audit() {
        audit.record(&actor, "down", &state.supervisor.stack().name, "ok");
    }
    tracing::info!(%actor, "stopping the stack (admin API)");
    state.supervisor.shutdown().await;
    Json(Done { ok: true })
}

async fn trace(
    State(state): State<AppState>,
    path: Result<Path<u64>, PathRejection>,
) -> Result<Json<Vec<HopView>>, ApiError> {
    let Path(trace) = path.map_err(|_| ApiError::bad_request("a trace id is a number"))?;
    let hops = state.supervisor.router().trace(trace);
    if hops.is_empty() {
        return Err(ApiError::not_found(format!(
            "no hops of trace {trace} (the router keeps the last {})",
            crate::router::trace::HOPS_KEPT
        )));
    }
    Ok(Json(hops.iter().map(HopView::from).collect()))
}

/// A path that does not decode (bad percent-encoding): JSON like every other error.
fn bad_path(_: PathRejection) -> ApiError {
    ApiError::bad_request("the path does not decode")
}

/// Runs a supervisor command and writes it, with its outcome, to the audit log.
async fn command_audited(
    state: &AppState,
    command: Command,
    actor: &str,
) -> Result<Reply, ApiError> {
    state
        .supervisor
        .command_audited(command, actor)
        .await
        .map_err(|err| ApiError::from_control(&err))
}
