//! A real HTTP endpoint serving the test issuer's JWKS, as an identity provider would.

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};
use tokio_util::sync::{CancellationToken, DropGuard};

/// The test issuer's public key as a JWK, `kid` "issuer".
pub const ISSUER_JWK: &str = include_str!("../../auth/tests-data/issuer.jwk.json");
/// The `kid` under which the JWKS publishes the test issuer's key.
pub const ISSUER_KID: &str = "issuer";

/// Serves `{"keys": [issuer]}` on every request until dropped.
pub struct JwksServer {
    pub url: String,
    _stop: DropGuard,
}

impl JwksServer {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr()?);
        let body = format!("{{\"keys\": [{ISSUER_JWK}]}}");
        let stop = CancellationToken::new();
        let cancelled = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = cancelled.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut socket, _)) = accepted else {
                    continue;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    let mut request = [0_u8; 4096];
                    // One read holds the request line and headers of a GET.
                    if socket.read(&mut request).await.is_ok() {
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(response.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    }
                });
            }
        });
        Ok(Self {
            url,
            _stop: stop.drop_guard(),
        })
    }
}
