//! The rules a submission must pass before anything is written: its shape, then the role's
//! effective policy. No I/O here.

use pim_auth::Caller;
use pim_grpc::Violations;
use pim_proto::{
    activation::v1::{RequestAction, SubmitRequest},
    assignment::v1::PolicyRules,
};

/// The shortest activation PIM grants.
pub const MIN_DURATION_MS: i64 = 5 * 60 * 1000;

/// Checks the shape of a submission; returns the requested duration in milliseconds.
pub fn validate(request: &SubmitRequest, v: &mut Violations) -> i64 {
    if request.action != RequestAction::SelfActivate as i32 {
        v.add("action", "only SELF_ACTIVATE is supported");
    }
    v.require("request_id", &request.request_id);
    if request.request_id.len() > 128 {
        v.add("request_id", "must be at most 128 characters");
    }
    v.require("role_id", &request.role_id);
    v.require("scope", &request.scope);
    if !request.scope.starts_with('/') {
        v.add("scope", "must start with /");
    }
    if request.justification.len() > 500 {
        v.add("justification", "must be at most 500 characters");
    }
    if let Some(ticket) = &request.ticket
        && (ticket.system.len() > 100 || ticket.number.len() > 100)
    {
        v.add("ticket", "system and number are at most 100 characters");
    }
    let duration_ms = request
        .duration
        .as_ref()
        .map(|d| d.seconds.saturating_mul(1000) + i64::from(d.nanos) / 1_000_000)
        .unwrap_or(0);
    if duration_ms < MIN_DURATION_MS {
        v.add("duration", "must be at least 5 minutes");
    }
    duration_ms
}

/// Why the role's policy refuses a submission.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `POLICY_VIOLATION`, naming Graph's rule id.
    Violation {
        rule: &'static str,
        message: String,
    },
    MfaRequired,
    AuthenticationContextRequired(String),
    /// Approval cases arrive with the approval service; until then such a role cannot be
    /// activated, because nothing may be granted without the approval its policy asks for.
    ApprovalRequired,
}

/// Enforces the end-user rules of the effective policy on a well-formed submission.
pub fn enforce(
    policy: &PolicyRules,
    request: &SubmitRequest,
    duration_ms: i64,
    caller: &Caller,
) -> Result<(), Refusal> {
    let expiration = policy.activation_expiration.unwrap_or_default();
    let max_ms = expiration
        .maximum_duration
        .as_ref()
        .map(|d| d.seconds.saturating_mul(1000))
        .unwrap_or(0);
    if duration_ms > max_ms {
        return Err(Refusal::Violation {
            rule: "Expiration_EndUser_Assignment",
            message: format!("the maximum activation is {} minutes", max_ms / 60_000),
        });
    }
    let enablement = policy.activation_enablement.unwrap_or_default();
    if enablement.justification_required && request.justification.trim().is_empty() {
        return Err(Refusal::Violation {
            rule: "Enablement_EndUser_Assignment",
            message: "a justification is required".into(),
        });
    }
    let ticket = request.ticket.clone().unwrap_or_default();
    if enablement.ticket_required
        && (ticket.system.trim().is_empty() || ticket.number.trim().is_empty())
    {
        return Err(Refusal::Violation {
            rule: "Enablement_EndUser_Assignment",
            message: "a ticket (system and number) is required".into(),
        });
    }
    if enablement.mfa_required && !caller.did_mfa() {
        return Err(Refusal::MfaRequired);
    }
    if let Some(context) = &policy.activation_authentication_context
        && context.enabled
        && !caller.acrs.contains(&context.claim_value)
    {
        return Err(Refusal::AuthenticationContextRequired(
            context.claim_value.clone(),
        ));
    }
    if policy.approval.as_ref().is_some_and(|a| a.required) {
        return Err(Refusal::ApprovalRequired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use pim_proto::{
        Duration,
        assignment::v1::{ApprovalRule, EnablementRule, ExpirationRule},
    };

    use super::*;

    fn request(minutes: i64) -> SubmitRequest {
        SubmitRequest {
            request_id: "r1".into(),
            action: RequestAction::SelfActivate.into(),
            role_id: "role".into(),
            scope: "/".into(),
            duration: Some(Duration {
                seconds: minutes * 60,
                nanos: 0,
            }),
            justification: "incident 42".into(),
            ..SubmitRequest::default()
        }
    }

    fn policy() -> PolicyRules {
        PolicyRules {
            activation_expiration: Some(ExpirationRule {
                permanent_allowed: false,
                maximum_duration: Some(Duration {
                    seconds: 8 * 3600,
                    nanos: 0,
                }),
            }),
            activation_enablement: Some(EnablementRule {
                mfa_required: true,
                justification_required: true,
                ticket_required: false,
            }),
            ..Default::default()
        }
    }

    fn person(mfa: bool) -> Caller {
        let amr = if mfa { vec!["mfa".into()] } else { vec![] };
        Caller::from_subject("alice".into(), amr, None, vec![])
    }

    #[test]
    fn durations_are_bounded_by_shape_and_by_policy() {
        let mut v = Violations::default();
        validate(&request(4), &mut v);
        assert!(v.check().is_err());
        assert!(enforce(&policy(), &request(480), 480 * 60_000, &person(true)).is_ok());
        assert!(matches!(
            enforce(&policy(), &request(481), 481 * 60_000, &person(true)),
            Err(Refusal::Violation {
                rule: "Expiration_EndUser_Assignment",
                ..
            })
        ));
    }

    #[test]
    fn justification_mfa_and_approval_are_enforced_in_that_order() {
        let mut r = request(60);
        r.justification = " ".into();
        assert!(matches!(
            enforce(&policy(), &r, 3_600_000, &person(true)),
            Err(Refusal::Violation { .. })
        ));
        assert_eq!(
            enforce(&policy(), &request(60), 3_600_000, &person(false)),
            Err(Refusal::MfaRequired)
        );
        let mut approval = policy();
        approval.approval = Some(ApprovalRule {
            required: true,
            ..Default::default()
        });
        assert_eq!(
            enforce(&approval, &request(60), 3_600_000, &person(true)),
            Err(Refusal::ApprovalRequired)
        );
    }
}
