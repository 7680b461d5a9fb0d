//! Each alert fires on exactly the activity, or the instant, that should trigger it, and not one
//! event earlier; incidents resolve when their condition stops holding.

use pim_client::roles;
use pim_config::ServiceName;
use pim_proto::{
    assignment::v1::{
        DiscoveredAssignment, EnablementRule, PolicyRules, SetPolicyRequest,
        UpsertPrincipalsRequest,
    },
    audit::v1::{
        AlertConfiguration, AlertIncidentState, DismissAlertRequest, RemediateAlertIncidentRequest,
    },
};
use pim_testkit::ADMIN;
use tonic::Code;

use super::*;
use crate::support::{ROLE, SCOPE, activate, make_eligible, reason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_global_admins_fires_only_when_both_the_count_and_the_share_are_met()
-> anyhow::Result<()> {
    let h = harness().await?;
    configure(
        &h,
        ADMIN,
        AlertConfiguration {
            alert_id: TOO_MANY_GAS.into(),
            enabled: true,
            global_admin_count_threshold: Some(3),
            global_admin_percentage_threshold: Some(50),
            ..Default::default()
        },
    )
    .await?;
    // The break-glass admin and ga-1: two of two privileged assignees, 100%, but only two.
    assign_active(&h, "ga-1", roles::GLOBAL_ADMINISTRATOR).await?;
    settled(&h).await?;
    assert!(
        !is_active(&h, TOO_MANY_GAS).await?,
        "the count is not met yet"
    );

    assign_active(&h, "ga-2", roles::GLOBAL_ADMINISTRATOR).await?;
    settled(&h).await?;
    let raised = alert(&h, TOO_MANY_GAS).await?;
    let mut holders: Vec<_> = raised
        .incidents
        .iter()
        .map(|i| i.principal_id.clone())
        .collect();
    holders.sort();
    assert_eq!(
        holders,
        [ADMIN, "ga-1", "ga-2"],
        "one incident per Global Administrator"
    );
    assert!(raised.incidents.iter().all(|i| i.count == 3));

    // Three more privileged assignees: 3 of 6 is exactly 50%, still met.
    for who in ["sec-1", "sec-2", "sec-3"] {
        make_eligible(&h, who, &format!("{who}-eligible")).await?;
    }
    settled(&h).await?;
    assert!(is_active(&h, TOO_MANY_GAS).await?, "3 of 6 meets 50%");
    // A seventh: 3 of 7 is below 50%; the count alone does not keep it.
    make_eligible(&h, "sec-4", "sec-4-eligible").await?;
    settled(&h).await?;
    assert!(
        !is_active(&h, TOO_MANY_GAS).await?,
        "the share is no longer met"
    );
    let closed = history(&h, TOO_MANY_GAS).await?;
    assert_eq!(closed.len(), 3);
    assert!(
        closed
            .iter()
            .all(|i| i.state() == AlertIncidentState::Resolved)
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_activated_more_than_n_times_in_the_window_fires_on_the_next_one_and_resolves_as_they_age()
-> anyhow::Result<()> {
    let h = harness().await?;
    configure(
        &h,
        ADMIN,
        AlertConfiguration {
            alert_id: FREQUENT.into(),
            enabled: true,
            activation_count_threshold: Some(2),
            activation_window: Some(pim_proto::Duration {
                seconds: 86_400,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await?;
    make_eligible(&h, "alice", "alice-eligible").await?;
    // A fresh sign-in with MFA for each activation: the policy wants a recent one.
    let alice = |h: &Harness| h.client(ServiceName::Activation, &h.mfa_token("alice"));
    for n in 1..=2 {
        activate(&alice(&h), &format!("alice-{n}"), 60).await?;
        settled(&h).await?;
        advance(&h, 61 * MINUTE_MS);
    }
    assert!(
        !is_active(&h, FREQUENT).await?,
        "two activations are not more than two"
    );

    activate(&alice(&h), "alice-3", 60).await?;
    settled(&h).await?;
    let raised = alert(&h, FREQUENT).await?;
    assert_eq!(raised.incidents.len(), 1);
    let incident = &raised.incidents[0];
    assert_eq!(
        (incident.principal_id.as_str(), incident.role_id.as_str()),
        ("alice", ROLE)
    );
    assert_eq!(incident.count, 3);

    // The first activation leaves the day-long window 24 h after it started: then it is over.
    advance(&h, DAY_MS - 2 * 61 * MINUTE_MS - MINUTE_MS);
    settled(&h).await?;
    assert!(
        is_active(&h, FREQUENT).await?,
        "a minute before the first one leaves the window"
    );
    advance(&h, MINUTE_MS + 1);
    await_active(&h, FREQUENT, false).await?;
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_without_mfa_on_activation_fires_and_requiring_mfa_again_resolves_it()
-> anyhow::Result<()> {
    let h = harness().await?;
    let set = |mfa: bool| {
        let h = &h;
        async move {
            h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
                .assignment()
                .set_policy(SetPolicyRequest {
                    role_id: ROLE.into(),
                    scope: SCOPE.into(),
                    rules: Some(PolicyRules {
                        activation_enablement: Some(EnablementRule {
                            mfa_required: mfa,
                            justification_required: true,
                            ticket_required: false,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
        }
    };
    set(true).await?;
    settled(&h).await?;
    assert!(!is_active(&h, NO_MFA).await?);
    set(false).await?;
    settled(&h).await?;
    let raised = alert(&h, NO_MFA).await?;
    assert_eq!(raised.incidents.len(), 1);
    assert_eq!(
        (
            raised.incidents[0].role_id.as_str(),
            raised.incidents[0].scope.as_str()
        ),
        (ROLE, SCOPE)
    );
    set(true).await?;
    settled(&h).await?;
    assert!(!is_active(&h, NO_MFA).await?, "MFA is required again");
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_eligibility_fires_after_n_days_to_the_millisecond_and_remediation_removes_it()
-> anyhow::Result<()> {
    let h = harness().await?;
    configure(
        &h,
        ADMIN,
        AlertConfiguration {
            alert_id: REDUNDANT.into(),
            enabled: true,
            duration_days: Some(10),
            ..Default::default()
        },
    )
    .await?;
    make_eligible(&h, "bob", "bob-eligible").await?;
    settled(&h).await?;
    advance(&h, 10 * DAY_MS - 1);
    // Give the timer many polls to (wrongly) fire.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    settled(&h).await?;
    assert!(!is_active(&h, REDUNDANT).await?, "one millisecond early");
    advance(&h, 1);
    let raised = await_active(&h, REDUNDANT, true).await?;
    let incident = raised.incidents[0].clone();
    assert_eq!(incident.principal_id, "bob");
    assert!(!incident.schedule_id.is_empty());

    // Someone without an admin role may not remediate; an admin may.
    let refused = alerts(&h, "reader")
        .alerts()
        .remediate_alert_incident(RemediateAlertIncidentRequest {
            alert_id: REDUNDANT.into(),
            incident_id: incident.id.clone(),
            justification: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    alerts(&h, ADMIN)
        .alerts()
        .remediate_alert_incident(RemediateAlertIncidentRequest {
            alert_id: REDUNDANT.into(),
            incident_id: incident.id.clone(),
            justification: "not needed".into(),
        })
        .await?;
    await_active(&h, REDUNDANT, false).await?;
    let eligible = crate::support::check_access(
        &h.client(ServiceName::Assignment, &h.mfa_token(ADMIN)),
        "bob",
        SCOPE,
    )
    .await?;
    assert!(!eligible.allowed);
    let records = crate::support::audit_records(&crate::audit::auditor(&h)).await?;
    assert!(
        records
            .iter()
            .any(|r| r.event_type == "assignment.schedule_removed"
                && r.payload_json.contains(&incident.id)),
        "the removal carries the incident id"
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_account_holding_a_privileged_role_and_a_guest_with_one_fire_on_the_sync()
-> anyhow::Result<()> {
    let h = harness().await?;
    sync(
        &h,
        UpsertPrincipalsRequest {
            principals: vec![
                user("carol"),
                pim_proto::assignment::v1::Principal {
                    guest: true,
                    ..user("dave")
                },
            ],
            ..Default::default()
        },
    )
    .await?;
    make_eligible(&h, "carol", "carol-eligible").await?;
    settled(&h).await?;
    assert!(!is_active(&h, STALE).await?);
    assert!(!is_active(&h, GUEST).await?, "dave holds nothing yet");
    make_eligible(&h, "dave", "dave-eligible").await?;
    settled(&h).await?;
    let guest = alert(&h, GUEST).await?;
    assert_eq!(guest.incidents.len(), 1);
    assert_eq!(guest.incidents[0].principal_id, "dave");

    sync(
        &h,
        UpsertPrincipalsRequest {
            principals: vec![pim_proto::assignment::v1::Principal {
                enabled: false,
                ..user("carol")
            }],
            ..Default::default()
        },
    )
    .await?;
    settled(&h).await?;
    let stale = alert(&h, STALE).await?;
    let who: Vec<_> = stale
        .incidents
        .iter()
        .map(|i| i.principal_id.as_str())
        .collect();
    assert_eq!(who, ["carol"]);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_break_glass_account_that_acts_raises_a_high_alert_and_acting_after_a_dismissal_raises_a_new_one()
-> anyhow::Result<()> {
    let h = harness().await?;
    // The sync names the break-glass flag (from configuration); the sync itself is judged by
    // what was known before it.
    sync(
        &h,
        UpsertPrincipalsRequest {
            principals: vec![user(ADMIN)],
            ..Default::default()
        },
    )
    .await?;
    settled(&h).await?;
    assert!(!is_active(&h, BREAK_GLASS).await?);

    make_eligible(&h, "erin", "erin-eligible").await?;
    settled(&h).await?;
    let raised = alert(&h, BREAK_GLASS).await?;
    assert_eq!(raised.incidents.len(), 1);
    let first = raised.incidents[0].clone();
    assert_eq!((first.principal_id.as_str(), first.count), (ADMIN, 1));
    assert_eq!(
        raised.alert.unwrap().definition.unwrap().severity(),
        pim_proto::audit::v1::AlertSeverity::High
    );

    let missing = alerts(&h, ADMIN)
        .alerts()
        .dismiss_alert(DismissAlertRequest {
            alert_id: BREAK_GLASS.into(),
            incident_id: first.id.clone(),
            justification: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        missing.code(),
        Code::InvalidArgument,
        "a justification is required"
    );
    let dismissed = alerts(&h, ADMIN)
        .alerts()
        .dismiss_alert(DismissAlertRequest {
            alert_id: BREAK_GLASS.into(),
            incident_id: first.id.clone(),
            justification: "quarterly break-glass drill".into(),
        })
        .await?
        .into_inner()
        .incidents;
    assert_eq!(dismissed.len(), 1);
    settled(&h).await?;
    assert!(
        !is_active(&h, BREAK_GLASS).await?,
        "dismissing does not count as a use"
    );

    make_eligible(&h, "frank", "frank-eligible").await?;
    settled(&h).await?;
    let again = alert(&h, BREAK_GLASS).await?;
    assert_eq!(again.incidents.len(), 1);
    assert_ne!(
        again.incidents[0].id, first.id,
        "a new incident after the dismissal"
    );
    assert_eq!(again.incidents[0].count, 1);
    let all = history(&h, BREAK_GLASS).await?;
    assert!(all.iter().any(|i| i.id == first.id
        && i.state() == AlertIncidentState::Dismissed
        && i.justification == "quarterly break-glass drill"
        && i.dismissed_by == ADMIN));
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_assigned_outside_pim_fires_high_and_remediation_converts_it_but_never_the_last_global_admin()
-> anyhow::Result<()> {
    let h = harness().await?;
    sync(
        &h,
        UpsertPrincipalsRequest {
            principals: vec![user("gina"), user(ADMIN)],
            discovered_assignments: vec![
                DiscoveredAssignment {
                    principal_id: "gina".into(),
                    role_id: ROLE.into(),
                    scope: SCOPE.into(),
                },
                DiscoveredAssignment {
                    principal_id: "gina".into(),
                    role_id: roles::GLOBAL_ADMINISTRATOR.into(),
                    scope: "/".into(),
                },
            ],
            ..Default::default()
        },
    )
    .await?;
    settled(&h).await?;
    let raised = alert(&h, OUTSIDE_PIM).await?;
    assert_eq!(raised.incidents.len(), 2, "{:?}", raised.incidents);
    let of_role = |role: &str| {
        raised
            .incidents
            .iter()
            .find(|i| i.role_id == role)
            .cloned()
            .unwrap()
    };
    let sec = of_role(ROLE);
    alerts(&h, ADMIN)
        .alerts()
        .remediate_alert_incident(RemediateAlertIncidentRequest {
            alert_id: OUTSIDE_PIM.into(),
            incident_id: sec.id.clone(),
            justification: "bring under management".into(),
        })
        .await?;
    h.eventually(std::time::Duration::from_secs(30), || async {
        let open = alert(&h, OUTSIDE_PIM).await?.incidents;
        Ok((open.len() == 1).then_some(()))
    })
    .await?;

    // The break-glass admin leaves the directory: gina's discovered assignment is now the last
    // enabled permanent Global Administrator, and remediation must not convert it. Gina, a
    // Global Administrator through it, is the one who asks.
    sync(
        &h,
        UpsertPrincipalsRequest {
            principals: vec![pim_proto::assignment::v1::Principal {
                enabled: false,
                ..user(ADMIN)
            }],
            ..Default::default()
        },
    )
    .await?;
    let ga = of_role(roles::GLOBAL_ADMINISTRATOR);
    let gina = alerts(&h, "gina");
    let refused = gina
        .alerts()
        .remediate_alert_incident(RemediateAlertIncidentRequest {
            alert_id: OUTSIDE_PIM.into(),
            incident_id: ga.id.clone(),
            justification: "bring under management".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(reason(&refused), "LAST_GLOBAL_ADMIN");
    let still = gina
        .alerts()
        .get_alert(pim_proto::audit::v1::GetAlertRequest {
            alert_id: OUTSIDE_PIM.into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        still.incidents.len(),
        1,
        "the Global Administrator's incident stays open"
    );
    assert!(
        still.incidents[0].remediated_by.is_empty(),
        "nothing was remediated"
    );
    h.stop().await;
    Ok(())
}
