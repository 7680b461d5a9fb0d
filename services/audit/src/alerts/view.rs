//! What the evaluations read, behind one trait with two sources: the projection's tables
//! ([`Tables`], for continuous evaluation inside a consumer's transaction) and a refresh's
//! in-memory fold of the whole log ([`Folded`]), so a refresh evaluates every key without a round
//! trip each. Both answer every question the same way; `evaluate.rs` holds the rules.

use std::{
    collections::{BTreeSet, HashMap},
    future::Future,
};

use pim_client::roles;
use pim_db::stmt;
use sea_orm::{ConnectionTrait, QueryResult};

use super::{
    definitions::{AlertKind, Settings},
    facts::ScheduleFact,
    projection::Fold,
};

/// Roles PIM treats as privileged even before the catalog says so: its own administrators and
/// readers. Others are privileged when the role events say they are.
pub const KNOWN_PRIVILEGED: [&str; 5] = [
    roles::GLOBAL_ADMINISTRATOR,
    roles::PRIVILEGED_ROLE_ADMINISTRATOR,
    roles::SECURITY_ADMINISTRATOR,
    roles::SECURITY_READER,
    roles::GLOBAL_READER,
];

/// A principal as the directory last described it; unknown principals are enabled members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrincipalState {
    pub enabled: bool,
    pub guest: bool,
    pub disabled_at_ms: Option<i64>,
}

impl Default for PrincipalState {
    fn default() -> Self {
        Self {
            enabled: true,
            guest: false,
            disabled_at_ms: None,
        }
    }
}

/// A break-glass principal's uses after a sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uses {
    pub count: i64,
    pub first_sequence: i64,
    pub last_sequence: i64,
    pub first_at_ms: i64,
    pub last_at_ms: i64,
}

/// `start <= now < end`.
pub fn is_current(s: &ScheduleFact, now: i64) -> bool {
    s.start_ms <= now && s.end_ms.is_none_or(|end| end > now)
}

/// When being current next changes after `now`.
pub fn next_change(s: &ScheduleFact, now: i64) -> Option<i64> {
    if s.start_ms > now {
        Some(s.start_ms)
    } else {
        s.end_ms.filter(|end| *end > now)
    }
}

/// The questions the alert rules ask of what is known.
/// Each answer is `Send`, so evaluations can run inside a gRPC handler.
pub trait View {
    fn schedule(
        &self,
        id: &str,
    ) -> impl Future<Output = anyhow::Result<Option<ScheduleFact>>> + Send;
    fn is_privileged(&self, role: &str) -> impl Future<Output = anyhow::Result<bool>> + Send;
    fn principal(&self, id: &str) -> impl Future<Output = anyhow::Result<PrincipalState>> + Send;
    /// `(mfa_required, set_at_ms)` of the policy set on `role` at exactly `scope`.
    fn policy(
        &self,
        role: &str,
        scope: &str,
    ) -> impl Future<Output = anyhow::Result<Option<(bool, i64)>>> + Send;
    /// The activations of `role` by `principal` with `after < at <= until`, in time order.
    fn activation_times(
        &self,
        principal: &str,
        role: &str,
        after: i64,
        until: i64,
    ) -> impl Future<Output = anyhow::Result<Vec<i64>>> + Send;
    fn last_activation_of_schedule(
        &self,
        schedule: &str,
        until: i64,
    ) -> impl Future<Output = anyhow::Result<Option<i64>>> + Send;
    fn last_activation_of_principal(
        &self,
        principal: &str,
        until: i64,
    ) -> impl Future<Output = anyhow::Result<Option<i64>>> + Send;
    /// The schedules of `principal` for privileged roles.
    fn privileged_schedules_of(
        &self,
        principal: &str,
    ) -> impl Future<Output = anyhow::Result<Vec<ScheduleFact>>> + Send;
    /// The ids of every schedule of `principal`.
    fn schedules_of(
        &self,
        principal: &str,
    ) -> impl Future<Output = anyhow::Result<Vec<String>>> + Send;
    /// The last sequence counted by a dismissed break-glass incident of `principal`, or 0.
    fn dismissed_cut(&self, principal: &str) -> impl Future<Output = anyhow::Result<i64>> + Send;
    fn uses_after(
        &self,
        principal: &str,
        sequence: i64,
    ) -> impl Future<Output = anyhow::Result<Uses>> + Send;
    /// The current, enabled Global Administrators at `/`, each with their earliest start, by
    /// principal id.
    fn global_admins(
        &self,
        now: i64,
    ) -> impl Future<Output = anyhow::Result<Vec<(String, i64)>>> + Send;
    /// How many distinct enabled principals currently hold a privileged role.
    fn privileged_holders(&self, now: i64) -> impl Future<Output = anyhow::Result<i64>> + Send;
    /// When a privileged schedule next starts or ends after `now`.
    fn next_privileged_change(
        &self,
        now: i64,
    ) -> impl Future<Output = anyhow::Result<Option<i64>>> + Send;
    /// The keys of `kind` the projection could make hold now (all of them for a refresh).
    fn candidate_keys(
        &self,
        kind: AlertKind,
        settings: &Settings,
        now: i64,
    ) -> impl Future<Output = anyhow::Result<Vec<String>>> + Send;
}

