//! Secrets never reach the logs: with every PIM service logging at `debug` through the JSON
//! layer operators run, a person's bearer token (accepted and refused), a webhook
//! subscription's secret and the SMTP password in configuration are each used for real — a
//! signed webhook is delivered, the SMTP server sees the login — and none of them, nor the
//! encodings they travel in, appears in a single log line.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use pim_auth::TokenSigner;
use pim_config::ServiceName;
use pim_proto::{assignment::v1::ListRolesRequest, notification::v1::DeliveryStatus};
use pim_testkit::{ADMIN, OTHER_PRIVATE_KEY};

use crate::{
    notification::{settled, subscribe, world},
    support::make_eligible,
};

/// Log lines as the services write them.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut all) = self.0.lock() {
            all.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|all| String::from_utf8_lossy(&all).into_owned())
            .unwrap_or_default()
    }
}

// One thread runs every service of the test, so the log subscriber set for this thread sees
// all they write, and no other test's lines.
#[tokio::test(flavor = "current_thread")]
async fn tokens_webhook_secrets_and_smtp_passwords_never_reach_the_logs() -> anyhow::Result<()> {
    let logs = Captured::default();
    let writer = logs.clone();
    let dispatch = pim_telemetry::log_dispatch("debug", move || writer.clone())?;
    let _logging = tracing::dispatcher::set_default(&dispatch);

    let smtp_password = "smtp-pw-7f3a9c1e";
    let w = world(&[
        ("PIM_SMTP_USERNAME", "pim-relay"),
        ("PIM_SMTP_PASSWORD", smtp_password),
    ])
    .await?;
    let subscription = subscribe(&w, "redaction-hook", &["assignment.*"]).await?;
    let webhook_secret = subscription.secret.clone();
    assert!(webhook_secret.starts_with("whsec_"), "{webhook_secret}");

    // A person's token, used for a change that mails two people and calls the webhook.
    let token = w.h.mfa_token(ADMIN);
    make_eligible(&w.h, "alice", "redaction-eligible").await?;
    let delivered = settled(
        &w.h,
        "assignment.schedule_created",
        3,
        DeliveryStatus::Delivered,
    )
    .await?;
    assert_eq!(delivered.len(), 3, "two e-mails and one webhook");
    assert!(
        !w.receiver.accepted().is_empty(),
        "the webhook was signed with the secret and accepted"
    );
    assert!(
        w.smtp
            .logins()
            .iter()
            .any(|(user, password)| user == "pim-relay" && password == smtp_password),
        "the SMTP server saw the password"
    );
    // A token the services refuse: forged with a key they do not trust.
    let forged = TokenSigner::from_pem(
        &std::fs::read(OTHER_PRIVATE_KEY)?,
        "pim",
        "pim",
        w.h.clock.clone(),
    )?;
    let forged = forged.sign(&forged.claims(ADMIN, 600))?;
    let refused =
        w.h.client(ServiceName::Assignment, &forged)
            .assignment()
            .list_roles(ListRolesRequest::default())
            .await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(tonic::Code::Unauthenticated)
    );
    // Let the last attempts' and the refusal's lines be written.
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.h.stop().await;

    let text = logs.text();
    let lines = text.lines().count();
    // Enough to show the capture works; how many lines a run writes depends on timing.
    assert!(
        lines >= 10 && text.contains("\"target\":\"pim_"),
        "the services' own lines were captured ({lines} lines)"
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let secret_key = webhook_secret.trim_start_matches("whsec_");
    let smtp_login = b64.encode(format!("\0pim-relay\0{smtp_password}"));
    for (what, secret) in [
        ("the bearer token", token.as_str()),
        ("the token's signature", signature(&token)),
        ("the forged token", forged.as_str()),
        ("the webhook secret", webhook_secret.as_str()),
        ("the webhook secret's key", secret_key),
        ("the SMTP password", smtp_password),
        ("the SMTP login", smtp_login.as_str()),
    ] {
        if let Some(line) = text.lines().find(|l| l.contains(secret)) {
            panic!("{what} reached the logs: {line}");
        }
    }
    Ok(())
}

/// The part of a JWT nobody but its holder can make.
fn signature(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}
