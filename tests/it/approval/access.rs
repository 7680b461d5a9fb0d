//! Who may decide: only the approvers of the current stage, never the requestor (not even
//! through a group), only while enabled and still in the group they qualified through. Only
//! the activation context opens and cancels cases.

use pim_config::ServiceName;
use pim_proto::approval::v1::{CancelCaseRequest, CaseStatus, Decision, GetCaseRequest};
use pim_testkit::ADMIN;
use tonic::Code;

use super::{
    as_person, case_rows, decide, directory, group, harness, open, open_request, rule, stage, users,
};
use crate::support::reason;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_current_approvers_decide_and_never_the_requestor() -> anyhow::Result<()> {
    let h = harness().await?;
    directory(
        &h,
        &["alice", "bob", "carol", "gina"],
        &[("approvers", &["alice", "bob", "gina"])],
    )
    .await?;
    let mut approvers = group("approvers");
    approvers.extend(users(&["alice"]));
    let case = open(
        &h,
        open_request("req-a", "alice", rule(vec![stage(approvers, 1)])),
    )
    .await?;
    assert!(
        case.stages[0]
            .approvers
            .iter()
            .all(|a| a.principal_id != "alice"),
        "the requestor is never recorded as an approver"
    );
    let other = open(
        &h,
        open_request("req-b", "zoe", rule(vec![stage(users(&["carol"]), 1)])),
    )
    .await?;

    let refusals = [
        ("alice", "SELF_APPROVAL"),
        ("mallory", "NOT_AN_APPROVER"),
        ("carol", "NOT_AN_APPROVER"),
        (ADMIN, "NOT_AN_APPROVER"),
    ];
    for (who, expected) in refusals {
        let refused = decide(&h, who, &case.id, Decision::Approve)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{who}");
        assert_eq!(reason(&refused), expected, "{who}");
    }

    // Gina leaves the group after the case opened: her entry no longer qualifies her.
    directory(&h, &[], &[("approvers", &["alice", "bob"])]).await?;
    let removed = decide(&h, "gina", &case.id, Decision::Approve)
        .await
        .unwrap_err();
    assert_eq!(reason(&removed), "NOT_AN_APPROVER");

    // A disabled approver cannot decide either.
    h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .upsert_principals(pim_proto::assignment::v1::UpsertPrincipalsRequest {
            principals: vec![pim_proto::assignment::v1::Principal {
                id: "carol".into(),
                r#type: pim_proto::assignment::v1::PrincipalType::User.into(),
                display_name: "carol".into(),
                enabled: false,
                ..Default::default()
            }],
            groups: vec![],
            ..Default::default()
        })
        .await?;
    let disabled = decide(&h, "carol", &other.id, Decision::Approve)
        .await
        .unwrap_err();
    assert_eq!(reason(&disabled), "NOT_AN_APPROVER");

    // A service is not a person.
    let service = h
        .client(
            ServiceName::Approval,
            &h.service_token(ServiceName::Activation),
        )
        .approval()
        .decide(pim_proto::approval::v1::DecideRequest {
            case_id: case.id.clone(),
            decision: Decision::Approve.into(),
            justification: "automated".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(service.code(), Code::PermissionDenied);

    // Nobody's refusal changed the case; bob, still in the group, decides it.
    let approved = decide(&h, "bob", &case.id, Decision::Approve).await?;
    assert_eq!(approved.status(), CaseStatus::Approved);
    assert_eq!(
        approved.history.len(),
        4,
        "opened, approved, stage_completed, case_approved"
    );

    // A stranger cannot even see the case; its requestor and its approvers can.
    let hidden = as_person(&h, "mallory")
        .approval()
        .get_case(GetCaseRequest {
            case_id: case.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    for who in ["alice", "bob", ADMIN] {
        as_person(&h, who)
            .approval()
            .get_case(GetCaseRequest {
                case_id: case.id.clone(),
            })
            .await?;
    }
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_that_needs_the_requestor_is_refused_at_opening_and_nothing_is_written()
-> anyhow::Result<()> {
    let h = harness().await?;
    directory(&h, &["alice", "bob"], &[("pair", &["alice", "bob"])]).await?;
    for approvers in [users(&["alice", "bob"]), group("pair")] {
        let refused = open(
            &h,
            open_request("req-u", "alice", rule(vec![stage(approvers, 2)])),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(reason(&refused), "APPROVAL_UNSATISFIABLE");
    }
    assert_eq!(case_rows(&h).await?, 0);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_activation_service_opens_and_cancels_cases() -> anyhow::Result<()> {
    let h = harness().await?;
    let case = open(
        &h,
        open_request("req-s", "alice", rule(vec![stage(users(&["bob"]), 1)])),
    )
    .await?;
    for token in [
        h.service_token(ServiceName::Audit),
        h.service_token(ServiceName::Assignment),
        h.mfa_token(ADMIN),
        h.token("alice"),
    ] {
        let client = h.client(ServiceName::Approval, &token);
        let opened = client
            .approval_internal()
            .open_case(open_request(
                "req-t",
                "alice",
                rule(vec![stage(users(&["bob"]), 1)]),
            ))
            .await
            .unwrap_err();
        assert_eq!(opened.code(), Code::PermissionDenied);
        let canceled = client
            .approval_internal()
            .cancel_case(CancelCaseRequest {
                case_id: case.id.clone(),
                request_id: "req-s".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(canceled.code(), Code::PermissionDenied);
    }
    // Canceling needs the case's own request id.
    let activation = h.client(
        ServiceName::Approval,
        &h.service_token(ServiceName::Activation),
    );
    let mismatched = activation
        .approval_internal()
        .cancel_case(CancelCaseRequest {
            case_id: case.id.clone(),
            request_id: "someone-else".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(mismatched.code(), Code::NotFound);
    let still = decide(&h, "bob", &case.id, Decision::Approve).await?;
    assert_eq!(still.status(), CaseStatus::Approved);
    h.stop().await;
    Ok(())
}
