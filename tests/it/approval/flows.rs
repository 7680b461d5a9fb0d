//! The flows: one stage where the first responder wins, two stages in series, two of three,
//! escalation, the deadline and its timeout, cancellation, and the queries of each party.

use std::time::Duration;

use pim_config::ServiceName;
use pim_proto::approval::v1::{
    CancelCaseRequest, CaseKind, CaseStatus, DecideBulkRequest, DecideRequest, Decision,
    GetCaseRequest, ListAwaitingMeRequest, ListCasesRequest,
};
use pim_testkit::ADMIN;
use tonic::Code;

use super::{
    HOUR_MS, advance, as_person, decide, directory, events, group, harness, open, open_request,
    rule, stage, users,
};
use crate::support::reason;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stage_the_first_responder_wins_and_the_decision_is_announced() -> anyhow::Result<()> {
    let h = harness().await?;
    let case = open(
        &h,
        open_request(
            "req-1",
            "alice",
            rule(vec![stage(users(&["bob", "carol"]), 1)]),
        ),
    )
    .await?;
    assert_eq!(case.status(), CaseStatus::Pending);
    assert_eq!(case.stages[0].approvers.len(), 2);

    let decided = decide(&h, "bob", &case.id, Decision::Approve).await?;
    assert_eq!(decided.status(), CaseStatus::Approved);
    assert_eq!(decided.decided_by, "bob");
    assert!(decided.decided_at.is_some());

    let late = decide(&h, "carol", &case.id, Decision::Approve)
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(reason(&late), "ALREADY_DECIDED");
    assert_eq!(events(&h, "approval.case_opened").await?, 1);
    assert_eq!(events(&h, "approval.case_decided").await?, 1);

    // Opening again for the same request is answered with the same case.
    let again = open(
        &h,
        open_request("req-1", "alice", rule(vec![stage(users(&["bob"]), 1)])),
    )
    .await?;
    assert_eq!(again.id, case.id);
    assert_eq!(events(&h, "approval.case_opened").await?, 1);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stages_run_in_series_and_a_quorum_of_two_of_three_needs_two() -> anyhow::Result<()> {
    let h = harness().await?;
    let case = open(
        &h,
        open_request(
            "req-2",
            "alice",
            rule(vec![
                stage(users(&["bob", "carol", "dave"]), 2),
                stage(users(&["erin"]), 1),
            ]),
        ),
    )
    .await?;
    // Stage 2's approver cannot act before stage 1 completes.
    let early = decide(&h, "erin", &case.id, Decision::Approve)
        .await
        .unwrap_err();
    assert_eq!(reason(&early), "NOT_AN_APPROVER");

    let one = decide(&h, "bob", &case.id, Decision::Approve).await?;
    assert_eq!((one.current_stage, one.stages[0].approvals), (0, 1));
    let twice = decide(&h, "bob", &case.id, Decision::Approve)
        .await
        .unwrap_err();
    assert_eq!(reason(&twice), "ALREADY_DECIDED");
    advance(&h, HOUR_MS);
    let two = decide(&h, "carol", &case.id, Decision::Approve).await?;
    assert_eq!(two.current_stage, 1);
    assert!(two.stages[0].completed);
    assert_eq!(two.status(), CaseStatus::Pending);
    assert_eq!(
        two.stages[1].started_at,
        two.history.last().unwrap().at,
        "stage 2 starts when stage 1 completes"
    );
    let stale = decide(&h, "dave", &case.id, Decision::Approve)
        .await
        .unwrap_err();
    assert_eq!(reason(&stale), "ALREADY_DECIDED");

    let done = decide(&h, "erin", &case.id, Decision::Approve).await?;
    assert_eq!(done.status(), CaseStatus::Approved);
    let actions: Vec<&str> = done.history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "opened",
            "approved",
            "approved",
            "stage_completed",
            "approved",
            "stage_completed",
            "case_approved"
        ]
    );
    assert_eq!(events(&h, "approval.stage_completed").await?, 2);
    assert_eq!(events(&h, "approval.case_decided").await?, 1);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deny_ends_the_case() -> anyhow::Result<()> {
    let h = harness().await?;
    let case = open(
        &h,
        open_request(
            "req-deny",
            "alice",
            rule(vec![stage(users(&["bob", "carol"]), 2)]),
        ),
    )
    .await?;
    decide(&h, "bob", &case.id, Decision::Approve).await?;
    let denied = decide(&h, "carol", &case.id, Decision::Deny).await?;
    assert_eq!(denied.status(), CaseStatus::Denied);
    assert_eq!(denied.decided_by, "carol");
    h.stop().await;
    Ok(())
}

