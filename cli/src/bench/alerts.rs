//! `pim bench --suite alerts`: security alerts, with the assignment and audit services started
//! in-process on fresh PostgreSQL databases and Redis, as [`Pim`] starts them.
//!
//! 1. A full refresh (`RefreshAlerts`, over gRPC as an admin) over `audit_records` records
//!    written into the log with `COPY` before the services start: a mix of eligible schedules,
//!    activations and everyday records, as a busy tenant's log would hold.
//! 2. From a triggering event committed in a producer's outbox ([`BenchProducer`]) to the
//!    `audit.alert_raised` it causes committed in audit's outbox, while `rate` other events a
//!    second flow through the same consumer.
//!
//! Everything it creates is removed at the end, also after a failure.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use pim_clock::{Clock as _, SystemClock};
use pim_config::ServiceName;
use pim_events::NewEvent;
use pim_proto::{
    assignment::v1::{EnablementRule, PolicyRules, PolicyUpdated, RoleManagementPolicy},
    audit::v1::AlertRaised,
    events::v1::Event,
};
use prost::Message as _;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio_util::sync::CancellationToken;

use super::{BenchOptions, Sample, activation::Pim, producer::BenchProducer};

/// Triggering events a second during the latency run, among the background.
const TRIGGERS_PER_SECOND: u64 = 20;

pub(super) async fn run(options: &BenchOptions) -> anyhow::Result<()> {
    let mut pim = Pim::new(options);
    let result = async {
        let url = pim.database_url(ServiceName::Audit);
        let name = url
            .split('?')
            .next()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        pim_db::ensure_postgres_database(&options.database_url, &name).await?;
        crate::migrate_service(ServiceName::Audit, &url).await?;
        let records = options.audit_records as i64;
        load(&url, records).await?;
        pim.start_only(
            &[ServiceName::Assignment, ServiceName::Audit],
            &[("PIM_AUDIT_CHECKPOINT_INTERVAL_SECS", "31536000")],
        )
        .await?;
        super::audit::await_consumed(
            &pim,
            ServiceName::Audit,
            ServiceName::Assignment,
            Duration::from_secs(60),
        )
        .await?;
        refresh(&pim, records).await?;
        latency(&pim, options).await?.report(&format!(
            "alerts: committed to alert_raised, {}/s background",
            options.rate
        ));
        anyhow::Ok(())
    }
    .await;
    pim.remove().await?;
    result
}

/// The refresh `RefreshAlerts` runs, called on a connection of the bench's own beside the running
/// service: a refresh over a large log outlasts the gRPC deadline (`PIM_GRPC_TIMEOUT_MS`).
async fn refresh(pim: &Pim, records: i64) -> anyhow::Result<()> {
    let db = pim_db::connect(
        &pim.database_url(ServiceName::Audit),
        pim_db::PoolSize { max: 1, min: 1 },
    )
    .await?;
    let clock: pim_clock::SharedClock = Arc::new(SystemClock);
    let alerting = pim_audit::alerts::Alerting::new(
        pim_events::Outbox::new(ServiceName::Audit.as_str(), clock),
        &[],
    );
    let started = Instant::now();
    let txn = sea_orm::TransactionTrait::begin(&db).await?;
    let done =
        pim_audit::alerts::refresh::refresh(&txn, &alerting, SystemClock.now_millis()).await?;
    txn.commit().await?;
    let took = started.elapsed();
    db.close().await?;
    println!(
        "{:<44} {:>8} rows {:>9.2} s  ({} incidents raised; of {records} loaded)",
        "alerts: full refresh",
        done.records_scanned,
        took.as_secs_f64(),
        done.raised,
    );
    Ok(())
}

