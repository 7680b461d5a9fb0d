//! Expiry announcements for schedules: `assignment.schedule_expiring` 14 days and 1 day ahead,
//! and `assignment.schedule_expired`. Timers only announce; access already ends at `end`
//! because it is evaluated at query time. Activated windows are announced by activation.

use pim_db::stmt;
use pim_events::{NewEvent, Outbox};
use pim_proto::assignment::v1::{ScheduleExpired, ScheduleExpiring};
use sea_orm::{ConnectionTrait, TransactionTrait};
use tracing::Instrument as _;

use super::{Store, schedules::schedule};

const DAY_MS: i64 = 86_400_000;

/// (announcement kind, earliest lead before `end`, latest lead before `end`, days ahead).
const REMINDERS: [(&str, i64, i64, u32); 2] = [
    ("expiring_14d", DAY_MS, 14 * DAY_MS, 14),
    ("expiring_1d", 0, DAY_MS, 1),
];

impl Store {
    /// Announces every reminder and expiry due at `now_ms` that was not announced yet; returns
    /// how many it announced.
    pub async fn announce_due(&self, outbox: &Outbox, now_ms: i64) -> anyhow::Result<usize> {
        let mut announced = 0;
        for (kind, min_lead, max_lead, days_ahead) in REMINDERS {
            // Due when `end - max_lead <= now < end - min_lead`, that is when `end` lies in
            // `(now + min_lead, now + max_lead]`: a range on `end_ms` alone, which its index
            // answers without reading every time-bound schedule on each tick.
            let rows = self
                .db
                .query_all_raw(stmt(
                    &self.db,
                    "SELECT s.* FROM schedules s WHERE s.end_ms <= $1 AND s.end_ms > $2 \
                     AND NOT EXISTS (SELECT 1 FROM schedule_announcements a WHERE a.schedule_id = s.id AND a.kind = $3) LIMIT 500",
                    [
                        (now_ms + max_lead).into(),
                        (now_ms + min_lead).into(),
                        kind.into(),
                    ],
                ))
                .await?;
            for row in rows {
                let schedule = schedule(&row)?;
                let payload = ScheduleExpiring {
                    schedule: Some(schedule.clone()),
                    days_ahead,
                };
                let event = NewEvent::new(
                    "assignment.schedule_expiring",
                    schedule.id.clone(),
                    pim_proto::pack(&payload),
                );
                announced += usize::from(
                    self.announce_once(outbox, &schedule.id, kind, event, now_ms)
                        .instrument(pim_telemetry::timer_span(
                            "assignment.schedule_expiring",
                            &schedule.id,
                        ))
                        .await?,
                );
            }
        }
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT s.* FROM schedules s WHERE s.end_ms IS NOT NULL AND s.end_ms <= $1 \
                 AND NOT EXISTS (SELECT 1 FROM schedule_announcements a WHERE a.schedule_id = s.id AND a.kind = 'expired') LIMIT 500",
                [now_ms.into()],
            ))
            .await?;
        for row in rows {
            let schedule = schedule(&row)?;
            let payload = ScheduleExpired {
                schedule: Some(schedule.clone()),
            };
            let event = NewEvent::new(
                "assignment.schedule_expired",
                schedule.id.clone(),
                pim_proto::pack(&payload),
            );
            announced += usize::from(
                self.announce_once(outbox, &schedule.id, "expired", event, now_ms)
                    .instrument(pim_telemetry::timer_span(
                        "assignment.schedule_expired",
                        &schedule.id,
                    ))
                    .await?,
            );
        }
        Ok(announced)
    }

    /// Records the announcement and writes its event in one transaction; `false` when another
    /// replica announced it first.
    async fn announce_once(
        &self,
        outbox: &Outbox,
        schedule_id: &str,
        kind: &str,
        event: NewEvent,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let txn = self.db.begin().await?;
        let inserted = txn
            .execute_raw(stmt(
                &txn,
                "INSERT INTO schedule_announcements (schedule_id, kind, announced_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (schedule_id, kind) DO NOTHING",
                [schedule_id.into(), kind.into(), now_ms.into()],
            ))
            .await?
            .rows_affected()
            == 1;
        if inserted {
            outbox.enqueue(&txn, event.by("service:assignment")).await?;
        }
        txn.commit().await?;
        Ok(inserted)
    }
}