fn escalating(
    after_hours: i64,
    to: Vec<pim_proto::assignment::v1::Approver>,
) -> pim_proto::assignment::v1::ApprovalStage {
    let mut first = stage(users(&["bob"]), 1);
    first.escalation_approvers = to;
    first.escalation_after = Some(pim_proto::Duration {
        seconds: after_hours * 3600,
        nanos: 0,
    });
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_escalates_after_its_time_to_approvers_resolved_then() -> anyhow::Result<()> {
    let h = harness().await?;
    // Erin joins the escalation group after the case opened: escalation resolves it again.
    directory(&h, &["bob", "erin"], &[("escalation-team", &[])]).await?;
    let case = open(
        &h,
        open_request(
            "req-esc",
            "alice",
            rule(vec![escalating(4, group("escalation-team"))]),
        ),
    )
    .await?;
    // A probe that escalates after one hour shows when the timers have looked at the clock.
    open(
        &h,
        open_request(
            "req-probe",
            "alice",
            rule(vec![escalating(1, users(&["frank"]))]),
        ),
    )
    .await?;
    directory(&h, &[], &[("escalation-team", &["erin"])]).await?;
    let not_yet = decide(&h, "erin", &case.id, Decision::Approve)
        .await
        .unwrap_err();
    assert_eq!(reason(&not_yet), "NOT_AN_APPROVER");

    advance(&h, 4 * HOUR_MS - 1);
    h.eventually(Duration::from_secs(30), || async {
        Ok((events(&h, "approval.case_escalated").await? == 1).then_some(()))
    })
    .await?;
    let before = as_person(&h, "bob")
        .approval()
        .get_case(GetCaseRequest {
            case_id: case.id.clone(),
        })
        .await?
        .into_inner()
        .case
        .unwrap();
    assert!(!before.stages[0].escalated, "not a millisecond early");

    advance(&h, 1);
    h.eventually(Duration::from_secs(30), || async {
        Ok((events(&h, "approval.case_escalated").await? == 2).then_some(()))
    })
    .await?;
    let decided = decide(&h, "erin", &case.id, Decision::Approve).await?;
    assert_eq!(decided.status(), CaseStatus::Approved);
    assert!(
        decided.stages[0]
            .approvers
            .iter()
            .any(|a| a.principal_id == "erin"
                && a.escalation
                && a.via_group_id == "escalation-team")
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_after_the_deadline_is_refused_and_the_timeout_is_announced()
-> anyhow::Result<()> {
    // Timers that never tick: the refusal must not depend on them.
    let mut h = pim_testkit::Harness::start_with(pim_testkit::HarnessOptions {
        settings: vec![("PIM_TIMER_INTERVAL_MS".into(), "3600000".into())],
        ..Default::default()
    })
    .await?;
    let case = open(
        &h,
        open_request(
            "req-late",
            "alice",
            rule(vec![stage(users(&["bob", "carol"]), 2)]),
        ),
    )
    .await?;
    advance(&h, 24 * HOUR_MS - 1);
    let in_time = decide(&h, "carol", &case.id, Decision::Approve).await?;
    assert_eq!(
        in_time.stages[0].approvals, 1,
        "a millisecond before the deadline counts"
    );
    advance(&h, 1);
    let late = decide(&h, "bob", &case.id, Decision::Approve)
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(reason(&late), "DEADLINE_PASSED");
    assert_eq!(
        events(&h, "approval.case_timed_out").await?,
        0,
        "no timer has fired"
    );

    // With ticking timers the timeout is announced, once.
    h.stop_service(ServiceName::Approval).await;
    h.set_setting("PIM_TIMER_INTERVAL_MS", "20");
    h.restart_service(ServiceName::Approval).await?;
    h.eventually(Duration::from_secs(30), || async {
        Ok((events(&h, "approval.case_timed_out").await? == 1).then_some(()))
    })
    .await?;
    let shown = as_person(&h, "alice")
        .approval()
        .get_case(GetCaseRequest {
            case_id: case.id.clone(),
        })
        .await?
        .into_inner()
        .case
        .unwrap();
    assert_eq!(shown.status(), CaseStatus::TimedOut);
    let again = decide(&h, "bob", &case.id, Decision::Approve)
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "DEADLINE_PASSED");
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_case_cannot_be_decided_and_does_not_escalate() -> anyhow::Result<()> {
    let h = harness().await?;
    let case = open(
        &h,
        open_request(
            "req-cancel",
            "alice",
            rule(vec![escalating(1, users(&["erin"]))]),
        ),
    )
    .await?;
    let activation = h.client(
        ServiceName::Approval,
        &h.service_token(ServiceName::Activation),
    );
    let canceled = activation
        .approval_internal()
        .cancel_case(CancelCaseRequest {
            case_id: case.id.clone(),
            request_id: "req-cancel".into(),
        })
        .await?
        .into_inner()
        .case
        .unwrap();
    assert_eq!(canceled.status(), CaseStatus::Canceled);
    assert_eq!(events(&h, "approval.case_canceled").await?, 1);

    let refused = decide(&h, "bob", &case.id, Decision::Approve)
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "CASE_CANCELED");
    advance(&h, 2 * HOUR_MS);
    // The escalation timer is due now; once it has been claimed it must have done nothing.
    h.eventually(Duration::from_secs(30), || async {
        let left = crate::bad_input::count(
            h.service(ServiceName::Approval).db(),
            "SELECT COUNT(*) AS n FROM case_timers WHERE kind = 'escalate'",
        )
        .await?;
        Ok((left == 0).then_some(()))
    })
    .await?;
    assert_eq!(events(&h, "approval.case_escalated").await?, 0);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_party_sees_its_cases_and_bulk_decisions_report_each_result() -> anyhow::Result<()> {
    let h = harness().await?;
    directory(&h, &["bob", "carol"], &[("approvers", &["bob", "carol"])]).await?;
    let mut ids = Vec::new();
    for n in 0..3 {
        let case = open(
            &h,
            open_request(
                &format!("req-q{n}"),
                "alice",
                rule(vec![stage(group("approvers"), 1)]),
            ),
        )
        .await?;
        ids.push(case.id);
    }
    let other = open(
        &h,
        open_request("req-other", "dave", rule(vec![stage(users(&["carol"]), 1)])),
    )
    .await?;

    // Through the group, bob awaits the three cases, two per page.
    let bob = as_person(&h, "bob");
    let first = bob
        .approval()
        .list_awaiting_me(ListAwaitingMeRequest {
            page_size: 2,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(first.cases.len(), 2);
    let second = bob
        .approval()
        .list_awaiting_me(ListAwaitingMeRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut seen: Vec<String> = first
        .cases
        .iter()
        .chain(&second.cases)
        .map(|c| c.id.clone())
        .collect();
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected);

    let results = bob
        .approval()
        .decide_bulk(DecideBulkRequest {
            decisions: vec![
                DecideRequest {
                    case_id: ids[0].clone(),
                    decision: Decision::Approve.into(),
                    justification: "fine".into(),
                },
                DecideRequest {
                    case_id: other.id.clone(),
                    decision: Decision::Approve.into(),
                    justification: "not mine".into(),
                },
                DecideRequest {
                    case_id: ids[1].clone(),
                    decision: Decision::Deny.into(),
                    justification: "no ticket".into(),
                },
            ],
        })
        .await?
        .into_inner()
        .results;
    let outcome: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r.code.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        outcome,
        [
            ("OK", ""),
            ("PERMISSION_DENIED", "NOT_AN_APPROVER"),
            ("OK", "")
        ]
    );
    assert_eq!(
        results[2].case.as_ref().unwrap().status(),
        CaseStatus::Denied
    );

    let left = bob
        .approval()
        .list_awaiting_me(ListAwaitingMeRequest::default())
        .await?
        .into_inner();
    assert_eq!(left.cases.len(), 1);
    assert_eq!(left.cases[0].id, ids[2]);

    // The requestor sees the status of their own cases, and only theirs.
    let mine = as_person(&h, "alice")
        .approval()
        .list_cases(ListCasesRequest {
            requestor_id: "dave".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(mine.cases.len(), 3);
    assert!(
        mine.cases
            .iter()
            .all(|c| c.summary.as_ref().unwrap().requestor_id == "alice")
    );

    // Admins see every case and its history.
    let admin = h.client(ServiceName::Approval, &h.token(ADMIN));
    let denied = admin
        .approval()
        .list_cases(ListCasesRequest {
            status: CaseStatus::Denied.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(denied.cases.len(), 1);
    assert_eq!(denied.cases[0].history.last().unwrap().justification, "");
    assert_eq!(denied.cases[0].history[1].justification, "no ticket");
    let all = admin
        .approval()
        .list_cases(ListCasesRequest::default())
        .await?
        .into_inner();
    assert_eq!(all.cases.len(), 4);
    assert!(all.cases.iter().all(|c| c.kind() == CaseKind::Activation));
    h.stop().await;
    Ok(())
}
