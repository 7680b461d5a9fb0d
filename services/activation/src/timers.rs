//! The background work of the activation context, all judged by the injectable clock:
//! - expiry: a request whose window ended becomes `Expired` and `activation.request_expired` is
//!   announced; rows are claimed with `SKIP LOCKED`, so with N replicas each fires once (access
//!   itself ended at `end` exactly, in the assignment context, whatever this does);
//! - provisioning of approved requests, woken by the consumer as soon as an approval commits;
//! - the reconciler, which finishes any request left between two states (after a crash, say).

use std::{sync::Arc, time::Duration};

use pim_proto::activation::v1::RequestStatus;
use tokio::sync::Notify;
use tracing::Instrument as _;

use crate::{
    flow::Flow,
    model::GRANTED,
    store::{Change, transition_in},
};

/// Requests expired per transaction (the claim's LIMIT).
const SWEEP: usize = 100;

pub async fn expire(flow: Flow, every: Duration) {
    let ctx = flow.ctx.clone();
    let mut wait = every;
    loop {
        tokio::select! {
            () = ctx.cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        // A full sweep means more are due: sweep again at once instead of after a tick.
        loop {
            match expire_due(&flow).await {
                Ok(0) => break,
                Ok(n) => {
                    ctx.outbox.wake();
                    if n < SWEEP {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "expiring requests failed; retrying");
                    break;
                }
            }
        }
        wait = until_next_end(&flow, every).await;
    }
}

/// How long to sleep: until the next window ends, by the clock, but never longer than `every`
/// (the clock may be moved, and other replicas add windows). So the announcement follows the
/// end within milliseconds instead of up to a tick. An overdue end (held by another replica,
/// say) is looked at again after 10 ms, not in a tight loop.
async fn until_next_end(flow: &Flow, every: Duration) -> Duration {
    let now = flow.ctx.clock.now_millis();
    match flow.store.next_end().await {
        Ok(Some(end)) => Duration::from_millis(end.saturating_sub(now).max(10) as u64).min(every),
        Ok(None) => every,
        Err(e) => {
            tracing::warn!(error = ?e, "reading the next window end failed");
            every
        }
    }
}

async fn expire_due(flow: &Flow) -> anyhow::Result<usize> {
    let now = flow.ctx.clock.now_millis();
    let txn = flow.store.begin().await?;
    let ids = flow.store.claim_ended(&txn, now).await?;
    for id in &ids {
        transition_in(
            &txn,
            &flow.ctx.outbox,
            id,
            &GRANTED,
            Change::to(RequestStatus::Expired).because("WINDOW_ENDED"),
            "",
        )
        .instrument(pim_telemetry::timer_span("activation.request_expiry", id))
        .await?;
    }
    txn.commit().await?;
    Ok(ids.len())
}

/// Provisions approved requests as soon as the consumer commits an approval, and finishes
/// stragglers on every tick.
pub async fn reconcile(flow: Flow, approved: Arc<Notify>, every: Duration, after: Duration) {
    let ctx = flow.ctx.clone();
    loop {
        let woken = tokio::select! {
            () = ctx.cancel.cancelled() => return,
            () = approved.notified() => true,
            () = tokio::time::sleep(every) => false,
        };
        let now = ctx.clock.now_millis();
        // Woken: every approved request now. On a tick: anything older than `after`.
        let (cutoff, only_approved) = if woken {
            (now, true)
        } else {
            (now - after.as_millis() as i64, false)
        };
        let unfinished = match flow.store.unfinished(cutoff, only_approved).await {
            Ok(unfinished) => unfinished,
            Err(e) => {
                tracing::warn!(error = ?e, "looking for unfinished requests failed; retrying");
                continue;
            }
        };
        for request in unfinished {
            // The step continues the request's own trace.
            let trace = flow.store.trace_of(&request.id).await.unwrap_or_default();
            let span = pim_telemetry::resume(&trace, "activation.advance");
            if let Err(status) = flow.advance(&request).instrument(span).await {
                tracing::warn!(request = %request.id, code = ?status.code(), message = status.message(), "a request could not be advanced yet");
            }
        }
    }
}