/// The projection's tables, read through a connection or the consumer's transaction.
pub struct Tables<'a, C>(pub &'a C);

/// An SQL predicate on the column `role` that holds for privileged roles.
fn privileged_sql(role: &str) -> String {
    let known = KNOWN_PRIVILEGED
        .iter()
        .map(|r| format!("'{r}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "({role} IN ({known}) OR EXISTS (SELECT 1 FROM alert_roles r WHERE r.role_id = {role} AND r.privileged))"
    )
}

/// `start <= now < end` in SQL.
const CURRENT: &str = "s.start_ms <= $1 AND (s.end_ms IS NULL OR s.end_ms > $1)";
/// The schedule's holder is not a disabled principal.
const ENABLED_HOLDER: &str = "NOT EXISTS (SELECT 1 FROM alert_principals p \
                              WHERE p.principal_id = s.principal_id AND NOT p.enabled)";

fn schedule_row(row: &QueryResult) -> anyhow::Result<ScheduleFact> {
    Ok(ScheduleFact {
        id: row.try_get("", "schedule_id")?,
        active: row.try_get::<String>("", "kind")? == "active",
        principal_id: row.try_get("", "principal_id")?,
        role_id: row.try_get("", "role_id")?,
        scope: row.try_get("", "scope")?,
        start_ms: row.try_get("", "start_ms")?,
        end_ms: row.try_get("", "end_ms")?,
        discovered: row.try_get::<String>("", "origin")? == "discovered",
    })
}

impl<C: ConnectionTrait + Sync> Tables<'_, C> {
    async fn optional_i64(
        &self,
        sql: &str,
        values: Vec<sea_orm::Value>,
    ) -> anyhow::Result<Option<i64>> {
        Ok(self
            .0
            .query_one_raw(stmt(self.0, sql, values))
            .await?
            .map(|row| row.try_get::<Option<i64>>("", "v"))
            .transpose()?
            .flatten())
    }

    async fn strings(
        &self,
        sql: &str,
        values: Vec<sea_orm::Value>,
        column: &str,
    ) -> anyhow::Result<Vec<String>> {
        let rows = self.0.query_all_raw(stmt(self.0, sql, values)).await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<String>("", column))
            .collect::<Result<_, _>>()?)
    }
}

