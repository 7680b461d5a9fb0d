//! All five services in-process on port 0, over real gRPC, real PostgreSQL and real Redis, with
//! one manual clock and RS256 tokens for any caller.

use std::{collections::HashMap, sync::Arc, time::Duration};

use pim_auth::TokenSigner;
use pim_client::{Credentials, PimClient};
use pim_clock::ManualClock;
use pim_config::{ServiceName, Settings, Source};
use pim_host::{HostDeps, RunningService};
use tokio::net::TcpListener;

use crate::{RedisKeys, TestDatabase, engines::redis_url};

pub const ISSUER_PRIVATE_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/keys/issuer.key");
pub const ISSUER_PUBLIC_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/keys/issuer.pub");
/// A key the services do not trust.
pub const OTHER_PRIVATE_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/keys/other.key");

/// The break-glass Global Administrator every harness starts with.
pub const ADMIN: &str = "admin-breakglass";

pub const TLS_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/keys/ca.pem");
pub const TLS_CERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/keys/server.pem");
pub const TLS_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/keys/server.key");

#[derive(Default)]
pub struct HarnessOptions {
    /// Every service serves and calls its peers over mutual TLS.
    pub mtls: bool,
    /// People's tokens are verified through a JWKS served over HTTP (tokens carry `kid`); the
    /// services' own tokens through the PEM key.
    pub jwks: bool,
    /// A Redis of the test's own (fault tests); the shared one otherwise.
    pub redis_url: Option<String>,
    /// Extra settings for every service, such as short reclaim or gap timings.
    pub settings: Vec<(String, String)>,
}

pub struct Harness {
    pub clock: Arc<ManualClock>,
    mtls: bool,
    _jwks: Option<crate::JwksServer>,
    pub prefix: String,
    pub redis_url: String,
    signer: TokenSigner,
    base: Source,
    urls: HashMap<ServiceName, String>,
    services: HashMap<ServiceName, RunningService>,
    databases: HashMap<ServiceName, TestDatabase>,
    /// Last, so it drops after the services: deletes the test's Redis keys.
    _redis_keys: RedisKeys,
}

/// TLS that trusts the test CA, presenting `identity` (certificate and key files) if given.
pub fn client_tls(identity: Option<(&str, &str)>) -> pim_client::ClientTlsConfig {
    let read = |path: &str| std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut config = pim_client::ClientTlsConfig::new()
        .ca_certificate(pim_client::Certificate::from_pem(read(TLS_CA)));
    if let Some((cert, key)) = identity {
        config = config.identity(pim_client::Identity::from_pem(read(cert), read(key)));
    }
    config
}

/// Starts one context with the harness's settings; used to restart a service mid-test.
pub async fn start_service(
    settings: Settings,
    clock: Arc<ManualClock>,
    listener: TcpListener,
) -> anyhow::Result<RunningService> {
    pim_cli::start_service(
        settings,
        HostDeps {
            clock,
            listener: Some(listener),
            local_bus: None,
        },
    )
    .await
}

