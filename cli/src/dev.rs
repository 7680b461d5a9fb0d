//! `pim dev`: all five contexts in one process. By default on SQLite files in a data directory
//! with the in-process bus over the outbox tables, so a restart loses no committed event; with
//! `--database-url` and `--redis-url`, against real engines.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use pim_auth::TokenSigner;
use pim_clock::{SharedClock, SystemClock};
use pim_config::{ServiceName, Settings, Source};
use pim_host::{HostDeps, LocalBus, RunningService};
use tokio::net::TcpListener;

/// The principal `pim dev` makes break-glass Global Administrator.
pub const BOOTSTRAP_ADMIN: &str = "admin";

#[derive(Clone)]
pub struct DevOptions {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    /// Ports are `base_port + 0..5`; 0 picks free ports (tests).
    pub base_port: u16,
    pub clock: Option<SharedClock>,
}

impl Default for DevOptions {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".pim-dev"),
            database_url: None,
            redis_url: None,
            base_port: 50051,
            clock: None,
        }
    }
}

pub struct DevSystem {
    pub services: Vec<RunningService>,
    pub signer: TokenSigner,
}

impl DevSystem {
    pub fn url(&self, service: ServiceName) -> String {
        self.services
            .iter()
            .find(|s| s.name == service)
            .map(RunningService::url)
            .unwrap_or_default()
    }

    pub async fn shutdown(self) {
        for service in self.services {
            service.shutdown().await;
        }
    }
}

/// The dev HS256 secret, created once per data directory so tokens survive restarts.
pub fn dev_secret(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("dev-hs256-secret");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        return Ok(secret.trim().to_owned());
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(&path, &secret)?;
    Ok(secret)
}

pub async fn start(options: DevOptions) -> anyhow::Result<DevSystem> {
    let secret = dev_secret(&options.data_dir)?;
    let clock: SharedClock = options
        .clock
        .clone()
        .unwrap_or_else(|| Arc::new(SystemClock));
    let mut listeners = Vec::new();
    for (i, service) in ServiceName::ALL.into_iter().enumerate() {
        let port = if options.base_port == 0 {
            0
        } else {
            options.base_port + i as u16
        };
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .with_context(|| format!("binding the {service} port {port}"))?;
        listeners.push((service, listener));
    }
    let mut base = Source::from_env()?;
    base.set("PIM_AUTH_DEV_MODE", "true");
    base.set("PIM_AUTH_DEV_HS256_SECRET", secret.clone());
    base.set("PIM_BREAK_GLASS_PRINCIPALS", BOOTSTRAP_ADMIN);
    base.set("PIM_DB_POOL_MAX", "5");
    if base.raw("PIM_LOG_FORMAT").is_none() {
        base.set("PIM_LOG_FORMAT", "pretty");
    }
    if base.raw("PIM_LOG").is_none() {
        base.set("PIM_LOG", "warn");
    }
    for (service, listener) in &listeners {
        base.set(
            service.url_key(),
            format!("http://{}", listener.local_addr()?),
        );
    }
    match &options.redis_url {
        Some(url) => base.set("PIM_REDIS_URL", url.clone()),
        None => base.set("PIM_REDIS_URL", ""),
    }
    let bus = LocalBus::default();
    let mut services = Vec::new();
    for (service, listener) in listeners {
        let mut source = base.clone();
        let url = match &options.database_url {
            Some(server) => {
                let name = service.database_name();
                pim_db::ensure_postgres_database(server, &name).await?;
                pim_db::with_database(server, &name)
            }
            None => format!(
                "sqlite://{}/{}.db?mode=rwc",
                options.data_dir.display(),
                service.database_name()
            ),
        };
        source.set("PIM_DATABASE_URL", url);
        let settings = Settings::load(service, &source)?;
        let deps = HostDeps {
            clock: clock.clone(),
            listener: Some(listener),
            local_bus: Some(bus.clone()),
        };
        services.push(crate::start_service(settings, deps).await?);
    }
    let signer = TokenSigner::hs256(secret.as_bytes(), "pim", "pim", clock);
    Ok(DevSystem { services, signer })
}
