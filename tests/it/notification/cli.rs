//! `pim webhooks …` and `pim deliveries …` over real gRPC, as an admin sees them: a
//! subscription created with its secret shown once, a test event delivered, deliveries listed
//! with their attempts, a refused retry reported, statistics; and an SMTP password sealed
//! offline that the service opens.

use pim_cli::{
    admin::Output,
    webhooks::{DeliveryCommand, WebhookCommand, run_deliveries, run_webhooks},
};
use pim_proto::notification::v1::DeliveryStatus;

use pim_config::ServiceName;

use super::{SECRET_KEY, admin, settled, world};
use crate::support::make_eligible;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_webhooks_and_deliveries_from_the_command_line() -> anyhow::Result<()> {
    let w = world(&[("PIM_SMTP_HOST", "")]).await?;
    let client = admin(&w.h);

    let created = run_webhooks(
        WebhookCommand::Create {
            url: w.receiver.url("/pim"),
            events: vec!["approval.*".into()],
            description: "SOC".into(),
            secret: None,
            request_id: Some("cli-1".into()),
            dry_run: false,
        },
        &client,
        Output::Json,
    )
    .await?;
    let created: serde_json::Value = serde_json::from_str(&created)?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let secret = created["secret"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    w.receiver.set_secret(&secret);

    let listed = run_webhooks(WebhookCommand::List, &client, Output::Table).await?;
    assert!(
        listed.contains(&id) && listed.contains("approval.*"),
        "{listed}"
    );
    assert!(!listed.contains(&secret), "the secret is shown only once");

    run_webhooks(
        WebhookCommand::Test { id: id.clone() },
        &client,
        Output::Table,
    )
    .await?;
    let delivered = settled(&w.h, "notification.test", 1, DeliveryStatus::Delivered).await?;
    assert!(w.receiver.accepted()[0].verified);

    let table = run_deliveries(
        DeliveryCommand::List {
            event_id: None,
            event_type: Some("notification.test".into()),
            recipient: None,
            channel: None,
            status: None,
            limit: 10,
        },
        &client,
        Output::Table,
    )
    .await?;
    assert!(table.text.contains(&delivered[0].id), "{}", table.text);
    assert!(table.text.contains("delivered"), "{}", table.text);

    let refused = run_deliveries(
        DeliveryCommand::Retry {
            ids: vec![delivered[0].id.clone()],
        },
        &client,
        Output::Table,
    )
    .await?;
    assert!(refused.failed);
    assert!(
        refused.text.contains("NOT_DEAD_LETTERED"),
        "{}",
        refused.text
    );

    let stats = run_deliveries(DeliveryCommand::Stats, &client, Output::Json).await?;
    let stats: serde_json::Value = serde_json::from_str(&stats.text)?;
    assert_eq!(stats["counts"][0]["channel"], "webhook");
    assert_eq!(stats["counts"][0]["status"], "delivered");
    assert_eq!(stats["counts"][0]["count"], 1);

    let disabled = run_webhooks(WebhookCommand::Disable { id }, &client, Output::Json).await?;
    assert!(disabled.contains("\"enabled\":false"), "{disabled}");
    w.h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_smtp_password_is_opened_to_authenticate_and_never_printed() -> anyhow::Result<()>
{
    let mut w = world(&[]).await?;
    let sealed = run_webhooks(
        WebhookCommand::SealSecret {
            value: "hunter2-smtp".into(),
            key: SECRET_KEY.into(),
        },
        &admin(&w.h),
        Output::Table,
    )
    .await?;
    let sealed = sealed.trim().to_owned();
    assert!(
        sealed.starts_with("enc:") && !sealed.contains("hunter2"),
        "{sealed}"
    );

    // Configured with the sealed password, the service opens it and authenticates with it.
    w.h.stop_service(ServiceName::Notification).await;
    w.h.set_setting("PIM_SMTP_USERNAME", "pim-relay");
    w.h.set_setting("PIM_SMTP_PASSWORD", &sealed);
    w.h.restart_service(ServiceName::Notification).await?;
    make_eligible(&w.h, "alice", "alice-eligible").await?;
    settled(
        &w.h,
        "assignment.schedule_created",
        2,
        DeliveryStatus::Delivered,
    )
    .await?;
    let logins = w.smtp.logins();
    assert!(!logins.is_empty());
    assert!(
        logins
            .iter()
            .all(|(user, password)| user == "pim-relay" && password == "hunter2-smtp"),
        "{logins:?}"
    );

    // With the wrong key it refuses to start, names the key, and prints no secret.
    w.h.stop_service(ServiceName::Notification).await;
    w.h.set_setting(
        "PIM_NOTIFICATION_SECRET_KEY",
        "b3RoZXItbm90aWZpY2F0aW9uLWtleS0zMi1ieXRlcyE=",
    );
    let error = format!(
        "{:?}",
        w.h.restart_service(ServiceName::Notification)
            .await
            .expect_err("a wrong key stops start-up")
    );
    assert!(error.contains("PIM_SMTP_PASSWORD"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
    w.smtp.stop().await;
    w.h.stop().await;
    Ok(())
}
