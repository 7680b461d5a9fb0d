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
/// No window is longer than a year, whatever a policy says.
pub const MAX_DURATION_MS: i64 = 366 * 24 * 3600 * 1000;
/// How far ahead a start may be scheduled.
pub const MAX_START_AHEAD_MS: i64 = 366 * 24 * 3600 * 1000;
pub const MAX_TEXT: usize = 500;

/// A well-formed submission: what the window asks for.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub duration_ms: i64,
    /// A later start, if the caller asked for one.
    pub start_ms: Option<i64>,
    /// The end the caller named, if they named one.
    pub end_ms: Option<i64>,
}

fn millis(ts: &pim_proto::Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos) / 1_000_000)
}

/// Checks the shape of a submission at `now_ms`.
pub fn validate(request: &SubmitRequest, now_ms: i64, v: &mut Violations) -> Asked {
    let action = RequestAction::try_from(request.action).unwrap_or_default();
    if action == RequestAction::Unspecified {
        v.add(
            "action",
            "must be SELF_ACTIVATE, SELF_DEACTIVATE, SELF_EXTEND or SELF_RENEW",
        );
    }
    let on_schedule = matches!(action, RequestAction::SelfExtend | RequestAction::SelfRenew);
    if on_schedule {
        v.require("schedule_id", &request.schedule_id);
    }
    v.require("request_id", &request.request_id);
    if request.request_id.len() > 128 {
        v.add("request_id", "must be at most 128 characters");
    }
    v.require("role_id", &request.role_id);
    if request.role_id.len() > 128 {
        v.add("role_id", "must be at most 128 characters");
    }
    v.require("scope", &request.scope);
    if !request.scope.is_empty() && !request.scope.starts_with('/') {
        v.add("scope", "must start with /");
    }
    if request.justification.chars().count() > MAX_TEXT {
        v.add(
            "justification",
            format!("must be at most {MAX_TEXT} characters"),
        );
    }
    if let Some(ticket) = &request.ticket {
        if ticket.system.len() > 100 || ticket.number.len() > 100 {
            v.add("ticket", "system and number are at most 100 characters");
        }
        if !ticket.number.trim().is_empty() && ticket.system.trim().is_empty() {
            v.add("ticket.system", "is required with a ticket number");
        }
    }
    let start_ms = request.start_time.as_ref().map(millis);
    if let Some(start) = start_ms
        && start > now_ms.saturating_add(MAX_START_AHEAD_MS)
    {
        v.add("start_time", "must be within a year");
    }
    let end_ms = request.end_time.as_ref().map(millis);
    if on_schedule {
        return schedule_change(request, end_ms, now_ms, v);
    }
    if action != RequestAction::SelfActivate {
        return Asked {
            duration_ms: 0,
            start_ms: None,
            end_ms: None,
        };
    }
    let duration_ms = match (&request.duration, &request.end_time) {
        (Some(d), None) => d
            .seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(d.nanos) / 1_000_000),
        (None, Some(end)) => millis(end).saturating_sub(start_ms.unwrap_or(now_ms).max(now_ms)),
        (Some(_), Some(_)) => {
            v.add("end_time", "give duration or end_time, not both");
            0
        }
        (None, None) => {
            v.add("duration", "is required (or give end_time)");
            MIN_DURATION_MS
        }
    };
    if duration_ms < MIN_DURATION_MS {
        v.add(
            if request.end_time.is_some() {
                "end_time"
            } else {
                "duration"
            },
            "the window must be at least 5 minutes",
        );
    } else if duration_ms > MAX_DURATION_MS {
        v.add("duration", "must be at most 366 days");
    }
    Asked {
        duration_ms,
        start_ms: start_ms.filter(|s| *s > now_ms),
        end_ms,
    }
}

/// An extension or renewal names its new end, or how much longer the schedule should run.
fn schedule_change(
    request: &SubmitRequest,
    end_ms: Option<i64>,
    now_ms: i64,
    v: &mut Violations,
) -> Asked {
    let duration_ms = request.duration.as_ref().map_or(0, |d| {
        d.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(d.nanos) / 1_000_000)
    });
    match (request.duration.is_some(), end_ms) {
        (true, Some(_)) => v.add("end_time", "give duration or end_time, not both"),
        (false, None) => v.add("end_time", "is required (or give duration)"),
        (false, Some(end)) if end <= now_ms => v.add("end_time", "must be in the future"),
        (true, None) if !(MIN_DURATION_MS..=MAX_DURATION_MS).contains(&duration_ms) => {
            v.add("duration", "must be between 5 minutes and 366 days")
        }
        _ => {}
    }
    Asked {
        duration_ms,
        start_ms: None,
        end_ms,
    }
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
}

