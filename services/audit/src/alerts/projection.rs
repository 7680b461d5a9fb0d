//! What the alerts know of the other contexts, kept in audit's own tables: roles, principals,
//! schedules, policies, activations and break-glass uses. Written fact by fact by the consumer,
//! or rebuilt whole by a refresh from an in-memory [`Fold`] of the log. Both paths apply the same
//! facts in the same order, so they hold the same rows.

use std::collections::BTreeMap;

use pim_db::stmt;
use sea_orm::{ConnectionTrait, Value};

use super::facts::{ActivationFact, Fact, ScheduleFact};

/// Applies one fact to the tables.
pub async fn apply(txn: &impl ConnectionTrait, fact: &Fact) -> anyhow::Result<()> {
    let (sql, values): (&str, Vec<Value>) = match fact {
        Fact::Schedule(s) => (
            "INSERT INTO alert_schedules (schedule_id, kind, principal_id, role_id, scope, start_ms, \
             end_ms, origin) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (schedule_id) DO \
             UPDATE SET kind = excluded.kind, principal_id = excluded.principal_id, \
             role_id = excluded.role_id, scope = excluded.scope, start_ms = excluded.start_ms, \
             end_ms = excluded.end_ms, origin = excluded.origin",
            schedule_values(s),
        ),
        Fact::ScheduleGone(id) => (
            "DELETE FROM alert_schedules WHERE schedule_id = $1",
            vec![id.clone().into()],
        ),
        Fact::Principal {
            id,
            enabled,
            guest,
            break_glass,
            at_ms,
        } => (
            // The instant it was disabled is kept while it stays disabled.
            "INSERT INTO alert_principals (principal_id, enabled, guest, break_glass, disabled_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (principal_id) DO UPDATE SET \
             enabled = excluded.enabled, guest = excluded.guest, break_glass = excluded.break_glass, \
             disabled_at_ms = CASE WHEN excluded.enabled THEN NULL \
             ELSE COALESCE(alert_principals.disabled_at_ms, excluded.disabled_at_ms) END",
            vec![
                id.clone().into(),
                (*enabled).into(),
                (*guest).into(),
                (*break_glass).into(),
                (!*enabled).then_some(*at_ms).into(),
            ],
        ),
        Fact::Role { id, privileged } => (
            "INSERT INTO alert_roles (role_id, privileged) VALUES ($1, $2) ON CONFLICT (role_id) \
             DO UPDATE SET privileged = excluded.privileged",
            vec![id.clone().into(), (*privileged).into()],
        ),
        Fact::RoleGone(id) => (
            "DELETE FROM alert_roles WHERE role_id = $1",
            vec![id.clone().into()],
        ),
        Fact::Policy {
            role_id,
            scope,
            mfa_required: None,
            ..
        } => (
            "DELETE FROM alert_policies WHERE role_id = $1 AND scope = $2",
            vec![role_id.clone().into(), scope.clone().into()],
        ),
        Fact::Policy {
            role_id,
            scope,
            mfa_required: Some(mfa),
            at_ms,
        } => (
            // The instant MFA stopped being required is kept while it stays so.
            "INSERT INTO alert_policies (role_id, scope, mfa_required, set_at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (role_id, scope) DO UPDATE SET mfa_required = excluded.mfa_required, \
             set_at_ms = CASE WHEN alert_policies.mfa_required = excluded.mfa_required \
             THEN alert_policies.set_at_ms ELSE excluded.set_at_ms END",
            vec![
                role_id.clone().into(),
                scope.clone().into(),
                (*mfa).into(),
                (*at_ms).into(),
            ],
        ),
        Fact::Activation(a) => (
            "INSERT INTO alert_activations (window_id, principal_id, role_id, scope, schedule_id, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (window_id) DO NOTHING",
            activation_values(a),
        ),
    };
    txn.execute_raw(stmt(txn, sql, values)).await?;
    Ok(())
}