/// `records` records in `audit_log`, with the chain head after them. The refresh reads records,
/// not hashes, so the hashes are placeholders; the checkpoint signer is kept off.
async fn load(url: &str, records: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    let db = pim_db::connect(url, pim_db::PoolSize { max: 2, min: 1 }).await?;
    let now = SystemClock.now_millis();
    let columns = pim_audit::record::COLUMNS
        .iter()
        .map(|c| match *c {
            "occurred_at" => "occurred_at_ms",
            "recorded_at" => "recorded_at_ms",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(", ");
    let (sender, mut chunks) = tokio::sync::mpsc::channel::<String>(4);
    let generator = tokio::task::spawn_blocking(move || {
        let mut first = 1;
        while first <= records {
            let last = (first + 9_999).min(records);
            let mut rows = String::with_capacity(10_000 * 400);
            for sequence in first..=last {
                row(&mut rows, sequence, records, now);
            }
            if sender.blocking_send(rows).is_err() {
                break;
            }
            first = last + 1;
        }
    });
    let mut connection = db.get_postgres_connection_pool().acquire().await?;
    let mut copy = connection
        .copy_in_raw(&format!("COPY audit_log ({columns}) FROM STDIN"))
        .await?;
    while let Some(rows) = chunks.recv().await {
        copy.send(rows.into_bytes()).await?;
    }
    copy.finish().await?;
    drop(connection);
    generator.await?;
    db.execute_raw(pim_db::stmt(
        &db,
        "UPDATE audit_chain_head SET sequence = $1, hash = $2 WHERE id = 1",
        [records.into(), "0".repeat(64).into()],
    ))
    .await?;
    db.execute_unprepared("ANALYZE audit_log").await?;
    db.close().await?;
    println!(
        "{:<44} {:>8} rows {:>9.0} rows/s",
        "  (copied into audit_log)",
        records,
        records as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One record as a COPY text line. Of every 100: an eligible schedule for a privileged role, ten
/// activations from one of the schedules made so far, and 89 everyday records by people.
fn row(out: &mut String, sequence: i64, records: i64, now: i64) {
    const SECURITY_ADMINISTRATOR: &str = pim_client::roles::SECURITY_ADMINISTRATOR;
    // Spread over the last 100 days, oldest first.
    let at = now - 100 * 86_400_000 + (sequence * 100 * 86_400_000) / records.max(1);
    let block = sequence / 100;
    let principal = format!("user-{}", block % 10_000);
    let (event_type, payload, target) = match sequence % 100 {
        0 => (
            "assignment.schedule_created",
            format!(
                r#"{{"schedule":{{"id":"s-{block}","kind":"SCHEDULE_KIND_ELIGIBLE","principal_id":"{principal}","role_id":"{SECURITY_ADMINISTRATOR}","scope":"/","start_time":"{}","origin":"SCHEDULE_ORIGIN_ASSIGNED"}}}}"#,
                rfc3339(at)
            ),
            principal.clone(),
        ),
        n @ 1..=10 => {
            // Activations of an earlier schedule, so some eligibilities stay unused.
            let of = (block * 7 + n) % (block + 1);
            let who = format!("user-{}", of % 10_000);
            (
                "assignment.window_provisioned",
                format!(
                    r#"{{"window":{{"id":"w-{sequence}","request_id":"r-{sequence}","principal_id":"{who}","role_id":"{SECURITY_ADMINISTRATOR}","scope":"/","eligibility_schedule_id":"s-{of}","start_time":"{}","end_time":"{}"}}}}"#,
                    rfc3339(at),
                    rfc3339(at + 3_600_000)
                ),
                who,
            )
        }
        _ => (
            "activation.request_submitted",
            format!(r#"{{"request":{{"id":"r-{sequence}","principal_id":"{principal}"}}}}"#),
            principal.clone(),
        ),
    };
    let hash = "0".repeat(64);
    let _ = writeln!(
        out,
        "{sequence}\t{at}\t{at}\tbench-{sequence}\t{event_type}\tbench\t{sequence}\tbench\trole_management\tprincipal\t{target}\tschedule\t{sequence}\t{target}\t{SECURITY_ADMINISTRATOR}\t/\tsuccess\t\t\t\t\t\ttype.googleapis.com/bench\t{payload}\t{hash}\t{hash}"
    );
}

fn rfc3339(ms: i64) -> String {
    pim_audit::record::instant(ms)
}

async fn latency(pim: &Pim, options: &BenchOptions) -> anyhow::Result<Sample> {
    let producer = BenchProducer::start(
        &options.database_url,
        pim.redis_url(),
        ServiceName::Approval,
        pim.stream(ServiceName::Approval),
    )
    .await?;
    let result = measure(pim, options, &producer).await;
    producer.remove().await?;
    result
}

async fn measure(
    pim: &Pim,
    options: &BenchOptions,
    producer: &BenchProducer,
) -> anyhow::Result<Sample> {
    let audit = pim.reader(ServiceName::Audit)?.clone();
    let committed: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let cancel = CancellationToken::new();
    let poller = tokio::spawn(poll_raised(audit, seen.clone(), cancel.clone()));
    let total = (options.rate * options.seconds) as usize;
    let every = (options.rate / TRIGGERS_PER_SECOND).max(1) as usize;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / options.rate.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut commits = Vec::with_capacity(total);
    let mut triggers = 0;
    for i in 0..total {
        ticker.tick().await;
        let producer = producer.clone();
        let committed = committed.clone();
        if i % every == 0 {
            triggers += 1;
            commits.push(tokio::spawn(async move {
                let scope = format!("/bench/{i}");
                let at = producer.commit(no_mfa(&scope)).await?;
                if let Ok(mut all) = committed.lock() {
                    all.insert(scope, at);
                }
                anyhow::Ok(())
            }));
        } else {
            commits.push(tokio::spawn(async move {
                producer.commit(background(i)).await.map(|_| ())
            }));
        }
    }
    for commit in commits {
        commit.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let result = loop {
        // Only this run's triggers count: the outbox also holds what the refresh raised.
        let n = match (seen.lock(), committed.lock()) {
            (Ok(seen), Ok(committed)) => committed.keys().filter(|k| seen.contains_key(*k)).count(),
            _ => 0,
        };
        if n >= triggers {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!("only {n} of {triggers} alerts were raised"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let elapsed = started.elapsed();
    cancel.cancel();
    poller.await??;
    result?;
    let seen = std::mem::take(&mut *seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let committed = committed.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let latencies = seen
        .iter()
        .filter_map(|(scope, at)| committed.get(scope).map(|c| (at - c).max(0) as u64))
        .collect();
    Ok(Sample { latencies, elapsed })
}

/// A policy that drops MFA on activation of Global Administrator at `scope`: it raises
/// `NoMfaOnRoleActivationAlert`. It carries assignment's payload, as assignment writes it.
fn no_mfa(scope: &str) -> NewEvent {
    let payload = PolicyUpdated {
        policy: Some(RoleManagementPolicy {
            role_id: pim_client::roles::GLOBAL_ADMINISTRATOR.into(),
            scope: scope.into(),
            version: 1,
            rules: Some(PolicyRules {
                activation_enablement: Some(EnablementRule {
                    mfa_required: false,
                    justification_required: true,
                    ticket_required: false,
                }),
                ..Default::default()
            }),
            updated_by: "bench-admin".into(),
            updated_at: None,
        }),
    };
    NewEvent::new(
        "assignment.policy_updated",
        scope,
        pim_proto::pack(&payload),
    )
    .by("bench-admin")
}

/// An everyday event by a person: no facts, but its actor is looked up (break-glass or not).
fn background(i: usize) -> NewEvent {
    let payload = pim_proto::pack(&pim_proto::approval::v1::CaseChanged::default());
    NewEvent::new("approval.case_opened", format!("case-{i}"), payload)
        .by(&format!("user-{}", i % 500))
}

/// Reads audit's outbox every millisecond for new `audit.alert_raised` rows (a row is there only
/// once its transaction committed); notes when each incident's scope was first seen.
async fn poll_raised(
    audit: DatabaseConnection,
    seen: Arc<Mutex<HashMap<String, i64>>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut after = String::new();
    while !cancel.is_cancelled() {
        let rows = audit
            .query_all_raw(pim_db::stmt(
                &audit,
                "SELECT event_id, envelope FROM outbox WHERE event_type = 'audit.alert_raised' \
                 AND event_id > $1 ORDER BY event_id",
                [after.clone().into()],
            ))
            .await?;
        let now = super::chrono_now_us();
        for row in &rows {
            after = row.try_get("", "event_id")?;
            let envelope: Vec<u8> = row.try_get("", "envelope")?;
            let event = Event::decode(envelope.as_slice())?;
            let raised = AlertRaised::decode(event.payload.unwrap_or_default().value.as_slice())?;
            if let Ok(mut all) = seen.lock() {
                for incident in raised.incidents {
                    all.entry(incident.scope).or_insert(now);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}
