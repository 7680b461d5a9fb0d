//! The notification database. Deliveries are written with the consumed event's inbox record,
//! one row per (event, channel, recipient), so a redelivered event adds nothing. Workers claim
//! due deliveries with one atomic `UPDATE … RETURNING` whose inner select skips rows other
//! replicas hold (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has a single writer), and the
//! claim moves the row's due time to the end of a lease, so no two workers send one delivery.

use pim_db::{placeholders, stmt};
use pim_events::{NewEvent, Outbox};
use pim_proto::{
    notification::v1::{
        Channel as ChannelProto, Delivery, DeliveryAttempt, DeliveryDeadLettered, DeliveryStatus,
        Subscription,
    },
    timestamp_from_millis,
};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, QueryResult, TransactionTrait,
};

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

/// A delivery to be written with the consumed event.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub event_id: String,
    pub event_type: String,
    pub channel: &'static str,
    pub recipient: String,
    pub principal_id: String,
    pub endpoint: String,
    pub subject: String,
    pub body: Vec<u8>,
}

/// A delivery a worker holds until it records the outcome or its lease runs out.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub event_type: String,
    pub channel: String,
    pub recipient: String,
    pub endpoint: String,
    pub body: Vec<u8>,
    pub attempts: i32,
    pub give_up_after: i32,
    /// The trace of the event that caused it, which each attempt continues.
    pub trace: pim_telemetry::TraceContext,
}

/// What one attempt came to.
pub struct Outcome {
    pub succeeded: bool,
    /// Dead-letter now: no retry can succeed.
    pub permanent: bool,
    pub http_status: u32,
    pub error: String,
    pub duration_ms: i64,
    pub at_ms: i64,
    /// When the next attempt is due if this one failed and attempts remain.
    pub retry_at_ms: i64,
}

/// What the webhook channel needs of a subscription at send time.
pub struct SubscriptionTarget {
    pub url: String,
    pub sealed_secret: Vec<u8>,
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub struct SubscriptionRow {
    pub id: String,
    pub request_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub sealed_secret: Vec<u8>,
    pub enabled: bool,
    pub created_at_ms: i64,
    pub created_by: String,
    pub updated_at_ms: i64,
}

impl SubscriptionRow {
    pub fn to_proto(&self) -> Subscription {
        Subscription {
            id: self.id.clone(),
            url: self.url.clone(),
            event_types: self.event_types.clone(),
            description: self.description.clone(),
            enabled: self.enabled,
            created_at: Some(timestamp_from_millis(self.created_at_ms)),
            created_by: self.created_by.clone(),
            updated_at: Some(timestamp_from_millis(self.updated_at_ms)),
        }
    }

    /// Whether it receives events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.iter().any(|filter| {
            filter == event_type
                || filter
                    .strip_suffix(".*")
                    .is_some_and(|producer| event_type.split('.').next() == Some(producer))
        })
    }
}

/// Filters of a delivery listing; empty values match everything.
#[derive(Default)]
pub struct DeliveryFilter {
    pub event_id: String,
    pub event_type: String,
    pub recipient: String,
    pub channel: String,
    pub status: String,
    /// Only ids below this one (the page token): newest first.
    pub before: String,
    pub limit: i64,
}

pub fn channel_proto(name: &str) -> ChannelProto {
    match name {
        "email" => ChannelProto::Email,
        "webhook" => ChannelProto::Webhook,
        _ => ChannelProto::Unspecified,
    }
}

pub fn status_proto(name: &str) -> DeliveryStatus {
    match name {
        "pending" => DeliveryStatus::Pending,
        "delivered" => DeliveryStatus::Delivered,
        "dead_lettered" => DeliveryStatus::DeadLettered,
        _ => DeliveryStatus::Unspecified,
    }
}

pub fn status_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::DeadLettered => "dead_lettered",
        DeliveryStatus::Unspecified => "",
    }
}

pub fn channel_name(channel: ChannelProto) -> &'static str {
    match channel {
        ChannelProto::Email => "email",
        ChannelProto::Webhook => "webhook",
        ChannelProto::Unspecified => "",
    }
}

const SUBSCRIPTION_COLUMNS: &str = "id, request_id, url, event_types, description, sealed_secret, \
     enabled, created_at_ms, created_by, updated_at_ms";

