//! gRPC handlers of the notification context. Every method is for PIM's administrators (Global
//! Administrator or Privileged Role Administrator at `/`); deliveries and statistics may also be
//! read by the reader roles. A refused caller is recorded as a security event.

use std::sync::Arc;

use pim_auth::Caller;
use pim_client::roles;
use pim_config::ServiceName;
use pim_grpc::{ApiError, DenialRecorder as _, Violations, caller};
use pim_host::HostContext;
use pim_proto::notification::v1::{
    Channel, CreateSubscriptionRequest, CreateSubscriptionResponse, DeliveryCount, DeliveryStatus,
    DisableSubscriptionRequest, DisableSubscriptionResponse, GetDeliveryStatsRequest,
    GetDeliveryStatsResponse, ListDeliveriesRequest, ListDeliveriesResponse,
    ListSubscriptionsRequest, ListSubscriptionsResponse, RetryDeliveryRequest,
    RetryDeliveryResponse, RotateSubscriptionSecretRequest, RotateSubscriptionSecretResponse,
    SendTestEventRequest, SendTestEventResponse, notification_service_server::NotificationService,
};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::{
    consumer::endpoint_of,
    secrets::{SecretKey, generate_webhook_secret, webhook_secret_bytes},
    ssrf::AddressPolicy,
    store::{DeliveryFilter, NewDelivery, Store, SubscriptionRow, channel_name, status_name},
};

/// The producers whose events a subscription may name with `<producer>.*`.
const PRODUCERS: [&str; 5] = [
    "assignment",
    "activation",
    "approval",
    "audit",
    "notification",
];

/// Every event type a subscription may name exactly (ARCHITECTURE §4).
pub const EVENT_TYPES: &[&str] = &[
    "assignment.schedule_created",
    "assignment.schedule_updated",
    "assignment.schedule_removed",
    "assignment.schedule_extended",
    "assignment.schedule_renewed",
    "assignment.schedule_converted",
    "assignment.schedule_expiring",
    "assignment.schedule_expired",
    "assignment.window_provisioned",
    "assignment.window_revoked",
    "assignment.policy_updated",
    "assignment.role_created",
    "assignment.role_updated",
    "assignment.role_deleted",
    "assignment.principal_upserted",
    "assignment.principal_disabled",
    "assignment.membership_changed",
    "assignment.access_denied",
    "activation.request_submitted",
    "activation.request_pending_approval",
    "activation.request_approved",
    "activation.request_granted",
    "activation.request_denied",
    "activation.request_canceled",
    "activation.request_timed_out",
    "activation.request_failed",
    "activation.request_deactivated",
    "activation.request_expired",
    "activation.access_denied",
    "approval.case_opened",
    "approval.case_escalated",
    "approval.stage_completed",
    "approval.case_decided",
    "approval.case_timed_out",
    "approval.case_canceled",
    "approval.review_started",
    "approval.review_item_decided",
    "approval.review_completed",
    "approval.review_decision_applied",
    "approval.access_denied",
    "audit.alert_raised",
    "audit.alert_resolved",
    "audit.alert_dismissed",
    "audit.alert_configuration_updated",
    "audit.checkpoint_signed",
    "audit.records_purged",
    "audit.access_denied",
    "notification.test",
];

const MAX_DESCRIPTION: usize = 500;
const MAX_URL: usize = 2000;
const MAX_EVENT_TYPES: usize = 100;

#[derive(Clone)]
pub struct NotificationApi {
    pub store: Store,
    pub ctx: HostContext,
    pub key: Option<Arc<SecretKey>>,
    pub policy: AddressPolicy,
    pub max_attempts: u32,
    pub wake: Arc<Notify>,
}

fn internal(e: anyhow::Error) -> Status {
    ApiError::Internal(e).into()
}

fn page_size(size: i32, v: &mut Violations) -> i64 {
    match size {
        0 => 50,
        1..=200 => i64::from(size),
        _ => {
            v.add("page_size", "must be between 0 and 200");
            0
        }
    }
}

