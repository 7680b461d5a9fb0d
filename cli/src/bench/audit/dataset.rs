//! The large audit log of `pim bench --suite audit`: `records` chained records over
//! [`DAYS`] days, written straight into the audit database with `COPY` before the service starts
//! (as a restored database would be), with hashes computed exactly as the chain writer computes
//! them, so `VerifyChain` and an export's offline check hold. Actors are spread so that one
//! actor has about [`PER_ACTOR_DAY`] records a day, whatever `records` is.

use std::time::Instant;

use pim_audit::record::{GENESIS_HASH, RecordContent};
use sea_orm::{ConnectionTrait, DatabaseConnection};

/// The log covers this many days, ending before today (UTC).
pub(super) const DAYS: i64 = 100;
/// Records of one actor on one day, as the issue's query assumes.
const PER_ACTOR_DAY: i64 = 1_000;
const DAY_MS: i64 = 86_400_000;
/// Rows per `COPY` chunk sent to the server.
const CHUNK: i64 = 10_000;

/// What was loaded: enough to name any record's time and actor again.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dataset {
    pub records: i64,
    pub actors: i64,
    pub base_ms: i64,
    pub spacing_ms: i64,
}

impl Dataset {
    pub(super) fn new(records: i64, now_ms: i64) -> Self {
        let records = records.max(DAYS);
        let today = now_ms - now_ms.rem_euclid(DAY_MS);
        Self {
            records,
            actors: (records / DAYS / PER_ACTOR_DAY).max(1),
            base_ms: today - DAYS * DAY_MS,
            spacing_ms: (DAYS * DAY_MS / records).max(1),
        }
    }

    pub(super) fn occurred_at_ms(&self, sequence: i64) -> i64 {
        self.base_ms + (sequence - 1) * self.spacing_ms
    }

    /// Recorded a little after it occurred, and so in sequence order as the chain writer does.
    pub(super) fn recorded_at_ms(&self, sequence: i64) -> i64 {
        self.occurred_at_ms(sequence) + 40
    }

    pub(super) fn actor(&self, n: i64) -> String {
        format!("bench-actor-{}", n.rem_euclid(self.actors))
    }

    /// The start of day `day` (0-based) of the log.
    pub(super) fn day_start_ms(&self, day: i64) -> i64 {
        self.base_ms + day * DAY_MS
    }

    pub(super) const fn day_ms() -> i64 {
        DAY_MS
    }

    fn content(&self, sequence: i64) -> RecordContent {
        // Four kinds of event, as the producers write them, in turn.
        let (event_type, producer, activity, category, target_type) = match sequence % 4 {
            0 => (
                "activation.request_submitted",
                "activation",
                "Add member to role requested (PIM activation)",
                "role_management",
                "request",
            ),
            1 => (
                "activation.request_granted",
                "activation",
                "Add member to role request approved (PIM activation)",
                "role_management",
                "request",
            ),
            2 => (
                "assignment.schedule_created",
                "assignment",
                "Add eligible member to role in PIM completed",
                "role_management",
                "schedule",
            ),
            _ => (
                "approval.case_decided",
                "approval",
                "Approval decision recorded in PIM",
                "approval",
                "case",
            ),
        };
        let occurred = self.occurred_at_ms(sequence);
        let target = format!("bench-user-{}", (sequence * 7_919) % 10_000);
        let role = format!("bench-role-{}", sequence % 5);
        let scope = format!("/administrativeUnits/au-{}", sequence % 50);
        let justification = format!("Incident INC{:07}: on-call change", sequence % 1_000_000);
        let subject = uuid_at(occurred, sequence ^ 0x5a5a).to_string();
        RecordContent {
            sequence,
            occurred_at_ms: occurred,
            recorded_at_ms: self.recorded_at_ms(sequence),
            event_id: uuid_at(occurred, sequence).to_string(),
            event_type: event_type.to_owned(),
            producer: producer.to_owned(),
            producer_sequence: sequence / 4 + 1,
            activity: activity.to_owned(),
            category: category.to_owned(),
            actor_type: "principal".to_owned(),
            actor_id: self.actor(sequence),
            target_type: target_type.to_owned(),
            payload_json: format!(
                "{{\"request\":{{\"id\":\"{subject}\",\"principalId\":\"{target}\",\
                 \"roleId\":\"{role}\",\"scope\":\"{scope}\",\"status\":\"REQUEST_STATUS_PROVISIONED\",\
                 \"justification\":\"{justification}\",\"ticket\":{{\"system\":\"ServiceNow\",\
                 \"number\":\"CHG{sequence:08}\"}},\"startTime\":\"{}\"}}}}",
                pim_audit::record::instant(occurred)
            ),
            subject,
            target_principal_id: target,
            role_id: role,
            scope,
            result: "success".to_owned(),
            result_reason: String::new(),
            justification,
            ticket: format!("ServiceNow CHG{sequence:08}"),
            correlation_id: format!("{:032x}", hash64(sequence as u64, 1)),
            trace_id: format!(
                "{:016x}{:016x}",
                hash64(sequence as u64, 2),
                hash64(sequence as u64, 3)
            ),
            payload_type: format!("type.googleapis.com/pim.{producer}.v1.Changed"),
        }
    }
}

/// A UUID v7 of the given instant, unique per `n`: event ids are v7, so time-ordered.
fn uuid_at(millis: i64, n: i64) -> uuid::Uuid {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        (millis / 1000) as u64,
        ((millis % 1000) * 1_000_000) as u32,
    );
    let mut bytes = *uuid::Uuid::new_v7(ts).as_bytes();
    // Everything after the timestamp is random in a v7: replace it all, so an id (and the
    // record's hash over it) is the same in every run.
    let tail = hash64(n as u64, 5);
    bytes[6] = 0x70 | ((tail >> 8) as u8 & 0x0f);
    bytes[7] = tail as u8;
    bytes[8..16].copy_from_slice(&(hash64(n as u64, 4) | (1 << 63)).to_be_bytes());
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes)
}

