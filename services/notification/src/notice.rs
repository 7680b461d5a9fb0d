//! What an event means to people: its facts (what happened, to which role at what scope, who
//! did it and why) and its audiences (who must hear of it, under which of the policy's nine
//! notification rules, and whether the message is critical). Pure: no I/O.

use pim_proto::{
    activation::v1::RequestChanged,
    approval::v1::{Case, CaseChanged},
    assignment::v1::{
        NotificationLevel, NotificationRule, NotificationRules, Schedule, ScheduleChanged,
        ScheduleCreated, ScheduleExpired, ScheduleExpiring, ScheduleKind, ScheduleRemoved,
    },
    events::v1::{AccessDenied, Event},
    millis_from_timestamp,
};
use serde::Serialize;

/// One of the policy's nine notification rules (Graph's `Notification_*` rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    EligibleAdmin,
    EligibleRequestor,
    ActiveAdmin,
    ActiveRequestor,
    ActivationAdmin,
    ActivationRequestor,
    ActivationApprover,
}

impl Slot {
    pub fn rule(self, rules: &NotificationRules) -> NotificationRule {
        let rule = match self {
            Slot::EligibleAdmin => &rules.eligible_assignment_admin,
            Slot::EligibleRequestor => &rules.eligible_assignment_requestor,
            Slot::ActiveAdmin => &rules.active_assignment_admin,
            Slot::ActiveRequestor => &rules.active_assignment_requestor,
            Slot::ActivationAdmin => &rules.activation_admin,
            Slot::ActivationRequestor => &rules.activation_requestor,
            Slot::ActivationApprover => &rules.activation_approver,
        };
        rule.clone().unwrap_or(NotificationRule {
            level: NotificationLevel::All.into(),
            default_recipients: true,
            additional_recipients: Vec::new(),
        })
    }
}

/// Whom a rule's default recipients are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defaults {
    People(Vec<String>),
    /// Holders of Global Administrator, Privileged Role Administrator or Security Administrator
    /// at the scope or above.
    Admins(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    /// The rule that governs it; `None` for security events, which always reach admins.
    pub slot: Option<Slot>,
    pub defaults: Defaults,
    /// Asks the recipient to act, or reports a security event.
    pub critical: bool,
}

/// Whether a rule lets a message through, and to whom: (default recipients?, additional?).
pub fn admitted(rule: &NotificationRule, critical: bool) -> bool {
    match rule.level() {
        NotificationLevel::None => false,
        NotificationLevel::Critical => critical,
        NotificationLevel::All | NotificationLevel::Unspecified => true,
    }
}

/// The facts templates and webhook payloads show. Names are filled in from the directory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: String,
    pub actor_id: String,
    pub actor_name: String,
    pub role_id: String,
    pub role_name: String,
    pub scope: String,
    /// The person the event is about: requestor, assignee or holder.
    pub principal_id: String,
    pub principal_name: String,
    pub justification: String,
    pub ticket: String,
    pub start: String,
    pub end: String,
    pub assignment_kind: String,
    pub request_id: String,
    pub case_id: String,
    pub status: String,
    pub reason: String,
    pub days_ahead: u32,
    pub method: String,
    pub suppressed_count: u64,
    /// Security alerts: the alert, its severity, what to do, and one line per incident.
    pub alert_name: String,
    pub severity: String,
    pub mitigation: String,
    pub incidents: Vec<String>,
}

