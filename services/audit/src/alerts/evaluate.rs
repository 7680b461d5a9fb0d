//! Whether each alert's condition holds for one key (a schedule, a principal, a role at a scope)
//! at an instant, from the projection alone, and when the answer could next change with no new
//! event. Continuous evaluation, the clock's timer and a refresh all ask these functions, so they
//! cannot disagree. Reads only.

use pim_client::roles;

use super::{
    definitions::{AlertKind, Settings},
    facts::ScheduleFact,
    view::{View, is_current, next_change},
};

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

/// Evaluates one key of `kind` (for `TooManyGlobalAdmins`, use [`too_many_global_admins`]).
pub async fn key(
    v: &impl View,
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
            let Some(s) = v.schedule(key).await? else {
                return Ok(Evaluation::default());
            };
            Ok(Evaluation {
                finding: (s.discovered && s.active && is_current(&s, now)).then(|| Finding {
                    detail: "a standing active assignment that was made outside PIM".into(),
                    ..finding_of(&s, 1, s.start_ms, s.start_ms)
                }),
                due_at_ms: next_change(&s, now),
            })
        }
        AlertKind::TooManyGlobalAdmins => Ok(Evaluation::default()),
        AlertKind::SequentialActivations => sequential(v, key, settings, now).await,
        AlertKind::NoMfaOnActivation => {
            let (role, scope) = key.split_once('|').unwrap_or((key, ""));
            let Some((mfa, since)) = v.policy(role, scope).await? else {
                return Ok(Evaluation::default());
            };
            let holds = !mfa && v.is_privileged(role).await?;
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
        AlertKind::RedundantAssignment => redundant(v, key, settings, now).await,
        AlertKind::StaleSignIn => stale(v, key, settings, now).await,
        AlertKind::BreakGlassUsed => break_glass(v, key).await,
        AlertKind::GuestInPrivilegedRole => {
            let Some(s) = v.schedule(key).await? else {
                return Ok(Evaluation::default());
            };
            let guest = v.principal(&s.principal_id).await?.guest;
            let holds = guest && is_current(&s, now) && v.is_privileged(&s.role_id).await?;
            Ok(Evaluation {
                finding: holds.then(|| Finding {
                    detail: format!(
                        "a guest is {} for a privileged role",
                        if s.active { "active" } else { "eligible" }
                    ),
                    ..finding_of(&s, 1, s.start_ms, s.start_ms)
                }),
                due_at_ms: next_change(&s, now),
            })
        }
    }
}

fn finding_of(s: &ScheduleFact, count: i64, first: i64, last: i64) -> Finding {
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
    v: &impl View,
    key: &str,
    settings: &Settings,
    now: i64,
) -> anyhow::Result<Evaluation> {
    let (principal, role) = key.split_once('|').unwrap_or((key, ""));
    let window = settings.activation_window_ms;
    let times = v
        .activation_times(principal, role, now - window, now)
        .await?;
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
    v: &impl View,
    key: &str,
    settings: &Settings,
    now: i64,
) -> anyhow::Result<Evaluation> {
    let Some(s) = v.schedule(key).await? else {
        return Ok(Evaluation::default());
    };
    if s.active || !v.is_privileged(&s.role_id).await? {
        return Ok(Evaluation::default());
    }
    let last = v.last_activation_of_schedule(key, now).await?;
    let since = last.unwrap_or(s.start_ms).max(s.start_ms);
    let from = since + settings.duration_ms();
    if !is_current(&s, now) || now < from {
        let due = if is_current(&s, now) {
            Some(from)
        } else {
            next_change(&s, now)
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
    v: &impl View,
    principal_id: &str,
    settings: &Settings,
    now: i64,
) -> anyhow::Result<Evaluation> {
    let held = v.privileged_schedules_of(principal_id).await?;
    let current: Vec<&ScheduleFact> = held.iter().filter(|s| is_current(s, now)).collect();
    let next_change = held.iter().filter_map(|s| next_change(s, now)).min();
    let Some(holding_since) = current.iter().map(|s| s.start_ms).min() else {
        return Ok(Evaluation {
            finding: None,
            due_at_ms: next_change,
        });
    };
    let state = v.principal(principal_id).await?;
    let (enabled, disabled_at) = (state.enabled, state.disabled_at_ms);
    let last = v.last_activation_of_principal(principal_id, now).await?;
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
async fn break_glass(v: &impl View, principal_id: &str) -> anyhow::Result<Evaluation> {
    let cut = v.dismissed_cut(principal_id).await?;
    let uses = v.uses_after(principal_id, cut).await?;
    if uses.count == 0 {
        return Ok(Evaluation::default());
    }
    Ok(Evaluation {
        finding: Some(Finding {
            principal_id: principal_id.to_owned(),
            role_id: String::new(),
            scope: String::new(),
            schedule_id: String::new(),
            count: uses.count,
            first_seen_ms: uses.first_at_ms,
            last_seen_ms: uses.last_at_ms,
            last_sequence: uses.last_sequence,
            episode: uses.first_sequence,
            detail: format!("the break-glass account acted {} times in PIM", uses.count),
        }),
        due_at_ms: None,
    })
}

/// Every key of `TooManyGlobalAdmins` that holds now: each Global Administrator at `/`, when both
/// thresholds are met. Also when to look again (a relevant schedule starts or ends).
pub async fn too_many_global_admins(
    v: &impl View,
    settings: &Settings,
    now: i64,
) -> anyhow::Result<(Vec<(String, Finding)>, Option<i64>)> {
    let holders = v.global_admins(now).await?;
    let privileged = v.privileged_holders(now).await?;
    let due = v.next_privileged_change(now).await?;
    let count = holders.len() as i64;
    let count_met = settings.enabled && count >= i64::from(settings.global_admin_count);
    let share_met =
        privileged > 0 && count * 100 >= i64::from(settings.global_admin_percentage) * privileged;
    if !(count_met && share_met) {
        return Ok((Vec::new(), due));
    }
    let percent = count * 100 / privileged.max(1);
    let mut out = Vec::with_capacity(holders.len());
    for (principal, since) in holders {
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