/// The caller's authentication as the rules need it.
pub struct Authentication<'a> {
    pub caller: &'a Caller,
    pub now_ms: i64,
    /// How recent a sign-in with MFA must be.
    pub mfa_max_age_ms: i64,
}

impl Authentication<'_> {
    fn fresh_mfa(&self) -> bool {
        self.caller.did_mfa()
            && self
                .caller
                .auth_time
                .is_some_and(|t| self.now_ms - t.saturating_mul(1000) <= self.mfa_max_age_ms)
    }
}

/// Enforces the end-user rules of the effective policy on a well-formed activation. Returns
/// whether it needs approval.
pub fn enforce(
    policy: &PolicyRules,
    request: &SubmitRequest,
    asked: Asked,
    auth: &Authentication<'_>,
) -> Result<bool, Refusal> {
    let expiration = policy.activation_expiration.unwrap_or_default();
    let max_ms = expiration
        .maximum_duration
        .as_ref()
        .map(|d| d.seconds.saturating_mul(1000))
        .unwrap_or(0);
    if asked.duration_ms > max_ms {
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
    if enablement.mfa_required && !auth.fresh_mfa() {
        return Err(Refusal::MfaRequired);
    }
    if let Some(context) = &policy.activation_authentication_context
        && context.enabled
        && !auth.caller.acrs.contains(&context.claim_value)
    {
        return Err(Refusal::AuthenticationContextRequired(
            context.claim_value.clone(),
        ));
    }
    Ok(policy.approval.as_ref().is_some_and(|a| a.required))
}

#[cfg(test)]
mod tests {
    use pim_proto::{
        Duration,
        assignment::v1::{ApprovalRule, EnablementRule, ExpirationRule},
    };

    use super::*;

    const NOW: i64 = 1_800_000_000_000;

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

    fn person(mfa: bool, signed_in_secs_ago: i64) -> Caller {
        let amr = if mfa { vec!["mfa".into()] } else { vec![] };
        Caller::from_subject(
            "alice".into(),
            amr,
            Some(NOW / 1000 - signed_in_secs_ago),
            vec![],
        )
    }

    fn asked(minutes: i64) -> Asked {
        Asked {
            duration_ms: minutes * 60_000,
            start_ms: None,
            end_ms: None,
        }
    }

    fn check(
        policy: &PolicyRules,
        r: &SubmitRequest,
        minutes: i64,
        caller: &Caller,
    ) -> Result<bool, Refusal> {
        let auth = Authentication {
            caller,
            now_ms: NOW,
            mfa_max_age_ms: 15 * 60_000,
        };
        enforce(policy, r, asked(minutes), &auth)
    }

    #[test]
    fn durations_are_bounded_by_shape_and_by_policy() {
        let mut v = Violations::default();
        validate(&request(4), NOW, &mut v);
        assert!(v.check().is_err());
        let mut v = Violations::default();
        validate(&request(i64::MAX / 60), NOW, &mut v);
        assert!(v.check().is_err(), "huge durations are bad input");
        assert_eq!(
            check(&policy(), &request(480), 480, &person(true, 0)),
            Ok(false)
        );
        assert!(matches!(
            check(&policy(), &request(481), 481, &person(true, 0)),
            Err(Refusal::Violation {
                rule: "Expiration_EndUser_Assignment",
                ..
            })
        ));
    }

    #[test]
    fn a_ticket_number_needs_its_system() {
        let mut r = request(60);
        r.ticket = Some(pim_proto::activation::v1::Ticket {
            system: String::new(),
            number: "INC-1".into(),
        });
        let mut v = Violations::default();
        validate(&r, NOW, &mut v);
        assert!(v.check().is_err());
    }

    #[test]
    fn mfa_must_be_recent_and_approval_is_reported() {
        let mut r = request(60);
        r.justification = " ".into();
        assert!(matches!(
            check(&policy(), &r, 60, &person(true, 0)),
            Err(Refusal::Violation { .. })
        ));
        assert_eq!(
            check(&policy(), &request(60), 60, &person(false, 0)),
            Err(Refusal::MfaRequired)
        );
        assert_eq!(
            check(&policy(), &request(60), 60, &person(true, 15 * 60 + 1)),
            Err(Refusal::MfaRequired),
            "an MFA sign-in older than the window does not count"
        );
        assert_eq!(
            check(&policy(), &request(60), 60, &person(true, 15 * 60)),
            Ok(false)
        );
        let mut approval = policy();
        approval.approval = Some(ApprovalRule {
            required: true,
            ..Default::default()
        });
        assert_eq!(
            check(&approval, &request(60), 60, &person(true, 0)),
            Ok(true)
        );
    }
}
