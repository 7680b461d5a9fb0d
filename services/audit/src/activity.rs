//! Stable, readable activity names in the spirit of Entra's PIM audit activities, and the
//! category, target kind and result of each event type. These strings are part of the exported
//! format: change them only by adding new ones.

/// What the audit trail says about one event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    pub activity: &'static str,
    pub category: &'static str,
    pub target_type: &'static str,
    /// `failure` for refusals, denials, time-outs and failures; `success` otherwise.
    pub result: &'static str,
}

pub const ROLE_MANAGEMENT: &str = "role_management";
pub const GROUP_MANAGEMENT: &str = "group_management";
pub const POLICY: &str = "policy";
pub const APPROVAL: &str = "approval";
pub const REVIEW: &str = "review";
pub const NOTIFICATION: &str = "notification";
pub const SECURITY: &str = "security";

/// Every category, for validating filters.
pub const CATEGORIES: [&str; 7] = [
    ROLE_MANAGEMENT,
    GROUP_MANAGEMENT,
    POLICY,
    APPROVAL,
    REVIEW,
    NOTIFICATION,
    SECURITY,
];

const fn ok(
    activity: &'static str,
    category: &'static str,
    target: &'static str,
) -> Classification {
    Classification {
        activity,
        category,
        target_type: target,
        result: "success",
    }
}

const fn failed(
    activity: &'static str,
    category: &'static str,
    target: &'static str,
) -> Classification {
    Classification {
        activity,
        category,
        target_type: target,
        result: "failure",
    }
}

