//! Security alerts: Entra PIM's alerts that apply here and two of PIM's own, computed
//! continuously from the records the audit context writes, with thresholds, incidents,
//! dismissal, remediation through the assignment context, and a refresh that recomputes them
//! from the stored log with the same answer. They live in tables of their own and never touch
//! the log itself; their events go out through audit's one outbox. See `docs/alerts.md`.

pub mod definitions;
mod engine;
pub mod evaluate;
pub mod facts;
mod grpc;
pub mod incidents;
pub mod projection;
pub mod refresh;
pub mod view;

use std::time::Duration;

use pim_host::HostContext;
use pim_proto::audit::v1::alert_service_server::AlertServiceServer;
use sea_orm::{ConnectionTrait, TransactionTrait};
use tracing::Instrument as _;

pub use engine::{Alerting, observe_many};

pub fn service(ctx: HostContext) -> AlertServiceServer<grpc::AlertApi> {
    AlertServiceServer::new(grpc::AlertApi::new(ctx))
}

/// Looks, by the clock, for alerts whose condition changes with time alone (days without an
/// activation, activations leaving their window, schedules starting or ending).
pub async fn run_timer(ctx: HostContext) {
    let poll = ctx.settings.timer_interval.max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = ctx.cancel.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
        if let Err(e) = tick(&ctx).await {
            tracing::warn!(error = ?e, "evaluating due security alerts failed");
        }
    }
}

async fn tick(ctx: &HostContext) -> anyhow::Result<()> {
    let now = ctx.clock.now_millis();
    // Most polls find nothing due; they take no lock.
    let due = ctx
        .db
        .query_one_raw(pim_db::stmt(
            &ctx.db,
            "SELECT 1 AS due FROM alert_due WHERE due_at_ms <= $1 LIMIT 1",
            [now.into()],
        ))
        .await?;
    if due.is_none() {
        return Ok(());
    }
    due_now(ctx, now)
        .instrument(pim_telemetry::timer_span("audit.alerts_due", ""))
        .await
}

/// Evaluates the keys whose time has come, under the alert lock.
async fn due_now(ctx: &HostContext, now: i64) -> anyhow::Result<()> {
    let txn = ctx.db.begin().await?;
    engine::lock(&txn).await?;
    let alerting = Alerting::new(ctx.outbox.clone(), &ctx.settings.audit.alerts_disabled);
    let looked = engine::due(&txn, &alerting, now).await?;
    txn.commit().await?;
    if looked > 0 {
        ctx.outbox.wake();
    }
    Ok(())
}
