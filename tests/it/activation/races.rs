//! Idempotency and races: the same request id twice gives one request and one window; two
//! activations racing for the same role give one window; two replicas fire each timer once.

use std::{sync::Arc, time::Duration};

use pim_config::ServiceName;
use pim_proto::activation::v1::RequestStatus;
use tokio::net::TcpListener;

use super::{
    HOUR_MS, activation_events, advance, alice_under, guide_policy, harness_with, submit, ticketed,
    windows_of,
};
use crate::bad_input::count;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_twice_gives_one_request_and_one_window() -> anyhow::Result<()> {
    let h = harness_with(&[]).await?;
    alice_under(&h, guide_policy(None)).await?;
    let first = submit(&h, ticketed("once", 30)).await?;
    let second = submit(&h, ticketed("once", 30)).await?;
    assert_eq!(first.id, second.id);
    assert_eq!(second.status(), RequestStatus::Provisioned);
    assert_eq!(windows_of(&h, &first.id).await?, 1);
    assert_eq!(
        count(
            h.service(ServiceName::Activation).db(),
            "SELECT COUNT(*) AS n FROM requests"
        )
        .await?,
        1
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_activations_of_one_role_give_one_window() -> anyhow::Result<()> {
    let h = Arc::new(harness_with(&[]).await?);
    alice_under(&h, guide_policy(None)).await?;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let race = |request_id: &'static str| {
        let (h, barrier) = (h.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            submit(&h, ticketed(request_id, 30)).await
        })
    };
    let (a, b) = (race("racer-a"), race("racer-b"));
    let (a, b) = (a.await?, b.await?);
    let (won, lost) = match (a, b) {
        (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
        other => panic!("exactly one must win: {other:?}"),
    };
    assert_eq!(lost.code(), tonic::Code::AlreadyExists);
    assert_eq!(won.status(), RequestStatus::Provisioned);
    assert_eq!(
        count(
            h.service(ServiceName::Assignment).db(),
            "SELECT COUNT(*) AS n FROM windows"
        )
        .await?,
        1
    );
    Arc::try_unwrap(h).ok().expect("tasks done").stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_every_expiry_fires_once() -> anyhow::Result<()> {
    let h = harness_with(&[]).await?;
    alice_under(&h, guide_policy(None)).await?;
    // A second replica of the activation service on the same database.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let replica = pim_testkit::start_service(
        h.settings(ServiceName::Activation)?,
        h.clock.clone(),
        listener,
    )
    .await?;
    let roles = [
        pim_client::roles::SECURITY_ADMINISTRATOR,
        pim_client::roles::SECURITY_READER,
        pim_client::roles::GLOBAL_READER,
    ];
    let admin = h.client(ServiceName::Assignment, &h.mfa_token(pim_testkit::ADMIN));
    for role in &roles[1..] {
        let mut eligible = pim_proto::assignment::v1::CreateEligibilityScheduleRequest {
            request_id: format!("elig-{role}"),
            principal_id: "alice".into(),
            role_id: (*role).into(),
            scope: crate::support::SCOPE.into(),
            justification: "rotation".into(),
            ..Default::default()
        };
        eligible.request_id.truncate(60);
        admin
            .assignment()
            .create_eligibility_schedule(eligible)
            .await?;
    }
    for (n, role) in roles.iter().enumerate() {
        let granted = submit(
            &h,
            pim_proto::activation::v1::SubmitRequest {
                role_id: (*role).into(),
                ..ticketed(&format!("replica-{n}"), 30)
            },
        )
        .await?;
        assert_eq!(granted.status(), RequestStatus::Provisioned, "{role}");
    }
    advance(&h, HOUR_MS);
    h.eventually(Duration::from_secs(30), || async {
        Ok((activation_events(&h, "activation.request_expired").await? == 3).then_some(()))
    })
    .await?;
    // Once a later expiry has fired, the first three have still fired once each.
    submit(&h, ticketed("replica-again", 30)).await?;
    advance(&h, HOUR_MS);
    h.eventually(Duration::from_secs(30), || async {
        Ok((activation_events(&h, "activation.request_expired").await? >= 4).then_some(()))
    })
    .await?;
    assert_eq!(
        activation_events(&h, "activation.request_expired").await?,
        4
    );
    assert_eq!(
        count(
            h.service(ServiceName::Activation).db(),
            "SELECT COUNT(*) AS n FROM request_history WHERE status = 'expired'",
        )
        .await?,
        4
    );
    replica.shutdown().await;
    h.stop().await;
    Ok(())
}
