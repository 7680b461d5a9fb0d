//! A refresh: the projection rebuilt from every stored audit record, in sequence order, through
//! the same fact extraction as the consumer; then every alert evaluated. Incidents that still hold
//! keep their ids; the answer equals continuous evaluation's. Records purged under retention are
//! gone, and so are the facts only they carried.

use pim_db::stmt;
use sea_orm::ConnectionTrait;

use super::{
    engine::{self, Alerting, Targets},
    facts::{FACT_TYPES, activity_of, facts_of},
    projection::Fold,
    view::Folded,
};
use crate::record::RecordContent;

/// Records read per query.
const PAGE: i64 = 20_000;

#[derive(Debug, Clone, Copy, Default)]
pub struct Refreshed {
    pub records_scanned: u64,
    pub raised: u32,
    pub resolved: u32,
}

/// Runs inside `txn`, which holds the alert lock (see [`engine::lock`]).
pub async fn refresh(
    txn: &impl ConnectionTrait,
    alerting: &Alerting,
    now: i64,
) -> anyhow::Result<Refreshed> {
    engine::lock(txn).await?;
    let types = FACT_TYPES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    // Only the payloads that carry facts are read: the rest would be parsed for nothing.
    let sql = format!(
        "SELECT sequence, event_type, producer, actor_type, actor_id, occurred_at_ms, \
         CASE WHEN event_type IN ({types}) THEN payload_json ELSE '' END AS payload_json \
         FROM audit_log WHERE sequence > $1 ORDER BY sequence LIMIT $2"
    );
    let mut fold = Fold::default();
    let mut after = 0i64;
    let mut scanned = 0u64;
    loop {
        let rows = txn
            .query_all_raw(stmt(txn, &sql, [after.into(), PAGE.into()]))
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("", "sequence")?;
        for row in &rows {
            let record = RecordContent {
                sequence: row.try_get("", "sequence")?,
                event_type: row.try_get("", "event_type")?,
                producer: row.try_get("", "producer")?,
                actor_type: row.try_get("", "actor_type")?,
                actor_id: row.try_get("", "actor_id")?,
                occurred_at_ms: row.try_get("", "occurred_at_ms")?,
                payload_json: row.try_get("", "payload_json")?,
                ..RecordContent::default()
            };
            // The same order as `engine::observe_many`: the actor is judged before the facts apply.
            if let Some(actor) = activity_of(&record)
                && fold.is_break_glass(actor)
            {
                fold.record_use(record.sequence, actor, record.occurred_at_ms);
            }
            for fact in facts_of(&record) {
                fold.apply(fact);
            }
        }
        scanned += rows.len() as u64;
        if (rows.len() as i64) < PAGE {
            break;
        }
    }
    fold.write(txn).await?;
    txn.execute_raw(stmt(txn, "DELETE FROM alert_due", []))
        .await?;
    // Evaluated from the fold in memory: the tables now hold the same, and reading them back
    // one key at a time would cost a round trip per question.
    let view = Folded::new(fold, txn).await?;
    let changes = engine::evaluate(txn, &view, alerting, Targets::everything(), now).await?;
    txn.execute_raw(stmt(
        txn,
        "UPDATE alert_state SET scanned_at_ms = $1, records_scanned = $2 WHERE id = 1",
        [
            now.into(),
            i64::try_from(scanned).unwrap_or(i64::MAX).into(),
        ],
    ))
    .await?;
    Ok(Refreshed {
        records_scanned: scanned,
        raised: changes.values().map(|c| c.raised.len() as u32).sum(),
        resolved: changes.values().map(|c| c.resolved.len() as u32).sum(),
    })
}
