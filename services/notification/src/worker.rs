//! Delivery workers: they claim due deliveries (atomically, skipping rows other replicas hold),
//! send each through its channel under a per-endpoint concurrency limit, and record the attempt:
//! delivered, due again after an exponential backoff with jitter, or dead-lettered. Due times
//! are judged by the injectable clock; the wall clock only paces polling.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use pim_clock::SharedClock;
use pim_events::Outbox;
use pim_telemetry::metrics::{DELIVERY_ATTEMPTS, KeyValue};
use ring::rand::{SecureRandom as _, SystemRandom};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{
    channels::{Channel, Outgoing},
    store::{Claimed, Outcome, Store},
};

/// How long a claim holds a delivery (by the domain clock) before another worker may take it:
/// longer than any send may take.
const LEASE_MS: i64 = 5 * 60 * 1000;
/// Deliveries in flight per process.
const IN_FLIGHT: usize = 128;

pub struct Worker {
    pub store: Store,
    pub outbox: Outbox,
    pub clock: SharedClock,
    pub channels: HashMap<&'static str, Arc<dyn Channel>>,
    pub wake: Arc<Notify>,
    pub poll: Duration,
    pub retry_base: Duration,
    pub endpoint_concurrency: usize,
    pub cancel: CancellationToken,
}

/// The wait before the attempt after failed attempt `number` (1-based): base·2^(n-1), ±20%.
pub fn backoff(base: Duration, number: i32, jitter: f64) -> Duration {
    let exponent = (number.max(1) - 1).min(20) as u32;
    let plain = base.as_millis() as f64 * f64::from(2u32.pow(exponent));
    Duration::from_millis((plain * (0.8 + 0.4 * jitter.clamp(0.0, 1.0))) as u64)
}

fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}

impl Worker {
    pub async fn run(self: Arc<Self>) {
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        let endpoints: Arc<Mutex<HashMap<String, Arc<Semaphore>>>> = Arc::default();
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
            loop {
                let room = in_flight.available_permits().min(64);
                if room == 0 {
                    break;
                }
                let now = self.clock.now_millis();
                let claimed = match self.store.claim_due(now, now + LEASE_MS, room as i64).await {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        tracing::warn!(error = ?e, "claiming deliveries failed; retrying at the next poll");
                        break;
                    }
                };
                if claimed.is_empty() {
                    break;
                }
                for delivery in claimed {
                    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                        break;
                    };
                    let endpoint = self.endpoint(&endpoints, &delivery.endpoint);
                    let worker = self.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let Ok(_slot) = endpoint.acquire_owned().await else {
                            return;
                        };
                        let span = attempt_span(&delivery);
                        worker.deliver(delivery).instrument(span).await;
                        worker.wake.notify_one();
                    });
                }
            }
        }
    }

    fn endpoint(
        &self,
        endpoints: &Mutex<HashMap<String, Arc<Semaphore>>>,
        key: &str,
    ) -> Arc<Semaphore> {
        let mut map = endpoints.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.endpoint_concurrency.max(1))))
            .clone()
    }

    async fn deliver(&self, claimed: Claimed) {
        let started = Instant::now();
        let result = match self.channels.get(claimed.channel.as_str()) {
            Some(channel) => {
                let outgoing = Outgoing {
                    delivery_id: claimed.id.clone(),
                    recipient: claimed.recipient.clone(),
                    body: claimed.body.clone(),
                };
                channel.send(&outgoing).await
            }
            None => Err(crate::channels::Failure::new(format!(
                "the {} channel is not configured",
                claimed.channel
            ))),
        };
        let now = self.clock.now_millis();
        let number = claimed.attempts + 1;
        let outcome = match result {
            Ok(status) => Outcome {
                succeeded: true,
                permanent: false,
                http_status: status,
                error: String::new(),
                duration_ms: started.elapsed().as_millis() as i64,
                at_ms: now,
                retry_at_ms: now,
            },
            Err(failure) => Outcome {
                succeeded: false,
                permanent: failure.permanent,
                http_status: failure.http_status,
                error: failure.error,
                duration_ms: started.elapsed().as_millis() as i64,
                at_ms: now,
                retry_at_ms: now + backoff(self.retry_base, number, jitter()).as_millis() as i64,
            },
        };
        let result = if outcome.succeeded {
            "delivered"
        } else {
            "failed"
        };
        DELIVERY_ATTEMPTS.add(
            1,
            &[
                KeyValue::new("pim.notification.channel", claimed.channel.clone()),
                KeyValue::new("pim.notification.outcome", result),
            ],
        );
        tracing::Span::current().record("pim.notification.outcome", result);
        if !outcome.succeeded {
            tracing::Span::current().record("otel.status_code", "ERROR");
            tracing::warn!(
                delivery = %claimed.id,
                channel = %claimed.channel,
                event_type = %claimed.event_type,
                attempt = number,
                error = %outcome.error,
                "a delivery attempt failed"
            );
        }
        match self.store.record(&self.outbox, &claimed, &outcome).await {
            Ok(true) => tracing::warn!(delivery = %claimed.id, "a delivery was dead-lettered"),
            Ok(false) => {}
            // The claim's lease runs out and the delivery is sent again: at least once.
            Err(e) => {
                tracing::error!(error = ?e, delivery = %claimed.id, "recording an attempt failed")
            }
        }
    }
}

/// One delivery attempt, continuing the trace of the event the delivery came from.
fn attempt_span(claimed: &Claimed) -> tracing::Span {
    let span = tracing::info_span!(
        "notification.deliver",
        otel.name = %format!("deliver {}", claimed.channel),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        server.address = %claimed.endpoint,
        pim.notification.channel = %claimed.channel,
        pim.notification.delivery_id = %claimed.id,
        pim.notification.attempt = claimed.attempts + 1,
        pim.notification.outcome = tracing::field::Empty,
        event.r#type = %claimed.event_type,
    );
    pim_telemetry::set_parent_from(&span, &claimed.trace, "notification");
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_jitter() {
        let base = Duration::from_secs(180);
        assert_eq!(backoff(base, 1, 0.5), Duration::from_secs(180));
        assert_eq!(backoff(base, 3, 0.5), Duration::from_secs(720));
        assert!(backoff(base, 2, 0.0) >= Duration::from_secs(288));
        assert!(backoff(base, 2, 1.0) <= Duration::from_secs(432));
        // Eight attempts: seven waits, about six hours with the defaults.
        let total: Duration = (1..=7).map(|n| backoff(base, n, 0.5)).sum();
        assert!((6 * 3600..7 * 3600).contains(&total.as_secs()), "{total:?}");
    }
}
