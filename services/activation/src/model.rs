//! Statuses and actions as stored, and which statuses hold or may still hold access.

use pim_proto::activation::v1::{RequestAction, RequestStatus};

pub fn status_text(status: RequestStatus) -> &'static str {
    match status {
        RequestStatus::PendingApproval => "pending_approval",
        RequestStatus::PendingProvisioning | RequestStatus::Unspecified => "pending_provisioning",
        RequestStatus::ScheduleCreated => "schedule_created",
        RequestStatus::Provisioned => "provisioned",
        RequestStatus::Denied => "denied",
        RequestStatus::Canceled => "canceled",
        RequestStatus::Failed => "failed",
        RequestStatus::Revoked => "revoked",
        RequestStatus::TimedOut => "timed_out",
        RequestStatus::Expired => "expired",
    }
}

pub fn status_from(text: &str) -> RequestStatus {
    match text {
        "pending_approval" => RequestStatus::PendingApproval,
        "pending_provisioning" => RequestStatus::PendingProvisioning,
        "schedule_created" => RequestStatus::ScheduleCreated,
        "provisioned" => RequestStatus::Provisioned,
        "denied" => RequestStatus::Denied,
        "canceled" => RequestStatus::Canceled,
        "failed" => RequestStatus::Failed,
        "revoked" => RequestStatus::Revoked,
        "timed_out" => RequestStatus::TimedOut,
        "expired" => RequestStatus::Expired,
        _ => RequestStatus::Unspecified,
    }
}

pub fn action_text(action: RequestAction) -> &'static str {
    match action {
        RequestAction::SelfDeactivate => "self_deactivate",
        RequestAction::SelfExtend => "self_extend",
        RequestAction::SelfRenew => "self_renew",
        RequestAction::SelfActivate | RequestAction::Unspecified => "self_activate",
    }
}

pub fn action_from(text: &str) -> RequestAction {
    match text {
        "self_deactivate" => RequestAction::SelfDeactivate,
        "self_extend" => RequestAction::SelfExtend,
        "self_renew" => RequestAction::SelfRenew,
        _ => RequestAction::SelfActivate,
    }
}

/// Statuses of a request that holds, or is on its way to, a window. The unique index
/// `requests_one_live` lists the same.
pub const LIVE: [RequestStatus; 4] = [
    RequestStatus::PendingApproval,
    RequestStatus::PendingProvisioning,
    RequestStatus::ScheduleCreated,
    RequestStatus::Provisioned,
];

/// Statuses with a window in the assignment context.
pub const GRANTED: [RequestStatus; 2] =
    [RequestStatus::ScheduleCreated, RequestStatus::Provisioned];

/// The event announcing that a request reached `status`.
pub fn event_type(status: RequestStatus) -> &'static str {
    match status {
        RequestStatus::PendingApproval => "activation.request_pending_approval",
        RequestStatus::PendingProvisioning | RequestStatus::Unspecified => {
            "activation.request_approved"
        }
        RequestStatus::ScheduleCreated | RequestStatus::Provisioned => "activation.request_granted",
        RequestStatus::Denied => "activation.request_denied",
        RequestStatus::Canceled => "activation.request_canceled",
        RequestStatus::Failed => "activation.request_failed",
        RequestStatus::Revoked => "activation.request_deactivated",
        RequestStatus::TimedOut => "activation.request_timed_out",
        RequestStatus::Expired => "activation.request_expired",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_as_itself() {
        for n in 1..=10 {
            let status = RequestStatus::try_from(n).unwrap_or_default();
            assert_eq!(status_from(status_text(status)), status);
        }
    }
}
