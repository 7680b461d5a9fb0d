//! The approval database. A transition reads the case through its transaction, plans the lines
//! to append, and appends them at the next sequence numbers. A racing transition that appended
//! first makes this one fail on `case_log`'s primary key; it then reads again and plans again,
//! so the rules are applied to what was committed, never to a stale read.

use pim_db::{is_unique_violation, placeholders, stmt};
use pim_events::{NewEvent, Outbox};
use pim_proto::{
    approval::v1::{CaseChanged, CaseKind, CaseSummary},
    assignment::v1::ApprovalRule,
};
use prost::Message as _;
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, QueryResult,
    TransactionTrait, Value,
};
use tracing::Instrument as _;

use crate::domain::{Action, ApproverRow, CaseRecord, Entry, Plan, Refusal};

/// How often a transition re-reads after losing a race before giving up.
const ATTEMPTS: usize = 64;

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

/// The outcome of a planned transition.
pub enum Applied {
    Done(Box<CaseRecord>),
    Refused(Refusal),
    Missing,
}

/// A due timer: escalate or time out one stage of one case.
pub struct DueTimer {
    pub case_id: String,
    pub stage: u32,
    pub kind: String,
}

/// Filters of a listing; empty strings and kind 0 match everything.
#[derive(Default)]
pub struct Filter {
    pub kind: i32,
    pub role_id: String,
    pub requestor_id: String,
    pub request_id: String,
    /// `pending`, `case_approved`, … as in the log; empty for any.
    pub status: String,
    pub after: String,
    pub limit: i64,
}

impl Store {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn begin(&self) -> anyhow::Result<DatabaseTransaction> {
        Ok(self.db.begin().await?)
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<CaseRecord>> {
        Ok(load_many(&self.db, &[id.to_owned()]).await?.pop())
    }

    pub async fn find_by_request(&self, request_id: &str) -> anyhow::Result<Option<CaseRecord>> {
        let row = self
            .db
            .query_one_raw(stmt(
                &self.db,
                "SELECT id FROM cases WHERE request_id = $1",
                [request_id.into()],
            ))
            .await?;
        match row {
            Some(row) => self.get(&row.try_get::<String>("", "id")?).await,
            None => Ok(None),
        }
    }

    /// Records a new case with its approvers and its first line, and announces it. If a racing
    /// call opened the case for the same request first, that case is returned.
    pub async fn open(&self, outbox: &Outbox, case: &CaseRecord) -> anyhow::Result<CaseRecord> {
        let txn = self.db.begin().await?;
        let result = async {
            txn.execute_raw(stmt(
                &txn,
                "INSERT INTO cases (id, request_id, kind, requestor_id, role_id, scope, policy_version, opened_at_ms, summary, rule, \
                 traceparent, tracestate) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                [
                    case.id.clone().into(),
                    case.request_id.clone().into(),
                    (case.kind as i32).into(),
                    case.summary.requestor_id.clone().into(),
                    case.summary.role_id.clone().into(),
                    case.summary.scope.clone().into(),
                    case.policy_version.into(),
                    case.opened_at_ms.into(),
                    case.summary.encode_to_vec().into(),
                    case.rule.encode_to_vec().into(),
                    case.trace.traceparent.clone().into(),
                    case.trace.tracestate.clone().into(),
                ],
            ))
            .await?;
            let opening = CaseRecord {
                approvers: Vec::new(),
                log: Vec::new(),
                ..case.clone()
            };
            let plan = Plan {
                entries: case.log.clone(),
                new_approvers: case.approvers.clone(),
                events: vec![("approval.case_opened", 0)],
            };
            write(&txn, outbox, &opening, &plan, "").await
        }
        .await;
        match result {
            Ok(opened) => {
                txn.commit().await?;
                Ok(opened)
            }
            Err(e) if is_unique_violation(&e) => {
                txn.rollback().await?;
                self.find_by_request(&case.request_id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the racing case for the request vanished"))
            }
            Err(e) => Err(e),
        }
    }