impl<C: ConnectionTrait + Sync> View for Tables<'_, C> {
    async fn schedule(&self, id: &str) -> anyhow::Result<Option<ScheduleFact>> {
        self.0
            .query_one_raw(stmt(
                self.0,
                "SELECT * FROM alert_schedules WHERE schedule_id = $1",
                [id.into()],
            ))
            .await?
            .map(|row| schedule_row(&row))
            .transpose()
    }

    async fn is_privileged(&self, role: &str) -> anyhow::Result<bool> {
        if KNOWN_PRIVILEGED.contains(&role) {
            return Ok(true);
        }
        Ok(self
            .0
            .query_one_raw(stmt(
                self.0,
                "SELECT 1 AS p FROM alert_roles WHERE role_id = $1 AND privileged",
                [role.into()],
            ))
            .await?
            .is_some())
    }

    async fn principal(&self, id: &str) -> anyhow::Result<PrincipalState> {
        let row = self
            .0
            .query_one_raw(stmt(
                self.0,
                "SELECT enabled, guest, disabled_at_ms FROM alert_principals WHERE principal_id = $1",
                [id.into()],
            ))
            .await?;
        Ok(match row {
            Some(row) => PrincipalState {
                enabled: row.try_get("", "enabled")?,
                guest: row.try_get("", "guest")?,
                disabled_at_ms: row.try_get("", "disabled_at_ms")?,
            },
            None => PrincipalState::default(),
        })
    }

    async fn policy(&self, role: &str, scope: &str) -> anyhow::Result<Option<(bool, i64)>> {
        let row = self
            .0
            .query_one_raw(stmt(
                self.0,
                "SELECT mfa_required, set_at_ms FROM alert_policies WHERE role_id = $1 AND scope = $2",
                [role.into(), scope.into()],
            ))
            .await?;
        row.map(|row| {
            Ok((
                row.try_get("", "mfa_required")?,
                row.try_get("", "set_at_ms")?,
            ))
        })
        .transpose()
    }

    async fn activation_times(
        &self,
        principal: &str,
        role: &str,
        after: i64,
        until: i64,
    ) -> anyhow::Result<Vec<i64>> {
        let rows = self
            .0
            .query_all_raw(stmt(
                self.0,
                "SELECT at_ms FROM alert_activations WHERE principal_id = $1 AND role_id = $2 \
                 AND at_ms > $3 AND at_ms <= $4 ORDER BY at_ms",
                [principal.into(), role.into(), after.into(), until.into()],
            ))
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("", "at_ms"))
            .collect::<Result<_, _>>()?)
    }

    async fn last_activation_of_schedule(
        &self,
        schedule: &str,
        until: i64,
    ) -> anyhow::Result<Option<i64>> {
        self.optional_i64(
            "SELECT MAX(at_ms) AS v FROM alert_activations WHERE schedule_id = $1 AND at_ms <= $2",
            vec![schedule.into(), until.into()],
        )
        .await
    }

    async fn last_activation_of_principal(
        &self,
        principal: &str,
        until: i64,
    ) -> anyhow::Result<Option<i64>> {
        self.optional_i64(
            "SELECT MAX(at_ms) AS v FROM alert_activations WHERE principal_id = $1 AND at_ms <= $2",
            vec![principal.into(), until.into()],
        )
        .await
    }

    async fn privileged_schedules_of(&self, principal: &str) -> anyhow::Result<Vec<ScheduleFact>> {
        let rows = self
            .0
            .query_all_raw(stmt(
                self.0,
                &format!(
                    "SELECT * FROM alert_schedules s WHERE s.principal_id = $1 AND {}",
                    privileged_sql("s.role_id")
                ),
                [principal.into()],
            ))
            .await?;
        rows.iter().map(schedule_row).collect()
    }

    async fn schedules_of(&self, principal: &str) -> anyhow::Result<Vec<String>> {
        self.strings(
            "SELECT schedule_id FROM alert_schedules WHERE principal_id = $1",
            vec![principal.into()],
            "schedule_id",
        )
        .await
    }

    async fn dismissed_cut(&self, principal: &str) -> anyhow::Result<i64> {
        Ok(self
            .optional_i64(
                "SELECT MAX(last_sequence) AS v FROM alert_incidents WHERE alert_id = $1 \
                 AND incident_key = $2 AND state = 'dismissed'",
                vec![AlertKind::BreakGlassUsed.id().into(), principal.into()],
            )
            .await?
            .unwrap_or(0))
    }

    async fn uses_after(&self, principal: &str, sequence: i64) -> anyhow::Result<Uses> {
        let row = self
            .0
            .query_one_raw(stmt(
                self.0,
                "SELECT COUNT(*) AS n, MIN(sequence) AS first_seq, MAX(sequence) AS last_seq, \
                 MIN(at_ms) AS first_at, MAX(at_ms) AS last_at FROM alert_break_glass_uses \
                 WHERE principal_id = $1 AND sequence > $2",
                [principal.into(), sequence.into()],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(Uses::default());
        };
        let get = |column: &str| row.try_get::<Option<i64>>("", column);
        Ok(Uses {
            count: row.try_get("", "n")?,
            first_sequence: get("first_seq")?.unwrap_or(0),
            last_sequence: get("last_seq")?.unwrap_or(0),
            first_at_ms: get("first_at")?.unwrap_or(0),
            last_at_ms: get("last_at")?.unwrap_or(0),
        })
    }

    async fn global_admins(&self, now: i64) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = self
            .0
            .query_all_raw(stmt(
                self.0,
                &format!(
                    "SELECT s.principal_id, MIN(s.start_ms) AS since FROM alert_schedules s \
                     WHERE s.role_id = $2 AND s.scope = '/' AND {CURRENT} AND {ENABLED_HOLDER} \
                     GROUP BY s.principal_id ORDER BY s.principal_id"
                ),
                [now.into(), roles::GLOBAL_ADMINISTRATOR.into()],
            ))
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("", "principal_id")?, row.try_get("", "since")?)))
            .collect()
    }

    async fn privileged_holders(&self, now: i64) -> anyhow::Result<i64> {
        Ok(self
            .optional_i64(
                &format!(
                    "SELECT COUNT(DISTINCT s.principal_id) AS v FROM alert_schedules s \
                     WHERE {CURRENT} AND {ENABLED_HOLDER} AND {}",
                    privileged_sql("s.role_id")
                ),
                vec![now.into()],
            )
            .await?
            .unwrap_or(0))
    }

    async fn next_privileged_change(&self, now: i64) -> anyhow::Result<Option<i64>> {
        self.optional_i64(
            &format!(
                "SELECT MIN(CASE WHEN s.start_ms > $1 THEN s.start_ms ELSE s.end_ms END) AS v \
                 FROM alert_schedules s WHERE (s.start_ms > $1 OR s.end_ms > $1) AND {}",
                privileged_sql("s.role_id")
            ),
            vec![now.into()],
        )
        .await
    }

    async fn candidate_keys(
        &self,
        kind: AlertKind,
        settings: &Settings,
        now: i64,
    ) -> anyhow::Result<Vec<String>> {
        let (sql, values): (String, Vec<sea_orm::Value>) = match kind {
            AlertKind::RolesAssignedOutsidePim => (
                "SELECT schedule_id AS k FROM alert_schedules WHERE origin = 'discovered'".into(),
                vec![],
            ),
            AlertKind::TooManyGlobalAdmins => return Ok(Vec::new()),
            AlertKind::SequentialActivations => (
                "SELECT DISTINCT principal_id || '|' || role_id AS k FROM alert_activations \
                 WHERE at_ms > $1"
                    .into(),
                vec![(now - settings.activation_window_ms).into()],
            ),
            AlertKind::NoMfaOnActivation => (
                "SELECT role_id || '|' || scope AS k FROM alert_policies WHERE NOT mfa_required"
                    .into(),
                vec![],
            ),
            AlertKind::RedundantAssignment => (
                format!(
                    "SELECT s.schedule_id AS k FROM alert_schedules s WHERE s.kind = 'eligible' AND {}",
                    privileged_sql("s.role_id")
                ),
                vec![],
            ),
            AlertKind::StaleSignIn => (
                format!(
                    "SELECT DISTINCT s.principal_id AS k FROM alert_schedules s WHERE {}",
                    privileged_sql("s.role_id")
                ),
                vec![],
            ),
            AlertKind::BreakGlassUsed => (
                "SELECT DISTINCT principal_id AS k FROM alert_break_glass_uses".into(),
                vec![],
            ),
            AlertKind::GuestInPrivilegedRole => (
                "SELECT s.schedule_id AS k FROM alert_schedules s JOIN alert_principals p \
                 ON p.principal_id = s.principal_id WHERE p.guest"
                    .into(),
                vec![],
            ),
        };
        self.strings(&sql, values, "k").await
    }
}

