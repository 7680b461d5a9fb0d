//! `pim bench`: throughput and p50/p99 latency of (1) the baseline, an empty unary RPC (a
//! health check), and then of a suite: (2) the event pipeline, a producer transaction committing
//! one event with `synchronous_commit` on, the relay, the Redis stream, and a consumer
//! transaction; or (3) the approval service (`approval`); or (4) the activation service
//! (`activation`); or (5) access reviews (`reviews`); or (6) the audit service (`audit`); or
//! (7) the notification service (`notification`). The baseline and the suite run in the same
//! process and the same run, so the noise of the machine hits both alike.

mod access;
mod activation;
mod alerts;
mod approval;
mod audit;
mod notification;
mod producer;
mod reviews;
mod tracing;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use pim_clock::{SharedClock, SystemClock};
use pim_config::ServiceName;
use pim_events::{
    ConsumerOptions, EventHandler, HandlerFuture, Inbox, NewEvent, Outbox, RedisConsumer,
    RedisPublisher, Relay, RelayOptions, stream_key,
};
use pim_proto::events::v1::Event;
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};
use tokio_util::sync::CancellationToken;

/// What `pim bench` measures after the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// The event pipeline: max throughput, and latency at a fixed rate.
    Pipeline,
    /// The approval service: Decide at a fixed rate, ListAwaitingMe among many open cases.
    Approval,
    /// The activation service: submit to access, sustained throughput, approve to access,
    /// lateness of the expiry event.
    Activation,
    /// Access reviews: starting an instance over many assignments, applying many denials.
    Reviews,
    /// The audit service: a query over a large log, export, verification, ingest, latency.
    Audit,
    /// The notification service: event to SMTP and webhook at a fixed rate, webhook fan-out.
    Notification,
    /// Security alerts: a full refresh over a large log, event to alert_raised under load.
    Alerts,
    /// The assignment service: CheckAccess over a large directory against the empty RPC, cold
    /// start, memory, and propagation to a second replica.
    Access,
    /// What tracing export costs: the activation suite with export off and on (not in `all`).
    Tracing,
    /// Every suite, one after another.
    All,
}

pub struct BenchOptions {
    pub suite: Suite,
    pub database_url: String,
    pub redis_url: String,
    pub events: usize,
    pub rate: u64,
    pub seconds: u64,
    /// Concurrent producer transactions in the throughput run.
    pub producers: usize,
    /// Consumers in the one consumer group.
    pub consumers: usize,
    /// Offered rate of the approval run's decisions, per second, for `seconds`.
    pub decide_rate: u64,
    /// Open cases seeded for the ListAwaitingMe run.
    pub cases: usize,
    /// How many of them await the measured approver.
    pub awaiting: usize,
    /// Offered rate of the activation run's submissions, per second, for `seconds`.
    pub activation_rate: u64,
    /// Activations of the sustained-throughput run.
    pub activations: usize,
    /// Submissions in flight in the sustained-throughput run.
    pub in_flight: usize,
    /// Approvals measured from Decide to access.
    pub approvals: usize,
    /// Assignments under the review whose instance start is measured.
    pub review_assignments: usize,
    /// Denials applied at the end of the second review.
    pub review_denials: usize,
    /// Records of the large audit log, loaded with COPY.
    pub audit_records: usize,
    /// Events of the audit ingest run.
    pub audit_events: usize,
    /// Offered rate of the notification latency run, events per second (for `seconds`).
    pub notification_rate: u64,
    /// Webhook subscriptions of the fan-out run.
    pub fanout_subscriptions: usize,
    /// Schedules of the access run's data set (users, groups and scopes scale with it).
    pub access_schedules: usize,
    /// Events of the fan-out run; each goes to every subscription.
    pub fanout_events: usize,
}

/// Latencies in microseconds, and how long the run took.
struct Sample {
    latencies: Vec<u64>,
    elapsed: Duration,
}

impl Sample {
    fn report(mut self, name: &str) {
        self.latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
            self.latencies.get(i).copied().unwrap_or_default() as f64 / 1000.0
        };
        println!(
            "{name:<44} {:>8} ops  {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
            self.latencies.len(),
            self.latencies.len() as f64 / self.elapsed.as_secs_f64(),
            at(0.5),
            at(0.99)
        );
    }
}

