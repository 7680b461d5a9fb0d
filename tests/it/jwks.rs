//! Tokens verified through an identity provider's JWKS, while PIM's services keep signing their
//! own identities with the service key.

use pim_auth::TokenSigner;
use pim_client::{Credentials, PimClient};
use pim_config::ServiceName;
use pim_proto::activation::v1::RequestStatus;
use pim_testkit::{ADMIN, Harness, HarnessOptions, ISSUER_PRIVATE_KEY};
use tonic::Code;

use crate::support::{SCOPE, activate, check_access, make_eligible};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_are_verified_through_the_jwks_and_services_through_their_own_key()
-> anyhow::Result<()> {
    let h = Harness::start_with(HarnessOptions {
        jwks: true,
        ..Default::default()
    })
    .await?;
    make_eligible(&h, "alice", "jwks-eligible").await?;
    let granted = activate(
        &h.client(ServiceName::Activation, &h.mfa_token("alice")),
        "jwks-1",
        30,
    )
    .await?
    .request
    .unwrap_or_default();
    // Activation reached assignment with its own service token, which carries no kid.
    assert_eq!(granted.status(), RequestStatus::Provisioned);

    let url = h.url(ServiceName::Assignment).to_owned();
    let issuer_key = std::fs::read(ISSUER_PRIVATE_KEY)?;
    let no_kid = TokenSigner::from_pem(&issuer_key, "pim", "pim", h.clock.clone())?;
    let unknown_kid =
        TokenSigner::from_pem(&issuer_key, "pim", "pim", h.clock.clone())?.with_kid("retired-2019");
    for (case, signer) in [
        ("a person's token without kid", no_kid),
        ("an unknown kid", unknown_kid),
    ] {
        let token = signer.sign(&signer.claims(ADMIN, 300))?;
        let client = PimClient::connect(&url, Credentials::Token(token))?;
        let refused = check_access(&client, ADMIN, SCOPE).await.unwrap_err();
        let status = refused.downcast_ref::<tonic::Status>().unwrap();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}");
    }
    h.stop().await;
    Ok(())
}
