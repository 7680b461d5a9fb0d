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

/// Roles, scopes and principal ids repeat across a million rows; each is stored once.
type Name = Arc<str>;

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

/// Everything the index holds of one principal or group, in one place: a check reads one
/// record per subject, a few cache lines out of a million rows.
struct Holder {
    name: Name,
    /// The directory marks it disabled. One it does not know acts as enabled.
    disabled: bool,
    /// Its direct groups, by slot: reached without hashing.
    groups: Vec<u32>,
    /// Its schedules, by role.
    schedules: Vec<(Name, Vec<ScheduleEntry>)>,
    /// Its activated windows.
    windows: Vec<WindowEntry>,
}

/// A principal or group a check acts as.
type Subject<'a> = &'a Holder;

#[derive(Default)]
pub struct Snapshot {
    names: HashSet<Name>,
    /// Each principal's or group's slot in `holders`. Slots are never reused: a principal
    /// whose rows are gone keeps an empty record.
    slots: HashMap<Name, u32>,
    holders: Vec<Holder>,
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

    fn slot(&mut self, id: String) -> u32 {
        let name = self.name(id);
        if let Some(slot) = self.slots.get(&name) {
            return *slot;
        }
        let slot = u32::try_from(self.holders.len()).unwrap_or(u32::MAX);
        self.slots.insert(name.clone(), slot);
        self.holders.push(Holder {
            name,
            disabled: false,
            groups: Vec::new(),
            schedules: Vec::new(),
            windows: Vec::new(),
        });
        slot
    }

    fn holder(&mut self, id: String) -> &mut Holder {
        let slot = self.slot(id) as usize;
        &mut self.holders[slot]
    }

    pub fn insert(&mut self, row: IndexRows) {
        match row {
            IndexRows::Principal { id, enabled } => self.holder(id).disabled = !enabled,
            IndexRows::Membership { member, group } => {
                let group = self.slot(group);
                self.holder(member).groups.push(group);
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
                let role = self.name(role);
                let schedules = &mut self.holder(holder).schedules;
                match schedules.iter_mut().find(|(r, _)| Arc::ptr_eq(r, &role)) {
                    Some((_, entries)) => entries.push(entry),
                    None => schedules.push((role, vec![entry])),
                }
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
                self.holder(principal).windows.push(entry);
            }
        }
    }

    /// Forgets everything about `subjects`, then takes their rows as read again.
    pub fn replace(&mut self, subjects: &[&str], rows: Vec<IndexRows>) {
        for subject in subjects {
            if let Some(slot) = self.slots.get(*subject) {
                let holder = &mut self.holders[*slot as usize];
                holder.disabled = false;
                holder.groups.clear();
                holder.schedules.clear();
                holder.windows.clear();
            }
        }
        for row in rows {
            self.insert(row);
        }
    }

    /// How many schedules and windows the index holds.
    pub fn len(&self) -> (usize, usize) {
        self.holders.iter().fold((0, 0), |(s, w), h| {
            (
                s + h.schedules.iter().map(|(_, e)| e.len()).sum::<usize>(),
                w + h.windows.len(),
            )
        })
    }