/// A cheap, fixed mix of two numbers (splitmix64), for ids that look random but repeat per run.
fn hash64(x: u64, salt: u64) -> u64 {
    let mut z = x
        .wrapping_add(salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One field of `COPY … FROM STDIN` text format.
fn copy_field(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Rows `first..first + n` as `COPY` text, and the hash of the last one.
fn chunk(dataset: &Dataset, first: i64, n: i64, mut prev: String) -> (String, String) {
    let mut out = String::with_capacity(n as usize * 1_100);
    for sequence in first..first + n {
        let content = dataset.content(sequence);
        let hash = content.chain_hash(&prev).unwrap_or_default();
        for (i, value) in content.fields().iter().enumerate() {
            if i > 0 {
                out.push('\t');
            }
            // Timestamps are stored as milliseconds, not as the hashed text.
            match i {
                1 => out.push_str(&content.occurred_at_ms.to_string()),
                2 => out.push_str(&content.recorded_at_ms.to_string()),
                _ => copy_field(&mut out, value),
            }
        }
        out.push('\t');
        out.push_str(&prev);
        out.push('\t');
        out.push_str(&hash);
        out.push('\n');
        prev = hash;
    }
    (out, prev)
}

/// Loads `dataset` into the (migrated, empty) audit database at `url`: secondary indexes are
/// dropped, the rows copied in, the indexes built again from their own definitions, the chain
/// head set to the last record, and the table analyzed. Returns rows per second.
pub(super) async fn load(url: &str, dataset: Dataset) -> anyhow::Result<f64> {
    let started = Instant::now();
    let db = pim_db::connect(url, pim_db::PoolSize { max: 2, min: 1 }).await?;
    let indexes = secondary_indexes(&db).await?;
    for (name, _) in &indexes {
        db.execute_unprepared(&format!("DROP INDEX {name}")).await?;
    }
    // Generating and hashing runs on a thread of its own while the server takes the rows.
    let (sender, mut chunks) = tokio::sync::mpsc::channel::<String>(4);
    let generator = tokio::task::spawn_blocking(move || {
        let mut prev = GENESIS_HASH.to_owned();
        let mut first = 1;
        while first <= dataset.records {
            let n = CHUNK.min(dataset.records - first + 1);
            let (rows, last) = chunk(&dataset, first, n, prev);
            prev = last;
            if sender.blocking_send(rows).is_err() {
                break;
            }
            first += n;
        }
        prev
    });
    let columns = pim_audit::record::COLUMNS
        .iter()
        .map(|c| match *c {
            "occurred_at" => "occurred_at_ms",
            "recorded_at" => "recorded_at_ms",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut connection = db.get_postgres_connection_pool().acquire().await?;
    let mut copy = connection
        .copy_in_raw(&format!("COPY audit_log ({columns}) FROM STDIN"))
        .await?;
    while let Some(rows) = chunks.recv().await {
        copy.send(rows.into_bytes()).await?;
    }
    copy.finish().await?;
    drop(connection);
    let head = generator.await?;
    println!(
        "{:<44} {:>8} rows {:>9.0} rows/s",
        "  (copied into audit_log)",
        dataset.records,
        dataset.records as f64 / started.elapsed().as_secs_f64()
    );
    db.execute_unprepared("SET maintenance_work_mem = '256MB'")
        .await?;
    for (_, definition) in &indexes {
        db.execute_unprepared(definition).await?;
    }
    db.execute_raw(pim_db::stmt(
        &db,
        "UPDATE audit_chain_head SET sequence = $1, hash = $2 WHERE id = 1",
        [dataset.records.into(), head.into()],
    ))
    .await?;
    db.execute_unprepared("ANALYZE audit_log").await?;
    db.close().await?;
    Ok(dataset.records as f64 / started.elapsed().as_secs_f64())
}

/// The indexes of `audit_log` that back no constraint, with their definitions.
async fn secondary_indexes(db: &DatabaseConnection) -> anyhow::Result<Vec<(String, String)>> {
    let rows = db
        .query_all_raw(pim_db::stmt(
            db,
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'audit_log' \
             AND indexname NOT IN (SELECT conname FROM pg_constraint \
                                   WHERE conrelid = 'audit_log'::regclass)",
            [],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<String>("", "indexname")?,
                row.try_get::<String>("", "indexdef")?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_actor_has_about_a_thousand_records_a_day() {
        let dataset = Dataset::new(10_000_000, 1_700_000_000_000);
        assert_eq!(dataset.actors, 100);
        let per_day = Dataset::day_ms() / dataset.spacing_ms;
        assert_eq!(per_day / dataset.actors, 1_000);
    }

    #[test]
    fn copied_rows_chain_like_the_writer() {
        let dataset = Dataset::new(1_000, 1_700_000_000_000);
        let (rows, last) = chunk(&dataset, 1, 3, GENESIS_HASH.to_owned());
        let mut prev = GENESIS_HASH.to_owned();
        for sequence in 1..=3 {
            prev = dataset.content(sequence).chain_hash(&prev).unwrap();
        }
        assert_eq!(last, prev);
        assert_eq!(rows.lines().count(), 3);
        assert_eq!(rows.lines().next().unwrap().split('\t').count(), 26);
    }
}