impl Harness {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(HarnessOptions::default()).await
    }

    pub async fn start_with(options: HarnessOptions) -> anyhow::Result<Self> {
        let clock = ManualClock::starting_now();
        let redis_url = options.redis_url.unwrap_or_else(redis_url);
        let redis_keys = RedisKeys::new(redis_url.clone());
        let prefix = redis_keys.prefix.clone();
        let mut base = Source::from_pairs([
            ("PIM_AUTH_PUBLIC_KEY_FILE", ISSUER_PUBLIC_KEY),
            ("PIM_SERVICE_SIGNING_KEY_FILE", ISSUER_PRIVATE_KEY),
            ("PIM_BREAK_GLASS_PRINCIPALS", ADMIN),
            ("PIM_DB_POOL_MAX", "6"),
            ("PIM_EVENTS_RELAY_POLL_MS", "10"),
            ("PIM_EVENTS_GAP_CHECK_MS", "100"),
            ("PIM_SHUTDOWN_DRAIN_SECS", "5"),
            ("PIM_LOG", "warn"),
        ]);
        base.set("PIM_REDIS_URL", redis_url.clone());
        base.set("PIM_STREAM_PREFIX", prefix.clone());
        if options.mtls {
            base.set("PIM_TLS_CERT_FILE", TLS_CERT);
            base.set("PIM_TLS_KEY_FILE", TLS_KEY);
            base.set("PIM_TLS_CLIENT_CA_FILE", TLS_CA);
            base.set("PIM_TLS_PEER_CA_FILE", TLS_CA);
        }
        for (key, value) in options.settings {
            base.set(key, value);
        }
        let scheme = if options.mtls { "https" } else { "http" };
        let jwks = match options.jwks {
            true => Some(crate::JwksServer::start().await?),
            false => None,
        };
        if let Some(server) = &jwks {
            base.set("PIM_AUTH_JWKS_URL", server.url.clone());
        }
        let mut listeners = Vec::new();
        let mut urls = HashMap::new();
        for service in ServiceName::ALL {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("{scheme}://{}", listener.local_addr()?);
            base.set(service.url_key(), url.clone());
            urls.insert(service, url);
            listeners.push((service, listener));
        }
        let mut signer = TokenSigner::from_pem(
            &std::fs::read(ISSUER_PRIVATE_KEY)?,
            "pim",
            "pim",
            clock.clone(),
        )?;
        if jwks.is_some() {
            signer = signer.with_kid(crate::ISSUER_KID);
        }
        let mut harness = Self {
            clock,
            mtls: options.mtls,
            _jwks: jwks,
            prefix,
            redis_url,
            signer,
            base,
            urls,
            services: HashMap::new(),
            databases: HashMap::new(),
            _redis_keys: redis_keys,
        };
        for (service, _) in &listeners {
            harness
                .databases
                .insert(*service, TestDatabase::fresh(*service).await?);
        }
        for (service, listener) in listeners {
            let running =
                start_service(harness.settings(service)?, harness.clock.clone(), listener).await?;
            harness.services.insert(service, running);
        }
        Ok(harness)
    }

    /// The settings a service of this harness runs with.
    pub fn settings(&self, service: ServiceName) -> anyhow::Result<Settings> {
        let mut source = self.base.clone();
        if let Some(db) = self.databases.get(&service) {
            source.set("PIM_DATABASE_URL", db.url.clone());
        }
        Ok(Settings::load(service, &source)?)
    }

    pub fn url(&self, service: ServiceName) -> &str {
        &self.urls[&service]
    }

    pub fn service(&self, service: ServiceName) -> &RunningService {
        &self.services[&service]
    }

    /// Stops one service (graceful shutdown); its port and database stay reserved for a restart.
    pub async fn stop_service(&mut self, service: ServiceName) {
        if let Some(running) = self.services.remove(&service) {
            running.shutdown().await;
        }
    }

    /// Changes a setting for services started from now on, for example before a restart.
    pub fn set_setting(&mut self, key: &str, value: &str) {
        self.base.set(key, value.to_owned());
    }

    /// Starts a stopped service again on its old port, with its old database.
    pub async fn restart_service(&mut self, service: ServiceName) -> anyhow::Result<()> {
        let addr = self.urls[&service]
            .split("://")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let listener = TcpListener::bind(&addr).await?;
        let running = start_service(self.settings(service)?, self.clock.clone(), listener).await?;
        self.services.insert(service, running);
        Ok(())
    }

    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }

    /// A token for a person who signed in with a password only.
    pub fn token(&self, principal: &str) -> String {
        self.sign(principal, false)
    }

    /// A token for a person who did MFA.
    pub fn mfa_token(&self, principal: &str) -> String {
        self.sign(principal, true)
    }

    fn sign(&self, principal: &str, mfa: bool) -> String {
        let mut claims = self.signer.claims(principal, 3600);
        if mfa {
            claims.amr.push("mfa".into());
        }
        self.signer.sign(&claims).unwrap_or_default()
    }

    /// A token with the identity of one of PIM's services.
    pub fn service_token(&self, service: ServiceName) -> String {
        self.signer
            .service_token(service.as_str())
            .unwrap_or_default()
    }

    /// Clients of `service`, presenting `token` (and the test certificate under mTLS).
    pub fn client(&self, service: ServiceName, token: &str) -> PimClient {
        let tls = self.mtls.then(|| client_tls(Some((TLS_CERT, TLS_KEY))));
        let channel = pim_client::channel(self.url(service), Duration::from_secs(10), tls)
            .unwrap_or_else(|e| panic!("client: {e}"));
        PimClient::new(channel, Credentials::Token(token.to_owned()))
    }

    /// Polls `check` until it yields a value; gives up after `within`. For effects that arrive
    /// asynchronously through the bus, never for the passage of domain time.
    pub async fn eventually<T, F, Fut>(&self, within: Duration, mut check: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
    {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(value) = check().await? {
                return Ok(value);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "condition not met within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every service, then drops their databases.
    pub async fn stop(mut self) {
        // Consumers first, so none of them calls a peer that is already gone.
        for service in ServiceName::ALL.into_iter().rev() {
            self.stop_service(service).await;
        }
        self.databases.clear();
    }
}
