//! The relay: one per producer, elected through a PostgreSQL advisory lock. It assigns the
//! gap-free `sequence` at publish, so producer transactions never queue on a counter, publishes
//! in sequence order, and only then marks rows published. A crash between publishing and marking
//! republishes the same sequences; consumers deduplicate by event id.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use pim_proto::events::v1::Event;
use pim_telemetry::metrics::{KeyValue, OUTBOX_BACKLOG, OUTBOX_RELAY_LAG};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, TransactionTrait};
use tokio_util::sync::CancellationToken;

use crate::{
    Outbox,
    outbox::{millis, stamp},
};
use pim_db::stmt;

/// How often the leading relay reports its producer's backlog.
const BACKLOG_PROBE_EVERY: Duration = Duration::from_secs(1);

/// Where published events go.
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `events`, in order. Either all are durable in the bus, or an error is returned.
    fn publish<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Trims what every consumer group has acknowledged.
    fn trim(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// For `pim dev`: consumers read the outbox tables themselves, so publishing is marking.
impl Publisher for () {
    fn publish<'a>(&'a self, _events: &'a [Event]) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub batch: u32,
    pub poll: Duration,
    pub replay_window: Duration,
    pub housekeeping_every: Duration,
    /// Pause after a partial batch while events keep coming (bounds added latency).
    pub linger: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            batch: 500,
            poll: Duration::from_millis(20),
            replay_window: Duration::from_secs(7 * 86_400),
            housekeeping_every: Duration::from_secs(30),
            linger: Duration::from_millis(2),
        }
    }
}

pub struct Relay {
    db: DatabaseConnection,
    outbox: Outbox,
    publisher: Arc<dyn Publisher>,
    options: RelayOptions,
}

impl Relay {
    pub fn new(
        db: DatabaseConnection,
        outbox: Outbox,
        publisher: Arc<dyn Publisher>,
        options: RelayOptions,
    ) -> Self {
        Self {
            db,
            outbox,
            publisher,
            options,
        }
    }