/// A refresh's fold of the log, indexed for the evaluations, with the dismissed break-glass
/// incidents read once from the tables. It owns what it holds: a borrowed fold would make the
/// evaluations' futures depend on a lifetime the compiler cannot prove `Send` for.
pub struct Folded {
    fold: Fold,
    /// Activation times by (principal, role), by schedule and by principal, each sorted.
    by_holder: HashMap<(String, String), Vec<i64>>,
    by_schedule: HashMap<String, Vec<i64>>,
    by_principal: HashMap<String, Vec<i64>>,
    /// Schedule ids by principal.
    schedules_by_principal: HashMap<String, Vec<String>>,
    /// Uses by principal, in sequence order: (sequence, at_ms).
    uses: HashMap<String, Vec<(i64, i64)>>,
    dismissed: HashMap<String, i64>,
}

impl Folded {
    pub async fn new(fold: Fold, db: &impl ConnectionTrait) -> anyhow::Result<Self> {
        let mut by_holder: HashMap<(String, String), Vec<i64>> = HashMap::new();
        let mut by_schedule: HashMap<String, Vec<i64>> = HashMap::new();
        let mut by_principal: HashMap<String, Vec<i64>> = HashMap::new();
        for a in fold.activations.values() {
            by_holder
                .entry((a.principal_id.clone(), a.role_id.clone()))
                .or_default()
                .push(a.at_ms);
            by_schedule
                .entry(a.schedule_id.clone())
                .or_default()
                .push(a.at_ms);
            by_principal
                .entry(a.principal_id.clone())
                .or_default()
                .push(a.at_ms);
        }
        for times in by_holder
            .values_mut()
            .chain(by_schedule.values_mut())
            .chain(by_principal.values_mut())
        {
            times.sort_unstable();
        }
        let mut schedules_by_principal: HashMap<String, Vec<String>> = HashMap::new();
        for s in fold.schedules.values() {
            schedules_by_principal
                .entry(s.principal_id.clone())
                .or_default()
                .push(s.id.clone());
        }
        let mut uses: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
        for (sequence, principal, at) in &fold.uses {
            uses.entry(principal.clone())
                .or_default()
                .push((*sequence, *at));
        }
        for list in uses.values_mut() {
            list.sort_unstable();
        }
        let rows = db
            .query_all_raw(stmt(
                db,
                "SELECT incident_key, MAX(last_sequence) AS v FROM alert_incidents \
                 WHERE alert_id = $1 AND state = 'dismissed' GROUP BY incident_key",
                [AlertKind::BreakGlassUsed.id().into()],
            ))
            .await?;
        let dismissed = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<String>("", "incident_key")?,
                    r.try_get::<Option<i64>>("", "v")?.unwrap_or(0),
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            fold,
            by_holder,
            by_schedule,
            by_principal,
            schedules_by_principal,
            uses,
            dismissed,
        })
    }

    /// The schedules of `principal`.
    fn schedules_of_principal(&self, principal: &str) -> impl Iterator<Item = &ScheduleFact> {
        self.schedules_by_principal
            .get(principal)
            .into_iter()
            .flatten()
            .filter_map(|id| self.fold.schedules.get(id))
    }

    fn privileged(&self, role: &str) -> bool {
        KNOWN_PRIVILEGED.contains(&role) || self.fold.roles.get(role).copied().unwrap_or(false)
    }

    fn state_of(&self, principal: &str) -> PrincipalState {
        self.fold
            .principals
            .get(principal)
            .map(|p| PrincipalState {
                enabled: p.enabled,
                guest: p.guest,
                disabled_at_ms: p.disabled_at_ms,
            })
            .unwrap_or_default()
    }

    /// Current schedules whose holder is not disabled.
    fn held_now(&self, now: i64) -> impl Iterator<Item = &ScheduleFact> {
        self.fold
            .schedules
            .values()
            .filter(move |s| is_current(s, now) && self.state_of(&s.principal_id).enabled)
    }
}