/// What `event` means: its facts and audiences. `None` for events nobody is told about by
/// e-mail (webhook subscribers may still receive them).
pub fn interpret(event: &Event) -> anyhow::Result<Option<(Facts, Vec<Audience>)>> {
    let mut facts = Facts {
        event_id: event.id.clone(),
        event_type: event.r#type.clone(),
        occurred_at: event
            .occurred_at
            .as_ref()
            .map(|t| rfc3339(millis_from_timestamp(t)))
            .unwrap_or_default(),
        actor_id: event
            .actor
            .as_ref()
            .map(|a| a.id.clone())
            .unwrap_or_default(),
        ..Facts::default()
    };
    let audiences = match event.r#type.as_str() {
        "activation.request_granted" => {
            let request = decode::<RequestChanged>(event)?.request.unwrap_or_default();
            facts.role_id = request.role_id.clone();
            facts.scope = request.scope.clone();
            facts.principal_id = request.principal_id.clone();
            facts.justification = request.justification.clone();
            facts.ticket = request
                .ticket
                .as_ref()
                .filter(|t| !t.number.is_empty())
                .map(|t| format!("{} {}", t.system, t.number))
                .unwrap_or_default();
            facts.start = time(request.start_time.as_ref());
            facts.end = time(request.end_time.as_ref());
            facts.request_id = request.id.clone();
            facts.case_id = request.case_id.clone();
            vec![
                Audience {
                    slot: Some(Slot::ActivationAdmin),
                    defaults: Defaults::Admins(request.scope.clone()),
                    critical: false,
                },
                Audience {
                    slot: Some(Slot::ActivationRequestor),
                    defaults: Defaults::People(vec![request.principal_id]),
                    critical: false,
                },
            ]
        }
        "approval.case_opened" | "approval.case_escalated" => {
            let changed = decode::<CaseChanged>(event)?;
            let case = changed.case.unwrap_or_default();
            case_facts(&mut facts, &case);
            let escalated = event.r#type == "approval.case_escalated";
            let approvers = case
                .stages
                .iter()
                .find(|s| s.index == changed.stage)
                .or_else(|| case.stages.get(changed.stage as usize))
                .map(|stage| {
                    stage
                        .approvers
                        .iter()
                        .filter(|a| a.escalation == escalated)
                        .map(|a| a.principal_id.clone())
                        .collect()
                })
                .unwrap_or_default();
            vec![Audience {
                slot: Some(Slot::ActivationApprover),
                defaults: Defaults::People(approvers),
                critical: true,
            }]
        }
        "approval.case_decided" | "approval.case_timed_out" | "approval.case_canceled" => {
            let case = decode::<CaseChanged>(event)?.case.unwrap_or_default();
            case_facts(&mut facts, &case);
            let requestor = facts.principal_id.clone();
            let mut others: Vec<String> = case
                .stages
                .iter()
                .flat_map(|s| s.approvers.iter().map(|a| a.principal_id.clone()))
                .filter(|p| *p != case.decided_by && *p != requestor)
                .collect();
            others.sort();
            others.dedup();
            vec![
                Audience {
                    slot: Some(Slot::ActivationRequestor),
                    defaults: Defaults::People(vec![requestor]),
                    critical: false,
                },
                Audience {
                    slot: Some(Slot::ActivationApprover),
                    defaults: Defaults::People(others),
                    critical: false,
                },
            ]
        }
        "assignment.schedule_created"
        | "assignment.schedule_updated"
        | "assignment.schedule_removed" => {
            let (schedule, justification) = match event.r#type.as_str() {
                "assignment.schedule_created" => {
                    let p = decode::<ScheduleCreated>(event)?;
                    (p.schedule.unwrap_or_default(), p.justification)
                }
                "assignment.schedule_updated" => {
                    let p = decode::<ScheduleChanged>(event)?;
                    (p.schedule.unwrap_or_default(), p.justification)
                }
                _ => {
                    let p = decode::<ScheduleRemoved>(event)?;
                    (p.schedule.unwrap_or_default(), p.justification)
                }
            };
            schedule_facts(&mut facts, &schedule);
            facts.justification = justification;
            let (admin, requestor) = slots_of(&schedule);
            vec![
                Audience {
                    slot: Some(requestor),
                    defaults: Defaults::People(vec![schedule.principal_id.clone()]),
                    critical: false,
                },
                Audience {
                    slot: Some(admin),
                    defaults: Defaults::Admins(schedule.scope.clone()),
                    critical: false,
                },
            ]
        }
        "assignment.schedule_expiring" | "assignment.schedule_expired" => {
            let expiring = event.r#type == "assignment.schedule_expiring";
            let schedule = if expiring {
                let p = decode::<ScheduleExpiring>(event)?;
                facts.days_ahead = p.days_ahead;
                p.schedule.unwrap_or_default()
            } else {
                decode::<ScheduleExpired>(event)?
                    .schedule
                    .unwrap_or_default()
            };
            schedule_facts(&mut facts, &schedule);
            let (_, requestor) = slots_of(&schedule);
            vec![Audience {
                slot: Some(requestor),
                defaults: Defaults::People(vec![schedule.principal_id.clone()]),
                // A reminder asks the holder to act: extend or renew.
                critical: expiring,
            }]
        }
        t if t.ends_with(".access_denied") => {
            let denied = decode::<AccessDenied>(event)?;
            facts.principal_id = denied.caller_id;
            facts.method = denied.method;
            facts.reason = denied.reason;
            facts.suppressed_count = denied.suppressed_count;
            facts.scope = "/".into();
            vec![Audience {
                slot: None,
                defaults: Defaults::Admins("/".into()),
                critical: true,
            }]
        }
        "audit.alert_raised"
        | "audit.alert_resolved"
        | "audit.alert_dismissed"
        | "audit.alert_configuration_updated" => {
            alert_facts(&mut facts, event)?;
            // Like Entra's alert e-mails: the admins at `/`, whatever a role's policy says.
            vec![Audience {
                slot: None,
                defaults: Defaults::Admins("/".into()),
                critical: event.r#type == "audit.alert_raised",
            }]
        }
        _ => return Ok(None),
    };
    Ok(Some((facts, audiences)))
}

