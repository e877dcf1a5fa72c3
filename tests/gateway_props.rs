//! Property tests for the gateway's JSON inputs, through the functions its handlers use:
//! `routes::parse_json` (every body), `routes::query_params` (a stack route's query string),
//! `routes::merge` and `routes::param_value` (the body a stack route sends), the admin API's
//! `ScaleRequest` and `LogQuery`, and the job parameters' re-serialization. Whatever the input,
//! nothing panics, every refusal is a 400 carrying the JSON error body, and a merge with
//! parameters yields an object holding them. Inputs: arbitrary bytes, soups of JSON tokens,
//! valid JSON values, and query strings and path parameters over a small alphabet with `%`, `+`,
//! `&`, `=` and digits. The `gateway_json` fuzz target (`fuzz/`) explores the same properties
//! without a time limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::{
    extract::Query,
    http::{Request, StatusCode, Uri, header},
    response::IntoResponse,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use switchboard::gateway::{
    ApiError,
    admin::{self, LogQuery, ScaleRequest},
    error::ErrorResponse,
    routes,
};

/// A refusal is a 400 whose response carries the gateway's JSON error body.
fn refused(err: ApiError) -> Result<(), TestCaseError> {
    prop_assert_eq!(err.status, StatusCode::BAD_REQUEST, "{:?}", err);
    let (code, message) = (err.code, err.message.clone());
    let response = err.into_response();
    prop_assert!(response.status().is_client_error());
    prop_assert_eq!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let bytes = futures::executor::block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
        .expect("error body unreadable");
    let body: ErrorResponse = serde_json::from_slice(&bytes).expect("error body is not JSON");
    prop_assert_eq!(body.error.code.as_str(), code);
    prop_assert_eq!(body.error.message, message);
    Ok(())
}

/// A body as every handler reads it; then as `scale` and as job parameters.
fn body(bytes: &[u8]) -> Result<Option<Value>, TestCaseError> {
    let parsed = match routes::parse_json(bytes) {
        Ok(parsed) => parsed,
        Err(err) => {
            refused(err)?;
            return Ok(None);
        }
    };
    prop_assert_eq!(parsed.is_none(), bytes.iter().all(u8::is_ascii_whitespace));
    // The scale handler's own reading of the same bytes.
    match admin::scale_request(bytes) {
        Ok(scale) => {
            let value = parsed.clone().expect("a scale request from no JSON");
            prop_assert_eq!(Some(u64::from(scale.replicas)), value["replicas"].as_u64());
        }
        Err(err) => refused(err)?,
    }
    if let Some(value) = &parsed {
        // `run_job` passes the value on as text; the supervisor parses it again.
        let params = value.to_string();
        prop_assert!(serde_json::from_str::<Value>(&params).is_ok(), "{}", params);
    }
    Ok(parsed)
}

/// The query string's pairs as `routes::query_params` decodes them; `None` for a request line
/// hyper would refuse, which never reaches a route.
fn query(query: &str) -> Result<Option<Vec<(String, String)>>, TestCaseError> {
    let Ok(uri) = Uri::try_from(format!("/r?{query}")) else {
        return Ok(None);
    };
    if Query::<LogQuery>::try_from_uri(&uri).is_err() {
        // What the logs handler answers for a query axum cannot read.
        refused(admin::log_query_refused())?;
    }
    let (parts, ()) = Request::builder()
        .uri(uri)
        .body(())
        .expect("request")
        .into_parts();
    match routes::query_params(&parts) {
        Ok(pairs) => Ok(Some(pairs)),
        Err(err) => {
            refused(err)?;
            Ok(None)
        }
    }
}

