//! Webhooks: subscriptions by event type, Standard Webhooks signatures that the reference
//! library verifies, retries with backoff by the moved clock, dead letters and manual retries,
//! and refusals of bad subscriptions.

use std::time::Duration;

use pim_config::ServiceName;
use pim_proto::notification::v1::{
    CreateSubscriptionRequest, DeliveryStatus, DisableSubscriptionRequest,
    ListSubscriptionsRequest, RetryDeliveryRequest, RotateSubscriptionSecretRequest,
    SendTestEventRequest,
};
use pim_testkit::{Reply, verify_standard_webhook};
use sea_orm::ConnectionTrait as _;
use tonic::Code;
use tonic_types::StatusExt as _;

use super::{admin, advance, attempted, past_retry, settled, subscribe, world};
use crate::{bad_input::count, support::make_eligible};

const CREATED: &str = "assignment.schedule_created";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_receiver_gets_each_event_signed_so_the_reference_library_verifies_it()
-> anyhow::Result<()> {
    let w = world(&[("PIM_SMTP_HOST", "")]).await?;
    let subscription = subscribe(&w, "soc", &[CREATED]).await?;
    assert!(subscription.secret.starts_with("whsec_"));

    make_eligible(&w.h, "alice", "alice-eligible").await?;
    let delivered = settled(&w.h, CREATED, 1, DeliveryStatus::Delivered).await?;
    let webhook = &delivered[0];
    assert_eq!(
        webhook.channel(),
        pim_proto::notification::v1::Channel::Webhook
    );
    let received = w.receiver.received();
    assert_eq!(received.len(), 1, "one request for one event");
    let request = &received[0];
    assert!(
        request.verified,
        "the reference library verifies the signature"
    );
    assert_eq!(request.header("webhook-id"), webhook.id);
    assert_eq!(request.header("content-type"), "application/json");
    let body = request.json();
    assert_eq!(body["type"], CREATED);
    assert_eq!(body["data"]["facts"]["principal_id"], "alice");
    assert_eq!(body["data"]["producer"], "assignment");

    // A tampered body, or the wrong secret, fails verification.
    let mut tampered = request.body.clone();
    tampered[10] ^= 0x20;
    assert!(verify_standard_webhook(&subscription.secret, &tampered, &request.headers).is_err());
    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert!(verify_standard_webhook(other, &request.body, &request.headers).is_err());

    // The secret is stored encrypted, never in the clear.
    let db = w.h.service(ServiceName::Notification).db();
    let row = db
        .query_one_raw(pim_db::stmt(
            db,
            "SELECT sealed_secret FROM subscriptions",
            [],
        ))
        .await?
        .expect("the subscription row");
    let sealed: Vec<u8> = row.try_get("", "sealed_secret")?;
    let plain = subscription.secret.as_bytes();
    assert!(sealed.len() > plain.len());
    assert!(!sealed.windows(plain.len()).any(|w| w == plain));
    let key_material = &plain[6..];
    assert!(
        !sealed
            .windows(key_material.len())
            .any(|w| w == key_material)
    );
    w.h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_answers_500_twice_then_200_gets_exactly_one_delivery_after_two_retries()
-> anyhow::Result<()> {
    let w = world(&[("PIM_SMTP_HOST", "")]).await?;
    subscribe(&w, "soc", &[CREATED]).await?;
    w.receiver.script([Reply::Status(500), Reply::Status(500)]);

    make_eligible(&w.h, "alice", "alice-eligible").await?;
    let pending = settled(&w.h, CREATED, 1, DeliveryStatus::Pending).await?;
    let id = pending[0].id.clone();
    let first = attempted(&w.h, &id, 1).await?;
    assert_eq!(first.attempts[0].http_status, 500);
    assert_eq!(first.status(), DeliveryStatus::Pending, "due again later");
    // Nothing more happens until the backoff has passed on the clock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.receiver.received().len(), 1);

    advance(&w.h, past_retry(1));
    attempted(&w.h, &id, 2).await?;
    advance(&w.h, past_retry(2));
    let done = settled(&w.h, CREATED, 1, DeliveryStatus::Delivered).await?;
    assert_eq!(done[0].attempts.len(), 3);
    assert_eq!(
        done[0]
            .attempts
            .iter()
            .map(|a| a.http_status)
            .collect::<Vec<_>>(),
        [500, 500, 200]
    );
    let received = w.receiver.received();
    assert_eq!(received.len(), 3, "two failures and one success");
    assert_eq!(w.receiver.accepted().len(), 1, "exactly one delivery");
    // Every attempt is the same message: one webhook-id, each signature valid.
    assert!(
        received
            .iter()
            .all(|r| r.header("webhook-id") == id && r.verified)
    );
    w.h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_is_dead_lettered_with_its_error_and_a_manual_retry_delivers()
-> anyhow::Result<()> {
    let w = world(&[("PIM_SMTP_HOST", ""), ("PIM_DELIVERY_MAX_ATTEMPTS", "3")]).await?;
    subscribe(&w, "soc", &[CREATED]).await?;
    w.receiver.script([Reply::Hang, Reply::Hang, Reply::Hang]);

    make_eligible(&w.h, "alice", "alice-eligible").await?;
    let pending = settled(&w.h, CREATED, 1, DeliveryStatus::Pending).await?;
    let id = pending[0].id.clone();
    attempted(&w.h, &id, 1).await?;
    advance(&w.h, past_retry(1));
    attempted(&w.h, &id, 2).await?;
    advance(&w.h, past_retry(2));
    let dead = settled(&w.h, CREATED, 1, DeliveryStatus::DeadLettered).await?;
    assert_eq!(dead[0].attempts.len(), 3);
    assert!(
        dead[0].last_error.contains("no answer"),
        "{}",
        dead[0].last_error
    );
    let db = w.h.service(ServiceName::Notification).db();
    w.h.eventually(Duration::from_secs(30), || async {
        let n = count(
            db,
            "SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'notification.delivery_dead_lettered'",
        )
        .await?;
        Ok((n == 1).then_some(()))
    })
    .await?;
    assert!(w.receiver.accepted().is_empty());

    // The receiver is back; an admin retries the dead letter by hand.
    let retried = admin(&w.h)
        .notification()
        .retry_delivery(RetryDeliveryRequest {
            delivery_id: id.clone(),
        })
        .await?
        .into_inner()
        .delivery
        .unwrap_or_default();
    assert_eq!(retried.status(), DeliveryStatus::Pending);
    let done = settled(&w.h, CREATED, 1, DeliveryStatus::Delivered).await?;
    assert_eq!(done[0].attempts.len(), 4);
    assert_eq!(w.receiver.accepted().len(), 1);
    assert!(w.receiver.accepted()[0].verified);

    // A delivered one is not retried again.
    let again = admin(&w.h)
        .notification()
        .retry_delivery(RetryDeliveryRequest { delivery_id: id })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    w.h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_secret_signs_with_the_new_one_and_a_disabled_subscription_gets_nothing()
-> anyhow::Result<()> {
    let w = world(&[("PIM_SMTP_HOST", "")]).await?;
    let created = subscribe(&w, "soc", &["assignment.*"]).await?;
    let id = created.subscription.unwrap_or_default().id;
    let api = admin(&w.h);

    let rotated = api
        .notification()
        .rotate_subscription_secret(RotateSubscriptionSecretRequest {
            subscription_id: id.clone(),
            secret: None,
        })
        .await?
        .into_inner();
    assert_ne!(rotated.secret, created.secret);
    w.receiver.set_secret(&rotated.secret);
    let test = api
        .notification()
        .send_test_event(SendTestEventRequest {
            subscription_id: id.clone(),
        })
        .await?
        .into_inner()
        .delivery
        .unwrap_or_default();
    assert_eq!(test.event_type, "notification.test");
    settled(&w.h, "notification.test", 1, DeliveryStatus::Delivered).await?;
    let received = w.receiver.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].verified, "signed with the rotated secret");
    assert!(
        verify_standard_webhook(&created.secret, &received[0].body, &received[0].headers).is_err(),
        "the old secret no longer verifies"
    );

    let listed = api
        .notification()
        .list_subscriptions(ListSubscriptionsRequest::default())
        .await?
        .into_inner()
        .subscriptions;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_types, ["assignment.*"]);

    let disabled = api
        .notification()
        .disable_subscription(DisableSubscriptionRequest {
            subscription_id: id.clone(),
        })
        .await?
        .into_inner()
        .subscription
        .unwrap_or_default();
    assert!(!disabled.enabled);
    make_eligible(&w.h, "alice", "alice-eligible").await?;
    // The event is consumed (the inbox records it) but no delivery is written for it.
    let db = w.h.service(ServiceName::Notification).db();
    w.h.eventually(Duration::from_secs(30), || async {
        let n = count(
            db,
            "SELECT COUNT(*) AS n FROM inbox WHERE producer = 'assignment'",
        )
        .await?;
        Ok((n > 0).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.receiver.received().len(), 1, "nothing after disabling");
    w.h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused_with_field_violations_and_non_admins_are_refused()
-> anyhow::Result<()> {
    let w = world(&[]).await?;
    let good = CreateSubscriptionRequest {
        request_id: "r".into(),
        url: w.receiver.url("/pim"),
        event_types: vec![CREATED.into()],
        ..Default::default()
    };
    let cases = [
        (
            "url",
            CreateSubscriptionRequest {
                url: "ftp://hooks.example.com/pim".into(),
                ..good.clone()
            },
        ),
        (
            "url",
            CreateSubscriptionRequest {
                url: "http://10.0.0.8/pim".into(),
                ..good.clone()
            },
        ),
        (
            "url",
            CreateSubscriptionRequest {
                url: "http://169.254.169.254/latest/meta-data".into(),
                ..good.clone()
            },
        ),
        (
            "event_types",
            CreateSubscriptionRequest {
                event_types: vec!["assignment.schedule_exploded".into()],
                ..good.clone()
            },
        ),
        (
            "secret",
            CreateSubscriptionRequest {
                secret: Some(String::new()),
                ..good.clone()
            },
        ),
        (
            "secret",
            CreateSubscriptionRequest {
                secret: Some("not-a-standard-secret".into()),
                ..good.clone()
            },
        ),
    ];
    let api = admin(&w.h);
    for (field, request) in cases {
        let status = api
            .notification()
            .create_subscription(request.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        assert_eq!(fields, [field], "{request:?}: {}", status.message());
    }
    // Nothing was stored by a refused request.
    let db = w.h.service(ServiceName::Notification).db();
    assert_eq!(
        count(db, "SELECT COUNT(*) AS n FROM subscriptions").await?,
        0
    );

    // A person without an admin role is refused, and the refusal is a security event.
    let status =
        w.h.client(ServiceName::Notification, &w.h.mfa_token("alice"))
            .notification()
            .create_subscription(good.clone())
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    w.h.eventually(Duration::from_secs(30), || async {
        let n = count(
            db,
            "SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'notification.access_denied'",
        )
        .await?;
        Ok((n == 1).then_some(()))
    })
    .await?;

    // validate_only checks and stores nothing; a good request then succeeds once per request id.
    api.notification()
        .create_subscription(CreateSubscriptionRequest {
            validate_only: true,
            ..good.clone()
        })
        .await?;
    assert_eq!(
        count(db, "SELECT COUNT(*) AS n FROM subscriptions").await?,
        0
    );
    let first = api
        .notification()
        .create_subscription(good.clone())
        .await?
        .into_inner();
    let again = api
        .notification()
        .create_subscription(good)
        .await?
        .into_inner();
    assert_eq!(first.subscription, again.subscription);
    assert_eq!(first.secret, again.secret);
    assert_eq!(
        count(db, "SELECT COUNT(*) AS n FROM subscriptions").await?,
        1
    );
    w.h.stop().await;
    Ok(())
}
