//! The bounded, rate-limited path for security events. A flood of denials cannot fill a
//! database: the queue is bounded, and beyond the per-minute limit denials are counted and
//! summarised in the next stored event instead of stored one by one.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use pim_grpc::DenialRecorder;
use pim_proto::events::v1::AccessDenied;
use sea_orm::{DatabaseConnection, TransactionTrait};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{NewEvent, Outbox};

const QUEUE: usize = 1024;

#[derive(Debug)]
struct Denial {
    /// When the request was refused; the rate limit counts by this, not by when it is written.
    at_ms: i64,
    method: String,
    caller: String,
    reason: String,
}

/// The sending half; cheap to clone, never blocks a request.
#[derive(Clone)]
pub struct SecurityEvents {
    sender: mpsc::Sender<Denial>,
    clock: pim_clock::SharedClock,
    overflow: Arc<AtomicU64>,
}

impl SecurityEvents {
    /// Starts the writer task and returns the handle requests use.
    pub fn start(
        db: DatabaseConnection,
        outbox: Outbox,
        per_minute: u32,
        cancel: CancellationToken,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let overflow = Arc::new(AtomicU64::new(0));
        let clock = outbox.clock().clone();
        tokio::spawn(write_denials(
            db,
            outbox,
            per_minute,
            receiver,
            overflow.clone(),
            cancel,
        ));
        Self {
            sender,
            clock,
            overflow,
        }
    }
}

impl DenialRecorder for SecurityEvents {
    fn record_denial(&self, method: &str, caller: &str, reason: &str) {
        let denial = Denial {
            at_ms: self.clock.now_millis(),
            method: method.to_owned(),
            caller: caller.to_owned(),
            reason: reason.to_owned(),
        };
        if self.sender.try_send(denial).is_err() {
            self.overflow.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn write_denials(
    db: DatabaseConnection,
    outbox: Outbox,
    per_minute: u32,
    mut receiver: mpsc::Receiver<Denial>,
    overflow: Arc<AtomicU64>,
    cancel: CancellationToken,
) {
    let mut minute = -1_i64;
    let mut stored_this_minute = 0_u32;
    let mut suppressed = 0_u64;
    loop {
        let denial = tokio::select! {
            () = cancel.cancelled() => return,
            denial = receiver.recv() => match denial { Some(d) => d, None => return },
        };
        let now_minute = denial.at_ms.div_euclid(60_000);
        if now_minute != minute {
            minute = now_minute;
            stored_this_minute = 0;
        }
        suppressed += overflow.swap(0, Ordering::Relaxed);
        if stored_this_minute >= per_minute {
            suppressed += 1;
            continue;
        }
        stored_this_minute += 1;
        let payload = AccessDenied {
            method: denial.method,
            caller_id: denial.caller.clone(),
            reason: denial.reason,
            suppressed_count: suppressed,
        };
        let event = NewEvent::new(
            format!("{}.access_denied", outbox.producer()),
            denial.caller.clone(),
            pim_proto::pack(&payload),
        )
        .by(&denial.caller);
        let written = async {
            let txn = db.begin().await?;
            outbox.enqueue(&txn, event).await?;
            txn.commit().await?;
            anyhow::Ok(())
        }
        .await;
        match written {
            Ok(()) => {
                suppressed = 0;
                outbox.wake();
            }
            Err(e) => tracing::warn!(error = ?e, "storing a security event failed"),
        }
    }
}
