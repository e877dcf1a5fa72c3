//! Service routes: the stack's `[gateway] routes` (`GET /users/{id}` → `user.get`) and the
//! generic `POST /call/{service}/{method}`; a route marked `stream = true` and the generic
//! `POST /stream/{service}/{method}` answer with a stream (see [`super::stream`]). Each request
//! becomes one router call under the caller name [`GATEWAY`], so it gets the same deadlines,
//! error codes, breakers and traces as a call between services.
//!
//! The body sent to the service is JSON: on a stack route, the request's JSON object (if any)
//! with the query parameters and then the path parameters merged in (a path parameter wins);
//! a parameter that reads back as the same integer (`7`, not `007`) becomes a JSON number.
//! Without parameters the body is passed as it is, and an empty body is `null`. The generic
//! route passes its body as it is.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use axum::{
    body::Body as HttpBody,
    extract::{FromRequestParts, RawPathParams, Request, State},
    http::{HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on, post},
};
use bytes::Bytes;
use serde_json::{Map, Value};
use switchboard_protocol::{Body, Envelope, ErrorBody, Kind, Status};

use super::{
    AppState, GatewayError,
    error::{ApiError, public_error},
    stream::{self, Framing},
};
use crate::{
    router::GATEWAY,
    stack::{RouteSpec, routes::RouteSet},
};

pub use crate::stack::routes::RESERVED;

/// Response header carrying the router's trace id of the call.
pub const TRACE_HEADER: &str = "x-switchboard-trace";

/// Routes of the stack plus the generic call route.
pub fn router(routes: &[RouteSpec]) -> axum::Router<AppState> {
    let mut app = axum::Router::new()
        .route("/call/{service}/{method}", post(generic_call))
        .route("/stream/{service}/{method}", post(generic_stream));
    // One MethodRouter per path, so `GET /users/{id}` and `DELETE /users/{id}` share it.
    let mut by_path: Vec<(String, axum::routing::MethodRouter<AppState>)> = Vec::new();
    for route in routes {
        let Some(filter) = method_filter(&route.method) else {
            continue;
        };
        let spec = Arc::new(route.clone());
        let handler = move |State(state): State<AppState>, request: Request| {
            let spec = spec.clone();
            async move { stack_route(state, &spec, request).await }
        };
        match by_path.iter_mut().find(|(p, _)| *p == route.path) {
            Some((_, methods)) => {
                let taken = std::mem::take(methods);
                *methods = taken.on(filter, handler);
            }
            None => by_path.push((route.path.clone(), on(filter, handler))),
        }
    }
    for (path, methods) in by_path {
        app = app.route(&path, methods);
    }
    app
}

/// Refuses, before axum would panic on them, routes that overlap each other or the gateway's
/// own paths (the stack's parser refuses them first; see [`RouteSet`]), and methods axum
/// cannot route.
pub fn validate(routes: &[RouteSpec]) -> Result<(), GatewayError> {
    let mut set = RouteSet::default();
    for route in routes {
        let bad = |why: String| GatewayError::Route {
            route: format!("{} {}", route.method, route.path),
            why,
        };
        if method_filter(&route.method).is_none() {
            return Err(bad(format!("unknown method `{}`", route.method)));
        }
        set.add(&route.method, &route.path).map_err(bad)?;
    }
    Ok(())
}

fn method_filter(method: &str) -> Option<MethodFilter> {
    Some(match method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "PATCH" => MethodFilter::PATCH,
        "DELETE" => MethodFilter::DELETE,
        _ => return None,
    })
}

async fn stack_route(state: AppState, route: &RouteSpec, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let outcome = async {
        let params = path_params(&mut parts).await?;
        let query = query_params(&parts)?;
        let body = read_body(&parts, body, state.config.body_limit).await?;
        let value = merge(parse_json(&body)?, query, params)?;
        Ok::<_, ApiError>(value)
    }
    .await;
    match outcome {
        Ok(value) if route.stream => {
            let framing = Framing::from_headers(&parts.headers);
            stream::respond(&state, framing, &route.service, &route.call_method, value).await
        }
        Ok(value) => call(&state, &route.service, &route.call_method, value).await,
        Err(err) => err.into_response(),
    }
}

async fn generic_call(State(state): State<AppState>, request: Request) -> Response {
    match generic_request(&state, request).await {
        Ok((_, service, method, value)) => call(&state, &service, &method, value).await,
        Err(err) => err.into_response(),
    }
}

async fn generic_stream(State(state): State<AppState>, request: Request) -> Response {
    match generic_request(&state, request).await {
        Ok((framing, service, method, value)) => {
            stream::respond(&state, framing, &service, &method, value).await
        }
        Err(err) => err.into_response(),
    }
}

/// `/{call,stream}/{service}/{method}`: the framing a stream would use, the target, the body.
async fn generic_request(
    state: &AppState,
    request: Request,
) -> Result<(Framing, String, String, Value), ApiError> {
    let (mut parts, body) = request.into_parts();
    let params = path_params(&mut parts).await?;
    let find = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (service, method) = (find("service"), find("method"));
    let body = read_body(&parts, body, state.config.body_limit).await?;
    let value = parse_json(&body)?.unwrap_or(Value::Null);
    Ok((
        Framing::from_headers(&parts.headers),
        service,
        method,
        value,
    ))
}

