//! `pim bench --suite reviews`: access reviews over many assignments, on the same in-process
//! system of five services as the activation suite ([`Pim`]):
//!
//! 1. starting an instance over `--review-assignments` eligibility schedules: from the
//!    `CreateReviewDefinition` call (one-time, starting now) until its instance exists, with one
//!    item per schedule (the instance and its items commit in one transaction);
//! 2. applying `--review-denials` denials: a review of that many schedules of another role,
//!    default decision Deny with auto-apply; the clock is moved past its end, and the time is
//!    until the instance is `APPLIED` (every denied schedule removed through `RemoveSchedule`).
//!
//! The schedules are seeded with SQL into assignment's `schedules` table, in batches, as
//! `store/schedules.rs` writes an eligibility schedule (without the `schedule_created` events
//! nobody reads here). Both instance starts and the completion wait for the review runner's
//! next tick (`PIM_TIMER_INTERVAL_MS`, 1 s by default), which the figures include.

use std::time::{Duration, Instant};

use pim_client::roles::{SECURITY_ADMINISTRATOR, SECURITY_READER};
use pim_clock::Clock as _;
use pim_config::ServiceName;
use pim_proto::approval::v1::{
    CreateReviewDefinitionRequest, DefaultDecision, ReviewDefinition, ReviewRecurrence,
    ReviewSettings, ReviewerKind,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait, Value};

use super::{
    BenchOptions,
    activation::{ADMIN, Pim, count},
};

const REVIEWED_SCOPE: &str = "/administrativeUnits/bench-reviewed";
/// Schedules per seeding transaction (10 parameters each stays far below PostgreSQL's 65,535).
const SEED_BATCH: usize = 2_000;
const DAY_MS: i64 = 24 * 3600 * 1000;

pub(super) async fn run(options: &BenchOptions) -> anyhow::Result<()> {
    let mut pim = Pim::new(options);
    let result = async {
        pim.start(&[]).await?;
        let seeding = Instant::now();
        let assignment = pim.reader(ServiceName::Assignment)?;
        seed(
            assignment,
            SECURITY_ADMINISTRATOR,
            "reviewed",
            options.review_assignments,
        )
        .await?;
        seed(
            assignment,
            SECURITY_READER,
            "denied",
            options.review_denials,
        )
        .await?;
        // The planner's statistics, as autovacuum would have them for tables this size.
        assignment.execute_unprepared("ANALYZE").await?;
        let seeded = options.review_assignments + options.review_denials;
        println!(
            "{:<44} {:>8} rows {:>9.0} rows/s",
            "  (seeded eligibility schedules)",
            seeded,
            seeded as f64 / seeding.elapsed().as_secs_f64()
        );

        let (_, took) = start_review(
            &pim,
            SECURITY_ADMINISTRATOR,
            options.review_assignments,
            DefaultDecision::None,
            false,
            30,
        )
        .await?;
        report(
            &format!(
                "reviews: instance over {} assignments started",
                options.review_assignments
            ),
            took,
            options.review_assignments,
        );
        pim.await_drained(Duration::from_secs(120)).await?;

        let (instance, took) = start_review(
            &pim,
            SECURITY_READER,
            options.review_denials,
            DefaultDecision::Deny,
            true,
            1,
        )
        .await?;
        report(
            &format!(
                "  (instance over {} assignments started)",
                options.review_denials
            ),
            took,
            options.review_denials,
        );
        pim.await_drained(Duration::from_secs(120)).await?;
        apply_denials(&pim, &instance, options.review_denials).await
    }
    .await;
    pim.remove().await?;
    result
}

fn report(name: &str, took: Duration, items: usize) {
    println!(
        "{name:<44} {:>8} items {:>9.0} items/s  in {:>7.2} s",
        items,
        items as f64 / took.as_secs_f64(),
        took.as_secs_f64()
    );
}

