//! The last Global Administrator stays, only routed reviewers decide, only admins define, and
//! bad definitions write nothing.

use std::time::Duration;

use pim_config::ServiceName;
use pim_proto::{
    approval::v1::{
        DecideReviewItemsRequest, DefaultDecision, ReviewDecision, ReviewDefinition,
        ReviewInstanceStatus, ReviewItemDecision, ReviewRecurrence, ReviewerKind,
    },
    assignment::v1::{Principal, PrincipalType, UpsertPrincipalsRequest},
};
use pim_testkit::ADMIN;
use tonic::Code;
use tonic_types::StatusExt as _;

use super::{
    DAY_MS, advance, approval, await_instances, define, ga_review, global_admin, instances,
    is_global_admin, items,
};
use crate::{
    approval::users,
    bad_input::count,
    support::{ROLE, SCOPE, make_eligible, reason},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_never_removes_the_last_global_administrator() -> anyhow::Result<()> {
    let h = crate::approval::harness().await?;
    global_admin(&h, "gina").await?;
    let definition = define(&h, ADMIN, ga_review(DefaultDecision::Deny)).await?;
    await_instances(&h, ADMIN, &definition.id, 1).await?;
    // The break-glass account is disabled: gina is the last enabled Global Administrator.
    h.client(ServiceName::Assignment, &h.mfa_token("gina"))
        .assignment()
        .upsert_principals(UpsertPrincipalsRequest {
            principals: vec![Principal {
                id: ADMIN.into(),
                r#type: PrincipalType::User.into(),
                display_name: "break glass".into(),
                enabled: false,
                ..Default::default()
            }],
            groups: vec![],
            ..Default::default()
        })
        .await?;
    advance(&h, 3 * DAY_MS);
    h.eventually(Duration::from_secs(30), || async {
        let all = instances(&h, "gina", &definition.id).await?;
        Ok((all[0].status() == ReviewInstanceStatus::Applied).then_some(all))
    })
    .await?;
    let item = items(&h, "gina", "").await?;
    assert!(item.is_empty(), "the instance is over");
    let all = instances(&h, "gina", &definition.id).await?;
    let done = items(&h, "gina", &all[0].id).await?;
    assert_eq!(done[0].decision(), ReviewDecision::Deny);
    assert!(!done[0].applied);
    assert_eq!(done[0].apply_result, "not applied: LAST_GLOBAL_ADMIN");
    assert!(is_global_admin(&h, "gina").await?);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_routed_reviewers_decide_and_only_admins_define() -> anyhow::Result<()> {
    let h = crate::approval::harness().await?;
    make_eligible(&h, "alice", "alice-eligible").await?;
    make_eligible(&h, "carol", "carol-eligible").await?;
    let named = ReviewDefinition {
        display_name: "Security Administrators of au-1".into(),
        role_ids: vec![ROLE.into()],
        scope: SCOPE.into(),
        include_eligible: true,
        reviewer_kind: ReviewerKind::Named.into(),
        reviewers: users(&["rita"]),
        recurrence: ReviewRecurrence::OneTime.into(),
        instance_duration_days: 7,
        ..Default::default()
    };
    let refused = define(&h, "carol", named.clone()).await.unwrap_err();
    assert_eq!(reason(&refused), "NOT_AUTHORIZED");
    let definition = define(&h, ADMIN, named).await?;
    let instance = await_instances(&h, ADMIN, &definition.id, 1).await?;
    let all = items(&h, ADMIN, &instance.id).await?;
    let alice_item = all.iter().find(|i| i.principal_id == "alice").unwrap();
    assert_eq!(alice_item.reviewer_ids, ["rita"]);
    let attempt = |item_id: &str| DecideReviewItemsRequest {
        decisions: vec![ReviewItemDecision {
            item_id: item_id.into(),
            decision: ReviewDecision::Deny.into(),
            justification: "not needed".into(),
        }],
    };
    for who in ["carol", "alice", ADMIN] {
        let results = approval(&h, who)
            .approval()
            .decide_review_items(attempt(&alice_item.id))
            .await?
            .into_inner()
            .results;
        assert_eq!(
            (results[0].code.as_str(), results[0].reason.as_str()),
            ("PERMISSION_DENIED", "NOT_A_REVIEWER"),
            "{who}"
        );
    }
    let results = approval(&h, "rita")
        .approval()
        .decide_review_items(attempt(&alice_item.id))
        .await?
        .into_inner()
        .results;
    assert_eq!(results[0].code, "OK");
    // After the end, even rita's change of mind is refused.
    advance(&h, 7 * DAY_MS);
    let late = approval(&h, "rita")
        .approval()
        .decide_review_items(attempt(&alice_item.id))
        .await?
        .into_inner()
        .results;
    assert_eq!(late[0].reason, "DEADLINE_PASSED");
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_name_their_field_and_write_nothing() -> anyhow::Result<()> {
    let h = crate::approval::harness().await?;
    let base = ga_review(DefaultDecision::Deny);
    let cases = [
        (
            "definition.role_ids",
            ReviewDefinition {
                role_ids: vec!["no-such-role".into()],
                ..base.clone()
            },
        ),
        (
            "definition.instance_duration_days",
            ReviewDefinition {
                instance_duration_days: 0,
                ..base.clone()
            },
        ),
        (
            "definition.recurrence",
            ReviewDefinition {
                recurrence: ReviewRecurrence::Unspecified.into(),
                ..base.clone()
            },
        ),
    ];
    for (field, definition) in cases {
        let refused = define(&h, ADMIN, definition).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        let fields: Vec<String> = refused
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        assert_eq!(fields, [field]);
    }
    let db = h.service(ServiceName::Approval).db();
    assert_eq!(
        count(db, "SELECT COUNT(*) AS n FROM review_definitions").await?,
        0
    );
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) AS n FROM outbox WHERE event_type LIKE 'approval.review%'"
        )
        .await?,
        0
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_update_a_definition_and_undecided_reviewers_are_reminded_at_the_midpoint()
-> anyhow::Result<()> {
    use pim_proto::approval::v1::{ReviewReminder, ReviewSettings, UpdateReviewDefinitionRequest};
    use prost::Message as _;

    let h = crate::approval::harness().await?;
    make_eligible(&h, "alice", "alice-eligible").await?;
    let definition = define(
        &h,
        ADMIN,
        ReviewDefinition {
            display_name: "Security Administrators of au-1".into(),
            role_ids: vec![ROLE.into()],
            scope: SCOPE.into(),
            include_eligible: true,
            reviewer_kind: ReviewerKind::Named.into(),
            reviewers: users(&["rita"]),
            recurrence: ReviewRecurrence::OneTime.into(),
            instance_duration_days: 4,
            ..Default::default()
        },
    )
    .await?;
    await_instances(&h, ADMIN, &definition.id, 1).await?;
    let mut changed = definition.clone();
    changed.display_name = "Security Administrators of au-1 (with reminders)".into();
    changed.settings = Some(ReviewSettings {
        reminder_notifications: true,
        ..Default::default()
    });
    changed.role_ids = vec!["ignored".into()];
    let update = |who: &str, definition: ReviewDefinition| {
        let client = approval(&h, who);
        async move {
            client
                .approval()
                .update_review_definition(UpdateReviewDefinitionRequest {
                    definition: Some(definition),
                })
                .await
        }
    };
    let refused = update("rita", changed.clone()).await.unwrap_err();
    assert_eq!(reason(&refused), "NOT_AUTHORIZED");
    let updated = update(ADMIN, changed)
        .await?
        .into_inner()
        .definition
        .unwrap();
    assert_eq!(
        updated.role_ids, definition.role_ids,
        "what is reviewed stays"
    );
    assert!(updated.settings.unwrap().reminder_notifications);

    advance(&h, 2 * DAY_MS);
    let db = h.service(ServiceName::Approval).db().clone();
    let reminder = h
        .eventually(Duration::from_secs(30), || {
            let db = db.clone();
            async move {
                use sea_orm::ConnectionTrait as _;
                let row = db
                    .query_one_raw(pim_db::stmt(
                        &db,
                        "SELECT envelope FROM outbox WHERE event_type = 'approval.review_reminder'",
                        [],
                    ))
                    .await?;
                Ok(row
                    .map(|r| r.try_get::<Vec<u8>>("", "envelope"))
                    .transpose()?)
            }
        })
        .await?;
    let envelope = pim_proto::events::v1::Event::decode(reminder.as_slice())?;
    let payload = ReviewReminder::decode(envelope.payload.unwrap_or_default().value.as_slice())?;
    assert_eq!(payload.reviewer_ids, ["rita"]);
    // Once per instance, however often the timers look: they ran again by the time the
    // instance completes.
    advance(&h, 2 * DAY_MS);
    h.eventually(Duration::from_secs(30), || async {
        let all = super::instances(&h, ADMIN, &definition.id).await?;
        Ok((all[0].status() != ReviewInstanceStatus::InProgress).then_some(()))
    })
    .await?;
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'approval.review_reminder'"
        )
        .await?,
        1
    );
    h.stop().await;
    Ok(())
}
