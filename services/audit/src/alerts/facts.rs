//! What the alerts need to know from one audit record: schedules, principals, roles, policies,
//! activations, and who acted. Read from the record's stored payload JSON, so continuous
//! evaluation (fed by the consumer) and a refresh (fed by the stored log) see exactly the same
//! facts. Pure: no I/O.

use serde_json::Value;

use crate::record::RecordContent;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleFact {
    pub id: String,
    pub active: bool,
    pub principal_id: String,
    pub role_id: String,
    pub scope: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    pub discovered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationFact {
    pub window_id: String,
    pub principal_id: String,
    pub role_id: String,
    pub scope: String,
    pub schedule_id: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Schedule(ScheduleFact),
    ScheduleGone(String),
    Principal {
        id: String,
        enabled: bool,
        guest: bool,
        break_glass: bool,
        at_ms: i64,
    },
    Role {
        id: String,
        privileged: bool,
    },
    RoleGone(String),
    /// `mfa_required` is `None` when the policy inherits its activation rule.
    Policy {
        role_id: String,
        scope: String,
        mfa_required: Option<bool>,
        at_ms: i64,
    },
    Activation(ActivationFact),
}

/// The event types whose payloads carry facts; the only ones whose payload a refresh reads.
pub const FACT_TYPES: [&str; 14] = [
    "assignment.schedule_created",
    "assignment.schedule_updated",
    "assignment.schedule_extended",
    "assignment.schedule_renewed",
    "assignment.schedule_converted",
    "assignment.schedule_removed",
    "assignment.schedule_expired",
    "assignment.principal_upserted",
    "assignment.principal_disabled",
    "assignment.role_created",
    "assignment.role_updated",
    "assignment.role_deleted",
    "assignment.policy_updated",
    "assignment.window_provisioned",
];

/// The facts in one record.
pub fn facts_of(record: &RecordContent) -> Vec<Fact> {
    if !FACT_TYPES.contains(&record.event_type.as_str()) {
        return Vec::new();
    }
    let Ok(json) = serde_json::from_str::<Value>(&record.payload_json) else {
        return Vec::new();
    };
    facts_of_payload(&record.event_type, &json, record.occurred_at_ms)
}

pub fn facts_of_payload(event_type: &str, json: &Value, occurred_at_ms: i64) -> Vec<Fact> {
    let fact = match event_type {
        "assignment.schedule_created"
        | "assignment.schedule_updated"
        | "assignment.schedule_extended"
        | "assignment.schedule_renewed"
        | "assignment.schedule_converted" => schedule(&json["schedule"]).map(Fact::Schedule),
        "assignment.schedule_removed" | "assignment.schedule_expired" => {
            Some(Fact::ScheduleGone(text(&json["schedule"]["id"])))
        }
        "assignment.principal_upserted" | "assignment.principal_disabled" => {
            let p = &json["principal"];
            Some(Fact::Principal {
                id: text(&p["id"]),
                enabled: flag(&p["enabled"]),
                guest: flag(&p["guest"]),
                break_glass: flag(&p["break_glass"]),
                at_ms: occurred_at_ms,
            })
        }
        "assignment.role_created" | "assignment.role_updated" => Some(Fact::Role {
            id: text(&json["role"]["id"]),
            privileged: flag(&json["role"]["privileged"]),
        }),
        "assignment.role_deleted" => Some(Fact::RoleGone(text(&json["role"]["id"]))),
        "assignment.policy_updated" => {
            let policy = &json["policy"];
            let enablement = &policy["rules"]["activation_enablement"];
            Some(Fact::Policy {
                role_id: text(&policy["role_id"]),
                scope: text(&policy["scope"]),
                mfa_required: enablement
                    .is_object()
                    .then(|| flag(&enablement["mfa_required"])),
                at_ms: occurred_at_ms,
            })
        }
        "assignment.window_provisioned" => {
            let w = &json["window"];
            Some(Fact::Activation(ActivationFact {
                window_id: text(&w["id"]),
                principal_id: text(&w["principal_id"]),
                role_id: text(&w["role_id"]),
                scope: text(&w["scope"]),
                schedule_id: text(&w["eligibility_schedule_id"]),
                at_ms: instant(&w["start_time"]).unwrap_or(occurred_at_ms),
            }))
        }
        _ => None,
    };
    fact.into_iter()
        .filter(|f| match f {
            Fact::Schedule(s) => !s.id.is_empty(),
            Fact::ScheduleGone(id) | Fact::RoleGone(id) => !id.is_empty(),
            Fact::Principal { id, .. } | Fact::Role { id, .. } => !id.is_empty(),
            Fact::Policy { role_id, .. } => !role_id.is_empty(),
            Fact::Activation(a) => !a.principal_id.is_empty(),
        })
        .collect()
}

/// Whether a record counts as activity of its actor for the break-glass alert. The audit
/// context's own facts (alerts, checkpoints) do not: dismissing the alert must not raise it.
pub fn activity_of(record: &RecordContent) -> Option<&str> {
    (record.actor_type == "principal" && !record.actor_id.is_empty() && record.producer != "audit")
        .then_some(record.actor_id.as_str())
}

fn schedule(s: &Value) -> Option<ScheduleFact> {
    Some(ScheduleFact {
        id: text(&s["id"]),
        active: s["kind"].as_str() == Some("SCHEDULE_KIND_ACTIVE"),
        principal_id: text(&s["principal_id"]),
        role_id: text(&s["role_id"]),
        scope: text(&s["scope"]),
        start_ms: instant(&s["start_time"]).unwrap_or(0),
        end_ms: instant(&s["end_time"]),
        discovered: s["origin"].as_str() == Some("SCHEDULE_ORIGIN_DISCOVERED"),
    })
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn flag(v: &Value) -> bool {
    v.as_bool().unwrap_or(false)
}

/// A protobuf JSON timestamp (RFC 3339) in milliseconds.
fn instant(v: &Value) -> Option<i64> {
    let text = v.as_str()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discovered_schedule_is_read_from_its_json() {
        let json = serde_json::json!({"schedule": {
            "id": "s1", "kind": "SCHEDULE_KIND_ACTIVE", "principal_id": "p", "role_id": "r",
            "scope": "/", "start_time": "2024-01-01T00:00:00.250Z",
            "origin": "SCHEDULE_ORIGIN_DISCOVERED"}});
        let facts = facts_of_payload("assignment.schedule_created", &json, 7);
        let Fact::Schedule(s) = &facts[0] else {
            panic!("{facts:?}")
        };
        assert!(s.active && s.discovered);
        assert_eq!(s.start_ms, 1_704_067_200_250);
        assert_eq!(s.end_ms, None);
    }

    #[test]
    fn a_policy_that_inherits_its_activation_rule_says_so() {
        let json = serde_json::json!({"policy": {"role_id": "r", "scope": "/", "rules": {}}});
        assert_eq!(
            facts_of_payload("assignment.policy_updated", &json, 1),
            [Fact::Policy {
                role_id: "r".into(),
                scope: "/".into(),
                mfa_required: None,
                at_ms: 1
            }]
        );
        let json = serde_json::json!({"policy": {"role_id": "r", "scope": "/",
            "rules": {"activation_enablement": {"justification_required": true}}}});
        assert!(matches!(
            facts_of_payload("assignment.policy_updated", &json, 1)[0],
            Fact::Policy {
                mfa_required: Some(false),
                ..
            }
        ));
    }
}