    /// Plans a transition on the committed state of a case and appends it, re-planning when a
    /// racing transition appended first.
    pub async fn apply(
        &self,
        outbox: &Outbox,
        case_id: &str,
        actor: &str,
        planner: impl Fn(&CaseRecord) -> Result<Plan, Refusal>,
    ) -> anyhow::Result<Applied> {
        for _ in 0..ATTEMPTS {
            let txn = self.db.begin().await?;
            let Some(case) = load_many(&txn, &[case_id.to_owned()]).await?.pop() else {
                return Ok(Applied::Missing);
            };
            let plan = match planner(&case) {
                Ok(plan) => plan,
                Err(refusal) => return Ok(Applied::Refused(refusal)),
            };
            match write(&txn, outbox, &case, &plan, actor).await {
                Ok(after) => {
                    txn.commit().await?;
                    return Ok(Applied::Done(Box::new(after)));
                }
                Err(e) if is_unique_violation(&e) => txn.rollback().await?,
                Err(e) => return Err(e),
            }
        }
        anyhow::bail!("case {case_id} stayed contended for {ATTEMPTS} attempts")
    }

    /// The earliest due timer nobody else holds, locked by `txn` until it commits.
    pub async fn next_due_timer(
        &self,
        txn: &DatabaseTransaction,
        now_ms: i64,
    ) -> anyhow::Result<Option<DueTimer>> {
        // Replicas skip each other's claimed rows; SQLite has a single writer anyway.
        let lock = match txn.get_database_backend() {
            DatabaseBackend::Postgres => " FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let row = txn
            .query_one_raw(stmt(
                txn,
                &format!(
                    "SELECT case_id, stage, kind FROM case_timers WHERE due_ms <= $1 \
                     ORDER BY due_ms LIMIT 1{lock}"
                ),
                [now_ms.into()],
            ))
            .await?;
        row.map(|row| {
            Ok(DueTimer {
                case_id: row.try_get("", "case_id")?,
                stage: row.try_get::<i32>("", "stage")? as u32,
                kind: row.try_get("", "kind")?,
            })
        })
        .transpose()
    }

    pub async fn load_in(
        &self,
        txn: &DatabaseTransaction,
        case_id: &str,
    ) -> anyhow::Result<Option<CaseRecord>> {
        Ok(load_many(txn, &[case_id.to_owned()]).await?.pop())
    }

    /// Appends `plan` inside a timer's transaction.
    pub async fn write_in(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        case: &CaseRecord,
        plan: &Plan,
    ) -> anyhow::Result<CaseRecord> {
        write(txn, outbox, case, plan, "").await
    }

    pub async fn remove_timer(
        &self,
        txn: &DatabaseTransaction,
        timer: &DueTimer,
    ) -> anyhow::Result<()> {
        txn.execute_raw(stmt(
            txn,
            "DELETE FROM case_timers WHERE case_id = $1 AND stage = $2 AND kind = $3",
            [
                timer.case_id.clone().into(),
                (timer.stage as i32).into(),
                timer.kind.clone().into(),
            ],
        ))
        .await?;
        Ok(())
    }

    /// Open cases whose current stage awaits `principal`, oldest first.
    pub async fn awaiting(
        &self,
        principal: &str,
        filter: &Filter,
    ) -> anyhow::Result<Vec<CaseRecord>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT a.case_id AS id FROM awaiting a JOIN cases c ON c.id = a.case_id \
                 WHERE a.principal_id = $1 AND a.case_id > $2 AND ($3 = 0 OR c.kind = $3) \
                 AND ($4 = '' OR c.role_id = $4) AND ($5 = '' OR c.requestor_id = $5) \
                 ORDER BY a.case_id LIMIT $6",
                [
                    principal.into(),
                    filter.after.clone().into(),
                    filter.kind.into(),
                    filter.role_id.clone().into(),
                    filter.requestor_id.clone().into(),
                    filter.limit.into(),
                ],
            ))
            .await?;
        load_many(&self.db, &ids(&rows)?).await
    }

    /// Every case matching `filter`, oldest first.
    pub async fn list(&self, filter: &Filter) -> anyhow::Result<Vec<CaseRecord>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT c.id FROM cases c WHERE c.id > $1 \
                 AND ($2 = '' OR c.requestor_id = $2) AND ($3 = '' OR c.request_id = $3) \
                 AND ($4 = 0 OR c.kind = $4) AND ($5 = '' OR c.role_id = $5) \
                 AND ($6 = '' OR COALESCE((SELECT l.action FROM case_log l WHERE l.case_id = c.id \
                      AND l.action IN ('case_approved', 'case_denied', 'timed_out', 'canceled')), 'pending') = $6) \
                 ORDER BY c.id LIMIT $7",
                [
                    filter.after.clone().into(),
                    filter.requestor_id.clone().into(),
                    filter.request_id.clone().into(),
                    filter.kind.into(),
                    filter.role_id.clone().into(),
                    filter.status.clone().into(),
                    filter.limit.into(),
                ],
            ))
            .await?;
        load_many(&self.db, &ids(&rows)?).await
    }
}

