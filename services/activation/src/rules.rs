//! The rules a submission must pass before anything is written. No I/O here.

use pim_grpc::Violations;
use pim_proto::activation::v1::{RequestAction, SubmitRequest};

/// The shortest activation PIM grants.
pub const MIN_DURATION_MS: i64 = 5 * 60 * 1000;
/// Entra's default maximum activation duration, until role policies arrive.
pub const DEFAULT_MAX_DURATION_MS: i64 = 8 * 60 * 60 * 1000;

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
    // Entra requires a justification on activation by default.
    v.require("justification", &request.justification);
    if request.justification.len() > 500 {
        v.add("justification", "must be at most 500 characters");
    }
    let duration_ms = request
        .duration
        .as_ref()
        .map(|d| d.seconds.saturating_mul(1000) + i64::from(d.nanos) / 1_000_000)
        .unwrap_or(0);
    if duration_ms < MIN_DURATION_MS {
        v.add("duration", "must be at least 5 minutes");
    } else if duration_ms > DEFAULT_MAX_DURATION_MS {
        v.add("duration", "must be at most 8 hours (the policy's maximum)");
    }
    duration_ms
}

#[cfg(test)]
mod tests {
    use pim_proto::Duration;

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

    #[test]
    fn durations_are_bounded() {
        for (minutes, ok) in [(4, false), (5, true), (480, true), (481, false)] {
            let mut v = Violations::default();
            validate(&request(minutes), &mut v);
            assert_eq!(v.check().is_ok(), ok, "{minutes} minutes");
        }
    }

    #[test]
    fn justification_is_required() {
        let mut r = request(60);
        r.justification = " ".into();
        let mut v = Violations::default();
        validate(&r, &mut v);
        assert!(v.check().is_err());
    }
}
