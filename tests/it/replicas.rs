//! Two replicas of the assignment service on one database: each answers from its own in-memory
//! index. A write's revision makes the other replica catch up before it answers; without one,
//! it follows within moments; and a watcher on either sees every change, in order, once.

use std::time::Duration;

use pim_client::{AuthorizedChannel, Credentials, PimClient};
use pim_config::ServiceName;
use pim_db::PoolSize;
use pim_proto::assignment::v1::{
    CheckAccessRequest, CreateActiveScheduleRequest, RemoveScheduleRequest,
    WatchAccessChangesRequest, assignment_service_client::AssignmentServiceClient,
};
use pim_testkit::{ADMIN, Harness};
use sea_orm::ConnectionTrait;
use tokio::net::TcpListener;
use tonic::Code;

use crate::support::{ROLE, SCOPE, reason};

fn alice_at(at_least_revision: i64) -> CheckAccessRequest {
    access_at("alice", at_least_revision)
}

fn access_at(principal: &str, at_least_revision: i64) -> CheckAccessRequest {
    CheckAccessRequest {
        principal_id: principal.into(),
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
        .create_active_schedule(standing("alice"))
        .await?
        .into_inner();
    let schedule = created.schedule.unwrap();

    // The replica starts after the write: its index is loaded from the database.
    let (replica, mut on_replica) = second_replica(&h).await?;
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

/// Another replica of the assignment service on the harness's database, and a reader's client
/// of it. It loads its index from the database as it starts.
async fn second_replica(
    h: &Harness,
) -> anyhow::Result<(
    pim_testkit::RunningService,
    AssignmentServiceClient<AuthorizedChannel>,
)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let replica = pim_testkit::start_service(
        h.settings(ServiceName::Assignment)?,
        h.clock.clone(),
        listener,
    )
    .await?;
    let channel = pim_client::channel(&replica.url(), Duration::from_secs(10), None)?;
    let client = PimClient::new(
        channel,
        Credentials::Token(h.service_token(ServiceName::Audit)),
    )
    .assignment();
    Ok((replica, client))
}

fn standing(principal: &str) -> CreateActiveScheduleRequest {
    CreateActiveScheduleRequest {
        request_id: format!("standing-{principal}"),
        principal_id: principal.into(),
        role_id: ROLE.into(),
        scope: SCOPE.into(),
        justification: "on call".into(),
        ..Default::default()
    }
}

/// A replica that was away while more revisions were written than the log keeps: the log no
/// longer reaches its revision, so it reloads everything rather than apply a partial log; the log
/// is trimmed as the revision passes a multiple of 1,000; and a watcher resuming from before the
/// trim is told to read the state again. The revisions in between are made by moving the
/// counter on in the database, as 200,000 writes whose log rows were trimmed would leave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_a_trimmed_log_reloads_and_a_watcher_from_before_it_is_refused()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    let mut primary = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment();
    let before = primary
        .create_active_schedule(standing("alice"))
        .await?
        .into_inner();

    let (replica, mut on_replica) = second_replica(&h).await?;
    assert!(
        on_replica
            .check_access(alice_at(before.revision))
            .await?
            .into_inner()
            .allowed
    );

    let db = pim_db::connect(
        &h.settings(ServiceName::Assignment)?.db.url,
        PoolSize { max: 1, min: 0 },
    )
    .await?;
    db.execute_unprepared("UPDATE revision SET value = 199998 WHERE id = 1")
        .await?;

    // Revision 199,999 follows a log that ends at `before.revision`: both replicas reload.
    let bob = primary
        .create_active_schedule(standing("bob"))
        .await?
        .into_inner();
    assert_eq!(bob.revision, 199_999);
    let seen = on_replica
        .check_access(access_at("bob", bob.revision))
        .await?
        .into_inner();
    assert!(
        seen.allowed,
        "the replica missed the write after the gap: {}",
        seen.explanation
    );
    assert!(seen.revision >= bob.revision);
    assert!(
        on_replica
            .check_access(alice_at(bob.revision))
            .await?
            .into_inner()
            .allowed
    );

    // Revision 200,000 passes a multiple of 1,000: what is older than the last 100,000 goes.
    let carol = primary
        .create_active_schedule(standing("carol"))
        .await?
        .into_inner();
    assert_eq!(carol.revision, 200_000);
    let kept = db
        .query_one_raw(pim_db::stmt(
            &db,
            "SELECT count(*) AS old FROM access_changes WHERE revision <= 100000",
            [],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no count"))?
        .try_get::<i64>("", "old")?;
    assert_eq!(kept, 0, "the log was not trimmed");
    let seen = on_replica
        .check_access(access_at("carol", carol.revision))
        .await?
        .into_inner();
    assert!(seen.allowed, "{}", seen.explanation);

    let refused = on_replica
        .watch_access_changes(WatchAccessChangesRequest {
            since_revision: before.revision,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "REVISION_TOO_OLD");
    // From within the log, the watch replays what follows.
    let mut replay = on_replica
        .watch_access_changes(WatchAccessChangesRequest {
            since_revision: bob.revision,
        })
        .await?
        .into_inner();
    let next = tokio::time::timeout(Duration::from_secs(10), replay.message())
        .await??
        .ok_or_else(|| anyhow::anyhow!("the replay ended"))?;
    assert_eq!(
        (next.revision, next.principal_ids),
        (carol.revision, vec!["carol".to_owned()])
    );
    replica.shutdown().await;
    h.stop().await;
    Ok(())
}
