//! Escalations and timeouts. They are rows in `case_timers`, claimed one at a time with
//! `SKIP LOCKED`, so N replicas share them and each fires once; a restart loses none. They
//! decide by the injectable clock and only poll by the wall clock. A decision never depends on
//! them: deadlines are checked when a decision is made.

use std::time::Duration;

use pim_config::ServiceName;
use pim_host::HostContext;
use tracing::Instrument as _;

use crate::{directory::Directory, store::Store};

/// At most this many timers per tick, so a backlog cannot starve shutdown.
const PER_TICK: usize = 200;

pub async fn run(store: Store, ctx: HostContext, every: Duration) {
    loop {
        tokio::select! {
            () = ctx.cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        for _ in 0..PER_TICK {
            match fire_next(&store, &ctx).await {
                Ok(true) => ctx.outbox.wake(),
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = ?e, "an approval timer failed; it stays due and is retried");
                    break;
                }
            }
        }
    }
}

/// Fires the earliest due timer; false when none is due.
async fn fire_next(store: &Store, ctx: &HostContext) -> anyhow::Result<bool> {
    let now = ctx.clock.now_millis();
    let txn = store.begin().await?;
    let Some(timer) = store.next_due_timer(&txn, now).await? else {
        txn.commit().await?;
        return Ok(false);
    };
    let span = pim_telemetry::timer_span(&format!("approval.case_{}", timer.kind), &timer.case_id);
    fire(store, ctx, txn, timer, now).instrument(span).await?;
    Ok(true)
}

/// Applies one due timer, in the transaction that claimed it.
async fn fire(
    store: &Store,
    ctx: &HostContext,
    txn: sea_orm::DatabaseTransaction,
    timer: crate::store::DueTimer,
    now: i64,
) -> anyhow::Result<()> {
    if let Some(case) = store.load_in(&txn, &timer.case_id).await? {
        let plan = match timer.kind.as_str() {
            "timeout" => case.time_out(timer.stage, now),
            "escalate" if case.escalation_pending(timer.stage, now) => {
                let rules = case.stages();
                let approvers = &rules[timer.stage as usize].escalation_approvers;
                let directory = Directory {
                    assignment: ctx.peers.get(ServiceName::Assignment),
                };
                let people = directory
                    .resolve(approvers, &case.summary.scope)
                    .await
                    .map_err(|s| anyhow::anyhow!("resolving escalation approvers: {s}"))?;
                Some(case.escalate(timer.stage, people, now))
            }
            // A stage that completed or a case that ended: nothing is left to do.
            _ => None,
        };
        if let Some(plan) = plan {
            store.write_in(&txn, &ctx.outbox, &case, &plan).await?;
        }
    }
    store.remove_timer(&txn, &timer).await?;
    txn.commit().await?;
    Ok(())
}
