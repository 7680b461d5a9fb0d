//! Running the evaluations: for the keys one record touches (inside the consumer's transaction),
//! for the keys whose time has come (the timer), and for everything (a configuration change or a
//! refresh). New and resolved incidents go out through the outbox in the same transaction.

use std::collections::{BTreeMap, BTreeSet};

use pim_db::stmt;
use pim_events::{NewEvent, Outbox};
use pim_proto::audit::v1::{Alert, AlertRaised, AlertResolved};
use sea_orm::{ConnectionTrait, DatabaseBackend};

use super::{
    definitions::{AlertKind, Settings},
    evaluate,
    facts::{Fact, activity_of, facts_of},
    incidents::{self, Changes},
    projection,
    view::{Tables, View},
};
use crate::record::RecordContent;

/// Where alert events go, and the alerts that are off unless configured.
#[derive(Clone)]
pub struct Alerting {
    pub outbox: Outbox,
    pub disabled: std::sync::Arc<[String]>,
}

impl Alerting {
    pub fn new(outbox: Outbox, disabled: &[String]) -> Self {
        Self {
            outbox,
            disabled: disabled.into(),
        }
    }
}

/// Serialises every alert evaluation (consumers, timer, API, refresh) on one row, so two never
/// reconcile the same incident at once. SQLite (`pim dev`) has one connection, which already does.
pub async fn lock(txn: &impl ConnectionTrait) -> anyhow::Result<()> {
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        txn.execute_raw(stmt(
            txn,
            "SELECT id FROM alert_state WHERE id = 1 FOR UPDATE",
            [],
        ))
        .await?;
    }
    Ok(())
}

/// What to evaluate.
#[derive(Debug, Default)]
pub struct Targets {
    keys: BTreeSet<(AlertKind, String)>,
    all: BTreeSet<AlertKind>,
    /// Principals whose schedules are keys of the guest alert.
    guests: BTreeSet<String>,
}

impl Targets {
    pub fn everything() -> Targets {
        Targets {
            all: AlertKind::ALL.into_iter().collect(),
            ..Targets::default()
        }
    }

    pub fn all_of(kind: AlertKind) -> Targets {
        Targets {
            all: [kind].into_iter().collect(),
            ..Targets::default()
        }
    }

    fn key(&mut self, kind: AlertKind, key: impl Into<String>) {
        self.keys.insert((kind, key.into()));
    }

