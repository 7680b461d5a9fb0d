//! From an event envelope to the content of its audit record: the classification of its type,
//! the actor, and the target, justification and ticket read from its payload. The payload is
//! decoded with the descriptors of PIM's own packages and kept as protobuf JSON, so the record
//! is readable without our code.

use std::{collections::VecDeque, sync::OnceLock};

use pim_proto::events::v1::{ActorType, Event};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::Value;

use crate::{
    activity::{activity_of, classify},
    record::RecordContent,
};

fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(pim_proto::FILE_DESCRIPTOR_SET).ok())
        .as_ref()
}

/// The record content of `event`, without its sequence; `recorded_at_ms` is the audit clock's.
pub fn content_of(event: &Event, recorded_at_ms: i64) -> RecordContent {
    let class = classify(&event.r#type);
    let payload = event.payload.clone().unwrap_or_default();
    let json = payload_json(&payload.type_url, &payload.value);
    let actor = event.actor.clone().unwrap_or_default();
    let actor_type = match ActorType::try_from(actor.r#type).unwrap_or(ActorType::Unspecified) {
        ActorType::Principal => "principal",
        ActorType::Service => "service",
        ActorType::System | ActorType::Unspecified => "system",
    };
    let target_principal_id = if event.r#type.starts_with("assignment.principal_") {
        nested_string(&json, &["principal", "id"])
    } else {
        first_string(&json, &["principal_id", "requestor_id", "caller_id"])
    };
    let role_id = if event.r#type.starts_with("assignment.role_") {
        nested_string(&json, &["role", "id"])
    } else {
        first_string(&json, &["role_id"])
    };
    let mut result_reason = first_string(&json, &["reason"]);
    if let Some(suppressed) = json.get("suppressed_count").and_then(number_of)
        && suppressed > 0
    {
        result_reason = format!("{result_reason} (and {suppressed} more denials, summarised)");
    }
    RecordContent {
        sequence: 0,
        occurred_at_ms: event
            .occurred_at
            .as_ref()
            .map(pim_proto::millis_from_timestamp)
            .unwrap_or_default(),
        recorded_at_ms,
        event_id: event.id.clone(),
        event_type: event.r#type.clone(),
        producer: event.producer.clone(),
        producer_sequence: i64::try_from(event.sequence).unwrap_or(i64::MAX),
        activity: activity_of(&event.r#type),
        category: class.category.to_owned(),
        actor_type: actor_type.to_owned(),
        actor_id: actor.id,
        target_type: class.target_type.to_owned(),
        subject: event.subject.clone(),
        target_principal_id,
        role_id,
        scope: first_string(&json, &["scope"]),
        result: class.result.to_owned(),
        result_reason,
        justification: first_string(&json, &["justification"]),
        ticket: ticket(&json),
        correlation_id: event.correlation_id.clone(),
        trace_id: trace_id(&event.traceparent).to_owned(),
        payload_type: payload.type_url.clone(),
        payload_json: serde_json::to_string(&json).unwrap_or_else(|_| "{}".to_owned()),
    }
}

/// The trace id inside a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

/// The payload in the protobuf JSON mapping with proto field names; a message type we have no
/// descriptor for is kept as hex, so nothing is lost.
fn payload_json(type_url: &str, value: &[u8]) -> Value {
    let name = type_url.rsplit('/').next().unwrap_or_default();
    let decoded = pool()
        .and_then(|pool| pool.get_message_by_name(name))
        .and_then(|descriptor| DynamicMessage::decode(descriptor, value).ok())
        .and_then(|message| {
            let options = SerializeOptions::new().use_proto_field_name(true);
            message
                .serialize_with_options(serde_json::value::Serializer, &options)
                .ok()
        });
    match decoded {
        Some(json) => json,
        None if value.is_empty() && type_url.is_empty() => Value::Object(Default::default()),
        None => serde_json::json!({ "undecoded_hex": hex::encode(value) }),
    }
}

