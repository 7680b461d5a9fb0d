//! The directory: an idempotent sync, groups as holders, and a disabled principal losing all
//! access at once.

use pim_config::ServiceName;
use pim_proto::{
    activation::v1::RequestStatus,
    assignment::v1::{
        CreateEligibilityScheduleRequest, GroupMembers, ListGroupMembersRequest,
        ListGroupsOfRequest, Principal, PrincipalType, UpsertPrincipalsRequest,
    },
};
use pim_testkit::{ADMIN, Harness};
use sea_orm::ConnectionTrait as _;
use tonic::Code;

use crate::{
    bad_input::count,
    support::{ROLE, SCOPE, activate, check_access, make_eligible},
};

fn user(id: &str, enabled: bool) -> Principal {
    Principal {
        id: id.into(),
        r#type: PrincipalType::User.into(),
        display_name: id.to_uppercase(),
        email: format!("{id}@example.com"),
        enabled,
        ..Default::default()
    }
}

fn group(id: &str) -> Principal {
    Principal {
        id: id.into(),
        r#type: PrincipalType::Group.into(),
        display_name: id.into(),
        enabled: true,
        ..Default::default()
    }
}

async fn sync(
    h: &Harness,
    principals: Vec<Principal>,
    groups: Vec<GroupMembers>,
) -> anyhow::Result<pim_proto::assignment::v1::UpsertPrincipalsResponse> {
    Ok(h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .upsert_principals(UpsertPrincipalsRequest {
            principals,
            groups,
            ..Default::default()
        })
        .await?
        .into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_is_idempotent_and_a_disabled_principal_loses_access_at_once() -> anyhow::Result<()>
{
    let h = Harness::start().await?;
    let first = sync(&h, vec![user("alice", true), user("bob", true)], vec![]).await?;
    assert_eq!((first.created, first.updated, first.unchanged), (2, 0, 0));
    let db = h.service(ServiceName::Assignment).db().clone();
    let events = count(&db, "SELECT COUNT(*) AS n FROM outbox").await?;
    let again = sync(&h, vec![user("alice", true), user("bob", true)], vec![]).await?;
    assert_eq!((again.created, again.updated, again.unchanged), (0, 0, 2));
    assert_eq!(
        again.revision, first.revision,
        "nothing changed, no new revision"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) AS n FROM outbox").await?,
        events,
        "and no new events"
    );

    make_eligible(&h, "alice", "alice-eligible").await?;
    let granted = activate(
        &h.client(ServiceName::Activation, &h.mfa_token("alice")),
        "a-1",
        60,
    )
    .await?;
    assert_eq!(
        granted.request.unwrap().status(),
        RequestStatus::Provisioned
    );
    let checker = h.client(ServiceName::Assignment, &h.token("alice"));
    assert!(check_access(&checker, "alice", SCOPE).await?.allowed);

    let disabled = sync(&h, vec![user("alice", false)], vec![]).await?;
    assert_eq!(disabled.updated, 1);
    let denied = check_access(&checker, "alice", SCOPE).await?;
    assert!(!denied.allowed);
    assert!(
        denied.explanation.contains("disabled"),
        "{}",
        denied.explanation
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'assignment.principal_disabled'"
        )
        .await?,
        1
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_activates_the_groups_eligibility_and_loses_it_with_the_membership()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    sync(
        &h,
        vec![user("alice", true), group("oncall")],
        vec![GroupMembers {
            group_id: "oncall".into(),
            member_ids: vec!["alice".into()],
        }],
    )
    .await?;
    make_eligible(&h, "oncall", "group-eligible").await?;

    let alice = h.client(ServiceName::Assignment, &h.token("alice"));
    let groups = alice
        .assignment()
        .list_groups_of(ListGroupsOfRequest {
            principal_id: "alice".into(),
            at: None,
        })
        .await?
        .into_inner();
    assert_eq!(
        groups
            .groups
            .iter()
            .map(|g| g.id.as_str())
            .collect::<Vec<_>>(),
        ["oncall"]
    );
    let status = alice
        .assignment()
        .list_group_members(ListGroupMembersRequest {
            group_id: "oncall".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "listing a group's members needs a reader role"
    );
    let members = h
        .client(
            ServiceName::Assignment,
            &h.service_token(ServiceName::Approval),
        )
        .assignment()
        .list_group_members(ListGroupMembersRequest {
            group_id: "oncall".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        members
            .members
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>(),
        ["alice"]
    );

    // Eligible through the group, alice activates; her window holds while she is a member.
    let granted = activate(
        &h.client(ServiceName::Activation, &h.mfa_token("alice")),
        "g-1",
        60,
    )
    .await?;
    assert_eq!(
        granted.request.unwrap().status(),
        RequestStatus::Provisioned
    );
    assert!(check_access(&alice, "alice", SCOPE).await?.allowed);

    let change = sync(
        &h,
        vec![],
        vec![GroupMembers {
            group_id: "oncall".into(),
            member_ids: vec![],
        }],
    )
    .await?;
    assert_eq!(change.memberships_changed, 1);
    assert!(
        !check_access(&alice, "alice", SCOPE).await?.allowed,
        "the window ended with the membership"
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_holding_an_eligibility_makes_no_non_member_eligible() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    sync(
        &h,
        vec![group("oncall")],
        vec![GroupMembers {
            group_id: "oncall".into(),
            member_ids: vec!["alice".into()],
        }],
    )
    .await?;
    h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "g".into(),
            principal_id: "oncall".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            ..Default::default()
        })
        .await?;
    let refused = activate(
        &h.client(ServiceName::Activation, &h.mfa_token("bob")),
        "b-1",
        30,
    )
    .await
    .unwrap_err();
    let status = refused.downcast_ref::<tonic::Status>().unwrap();
    assert_eq!(status.code(), Code::FailedPrecondition);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_that_disables_the_last_global_administrator_is_applied_and_flagged()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    sync(&h, vec![user(ADMIN, true)], vec![]).await?;
    let change = sync(&h, vec![user(ADMIN, false)], vec![]).await?;
    assert_eq!(change.updated, 1, "the identity provider is the truth");
    let db = h.service(ServiceName::Assignment).db().clone();
    let row = db
        .query_one_raw(pim_db::stmt(
            &db,
            "SELECT envelope FROM outbox WHERE event_type = 'assignment.principal_disabled'",
            [],
        ))
        .await?
        .unwrap();
    let envelope: Vec<u8> = row.try_get("", "envelope")?;
    let event = <pim_proto::events::v1::Event as prost::Message>::decode(envelope.as_slice())?;
    let payload = <pim_proto::assignment::v1::PrincipalDisabled as prost::Message>::decode(
        event.payload.unwrap().value.as_slice(),
    )?;
    assert!(
        payload.last_global_admin,
        "flagged as the high-severity case"
    );
    assert!(
        payload.principal.unwrap().break_glass,
        "the break-glass flag comes from configuration"
    );
    h.stop().await;
    Ok(())
}
