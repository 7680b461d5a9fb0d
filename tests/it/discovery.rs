//! Discovery: standing role assignments the sync reports become active schedules of origin
//! `Discovered`. They are real access until an admin brings them under management (converts
//! them to eligible) or removes them.

use pim_config::ServiceName;
use pim_proto::assignment::v1::{
    AssignmentServiceConvertScheduleRequest, DiscoveredAssignment, ListSchedulesRequest, Principal,
    PrincipalType, Schedule, ScheduleCreated, ScheduleKind, ScheduleOrigin,
    UpsertPrincipalsRequest, UpsertPrincipalsResponse,
};
use pim_testkit::{ADMIN, Harness};
use prost::Message as _;
use sea_orm::ConnectionTrait as _;
use tonic::Code;

use crate::{
    bad_input::count,
    support::{ROLE, SCOPE, check_access, field_violations, reason},
};

fn found(principal: &str, role: &str, scope: &str) -> DiscoveredAssignment {
    DiscoveredAssignment {
        principal_id: principal.into(),
        role_id: role.into(),
        scope: scope.into(),
    }
}

async fn sync(
    h: &Harness,
    principals: Vec<Principal>,
    discovered: Vec<DiscoveredAssignment>,
) -> Result<UpsertPrincipalsResponse, tonic::Status> {
    Ok(h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .upsert_principals(UpsertPrincipalsRequest {
            principals,
            discovered_assignments: discovered,
            ..Default::default()
        })
        .await?
        .into_inner())
}

