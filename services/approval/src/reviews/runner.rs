//! The review timers: start due instances, complete ended ones (default decisions), apply
//! their denials. Definitions and instances are claimed with `SKIP LOCKED`, so N replicas share
//! the work; applying is idempotent (RemoveSchedule is, by the item id), so a crash mid-apply
//! repeats nothing and misses nothing.

use std::time::Duration;

use futures_util::StreamExt as _;
use pim_config::ServiceName;
use pim_proto::{
    approval::v1::{ReviewChanged, ReviewDecision, ReviewInstance, ReviewItem, ReviewReminder},
    assignment::v1::{AssignmentInternalServiceRemoveScheduleRequest, RemoveSchedulesRequest},
    timestamp_from_millis,
};
use tonic::Code;

use super::{Reviews, domain, store::enqueue};

/// Denials removed per RemoveSchedules call: one assignment transaction and one revision each.
const APPLY_BATCH: usize = 100;
/// Batches in flight at once. Each locks the Global Administrator rows while it runs, so more
/// would only queue in the assignment database.
const APPLY_IN_FLIGHT: usize = 2;

pub async fn run(reviews: Reviews, every: Duration) {
    let cancel = reviews.ctx.cancel.clone();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = tick(&reviews).await {
            tracing::warn!(error = ?e, "access review timers failed; retrying");
        }
        reviews.ctx.outbox.wake();
    }
}

async fn tick(reviews: &Reviews) -> anyhow::Result<()> {
    while start_next(reviews).await? {}
    while remind_next(reviews).await? {}
    while complete_next(reviews).await? {}
    // Each round takes a page of denials; go on until none is left rather than a page a tick.
    while apply_denials(reviews).await? > 0 {}
    Ok(())
}

/// Starts the next due instance of one definition; false when none is due.
async fn start_next(reviews: &Reviews) -> anyhow::Result<bool> {
    let now = reviews.ctx.clock.now_millis();
    let txn = reviews.store.begin().await?;
    let Some((definition, due_ms)) = reviews.store.due_definition(&txn, now).await? else {
        txn.commit().await?;
        return Ok(false);
    };
    // A clock that jumped over several periods starts only the latest of them.
    let mut start = due_ms;
    let mut next = domain::next_start(definition.recurrence(), start);
    while let Some(n) = next.filter(|n| *n <= now) {
        start = n;
        next = domain::next_start(definition.recurrence(), n);
    }
    let instance = ReviewInstance {
        id: uuid::Uuid::now_v7().to_string(),
        definition_id: definition.id.clone(),
        start_time: Some(timestamp_from_millis(start)),
        end_time: Some(timestamp_from_millis(
            start + i64::from(definition.instance_duration_days) * domain::DAY_MS,
        )),
        ..Default::default()
    };
    let items = reviews
        .collect_items(&txn, &definition, &instance.id, now)
        .await
        .map_err(|s| anyhow::anyhow!("collecting review items: {s}"))?;
    reviews
        .store
        .start_instance(
            &txn,
            &reviews.ctx.outbox,
            &definition,
            &instance,
            &items,
            next,
        )
        .await?;
    txn.commit().await?;
    Ok(true)
}

/// Reminds the reviewers of one instance past its midpoint who have not decided everything,
/// where the definition asks for reminders; false when none is due.
async fn remind_next(reviews: &Reviews) -> anyhow::Result<bool> {
    let now = reviews.ctx.clock.now_millis();
    let txn = reviews.store.begin().await?;
    let Some(id) = reviews.store.due_reminder(&txn, now).await? else {
        txn.commit().await?;
        return Ok(false);
    };
    let instance = reviews.store.instance(&txn, &id).await?;
    let definition_id = instance
        .as_ref()
        .map(|i| i.definition_id.clone())
        .unwrap_or_default();
    let definition = reviews
        .store
        .definition(&txn, &definition_id)
        .await?
        .unwrap_or_default();
    let wanted = definition
        .settings
        .is_some_and(|s| s.reminder_notifications);
    let reviewer_ids = reviews.store.undecided_reviewers(&txn, &id).await?;
    if wanted && !reviewer_ids.is_empty() {
        let payload = pim_proto::pack(&ReviewReminder {
            instance,
            definition: Some(definition),
            reviewer_ids,
        });
        enqueue(
            &txn,
            &reviews.ctx.outbox,
            "approval.review_reminder",
            &id,
            "",
            payload,
        )
        .await?;
    }
    reviews.store.mark_reminded(&txn, &id).await?;
    txn.commit().await?;
    Ok(true)
}

