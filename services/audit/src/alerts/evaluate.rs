//! Whether each alert's condition holds for one key (a schedule, a principal, a role at a scope)
//! at an instant, from the projection alone, and when the answer could next change with no new
//! event. Continuous evaluation, the clock's timer and a refresh all ask these functions, so they
//! cannot disagree. Reads only.

use pim_client::roles;
use pim_db::stmt;
use sea_orm::{ConnectionTrait, QueryResult};

use super::definitions::{AlertKind, Settings};

/// Why an alert holds for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub principal_id: String,
    pub role_id: String,
    pub scope: String,
    pub schedule_id: String,
    pub count: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// The last audit sequence counted (break-glass uses); 0 otherwise.
    pub last_sequence: i64,
    /// A new episode (a different value) closes the current incident and opens another, even
    /// while the condition keeps holding: a use of a break-glass account after a dismissal.
    pub episode: i64,
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub finding: Option<Finding>,
    /// When to look again without a new event.
    pub due_at_ms: Option<i64>,
}

/// Roles PIM treats as privileged even before the catalog says so: its own administrators and
/// readers. Others are privileged when the role events say they are.
const KNOWN_PRIVILEGED: [&str; 5] = [
    roles::GLOBAL_ADMINISTRATOR,
    roles::PRIVILEGED_ROLE_ADMINISTRATOR,
    roles::SECURITY_ADMINISTRATOR,
    roles::SECURITY_READER,
    roles::GLOBAL_READER,
];

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

/// `start <= now < end`.
const CURRENT: &str = "s.start_ms <= $1 AND (s.end_ms IS NULL OR s.end_ms > $1)";

#[derive(Debug, Clone)]
struct ScheduleRow {
    id: String,
    active: bool,
    principal_id: String,
    role_id: String,
    scope: String,
    start_ms: i64,
    end_ms: Option<i64>,
    discovered: bool,
}

impl ScheduleRow {
    fn current(&self, now: i64) -> bool {
        self.start_ms <= now && self.end_ms.is_none_or(|end| end > now)
    }

    /// When being current next changes after `now`.
    fn next_change(&self, now: i64) -> Option<i64> {
        if self.start_ms > now {
            Some(self.start_ms)
        } else {
            self.end_ms.filter(|end| *end > now)
        }
    }
}