fn check_event_type(filter: &str) -> Result<(), String> {
    if let Some(producer) = filter.strip_suffix(".*") {
        return if PRODUCERS.contains(&producer) {
            Ok(())
        } else {
            Err(format!("{filter:?}: unknown producer {producer:?}"))
        };
    }
    if EVENT_TYPES.contains(&filter) {
        Ok(())
    } else {
        Err(format!("{filter:?} is not a PIM event type"))
    }
}

impl NotificationApi {
    /// The caller, if they hold one of `roles` at `/`; a recorded refusal otherwise.
    async fn authorize<T>(
        &self,
        request: &Request<T>,
        method: &str,
        allowed: &[&str],
    ) -> Result<Caller, Status> {
        let caller = caller(request)?;
        let assignment = self.ctx.peers.get(ServiceName::Assignment);
        let permitted = caller.service().is_none()
            && pim_client::holds_any_role(assignment, &caller.subject, allowed, "/").await?;
        if !permitted {
            self.ctx.security.record_denial(
                &format!("/pim.notification.v1.NotificationService/{method}"),
                &caller.subject,
                "NOT_AN_ADMIN",
            );
            return Err(ApiError::PermissionDenied {
                reason: "NOT_AN_ADMIN",
                message: "notifications are managed by Global Administrators and Privileged Role Administrators at /".into(),
            }
            .into());
        }
        Ok(caller)
    }

    fn key(&self) -> Result<&SecretKey, Status> {
        self.key.as_deref().ok_or_else(|| {
            ApiError::FailedPrecondition {
                reason: "SECRET_KEY_MISSING",
                message: "webhooks need PIM_NOTIFICATION_SECRET_KEY to encrypt their secrets"
                    .into(),
            }
            .into()
        })
    }

