//! The test plan of the PIM deployment guide, end to end: MFA is demanded, the request waits
//! for its approver, access follows the approval without the clock moving, and ends exactly
//! when the hour is up, followed by `activation.request_expired`.

use std::time::Duration;

use pim_config::ServiceName;
use pim_proto::{
    activation::v1::RequestStatus, assignment::v1::CheckAccessRequest, timestamp_from_millis,
};
use pim_testkit::ADMIN;

use super::{
    HOUR_MS, activation_events, advance, alice_allowed, alice_under, approve, await_status,
    guide_policy, harness_with, submit, ticketed, windows_of,
};
use crate::support::{ROLE, SCOPE, reason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployment_guide_test_plan() -> anyhow::Result<()> {
    let h = harness_with(&[]).await?;
    alice_under(&h, guide_policy(Some("bob"))).await?;

    // 1. Without MFA: refused, so that the client can step up.
    let no_mfa = h
        .client(ServiceName::Activation, &h.token("alice"))
        .activation()
        .submit(ticketed("plan-1", 60))
        .await
        .unwrap_err();
    assert_eq!(reason(&no_mfa), "MFA_REQUIRED");

    // 2. With MFA: it waits for approval, and alice has no access yet.
    let pending = submit(&h, ticketed("plan-1", 60)).await?;
    assert_eq!(pending.status(), RequestStatus::PendingApproval);
    assert!(!pending.case_id.is_empty(), "an approval case was opened");
    assert!(!alice_allowed(&h).await?);

    // 3. Bob approves; access follows without the clock moving.
    approve(&h, "bob", &pending.case_id).await?;
    h.eventually(Duration::from_secs(30), || async {
        Ok(alice_allowed(&h).await?.then_some(()))
    })
    .await?;
    let granted = await_status(&h, &pending.id, RequestStatus::Provisioned).await?;
    assert_eq!(windows_of(&h, &pending.id).await?, 1);
    let start = pim_proto::millis_from_timestamp(granted.start_time.as_ref().unwrap());
    let end = pim_proto::millis_from_timestamp(granted.end_time.as_ref().unwrap());
    assert_eq!(
        end - start,
        HOUR_MS,
        "the window is the hour asked for, from approval"
    );

    // 4. Access ends at one hour exactly, and the expiry is announced.
    let checker = h.client(ServiceName::Assignment, &h.token(ADMIN));
    let at = |ms: i64| CheckAccessRequest {
        principal_id: "alice".into(),
        role_id: ROLE.into(),
        scope: SCOPE.into(),
        at: Some(timestamp_from_millis(ms)),
        ..Default::default()
    };
    assert!(
        checker
            .assignment()
            .check_access(at(end - 1))
            .await?
            .into_inner()
            .allowed
    );
    assert!(
        !checker
            .assignment()
            .check_access(at(end))
            .await?
            .into_inner()
            .allowed
    );
    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    advance(&h, end - now - 1);
    assert!(alice_allowed(&h).await?, "a millisecond before the end");
    assert_eq!(
        activation_events(&h, "activation.request_expired").await?,
        0
    );
    advance(&h, 1);
    assert!(!alice_allowed(&h).await?, "at the end exactly");
    let expired = await_status(&h, &pending.id, RequestStatus::Expired).await?;
    assert_eq!(expired.reason, "WINDOW_ENDED");
    h.eventually(Duration::from_secs(30), || async {
        Ok((activation_events(&h, "activation.request_expired").await? == 1).then_some(()))
    })
    .await?;
    let statuses: Vec<RequestStatus> = expired.history.iter().map(|e| e.status()).collect();
    assert_eq!(
        statuses,
        [
            RequestStatus::PendingApproval,
            RequestStatus::PendingApproval,
            RequestStatus::PendingProvisioning,
            RequestStatus::Provisioned,
            RequestStatus::Expired
        ],
        "submitted, case opened, approved, provisioned, expired"
    );
    assert_eq!(expired.history[2].actor_id, "bob");
    h.stop().await;
    Ok(())
}
