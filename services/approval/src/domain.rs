//! A case as its recorded rows say it is, and the rules of deciding it. Everything here is pure:
//! the state of a case is derived from its append-only log, so the store only reads rows and
//! appends the lines a plan returns.

use pim_proto::{
    approval::v1::{
        Case, CaseApprover, CaseEntry, CaseKind, CaseStage, CaseStatus, CaseSummary, Decision,
    },
    assignment::v1::{ApprovalRule, Approver},
    timestamp_from_millis,
};

/// Entra's fixed approval window, our default per stage.
pub const DEFAULT_STAGE_TIMEOUT_MS: i64 = 24 * 3600 * 1000;
pub const MAX_STAGES: usize = 5;
pub const MAX_TEXT: usize = 500;

/// One line of a case's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Opened,
    Approved,
    Denied,
    StageCompleted,
    Escalated,
    CaseApproved,
    CaseDenied,
    TimedOut,
    Canceled,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Opened => "opened",
            Action::Approved => "approved",
            Action::Denied => "denied",
            Action::StageCompleted => "stage_completed",
            Action::Escalated => "escalated",
            Action::CaseApproved => "case_approved",
            Action::CaseDenied => "case_denied",
            Action::TimedOut => "timed_out",
            Action::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Action::Opened,
            Action::Approved,
            Action::Denied,
            Action::StageCompleted,
            Action::Escalated,
            Action::CaseApproved,
            Action::CaseDenied,
            Action::TimedOut,
            Action::Canceled,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    fn ends_case(self) -> Option<CaseStatus> {
        match self {
            Action::CaseApproved => Some(CaseStatus::Approved),
            Action::CaseDenied => Some(CaseStatus::Denied),
            Action::TimedOut => Some(CaseStatus::TimedOut),
            Action::Canceled => Some(CaseStatus::Canceled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u32,
    pub at_ms: i64,
    pub actor_id: String,
    pub action: Action,
    pub stage: u32,
    pub justification: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApproverRow {
    pub stage: u32,
    pub principal_id: String,
    pub via_group_id: String,
    pub escalation: bool,
}

/// One stage's settings, normalized from the rule snapshot.
#[derive(Debug, Clone)]
pub struct StageRule {
    pub quorum: u32,
    pub timeout_ms: i64,
    pub justification_required: bool,
    pub escalation_after_ms: Option<i64>,
    pub escalation_approvers: Vec<Approver>,
}

fn millis(d: &Option<pim_proto::Duration>) -> Option<i64> {
    d.as_ref()
        .map(|d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000)
        .filter(|ms| *ms > 0)
}

pub fn stage_rules(rule: &ApprovalRule) -> Vec<StageRule> {
    rule.stages
        .iter()
        .map(|s| StageRule {
            quorum: s.quorum.max(1),
            timeout_ms: millis(&s.timeout).unwrap_or(DEFAULT_STAGE_TIMEOUT_MS),
            justification_required: s.approver_justification_required,
            escalation_after_ms: millis(&s.escalation_after)
                .filter(|_| !s.escalation_approvers.is_empty()),
            escalation_approvers: s.escalation_approvers.clone(),
        })
        .collect()
}

/// A case as stored: what it was opened with, who may decide, and its history.
#[derive(Debug, Clone)]
pub struct CaseRecord {
    pub id: String,
    pub request_id: String,
    pub kind: CaseKind,
    pub policy_version: i64,
    pub opened_at_ms: i64,
    pub summary: CaseSummary,
    pub rule: ApprovalRule,
    pub approvers: Vec<ApproverRow>,
    pub log: Vec<Entry>,
    /// The trace of the request being decided: the case's events continue it.
    pub trace: pim_telemetry::TraceContext,
}

/// Why a decision or command is refused. Each maps to one stable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    SelfApproval,
    NotAnApprover,
    AlreadyDecided(String),
    DeadlinePassed,
    Canceled,
    DistinctApproversRequired,
    JustificationRequired,
}

/// What a transition appends, and the events it announces (type, stage).
#[derive(Debug, Default)]
pub struct Plan {
    pub entries: Vec<Entry>,
    pub new_approvers: Vec<ApproverRow>,
    pub events: Vec<(&'static str, u32)>,
}

impl CaseRecord {
    pub fn requestor(&self) -> &str {
        &self.summary.requestor_id
    }

    pub fn stages(&self) -> Vec<StageRule> {
        stage_rules(&self.rule)
    }

    pub fn distinct_across_stages(&self) -> bool {
        self.rule.distinct_approvers_across_stages
    }

    fn end(&self) -> Option<&Entry> {
        self.log.iter().find(|e| e.action.ends_case().is_some())
    }

    pub fn status(&self) -> CaseStatus {
        self.end()
            .and_then(|e| e.action.ends_case())
            .unwrap_or(CaseStatus::Pending)
    }

    pub fn is_open(&self) -> bool {
        self.end().is_none()
    }

    fn completed(&self, stage: u32) -> Option<&Entry> {
        self.log
            .iter()
            .find(|e| e.action == Action::StageCompleted && e.stage == stage)
    }

    /// The stage awaiting decisions; the stage count once all completed.
    pub fn current_stage(&self) -> u32 {
        self.log
            .iter()
            .filter(|e| e.action == Action::StageCompleted)
            .count() as u32
    }

    pub fn started_at(&self, stage: u32) -> Option<i64> {
        if stage == 0 {
            Some(self.opened_at_ms)
        } else {
            self.completed(stage - 1).map(|e| e.at_ms)
        }
    }

    pub fn deadline(&self, stage: u32) -> Option<i64> {
        let rule = self.stages().get(stage as usize)?.clone();
        Some(self.started_at(stage)? + rule.timeout_ms)
    }

    pub fn escalation_due(&self, stage: u32) -> Option<i64> {
        let after = self.stages().get(stage as usize)?.escalation_after_ms?;
        Some(self.started_at(stage)? + after)
    }

    pub fn escalated(&self, stage: u32) -> bool {
        self.log
            .iter()
            .any(|e| e.action == Action::Escalated && e.stage == stage)
    }

    fn votes(&self, stage: u32, action: Action) -> impl Iterator<Item = &Entry> {
        self.log
            .iter()
            .filter(move |e| e.action == action && e.stage == stage)
    }

    fn voted(&self, stage: u32, who: &str) -> bool {
        self.log.iter().any(|e| {
            e.stage == stage
                && e.actor_id == who
                && matches!(e.action, Action::Approved | Action::Denied)
        })
    }

    fn voted_before(&self, stage: u32, who: &str) -> bool {
        (0..stage).any(|s| self.voted(s, who))
    }

    /// The entries that let `who` decide `stage`.
    pub fn entries_of(&self, stage: u32, who: &str) -> Vec<&ApproverRow> {
        self.approvers
            .iter()
            .filter(|a| a.stage == stage && a.principal_id == who)
            .collect()
    }

    pub fn is_approver_anywhere(&self, who: &str) -> bool {
        self.approvers.iter().any(|a| a.principal_id == who)
    }

    /// Who the current stage still awaits: its approvers who have not decided it, and, where
    /// approvers must be distinct across stages, who did not decide an earlier one.
    pub fn awaiting(&self) -> Vec<String> {
        if !self.is_open() {
            return Vec::new();
        }
        let stage = self.current_stage();
        let mut people: Vec<String> = self
            .approvers
            .iter()
            .filter(|a| a.stage == stage && a.principal_id != self.requestor())
            .map(|a| a.principal_id.clone())
            .filter(|p| !self.voted(stage, p))
            .filter(|p| !(self.distinct_across_stages() && self.voted_before(stage, p)))
            .collect();
        people.sort();
        people.dedup();
        people
    }

    fn next_seq(&self) -> u32 {
        self.log.last().map_or(1, |e| e.seq + 1)
    }

    fn entry(&self, plan: &Plan, at_ms: i64, actor: &str, action: Action, stage: u32) -> Entry {
        Entry {
            seq: self.next_seq() + plan.entries.len() as u32,
            at_ms,
            actor_id: actor.to_owned(),
            action,
            stage,
            justification: String::new(),
        }
    }

    fn refuse_unless_open(&self) -> Result<(), Refusal> {
        match self.status() {
            CaseStatus::Pending => Ok(()),
            CaseStatus::Canceled => Err(Refusal::Canceled),
            CaseStatus::TimedOut => Err(Refusal::DeadlinePassed),
            other => Err(Refusal::AlreadyDecided(format!(
                "the case is already {}",
                status_word(other)
            ))),
        }
    }

    /// The checks a decision must pass that depend only on the case: who may decide which
    /// stage, and when. Membership and enablement are checked by the caller against the
    /// directory.
    pub fn check_decider(&self, who: &str, now_ms: i64) -> Result<u32, Refusal> {
        if who == self.requestor() {
            return Err(Refusal::SelfApproval);
        }
        self.refuse_unless_open()?;
        let stage = self.current_stage();
        if self.deadline(stage).is_some_and(|d| now_ms >= d) {
            return Err(Refusal::DeadlinePassed);
        }
        if self.entries_of(stage, who).is_empty() {
            // An approver of a stage that others completed lost the race, not the right.
            return Err(if (0..stage).any(|s| !self.entries_of(s, who).is_empty()) {
                Refusal::AlreadyDecided(format!("stage {} is already complete", stage))
            } else {
                Refusal::NotAnApprover
            });
        }
        if self.voted(stage, who) {
            return Err(Refusal::AlreadyDecided(
                "you already decided this stage".into(),
            ));
        }
        if self.distinct_across_stages() && self.voted_before(stage, who) {
            return Err(Refusal::DistinctApproversRequired);
        }
        Ok(stage)
    }

    /// Plans `who`'s decision at `now_ms`.
    pub fn decide(
        &self,
        who: &str,
        decision: Decision,
        justification: &str,
        now_ms: i64,
    ) -> Result<Plan, Refusal> {
        let stage = self.check_decider(who, now_ms)?;
        let rules = self.stages();
        let rule = &rules[stage as usize];
        if rule.justification_required && justification.trim().is_empty() {
            return Err(Refusal::JustificationRequired);
        }
        let mut plan = Plan::default();
        let vote = if decision == Decision::Deny {
            Action::Denied
        } else {
            Action::Approved
        };
        let mut line = self.entry(&plan, now_ms, who, vote, stage);
        line.justification = justification.to_owned();
        plan.entries.push(line);
        plan.events.push(("approval.decision_recorded", stage));
        if vote == Action::Denied {
            let end = self.entry(&plan, now_ms, who, Action::CaseDenied, stage);
            plan.entries.push(end);
            plan.events.push(("approval.case_decided", stage));
            return Ok(plan);
        }
        let approvals = self.votes(stage, Action::Approved).count() as u32 + 1;
        if approvals >= rule.quorum {
            let done = self.entry(&plan, now_ms, who, Action::StageCompleted, stage);
            plan.entries.push(done);
            plan.events.push(("approval.stage_completed", stage));
            if stage as usize + 1 == rules.len() {
                let end = self.entry(&plan, now_ms, who, Action::CaseApproved, stage);
                plan.entries.push(end);
                plan.events.push(("approval.case_decided", stage));
            }
        }
        Ok(plan)
    }

    /// Plans the cancellation of an open case.
    pub fn cancel(&self, actor: &str, now_ms: i64) -> Result<Plan, Refusal> {
        self.refuse_unless_open()?;
        let mut plan = Plan::default();
        let stage = self.current_stage();
        let line = self.entry(&plan, now_ms, actor, Action::Canceled, stage);
        plan.entries.push(line);
        plan.events.push(("approval.case_canceled", stage));
        Ok(plan)
    }

    /// Plans the timeout of `stage`, if it is still current and its deadline passed.
    pub fn time_out(&self, stage: u32, now_ms: i64) -> Option<Plan> {
        if !self.is_open()
            || self.current_stage() != stage
            || self.deadline(stage).is_none_or(|d| now_ms < d)
        {
            return None;
        }
        let mut plan = Plan::default();
        let line = self.entry(&plan, now_ms, "", Action::TimedOut, stage);
        plan.entries.push(line);
        plan.events.push(("approval.case_timed_out", stage));
        Some(plan)
    }

    /// Whether `stage` should escalate now.
    pub fn escalation_pending(&self, stage: u32, now_ms: i64) -> bool {
        self.is_open()
            && self.current_stage() == stage
            && !self.escalated(stage)
            && self.escalation_due(stage).is_some_and(|d| now_ms >= d)
            && self.deadline(stage).is_some_and(|d| now_ms < d)
    }

    /// Plans the escalation of `stage`, adding `people` (resolved now) as its approvers.
    pub fn escalate(&self, stage: u32, people: Vec<(String, String)>, now_ms: i64) -> Plan {
        let mut plan = Plan::default();
        let line = self.entry(&plan, now_ms, "", Action::Escalated, stage);
        plan.entries.push(line);
        plan.new_approvers = people
            .into_iter()
            .filter(|(p, _)| p != self.requestor())
            .filter(|(p, g)| {
                !self
                    .approvers
                    .iter()
                    .any(|a| a.stage == stage && &a.principal_id == p && &a.via_group_id == g)
            })
            .map(|(principal_id, via_group_id)| ApproverRow {
                stage,
                principal_id,
                via_group_id,
                escalation: true,
            })
            .collect();
        plan.events.push(("approval.case_escalated", stage));
        plan
    }

    /// The record as it will be once `plan` is appended.
    pub fn after(&self, plan: &Plan) -> CaseRecord {
        let mut next = self.clone();
        next.log.extend(plan.entries.iter().cloned());
        next.approvers.extend(plan.new_approvers.iter().cloned());
        next
    }

    pub fn to_proto(&self) -> Case {
        let rules = self.stages();
        let stages = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let i = i as u32;
                CaseStage {
                    index: i,
                    quorum: rule.quorum,
                    justification_required: rule.justification_required,
                    approvers: self
                        .approvers
                        .iter()
                        .filter(|a| a.stage == i)
                        .map(|a| CaseApprover {
                            principal_id: a.principal_id.clone(),
                            via_group_id: a.via_group_id.clone(),
                            escalation: a.escalation,
                        })
                        .collect(),
                    approvals: self.votes(i, Action::Approved).count() as u32,
                    completed: self.completed(i).is_some(),
                    escalated: self.escalated(i),
                    started_at: self.started_at(i).map(timestamp_from_millis),
                    deadline: self.deadline(i).map(timestamp_from_millis),
                }
            })
            .collect();
        let end = self.end();
        Case {
            id: self.id.clone(),
            request_id: self.request_id.clone(),
            kind: self.kind.into(),
            status: self.status().into(),
            summary: Some(self.summary.clone()),
            policy_version: self.policy_version,
            stages,
            current_stage: self.current_stage(),
            opened_at: Some(timestamp_from_millis(self.opened_at_ms)),
            decided_at: end.map(|e| timestamp_from_millis(e.at_ms)),
            decided_by: end.map(|e| e.actor_id.clone()).unwrap_or_default(),
            distinct_approvers_across_stages: self.distinct_across_stages(),
            history: self
                .log
                .iter()
                .map(|e| CaseEntry {
                    seq: e.seq,
                    at: Some(timestamp_from_millis(e.at_ms)),
                    actor_id: e.actor_id.clone(),
                    action: e.action.as_str().to_owned(),
                    stage: e.stage,
                    justification: e.justification.clone(),
                })
                .collect(),
        }
    }
}

pub fn status_word(status: CaseStatus) -> &'static str {
    match status {
        CaseStatus::Pending => "pending",
        CaseStatus::Approved => "approved",
        CaseStatus::Denied => "denied",
        CaseStatus::TimedOut => "timed out",
        CaseStatus::Canceled => "canceled",
        CaseStatus::Unspecified => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pim_proto::assignment::v1::ApprovalStage;

    const HOUR: i64 = 3600 * 1000;

    fn case(quorums: &[u32], approvers: &[(u32, &str)]) -> CaseRecord {
        CaseRecord {
            id: "c".into(),
            request_id: "r".into(),
            kind: CaseKind::Activation,
            policy_version: 1,
            opened_at_ms: 0,
            summary: CaseSummary {
                requestor_id: "req".into(),
                ..Default::default()
            },
            rule: ApprovalRule {
                required: true,
                stages: quorums
                    .iter()
                    .map(|q| ApprovalStage {
                        quorum: *q,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
            approvers: approvers
                .iter()
                .map(|(stage, p)| ApproverRow {
                    stage: *stage,
                    principal_id: (*p).into(),
                    via_group_id: String::new(),
                    escalation: false,
                })
                .collect(),
            log: vec![Entry {
                seq: 1,
                at_ms: 0,
                actor_id: String::new(),
                action: Action::Opened,
                stage: 0,
                justification: String::new(),
            }],
            trace: Default::default(),
        }
    }

    fn approve(c: &CaseRecord, who: &str, at: i64) -> Result<CaseRecord, Refusal> {
        let plan = c.decide(who, Decision::Approve, "ok", at)?;
        Ok(c.after(&plan))
    }

    #[test]
    fn a_quorum_of_two_completes_on_the_second_approval_and_not_before() {
        let c = case(&[2], &[(0, "a"), (0, "b"), (0, "c")]);
        let c = approve(&c, "a", 1).unwrap();
        assert_eq!(c.status(), CaseStatus::Pending);
        assert_eq!(c.awaiting(), vec!["b".to_owned(), "c".to_owned()]);
        let c = approve(&c, "b", 2).unwrap();
        assert_eq!(c.status(), CaseStatus::Approved);
        assert!(matches!(
            approve(&c, "c", 3),
            Err(Refusal::AlreadyDecided(_))
        ));
    }

    #[test]
    fn stages_run_in_order_and_distinct_approvers_are_enforced() {
        let mut c = case(&[1, 1], &[(0, "a"), (1, "a"), (1, "b")]);
        c.rule.distinct_approvers_across_stages = true;
        let c = approve(&c, "a", 1).unwrap();
        assert_eq!(c.current_stage(), 1);
        assert_eq!(c.started_at(1), Some(1));
        assert_eq!(c.awaiting(), vec!["b".to_owned()]);
        assert_eq!(
            approve(&c, "a", 2).unwrap_err(),
            Refusal::DistinctApproversRequired
        );
        let c = approve(&c, "b", 2).unwrap();
        assert_eq!(c.status(), CaseStatus::Approved);
        assert_eq!(c.to_proto().decided_by, "b");
    }

    #[test]
    fn one_deny_ends_the_case() {
        let c = case(&[2], &[(0, "a"), (0, "b")]);
        let plan = c.decide("a", Decision::Deny, "no", 1).unwrap();
        assert_eq!(c.after(&plan).status(), CaseStatus::Denied);
    }

    #[test]
    fn the_requestor_and_strangers_cannot_decide() {
        let c = case(&[1], &[(0, "a"), (0, "req")]);
        assert_eq!(approve(&c, "req", 1).unwrap_err(), Refusal::SelfApproval);
        assert_eq!(approve(&c, "zed", 1).unwrap_err(), Refusal::NotAnApprover);
    }

    #[test]
    fn the_deadline_is_checked_at_decision_time_and_the_timeout_only_after_it() {
        let c = case(&[1], &[(0, "a")]);
        assert_eq!(c.deadline(0), Some(24 * HOUR));
        assert!(c.time_out(0, 24 * HOUR - 1).is_none());
        assert_eq!(
            approve(&c, "a", 24 * HOUR).unwrap_err(),
            Refusal::DeadlinePassed
        );
        let timed_out = c.after(&c.time_out(0, 24 * HOUR).unwrap());
        assert_eq!(timed_out.status(), CaseStatus::TimedOut);
        assert!(timed_out.awaiting().is_empty());
    }

    #[test]
    fn a_canceled_case_cannot_be_decided_or_escalated() {
        let c = case(&[1], &[(0, "a")]);
        let c = c.after(&c.cancel("activation", 1).unwrap());
        assert_eq!(approve(&c, "a", 2).unwrap_err(), Refusal::Canceled);
        assert!(!c.escalation_pending(0, 10 * HOUR));
    }
}
