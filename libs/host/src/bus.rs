//! Who consumes whom, and the in-process bus of `pim dev`.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use futures_util::future::BoxFuture;
use pim_config::ServiceName;
use pim_events::{OutboxReplaySource, ReplaySource};
use pim_proto::events::v1::Event;

use ServiceName::{Activation, Approval, Assignment, Audit, Notification};

/// (consumer, producers it subscribes to). The one table of subscriptions: consumers start
/// from it, and relays trim a stream only once every group listed here acknowledged an entry.
pub const SUBSCRIPTIONS: &[(ServiceName, &[ServiceName])] = &[
    (
        Audit,
        &[Assignment, Activation, Approval, Notification, Audit],
    ),
    (Activation, &[Approval, Assignment]),
    (Assignment, &[]),
    (Approval, &[Activation]),
    (Notification, &[Assignment, Activation, Approval, Audit]),
];

/// The consumer groups of a producer's stream.
pub fn consumers_of(producer: ServiceName) -> Vec<ServiceName> {
    SUBSCRIPTIONS
        .iter()
        .filter(|(_, producers)| producers.contains(&producer))
        .map(|(consumer, _)| *consumer)
        .collect()
}

pub(crate) fn producers_for(consumer: ServiceName) -> &'static [ServiceName] {
    SUBSCRIPTIONS
        .iter()
        .find(|(c, _)| *c == consumer)
        .map(|(_, producers)| *producers)
        .unwrap_or(&[])
}

/// The outboxes of the contexts in this process: `pim dev`'s bus. Consumers read producers'
/// outbox tables directly, so a restart loses no committed event.
#[derive(Clone, Default)]
pub struct LocalBus {
    outboxes: Arc<RwLock<HashMap<ServiceName, OutboxReplaySource>>>,
}

impl LocalBus {
    pub(crate) fn register(&self, producer: ServiceName, source: OutboxReplaySource) {
        if let Ok(mut outboxes) = self.outboxes.write() {
            outboxes.insert(producer, source);
        }
    }

    pub(crate) fn source(&self, producer: ServiceName) -> Arc<dyn ReplaySource> {
        Arc::new(LocalSource {
            bus: self.clone(),
            producer,
        })
    }
}

struct LocalSource {
    bus: LocalBus,
    producer: ServiceName,
}

impl ReplaySource for LocalSource {
    fn replay(
        &self,
        from_sequence: u64,
        limit: u32,
    ) -> BoxFuture<'_, anyhow::Result<(Vec<Event>, u64)>> {
        // A producer not started yet has published nothing.
        let source = self
            .bus
            .outboxes
            .read()
            .ok()
            .and_then(|outboxes| outboxes.get(&self.producer).cloned());
        Box::pin(async move {
            match source {
                Some(source) => source.replay(from_sequence, limit).await,
                None => Ok((Vec::new(), 0)),
            }
        })
    }
}
