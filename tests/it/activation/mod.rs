//! The activation lifecycle across assignment, activation and approval: the deployment guide's
//! test plan, approval hand-off, future starts, deactivation, cancellation, idempotency under
//! races, crash safety at every step, two replicas, and bad input.

mod crash;
mod extend;
mod flows;
mod input;
mod plan;
mod queries;
mod races;

use std::time::Duration;

use pim_client::PimClient;
use pim_config::ServiceName;
use pim_proto::{
    activation::v1::{ActivationRequest, RequestStatus, SubmitRequest, Ticket},
    assignment::v1::{
        ApprovalRule, ApprovalStage, Approver, EnablementRule, ExpirationRule, PolicyRules,
        SetPolicyRequest, approver::Subject,
    },
};
use pim_testkit::{ADMIN, Harness, HarnessOptions};

use crate::{
    bad_input::count,
    support::{ROLE, SCOPE, activation, check_access, make_eligible},
};

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;

/// A harness whose timers and reconciler look often, plus `settings`.
pub async fn harness_with(settings: &[(&str, &str)]) -> anyhow::Result<Harness> {
    let mut all = vec![
        ("PIM_TIMER_INTERVAL_MS".to_owned(), "20".to_owned()),
        ("PIM_RECONCILE_AFTER_MS".to_owned(), "0".to_owned()),
    ];
    all.extend(
        settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Harness::start_with(HarnessOptions {
        settings: all,
        ..Default::default()
    })
    .await
}

pub fn hours(n: i64) -> Option<pim_proto::Duration> {
    Some(pim_proto::Duration {
        seconds: n * 3600,
        nanos: 0,
    })
}

/// The deployment guide's role: MFA, a ticket, a justification and `approver`'s yes, at most
/// one hour. Without an approver, no approval.
pub fn guide_policy(approver: Option<&str>) -> PolicyRules {
    PolicyRules {
        activation_expiration: Some(ExpirationRule {
            permanent_allowed: false,
            maximum_duration: hours(1),
        }),
        activation_enablement: Some(EnablementRule {
            mfa_required: true,
            justification_required: true,
            ticket_required: true,
        }),
        approval: Some(ApprovalRule {
            required: approver.is_some(),
            stages: vec![ApprovalStage {
                approvers: approver
                    .map(|a| {
                        vec![Approver {
                            subject: Some(Subject::UserId(a.into())),
                        }]
                    })
                    .unwrap_or_default(),
                quorum: 1,
                timeout: hours(24),
                approver_justification_required: true,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn set_policy(h: &Harness, rules: PolicyRules) -> anyhow::Result<()> {
    h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .set_policy(SetPolicyRequest {
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            rules: Some(rules),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Alice, eligible for the role at the scope, under `rules`.
pub async fn alice_under(h: &Harness, rules: PolicyRules) -> anyhow::Result<()> {
    set_policy(h, rules).await?;
    make_eligible(h, "alice", "alice-eligible").await
}

/// An activation with a ticket, for `minutes`.
pub fn ticketed(request_id: &str, minutes: i64) -> SubmitRequest {
    SubmitRequest {
        ticket: Some(Ticket {
            system: "jira".into(),
            number: "OPS-7".into(),
        }),
        ..activation(request_id, minutes)
    }
}

pub fn alice(h: &Harness) -> PimClient {
    h.client(ServiceName::Activation, &h.mfa_token("alice"))
}

pub async fn submit(
    h: &Harness,
    request: SubmitRequest,
) -> Result<ActivationRequest, tonic::Status> {
    alice(h)
        .activation()
        .submit(request)
        .await
        .map(|r| r.into_inner().request.unwrap_or_default())
}

pub async fn request_status(h: &Harness, id: &str) -> anyhow::Result<ActivationRequest> {
    Ok(alice(h)
        .activation()
        .get_activation_request(pim_proto::activation::v1::GetActivationRequestRequest {
            id: id.into(),
        })
        .await?
        .into_inner()
        .request
        .unwrap_or_default())
}

/// Waits until the request reaches `status`.
pub async fn await_status(
    h: &Harness,
    id: &str,
    status: RequestStatus,
) -> anyhow::Result<ActivationRequest> {
    h.eventually(Duration::from_secs(30), || async {
        let request = request_status(h, id).await?;
        Ok((request.status() == status).then_some(request))
    })
    .await
}

/// Whether alice may act as the role at the scope now.
pub async fn alice_allowed(h: &Harness) -> anyhow::Result<bool> {
    let checker = h.client(ServiceName::Assignment, &h.token(ADMIN));
    Ok(check_access(&checker, "alice", SCOPE).await?.allowed)
}

pub async fn activation_events(h: &Harness, event_type: &str) -> anyhow::Result<i64> {
    count(
        h.service(ServiceName::Activation).db(),
        &format!("SELECT COUNT(*) AS n FROM outbox WHERE event_type = '{event_type}'"),
    )
    .await
}

/// Windows the assignment context holds for a request: exactly one once granted.
pub async fn windows_of(h: &Harness, request_id: &str) -> anyhow::Result<i64> {
    count(
        h.service(ServiceName::Assignment).db(),
        &format!("SELECT COUNT(*) AS n FROM windows WHERE request_id = '{request_id}'"),
    )
    .await
}

pub async fn approve(h: &Harness, approver: &str, case_id: &str) -> anyhow::Result<()> {
    h.client(ServiceName::Approval, &h.token(approver))
        .approval()
        .decide(pim_proto::approval::v1::DecideRequest {
            case_id: case_id.into(),
            decision: pim_proto::approval::v1::Decision::Approve.into(),
            justification: "looks right".into(),
        })
        .await?;
    Ok(())
}

pub fn advance(h: &Harness, ms: i64) {
    h.clock.advance(chrono::Duration::milliseconds(ms));
}
