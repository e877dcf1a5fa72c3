//! Arbitrary request bodies, query strings and path parameters through the gateway's own
//! decoding: `routes::parse_json`, `routes::query_params`, `routes::merge` (with
//! `routes::param_value`), the admin API's `ScaleRequest` and `LogQuery`, and the job
//! parameters' re-serialization.
//!
//! The input is split at 0xFF bytes (which valid UTF-8 never holds): the body, then the query
//! string, then path parameters, each `name=value` (a part without `=` is the value of `id`).
//!
//! Whatever the bytes, nothing panics; every refusal is a 400 whose response is the gateway's
//! JSON error body; a merge with parameters yields an object holding them (a path parameter
//! winning over a query parameter, and both over the body); and a body the gateway accepts as
//! job parameters parses again after it is re-serialized, as the supervisor does.
#![no_main]

use axum::{
    extract::Query,
    http::{Request, StatusCode, Uri, header},
    response::IntoResponse,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard::gateway::{
    ApiError,
    admin::{LogQuery, ScaleRequest},
    error::ErrorResponse,
    routes,
};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0xFF);
    let body = parts.next().unwrap_or_default();
    let query = parts.next();
    let path: Vec<(String, String)> = parts.map(path_param).collect();

    let parsed = match routes::parse_json(body) {
        Ok(parsed) => parsed,
        Err(err) => {
            assert_refused(err);
            return;
        }
    };
    assert_eq!(
        parsed.is_none(),
        body.iter().all(u8::is_ascii_whitespace),
        "only a blank body is no body"
    );
    if let Some(value) = &parsed {
        check_admin_bodies(value);
    }

    // The request line as hyper would have accepted it; bytes it refuses never reach a route.
    let Some(request) = query.and_then(request_with_query) else {
        check_merge(parsed, Vec::new(), path);
        return;
    };
    if let Err(rejection) = Query::<LogQuery>::try_from_uri(request.uri()) {
        // `logs` maps every rejection to this one error.
        let _ = rejection.to_string();
        assert_refused(ApiError::bad_request(
            "use ?tail=N and optionally &follow=true",
        ));
    }
    let (head, ()) = request.into_parts();
    match routes::query_params(&head) {
        Ok(query) => check_merge(parsed, query, path),
        Err(err) => assert_refused(err),
    }
});

/// `name=value`, or the value of `id`; percent-decoded path parameters are always UTF-8.
fn path_param(raw: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(raw);
    match text.split_once('=') {
        Some((name, value)) => (name.to_string(), value.to_string()),
        None => ("id".to_string(), text.into_owned()),
    }
}

fn request_with_query(query: &[u8]) -> Option<Request<()>> {
    let mut target = b"/r?".to_vec();
    target.extend_from_slice(query);
    let uri = Uri::try_from(target).ok()?;
    Request::builder().uri(uri).body(()).ok()
}

/// The scale body and job parameters, as `admin::service_action` and `admin::run_job` read them.
fn check_admin_bodies(value: &Value) {
    if let Err(err) = serde_json::from_value::<ScaleRequest>(value.clone()) {
        assert_refused(ApiError::bad_request(format!(
            "scale needs {{\"replicas\": N}}: {err}"
        )));
    }
    let params = value.to_string();
    if let Err(err) = serde_json::from_str::<Value>(&params) {
        panic!("job parameters {params:?} do not parse again: {err}");
    }
}

fn check_merge(body: Option<Value>, query: Vec<(String, String)>, path: Vec<(String, String)>) {
    let no_params = query.is_empty() && path.is_empty();
    let merged = match routes::merge(body.clone(), query.clone(), path.clone()) {
        Ok(merged) => merged,
        Err(err) => {
            assert!(
                !no_params && body.as_ref().is_some_and(|b| !b.is_object()),
                "merge refused a body it should take: {err:?}"
            );
            assert_refused(err);
            return;
        }
    };
    // `call` serializes the merged value; its failure would be a 500.
    assert!(
        serde_json::to_vec(&merged).is_ok(),
        "merged body does not serialize"
    );
    if no_params {
        assert_eq!(
            merged,
            body.unwrap_or(Value::Null),
            "a body without parameters changed"
        );
        return;
    }
    let Value::Object(object) = &merged else {
        panic!("merge with parameters gave {merged}, not an object");
    };
    // The last occurrence wins: path over query, query over the body.
    for (name, _) in query.iter().chain(&path) {
        let last = path
            .iter()
            .rev()
            .chain(query.iter().rev())
            .find(|(n, _)| n == name)
            .map(|(_, v)| routes::param_value(v.clone()));
        assert_eq!(object.get(name), last.as_ref(), "parameter `{name}`");
    }
    if let Some(Value::Object(body)) = &body {
        for (name, value) in body {
            if !query.iter().chain(&path).any(|(n, _)| n == name) {
                assert_eq!(object.get(name), Some(value), "body field `{name}` lost");
            }
        }
    }
    for (_, value) in query.iter().chain(&path) {
        match routes::param_value(value.clone()) {
            Value::Number(n) => {
                assert_eq!(&n.to_string(), value, "a number that reads back otherwise")
            }
            Value::String(s) => assert_eq!(&s, value),
            other => panic!("parameter {value:?} became {other}"),
        }
    }
}

/// A refusal is a 400 whose response carries the gateway's JSON error body.
fn assert_refused(err: ApiError) {
    assert_eq!(err.status, StatusCode::BAD_REQUEST, "{err:?}");
    let (code, message) = (err.code, err.message.clone());
    let response = err.into_response();
    assert!(response.status().is_client_error(), "{}", response.status());
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let bytes = futures::executor::block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
        .unwrap_or_else(|err| panic!("error body unreadable: {err}"));
    let body: ErrorResponse = serde_json::from_slice(&bytes)
        .unwrap_or_else(|err| panic!("error body {bytes:?} is not JSON: {err}"));
    assert_eq!(
        (body.error.code.as_str(), body.error.message),
        (code, message)
    );
}
