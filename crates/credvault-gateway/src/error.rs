//! The one error shape every route answers with:
//! `{"error": {"code": "<stable code>", "message": "<text for people>"}}`.
//!
//! Codes are stable (clients branch on them); messages name a field and a reason, never a
//! value. Internal failures answer with a generic message and are logged with the request id.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use credvault_store::StoreError;

use crate::apikey::KeyError;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Text for people (never a secret).
    pub message: String,
    /// Seconds to wait, for 429 and some 503s.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub(crate) fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the request id names it in the gateway's log",
        )
    }

    pub(crate) fn audit_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the request could not be recorded in the audit log, so its result is not sent",
        )
    }

    pub(crate) fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry after the time in Retry-After",
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp.extensions_mut().insert(ErrorCode(self.code));
        resp
    }
}

/// The error code of a response made from an [`ApiError`] (for logs and metrics).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ErrorCode(#[allow(dead_code)] pub(crate) &'static str);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        use StatusCode as S;
        match &e {
            StoreError::NotFound { .. } | StoreError::UnknownTenant { .. } => {
                Self::not_found("no such credential")
            }
            StoreError::AccessDenied { .. } => Self::forbidden("access_denied", e.to_string()),
            StoreError::Invalid { .. }
            | StoreError::Validation(_)
            | StoreError::Field { .. }
            | StoreError::UnknownType { .. }
            | StoreError::Totp { .. } => {
                Self::new(S::BAD_REQUEST, "invalid_request", e.to_string())
            }
            StoreError::NameTaken { .. } | StoreError::VersionConflict { .. } => {
                Self::new(S::CONFLICT, "conflict", e.to_string())
            }
            StoreError::Throttled { retry_after_secs } => Self {
                retry_after: Some(*retry_after_secs),
                ..Self::new(S::TOO_MANY_REQUESTS, "throttled", e.to_string())
            },
            StoreError::Integrity { .. } | StoreError::Corrupt { .. } => Self::new(
                S::INTERNAL_SERVER_ERROR,
                "integrity",
                "a stored record failed its integrity check; nothing was used",
            ),
            StoreError::Audit(_) | StoreError::AuditLog(_) => Self::audit_unavailable(),
            StoreError::Busy { .. } => Self {
                retry_after: Some(1),
                ..Self::new(S::SERVICE_UNAVAILABLE, "busy", "the vault is busy; retry")
            },
            StoreError::SealedRejected { .. } => {
                Self::new(S::BAD_REQUEST, "sealed_rejected", e.to_string())
            }
            StoreError::ClientSealedOnly | StoreError::Unsupported(_) => {
                Self::new(S::BAD_REQUEST, "unsupported", e.to_string())
            }
            _ => {
                tracing::error!(error = %e, "store error");
                Self::internal()
            }
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Malformed | KeyError::Unknown => {
                Self::unauthenticated("the API key is not valid")
            }
            KeyError::Revoked { .. } => Self::unauthenticated("the API key was revoked"),
            KeyError::Expired { .. } => Self::unauthenticated("the API key has expired"),
            KeyError::Invalid { .. } => Self::bad_request(e.to_string()),
            KeyError::Integrity { .. } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "integrity",
                "the API key's record failed its integrity check",
            ),
            _ => {
                tracing::error!(error = %e, "key store error");
                Self::internal()
            }
        }
    }
}
