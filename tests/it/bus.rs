//! The event bus under faults: Redis away, Redis restarted empty, a consumer crashing between
//! its commit and its ack, and a poison message.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use pim_config::ServiceName;
use pim_db::stmt;
use pim_events::{
    ConsumerOptions, EventHandler, HandlerFuture, Inbox, Publisher, RedisConsumer, RedisPublisher,
    dead_letter_key,
};
use pim_proto::events::v1::Event;
use pim_testkit::{ADMIN, Harness, HarnessOptions, RedisKeys, RedisServer, TestDatabase};
use redis::AsyncCommands as _;
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{audit_records, make_eligible};

fn fault_options(redis: &RedisServer) -> HarnessOptions {
    HarnessOptions {
        redis_url: Some(redis.url()),
        settings: vec![
            ("PIM_EVENTS_GAP_GRACE_MS".into(), "5000".into()),
            ("PIM_EVENTS_RECLAIM_IDLE_MS".into(), "200".into()),
        ],
        ..Default::default()
    }
}

async fn await_health(h: &Harness, wanted: ServingStatus) -> anyhow::Result<()> {
    let channel =
        pim_client::channel(h.url(ServiceName::Assignment), Duration::from_secs(5), None)?;
    h.eventually(Duration::from_secs(30), || {
        let mut health = HealthClient::new(channel.clone());
        async move {
            let status = health
                .check(HealthCheckRequest::default())
                .await?
                .into_inner()
                .status();
            Ok((status == wanted).then_some(()))
        }
    })
    .await
}

async fn audited_schedules(h: &Harness) -> anyhow::Result<Vec<u64>> {
    let audit = h.client(ServiceName::Audit, &h.token(ADMIN));
    Ok(audit_records(&audit)
        .await?
        .into_iter()
        .filter(|r| r.producer == "assignment")
        .map(|r| r.producer_sequence)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_while_redis_is_down_is_delivered_when_it_returns() -> anyhow::Result<()>
{
    let mut redis = RedisServer::spawn().await?;
    let h = Harness::start_with(fault_options(&redis)).await?;
    // The break-glass seed is audited first, so the pipeline is known to work.
    h.eventually(Duration::from_secs(30), || async {
        Ok((audited_schedules(&h).await?.len() == 1).then_some(()))
    })
    .await?;

    redis.stop();
    // Health says NOT_SERVING while the bus is away, and writes still commit to the outbox.
    await_health(&h, ServingStatus::NotServing).await?;
    make_eligible(&h, "alice", "while-redis-is-down").await?;
    redis.start().await?;
    await_health(&h, ServingStatus::Serving).await?;

    let sequences = h
        .eventually(Duration::from_secs(30), || async {
            let s = audited_schedules(&h).await?;
            Ok((s.len() == 2).then_some(s))
        })
        .await?;
    assert_eq!(sequences, [1, 2], "delivered once, in order");
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_empty_the_gap_is_replayed_from_the_outbox_once() -> anyhow::Result<()>
{
    let mut redis = RedisServer::spawn().await?;
    let mut h = Harness::start_with(fault_options(&redis)).await?;
    h.eventually(Duration::from_secs(30), || async {
        Ok((audited_schedules(&h).await?.len() == 1).then_some(()))
    })
    .await?;

    // Audit is away while two events are published; then Redis loses them.
    h.stop_service(ServiceName::Audit).await;
    make_eligible(&h, "alice", "lost-1").await?;
    make_eligible(&h, "bob", "lost-2").await?;
    let assignment_db = h.service(ServiceName::Assignment).db().clone();
    h.eventually(Duration::from_secs(30), || async {
        let row = assignment_db
            .query_one_raw(stmt(
                &assignment_db,
                "SELECT published_sequence AS n FROM relay_state",
                [],
            ))
            .await?;
        let n: i64 = row.map(|r| r.try_get("", "n")).transpose()?.unwrap_or(0);
        Ok((n == 3).then_some(()))
    })
    .await?;
    redis.restart_empty().await?;
    h.restart_service(ServiceName::Audit).await?;
    make_eligible(&h, "carol", "after-restart").await?;

    // Sequence 4 arrives through the stream; 2 and 3 are a gap once the grace period passes.
    h.eventually(Duration::from_secs(30), || async {
        Ok(audited_schedules(&h).await?.contains(&4).then_some(()))
    })
    .await?;
    h.clock.advance(chrono::Duration::seconds(6));
    let mut sequences = h
        .eventually(Duration::from_secs(30), || async {
            let s = audited_schedules(&h).await?;
            Ok((s.len() >= 4).then_some(s))
        })
        .await?;
    sequences.sort_unstable();
    assert_eq!(
        sequences,
        [1, 2, 3, 4],
        "nothing lost, nothing applied twice"
    );
    h.stop().await;
    Ok(())
}

/// Counts effects in a table of its own; fails on events of type `test.poison`.
struct CountingHandler {
    calls: AtomicUsize,
}

impl EventHandler for CountingHandler {
    fn handle<'a>(&'a self, txn: &'a DatabaseTransaction, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            anyhow::ensure!(event.r#type != "test.poison", "poison");
            txn.execute_raw(stmt(
                txn,
                "INSERT INTO effects (event_id) VALUES ($1)",
                [event.id.clone().into()],
            ))
            .await?;
            Ok(())
        })
    }
}

