//! Redis Streams: the publisher the relay uses, and the consumer-group reader every consuming
//! service runs. An entry is acknowledged only after the consumer's transaction commits; entries
//! left pending by a crashed consumer are reclaimed with `XAUTOCLAIM`; an entry delivered more
//! than `max_attempts` times goes to the dead-letter stream and the consumer moves on.

use std::{collections::HashMap, time::Duration};

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use pim_proto::events::v1::Event;
use pim_telemetry::metrics::{
    DEAD_LETTERS, KeyValue, STREAM_CONSUMER_LAG, STREAM_CONSUMER_PENDING,
};
use prost::Message as _;
use redis::{
    AsyncCommands as _, RedisResult, Value,
    aio::ConnectionManager,
    streams::{
        StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamPendingCountReply,
        StreamPendingReply, StreamReadReply,
    },
};
use tokio_util::sync::CancellationToken;

use crate::{Inbox, Publisher};

/// How often a consumer reports its group's lag and pending entries.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// A connection manager that never times out a blocking read on its own.
pub(crate) async fn connect(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).context("PIM_REDIS_URL")?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, config)
        .await
        .context("connecting to Redis")
}

/// The dead-letter stream of one group on one stream.
pub fn dead_letter_key(stream: &str, group: &str) -> String {
    format!("{stream}:dead:{group}")
}

/// Publishes to one producer's stream; trims only below what every known group acknowledged.
pub struct RedisPublisher {
    redis: ConnectionManager,
    stream: String,
    /// The consumer groups that must have acknowledged an entry before it may be trimmed.
    groups: Vec<String>,
}

impl RedisPublisher {
    pub async fn connect(url: &str, stream: String, groups: Vec<String>) -> anyhow::Result<Self> {
        Ok(Self {
            redis: connect(url).await?,
            stream,
            groups,
        })
    }
}

impl Publisher for RedisPublisher {
    fn publish<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for event in events {
                pipe.cmd("XADD")
                    .arg(&self.stream)
                    .arg("*")
                    .arg("event")
                    .arg(event.encode_to_vec())
                    .arg("type")
                    .arg(&event.r#type)
                    .arg("sequence")
                    .arg(event.sequence)
                    .ignore();
            }
            let mut redis = self.redis.clone();
            pipe.query_async::<()>(&mut redis).await.context("XADD")?;
            Ok(())
        })
    }

    fn trim(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let mut redis = self.redis.clone();
            let info: StreamInfoGroupsReply = match redis.xinfo_groups(&self.stream).await {
                Ok(info) => info,
                // No stream yet: nothing to trim.
                Err(_) => return Ok(()),
            };
            let mut floor: Option<(u64, u64)> = None;
            for group in &self.groups {
                // A group that does not exist yet has acknowledged nothing.
                let Some(found) = info.groups.iter().find(|g| &g.name == group) else {
                    return Ok(());
                };
                let pending: StreamPendingReply = redis.xpending(&self.stream, group).await?;
                let acknowledged_below = match pending {
                    StreamPendingReply::Data(data) => parse_id(&data.start_id),
                    _ => parse_id(&found.last_delivered_id).map(|(ms, seq)| (ms, seq + 1)),
                };
                let Some(id) = acknowledged_below else {
                    return Ok(());
                };
                floor = Some(floor.map_or(id, |f| f.min(id)));
            }
            if let Some((ms, seq)) = floor {
                redis::cmd("XTRIM")
                    .arg(&self.stream)
                    .arg("MINID")
                    .arg(format!("{ms}-{seq}"))
                    .query_async::<i64>(&mut redis)
                    .await?;
            }
            Ok(())
        })
    }
}

fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// The consuming service's name: one group per consuming service.
    pub group: String,
    /// Unique per process.
    pub consumer: String,
    pub batch: usize,
    pub block: Duration,
    pub reclaim_idle: Duration,
    pub max_attempts: u64,
}

/// Reads one producer's stream as a member of a consumer group.
pub struct RedisConsumer {
    redis: ConnectionManager,
    stream: String,
    dead_letters: String,
    inbox: Inbox,
    options: ConsumerOptions,
}

