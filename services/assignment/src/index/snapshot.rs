//! The access index's data, as of one revision, and the questions asked of it: who a principal
//! acts as, and whether it holds a role at a scope at an instant. Every access decision of the
//! service is made here, from memory.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use pim_client::roles;

use crate::{
    domain::{
        access::{ActivatedWindow, Decision, Interval, decide},
        scope::Scope,
    },
    store::{IndexRows, ScheduleRow, WindowRow},
};

/// Roles, scopes and principal ids repeat across a million rows; each is stored once.
type Name = Arc<str>;

struct ScheduleEntry {
    id: Box<str>,
    eligible: bool,
    role: Name,
    scope: Name,
    start_ms: i64,
    end_ms: Option<i64>,
}

impl ScheduleEntry {
    fn interval(&self) -> Interval {
        Interval {
            id: self.id.to_string(),
            start_ms: self.start_ms,
            end_ms: self.end_ms,
        }
    }
}

struct WindowEntry {
    id: Box<str>,
    role: Name,
    scope: Name,
    eligibility_id: Box<str>,
    start_ms: i64,
    end_ms: i64,
}

#[derive(Default)]
pub struct Snapshot {
    names: HashSet<Name>,
    /// Principals the directory marks disabled; one it does not know acts as enabled.
    disabled: HashSet<Name>,
    /// A principal's direct groups.
    groups_of: HashMap<Name, Vec<Name>>,
    /// Schedules by the principal or group holding them.
    schedules: HashMap<Name, Vec<ScheduleEntry>>,
    /// Activated windows by principal.
    windows: HashMap<Name, Vec<WindowEntry>>,
}

impl Snapshot {
    fn name(&mut self, raw: String) -> Name {
        if let Some(name) = self.names.get(raw.as_str()) {
            return name.clone();
        }
        let name: Name = raw.into();
        self.names.insert(name.clone());
        name
    }

    pub fn insert(&mut self, row: IndexRows) {
        match row {
            IndexRows::Principal { id, enabled } => {
                if !enabled {
                    let id = self.name(id);
                    self.disabled.insert(id);
                }
            }
            IndexRows::Membership { member, group } => {
                let (member, group) = (self.name(member), self.name(group));
                self.groups_of.entry(member).or_default().push(group);
            }
            IndexRows::Schedule(ScheduleRow {
                id,
                eligible,
                holder,
                role,
                scope,
                start_ms,
                end_ms,
            }) => {
                let entry = ScheduleEntry {
                    id: id.into(),
                    eligible,
                    role: self.name(role),
                    scope: self.name(scope),
                    start_ms,
                    end_ms,
                };
                let holder = self.name(holder);
                self.schedules.entry(holder).or_default().push(entry);
            }
            IndexRows::Window(WindowRow {
                id,
                principal,
                role,
                scope,
                eligibility_id,
                start_ms,
                end_ms,
            }) => {
                let entry = WindowEntry {
                    id: id.into(),
                    role: self.name(role),
                    scope: self.name(scope),
                    eligibility_id: eligibility_id.into(),
                    start_ms,
                    end_ms,
                };
                let principal = self.name(principal);
                self.windows.entry(principal).or_default().push(entry);
            }
        }
    }

    /// Forgets everything about `subjects`, then takes their rows as read again.
    pub fn replace(&mut self, subjects: &[&str], rows: Vec<IndexRows>) {
        for subject in subjects {
            self.disabled.remove(*subject);
            self.groups_of.remove(*subject);
            self.schedules.remove(*subject);
            self.windows.remove(*subject);
        }
        for row in rows {
            self.insert(row);
        }
    }

    /// How many schedules and windows the index holds.
    pub fn len(&self) -> (usize, usize) {
        (
            self.schedules.values().map(Vec::len).sum(),
            self.windows.values().map(Vec::len).sum(),
        )
    }

    fn enabled(&self, id: &str) -> bool {
        !self.disabled.contains(id)
    }

    /// Who `principal` acts as: itself and its enabled groups, or `None` when it is disabled.
    pub fn subjects<'a>(&'a self, principal: &'a str) -> Option<Vec<&'a str>> {
        if !self.enabled(principal) {
            return None;
        }
        let mut subjects = vec![principal];
        if let Some(groups) = self.groups_of.get(principal) {
            subjects.extend(
                groups
                    .iter()
                    .map(|g| g.as_ref())
                    .filter(|g| self.enabled(g)),
            );
        }
        Some(subjects)
    }

