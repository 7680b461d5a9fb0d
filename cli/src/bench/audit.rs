//! `pim bench --suite audit`: the audit service and the assignment service (which it asks who
//! may read) started in-process, as [`Pim`] starts them, on fresh PostgreSQL databases with Redis
//! for their events. First a large log is loaded with `COPY` ([`dataset`]); then, over real gRPC
//! as an auditor uses it, and against real streams as the producers feed it:
//!
//! 1. one actor's records of one day (about 1,000), first page of 100, newest first, warm;
//! 2. an export of the newest 1,000,000 records to a CSV file through `pim audit export`'s own
//!    code, with the process's peak resident memory;
//! 3. `VerifyChain` over the same 1,000,000 records;
//! 4. ingest: events written to two producers' streams at once, as their relays would, and the
//!    rate at which the chain writer records them;
//! 5. from an event committed in a producer's outbox ([`BenchProducer`]) to its record being
//!    visible to a query, at a fixed offered rate.
//!
//! Everything it creates (databases, Redis keys, the export file) is removed at the end, also
//! after a failure.

mod dataset;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use pim_client::{Credentials, PimClient};
use pim_clock::{Clock as _, SystemClock};
use pim_config::ServiceName;
use pim_events::{NewEvent, Publisher as _, RedisPublisher};
use pim_proto::{
    activation::v1::{ActivationRequest, RequestChanged, RequestStatus, Ticket},
    approval::v1::{Case, CaseChanged, CaseStatus, CaseSummary},
    audit::v1::{RecordFilter, SearchRecordsRequest, VerifyChainRequest},
    events::v1::{Actor, ActorType, Event},
    notification::v1::{Delivery, DeliveryDeadLettered},
    timestamp_from_millis,
};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio_util::sync::CancellationToken;

use self::dataset::Dataset;
use super::{
    BenchOptions, Sample,
    activation::{ADMIN, Pim, count},
    producer::BenchProducer,
};

/// Queries before the measured ones, so caches and connections are warm.
const WARM_UP: usize = 50;
/// Distinct (actor, day) pairs the query run cycles through.
const QUERY_PAIRS: i64 = 20;
const PAGE: i32 = 100;
/// Records exported and verified (or all, when fewer were loaded).
const EXPORT_RECORDS: i64 = 1_000_000;
/// How long the bench waits for one call.
const PATIENCE: Duration = Duration::from_secs(600);
/// Events per pipelined `XADD` in the ingest run.
const PUBLISH_BATCH: usize = 1_000;

pub(super) async fn run(options: &BenchOptions) -> anyhow::Result<()> {
    let mut pim = Pim::new(options);
    let result = async {
        let dataset = Dataset::new(options.audit_records as i64, SystemClock.now_millis());
        let url = pim.database_url(ServiceName::Audit);
        pim_db::ensure_postgres_database(&options.database_url, &database_of(&url)).await?;
        crate::migrate_service(ServiceName::Audit, &url).await?;
        let rate = dataset::load(&url, dataset).await?;
        println!(
            "{:<44} {:>8} rows {:>9.0} rows/s",
            "  (loaded, indexed and analyzed)", dataset.records, rate
        );
        // The checkpoint signer verifies everything since its last checkpoint before it signs;
        // over a freshly loaded log that is all of it, so it is kept out of the measured runs.
        pim.start_only(
            &[ServiceName::Assignment, ServiceName::Audit],
            &[
                ("PIM_AUDIT_CHECKPOINT_INTERVAL_SECS", "31536000"),
                ("PIM_GRPC_TIMEOUT_MS", "600000"),
            ],
        )
        .await?;
        await_consumed(
            &pim,
            ServiceName::Audit,
            ServiceName::Assignment,
            Duration::from_secs(60),
        )
        .await?;

        query(&pim, &dataset, options.seconds)
            .await?
            .report(&format!(
                "audit: one actor's day, page of {PAGE}, of {}",
                dataset.records
            ));
        let exported = EXPORT_RECORDS.min(dataset.records);
        export(&pim, &dataset, exported).await?;
        verify(&pim, &dataset, exported).await?;
        ingest(&pim, options.audit_events).await?;
        latency(&pim, options).await?.report(&format!(
            "audit: committed to queryable at {}/s",
            options.rate
        ));
        anyhow::Ok(())
    }
    .await;
    pim.remove().await?;
    result
}

