//! The audit context's storage: appending to the chain, queries by filter and by range, and
//! checkpoints. Portable SQL for PostgreSQL and SQLite (`pim dev`).

use std::sync::Mutex;

use pim_db::stmt;
use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, QueryResult, Value};

use crate::record::{ChainedRecord, RecordContent};

/// The chain head this process wrote last: a guess at the head for the next append, which the
/// append's own statement checks. Stale after a rollback or another replica's write; then the
/// guess fails and the head is read.
static LAST_HEAD: Mutex<Option<(i64, String)>> = Mutex::new(None);

/// Rows per `INSERT`: 26 values each stays far inside both engines' limit on bound values.
const ROWS_PER_INSERT: usize = 500;

/// Appends `contents` to the chain, in order. The head row's lock (held to the end of the
/// transaction) is what makes this the one chain writer: concurrent consumers and replicas queue
/// on it, so the chain never forks and a rolled-back record leaves no hole.
///
/// On PostgreSQL the common case is one statement per [`ROWS_PER_INSERT`] records: they are
/// hashed against the head this process wrote last, and a compare-and-set of the head row
/// (`WHERE sequence = first - 1 AND hash = prev`) inserts them only if that is still the head. A
/// writer waiting on the row lock sees the committed head when it gets the lock, so the check is
/// exact; when it fails, nothing was written and the head is read under its lock instead.
pub async fn append_many(
    txn: &impl ConnectionTrait,
    contents: Vec<RecordContent>,
) -> anyhow::Result<Vec<ChainedRecord>> {
    let mut records = Vec::with_capacity(contents.len());
    let mut contents = contents.into_iter().peekable();
    while contents.peek().is_some() {
        let chunk: Vec<RecordContent> = contents.by_ref().take(ROWS_PER_INSERT).collect();
        let guess = LAST_HEAD.lock().ok().and_then(|head| head.clone());
        let written = match (txn.get_database_backend(), guess) {
            (DatabaseBackend::Postgres, Some(head)) => {
                append_after(txn, chunk.clone(), head).await?
            }
            _ => None,
        };
        let written = match written {
            Some(written) => written,
            None => append_at_head(txn, chunk).await?,
        };
        if let (Ok(mut head), Some(last)) = (LAST_HEAD.lock(), written.last()) {
            *head = Some((last.content.sequence, last.hash.clone()));
        }
        records.extend(written);
    }
    Ok(records)
}

/// `contents` chained after `head`, numbered from its sequence on. `None` when the head's hash
/// is malformed.
fn chain(contents: Vec<RecordContent>, head: (i64, String)) -> Option<Vec<ChainedRecord>> {
    let (mut sequence, mut prev_hash) = head;
    let mut records = Vec::with_capacity(contents.len());
    for mut content in contents {
        sequence += 1;
        content.sequence = sequence;
        let hash = content.chain_hash(&prev_hash)?;
        let record = ChainedRecord {
            content,
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        };
        records.push(record);
    }
    Some(records)
}

/// The records chained after `head`, written only if that is the chain's head, in one
/// statement; `None` (and nothing written) if it is not.
async fn append_after(
    txn: &impl ConnectionTrait,
    contents: Vec<RecordContent>,
    head: (i64, String),
) -> anyhow::Result<Option<Vec<ChainedRecord>>> {
    let (sequence, prev_hash) = head.clone();
    let Some(records) = chain(contents, head) else {
        return Ok(None);
    };
    let Some(last) = records.last() else {
        return Ok(Some(records));
    };
    let (rows, mut values) = rows_of(&records, 5);
    values.splice(
        0..0,
        [
            last.content.sequence.into(),
            last.hash.clone().into(),
            sequence.into(),
            prev_hash.into(),
        ],
    );
    let inserted = txn
        .execute_raw(stmt(
            txn,
            &format!(
                "WITH head AS (UPDATE audit_chain_head SET sequence = $1, hash = $2 \
                 WHERE id = 1 AND sequence = $3 AND hash = $4 RETURNING sequence) \
                 INSERT INTO audit_log ({RECORD_COLUMNS}) SELECT v.* FROM (VALUES {rows}) \
                 AS v ({RECORD_COLUMNS}) CROSS JOIN head"
            ),
            values,
        ))
        .await?
        .rows_affected();
    Ok((inserted == records.len() as u64).then_some(records))
}

