//! The one mapping from errors to `tonic::Status`, with `google.rpc` details: `BadRequest` field
//! violations for bad input and `ErrorInfo` with a stable reason for refusals.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt as _};

/// The `ErrorInfo.domain` of every PIM error.
pub const ERROR_DOMAIN: &str = "pim.dev";

/// What a context's own error enum converts into at the gRPC edge.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid argument")]
    InvalidArgument(Vec<(String, String)>),
    /// A refusal by a rule, with a stable reason such as `NOT_ELIGIBLE`.
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
    },
    /// A role management policy rule refused it; `rule` is Graph's rule id.
    #[error("{message}")]
    PolicyViolation { rule: String, message: String },
    #[error("{message}")]
    PermissionDenied {
        reason: &'static str,
        message: String,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A peer or dependency did not answer; safe to retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidArgument(violations) => {
                let violations: Vec<FieldViolation> = violations
                    .into_iter()
                    .map(|(field, description)| FieldViolation::new(field, description))
                    .collect();
                let message = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request(violations),
                )
            }
            ApiError::FailedPrecondition { reason, message } => {
                with_reason(Code::FailedPrecondition, reason, message)
            }
            ApiError::PolicyViolation { rule, message } => Status::with_error_details(
                Code::FailedPrecondition,
                format!("{rule}: {message}"),
                ErrorDetails::with_error_info(
                    "POLICY_VIOLATION",
                    ERROR_DOMAIN,
                    HashMap::from([("rule".to_owned(), rule)]),
                ),
            ),
            ApiError::PermissionDenied { reason, message } => {
                with_reason(Code::PermissionDenied, reason, message)
            }
            ApiError::NotFound(what) => Status::not_found(format!("{what} not found")),
            ApiError::AlreadyExists(message) => Status::already_exists(message),
            ApiError::Unavailable(message) => Status::unavailable(message),
            ApiError::Internal(e) => {
                // The cause chain goes to the log, never to the caller.
                tracing::error!(error = ?e, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

fn with_reason(code: Code, reason: &'static str, message: String) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
    )
}

/// Collects field violations while a handler validates its input.
#[derive(Debug, Default)]
pub struct Violations(Vec<(String, String)>);

impl Violations {
    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push((field.to_owned(), description.into()));
    }

    /// Adds a violation when `value` is blank.
    pub fn require(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.add(field, "is required");
        }
    }

    /// `Ok` when nothing was violated.
    pub fn check(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self.0))
        }
    }
}

/// The `google.rpc.Code` name of a status code, as batch answers report each item's outcome.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Unavailable => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// The stable `ErrorInfo.reason` of a refusal, or empty.
pub fn reason_of(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// A list's page size: 0 means 50, at most 200; anything else is a field violation.
pub fn page_size(size: i32, v: &mut Violations) -> i64 {
    match size {
        0 => 50,
        1..=200 => i64::from(size),
        _ => {
            v.add("page_size", "must be between 0 and 200");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_violations_travel_as_bad_request() {
        let mut v = Violations::default();
        v.require("role_id", " ");
        v.add("scope", "must start with /");
        let status = Status::from(v.check().unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|f| f.field.clone())
            .collect();
        assert_eq!(fields, ["role_id", "scope"]);
    }

    #[test]
    fn refusals_carry_a_stable_reason_and_internals_stay_hidden() {
        let status = Status::from(ApiError::FailedPrecondition {
            reason: "NOT_ELIGIBLE",
            message: "no eligibility".into(),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "NOT_ELIGIBLE"
        );
        let status = Status::from(ApiError::Internal(anyhow::anyhow!("password=hunter2")));
        assert!(!status.message().contains("hunter2"));
    }
}