/// The database name at the end of a URL.
fn database_of(url: &str) -> String {
    let path = url.split('?').next().unwrap_or_default();
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Waits until `consumer` has handled every event `producer` has relayed so far.
pub(super) async fn await_consumed(
    pim: &Pim,
    consumer: ServiceName,
    producer: ServiceName,
    within: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let produced = count(
            pim.reader(producer)?,
            "SELECT COALESCE(MAX(sequence), 0) AS n FROM outbox",
            [],
        )
        .await?;
        let consumed = count(
            pim.reader(consumer)?,
            "SELECT COUNT(*) AS n FROM inbox WHERE producer = $1",
            [producer.as_str().into()],
        )
        .await?;
        if consumed >= produced {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < within,
            "{consumer} handled {consumed} of {produced} {producer} events within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The query: one actor, one day, first page, newest first, as a Global Administrator.
async fn query(pim: &Pim, dataset: &Dataset, seconds: u64) -> anyhow::Result<Sample> {
    let reader = pim.client(ServiceName::Audit, ADMIN)?;
    let day = dataset::DAYS / 2;
    let request = |n: i64| {
        let start = dataset.day_start_ms(day - n % 7);
        SearchRecordsRequest {
            filter: Some(RecordFilter {
                actor_id: dataset.actor(n * 13),
                start_time: Some(timestamp_from_millis(start)),
                end_time: Some(timestamp_from_millis(start + Dataset::day_ms())),
                ..Default::default()
            }),
            page_size: PAGE,
            ..Default::default()
        }
    };
    for n in 0..WARM_UP as i64 {
        let page = reader
            .audit()
            .search_records(request(n % QUERY_PAIRS))
            .await?
            .into_inner();
        anyhow::ensure!(
            page.records.len() == PAGE as usize,
            "the first page holds {} records, not {PAGE}",
            page.records.len()
        );
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let call = Instant::now();
        reader
            .audit()
            .search_records(request(n % QUERY_PAIRS))
            .await?;
        latencies.push(call.elapsed().as_micros() as u64);
        n += 1;
    }
    Ok(Sample {
        latencies,
        elapsed: started.elapsed(),
    })
}

/// The newest `n` records through `pim audit export`'s code, to a CSV file, timed; with the
/// bench process's resident memory (services and client together) sampled every 10 ms.
async fn export(pim: &Pim, dataset: &Dataset, n: i64) -> anyhow::Result<()> {
    let client = pim.client(ServiceName::Audit, ADMIN)?;
    let first = dataset.records - n + 1;
    let file = std::env::temp_dir().join(format!("pim-bench-{}.csv", uuid::Uuid::new_v4()));
    let before = resident_kib().unwrap_or_default();
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(kib) = resident_kib() {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let started = Instant::now();
    let summary = crate::audit::export(
        &client,
        crate::audit::FileFormat::Csv,
        Some(timestamp_from_millis(dataset.recorded_at_ms(first))),
        Some(timestamp_from_millis(
            dataset.recorded_at_ms(dataset.records) + 1,
        )),
        &file,
        false,
    )
    .await;
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let bytes = std::fs::metadata(&file)
        .map(|m| m.len())
        .unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(crate::audit::checkpoints_path(&file));
    let summary = summary?;
    anyhow::ensure!(
        summary.records == n as u64,
        "the export holds {} records, not {n}",
        summary.records
    );
    println!(
        "{:<44} {:>8} recs {:>9.0} recs/s  {:>7.2} s  {:.0} MiB file  RSS {:.0} MiB before, peak {:.0} MiB",
        format!("audit: export CSV of {n}"),
        n,
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        bytes as f64 / 1_048_576.0,
        before as f64 / 1024.0,
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
    );
    Ok(())
}

/// This process's resident set, in KiB, from `/proc/self/status`.
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `VerifyChain` over the newest `n` records, timed. The call may take longer than the
/// client's and server's usual 10 s, so that a miss is measured rather than cut off.
async fn verify(pim: &Pim, dataset: &Dataset, n: i64) -> anyhow::Result<()> {
    let channel = pim_client::channel(&pim.url(ServiceName::Audit)?, PATIENCE, None)?;
    let client = PimClient::new(channel, Credentials::Token(pim.token(ADMIN)?));
    let first = dataset.records - n + 1;
    let started = Instant::now();
    let outcome = client
        .audit()
        .verify_chain(VerifyChainRequest {
            from_sequence: first as u64,
            to_sequence: dataset.records as u64,
        })
        .await?
        .into_inner();
    let elapsed = started.elapsed();
    anyhow::ensure!(
        outcome.ok && outcome.records_checked == n as u64,
        "VerifyChain: ok {}, {} records checked: {}",
        outcome.ok,
        outcome.records_checked,
        outcome.message
    );
    println!(
        "{:<44} {:>8} recs {:>9.0} recs/s  {:>7.2} s",
        format!("audit: VerifyChain of {n}"),
        n,
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// `total` events written to the activation and approval streams as fast as Redis takes them
/// (as two relays would after an outage), then the time until the last is recorded.
async fn ingest(pim: &Pim, total: usize) -> anyhow::Result<()> {
    let audit = pim.reader(ServiceName::Audit)?;
    let head_before = head(audit).await?;
    let producers = [ServiceName::Activation, ServiceName::Approval];
    let mut publishers = Vec::new();
    for producer in producers {
        publishers.push(
            RedisPublisher::connect(pim.redis_url(), pim.stream(producer), Vec::new()).await?,
        );
    }
    let now = SystemClock.now_millis();
    let events: Vec<Event> = (0..total)
        .map(|i| {
            let producer = producers[i % producers.len()];
            incoming_event(producer, (i / producers.len()) as u64 + 1, i, now)
        })
        .collect();
    let started = Instant::now();
    for batch in events.chunks(PUBLISH_BATCH) {
        for (p, publisher) in publishers.iter().enumerate() {
            let mine: Vec<Event> = batch
                .iter()
                .filter(|e| e.producer == producers[p].as_str())
                .cloned()
                .collect();
            publisher.publish(&mine).await?;
        }
    }
    let published = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while head(audit).await? < head_before + total as i64 {
        anyhow::ensure!(Instant::now() < deadline, "ingest did not finish in 10 min");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "{:<44} {:>8} evts {:>9.0} evts/s  (published in {:.2} s)",
        "audit: ingest from 2 streams",
        total,
        total as f64 / elapsed.as_secs_f64(),
        published.as_secs_f64()
    );
    Ok(())
}

async fn head(audit: &DatabaseConnection) -> anyhow::Result<i64> {
    count(
        audit,
        "SELECT COALESCE(MAX(sequence), 0) AS n FROM audit_log",
        [],
    )
    .await
}

/// An event as `producer`'s relay publishes it: `activation.request_granted` or
/// `approval.case_decided`, with the payload a real one carries.
fn incoming_event(producer: ServiceName, sequence: u64, i: usize, now_ms: i64) -> Event {
    let principal = format!("bench-user-{}", i % 10_000);
    let (event_type, payload) = match producer {
        ServiceName::Activation => (
            "activation.request_granted",
            pim_proto::pack(&RequestChanged {
                request: Some(ActivationRequest {
                    id: uuid::Uuid::now_v7().to_string(),
                    request_id: format!("bench-{i}"),
                    principal_id: principal.clone(),
                    role_id: pim_client::roles::SECURITY_ADMINISTRATOR.to_owned(),
                    scope: format!("/administrativeUnits/au-{}", i % 50),
                    status: RequestStatus::Provisioned.into(),
                    justification: format!("Incident INC{i:07}: on-call change"),
                    ticket: Some(Ticket {
                        system: "ServiceNow".into(),
                        number: format!("CHG{i:08}"),
                    }),
                    start_time: Some(timestamp_from_millis(now_ms)),
                    end_time: Some(timestamp_from_millis(now_ms + 3_600_000)),
                    ..Default::default()
                }),
            }),
        ),
        _ => (
            "approval.case_decided",
            pim_proto::pack(&CaseChanged {
                case: Some(Case {
                    id: uuid::Uuid::now_v7().to_string(),
                    request_id: format!("bench-{i}"),
                    status: CaseStatus::Approved.into(),
                    summary: Some(CaseSummary {
                        requestor_id: principal.clone(),
                        role_id: pim_client::roles::SECURITY_ADMINISTRATOR.to_owned(),
                        scope: "/".into(),
                        justification: format!("Incident INC{i:07}: on-call change"),
                        ..Default::default()
                    }),
                    decided_by: "bench-approver".into(),
                    ..Default::default()
                }),
                stage: 0,
            }),
        ),
    };
    Event {
        id: uuid::Uuid::now_v7().to_string(),
        r#type: event_type.into(),
        producer: producer.as_str().into(),
        sequence,
        occurred_at: Some(timestamp_from_millis(now_ms)),
        subject: format!("bench-{i}"),
        actor: Some(Actor {
            r#type: ActorType::Principal.into(),
            id: principal,
        }),
        correlation_id: uuid::Uuid::now_v7().to_string(),
        traceparent: String::new(),
        tracestate: String::new(),
        payload: Some(payload),
        published_at: Some(timestamp_from_millis(now_ms)),
    }
}

/// One event committed per tick by the bench's producer (as `notification`, whose real service
/// is not running); a poller reads new records every millisecond, as a query would see them.
async fn latency(pim: &Pim, options: &BenchOptions) -> anyhow::Result<Sample> {
    let producer = BenchProducer::start(
        &options.database_url,
        pim.redis_url(),
        ServiceName::Notification,
        pim.stream(ServiceName::Notification),
    )
    .await?;
    let result = measure_latency(pim, options, &producer).await;
    producer.remove().await?;
    result
}

async fn measure_latency(
    pim: &Pim,
    options: &BenchOptions,
    producer: &BenchProducer,
) -> anyhow::Result<Sample> {
    let audit = pim.reader(ServiceName::Audit)?.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let cancel = CancellationToken::new();
    let poller = {
        let (seen, cancel) = (seen.clone(), cancel.clone());
        let after = head(&audit).await?;
        tokio::spawn(poll_records(audit, after, seen, cancel))
    };
    let total = (options.rate * options.seconds) as usize;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / options.rate.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut commits = Vec::with_capacity(total);
    for _ in 0..total {
        ticker.tick().await;
        let producer = producer.clone();
        commits.push(tokio::spawn(
            async move { producer.commit(dead_letter()).await },
        ));
    }
    for commit in commits {
        commit.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let result = loop {
        let n = seen.lock().map(|s| s.len()).unwrap_or_default();
        if n >= total {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "only {n} of {total} events became queryable"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let elapsed = started.elapsed();
    cancel.cancel();
    poller.await??;
    result?;
    let latencies = std::mem::take(&mut *seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok(Sample { latencies, elapsed })
}

/// A `notification.delivery_dead_lettered` event, as the notification service's worker
/// writes one.
fn dead_letter() -> NewEvent {
    let delivery = uuid::Uuid::now_v7().to_string();
    let payload = pim_proto::pack(&DeliveryDeadLettered {
        delivery: Some(Delivery {
            id: delivery.clone(),
            event_type: "activation.request_granted".into(),
            recipient: "soc@example.test".into(),
            last_error: "the receiver answered HTTP 503".into(),
            ..Default::default()
        }),
    });
    NewEvent::new("notification.delivery_dead_lettered", delivery, payload)
        .by(&ServiceName::Notification.subject())
}

/// Reads records after `after` every millisecond; for each, the time from the commit its
/// correlation id names to now.
async fn poll_records(
    audit: DatabaseConnection,
    mut after: i64,
    seen: Arc<Mutex<Vec<u64>>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    while !cancel.is_cancelled() {
        let rows = audit
            .query_all_raw(pim_db::stmt(
                &audit,
                "SELECT sequence, correlation_id FROM audit_log WHERE sequence > $1 \
                 ORDER BY sequence",
                [after.into()],
            ))
            .await?;
        let now = super::chrono_now_us();
        let mut fresh = Vec::with_capacity(rows.len());
        for row in &rows {
            after = row.try_get("", "sequence")?;
            let committed: String = row.try_get("", "correlation_id")?;
            if let Ok(committed) = committed.parse::<i64>() {
                fresh.push((now - committed).max(0) as u64);
            }
        }
        if let Ok(mut all) = seen.lock() {
            all.extend(fresh);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}
