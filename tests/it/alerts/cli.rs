//! `pim alerts …` as an admin sees it: list, show, configure (refused and dry-run), remediate,
//! dismiss and refresh, rendered exactly as the CLI prints them, over real gRPC.

use pim_cli::{
    admin::Output,
    alerts::{AlertCommand, run},
};
use pim_proto::assignment::v1::{DiscoveredAssignment, UpsertPrincipalsRequest};
use pim_testkit::ADMIN;

use super::{OUTSIDE_PIM, TOO_MANY_GAS, alert, alerts, harness, settled, sync, user};
use crate::support::{ROLE, SCOPE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_lists_shows_configures_remediates_dismisses_and_refreshes_from_the_cli()
-> anyhow::Result<()> {
    let h = harness().await?;
    sync(
        &h,
        UpsertPrincipalsRequest {
            principals: vec![user("gina"), user("hank")],
            discovered_assignments: ["gina", "hank"]
                .into_iter()
                .map(|who| DiscoveredAssignment {
                    principal_id: who.into(),
                    role_id: ROLE.into(),
                    scope: SCOPE.into(),
                })
                .collect(),
            ..Default::default()
        },
    )
    .await?;
    settled(&h).await?;
    let admin = alerts(&h, ADMIN);

    let list: serde_json::Value =
        serde_json::from_str(&run(AlertCommand::List, &admin, Output::Json).await?)?;
    let outside = list
        .as_array()
        .and_then(|all| all.iter().find(|a| a["id"] == OUTSIDE_PIM))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (
            &outside["active"],
            &outside["severity"],
            &outside["incidents"]
        ),
        (&true.into(), &"high".into(), &2.into()),
        "{list}"
    );
    let table = run(AlertCommand::List, &admin, Output::Table).await?;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(OUTSIDE_PIM) && l.contains("active")),
        "{table}"
    );

    let show = |all| AlertCommand::Show {
        alert: OUTSIDE_PIM.into(),
        all,
    };
    let shown = run(show(false), &admin, Output::Table).await?;
    assert!(shown.contains("What to do:"), "{shown}");
    assert!(shown.contains("gina"), "{shown}");
    let open = alert(&h, OUTSIDE_PIM).await?.incidents;
    let of = |who: &str| {
        open.iter()
            .find(|i| i.principal_id == who)
            .map(|i| i.id.clone())
            .unwrap_or_default()
    };
    let (incident, hanks) = (of("gina"), of("hank"));

    // A threshold out of range is refused in words, and a dry run changes nothing.
    let configure = |count, dry_run| AlertCommand::Configure {
        alert: TOO_MANY_GAS.into(),
        disable: false,
        global_admin_count: Some(count),
        global_admin_percentage: None,
        activation_count: None,
        activation_window_minutes: None,
        days: None,
        dry_run,
    };
    let refused = run(configure(500, false), &admin, Output::Table)
        .await
        .expect_err("the count is 2 to 100");
    assert!(
        refused.to_string().contains("global_admin_count"),
        "{refused}"
    );
    let dry = run(configure(3, true), &admin, Output::Table).await?;
    assert!(dry.starts_with("(dry run)"), "{dry}");

    // Bringing gina's standing access under management closes the incident.
    let remediated = run(
        AlertCommand::Remediate {
            alert: OUTSIDE_PIM.into(),
            incident: incident.clone(),
            justification: "managed by PIM".into(),
        },
        &admin,
        Output::Table,
    )
    .await?;
    assert!(remediated.contains(&incident), "{remediated}");
    h.eventually(std::time::Duration::from_secs(30), || async {
        let open = alert(&h, OUTSIDE_PIM).await?.incidents;
        Ok((open.len() == 1).then_some(()))
    })
    .await?;

    // Hank's is known and accepted: dismissed, with the reason on record.
    let dismissed = run(
        AlertCommand::Dismiss {
            alert: OUTSIDE_PIM.into(),
            incident: Some(hanks.clone()),
            justification: "vendor account, reviewed quarterly".into(),
        },
        &admin,
        Output::Table,
    )
    .await?;
    assert_eq!(dismissed, "dismissed 1 incident(s)\n");
    assert!(alert(&h, OUTSIDE_PIM).await?.incidents.is_empty());
    let history: serde_json::Value =
        serde_json::from_str(&run(show(true), &admin, Output::Json).await?)?;
    let state_of = |id: &str| {
        history["incidents"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["id"] == id))
            .map(|i| i["state"].clone())
    };
    assert_eq!(
        (state_of(&incident), state_of(&hanks)),
        (Some("resolved".into()), Some("dismissed".into())),
        "{history}"
    );

    let refreshed = run(AlertCommand::Refresh, &admin, Output::Table).await?;
    assert!(refreshed.starts_with("scanned "), "{refreshed}");
    h.stop().await;
    Ok(())
}