struct ConsumerFixture {
    db: TestDatabase,
    _keys: RedisKeys,
    conn: sea_orm::DatabaseConnection,
    stream: String,
    handler: Arc<CountingHandler>,
    redis_url: String,
}

impl ConsumerFixture {
    async fn new() -> anyhow::Result<Self> {
        let db = TestDatabase::fresh(ServiceName::Audit).await?;
        let conn = pim_db::connect(&db.url, pim_db::PoolSize { max: 4, min: 1 }).await?;
        conn.execute_unprepared("CREATE TABLE effects (event_id TEXT NOT NULL)")
            .await?;
        let keys = RedisKeys::new(pim_testkit::redis_url());
        Ok(Self {
            db,
            conn,
            stream: pim_events::stream_key(&keys.prefix, "test"),
            handler: Arc::new(CountingHandler {
                calls: AtomicUsize::new(0),
            }),
            redis_url: pim_testkit::redis_url(),
            _keys: keys,
        })
    }

    async fn consumer(&self, name: &str) -> anyhow::Result<RedisConsumer> {
        let inbox = Inbox::new(
            self.conn.clone(),
            Arc::new(pim_clock::SystemClock),
            "test",
            self.handler.clone(),
        );
        RedisConsumer::connect(
            &self.redis_url,
            self.stream.clone(),
            inbox,
            ConsumerOptions {
                group: "test".into(),
                consumer: name.into(),
                batch: 10,
                block: Duration::from_millis(100),
                reclaim_idle: Duration::from_millis(50),
                max_attempts: 3,
            },
        )
        .await
    }

    async fn publish(&self, events: &[Event]) -> anyhow::Result<()> {
        RedisPublisher::connect(&self.redis_url, self.stream.clone(), vec!["test".into()])
            .await?
            .publish(events)
            .await
    }

    async fn effects(&self) -> anyhow::Result<i64> {
        crate::bad_input::count(&self.conn, "SELECT COUNT(*) AS n FROM effects").await
    }

