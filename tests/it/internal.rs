//! Internal commands on a decision: each is open only to the peers named for it, records the
//! decision id, and keeps the invariants.

use pim_config::ServiceName;
use pim_proto::assignment::v1::{
    AssignmentInternalServiceRemoveScheduleRequest, ConvertScheduleRequest,
    CreateActiveScheduleRequest, RemoveSchedulesRequest, RevokeWindowRequest, ScheduleKind,
};
use pim_testkit::{ADMIN, Harness};
use tonic::Code;

use crate::{
    bad_input::count,
    support::{ROLE, SCOPE, activate, check_access, make_eligible, reason},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_revokes_a_window_at_once_and_only_activation_may() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    make_eligible(&h, "alice", "e").await?;
    let granted = activate(
        &h.client(ServiceName::Activation, &h.mfa_token("alice")),
        "a",
        60,
    )
    .await?
    .request
    .unwrap();
    let revoke = RevokeWindowRequest {
        request_id: granted.id.clone(),
        decision_id: "deactivation-1".into(),
    };
    let status = h
        .client(
            ServiceName::Assignment,
            &h.service_token(ServiceName::Audit),
        )
        .assignment_internal()
        .revoke_window(revoke.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let mut activation = h
        .client(
            ServiceName::Assignment,
            &h.service_token(ServiceName::Activation),
        )
        .assignment_internal();
    let first = activation.revoke_window(revoke.clone()).await?.into_inner();
    let again = activation.revoke_window(revoke).await?.into_inner();
    assert_eq!(first.window, again.window, "idempotent");
    assert!(
        !check_access(
            &h.client(ServiceName::Assignment, &h.token("alice")),
            "alice",
            SCOPE
        )
        .await?
        .allowed
    );
    let db = h.service(ServiceName::Assignment).db();
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'assignment.window_revoked'"
        )
        .await?,
        1
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_remove_and_alerts_convert_with_their_decision_ids_and_the_invariant_holds()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    let carol = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .create_active_schedule(CreateActiveScheduleRequest {
            request_id: "carol".into(),
            principal_id: "carol".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            justification: "discovered standing access".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .schedule
        .unwrap();

    // Audit brings it under management: active becomes eligible.
    let convert = ConvertScheduleRequest {
        schedule_id: carol.id.clone(),
        target_kind: ScheduleKind::Eligible.into(),
        decision_id: "incident-7".into(),
    };
    let status = h
        .client(
            ServiceName::Assignment,
            &h.service_token(ServiceName::Approval),
        )
        .assignment_internal()
        .convert_schedule(convert.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut audit = h
        .client(
            ServiceName::Assignment,
            &h.service_token(ServiceName::Audit),
        )
        .assignment_internal();
    let converted = audit
        .convert_schedule(convert)
        .await?
        .into_inner()
        .schedule
        .unwrap();
    assert_eq!(converted.kind(), ScheduleKind::Eligible);
    let checker = h.client(ServiceName::Assignment, &h.token("carol"));
    let now = check_access(&checker, "carol", SCOPE).await?;
    assert!(
        !now.allowed && now.explanation.starts_with("eligible but not active"),
        "{}",
        now.explanation
    );

    // The break-glass Global Administrator cannot be converted away.
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
    let admin_schedule: String = row.try_get("", "id")?;
    let status = audit
        .convert_schedule(ConvertScheduleRequest {
            schedule_id: admin_schedule.clone(),
            target_kind: ScheduleKind::Eligible.into(),
            decision_id: "incident-8".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "LAST_GLOBAL_ADMIN");

    // A review removes carol's eligibility, citing its decision item; a removal without one is refused.
    let mut approval = h
        .client(
            ServiceName::Assignment,
            &h.service_token(ServiceName::Approval),
        )
        .assignment_internal();
    let missing = approval
        .remove_schedule(AssignmentInternalServiceRemoveScheduleRequest {
            schedule_id: carol.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    approval
        .remove_schedule(AssignmentInternalServiceRemoveScheduleRequest {
            schedule_id: carol.id.clone(),
            decision_id: "review-item-3".into(),
            justification: "no longer needed".into(),
        })
        .await?;
    let status = approval
        .remove_schedule(AssignmentInternalServiceRemoveScheduleRequest {
            schedule_id: admin_schedule,
            decision_id: "review-item-4".into(),
            justification: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "LAST_GLOBAL_ADMIN");
    let row = sea_orm::ConnectionTrait::query_one_raw(
        &db,
        pim_db::stmt(
            &db,
            "SELECT envelope FROM outbox WHERE event_type = 'assignment.schedule_removed'",
            [],
        ),
    )
    .await?
    .unwrap();
    let envelope: Vec<u8> = row.try_get("", "envelope")?;
    let event = <pim_proto::events::v1::Event as prost::Message>::decode(envelope.as_slice())?;
    let removed = <pim_proto::assignment::v1::ScheduleRemoved as prost::Message>::decode(
        event.payload.unwrap().value.as_slice(),
    )?;
    assert_eq!(removed.decision_id, "review-item-3");
    assert_eq!(event.actor.unwrap().id, "service:approval");
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_removals_succeeds_or_is_refused_item_by_item_under_one_revision()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    make_eligible(&h, "alice", "e-alice").await?;
    make_eligible(&h, "bob", "e-bob").await?;
    let db = h.service(ServiceName::Assignment).db().clone();
    let id_of = |principal: &'static str| {
        let db = db.clone();
        async move {
            let row = sea_orm::ConnectionTrait::query_one_raw(
                &db,
                pim_db::stmt(
                    &db,
                    "SELECT id FROM schedules WHERE principal_id = $1",
                    [principal.into()],
                ),
            )
            .await?
            .ok_or_else(|| anyhow::anyhow!("no schedule of {principal}"))?;
            anyhow::Ok(row.try_get::<String>("", "id")?)
        }
    };
    let (alice, bob, admin) = (
        id_of("alice").await?,
        id_of("bob").await?,
        id_of(ADMIN).await?,
    );
    let removal =
        |schedule_id: &str, decision_id: &str| AssignmentInternalServiceRemoveScheduleRequest {
            schedule_id: schedule_id.into(),
            decision_id: decision_id.into(),
            justification: "access review: denied".into(),
        };
    let batch = RemoveSchedulesRequest {
        removals: vec![
            removal(&alice, "item-1"),
            removal("no-such-schedule", "item-2"),
            removal(&admin, "item-3"),
            removal(&bob, "item-4"),
        ],
    };
    let refused = h
        .client(
            ServiceName::Assignment,
            &h.service_token(ServiceName::Audit),
        )
        .assignment_internal()
        .remove_schedules(batch.clone())
        .await
        .expect_err("only approval applies review denials in batches");
    assert_eq!(refused.code(), Code::PermissionDenied);

    let before = count(&db, "SELECT value AS n FROM revision WHERE id = 1").await?;
    let answer = h
        .client(
            ServiceName::Assignment,
            &h.service_token(ServiceName::Approval),
        )
        .assignment_internal()
        .remove_schedules(batch)
        .await?
        .into_inner();
    let outcomes: Vec<(bool, &str)> = answer
        .outcomes
        .iter()
        .map(|o| (o.removed, o.reason.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (true, ""),
            (false, "NOT_FOUND"),
            (false, "LAST_GLOBAL_ADMIN"),
            (true, "")
        ]
    );
    assert_eq!(answer.revision, before + 1, "one revision covers the batch");
    assert_eq!(
        count(&db, "SELECT COUNT(*) AS n FROM schedules").await?,
        1,
        "only the break-glass Global Administrator is left"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'assignment.schedule_removed'"
        )
        .await?,
        2,
        "one event per removal"
    );
    let checker = h.client(ServiceName::Assignment, &h.mfa_token(ADMIN));
    let alice_now = check_access(&checker, "alice", SCOPE).await?;
    assert!(
        !alice_now.explanation.starts_with("eligible"),
        "alice's eligibility is gone: {}",
        alice_now.explanation
    );
    h.stop().await;
    Ok(())
}
