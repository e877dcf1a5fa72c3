//! Errors of the SDK: what a handler returns, what a call returns, what serving returns.

use crate::envelope::{ErrorBody, ErrorCode, Status};

/// The error a handler returns. It travels back to the caller as a Response with this code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HandlerError {
    pub code: ErrorCode,
    pub message: String,
}

impl HandlerError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HandlerError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn into_status(self) -> Status {
        Status::Error(ErrorBody {
            code: self.code,
            message: self.message,
        })
    }
}

/// A failed call made with [`Context::call`](super::Context::call): the callee's (or the
/// router's) error code, or a local failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The callee, or the console on its behalf, answered with an error.
    #[error("{service}.{method} answered {code}: {message}")]
    Remote {
        service: String,
        method: String,
        code: ErrorCode,
        message: String,
    },
    /// The deadline passed before any answer came back.
    #[error("{service}.{method} timed out")]
    Timeout { service: String, method: String },
    /// The answer came back but its body did not decode as the expected type.
    #[error("{service}.{method} answered with an undecodable body: {reason}")]
    Decode {
        service: String,
        method: String,
        reason: String,
    },
    /// The connection to the console is gone (the service is shutting down).
    #[error("connection to the console closed")]
    Disconnected,
}

impl CallError {
    /// The error code this failure corresponds to.
    pub fn code(&self) -> ErrorCode {
        match self {
            CallError::Remote { code, .. } => *code,
            CallError::Timeout { .. } => ErrorCode::Timeout,
            CallError::Decode { .. } => ErrorCode::Internal,
            CallError::Disconnected => ErrorCode::Unavailable,
        }
    }
}

/// A dependency failing is reported to our own caller with the same code, so that "user is
/// down" reaches the client as unavailable rather than as an opaque internal error.
impl From<CallError> for HandlerError {
    fn from(err: CallError) -> Self {
        HandlerError::new(err.code(), err.to_string())
    }
}

/// Why serving stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("I/O error on the console connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the console closed the connection before the handshake finished")]
    HandshakeClosed,
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("metrics segment: {0}")]
    Segment(#[from] crate::segment::SegmentError),
}
