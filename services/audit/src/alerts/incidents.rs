//! Incidents and configurations in storage: reading them, and reconciling an alert's incident
//! for one key with what evaluation found. One current incident per alert and key; it is closed
//! (resolved, or left dismissed) when its condition stops holding, so a recurrence opens a new one.

use pim_db::stmt;
use pim_proto::{
    audit::v1::{AlertIncident, AlertIncidentState},
    timestamp_from_millis,
};
use sea_orm::{ConnectionTrait, QueryResult};

use super::{
    definitions::{AlertKind, Settings},
    evaluate::{Evaluation, Finding},
};

/// A stored incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub id: String,
    pub alert_id: String,
    pub key: String,
    pub current: bool,
    pub state: String,
    pub episode: i64,
    pub finding: Finding,
    pub opened_at_ms: i64,
    pub closed_at_ms: Option<i64>,
    pub dismissed_by: String,
    pub justification: String,
    pub remediated_by: String,
    pub remediated_at_ms: Option<i64>,
}

pub const OPEN: &str = "open";
pub const RESOLVED: &str = "resolved";
pub const DISMISSED: &str = "dismissed";

impl Incident {
    pub fn to_proto(&self) -> AlertIncident {
        let f = &self.finding;
        AlertIncident {
            id: self.id.clone(),
            alert_id: self.alert_id.clone(),
            state: match self.state.as_str() {
                OPEN => AlertIncidentState::Open,
                RESOLVED => AlertIncidentState::Resolved,
                _ => AlertIncidentState::Dismissed,
            }
            .into(),
            principal_id: f.principal_id.clone(),
            role_id: f.role_id.clone(),
            scope: f.scope.clone(),
            schedule_id: f.schedule_id.clone(),
            count: u64::try_from(f.count).unwrap_or_default(),
            first_seen: Some(timestamp_from_millis(f.first_seen_ms)),
            last_seen: Some(timestamp_from_millis(f.last_seen_ms)),
            detail: f.detail.clone(),
            closed_at: self.closed_at_ms.map(timestamp_from_millis),
            dismissed_by: self.dismissed_by.clone(),
            justification: self.justification.clone(),
            remediated_by: self.remediated_by.clone(),
            remediated_at: self.remediated_at_ms.map(timestamp_from_millis),
        }
    }
}

fn incident(row: &QueryResult) -> anyhow::Result<Incident> {
    let s = |c: &str| row.try_get::<String>("", c);
    Ok(Incident {
        id: s("id")?,
        alert_id: s("alert_id")?,
        key: s("incident_key")?,
        current: row.try_get("", "current")?,
        state: s("state")?,
        episode: row.try_get("", "episode")?,
        finding: Finding {
            principal_id: s("principal_id")?,
            role_id: s("role_id")?,
            scope: s("scope")?,
            schedule_id: s("schedule_id")?,
            count: row.try_get("", "count")?,
            first_seen_ms: row.try_get("", "first_seen_ms")?,
            last_seen_ms: row.try_get("", "last_seen_ms")?,
            last_sequence: row.try_get("", "last_sequence")?,
            episode: row.try_get("", "episode")?,
            detail: s("detail")?,
        },
        opened_at_ms: row.try_get("", "opened_at_ms")?,
        closed_at_ms: row.try_get("", "closed_at_ms")?,
        dismissed_by: s("dismissed_by")?,
        justification: s("justification")?,
        remediated_by: s("remediated_by")?,
        remediated_at_ms: row.try_get("", "remediated_at_ms")?,
    })
}

pub async fn current(
    db: &impl ConnectionTrait,
    kind: AlertKind,
    key: &str,
) -> anyhow::Result<Option<Incident>> {
    db.query_one_raw(stmt(
        db,
        "SELECT * FROM alert_incidents WHERE alert_id = $1 AND incident_key = $2 AND current",
        [kind.id().into(), key.into()],
    ))
    .await?
    .map(|row| incident(&row))
    .transpose()
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> anyhow::Result<Option<Incident>> {
    db.query_one_raw(stmt(
        db,
        "SELECT * FROM alert_incidents WHERE id = $1",
        [id.into()],
    ))
    .await?
    .map(|row| incident(&row))
    .transpose()
}

/// The keys of an alert's current incidents.
pub async fn current_keys(
    db: &impl ConnectionTrait,
    kind: AlertKind,
) -> anyhow::Result<Vec<String>> {
    let rows = db
        .query_all_raw(stmt(
            db,
            "SELECT incident_key FROM alert_incidents WHERE alert_id = $1 AND current",
            [kind.id().into()],
        ))
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<String>("", "incident_key"))
        .collect::<Result<_, _>>()?)
}