fn subscription_row(row: &QueryResult) -> anyhow::Result<SubscriptionRow> {
    let types: String = row.try_get("", "event_types")?;
    Ok(SubscriptionRow {
        id: row.try_get("", "id")?,
        request_id: row.try_get("", "request_id")?,
        url: row.try_get("", "url")?,
        event_types: types
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        description: row.try_get("", "description")?,
        sealed_secret: row.try_get("", "sealed_secret")?,
        enabled: row.try_get("", "enabled")?,
        created_at_ms: row.try_get("", "created_at_ms")?,
        created_by: row.try_get("", "created_by")?,
        updated_at_ms: row.try_get("", "updated_at_ms")?,
    })
}

impl Store {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    // ---- subscriptions ----

    /// Inserts a subscription; if one with the same `request_id` exists, returns that instead.
    pub async fn create_subscription(
        &self,
        outbox: &Outbox,
        row: &SubscriptionRow,
    ) -> anyhow::Result<(SubscriptionRow, bool)> {
        let txn = self.db.begin().await?;
        let inserted = txn
            .execute_raw(stmt(
                &txn,
                &format!(
                    "INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (request_id) DO NOTHING"
                ),
                [
                    row.id.clone().into(),
                    row.request_id.clone().into(),
                    row.url.clone().into(),
                    row.event_types.join(",").into(),
                    row.description.clone().into(),
                    row.sealed_secret.clone().into(),
                    row.enabled.into(),
                    row.created_at_ms.into(),
                    row.created_by.clone().into(),
                    row.updated_at_ms.into(),
                ],
            ))
            .await?
            .rows_affected()
            == 1;
        if !inserted {
            txn.rollback().await?;
            let existing = self
                .subscription_by_request(&row.request_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the racing subscription vanished"))?;
            return Ok((existing, false));
        }
        subscription_changed(&txn, outbox, row, "created", &row.created_by).await?;
        txn.commit().await?;
        outbox.wake();
        Ok((row.clone(), true))
    }

    async fn subscription_by_request(
        &self,
        request_id: &str,
    ) -> anyhow::Result<Option<SubscriptionRow>> {
        self.db
            .query_one_raw(stmt(
                &self.db,
                &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE request_id = $1"),
                [request_id.into()],
            ))
            .await?
            .as_ref()
            .map(subscription_row)
            .transpose()
    }

    pub async fn subscription(&self, id: &str) -> anyhow::Result<Option<SubscriptionRow>> {
        self.db
            .query_one_raw(stmt(
                &self.db,
                &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1"),
                [id.into()],
            ))
            .await?
            .as_ref()
            .map(subscription_row)
            .transpose()
    }

    pub async fn subscription_target(
        &self,
        id: &str,
    ) -> anyhow::Result<Option<SubscriptionTarget>> {
        Ok(self.subscription(id).await?.map(|row| SubscriptionTarget {
            url: row.url,
            sealed_secret: row.sealed_secret,
            enabled: row.enabled,
        }))
    }

    pub async fn list_subscriptions(
        &self,
        after: &str,
        limit: i64,
    ) -> anyhow::Result<Vec<SubscriptionRow>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                &format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id > $1 \
                     ORDER BY id LIMIT $2"
                ),
                [after.into(), limit.into()],
            ))
            .await?;
        rows.iter().map(subscription_row).collect()
    }

    /// The enabled subscriptions, read in the consumer's transaction.
    pub async fn enabled_subscriptions(
        &self,
        conn: &impl ConnectionTrait,
    ) -> anyhow::Result<Vec<SubscriptionRow>> {
        let rows = conn
            .query_all_raw(stmt(
                conn,
                &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE enabled = $1"),
                [true.into()],
            ))
            .await?;
        rows.iter().map(subscription_row).collect()
    }

    /// Replaces the secret, or disables; announces the change. `None` when it does not exist.
    pub async fn change_subscription(
        &self,
        outbox: &Outbox,
        id: &str,
        sealed_secret: Option<Vec<u8>>,
        disable: bool,
        now_ms: i64,
        actor: &str,
    ) -> anyhow::Result<Option<SubscriptionRow>> {
        let txn = self.db.begin().await?;
        let changed = match &sealed_secret {
            Some(sealed) => {
                txn.execute_raw(stmt(
                    &txn,
                    "UPDATE subscriptions SET sealed_secret = $2, updated_at_ms = $3 WHERE id = $1",
                    [id.into(), sealed.clone().into(), now_ms.into()],
                ))
                .await?
            }
            None => {
                txn.execute_raw(stmt(
                    &txn,
                    "UPDATE subscriptions SET enabled = $2, updated_at_ms = $3 WHERE id = $1",
                    [id.into(), (!disable).into(), now_ms.into()],
                ))
                .await?
            }
        };
        if changed.rows_affected() == 0 {
            txn.rollback().await?;
            return Ok(None);
        }
        let row = txn
            .query_one_raw(stmt(
                &txn,
                &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1"),
                [id.into()],
            ))
            .await?
            .as_ref()
            .map(subscription_row)
            .transpose()?
            .ok_or_else(|| anyhow::anyhow!("subscription {id} vanished"))?;
        let change = if sealed_secret.is_some() {
            "secret_rotated"
        } else {
            "disabled"
        };
        subscription_changed(&txn, outbox, &row, change, actor).await?;
        txn.commit().await?;
        outbox.wake();
        Ok(Some(row))
    }

    // ---- deliveries ----

    /// Writes deliveries inside the consumer's transaction; an existing (event, channel,
    /// recipient) is left alone. Returns how many were new.
    pub async fn insert_deliveries(
        &self,
        conn: &impl ConnectionTrait,
        deliveries: &[NewDelivery],
        now_ms: i64,
        max_attempts: u32,
    ) -> anyhow::Result<u64> {
        let mut inserted = 0;
        let trace = pim_telemetry::current_trace_context();
        for delivery in deliveries {
            inserted += conn
                .execute_raw(stmt(
                    conn,
                    "INSERT INTO deliveries (id, event_id, event_type, channel, recipient, \
                     principal_id, endpoint, subject, body, status, attempts, give_up_after, \
                     next_attempt_ms, last_error, created_at_ms, traceparent, tracestate) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', 0, $10, $11, '', $11, $12, $13) \
                     ON CONFLICT (event_id, channel, recipient) DO NOTHING",
                    [
                        uuid::Uuid::now_v7().to_string().into(),
                        delivery.event_id.clone().into(),
                        delivery.event_type.clone().into(),
                        delivery.channel.into(),
                        delivery.recipient.clone().into(),
                        delivery.principal_id.clone().into(),
                        delivery.endpoint.clone().into(),
                        delivery.subject.clone().into(),
                        delivery.body.clone().into(),
                        (max_attempts as i32).into(),
                        now_ms.into(),
                        trace.traceparent.clone().into(),
                        trace.tracestate.clone().into(),
                    ],
                ))
                .await?
                .rows_affected();
        }
        Ok(inserted)
    }

    /// Claims up to `limit` due deliveries until `lease_until_ms`.
    pub async fn claim_due(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<Claimed>> {
        let lock = match self.db.get_database_backend() {
            DatabaseBackend::Postgres => " FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                &format!(
                    "UPDATE deliveries SET next_attempt_ms = $2 WHERE id IN (\
                       SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_ms <= $1 \
                       ORDER BY next_attempt_ms LIMIT $3{lock}) \
                     RETURNING id, event_type, channel, recipient, endpoint, body, attempts, give_up_after, \
                     traceparent, tracestate"
                ),
                [now_ms.into(), lease_until_ms.into(), limit.into()],
            ))
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Claimed {
                    id: row.try_get("", "id")?,
                    event_type: row.try_get("", "event_type")?,
                    channel: row.try_get("", "channel")?,
                    recipient: row.try_get("", "recipient")?,
                    endpoint: row.try_get("", "endpoint")?,
                    body: row.try_get("", "body")?,
                    attempts: row.try_get("", "attempts")?,
                    give_up_after: row.try_get("", "give_up_after")?,
                    trace: pim_telemetry::TraceContext {
                        traceparent: row.try_get("", "traceparent")?,
                        tracestate: row.try_get("", "tracestate")?,
                    },
                })
            })
            .collect()
    }

    /// Records an attempt and moves the delivery on: delivered, due again, or dead-lettered
    /// (announced in the same transaction). Returns whether it was dead-lettered.
    pub async fn record(
        &self,
        outbox: &Outbox,
        claimed: &Claimed,
        outcome: &Outcome,
    ) -> anyhow::Result<bool> {
        let number = claimed.attempts + 1;
        let txn = self.db.begin().await?;
        txn.execute_raw(stmt(
            &txn,
            "INSERT INTO delivery_attempts (delivery_id, number, attempted_at_ms, succeeded, \
             http_status, error, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                claimed.id.clone().into(),
                number.into(),
                outcome.at_ms.into(),
                outcome.succeeded.into(),
                (outcome.http_status as i32).into(),
                outcome.error.clone().into(),
                outcome.duration_ms.into(),
            ],
        ))
        .await?;
        let dead = !outcome.succeeded && (outcome.permanent || number >= claimed.give_up_after);
        let (status, next) = match (outcome.succeeded, dead) {
            (true, _) => ("delivered", outcome.at_ms),
            (false, true) => ("dead_lettered", outcome.at_ms),
            (false, false) => ("pending", outcome.retry_at_ms),
        };
        let delivered_at = outcome.succeeded.then_some(outcome.at_ms);
        let updated = txn
            .execute_raw(stmt(
                &txn,
                "UPDATE deliveries SET status = $3, attempts = $2, next_attempt_ms = $4, \
                 last_error = $5, delivered_at_ms = $6 WHERE id = $1 AND attempts = $7",
                [
                    claimed.id.clone().into(),
                    number.into(),
                    status.into(),
                    next.into(),
                    outcome.error.clone().into(),
                    delivered_at.into(),
                    claimed.attempts.into(),
                ],
            ))
            .await?
            .rows_affected();
        anyhow::ensure!(
            updated == 1,
            "delivery {} was recorded by another worker",
            claimed.id
        );
        if dead {
            let delivery = load_deliveries(&txn, std::slice::from_ref(&claimed.id))
                .await?
                .pop()
                .unwrap_or_default();
            outbox
                .enqueue(
                    &txn,
                    NewEvent::new(
                        "notification.delivery_dead_lettered",
                        claimed.id.clone(),
                        pim_proto::pack(&DeliveryDeadLettered {
                            delivery: Some(delivery),
                        }),
                    ),
                )
                .await?;
        }
        txn.commit().await?;
        if dead {
            outbox.wake();
        }
        Ok(dead)
    }

    /// Puts a dead-lettered delivery back in the queue with `max_attempts` fresh attempts.
    /// `None` when it does not exist; `Some(false)` when it is not dead-lettered.
    pub async fn retry(
        &self,
        id: &str,
        now_ms: i64,
        max_attempts: u32,
    ) -> anyhow::Result<Option<bool>> {
        let updated = self
            .db
            .execute_raw(stmt(
                &self.db,
                "UPDATE deliveries SET status = 'pending', next_attempt_ms = $2, \
                 give_up_after = attempts + $3 WHERE id = $1 AND status = 'dead_lettered'",
                [id.into(), now_ms.into(), (max_attempts as i32).into()],
            ))
            .await?
            .rows_affected();
        if updated == 1 {
            return Ok(Some(true));
        }
        Ok(self.delivery(id).await?.map(|_| false))
    }

    pub async fn delivery(&self, id: &str) -> anyhow::Result<Option<Delivery>> {
        Ok(load_deliveries(&self.db, &[id.to_owned()]).await?.pop())
    }

    pub async fn list_deliveries(&self, filter: &DeliveryFilter) -> anyhow::Result<Vec<Delivery>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT id FROM deliveries WHERE ($1 = '' OR event_id = $1) \
                 AND ($2 = '' OR event_type = $2) AND ($3 = '' OR recipient = $3) \
                 AND ($4 = '' OR channel = $4) AND ($5 = '' OR status = $5) \
                 AND ($6 = '' OR id < $6) ORDER BY id DESC LIMIT $7",
                [
                    filter.event_id.clone().into(),
                    filter.event_type.clone().into(),
                    filter.recipient.clone().into(),
                    filter.channel.clone().into(),
                    filter.status.clone().into(),
                    filter.before.clone().into(),
                    filter.limit.into(),
                ],
            ))
            .await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|row| row.try_get("", "id"))
            .collect::<Result<_, _>>()?;
        load_deliveries(&self.db, &ids).await
    }

    /// (channel, status, count) and the number of failed attempts.
    pub async fn stats(&self) -> anyhow::Result<(Vec<(String, String, i64)>, i64)> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT channel, status, COUNT(*) AS n FROM deliveries \
                 GROUP BY channel, status ORDER BY channel, status",
                [],
            ))
            .await?;
        let counts = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("", "channel")?,
                    row.try_get("", "status")?,
                    row.try_get("", "n")?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        let failed = self
            .db
            .query_one_raw(stmt(
                &self.db,
                "SELECT COUNT(*) AS n FROM delivery_attempts WHERE succeeded = $1",
                [false.into()],
            ))
            .await?
            .map(|row| row.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0);
        Ok((counts, failed))
    }
}