fn ids(rows: &[QueryResult]) -> anyhow::Result<Vec<String>> {
    rows.iter()
        .map(|r| Ok(r.try_get::<String>("", "id")?))
        .collect()
}

/// The cases `ids` names, in that order, each with its approvers and history: three queries
/// whatever the page size.
async fn load_many(conn: &impl ConnectionTrait, ids: &[String]) -> anyhow::Result<Vec<CaseRecord>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = placeholders(1, ids.len());
    let values = || ids.iter().cloned().map(Value::from).collect::<Vec<_>>();
    let cases = conn
        .query_all_raw(stmt(
            conn,
            &format!("SELECT * FROM cases WHERE id IN ({list})"),
            values(),
        ))
        .await?;
    let approvers = conn
        .query_all_raw(stmt(
            conn,
            &format!("SELECT * FROM case_approvers WHERE case_id IN ({list}) ORDER BY stage, escalation, principal_id, via_group_id"),
            values(),
        ))
        .await?;
    let log = conn
        .query_all_raw(stmt(
            conn,
            &format!("SELECT * FROM case_log WHERE case_id IN ({list}) ORDER BY seq"),
            values(),
        ))
        .await?;
    let mut records = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(row) = cases
            .iter()
            .find(|r| r.try_get::<String>("", "id").is_ok_and(|v| &v == id))
        else {
            continue;
        };
        let of_case = |r: &&QueryResult| r.try_get::<String>("", "case_id").is_ok_and(|v| &v == id);
        records.push(CaseRecord {
            id: id.clone(),
            request_id: row.try_get("", "request_id")?,
            kind: CaseKind::try_from(row.try_get::<i32>("", "kind")?).unwrap_or_default(),
            policy_version: row.try_get("", "policy_version")?,
            opened_at_ms: row.try_get("", "opened_at_ms")?,
            summary: CaseSummary::decode(row.try_get::<Vec<u8>>("", "summary")?.as_slice())?,
            rule: ApprovalRule::decode(row.try_get::<Vec<u8>>("", "rule")?.as_slice())?,
            trace: pim_telemetry::TraceContext {
                traceparent: row.try_get("", "traceparent")?,
                tracestate: row.try_get("", "tracestate")?,
            },
            approvers: approvers
                .iter()
                .filter(of_case)
                .map(|r| {
                    Ok(ApproverRow {
                        stage: r.try_get::<i32>("", "stage")? as u32,
                        principal_id: r.try_get("", "principal_id")?,
                        via_group_id: r.try_get("", "via_group_id")?,
                        escalation: r.try_get("", "escalation")?,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            log: log
                .iter()
                .filter(of_case)
                .map(|r| {
                    let action: String = r.try_get("", "action")?;
                    Ok(Entry {
                        seq: r.try_get::<i32>("", "seq")? as u32,
                        at_ms: r.try_get("", "at_ms")?,
                        actor_id: r.try_get("", "actor_id")?,
                        action: Action::parse(&action)
                            .ok_or_else(|| anyhow::anyhow!("unknown case action {action}"))?,
                        stage: r.try_get::<i32>("", "stage")? as u32,
                        justification: r.try_get("", "justification")?,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        });
    }
    Ok(records)
}

/// Appends `plan` to `case`, brings the work queues in line with the result and writes the
/// plan's events, all in `txn`. Returns the case as it now stands.
async fn write(
    txn: &DatabaseTransaction,
    outbox: &Outbox,
    case: &CaseRecord,
    plan: &Plan,
    actor: &str,
) -> anyhow::Result<CaseRecord> {
    // The log first: a racing writer fails here, before it touches anything else.
    for e in &plan.entries {
        txn.execute_raw(stmt(
            txn,
            "INSERT INTO case_log (case_id, seq, at_ms, actor_id, action, stage, justification) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                case.id.clone().into(),
                (e.seq as i32).into(),
                e.at_ms.into(),
                e.actor_id.clone().into(),
                e.action.as_str().into(),
                (e.stage as i32).into(),
                e.justification.clone().into(),
            ],
        ))
        .await?;
    }
    for a in &plan.new_approvers {
        txn.execute_raw(stmt(
            txn,
            "INSERT INTO case_approvers (case_id, stage, principal_id, via_group_id, escalation) \
             VALUES ($1, $2, $3, $4, $5)",
            [
                case.id.clone().into(),
                (a.stage as i32).into(),
                a.principal_id.clone().into(),
                a.via_group_id.clone().into(),
                a.escalation.into(),
            ],
        ))
        .await?;
    }
    let after = case.after(plan);
    sync_queues(txn, &after).await?;
    for (event_type, stage) in &plan.events {
        let payload = CaseChanged {
            case: Some(after.to_proto()),
            stage: *stage,
        };
        if *event_type == "approval.case_decided" {
            record_time_to_decision(&payload);
        }
        let mut event = NewEvent::new(*event_type, after.id.clone(), pim_proto::pack(&payload))
            .correlated(after.request_id.clone());
        if !actor.is_empty() {
            event = event.by(actor);
        }
        // The event continues the trace of the request it decides, linked to this call's.
        let span = pim_telemetry::resume(&after.trace, event_type);
        outbox.enqueue(txn, event).instrument(span).await?;
    }
    Ok(after)
}

/// `pim.approval.time_to_decision`: from the case's opening to its decision, by outcome.
fn record_time_to_decision(changed: &CaseChanged) {
    let Some(case) = &changed.case else { return };
    let (Some(opened), Some(decided)) = (&case.opened_at, &case.decided_at) else {
        return;
    };
    let millis =
        pim_proto::millis_from_timestamp(decided) - pim_proto::millis_from_timestamp(opened);
    let outcome = crate::domain::status_word(case.status());
    pim_telemetry::metrics::APPROVAL_TIME_TO_DECISION.record(
        millis.max(0) as f64 / 1000.0,
        &[pim_telemetry::metrics::KeyValue::new(
            "pim.approval.outcome",
            outcome,
        )],
    );
}

/// The approvers' inbox holds exactly who the current stage awaits; the current stage's
/// timers exist. Timers of past stages are left to fire and find nothing to do, so a decision
/// never waits on a timer a replica holds.
async fn sync_queues(txn: &DatabaseTransaction, case: &CaseRecord) -> anyhow::Result<()> {
    txn.execute_raw(stmt(
        txn,
        "DELETE FROM awaiting WHERE case_id = $1",
        [case.id.clone().into()],
    ))
    .await?;
    if !case.is_open() {
        return Ok(());
    }
    let stage = case.current_stage();
    for person in case.awaiting() {
        txn.execute_raw(stmt(
            txn,
            "INSERT INTO awaiting (principal_id, case_id, stage) VALUES ($1, $2, $3)",
            [person.into(), case.id.clone().into(), (stage as i32).into()],
        ))
        .await?;
    }
    let mut timers = Vec::new();
    if let Some(deadline) = case.deadline(stage) {
        timers.push(("timeout", deadline));
    }
    if let Some(due) = case
        .escalation_due(stage)
        .filter(|_| !case.escalated(stage))
    {
        timers.push(("escalate", due));
    }
    for (kind, due) in timers {
        txn.execute_raw(stmt(
            txn,
            "INSERT INTO case_timers (case_id, stage, kind, due_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            [
                case.id.clone().into(),
                (stage as i32).into(),
                kind.into(),
                due.into(),
            ],
        ))
        .await?;
    }
    Ok(())
}
