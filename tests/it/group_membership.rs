//! PIM for Groups: eligibility for Group Member at `/groups/G`, activated, makes P a member of
//! G for the window, so P holds G's assignments for that window only, to the millisecond.

use pim_client::roles::GROUP_MEMBER;
use pim_config::ServiceName;
use pim_proto::{
    activation::v1::RequestStatus,
    assignment::v1::{
        CheckAccessRequest, CreateActiveScheduleRequest, CreateEligibilityScheduleRequest,
        ListGroupsOfRequest,
    },
    millis_from_timestamp, timestamp_from_millis,
};
use pim_testkit::{ADMIN, Harness};

use crate::support::{ROLE, SCOPE, activation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activated_group_membership_grants_the_groups_roles_for_its_window_only()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    let admin = h.client(ServiceName::Assignment, &h.mfa_token(ADMIN));
    // The group holds the role; alice may join the group just in time.
    admin
        .assignment()
        .create_active_schedule(CreateActiveScheduleRequest {
            request_id: "ops-holds".into(),
            principal_id: "g-ops".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            justification: "the on-call group".into(),
            ..Default::default()
        })
        .await?;
    admin
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "alice-may-join".into(),
            principal_id: "alice".into(),
            role_id: GROUP_MEMBER.into(),
            scope: "/groups/g-ops".into(),
            justification: "on-call rotation".into(),
            ..Default::default()
        })
        .await?;
    let check = |at: Option<i64>| CheckAccessRequest {
        principal_id: "alice".into(),
        role_id: ROLE.into(),
        scope: SCOPE.into(),
        at: at.map(timestamp_from_millis),
        ..Default::default()
    };
    let before = admin
        .assignment()
        .check_access(check(None))
        .await?
        .into_inner();
    assert!(!before.allowed, "not a member yet: {}", before.explanation);

    let joined = h
        .client(ServiceName::Activation, &h.mfa_token("alice"))
        .activation()
        .submit(pim_proto::activation::v1::SubmitRequest {
            role_id: GROUP_MEMBER.into(),
            scope: "/groups/g-ops".into(),
            ..activation("join-ops", 60)
        })
        .await?
        .into_inner()
        .request
        .unwrap_or_default();
    assert_eq!(joined.status(), RequestStatus::Provisioned);
    let end = joined
        .end_time
        .as_ref()
        .map(millis_from_timestamp)
        .expect("a window has an end");

    let during = admin
        .assignment()
        .check_access(check(None))
        .await?
        .into_inner();
    assert!(during.allowed, "{}", during.explanation);
    assert!(
        during.explanation.contains("group g-ops"),
        "explains the path: {}",
        during.explanation
    );
    assert_eq!(
        during.valid_until.as_ref().map(millis_from_timestamp),
        Some(end),
        "the group holds the role permanently; alice only while she is a member"
    );
    let last = admin
        .assignment()
        .check_access(check(Some(end - 1)))
        .await?
        .into_inner();
    assert!(last.allowed, "allowed at end - 1 ms");
    let after = admin
        .assignment()
        .check_access(check(Some(end)))
        .await?
        .into_inner();
    assert!(!after.allowed, "denied at end: {}", after.explanation);

    let groups_at = |at: i64| ListGroupsOfRequest {
        principal_id: "alice".into(),
        at: Some(timestamp_from_millis(at)),
    };
    let member = admin
        .assignment()
        .list_groups_of(groups_at(end - 1))
        .await?
        .into_inner()
        .groups;
    assert_eq!(
        member.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
        ["g-ops"]
    );
    let gone = admin
        .assignment()
        .list_groups_of(groups_at(end))
        .await?
        .into_inner()
        .groups;
    assert!(gone.is_empty(), "{gone:?}");

    // Bob, never a member, gains nothing from alice's membership.
    let bob = admin
        .assignment()
        .check_access(CheckAccessRequest {
            principal_id: "bob".into(),
            ..check(None)
        })
        .await?
        .into_inner();
    assert!(!bob.allowed);
    h.stop().await;
    Ok(())
}
