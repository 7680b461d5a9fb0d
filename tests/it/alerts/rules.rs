//! Configuration is validated and audited, only admins change anything, a refresh from the
//! stored log gives continuous evaluation's answer, and an alert reaches an admin's inbox.

use pim_client::roles;
use pim_config::ServiceName;
use pim_proto::{
    assignment::v1::UpsertPrincipalsRequest,
    audit::v1::{AlertConfiguration, ListAlertsRequest, RefreshAlertsRequest},
};
use pim_testkit::ADMIN;
use sea_orm::ConnectionTrait as _;
use tonic::Code;

use super::*;
use crate::{
    bad_input::count,
    support::{activate, audit_records, field_violations, make_eligible},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_out_of_range_are_invalid_and_nothing_is_written() -> anyhow::Result<()> {
    let h = harness().await?;
    let refused = configure(
        &h,
        ADMIN,
        AlertConfiguration {
            alert_id: TOO_MANY_GAS.into(),
            enabled: true,
            global_admin_count_threshold: Some(101),
            global_admin_percentage_threshold: Some(101),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        field_violations(&refused),
        [
            "configuration.global_admin_count_threshold",
            "configuration.global_admin_percentage_threshold"
        ]
    );
    for (alert_id, days) in [(STALE, 0), (STALE, 366), (REDUNDANT, 101)] {
        let refused = configure(
            &h,
            ADMIN,
            AlertConfiguration {
                alert_id: alert_id.into(),
                enabled: true,
                duration_days: Some(days),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(
            field_violations(&refused),
            ["configuration.duration_days"],
            "{alert_id} {days}"
        );
    }
    let refused = configure(
        &h,
        ADMIN,
        AlertConfiguration {
            alert_id: FREQUENT.into(),
            enabled: true,
            activation_count_threshold: Some(1),
            duration_days: Some(3),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        field_violations(&refused),
        [
            "configuration.activation_count_threshold",
            "configuration.duration_days"
        ],
        "a threshold the alert does not take is refused too"
    );
    let unknown = configure(
        &h,
        ADMIN,
        AlertConfiguration {
            alert_id: "NoSuchAlert".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(field_violations(&unknown), ["alert_id"]);

    settled(&h).await?;
    let audit = h.service(ServiceName::Audit).db();
    assert_eq!(
        count(audit, "SELECT COUNT(*) AS n FROM alert_configurations").await?,
        0
    );
    assert_eq!(
        count(audit, "SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'audit.alert_configuration_updated'").await?,
        0
    );

    // A good change is written, announced and audited with who made it.
    let saved = configure(
        &h,
        ADMIN,
        AlertConfiguration {
            alert_id: STALE.into(),
            enabled: true,
            duration_days: Some(90),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(
        (saved.duration_days, saved.updated_by.as_str()),
        (Some(90), ADMIN)
    );
    settled(&h).await?;
    let records = audit_records(&crate::audit::auditor(&h)).await?;
    let audited = records
        .iter()
        .find(|r| r.event_type == "audit.alert_configuration_updated")
        .expect("the change is in the audit log");
    assert_eq!(audited.actor_id, ADMIN);
    assert!(
        audited.payload_json.contains("\"duration_days\":90"),
        "{}",
        audited.payload_json
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_read_and_only_admins_configure_dismiss_or_refresh() -> anyhow::Result<()> {
    let h = harness().await?;
    assign_active(&h, "greta", roles::GLOBAL_READER).await?;
    assign_active(&h, "priya", roles::PRIVILEGED_ROLE_ADMINISTRATOR).await?;
    let listed = alerts(&h, "greta")
        .alerts()
        .list_alerts(ListAlertsRequest {})
        .await?
        .into_inner()
        .alerts;
    assert_eq!(listed.len(), 8, "Entra's six that apply, and PIM's two");
    let denied = alerts(&h, "nobody")
        .alerts()
        .list_alerts(ListAlertsRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let change = AlertConfiguration {
        alert_id: GUEST.into(),
        enabled: false,
        ..Default::default()
    };
    let denied = configure(&h, "greta", change.clone()).await.unwrap_err();
    assert_eq!(
        denied.code(),
        Code::PermissionDenied,
        "a reader may not configure"
    );
    let denied = alerts(&h, "greta")
        .alerts()
        .refresh_alerts(RefreshAlertsRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let saved = configure(&h, "priya", change).await?;
    assert!(!saved.enabled, "a Privileged Role Administrator may");
    h.stop().await;
    Ok(())
}

/// The open incidents of every alert, without their ids, in a stable order.
async fn answer(h: &Harness) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let listed = alerts(h, ADMIN)
        .alerts()
        .list_alerts(ListAlertsRequest {})
        .await?
        .into_inner()
        .alerts;
    for a in listed {
        let id = a.definition.unwrap_or_default().id;
        for i in alert(h, &id).await?.incidents {
            out.push(format!(
                "{id} {} {} {} {} count={} first={:?} last={:?} {}",
                i.principal_id,
                i.role_id,
                i.scope,
                i.schedule_id,
                i.count,
                i.first_seen,
                i.last_seen,
                i.detail
            ));
        }
    }
    out.sort();
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_from_the_stored_log_gives_the_same_answer_as_continuous_evaluation()
-> anyhow::Result<()> {
    let h = harness().await?;
    configure(
        &h,
        ADMIN,
        AlertConfiguration {
            alert_id: FREQUENT.into(),
            enabled: true,
            activation_count_threshold: Some(2),
            ..Default::default()
        },
    )
    .await?;
    configure(
        &h,
        ADMIN,
        AlertConfiguration {
            alert_id: TOO_MANY_GAS.into(),
            enabled: true,
            global_admin_count_threshold: Some(2),
            global_admin_percentage_threshold: Some(20),
            ..Default::default()
        },
    )
    .await?;
    sync(
        &h,
        UpsertPrincipalsRequest {
            principals: vec![
                user(ADMIN),
                pim_proto::assignment::v1::Principal {
                    guest: true,
                    ..user("alice")
                },
            ],
            ..Default::default()
        },
    )
    .await?;
    assign_active(&h, "ga-1", roles::GLOBAL_ADMINISTRATOR).await?;
    make_eligible(&h, "alice", "alice-eligible").await?;
    for n in 1..=3 {
        let alice = h.client(ServiceName::Activation, &h.mfa_token("alice"));
        activate(&alice, &format!("alice-{n}"), 10).await?;
        advance(&h, 11 * MINUTE_MS);
    }
    settled(&h).await?;
    let continuous = answer(&h).await?;
    for expected in [TOO_MANY_GAS, FREQUENT, GUEST, BREAK_GLASS] {
        assert!(
            continuous.iter().any(|line| line.starts_with(expected)),
            "{expected} in {continuous:#?}"
        );
    }

    // Forget everything the alerts learnt from the streams, then recompute it from the log.
    let audit = h.service(ServiceName::Audit).db();
    for table in [
        "alert_schedules",
        "alert_principals",
        "alert_activations",
        "alert_break_glass_uses",
        "alert_roles",
        "alert_policies",
    ] {
        audit
            .execute_unprepared(&format!("DELETE FROM {table}"))
            .await?;
    }
    let refreshed = alerts(&h, ADMIN)
        .alerts()
        .refresh_alerts(RefreshAlertsRequest {})
        .await?
        .into_inner();
    assert!(refreshed.records_scanned > 20);
    assert_eq!(
        (refreshed.incidents_raised, refreshed.incidents_resolved),
        (0, 0),
        "nothing new, nothing gone"
    );
    assert_eq!(answer(&h).await?, continuous);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_raised_by_activity_reaches_an_admins_inbox() -> anyhow::Result<()> {
    // Every alert on, whatever the notification suite's defaults are.
    let w = crate::notification::world(&[("PIM_ALERTS_DISABLED", "")]).await?;
    // The world's directory sync named the break-glass admin; its next act raises the alert.
    make_eligible(&w.h, "alice", "alice-eligible").await?;
    let mail =
        w.h.eventually(std::time::Duration::from_secs(30), || async {
            Ok(w.smtp
                .messages_to(&crate::notification::email_of(ADMIN))
                .into_iter()
                .find(|m| m.subject.contains("break-glass")))
        })
        .await?;
    assert_eq!(
        mail.subject,
        "PIM: Security alert (high): A break-glass account was used"
    );
    assert!(mail.text.contains("admin-breakglass"), "{}", mail.text);
    assert!(mail.text.contains("pim alerts show"), "{}", mail.text);
    w.h.stop().await;
    Ok(())
}
