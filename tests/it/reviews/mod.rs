//! Access reviews: the deployment plan's review of the Global Administrators, recommendations
//! from the activation history, recurrence by the clock, the last Global Administrator, who may
//! decide, and bad input.

mod flows;
mod rules;

use std::time::Duration;

use pim_client::{PimClient, roles};
use pim_config::ServiceName;
use pim_proto::{
    approval::v1::{
        CreateReviewDefinitionRequest, DefaultDecision, ListReviewInstancesRequest,
        ListReviewItemsRequest, ReviewDefinition, ReviewInstance, ReviewItem, ReviewRecurrence,
        ReviewSettings, ReviewerKind,
    },
    assignment::v1::{CheckAccessRequest, CreateActiveScheduleRequest},
};
use pim_testkit::{ADMIN, Harness};
use tonic::Status;

pub const DAY_MS: i64 = 86_400_000;

pub fn approval(h: &Harness, who: &str) -> PimClient {
    h.client(ServiceName::Approval, &h.token(who))
}

/// A permanent active Global Administrator assignment at `/`.
pub async fn global_admin(h: &Harness, principal: &str) -> anyhow::Result<()> {
    h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .create_active_schedule(CreateActiveScheduleRequest {
            request_id: format!("ga-{principal}"),
            principal_id: principal.into(),
            role_id: roles::GLOBAL_ADMINISTRATOR.into(),
            scope: "/".into(),
            justification: "tenant administration".into(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

pub async fn is_global_admin(h: &Harness, principal: &str) -> anyhow::Result<bool> {
    Ok(h.client(ServiceName::Assignment, &h.token(principal))
        .assignment()
        .check_access(CheckAccessRequest {
            principal_id: principal.into(),
            role_id: roles::GLOBAL_ADMINISTRATOR.into(),
            scope: "/".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .allowed)
}

/// The deployment plan's review: the Global Administrators review themselves, justification
/// required, `default_decision` for the silent, applied automatically.
pub fn ga_review(default_decision: DefaultDecision) -> ReviewDefinition {
    ReviewDefinition {
        display_name: "Global Administrators, quarterly".into(),
        role_ids: vec![roles::GLOBAL_ADMINISTRATOR.into()],
        scope: "/".into(),
        include_active: true,
        reviewer_kind: ReviewerKind::Self_.into(),
        recurrence: ReviewRecurrence::OneTime.into(),
        instance_duration_days: 3,
        settings: Some(ReviewSettings {
            justification_required_on_approval: true,
            default_decision: default_decision.into(),
            auto_apply: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn define(
    h: &Harness,
    by: &str,
    definition: ReviewDefinition,
) -> Result<ReviewDefinition, Status> {
    approval(h, by)
        .approval()
        .create_review_definition(CreateReviewDefinitionRequest {
            definition: Some(definition),
        })
        .await
        .map(|r| r.into_inner().definition.unwrap_or_default())
}

pub async fn instances(
    h: &Harness,
    admin: &str,
    definition_id: &str,
) -> anyhow::Result<Vec<ReviewInstance>> {
    Ok(approval(h, admin)
        .approval()
        .list_review_instances(ListReviewInstancesRequest {
            definition_id: definition_id.into(),
        })
        .await?
        .into_inner()
        .instances)
}

/// Waits until the definition has `n` instances, and returns the latest.
pub async fn await_instances(
    h: &Harness,
    admin: &str,
    definition_id: &str,
    n: usize,
) -> anyhow::Result<ReviewInstance> {
    h.eventually(Duration::from_secs(30), || async {
        let all = instances(h, admin, definition_id).await?;
        Ok((all.len() == n).then(|| all.last().cloned()).flatten())
    })
    .await
}

pub async fn items(h: &Harness, who: &str, instance_id: &str) -> anyhow::Result<Vec<ReviewItem>> {
    Ok(approval(h, who)
        .approval()
        .list_review_items(ListReviewItemsRequest {
            instance_id: instance_id.into(),
        })
        .await?
        .into_inner()
        .items)
}

pub fn advance(h: &Harness, ms: i64) {
    h.clock.advance(chrono::Duration::milliseconds(ms));
}