fn merged(
    body: Option<Value>,
    query: Vec<(String, String)>,
    path: Vec<(String, String)>,
) -> Result<(), TestCaseError> {
    let no_params = query.is_empty() && path.is_empty();
    let value = match routes::merge(body.clone(), query.clone(), path.clone()) {
        Ok(value) => value,
        Err(err) => {
            prop_assert!(!no_params && body.as_ref().is_some_and(|b| !b.is_object()));
            return refused(err);
        }
    };
    if no_params {
        prop_assert_eq!(value, body.unwrap_or(Value::Null));
        return Ok(());
    }
    let Value::Object(object) = &value else {
        return Err(TestCaseError::fail(format!("{value} is not an object")));
    };
    // The last occurrence wins: path over query, query over the body.
    for (name, _) in query.iter().chain(&path) {
        let last = path
            .iter()
            .rev()
            .chain(query.iter().rev())
            .find(|(n, _)| n == name)
            .map(|(_, v)| routes::param_value(v.clone()));
        prop_assert_eq!(object.get(name), last.as_ref(), "parameter `{}`", name);
    }
    if let Some(Value::Object(body)) = &body {
        for (name, field) in body {
            if !query.iter().chain(&path).any(|(n, _)| n == name) {
                prop_assert_eq!(object.get(name), Some(field));
            }
        }
    }
    Ok(())
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    " ",
    "\n",
    "\"",
    "\"replicas\"",
    "\"id\"",
    "\"a\"",
    "0",
    "3",
    "-1",
    "007",
    "1.5",
    "1e999",
    "-0",
    "4294967296",
    "18446744073709551616",
    "true",
    "null",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\\"",
    "é",
    "\u{0}",
    "/*",
    "NaN",
];

fn json_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..40).prop_map(|t| t.concat())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec(("(replicas|id|[a-z]{1,3})", inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Text over the characters that matter to query decoding.
fn query_text() -> impl Strategy<Value = String> {
    "[a-z0-9%+&=#?/ é-]{0,24}"
}

fn path_params() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        ("(id|name|limit|[a-z]{1,2})", "(-?[0-9]{0,20}|.{0,6})"),
        0..3,
    )
}

#[test]
fn known_inputs() {
    let scale = body(br#"{"replicas": 3}"#).unwrap().unwrap();
    assert_eq!(
        serde_json::from_value::<ScaleRequest>(scale)
            .unwrap()
            .replicas,
        3
    );
    assert_eq!(body(b" \n\t").unwrap(), None);
    for bad in [
        &b"{"[..],
        b"\xff",
        br#"{"replicas": -1}"#,
        b"",
        br#"{"replicas": "3"}"#,
    ] {
        body(bad).unwrap();
        let refused = admin::scale_request(bad).expect_err("a bad scale body was taken");
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
    assert_eq!(
        admin::scale_request(br#"{"replicas": 2}"#)
            .unwrap()
            .replicas,
        2
    );
    let pairs = query("limit=10&code=007&name=a%20b+c").unwrap().unwrap();
    assert_eq!(pairs[2], ("name".to_string(), "a b c".to_string()));
    merged(
        Some(json!({"id": "x"})),
        pairs,
        vec![("id".into(), "7".into())],
    )
    .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        q in query_text(),
        path in path_params(),
    ) {
        let parsed = body(&bytes)?;
        if let Some(pairs) = query(&q)? {
            merged(parsed, pairs, path)?;
        }
    }

    #[test]
    fn json_soup_never_panics(soup in json_soup(), q in query_text(), path in path_params()) {
        let parsed = body(soup.as_bytes())?;
        if let Some(pairs) = query(&q)? {
            merged(parsed, pairs, path)?;
        }
    }

    #[test]
    fn valid_json_is_taken_and_merged(
        value in json_value(),
        q in query_text(),
        path in path_params(),
    ) {
        let text = value.to_string();
        let parsed = body(text.as_bytes())?;
        prop_assert!(parsed.is_some(), "{} was refused", text);
        if let Some(pairs) = query(&q)? {
            merged(parsed, pairs, path)?;
        }
    }

    #[test]
    fn any_replicas_number_scales_or_is_a_400(n in any::<i64>(), f in any::<f64>()) {
        for text in [format!(r#"{{"replicas":{n}}}"#), json!({"replicas": f}).to_string()] {
            if let Some(value) = body(text.as_bytes())? {
                let scale = serde_json::from_value::<ScaleRequest>(value);
                prop_assert_eq!(scale.is_ok(), text == format!(r#"{{"replicas":{n}}}"#) && u32::try_from(n).is_ok());
            }
        }
    }
}