async fn subscription_changed(
    conn: &impl ConnectionTrait,
    outbox: &Outbox,
    row: &SubscriptionRow,
    change: &str,
    actor: &str,
) -> anyhow::Result<()> {
    outbox
        .enqueue(
            conn,
            NewEvent::new(
                "notification.subscription_changed",
                row.id.clone(),
                pim_proto::pack(&pim_proto::notification::v1::SubscriptionChanged {
                    subscription: Some(row.to_proto()),
                    change: change.to_owned(),
                }),
            )
            .by(actor),
        )
        .await?;
    Ok(())
}

/// Deliveries by id, in the order of `ids`, each with its attempts.
async fn load_deliveries(
    conn: &impl ConnectionTrait,
    ids: &[String],
) -> anyhow::Result<Vec<Delivery>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<sea_orm::Value> = ids.iter().map(|id| id.clone().into()).collect();
    let rows = conn
        .query_all_raw(stmt(
            conn,
            &format!(
                "SELECT id, event_id, event_type, channel, recipient, principal_id, subject, \
                 status, attempts, next_attempt_ms, last_error, created_at_ms, delivered_at_ms \
                 FROM deliveries WHERE id IN ({})",
                placeholders(1, ids.len())
            ),
            values.clone(),
        ))
        .await?;
    let attempts = conn
        .query_all_raw(stmt(
            conn,
            &format!(
                "SELECT delivery_id, number, attempted_at_ms, succeeded, http_status, error, \
                 duration_ms FROM delivery_attempts WHERE delivery_id IN ({}) \
                 ORDER BY delivery_id, number",
                placeholders(1, ids.len())
            ),
            values,
        ))
        .await?;
    let mut by_id = std::collections::HashMap::new();
    for row in &rows {
        let status: String = row.try_get("", "status")?;
        let channel: String = row.try_get("", "channel")?;
        let delivered: Option<i64> = row.try_get("", "delivered_at_ms")?;
        let pending = status == "pending";
        let delivery = Delivery {
            id: row.try_get("", "id")?,
            event_id: row.try_get("", "event_id")?,
            event_type: row.try_get("", "event_type")?,
            channel: channel_proto(&channel).into(),
            recipient: row.try_get("", "recipient")?,
            principal_id: row.try_get("", "principal_id")?,
            status: status_proto(&status).into(),
            attempt_count: row.try_get::<i32>("", "attempts")? as u32,
            next_attempt_at: pending
                .then(|| row.try_get::<i64>("", "next_attempt_ms"))
                .transpose()?
                .map(timestamp_from_millis),
            last_error: row.try_get("", "last_error")?,
            created_at: Some(timestamp_from_millis(row.try_get("", "created_at_ms")?)),
            delivered_at: delivered.map(timestamp_from_millis),
            attempts: Vec::new(),
            subject: row.try_get("", "subject")?,
        };
        by_id.insert(delivery.id.clone(), delivery);
    }
    for row in &attempts {
        let id: String = row.try_get("", "delivery_id")?;
        if let Some(delivery) = by_id.get_mut(&id) {
            delivery.attempts.push(DeliveryAttempt {
                number: row.try_get::<i32>("", "number")? as u32,
                attempted_at: Some(timestamp_from_millis(row.try_get("", "attempted_at_ms")?)),
                succeeded: row.try_get("", "succeeded")?,
                http_status: row.try_get::<i32>("", "http_status")? as u32,
                error: row.try_get("", "error")?,
                duration_ms: row.try_get::<i64>("", "duration_ms")?.max(0) as u32,
            });
        }
    }
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_match_exact_types_and_producer_wildcards() {
        let row = SubscriptionRow {
            id: "s".into(),
            request_id: "r".into(),
            url: "https://h/".into(),
            event_types: vec!["approval.*".into(), "assignment.schedule_created".into()],
            description: String::new(),
            sealed_secret: vec![],
            enabled: true,
            created_at_ms: 0,
            created_by: String::new(),
            updated_at_ms: 0,
        };
        assert!(row.wants("approval.case_opened"));
        assert!(row.wants("assignment.schedule_created"));
        assert!(!row.wants("assignment.schedule_removed"));
        assert!(!row.wants("approvals.case_opened"));
    }
}