    /// The secret to store: the caller's, checked, or a fresh one.
    fn secret(&self, given: Option<String>, v: &mut Violations) -> Result<String, Status> {
        match given {
            Some(secret) => {
                if let Err(why) = webhook_secret_bytes(&secret) {
                    v.add("secret", why);
                }
                Ok(secret)
            }
            None => generate_webhook_secret().map_err(|e| internal(e.into())),
        }
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    async fn create_subscription(
        &self,
        request: Request<CreateSubscriptionRequest>,
    ) -> Result<Response<CreateSubscriptionResponse>, Status> {
        let caller = self
            .authorize(&request, "CreateSubscription", &roles::ADMINS)
            .await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("request_id", &req.request_id);
        if req.url.len() > MAX_URL {
            v.add("url", format!("must be at most {MAX_URL} characters"));
        } else if let Err(why) = self.policy.check_url(req.url.trim()) {
            v.add("url", why);
        }
        if req.event_types.is_empty() {
            v.add("event_types", "name at least one event type");
        }
        if req.event_types.len() > MAX_EVENT_TYPES {
            v.add("event_types", format!("at most {MAX_EVENT_TYPES}"));
        }
        for filter in &req.event_types {
            if let Err(why) = check_event_type(filter.trim()) {
                v.add("event_types", why);
            }
        }
        if req.description.chars().count() > MAX_DESCRIPTION {
            v.add(
                "description",
                format!("must be at most {MAX_DESCRIPTION} characters"),
            );
        }
        let secret = self.secret(req.secret, &mut v)?;
        v.check()?;
        let key = self.key()?;
        let now = self.ctx.clock.now_millis();
        let mut event_types: Vec<String> = req
            .event_types
            .iter()
            .map(|t| t.trim().to_owned())
            .collect();
        event_types.sort();
        event_types.dedup();
        let row = SubscriptionRow {
            id: uuid::Uuid::now_v7().to_string(),
            request_id: req.request_id,
            url: req.url.trim().to_owned(),
            event_types,
            description: req.description,
            sealed_secret: key
                .seal(secret.as_bytes())
                .map_err(|e| internal(e.into()))?,
            enabled: true,
            created_at_ms: now,
            created_by: caller.subject,
            updated_at_ms: now,
        };
        if req.validate_only {
            return Ok(Response::new(CreateSubscriptionResponse {
                subscription: Some(row.to_proto()),
                secret: String::new(),
            }));
        }
        let (stored, _created) = self
            .store
            .create_subscription(&self.ctx.outbox, &row)
            .await
            .map_err(internal)?;
        // A retried create returns the secret of the subscription it created the first time.
        let secret = String::from_utf8(
            key.open(&stored.sealed_secret)
                .map_err(|e| internal(e.into()))?,
        )
        .map_err(|e| internal(e.into()))?;
        Ok(Response::new(CreateSubscriptionResponse {
            subscription: Some(stored.to_proto()),
            secret,
        }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<ListSubscriptionsRequest>,
    ) -> Result<Response<ListSubscriptionsResponse>, Status> {
        self.authorize(&request, "ListSubscriptions", &roles::ADMINS)
            .await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let limit = page_size(req.page_size, &mut v);
        v.check()?;
        let rows = self
            .store
            .list_subscriptions(&req.page_token, limit)
            .await
            .map_err(internal)?;
        let next_page_token = if rows.len() as i64 == limit {
            rows.last().map(|r| r.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListSubscriptionsResponse {
            subscriptions: rows.iter().map(SubscriptionRow::to_proto).collect(),
            next_page_token,
        }))
    }

    async fn rotate_subscription_secret(
        &self,
        request: Request<RotateSubscriptionSecretRequest>,
    ) -> Result<Response<RotateSubscriptionSecretResponse>, Status> {
        let caller = self
            .authorize(&request, "RotateSubscriptionSecret", &roles::ADMINS)
            .await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("subscription_id", &req.subscription_id);
        let secret = self.secret(req.secret, &mut v)?;
        v.check()?;
        let sealed = self
            .key()?
            .seal(secret.as_bytes())
            .map_err(|e| internal(e.into()))?;
        let row = self
            .store
            .change_subscription(
                &self.ctx.outbox,
                &req.subscription_id,
                Some(sealed),
                false,
                self.ctx.clock.now_millis(),
                &caller.subject,
            )
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::from(ApiError::NotFound("subscription".into())))?;
        Ok(Response::new(RotateSubscriptionSecretResponse {
            subscription: Some(row.to_proto()),
            secret,
        }))
    }

    async fn disable_subscription(
        &self,
        request: Request<DisableSubscriptionRequest>,
    ) -> Result<Response<DisableSubscriptionResponse>, Status> {
        let caller = self
            .authorize(&request, "DisableSubscription", &roles::ADMINS)
            .await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("subscription_id", &req.subscription_id);
        v.check()?;
        let row = self
            .store
            .change_subscription(
                &self.ctx.outbox,
                &req.subscription_id,
                None,
                true,
                self.ctx.clock.now_millis(),
                &caller.subject,
            )
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::from(ApiError::NotFound("subscription".into())))?;
        Ok(Response::new(DisableSubscriptionResponse {
            subscription: Some(row.to_proto()),
        }))
    }

    async fn send_test_event(
        &self,
        request: Request<SendTestEventRequest>,
    ) -> Result<Response<SendTestEventResponse>, Status> {
        let caller = self
            .authorize(&request, "SendTestEvent", &roles::ADMINS)
            .await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("subscription_id", &req.subscription_id);
        v.check()?;
        let subscription = self
            .store
            .subscription(&req.subscription_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::from(ApiError::NotFound("subscription".into())))?;
        if !subscription.enabled {
            return Err(ApiError::FailedPrecondition {
                reason: "SUBSCRIPTION_DISABLED",
                message: "the subscription is disabled".into(),
            }
            .into());
        }
        let now = self.ctx.clock.now_millis();
        let event_id = uuid::Uuid::now_v7().to_string();
        let body = serde_json::json!({
            "type": "notification.test",
            "timestamp": chrono::DateTime::from_timestamp_millis(now)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "data": { "event_id": event_id, "subscription_id": subscription.id, "sent_by": caller.subject },
        });
        let delivery = NewDelivery {
            event_id: event_id.clone(),
            event_type: "notification.test".into(),
            channel: "webhook",
            recipient: subscription.id.clone(),
            principal_id: String::new(),
            endpoint: endpoint_of(&subscription.url),
            subject: "notification.test".into(),
            body: serde_json::to_vec(&body).map_err(|e| internal(e.into()))?,
        };
        self.store
            .insert_deliveries(
                self.store.db(),
                std::slice::from_ref(&delivery),
                now,
                self.max_attempts,
            )
            .await
            .map_err(internal)?;
        self.wake.notify_one();
        let listed = self
            .store
            .list_deliveries(&DeliveryFilter {
                event_id,
                limit: 1,
                ..Default::default()
            })
            .await
            .map_err(internal)?;
        Ok(Response::new(SendTestEventResponse {
            delivery: listed.into_iter().next(),
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        let readers = [roles::ADMINS.as_slice(), roles::READERS.as_slice()].concat();
        self.authorize(&request, "ListDeliveries", &readers).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let limit = page_size(req.page_size, &mut v);
        let channel = Channel::try_from(req.channel).unwrap_or_else(|_| {
            v.add("channel", "unknown channel");
            Channel::Unspecified
        });
        let status = DeliveryStatus::try_from(req.status).unwrap_or_else(|_| {
            v.add("status", "unknown status");
            DeliveryStatus::Unspecified
        });
        v.check()?;
        let deliveries = self
            .store
            .list_deliveries(&DeliveryFilter {
                event_id: req.event_id,
                event_type: req.event_type,
                recipient: req.recipient,
                channel: channel_name(channel).into(),
                status: status_name(status).into(),
                before: req.page_token,
                limit,
            })
            .await
            .map_err(internal)?;
        let next_page_token = if deliveries.len() as i64 == limit {
            deliveries.last().map(|d| d.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListDeliveriesResponse {
            deliveries,
            next_page_token,
        }))
    }

    async fn retry_delivery(
        &self,
        request: Request<RetryDeliveryRequest>,
    ) -> Result<Response<RetryDeliveryResponse>, Status> {
        self.authorize(&request, "RetryDelivery", &roles::ADMINS)
            .await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("delivery_id", &req.delivery_id);
        v.check()?;
        match self
            .store
            .retry(
                &req.delivery_id,
                self.ctx.clock.now_millis(),
                self.max_attempts,
            )
            .await
            .map_err(internal)?
        {
            None => return Err(ApiError::NotFound("delivery".into()).into()),
            Some(false) => {
                return Err(ApiError::FailedPrecondition {
                    reason: "NOT_DEAD_LETTERED",
                    message: "only dead-lettered deliveries are retried by hand".into(),
                }
                .into());
            }
            Some(true) => self.wake.notify_one(),
        }
        let delivery = self
            .store
            .delivery(&req.delivery_id)
            .await
            .map_err(internal)?;
        Ok(Response::new(RetryDeliveryResponse { delivery }))
    }

    async fn get_delivery_stats(
        &self,
        request: Request<GetDeliveryStatsRequest>,
    ) -> Result<Response<GetDeliveryStatsResponse>, Status> {
        let readers = [roles::ADMINS.as_slice(), roles::READERS.as_slice()].concat();
        self.authorize(&request, "GetDeliveryStats", &readers)
            .await?;
        let (counts, failed) = self.store.stats().await.map_err(internal)?;
        Ok(Response::new(GetDeliveryStatsResponse {
            counts: counts
                .into_iter()
                .map(|(channel, status, n)| DeliveryCount {
                    channel: crate::store::channel_proto(&channel).into(),
                    status: crate::store::status_proto(&status).into(),
                    count: n.max(0) as u64,
                })
                .collect(),
            failed_attempts: failed.max(0) as u64,
        }))
    }
}
