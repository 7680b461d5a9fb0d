//! The assignment context's errors, and their one mapping to the gRPC edge.

use pim_grpc::ApiError;

use crate::domain::policy::PolicyRefusal;

#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    #[error("{0}")]
    Invalid(#[from] InvalidInput),
    #[error("the principal is not eligible for this role at this scope")]
    NotEligible,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0:?}")]
    Policy(crate::domain::policy::PolicyRefusal),
    /// A rule refused the request; `reason` is stable.
    #[error("{message}")]
    Refused {
        reason: &'static str,
        message: String,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Bad input, as field violations.
#[derive(Debug, thiserror::Error)]
#[error("invalid input")]
pub struct InvalidInput(pub ApiError);

impl From<sea_orm::DbErr> for AssignmentError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Internal(e.into())
    }
}

impl From<AssignmentError> for tonic::Status {
    fn from(error: AssignmentError) -> Self {
        let api = match error {
            AssignmentError::Invalid(InvalidInput(api)) => api,
            AssignmentError::NotEligible => ApiError::FailedPrecondition {
                reason: "NOT_ELIGIBLE",
                message: "the principal is not eligible for this role at this scope".into(),
            },
            AssignmentError::Forbidden(message) => ApiError::PermissionDenied {
                reason: "NOT_AUTHORIZED",
                message,
            },
            AssignmentError::Policy(PolicyRefusal::Violation { rule, message }) => {
                ApiError::PolicyViolation {
                    rule: rule.to_owned(),
                    message,
                }
            }
            AssignmentError::Policy(PolicyRefusal::MfaRequired) => ApiError::FailedPrecondition {
                reason: "MFA_REQUIRED",
                message: "this assignment needs an MFA-authenticated administrator".into(),
            },
            AssignmentError::NotFound(what) => ApiError::NotFound(what),
            AssignmentError::AlreadyExists(message) => ApiError::AlreadyExists(message),
            AssignmentError::Refused { reason, message } => {
                ApiError::FailedPrecondition { reason, message }
            }
            AssignmentError::Internal(e) => ApiError::Internal(e),
        };
        api.into()
    }
}

impl From<ApiError> for AssignmentError {
    fn from(api: ApiError) -> Self {
        Self::Invalid(InvalidInput(api))
    }
}
