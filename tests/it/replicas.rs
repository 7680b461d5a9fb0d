//! Two replicas of the assignment service on one database: each answers from its own in-memory
//! index. A write's revision makes the other replica catch up before it answers; without one,
//! it follows within moments; and a watcher on either sees every change, in order, once.

use std::time::Duration;

use pim_client::{Credentials, PimClient};
use pim_config::ServiceName;
use pim_proto::assignment::v1::{
    CheckAccessRequest, CreateActiveScheduleRequest, RemoveScheduleRequest,
    WatchAccessChangesRequest,
};
use pim_testkit::{ADMIN, Harness};
use tokio::net::TcpListener;
use tonic::Code;

use crate::support::{ROLE, SCOPE};

fn alice_at(at_least_revision: i64) -> CheckAccessRequest {
    CheckAccessRequest {
        principal_id: "alice".into(),
        role_id: ROLE.into(),
        scope: SCOPE.into(),
        at: None,
        at_least_revision,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_reads_a_removal_at_once_by_its_revision_and_streams_every_change()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    let mut primary = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment();
    let created = primary
        .create_active_schedule(CreateActiveScheduleRequest {
            request_id: "standing".into(),
            principal_id: "alice".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            justification: "on call".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let schedule = created.schedule.unwrap();

    // The replica starts after the write: its index is loaded from the database.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let replica = pim_testkit::start_service(
        h.settings(ServiceName::Assignment)?,
        h.clock.clone(),
        listener,
    )
    .await?;
    let channel = pim_client::channel(&replica.url(), Duration::from_secs(10), None)?;
    let mut on_replica = PimClient::new(
        channel,
        Credentials::Token(h.service_token(ServiceName::Audit)),
    )
    .assignment();
    let loaded = on_replica
        .check_access(alice_at(created.revision))
        .await?
        .into_inner();
    assert!(loaded.allowed, "{}", loaded.explanation);
    assert_eq!(
        loaded.explanation,
        format!("active_schedule:{}", schedule.id)
    );

    let mut live = on_replica
        .watch_access_changes(WatchAccessChangesRequest {
            since_revision: created.revision,
        })
        .await?
        .into_inner();
    let removed = primary
        .remove_schedule(RemoveScheduleRequest {
            schedule_id: schedule.id.clone(),
            justification: "rotation ended".into(),
            validate_only: false,
        })
        .await?
        .into_inner();
    assert!(removed.revision > created.revision);
    let after = on_replica
        .check_access(alice_at(removed.revision))
        .await?
        .into_inner();
    assert!(
        !after.allowed,
        "the replica answered from before the removal: {}",
        after.explanation
    );
    assert!(after.revision >= removed.revision);

    let change = tokio::time::timeout(Duration::from_secs(10), live.message())
        .await??
        .ok_or_else(|| anyhow::anyhow!("the watch ended"))?;
    assert_eq!(change.revision, removed.revision);
    assert_eq!(change.principal_ids, ["alice"]);

    // A watcher that resumes from before the creation replays both changes, in order.
    let mut replay = on_replica
        .watch_access_changes(WatchAccessChangesRequest {
            since_revision: created.revision - 1,
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let change = tokio::time::timeout(Duration::from_secs(10), replay.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the replay ended"))?;
        seen.push((change.revision, change.principal_ids));
    }
    assert_eq!(
        seen,
        [
            (created.revision, vec!["alice".to_owned()]),
            (removed.revision, vec!["alice".to_owned()]),
        ]
    );

    // Without a revision, the primary's own reads are current at once.
    let mut primary_reader = h
        .client(
            ServiceName::Assignment,
            &h.service_token(ServiceName::Audit),
        )
        .assignment();
    assert!(
        !primary_reader
            .check_access(alice_at(0))
            .await?
            .into_inner()
            .allowed
    );
    let bad = on_replica
        .watch_access_changes(WatchAccessChangesRequest { since_revision: -1 })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    replica.shutdown().await;
    h.stop().await;
    Ok(())
}
