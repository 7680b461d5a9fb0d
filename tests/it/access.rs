//! CheckAccess explains itself, answers for any instant, and reads its caller's writes.

use pim_config::ServiceName;
use pim_proto::assignment::v1::{CheckAccessRequest, CreateEligibilityScheduleRequest};
use pim_testkit::{ADMIN, Harness};
use tonic::Code;

use crate::support::{ROLE, SCOPE, activate};

fn query(at: Option<pim_proto::Timestamp>, at_least_revision: i64) -> CheckAccessRequest {
    CheckAccessRequest {
        principal_id: "alice".into(),
        role_id: ROLE.into(),
        scope: SCOPE.into(),
        at,
        at_least_revision,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_access_names_the_nearest_miss_answers_for_any_instant_and_reads_your_writes()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    let written = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "e".into(),
            principal_id: "alice".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut alice = h
        .client(ServiceName::Assignment, &h.token("alice"))
        .assignment();

    let before = alice
        .check_access(query(None, written.revision))
        .await?
        .into_inner();
    assert!(!before.allowed);
    assert!(
        before.explanation.starts_with("eligible but not active"),
        "{}",
        before.explanation
    );
    assert!(before.revision >= written.revision);
    let ahead = alice
        .check_access(query(None, written.revision + 1_000))
        .await
        .unwrap_err();
    assert_eq!(
        ahead.code(),
        Code::Unavailable,
        "a revision not yet visible is retried, not guessed"
    );

    let granted = activate(
        &h.client(ServiceName::Activation, &h.mfa_token("alice")),
        "a",
        60,
    )
    .await?
    .request
    .unwrap();
    let end = pim_proto::millis_from_timestamp(&granted.end_time.unwrap());
    let at = |ms: i64| Some(pim_proto::timestamp_from_millis(ms));
    assert!(
        alice
            .check_access(query(at(end - 1), 0))
            .await?
            .into_inner()
            .allowed,
        "at end - 1 ms"
    );
    assert!(
        !alice
            .check_access(query(at(end), 0))
            .await?
            .into_inner()
            .allowed,
        "at end"
    );
    h.stop().await;
    Ok(())
}
