//! Activation requests. Every change of status is a compare-and-set on the status it expects,
//! with a history line and its event, in one transaction: of two racing changes one wins and
//! the other finds the request moved on.

use pim_db::{is_unique_violation, stmt};
use pim_events::{NewEvent, Outbox};
use pim_proto::{
    activation::v1::{ActivationRequest, RequestChanged, RequestEntry, RequestStatus, Ticket},
    assignment::v1::ApprovalRule,
    timestamp_from_millis,
};
use prost::Message as _;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, QueryResult, TransactionTrait, Value,
};

use crate::model::{action_from, action_text, event_type, status_from, status_text};

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

/// What `create` found.
pub enum Created {
    New(ActivationRequest),
    /// The caller sent this request id before: the request it created.
    Repeated(ActivationRequest),
    /// Another request for the same role and scope is live or pending.
    Live(ActivationRequest),
}

/// A change of status and what comes with it; `None` keeps a column as it is.
#[derive(Default)]
pub struct Change {
    pub status: RequestStatus,
    pub reason: String,
    pub window_id: Option<String>,
    pub case_id: Option<String>,
    pub schedule_id: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// Only if no approval case is recorded yet: a case is recorded once.
    pub first_case: bool,
}

impl Change {
    pub fn to(status: RequestStatus) -> Self {
        Self {
            status,
            ..Default::default()
        }
    }

    pub fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }
}

/// Filters of a listing; empty values match everything.
#[derive(Default)]
pub struct Filter {
    pub principal_id: String,
    pub status: String,
    pub role_id: String,
    pub created_after_ms: i64,
    pub created_before_ms: i64,
    pub after: String,
    pub limit: i64,
}

fn millis(ts: Option<&pim_proto::Timestamp>) -> i64 {
    ts.map(pim_proto::millis_from_timestamp).unwrap_or_default()
}