/// What to do with a stream entry after handling it.
enum Disposition {
    Ack,
    Retry,
}

impl RedisConsumer {
    pub async fn connect(
        url: &str,
        stream: String,
        inbox: Inbox,
        options: ConsumerOptions,
    ) -> anyhow::Result<Self> {
        let redis = connect(url).await?;
        let dead_letters = dead_letter_key(&stream, &options.group);
        let consumer = Self {
            redis,
            stream,
            dead_letters,
            inbox,
            options,
        };
        consumer.ensure_group().await?;
        Ok(consumer)
    }

    /// Creates the group from the start of the stream; an existing group is fine.
    async fn ensure_group(&self) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let created: RedisResult<()> = redis
            .xgroup_create_mkstream(&self.stream, &self.options.group, "0")
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Consumes until cancelled: new entries, and every `reclaim_idle` the stuck ones.
    pub async fn run(self, cancel: CancellationToken) {
        let mut last_reclaim = tokio::time::Instant::now();
        let mut last_probe = tokio::time::Instant::now() - PROBE_EVERY;
        while !cancel.is_cancelled() {
            if last_probe.elapsed() >= PROBE_EVERY {
                last_probe = tokio::time::Instant::now();
                self.probe().await;
            }
            let outcome = tokio::select! {
                () = cancel.cancelled() => break,
                outcome = self.consume_new() => outcome,
            };
            if let Err(e) = outcome {
                self.recover(&e).await;
                tokio::select! { () = cancel.cancelled() => break, () = tokio::time::sleep(Duration::from_millis(200)) => {} }
            }
            if last_reclaim.elapsed() >= self.options.reclaim_idle / 2 {
                last_reclaim = tokio::time::Instant::now();
                if let Err(e) = self.reclaim().await {
                    self.recover(&e).await;
                }
            }
        }
    }

    /// `messaging.*` attributes of this consumer's metrics.
    fn attributes(&self) -> [KeyValue; 2] {
        [
            KeyValue::new("messaging.destination.name", self.stream.clone()),
            KeyValue::new("messaging.consumer.group.name", self.options.group.clone()),
        ]
    }

    /// Records the group's lag (entries not yet delivered to it) and pending entries.
    async fn probe(&self) {
        let mut redis = self.redis.clone();
        let info: RedisResult<StreamInfoGroupsReply> = redis.xinfo_groups(&self.stream).await;
        let Some(group) = info.ok().and_then(|info| {
            info.groups
                .into_iter()
                .find(|g| g.name == self.options.group)
        }) else {
            return;
        };
        let attributes = self.attributes();
        STREAM_CONSUMER_PENDING.record(group.pending as i64, &attributes);
        // Redis cannot always tell (after a trim, say); no value is better than a wrong one.
        if let Some(lag) = group.lag {
            STREAM_CONSUMER_LAG.record(lag as i64, &attributes);
        }
    }

    async fn recover(&self, error: &anyhow::Error) {
        tracing::warn!(stream = %self.stream, error = ?error, "consumer error; retrying");
        // After Redis restarted empty the group is gone (NOGROUP); create it again.
        if format!("{error:?}").contains("NOGROUP")
            && let Err(e) = self.ensure_group().await
        {
            tracing::warn!(error = ?e, "recreating the consumer group failed");
        }
    }

