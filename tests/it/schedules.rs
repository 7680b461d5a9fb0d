//! Schedule administration: active assignments, removal, the last-Global-Administrator
//! invariant under concurrency, and the rules that refuse a schedule.

use pim_client::roles;
use pim_config::ServiceName;
use pim_db::stmt;
use pim_proto::{
    activation::v1::RequestStatus,
    assignment::v1::{
        CreateActiveScheduleRequest, CreateEligibilityScheduleRequest, ListSchedulesRequest,
        Principal, PrincipalType, RemoveScheduleRequest, UpsertPrincipalsRequest,
    },
};
use pim_testkit::{ADMIN, Harness};
use sea_orm::ConnectionTrait as _;
use tonic::Code;

use crate::{
    bad_input::count,
    support::{ROLE, SCOPE, activate, check_access, make_eligible, reason},
};

async fn schedule_id_of(h: &Harness, principal: &str) -> anyhow::Result<String> {
    let db = h.service(ServiceName::Assignment).db();
    let row = db
        .query_one_raw(stmt(
            db,
            "SELECT id FROM schedules WHERE principal_id = $1",
            [principal.into()],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no schedule of {principal}"))?;
    Ok(row.try_get("", "id")?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_removals_of_the_last_two_global_administrators_exactly_one_succeeds()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    let admin = h.client(ServiceName::Assignment, &h.mfa_token(ADMIN));
    let second = admin
        .assignment()
        .create_active_schedule(CreateActiveScheduleRequest {
            request_id: "second-ga".into(),
            principal_id: "second".into(),
            role_id: roles::GLOBAL_ADMINISTRATOR.into(),
            scope: "/".into(),
            justification: "two break-glass accounts".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .schedule
        .unwrap();
    let first = schedule_id_of(&h, ADMIN).await?;
    // The remover's own authority must not hang on the schedules it removes.
    admin
        .assignment()
        .create_active_schedule(CreateActiveScheduleRequest {
            request_id: "pra".into(),
            principal_id: "pra".into(),
            role_id: roles::PRIVILEGED_ROLE_ADMINISTRATOR.into(),
            scope: "/".into(),
            justification: "runs the cleanup".into(),
            ..Default::default()
        })
        .await?;
    let remover = h.client(ServiceName::Assignment, &h.mfa_token("pra"));
    let remove = |id: String| {
        let mut client = remover.assignment();
        async move {
            client
                .remove_schedule(RemoveScheduleRequest {
                    schedule_id: id,
                    justification: "cleanup".into(),
                    validate_only: false,
                })
                .await
        }
    };
    let (a, b) = tokio::join!(remove(first), remove(second.id));
    let outcomes = [&a, &b];
    assert_eq!(
        outcomes.iter().filter(|r| r.is_ok()).count(),
        1,
        "exactly one removal succeeds: {a:?} {b:?}"
    );
    let refused = outcomes.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(
        (refused.code(), reason(refused).as_str()),
        (Code::FailedPrecondition, "LAST_GLOBAL_ADMIN")
    );
    let db = h.service(ServiceName::Assignment).db();
    let left = count(
        db,
        "SELECT COUNT(*) AS n FROM schedules WHERE role_id = '62e90394-69f5-4237-9190-012177145e10' AND kind = 'active'",
    )
    .await?;
    assert_eq!(left, 1);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_short_windows_and_eligible_service_principals_are_refused_and_dry_runs_agree()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    make_eligible(&h, "alice", "first").await?;
    let mut admin = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment();
    let db = h.service(ServiceName::Assignment).db().clone();
    let before = count(&db, "SELECT COUNT(*) AS n FROM outbox").await?;
    let again = |validate_only: bool| CreateEligibilityScheduleRequest {
        request_id: "second".into(),
        principal_id: "alice".into(),
        role_id: ROLE.into(),
        scope: SCOPE.into(),
        validate_only,
        ..Default::default()
    };
    let dry = admin
        .create_eligibility_schedule(again(true))
        .await
        .unwrap_err();
    let real = admin
        .create_eligibility_schedule(again(false))
        .await
        .unwrap_err();
    assert_eq!(
        (dry.code(), reason(&dry)),
        (real.code(), reason(&real)),
        "the dry run answers as the real call"
    );
    assert_eq!(reason(&real), "DUPLICATE_SCHEDULE");

    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    let short = admin
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "short".into(),
            principal_id: "bob".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            end_time: Some(pim_proto::timestamp_from_millis(now + 4 * 60 * 1000)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument);

    admin
        .upsert_principals(UpsertPrincipalsRequest {
            principals: vec![Principal {
                id: "ci-bot".into(),
                r#type: PrincipalType::ServicePrincipal.into(),
                enabled: true,
                ..Default::default()
            }],
            groups: vec![],
            ..Default::default()
        })
        .await?;
    let bot = admin
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "bot".into(),
            principal_id: "ci-bot".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&bot), "SERVICE_PRINCIPAL_ACTIVE_ONLY");
    let active = admin
        .create_active_schedule(CreateActiveScheduleRequest {
            request_id: "bot-active".into(),
            principal_id: "ci-bot".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            justification: "deploys".into(),
            ..Default::default()
        })
        .await?;
    assert!(active.into_inner().schedule.is_some());
    // Only the directory upsert and the bot's active assignment were written.
    let written = count(&db, "SELECT COUNT(*) AS n FROM outbox").await? - before;
    assert_eq!(written, 2);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_eligibility_ends_the_window_that_came_from_it_at_once() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    make_eligible(&h, "alice", "eligible").await?;
    let granted = activate(
        &h.client(ServiceName::Activation, &h.mfa_token("alice")),
        "a-1",
        120,
    )
    .await?;
    assert_eq!(
        granted.request.unwrap().status(),
        RequestStatus::Provisioned
    );
    let checker = h.client(ServiceName::Assignment, &h.token("alice"));
    assert!(check_access(&checker, "alice", SCOPE).await?.allowed);

    let eligibility = schedule_id_of(&h, "alice").await?;
    let mut plain = h
        .client(ServiceName::Assignment, &h.token("alice"))
        .assignment();
    let status = plain
        .remove_schedule(RemoveScheduleRequest {
            schedule_id: eligibility.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .remove_schedule(RemoveScheduleRequest {
            schedule_id: eligibility,
            justification: "left the team".into(),
            validate_only: false,
        })
        .await?;
    let denied = check_access(&checker, "alice", SCOPE).await?;
    assert!(!denied.allowed, "the window died with its eligibility");
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_after_duration_expiration_ends_that_long_after_the_start_and_keeps_its_ticket()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    let admin = h.client(ServiceName::Assignment, &h.mfa_token(ADMIN));
    let start = pim_clock::Clock::now_millis(h.clock.as_ref()) + 60_000;
    let thirty_days = pim_proto::Duration {
        seconds: 30 * 86_400,
        nanos: 0,
    };
    let order = || CreateEligibilityScheduleRequest {
        request_id: "after-duration".into(),
        principal_id: "alice".into(),
        role_id: ROLE.into(),
        scope: SCOPE.into(),
        start_time: Some(pim_proto::timestamp_from_millis(start)),
        duration: Some(thirty_days),
        justification: "quarterly access".into(),
        ticket_system: "ServiceNow".into(),
        ticket_number: "CHG0042".into(),
        ..Default::default()
    };
    let both = admin
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            end_time: Some(pim_proto::timestamp_from_millis(start + 86_400_000)),
            ..order()
        })
        .await
        .expect_err("end_time and duration together are ambiguous");
    assert_eq!(both.code(), Code::InvalidArgument);
    assert_eq!(crate::support::field_violations(&both), ["duration"]);

    let schedule = admin
        .assignment()
        .create_eligibility_schedule(order())
        .await?
        .into_inner()
        .schedule
        .unwrap_or_default();
    assert_eq!(
        schedule
            .end_time
            .as_ref()
            .map(pim_proto::millis_from_timestamp),
        Some(start + 30 * 86_400_000)
    );
    let listed = admin
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
    assert_eq!(listed, vec![schedule.clone()], "stored as answered");
    assert_eq!(
        (
            schedule.ticket_system.as_str(),
            schedule.ticket_number.as_str()
        ),
        ("ServiceNow", "CHG0042")
    );
    h.stop().await;
    Ok(())
}
