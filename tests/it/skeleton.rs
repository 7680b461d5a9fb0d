//! The walking skeleton across assignment, activation and audit.

use pim_config::ServiceName;
use pim_proto::activation::v1::RequestStatus;
use pim_testkit::{ADMIN, Harness};

use crate::support::{SCOPE, activate, await_audited, check_access, make_eligible};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eligible_principal_activates_access_ends_to_the_millisecond_and_audit_records_every_fact()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    make_eligible(&h, "alice", "make-alice-eligible").await?;

    let alice = h.client(ServiceName::Activation, &h.mfa_token("alice"));
    let granted = activate(&alice, "activate-1", 60)
        .await?
        .request
        .unwrap_or_default();
    assert_eq!(granted.status(), RequestStatus::Provisioned);
    assert!(!granted.window_id.is_empty());

    // Effective at once, at the scope and below it, and nowhere else.
    let checker = h.client(ServiceName::Assignment, &h.token("alice"));
    let now = check_access(&checker, "alice", SCOPE).await?;
    assert!(now.allowed, "{}", now.explanation);
    assert_eq!(now.valid_until, granted.end_time);
    assert!(
        check_access(&checker, "alice", &format!("{SCOPE}/groups/g1"))
            .await?
            .allowed
    );
    assert!(
        !check_access(&checker, "alice", "/administrativeUnits/au-2")
            .await?
            .allowed
    );

    // One millisecond before the end it holds; at the end it does not.
    h.clock
        .advance(chrono::Duration::minutes(60) - chrono::Duration::milliseconds(1));
    let checker = h.client(ServiceName::Assignment, &h.token("alice"));
    assert!(check_access(&checker, "alice", SCOPE).await?.allowed);
    h.clock.advance(chrono::Duration::milliseconds(1));
    let after = check_access(&checker, "alice", SCOPE).await?;
    assert!(!after.allowed, "access outlived its window");

    let audit = h.client(ServiceName::Audit, &h.token(ADMIN));
    let records = await_audited(
        &h,
        &audit,
        &[
            "assignment.schedule_created",
            "activation.request_submitted",
            "assignment.window_provisioned",
            "activation.request_granted",
        ],
    )
    .await?;
    let provisioned = records
        .iter()
        .find(|r| r.event_type == "assignment.window_provisioned")
        .ok_or_else(|| anyhow::anyhow!("no provisioning record"))?;
    assert_eq!(
        provisioned.activity,
        "Add member to role completed (PIM activation)"
    );
    assert_eq!(provisioned.actor_id, "service:activation");
    assert_eq!(provisioned.correlation_id, granted.id);
    let sequences: Vec<u64> = records.iter().map(|r| r.sequence).collect();
    assert_eq!(
        sequences,
        (1..=records.len() as u64).collect::<Vec<_>>(),
        "audit sequence is dense"
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_who_is_not_eligible_is_refused_and_nothing_is_written() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let bob = h.client(ServiceName::Activation, &h.mfa_token("bob"));
    let refused = activate(&bob, "bob-1", 30).await.unwrap_err();
    let status = refused
        .downcast_ref::<tonic::Status>()
        .ok_or_else(|| anyhow::anyhow!("{refused}"))?;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    use tonic_types::StatusExt as _;
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_default(),
        "NOT_ELIGIBLE"
    );
    let written = crate::bad_input::count(
        h.service(ServiceName::Activation).db(),
        "SELECT COUNT(*) AS n FROM requests",
    )
    .await?;
    assert_eq!(written, 0);
    h.stop().await;
    Ok(())
}