    /// Reads and handles one batch of new entries. Returns how many were acknowledged.
    pub async fn consume_new(&self) -> anyhow::Result<usize> {
        let entries = self.read_new().await?;
        if entries.is_empty() {
            return Ok(0);
        }
        // The common case: every entry decodes and the batch commits in one transaction.
        let mut failed_at = None;
        if let Ok(events) = entries
            .iter()
            .map(entry_event)
            .collect::<Result<Vec<_>, _>>()
        {
            match self.inbox.apply_batch(&events).await {
                Ok(_) => {
                    let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
                    self.ack(&ids).await?;
                    return Ok(ids.len());
                }
                Err(failure) => {
                    tracing::warn!(error = ?failure.error, "batch rolled back; applying one by one");
                    failed_at = failure.at;
                }
            }
        }
        let mut acked = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            // The entry whose handler just failed has had its first attempt; it stays pending.
            if Some(i) == failed_at {
                continue;
            }
            if let Disposition::Ack = self.handle(entry, 1).await? {
                acked.push(entry.id.clone());
            }
        }
        self.ack(&acked).await?;
        Ok(acked.len())
    }

    /// New entries for this consumer (`XREADGROUP … >`).
    pub async fn read_new(&self) -> anyhow::Result<Vec<StreamId>> {
        let mut redis = self.redis.clone();
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.options.group)
            .arg(&self.options.consumer)
            .arg("COUNT")
            .arg(self.options.batch)
            .arg("BLOCK")
            .arg(self.options.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(&mut redis)
            .await?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// Applies one entry through the inbox. `Retry` leaves it pending for a later reclaim.
    pub async fn apply_entry(&self, entry: &StreamId) -> anyhow::Result<bool> {
        Ok(matches!(self.handle(entry, 1).await?, Disposition::Ack))
    }

    async fn handle(&self, entry: &StreamId, delivered: u64) -> anyhow::Result<Disposition> {
        let event = entry_event(entry);
        if delivered > self.options.max_attempts {
            self.dead_letter(entry, event.as_ref().ok()).await?;
            return Ok(Disposition::Ack);
        }
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(entry = %entry.id, error = ?e, "undecodable stream entry");
                return Ok(Disposition::Retry);
            }
        };
        match self.inbox.apply(&event).await {
            Ok(_) => Ok(Disposition::Ack),
            Err(e) => {
                tracing::warn!(event_id = %event.id, attempt = delivered, error = ?e, "handling an event failed");
                Ok(Disposition::Retry)
            }
        }
    }

    async fn dead_letter(&self, entry: &StreamId, event: Option<&Event>) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.dead_letters)
            .arg("*")
            .arg("source_id")
            .arg(&entry.id);
        for (field, value) in &entry.map {
            if let Value::BulkString(bytes) = value {
                cmd.arg(field).arg(bytes.as_slice());
            }
        }
        cmd.query_async::<String>(&mut redis).await?;
        if let Some(event) = event {
            self.inbox.dead_lettered(event).await?;
        }
        DEAD_LETTERS.add(1, &self.attributes());
        tracing::error!(stream = %self.stream, entry = %entry.id, "entry moved to the dead-letter stream");
        Ok(())
    }

    pub async fn ack(&self, ids: &[String]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut redis = self.redis.clone();
        let _: i64 = redis.xack(&self.stream, &self.options.group, ids).await?;
        Ok(())
    }

    /// Claims entries idle longer than `reclaim_idle` (a crashed or failing consumer's) and
    /// handles them again; those delivered too often are dead-lettered.
    pub async fn reclaim(&self) -> anyhow::Result<usize> {
        let mut redis = self.redis.clone();
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(&self.options.group)
            .arg(&self.options.consumer)
            .arg(self.options.reclaim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.options.batch)
            .query_async(&mut redis)
            .await?;
        if claimed.claimed.is_empty() {
            return Ok(0);
        }
        let deliveries = self.delivery_counts(&claimed.claimed).await?;
        let mut acked = Vec::new();
        for entry in &claimed.claimed {
            let delivered = deliveries.get(&entry.id).copied().unwrap_or(1);
            if let Disposition::Ack = self.handle(entry, delivered).await? {
                acked.push(entry.id.clone());
            }
        }
        self.ack(&acked).await?;
        Ok(acked.len())
    }

    async fn delivery_counts(&self, entries: &[StreamId]) -> anyhow::Result<HashMap<String, u64>> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(HashMap::new());
        };
        let mut redis = self.redis.clone();
        let pending: StreamPendingCountReply = redis
            .xpending_consumer_count(
                &self.stream,
                &self.options.group,
                &first.id,
                &last.id,
                entries.len(),
                &self.options.consumer,
            )
            .await?;
        Ok(pending
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered as u64))
            .collect())
    }
}

fn entry_event(entry: &StreamId) -> anyhow::Result<Event> {
    match entry.map.get("event") {
        Some(Value::BulkString(bytes)) => Ok(Event::decode(bytes.as_slice())?),
        _ => anyhow::bail!("entry has no event field"),
    }
}
