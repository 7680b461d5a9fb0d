//! The people-facing `pim` commands, rendered exactly as a person sees them, over real gRPC.

use pim_cli::{
    admin::{AdminCommand, Kind, Output, run},
    policies::PolicyCommand,
};
use pim_client::{Credentials, PimClient};
use pim_config::ServiceName;
use pim_testkit::{ADMIN, Harness};

use crate::support::SCOPE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_assigns_with_a_dry_run_then_for_real_and_checks_the_result() -> anyhow::Result<()>
{
    let h = Harness::start().await?;
    let admin = PimClient::connect(
        h.url(ServiceName::Assignment),
        Credentials::Token(h.mfa_token(ADMIN)),
    )?;
    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    let assign = |dry_run: bool| AdminCommand::Assign {
        principal: "alice".into(),
        role: "security administrator".into(),
        scope: SCOPE.into(),
        kind: Kind::Eligible,
        days: Some(30),
        justification: String::new(),
        dry_run,
    };
    let dry = run(assign(true), &admin, Output::Table, now).await?;
    assert!(dry.contains("(dry run: nothing written)"), "{dry}");
    let check = || AdminCommand::Check {
        principal: "alice".into(),
        role: "Security Administrator".into(),
        scope: SCOPE.into(),
    };
    let before = run(check(), &admin, Output::Json, now).await?;
    let before: serde_json::Value = serde_json::from_str(&before)?;
    assert_eq!(before["allowed"], false);
    assert!(
        before["explanation"]
            .as_str()
            .unwrap()
            .contains("no active assignment"),
        "{before}"
    );

    let real = run(assign(false), &admin, Output::Table, now).await?;
    assert!(real.starts_with("SCHEDULE"), "{real}");
    let after: serde_json::Value =
        serde_json::from_str(&run(check(), &admin, Output::Json, now).await?)?;
    assert!(
        after["explanation"]
            .as_str()
            .unwrap()
            .starts_with("eligible but not active"),
        "{after}"
    );

    let roles = run(
        AdminCommand::Roles { privileged: true },
        &admin,
        Output::Table,
        now,
    )
    .await?;
    assert!(
        roles.lines().any(|l| l.starts_with("Global Administrator")),
        "{roles}"
    );
    assert!(!roles.contains("Billing Administrator"), "not privileged");
    let policy = run(
        AdminCommand::Policy {
            command: PolicyCommand::Show {
                role: "Security Administrator".into(),
                scope: SCOPE.into(),
            },
        },
        &admin,
        Output::Table,
        now,
    )
    .await?;
    assert!(
        policy.contains("Expiration_EndUser_Assignment  max 8 h")
            && policy.contains("organization default"),
        "{policy}"
    );
    let unknown = run(
        AdminCommand::Policy {
            command: PolicyCommand::Show {
                role: "Nope".into(),
                scope: SCOPE.into(),
            },
        },
        &admin,
        Output::Table,
        now,
    )
    .await
    .unwrap_err();
    assert!(unknown.to_string().contains("pim roles"), "{unknown}");
    h.stop().await;
    Ok(())
}
