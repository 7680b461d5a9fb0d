//! The notification context: the right people told at once, by e-mail over SMTP and by
//! Standard Webhooks-signed webhooks, and every message accounted for. It consumes the other
//! contexts' events, decides recipients from the role policy's notification rules, writes one
//! delivery per (event, channel, recipient) in the consumer's transaction, and sends them from
//! workers that retry with backoff and dead-letter what cannot be delivered. It owns no business
//! state of other contexts: names, addresses and policies come from the assignment context.

mod channels;
mod consumer;
mod digest;
mod grpc;
mod migration;
mod notice;
mod recipients;
mod secrets;
mod signature;
mod ssrf;
mod store;
mod templates;
mod worker;

use std::{collections::HashMap, sync::Arc};

use pim_config::ServiceName;
use pim_host::{Built, ContextService, HostContext};
use pim_proto::notification::v1::notification_service_server::NotificationServiceServer;
use tokio::sync::Notify;
use tonic::service::RoutesBuilder;

pub use migration::Migrator;
pub use secrets::{SecretKey, generate_webhook_secret};
pub use signature::sign as sign_webhook;

use crate::channels::{Channel, EmailChannel, WebhookChannel};

pub struct Notification;

/// The key that seals secrets: configured, or in dev mode derived from the dev secret.
fn secret_key(ctx: &HostContext) -> anyhow::Result<Option<Arc<SecretKey>>> {
    let settings = &ctx.settings;
    if let Some(key) = &settings.notification.secret_key {
        return Ok(Some(Arc::new(
            SecretKey::from_base64(key.expose())
                .map_err(|e| anyhow::anyhow!("PIM_NOTIFICATION_SECRET_KEY: {e}"))?,
        )));
    }
    match (&settings.auth.dev_hs256_secret, settings.auth.dev_mode) {
        (Some(dev), true) => Ok(Some(Arc::new(SecretKey::derived_for_dev(dev.expose())?))),
        _ => Ok(None),
    }
}

impl ContextService for Notification {
    const NAME: ServiceName = ServiceName::Notification;
    type Migrator = Migrator;

    async fn build(ctx: HostContext) -> anyhow::Result<Built> {
        let settings = ctx.settings.notification.clone();
        let key = secret_key(&ctx)?;
        if key.is_none() {
            tracing::warn!(
                "PIM_NOTIFICATION_SECRET_KEY is not set: webhook subscriptions are refused"
            );
        }
        let store = store::Store::new(ctx.db.clone());
        let policy = ssrf::AddressPolicy {
            allow_loopback: settings.webhook_allow_loopback,
            allow_private: settings.webhook_allow_private,
        };
        let mut channels: HashMap<&'static str, Arc<dyn Channel>> = HashMap::new();
        let webhook: Arc<dyn Channel> = Arc::new(WebhookChannel::new(
            store.clone(),
            key.clone(),
            policy,
            settings.webhook_timeout,
        ));
        channels.insert(webhook.name(), webhook);
        if let Some(smtp) = &settings.smtp {
            let password = match (&smtp.password, &key) {
                (Some(password), Some(key)) => Some(
                    key.open_text(password.expose())
                        .map_err(|e| anyhow::anyhow!("PIM_SMTP_PASSWORD: {e}"))?,
                ),
                (Some(password), None) if password.expose().starts_with("enc:") => {
                    anyhow::bail!(
                        "PIM_SMTP_PASSWORD is sealed (enc:) but PIM_NOTIFICATION_SECRET_KEY is not set"
                    )
                }
                (Some(password), None) => Some(password.expose().to_owned()),
                (None, _) => None,
            };
            let email: Arc<dyn Channel> = Arc::new(EmailChannel::new(smtp, password)?);
            channels.insert(email.name(), email);
        } else {
            tracing::info!("PIM_SMTP_HOST is not set: no notification e-mail is sent");
        }
        let templates = Arc::new(templates::Templates::load(
            settings.template_dir.as_deref(),
        )?);
        let wake = Arc::new(Notify::new());
        let worker = Arc::new(worker::Worker {
            store: store.clone(),
            outbox: ctx.outbox.clone(),
            clock: ctx.clock.clone(),
            channels,
            wake: wake.clone(),
            poll: settings.poll,
            retry_base: settings.retry_base,
            endpoint_concurrency: settings.endpoint_concurrency,
            cancel: ctx.cancel.clone(),
        });
        ctx.spawn(worker.run());
        let digest_on = settings.digest_interval.is_some() && settings.smtp.is_some();
        if let (Some(interval), true) = (settings.digest_interval, digest_on) {
            let digest = digest::Digest {
                db: ctx.db.clone(),
                store: store.clone(),
                assignment: ctx.peers.get(ServiceName::Assignment).clone(),
                templates: templates.clone(),
                clock: ctx.clock.clone(),
                interval,
                max_attempts: settings.max_attempts,
                wake: wake.clone(),
            };
            digest.baseline().await?;
            ctx.spawn(digest.run(ctx.settings.timer_interval, ctx.cancel.clone()));
        }
        let consumer = consumer::Consumer {
            store: store.clone(),
            assignment: ctx.peers.get(ServiceName::Assignment).clone(),
            templates,
            email: settings.smtp.is_some(),
            clock: ctx.clock.clone(),
            max_attempts: settings.max_attempts,
            wake: wake.clone(),
            digest: digest_on,
        };
        let api = grpc::NotificationApi {
            store,
            ctx: ctx.clone(),
            key,
            policy,
            max_attempts: settings.max_attempts,
            wake,
        };
        let mut routes = RoutesBuilder::default();
        routes.add_service(NotificationServiceServer::new(api));
        Ok(Built {
            routes,
            handler: Some(Arc::new(consumer)),
        })
    }
}
