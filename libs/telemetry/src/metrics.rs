//! Every metric PIM exports, in one catalogue (documented in `docs/observability.md`).
//!
//! Instruments are created on first use from the global meter provider, which [`crate::init`]
//! installs before any context starts; without it (tests, export off) they are no-ops. Names
//! and attributes follow the OpenTelemetry semantic conventions where one exists (`rpc.*`,
//! `messaging.*`); PIM's own are under `pim.`. Attribute values are bounded sets (methods,
//! statuses, streams), never ids.

use std::sync::OnceLock;

pub use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

fn meter() -> Meter {
    opentelemetry::global::meter("pim")
}

/// Seconds, from a millisecond to ten seconds: RPCs, relaying, a stream hop.
const FAST: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Seconds, from a minute to a week: how long people take to decide.
const HUMAN: &[f64] = &[
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 259200.0, 604800.0,
];

/// Every RPC a PIM server answered: its rate, errors (by status) and duration.
/// Attributes: `rpc.system.name`, `rpc.method`, `rpc.response.status_code`.
pub static RPC_SERVER_DURATION: Histogram = Histogram::new(
    "rpc.server.call.duration",
    "s",
    "Duration of RPCs served, by method and status code.",
    FAST,
);

/// Outbox rows not yet published to the bus. Attribute: `pim.producer`.
pub static OUTBOX_BACKLOG: Gauge = Gauge::new(
    "pim.outbox.backlog",
    "{event}",
    "Events committed to a producer's outbox and not yet published.",
);

/// From an event's commit to its publication by the relay. Attribute: `pim.producer`.
pub static OUTBOX_RELAY_LAG: Histogram = Histogram::new(
    "pim.outbox.relay.lag",
    "s",
    "Time from an event's commit to its publication by the relay.",
    FAST,
);

/// Entries of a stream not yet delivered to a consumer group (`XINFO GROUPS` lag).
/// Attributes: `messaging.destination.name`, `messaging.consumer.group.name`.
pub static STREAM_CONSUMER_LAG: Gauge = Gauge::new(
    "pim.stream.consumer.lag",
    "{entry}",
    "Stream entries not yet delivered to the consumer group.",
);

/// Entries delivered to a consumer group and not yet acknowledged.
/// Attributes: `messaging.destination.name`, `messaging.consumer.group.name`.
pub static STREAM_CONSUMER_PENDING: Gauge = Gauge::new(
    "pim.stream.consumer.pending",
    "{entry}",
    "Stream entries delivered to the consumer group and not yet acknowledged.",
);

/// Events given up on after too many attempts: moved to the dead-letter stream, or skipped by
/// the gap filler. Attributes: `messaging.destination.name`, `messaging.consumer.group.name`.
pub static DEAD_LETTERS: Counter = Counter::new(
    "pim.stream.dead_letters",
    "{event}",
    "Events dead-lettered after too many failed attempts.",
);

/// Notification delivery attempts. Attributes: `pim.notification.channel` (`email`,
/// `webhook`), `pim.notification.outcome` (`delivered`, `failed`).
pub static DELIVERY_ATTEMPTS: Counter = Counter::new(
    "pim.notification.delivery.attempts",
    "{attempt}",
    "Notification delivery attempts, by channel and outcome.",
);

/// Activation requests entering a status. Attribute: `pim.activation.status`.
pub static ACTIVATION_REQUESTS: Counter = Counter::new(
    "pim.activation.requests",
    "{request}",
    "Activation requests entering each status.",
);

/// From an approval case's opening to its decision. Attribute: `pim.approval.outcome`.
pub static APPROVAL_TIME_TO_DECISION: Histogram = Histogram::new(
    "pim.approval.time_to_decision",
    "s",
    "Time from an approval case's opening to its decision.",
    HUMAN,
);

/// A monotonic count, created on first use.
pub struct Counter {
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    instrument: OnceLock<opentelemetry::metrics::Counter<u64>>,
}

impl Counter {
    const fn new(name: &'static str, unit: &'static str, description: &'static str) -> Self {
        Self {
            name,
            unit,
            description,
            instrument: OnceLock::new(),
        }
    }

    pub fn add(&self, value: u64, attributes: &[KeyValue]) {
        self.instrument
            .get_or_init(|| {
                meter()
                    .u64_counter(self.name)
                    .with_unit(self.unit)
                    .with_description(self.description)
                    .build()
            })
            .add(value, attributes);
    }
}

/// A distribution, created on first use.
pub struct Histogram {
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    boundaries: &'static [f64],
    instrument: OnceLock<opentelemetry::metrics::Histogram<f64>>,
}

impl Histogram {
    const fn new(
        name: &'static str,
        unit: &'static str,
        description: &'static str,
        boundaries: &'static [f64],
    ) -> Self {
        Self {
            name,
            unit,
            description,
            boundaries,
            instrument: OnceLock::new(),
        }
    }

    pub fn record(&self, value: f64, attributes: &[KeyValue]) {
        self.instrument
            .get_or_init(|| {
                meter()
                    .f64_histogram(self.name)
                    .with_unit(self.unit)
                    .with_description(self.description)
                    .with_boundaries(self.boundaries.to_vec())
                    .build()
            })
            .record(value, attributes);
    }
}

/// A current value, created on first use.
pub struct Gauge {
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    instrument: OnceLock<opentelemetry::metrics::Gauge<i64>>,
}

impl Gauge {
    const fn new(name: &'static str, unit: &'static str, description: &'static str) -> Self {
        Self {
            name,
            unit,
            description,
            instrument: OnceLock::new(),
        }
    }

    pub fn record(&self, value: i64, attributes: &[KeyValue]) {
        self.instrument
            .get_or_init(|| {
                meter()
                    .i64_gauge(self.name)
                    .with_unit(self.unit)
                    .with_description(self.description)
                    .build()
            })
            .record(value, attributes);
    }
}