/// The latest of sorted `times` at or before `until`.
fn last_until(times: Option<&Vec<i64>>, until: i64) -> Option<i64> {
    let times = times?;
    let n = times.partition_point(|t| *t <= until);
    n.checked_sub(1).map(|i| times[i])
}

impl View for Folded {
    async fn schedule(&self, id: &str) -> anyhow::Result<Option<ScheduleFact>> {
        Ok(self.fold.schedules.get(id).cloned())
    }

    async fn is_privileged(&self, role: &str) -> anyhow::Result<bool> {
        Ok(self.privileged(role))
    }

    async fn principal(&self, id: &str) -> anyhow::Result<PrincipalState> {
        Ok(self.state_of(id))
    }

    async fn policy(&self, role: &str, scope: &str) -> anyhow::Result<Option<(bool, i64)>> {
        Ok(self
            .fold
            .policies
            .get(&(role.to_owned(), scope.to_owned()))
            .copied())
    }

    async fn activation_times(
        &self,
        principal: &str,
        role: &str,
        after: i64,
        until: i64,
    ) -> anyhow::Result<Vec<i64>> {
        Ok(self
            .by_holder
            .get(&(principal.to_owned(), role.to_owned()))
            .map(|times| {
                let from = times.partition_point(|t| *t <= after);
                let to = times.partition_point(|t| *t <= until);
                times[from..to.max(from)].to_vec()
            })
            .unwrap_or_default())
    }

