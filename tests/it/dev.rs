//! `pim dev`: five services in one process on SQLite and the in-process bus.

use std::time::Duration;

use pim_cli::dev::{self, BOOTSTRAP_ADMIN, DevOptions, DevSystem};
use pim_client::{Credentials, PimClient};
use pim_config::ServiceName;
use pim_proto::assignment::v1::CreateEligibilityScheduleRequest;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{ROLE, SCOPE, activate, audit_records, check_access};

fn client(system: &DevSystem, service: ServiceName, principal: &str) -> anyhow::Result<PimClient> {
    // Signed in with MFA, as the default role policy asks of activations.
    let mut claims = system.signer.claims(principal, 3600);
    claims.amr.push("mfa".into());
    let token = system.signer.sign(&claims)?;
    PimClient::connect(&system.url(service), Credentials::Token(token))
}

async fn audited(system: &DevSystem, count: usize) -> anyhow::Result<Vec<String>> {
    let audit = client(system, ServiceName::Audit, BOOTSTRAP_ADMIN)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let types: Vec<String> = audit_records(&audit)
            .await?
            .into_iter()
            .map(|r| r.event_type)
            .collect();
        if types.len() >= count {
            return Ok(types);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "only {} records: {types:?}",
            types.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pim_dev_serves_all_five_runs_the_skeleton_and_survives_a_restart() -> anyhow::Result<()> {
    let data_dir =
        std::env::temp_dir().join(format!("pim-dev-test-{}", uuid::Uuid::new_v4().simple()));
    let options = DevOptions {
        data_dir: data_dir.clone(),
        base_port: 0,
        ..DevOptions::default()
    };
    let system = dev::start(options.clone()).await?;
    for service in ServiceName::ALL {
        let channel = pim_client::channel(&system.url(service), Duration::from_secs(5), None)?;
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service}");
    }
    // A dry run on SQLite's single connection answers without waiting on itself.
    let dry = client(&system, ServiceName::Assignment, BOOTSTRAP_ADMIN)?
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "dev-dry".into(),
            principal_id: "alice".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            validate_only: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(
        dry.schedule.is_some_and(|s| s.id.is_empty()),
        "a dry run writes nothing"
    );
    client(&system, ServiceName::Assignment, BOOTSTRAP_ADMIN)?
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "dev-1".into(),
            principal_id: "alice".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            ..Default::default()
        })
        .await?;
    activate(
        &client(&system, ServiceName::Activation, "alice")?,
        "dev-activate",
        30,
    )
    .await?;
    assert!(
        check_access(
            &client(&system, ServiceName::Assignment, "alice")?,
            "alice",
            SCOPE
        )
        .await?
        .allowed
    );
    // Seed, eligibility, submitted, provisioned, granted.
    let before = audited(&system, 5).await?;
    assert!(
        before.iter().any(|t| t == "assignment.window_provisioned"),
        "{before:?}"
    );
    system.shutdown().await;

    // Restarted on the same files: nothing lost, and new events continue the trail.
    let system = dev::start(options).await?;
    assert!(
        check_access(
            &client(&system, ServiceName::Assignment, "alice")?,
            "alice",
            SCOPE
        )
        .await?
        .allowed
    );
    // Alice's activation is still live; bob becomes eligible and activates too.
    client(&system, ServiceName::Assignment, BOOTSTRAP_ADMIN)?
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "dev-2".into(),
            principal_id: "bob".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            ..Default::default()
        })
        .await?;
    activate(
        &client(&system, ServiceName::Activation, "bob")?,
        "dev-activate-2",
        30,
    )
    .await?;
    let after = audited(&system, before.len() + 4).await?;
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "the trail survived the restart"
    );
    assert_eq!(after.len(), before.len() + 4, "no record applied twice");
    system.shutdown().await;
    let _ = std::fs::remove_dir_all(data_dir);
    Ok(())
}