/// The first non-empty string under any of `keys`, breadth first, so the payload's own fields
/// win over those of nested messages.
fn first_string(json: &Value, keys: &[&str]) -> String {
    let mut queue = VecDeque::from([json]);
    while let Some(value) = queue.pop_front() {
        match value {
            Value::Object(map) => {
                for key in keys {
                    if let Some(Value::String(s)) = map.get(*key)
                        && !s.is_empty()
                    {
                        return s.clone();
                    }
                }
                queue.extend(map.values());
            }
            Value::Array(items) => queue.extend(items),
            _ => {}
        }
    }
    String::new()
}

fn nested_string(json: &Value, path: &[&str]) -> String {
    path.iter()
        .try_fold(json, |value, key| value.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// uint64 fields are strings in the JSON mapping.
fn number_of(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A ticket as `<system> <number>`, or just the number.
fn ticket(json: &Value) -> String {
    let mut queue = VecDeque::from([json]);
    while let Some(value) = queue.pop_front() {
        if let Value::Object(map) = value {
            if let Some(Value::Object(ticket)) = map.get("ticket") {
                let part = |k: &str| ticket.get(k).and_then(Value::as_str).unwrap_or_default();
                let joined = [part("system"), part("number")]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                if !joined.is_empty() {
                    return joined;
                }
            }
            queue.extend(map.values());
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use pim_proto::{
        activation::v1::{ActivationRequest, RequestChanged, Ticket},
        events::v1::{AccessDenied, Actor},
    };

    use super::*;

    #[test]
    fn trace_ids_come_from_traceparent() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace_id(""), "");
    }

    #[test]
    fn an_activation_request_names_its_principal_role_scope_ticket_and_justification() {
        let payload = RequestChanged {
            request: Some(ActivationRequest {
                id: "req-1".into(),
                principal_id: "alice".into(),
                role_id: "role-x".into(),
                scope: "/administrativeUnits/au-1".into(),
                justification: "incident 4711".into(),
                ticket: Some(Ticket {
                    system: "jira".into(),
                    number: "SEC-1".into(),
                }),
                ..Default::default()
            }),
        };
        let event = Event {
            id: "e1".into(),
            r#type: "activation.request_submitted".into(),
            producer: "activation".into(),
            sequence: 3,
            subject: "req-1".into(),
            actor: Some(Actor {
                r#type: ActorType::Principal.into(),
                id: "alice".into(),
            }),
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            payload: Some(pim_proto::pack(&payload)),
            ..Default::default()
        };
        let content = content_of(&event, 5);
        assert_eq!(content.actor_type, "principal");
        assert_eq!(content.target_principal_id, "alice");
        assert_eq!(content.role_id, "role-x");
        assert_eq!(content.scope, "/administrativeUnits/au-1");
        assert_eq!(content.justification, "incident 4711");
        assert_eq!(content.ticket, "jira SEC-1");
        assert_eq!(content.target_type, "request");
        assert_eq!(content.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let json: Value = serde_json::from_str(&content.payload_json).unwrap();
        assert_eq!(json["request"]["principal_id"], "alice");
    }

    #[test]
    fn summarised_denials_say_how_many_were_counted() {
        let event = Event {
            r#type: "approval.access_denied".into(),
            payload: Some(pim_proto::pack(&AccessDenied {
                method: "/m".into(),
                caller_id: "mallory".into(),
                reason: "NOT_AUTHORIZED".into(),
                suppressed_count: 12,
            })),
            ..Default::default()
        };
        let content = content_of(&event, 0);
        assert_eq!(content.result, "failure");
        assert_eq!(content.category, "security");
        assert_eq!(content.target_principal_id, "mallory");
        assert!(
            content.result_reason.contains("12 more"),
            "{}",
            content.result_reason
        );
    }

    #[test]
    fn an_unknown_payload_is_kept_as_hex() {
        let json = payload_json("type.googleapis.com/x.Unknown", &[1, 2]);
        assert_eq!(json["undecoded_hex"], "0102");
    }
}