async fn schedules_of(h: &Harness, principal: &str) -> anyhow::Result<Vec<Schedule>> {
    Ok(h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .list_schedules(ListSchedulesRequest {
            role_id: ROLE.into(),
            scope: "/".into(),
            include_descendants: true,
            principal_id: principal.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .schedules)
}

async fn discovered_rows(h: &Harness) -> anyhow::Result<i64> {
    count(
        h.service(ServiceName::Assignment).db(),
        "SELECT COUNT(*) AS n FROM schedules WHERE origin = 'discovered'",
    )
    .await
}

/// The schedules announced by `assignment.schedule_created` with origin `Discovered`.
async fn discovered_announcements(h: &Harness) -> anyhow::Result<Vec<String>> {
    let db = h.service(ServiceName::Assignment).db();
    let rows = db
        .query_all_raw(pim_db::stmt(
            db,
            "SELECT envelope FROM outbox WHERE event_type = 'assignment.schedule_created' ORDER BY id",
            [],
        ))
        .await?;
    let mut found = Vec::new();
    for row in rows {
        let envelope: Vec<u8> = row.try_get("", "envelope")?;
        let event = pim_proto::events::v1::Event::decode(envelope.as_slice())?;
        let created = ScheduleCreated::decode(event.payload.unwrap_or_default().value.as_slice())?;
        let schedule = created.schedule.unwrap_or_default();
        if schedule.origin() == ScheduleOrigin::Discovered {
            found.push(schedule.id);
        }
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_assignment_is_real_access_until_brought_under_management()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    let admin = h.client(ServiceName::Assignment, &h.mfa_token(ADMIN));
    assert!(!check_access(&admin, "dora", SCOPE).await?.allowed);

    let first = sync(&h, vec![], vec![found("dora", ROLE, SCOPE)]).await?;
    assert_eq!(first.discovered, 1);
    let schedules = schedules_of(&h, "dora").await?;
    assert_eq!(schedules.len(), 1);
    let standing = &schedules[0];
    assert_eq!(standing.origin(), ScheduleOrigin::Discovered);
    assert_eq!(standing.kind(), ScheduleKind::Active);
    assert!(standing.end_time.is_none(), "standing access is permanent");
    let access = check_access(&admin, "dora", SCOPE).await?;
    assert!(access.allowed, "discovered access is real access");
    assert!(access.explanation.contains(&standing.id));
    assert_eq!(
        discovered_announcements(&h).await?,
        vec![standing.id.clone()],
        "announced once, as discovered"
    );

    // The sync reports it again on every run: nothing new.
    let again = sync(&h, vec![], vec![found("dora", ROLE, SCOPE)]).await?;
    assert_eq!(again.discovered, 0);
    assert_eq!(again.revision, first.revision, "no write, no new revision");
    assert_eq!(discovered_rows(&h).await?, 1);
    assert_eq!(discovered_announcements(&h).await?.len(), 1);

    // A dry run of the conversion answers and changes nothing.
    let convert = |validate_only| AssignmentServiceConvertScheduleRequest {
        schedule_id: standing.id.clone(),
        target_kind: ScheduleKind::Eligible.into(),
        justification: "bring under PIM".into(),
        validate_only,
    };
    let dry = admin
        .assignment()
        .convert_schedule(convert(true))
        .await?
        .into_inner();
    assert_eq!(
        dry.schedule.as_ref().map(Schedule::kind),
        Some(ScheduleKind::Eligible)
    );
    assert!(check_access(&admin, "dora", SCOPE).await?.allowed);
    assert_eq!(discovered_rows(&h).await?, 1);

    let managed = admin
        .assignment()
        .convert_schedule(convert(false))
        .await?
        .into_inner()
        .schedule
        .unwrap_or_default();
    assert_eq!(managed.kind(), ScheduleKind::Eligible);
    assert_eq!(managed.origin(), ScheduleOrigin::Assigned);
    let dry = dry.schedule.unwrap_or_default();
    assert_eq!(
        (dry.principal_id, dry.start_time, dry.end_time),
        (
            managed.principal_id.clone(),
            managed.start_time,
            managed.end_time
        ),
        "the dry run answered what the real call did"
    );
    let access = check_access(&admin, "dora", SCOPE).await?;
    assert!(!access.allowed, "eligible now, so no standing access");
    assert!(
        access.explanation.contains("eligible"),
        "{}",
        access.explanation
    );
    assert_eq!(discovered_rows(&h).await?, 0);

    // A later sync that still reports the assignment finds no active one, so it is standing
    // access again, and discovered again: the identity provider is the truth.
    let relapse = sync(&h, vec![], vec![found("dora", ROLE, SCOPE)]).await?;
    assert_eq!(relapse.discovered, 1);

    // The rollback path: eligible back to active.
    let active = admin
        .assignment()
        .convert_schedule(AssignmentServiceConvertScheduleRequest {
            schedule_id: managed.id.clone(),
            target_kind: ScheduleKind::Active.into(),
            justification: "roll back".into(),
            validate_only: false,
        })
        .await;
    assert_eq!(
        active.as_ref().err().map(reason),
        Some("DUPLICATE_SCHEDULE".to_owned()),
        "dora holds it as active again, so the eligible one cannot become a second active: {active:?}"
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_discovery_refuses_the_whole_batch_and_writes_nothing() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let alice = Principal {
        id: "alice".into(),
        r#type: PrincipalType::User.into(),
        display_name: "Alice".into(),
        enabled: true,
        ..Default::default()
    };
    let refused = sync(
        &h,
        vec![alice.clone()],
        vec![
            found("alice", ROLE, SCOPE),
            found("alice", "no-such-role", SCOPE),
            found("bob", ROLE, "not a scope"),
        ],
    )
    .await
    .expect_err("a batch naming an unknown role and a malformed scope is refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let violations = field_violations(&refused);
    assert!(
        violations.contains(&"discovered_assignments[2].scope".to_owned()),
        "{violations:?}"
    );
    assert_eq!(discovered_rows(&h).await?, 0);
    assert_eq!(
        count(
            h.service(ServiceName::Assignment).db(),
            "SELECT COUNT(*) AS n FROM principals WHERE id = 'alice'",
        )
        .await?,
        0,
        "nothing of the batch is written"
    );
    let unknown_role = sync(
        &h,
        vec![alice],
        vec![
            found("alice", ROLE, SCOPE),
            found("alice", "no-such-role", SCOPE),
        ],
    )
    .await
    .expect_err("an unknown role is refused");
    assert_eq!(unknown_role.code(), Code::InvalidArgument);
    assert_eq!(
        field_violations(&unknown_role),
        vec!["discovered_assignments[1].role_id".to_owned()]
    );
    assert_eq!(discovered_rows(&h).await?, 0);

    // Only admins at `/` sync.
    let plain = h
        .client(ServiceName::Assignment, &h.mfa_token("mallory"))
        .assignment()
        .upsert_principals(UpsertPrincipalsRequest {
            discovered_assignments: vec![found("mallory", ROLE, "/")],
            ..Default::default()
        })
        .await
        .expect_err("a plain user cannot report standing access");
    assert_eq!(plain.code(), Code::PermissionDenied);
    assert_eq!(discovered_rows(&h).await?, 0);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_standing_access_and_brings_it_under_management() -> anyhow::Result<()> {
    use pim_cli::admin::{AdminCommand, Kind, Output, run};
    let h = Harness::start().await?;
    let admin = h.client(ServiceName::Assignment, &h.mfa_token(ADMIN));
    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    sync(
        &h,
        vec![Principal {
            id: "dora".into(),
            r#type: PrincipalType::User.into(),
            display_name: "Dora".into(),
            email: "dora@example.com".into(),
            enabled: true,
            guest: true,
            ..Default::default()
        }],
        vec![found("dora", ROLE, SCOPE)],
    )
    .await?;
    let who = run(
        AdminCommand::Principal { id: "dora".into() },
        &admin,
        Output::Json,
        now,
    )
    .await?;
    let who: serde_json::Value = serde_json::from_str(&who)?;
    assert_eq!(
        (&who["email"], &who["guest"], &who["break_glass"]),
        (&"dora@example.com".into(), &true.into(), &false.into())
    );
    let assignments = || AdminCommand::Assignments {
        principal: "dora".into(),
    };
    let table = run(assignments(), &admin, Output::Table, now).await?;
    assert!(table.contains("discovered (outside PIM)"), "{table}");
    assert!(table.contains("Security Administrator"), "{table}");
    let listed: serde_json::Value =
        serde_json::from_str(&run(assignments(), &admin, Output::Json, now).await?)?;
    let source = listed[0]["source"].as_str().unwrap_or_default().to_owned();
    let schedule = source
        .strip_prefix("schedule:")
        .expect("a schedule is the source")
        .to_owned();
    let convert = |dry_run| AdminCommand::Convert {
        schedule: schedule.clone(),
        to: Kind::Eligible,
        justification: "managed by PIM from now on".into(),
        dry_run,
    };
    let dry = run(convert(true), &admin, Output::Table, now).await?;
    assert!(dry.contains("(dry run: nothing written)"), "{dry}");
    assert!(
        run(assignments(), &admin, Output::Table, now)
            .await?
            .contains("discovered"),
        "a dry run changes nothing"
    );
    run(convert(false), &admin, Output::Table, now).await?;
    let after: serde_json::Value =
        serde_json::from_str(&run(assignments(), &admin, Output::Json, now).await?)?;
    assert_eq!(
        (&after[0]["state"], &after[0]["origin"]),
        (&"eligible".into(), &"assigned".into())
    );
    h.stop().await;
    Ok(())
}
