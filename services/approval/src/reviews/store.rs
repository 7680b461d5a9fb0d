//! The access-review tables. A definition's settings are its encoded message; instances,
//! items and reviewers are rows; every change and its event commit together.

use pim_db::stmt;
use pim_events::{NewEvent, Outbox};
use pim_proto::{
    approval::v1::{
        ReviewChanged, ReviewDecision, ReviewDefinition, ReviewInstance, ReviewInstanceStatus,
        ReviewItem, ReviewItemChanged,
    },
    assignment::v1::ScheduleKind,
    timestamp_from_millis,
};
use prost::Message as _;
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, QueryResult,
    TransactionTrait, Value,
};

/// Rows per multi-row INSERT; 9 values each stays far below both backends' parameter limits.
const ROWS_PER_INSERT: usize = 500;

#[derive(Clone)]
pub struct ReviewStore {
    db: DatabaseConnection,
}

/// An item about to be created, with the people who review it.
pub struct NewItem {
    pub item: ReviewItem,
    pub reviewers: Vec<String>,
}

fn lock(conn: &impl ConnectionTrait) -> &'static str {
    match conn.get_database_backend() {
        DatabaseBackend::Postgres => " FOR UPDATE SKIP LOCKED",
        _ => "",
    }
}

/// Stored statuses: `in_progress`, `completed` (nothing to apply), `applying` (completed, its
/// denials being applied) and `applied`.
fn status_from(text: &str) -> ReviewInstanceStatus {
    match text {
        "completed" | "applying" => ReviewInstanceStatus::Completed,
        "applied" => ReviewInstanceStatus::Applied,
        _ => ReviewInstanceStatus::InProgress,
    }
}

pub async fn enqueue(
    txn: &impl ConnectionTrait,
    outbox: &Outbox,
    event_type: &str,
    subject: &str,
    actor: &str,
    payload: prost_types::Any,
) -> anyhow::Result<()> {
    let mut event =
        NewEvent::new(event_type, subject.to_owned(), payload).correlated(subject.to_owned());
    if !actor.is_empty() {
        event = event.by(actor);
    }
    outbox.enqueue(txn, event).await?;
    Ok(())
}