/// An alert's incidents: open ones (oldest first), then, if asked, the closed and dismissed.
pub async fn list(
    db: &impl ConnectionTrait,
    kind: AlertKind,
    include_closed: bool,
    offset: u64,
    limit: u64,
) -> anyhow::Result<Vec<Incident>> {
    let filter = if include_closed {
        ""
    } else {
        "AND state = 'open'"
    };
    let rows = db
        .query_all_raw(stmt(
            db,
            &format!(
                "SELECT * FROM alert_incidents WHERE alert_id = $1 {filter} \
                 ORDER BY CASE WHEN state = 'open' THEN 0 ELSE 1 END, opened_at_ms, id \
                 LIMIT $2 OFFSET $3"
            ),
            [
                kind.id().into(),
                i64::try_from(limit).unwrap_or(i64::MAX).into(),
                i64::try_from(offset).unwrap_or(i64::MAX).into(),
            ],
        ))
        .await?;
    rows.iter().map(incident).collect()
}

pub async fn open_count(db: &impl ConnectionTrait, kind: AlertKind) -> anyhow::Result<i64> {
    Ok(db
        .query_one_raw(stmt(
            db,
            "SELECT COUNT(*) AS n FROM alert_incidents WHERE alert_id = $1 AND state = 'open'",
            [kind.id().into()],
        ))
        .await?
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0))
}

/// What reconciling changed, for the events.
#[derive(Debug, Default)]
pub struct Changes {
    pub raised: Vec<Incident>,
    pub resolved: Vec<Incident>,
}

/// Reconciles the incidents of `kind` for each key with its evaluation, in key order: opens,
/// updates or closes the current incident, and sets or clears the key's timer. A refresh
/// reconciles thousands of keys, so the reads and the common writes go many keys to a statement.
pub async fn reconcile_many(
    txn: &impl ConnectionTrait,
    kind: AlertKind,
    evaluations: Vec<(String, Evaluation)>,
    now: i64,
    changes: &mut Changes,
) -> anyhow::Result<()> {
    let keys: Vec<&str> = evaluations.iter().map(|(k, _)| k.as_str()).collect();
    let mut currents = current_of(txn, kind, &keys).await?;
    let mut opened = Vec::new();
    let mut due = Vec::new();
    let mut not_due = Vec::new();
    for (key, evaluation) in &evaluations {
        match (currents.remove(key), evaluation.finding.clone()) {
            (None, None) => {}
            (Some(c), Some(f)) if c.episode == f.episode => {
                if c.finding != f {
                    txn.execute_raw(stmt(
                        txn,
                        "UPDATE alert_incidents SET count = $2, last_seen_ms = $3, \
                         last_sequence = $4, detail = $5 WHERE id = $1",
                        [
                            c.id.clone().into(),
                            f.count.into(),
                            f.last_seen_ms.into(),
                            f.last_sequence.into(),
                            f.detail.clone().into(),
                        ],
                    ))
                    .await?;
                }
            }
            (existing, finding) => {
                // Closed first: a key has one current incident, and the new one takes its place.
                if let Some(c) = existing {
                    close(txn, c, now, changes).await?;
                }
                if let Some(f) = finding {
                    opened.push(new_incident(kind, key, f, now));
                }
            }
        }
        match evaluation.due_at_ms {
            Some(at) => due.push(vec![kind.id().into(), key.clone().into(), at.into()]),
            None => not_due.push(key.as_str()),
        }
    }
    insert_incidents(txn, &opened).await?;
    changes.raised.extend(opened);
    for chunk in due.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("({})", pim_db::placeholders(i * 3 + 1, 3)))
            .collect();
        txn.execute_raw(stmt(
            txn,
            &format!(
                "INSERT INTO alert_due (alert_id, incident_key, due_at_ms) VALUES {} \
                 ON CONFLICT (alert_id, incident_key) DO UPDATE SET due_at_ms = excluded.due_at_ms",
                rows.join(", ")
            ),
            chunk.iter().flatten().cloned(),
        ))
        .await?;
    }
    for chunk in not_due.chunks(ROWS_PER_STATEMENT) {
        let mut values: Vec<sea_orm::Value> = vec![kind.id().into()];
        values.extend(chunk.iter().map(|k| sea_orm::Value::from(*k)));
        txn.execute_raw(stmt(
            txn,
            &format!(
                "DELETE FROM alert_due WHERE alert_id = $1 AND incident_key IN ({})",
                pim_db::placeholders(2, chunk.len())
            ),
            values,
        ))
        .await?;
    }
    Ok(())
}

