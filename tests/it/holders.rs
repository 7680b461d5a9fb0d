//! Who holds a role here, and which schedules a role has: what reviews and admins list.

use pim_config::ServiceName;
use pim_proto::assignment::v1::{
    CreateActiveScheduleRequest, GroupMembers, ListRoleHoldersRequest, ListSchedulesRequest,
    MemberType, Principal, PrincipalType, ScheduleKind, UpsertPrincipalsRequest,
};
use pim_testkit::{ADMIN, Harness};
use tonic::Code;

use crate::support::{ROLE, SCOPE, activate, make_eligible};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_holders_include_group_members_active_assignees_and_activated_windows()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    let mut admin = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment();
    admin
        .upsert_principals(UpsertPrincipalsRequest {
            principals: vec![Principal {
                id: "oncall".into(),
                r#type: PrincipalType::Group.into(),
                enabled: true,
                ..Default::default()
            }],
            groups: vec![GroupMembers {
                group_id: "oncall".into(),
                member_ids: vec!["alice".into(), "bob".into()],
            }],
            ..Default::default()
        })
        .await?;
    for (principal, scope) in [
        ("oncall", "/"),
        ("carol", SCOPE),
        ("erin", "/administrativeUnits"),
    ] {
        admin
            .create_active_schedule(CreateActiveScheduleRequest {
                request_id: principal.into(),
                principal_id: principal.into(),
                role_id: ROLE.into(),
                scope: scope.into(),
                justification: "standing duty".into(),
                ..Default::default()
            })
            .await?;
    }
    make_eligible(&h, "dave", "dave").await?;
    activate(
        &h.client(ServiceName::Activation, &h.mfa_token("dave")),
        "d",
        30,
    )
    .await?;

    let mut approval = h
        .client(
            ServiceName::Assignment,
            &h.service_token(ServiceName::Approval),
        )
        .assignment();
    let holders = approval
        .list_role_holders(ListRoleHoldersRequest {
            role_id: ROLE.into(),
            scope: SCOPE.into(),
        })
        .await?
        .into_inner()
        .holders;
    let mut seen: Vec<(String, MemberType, String, String)> = holders
        .iter()
        .map(|h| {
            (
                h.principal_id.clone(),
                h.member_type(),
                h.group_id.clone(),
                h.scope.clone(),
            )
        })
        .collect();
    seen.sort();
    let held =
        |p: &str, t: MemberType, g: &str, s: &str| (p.to_owned(), t, g.to_owned(), s.to_owned());
    assert_eq!(
        seen,
        [
            held("alice", MemberType::Group, "oncall", "/"),
            held("bob", MemberType::Group, "oncall", "/"),
            held("carol", MemberType::Direct, "", SCOPE),
            held("dave", MemberType::Direct, "", SCOPE),
            held("erin", MemberType::Inherited, "", "/administrativeUnits"),
        ]
    );
    assert!(
        holders
            .iter()
            .find(|h| h.principal_id == "dave")
            .unwrap()
            .via
            .starts_with("window:")
    );

    let list = |kind: ScheduleKind, include_descendants: bool| ListSchedulesRequest {
        role_id: ROLE.into(),
        scope: "/".into(),
        include_descendants,
        kind: kind.into(),
        page_size: 2,
        page_token: String::new(),
        principal_id: String::new(),
    };
    let first = approval
        .list_schedules(list(ScheduleKind::Unspecified, true))
        .await?
        .into_inner();
    assert_eq!(first.schedules.len(), 2);
    let rest = approval
        .list_schedules(ListSchedulesRequest {
            page_token: first.next_page_token,
            ..list(ScheduleKind::Unspecified, true)
        })
        .await?
        .into_inner();
    assert_eq!(
        rest.schedules.len(),
        2,
        "group, carol, erin and dave's eligibility, over two pages"
    );
    let eligible = approval
        .list_schedules(list(ScheduleKind::Eligible, true))
        .await?
        .into_inner();
    assert_eq!(
        eligible
            .schedules
            .iter()
            .map(|s| s.principal_id.as_str())
            .collect::<Vec<_>>(),
        ["dave"]
    );
    let at_root = approval
        .list_schedules(list(ScheduleKind::Unspecified, false))
        .await?
        .into_inner();
    assert_eq!(
        at_root
            .schedules
            .iter()
            .map(|s| s.principal_id.as_str())
            .collect::<Vec<_>>(),
        ["oncall"]
    );

    let status = h
        .client(ServiceName::Assignment, &h.token("mallory"))
        .assignment()
        .list_role_holders(ListRoleHoldersRequest {
            role_id: ROLE.into(),
            scope: SCOPE.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_sees_what_it_holds_directly_through_groups_and_by_activation()
-> anyhow::Result<()> {
    use pim_proto::assignment::v1::{AssignmentState, ListEffectiveAssignmentsRequest};
    let h = Harness::start().await?;
    let mut admin = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment();
    admin
        .upsert_principals(UpsertPrincipalsRequest {
            principals: vec![Principal {
                id: "oncall".into(),
                r#type: PrincipalType::Group.into(),
                enabled: true,
                ..Default::default()
            }],
            groups: vec![GroupMembers {
                group_id: "oncall".into(),
                member_ids: vec!["alice".into()],
            }],
            ..Default::default()
        })
        .await?;
    admin
        .create_active_schedule(CreateActiveScheduleRequest {
            request_id: "group".into(),
            principal_id: "oncall".into(),
            role_id: pim_client::roles::GLOBAL_READER.into(),
            scope: "/".into(),
            justification: "read-only duty".into(),
            ..Default::default()
        })
        .await?;
    make_eligible(&h, "alice", "alice").await?;
    activate(
        &h.client(ServiceName::Activation, &h.mfa_token("alice")),
        "a",
        30,
    )
    .await?;

    let mine = h
        .client(ServiceName::Assignment, &h.token("alice"))
        .assignment()
        .list_effective_assignments(ListEffectiveAssignmentsRequest {
            principal_id: "alice".into(),
        })
        .await?
        .into_inner()
        .assignments;
    let mut seen: Vec<(String, AssignmentState, MemberType)> = mine
        .iter()
        .map(|a| (a.role_id.clone(), a.state(), a.member_type()))
        .collect();
    seen.sort();
    let mut expected = vec![
        (
            pim_client::roles::GLOBAL_READER.to_owned(),
            AssignmentState::Permanent,
            MemberType::Group,
        ),
        (
            ROLE.to_owned(),
            AssignmentState::Eligible,
            MemberType::Direct,
        ),
        (
            ROLE.to_owned(),
            AssignmentState::Activated,
            MemberType::Direct,
        ),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    let status = h
        .client(ServiceName::Assignment, &h.token("mallory"))
        .assignment()
        .list_effective_assignments(ListEffectiveAssignmentsRequest {
            principal_id: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "another principal's assignments need a reader role"
    );
    h.stop().await;
    Ok(())
}