/// Records a use of a break-glass principal, by the audit sequence of the record.
pub async fn record_use(
    txn: &impl ConnectionTrait,
    sequence: i64,
    principal: &str,
    at_ms: i64,
) -> anyhow::Result<()> {
    txn.execute_raw(stmt(
        txn,
        "INSERT INTO alert_break_glass_uses (sequence, principal_id, at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (sequence) DO NOTHING",
        [sequence.into(), principal.into(), at_ms.into()],
    ))
    .await?;
    Ok(())
}

pub async fn is_break_glass(txn: &impl ConnectionTrait, principal: &str) -> anyhow::Result<bool> {
    Ok(txn
        .query_one_raw(stmt(
            txn,
            "SELECT 1 AS bg FROM alert_principals WHERE principal_id = $1 AND break_glass",
            [principal.into()],
        ))
        .await?
        .is_some())
}

/// Which of `principals` are break-glass, in one query.
pub async fn break_glass_among(
    txn: &impl ConnectionTrait,
    principals: &std::collections::BTreeSet<&str>,
) -> anyhow::Result<std::collections::HashSet<String>> {
    let mut found = std::collections::HashSet::new();
    let principals: Vec<&str> = principals.iter().copied().collect();
    // Bounded lists keep each statement inside both engines' limit on bound values.
    for chunk in principals.chunks(500) {
        let rows = txn
            .query_all_raw(stmt(
                txn,
                &format!(
                    "SELECT principal_id FROM alert_principals WHERE break_glass AND principal_id IN ({})",
                    pim_db::placeholders(1, chunk.len())
                ),
                chunk.iter().map(|p| Value::from(*p)),
            ))
            .await?;
        for row in rows {
            found.insert(row.try_get::<String>("", "principal_id")?);
        }
    }
    Ok(found)
}

fn schedule_values(s: &ScheduleFact) -> Vec<Value> {
    vec![
        s.id.clone().into(),
        if s.active { "active" } else { "eligible" }.into(),
        s.principal_id.clone().into(),
        s.role_id.clone().into(),
        s.scope.clone().into(),
        s.start_ms.into(),
        s.end_ms.into(),
        if s.discovered {
            "discovered"
        } else {
            "assigned"
        }
        .into(),
    ]
}

fn activation_values(a: &ActivationFact) -> Vec<Value> {
    vec![
        a.window_id.clone().into(),
        a.principal_id.clone().into(),
        a.role_id.clone().into(),
        a.scope.clone().into(),
        a.schedule_id.clone().into(),
        a.at_ms.into(),
    ]
}

#[derive(Debug, Clone, Copy)]
pub(super) struct PrincipalRow {
    pub(super) enabled: bool,
    pub(super) guest: bool,
    pub(super) break_glass: bool,
    pub(super) disabled_at_ms: Option<i64>,
}

/// The projection folded in memory from the log, for a refresh. Its `apply` mirrors the SQL of
/// [`apply`] above, statement for statement.
#[derive(Default)]
pub struct Fold {
    pub(super) roles: BTreeMap<String, bool>,
    pub(super) principals: BTreeMap<String, PrincipalRow>,
    pub(super) schedules: BTreeMap<String, ScheduleFact>,
    pub(super) policies: BTreeMap<(String, String), (bool, i64)>,
    pub(super) activations: BTreeMap<String, ActivationFact>,
    pub(super) uses: Vec<(i64, String, i64)>,
}

impl Fold {
    pub fn is_break_glass(&self, principal: &str) -> bool {
        self.principals
            .get(principal)
            .is_some_and(|p| p.break_glass)
    }

    pub fn record_use(&mut self, sequence: i64, principal: &str, at_ms: i64) {
        self.uses.push((sequence, principal.to_owned(), at_ms));
    }