impl ReviewStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn begin(&self) -> anyhow::Result<DatabaseTransaction> {
        Ok(self.db.begin().await?)
    }

    pub async fn create_definition(
        &self,
        outbox: &Outbox,
        d: &ReviewDefinition,
        next_start_ms: i64,
    ) -> anyhow::Result<()> {
        let txn = self.db.begin().await?;
        txn.execute_raw(stmt(
            &txn,
            "INSERT INTO review_definitions (id, body, stopped, created_at_ms, next_start_ms) VALUES ($1, $2, $3, $4, $5)",
            [
                d.id.clone().into(),
                d.encode_to_vec().into(),
                false.into(),
                d.created_at.as_ref().map(pim_proto::millis_from_timestamp).unwrap_or_default().into(),
                next_start_ms.into(),
            ],
        ))
        .await?;
        let payload = pim_proto::pack(&ReviewChanged {
            instance: None,
            definition: Some(d.clone()),
        });
        enqueue(
            &txn,
            outbox,
            "approval.review_defined",
            &d.id,
            &d.created_by,
            payload,
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    pub async fn definition(
        &self,
        conn: &impl ConnectionTrait,
        id: &str,
    ) -> anyhow::Result<Option<ReviewDefinition>> {
        let row = conn
            .query_one_raw(stmt(
                conn,
                "SELECT * FROM review_definitions WHERE id = $1",
                [id.into()],
            ))
            .await?;
        row.map(|r| definition(&r)).transpose()
    }

    pub async fn definitions(&self) -> anyhow::Result<Vec<ReviewDefinition>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT * FROM review_definitions ORDER BY id",
                [],
            ))
            .await?;
        rows.iter().map(definition).collect()
    }

    /// Replaces a running definition's message (its name, reviewers and settings).
    pub async fn update_definition(
        &self,
        outbox: &Outbox,
        d: &ReviewDefinition,
        actor: &str,
    ) -> anyhow::Result<bool> {
        let txn = self.db.begin().await?;
        let updated = txn
            .execute_raw(stmt(
                &txn,
                "UPDATE review_definitions SET body = $1 WHERE id = $2 AND stopped = $3",
                [d.encode_to_vec().into(), d.id.clone().into(), false.into()],
            ))
            .await?
            .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        let payload = pim_proto::pack(&ReviewChanged {
            instance: None,
            definition: Some(d.clone()),
        });
        enqueue(
            &txn,
            outbox,
            "approval.review_updated",
            &d.id,
            actor,
            payload,
        )
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// A running instance past its midpoint whose reviewers were not reminded yet, locked by
    /// `txn`.
    pub async fn due_reminder(
        &self,
        txn: &DatabaseTransaction,
        now_ms: i64,
    ) -> anyhow::Result<Option<String>> {
        let row = txn
            .query_one_raw(stmt(
                txn,
                &format!(
                    "SELECT id FROM review_instances WHERE status = 'in_progress' AND reminded = $1 \
                     AND start_ms + (end_ms - start_ms) / 2 <= $2 AND end_ms > $2 ORDER BY end_ms LIMIT 1{}",
                    lock(txn)
                ),
                [false.into(), now_ms.into()],
            ))
            .await?;
        row.map(|r| Ok(r.try_get::<String>("", "id")?)).transpose()
    }

    /// Reviewers with undecided items in an instance.
    pub async fn undecided_reviewers(
        &self,
        conn: &impl ConnectionTrait,
        instance_id: &str,
    ) -> anyhow::Result<Vec<String>> {
        let rows = conn
            .query_all_raw(stmt(
                conn,
                "SELECT DISTINCT r.reviewer_id FROM review_reviewers r JOIN review_items it ON it.id = r.item_id \
                 WHERE r.instance_id = $1 AND it.decision = $2 ORDER BY r.reviewer_id",
                [
                    instance_id.into(),
                    (ReviewDecision::NotReviewed as i32).into(),
                ],
            ))
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String>("", "reviewer_id")?))
            .collect()
    }

    pub async fn mark_reminded(
        &self,
        conn: &impl ConnectionTrait,
        instance_id: &str,
    ) -> anyhow::Result<()> {
        conn.execute_raw(stmt(
            conn,
            "UPDATE review_instances SET reminded = $1 WHERE id = $2",
            [true.into(), instance_id.into()],
        ))
        .await?;
        Ok(())
    }

    /// Stops a definition: no next instance.
    pub async fn stop(
        &self,
        outbox: &Outbox,
        id: &str,
        actor: &str,
    ) -> anyhow::Result<Option<ReviewDefinition>> {
        let txn = self.db.begin().await?;
        txn.execute_raw(stmt(
            &txn,
            "UPDATE review_definitions SET stopped = $1, next_start_ms = NULL WHERE id = $2",
            [true.into(), id.into()],
        ))
        .await?;
        let Some(stopped) = self.definition(&txn, id).await? else {
            return Ok(None);
        };
        let payload = pim_proto::pack(&ReviewChanged {
            instance: None,
            definition: Some(stopped.clone()),
        });
        enqueue(&txn, outbox, "approval.review_stopped", id, actor, payload).await?;
        txn.commit().await?;
        Ok(Some(stopped))
    }

    /// Deletes a definition that never started; false when it did (or does not exist).
    pub async fn delete(&self, outbox: &Outbox, id: &str, actor: &str) -> anyhow::Result<bool> {
        let txn = self.db.begin().await?;
        let deleted = txn
            .execute_raw(stmt(
                &txn,
                "DELETE FROM review_definitions WHERE id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM review_instances WHERE definition_id = $1)",
                [id.into()],
            ))
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        let payload = pim_proto::pack(&ReviewChanged::default());
        enqueue(&txn, outbox, "approval.review_deleted", id, actor, payload).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// The definition whose next instance is due, locked by `txn` so replicas skip it.
    pub async fn due_definition(
        &self,
        txn: &DatabaseTransaction,
        now_ms: i64,
    ) -> anyhow::Result<Option<(ReviewDefinition, i64)>> {
        let row = txn
            .query_one_raw(stmt(
                txn,
                &format!(
                    "SELECT * FROM review_definitions WHERE stopped = $1 AND next_start_ms <= $2 \
                     ORDER BY next_start_ms LIMIT 1{}",
                    lock(txn)
                ),
                [false.into(), now_ms.into()],
            ))
            .await?;
        row.map(|r| Ok((definition(&r)?, r.try_get::<i64>("", "next_start_ms")?)))
            .transpose()
    }

    /// Records a started instance with its items, moves the definition to its next start, and
    /// announces `approval.review_started`, in `txn`.
    pub async fn start_instance(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        definition: &ReviewDefinition,
        instance: &ReviewInstance,
        items: &[NewItem],
        next_start_ms: Option<i64>,
    ) -> anyhow::Result<()> {
        let ms = |t: &Option<pim_proto::Timestamp>| {
            t.as_ref()
                .map(pim_proto::millis_from_timestamp)
                .unwrap_or_default()
        };
        txn.execute_raw(stmt(
            txn,
            "INSERT INTO review_instances (id, definition_id, start_ms, end_ms, status) VALUES ($1, $2, $3, $4, 'in_progress')",
            [
                instance.id.clone().into(),
                definition.id.clone().into(),
                ms(&instance.start_time).into(),
                ms(&instance.end_time).into(),
            ],
        ))
        .await?;
        // Many rows per statement: an instance over 100,000 assignments is a few hundred
        // round trips, not 200,000.
        for chunk in items.chunks(ROWS_PER_INSERT) {
            let mut values = Vec::with_capacity(chunk.len() * 9);
            let mut rows = Vec::with_capacity(chunk.len());
            for (n, new) in chunk.iter().enumerate() {
                let item = &new.item;
                let at = n * 9;
                rows.push(format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, {}, '', '', FALSE, '')",
                    at + 1,
                    at + 2,
                    at + 3,
                    at + 4,
                    at + 5,
                    at + 6,
                    at + 7,
                    at + 8,
                    at + 9,
                    ReviewDecision::NotReviewed as i32
                ));
                values.extend([
                    Value::from(item.id.clone()),
                    instance.id.clone().into(),
                    item.schedule_id.clone().into(),
                    item.principal_id.clone().into(),
                    item.role_id.clone().into(),
                    item.scope.clone().into(),
                    item.kind.into(),
                    item.recommendation.into(),
                    item.recommendation_reason.clone().into(),
                ]);
            }
            txn.execute_raw(stmt(
                txn,
                &format!(
                    "INSERT INTO review_items (id, instance_id, schedule_id, principal_id, role_id, scope, kind, \
                     recommendation, recommendation_reason, decision, justification, decided_by, applied, apply_result) \
                     VALUES {}",
                    rows.join(", ")
                ),
                values,
            ))
            .await?;
        }
        let pairs: Vec<(&str, &str)> = items
            .iter()
            .flat_map(|new| {
                new.reviewers
                    .iter()
                    .map(|r| (new.item.id.as_str(), r.as_str()))
            })
            .collect();
        for chunk in pairs.chunks(ROWS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|n| format!("(${}, ${}, ${})", n * 3 + 1, n * 3 + 2, n * 3 + 3))
                .collect();
            let values: Vec<Value> = chunk
                .iter()
                .flat_map(|(item, reviewer)| {
                    [
                        Value::from((*item).to_owned()),
                        (*reviewer).to_owned().into(),
                        instance.id.clone().into(),
                    ]
                })
                .collect();
            txn.execute_raw(stmt(
                txn,
                &format!(
                    "INSERT INTO review_reviewers (item_id, reviewer_id, instance_id) VALUES {}",
                    rows.join(", ")
                ),
                values,
            ))
            .await?;
        }
        txn.execute_raw(stmt(
            txn,
            "UPDATE review_definitions SET next_start_ms = $1 WHERE id = $2",
            [Value::BigInt(next_start_ms), definition.id.clone().into()],
        ))
        .await?;
        let mut started = instance.clone();
        started.items = items.len() as u32;
        let payload = pim_proto::pack(&ReviewChanged {
            instance: Some(started),
            definition: Some(definition.clone()),
        });
        enqueue(
            txn,
            outbox,
            "approval.review_started",
            &instance.id,
            "",
            payload,
        )
        .await
    }

    pub async fn instance(
        &self,
        conn: &impl ConnectionTrait,
        id: &str,
    ) -> anyhow::Result<Option<ReviewInstance>> {
        let row = conn
            .query_one_raw(stmt(
                conn,
                &format!("{INSTANCE_SELECT} WHERE i.id = $1 GROUP BY i.id, i.definition_id, i.start_ms, i.end_ms, i.status"),
                [id.into()],
            ))
            .await?;
        row.map(|r| instance(&r)).transpose()
    }

    pub async fn instances(&self, definition_id: &str) -> anyhow::Result<Vec<ReviewInstance>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                &format!(
                    "{INSTANCE_SELECT} WHERE i.definition_id = $1 \
                     GROUP BY i.id, i.definition_id, i.start_ms, i.end_ms, i.status ORDER BY i.start_ms"
                ),
                [definition_id.into()],
            ))
            .await?;
        rows.iter().map(instance).collect()
    }

    /// An in-progress instance whose end has passed, locked by `txn`.
    pub async fn ended_instance(
        &self,
        txn: &DatabaseTransaction,
        now_ms: i64,
    ) -> anyhow::Result<Option<String>> {
        let row = txn
            .query_one_raw(stmt(
                txn,
                &format!(
                    "SELECT id FROM review_instances WHERE status = 'in_progress' AND end_ms <= $1 \
                     ORDER BY end_ms LIMIT 1{}",
                    lock(txn)
                ),
                [now_ms.into()],
            ))
            .await?;
        row.map(|r| Ok(r.try_get::<String>("", "id")?)).transpose()
    }

    /// Sets an instance's stored status: `completed`, `applying` or `applied`.
    pub async fn set_status(
        &self,
        conn: &impl ConnectionTrait,
        id: &str,
        status: &str,
    ) -> anyhow::Result<()> {
        conn.execute_raw(stmt(
            conn,
            "UPDATE review_instances SET status = $1 WHERE id = $2",
            [status.into(), id.into()],
        ))
        .await?;
        Ok(())
    }

    /// Items of an instance; only those routed to `reviewer` when one is named; with no
    /// instance, the caller's items in every running instance.
    pub async fn items(
        &self,
        conn: &impl ConnectionTrait,
        instance_id: &str,
        reviewer: Option<&str>,
    ) -> anyhow::Result<Vec<ReviewItem>> {
        let rows = conn
            .query_all_raw(stmt(
                conn,
                "SELECT it.* FROM review_items it JOIN review_instances i ON i.id = it.instance_id \
                 WHERE ($1 = '' OR it.instance_id = $1) AND ($1 <> '' OR i.status = 'in_progress') \
                 AND ($2 = '' OR EXISTS (SELECT 1 FROM review_reviewers r WHERE r.item_id = it.id AND r.reviewer_id = $2)) \
                 ORDER BY it.instance_id, it.id",
                [instance_id.into(), reviewer.unwrap_or_default().into()],
            ))
            .await?;
        let mut items: Vec<ReviewItem> = rows.iter().map(item).collect::<anyhow::Result<_>>()?;
        self.attach_reviewers(conn, &mut items).await?;
        Ok(items)
    }

    pub async fn item(
        &self,
        conn: &impl ConnectionTrait,
        id: &str,
    ) -> anyhow::Result<Option<ReviewItem>> {
        let row = conn
            .query_one_raw(stmt(
                conn,
                "SELECT * FROM review_items WHERE id = $1",
                [id.into()],
            ))
            .await?;
        let Some(found) = row.map(|r| item(&r)).transpose()? else {
            return Ok(None);
        };
        let mut items = vec![found];
        self.attach_reviewers(conn, &mut items).await?;
        Ok(items.pop())
    }

    async fn attach_reviewers(
        &self,
        conn: &impl ConnectionTrait,
        items: &mut [ReviewItem],
    ) -> anyhow::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let list = pim_db::placeholders(1, items.len());
        let rows = conn
            .query_all_raw(stmt(
                conn,
                &format!("SELECT item_id, reviewer_id FROM review_reviewers WHERE item_id IN ({list}) ORDER BY reviewer_id"),
                items.iter().map(|i| Value::from(i.id.clone())),
            ))
            .await?;
        for row in &rows {
            let item_id: String = row.try_get("", "item_id")?;
            if let Some(found) = items.iter_mut().find(|i| i.id == item_id) {
                found.reviewer_ids.push(row.try_get("", "reviewer_id")?);
            }
        }
        Ok(())
    }

    /// Records a decision on an item, with `approval.review_item_decided`; `None` when there is
    /// no such item.
    #[allow(clippy::too_many_arguments)]
    pub async fn decide(
        &self,
        conn: &impl ConnectionTrait,
        outbox: &Outbox,
        item_id: &str,
        decision: ReviewDecision,
        justification: &str,
        decided_by: &str,
        now_ms: i64,
    ) -> anyhow::Result<Option<ReviewItem>> {
        let Some(current) = self.item(conn, item_id).await? else {
            return Ok(None);
        };
        let decided = ReviewItem {
            decision: decision.into(),
            justification: justification.to_owned(),
            decided_by: decided_by.to_owned(),
            decided_at: Some(timestamp_from_millis(now_ms)),
            ..current
        };
        self.record_decision(conn, outbox, &decided, now_ms).await?;
        Ok(Some(decided))
    }

    /// Writes `decided`, an item as read with its new decision, and announces it. Callers that
    /// hold the items already (the default decisions at an instance's end) skip the re-read.
    pub async fn record_decision(
        &self,
        conn: &impl ConnectionTrait,
        outbox: &Outbox,
        decided: &ReviewItem,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        conn.execute_raw(stmt(
            conn,
            "UPDATE review_items SET decision = $1, justification = $2, decided_by = $3, decided_at_ms = $4 WHERE id = $5",
            [
                decided.decision.into(),
                decided.justification.clone().into(),
                decided.decided_by.clone().into(),
                now_ms.into(),
                decided.id.clone().into(),
            ],
        ))
        .await?;
        let payload = pim_proto::pack(&ReviewItemChanged {
            item: Some(decided.clone()),
        });
        enqueue(
            conn,
            outbox,
            "approval.review_item_decided",
            &decided.id,
            &decided.decided_by,
            payload,
        )
        .await
    }

    /// Denied items of instances being applied, not yet applied.
    pub async fn to_apply(&self) -> anyhow::Result<Vec<ReviewItem>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT it.* FROM review_items it JOIN review_instances i ON i.id = it.instance_id \
                 WHERE i.status = 'applying' AND it.decision = $1 AND it.apply_result = '' ORDER BY it.id LIMIT 500",
                [(ReviewDecision::Deny as i32).into()],
            ))
            .await?;
        rows.iter().map(item).collect()
    }

    /// Records the outcomes of applying denials `(item, removed, result)`, in one transaction,
    /// with `approval.review_decision_applied` for each assignment that was removed.
    pub async fn applied(
        &self,
        outbox: &Outbox,
        outcomes: &[(String, bool, String)],
    ) -> anyhow::Result<()> {
        let txn = self.db.begin().await?;
        for (item_id, removed, result) in outcomes {
            let recorded = txn
                .execute_raw(stmt(
                    &txn,
                    "UPDATE review_items SET applied = $1, apply_result = $2 WHERE id = $3 AND apply_result = ''",
                    [(*removed).into(), result.clone().into(), item_id.clone().into()],
                ))
                .await?
                .rows_affected();
            // Only the replica that recorded it announces it.
            if *removed
                && recorded == 1
                && let Some(item) = self.item(&txn, item_id).await?
            {
                let payload = pim_proto::pack(&ReviewItemChanged { item: Some(item) });
                enqueue(
                    &txn,
                    outbox,
                    "approval.review_decision_applied",
                    item_id,
                    "",
                    payload,
                )
                .await?;
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// Instances being applied whose denials are all done.
    pub async fn fully_applied(&self) -> anyhow::Result<Vec<String>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT i.id FROM review_instances i WHERE i.status = 'applying' AND NOT EXISTS \
                 (SELECT 1 FROM review_items it WHERE it.instance_id = i.id AND it.decision = $1 AND it.apply_result = '')",
                [(ReviewDecision::Deny as i32).into()],
            ))
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String>("", "id")?))
            .collect()
    }

    /// Every principal's activations of `role`: how many since `since_ms`, and the last one.
    pub async fn activation_stats(
        &self,
        conn: &impl ConnectionTrait,
        role: &str,
        since_ms: i64,
    ) -> anyhow::Result<std::collections::HashMap<String, (i64, Option<i64>)>> {
        // Read through the caller's transaction: on SQLite it holds the only connection.
        let rows = conn
            .query_all_raw(stmt(
                conn,
                "SELECT principal_id, COUNT(*) FILTER (WHERE at_ms >= $2) AS n, MAX(at_ms) AS last \
                 FROM activation_history WHERE role_id = $1 GROUP BY principal_id",
                [role.into(), since_ms.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("", "principal_id")?,
                    (r.try_get("", "n")?, r.try_get::<Option<i64>>("", "last")?),
                ))
            })
            .collect()
    }

    /// Remembers a granted activation, for recommendations.
    pub async fn record_activation(
        &self,
        conn: &impl ConnectionTrait,
        request_id: &str,
        principal: &str,
        role: &str,
        scope: &str,
        at_ms: i64,
    ) -> anyhow::Result<()> {
        conn.execute_raw(stmt(
            conn,
            "INSERT INTO activation_history (request_id, principal_id, role_id, scope, at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            [
                request_id.into(),
                principal.into(),
                role.into(),
                scope.into(),
                at_ms.into(),
            ],
        ))
        .await?;
        Ok(())
    }
}

