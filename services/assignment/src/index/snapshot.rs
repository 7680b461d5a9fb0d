//! The access index's data, as of one revision, and the questions asked of it: who a principal
//! acts as, and whether it holds a role at a scope at an instant. Every access decision of the
//! service is made here, from memory.

use std::sync::Arc;

use pim_client::roles;

use crate::{
    domain::{
        access::{ActivatedWindow, Decision, Interval, covers, decide},
        scope::Scope,
    },
    store::{IndexRows, ScheduleRow, WindowRow},
};

/// Keys are written from PIM's own database and only looked up with what callers send, so a
/// fast hash is safe here; SipHash cost more than the rest of a check.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Roles, scopes and principal ids repeat across a million rows; each is stored once, and never
/// dropped, so its address identifies it.
type Name = Arc<str>;

fn addr(name: &Name) -> usize {
    Arc::as_ptr(name).cast::<u8>() as usize
}

/// Schedules are filed by (holder, role), by address: a check reads only the rows of the role
/// it asks about, a few cache lines per holder out of a million rows.
type Key = (usize, usize);

fn key(holder: &Name, role: &Name) -> Key {
    (addr(holder), addr(role))
}

struct ScheduleEntry {
    id: Box<str>,
    eligible: bool,
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
    /// Schedules by (holder, role).
    schedules: HashMap<Key, Vec<ScheduleEntry>>,
    /// The roles each principal or group holds schedules of, to forget them by holder.
    roles_held: HashMap<Name, Vec<Name>>,
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
                    scope: self.name(scope),
                    start_ms,
                    end_ms,
                };
                let (holder, role) = (self.name(holder), self.name(role));
                let held = self.roles_held.entry(holder.clone()).or_default();
                if !held.iter().any(|r| Arc::ptr_eq(r, &role)) {
                    held.push(role.clone());
                }
                self.schedules
                    .entry(key(&holder, &role))
                    .or_default()
                    .push(entry);
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
            let Some(name) = self.names.get(*subject).cloned() else {
                continue;
            };
            self.disabled.remove(&name);
            self.groups_of.remove(&name);
            self.windows.remove(&name);
            for role in self.roles_held.remove(&name).unwrap_or_default() {
                self.schedules.remove(&key(&name, &role));
            }
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

    fn enabled(&self, name: &Name) -> bool {
        !self.disabled.contains(name)
    }

    /// Who `principal` acts as: itself and its enabled groups (none when the index has never
    /// seen it), or `None` when it is disabled.
    fn subjects(&self, principal: &str) -> Option<Vec<&Name>> {
        let Some(name) = self.names.get(principal) else {
            return Some(Vec::new());
        };
        if !self.enabled(name) {
            return None;
        }
        let mut subjects = vec![name];
        if let Some(groups) = self.groups_of.get(name) {
            subjects.extend(groups.iter().filter(|g| self.enabled(g)));
        }
        Some(subjects)
    }

    /// [`Self::subjects`] as ids: the principal itself first.
    pub fn subject_ids(&self, principal: &str) -> Option<Vec<String>> {
        let subjects = self.subjects(principal)?;
        if subjects.is_empty() {
            return Some(vec![principal.to_owned()]);
        }
        Some(subjects.iter().map(|s| s.to_string()).collect())
    }

    /// Schedules of `role` held by any of `subjects`.
    fn held<'a>(
        &'a self,
        subjects: &'a [&'a Name],
        role: &'a Name,
    ) -> impl Iterator<Item = &'a ScheduleEntry> {
        subjects
            .iter()
            .filter_map(move |s| self.schedules.get(&key(s, role)))
            .flatten()
    }

    /// The stored names of `scope` and its ancestors; one that is not stored is held by nobody.
    fn scopes_of(&self, scope: &Scope) -> Vec<&Name> {
        scope
            .with_ancestors()
            .iter()
            .filter_map(|s| self.names.get(s.as_str()))
            .collect()
    }

    /// Whether any of `subjects` holds `role` at any of `scopes` at an instant, through an
    /// active schedule, or through a window of `subjects[0]` whose eligibility one of them still
    /// holds.
    fn decide_for(
        &self,
        subjects: &[&Name],
        role: &Name,
        scopes: &[&Name],
        at_ms: i64,
    ) -> Decision {
        let in_scope = |scope: &Name| scopes.iter().any(|s| Arc::ptr_eq(s, scope));
        let active: Vec<Interval> = self
            .held(subjects, role)
            .filter(|s| !s.eligible && in_scope(&s.scope))
            .map(ScheduleEntry::interval)
            .collect();
        let windows: Vec<ActivatedWindow> = subjects
            .first()
            .and_then(|p| self.windows.get(*p))
            .into_iter()
            .flatten()
            .filter(|w| Arc::ptr_eq(&w.role, role) && in_scope(&w.scope))
            .map(|w| ActivatedWindow {
                window: Interval {
                    id: w.id.to_string(),
                    start_ms: w.start_ms,
                    end_ms: Some(w.end_ms),
                },
                // A window comes from an eligibility for its own role.
                eligibility: self
                    .held(subjects, role)
                    .find(|s| s.eligible && s.id == w.eligibility_id)
                    .map(ScheduleEntry::interval),
            })
            .collect();
        decide(&active, &windows, at_ms)
    }

    /// The groups G for which `subjects` hold an active schedule, or `subjects[0]` a window, of
    /// Group Member (`member`) at `/groups/G`: candidates for just-in-time membership.
    fn member_groups<'a>(&'a self, subjects: &'a [&'a Name], member: &'a Name) -> Vec<&'a Name> {
        let scopes = self
            .held(subjects, member)
            .filter(|s| !s.eligible)
            .map(|s| &*s.scope)
            .chain(
                subjects
                    .first()
                    .and_then(|p| self.windows.get(*p))
                    .into_iter()
                    .flatten()
                    .filter(|w| Arc::ptr_eq(&w.role, member))
                    .map(|w| &*w.scope),
            );
        let mut groups: Vec<&Name> = Vec::new();
        for scope in scopes {
            if let Some(group) = scope.strip_prefix("/groups/")
                && !group.is_empty()
                && !group.contains('/')
                && let Some(group) = self.names.get(group)
                && !groups.iter().any(|g| Arc::ptr_eq(g, group))
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
        let Some(role_name) = self.names.get(role) else {
            // Nobody holds a role the index has never seen.
            return decide(&[], &[], at_ms);
        };
        let scopes = self.scopes_of(scope);
        let mut decision = self.decide_for(&subjects, role_name, &scopes, at_ms);
        let Some(member) = self.names.get(roles::GROUP_MEMBER) else {
            return decision;
        };
        if Arc::ptr_eq(role_name, member) {
            // Membership itself is decided by the directory and the holder's own assignments,
            // never through another just-in-time membership.
            return decision;
        }
        // PIM for Groups: while P holds Group Member at `/groups/G`, P holds G's assignments,
        // and only until that membership ends.
        for group in self.member_groups(&subjects, member) {
            if subjects.iter().any(|s| Arc::ptr_eq(s, group)) || !self.enabled(group) {
                continue;
            }
            // `group` came out of a scope `/groups/G` with no other segment: it parses.
            let Ok(membership_scope) = Scope::parse(&format!("/groups/{group}")) else {
                continue;
            };
            let Decision::Allowed {
                via: member_via,
                until_ms: member_until,
            } = self.decide_for(&subjects, member, &self.scopes_of(&membership_scope), at_ms)
            else {
                continue;
            };
            if let Decision::Allowed { via, until_ms } =
                self.decide_for(&[group], role_name, &scopes, at_ms)
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
        let role = self.names.get(role)?;
        let scopes = self.scopes_of(scope);
        self.held(&subjects, role)
            .filter(|s| s.eligible && scopes.iter().any(|x| Arc::ptr_eq(x, &s.scope)))
            .filter(|s| covers(s.start_ms, s.end_ms, at_ms))
            .max_by_key(|s| s.end_ms.unwrap_or(i64::MAX))
            .map(ScheduleEntry::interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(id: &str, holder: &str, eligible: bool, scope: &str) -> IndexRows {
        IndexRows::Schedule(ScheduleRow {
            id: id.into(),
            eligible,
            holder: holder.into(),
            role: "r".into(),
            scope: scope.into(),
            start_ms: 0,
            end_ms: None,
        })
    }

    fn membership(member: &str, group: &str) -> IndexRows {
        IndexRows::Membership {
            member: member.into(),
            group: group.into(),
        }
    }

    fn allowed(index: &Snapshot, principal: &str, scope: &str) -> bool {
        let scope = Scope::parse(scope).unwrap();
        matches!(
            index.decide(principal, "r", &scope, 1),
            Decision::Allowed { .. }
        )
    }

    #[test]
    fn replacing_a_principal_forgets_what_it_no_longer_has() {
        let mut index = Snapshot::default();
        for row in [
            membership("u", "g"),
            schedule("s", "g", false, "/a"),
            schedule("e", "u", true, "/a"),
        ] {
            index.insert(row);
        }
        assert!(allowed(&index, "u", "/a/b"), "through the group, below");
        assert!(!allowed(&index, "u", "/"), "not above the scope");
        assert!(
            index
                .eligibility("u", "r", &Scope::parse("/a").unwrap(), 1)
                .is_some()
        );

        // The membership is gone; the eligibility u holds itself stays.
        index.replace(&["u"], vec![schedule("e", "u", true, "/a")]);
        assert!(!allowed(&index, "u", "/a/b"));
        assert!(
            index
                .eligibility("u", "r", &Scope::parse("/a").unwrap(), 1)
                .is_some()
        );

        // Back in the group, but the group is disabled.
        index.replace(&["u"], vec![membership("u", "g")]);
        assert!(allowed(&index, "u", "/a"));
        index.replace(
            &["g"],
            vec![
                IndexRows::Principal {
                    id: "g".into(),
                    enabled: false,
                },
                schedule("s", "g", false, "/a"),
            ],
        );
        assert!(!allowed(&index, "u", "/a"));
        assert_eq!(index.len(), (1, 0));
    }
}