/// The alert, its severity and its incidents, from any of the four alert events.
fn alert_facts(facts: &mut Facts, event: &Event) -> anyhow::Result<()> {
    use pim_proto::audit::v1::{
        Alert, AlertConfigurationUpdated, AlertDismissed, AlertIncident, AlertRaised, AlertResolved,
    };
    let (alert, incidents): (Option<Alert>, Vec<AlertIncident>) = match event.r#type.as_str() {
        "audit.alert_raised" => {
            let p = decode::<AlertRaised>(event)?;
            (p.alert, p.incidents)
        }
        "audit.alert_resolved" => {
            let p = decode::<AlertResolved>(event)?;
            (p.alert, p.incidents)
        }
        "audit.alert_dismissed" => {
            let p = decode::<AlertDismissed>(event)?;
            facts.justification = p.justification;
            (p.alert, p.incidents)
        }
        _ => {
            let p = decode::<AlertConfigurationUpdated>(event)?;
            facts.status = match p.configuration.as_ref().is_some_and(|c| c.enabled) {
                true => "enabled".into(),
                false => "disabled".into(),
            };
            facts.alert_name = p.configuration.map(|c| c.alert_id).unwrap_or_default();
            (None, Vec::new())
        }
    };
    if let Some(definition) = alert.and_then(|a| a.definition) {
        facts.alert_name = definition.display_name.clone();
        facts.severity = definition
            .severity()
            .as_str_name()
            .trim_start_matches("ALERT_SEVERITY_")
            .to_ascii_lowercase();
        facts.mitigation = definition.mitigation_steps;
    }
    if let [only] = incidents.as_slice() {
        facts.principal_id = only.principal_id.clone();
        facts.role_id = only.role_id.clone();
        facts.scope = only.scope.clone();
    }
    facts.incidents = incidents
        .iter()
        .map(|i| {
            [i.principal_id.as_str(), i.scope.as_str(), i.detail.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" — ")
        })
        .collect();
    Ok(())
}

fn slots_of(schedule: &Schedule) -> (Slot, Slot) {
    if schedule.kind() == ScheduleKind::Active {
        (Slot::ActiveAdmin, Slot::ActiveRequestor)
    } else {
        (Slot::EligibleAdmin, Slot::EligibleRequestor)
    }
}

