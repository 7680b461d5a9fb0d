//! The producer side of a transaction: the event row is written with the state change, in the
//! same transaction, so one never commits without the other.

use std::sync::Arc;

use anyhow::Context as _;
use pim_clock::SharedClock;
use pim_proto::events::v1::Event;
use prost::Message as _;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio::sync::Notify;

use crate::NewEvent;
use pim_db::stmt;

/// One producer's outbox. Cloning is cheap.
#[derive(Clone)]
pub struct Outbox {
    producer: Arc<str>,
    clock: SharedClock,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(producer: &str, clock: SharedClock) -> Self {
        Self {
            producer: producer.into(),
            clock,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn producer(&self) -> &str {
        &self.producer
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Writes `event` inside the caller's transaction and returns its id. The current span's
    /// trace context travels with it.
    pub async fn enqueue(
        &self,
        txn: &impl ConnectionTrait,
        event: NewEvent,
    ) -> anyhow::Result<uuid::Uuid> {
        let id = uuid::Uuid::now_v7();
        let trace = pim_telemetry::current_trace_context();
        let envelope = Event {
            id: id.to_string(),
            r#type: event.event_type.clone(),
            producer: self.producer.to_string(),
            sequence: 0,
            occurred_at: Some(timestamp(self.clock.now_millis())),
            subject: event.subject,
            actor: Some(event.actor),
            correlation_id: event.correlation_id,
            traceparent: trace.traceparent,
            tracestate: trace.tracestate,
            payload: Some(event.payload),
            published_at: None,
        };
        txn.execute_raw(stmt(
            txn,
            "INSERT INTO outbox (event_id, event_type, envelope) VALUES ($1, $2, $3)",
            [
                id.to_string().into(),
                event.event_type.into(),
                envelope.encode_to_vec().into(),
            ],
        ))
        .await
        .context("writing the outbox row")?;
        Ok(id)
    }

    /// Tells this process's relay that a transaction with events committed. Relays of other
    /// processes find the rows by polling.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Published events from `from_sequence` on, in order, as consumers receive them, and the
    /// highest published sequence.
    pub async fn published_from(
        &self,
        db: &DatabaseConnection,
        from_sequence: u64,
        limit: u32,
    ) -> anyhow::Result<(Vec<Event>, u64)> {
        let head = self.published_sequence(db).await?;
        let rows = db
            .query_all_raw(stmt(
                db,
                "SELECT sequence, envelope, sequenced_at_ms FROM outbox \
                 WHERE sequence >= $1 AND sequence <= $2 ORDER BY sequence LIMIT $3",
                [
                    (from_sequence as i64).into(),
                    (head as i64).into(),
                    i64::from(limit).into(),
                ],
            ))
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let sequence: i64 = row.try_get("", "sequence")?;
            let envelope: Vec<u8> = row.try_get("", "envelope")?;
            let published: i64 = row.try_get("", "sequenced_at_ms")?;
            events.push(stamp(&envelope, sequence as u64, published)?);
        }
        Ok((events, head))
    }

    /// The highest sequence the relay has published.
    pub async fn published_sequence(&self, db: &impl ConnectionTrait) -> anyhow::Result<u64> {
        let head = db
            .query_one_raw(stmt(
                db,
                "SELECT published_sequence FROM relay_state WHERE producer = $1",
                [self.producer.to_string().into()],
            ))
            .await?
            .map(|row| row.try_get::<i64>("", "published_sequence"))
            .transpose()?
            .unwrap_or(0);
        Ok(head as u64)
    }
}

/// The envelope as published: with its sequence and publication time.
pub(crate) fn stamp(envelope: &[u8], sequence: u64, published_at_ms: i64) -> anyhow::Result<Event> {
    let mut event = Event::decode(envelope).context("decoding an outbox envelope")?;
    event.sequence = sequence;
    event.published_at = Some(timestamp(published_at_ms));
    Ok(event)
}

pub(crate) fn timestamp(millis: i64) -> prost_types::Timestamp {
    pim_proto::timestamp_from_millis(millis)
}

pub(crate) fn millis(ts: Option<&prost_types::Timestamp>) -> i64 {
    ts.map(pim_proto::millis_from_timestamp).unwrap_or(0)
}
