//! Nothing twice: a redelivered event writes and sends nothing more, and two replicas of the
//! notification service share the deliveries without sending any twice.

use std::{collections::HashSet, time::Duration};

use pim_config::ServiceName;
use pim_proto::{
    assignment::v1::CreateEligibilityScheduleRequest, events::v1::Event,
    notification::v1::DeliveryStatus,
};
use pim_testkit::ADMIN;
use prost::Message as _;
use sea_orm::ConnectionTrait as _;
use tokio::net::TcpListener;

use super::{email_of, people, settled, subscribe, world};
use crate::support::{ROLE, SCOPE, make_eligible};

const CREATED: &str = "assignment.schedule_created";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_sends_nothing_twice() -> anyhow::Result<()> {
    let w = world(&[]).await?;
    subscribe(&w, "soc", &[CREATED]).await?;
    make_eligible(&w.h, "alice", "alice-eligible").await?;
    settled(&w.h, CREATED, 3, DeliveryStatus::Delivered).await?;

    // The same event arrives again on the stream, as after a crash before XACK.
    let assignment = w.h.service(ServiceName::Assignment).db();
    let row = assignment
        .query_one_raw(pim_db::stmt(
            assignment,
            "SELECT envelope, sequence FROM outbox WHERE event_type = $1",
            [CREATED.into()],
        ))
        .await?
        .expect("the published event");
    let mut event = Event::decode(row.try_get::<Vec<u8>>("", "envelope")?.as_slice())?;
    event.sequence = row.try_get::<i64>("", "sequence")? as u64;
    let mut redis = redis::Client::open(w.h.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let _: String = redis::cmd("XADD")
        .arg(format!("{}events:assignment", w.h.prefix))
        .arg("*")
        .arg("event")
        .arg(event.encode_to_vec())
        .arg("type")
        .arg(&event.r#type)
        .arg("sequence")
        .arg(event.sequence)
        .query_async(&mut redis)
        .await?;

    // A later event on the same stream is handled after the duplicate.
    make_eligible(&w.h, "bob", "bob-eligible").await?;
    settled(&w.h, CREATED, 6, DeliveryStatus::Delivered).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.receiver.received().len(), 2, "one webhook per event");
    assert_eq!(w.smtp.messages_to(&email_of("alice")).len(), 1);
    assert_eq!(w.smtp.messages_to(&email_of("bob")).len(), 1);
    assert_eq!(w.smtp.messages_to(&email_of(ADMIN)).len(), 2);
    w.h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_deliveries_without_sending_any_twice() -> anyhow::Result<()> {
    let w = world(&[("PIM_SMTP_HOST", "")]).await?;
    let second = pim_testkit::start_service(
        w.h.settings(ServiceName::Notification)?,
        w.h.clock.clone(),
        TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    subscribe(&w, "soc", &[CREATED]).await?;
    let ids: Vec<String> = (0..24).map(|i| format!("p{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    people(&w.h, &refs).await?;
    let admin = w.h.client(ServiceName::Assignment, &w.h.mfa_token(ADMIN));
    for id in &ids {
        admin
            .assignment()
            .create_eligibility_schedule(CreateEligibilityScheduleRequest {
                request_id: format!("{id}-eligible"),
                principal_id: id.clone(),
                role_id: ROLE.into(),
                scope: SCOPE.into(),
                justification: "rotation".into(),
                ..Default::default()
            })
            .await?;
    }
    let delivered = settled(&w.h, CREATED, ids.len(), DeliveryStatus::Delivered).await?;
    assert!(delivered.iter().all(|d| d.attempts.len() == 1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = w.receiver.received();
    let distinct: HashSet<String> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(received.len(), ids.len(), "no request twice");
    assert_eq!(distinct.len(), ids.len());
    assert!(received.iter().all(|r| r.verified));
    second.shutdown().await;
    w.h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_does_not_hold_up_the_others() -> anyhow::Result<()> {
    let w = world(&[
        ("PIM_SMTP_HOST", ""),
        ("PIM_WEBHOOK_TIMEOUT_MS", "30000"),
        ("PIM_DELIVERY_ENDPOINT_CONCURRENCY", "1"),
    ])
    .await?;
    // The SOC's receiver hangs on every request; the ticketing system's answers at once.
    subscribe(&w, "soc", &[CREATED]).await?;
    w.receiver.script([pim_testkit::Reply::Hang; 8]);
    let ticketing = pim_testkit::WebhookReceiver::start().await?;
    let created = super::admin(&w.h)
        .notification()
        .create_subscription(pim_proto::notification::v1::CreateSubscriptionRequest {
            request_id: "ticketing".into(),
            url: ticketing.url("/hooks"),
            event_types: vec![CREATED.into()],
            ..Default::default()
        })
        .await?
        .into_inner();
    ticketing.set_secret(&created.secret);

    let ids: Vec<String> = (0..6).map(|i| format!("q{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    people(&w.h, &refs).await?;
    for id in &refs {
        make_eligible(&w.h, id, &format!("{id}-eligible")).await?;
    }
    // Every delivery to the fast receiver arrives while the slow one still holds its first.
    w.h.eventually(Duration::from_secs(30), || async {
        Ok((ticketing.accepted().len() == ids.len()).then_some(()))
    })
    .await?;
    assert!(ticketing.accepted().iter().all(|r| r.verified));
    assert_eq!(
        w.receiver.received().len(),
        1,
        "one request at a time to the hanging receiver"
    );
    w.h.stop().await;
    Ok(())
}