pub async fn run(options: BenchOptions) -> anyhow::Result<()> {
    if options.suite == Suite::Tracing {
        return tracing::run(&options).await;
    }
    let telemetry = tracing::child_telemetry()?;
    baseline(options.events)
        .await?
        .report("baseline: health check RPC (16 in flight)");
    if matches!(options.suite, Suite::Pipeline | Suite::All) {
        event_pipeline(&options).await?;
    }
    if matches!(options.suite, Suite::Approval | Suite::All) {
        approval::run(&options).await?;
    }
    if matches!(options.suite, Suite::Activation | Suite::All) {
        activation::run(&options).await?;
    }
    if matches!(options.suite, Suite::Reviews | Suite::All) {
        reviews::run(&options).await?;
    }
    if matches!(options.suite, Suite::Audit | Suite::All) {
        audit::run(&options).await?;
    }
    if matches!(options.suite, Suite::Notification | Suite::All) {
        notification::run(&options).await?;
    }
    if matches!(options.suite, Suite::Alerts | Suite::All) {
        alerts::run(&options).await?;
    }
    if matches!(options.suite, Suite::Access | Suite::All) {
        access::run(&options).await?;
    }
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    Ok(())
}

/// The pipeline on a fresh database, dropped afterwards.
async fn event_pipeline(options: &BenchOptions) -> anyhow::Result<()> {
    let db_name = format!("pim_bench_{}", uuid::Uuid::new_v4().simple());
    pim_db::ensure_postgres_database(&options.database_url, &db_name).await?;
    let url = pim_db::with_database(&options.database_url, &db_name);
    crate::migrate_service(ServiceName::Audit, &url).await?;
    let db = pim_db::connect(
        &url,
        pim_db::PoolSize {
            max: options.producers as u32 + 16,
            min: 4,
        },
    )
    .await?;
    db.execute_unprepared(
        "CREATE TABLE bench_effects (event_id TEXT PRIMARY KEY); SET synchronous_commit = on;",
    )
    .await?;
    let result = pipeline(&db, options).await;
    db.close().await?;
    let admin = sea_orm::Database::connect(&options.database_url).await?;
    admin
        .execute_unprepared(&format!(
            "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
        ))
        .await?;
    result
}

async fn baseline(calls: usize) -> anyhow::Result<Sample> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move { stop.cancelled().await },
            ),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(calls)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client = HealthClient::new(channel.clone());
        let latencies = latencies.clone();
        let n = calls / 16;
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                client.check(HealthCheckRequest::default()).await?;
                mine.push(t.elapsed().as_micros() as u64);
            }
            if let Ok(mut all) = latencies.lock() {
                all.extend(mine);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    cancel.cancel();
    let latencies =
        std::mem::take(&mut *latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok(Sample { latencies, elapsed })
}

/// Records commit-to-consumed latency inside the consumer's transaction.
struct LatencyRecorder {
    latencies: Mutex<Vec<u64>>,
}

impl EventHandler for LatencyRecorder {
    fn handle<'a>(&'a self, txn: &'a DatabaseTransaction, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            txn.execute_raw(pim_db::stmt(
                txn,
                "INSERT INTO bench_effects (event_id) VALUES ($1)",
                [event.id.clone().into()],
            ))
            .await?;
            let committed_us = event.correlation_id.parse::<i64>().unwrap_or_default();
            // Microseconds need the wall clock; the injectable clock is millisecond-exact by design.
            let now_us = chrono_now_us();
            if let Ok(mut all) = self.latencies.lock() {
                all.push((now_us - committed_us).max(0) as u64);
            }
            Ok(())
        })
    }
}

fn chrono_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

async fn produce_one(db: &DatabaseConnection, outbox: &Outbox) -> anyhow::Result<()> {
    let txn = db.begin().await?;
    // The correlation id carries the commit time, so the consumer can measure the whole path.
    let event = NewEvent::new("bench.event_recorded", "bench", prost_types_any())
        .correlated(chrono_now_us().to_string());
    outbox.enqueue(&txn, event).await?;
    txn.commit().await?;
    outbox.wake();
    Ok(())
}

