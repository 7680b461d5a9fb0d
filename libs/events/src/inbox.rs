//! The consumer side of a transaction: the handled event id is recorded with the effect, so a
//! redelivered event has no second effect.

use std::{collections::HashSet, sync::Arc};

use futures_util::future::BoxFuture;
use pim_clock::SharedClock;
use pim_proto::events::v1::Event;
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};
use tracing::Instrument as _;

use crate::envelope::trace_of;
use pim_db::stmt;

pub type HandlerFuture<'a> = BoxFuture<'a, anyhow::Result<()>>;

/// A consuming service's reaction to events. It must do all its writes through `txn`.
pub trait EventHandler: Send + Sync + 'static {
    fn handle<'a>(&'a self, txn: &'a DatabaseTransaction, event: &'a Event) -> HandlerFuture<'a>;

    /// Handles the new events of one batch, in order, in one transaction, for a handler whose
    /// effects are written many rows to a statement. `None` (the default) has the inbox call
    /// `handle` for each event, under that event's own span.
    fn handle_batch<'a>(
        &'a self,
        _txn: &'a DatabaseTransaction,
        _events: &'a [&'a Event],
    ) -> Option<HandlerFuture<'a>> {
        None
    }

    /// Called once the transaction that handled events has committed, so work that must see
    /// their effects (a call to another service, say) can start at once instead of at its
    /// next poll.
    fn committed(&self) {}
}

/// A batch rolled back; `at` is the event whose handler failed, if a handler did.
#[derive(Debug, thiserror::Error)]
#[error("batch rolled back")]
pub struct BatchFailed {
    pub at: Option<usize>,
    #[source]
    pub error: anyhow::Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The effect was committed now.
    Applied,
    /// The event was handled (or dead-lettered) before; nothing was done.
    Duplicate,
}

/// A consuming service's inbox, shared by its stream consumers and gap fillers.
#[derive(Clone)]
pub struct Inbox {
    db: DatabaseConnection,
    clock: SharedClock,
    handler: Arc<dyn EventHandler>,
    consumer: Arc<str>,
}