const INSTANCE_SELECT: &str = "SELECT i.id, i.definition_id, i.start_ms, i.end_ms, i.status, \
     COUNT(it.id) AS items, \
     COUNT(it.decided_by) FILTER (WHERE it.decided_by <> '') AS decided, \
     COUNT(it.id) FILTER (WHERE it.decision = 3) AS denied, \
     COUNT(it.id) FILTER (WHERE it.applied) AS applied \
     FROM review_instances i LEFT JOIN review_items it ON it.instance_id = i.id";

fn definition(row: &QueryResult) -> anyhow::Result<ReviewDefinition> {
    let mut d = ReviewDefinition::decode(row.try_get::<Vec<u8>>("", "body")?.as_slice())?;
    d.stopped = row.try_get("", "stopped")?;
    Ok(d)
}

fn instance(row: &QueryResult) -> anyhow::Result<ReviewInstance> {
    let count = |name: &str| -> anyhow::Result<u32> { Ok(row.try_get::<i64>("", name)? as u32) };
    Ok(ReviewInstance {
        id: row.try_get("", "id")?,
        definition_id: row.try_get("", "definition_id")?,
        start_time: Some(timestamp_from_millis(row.try_get("", "start_ms")?)),
        end_time: Some(timestamp_from_millis(row.try_get("", "end_ms")?)),
        status: status_from(&row.try_get::<String>("", "status")?).into(),
        items: count("items")?,
        decided: count("decided")?,
        denied: count("denied")?,
        applied: count("applied")?,
    })
}

fn item(row: &QueryResult) -> anyhow::Result<ReviewItem> {
    Ok(ReviewItem {
        id: row.try_get("", "id")?,
        instance_id: row.try_get("", "instance_id")?,
        schedule_id: row.try_get("", "schedule_id")?,
        principal_id: row.try_get("", "principal_id")?,
        role_id: row.try_get("", "role_id")?,
        scope: row.try_get("", "scope")?,
        kind: ScheduleKind::try_from(row.try_get::<i32>("", "kind")?)
            .unwrap_or_default()
            .into(),
        reviewer_ids: Vec::new(),
        decision: row.try_get("", "decision")?,
        justification: row.try_get("", "justification")?,
        decided_by: row.try_get("", "decided_by")?,
        decided_at: row
            .try_get::<Option<i64>>("", "decided_at_ms")?
            .map(timestamp_from_millis),
        recommendation: row.try_get("", "recommendation")?,
        recommendation_reason: row.try_get("", "recommendation_reason")?,
        applied: row.try_get("", "applied")?,
        apply_result: row.try_get("", "apply_result")?,
    })
}