    async fn pending(&self) -> anyhow::Result<usize> {
        let mut redis = redis::Client::open(self.redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let reply: redis::streams::StreamPendingReply =
            redis.xpending(&self.stream, "test").await?;
        Ok(reply.count())
    }
}

fn event(kind: &str, sequence: u64) -> Event {
    Event {
        id: uuid::Uuid::now_v7().to_string(),
        r#type: kind.into(),
        producer: "test".into(),
        sequence,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_crashes_between_commit_and_ack_gets_the_message_again_and_applies_it_once()
-> anyhow::Result<()> {
    let f = ConsumerFixture::new().await?;
    f.publish(&[event("test.fact", 1)]).await?;
    let first = f.consumer("first").await?;
    let entries = first.read_new().await?;
    assert_eq!(entries.len(), 1);
    assert!(first.apply_entry(&entries[0]).await?, "committed");
    drop(first); // crashed: never acknowledged
    assert_eq!(f.pending().await?, 1);

    let second = f.consumer("second").await?;
    // Redis's own idle clock decides when an entry is stuck; wait for it to pass.
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(second.reclaim().await?, 1, "reclaimed and acknowledged");
    assert_eq!(f.pending().await?, 0);
    assert_eq!(f.effects().await?, 1, "the effect was applied once");
    assert_eq!(
        f.handler.calls.load(Ordering::SeqCst),
        1,
        "the redelivery was a duplicate"
    );
    drop(f.db);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_after_n_attempts_and_the_consumer_goes_on()
-> anyhow::Result<()> {
    let f = ConsumerFixture::new().await?;
    let poison = event("test.poison", 1);
    f.publish(&[poison.clone(), event("test.fact", 2)]).await?;
    let consumer = f.consumer("only").await?;
    assert_eq!(
        consumer.consume_new().await?,
        1,
        "the good event goes through"
    );
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        consumer.reclaim().await?;
        if f.pending().await? == 0 {
            break;
        }
    }
    assert_eq!(f.pending().await?, 0, "nothing left pending");
    assert_eq!(
        f.handler.calls.load(Ordering::SeqCst),
        1 + 3,
        "one good call, three poison attempts"
    );
    let mut redis = redis::Client::open(f.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let dead: redis::streams::StreamRangeReply =
        redis.xrange_all(dead_letter_key(&f.stream, "test")).await?;
    assert_eq!(dead.ids.len(), 1);
    let inbox = Inbox::new(
        f.conn.clone(),
        Arc::new(pim_clock::SystemClock),
        "test",
        f.handler.clone(),
    );
    assert!(
        inbox.contains(&poison.id).await?,
        "dead-lettered ids count as handled"
    );
    assert_eq!(f.effects().await?, 1);
    drop(f.db);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_trimmed_only_below_what_every_group_acknowledged() -> anyhow::Result<()> {
    let f = ConsumerFixture::new().await?;
    f.publish(&[
        event("test.fact", 1),
        event("test.fact", 2),
        event("test.fact", 3),
    ])
    .await?;
    let consumer = f.consumer("only").await?;
    assert_eq!(consumer.consume_new().await?, 3);
    let publisher = RedisPublisher::connect(
        &f.redis_url,
        f.stream.clone(),
        vec!["test".into(), "late".into()],
    )
    .await?;
    let mut redis = redis::Client::open(f.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;

    // Group "late" does not exist yet: it has acknowledged nothing, so nothing goes.
    publisher.trim().await?;
    assert_eq!(redis.xlen::<_, usize>(&f.stream).await?, 3);

    // "late" joins from the start and reads all, acknowledging the first two only.
    let _: () = redis.xgroup_create(&f.stream, "late", "0").await?;
    let reply: redis::streams::StreamReadReply = redis
        .xread_options(
            &[&f.stream],
            &[">"],
            &redis::streams::StreamReadOptions::default().group("late", "l1"),
        )
        .await?;
    let ids: Vec<String> = reply
        .keys
        .iter()
        .flat_map(|k| k.ids.iter().map(|i| i.id.clone()))
        .collect();
    assert_eq!(ids.len(), 3);
    let _: i64 = redis.xack(&f.stream, "late", &ids[..2]).await?;
    publisher.trim().await?;
    let left: redis::streams::StreamRangeReply = redis.xrange_all(&f.stream).await?;
    assert_eq!(
        left.ids.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        ids[2..],
        "only the unacknowledged entry is kept"
    );
    drop(f.db);
    Ok(())
}
