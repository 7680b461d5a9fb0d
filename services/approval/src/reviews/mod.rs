//! Access reviews: recurring human reviews of who still needs a privileged role. They live in
//! the approval context because they are decisions; they act on assignments only through
//! `AssignmentInternalService.RemoveSchedule`, carrying the decision item's id.

mod domain;
pub mod history;
pub mod runner;
mod store;

use std::collections::HashMap;

use pim_auth::Caller;
use pim_client::roles;
use pim_config::ServiceName;
use pim_grpc::{ApiError, Violations};
use pim_host::HostContext;
use pim_proto::{
    approval::v1::{
        ReviewDecision, ReviewDefinition, ReviewInstance, ReviewItem, ReviewItemDecision,
        ReviewItemResult, ReviewerKind,
    },
    assignment::v1::{GetRoleRequest, ListSchedulesRequest, ScheduleKind},
    millis_from_timestamp, timestamp_from_millis,
};
use tonic::{Code, Status};

use crate::directory::Directory;
pub use store::{NewItem, ReviewStore};

const MAX_TEXT: usize = 500;

#[derive(Clone)]
pub struct Reviews {
    pub store: ReviewStore,
    pub ctx: HostContext,
}

fn internal(e: anyhow::Error) -> Status {
    ApiError::Internal(e).into()
}

fn not_found(what: &str, id: &str) -> Status {
    ApiError::NotFound(format!("{what} {id}")).into()
}