    fn subject(&self, id: &str) -> Option<Subject<'_>> {
        self.slots.get(id).map(|slot| &self.holders[*slot as usize])
    }

    fn group(&self, slot: u32) -> Subject<'_> {
        &self.holders[slot as usize]
    }

    /// Who `principal` acts as: itself first and its enabled groups, leaving out any the
    /// index holds nothing of; `None` when it is disabled.
    fn subjects(&self, principal: &str) -> Option<Vec<Subject<'_>>> {
        let Some(me) = self.subject(principal) else {
            return Some(Vec::new());
        };
        if me.disabled {
            return None;
        }
        let mut subjects = vec![me];
        subjects.extend(
            me.groups
                .iter()
                .map(|g| self.group(*g))
                .filter(|g| !g.disabled),
        );
        Some(subjects)
    }

    /// Who `principal` acts as, as ids: itself and its enabled groups; `None` when disabled.
    pub fn subject_ids(&self, principal: &str) -> Option<Vec<String>> {
        let subjects = self.subjects(principal)?;
        if subjects.is_empty() {
            return Some(vec![principal.to_owned()]);
        }
        Some(subjects.iter().map(|s| s.name.to_string()).collect())
    }

    /// Schedules of `role` held by any of `subjects`.
    fn held<'a>(
        subjects: &'a [Subject<'a>],
        role: &'a Name,
    ) -> impl Iterator<Item = &'a ScheduleEntry> {
        subjects
            .iter()
            .flat_map(|s| s.schedules.iter())
            .filter(move |(r, _)| Arc::ptr_eq(r, role))
            .flat_map(|(_, entries)| entries.iter())
    }

    /// Whether any of `subjects` holds `role` at `scope` or an ancestor at an instant, through an
    /// active schedule, or through a window of `subjects[0]` whose eligibility one of them still
    /// holds. Roles are compared by address (each is stored once); a candidate's scope is compared
    /// with the path asked about, which reads only the few schedules of the role rather than
    /// looking up every ancestor.
    fn decide_for(subjects: &[Subject<'_>], role: &Name, scope: &Scope, at_ms: i64) -> Decision {
        let in_scope = |held: &Name| scope.is_within(held);
        let active: Vec<Interval> = Self::held(subjects, role)
            .filter(|s| !s.eligible && in_scope(&s.scope))
            .map(ScheduleEntry::interval)
            .collect();
        let windows: Vec<ActivatedWindow> = subjects
            .first()
            .map(|me| me.windows.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|w| Arc::ptr_eq(&w.role, role) && in_scope(&w.scope))
            .map(|w| ActivatedWindow {
                window: Interval {
                    id: w.id.to_string(),
                    start_ms: w.start_ms,
                    end_ms: Some(w.end_ms),
                },
                // A window comes from an eligibility for its own role.
                eligibility: Self::held(subjects, role)
                    .find(|s| s.eligible && s.id == w.eligibility_id)
                    .map(ScheduleEntry::interval),
            })
            .collect();
        decide(&active, &windows, at_ms)
    }

    /// The groups G for which `subjects` hold an active schedule, or `subjects[0]` a window, of
    /// Group Member (`member`) at `/groups/G`, and that the index holds anything of:
    /// candidates for just-in-time membership.
    fn member_groups<'a>(&'a self, subjects: &[Subject<'a>], member: &Name) -> Vec<Subject<'a>> {
        let scopes = Self::held(subjects, member)
            .filter(|s| !s.eligible)
            .map(|s| &*s.scope)
            .chain(
                subjects
                    .first()
                    .map(|me| me.windows.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .filter(|w| Arc::ptr_eq(&w.role, member))
                    .map(|w| &*w.scope),
            );
        let mut groups: Vec<Subject<'a>> = Vec::new();
        for scope in scopes {
            if let Some(group) = scope.strip_prefix("/groups/")
                && !group.is_empty()
                && !group.contains('/')
                && let Some(group) = self.subject(group)
                && !groups.iter().any(|g| std::ptr::eq(*g, group))
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
            return disabled();
        };
        self.decide_as(&subjects, role, scope, at_ms)
    }

    /// `decide`, and when denied, the eligibility that would grant access once activated: the
    /// two answers of `CheckAccess`, finding who the principal acts as once.
    pub fn check(
        &self,
        principal: &str,
        role: &str,
        scope: &Scope,
        at_ms: i64,
    ) -> (Decision, Option<Interval>) {
        let Some(subjects) = self.subjects(principal) else {
            return (disabled(), None);
        };
        let decision = self.decide_as(&subjects, role, scope, at_ms);
        let nearest = match decision {
            Decision::Allowed { .. } => None,
            Decision::Denied { .. } => self.eligibility_as(&subjects, role, scope, at_ms),
        };
        (decision, nearest)
    }

    fn decide_as(
        &self,
        subjects: &[Subject<'_>],
        role: &str,
        scope: &Scope,
        at_ms: i64,
    ) -> Decision {
        let Some(role_name) = self.names.get(role) else {
            // Nobody holds a role the index has never seen.
            return decide(&[], &[], at_ms);
        };
        let mut decision = Self::decide_for(subjects, role_name, scope, at_ms);
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
        for group in self.member_groups(subjects, member) {
            if group.disabled || subjects.iter().any(|s| std::ptr::eq(*s, group)) {
                continue;
            }
            // `group` came out of a scope `/groups/G` with no other segment: it parses.
            let Ok(membership_scope) = Scope::parse(&format!("/groups/{}", group.name)) else {
                continue;
            };
            let Decision::Allowed {
                via: member_via,
                until_ms: member_until,
            } = Self::decide_for(subjects, member, &membership_scope, at_ms)
            else {
                continue;
            };
            if let Decision::Allowed { via, until_ms } =
                Self::decide_for(&[group], role_name, scope, at_ms)
            {
                let until_ms = match (member_until, until_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                decision = decision.or(Decision::Allowed {
                    via: format!(
                        "{via} through membership of group {} by {member_via}",
                        group.name
                    ),
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
        self.eligibility_as(&subjects, role, scope, at_ms)
    }

    fn eligibility_as(
        &self,
        subjects: &[Subject<'_>],
        role: &str,
        scope: &Scope,
        at_ms: i64,
    ) -> Option<Interval> {
        let role = self.names.get(role)?;
        Self::held(subjects, role)
            .filter(|s| s.eligible && scope.is_within(&s.scope))
            .filter(|s| covers(s.start_ms, s.end_ms, at_ms))
            .max_by_key(|s| s.end_ms.unwrap_or(i64::MAX))
            .map(ScheduleEntry::interval)
    }
}

fn disabled() -> Decision {
    Decision::Denied {
        reason: "the principal is disabled in the directory",
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
