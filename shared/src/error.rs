//! One error type for every operation, with stable codes (architecture §3).

use serde::{Deserialize, Serialize};

/// Stable error codes. Consumers and workers match on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorCode {
    ValidationError,
    NotFound,
    Conflict,
    Unauthorized,
    Forbidden,
    PayloadTooLarge,
    MethodNotAllowed,
    ProviderError,
    Internal,
    /// A rate limit (Telegram's flood control): retry after the body's `retryAfterMs`.
    RateLimited,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "ValidationError",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::PayloadTooLarge => "PayloadTooLarge",
            ErrorCode::MethodNotAllowed => "MethodNotAllowed",
            ErrorCode::ProviderError => "ProviderError",
            ErrorCode::Internal => "Internal",
            ErrorCode::RateLimited => "RateLimited",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::ValidationError => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::ProviderError => 502,
            ErrorCode::Internal => 500,
            ErrorCode::RateLimited => 429,
        }
    }
}

/// Why a lease operation was refused (the `reason` of a `Conflict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseRefusal {
    /// The lease ran out before the call arrived.
    LeaseExpired,
    /// The message is held under another lease or by another worker.
    LeaseMismatch,
    /// The message is not being processed (queued, done or dead-lettered).
    NotProcessing,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict { message: String, reason: Option<LeaseRefusal> },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Provider(String),
    /// Something failed on our side. `message` says what, in words safe to show a caller;
    /// `source` keeps the cause (an SDK error with its context), which only the log shows.
    #[error("internal error: {message}")]
    Internal {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Try again after `retry_after_ms` (HTTP 429, `retryAfterMs` in the body).
    #[error("{message}")]
    RateLimited { message: String, retry_after_ms: u64 },
}

impl AppError {
    pub fn validation(m: impl Into<String>) -> Self {
        AppError::Validation(m.into())
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        AppError::NotFound(m.into())
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        AppError::Conflict { message: m.into(), reason: None }
    }
    pub fn lease(reason: LeaseRefusal, m: impl Into<String>) -> Self {
        AppError::Conflict { message: m.into(), reason: Some(reason) }
    }
    pub fn internal(m: impl Into<String>) -> Self {
        AppError::Internal { message: m.into(), source: None }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::Validation(_) => ErrorCode::ValidationError,
            AppError::NotFound(_) => ErrorCode::NotFound,
            AppError::Conflict { .. } => ErrorCode::Conflict,
            AppError::Unauthorized(_) => ErrorCode::Unauthorized,
            AppError::Forbidden(_) => ErrorCode::Forbidden,
            AppError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            AppError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            AppError::Provider(_) => ErrorCode::ProviderError,
            AppError::Internal { .. } => ErrorCode::Internal,
            AppError::RateLimited { .. } => ErrorCode::RateLimited,
        }
    }

    pub fn lease_refusal(&self) -> Option<LeaseRefusal> {
        match self {
            AppError::Conflict { reason, .. } => *reason,
            _ => None,
        }
    }

    /// The body of an HTTP error response: `{"error":{"code","message"[,"reason"]}}`. An internal
    /// error's cause (an SDK error, a table name) stays in the log: the caller gets a fixed text.
    pub fn to_body(&self) -> serde_json::Value {
        let message = match self {
            AppError::Internal { .. } => "internal error (the cause is in the service log)".to_string(),
            other => other.to_string(),
        };
        let mut e = serde_json::json!({ "code": self.code().as_str(), "message": message });
        if let Some(r) = self.lease_refusal() {
            e["reason"] = serde_json::to_value(r).unwrap_or_default();
        }
        if let AppError::RateLimited { retry_after_ms, .. } = self {
            e["retryAfterMs"] = serde_json::json!(retry_after_ms);
        }
        serde_json::json!({ "error": e })
    }
}

impl AppError {
    /// An internal error that keeps its cause for the log.
    pub fn internal_from(m: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        AppError::Internal { message: m.into(), source: Some(Box::new(source)) }
    }

    /// The message and every cause below it, for the log (never for a caller).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(c) = cur {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cur = c.source();
        }
        out
    }

    /// Log a refusal once, at the edge that answers the caller: client errors at info with their
    /// code, internal errors at error with their cause chain.
    pub fn log(&self, what: &str) {
        if matches!(self, AppError::Internal { .. }) {
            tracing::error!(code = self.code().as_str(), error = %self.chain(), what, "call failed");
        } else {
            tracing::info!(code = self.code().as_str(), error = %self, what, "call refused");
        }
    }
}

/// The Lambda runtime's view of an error: `errorType` is the stable code.
#[cfg(feature = "aws")]
impl From<AppError> for lambda_runtime::Diagnostic {
    fn from(e: AppError) -> Self {
        // The body's message: an internal error's cause stays in the log, not in the caller's answer.
        let error_message = e.to_body()["error"]["message"].as_str().unwrap_or_default().to_string();
        lambda_runtime::Diagnostic { error_type: e.code().as_str().to_string(), error_message }
    }
}

pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_code_message_and_reason() {
        let e = AppError::lease(LeaseRefusal::LeaseExpired, "lease expired at 5");
        let b = e.to_body();
        assert_eq!(b["error"]["code"], "Conflict");
        assert_eq!(b["error"]["reason"], "lease_expired");
        assert_eq!(b["error"]["message"], "lease expired at 5");
        assert_eq!(e.code().http_status(), 409);
        let v = AppError::validation("bad").to_body();
        assert!(v["error"].get("reason").is_none());
        let i = AppError::internal("PutItem failed: ValidationException: key too long, table af-queue").to_body();
        assert!(!i.to_string().contains("PutItem") && !i.to_string().contains("af-queue"), "{i}");
        assert_eq!(AppError::MethodNotAllowed("x".into()).code().http_status(), 405);
        let r = AppError::RateLimited { message: "slow down".into(), retry_after_ms: 3000 };
        assert_eq!((r.code().http_status(), r.to_body()["error"]["retryAfterMs"].as_u64()), (429, Some(3000)));
    }

    #[test]
    fn internal_errors_keep_their_cause_out_of_the_message() {
        let cause = std::io::Error::other("endpoint said: secret detail");
        let e = AppError::internal_from("GetItem failed", cause);
        assert_eq!(e.to_string(), "internal error: GetItem failed");
        assert!(!e.to_body().to_string().contains("secret detail"));
        assert!(e.chain().contains("secret detail"), "the log keeps the cause");
    }
}
