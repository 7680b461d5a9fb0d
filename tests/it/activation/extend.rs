//! Entra's selfExtend and selfRenew: a person asks for more time on their own schedule, in the
//! 14 days before it ends (or the 30 after), and an administrator approves it through the API.

use pim_config::ServiceName;
use pim_proto::{
    activation::v1::{RequestAction, RequestStatus, SubmitRequest},
    assignment::v1::{CreateEligibilityScheduleRequest, ListSchedulesRequest},
    timestamp_from_millis,
};
use pim_testkit::{ADMIN, Harness};

use super::{approve, await_status, guide_policy, harness_with, set_policy, submit};
use crate::support::{ROLE, SCOPE, reason};

const DAY_MS: i64 = 86_400_000;

async fn eligible_until(h: &Harness, request_id: &str, end_ms: i64) -> anyhow::Result<String> {
    Ok(h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: request_id.into(),
            principal_id: "alice".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            end_time: Some(timestamp_from_millis(end_ms)),
            ..Default::default()
        })
        .await?
        .into_inner()
        .schedule
        .unwrap_or_default()
        .id)
}

fn on_schedule(
    action: RequestAction,
    request_id: &str,
    schedule_id: &str,
    end_ms: i64,
) -> SubmitRequest {
    SubmitRequest {
        request_id: request_id.into(),
        action: action.into(),
        role_id: ROLE.into(),
        scope: SCOPE.into(),
        schedule_id: schedule_id.into(),
        end_time: Some(timestamp_from_millis(end_ms)),
        justification: "the project runs another month".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_extension_is_approved_by_an_admin_and_applied_to_the_schedule() -> anyhow::Result<()>
{
    let h = harness_with(&[]).await?;
    set_policy(&h, guide_policy(None)).await?;
    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    let schedule = eligible_until(&h, "expiring", now + 10 * DAY_MS).await?;

    let new_end = now + 40 * DAY_MS;
    let pending = submit(
        &h,
        on_schedule(RequestAction::SelfExtend, "extend-1", &schedule, new_end),
    )
    .await?;
    assert_eq!(pending.status(), RequestStatus::PendingApproval);
    assert!(!pending.case_id.is_empty());
    // Nobody named extension approvers: the Global Administrator at / approves.
    approve(&h, ADMIN, &pending.case_id).await?;
    await_status(&h, &pending.id, RequestStatus::Provisioned).await?;
    let schedules = h
        .client(ServiceName::Assignment, &h.token(ADMIN))
        .assignment()
        .list_schedules(ListSchedulesRequest {
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            principal_id: "alice".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .schedules;
    let extended = schedules.iter().find(|s| s.id == schedule).unwrap();
    assert_eq!(
        extended
            .end_time
            .as_ref()
            .map(pim_proto::millis_from_timestamp),
        Some(new_end)
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_and_renewal_are_refused_outside_their_windows() -> anyhow::Result<()> {
    let h = harness_with(&[]).await?;
    set_policy(&h, guide_policy(None)).await?;
    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    let far = eligible_until(&h, "far", now + 20 * DAY_MS).await?;
    let early = submit(
        &h,
        on_schedule(
            RequestAction::SelfExtend,
            "extend-early",
            &far,
            now + 60 * DAY_MS,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&early), "NOT_EXPIRING_SOON");
    let not_ended = submit(
        &h,
        on_schedule(
            RequestAction::SelfRenew,
            "renew-early",
            &far,
            now + 60 * DAY_MS,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&not_ended), "SCHEDULE_NOT_EXPIRED");
    let strangers = submit(
        &h,
        on_schedule(
            RequestAction::SelfExtend,
            "extend-other",
            "no-such-schedule",
            now + 60 * DAY_MS,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(strangers.code(), tonic::Code::NotFound);
    assert_eq!(
        crate::bad_input::count(
            h.service(ServiceName::Activation).db(),
            "SELECT COUNT(*) AS n FROM requests"
        )
        .await?,
        0
    );
    h.stop().await;
    Ok(())
}
