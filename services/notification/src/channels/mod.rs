//! Channels carry a rendered message to its recipient. The pipeline (store, workers, retries)
//! knows only this trait, so a chat integration is one more implementation.

mod email;
mod webhook;

use futures_util::future::BoxFuture;

pub use email::{EmailChannel, EmailMessage};
pub use webhook::WebhookChannel;

/// What a worker hands a channel: one claimed delivery.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub delivery_id: String,
    pub recipient: String,
    pub body: Vec<u8>,
}

/// A failed attempt: why, and the receiver's HTTP status where there was one.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: String,
    pub http_status: u32,
    /// No retry can succeed (the subscription is gone or disabled, the address is malformed):
    /// dead-letter at once.
    pub permanent: bool,
}

impl Failure {
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            http_status: 0,
            permanent: false,
        }
    }

    pub fn permanent(error: impl Into<String>) -> Self {
        Self {
            permanent: true,
            ..Self::new(error)
        }
    }
}

/// The receiver's HTTP status on success (0 where there is none).
pub type SendResult = Result<u32, Failure>;

pub trait Channel: Send + Sync + 'static {
    /// `email`, `webhook`: the value of `deliveries.channel`.
    fn name(&self) -> &'static str;

    fn send<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, SendResult>;
}
