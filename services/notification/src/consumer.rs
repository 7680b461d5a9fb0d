//! What notification does with other contexts' events, inside the consumer's transaction: it
//! writes one delivery per (event, channel, recipient) next to the inbox record, so a
//! redelivered event writes nothing twice and a rolled-back one writes nothing at all. Sending
//! happens later, in the workers, woken as soon as the transaction commits.

use std::sync::Arc;

use pim_client::PimClient;
use pim_clock::SharedClock;
use pim_events::{EventHandler, HandlerFuture};
use pim_proto::events::v1::Event;
use sea_orm::DatabaseTransaction;
use serde_json::json;
use tokio::sync::Notify;

use crate::{
    channels::EmailMessage,
    notice::{self, Facts},
    recipients::Directory,
    store::{NewDelivery, Store, SubscriptionRow},
    templates::Templates,
};

pub struct Consumer {
    pub store: Store,
    pub assignment: PimClient,
    pub templates: Arc<Templates>,
    /// E-mail deliveries are written only when an SMTP server is configured.
    pub email: bool,
    pub clock: SharedClock,
    pub max_attempts: u32,
    pub wake: Arc<Notify>,
    /// Records what the admins' digest counts.
    pub digest: bool,
}

/// The host (and port) of a URL, or the domain of an address: the unit of per-endpoint limits.
pub fn endpoint_of(target: &str) -> String {
    if let Some((_, domain)) = target.rsplit_once('@') {
        return domain.to_ascii_lowercase();
    }
    url::Url::parse(target)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
        })
        .unwrap_or_else(|| target.to_owned())
}

/// The Standard Webhooks payload: `type`, `timestamp` and `data` with the envelope and facts.
pub fn webhook_body(event: &Event, facts: Option<&Facts>) -> Vec<u8> {
    let occurred = event
        .occurred_at
        .as_ref()
        .map(pim_proto::millis_from_timestamp)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    let actor = event.actor.clone().unwrap_or_default();
    let body = json!({
        "type": event.r#type,
        "timestamp": occurred,
        "data": {
            "event_id": event.id,
            "producer": event.producer,
            "sequence": event.sequence,
            "subject": event.subject,
            "actor": actor.id,
            "correlation_id": event.correlation_id,
            "facts": facts,
        },
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

impl Consumer {
    async fn deliveries(&self, txn: &DatabaseTransaction, event: &Event) -> anyhow::Result<()> {
        if self.digest {
            let at = event
                .occurred_at
                .as_ref()
                .map(pim_proto::millis_from_timestamp)
                .unwrap_or_else(|| self.clock.now_millis());
            crate::digest::record(txn, event, at).await?;
        }
        let subscriptions: Vec<SubscriptionRow> = self
            .store
            .enabled_subscriptions(txn)
            .await?
            .into_iter()
            .filter(|s| s.wants(&event.r#type))
            .collect();
        let interpreted = notice::interpret(event)?;
        let wants_email = self.email && interpreted.is_some();
        if subscriptions.is_empty() && !wants_email {
            return Ok(());
        }
        let directory = Directory {
            assignment: &self.assignment,
        };
        let mut deliveries = Vec::new();
        let mut facts = None;
        if let Some((mut known, audiences)) = interpreted {
            directory.name(&mut known).await?;
            if self.email && self.templates.has(&event.r#type) {
                for recipient in directory.recipients(&known, &audiences).await? {
                    let rendered = self.templates.render(&known, &recipient.name)?;
                    let message = EmailMessage {
                        to: recipient.email.clone(),
                        to_name: recipient.name.clone(),
                        subject: rendered.subject.clone(),
                        text: rendered.text,
                        html: rendered.html,
                    };
                    deliveries.push(NewDelivery {
                        event_id: event.id.clone(),
                        event_type: event.r#type.clone(),
                        channel: "email",
                        endpoint: endpoint_of(&recipient.email),
                        recipient: recipient.email,
                        principal_id: recipient.principal_id,
                        subject: rendered.subject,
                        body: serde_json::to_vec(&message)?,
                    });
                }
            }
            facts = Some(known);
        }
        if !subscriptions.is_empty() {
            let body = webhook_body(event, facts.as_ref());
            for subscription in subscriptions {
                deliveries.push(NewDelivery {
                    event_id: event.id.clone(),
                    event_type: event.r#type.clone(),
                    channel: "webhook",
                    endpoint: endpoint_of(&subscription.url),
                    recipient: subscription.id,
                    principal_id: String::new(),
                    subject: event.r#type.clone(),
                    body: body.clone(),
                });
            }
        }
        self.store
            .insert_deliveries(txn, &deliveries, self.clock.now_millis(), self.max_attempts)
            .await?;
        Ok(())
    }
}

impl EventHandler for Consumer {
    fn handle<'a>(&'a self, txn: &'a DatabaseTransaction, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(self.deliveries(txn, event))
    }

    fn committed(&self) {
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_hosts_and_mail_domains() {
        assert_eq!(endpoint_of("Alice@Example.COM"), "example.com");
        assert_eq!(
            endpoint_of("https://hooks.example:8443/pim"),
            "hooks.example:8443"
        );
        assert_eq!(endpoint_of("http://hooks.example/pim"), "hooks.example:80");
    }

    #[test]
    fn webhook_payloads_follow_the_standard_shape() {
        let event = Event {
            id: "e1".into(),
            r#type: "approval.case_opened".into(),
            producer: "approval".into(),
            sequence: 7,
            occurred_at: Some(pim_proto::timestamp_from_millis(1_700_000_000_000)),
            ..Default::default()
        };
        let body: serde_json::Value = serde_json::from_slice(&webhook_body(&event, None)).unwrap();
        assert_eq!(body["type"], "approval.case_opened");
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20.000Z");
        assert_eq!(body["data"]["sequence"], 7);
    }
}
