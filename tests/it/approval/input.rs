//! Bad input gets a clear error naming the field, and writes nothing.

use pim_config::ServiceName;
use pim_proto::approval::v1::{DecideRequest, Decision, OpenCaseRequest};
use tonic::Code;
use tonic_types::StatusExt as _;

use super::{as_person, case_rows, harness, open, open_request, rule, stage, users};
use crate::bad_input::count;

fn fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_decisions_and_bad_cases_name_their_field_and_write_nothing() -> anyhow::Result<()> {
    let h = harness().await?;
    let case = open(
        &h,
        open_request("req-in", "alice", rule(vec![stage(users(&["bob"]), 1)])),
    )
    .await?;
    let log_lines = || async {
        count(
            h.service(ServiceName::Approval).db(),
            "SELECT COUNT(*) AS n FROM case_log",
        )
        .await
    };
    let before = log_lines().await?;
    let bob = as_person(&h, "bob");
    let attempt = |case_id: &str, justification: String, decision: Decision| DecideRequest {
        case_id: case_id.into(),
        decision: decision.into(),
        justification,
    };

    let missing = bob
        .approval()
        .decide(attempt(&case.id, "  ".into(), Decision::Approve))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert_eq!(fields(&missing), ["justification"]);

    let long = bob
        .approval()
        .decide(attempt(&case.id, "x".repeat(501), Decision::Approve))
        .await
        .unwrap_err();
    assert_eq!(fields(&long), ["justification"]);

    let undecided = bob
        .approval()
        .decide(attempt(&case.id, "fine".into(), Decision::Unspecified))
        .await
        .unwrap_err();
    assert_eq!(fields(&undecided), ["decision"]);

    let unknown = bob
        .approval()
        .decide(attempt("no-such-case", "fine".into(), Decision::Approve))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(log_lines().await?, before);

    let mut empty = open_request("", "", rule(vec![]));
    empty.kind = 0;
    let refused = open(&h, empty).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut named = fields(&refused);
    named.sort();
    assert_eq!(
        named,
        ["kind", "request_id", "rule.stages", "summary.requestor_id"]
    );
    let mut wordy = open_request("req-wordy", "alice", rule(vec![stage(users(&["bob"]), 1)]));
    if let Some(summary) = wordy.summary.as_mut() {
        summary.justification = "x".repeat(501);
    }
    assert_eq!(
        fields(&open(&h, wordy).await.unwrap_err()),
        ["summary.justification"]
    );
    let bare = open(
        &h,
        OpenCaseRequest {
            request_id: "req-bare".into(),
            kind: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&bare), ["rule", "summary"]);
    assert_eq!(
        case_rows(&h).await?,
        1 + 1 + 1,
        "only the first case's rows"
    );
    h.stop().await;
    Ok(())
}