impl Inbox {
    pub fn new(
        db: DatabaseConnection,
        clock: SharedClock,
        consumer: &str,
        handler: Arc<dyn EventHandler>,
    ) -> Self {
        Self {
            db,
            clock,
            handler,
            consumer: consumer.into(),
        }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The consuming context.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Applies `event` once: records its id and runs the handler in one transaction.
    pub async fn apply(&self, event: &Event) -> anyhow::Result<Applied> {
        let span = self.span(event);
        async {
            let txn = self.db.begin().await?;
            if !self.record(&txn, event, "applied").await? {
                txn.rollback().await?;
                return Ok(Applied::Duplicate);
            }
            self.handler.handle(&txn, event).await?;
            txn.commit().await?;
            self.handler.committed();
            Ok(Applied::Applied)
        }
        .instrument(span)
        .await
    }

    /// Applies a batch in one transaction, so one commit covers many events. Any failure rolls
    /// the whole batch back; the caller then applies the events one by one, so one poison
    /// message cannot hold the others back.
    pub async fn apply_batch(&self, events: &[Event]) -> Result<Vec<Applied>, BatchFailed> {
        let failed = |at: Option<usize>| move |error: anyhow::Error| BatchFailed { at, error };
        let txn = self.db.begin().await.map_err(|e| failed(None)(e.into()))?;
        let mut fresh = self.record_many(&txn, events).await.map_err(failed(None))?;
        let mut outcomes = Vec::with_capacity(events.len());
        let mut new_events = Vec::with_capacity(events.len());
        for event in events {
            // `remove`, so a second copy of an event in the same batch counts as a duplicate.
            if fresh.remove(&event.id) {
                new_events.push(event);
                outcomes.push(Applied::Applied);
            } else {
                outcomes.push(Applied::Duplicate);
            }
        }
        match self.handler.handle_batch(&txn, &new_events) {
            Some(batch) => {
                // One span per event, open while the batch is handled, so each event's trace
                // shows where it was consumed though its effects were written with the others'.
                let spans: Vec<tracing::Span> = new_events.iter().map(|e| self.span(e)).collect();
                let outer = match spans.as_slice() {
                    [only] => only.clone(),
                    _ => tracing::Span::none(),
                };
                batch.instrument(outer).await.map_err(failed(None))?;
                drop(spans);
            }
            None => {
                for event in &new_events {
                    let at = events.iter().position(|e| e.id == event.id);
                    self.handler
                        .handle(&txn, event)
                        .instrument(self.span(event))
                        .await
                        .map_err(failed(at))?;
                }
            }
        }
        txn.commit().await.map_err(|e| failed(None)(e.into()))?;
        if outcomes.contains(&Applied::Applied) {
            self.handler.committed();
        }
        Ok(outcomes)
    }

    fn span(&self, event: &Event) -> tracing::Span {
        let span = tracing::info_span!(
            "event.consume",
            otel.name = %format!("{} process", event.r#type),
            otel.kind = "consumer",
            messaging.system = "redis",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            // The logical stream, without the deployment's PIM_STREAM_PREFIX.
            messaging.destination.name = %format!("events:{}", event.producer),
            messaging.consumer.group.name = %self.consumer,
            messaging.message.id = %event.id,
            pim.consumer = %self.consumer,
            event.id = %event.id,
            event.r#type = %event.r#type,
            event.producer = %event.producer,
            event.sequence = event.sequence,
        );
        pim_telemetry::set_parent_from(&span, &trace_of(event), &self.consumer);
        span
    }

    /// Records that `event` was dead-lettered, so gap detection counts it as handled.
    pub async fn dead_lettered(&self, event: &Event) -> anyhow::Result<()> {
        self.record(&self.db, event, "dead_lettered")
            .await
            .map(|_| ())
    }

    /// Inserts the inbox row; `false` when the event id was already there.
    async fn record(
        &self,
        conn: &impl ConnectionTrait,
        event: &Event,
        outcome: &str,
    ) -> anyhow::Result<bool> {
        let inserted = conn
            .execute_raw(stmt(
                conn,
                "INSERT INTO inbox (event_id, producer, sequence, outcome, recorded_at_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
                [
                    event.id.clone().into(),
                    event.producer.clone().into(),
                    (event.sequence as i64).into(),
                    outcome.into(),
                    self.clock.now_millis().into(),
                ],
            ))
            .await?
            .rows_affected();
        Ok(inserted == 1)
    }

    /// Inserts the inbox rows of a batch in one statement; returns the ids that were new.
    async fn record_many(
        &self,
        txn: &impl ConnectionTrait,
        events: &[Event],
    ) -> anyhow::Result<HashSet<String>> {
        if events.is_empty() {
            return Ok(HashSet::new());
        }
        let now = self.clock.now_millis();
        let mut sql = String::from(
            "INSERT INTO inbox (event_id, producer, sequence, outcome, recorded_at_ms) VALUES ",
        );
        let mut values = Vec::with_capacity(events.len() * 4);
        for (i, event) in events.iter().enumerate() {
            let n = i * 4;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, 'applied', ${})",
                n + 1,
                n + 2,
                n + 3,
                n + 4
            ));
            values.extend([
                event.id.clone().into(),
                event.producer.clone().into(),
                (event.sequence as i64).into(),
                now.into(),
            ]);
        }
        sql.push_str(" ON CONFLICT (event_id) DO NOTHING RETURNING event_id");
        let rows = txn.query_all_raw(stmt(txn, &sql, values)).await?;
        rows.iter()
            .map(|row| row.try_get::<String>("", "event_id").map_err(Into::into))
            .collect()
    }

    /// Whether an event id was handled or dead-lettered.
    pub async fn contains(&self, event_id: &str) -> anyhow::Result<bool> {
        Ok(self
            .db
            .query_one_raw(stmt(
                &self.db,
                "SELECT 1 AS one FROM inbox WHERE event_id = $1",
                [event_id.into()],
            ))
            .await?
            .is_some())
    }
}