fn prost_types_any() -> pim_proto::Any {
    pim_proto::Any {
        type_url: "type.googleapis.com/bench".into(),
        value: vec![0; 64],
    }
}

async fn pipeline(db: &DatabaseConnection, options: &BenchOptions) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(SystemClock);
    let prefix = format!("bench:{}:", uuid::Uuid::new_v4().simple());
    let stream = stream_key(&prefix, "bench");
    let outbox = Outbox::new("bench", clock.clone());
    let cancel = CancellationToken::new();
    let publisher =
        RedisPublisher::connect(&options.redis_url, stream.clone(), vec!["bench".into()]).await?;
    let relay = Relay::new(
        db.clone(),
        outbox.clone(),
        Arc::new(publisher),
        RelayOptions {
            poll: Duration::from_millis(5),
            ..RelayOptions::default()
        },
    );
    tokio::spawn(relay.run(cancel.clone()));
    let recorder = Arc::new(LatencyRecorder {
        latencies: Mutex::new(Vec::new()),
    });
    for i in 0..options.consumers.max(1) {
        let inbox = Inbox::new(db.clone(), clock.clone(), "bench", recorder.clone());
        let consumer = RedisConsumer::connect(
            &options.redis_url,
            stream.clone(),
            inbox,
            ConsumerOptions {
                group: "bench".into(),
                consumer: format!("bench-{i}"),
                batch: 50,
                block: Duration::from_millis(50),
                reclaim_idle: Duration::from_secs(30),
                max_attempts: 5,
            },
        )
        .await?;
        tokio::spawn(consumer.run(cancel.clone()));
    }

    // Throughput: producers commit as fast as they can, one event per transaction.
    let started = Instant::now();
    let mut producers = Vec::new();
    let producers_n = options.producers.max(1);
    for _ in 0..producers_n {
        let (db, outbox) = (db.clone(), outbox.clone());
        let n = options.events / producers_n;
        producers.push(tokio::spawn(async move {
            for _ in 0..n {
                produce_one(&db, &outbox).await?;
            }
            anyhow::Ok(())
        }));
    }
    for producer in producers {
        producer.await??;
    }
    let expected = options.events / producers_n * producers_n;
    let committed = started.elapsed();
    println!(
        "{:<44} {:>8} txns {:>9.0} txns/s",
        "  (producer commits alone)",
        expected,
        expected as f64 / committed.as_secs_f64()
    );
    wait_consumed(&recorder, expected).await?;
    let elapsed = started.elapsed();
    let latencies = std::mem::take(
        &mut *recorder
            .latencies
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );
    Sample { latencies, elapsed }.report(&format!(
        "pipeline: max throughput ({producers_n} producers)"
    ));

    // Latency at a fixed offered rate.
    let total = (options.rate * options.seconds) as usize;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / options.rate.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for _ in 0..total {
        ticker.tick().await;
        let (db, outbox) = (db.clone(), outbox.clone());
        tokio::spawn(async move { produce_one(&db, &outbox).await });
    }
    wait_consumed(&recorder, total).await?;
    let elapsed = started.elapsed();
    let latencies = std::mem::take(
        &mut *recorder
            .latencies
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );
    Sample { latencies, elapsed }.report(&format!(
        "pipeline: commit to consumed at {}/s",
        options.rate
    ));
    cancel.cancel();
    // Let the relay and the consumers see the cancellation before their stream goes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    delete_redis_keys(&options.redis_url, &prefix).await
}

/// Deletes every Redis key under `prefix`: what one run wrote.
async fn delete_redis_keys(url: &str, prefix: &str) -> anyhow::Result<()> {
    use redis::AsyncCommands as _;
    let mut redis = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = {
        let mut iter = redis.scan_match::<_, String>(format!("{prefix}*")).await?;
        let mut keys = Vec::new();
        while let Some(key) = iter.next_item().await {
            keys.push(key?);
        }
        keys
    };
    if !keys.is_empty() {
        let _: i64 = redis.del(keys).await?;
    }
    Ok(())
}

async fn wait_consumed(recorder: &LatencyRecorder, expected: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = recorder
            .latencies
            .lock()
            .map(|l| l.len())
            .unwrap_or_default();
        if seen >= expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {seen} of {expected} events consumed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