    pub fn apply(&mut self, fact: Fact) {
        match fact {
            Fact::Schedule(s) => {
                self.schedules.insert(s.id.clone(), s);
            }
            Fact::ScheduleGone(id) => {
                self.schedules.remove(&id);
            }
            Fact::Principal {
                id,
                enabled,
                guest,
                break_glass,
                at_ms,
            } => {
                let before = self.principals.get(&id).and_then(|p| p.disabled_at_ms);
                self.principals.insert(
                    id,
                    PrincipalRow {
                        enabled,
                        guest,
                        break_glass,
                        disabled_at_ms: (!enabled).then(|| before.unwrap_or(at_ms)),
                    },
                );
            }
            Fact::Role { id, privileged } => {
                self.roles.insert(id, privileged);
            }
            Fact::RoleGone(id) => {
                self.roles.remove(&id);
            }
            Fact::Policy {
                role_id,
                scope,
                mfa_required,
                at_ms,
            } => {
                let key = (role_id, scope);
                match mfa_required {
                    None => {
                        self.policies.remove(&key);
                    }
                    Some(mfa) => {
                        let since = match self.policies.get(&key) {
                            Some((was, since)) if *was == mfa => *since,
                            _ => at_ms,
                        };
                        self.policies.insert(key, (mfa, since));
                    }
                }
            }
            Fact::Activation(a) => {
                self.activations.entry(a.window_id.clone()).or_insert(a);
            }
        }
    }

    /// Replaces the tables' rows with the fold's, in multi-row inserts.
    pub async fn write(&self, txn: &impl ConnectionTrait) -> anyhow::Result<()> {
        for table in [
            "alert_roles",
            "alert_principals",
            "alert_schedules",
            "alert_policies",
            "alert_activations",
            "alert_break_glass_uses",
        ] {
            txn.execute_raw(stmt(txn, &format!("DELETE FROM {table}"), []))
                .await?;
        }
        insert_rows(
            txn,
            "alert_roles (role_id, privileged)",
            self.roles
                .iter()
                .map(|(id, p)| vec![id.clone().into(), (*p).into()]),
        )
        .await?;
        insert_rows(
            txn,
            "alert_principals (principal_id, enabled, guest, break_glass, disabled_at_ms)",
            self.principals.iter().map(|(id, p)| {
                vec![
                    id.clone().into(),
                    p.enabled.into(),
                    p.guest.into(),
                    p.break_glass.into(),
                    p.disabled_at_ms.into(),
                ]
            }),
        )
        .await?;
        insert_rows(
            txn,
            "alert_schedules (schedule_id, kind, principal_id, role_id, scope, start_ms, end_ms, origin)",
            self.schedules.values().map(schedule_values),
        )
        .await?;
        insert_rows(
            txn,
            "alert_policies (role_id, scope, mfa_required, set_at_ms)",
            self.policies.iter().map(|((r, s), (mfa, at))| {
                vec![
                    r.clone().into(),
                    s.clone().into(),
                    (*mfa).into(),
                    (*at).into(),
                ]
            }),
        )
        .await?;
        insert_rows(
            txn,
            "alert_activations (window_id, principal_id, role_id, scope, schedule_id, at_ms)",
            self.activations.values().map(activation_values),
        )
        .await?;
        insert_rows(
            txn,
            "alert_break_glass_uses (sequence, principal_id, at_ms)",
            self.uses
                .iter()
                .map(|(seq, p, at)| vec![(*seq).into(), p.clone().into(), (*at).into()]),
        )
        .await?;
        Ok(())
    }
}

/// Inserts rows in statements of at most ~1000 values each (SQLite's bind limit is 32766,
/// PostgreSQL's 65535).
async fn insert_rows(
    txn: &impl ConnectionTrait,
    table: &str,
    rows: impl Iterator<Item = Vec<Value>>,
) -> anyhow::Result<()> {
    // Collected first: a borrowing iterator held across the awaits below would tie the future
    // to its lifetime.
    let rows: Vec<Vec<Value>> = rows.collect();
    let mut batch: Vec<Vec<Value>> = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        batch.clear();
        batch.extend(rows.by_ref().take(1000));
        let width = batch[0].len();
        let groups: Vec<String> = (0..batch.len())
            .map(|i| format!("({})", pim_db::placeholders(i * width + 1, width)))
            .collect();
        let sql = format!("INSERT INTO {table} VALUES {}", groups.join(", "));
        let values: Vec<Value> = batch.drain(..).flatten().collect();
        txn.execute_raw(stmt(txn, &sql, values)).await?;
    }
    Ok(())
}
