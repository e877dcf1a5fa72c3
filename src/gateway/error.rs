//! The one error type every gateway handler returns. It renders as
//! `{"error":{"code":"not_found","message":"..."}}` with the matching status, so a client sees
//! the same shape for a service's error, a refused token, a bad body or an unknown route.
//!
//! Messages are either the router's or the service's own (both written for callers) or fixed
//! text chosen here; console internals (I/O errors, paths, panics) are logged, never sent. A
//! handler's `internal` error is a failure inside the service, whose text may hold anything
//! (a query, a path, a stack trace): the client gets a generic message naming the trace id,
//! and the text goes to the console's log under that trace (see [`public_error`]).

use std::time::Duration;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use switchboard_protocol::{ErrorBody, ErrorCode};

use crate::supervisor::ControlError;

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, at least one) on 503s.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
    }

    /// For failures inside the console: the cause goes to the log, the client gets a fixed text.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error in the gateway",
        )
    }

    /// A service's (or the router's) error answer. `retry_after` is the hint for 503s.
    pub fn from_service(error: &ErrorBody, retry_after: Duration) -> Self {
        let status = status_of(error.code);
        ApiError {
            status,
            code: error.code.as_str(),
            message: error.message.clone(),
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(retry_after),
        }
    }

    /// A supervisor's refusal of an admin command.
    pub fn from_control(error: &ControlError) -> Self {
        let status = match error {
            ControlError::UnknownService(_) => StatusCode::NOT_FOUND,
            ControlError::NotAJob(_)
            | ControlError::IsAJob(_)
            | ControlError::BadReplicas { .. }
            | ControlError::BadParams(_) => StatusCode::BAD_REQUEST,
            ControlError::AlreadyRunning(_) => StatusCode::CONFLICT,
            ControlError::ShuttingDown | ControlError::HostUnreachable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // The agent's own refusal (bad replicas, already running, ...): the caller's to
            // fix, as the same refusal from this console's supervisor would be.
            ControlError::OnHost { .. } => StatusCode::CONFLICT,
        };
        let code = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "bad_request",
        };
        let mut api = Self::new(status, code, error.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            api.retry_after = Some(Duration::from_secs(1));
        }
        api
    }
}

/// What a gateway client is told of an error answer to its call of `service.method` under
/// `trace`: the answer itself, except that an `internal` error's message is replaced by a
/// generic one naming the trace, and logged.
pub fn public_error(
    service: &str,
    method: &str,
    trace: u64,
    code: ErrorCode,
    message: String,
) -> (ErrorCode, String) {
    if code != ErrorCode::Internal {
        return (code, message);
    }
    tracing::error!(%service, %method, trace, detail = %message, "internal error answered to a gateway client");
    (
        code,
        format!("internal error (trace {trace}; the details are in the console's log)"),
    )
}

/// The HTTP status for each of the protocol's error codes.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Unavailable | ErrorCode::Overloaded | ErrorCode::CircuitOpen => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up: a client must not retry before the hint.
            let secs = after.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"switchboard\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_its_status() {
        let expected = [
            (ErrorCode::NotFound, 404),
            (ErrorCode::Timeout, 504),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::Overloaded, 503),
            (ErrorCode::CircuitOpen, 503),
            (ErrorCode::Forbidden, 403),
            (ErrorCode::BadRequest, 400),
            (ErrorCode::Internal, 500),
        ];
        assert_eq!(expected.len(), ErrorCode::ALL.len());
        for (code, status) in expected {
            assert_eq!(status_of(code).as_u16(), status, "{code}");
        }
    }

    #[test]
    fn an_internal_message_is_replaced_and_the_rest_pass_through() {
        let (code, message) = public_error(
            "user",
            "get",
            42,
            ErrorCode::Internal,
            "SELECT * failed at /srv/db".into(),
        );
        assert_eq!(code, ErrorCode::Internal);
        assert!(message.contains("trace 42"), "{message}");
        assert!(
            !message.contains("SELECT") && !message.contains("/srv"),
            "{message}"
        );
        for code in ErrorCode::ALL
            .iter()
            .copied()
            .filter(|c| *c != ErrorCode::Internal)
        {
            assert_eq!(
                public_error("user", "get", 42, code, "as is".into()),
                (code, "as is".into())
            );
        }
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let error = ErrorBody {
            code: ErrorCode::CircuitOpen,
            message: "open".into(),
        };
        let response = ApiError::from_service(&error, Duration::from_millis(1500)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
