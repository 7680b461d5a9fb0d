//! The notification context end to end: events from the other contexts become e-mails on a
//! real SMTP server and Standard Webhooks-signed requests to a real HTTP receiver, with the
//! recipients the role policy names, retries by the clock the test moves, dead letters, and
//! nothing sent twice.

mod cli;
mod digest;
mod email;
mod recipients;
mod reliability;
mod webhooks;

use std::time::Duration;

use pim_client::PimClient;
use pim_config::ServiceName;
use pim_proto::{
    assignment::v1::{Principal, PrincipalType, UpsertPrincipalsRequest},
    notification::v1::{
        CreateSubscriptionRequest, CreateSubscriptionResponse, Delivery, DeliveryStatus,
        ListDeliveriesRequest,
    },
};
use pim_testkit::{ADMIN, Harness, HarnessOptions, SmtpServer, WebhookReceiver};

/// Base64 of 32 bytes: the test deployment's key for secrets at rest.
pub const SECRET_KEY: &str = "cGltLW5vdGlmaWNhdGlvbi10ZXN0LWtleS0zMi1ieXQ=";
/// The first retry waits a minute (±20%); the test moves the clock past it.
pub const RETRY_BASE_MS: i64 = 60_000;

/// A harness whose notification service mails `smtp` and may call loopback receivers.
pub struct World {
    pub h: Harness,
    pub smtp: SmtpServer,
    pub receiver: WebhookReceiver,
}

pub async fn world(extra: &[(&str, &str)]) -> anyhow::Result<World> {
    let smtp = SmtpServer::start().await?;
    let receiver = WebhookReceiver::start().await?;
    let mut settings: Vec<(String, String)> = [
        ("PIM_SMTP_HOST", smtp.host()),
        ("PIM_SMTP_PORT", smtp.port().to_string()),
        ("PIM_SMTP_TLS", "none".into()),
        ("PIM_SMTP_FROM", "PIM <pim@example.test>".into()),
        ("PIM_SMTP_TIMEOUT_MS", "2000".into()),
        ("PIM_NOTIFICATION_SECRET_KEY", SECRET_KEY.into()),
        ("PIM_WEBHOOK_ALLOW_LOOPBACK", "true".into()),
        // These tests count exact mail to the admins, whom security alerts also write to (the
        // break-glass admin acting, a disabled holder of a privileged role, …); alerts and their
        // mail are tested in tests/it/alerts.
        (
            "PIM_ALERTS_DISABLED",
            "RolesAssignedOutsidePimAlert,TooManyGlobalAdminsAssignedToTenantAlert,\
             SequentialActivationRenewalsAlert,NoMfaOnRoleActivationAlert,RedundantAssignmentAlert,\
             StaleSignInAlert,BreakGlassAccountUsedAlert,GuestInPrivilegedRoleAlert"
                .into(),
        ),
        ("PIM_WEBHOOK_TIMEOUT_MS", "1000".into()),
        ("PIM_DELIVERY_POLL_MS", "25".into()),
        ("PIM_DELIVERY_RETRY_BASE_MS", RETRY_BASE_MS.to_string()),
        ("PIM_TIMER_INTERVAL_MS", "20".into()),
        ("PIM_RECONCILE_AFTER_MS", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    settings.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let h = Harness::start_with(HarnessOptions {
        settings,
        ..Default::default()
    })
    .await?;
    people(&h, &[ADMIN, "alice", "bob", "carol"]).await?;
    setup_consumed(&h).await?;
    Ok(World { h, smtp, receiver })
}

/// Waits until the notification service has consumed every event of the set-up (the
/// break-glass seed, the directory sync), so a subscription created next sees only the
/// test's own events.
pub async fn setup_consumed(h: &Harness) -> anyhow::Result<()> {
    let produced = crate::bad_input::count(
        h.service(ServiceName::Assignment).db(),
        "SELECT COUNT(*) AS n FROM outbox",
    )
    .await?;
    let notification = h.service(ServiceName::Notification).db();
    h.eventually(Duration::from_secs(30), || async {
        let consumed = crate::bad_input::count(
            notification,
            "SELECT COUNT(*) AS n FROM inbox WHERE producer = 'assignment'",
        )
        .await?;
        Ok((consumed >= produced).then_some(()))
    })
    .await
}

pub fn email_of(id: &str) -> String {
    format!("{id}@example.test")
}

/// Syncs enabled users with addresses `<id>@example.test` into the directory.
pub async fn people(h: &Harness, ids: &[&str]) -> anyhow::Result<()> {
    let principals = ids
        .iter()
        .map(|id| Principal {
            id: (*id).into(),
            r#type: PrincipalType::User.into(),
            display_name: format!("{id} (display)"),
            email: email_of(id),
            enabled: true,
            ..Default::default()
        })
        .collect();
    h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .upsert_principals(UpsertPrincipalsRequest {
            principals,
            ..Default::default()
        })
        .await?;
    Ok(())
}

pub fn admin(h: &Harness) -> PimClient {
    h.client(ServiceName::Notification, &h.mfa_token(ADMIN))
}

pub async fn subscribe(
    w: &World,
    request_id: &str,
    event_types: &[&str],
) -> anyhow::Result<CreateSubscriptionResponse> {
    let created = admin(&w.h)
        .notification()
        .create_subscription(CreateSubscriptionRequest {
            request_id: request_id.into(),
            url: w.receiver.url("/pim"),
            event_types: event_types.iter().map(|t| (*t).into()).collect(),
            description: "the SOC's receiver".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    w.receiver.set_secret(&created.secret);
    Ok(created)
}

pub async fn deliveries(
    h: &Harness,
    filter: ListDeliveriesRequest,
) -> anyhow::Result<Vec<Delivery>> {
    Ok(admin(h)
        .notification()
        .list_deliveries(filter)
        .await?
        .into_inner()
        .deliveries)
}

pub async fn deliveries_of_type(h: &Harness, event_type: &str) -> anyhow::Result<Vec<Delivery>> {
    deliveries(
        h,
        ListDeliveriesRequest {
            event_type: event_type.into(),
            ..Default::default()
        },
    )
    .await
}

/// Waits until the deliveries of `event_type` number `n` and are all in `status`.
pub async fn settled(
    h: &Harness,
    event_type: &str,
    n: usize,
    status: DeliveryStatus,
) -> anyhow::Result<Vec<Delivery>> {
    h.eventually(Duration::from_secs(30), || async {
        let found = deliveries_of_type(h, event_type).await?;
        Ok((found.len() == n && found.iter().all(|d| d.status() == status)).then_some(found))
    })
    .await
}

/// Waits until delivery `id` has made `attempts` attempts.
pub async fn attempted(h: &Harness, id: &str, attempts: u32) -> anyhow::Result<Delivery> {
    h.eventually(Duration::from_secs(30), || async {
        let found = deliveries(h, ListDeliveriesRequest::default()).await?;
        Ok(found
            .into_iter()
            .find(|d| d.id == id && d.attempts.len() as u32 >= attempts))
    })
    .await
}

pub fn advance(h: &Harness, ms: i64) {
    h.clock.advance(chrono::Duration::milliseconds(ms));
}

/// Past the longest wait before retry `n` (1-based): base·2^(n-1) plus 20% jitter.
pub fn past_retry(n: u32) -> i64 {
    RETRY_BASE_MS * (1 << (n - 1)) * 6 / 5 + 1_000
}
