//! Role management policies: the organization default, inheritance rule by rule from the nearest
//! scope, validation of a policy before it is set, and the admin-side rules that schedules must
//! pass. No I/O here.

use pim_proto::{
    Duration,
    assignment::v1::{
        ApprovalRule, ApprovalStage, Approver, AuthenticationContextRule, EnablementRule,
        ExpirationRule, NotificationLevel, NotificationRule, NotificationRules, PolicyRules,
        RuleSource, approver::Subject,
    },
};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

fn hours(n: i64) -> Option<Duration> {
    Some(Duration {
        seconds: n * HOUR,
        nanos: 0,
    })
}

fn days(n: i64) -> Option<Duration> {
    Some(Duration {
        seconds: n * DAY,
        nanos: 0,
    })
}

pub fn millis(d: Option<&Duration>) -> i64 {
    d.map(|d| d.seconds.saturating_mul(1000) + i64::from(d.nanos) / 1_000_000)
        .unwrap_or(0)
}

/// Graph's defaults (the example Global Administrator policy): activation up to 8 hours with
/// MFA and a justification; permanent eligibility and active assignment allowed (otherwise at
/// most 365 and 180 days); a justification on active assignment; no approval; every
/// notification on, to the default recipients.
pub fn organization_default() -> PolicyRules {
    let all = || {
        Some(NotificationRule {
            level: NotificationLevel::All.into(),
            default_recipients: true,
            additional_recipients: Vec::new(),
        })
    };
    PolicyRules {
        admin_eligibility_expiration: Some(ExpirationRule {
            permanent_allowed: true,
            maximum_duration: days(365),
        }),
        admin_assignment_expiration: Some(ExpirationRule {
            permanent_allowed: true,
            maximum_duration: days(180),
        }),
        activation_expiration: Some(ExpirationRule {
            permanent_allowed: false,
            maximum_duration: hours(8),
        }),
        activation_enablement: Some(EnablementRule {
            mfa_required: true,
            justification_required: true,
            ticket_required: false,
        }),
        activation_authentication_context: Some(AuthenticationContextRule {
            enabled: false,
            claim_value: String::new(),
        }),
        admin_assignment_enablement: Some(EnablementRule {
            mfa_required: false,
            justification_required: true,
            ticket_required: false,
        }),
        approval: Some(ApprovalRule {
            required: false,
            required_for_extension: false,
            stages: vec![ApprovalStage {
                approvers: Vec::new(),
                quorum: 1,
                timeout: days(1),
                approver_justification_required: true,
                escalation_approvers: Vec::new(),
                escalation_after: None,
            }],
            distinct_approvers_across_stages: false,
            extension_approvers: Vec::new(),
        }),
        notifications: Some(NotificationRules {
            eligible_assignment_admin: all(),
            eligible_assignment_requestor: all(),
            eligible_assignment_approver: all(),
            active_assignment_admin: all(),
            active_assignment_requestor: all(),
            active_assignment_approver: all(),
            activation_admin: all(),
            activation_requestor: all(),
            activation_approver: all(),
        }),
    }
}

/// A policy set at one scope.
pub struct Layer {
    pub scope: String,
    pub version: i64,
    pub rules: PolicyRules,
}

/// The effective rules: for each rule, the nearest layer that sets it, else the default.
/// `layers` are ordered nearest scope first.
pub fn effective(layers: &[Layer]) -> (PolicyRules, Vec<RuleSource>, i64) {
    let default = organization_default();
    let mut sources = Vec::new();
    let mut version = 0;
    macro_rules! pick {
        ($field:ident, $rule_id:literal) => {{
            let found = layers.iter().find(|l| l.rules.$field.is_some());
            let source = RuleSource {
                rule_id: $rule_id.to_owned(),
                scope: found.map(|l| l.scope.clone()).unwrap_or_default(),
                version: found.map(|l| l.version).unwrap_or(0),
            };
            version = version.max(source.version);
            sources.push(source);
            found
                .and_then(|l| l.rules.$field.clone())
                .or(default.$field.clone())
        }};
    }
    let rules = PolicyRules {
        admin_eligibility_expiration: pick!(
            admin_eligibility_expiration,
            "Expiration_Admin_Eligibility"
        ),
        admin_assignment_expiration: pick!(
            admin_assignment_expiration,
            "Expiration_Admin_Assignment"
        ),
        activation_expiration: pick!(activation_expiration, "Expiration_EndUser_Assignment"),
        activation_enablement: pick!(activation_enablement, "Enablement_EndUser_Assignment"),
        activation_authentication_context: pick!(
            activation_authentication_context,
            "AuthenticationContext_EndUser_Assignment"
        ),
        admin_assignment_enablement: pick!(
            admin_assignment_enablement,
            "Enablement_Admin_Assignment"
        ),
        approval: pick!(approval, "Approval_EndUser_Assignment"),
        notifications: pick!(notifications, "Notification"),
    };
    (rules, sources, version)
}