async fn path_params(parts: &mut Parts) -> Result<Vec<(String, String)>, ApiError> {
    let raw = RawPathParams::from_request_parts(parts, &())
        .await
        .map_err(|_| ApiError::bad_request("a path parameter is not valid UTF-8"))?;
    Ok(raw
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// The query string's `key=value` pairs, percent-decoded; 400 when it does not decode.
pub fn query_params(parts: &Parts) -> Result<Vec<(String, String)>, ApiError> {
    if parts.uri.query().is_none() {
        return Ok(Vec::new());
    }
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .map_err(|_| ApiError::bad_request("the query string cannot be decoded"))
}

/// Reads the whole body, refusing more than `limit` bytes with 413 (before reading, when the
/// client announced its length). Hand-written rather than tower-http's `RequestBodyLimitLayer`:
/// the limit is the stack's per route, and the refusal is the JSON [`ApiError`].
pub async fn read_body(parts: &Parts, body: HttpBody, limit: usize) -> Result<Bytes, ApiError> {
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(cause) = source {
            if cause.is::<http_body_util::LengthLimitError>() {
                return ApiError::too_large(limit);
            }
            source = cause.source();
        }
        tracing::debug!(cause = %err, "cannot read a request body");
        ApiError::bad_request("the request body could not be read")
    })
}

/// The body as JSON; `None` when it is empty (or only whitespace).
pub fn parse_json(body: &[u8]) -> Result<Option<Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|err| ApiError::bad_request(format!("malformed JSON body: {err}")))
}

/// The request body a stack route sends: see the module docs.
pub fn merge(
    body: Option<Value>,
    query: Vec<(String, String)>,
    path: Vec<(String, String)>,
) -> Result<Value, ApiError> {
    if query.is_empty() && path.is_empty() {
        return Ok(body.unwrap_or(Value::Null));
    }
    let mut object = match body {
        None => Map::new(),
        Some(Value::Object(object)) => object,
        Some(_) => {
            return Err(ApiError::bad_request(
                "the body must be a JSON object on a route with path or query parameters",
            ));
        }
    };
    for (key, value) in query.into_iter().chain(path) {
        object.insert(key, param_value(value));
    }
    Ok(Value::Object(object))
}

/// A path or query parameter as JSON: a number when it reads back as the same integer.
pub fn param_value(text: String) -> Value {
    match text.parse::<i64>() {
        Ok(n) if n.to_string() == text => Value::from(n),
        _ => Value::String(text),
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One router call under the gateway's name, its answer as an HTTP response.
async fn call(state: &AppState, service: &str, method: &str, body: Value) -> Response {
    let Ok(json) = serde_json::to_vec(&body) else {
        return ApiError::internal().into_response();
    };
    let timeout = state.config.request_timeout;
    let envelope = Envelope {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        deadline_us: u64::try_from(timeout.as_micros())
            .unwrap_or(u64::MAX)
            .max(1),
        kind: Kind::Request,
        destination: service.into(),
        method: method.into(),
        body: Body::Json(Bytes::from(json)),
        ..Envelope::default()
    };
    // The router answers `timeout` itself when the deadline passes (and the time_limit layer
    // bounds the whole request besides), so no timer of its own here: one less per request.
    let answer = state.supervisor.router().call(GATEWAY, envelope).await;
    let mut response = match answer.kind {
        Kind::Response(Status::Ok) => match answer.body {
            Body::Json(bytes) => json_response(bytes),
            Body::Empty => json_response(Bytes::from_static(b"null")),
            Body::Postcard(_) => {
                tracing::warn!(%service, %method, "service answered the gateway in postcard");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "internal",
                    format!("`{service}` did not answer in JSON"),
                )
                .into_response()
            }
        },
        Kind::Response(Status::Error(error)) => {
            let (code, message) =
                public_error(service, method, answer.trace, error.code, error.message);
            let error = ErrorBody { code, message };
            ApiError::from_service(&error, state.retry_after(service)).into_response()
        }
        other => {
            tracing::warn!(%service, kind = ?other, "unexpected answer to a gateway call");
            ApiError::internal().into_response()
        }
    };
    response
        .headers_mut()
        .insert(TRACE_HEADER, HeaderValue::from(answer.trace));
    response
}

fn json_response(bytes: Bytes) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// Unknown path: a JSON 404 rather than axum's empty one.
pub async fn unknown_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

/// Known path, wrong method.
pub async fn wrong_method(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn path_and_query_parameters_are_merged_into_the_body() {
        let merged = merge(
            Some(json!({"name": "ada", "id": "body"})),
            pairs(&[("limit", "10"), ("code", "007")]),
            pairs(&[("id", "7")]),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            merged,
            json!({"name": "ada", "id": 7, "limit": 10, "code": "007"})
        );
        assert_eq!(
            merge(None, vec![], vec![]).unwrap_or_else(|e| panic!("{e:?}")),
            Value::Null
        );
        assert_eq!(
            merge(Some(json!("text")), vec![], vec![]).unwrap_or_else(|e| panic!("{e:?}")),
            json!("text")
        );
        assert!(merge(Some(json!([1])), vec![], pairs(&[("id", "1")])).is_err());
    }

    fn route(method: &str, path: &str) -> RouteSpec {
        RouteSpec {
            method: method.into(),
            path: path.into(),
            service: "s".into(),
            call_method: "m".into(),
            stream: false,
        }
    }

    #[test]
    fn validate_names_the_route_it_refuses() {
        let refused = |routes: &[RouteSpec]| match validate(routes) {
            Err(GatewayError::Route { route, .. }) => route,
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(
            refused(&[route("GET", "/a/{x}"), route("POST", "/a/{y}")]),
            "POST /a/{y}"
        );
        assert_eq!(refused(&[route("BREW", "/tea")]), "BREW /tea");
        assert!(validate(&[route("GET", "/a/{x}"), route("DELETE", "/a/{x}")]).is_ok());
    }
}
