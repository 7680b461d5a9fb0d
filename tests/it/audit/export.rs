//! An export of 100,000 records streams in bounded chunks with bounded memory, the CSV parses
//! with Python's standard CSV reader, and the independent verifier accepts it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use pim_cli::audit::record::{ChainedRecord, RecordContent};
use pim_config::ServiceName;
use pim_proto::audit::v1::{ExportFormat, ExportRecordsRequest};
use sea_orm::ConnectionTrait as _;

use super::{auditor, checkpoint, harness, public_key_hex, python_verifier, scratch_dir};

const RECORDS: i64 = 100_000;
const COLUMNS: &str = "sequence, occurred_at_ms, recorded_at_ms, event_id, event_type, producer, \
     producer_sequence, activity, category, actor_type, actor_id, target_type, subject, \
     target_principal_id, role_id, scope, result, result_reason, justification, ticket, \
     correlation_id, trace_id, payload_type, payload_json, prev_hash, hash";

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Appends `count` chained records after the current head, as if ingested, in batches.
async fn load(db: &sea_orm::DatabaseConnection, count: i64, now_ms: i64) -> anyhow::Result<()> {
    let head = db
        .query_one_raw(pim_db::stmt(
            db,
            "SELECT sequence, hash FROM audit_chain_head",
            [],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no head"))?;
    let first: i64 = head.try_get::<i64>("", "sequence")? + 1;
    let mut prev: String = head.try_get("", "hash")?;
    let mut sequence = first;
    while sequence < first + count {
        let mut rows = Vec::new();
        for _ in 0..1000.min(first + count - sequence) {
            let content = RecordContent {
                sequence,
                occurred_at_ms: now_ms - count + sequence,
                recorded_at_ms: now_ms - count + sequence,
                event_id: format!("bulk-{sequence}"),
                event_type: "assignment.schedule_created".into(),
                producer: "assignment".into(),
                producer_sequence: sequence,
                activity: "Add eligible member to role in PIM completed".into(),
                category: "role_management".into(),
                actor_type: "principal".into(),
                actor_id: format!("admin-{}", sequence % 7),
                target_type: "schedule".into(),
                subject: format!("schedule-{sequence}"),
                target_principal_id: format!("user-{}", sequence % 1000),
                role_id: crate::support::ROLE.into(),
                scope: "/administrativeUnits/au-1".into(),
                result: "success".into(),
                justification: format!("ticket, \"quoted\"\nline {sequence}"),
                payload_type: "type.googleapis.com/pim.assignment.v1.ScheduleCreated".into(),
                payload_json: format!("{{\"justification\":\"bulk {sequence}\"}}"),
                ..Default::default()
            };
            let hash = content
                .chain_hash(&prev)
                .ok_or_else(|| anyhow::anyhow!("bad prev hash"))?;
            let record = ChainedRecord {
                content,
                prev_hash: prev.clone(),
                hash: hash.clone(),
            };
            let c = &record.content;
            let texts: Vec<String> = [&c.event_id, &c.event_type, &c.producer]
                .iter()
                .map(|s| sql_text(s))
                .collect();
            let rest: Vec<String> = [
                &c.activity,
                &c.category,
                &c.actor_type,
                &c.actor_id,
                &c.target_type,
                &c.subject,
                &c.target_principal_id,
                &c.role_id,
                &c.scope,
                &c.result,
                &c.result_reason,
                &c.justification,
                &c.ticket,
                &c.correlation_id,
                &c.trace_id,
                &c.payload_type,
                &c.payload_json,
                &record.prev_hash,
                &record.hash,
            ]
            .iter()
            .map(|s| sql_text(s))
            .collect();
            rows.push(format!(
                "({}, {}, {}, {}, {}, {})",
                c.sequence,
                c.occurred_at_ms,
                c.recorded_at_ms,
                texts.join(", "),
                c.producer_sequence,
                rest.join(", ")
            ));
            prev = hash;
            sequence += 1;
        }
        db.execute_unprepared(&format!(
            "INSERT INTO audit_log ({COLUMNS}) VALUES {}",
            rows.join(", ")
        ))
        .await?;
    }
    db.execute_unprepared(&format!(
        "UPDATE audit_chain_head SET sequence = {}, hash = '{prev}' WHERE id = 1",
        sequence - 1
    ))
    .await?;
    Ok(())
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_100_000_records_streams_in_bounded_memory_and_verifies_offline()
-> anyhow::Result<()> {
    let h = harness().await?;
    let seeded = super::quiet(&h).await? as i64;
    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    load(h.service(ServiceName::Audit).db(), RECORDS, now).await?;
    checkpoint(&h).await?;
    let total = super::quiet(&h).await? as i64;
    assert!(total >= seeded + RECORDS);

    // Sample this process's memory (server and client both live here) while the export runs.
    let baseline = resident_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, running) = (peak.clone(), running.clone());
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                peak.fetch_max(resident_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let dir = scratch_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("big.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut stream = auditor(&h)
        .audit()
        .export_records(ExportRecordsRequest {
            format: ExportFormat::Csv.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let (mut messages, mut largest, mut bytes) = (0usize, 0usize, 0usize);
    let mut checkpoints = Vec::new();
    let mut last = None;
    while let Some(message) = stream.message().await? {
        use std::io::Write as _;
        messages += 1;
        largest = largest.max(message.data.len());
        bytes += message.data.len();
        file.write_all(&message.data)?;
        checkpoints.extend(message.checkpoints);
        last = Some((message.records, message.total_records));
    }
    std::io::Write::flush(&mut file)?;
    running.store(false, Ordering::Relaxed);
    sampler.await?;
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);

    assert_eq!(last, Some((total as u64, total as u64)));
    assert!(messages > 100, "{messages} messages: not streamed");
    assert!(largest <= 80 * 1024, "a chunk of {largest} bytes");
    assert!(
        growth < (bytes as u64) / 2,
        "memory grew by {growth} bytes for a {bytes}-byte export"
    );
    let lines: String = checkpoints
        .iter()
        .map(pim_cli::audit::format::checkpoint_line)
        .collect();
    std::fs::write(pim_cli::audit::checkpoints_path(&path), lines)?;

    // Python's csv module reads it, and the independent verifier accepts every record.
    let (ok, text) = python_verifier(&path, &public_key_hex(&h).await?, false)?;
    assert!(ok, "{text}");
    assert!(text.starts_with(&format!("OK: {total} records")), "{text}");
    let _ = std::fs::remove_dir_all(dir);
    h.stop().await;
    Ok(())
}