fn list_of(statuses: &[RequestStatus]) -> String {
    statuses
        .iter()
        .map(|s| format!("'{}'", status_text(*s)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn begin(&self) -> anyhow::Result<DatabaseTransaction> {
        Ok(self.db.begin().await?)
    }

    /// Records a new request, its first history line and `activation.request_submitted`.
    pub async fn create(
        &self,
        outbox: &Outbox,
        request: &ActivationRequest,
        approval_rule: Option<&ApprovalRule>,
    ) -> anyhow::Result<Created> {
        let txn = self.db.begin().await?;
        match insert(&txn, outbox, request, approval_rule).await {
            Ok(()) => {
                txn.commit().await?;
                Ok(Created::New(request.clone()))
            }
            Err(e) if is_unique_violation(&e) => {
                txn.rollback().await?;
                if let Some(repeated) = self
                    .find(&request.principal_id, &request.request_id)
                    .await?
                {
                    return Ok(Created::Repeated(repeated));
                }
                match self
                    .find_live(&request.principal_id, &request.role_id, &request.scope)
                    .await?
                {
                    Some(live) => Ok(Created::Live(live)),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Moves a request from one of `from` to `change.status` in its own transaction.
    pub async fn transition(
        &self,
        outbox: &Outbox,
        id: &str,
        from: &[RequestStatus],
        change: Change,
        actor: &str,
    ) -> anyhow::Result<Option<ActivationRequest>> {
        let txn = self.db.begin().await?;
        let moved = transition_in(&txn, outbox, id, from, change, actor).await?;
        txn.commit().await?;
        Ok(moved)
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<ActivationRequest>> {
        let Some(mut found) = one(
            &self.db,
            "SELECT * FROM requests WHERE id = $1",
            [id.into()],
        )
        .await?
        else {
            return Ok(None);
        };
        found.history = history(&self.db, id).await?;
        Ok(Some(found))
    }

    /// The request as `conn` (a consumer's transaction, say) sees it, without its history.
    pub async fn get_in(
        &self,
        conn: &impl ConnectionTrait,
        id: &str,
    ) -> anyhow::Result<Option<ActivationRequest>> {
        one(conn, "SELECT * FROM requests WHERE id = $1", [id.into()]).await
    }

    pub async fn find(
        &self,
        principal: &str,
        client_request_id: &str,
    ) -> anyhow::Result<Option<ActivationRequest>> {
        one(
            &self.db,
            "SELECT * FROM requests WHERE principal_id = $1 AND client_request_id = $2",
            [principal.into(), client_request_id.into()],
        )
        .await
    }

    /// The request holding, or on its way to, a window for this role and scope.
    pub async fn find_live(
        &self,
        principal: &str,
        role: &str,
        scope: &str,
    ) -> anyhow::Result<Option<ActivationRequest>> {
        one(
            &self.db,
            &format!(
                "SELECT * FROM requests WHERE principal_id = $1 AND role_id = $2 AND scope = $3 \
                 AND action = 'self_activate' AND status IN ({})",
                list_of(&crate::model::LIVE)
            ),
            [principal.into(), role.into(), scope.into()],
        )
        .await
    }

    /// The approval rule snapshot the request was checked against.
    pub async fn approval_rule(&self, id: &str) -> anyhow::Result<ApprovalRule> {
        let row = self
            .db
            .query_one_raw(stmt(
                &self.db,
                "SELECT approval_rule FROM requests WHERE id = $1",
                [id.into()],
            ))
            .await?;
        let bytes = row
            .map(|r| r.try_get::<Option<Vec<u8>>>("", "approval_rule"))
            .transpose()?
            .flatten()
            .unwrap_or_default();
        Ok(ApprovalRule::decode(bytes.as_slice())?)
    }

    /// Requests left between two states since before `cutoff_ms`: no case recorded yet, or
    /// approved but not provisioned. `only_approved` limits it to approved ones.
    pub async fn unfinished(
        &self,
        cutoff_ms: i64,
        only_approved: bool,
    ) -> anyhow::Result<Vec<ActivationRequest>> {
        // One statement per case, each a plain condition on status and time, so that the
        // (status, updated_at_ms) index answers it instead of a scan of every request.
        let sql = if only_approved {
            "SELECT * FROM requests WHERE status = 'pending_provisioning' AND case_id <> '' \
             AND updated_at_ms <= $1 ORDER BY updated_at_ms LIMIT 100"
        } else {
            "SELECT * FROM requests WHERE ((status = 'pending_approval' AND case_id = '') \
             OR status = 'pending_provisioning') AND updated_at_ms <= $1 \
             ORDER BY updated_at_ms LIMIT 100"
        };
        let rows = self
            .db
            .query_all_raw(stmt(&self.db, sql, [cutoff_ms.into()]))
            .await?;
        rows.iter().map(request).collect()
    }

    /// The trace a request was submitted in.
    pub async fn trace_of(&self, id: &str) -> anyhow::Result<pim_telemetry::TraceContext> {
        let row = self
            .db
            .query_one_raw(stmt(
                &self.db,
                "SELECT traceparent, tracestate FROM requests WHERE id = $1",
                [id.into()],
            ))
            .await?;
        Ok(match row {
            Some(row) => pim_telemetry::TraceContext {
                traceparent: row.try_get("", "traceparent")?,
                tracestate: row.try_get("", "tracestate")?,
            },
            None => pim_telemetry::TraceContext::default(),
        })
    }

    /// The earliest end of a granted window, if any.
    pub async fn next_end(&self) -> anyhow::Result<Option<i64>> {
        let row = self
            .db
            .query_one_raw(stmt(
                &self.db,
                &format!(
                    "SELECT MIN(end_ms) AS next FROM requests WHERE status IN ({}) \
                     AND action = 'self_activate'",
                    list_of(&crate::model::GRANTED)
                ),
                [],
            ))
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<i64>>("", "next"))
            .transpose()?
            .flatten())
    }

    /// Requests whose window has ended, locked by `txn` so that replicas skip them.
    pub async fn claim_ended(
        &self,
        txn: &DatabaseTransaction,
        now_ms: i64,
    ) -> anyhow::Result<Vec<String>> {
        let lock = match txn.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => " FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let rows = txn
            .query_all_raw(stmt(
                txn,
                &format!(
                    "SELECT id FROM requests WHERE status IN ({}) AND end_ms <= $1 \
                     AND action = 'self_activate' ORDER BY end_ms LIMIT 100{lock}",
                    list_of(&crate::model::GRANTED)
                ),
                [now_ms.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String>("", "id")?))
            .collect()
    }

    /// Granted requests of `principal`, or those provisioned from eligibility `schedule_id`.
    pub async fn granted_of(
        &self,
        conn: &impl ConnectionTrait,
        principal: &str,
        schedule_id: &str,
    ) -> anyhow::Result<Vec<String>> {
        let rows = conn
            .query_all_raw(stmt(
                conn,
                &format!(
                    "SELECT id FROM requests WHERE status IN ({}) AND action = 'self_activate' \
                     AND (($1 <> '' AND principal_id = $1) OR ($2 <> '' AND schedule_id = $2))",
                    list_of(&crate::model::GRANTED)
                ),
                [principal.into(), schedule_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String>("", "id")?))
            .collect()
    }

    pub async fn list(&self, filter: &Filter) -> anyhow::Result<Vec<ActivationRequest>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT * FROM requests WHERE id > $1 AND ($2 = '' OR principal_id = $2) \
                 AND ($3 = '' OR status = $3) AND ($4 = '' OR role_id = $4) \
                 AND ($5 = 0 OR created_at_ms >= $5) AND ($6 = 0 OR created_at_ms < $6) \
                 ORDER BY id LIMIT $7",
                [
                    filter.after.clone().into(),
                    filter.principal_id.clone().into(),
                    filter.status.clone().into(),
                    filter.role_id.clone().into(),
                    filter.created_after_ms.into(),
                    filter.created_before_ms.into(),
                    filter.limit.into(),
                ],
            ))
            .await?;
        rows.iter().map(request).collect()
    }

    /// The caller's granted requests whose window has not ended.
    pub async fn live_of(
        &self,
        principal: &str,
        now_ms: i64,
    ) -> anyhow::Result<Vec<ActivationRequest>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                &format!(
                    "SELECT * FROM requests WHERE principal_id = $1 AND status IN ({}) AND end_ms > $2 \
                     AND action = 'self_activate' ORDER BY start_ms",
                    list_of(&crate::model::GRANTED)
                ),
                [principal.into(), now_ms.into()],
            ))
            .await?;
        rows.iter().map(request).collect()
    }
}

async fn insert(
    txn: &DatabaseTransaction,
    outbox: &Outbox,
    r: &ActivationRequest,
    approval_rule: Option<&ApprovalRule>,
) -> anyhow::Result<()> {
    let ticket = r.ticket.clone().unwrap_or_default();
    let requested_start = r
        .requested_start
        .as_ref()
        .map(pim_proto::millis_from_timestamp);
    let created = millis(r.created_at.as_ref());
    // Every later step of the request (the approval's events, provisioning) continues it.
    let trace = pim_telemetry::current_trace_context();
    txn.execute_raw(stmt(
        txn,
        "INSERT INTO requests (id, principal_id, client_request_id, action, role_id, scope, status, justification, \
         ticket_system, ticket_number, start_ms, end_ms, created_at_ms, policy_version, correlation_id, duration_ms, \
         requested_start_ms, schedule_id, updated_at_ms, approval_rule, traceparent, tracestate) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
        [
            r.id.clone().into(),
            r.principal_id.clone().into(),
            r.request_id.clone().into(),
            action_text(r.action()).into(),
            r.role_id.clone().into(),
            r.scope.clone().into(),
            status_text(r.status()).into(),
            r.justification.clone().into(),
            ticket.system.into(),
            ticket.number.into(),
            millis(r.start_time.as_ref()).into(),
            millis(r.end_time.as_ref()).into(),
            created.into(),
            r.policy_version.into(),
            r.correlation_id.clone().into(),
            r.duration.as_ref().map_or(0, |d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000).into(),
            Value::BigInt(requested_start),
            r.schedule_id.clone().into(),
            created.into(),
            Value::Bytes(approval_rule.map(|rule| rule.encode_to_vec())),
            trace.traceparent.into(),
            trace.tracestate.into(),
        ],
    ))
    .await?;
    append_history(txn, &r.id, created, &r.principal_id, r.status(), "").await?;
    let event = NewEvent::new(
        "activation.request_submitted",
        r.id.clone(),
        pim_proto::pack(&RequestChanged {
            request: Some(r.clone()),
        }),
    )
    .by(&r.principal_id)
    .correlated(r.correlation_id.clone());
    outbox.enqueue(txn, event).await?;
    count_status(r.status());
    Ok(())
}

/// Moves a request from one of `from` to `change.status` inside `conn`'s transaction, with its
/// history line and event. `None` when the request was not in one of `from`.
pub async fn transition_in(
    conn: &impl ConnectionTrait,
    outbox: &Outbox,
    id: &str,
    from: &[RequestStatus],
    change: Change,
    actor: &str,
) -> anyhow::Result<Option<ActivationRequest>> {
    let now = outbox.clock().now_millis();
    let updated = conn
        .execute_raw(stmt(
            conn,
            &format!(
                "UPDATE requests SET status = $1, updated_at_ms = $2, reason = $3, \
                 window_id = COALESCE($4, window_id), case_id = COALESCE($5, case_id), \
                 schedule_id = COALESCE($6, schedule_id), start_ms = COALESCE($7, start_ms), \
                 end_ms = COALESCE($8, end_ms) WHERE id = $9 AND status IN ({}){}",
                list_of(from),
                if change.first_case {
                    " AND case_id = ''"
                } else {
                    ""
                }
            ),
            [
                status_text(change.status).into(),
                now.into(),
                change.reason.clone().into(),
                Value::String(change.window_id),
                Value::String(change.case_id),
                Value::String(change.schedule_id),
                Value::BigInt(change.start_ms),
                Value::BigInt(change.end_ms),
                id.into(),
            ],
        ))
        .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    append_history(conn, id, now, actor, change.status, &change.reason).await?;
    let Some(moved) = one(conn, "SELECT * FROM requests WHERE id = $1", [id.into()]).await? else {
        anyhow::bail!("request {id} vanished inside its transaction");
    };
    let mut event = NewEvent::new(
        event_type(change.status),
        id.to_owned(),
        pim_proto::pack(&RequestChanged {
            request: Some(moved.clone()),
        }),
    )
    .correlated(moved.correlation_id.clone());
    if !actor.is_empty() {
        event = event.by(actor);
    }
    outbox.enqueue(conn, event).await?;
    count_status(change.status);
    Ok(Some(moved))
}

/// `pim.activation.requests`: counted as the status is written, inside its transaction.
fn count_status(status: RequestStatus) {
    let status =
        pim_telemetry::metrics::KeyValue::new("pim.activation.status", status_text(status));
    pim_telemetry::metrics::ACTIVATION_REQUESTS.add(1, &[status]);
}

async fn append_history(
    conn: &impl ConnectionTrait,
    id: &str,
    at_ms: i64,
    actor: &str,
    status: RequestStatus,
    reason: &str,
) -> anyhow::Result<()> {
    conn.execute_raw(stmt(
        conn,
        "INSERT INTO request_history (request_id, seq, at_ms, actor_id, status, reason) \
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5 FROM request_history WHERE request_id = $1",
        [id.into(), at_ms.into(), actor.into(), status_text(status).into(), reason.into()],
    ))
    .await?;
    Ok(())
}

async fn history(conn: &impl ConnectionTrait, id: &str) -> anyhow::Result<Vec<RequestEntry>> {
    let rows = conn
        .query_all_raw(stmt(
            conn,
            "SELECT * FROM request_history WHERE request_id = $1 ORDER BY seq",
            [id.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(RequestEntry {
                at: Some(timestamp_from_millis(r.try_get("", "at_ms")?)),
                status: status_from(&r.try_get::<String>("", "status")?).into(),
                actor_id: r.try_get("", "actor_id")?,
                reason: r.try_get("", "reason")?,
            })
        })
        .collect()
}

async fn one(
    conn: &impl ConnectionTrait,
    sql: &str,
    values: impl IntoIterator<Item = Value>,
) -> anyhow::Result<Option<ActivationRequest>> {
    conn.query_one_raw(stmt(conn, sql, values))
        .await?
        .map(|row| request(&row))
        .transpose()
}

fn request(row: &QueryResult) -> anyhow::Result<ActivationRequest> {
    let duration_ms: i64 = row.try_get("", "duration_ms")?;
    Ok(ActivationRequest {
        id: row.try_get("", "id")?,
        request_id: row.try_get("", "client_request_id")?,
        principal_id: row.try_get("", "principal_id")?,
        action: action_from(&row.try_get::<String>("", "action")?).into(),
        role_id: row.try_get("", "role_id")?,
        scope: row.try_get("", "scope")?,
        status: status_from(&row.try_get::<String>("", "status")?).into(),
        justification: row.try_get("", "justification")?,
        ticket: Some(Ticket {
            system: row.try_get("", "ticket_system")?,
            number: row.try_get("", "ticket_number")?,
        }),
        start_time: Some(timestamp_from_millis(row.try_get("", "start_ms")?)),
        end_time: Some(timestamp_from_millis(row.try_get("", "end_ms")?)),
        created_at: Some(timestamp_from_millis(row.try_get("", "created_at_ms")?)),
        window_id: row
            .try_get::<Option<String>>("", "window_id")?
            .unwrap_or_default(),
        policy_version: row.try_get("", "policy_version")?,
        case_id: row.try_get("", "case_id")?,
        reason: row.try_get("", "reason")?,
        correlation_id: row.try_get("", "correlation_id")?,
        history: Vec::new(),
        duration: Some(pim_proto::Duration {
            seconds: duration_ms / 1000,
            nanos: ((duration_ms % 1000) * 1_000_000) as i32,
        }),
        requested_start: row
            .try_get::<Option<i64>>("", "requested_start_ms")?
            .map(timestamp_from_millis),
        schedule_id: row.try_get("", "schedule_id")?,
    })
}