    /// The keys a fact can change.
    fn touched_by(&mut self, fact: &Fact) {
        use AlertKind::*;
        match fact {
            Fact::Schedule(s) => {
                for kind in [
                    RolesAssignedOutsidePim,
                    RedundantAssignment,
                    GuestInPrivilegedRole,
                ] {
                    self.key(kind, &s.id);
                }
                self.key(StaleSignIn, &s.principal_id);
                self.all.insert(TooManyGlobalAdmins);
            }
            Fact::ScheduleGone(id) => {
                for kind in [
                    RolesAssignedOutsidePim,
                    RedundantAssignment,
                    GuestInPrivilegedRole,
                ] {
                    self.key(kind, id);
                }
                // The principal is no longer known once the row is gone: look at them all.
                self.all.insert(StaleSignIn);
                self.all.insert(TooManyGlobalAdmins);
            }
            Fact::Principal { id, .. } => {
                self.key(StaleSignIn, id);
                self.guests.insert(id.clone());
                self.all.insert(TooManyGlobalAdmins);
            }
            Fact::Role { .. } | Fact::RoleGone(_) => {
                for kind in [
                    TooManyGlobalAdmins,
                    NoMfaOnActivation,
                    RedundantAssignment,
                    StaleSignIn,
                    GuestInPrivilegedRole,
                ] {
                    self.all.insert(kind);
                }
            }
            Fact::Policy { role_id, scope, .. } => {
                self.key(NoMfaOnActivation, format!("{role_id}|{scope}"));
            }
            Fact::Activation(a) => {
                self.key(
                    SequentialActivations,
                    format!("{}|{}", a.principal_id, a.role_id),
                );
                self.key(RedundantAssignment, &a.schedule_id);
                self.key(StaleSignIn, &a.principal_id);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.all.is_empty() && self.guests.is_empty()
    }
}

/// Continuous evaluation of records in chain order, inside the consumer's transaction. Each
/// record's break-glass actor is judged by what was known before it, and its facts are applied
/// in order, as a refresh does; what they touch is evaluated once, after the last, at the
/// batch's one instant. Most records carry no facts and change nothing the alerts know; for each
/// run of those, who of their actors is break-glass is asked once, since no record of the run
/// can change the answer.
pub async fn observe_many(
    txn: &impl ConnectionTrait,
    alerting: &Alerting,
    records: &[RecordContent],
    now: i64,
) -> anyhow::Result<()> {
    let mut targets = Targets::default();
    let mut rest = records;
    while let Some(first) = rest.first() {
        let facts = facts_of(first);
        if !facts.is_empty() {
            let actor = match activity_of(first) {
                Some(actor) if projection::is_break_glass(txn, actor).await? => Some(actor),
                _ => None,
            };
            apply_known(txn, first, facts, actor, &mut targets).await?;
            rest = &rest[1..];
            continue;
        }
        let run = rest
            .iter()
            .position(|r| !facts_of(r).is_empty())
            .unwrap_or(rest.len());
        let actors: BTreeSet<&str> = rest[..run].iter().filter_map(activity_of).collect();
        let break_glass = projection::break_glass_among(txn, &actors).await?;
        for record in &rest[..run] {
            if let Some(actor) = activity_of(record).filter(|a| break_glass.contains(*a)) {
                apply_known(txn, record, Vec::new(), Some(actor), &mut targets).await?;
            }
        }
        rest = &rest[run..];
    }
    if !targets.is_empty() {
        // A batch of schedule events used to evaluate the tenant-wide alert (two scans of every
        // schedule) once per event; once per batch gives the same incidents at its end.
        evaluate(txn, &Tables(txn), alerting, targets, now).await?;
    }
    Ok(())
}

/// Applies a record's `facts` and its break-glass `actor` to the projection, and notes what
/// they touch in `targets`.
async fn apply_known(
    txn: &impl ConnectionTrait,
    record: &RecordContent,
    facts: Vec<Fact>,
    actor: Option<&str>,
    targets: &mut Targets,
) -> anyhow::Result<()> {
    if facts.is_empty() && actor.is_none() {
        return Ok(());
    }
    lock(txn).await?;
    if let Some(actor) = actor {
        projection::record_use(txn, record.sequence, actor, record.occurred_at_ms).await?;
        targets.key(AlertKind::BreakGlassUsed, actor);
    }
    for fact in &facts {
        projection::apply(txn, fact).await?;
        targets.touched_by(fact);
    }
    Ok(())
}

/// Evaluates `targets` against `view` and announces what changed. Returns the changes per alert.
pub async fn evaluate(
    txn: &impl ConnectionTrait,
    view: &impl View,
    alerting: &Alerting,
    mut targets: Targets,
    now: i64,
) -> anyhow::Result<BTreeMap<AlertKind, Changes>> {
    let settings: BTreeMap<AlertKind, Settings> = incidents::settings(txn, &alerting.disabled)
        .await?
        .into_iter()
        .collect();
    for principal in std::mem::take(&mut targets.guests) {
        for schedule in view.schedules_of(&principal).await? {
            targets.key(AlertKind::GuestInPrivilegedRole, schedule);
        }
    }
    let mut changes: BTreeMap<AlertKind, Changes> = BTreeMap::new();
    // Every key of the alerts looked at as a whole, then the keys named one by one.
    let mut keys: BTreeMap<AlertKind, BTreeSet<String>> = BTreeMap::new();
    for kind in &targets.all {
        if *kind == AlertKind::TooManyGlobalAdmins {
            continue;
        }
        let all = keys.entry(*kind).or_default();
        all.extend(view.candidate_keys(*kind, &settings[kind], now).await?);
        all.extend(incidents::current_keys(txn, *kind).await?);
    }
    for (kind, key) in std::mem::take(&mut targets.keys) {
        if kind == AlertKind::TooManyGlobalAdmins {
            targets.all.insert(kind);
        } else if !targets.all.contains(&kind) {
            keys.entry(kind).or_default().insert(key);
        }
    }
    if targets.all.contains(&AlertKind::TooManyGlobalAdmins) {
        let kind = AlertKind::TooManyGlobalAdmins;
        too_many(
            txn,
            view,
            &settings[&kind],
            now,
            changes.entry(kind).or_default(),
        )
        .await?;
    }
    for (kind, keys) in keys {
        let s = &settings[&kind];
        let mut evaluations = Vec::with_capacity(keys.len());
        for key in keys {
            let evaluation = evaluate::key(view, kind, &key, s, now).await?;
            evaluations.push((key, evaluation));
        }
        let out = changes.entry(kind).or_default();
        incidents::reconcile_many(txn, kind, evaluations, now, out).await?;
    }
    for (kind, change) in &changes {
        announce(txn, &alerting.outbox, *kind, &settings[kind], change, now).await?;
    }
    Ok(changes)
}

/// The one alert evaluated as a whole: its condition is about the tenant, its incidents are the
/// Global Administrators. Its one timer is kept under the empty key.
async fn too_many(
    txn: &impl ConnectionTrait,
    view: &impl View,
    settings: &Settings,
    now: i64,
    out: &mut Changes,
) -> anyhow::Result<()> {
    let kind = AlertKind::TooManyGlobalAdmins;
    let (found, due) = evaluate::too_many_global_admins(view, settings, now).await?;
    let mut keys: BTreeSet<String> = incidents::current_keys(txn, kind)
        .await?
        .into_iter()
        .collect();
    let mut found: BTreeMap<String, evaluate::Finding> = found.into_iter().collect();
    keys.extend(found.keys().cloned());
    let mut evaluations: Vec<(String, evaluate::Evaluation)> = keys
        .into_iter()
        .map(|key| {
            let finding = found.remove(&key);
            (
                key,
                evaluate::Evaluation {
                    finding,
                    due_at_ms: None,
                },
            )
        })
        .collect();
    evaluations.push((
        String::new(),
        evaluate::Evaluation {
            finding: None,
            due_at_ms: due,
        },
    ));
    incidents::reconcile_many(txn, kind, evaluations, now, out).await
}

/// The alert as the API and the events show it.
pub async fn alert(
    db: &impl ConnectionTrait,
    kind: AlertKind,
    settings: &Settings,
) -> anyhow::Result<Alert> {
    let open = incidents::open_count(db, kind).await?;
    let scanned = db
        .query_one_raw(stmt(
            db,
            "SELECT scanned_at_ms FROM alert_state WHERE id = 1",
            [],
        ))
        .await?
        .map(|r| r.try_get::<i64>("", "scanned_at_ms"))
        .transpose()?
        .unwrap_or(0);
    Ok(Alert {
        definition: Some(kind.definition()),
        configuration: Some(settings.to_proto(kind)),
        active: open > 0,
        incident_count: u32::try_from(open).unwrap_or(u32::MAX),
        last_scanned_at: (scanned > 0).then(|| pim_proto::timestamp_from_millis(scanned)),
    })
}

async fn announce(
    txn: &impl ConnectionTrait,
    outbox: &Outbox,
    kind: AlertKind,
    settings: &Settings,
    changes: &Changes,
    _now: i64,
) -> anyhow::Result<()> {
    if changes.raised.is_empty() && changes.resolved.is_empty() {
        return Ok(());
    }
    let summary = alert(txn, kind, settings).await?;
    if !changes.resolved.is_empty() {
        let payload = AlertResolved {
            alert: Some(summary.clone()),
            incidents: changes.resolved.iter().map(|i| i.to_proto()).collect(),
        };
        outbox
            .enqueue(
                txn,
                NewEvent::new("audit.alert_resolved", kind.id(), pim_proto::pack(&payload)),
            )
            .await?;
    }
    if !changes.raised.is_empty() {
        let payload = AlertRaised {
            alert: Some(summary),
            incidents: changes.raised.iter().map(|i| i.to_proto()).collect(),
        };
        outbox
            .enqueue(
                txn,
                NewEvent::new("audit.alert_raised", kind.id(), pim_proto::pack(&payload)),
            )
            .await?;
    }
    Ok(())
}

/// Evaluates the keys whose time has come. Returns how many it looked at.
pub async fn due(
    txn: &impl ConnectionTrait,
    alerting: &Alerting,
    now: i64,
) -> anyhow::Result<usize> {
    let rows = txn
        .query_all_raw(stmt(
            txn,
            "SELECT alert_id, incident_key FROM alert_due WHERE due_at_ms <= $1 \
             ORDER BY due_at_ms LIMIT 1000",
            [now.into()],
        ))
        .await?;
    let mut targets = Targets::default();
    for row in &rows {
        let id: String = row.try_get("", "alert_id")?;
        let key: String = row.try_get("", "incident_key")?;
        match AlertKind::from_id(&id) {
            Some(AlertKind::TooManyGlobalAdmins) => {
                targets.all.insert(AlertKind::TooManyGlobalAdmins);
            }
            Some(kind) => targets.key(kind, key),
            None => {}
        }
    }
    if targets.is_empty() {
        return Ok(0);
    }
    evaluate(txn, &Tables(txn), alerting, targets, now).await?;
    txn.execute_raw(stmt(
        txn,
        "UPDATE alert_state SET scanned_at_ms = $1 WHERE id = 1",
        [now.into()],
    ))
    .await?;
    Ok(rows.len())
}