/// Takes the next sequences from the head row (locking it), then writes the records and the
/// new head hash.
async fn append_at_head(
    txn: &impl ConnectionTrait,
    contents: Vec<RecordContent>,
) -> anyhow::Result<Vec<ChainedRecord>> {
    let n = contents.len() as i64;
    let head = txn
        .query_one_raw(stmt(
            txn,
            "UPDATE audit_chain_head SET sequence = sequence + $1 WHERE id = 1 RETURNING sequence, hash",
            [n.into()],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("audit_chain_head row missing"))?;
    let last: i64 = head.try_get("", "sequence")?;
    let prev_hash: String = head.try_get("", "hash")?;
    let records = chain(contents, (last - n, prev_hash))
        .ok_or_else(|| anyhow::anyhow!("audit_chain_head holds a malformed hash"))?;
    let Some(new_head) = records.last() else {
        return Ok(records);
    };
    let (rows, values) = rows_of(&records, 1);
    txn.execute_raw(stmt(
        txn,
        &format!("INSERT INTO audit_log ({RECORD_COLUMNS}) VALUES {rows}"),
        values,
    ))
    .await?;
    txn.execute_raw(stmt(
        txn,
        "UPDATE audit_chain_head SET hash = $1 WHERE id = 1",
        [new_head.hash.clone().into()],
    ))
    .await?;
    Ok(records)
}

/// `($first, …), (…)` row tuples for `records`, numbered from `first`, and their values.
fn rows_of(records: &[ChainedRecord], first: usize) -> (String, Vec<Value>) {
    let width = 26;
    let mut values = Vec::with_capacity(records.len() * width);
    let rows: Vec<String> = records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            values.extend(row_values(record));
            format!("({})", pim_db::placeholders(first + i * width, width))
        })
        .collect();
    (rows.join(", "), values)
}

/// The values of [`RECORD_COLUMNS`], in order: `prev_hash` is the 25th, `hash` the 26th.
fn row_values(record: &ChainedRecord) -> Vec<Value> {
    let c = &record.content;
    let mut values: Vec<Value> = vec![
        c.sequence.into(),
        c.occurred_at_ms.into(),
        c.recorded_at_ms.into(),
    ];
    values.extend([&c.event_id, &c.event_type, &c.producer].map(|s| Value::from(s.clone())));
    values.push(c.producer_sequence.into());
    values.extend(
        [
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
        .map(|s| Value::from(s.clone())),
    );
    values
}

/// The stored columns, in insertion order.
const RECORD_COLUMNS: &str = "sequence, occurred_at_ms, recorded_at_ms, event_id, event_type, producer, \
     producer_sequence, activity, category, actor_type, actor_id, target_type, subject, \
     target_principal_id, role_id, scope, result, result_reason, justification, ticket, \
     correlation_id, trace_id, payload_type, payload_json, prev_hash, hash";

pub fn record_from_row(row: &QueryResult) -> Result<ChainedRecord, DbErr> {
    let s = |column: &str| row.try_get::<String>("", column);
    Ok(ChainedRecord {
        content: RecordContent {
            sequence: row.try_get("", "sequence")?,
            occurred_at_ms: row.try_get("", "occurred_at_ms")?,
            recorded_at_ms: row.try_get("", "recorded_at_ms")?,
            event_id: s("event_id")?,
            event_type: s("event_type")?,
            producer: s("producer")?,
            producer_sequence: row.try_get("", "producer_sequence")?,
            activity: s("activity")?,
            category: s("category")?,
            actor_type: s("actor_type")?,
            actor_id: s("actor_id")?,
            target_type: s("target_type")?,
            subject: s("subject")?,
            target_principal_id: s("target_principal_id")?,
            role_id: s("role_id")?,
            scope: s("scope")?,
            result: s("result")?,
            result_reason: s("result_reason")?,
            justification: s("justification")?,
            ticket: s("ticket")?,
            correlation_id: s("correlation_id")?,
            trace_id: s("trace_id")?,
            payload_type: s("payload_type")?,
            payload_json: s("payload_json")?,
        },
        prev_hash: s("prev_hash")?,
        hash: s("hash")?,
    })
}

/// Typed filters; empty strings and `None` match everything.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub occurred_from_ms: Option<i64>,
    pub occurred_until_ms: Option<i64>,
    pub actor_id: String,
    pub target_principal_id: String,
    pub role_id: String,
    pub scope: String,
    pub activity: String,
    pub category: String,
    pub result: String,
    pub correlation_id: String,
    pub trace_id: String,
    /// Only records where this principal is the actor or the target (non-readers).
    pub visible_to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    NewestFirst,
    OldestFirst,
}

