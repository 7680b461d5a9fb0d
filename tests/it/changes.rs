//! Updating, extending and renewing schedules: each applies to the right state, follows the
//! policy and the invariant, and peers may do it only on a recorded decision.

use pim_config::ServiceName;
use pim_proto::assignment::v1::{
    CreateEligibilityScheduleRequest, ExtendScheduleRequest, RenewScheduleRequest, ScheduleChange,
    UpdateScheduleRequest,
};
use pim_testkit::{ADMIN, Harness};
use tonic::Code;

use crate::{
    bad_input::count,
    support::{ROLE, SCOPE, reason},
};

const DAY_MS: i64 = 86_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_extended_before_they_end_and_renewed_after() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    let at = |ms: i64| Some(pim_proto::timestamp_from_millis(ms));
    let schedule = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "ten-days".into(),
            principal_id: "alice".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            end_time: at(now + 10 * DAY_MS),
            ..Default::default()
        })
        .await?
        .into_inner()
        .schedule
        .unwrap();
    let update = |change: ScheduleChange, end: i64| UpdateScheduleRequest {
        schedule_id: schedule.id.clone(),
        change: change.into(),
        end_time: Some(pim_proto::timestamp_from_millis(end)),
        justification: "still needed".into(),
        validate_only: false,
    };
    let mut admin = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment();
    let extended = admin
        .update_schedule(update(ScheduleChange::Extend, now + 40 * DAY_MS))
        .await?
        .into_inner();
    assert_eq!(extended.schedule.unwrap().end_time, at(now + 40 * DAY_MS));
    let earlier = admin
        .update_schedule(update(ScheduleChange::Extend, now + 20 * DAY_MS))
        .await
        .unwrap_err();
    assert_eq!(earlier.code(), Code::InvalidArgument);
    let too_soon = admin
        .update_schedule(update(ScheduleChange::Renew, now + 60 * DAY_MS))
        .await
        .unwrap_err();
    assert_eq!(reason(&too_soon), "SCHEDULE_NOT_EXPIRED");

    h.clock.advance(chrono::Duration::milliseconds(41 * DAY_MS));
    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    let mut admin = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment();
    let too_late = admin
        .update_schedule(update(ScheduleChange::Extend, now + 30 * DAY_MS))
        .await
        .unwrap_err();
    assert_eq!(reason(&too_late), "SCHEDULE_EXPIRED");

    // Activation renews it on an approved selfRenew, citing the request; nobody else may.
    let renew = RenewScheduleRequest {
        schedule_id: schedule.id.clone(),
        end_time: at(now + 30 * DAY_MS),
        decision_id: String::new(),
    };
    let mut activation = h
        .client(
            ServiceName::Assignment,
            &h.service_token(ServiceName::Activation),
        )
        .assignment_internal();
    assert_eq!(
        activation
            .renew_schedule(renew.clone())
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let denied = h
        .client(
            ServiceName::Assignment,
            &h.service_token(ServiceName::Approval),
        )
        .assignment_internal()
        .renew_schedule(RenewScheduleRequest {
            decision_id: "req-1".into(),
            ..renew.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let renewed = activation
        .renew_schedule(RenewScheduleRequest {
            decision_id: "req-1".into(),
            ..renew
        })
        .await?
        .into_inner()
        .schedule
        .unwrap();
    assert_eq!(renewed.start_time, at(now), "a renewal starts now");
    let extended_again = activation
        .extend_schedule(ExtendScheduleRequest {
            schedule_id: schedule.id.clone(),
            end_time: at(now + 60 * DAY_MS),
            decision_id: "req-2".into(),
        })
        .await?;
    assert!(extended_again.into_inner().schedule.is_some());
    let db = h.service(ServiceName::Assignment).db();
    assert_eq!(
        count(db, "SELECT COUNT(*) AS n FROM outbox WHERE event_type IN ('assignment.schedule_extended', 'assignment.schedule_renewed')").await?,
        3
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_permanent_global_administrator_cannot_be_given_an_end() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let db = h.service(ServiceName::Assignment).db().clone();
    let row = sea_orm::ConnectionTrait::query_one_raw(
        &db,
        pim_db::stmt(
            &db,
            "SELECT id FROM schedules WHERE principal_id = $1",
            [ADMIN.into()],
        ),
    )
    .await?
    .unwrap();
    let id: String = row.try_get("", "id")?;
    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    let status = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .update_schedule(UpdateScheduleRequest {
            schedule_id: id,
            change: ScheduleChange::Update.into(),
            end_time: Some(pim_proto::timestamp_from_millis(now + DAY_MS)),
            justification: "tidy up".into(),
            validate_only: true,
        })
        .await
        .unwrap_err();
    assert_eq!(
        reason(&status),
        "LAST_GLOBAL_ADMIN",
        "the dry run answers as the real call would"
    );
    h.stop().await;
    Ok(())
}