/// Keys per statement: far inside both engines' limits on bound values.
const ROWS_PER_STATEMENT: usize = 500;

/// The current incidents of `kind` for `keys`, by key.
async fn current_of(
    txn: &impl ConnectionTrait,
    kind: AlertKind,
    keys: &[&str],
) -> anyhow::Result<std::collections::HashMap<String, Incident>> {
    let mut found = std::collections::HashMap::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let mut values: Vec<sea_orm::Value> = vec![kind.id().into()];
        values.extend(chunk.iter().map(|k| sea_orm::Value::from(*k)));
        let rows = txn
            .query_all_raw(stmt(
                txn,
                &format!(
                    "SELECT * FROM alert_incidents WHERE alert_id = $1 AND current \
                     AND incident_key IN ({})",
                    pim_db::placeholders(2, chunk.len())
                ),
                values,
            ))
            .await?;
        for row in &rows {
            let incident = incident(row)?;
            found.insert(incident.key.clone(), incident);
        }
    }
    Ok(found)
}

/// An open incident is resolved; a dismissed one stops being current, quietly.
async fn close(
    txn: &impl ConnectionTrait,
    mut incident: Incident,
    now: i64,
    changes: &mut Changes,
) -> anyhow::Result<()> {
    let was_open = incident.state == OPEN;
    txn.execute_raw(stmt(
        txn,
        "UPDATE alert_incidents SET current = FALSE, \
         state = CASE WHEN state = 'open' THEN 'resolved' ELSE state END, \
         closed_at_ms = COALESCE(closed_at_ms, $2) WHERE id = $1",
        [incident.id.clone().into(), now.into()],
    ))
    .await?;
    if was_open {
        incident.state = RESOLVED.into();
        incident.current = false;
        incident.closed_at_ms = Some(now);
        changes.resolved.push(incident);
    }
    Ok(())
}

fn new_incident(kind: AlertKind, key: &str, f: Finding, now: i64) -> Incident {
    Incident {
        id: uuid::Uuid::now_v7().to_string(),
        alert_id: kind.id().to_owned(),
        key: key.to_owned(),
        current: true,
        state: OPEN.into(),
        episode: f.episode,
        finding: f,
        opened_at_ms: now,
        closed_at_ms: None,
        dismissed_by: String::new(),
        justification: String::new(),
        remediated_by: String::new(),
        remediated_at_ms: None,
    }
}

/// Inserts new open incidents, many to a statement.
async fn insert_incidents(
    txn: &impl ConnectionTrait,
    incidents: &[Incident],
) -> anyhow::Result<()> {
    const WIDTH: usize = 14;
    for chunk in incidents.chunks(ROWS_PER_STATEMENT / 4) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let n = i * WIDTH;
                format!(
                    "(${}, ${}, ${}, TRUE, 'open', ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, \
                     ${}, ${}, NULL, '', '', '', NULL)",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5,
                    n + 6,
                    n + 7,
                    n + 8,
                    n + 9,
                    n + 10,
                    n + 11,
                    n + 12,
                    n + 13,
                    n + 14
                )
            })
            .collect();
        let values = chunk.iter().flat_map(|incident| {
            let f = &incident.finding;
            [
                incident.id.clone().into(),
                incident.alert_id.clone().into(),
                incident.key.clone().into(),
                f.episode.into(),
                f.principal_id.clone().into(),
                f.role_id.clone().into(),
                f.scope.clone().into(),
                f.schedule_id.clone().into(),
                f.count.into(),
                f.last_sequence.into(),
                f.first_seen_ms.into(),
                f.last_seen_ms.into(),
                f.detail.clone().into(),
                incident.opened_at_ms.into(),
            ]
        });
        txn.execute_raw(stmt(
            txn,
            &format!(
                "INSERT INTO alert_incidents (id, alert_id, incident_key, current, state, episode, \
                 principal_id, role_id, scope, schedule_id, count, last_sequence, first_seen_ms, \
                 last_seen_ms, detail, opened_at_ms, closed_at_ms, dismissed_by, justification, \
                 remediated_by, remediated_at_ms) VALUES {}",
                rows.join(", ")
            ),
            values,
        ))
        .await?;
    }
    Ok(())
}

