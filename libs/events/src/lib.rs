//! How facts leave one context and reach another, with nothing lost and nothing applied twice.
//!
//! - [`Outbox`]: a service writes its state change and its event in one transaction.
//! - [`Relay`]: one elected relay per producer assigns the gap-free `sequence` at publish and
//!   publishes in order, to Redis Streams ([`RedisPublisher`]) or, for `pim dev`, nowhere: the
//!   in-process bus reads the outbox tables directly.
//! - [`RedisConsumer`]: one consumer group per consuming service; acknowledges only after its
//!   transaction commits, reclaims stuck entries with `XAUTOCLAIM`, dead-letters after N tries.
//! - [`Inbox`]: the consumer's record of handled event ids, written in the same transaction as
//!   the effect, so a redelivery has no second effect.
//! - [`GapFiller`]: judges gaps in each producer's sequence from the inbox and fills them from
//!   the producer's outbox through [`ReplaySource`]. With grace zero it *is* the in-process bus.
//! - [`SecurityEvents`]: the bounded, rate-limited path for `<producer>.access_denied`.

mod envelope;
mod gaps;
mod inbox;
mod migration;
mod outbox;
mod redis_bus;
mod relay;
mod replay;
mod security;

pub use envelope::{NewEvent, stream_key};
pub use gaps::GapFiller;
pub use inbox::{Applied, BatchFailed, EventHandler, HandlerFuture, Inbox};
pub use migration::EVENT_TABLES;
pub use outbox::Outbox;
pub use redis_bus::{ConsumerOptions, RedisConsumer, RedisPublisher, dead_letter_key};
pub use relay::{Publisher, Relay, RelayOptions};
pub use replay::{GrpcReplaySource, OutboxReplaySource, ReplayServer, ReplaySource};
pub use security::SecurityEvents;