/// The people a list of approvers names: users, plus the members of named groups (given by
/// `members_of`). Used to prove a quorum can be met.
pub fn named_people(
    approvers: &[Approver],
    members_of: &impl Fn(&str) -> Vec<String>,
) -> Vec<String> {
    let mut people: Vec<String> = approvers
        .iter()
        .flat_map(|a| match &a.subject {
            Some(Subject::UserId(user)) => vec![user.clone()],
            Some(Subject::GroupId(group)) => members_of(group),
            None => Vec::new(),
        })
        .collect();
    people.sort();
    people.dedup();
    people
}

/// Field violations of a policy about to be set. `members_of` lists a group's members.
pub fn validate(
    rules: &PolicyRules,
    members_of: &impl Fn(&str) -> Vec<String>,
) -> Vec<(String, String)> {
    let mut v = Vec::new();
    let mut bound = |field: &str, rule: &Option<ExpirationRule>, min_s: i64, max_s: i64| {
        if let Some(rule) = rule {
            let d = rule
                .maximum_duration
                .as_ref()
                .map(|d| d.seconds)
                .unwrap_or(0);
            if d < min_s || d > max_s {
                v.push((
                    format!("rules.{field}.maximum_duration"),
                    format!("must be between {min_s} s and {max_s} s"),
                ));
            }
        }
    };
    bound(
        "admin_eligibility_expiration",
        &rules.admin_eligibility_expiration,
        DAY,
        365 * DAY,
    );
    bound(
        "admin_assignment_expiration",
        &rules.admin_assignment_expiration,
        DAY,
        180 * DAY,
    );
    bound(
        "activation_expiration",
        &rules.activation_expiration,
        HOUR,
        24 * HOUR,
    );
    if rules
        .activation_expiration
        .as_ref()
        .is_some_and(|r| r.permanent_allowed)
    {
        v.push((
            "rules.activation_expiration.permanent_allowed".into(),
            "activations are always time-bound".into(),
        ));
    }
    if let Some(context) = &rules.activation_authentication_context
        && context.enabled
        && context.claim_value.trim().is_empty()
    {
        v.push((
            "rules.activation_authentication_context.claim_value".into(),
            "is required when enabled".into(),
        ));
    }
    if let Some(approval) = &rules.approval {
        if approval.required && approval.stages.is_empty() {
            v.push((
                "rules.approval.stages".into(),
                "approval needs at least one stage".into(),
            ));
        }
        if approval.stages.len() > 5 {
            v.push(("rules.approval.stages".into(), "at most 5 stages".into()));
        }
        for (i, stage) in approval.stages.iter().enumerate() {
            let field = |f: &str| format!("rules.approval.stages[{i}].{f}");
            let people = named_people(&stage.approvers, members_of);
            let quorum = stage.quorum.max(1) as usize;
            if approval.required && people.len() < quorum {
                v.push((
                    field("quorum"),
                    format!(
                        "needs {quorum} approvals but the approvers name {} people",
                        people.len()
                    ),
                ));
            }
            let timeout = stage.timeout.as_ref().map(|d| d.seconds).unwrap_or(0);
            if !(300..=30 * DAY).contains(&timeout) {
                v.push((
                    field("timeout"),
                    "must be between 5 minutes and 30 days".into(),
                ));
            }
            if !stage.escalation_approvers.is_empty() {
                let after = stage
                    .escalation_after
                    .as_ref()
                    .map(|d| d.seconds)
                    .unwrap_or(0);
                if after <= 0 || after >= timeout {
                    v.push((
                        field("escalation_after"),
                        "must be after the start and before the timeout".into(),
                    ));
                }
            }
        }
    }
    if let Some(notifications) = &rules.notifications {
        let all = [
            &notifications.eligible_assignment_admin,
            &notifications.eligible_assignment_requestor,
            &notifications.eligible_assignment_approver,
            &notifications.active_assignment_admin,
            &notifications.active_assignment_requestor,
            &notifications.active_assignment_approver,
            &notifications.activation_admin,
            &notifications.activation_requestor,
            &notifications.activation_approver,
        ];
        for rule in all.into_iter().flatten() {
            if rule.additional_recipients.len() > 1000
                || rule
                    .additional_recipients
                    .iter()
                    .any(|r| !r.contains('@') || r.len() > 320)
            {
                v.push((
                    "rules.notifications".into(),
                    "additional recipients are at most 1000 e-mail addresses".into(),
                ));
                break;
            }
        }
    }
    v
}

/// A refusal by a policy rule.
#[derive(Debug, PartialEq, Eq)]
pub enum PolicyRefusal {
    /// `POLICY_VIOLATION`, naming Graph's rule id.
    Violation {
        rule: &'static str,
        message: String,
    },
    MfaRequired,
}

