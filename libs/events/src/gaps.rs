//! Gap detection and repair for one producer. Progress is judged from the inbox, not from one
//! consumer process, because a group spreads work across processes. A sequence still missing
//! after the grace period is a gap, and it is replayed from the producer's outbox through the
//! same inbox, so nothing is lost and nothing is applied twice. With a grace of zero and a short
//! interval this loop is the in-process bus of `pim dev`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use pim_telemetry::metrics::KeyValue;
use sea_orm::ConnectionTrait;
use tokio_util::sync::CancellationToken;

use crate::{Inbox, ReplaySource, outbox::millis};
use pim_db::stmt;

pub struct GapFiller {
    inbox: Inbox,
    producer: String,
    source: Arc<dyn ReplaySource>,
    grace: Duration,
    interval: Duration,
    max_attempts: u64,
    batch: u32,
    attempts: HashMap<String, u64>,
}

impl GapFiller {
    pub fn new(
        inbox: Inbox,
        producer: &str,
        source: Arc<dyn ReplaySource>,
        grace: Duration,
        interval: Duration,
        max_attempts: u64,
    ) -> Self {
        Self {
            inbox,
            producer: producer.to_owned(),
            source,
            grace,
            interval,
            max_attempts,
            batch: 500,
            attempts: HashMap::new(),
        }
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            if let Err(e) = self.fill_once().await {
                tracing::warn!(producer = %self.producer, error = ?e, "gap check failed; retrying");
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One pass: advances over what the inbox already holds, then replays what is missing and
    /// older than the grace period. Returns the highest sequence known handled.
    pub async fn fill_once(&mut self) -> anyhow::Result<u64> {
        let db = self.inbox.db().clone();
        let mut contiguous = self.load_progress().await?;
        let seen = db
            .query_all_raw(stmt(
                &db,
                "SELECT sequence FROM inbox WHERE producer = $1 AND sequence > $2 ORDER BY sequence LIMIT 10000",
                [self.producer.clone().into(), (contiguous as i64).into()],
            ))
            .await?;
        for row in seen {
            let sequence = row.try_get::<i64>("", "sequence")? as u64;
            if sequence == contiguous + 1 {
                contiguous = sequence;
            } else if sequence > contiguous + 1 {
                break;
            }
        }
        let horizon = self.inbox.clock().now_millis() - self.grace.as_millis() as i64;
        'replay: loop {
            let (events, head) = self.source.replay(contiguous + 1, self.batch).await?;
            if events.is_empty() {
                break;
            }
            for event in events {
                if event.sequence <= contiguous {
                    continue;
                }
                if event.sequence > contiguous + 1 {
                    // The producer no longer holds the missing range (past its replay window).
                    tracing::error!(producer = %self.producer, from = contiguous + 1, to = event.sequence - 1, "events lost beyond the replay window");
                }
                if millis(event.published_at.as_ref()) > horizon {
                    // Too fresh to call a gap: it may still be on its way through the stream.
                    break 'replay;
                }
                match self.inbox.apply(&event).await {
                    Ok(_) => {
                        self.attempts.remove(&event.id);
                    }
                    Err(e) => {
                        let tries = self.attempts.entry(event.id.clone()).or_default();
                        *tries += 1;
                        if *tries < self.max_attempts {
                            tracing::warn!(event_id = %event.id, error = ?e, "replayed event failed; will retry");
                            break 'replay;
                        }
                        tracing::error!(event_id = %event.id, error = ?e, "replayed event dead-lettered");
                        self.inbox.dead_lettered(&event).await?;
                        pim_telemetry::metrics::DEAD_LETTERS.add(
                            1,
                            &[
                                KeyValue::new(
                                    "messaging.destination.name",
                                    format!("events:{}", self.producer),
                                ),
                                KeyValue::new(
                                    "messaging.consumer.group.name",
                                    self.inbox.consumer().to_owned(),
                                ),
                            ],
                        );
                        self.attempts.remove(&event.id);
                    }
                }
                contiguous = event.sequence;
            }
            if contiguous >= head {
                break;
            }
        }
        self.save_progress(contiguous).await?;
        Ok(contiguous)
    }

    async fn load_progress(&self) -> anyhow::Result<u64> {
        let db = self.inbox.db();
        Ok(db
            .query_one_raw(stmt(
                db,
                "SELECT contiguous_sequence FROM consumer_progress WHERE producer = $1",
                [self.producer.clone().into()],
            ))
            .await?
            .map(|row| row.try_get::<i64>("", "contiguous_sequence"))
            .transpose()?
            .unwrap_or(0) as u64)
    }

    async fn save_progress(&self, contiguous: u64) -> anyhow::Result<()> {
        let db = self.inbox.db();
        db.execute_raw(stmt(
            db,
            "INSERT INTO consumer_progress (producer, contiguous_sequence) VALUES ($1, $2) \
             ON CONFLICT (producer) DO UPDATE SET contiguous_sequence = excluded.contiguous_sequence \
             WHERE consumer_progress.contiguous_sequence < excluded.contiguous_sequence",
            [self.producer.clone().into(), (contiguous as i64).into()],
        ))
        .await?;
        Ok(())
    }
}
