//! The one harness every test in every crate uses: real PostgreSQL and Redis (never mocks), a
//! fresh database per test cloned from a migrated template, the services started in-process on
//! port 0 and talking real gRPC, tokens for any caller, and a Redis of a test's own for faults.

mod engines;
mod harness;
mod jwks_server;
mod otlp;
mod postgres;
mod redis_keys;
mod redis_server;
mod smtp_server;
mod webhook_receiver;

pub use engines::{postgres_url, redis_url};
pub use harness::{
    ADMIN, Harness, HarnessOptions, ISSUER_PRIVATE_KEY, ISSUER_PUBLIC_KEY, OTHER_PRIVATE_KEY,
    TLS_CA, TLS_CERT, TLS_KEY, client_tls, start_service,
};
pub use jwks_server::{ISSUER_KID, JwksServer};
pub use otlp::{OtlpReceiver, ReceivedMetric, ReceivedSpan};
/// What `start_service` returns: a service running until shut down.
pub use pim_host::RunningService;
pub use postgres::TestDatabase;
pub use redis_keys::RedisKeys;
pub use redis_server::RedisServer;
pub use smtp_server::{ReceivedMail, SmtpServer};
pub use webhook_receiver::{ReceivedWebhook, Reply, WebhookReceiver, verify_standard_webhook};

/// A unique prefix for the Redis keys of one test, so tests run in parallel.
pub fn stream_prefix() -> String {
    format!("t{}:", uuid::Uuid::new_v4().simple())
}
