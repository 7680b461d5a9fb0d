//! Webhooks signed per Standard Webhooks. The subscription is read at send time, so a rotated
//! secret signs the next attempt and a disabled subscription receives nothing more. The client
//! resolves names through the SSRF guard and follows no redirects.

use std::time::Duration;

use futures_util::future::BoxFuture;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{Channel, Failure, Outgoing, SendResult};
use crate::{
    secrets::SecretKey,
    signature,
    ssrf::{AddressPolicy, GuardedResolver},
    store::Store,
};

type Https = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

pub struct WebhookChannel {
    store: Store,
    key: Option<std::sync::Arc<SecretKey>>,
    client: Client<Https, Full<Bytes>>,
    timeout: Duration,
    policy: AddressPolicy,
}

impl WebhookChannel {
    pub fn new(
        store: Store,
        key: Option<std::sync::Arc<SecretKey>>,
        policy: AddressPolicy,
        timeout: Duration,
    ) -> Self {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver { policy });
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            store,
            key,
            client: Client::builder(TokioExecutor::new()).build(https),
            timeout,
            policy,
        }
    }

    async fn post(&self, outgoing: &Outgoing) -> SendResult {
        let Some(subscription) = self
            .store
            .subscription_target(&outgoing.recipient)
            .await
            .map_err(|e| Failure::new(format!("reading the subscription: {e}")))?
        else {
            return Err(Failure::permanent("the subscription no longer exists"));
        };
        if !subscription.enabled {
            return Err(Failure::permanent("the subscription is disabled"));
        }
        // Checked again at send time: configuration may have changed since it was created.
        self.policy
            .check_url(&subscription.url)
            .map_err(|why| Failure::new(format!("the URL {why}")))?;
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| Failure::new("PIM_NOTIFICATION_SECRET_KEY is not configured"))?;
        let secret = key
            .open(&subscription.sealed_secret)
            .map_err(|e| Failure::new(e.to_string()))?;
        let secret = crate::secrets::webhook_secret_bytes(&String::from_utf8_lossy(&secret))
            .map_err(|why| Failure::new(format!("stored secret {why}")))?;
        // Receivers check the signature's timestamp against their own wall clock, so this is
        // the real time of the attempt, not the service's (injectable) domain clock.
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let signature = signature::sign(&secret, &outgoing.delivery_id, timestamp, &outgoing.body);
        let request = http::Request::post(&subscription.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "PIM-Webhooks/1")
            .header("webhook-id", &outgoing.delivery_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(Bytes::from(outgoing.body.clone())))
            .map_err(|e| Failure::new(format!("building the request: {e}")))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                let mut message = format!("{e}");
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    message.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                Failure::new(message)
            })?;
            let status = response.status();
            // Read (and drop) a bounded body so the connection can be reused.
            let _ = http_body_util::Limited::new(response.into_body(), 64 * 1024)
                .collect()
                .await;
            Ok(status)
        };
        let status = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Failure::new(format!("no answer within {:?}", self.timeout)))??;
        if status.is_success() {
            Ok(u32::from(status.as_u16()))
        } else {
            Err(Failure {
                http_status: u32::from(status.as_u16()),
                ..Failure::new(format!("the receiver answered HTTP {}", status.as_u16()))
            })
        }
    }
}

impl Channel for WebhookChannel {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, outgoing: &'a Outgoing) -> BoxFuture<'a, SendResult> {
        Box::pin(self.post(outgoing))
    }
}