/// Completes one ended instance: undecided items take the default decision; false when none.
async fn complete_next(reviews: &Reviews) -> anyhow::Result<bool> {
    let now = reviews.ctx.clock.now_millis();
    let txn = reviews.store.begin().await?;
    let Some(id) = reviews.store.ended_instance(&txn, now).await? else {
        txn.commit().await?;
        return Ok(false);
    };
    let Some(instance) = reviews.store.instance(&txn, &id).await? else {
        txn.commit().await?;
        return Ok(true);
    };
    let definition = reviews
        .store
        .definition(&txn, &instance.definition_id)
        .await?
        .unwrap_or_default();
    let settings = definition.settings.unwrap_or_default();
    for item in reviews.store.items(&txn, &id, None).await? {
        if item.decision() != ReviewDecision::NotReviewed {
            continue;
        }
        let decision = domain::at_end(settings.default_decision(), item.recommendation());
        if decision != ReviewDecision::NotReviewed {
            let decided = ReviewItem {
                decision: decision.into(),
                justification: "the review's default decision".to_owned(),
                decided_by: String::new(),
                decided_at: Some(timestamp_from_millis(now)),
                ..item
            };
            reviews
                .store
                .record_decision(&txn, &reviews.ctx.outbox, &decided, now)
                .await?;
        }
    }
    let status = if settings.auto_apply {
        "applying"
    } else {
        "completed"
    };
    reviews.store.set_status(&txn, &id, status).await?;
    let completed = reviews.store.instance(&txn, &id).await?;
    let payload = pim_proto::pack(&ReviewChanged {
        instance: completed,
        definition: Some(definition),
    });
    enqueue(
        &txn,
        &reviews.ctx.outbox,
        "approval.review_completed",
        &id,
        "",
        payload,
    )
    .await?;
    txn.commit().await?;
    Ok(true)
}

/// Removes the denied assignments of completed auto-apply instances, a page at a time, in
/// batches of one assignment transaction each; returns how many were handled.
async fn apply_denials(reviews: &Reviews) -> anyhow::Result<usize> {
    let page = reviews.store.to_apply().await?;
    let handled = page.len();
    let results = futures_util::stream::iter(page.chunks(APPLY_BATCH).map(<[_]>::to_vec))
        .map(|batch| apply_batch(reviews, batch))
        .buffer_unordered(APPLY_IN_FLIGHT)
        .collect::<Vec<anyhow::Result<()>>>()
        .await;
    for result in results {
        result?;
    }
    for id in reviews.store.fully_applied().await? {
        let txn = reviews.store.begin().await?;
        reviews.store.set_status(&txn, &id, "applied").await?;
        txn.commit().await?;
    }
    Ok(handled)
}

/// Removes a batch of denied assignments in one call and records each outcome. A removal the
/// assignment service refuses (already gone, or the last Global Administrator) is recorded as
/// not applied, with its reason.
async fn apply_batch(reviews: &Reviews, items: Vec<ReviewItem>) -> anyhow::Result<()> {
    let assignment = reviews.ctx.peers.get(ServiceName::Assignment);
    let request = RemoveSchedulesRequest {
        removals: items
            .iter()
            .map(|item| AssignmentInternalServiceRemoveScheduleRequest {
                schedule_id: item.schedule_id.clone(),
                decision_id: item.id.clone(),
                justification: format!("access review: denied ({})", item.justification),
            })
            .collect(),
    };
    let answer = pim_client::retry_idempotent(|| {
        let mut client = assignment.assignment_internal();
        let request = request.clone();
        async move { client.remove_schedules(request).await }
    })
    .await;
    let outcomes = match answer {
        Ok(answer) => answer.into_inner().outcomes,
        Err(status) if status.code() == Code::Unavailable => {
            anyhow::bail!("the assignment service did not answer; applying resumes next tick")
        }
        Err(status) => {
            anyhow::bail!("the assignment service refused a batch of removals: {status}")
        }
    };
    let results: Vec<(String, bool, String)> = items
        .iter()
        .zip(outcomes)
        .map(|(item, outcome)| {
            if outcome.removed {
                return (item.id.clone(), true, "removed".to_owned());
            }
            let why = if outcome.reason.is_empty() {
                outcome.message
            } else {
                outcome.reason
            };
            tracing::warn!(item = %item.id, why, "a review denial was not applied");
            (item.id.clone(), false, format!("not applied: {why}"))
        })
        .collect();
    reviews.store.applied(&reviews.ctx.outbox, &results).await
}
