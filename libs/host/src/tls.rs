//! TLS for gRPC from configuration: the server identity, optional client-certificate checks
//! (mTLS), and the client side used to call peers.

use anyhow::Context as _;
use pim_config::Settings;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

fn read(path: &std::path::Path, key: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{key} {}", path.display()))
}

fn identity(settings: &Settings) -> anyhow::Result<Option<Identity>> {
    let Some(tls) = &settings.grpc.tls else {
        return Ok(None);
    };
    Ok(Some(Identity::from_pem(
        read(&tls.cert_file, "PIM_TLS_CERT_FILE")?,
        read(&tls.key_file, "PIM_TLS_KEY_FILE")?,
    )))
}

pub(crate) fn server(settings: &Settings) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(tls), Some(identity)) = (&settings.grpc.tls, identity(settings)?) else {
        return Ok(None);
    };
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca_file {
        config = config.client_ca_root(Certificate::from_pem(read(ca, "PIM_TLS_CLIENT_CA_FILE")?));
    }
    Ok(Some(config))
}

pub(crate) fn peers(settings: &Settings) -> anyhow::Result<Option<ClientTlsConfig>> {
    let Some(ca) = settings
        .grpc
        .tls
        .as_ref()
        .and_then(|t| t.peer_ca_file.as_ref())
    else {
        return Ok(None);
    };
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca, "PIM_TLS_PEER_CA_FILE")?));
    if let Some(identity) = identity(settings)? {
        config = config.identity(identity);
    }
    Ok(Some(config))
}