/// Dismisses open incidents (one, or all of the alert); returns them as dismissed.
pub async fn dismiss(
    txn: &impl ConnectionTrait,
    kind: AlertKind,
    incident_id: Option<&str>,
    by: &str,
    justification: &str,
    now: i64,
) -> anyhow::Result<Vec<Incident>> {
    let mut targets = match incident_id {
        Some(id) => get(txn, id)
            .await?
            .filter(|i| i.alert_id == kind.id() && i.state == OPEN)
            .into_iter()
            .collect(),
        None => list(txn, kind, false, 0, u64::MAX >> 1).await?,
    };
    for incident in &mut targets {
        txn.execute_raw(stmt(
            txn,
            "UPDATE alert_incidents SET state = 'dismissed', dismissed_by = $2, justification = $3, \
             closed_at_ms = $4 WHERE id = $1",
            [
                incident.id.clone().into(),
                by.into(),
                justification.into(),
                now.into(),
            ],
        ))
        .await?;
        incident.state = DISMISSED.into();
        incident.dismissed_by = by.to_owned();
        incident.justification = justification.to_owned();
        incident.closed_at_ms = Some(now);
    }
    Ok(targets)
}

pub async fn mark_remediated(
    txn: &impl ConnectionTrait,
    id: &str,
    by: &str,
    now: i64,
) -> anyhow::Result<()> {
    txn.execute_raw(stmt(
        txn,
        "UPDATE alert_incidents SET remediated_by = $2, remediated_at_ms = $3 WHERE id = $1",
        [id.into(), by.into(), now.into()],
    ))
    .await?;
    Ok(())
}

/// The settings of every alert: stored ones, defaults for the rest; `disabled` names the alerts
/// whose default is off (`PIM_ALERTS_DISABLED`).
pub async fn settings(
    db: &impl ConnectionTrait,
    disabled: &[String],
) -> anyhow::Result<Vec<(AlertKind, Settings)>> {
    let rows = db
        .query_all_raw(stmt(db, "SELECT * FROM alert_configurations", []))
        .await?;
    let mut out: Vec<(AlertKind, Settings)> = AlertKind::ALL
        .into_iter()
        .map(|k| {
            let mut s = Settings::default_for(k);
            s.enabled = !disabled.iter().any(|d| d == k.id());
            (k, s)
        })
        .collect();
    for row in rows {
        let id: String = row.try_get("", "alert_id")?;
        let Some(slot) = out.iter_mut().find(|(k, _)| k.id() == id) else {
            continue;
        };
        let int = |c: &str| -> anyhow::Result<Option<u32>> {
            Ok(row
                .try_get::<Option<i32>>("", c)?
                .map(|v| u32::try_from(v).unwrap_or_default()))
        };
        let s = &mut slot.1;
        s.enabled = row.try_get("", "enabled")?;
        s.global_admin_count = int("global_admin_count")?.unwrap_or(s.global_admin_count);
        s.global_admin_percentage =
            int("global_admin_percentage")?.unwrap_or(s.global_admin_percentage);
        s.activation_count = int("activation_count")?.unwrap_or(s.activation_count);
        s.activation_window_ms = row
            .try_get::<Option<i64>>("", "activation_window_ms")?
            .unwrap_or(s.activation_window_ms);
        s.duration_days = int("duration_days")?.unwrap_or(s.duration_days);
        s.updated_by = row.try_get("", "updated_by")?;
        s.updated_at_ms = row.try_get("", "updated_at_ms")?;
    }
    Ok(out)
}

pub async fn save_settings(
    txn: &impl ConnectionTrait,
    kind: AlertKind,
    s: &Settings,
) -> anyhow::Result<()> {
    let int = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    txn.execute_raw(stmt(
        txn,
        "INSERT INTO alert_configurations (alert_id, enabled, global_admin_count, \
         global_admin_percentage, activation_count, activation_window_ms, duration_days, \
         updated_by, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (alert_id) DO UPDATE SET enabled = excluded.enabled, \
         global_admin_count = excluded.global_admin_count, \
         global_admin_percentage = excluded.global_admin_percentage, \
         activation_count = excluded.activation_count, \
         activation_window_ms = excluded.activation_window_ms, \
         duration_days = excluded.duration_days, updated_by = excluded.updated_by, \
         updated_at_ms = excluded.updated_at_ms",
        [
            kind.id().into(),
            s.enabled.into(),
            int(s.global_admin_count).into(),
            int(s.global_admin_percentage).into(),
            int(s.activation_count).into(),
            s.activation_window_ms.into(),
            int(s.duration_days).into(),
            s.updated_by.clone().into(),
            s.updated_at_ms.into(),
        ],
    ))
    .await?;
    Ok(())
}
