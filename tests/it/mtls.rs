//! gRPC over mutual TLS: services serve and call each other with certificates, and a client
//! without a certificate the CA signed gets nowhere.

use std::time::Duration;

use pim_client::{Credentials, PimClient};
use pim_config::ServiceName;
use pim_proto::activation::v1::RequestStatus;
use pim_testkit::{ADMIN, Harness, HarnessOptions, client_tls};

use crate::support::{SCOPE, activate, check_access, make_eligible};

fn keys(name: &str) -> String {
    format!("{}/../libs/testkit/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_skeleton_runs_over_mutual_tls_and_clients_without_a_trusted_certificate_are_refused()
-> anyhow::Result<()> {
    let h = Harness::start_with(HarnessOptions {
        mtls: true,
        ..Default::default()
    })
    .await?;
    assert!(h.url(ServiceName::Assignment).starts_with("https://"));
    make_eligible(&h, "alice", "tls-eligible").await?;
    let granted = activate(
        &h.client(ServiceName::Activation, &h.mfa_token("alice")),
        "tls-1",
        30,
    )
    .await?
    .request
    .unwrap_or_default();
    assert_eq!(
        granted.status(),
        RequestStatus::Provisioned,
        "activation called assignment over mTLS"
    );
    assert!(
        check_access(
            &h.client(ServiceName::Assignment, &h.token("alice")),
            "alice",
            SCOPE
        )
        .await?
        .allowed
    );

    let url = h.url(ServiceName::Assignment).to_owned();
    let token = Credentials::Token(h.token(ADMIN));
    let (stranger_cert, stranger_key) = (keys("stranger.pem"), keys("stranger.key"));
    let refused = [
        (
            "plaintext",
            pim_client::channel(
                &url.replace("https://", "http://"),
                Duration::from_secs(5),
                None,
            )?,
        ),
        (
            "no client certificate",
            pim_client::channel(&url, Duration::from_secs(5), Some(client_tls(None)))?,
        ),
        (
            "certificate from another CA",
            pim_client::channel(
                &url,
                Duration::from_secs(5),
                Some(client_tls(Some((&stranger_cert, &stranger_key)))),
            )?,
        ),
    ];
    for (case, channel) in refused {
        let client = PimClient::new(channel, token.clone());
        assert!(
            check_access(&client, ADMIN, "/").await.is_err(),
            "{case} was served"
        );
    }
    h.stop().await;
    Ok(())
}