    async fn last_activation_of_schedule(
        &self,
        schedule: &str,
        until: i64,
    ) -> anyhow::Result<Option<i64>> {
        Ok(last_until(self.by_schedule.get(schedule), until))
    }

    async fn last_activation_of_principal(
        &self,
        principal: &str,
        until: i64,
    ) -> anyhow::Result<Option<i64>> {
        Ok(last_until(self.by_principal.get(principal), until))
    }

    async fn privileged_schedules_of(&self, principal: &str) -> anyhow::Result<Vec<ScheduleFact>> {
        Ok(self
            .schedules_of_principal(principal)
            .filter(|s| self.privileged(&s.role_id))
            .cloned()
            .collect())
    }

    async fn schedules_of(&self, principal: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .schedules_of_principal(principal)
            .map(|s| s.id.clone())
            .collect())
    }

    async fn dismissed_cut(&self, principal: &str) -> anyhow::Result<i64> {
        Ok(self.dismissed.get(principal).copied().unwrap_or(0))
    }

    async fn uses_after(&self, principal: &str, sequence: i64) -> anyhow::Result<Uses> {
        let Some(list) = self.uses.get(principal) else {
            return Ok(Uses::default());
        };
        let after = &list[list.partition_point(|(s, _)| *s <= sequence)..];
        let (Some(first), Some(last)) = (after.first(), after.last()) else {
            return Ok(Uses::default());
        };
        Ok(Uses {
            count: after.len() as i64,
            first_sequence: first.0,
            last_sequence: last.0,
            first_at_ms: after.iter().map(|u| u.1).min().unwrap_or(0),
            last_at_ms: after.iter().map(|u| u.1).max().unwrap_or(0),
        })
    }

    async fn global_admins(&self, now: i64) -> anyhow::Result<Vec<(String, i64)>> {
        let mut since: std::collections::BTreeMap<&str, i64> = Default::default();
        for s in self.held_now(now) {
            if s.role_id == roles::GLOBAL_ADMINISTRATOR && s.scope == "/" {
                let start = since.entry(&s.principal_id).or_insert(s.start_ms);
                *start = (*start).min(s.start_ms);
            }
        }
        Ok(since.into_iter().map(|(p, t)| (p.to_owned(), t)).collect())
    }

    async fn privileged_holders(&self, now: i64) -> anyhow::Result<i64> {
        let holders: BTreeSet<&str> = self
            .held_now(now)
            .filter(|s| self.privileged(&s.role_id))
            .map(|s| s.principal_id.as_str())
            .collect();
        Ok(holders.len() as i64)
    }

    async fn next_privileged_change(&self, now: i64) -> anyhow::Result<Option<i64>> {
        Ok(self
            .fold
            .schedules
            .values()
            .filter(|s| self.privileged(&s.role_id))
            .filter_map(|s| next_change(s, now))
            .min())
    }

    async fn candidate_keys(
        &self,
        kind: AlertKind,
        settings: &Settings,
        now: i64,
    ) -> anyhow::Result<Vec<String>> {
        let schedules = self.fold.schedules.values();
        let keys: BTreeSet<String> = match kind {
            AlertKind::RolesAssignedOutsidePim => schedules
                .filter(|s| s.discovered)
                .map(|s| s.id.clone())
                .collect(),
            AlertKind::TooManyGlobalAdmins => BTreeSet::new(),
            AlertKind::SequentialActivations => self
                .fold
                .activations
                .values()
                .filter(|a| a.at_ms > now - settings.activation_window_ms)
                .map(|a| format!("{}|{}", a.principal_id, a.role_id))
                .collect(),
            AlertKind::NoMfaOnActivation => self
                .fold
                .policies
                .iter()
                .filter(|(_, (mfa, _))| !mfa)
                .map(|((role, scope), _)| format!("{role}|{scope}"))
                .collect(),
            AlertKind::RedundantAssignment => schedules
                .filter(|s| !s.active && self.privileged(&s.role_id))
                .map(|s| s.id.clone())
                .collect(),
            AlertKind::StaleSignIn => schedules
                .filter(|s| self.privileged(&s.role_id))
                .map(|s| s.principal_id.clone())
                .collect(),
            AlertKind::BreakGlassUsed => self.uses.keys().cloned().collect(),
            AlertKind::GuestInPrivilegedRole => schedules
                .filter(|s| {
                    self.fold
                        .principals
                        .get(&s.principal_id)
                        .is_some_and(|p| p.guest)
                })
                .map(|s| s.id.clone())
                .collect(),
        };
        Ok(keys.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    //! The two sources must answer alike, or a refresh would disagree with continuous
    //! evaluation: one fold is written to the tables (SQLite, as `pim dev` runs) and every
    //! question is asked of both, for every key and at instants around every edge.

    use super::*;
    use crate::alerts::facts::{ActivationFact, Fact};

    const GA: &str = roles::GLOBAL_ADMINISTRATOR;
    const CUSTOM: &str = "custom-privileged";
    const PLAIN: &str = "custom-plain";

    fn schedule(id: &str, principal: &str, role: &str, scope: &str, start: i64) -> ScheduleFact {
        ScheduleFact {
            id: id.into(),
            active: false,
            principal_id: principal.into(),
            role_id: role.into(),
            scope: scope.into(),
            start_ms: start,
            end_ms: None,
            discovered: false,
        }
    }

    fn fold() -> Fold {
        let mut fold = Fold::default();
        let principal =
            |id: &str, enabled: bool, guest: bool, break_glass: bool, at_ms| Fact::Principal {
                id: id.into(),
                enabled,
                guest,
                break_glass,
                at_ms,
            };
        let facts = vec![
            Fact::Role {
                id: CUSTOM.into(),
                privileged: true,
            },
            Fact::Role {
                id: PLAIN.into(),
                privileged: false,
            },
            principal("alice", true, false, false, 10),
            principal("guest", true, true, false, 10),
            principal("gone", false, false, false, 50),
            principal("glass", true, false, true, 10),
            Fact::Schedule(ScheduleFact {
                active: true,
                ..schedule("s-ga-1", "alice", GA, "/", 100)
            }),
            Fact::Schedule(ScheduleFact {
                active: true,
                end_ms: Some(5_000),
                ..schedule("s-ga-2", "gone", GA, "/", 100)
            }),
            Fact::Schedule(ScheduleFact {
                active: true,
                discovered: true,
                ..schedule("s-ga-3", "glass", GA, "/", 2_000)
            }),
            Fact::Schedule(ScheduleFact {
                end_ms: Some(9_000),
                ..schedule("s-custom", "guest", CUSTOM, "/groups/g", 300)
            }),
            Fact::Schedule(schedule("s-plain", "alice", PLAIN, "/", 0)),
            Fact::Schedule(schedule("s-unknown", "nobody", CUSTOM, "/", 7_000)),
            Fact::Policy {
                role_id: GA.into(),
                scope: "/".into(),
                mfa_required: Some(false),
                at_ms: 400,
            },
            Fact::Policy {
                role_id: CUSTOM.into(),
                scope: "/groups/g".into(),
                mfa_required: Some(true),
                at_ms: 500,
            },
        ];
        for fact in facts {
            fold.apply(fact);
        }
        for (n, at) in [1_000, 1_500, 1_500, 4_000, 8_000].into_iter().enumerate() {
            fold.apply(Fact::Activation(ActivationFact {
                window_id: format!("w-{n}"),
                principal_id: "guest".into(),
                role_id: CUSTOM.into(),
                scope: "/groups/g".into(),
                schedule_id: "s-custom".into(),
                at_ms: at,
            }));
        }
        for (sequence, at) in [(3, 200), (9, 900), (12, 1_200)] {
            fold.record_use(sequence, "glass", at);
        }
        fold
    }

    #[tokio::test]
    async fn the_tables_and_the_fold_answer_every_question_alike() -> anyhow::Result<()> {
        let db = pim_db::connect("sqlite::memory:", pim_db::PoolSize { max: 1, min: 1 }).await?;
        pim_db::migrate::<crate::migration::Migrator>(&db).await?;
        let written = fold();
        written.write(&db).await?;
        db.execute_raw(stmt(
            &db,
            "INSERT INTO alert_incidents (id, alert_id, incident_key, current, state, episode, \
             principal_id, role_id, scope, schedule_id, count, last_sequence, first_seen_ms, \
             last_seen_ms, detail, opened_at_ms, closed_at_ms, dismissed_by, justification, \
             remediated_by, remediated_at_ms) VALUES ('i-1', $1, 'glass', FALSE, 'dismissed', 3, \
             'glass', '', '', '', 2, 9, 200, 900, '', 950, 960, 'admin', 'drill', '', NULL)",
            [AlertKind::BreakGlassUsed.id().into()],
        ))
        .await?;
        let tables = Tables(&db);
        let folded = Folded::new(fold(), &db).await?;

        let principals = ["alice", "guest", "gone", "glass", "nobody", "stranger"];
        let roles = [GA, CUSTOM, PLAIN, "unknown-role"];
        let schedules = [
            "s-ga-1",
            "s-ga-2",
            "s-ga-3",
            "s-custom",
            "s-plain",
            "s-unknown",
            "none",
        ];
        let instants = [0, 99, 100, 1_500, 2_000, 4_999, 5_000, 8_999, 9_000, 20_000];
        for id in schedules {
            assert_eq!(
                tables.schedule(id).await?,
                folded.schedule(id).await?,
                "{id}"
            );
        }
        for role in roles {
            assert_eq!(
                tables.is_privileged(role).await?,
                folded.is_privileged(role).await?
            );
            for scope in ["/", "/groups/g"] {
                assert_eq!(
                    tables.policy(role, scope).await?,
                    folded.policy(role, scope).await?
                );
            }
        }
        for p in principals {
            assert_eq!(
                tables.principal(p).await?,
                folded.principal(p).await?,
                "{p}"
            );
            let mut mine = tables.privileged_schedules_of(p).await?;
            let mut theirs = folded.privileged_schedules_of(p).await?;
            mine.sort_by(|a, b| a.id.cmp(&b.id));
            theirs.sort_by(|a, b| a.id.cmp(&b.id));
            assert_eq!(mine, theirs, "{p}");
            let mut mine = tables.schedules_of(p).await?;
            let mut theirs = folded.schedules_of(p).await?;
            mine.sort();
            theirs.sort();
            assert_eq!(mine, theirs, "{p}");
            assert_eq!(
                tables.dismissed_cut(p).await?,
                folded.dismissed_cut(p).await?
            );
            for after in [0, 3, 9, 12] {
                assert_eq!(
                    tables.uses_after(p, after).await?,
                    folded.uses_after(p, after).await?,
                    "{p} after {after}"
                );
            }
        }
        for now in instants {
            for p in principals {
                assert_eq!(
                    tables.last_activation_of_principal(p, now).await?,
                    folded.last_activation_of_principal(p, now).await?
                );
                for role in roles {
                    assert_eq!(
                        tables.activation_times(p, role, now - 3_000, now).await?,
                        folded.activation_times(p, role, now - 3_000, now).await?,
                        "{p} {role} at {now}"
                    );
                }
            }
            for id in schedules {
                assert_eq!(
                    tables.last_activation_of_schedule(id, now).await?,
                    folded.last_activation_of_schedule(id, now).await?
                );
            }
            assert_eq!(
                tables.global_admins(now).await?,
                folded.global_admins(now).await?
            );
            assert_eq!(
                tables.privileged_holders(now).await?,
                folded.privileged_holders(now).await?,
                "at {now}"
            );
            assert_eq!(
                tables.next_privileged_change(now).await?,
                folded.next_privileged_change(now).await?,
                "at {now}"
            );
            for kind in AlertKind::ALL {
                let settings = Settings {
                    activation_window_ms: 3_000,
                    ..Settings::default_for(kind)
                };
                let mut mine = tables.candidate_keys(kind, &settings, now).await?;
                let mut theirs = folded.candidate_keys(kind, &settings, now).await?;
                mine.sort();
                mine.dedup();
                theirs.sort();
                assert_eq!(mine, theirs, "{kind:?} at {now}");
            }
        }
        // The answers are not all empty: the fixture reaches the rules' interesting branches.
        // A disabled holder does not count; a later start does once it is current.
        assert_eq!(folded.global_admins(1_000).await?.len(), 1);
        assert_eq!(folded.global_admins(5_000).await?.len(), 2);
        assert_eq!(folded.privileged_holders(1_000).await?, 2);
        assert_eq!(folded.uses_after("glass", 9).await?.count, 1);
        assert_eq!(
            folded
                .activation_times("guest", CUSTOM, 1_000, 4_000)
                .await?,
            vec![1_500, 1_500, 4_000]
        );
        Ok(())
    }
}