impl Reviews {
    fn directory(&self) -> Directory<'_> {
        Directory {
            assignment: self.ctx.peers.get(ServiceName::Assignment),
        }
    }

    pub async fn is_admin(&self, caller: &Caller) -> Result<bool, Status> {
        if caller.service().is_some() {
            return Ok(true);
        }
        let assignment = self.ctx.peers.get(ServiceName::Assignment);
        pim_client::holds_any_role(assignment, &caller.subject, &roles::ADMINS, "/").await
    }

    pub async fn require_admin(&self, caller: &Caller, method: &str) -> Result<(), Status> {
        if self.is_admin(caller).await? {
            return Ok(());
        }
        use pim_grpc::DenialRecorder as _;
        self.ctx.security.record_denial(
            &format!("/pim.approval.v1.ApprovalService/{method}"),
            &caller.subject,
            "NOT_AUTHORIZED",
        );
        Err(ApiError::PermissionDenied {
            reason: "NOT_AUTHORIZED",
            message: "access review definitions are managed by Global Administrators and Privileged Role Administrators at /".into(),
        }
        .into())
    }

    /// Validates and records a definition; its first instance starts at its start time.
    pub async fn create(
        &self,
        caller: &Caller,
        definition: Option<ReviewDefinition>,
    ) -> Result<ReviewDefinition, Status> {
        let mut d = definition.unwrap_or_default();
        let mut v = domain::validate(&d);
        // Roles must exist: an unknown role is bad input.
        let assignment = self.ctx.peers.get(ServiceName::Assignment);
        for role in &d.role_ids {
            let found = pim_client::retry_idempotent(|| {
                let mut client = assignment.assignment();
                let query = GetRoleRequest {
                    role_id: role.clone(),
                };
                async move { client.get_role(query).await }
            })
            .await;
            match found {
                Ok(_) => {}
                Err(status) if status.code() == Code::NotFound => v.push((
                    "definition.role_ids".into(),
                    format!("no role {role} exists"),
                )),
                Err(status) => return Err(crate::grpc::peer_failed(status)),
            }
        }
        if !v.is_empty() {
            return Err(ApiError::InvalidArgument(v).into());
        }
        self.require_admin(caller, "CreateReviewDefinition").await?;
        let now = self.ctx.clock.now_millis();
        let start = d
            .start_time
            .as_ref()
            .map(millis_from_timestamp)
            .unwrap_or(now)
            .max(now);
        d.id = uuid::Uuid::now_v7().to_string();
        d.start_time = Some(timestamp_from_millis(start));
        d.stopped = false;
        d.created_by = caller.subject.clone();
        d.created_at = Some(timestamp_from_millis(now));
        self.store
            .create_definition(&self.ctx.outbox, &d, start)
            .await
            .map_err(internal)?;
        self.ctx.outbox.wake();
        Ok(d)
    }

    pub async fn get(&self, caller: &Caller, id: &str) -> Result<ReviewDefinition, Status> {
        self.require_admin(caller, "GetReviewDefinition").await?;
        let db = self.ctx.db.clone();
        self.store
            .definition(&db, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found("review definition", id))
    }

    pub async fn list(&self, caller: &Caller) -> Result<Vec<ReviewDefinition>, Status> {
        self.require_admin(caller, "ListReviewDefinitions").await?;
        self.store.definitions().await.map_err(internal)
    }

    /// Changes the name, reviewers and settings of a definition that is not stopped; what is
    /// reviewed and when stay as created.
    pub async fn update(
        &self,
        caller: &Caller,
        definition: Option<ReviewDefinition>,
    ) -> Result<ReviewDefinition, Status> {
        let changed = definition.unwrap_or_default();
        let mut v = Violations::default();
        v.require("definition.id", &changed.id);
        v.check().map_err(Status::from)?;
        self.require_admin(caller, "UpdateReviewDefinition").await?;
        let db = self.ctx.db.clone();
        let current = self
            .store
            .definition(&db, &changed.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found("review definition", &changed.id))?;
        let updated = ReviewDefinition {
            display_name: changed.display_name,
            reviewer_kind: changed.reviewer_kind,
            reviewers: changed.reviewers,
            fallback_reviewers: changed.fallback_reviewers,
            settings: changed.settings,
            ..current
        };
        let violations = domain::validate(&updated);
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations).into());
        }
        if !self
            .store
            .update_definition(&self.ctx.outbox, &updated, &caller.subject)
            .await
            .map_err(internal)?
        {
            return Err(ApiError::FailedPrecondition {
                reason: "REVIEW_STOPPED",
                message: "a stopped definition cannot be changed".into(),
            }
            .into());
        }
        self.ctx.outbox.wake();
        Ok(updated)
    }

    pub async fn stop(&self, caller: &Caller, id: &str) -> Result<ReviewDefinition, Status> {
        self.require_admin(caller, "StopReviewDefinition").await?;
        let stopped = self
            .store
            .stop(&self.ctx.outbox, id, &caller.subject)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found("review definition", id))?;
        self.ctx.outbox.wake();
        Ok(stopped)
    }

    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), Status> {
        self.require_admin(caller, "DeleteReviewDefinition").await?;
        if self
            .store
            .delete(&self.ctx.outbox, id, &caller.subject)
            .await
            .map_err(internal)?
        {
            self.ctx.outbox.wake();
            return Ok(());
        }
        let db = self.ctx.db.clone();
        match self.store.definition(&db, id).await.map_err(internal)? {
            None => Err(not_found("review definition", id)),
            Some(_) => Err(ApiError::FailedPrecondition {
                reason: "REVIEW_STARTED",
                message: "a definition that started an instance is stopped, not deleted; its results stay".into(),
            }
            .into()),
        }
    }

    pub async fn instances(
        &self,
        caller: &Caller,
        definition_id: &str,
    ) -> Result<Vec<ReviewInstance>, Status> {
        self.require_admin(caller, "ListReviewInstances").await?;
        self.store.instances(definition_id).await.map_err(internal)
    }

    /// All items of an instance for admins; the caller's own otherwise.
    pub async fn items(
        &self,
        caller: &Caller,
        instance_id: &str,
    ) -> Result<Vec<ReviewItem>, Status> {
        let reviewer = if !instance_id.is_empty() && self.is_admin(caller).await? {
            None
        } else {
            Some(caller.subject.as_str())
        };
        let db = self.ctx.db.clone();
        self.store
            .items(&db, instance_id, reviewer)
            .await
            .map_err(internal)
    }

    /// One reviewer's decision on one item, with every check.
    pub async fn decide(
        &self,
        caller: &Caller,
        d: &ReviewItemDecision,
    ) -> Result<ReviewItem, Status> {
        let mut v = Violations::default();
        v.require("item_id", &d.item_id);
        if !matches!(
            d.decision(),
            ReviewDecision::Approve | ReviewDecision::Deny | ReviewDecision::DontKnow
        ) {
            v.add("decision", "must be APPROVE, DENY or DONT_KNOW");
        }
        if d.justification.chars().count() > MAX_TEXT {
            v.add(
                "justification",
                format!("must be at most {MAX_TEXT} characters"),
            );
        }
        v.check().map_err(Status::from)?;
        let now = self.ctx.clock.now_millis();
        let db = self.ctx.db.clone();
        let item = self
            .store
            .item(&db, &d.item_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found("review item", &d.item_id))?;
        if !item.reviewer_ids.contains(&caller.subject) {
            use pim_grpc::DenialRecorder as _;
            self.ctx.security.record_denial(
                "/pim.approval.v1.ApprovalService/DecideReviewItems",
                &caller.subject,
                "NOT_A_REVIEWER",
            );
            return Err(ApiError::PermissionDenied {
                reason: "NOT_A_REVIEWER",
                message: "this item is not routed to you".into(),
            }
            .into());
        }
        let instance = self
            .store
            .instance(&db, &item.instance_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found("review instance", &item.instance_id))?;
        let end = instance
            .end_time
            .as_ref()
            .map(millis_from_timestamp)
            .unwrap_or_default();
        if now >= end
            || instance.status() != pim_proto::approval::v1::ReviewInstanceStatus::InProgress
        {
            return Err(ApiError::FailedPrecondition {
                reason: "DEADLINE_PASSED",
                message: "the review has ended".into(),
            }
            .into());
        }
        let definition = self
            .store
            .definition(&db, &instance.definition_id)
            .await
            .map_err(internal)?
            .unwrap_or_default();
        let settings = definition.settings.unwrap_or_default();
        if settings.justification_required_on_approval
            && d.decision() == ReviewDecision::Approve
            && d.justification.trim().is_empty()
        {
            return Err(ApiError::InvalidArgument(vec![(
                "justification".into(),
                "is required to approve in this review".into(),
            )])
            .into());
        }
        let txn = self.store.begin().await.map_err(internal)?;
        let decided = self
            .store
            .decide(
                &txn,
                &self.ctx.outbox,
                &item.id,
                d.decision(),
                &d.justification,
                &caller.subject,
                now,
            )
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found("review item", &item.id))?;
        txn.commit().await.map_err(|e| internal(e.into()))?;
        self.ctx.outbox.wake();
        Ok(decided)
    }

    pub async fn decide_many(
        &self,
        caller: &Caller,
        decisions: &[ReviewItemDecision],
    ) -> Vec<ReviewItemResult> {
        let mut results = Vec::with_capacity(decisions.len());
        for d in decisions {
            results.push(match self.decide(caller, d).await {
                Ok(item) => ReviewItemResult {
                    item_id: d.item_id.clone(),
                    code: "OK".into(),
                    item: Some(item),
                    ..Default::default()
                },
                Err(status) => ReviewItemResult {
                    item_id: d.item_id.clone(),
                    code: pim_grpc::code_name(status.code()).into(),
                    reason: pim_grpc::reason_of(&status),
                    message: status.message().to_owned(),
                    item: None,
                },
            });
        }
        results
    }

    /// Decides every undecided item routed to the caller in `instance_id` as recommended.
    pub async fn accept_recommendations(
        &self,
        caller: &Caller,
        instance_id: &str,
    ) -> Result<Vec<ReviewItem>, Status> {
        let db = self.ctx.db.clone();
        let mine = self
            .store
            .items(&db, instance_id, Some(&caller.subject))
            .await
            .map_err(internal)?;
        let mut decided = Vec::new();
        for item in mine {
            if item.decision() != ReviewDecision::NotReviewed
                || item.recommendation() == ReviewDecision::Unspecified
            {
                continue;
            }
            let decision = ReviewItemDecision {
                item_id: item.id.clone(),
                decision: item.recommendation,
                justification: format!(
                    "accepted the recommendation: {}",
                    item.recommendation_reason
                ),
            };
            decided.push(self.decide(caller, &decision).await?);
        }
        Ok(decided)
    }

    /// The items of a new instance: one per current assignment reviewed, with its
    /// recommendation and reviewers. Break-glass principals are never reviewed.
    pub async fn collect_items(
        &self,
        conn: &impl sea_orm::ConnectionTrait,
        d: &ReviewDefinition,
        instance_id: &str,
        now: i64,
    ) -> Result<Vec<NewItem>, Status> {
        let assignment = self.ctx.peers.get(ServiceName::Assignment);
        let directory = self.directory();
        let settings = d.settings.unwrap_or_default();
        let lookback = if settings.recommendation_lookback_days == 0 {
            domain::DEFAULT_LOOKBACK_DAYS
        } else {
            settings.recommendation_lookback_days
        };
        let mut kinds = Vec::new();
        if d.include_eligible {
            kinds.push(ScheduleKind::Eligible);
        }
        if d.include_active {
            kinds.push(ScheduleKind::Active);
        }
        let mut admins_at: HashMap<String, Vec<String>> = HashMap::new();
        let named = people(directory.resolve(&d.reviewers, &d.scope).await?);
        let fallback = if d.fallback_reviewers.is_empty() {
            Vec::new()
        } else {
            people(directory.resolve(&d.fallback_reviewers, &d.scope).await?)
        };
        let mut items = Vec::new();
        for role in &d.role_ids {
            let since = now - i64::from(lookback) * domain::DAY_MS;
            let stats = self
                .store
                .activation_stats(conn, role, since)
                .await
                .map_err(internal)?;
            for kind in &kinds {
                let mut page_token = String::new();
                loop {
                    let page = pim_client::retry_idempotent(|| {
                        let mut client = assignment.assignment();
                        let query = ListSchedulesRequest {
                            role_id: role.clone(),
                            scope: d.scope.clone(),
                            include_descendants: d.include_descendants,
                            kind: (*kind).into(),
                            page_size: 500,
                            page_token: page_token.clone(),
                            ..Default::default()
                        };
                        async move { client.list_schedules(query).await }
                    })
                    .await
                    .map_err(crate::grpc::peer_failed)?
                    .into_inner();
                    for schedule in page.schedules {
                        let start = schedule
                            .start_time
                            .as_ref()
                            .map(millis_from_timestamp)
                            .unwrap_or(0);
                        let end = schedule.end_time.as_ref().map(millis_from_timestamp);
                        if start > now || end.is_some_and(|e| e <= now) {
                            continue;
                        }
                        let principal = schedule.principal_id.clone();
                        if self.is_break_glass(&principal) {
                            continue;
                        }
                        let (recent, last) = stats.get(&principal).copied().unwrap_or((0, None));
                        if d.inactive_days > 0 {
                            let since = now - i64::from(d.inactive_days) * domain::DAY_MS;
                            if last.is_some_and(|l| l >= since) {
                                continue;
                            }
                        }
                        let (recommendation, reason) = if settings.recommendations_enabled {
                            domain::recommend(recent, last, lookback, now)
                        } else {
                            (ReviewDecision::Unspecified, String::new())
                        };
                        let mut reviewers = match d.reviewer_kind() {
                            ReviewerKind::Self_ => vec![principal.clone()],
                            ReviewerKind::Named => named.clone(),
                            _ => {
                                if !admins_at.contains_key(&schedule.scope) {
                                    let admins =
                                        people(directory.resolve(&[], &schedule.scope).await?);
                                    admins_at.insert(schedule.scope.clone(), admins);
                                }
                                admins_at[&schedule.scope].clone()
                            }
                        };
                        // Members review themselves only where the definition says so.
                        if d.reviewer_kind() != ReviewerKind::Self_ {
                            reviewers.retain(|r| *r != principal);
                        }
                        if reviewers.is_empty() {
                            reviewers = fallback
                                .iter()
                                .filter(|r| **r != principal)
                                .cloned()
                                .collect();
                        }
                        items.push(NewItem {
                            item: ReviewItem {
                                id: uuid::Uuid::now_v7().to_string(),
                                instance_id: instance_id.to_owned(),
                                schedule_id: schedule.id.clone(),
                                principal_id: principal,
                                role_id: role.clone(),
                                scope: schedule.scope.clone(),
                                kind: (*kind).into(),
                                recommendation: recommendation.into(),
                                recommendation_reason: reason,
                                ..Default::default()
                            },
                            reviewers,
                        });
                    }
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    page_token = page.next_page_token;
                }
            }
        }
        Ok(items)
    }

    /// Break-glass accounts are named in configuration (every context reads the same
    /// `PIM_BREAK_GLASS_PRINCIPALS`, which is also where the directory's flag comes from).
    fn is_break_glass(&self, principal: &str) -> bool {
        self.ctx
            .settings
            .break_glass_principals
            .iter()
            .any(|p| p == principal)
    }
}

/// Distinct principal ids of resolved people.
fn people(resolved: Vec<(String, String)>) -> Vec<String> {
    let mut ids: Vec<String> = resolved.into_iter().map(|(p, _)| p).collect();
    ids.sort();
    ids.dedup();
    ids
}
