//! `pim webhooks …` and `pim deliveries …`: manage webhook subscriptions and look after
//! deliveries (list with their attempts, retry dead letters, statistics). Every command is one
//! call of `pim.notification.v1.NotificationService`, except `webhooks seal-secret`, which
//! seals a value offline for `PIM_SMTP_PASSWORD`.

use clap::{Subcommand, ValueEnum};
use pim_client::PimClient;
use pim_proto::notification::v1::{
    Channel, CreateSubscriptionRequest, Delivery, DeliveryStatus, DisableSubscriptionRequest,
    GetDeliveryStatsRequest, ListDeliveriesRequest, ListSubscriptionsRequest, RetryDeliveryRequest,
    RotateSubscriptionSecretRequest, SendTestEventRequest, Subscription,
};
use serde_json::json;

use crate::admin::{Output, readable, table, time};

#[derive(Debug, Clone, Subcommand)]
pub enum WebhookCommand {
    /// Subscribe URL to event types; prints the signing secret once.
    Create {
        url: String,
        /// An event type (`activation.request_granted`) or a producer's wildcard (`approval.*`);
        /// repeat for several.
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// A Standard Webhooks secret (`whsec_…`); generated when absent.
        #[arg(long, env = "PIM_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Idempotency key; a retried create with the same key returns the same subscription.
        #[arg(long)]
        request_id: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
    /// Every subscription.
    List,
    /// Replace a subscription's secret; prints the new one once.
    RotateSecret {
        id: String,
        #[arg(long, env = "PIM_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
    /// Stop deliveries to a subscription.
    Disable { id: String },
    /// Send a `notification.test` event to a subscription.
    Test { id: String },
    /// Seal a value (an SMTP password) with PIM_NOTIFICATION_SECRET_KEY for PIM_SMTP_PASSWORD.
    SealSecret {
        /// The value to seal; read from PIM_SEAL_VALUE so it stays out of the shell history.
        #[arg(long, env = "PIM_SEAL_VALUE", hide_env_values = true)]
        value: String,
        #[arg(long, env = "PIM_NOTIFICATION_SECRET_KEY", hide_env_values = true)]
        key: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChannelArg {
    Email,
    Webhook,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Pending,
    Delivered,
    DeadLettered,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DeliveryCommand {
    /// Deliveries, newest first, with their attempts.
    List {
        #[arg(long)]
        event_id: Option<String>,
        #[arg(long)]
        event_type: Option<String>,
        /// An e-mail address or a subscription id.
        #[arg(long)]
        recipient: Option<String>,
        #[arg(long, value_enum)]
        channel: Option<ChannelArg>,
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
    /// Put dead-lettered deliveries back in the queue.
    Retry {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Counts by channel and status.
    Stats,
}

fn subscription_json(s: &Subscription) -> serde_json::Value {
    json!({
        "id": s.id,
        "url": s.url,
        "event_types": s.event_types,
        "description": s.description,
        "enabled": s.enabled,
        "created_by": s.created_by,
        "created_at": time(s.created_at.as_ref()),
    })
}

fn subscriptions_text(subscriptions: &[Subscription], output: Output) -> String {
    match output {
        Output::Json => {
            let all: Vec<_> = subscriptions.iter().map(subscription_json).collect();
            format!("{}\n", serde_json::Value::Array(all))
        }
        Output::Table => table(
            &["ID", "URL", "EVENTS", "ENABLED"],
            &subscriptions
                .iter()
                .map(|s| {
                    vec![
                        s.id.clone(),
                        s.url.clone(),
                        s.event_types.join(","),
                        s.enabled.to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
}

fn with_secret(subscription: Option<Subscription>, secret: &str, output: Output) -> String {
    let subscription = subscription.unwrap_or_default();
    match output {
        Output::Json => {
            let mut value = subscription_json(&subscription);
            value["secret"] = json!(secret);
            format!("{value}\n")
        }
        Output::Table => format!(
            "{}\nsecret: {secret}\n(shown once: store it in the receiver now)\n",
            subscriptions_text(std::slice::from_ref(&subscription), output).trim_end()
        ),
    }
}

pub async fn run_webhooks(
    command: WebhookCommand,
    client: &PimClient,
    output: Output,
) -> anyhow::Result<String> {
    let mut api = client.notification();
    Ok(match command {
        WebhookCommand::Create {
            url,
            events,
            description,
            secret,
            request_id,
            dry_run,
        } => {
            let created = api
                .create_subscription(CreateSubscriptionRequest {
                    request_id: request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                    url,
                    event_types: events,
                    description,
                    secret,
                    validate_only: dry_run,
                })
                .await
                .map_err(readable)?
                .into_inner();
            if dry_run {
                "valid: nothing was created\n".to_owned()
            } else {
                with_secret(created.subscription, &created.secret, output)
            }
        }
        WebhookCommand::List => {
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = api
                    .list_subscriptions(ListSubscriptionsRequest {
                        page_size: 200,
                        page_token,
                    })
                    .await
                    .map_err(readable)?
                    .into_inner();
                all.extend(page.subscriptions);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            subscriptions_text(&all, output)
        }
        WebhookCommand::RotateSecret { id, secret } => {
            let rotated = api
                .rotate_subscription_secret(RotateSubscriptionSecretRequest {
                    subscription_id: id,
                    secret,
                })
                .await
                .map_err(readable)?
                .into_inner();
            with_secret(rotated.subscription, &rotated.secret, output)
        }
        WebhookCommand::Disable { id } => {
            let disabled = api
                .disable_subscription(DisableSubscriptionRequest {
                    subscription_id: id,
                })
                .await
                .map_err(readable)?
                .into_inner();
            subscriptions_text(
                &disabled.subscription.into_iter().collect::<Vec<_>>(),
                output,
            )
        }
        WebhookCommand::Test { id } => {
            let sent = api
                .send_test_event(SendTestEventRequest {
                    subscription_id: id,
                })
                .await
                .map_err(readable)?
                .into_inner();
            deliveries_text(&sent.delivery.into_iter().collect::<Vec<_>>(), output)
        }
        WebhookCommand::SealSecret { value, key } => {
            let key = pim_notification::SecretKey::from_base64(&key)?;
            format!("{}\n", key.seal_to_text(&value)?)
        }
    })
}

fn channel_text(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "email",
        Channel::Webhook => "webhook",
        Channel::Unspecified => "?",
    }
}

fn status_text(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::DeadLettered => "dead_lettered",
        DeliveryStatus::Unspecified => "?",
    }
}

fn deliveries_text(deliveries: &[Delivery], output: Output) -> String {
    match output {
        Output::Json => {
            let all: Vec<_> = deliveries
                .iter()
                .map(|d| {
                    json!({
                        "id": d.id,
                        "event_id": d.event_id,
                        "event_type": d.event_type,
                        "channel": channel_text(d.channel()),
                        "recipient": d.recipient,
                        "principal_id": d.principal_id,
                        "subject": d.subject,
                        "status": status_text(d.status()),
                        "last_error": d.last_error,
                        "created_at": time(d.created_at.as_ref()),
                        "attempts": d.attempts.iter().map(|a| json!({
                            "number": a.number,
                            "at": time(a.attempted_at.as_ref()),
                            "succeeded": a.succeeded,
                            "http_status": a.http_status,
                            "error": a.error,
                            "duration_ms": a.duration_ms,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            format!("{}\n", serde_json::Value::Array(all))
        }
        Output::Table => table(
            &[
                "ID",
                "EVENT",
                "CHANNEL",
                "RECIPIENT",
                "STATUS",
                "ATTEMPTS",
                "LAST ERROR",
            ],
            &deliveries
                .iter()
                .map(|d| {
                    vec![
                        d.id.clone(),
                        d.event_type.clone(),
                        channel_text(d.channel()).to_owned(),
                        d.recipient.clone(),
                        status_text(d.status()).to_owned(),
                        d.attempt_count.to_string(),
                        d.last_error.clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
}

/// The rendered output and whether any retry was refused.
pub struct Rendered {
    pub text: String,
    pub failed: bool,
}

pub async fn run_deliveries(
    command: DeliveryCommand,
    client: &PimClient,
    output: Output,
) -> anyhow::Result<Rendered> {
    let mut api = client.notification();
    let mut failed = false;
    let text = match command {
        DeliveryCommand::List {
            event_id,
            event_type,
            recipient,
            channel,
            status,
            limit,
        } => {
            let deliveries = api
                .list_deliveries(ListDeliveriesRequest {
                    event_id: event_id.unwrap_or_default(),
                    event_type: event_type.unwrap_or_default(),
                    recipient: recipient.unwrap_or_default(),
                    channel: match channel {
                        Some(ChannelArg::Email) => Channel::Email,
                        Some(ChannelArg::Webhook) => Channel::Webhook,
                        None => Channel::Unspecified,
                    }
                    .into(),
                    status: match status {
                        Some(StatusArg::Pending) => DeliveryStatus::Pending,
                        Some(StatusArg::Delivered) => DeliveryStatus::Delivered,
                        Some(StatusArg::DeadLettered) => DeliveryStatus::DeadLettered,
                        None => DeliveryStatus::Unspecified,
                    }
                    .into(),
                    page_size: limit,
                    page_token: String::new(),
                })
                .await
                .map_err(readable)?
                .into_inner()
                .deliveries;
            deliveries_text(&deliveries, output)
        }
        DeliveryCommand::Retry { ids } => {
            let mut lines = Vec::new();
            for id in ids {
                match api
                    .retry_delivery(RetryDeliveryRequest {
                        delivery_id: id.clone(),
                    })
                    .await
                {
                    Ok(_) => lines.push(format!("{id}  OK  pending")),
                    Err(status) => {
                        failed = true;
                        lines.push(format!("{id}  {}", readable(status)));
                    }
                }
            }
            lines.join("\n") + "\n"
        }
        DeliveryCommand::Stats => {
            let stats = api
                .get_delivery_stats(GetDeliveryStatsRequest {})
                .await
                .map_err(readable)?
                .into_inner();
            match output {
                Output::Json => format!(
                    "{}\n",
                    json!({
                        "counts": stats.counts.iter().map(|c| json!({
                            "channel": channel_text(c.channel()),
                            "status": status_text(c.status()),
                            "count": c.count,
                        })).collect::<Vec<_>>(),
                        "failed_attempts": stats.failed_attempts,
                    })
                ),
                Output::Table => {
                    let mut text = table(
                        &["CHANNEL", "STATUS", "COUNT"],
                        &stats
                            .counts
                            .iter()
                            .map(|c| {
                                vec![
                                    channel_text(c.channel()).to_owned(),
                                    status_text(c.status()).to_owned(),
                                    c.count.to_string(),
                                ]
                            })
                            .collect::<Vec<_>>(),
                    );
                    text.push_str(&format!("failed attempts: {}\n", stats.failed_attempts));
                    text
                }
            }
        }
    };
    Ok(Rendered { text, failed })
}