    /// Relays until cancelled. Errors (Redis down, database restarting) are logged and retried.
    pub async fn run(self, cancel: CancellationToken) {
        let mut leader = None;
        let mut last_housekeeping = tokio::time::Instant::now();
        let mut backoff = self.options.poll;
        let mut last_probe = tokio::time::Instant::now() - BACKLOG_PROBE_EVERY;
        while !cancel.is_cancelled() {
            if self.db.get_database_backend() == DatabaseBackend::Postgres && leader.is_none() {
                match self.try_lead().await {
                    Ok(Some(connection)) => leader = Some(connection),
                    Ok(None) => {
                        // Another replica relays; check again later.
                        tokio::select! { () = cancel.cancelled() => break, () = tokio::time::sleep(Duration::from_secs(1)) => continue }
                    }
                    Err(e) => tracing::warn!(error = ?e, "relay election failed"),
                }
            }
            // Only the leader gets here, so one replica reports the producer's backlog.
            if last_probe.elapsed() >= BACKLOG_PROBE_EVERY {
                last_probe = tokio::time::Instant::now();
                self.probe_backlog().await;
            }
            let result = self.step().await;
            match result {
                Ok(published) if published > 0 => {
                    backoff = self.options.poll;
                    // Under load, a short linger lets the next batch fill, so the relay's fixed
                    // cost per step is spread over many events instead of a few.
                    if published < self.options.batch as usize && !self.options.linger.is_zero() {
                        tokio::time::sleep(self.options.linger).await;
                    }
                    continue;
                }
                Ok(_) => backoff = self.options.poll,
                Err(e) => {
                    tracing::warn!(producer = self.outbox.producer(), error = ?e, "relay step failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    // The lock connection may be the thing that failed; elect again.
                    leader = None;
                }
            }
            if last_housekeeping.elapsed() >= self.options.housekeeping_every {
                last_housekeeping = tokio::time::Instant::now();
                if let Err(e) = self.housekeeping().await {
                    tracing::warn!(error = ?e, "relay housekeeping failed");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = self.outbox.notified() => {}
                () = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Holds a session advisory lock on a dedicated connection for as long as this relay leads.
    async fn try_lead(
        &self,
    ) -> anyhow::Result<Option<sea_orm::sqlx::pool::PoolConnection<sea_orm::sqlx::Postgres>>> {
        let pool = self.db.get_postgres_connection_pool();
        let mut connection = pool.acquire().await?;
        let key = lock_key(&format!("pim.relay.{}", self.outbox.producer()));
        let (locked,): (bool,) = sea_orm::sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *connection)
            .await?;
        Ok(locked.then_some(connection))
    }

    /// Assigns sequences to new rows, publishes everything assigned and not yet published, in
    /// order, then moves the producer's published mark. Returns how many events were published.
    pub async fn step(&self) -> anyhow::Result<usize> {
        let (published, assigned) = self.assign_sequences().await?;
        if assigned <= published {
            return Ok(0);
        }
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT sequence, envelope, sequenced_at_ms FROM outbox \
                 WHERE sequence > $1 AND sequence <= $2 ORDER BY sequence LIMIT $3",
                [
                    published.into(),
                    assigned.into(),
                    i64::from(self.options.batch).into(),
                ],
            ))
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let sequence: i64 = row.try_get("", "sequence")?;
            let envelope: Vec<u8> = row.try_get("", "envelope")?;
            let sequenced_at: i64 = row.try_get("", "sequenced_at_ms")?;
            events.push(stamp(&envelope, sequence as u64, sequenced_at)?);
        }
        let Some(last) = events.last().map(|e| e.sequence as i64) else {
            return Ok(0);
        };
        // One span per event, in the trace of the transaction that wrote it, open while the
        // batch is published: the time an event waited for the relay shows in its own trace.
        let spans: Vec<tracing::Span> = events
            .iter()
            .map(|event| publish_span(event, self.outbox.producer()))
            .collect();
        let published = self.publisher.publish(&events).await;
        if published.is_err() {
            for span in &spans {
                span.record("otel.status_code", "ERROR");
            }
        }
        drop(spans);
        published.context("publishing")?;
        let now = self.outbox.clock().now_millis();
        let producer = [KeyValue::new(
            "pim.producer",
            self.outbox.producer().to_owned(),
        )];
        for event in &events {
            let lag_ms = now - millis(event.occurred_at.as_ref());
            OUTBOX_RELAY_LAG.record(lag_ms.max(0) as f64 / 1000.0, &producer);
        }
        self.db
            .execute_raw(stmt(
                &self.db,
                "UPDATE relay_state SET published_sequence = $1 WHERE producer = $2 AND published_sequence < $1",
                [last.into(), self.outbox.producer().to_owned().into()],
            ))
            .await?;
        Ok(events.len())
    }

    /// Gives the next batch of new rows their sequences, in commit-visible id order. Returns the
    /// producer's (published, last assigned) sequences.
    async fn assign_sequences(&self) -> anyhow::Result<(i64, i64)> {
        let txn = self.db.begin().await?;
        let lock = match txn.get_database_backend() {
            DatabaseBackend::Postgres => " FOR UPDATE",
            _ => "",
        };
        let producer = self.outbox.producer().to_owned();
        let state = txn
            .query_one_raw(stmt(
                &txn,
                &format!("SELECT last_sequence, published_sequence FROM relay_state WHERE producer = $1{lock}"),
                [producer.clone().into()],
            ))
            .await?;
        let (last, published) = match state {
            Some(row) => (
                row.try_get::<i64>("", "last_sequence")?,
                row.try_get::<i64>("", "published_sequence")?,
            ),
            None => {
                txn.execute_raw(stmt(
                    &txn,
                    "INSERT INTO relay_state (producer, last_sequence, published_sequence) VALUES ($1, 0, 0)",
                    [producer.clone().into()],
                ))
                .await?;
                (0, 0)
            }
        };
        let now = self.outbox.clock().now_millis();
        let assigned = txn
            .execute_raw(stmt(
                &txn,
                "UPDATE outbox SET sequence = s.seq, sequenced_at_ms = $1 FROM (\
                   SELECT id, ROW_NUMBER() OVER (ORDER BY id) + $2 AS seq FROM outbox \
                   WHERE sequence IS NULL ORDER BY id LIMIT $3) AS s \
                 WHERE outbox.id = s.id",
                [
                    now.into(),
                    last.into(),
                    i64::from(self.options.batch).into(),
                ],
            ))
            .await?
            .rows_affected() as i64;
        if assigned > 0 {
            txn.execute_raw(stmt(
                &txn,
                "UPDATE relay_state SET last_sequence = $1 WHERE producer = $2",
                [(last + assigned).into(), producer.into()],
            ))
            .await?;
        }
        txn.commit().await?;
        Ok((published, last + assigned))
    }

    /// Records how many committed events are not yet published.
    async fn probe_backlog(&self) {
        let producer = self.outbox.producer().to_owned();
        let counted = async {
            // Rows waiting for a sequence (a partial index), plus those sequenced and not yet
            // published (two counters): no scan of the replay window.
            let row = self
                .db
                .query_one_raw(stmt(
                    &self.db,
                    "SELECT (SELECT COUNT(*) FROM outbox WHERE sequence IS NULL) + COALESCE((\
                       SELECT last_sequence - published_sequence FROM relay_state \
                       WHERE producer = $1), 0) AS n",
                    [producer.clone().into()],
                ))
                .await?;
            anyhow::Ok(row.map(|r| r.try_get::<i64>("", "n")).transpose()?)
        };
        match counted.await {
            Ok(Some(backlog)) => {
                OUTBOX_BACKLOG.record(backlog, &[KeyValue::new("pim.producer", producer)])
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = ?e, "counting the outbox backlog failed"),
        }
    }

    /// Drops published rows older than the replay window, and trims the stream.
    async fn housekeeping(&self) -> anyhow::Result<()> {
        let horizon =
            self.outbox.clock().now_millis() - self.options.replay_window.as_millis() as i64;
        let published = self.outbox.published_sequence(&self.db).await? as i64;
        self.db
            .execute_raw(stmt(
                &self.db,
                "DELETE FROM outbox WHERE sequence <= $1 AND sequenced_at_ms < $2",
                [published.into(), horizon.into()],
            ))
            .await?;
        self.publisher.trim().await
    }
}

/// A stable 64-bit advisory-lock key for a name (FNV-1a).
pub(crate) fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// The producer span of publishing `event`, a child of the span that wrote it.
fn publish_span(event: &Event, producer: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "event.publish",
        otel.name = %format!("{} publish", event.r#type),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "redis",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        // The logical stream, without the deployment's PIM_STREAM_PREFIX.
        messaging.destination.name = %format!("events:{producer}"),
        messaging.message.id = %event.id,
        event.r#type = %event.r#type,
        event.sequence = event.sequence,
    );
    pim_telemetry::set_parent_from(&span, &crate::envelope::trace_of(event), producer);
    span
}
