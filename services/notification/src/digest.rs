//! The admins' digest: activations granted, assignments created, approval requests opened and
//! still pending, per period (weekly by default, Mondays 08:00 UTC). The facts are recorded as
//! events are consumed; at each period's end one replica (the one whose insert of the period's
//! row succeeds) writes an e-mail delivery to every admin at `/`, which the workers send like
//! any other. Periods are judged by the injectable clock.

use std::{sync::Arc, time::Duration};

use pim_client::PimClient;
use pim_clock::SharedClock;
use pim_db::stmt;
use pim_proto::events::v1::Event;
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    channels::EmailMessage,
    consumer::endpoint_of,
    notice::{Audience, Defaults, Facts, rfc3339},
    recipients::Directory,
    store::{NewDelivery, Store},
    templates::Templates,
};

/// Monday 1970-01-05 08:00 UTC: periods are counted from here.
pub const ANCHOR_MS: i64 = 4 * 86_400_000 + 8 * 3_600_000;

/// The latest period boundary at or before `now_ms`.
pub fn last_boundary(now_ms: i64, interval_ms: i64) -> i64 {
    ANCHOR_MS + (now_ms - ANCHOR_MS).div_euclid(interval_ms) * interval_ms
}

/// Records what the digest counts of `event`, inside the consumer's transaction.
pub async fn record(conn: &impl ConnectionTrait, event: &Event, at_ms: i64) -> anyhow::Result<()> {
    let kind = match event.r#type.as_str() {
        "activation.request_granted" => "activation",
        "assignment.schedule_created" => "assignment",
        "approval.case_opened" => "case_opened",
        "approval.case_decided" | "approval.case_timed_out" | "approval.case_canceled" => {
            "case_closed"
        }
        _ => return Ok(()),
    };
    conn.execute_raw(stmt(
        conn,
        "INSERT INTO digest_facts (event_id, kind, case_id, at_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (event_id) DO NOTHING",
        [
            event.id.clone().into(),
            kind.into(),
            event.subject.clone().into(),
            at_ms.into(),
        ],
    ))
    .await?;
    Ok(())
}

#[derive(Serialize)]
struct DigestContext<'a> {
    recipient_name: &'a str,
    period_start: String,
    period_end: String,
    activations: i64,
    assignments: i64,
    approvals_opened: i64,
    pending_approvals: i64,
}

pub struct Digest {
    pub db: DatabaseConnection,
    pub store: Store,
    pub assignment: PimClient,
    pub templates: Arc<Templates>,
    pub clock: SharedClock,
    pub interval: Duration,
    pub max_attempts: u32,
    pub wake: Arc<Notify>,
}

async fn count(
    conn: &impl ConnectionTrait,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> anyhow::Result<i64> {
    Ok(conn
        .query_one_raw(stmt(conn, sql, values))
        .await?
        .map(|row| row.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0))
}

impl Digest {
    fn interval_ms(&self) -> i64 {
        (self.interval.as_millis() as i64).max(60_000)
    }

    /// On first start, marks the current period as the baseline, so nothing is sent for the
    /// time before PIM ran.
    pub async fn baseline(&self) -> anyhow::Result<()> {
        let now = self.clock.now_millis();
        let boundary = last_boundary(now, self.interval_ms());
        if count(&self.db, "SELECT COUNT(*) AS n FROM digest_runs", vec![]).await? == 0 {
            self.db
                .execute_raw(stmt(
                    &self.db,
                    "INSERT INTO digest_runs (period_end_ms, recorded_at_ms, sent) \
                     VALUES ($1, $2, $3) ON CONFLICT (period_end_ms) DO NOTHING",
                    [boundary.into(), now.into(), false.into()],
                ))
                .await?;
        }
        Ok(())
    }

    pub async fn run(self, every: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match self.send_due().await {
                Ok(true) => self.wake.notify_one(),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = ?e, "the digest failed; it is tried again"),
            }
        }
    }

    /// Writes the digest of the period that ended last, unless a replica already did.
    pub async fn send_due(&self) -> anyhow::Result<bool> {
        let now = self.clock.now_millis();
        let interval = self.interval_ms();
        let end = last_boundary(now, interval);
        let start = end - interval;
        let txn = self.db.begin().await?;
        let claimed = txn
            .execute_raw(stmt(
                &txn,
                "INSERT INTO digest_runs (period_end_ms, recorded_at_ms, sent) VALUES ($1, $2, $3) \
                 ON CONFLICT (period_end_ms) DO NOTHING",
                [end.into(), now.into(), true.into()],
            ))
            .await?
            .rows_affected()
            == 1;
        if !claimed {
            txn.rollback().await?;
            return Ok(false);
        }
        let in_period = |kind: &str| {
            (
                "SELECT COUNT(*) AS n FROM digest_facts WHERE kind = $1 AND at_ms >= $2 AND at_ms < $3",
                vec![kind.into(), start.into(), end.into()],
            )
        };
        let (sql, values) = in_period("activation");
        let activations = count(&txn, sql, values).await?;
        let (sql, values) = in_period("assignment");
        let assignments = count(&txn, sql, values).await?;
        let (sql, values) = in_period("case_opened");
        let approvals_opened = count(&txn, sql, values).await?;
        let pending_approvals = count(
            &txn,
            "SELECT COUNT(*) AS n FROM digest_facts o WHERE o.kind = 'case_opened' AND o.at_ms < $1 \
             AND NOT EXISTS (SELECT 1 FROM digest_facts c WHERE c.kind = 'case_closed' \
             AND c.case_id = o.case_id AND c.at_ms < $1)",
            vec![end.into()],
        )
        .await?;
        let directory = Directory {
            assignment: &self.assignment,
        };
        let admins = directory
            .recipients(
                &Facts {
                    scope: "/".into(),
                    ..Facts::default()
                },
                &[Audience {
                    slot: None,
                    defaults: Defaults::Admins("/".into()),
                    critical: false,
                }],
            )
            .await?;
        let event_id = format!("digest:{end}");
        let mut deliveries = Vec::new();
        for admin in admins {
            let rendered = self.templates.render_family(
                "digest",
                &DigestContext {
                    recipient_name: &admin.name,
                    period_start: rfc3339(start),
                    period_end: rfc3339(end),
                    activations,
                    assignments,
                    approvals_opened,
                    pending_approvals,
                },
            )?;
            let message = EmailMessage {
                to: admin.email.clone(),
                to_name: admin.name.clone(),
                subject: rendered.subject.clone(),
                text: rendered.text,
                html: rendered.html,
            };
            deliveries.push(NewDelivery {
                event_id: event_id.clone(),
                event_type: "notification.digest".into(),
                channel: "email",
                endpoint: endpoint_of(&admin.email),
                recipient: admin.email,
                principal_id: admin.principal_id,
                subject: rendered.subject,
                body: serde_json::to_vec(&message)?,
            });
        }
        self.store
            .insert_deliveries(&txn, &deliveries, now, self.max_attempts)
            .await?;
        txn.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekly_periods_end_on_mondays_at_eight() {
        let week = 7 * 86_400_000;
        // 2026-11-23 (a Monday) 15:00 UTC -> that Monday 08:00 UTC.
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T15:00:00Z")
            .unwrap()
            .timestamp_millis();
        let boundary = last_boundary(now, week);
        assert_eq!(rfc3339(boundary), "2026-11-23 08:00 UTC");
        // Sunday evening -> the Monday before.
        let sunday = now - 20 * 3_600_000;
        assert_eq!(rfc3339(last_boundary(sunday, week)), "2026-11-16 08:00 UTC");
    }
}
