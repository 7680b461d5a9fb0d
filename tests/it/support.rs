//! Steps the scenarios share, so each test reads like the feature.

use std::time::Duration;

use pim_client::PimClient;
use pim_config::ServiceName;
use pim_proto::{
    activation::v1::{RequestAction, SubmitRequest, SubmitResponse},
    assignment::v1::{CheckAccessRequest, CheckAccessResponse, CreateEligibilityScheduleRequest},
    audit::v1::{AuditRecord, ListRecordsRequest},
};
use pim_testkit::{ADMIN, Harness};

pub const ROLE: &str = pim_client::roles::SECURITY_ADMINISTRATOR;
pub const SCOPE: &str = "/administrativeUnits/au-1";

pub async fn make_eligible(h: &Harness, principal: &str, request_id: &str) -> anyhow::Result<()> {
    h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: request_id.into(),
            principal_id: principal.into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            justification: "on-call rotation".into(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

pub fn activation(request_id: &str, minutes: i64) -> SubmitRequest {
    SubmitRequest {
        request_id: request_id.into(),
        action: RequestAction::SelfActivate.into(),
        role_id: ROLE.into(),
        scope: SCOPE.into(),
        duration: Some(pim_proto::Duration {
            seconds: minutes * 60,
            nanos: 0,
        }),
        justification: "incident 4711".into(),
        ..Default::default()
    }
}

pub async fn activate(
    client: &PimClient,
    request_id: &str,
    minutes: i64,
) -> anyhow::Result<SubmitResponse> {
    Ok(client
        .activation()
        .submit(activation(request_id, minutes))
        .await?
        .into_inner())
}

pub async fn check_access(
    client: &PimClient,
    principal: &str,
    scope: &str,
) -> anyhow::Result<CheckAccessResponse> {
    Ok(client
        .assignment()
        .check_access(CheckAccessRequest {
            principal_id: principal.into(),
            role_id: ROLE.into(),
            scope: scope.into(),
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// Every audit record, read through the public API as the break-glass admin.
pub async fn audit_records(audit: &PimClient) -> anyhow::Result<Vec<AuditRecord>> {
    let mut records = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = audit
            .audit()
            .list_records(ListRecordsRequest {
                page_size: 500,
                page_token: page_token.clone(),
                correlation_id: String::new(),
            })
            .await?
            .into_inner();
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            return Ok(records);
        }
        page_token = page.next_page_token;
    }
}

/// Waits until the audit trail holds records of all `types` (in any order, each at least once).
pub async fn await_audited(
    h: &Harness,
    audit: &PimClient,
    types: &[&str],
) -> anyhow::Result<Vec<AuditRecord>> {
    h.eventually(Duration::from_secs(30), || async {
        let records = audit_records(audit).await?;
        let all = types
            .iter()
            .all(|t| records.iter().any(|r| r.event_type == *t));
        Ok(all.then_some(records))
    })
    .await
}

/// The stable `ErrorInfo.reason` of a refusal, or empty.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// The fields an `INVALID_ARGUMENT` names, in order.
pub fn field_violations(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}