/// Seeds `n` permanent eligibility schedules of `role` at [`REVIEWED_SCOPE`], one principal
/// each, started a day ago.
async fn seed(db: &DatabaseConnection, role: &str, people: &str, n: usize) -> anyhow::Result<()> {
    let now = pim_clock::SystemClock.now_millis();
    let mut first = 0;
    while first < n {
        let batch = SEED_BATCH.min(n - first);
        let mut values = Vec::with_capacity(batch * 10);
        let mut tuples = Vec::with_capacity(batch);
        for i in first..first + batch {
            tuples.push(format!("({})", pim_db::placeholders(values.len() + 1, 10)));
            values.extend([
                uuid::Uuid::now_v7().to_string().into(),
                "eligible".into(),
                format!("bench-{people}-{i}").into(),
                role.into(),
                REVIEWED_SCOPE.into(),
                (now - DAY_MS).into(),
                Value::BigInt(None),
                ADMIN.into(),
                Value::String(None),
                (now - DAY_MS).into(),
            ]);
        }
        let txn = db.begin().await?;
        txn.execute_raw(pim_db::stmt(
            &txn,
            &format!(
                "INSERT INTO schedules (id, kind, principal_id, role_id, scope, start_ms, end_ms, \
                 created_by, request_key, created_at_ms) VALUES {}",
                tuples.join(", ")
            ),
            values,
        ))
        .await?;
        txn.commit().await?;
        first += batch;
    }
    Ok(())
}

/// Creates a one-time review of `role`'s eligible assignments at [`REVIEWED_SCOPE`], members
/// reviewing themselves, and waits until its instance exists with one item per assignment:
/// the instance's id, and the time from the create call.
async fn start_review(
    pim: &Pim,
    role: &str,
    items: usize,
    default_decision: DefaultDecision,
    auto_apply: bool,
    days: u32,
) -> anyhow::Result<(String, Duration)> {
    let admin = pim.client(ServiceName::Approval, ADMIN)?;
    let started = Instant::now();
    let definition = admin
        .approval()
        .create_review_definition(CreateReviewDefinitionRequest {
            definition: Some(ReviewDefinition {
                display_name: format!("bench: {items} assignments"),
                role_ids: vec![role.to_owned()],
                scope: REVIEWED_SCOPE.to_owned(),
                include_eligible: true,
                reviewer_kind: ReviewerKind::Self_.into(),
                recurrence: ReviewRecurrence::OneTime.into(),
                instance_duration_days: days,
                settings: Some(ReviewSettings {
                    default_decision: default_decision.into(),
                    auto_apply,
                    recommendations_enabled: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .definition
        .unwrap_or_default();
    let db = pim.reader(ServiceName::Approval)?;
    loop {
        let row = db
            .query_one_raw(pim_db::stmt(
                db,
                "SELECT id FROM review_instances WHERE definition_id = $1",
                [definition.id.clone().into()],
            ))
            .await?;
        if let Some(row) = row {
            let took = started.elapsed();
            let instance: String = row.try_get("", "id")?;
            let created = count(
                db,
                "SELECT COUNT(*) AS n FROM review_items WHERE instance_id = $1",
                [instance.clone().into()],
            )
            .await?;
            anyhow::ensure!(
                created == items as i64,
                "the instance has {created} items, not {items}"
            );
            return Ok((instance, took));
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "no instance within 600 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Moves the clock past the instance's end, then times its completion (default decisions)
/// and the application of every denial.
async fn apply_denials(pim: &Pim, instance: &str, denials: usize) -> anyhow::Result<()> {
    let db = pim.reader(ServiceName::Approval)?;
    pim.clock.advance(DAY_MS + 1_000);
    let started = Instant::now();
    let mut completed = None;
    loop {
        let row = db
            .query_one_raw(pim_db::stmt(
                db,
                "SELECT status FROM review_instances WHERE id = $1",
                [instance.into()],
            ))
            .await?;
        let status = row
            .map(|r| r.try_get::<String>("", "status"))
            .transpose()?
            .unwrap_or_default();
        if status != "in_progress" && completed.is_none() {
            completed = Some(started.elapsed());
        }
        if status == "applied" {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the instance is {status:?} 900 s after its end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let applied = started.elapsed();
    let removed = count(
        db,
        "SELECT COUNT(*) AS n FROM review_items WHERE instance_id = $1 AND applied",
        [instance.into()],
    )
    .await?;
    anyhow::ensure!(
        removed == denials as i64,
        "{removed} of {denials} denials were applied"
    );
    report(
        &format!("  (completed: {denials} default denials)"),
        completed.unwrap_or(applied),
        denials,
    );
    report(
        &format!("reviews: {denials} denials applied"),
        applied,
        denials,
    );
    let drained = pim.await_drained(Duration::from_secs(300)).await?;
    println!(
        "{:<44} caught up {:.2} s after the instance was applied",
        "  (every consumer of the removals)",
        drained.as_secs_f64()
    );
    Ok(())
}