pub fn classify(event_type: &str) -> Classification {
    use self::{
        APPROVAL as A, GROUP_MANAGEMENT as G, NOTIFICATION as N, POLICY as P, REVIEW as V,
        ROLE_MANAGEMENT as R, SECURITY as S,
    };
    match event_type {
        "assignment.schedule_created" => ok(
            "Add eligible member to role in PIM completed",
            R,
            "schedule",
        ),
        "assignment.schedule_updated" => {
            ok("Update role assignment in PIM completed", R, "schedule")
        }
        "assignment.schedule_removed" => {
            ok("Remove member from role in PIM completed", R, "schedule")
        }
        "assignment.schedule_extended" => {
            ok("Extend role assignment in PIM completed", R, "schedule")
        }
        "assignment.schedule_renewed" => {
            ok("Renew role assignment in PIM completed", R, "schedule")
        }
        "assignment.schedule_converted" => {
            ok("Convert role assignment in PIM completed", R, "schedule")
        }
        "assignment.schedule_expiring" => ok("Role assignment in PIM expiring", R, "schedule"),
        "assignment.schedule_expired" => {
            ok("Remove member from role (PIM expiration)", R, "schedule")
        }
        "assignment.window_provisioned" => {
            ok("Add member to role completed (PIM activation)", R, "window")
        }
        "assignment.window_revoked" => ok(
            "Remove member from role completed (PIM deactivation)",
            R,
            "window",
        ),
        "assignment.policy_updated" => ok("Update role setting in PIM", P, "policy"),
        "assignment.role_created" => ok("Add role definition in PIM", R, "role"),
        "assignment.role_updated" => ok("Update role definition in PIM", R, "role"),
        "assignment.role_deleted" => ok("Delete role definition in PIM", R, "role"),
        "assignment.principal_upserted" => ok("Update principal in PIM directory", G, "principal"),
        "assignment.principal_disabled" => ok("Disable principal in PIM directory", S, "principal"),
        "assignment.membership_changed" => {
            ok("Update group membership in PIM directory", G, "group")
        }
        "activation.request_submitted" => ok(
            "Add member to role requested (PIM activation)",
            R,
            "request",
        ),
        "activation.request_pending_approval" => ok(
            "Add member to role request pending approval (PIM activation)",
            A,
            "request",
        ),
        "activation.request_approved" => ok(
            "Add member to role request approved (PIM activation)",
            A,
            "request",
        ),
        "activation.request_granted" => ok(
            "Add member to role request approved (PIM activation)",
            R,
            "request",
        ),
        "activation.request_denied" => failed(
            "Add member to role request denied (PIM activation)",
            A,
            "request",
        ),
        "activation.request_canceled" => {
            ok("Cancel request for role activation in PIM", R, "request")
        }
        "activation.request_timed_out" => failed(
            "Add member to role request timed out (PIM activation)",
            A,
            "request",
        ),
        "activation.request_failed" => failed(
            "Add member to role request failed (PIM activation)",
            R,
            "request",
        ),
        "activation.request_deactivated" => ok(
            "Remove member from role completed (PIM deactivate)",
            R,
            "request",
        ),
        "activation.request_expired" => ok(
            "Remove member from role (PIM activation expired)",
            R,
            "request",
        ),
        "approval.case_opened" => ok("Request approval in PIM", A, "case"),
        "approval.case_escalated" => ok("Escalate approval request in PIM", A, "case"),
        "approval.stage_completed" => ok("Approval stage completed in PIM", A, "case"),
        "approval.case_decided" => ok("Approval decision recorded in PIM", A, "case"),
        "approval.case_timed_out" => failed("Approval request timed out in PIM", A, "case"),
        "approval.case_canceled" => ok("Approval request canceled in PIM", A, "case"),
        "approval.review_started" => ok("Access review started", V, "review"),
        "approval.review_item_decided" => ok("Access review decision recorded", V, "review_item"),
        "approval.review_completed" => ok("Access review completed", V, "review"),
        "approval.review_decision_applied" => {
            ok("Access review decision applied", V, "review_item")
        }
        "notification.delivery_dead_lettered" => {
            failed("Notification delivery failed", N, "delivery")
        }
        "notification.subscription_changed" => {
            ok("Update notification subscription", N, "subscription")
        }
        "audit.alert_raised" => ok("Security alert raised in PIM", S, "alert"),
        "audit.alert_resolved" => ok("Security alert resolved in PIM", S, "alert"),
        "audit.alert_dismissed" => ok("Security alert dismissed in PIM", S, "alert"),
        "audit.alert_configuration_updated" => {
            ok("Update security alert configuration in PIM", S, "alert")
        }
        "audit.checkpoint_signed" => ok("Audit checkpoint signed", S, "checkpoint"),
        "audit.records_purged" => ok("Audit records purged under retention", S, "purge"),
        _ if event_type.ends_with(".access_denied") => failed("Access denied", S, "method"),
        // New event types are recorded under their own name until they get a readable one.
        _ => Classification {
            activity: "",
            category: category_by_producer(event_type),
            target_type: "",
            result: "success",
        },
    }
}

/// The activity of an event type: its readable name, or the type itself when it has none yet.
pub fn activity_of(event_type: &str) -> String {
    match classify(event_type).activity {
        "" => event_type.to_owned(),
        known => known.to_owned(),
    }
}

fn category_by_producer(event_type: &str) -> &'static str {
    match event_type.split('.').next().unwrap_or_default() {
        "approval" => APPROVAL,
        "notification" => NOTIFICATION,
        "audit" => SECURITY,
        _ => ROLE_MANAGEMENT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_activities_read_like_entra() {
        assert_eq!(
            activity_of("assignment.window_provisioned"),
            "Add member to role completed (PIM activation)"
        );
        assert_eq!(activity_of("audit.something_new"), "audit.something_new");
        assert_eq!(activity_of("approval.access_denied"), "Access denied");
        assert_eq!(
            activity_of("assignment.policy_updated"),
            "Update role setting in PIM"
        );
    }

    #[test]
    fn denials_and_failures_are_failures_in_their_category() {
        let denied = classify("activation.access_denied");
        assert_eq!((denied.category, denied.result), (SECURITY, "failure"));
        assert_eq!(classify("activation.request_denied").result, "failure");
        assert_eq!(classify("approval.review_started").category, REVIEW);
        assert_eq!(classify("approval.something_new").category, APPROVAL);
    }
}