/// One page of records matching `filter`, after the keyset position `after` (a sequence).
pub async fn search(
    db: &impl ConnectionTrait,
    filter: &Filter,
    order: Order,
    after: Option<i64>,
    limit: u64,
) -> anyhow::Result<Vec<ChainedRecord>> {
    let mut clauses: Vec<String> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    let mut bind = |clauses: &mut Vec<String>, sql: &str, value: Value| {
        values.push(value);
        clauses.push(sql.replace('?', &format!("${}", values.len())));
    };
    if let Some(from) = filter.occurred_from_ms {
        bind(&mut clauses, "occurred_at_ms >= ?", from.into());
    }
    if let Some(until) = filter.occurred_until_ms {
        bind(&mut clauses, "occurred_at_ms < ?", until.into());
    }
    for (column, value) in [
        ("actor_id", &filter.actor_id),
        ("target_principal_id", &filter.target_principal_id),
        ("role_id", &filter.role_id),
        ("activity", &filter.activity),
        ("category", &filter.category),
        ("result", &filter.result),
        ("correlation_id", &filter.correlation_id),
        ("trace_id", &filter.trace_id),
    ] {
        if !value.is_empty() {
            bind(&mut clauses, &format!("{column} = ?"), value.clone().into());
        }
    }
    if !filter.scope.is_empty() {
        let prefix = format!("{}/", filter.scope.trim_end_matches('/'));
        bind(&mut clauses, "(scope = ?", filter.scope.clone().into());
        let escaped = prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        bind(
            &mut clauses,
            "scope LIKE ? ESCAPE '\\')",
            format!("{escaped}%").into(),
        );
        // The two halves belong together: `(scope = $a OR scope LIKE $b …)`.
        let like = clauses.pop().unwrap_or_default();
        let eq = clauses.pop().unwrap_or_default();
        clauses.push(format!("{eq} OR {like}"));
    }
    if let Some(me) = &filter.visible_to {
        bind(&mut clauses, "(actor_id = ?", me.clone().into());
        bind(&mut clauses, "target_principal_id = ?)", me.clone().into());
        let target = clauses.pop().unwrap_or_default();
        let actor = clauses.pop().unwrap_or_default();
        clauses.push(format!("{actor} OR {target}"));
    }
    if let Some(after) = after {
        let sql = match order {
            Order::NewestFirst => "sequence < ?",
            Order::OldestFirst => "sequence > ?",
        };
        bind(&mut clauses, sql, after.into());
    }
    let direction = match order {
        Order::NewestFirst => "DESC",
        Order::OldestFirst => "ASC",
    };
    let predicate = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM audit_log {predicate} ORDER BY sequence {direction} LIMIT ${}",
        values.len()
    );
    let rows = db.query_all_raw(stmt(db, &sql, values)).await?;
    Ok(rows.iter().map(record_from_row).collect::<Result<_, _>>()?)
}

pub async fn get(
    db: &impl ConnectionTrait,
    sequence: i64,
) -> anyhow::Result<Option<ChainedRecord>> {
    let row = db
        .query_one_raw(stmt(
            db,
            &format!("SELECT {RECORD_COLUMNS} FROM audit_log WHERE sequence = $1"),
            [sequence.into()],
        ))
        .await?;
    Ok(row.as_ref().map(record_from_row).transpose()?)
}

