//! Writing one audit record per event, inside the consumer's transaction. The dense sequence
//! comes from a single head row, so concurrent consumers serialize on it and a rolled-back
//! record leaves no hole.

use pim_clock::SharedClock;
use pim_db::stmt;
use pim_events::{EventHandler, HandlerFuture};
use pim_proto::events::v1::Event;
use sea_orm::{ConnectionTrait, DatabaseTransaction};

use crate::activity::activity_of;

pub struct Recorder {
    clock: SharedClock,
}

impl Recorder {
    pub fn new(clock: SharedClock) -> Self {
        Self { clock }
    }
}

/// The trace id inside a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

impl EventHandler for Recorder {
    fn handle<'a>(&'a self, txn: &'a DatabaseTransaction, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            let sequence: i64 = txn
                .query_one_raw(stmt(
                    txn,
                    "UPDATE audit_head SET sequence = sequence + 1 WHERE id = 1 RETURNING sequence",
                    [],
                ))
                .await?
                .ok_or_else(|| anyhow::anyhow!("audit_head row missing"))?
                .try_get("", "sequence")?;
            let payload = event.payload.clone().unwrap_or_default();
            txn.execute_raw(stmt(
                txn,
                "INSERT INTO audit_records (sequence, event_id, event_type, activity, producer, producer_sequence, actor_id, \
                 subject, correlation_id, trace_id, occurred_at_ms, recorded_at_ms, payload_type, payload) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                [
                    sequence.into(),
                    event.id.clone().into(),
                    event.r#type.clone().into(),
                    activity_of(&event.r#type).into(),
                    event.producer.clone().into(),
                    (event.sequence as i64).into(),
                    event.actor.as_ref().map(|a| a.id.clone()).unwrap_or_default().into(),
                    event.subject.clone().into(),
                    event.correlation_id.clone().into(),
                    trace_id(&event.traceparent).to_owned().into(),
                    event.occurred_at.as_ref().map(pim_proto::millis_from_timestamp).unwrap_or_default().into(),
                    self.clock.now_millis().into(),
                    payload.type_url.into(),
                    payload.value.into(),
                ],
            ))
            .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn trace_ids_come_from_traceparent() {
        assert_eq!(
            super::trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(super::trace_id(""), "");
    }
}
