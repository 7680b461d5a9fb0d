//! Building envelopes and naming streams.

use pim_proto::events::v1::{Actor, ActorType, Event};

/// An event a service is about to write, before the outbox stamps it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `<producer>.<aggregate>_<past-tense verb>`.
    pub event_type: String,
    pub subject: String,
    pub actor: Actor,
    pub correlation_id: String,
    pub payload: prost_types::Any,
}

impl NewEvent {
    pub fn new(
        event_type: impl Into<String>,
        subject: impl Into<String>,
        payload: prost_types::Any,
    ) -> Self {
        Self {
            event_type: event_type.into(),
            subject: subject.into(),
            actor: Actor {
                r#type: ActorType::System.into(),
                id: String::new(),
            },
            correlation_id: String::new(),
            payload,
        }
    }

    /// The caller who caused it: a principal, or `service:<name>`.
    pub fn by(mut self, subject: &str) -> Self {
        let kind = if subject.starts_with("service:") {
            ActorType::Service
        } else {
            ActorType::Principal
        };
        self.actor = Actor {
            r#type: kind.into(),
            id: subject.to_owned(),
        };
        self
    }

    pub fn correlated(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = correlation_id.into();
        self
    }
}

/// The Redis stream of one producer.
pub fn stream_key(prefix: &str, producer: &str) -> String {
    format!("{prefix}events:{producer}")
}

pub(crate) fn trace_of(event: &Event) -> pim_telemetry::TraceContext {
    pim_telemetry::TraceContext {
        traceparent: event.traceparent.clone(),
        tracestate: event.tracestate.clone(),
    }
}
