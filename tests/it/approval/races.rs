//! Racing approvers: the database's constraints, not a check in the application, keep the
//! count at the quorum and give one outcome.

use std::sync::Arc;

use pim_config::ServiceName;
use pim_proto::approval::v1::{CaseStatus, Decision};
use tokio::sync::Barrier;

use super::{decide, events, harness, open, open_request, rule, stage, users};
use crate::{bad_input::count, support::reason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_approvers_at_once_on_a_quorum_of_two_count_two_and_decide_once() -> anyhow::Result<()>
{
    let h = Arc::new(harness().await?);
    let approvers: Vec<String> = (0..10).map(|n| format!("approver-{n}")).collect();
    let names: Vec<&str> = approvers.iter().map(String::as_str).collect();
    let case = open(
        &h,
        open_request("req-race", "alice", rule(vec![stage(users(&names), 2)])),
    )
    .await?;
    let barrier = Arc::new(Barrier::new(approvers.len()));
    let mut tasks = Vec::new();
    for who in approvers.clone() {
        let (h, barrier, id) = (h.clone(), barrier.clone(), case.id.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            decide(&h, &who, &id, Decision::Approve).await
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await? {
            Ok(_) => accepted += 1,
            Err(status) => assert_eq!(reason(&status), "ALREADY_DECIDED", "{status:?}"),
        }
    }
    assert_eq!(accepted, 2);
    let db = h.service(ServiceName::Approval).db();
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) AS n FROM case_log WHERE action = 'approved'"
        )
        .await?,
        2
    );
    assert_eq!(events(&h, "approval.case_decided").await?, 1);
    assert_eq!(events(&h, "approval.stage_completed").await?, 1);
    Arc::try_unwrap(h).ok().expect("tasks done").stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approve_racing_a_deny_gives_one_outcome_and_the_loser_is_told() -> anyhow::Result<()> {
    let h = Arc::new(harness().await?);
    for round in 0..5 {
        let case = open(
            &h,
            open_request(
                &format!("req-duel-{round}"),
                "alice",
                rule(vec![stage(users(&["bob", "carol"]), 1)]),
            ),
        )
        .await?;
        let barrier = Arc::new(Barrier::new(2));
        let duel = |who: &'static str, decision: Decision| {
            let (h, barrier, id) = (h.clone(), barrier.clone(), case.id.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                decide(&h, who, &id, decision).await
            })
        };
        let approve = duel("bob", Decision::Approve);
        let deny = duel("carol", Decision::Deny);
        let (approve, deny) = (approve.await?, deny.await?);
        let (winner, loser) = match (&approve, &deny) {
            (Ok(case), Err(lost)) => (case, lost),
            (Err(lost), Ok(case)) => (case, lost),
            other => panic!("exactly one must win: {other:?}"),
        };
        assert_eq!(reason(loser), "ALREADY_DECIDED");
        let expected = if approve.is_ok() {
            CaseStatus::Approved
        } else {
            CaseStatus::Denied
        };
        assert_eq!(winner.status(), expected);
    }
    assert_eq!(events(&h, "approval.case_decided").await?, 5);
    Arc::try_unwrap(h).ok().expect("tasks done").stop().await;
    Ok(())
}