fn schedule_row(row: &QueryResult) -> anyhow::Result<ScheduleRow> {
    Ok(ScheduleRow {
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

async fn schedule(db: &impl ConnectionTrait, id: &str) -> anyhow::Result<Option<ScheduleRow>> {
    db.query_one_raw(stmt(
        db,
        "SELECT * FROM alert_schedules WHERE schedule_id = $1",
        [id.into()],
    ))
    .await?
    .map(|row| schedule_row(&row))
    .transpose()
}

async fn is_privileged(db: &impl ConnectionTrait, role: &str) -> anyhow::Result<bool> {
    if KNOWN_PRIVILEGED.contains(&role) {
        return Ok(true);
    }
    Ok(db
        .query_one_raw(stmt(
            db,
            "SELECT 1 AS p FROM alert_roles WHERE role_id = $1 AND privileged",
            [role.into()],
        ))
        .await?
        .is_some())
}

/// (enabled, guest, disabled_at_ms); unknown principals count as enabled members.
async fn principal(
    db: &impl ConnectionTrait,
    id: &str,
) -> anyhow::Result<(bool, bool, Option<i64>)> {
    let row = db
        .query_one_raw(stmt(
            db,
            "SELECT enabled, guest, disabled_at_ms FROM alert_principals WHERE principal_id = $1",
            [id.into()],
        ))
        .await?;
    Ok(match row {
        Some(row) => (
            row.try_get("", "enabled")?,
            row.try_get("", "guest")?,
            row.try_get("", "disabled_at_ms")?,
        ),
        None => (true, false, None),
    })
}

async fn max_i64(
    db: &impl ConnectionTrait,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> anyhow::Result<Option<i64>> {
    Ok(db
        .query_one_raw(stmt(db, sql, values))
        .await?
        .map(|row| row.try_get::<Option<i64>>("", "v"))
        .transpose()?
        .flatten())
}

/// Evaluates one key of `kind` (for `TooManyGlobalAdmins`, use [`too_many_global_admins`]).
pub async fn key(
    db: &impl ConnectionTrait,
    kind: AlertKind,
    key: &str,
    settings: &Settings,
    now: i64,
) -> anyhow::Result<Evaluation> {
    if !settings.enabled {
        return Ok(Evaluation::default());
    }
    match kind {
        AlertKind::RolesAssignedOutsidePim => {
            let Some(s) = schedule(db, key).await? else {
                return Ok(Evaluation::default());
            };
            Ok(Evaluation {
                finding: (s.discovered && s.active && s.current(now)).then(|| Finding {
                    detail: "a standing active assignment that was made outside PIM".into(),
                    ..finding_of(&s, 1, s.start_ms, s.start_ms)
                }),
                due_at_ms: s.next_change(now),
            })
        }
        AlertKind::TooManyGlobalAdmins => Ok(Evaluation::default()),
        AlertKind::SequentialActivations => sequential(db, key, settings, now).await,
        AlertKind::NoMfaOnActivation => {
            let (role, scope) = key.split_once('|').unwrap_or((key, ""));
            let row = db
                .query_one_raw(stmt(
                    db,
                    "SELECT mfa_required, set_at_ms FROM alert_policies WHERE role_id = $1 AND scope = $2",
                    [role.into(), scope.into()],
                ))
                .await?;
            let Some(row) = row else {
                return Ok(Evaluation::default());
            };
            let mfa: bool = row.try_get("", "mfa_required")?;
            let since: i64 = row.try_get("", "set_at_ms")?;
            let holds = !mfa && is_privileged(db, role).await?;
            Ok(Evaluation {
                finding: holds.then(|| Finding {
                    principal_id: String::new(),
                    role_id: role.to_owned(),
                    scope: scope.to_owned(),
                    schedule_id: String::new(),
                    count: 1,
                    first_seen_ms: since,
                    last_seen_ms: since,
                    last_sequence: 0,
                    episode: 0,
                    detail: "the role's policy at this scope lets it be activated without MFA"
                        .into(),
                }),
                due_at_ms: None,
            })
        }
        AlertKind::RedundantAssignment => redundant(db, key, settings, now).await,
        AlertKind::StaleSignIn => stale(db, key, settings, now).await,
        AlertKind::BreakGlassUsed => break_glass(db, key).await,
        AlertKind::GuestInPrivilegedRole => {
            let Some(s) = schedule(db, key).await? else {
                return Ok(Evaluation::default());
            };
            let (_, guest, _) = principal(db, &s.principal_id).await?;
            let holds = guest && s.current(now) && is_privileged(db, &s.role_id).await?;
            Ok(Evaluation {
                finding: holds.then(|| Finding {
                    detail: format!(
                        "a guest is {} for a privileged role",
                        if s.active { "active" } else { "eligible" }
                    ),
                    ..finding_of(&s, 1, s.start_ms, s.start_ms)
                }),
                due_at_ms: s.next_change(now),
            })
        }
    }
}

fn finding_of(s: &ScheduleRow, count: i64, first: i64, last: i64) -> Finding {
    Finding {
        principal_id: s.principal_id.clone(),
        role_id: s.role_id.clone(),
        scope: s.scope.clone(),
        schedule_id: s.id.clone(),
        count,
        first_seen_ms: first,
        last_seen_ms: last,
        last_sequence: 0,
        episode: 0,
        detail: String::new(),
    }
}

/// More than N activations of one role by one principal in the window ending now. Open from
/// the earliest activation in the window; looked at again when enough of them leave it.
async fn sequential(
    db: &impl ConnectionTrait,
    key: &str,
    settings: &Settings,
    now: i64,
) -> anyhow::Result<Evaluation> {
    let (principal, role) = key.split_once('|').unwrap_or((key, ""));
    let window = settings.activation_window_ms;
    let rows = db
        .query_all_raw(stmt(
            db,
            "SELECT at_ms FROM alert_activations WHERE principal_id = $1 AND role_id = $2 \
             AND at_ms > $3 AND at_ms <= $4 ORDER BY at_ms",
            [
                principal.into(),
                role.into(),
                (now - window).into(),
                now.into(),
            ],
        ))
        .await?;
    let times: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get("", "at_ms"))
        .collect::<Result<_, _>>()?;
    let threshold = settings.activation_count as usize;
    if times.len() <= threshold {
        // A future activation may count later; the consumer evaluates it when it arrives.
        return Ok(Evaluation::default());
    }
    let first = times[0];
    let last = times[times.len() - 1];
    // It stops holding when all but `threshold` have left the window.
    let leaves = times[times.len() - threshold - 1] + window;
    Ok(Evaluation {
        finding: Some(Finding {
            principal_id: principal.to_owned(),
            role_id: role.to_owned(),
            scope: String::new(),
            schedule_id: String::new(),
            count: times.len() as i64,
            first_seen_ms: first,
            last_seen_ms: last,
            last_sequence: 0,
            episode: 0,
            detail: format!(
                "{} activations within {} minutes (threshold {})",
                times.len(),
                window / 60_000,
                settings.activation_count
            ),
        }),
        due_at_ms: Some(leaves),
    })
}

/// Eligible for a privileged role for N days with no activation from it in that time.
async fn redundant(
    db: &impl ConnectionTrait,
    key: &str,
    settings: &Settings,
    now: i64,
) -> anyhow::Result<Evaluation> {
    let Some(s) = schedule(db, key).await? else {
        return Ok(Evaluation::default());
    };
    if s.active || !is_privileged(db, &s.role_id).await? {
        return Ok(Evaluation::default());
    }
    let last = max_i64(
        db,
        "SELECT MAX(at_ms) AS v FROM alert_activations WHERE schedule_id = $1 AND at_ms <= $2",
        vec![key.into(), now.into()],
    )
    .await?;
    let since = last.unwrap_or(s.start_ms).max(s.start_ms);
    let from = since + settings.duration_ms();
    if !s.current(now) || now < from {
        let due = if s.current(now) {
            Some(from)
        } else {
            s.next_change(now)
        };
        return Ok(Evaluation {
            finding: None,
            due_at_ms: due,
        });
    }
    let days = (now - since) / super::definitions::DAY_MS;
    Ok(Evaluation {
        finding: Some(Finding {
            detail: match last {
                Some(_) => format!("eligible, and not activated for {days} days"),
                None => format!("eligible for {days} days and never activated"),
            },
            ..finding_of(&s, days, from, last.unwrap_or(s.start_ms))
        }),
        due_at_ms: s.end_ms,
    })
}

/// Holds a privileged role and is disabled, or has not activated anything for N days.
async fn stale(
    db: &impl ConnectionTrait,
    principal_id: &str,
    settings: &Settings,
    now: i64,
) -> anyhow::Result<Evaluation> {
    let rows = db
        .query_all_raw(stmt(
            db,
            &format!(
                "SELECT * FROM alert_schedules s WHERE s.principal_id = $1 AND {}",
                privileged_sql("s.role_id")
            ),
            [principal_id.into()],
        ))
        .await?;
    let held: Vec<ScheduleRow> = rows
        .iter()
        .map(schedule_row)
        .collect::<anyhow::Result<_>>()?;
    let current: Vec<&ScheduleRow> = held.iter().filter(|s| s.current(now)).collect();
    let next_change = held.iter().filter_map(|s| s.next_change(now)).min();
    let Some(holding_since) = current.iter().map(|s| s.start_ms).min() else {
        return Ok(Evaluation {
            finding: None,
            due_at_ms: next_change,
        });
    };
    let (enabled, _, disabled_at) = principal(db, principal_id).await?;
    let last = max_i64(
        db,
        "SELECT MAX(at_ms) AS v FROM alert_activations WHERE principal_id = $1 AND at_ms <= $2",
        vec![principal_id.into(), now.into()],
    )
    .await?;
    // Only an eligibility is used by activating it: a permanent active holder (a break-glass
    // account, say) has nothing to activate, and is judged by the directory alone.
    let eligible_since = current
        .iter()
        .filter(|s| !s.active)
        .map(|s| s.start_ms)
        .min();
    let quiet_from =
        eligible_since.map(|start| last.unwrap_or(start).max(start) + settings.duration_ms());
    let base = Finding {
        principal_id: principal_id.to_owned(),
        role_id: String::new(),
        scope: String::new(),
        schedule_id: String::new(),
        count: current.len() as i64,
        first_seen_ms: 0,
        last_seen_ms: last.unwrap_or(holding_since),
        last_sequence: 0,
        episode: 0,
        detail: String::new(),
    };
    let finding = match quiet_from {
        _ if !enabled => Some(Finding {
            first_seen_ms: disabled_at.unwrap_or(holding_since).max(holding_since),
            detail: format!(
                "disabled in the directory, yet holds {} privileged assignments",
                current.len()
            ),
            ..base
        }),
        Some(from) if now >= from => Some(Finding {
            first_seen_ms: from,
            detail: format!(
                "eligible for a privileged role, and has not activated anything for {} days",
                (now - from) / super::definitions::DAY_MS + i64::from(settings.duration_days)
            ),
            ..base
        }),
        _ => None,
    };
    let due = match (&finding, quiet_from) {
        (None, Some(from)) => Some(from.min(next_change.unwrap_or(i64::MAX))),
        _ => next_change,
    };
    Ok(Evaluation {
        finding,
        due_at_ms: due,
    })
}

/// Uses since the last dismissed incident of the principal.
async fn break_glass(db: &impl ConnectionTrait, principal_id: &str) -> anyhow::Result<Evaluation> {
    let cut = max_i64(
        db,
        "SELECT MAX(last_sequence) AS v FROM alert_incidents WHERE alert_id = $1 \
         AND incident_key = $2 AND state = 'dismissed'",
        vec![AlertKind::BreakGlassUsed.id().into(), principal_id.into()],
    )
    .await?
    .unwrap_or(0);
    let row = db
        .query_one_raw(stmt(
            db,
            "SELECT COUNT(*) AS n, MIN(sequence) AS first_seq, MAX(sequence) AS last_seq, \
             MIN(at_ms) AS first_at, MAX(at_ms) AS last_at FROM alert_break_glass_uses \
             WHERE principal_id = $1 AND sequence > $2",
            [principal_id.into(), cut.into()],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(Evaluation::default());
    };
    let n: i64 = row.try_get("", "n")?;
    if n == 0 {
        return Ok(Evaluation::default());
    }
    Ok(Evaluation {
        finding: Some(Finding {
            principal_id: principal_id.to_owned(),
            role_id: String::new(),
            scope: String::new(),
            schedule_id: String::new(),
            count: n,
            first_seen_ms: row.try_get::<Option<i64>>("", "first_at")?.unwrap_or(0),
            last_seen_ms: row.try_get::<Option<i64>>("", "last_at")?.unwrap_or(0),
            last_sequence: row.try_get::<Option<i64>>("", "last_seq")?.unwrap_or(0),
            episode: row.try_get::<Option<i64>>("", "first_seq")?.unwrap_or(0),
            detail: format!("the break-glass account acted {n} times in PIM"),
        }),
        due_at_ms: None,
    })
}

/// Every key of `TooManyGlobalAdmins` that holds now: each Global Administrator at `/`, when both
/// thresholds are met. Also when to look again (a relevant schedule starts or ends).
pub async fn too_many_global_admins(
    db: &impl ConnectionTrait,
    settings: &Settings,
    now: i64,
) -> anyhow::Result<(Vec<(String, Finding)>, Option<i64>)> {
    let enabled_holder = "NOT EXISTS (SELECT 1 FROM alert_principals p \
                          WHERE p.principal_id = s.principal_id AND NOT p.enabled)";
    let holders = db
        .query_all_raw(stmt(
            db,
            &format!(
                "SELECT s.principal_id, MIN(s.start_ms) AS since FROM alert_schedules s \
                 WHERE s.role_id = $2 AND s.scope = '/' AND {CURRENT} AND {enabled_holder} \
                 GROUP BY s.principal_id ORDER BY s.principal_id"
            ),
            [now.into(), roles::GLOBAL_ADMINISTRATOR.into()],
        ))
        .await?;
    let privileged: i64 = db
        .query_one_raw(stmt(
            db,
            &format!(
                "SELECT COUNT(DISTINCT s.principal_id) AS n FROM alert_schedules s \
                 WHERE {CURRENT} AND {enabled_holder} AND {}",
                privileged_sql("s.role_id")
            ),
            [now.into()],
        ))
        .await?
        .map(|r| r.try_get("", "n"))
        .transpose()?
        .unwrap_or(0);
    let due = max_i64(
        db,
        &format!(
            "SELECT MIN(CASE WHEN s.start_ms > $1 THEN s.start_ms ELSE s.end_ms END) AS v \
             FROM alert_schedules s WHERE (s.start_ms > $1 OR s.end_ms > $1) AND {}",
            privileged_sql("s.role_id")
        ),
        vec![now.into()],
    )
    .await?;
    let count = holders.len() as i64;
    let count_met = settings.enabled && count >= i64::from(settings.global_admin_count);
    let share_met =
        privileged > 0 && count * 100 >= i64::from(settings.global_admin_percentage) * privileged;
    if !(count_met && share_met) {
        return Ok((Vec::new(), due));
    }
    let percent = count * 100 / privileged.max(1);
    let mut out = Vec::with_capacity(holders.len());
    for row in holders {
        let principal: String = row.try_get("", "principal_id")?;
        let since: i64 = row.try_get("", "since")?;
        out.push((
            principal.clone(),
            Finding {
                principal_id: principal,
                role_id: roles::GLOBAL_ADMINISTRATOR.to_owned(),
                scope: "/".to_owned(),
                schedule_id: String::new(),
                count,
                first_seen_ms: since,
                last_seen_ms: since,
                last_sequence: 0,
                episode: 0,
                detail: format!(
                    "{count} of {privileged} privileged assignees ({percent}%) are Global \
                     Administrators (thresholds {} and {}%)",
                    settings.global_admin_count, settings.global_admin_percentage
                ),
            },
        ));
    }
    Ok((out, due))
}

/// The keys worth evaluating for `kind` when everything is evaluated: those the projection
/// could make hold now. Keys of current incidents are added by the caller.
pub async fn candidate_keys(
    db: &impl ConnectionTrait,
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
            "SELECT role_id || '|' || scope AS k FROM alert_policies WHERE NOT mfa_required".into(),
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
    let rows = db.query_all_raw(stmt(db, &sql, values)).await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<String>("", "k"))
        .collect::<Result<_, _>>()?)
}

/// The schedules of a principal, for alerts keyed by schedule that depend on the principal.
pub async fn schedules_of(
    db: &impl ConnectionTrait,
    principal: &str,
) -> anyhow::Result<Vec<String>> {
    let rows = db
        .query_all_raw(stmt(
            db,
            "SELECT schedule_id FROM alert_schedules WHERE principal_id = $1",
            [principal.into()],
        ))
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<String>("", "schedule_id"))
        .collect::<Result<_, _>>()?)
}
