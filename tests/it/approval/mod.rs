//! The approval context: cases with stages and quorum, escalation and deadlines by the clock
//! the test moves, no self-approval, and correctness when approvers race.

mod access;
mod flows;
mod input;
mod races;

use pim_client::PimClient;
use pim_config::ServiceName;
use pim_proto::{
    Duration,
    approval::v1::{Case, CaseKind, CaseSummary, DecideRequest, Decision, OpenCaseRequest},
    assignment::v1::{
        ApprovalRule, ApprovalStage, Approver, GroupMembers, Principal, PrincipalType,
        UpsertPrincipalsRequest, approver::Subject,
    },
};
use pim_testkit::{ADMIN, Harness, HarnessOptions};
use tonic::Status;

use crate::{
    bad_input::count,
    support::{ROLE, SCOPE},
};

pub const HOUR_MS: i64 = 3_600_000;

/// A harness whose timers poll often, so announcements follow the moved clock quickly.
pub async fn harness() -> anyhow::Result<Harness> {
    Harness::start_with(HarnessOptions {
        settings: vec![("PIM_TIMER_INTERVAL_MS".into(), "20".into())],
        ..Default::default()
    })
    .await
}

pub fn users(ids: &[&str]) -> Vec<Approver> {
    ids.iter()
        .map(|id| Approver {
            subject: Some(Subject::UserId((*id).into())),
        })
        .collect()
}

pub fn group(id: &str) -> Vec<Approver> {
    vec![Approver {
        subject: Some(Subject::GroupId(id.into())),
    }]
}

pub fn stage(approvers: Vec<Approver>, quorum: u32) -> ApprovalStage {
    ApprovalStage {
        approvers,
        quorum,
        timeout: Some(Duration {
            seconds: 24 * 3600,
            nanos: 0,
        }),
        approver_justification_required: true,
        ..Default::default()
    }
}

pub fn rule(stages: Vec<ApprovalStage>) -> ApprovalRule {
    ApprovalRule {
        required: true,
        stages,
        ..Default::default()
    }
}

pub fn open_request(request_id: &str, requestor: &str, rule: ApprovalRule) -> OpenCaseRequest {
    OpenCaseRequest {
        request_id: request_id.into(),
        kind: CaseKind::Activation.into(),
        rule: Some(rule),
        policy_version: 7,
        summary: Some(CaseSummary {
            requestor_id: requestor.into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            justification: "incident 4711".into(),
            ..Default::default()
        }),
    }
}

/// Opens a case as the activation service does.
pub async fn open(h: &Harness, request: OpenCaseRequest) -> Result<Case, Status> {
    let activation = h.client(
        ServiceName::Approval,
        &h.service_token(ServiceName::Activation),
    );
    activation
        .approval_internal()
        .open_case(request)
        .await
        .map(|r| r.into_inner().case.unwrap_or_default())
}

pub fn as_person(h: &Harness, who: &str) -> PimClient {
    h.client(ServiceName::Approval, &h.token(who))
}

pub async fn decide(
    h: &Harness,
    who: &str,
    case_id: &str,
    decision: Decision,
) -> Result<Case, Status> {
    as_person(h, who)
        .approval()
        .decide(DecideRequest {
            case_id: case_id.into(),
            decision: decision.into(),
            justification: format!("{who} looked at it"),
        })
        .await
        .map(|r| r.into_inner().case.unwrap_or_default())
}

/// Syncs users and one group's members into the directory.
pub async fn directory(
    h: &Harness,
    users: &[&str],
    groups: &[(&str, &[&str])],
) -> anyhow::Result<()> {
    let mut principals: Vec<Principal> = users
        .iter()
        .map(|id| Principal {
            id: (*id).into(),
            r#type: PrincipalType::User.into(),
            display_name: (*id).into(),
            enabled: true,
            ..Default::default()
        })
        .collect();
    principals.extend(groups.iter().map(|(id, _)| Principal {
        id: (*id).into(),
        r#type: PrincipalType::Group.into(),
        display_name: (*id).into(),
        enabled: true,
        ..Default::default()
    }));
    let groups = groups
        .iter()
        .map(|(id, members)| GroupMembers {
            group_id: (*id).into(),
            member_ids: members.iter().map(|m| (*m).into()).collect(),
        })
        .collect();
    h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .upsert_principals(UpsertPrincipalsRequest {
            principals,
            groups,
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// How many events of `event_type` the approval context has written.
pub async fn events(h: &Harness, event_type: &str) -> anyhow::Result<i64> {
    count(
        h.service(ServiceName::Approval).db(),
        &format!("SELECT COUNT(*) AS n FROM outbox WHERE event_type = '{event_type}'"),
    )
    .await
}

/// Rows the approval context holds about cases: zero after a refused command.
pub async fn case_rows(h: &Harness) -> anyhow::Result<i64> {
    let db = h.service(ServiceName::Approval).db();
    Ok(count(db, "SELECT COUNT(*) AS n FROM cases").await?
        + count(db, "SELECT COUNT(*) AS n FROM case_log").await?
        + events(h, "approval.case_opened").await?)
}

pub fn advance(h: &Harness, ms: i64) {
    h.clock.advance(chrono::Duration::milliseconds(ms));
}