/// The expiration rule for a schedule's window: permanence and maximum duration.
pub fn check_expiration(
    rules: &PolicyRules,
    active: bool,
    start_ms: i64,
    end_ms: Option<i64>,
) -> Result<(), PolicyRefusal> {
    let (rule_id, expiration) = if active {
        (
            "Expiration_Admin_Assignment",
            rules.admin_assignment_expiration.unwrap_or_default(),
        )
    } else {
        (
            "Expiration_Admin_Eligibility",
            rules.admin_eligibility_expiration.unwrap_or_default(),
        )
    };
    let max_ms = millis(expiration.maximum_duration.as_ref());
    match end_ms {
        None if !expiration.permanent_allowed => Err(PolicyRefusal::Violation {
            rule: rule_id,
            message: "permanent assignments are not allowed for this role here".into(),
        }),
        Some(end) if !expiration.permanent_allowed && end - start_ms > max_ms => {
            Err(PolicyRefusal::Violation {
                rule: rule_id,
                message: format!(
                    "the window is longer than the maximum of {} days",
                    max_ms / 86_400_000
                ),
            })
        }
        _ => Ok(()),
    }
}

/// The admin-side rules for a schedule an administrator writes: expiration, then (for active
/// assignments) justification and MFA.
pub fn check_admin_schedule(
    rules: &PolicyRules,
    active: bool,
    start_ms: i64,
    end_ms: Option<i64>,
    justification: &str,
    caller_did_mfa: bool,
) -> Result<(), PolicyRefusal> {
    check_expiration(rules, active, start_ms, end_ms)?;
    if active {
        let enablement = rules.admin_assignment_enablement.unwrap_or_default();
        if enablement.justification_required && justification.trim().is_empty() {
            return Err(PolicyRefusal::Violation {
                rule: "Enablement_Admin_Assignment",
                message: "a justification is required".into(),
            });
        }
        if enablement.mfa_required && !caller_did_mfa {
            return Err(PolicyRefusal::MfaRequired);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(scope: &str, version: i64, rules: PolicyRules) -> Layer {
        Layer {
            scope: scope.into(),
            version,
            rules,
        }
    }

    #[test]
    fn each_rule_comes_from_the_nearest_scope_that_sets_it() {
        let root = layer(
            "/",
            3,
            PolicyRules {
                activation_expiration: Some(ExpirationRule {
                    permanent_allowed: false,
                    maximum_duration: hours(2),
                }),
                ..Default::default()
            },
        );
        let unit = layer(
            "/administrativeUnits/au",
            7,
            PolicyRules {
                activation_enablement: Some(EnablementRule {
                    ticket_required: true,
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let (rules, sources, version) = effective(&[unit, root]);
        assert_eq!(
            millis(
                rules
                    .activation_expiration
                    .unwrap()
                    .maximum_duration
                    .as_ref()
            ),
            2 * 3_600_000
        );
        assert!(rules.activation_enablement.unwrap().ticket_required);
        assert!(rules.approval.is_some(), "unset everywhere: the default");
        let source = |id: &str| sources.iter().find(|s| s.rule_id == id).unwrap().clone();
        assert_eq!(source("Expiration_EndUser_Assignment").scope, "/");
        assert_eq!(source("Enablement_EndUser_Assignment").version, 7);
        assert_eq!(source("Approval_EndUser_Assignment").scope, "");
        assert_eq!(version, 7);
    }

    #[test]
    fn a_quorum_the_approvers_cannot_meet_is_refused() {
        let rules = PolicyRules {
            approval: Some(ApprovalRule {
                required: true,
                stages: vec![ApprovalStage {
                    approvers: vec![
                        Approver {
                            subject: Some(Subject::UserId("a".into())),
                        },
                        Approver {
                            subject: Some(Subject::GroupId("g".into())),
                        },
                    ],
                    quorum: 4,
                    timeout: hours(24),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let members = |g: &str| {
            if g == "g" {
                vec!["a".to_owned(), "b".to_owned()]
            } else {
                vec![]
            }
        };
        let violations = validate(&rules, &members);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].1.contains("2 people"));
    }

    #[test]
    fn admin_rules_refuse_permanent_and_too_long_windows() {
        let mut rules = organization_default();
        rules.admin_eligibility_expiration = Some(ExpirationRule {
            permanent_allowed: false,
            maximum_duration: days(30),
        });
        let day = 86_400_000;
        assert!(matches!(
            check_admin_schedule(&rules, false, 0, None, "", false),
            Err(PolicyRefusal::Violation {
                rule: "Expiration_Admin_Eligibility",
                ..
            })
        ));
        assert!(check_admin_schedule(&rules, false, 0, Some(30 * day), "", false).is_ok());
        assert!(check_admin_schedule(&rules, false, 0, Some(30 * day + 1), "", false).is_err());
        assert!(matches!(
            check_admin_schedule(&rules, true, 0, None, " ", false),
            Err(PolicyRefusal::Violation {
                rule: "Enablement_Admin_Assignment",
                ..
            })
        ));
    }
}