    fn held<'a>(&'a self, subjects: &'a [&'a str]) -> impl Iterator<Item = &'a ScheduleEntry> {
        subjects
            .iter()
            .filter_map(|s| self.schedules.get(*s))
            .flatten()
    }

    /// Whether any of `subjects` holds `role` at any of `scopes` at an instant, through an
    /// active schedule, or through a window of `subjects[0]` whose eligibility one of them still
    /// holds.
    fn decide_for(&self, subjects: &[&str], role: &str, scopes: &[String], at_ms: i64) -> Decision {
        let in_scope = |scope: &str| scopes.iter().any(|s| s == scope);
        let active: Vec<Interval> = self
            .held(subjects)
            .filter(|s| !s.eligible && &*s.role == role && in_scope(&s.scope))
            .map(ScheduleEntry::interval)
            .collect();
        let windows: Vec<ActivatedWindow> = subjects
            .first()
            .and_then(|p| self.windows.get(*p))
            .into_iter()
            .flatten()
            .filter(|w| &*w.role == role && in_scope(&w.scope))
            .map(|w| ActivatedWindow {
                window: Interval {
                    id: w.id.to_string(),
                    start_ms: w.start_ms,
                    end_ms: Some(w.end_ms),
                },
                eligibility: self
                    .held(subjects)
                    .find(|s| s.eligible && s.id == w.eligibility_id)
                    .map(ScheduleEntry::interval),
            })
            .collect();
        decide(&active, &windows, at_ms)
    }

    /// The groups G for which `subjects` hold an active schedule, or `subjects[0]` a window, of
    /// Group Member at `/groups/G`: candidates for just-in-time membership.
    fn member_groups<'a>(&'a self, subjects: &'a [&'a str]) -> Vec<&'a str> {
        let scopes = self
            .held(subjects)
            .filter(|s| !s.eligible && &*s.role == roles::GROUP_MEMBER)
            .map(|s| &*s.scope)
            .chain(
                subjects
                    .first()
                    .and_then(|p| self.windows.get(*p))
                    .into_iter()
                    .flatten()
                    .filter(|w| &*w.role == roles::GROUP_MEMBER)
                    .map(|w| &*w.scope),
            );
        let mut groups: Vec<&str> = Vec::new();
        for scope in scopes {
            if let Some(group) = scope.strip_prefix("/groups/")
                && !group.is_empty()
                && !group.contains('/')
                && !groups.contains(&group)
            {
                groups.push(group);
            }
        }
        groups
    }

    /// May `principal` act as `role` at `scope` at an instant: directly, through an enabled
    /// group, at an ancestor scope, or through a just-in-time group membership. A disabled
    /// principal may do nothing.
    pub fn decide(&self, principal: &str, role: &str, scope: &Scope, at_ms: i64) -> Decision {
        let Some(subjects) = self.subjects(principal) else {
            return Decision::Denied {
                reason: "the principal is disabled in the directory",
            };
        };
        let scopes = scope.with_ancestors();
        let mut decision = self.decide_for(&subjects, role, &scopes, at_ms);
        if role == roles::GROUP_MEMBER {
            // Membership itself is decided by the directory and the holder's own assignments,
            // never through another just-in-time membership.
            return decision;
        }
        // PIM for Groups: while P holds Group Member at `/groups/G`, P holds G's assignments,
        // and only until that membership ends.
        for group in self.member_groups(&subjects) {
            if subjects.contains(&group) || !self.enabled(group) {
                continue;
            }
            // `group` came out of a scope `/groups/G` with no other segment: it parses.
            let Ok(membership_scope) = Scope::parse(&format!("/groups/{group}")) else {
                continue;
            };
            let membership_scope = membership_scope.with_ancestors();
            let Decision::Allowed {
                via: member_via,
                until_ms: member_until,
            } = self.decide_for(&subjects, roles::GROUP_MEMBER, &membership_scope, at_ms)
            else {
                continue;
            };
            if let Decision::Allowed { via, until_ms } =
                self.decide_for(&[group], role, &scopes, at_ms)
            {
                let until_ms = match (member_until, until_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                decision = decision.or(Decision::Allowed {
                    via: format!("{via} through membership of group {group} by {member_via}"),
                    until_ms,
                });
            }
        }
        decision
    }

    /// The eligibility of `principal` for `role` at `scope` or an ancestor that covers an
    /// instant and lasts longest, if any.
    pub fn eligibility(
        &self,
        principal: &str,
        role: &str,
        scope: &Scope,
        at_ms: i64,
    ) -> Option<Interval> {
        let subjects = self.subjects(principal)?;
        let scopes = scope.with_ancestors();
        self.held(&subjects)
            .filter(|s| s.eligible && &*s.role == role && scopes.iter().any(|x| **x == *s.scope))
            .map(ScheduleEntry::interval)
            .filter(|s| s.covers(at_ms))
            .max_by_key(|s| s.end_ms.unwrap_or(i64::MAX))
    }
}
