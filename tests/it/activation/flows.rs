//! The other paths: no approval (effective at once), a future start, a denial, an approval
//! that times out, deactivation, cancellation, and several roles in one call.

use std::time::Duration;

use pim_config::ServiceName;
use pim_proto::{
    activation::v1::{
        CancelRequest, ListMyActivationsRequest, RequestAction, RequestStatus, SubmitBatchRequest,
        SubmitRequest,
    },
    approval::v1::{CaseStatus, DecideRequest, Decision, GetCaseRequest},
    timestamp_from_millis,
};

use super::{
    HOUR_MS, MINUTE_MS, activation_events, advance, alice, alice_allowed, alice_under, approve,
    await_status, guide_policy, harness_with, submit, ticketed, windows_of,
};
use crate::support::{ROLE, SCOPE, reason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_approval_access_is_effective_at_once_and_deactivation_ends_it()
-> anyhow::Result<()> {
    let h = harness_with(&[]).await?;
    alice_under(&h, guide_policy(None)).await?;
    let granted = submit(&h, ticketed("now-1", 60)).await?;
    assert_eq!(granted.status(), RequestStatus::Provisioned);
    assert!(alice_allowed(&h).await?, "effective when the call returns");
    let live = alice(&h)
        .activation()
        .list_my_activations(ListMyActivationsRequest {})
        .await?
        .into_inner()
        .activations;
    assert_eq!(live.len(), 1);

    let deactivate = SubmitRequest {
        request_id: "off-1".into(),
        action: RequestAction::SelfDeactivate.into(),
        role_id: ROLE.into(),
        scope: SCOPE.into(),
        ..Default::default()
    };
    let too_soon = submit(&h, deactivate.clone()).await.unwrap_err();
    assert_eq!(reason(&too_soon), "DEACTIVATION_TOO_SOON");
    advance(&h, 5 * MINUTE_MS);
    let revoked = submit(&h, deactivate.clone()).await?;
    assert_eq!(revoked.status(), RequestStatus::Revoked);
    assert!(!alice_allowed(&h).await?, "revoked at once");
    let again = submit(&h, deactivate).await.unwrap_err();
    assert_eq!(reason(&again), "NOT_ACTIVE");
    assert_eq!(
        activation_events(&h, "activation.request_deactivated").await?,
        1
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_start_is_denied_before_it_and_allowed_from_it() -> anyhow::Result<()> {
    let h = harness_with(&[]).await?;
    alice_under(&h, guide_policy(None)).await?;
    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    let scheduled = submit(
        &h,
        SubmitRequest {
            start_time: Some(timestamp_from_millis(now + 2 * HOUR_MS)),
            ..ticketed("later-1", 30)
        },
    )
    .await?;
    assert_eq!(scheduled.status(), RequestStatus::ScheduleCreated);
    assert!(!alice_allowed(&h).await?);
    advance(&h, 2 * HOUR_MS - 1);
    assert!(!alice_allowed(&h).await?, "a millisecond before the start");
    advance(&h, 1);
    assert!(alice_allowed(&h).await?, "from the start, with no timer");
    assert_eq!(
        super::request_status(&h, &scheduled.id).await?.status(),
        RequestStatus::Provisioned
    );
    advance(&h, 30 * MINUTE_MS);
    assert!(!alice_allowed(&h).await?);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_and_a_timeout_end_the_request_without_access() -> anyhow::Result<()> {
    let h = harness_with(&[]).await?;
    alice_under(&h, guide_policy(Some("bob"))).await?;
    let denied = submit(&h, ticketed("deny-1", 30)).await?;
    h.client(ServiceName::Approval, &h.token("bob"))
        .approval()
        .decide(DecideRequest {
            case_id: denied.case_id.clone(),
            decision: Decision::Deny.into(),
            justification: "no incident open".into(),
        })
        .await?;
    let ended = await_status(&h, &denied.id, RequestStatus::Denied).await?;
    assert_eq!(ended.reason, "APPROVAL_DENIED");
    assert_eq!(windows_of(&h, &denied.id).await?, 0);

    let waiting = submit(&h, ticketed("slow-1", 30)).await?;
    assert_eq!(waiting.status(), RequestStatus::PendingApproval);
    advance(&h, 24 * HOUR_MS);
    let timed_out = await_status(&h, &waiting.id, RequestStatus::TimedOut).await?;
    assert_eq!(timed_out.reason, "APPROVAL_TIMED_OUT");
    assert!(!alice_allowed(&h).await?);
    assert_eq!(windows_of(&h, &waiting.id).await?, 0);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_a_pending_request_cancels_its_case() -> anyhow::Result<()> {
    let h = harness_with(&[]).await?;
    alice_under(&h, guide_policy(Some("bob"))).await?;
    let pending = submit(&h, ticketed("cancel-1", 30)).await?;
    let canceled = alice(&h)
        .activation()
        .cancel(CancelRequest {
            id: pending.id.clone(),
        })
        .await?
        .into_inner()
        .request
        .unwrap();
    assert_eq!(canceled.status(), RequestStatus::Canceled);
    let case = h
        .client(ServiceName::Approval, &h.token("bob"))
        .approval()
        .get_case(GetCaseRequest {
            case_id: pending.case_id.clone(),
        })
        .await?
        .into_inner()
        .case
        .unwrap();
    assert_eq!(case.status(), CaseStatus::Canceled);
    let late = approve(&h, "bob", &pending.case_id).await.unwrap_err();
    assert!(late.to_string().contains("canceled"), "{late}");
    // Someone else cannot see, let alone cancel, alice's request.
    let stranger = h
        .client(ServiceName::Activation, &h.mfa_token("mallory"))
        .activation()
        .cancel(CancelRequest {
            id: pending.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), tonic::Code::NotFound);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_roles_activate_in_one_call_with_a_result_each() -> anyhow::Result<()> {
    let h = harness_with(&[]).await?;
    alice_under(&h, guide_policy(None)).await?;
    let results = alice(&h)
        .activation()
        .submit_batch(SubmitBatchRequest {
            items: vec![
                ticketed("batch-1", 30),
                SubmitRequest {
                    scope: "/administrativeUnits/au-2".into(),
                    ..ticketed("batch-2", 30)
                },
                SubmitRequest {
                    duration: None,
                    ..ticketed("batch-3", 30)
                },
            ],
        })
        .await?
        .into_inner();
    let outcome: Vec<(&str, &str)> = results
        .results
        .iter()
        .map(|r| (r.code.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        outcome,
        [
            ("OK", ""),
            ("FAILED_PRECONDITION", "NOT_ELIGIBLE"),
            ("INVALID_ARGUMENT", "")
        ]
    );
    let granted = results.results[0].request.as_ref().unwrap();
    assert_eq!(granted.correlation_id, results.correlation_id);
    assert!(alice_allowed(&h).await?);
    h.eventually(Duration::from_secs(30), || async {
        Ok((activation_events(&h, "activation.request_granted").await? == 1).then_some(()))
    })
    .await?;
    h.stop().await;
    Ok(())
}