fn case_facts(facts: &mut Facts, case: &Case) {
    let summary = case.summary.clone().unwrap_or_default();
    facts.role_id = summary.role_id;
    facts.scope = summary.scope;
    facts.principal_id = summary.requestor_id;
    facts.justification = summary.justification;
    if !summary.ticket_number.is_empty() {
        facts.ticket = format!("{} {}", summary.ticket_system, summary.ticket_number);
    }
    facts.start = time(summary.start_time.as_ref());
    facts.end = time(summary.end_time.as_ref());
    facts.case_id = case.id.clone();
    facts.request_id = case.request_id.clone();
    facts.status = case
        .status()
        .as_str_name()
        .trim_start_matches("CASE_STATUS_")
        .to_ascii_lowercase();
    if !case.decided_by.is_empty() {
        facts.actor_id = case.decided_by.clone();
    }
    if let Some(last) = case.history.last()
        && matches!(last.action.as_str(), "approved" | "denied" | "decided")
    {
        facts.reason = last.justification.clone();
    }
}

fn schedule_facts(facts: &mut Facts, schedule: &Schedule) {
    facts.role_id = schedule.role_id.clone();
    facts.scope = schedule.scope.clone();
    facts.principal_id = schedule.principal_id.clone();
    facts.start = time(schedule.start_time.as_ref());
    facts.end = time(schedule.end_time.as_ref());
    facts.assignment_kind = if schedule.kind() == ScheduleKind::Active {
        "active".into()
    } else {
        "eligible".into()
    };
}

fn decode<M: prost::Message + Default>(event: &Event) -> anyhow::Result<M> {
    let payload = event.payload.clone().unwrap_or_default();
    Ok(M::decode(payload.value.as_slice())?)
}

fn time(ts: Option<&prost_types::Timestamp>) -> String {
    ts.map(|t| rfc3339(millis_from_timestamp(t)))
        .unwrap_or_default()
}