/// Records `from..=to` in sequence order, at most `limit`.
pub async fn range(
    db: &impl ConnectionTrait,
    from: i64,
    to: i64,
    limit: u64,
) -> anyhow::Result<Vec<ChainedRecord>> {
    let rows = db
        .query_all_raw(stmt(
            db,
            &format!(
                "SELECT {RECORD_COLUMNS} FROM audit_log WHERE sequence >= $1 AND sequence <= $2 \
                 ORDER BY sequence LIMIT $3"
            ),
            [
                from.into(),
                to.into(),
                i64::try_from(limit).unwrap_or(i64::MAX).into(),
            ],
        ))
        .await?;
    Ok(rows.iter().map(record_from_row).collect::<Result<_, _>>()?)
}

/// The first and last sequence kept, and the chain head's sequence (which counts purged and
/// missing records too). `None` when nothing was ever recorded.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub first: i64,
    pub last: i64,
    pub head: i64,
}

pub async fn bounds(db: &impl ConnectionTrait) -> anyhow::Result<Option<Bounds>> {
    let head: i64 = db
        .query_one_raw(stmt(
            db,
            "SELECT sequence FROM audit_chain_head WHERE id = 1",
            [],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("audit_chain_head row missing"))?
        .try_get("", "sequence")?;
    let row = db
        .query_one_raw(stmt(
            db,
            "SELECT MIN(sequence) AS first, MAX(sequence) AS last FROM audit_log",
            [],
        ))
        .await?;
    let (first, last) = match row {
        Some(row) => (
            row.try_get::<Option<i64>>("", "first")?,
            row.try_get::<Option<i64>>("", "last")?,
        ),
        None => (None, None),
    };
    Ok(match (first, last) {
        (Some(first), Some(last)) => Some(Bounds { first, last, head }),
        _ if head > 0 => Some(Bounds {
            first: head + 1,
            last: head,
            head,
        }),
        _ => None,
    })
}

/// The sequence range of records recorded in `[from_ms, until_ms)`.
pub async fn recorded_range(
    db: &impl ConnectionTrait,
    from_ms: Option<i64>,
    until_ms: Option<i64>,
) -> anyhow::Result<(Option<i64>, Option<i64>)> {
    let row = db
        .query_one_raw(stmt(
            db,
            "SELECT (SELECT MIN(sequence) FROM audit_log WHERE recorded_at_ms >= $1) AS first, \
             (SELECT MAX(sequence) FROM audit_log WHERE recorded_at_ms < $2) AS last",
            [
                from_ms.unwrap_or(i64::MIN).into(),
                until_ms.unwrap_or(i64::MAX).into(),
            ],
        ))
        .await?;
    Ok(match row {
        Some(row) => (row.try_get("", "first")?, row.try_get("", "last")?),
        None => (None, None),
    })
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub sequence: i64,
    pub hash: String,
    pub signed_at_ms: i64,
    pub key_id: String,
    pub signature: String,
}

impl StoredCheckpoint {
    pub fn to_proto(&self) -> pim_proto::audit::v1::Checkpoint {
        pim_proto::audit::v1::Checkpoint {
            sequence: u64::try_from(self.sequence).unwrap_or_default(),
            hash: self.hash.clone(),
            signed_at: Some(pim_proto::timestamp_from_millis(self.signed_at_ms)),
            key_id: self.key_id.clone(),
            signature: self.signature.clone(),
        }
    }
}

fn checkpoint_from_row(row: &QueryResult) -> Result<StoredCheckpoint, DbErr> {
    Ok(StoredCheckpoint {
        sequence: row.try_get("", "sequence")?,
        hash: row.try_get("", "hash")?,
        signed_at_ms: row.try_get("", "signed_at_ms")?,
        key_id: row.try_get("", "key_id")?,
        signature: row.try_get("", "signature")?,
    })
}

/// Checkpoints with `from <= sequence <= to`, ascending, at most `limit`.
pub async fn checkpoints(
    db: &impl ConnectionTrait,
    from: i64,
    to: i64,
    limit: u64,
) -> anyhow::Result<Vec<StoredCheckpoint>> {
    let rows = db
        .query_all_raw(stmt(
            db,
            "SELECT sequence, hash, signed_at_ms, key_id, signature FROM audit_checkpoints \
             WHERE sequence >= $1 AND sequence <= $2 ORDER BY sequence LIMIT $3",
            [
                from.into(),
                to.into(),
                i64::try_from(limit).unwrap_or(i64::MAX).into(),
            ],
        ))
        .await?;
    Ok(rows
        .iter()
        .map(checkpoint_from_row)
        .collect::<Result<_, _>>()?)
}

pub async fn last_checkpoint(
    db: &impl ConnectionTrait,
) -> anyhow::Result<Option<StoredCheckpoint>> {
    let row = db
        .query_one_raw(stmt(
            db,
            "SELECT sequence, hash, signed_at_ms, key_id, signature FROM audit_checkpoints \
             ORDER BY sequence DESC LIMIT 1",
            [],
        ))
        .await?;
    Ok(row.as_ref().map(checkpoint_from_row).transpose()?)
}

/// Inserts a checkpoint; `false` when one at that sequence exists (another replica was first).
pub async fn insert_checkpoint(
    txn: &impl ConnectionTrait,
    checkpoint: &StoredCheckpoint,
) -> anyhow::Result<bool> {
    let inserted = txn
        .execute_raw(stmt(
            txn,
            "INSERT INTO audit_checkpoints (sequence, hash, signed_at_ms, key_id, signature) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sequence) DO NOTHING",
            [
                checkpoint.sequence.into(),
                checkpoint.hash.clone().into(),
                checkpoint.signed_at_ms.into(),
                checkpoint.key_id.clone().into(),
                checkpoint.signature.clone().into(),
            ],
        ))
        .await?
        .rows_affected();
    Ok(inserted == 1)
}

/// Whether anything but checkpoint announcements was recorded after `sequence`, so a quiet log
/// does not sign a checkpoint of its own last checkpoint forever.
pub async fn has_news_after(db: &impl ConnectionTrait, sequence: i64) -> anyhow::Result<bool> {
    Ok(db
        .query_one_raw(stmt(
            db,
            "SELECT 1 AS news FROM audit_log WHERE sequence > $1 \
             AND event_type <> 'audit.checkpoint_signed' LIMIT 1",
            [sequence.into()],
        ))
        .await?
        .is_some())
}

/// The last sequence recorded before `cutoff_ms`.
pub async fn last_recorded_before(
    db: &impl ConnectionTrait,
    cutoff_ms: i64,
) -> anyhow::Result<Option<i64>> {
    Ok(db
        .query_one_raw(stmt(
            db,
            "SELECT MAX(sequence) AS cut FROM audit_log WHERE recorded_at_ms < $1",
            [cutoff_ms.into()],
        ))
        .await?
        .map(|row| row.try_get::<Option<i64>>("", "cut"))
        .transpose()?
        .flatten())
}

/// Deletes records up to `cut` through retention's own path; needs a checkpoint at `cut` in the
/// same transaction. Returns how many were deleted.
pub async fn purge(txn: &impl ConnectionTrait, cut: i64) -> anyhow::Result<u64> {
    match txn.get_database_backend() {
        DatabaseBackend::Sqlite => {
            // pim dev: no roles; the delete trigger lets a permitted cut through.
            txn.execute_raw(stmt(
                txn,
                "INSERT INTO audit_purge_permit (cut) VALUES ($1)",
                [cut.into()],
            ))
            .await?;
            let purged = txn
                .execute_raw(stmt(
                    txn,
                    "DELETE FROM audit_log WHERE sequence <= $1",
                    [cut.into()],
                ))
                .await?
                .rows_affected();
            txn.execute_raw(stmt(txn, "DELETE FROM audit_purge_permit", []))
                .await?;
            Ok(purged)
        }
        _ => {
            let purged: i64 = txn
                .query_one_raw(stmt(txn, "SELECT audit_purge($1) AS purged", [cut.into()]))
                .await?
                .ok_or_else(|| anyhow::anyhow!("audit_purge returned nothing"))?
                .try_get("", "purged")?;
            Ok(u64::try_from(purged).unwrap_or_default())
        }
    }
}