pub fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(level: NotificationLevel) -> NotificationRule {
        NotificationRule {
            level: level.into(),
            default_recipients: true,
            additional_recipients: vec![],
        }
    }

    #[test]
    fn levels_admit_what_they_say() {
        assert!(!admitted(&rule(NotificationLevel::None), true));
        assert!(admitted(&rule(NotificationLevel::Critical), true));
        assert!(!admitted(&rule(NotificationLevel::Critical), false));
        assert!(admitted(&rule(NotificationLevel::All), false));
    }

    fn event<M: prost::Name>(event_type: &str, payload: &M) -> Event {
        Event {
            id: "e1".into(),
            r#type: event_type.into(),
            producer: event_type.split('.').next().unwrap_or_default().into(),
            actor: Some(pim_proto::events::v1::Actor {
                r#type: 1,
                id: "admin".into(),
            }),
            payload: Some(pim_proto::pack(payload)),
            ..Default::default()
        }
    }

    fn people(ids: &[&str]) -> Defaults {
        Defaults::People(ids.iter().map(|s| (*s).to_owned()).collect())
    }

    fn audiences(event: &Event) -> Vec<(Option<Slot>, Defaults, bool)> {
        interpret(event)
            .unwrap()
            .map(|(_, a)| {
                a.into_iter()
                    .map(|a| (a.slot, a.defaults, a.critical))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn case(status: pim_proto::approval::v1::CaseStatus) -> Case {
        use pim_proto::approval::v1::{CaseApprover, CaseStage, CaseSummary};
        let approver = |id: &str, escalation: bool| CaseApprover {
            principal_id: id.into(),
            via_group_id: String::new(),
            escalation,
        };
        Case {
            id: "c1".into(),
            status: status.into(),
            decided_by: "bob".into(),
            summary: Some(CaseSummary {
                requestor_id: "alice".into(),
                role_id: "r".into(),
                scope: "/s".into(),
                justification: "why".into(),
                ..Default::default()
            }),
            stages: vec![
                CaseStage {
                    index: 0,
                    approvers: vec![
                        approver("bob", false),
                        approver("carol", false),
                        approver("erin", true),
                    ],
                    ..Default::default()
                },
                CaseStage {
                    index: 1,
                    approvers: vec![approver("dave", false)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn every_trigger_names_its_audiences() {
        use pim_proto::{
            activation::v1::ActivationRequest, approval::v1::CaseStatus, assignment::v1::Schedule,
        };
        let granted = RequestChanged {
            request: Some(ActivationRequest {
                principal_id: "alice".into(),
                role_id: "r".into(),
                scope: "/s".into(),
                ..Default::default()
            }),
        };
        assert_eq!(
            audiences(&event("activation.request_granted", &granted)),
            [
                (
                    Some(Slot::ActivationAdmin),
                    Defaults::Admins("/s".into()),
                    false
                ),
                (Some(Slot::ActivationRequestor), people(&["alice"]), false),
            ]
        );
        let opened = CaseChanged {
            case: Some(case(CaseStatus::Pending)),
            stage: 0,
        };
        assert_eq!(
            audiences(&event("approval.case_opened", &opened)),
            [(
                Some(Slot::ActivationApprover),
                people(&["bob", "carol"]),
                true
            )]
        );
        assert_eq!(
            audiences(&event("approval.case_escalated", &opened)),
            [(Some(Slot::ActivationApprover), people(&["erin"]), true)],
            "only the escalation approvers"
        );
        let decided = CaseChanged {
            case: Some(case(CaseStatus::Approved)),
            stage: 1,
        };
        for t in [
            "approval.case_decided",
            "approval.case_timed_out",
            "approval.case_canceled",
        ] {
            assert_eq!(
                audiences(&event(t, &decided)),
                [
                    (Some(Slot::ActivationRequestor), people(&["alice"]), false),
                    (
                        Some(Slot::ActivationApprover),
                        people(&["carol", "dave", "erin"]),
                        false
                    ),
                ],
                "{t}: the requestor and the other approvers"
            );
        }
        let eligible = Schedule {
            kind: ScheduleKind::Eligible.into(),
            principal_id: "alice".into(),
            role_id: "r".into(),
            scope: "/s".into(),
            ..Default::default()
        };
        let active = Schedule {
            kind: ScheduleKind::Active.into(),
            ..eligible.clone()
        };
        assert_eq!(
            audiences(&event(
                "assignment.schedule_created",
                &ScheduleCreated {
                    schedule: Some(eligible.clone()),
                    ..Default::default()
                }
            )),
            [
                (Some(Slot::EligibleRequestor), people(&["alice"]), false),
                (
                    Some(Slot::EligibleAdmin),
                    Defaults::Admins("/s".into()),
                    false
                ),
            ]
        );
        assert_eq!(
            audiences(&event(
                "assignment.schedule_removed",
                &ScheduleRemoved {
                    schedule: Some(active.clone()),
                    ..Default::default()
                }
            )),
            [
                (Some(Slot::ActiveRequestor), people(&["alice"]), false),
                (
                    Some(Slot::ActiveAdmin),
                    Defaults::Admins("/s".into()),
                    false
                ),
            ]
        );
        assert_eq!(
            audiences(&event(
                "assignment.schedule_updated",
                &ScheduleChanged {
                    schedule: Some(eligible.clone()),
                    ..Default::default()
                }
            ))
            .len(),
            2
        );
        assert_eq!(
            audiences(&event(
                "assignment.schedule_expiring",
                &ScheduleExpiring {
                    schedule: Some(eligible.clone()),
                    days_ahead: 14,
                }
            )),
            [(Some(Slot::EligibleRequestor), people(&["alice"]), true)],
            "a reminder asks the holder to act"
        );
        assert_eq!(
            audiences(&event(
                "assignment.schedule_expired",
                &ScheduleExpired {
                    schedule: Some(active),
                }
            )),
            [(Some(Slot::ActiveRequestor), people(&["alice"]), false)]
        );
        assert_eq!(
            audiences(&event(
                "approval.access_denied",
                &AccessDenied {
                    method: "/m".into(),
                    caller_id: "mallory".into(),
                    ..Default::default()
                }
            )),
            [(None, Defaults::Admins("/".into()), true)],
            "security events reach the admins whatever the policy"
        );
        assert!(
            interpret(&event("assignment.role_created", &granted))
                .unwrap()
                .is_none(),
            "no e-mail for facts nobody must act on"
        );
    }

    #[test]
    fn a_missing_rule_means_everything_to_the_defaults() {
        let rule = Slot::ActivationAdmin.rule(&NotificationRules::default());
        assert!(rule.default_recipients);
        assert!(admitted(&rule, false));
    }
}
