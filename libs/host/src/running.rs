//! Starting and stopping one hosted context.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use pim_auth::{JwksCache, JwksConfig, KeyMaterial, TokenSigner, Verifier};
use pim_client::{Credentials, ServiceToken};
use pim_clock::SharedClock;
use pim_config::{ServiceName, Settings};
use pim_db::PoolSize;
use pim_events::{
    ConsumerOptions, GapFiller, GrpcReplaySource, Inbox, Outbox, OutboxReplaySource, RedisConsumer,
    RedisPublisher, Relay, RelayOptions, ReplayServer, SecurityEvents, stream_key,
};
use pim_grpc::{HealthReporter, ServerOptions, ServingStatus};
use pim_proto::events::v1::event_replay_service_server::EventReplayServiceServer;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    ContextService, HostContext, LocalBus, Peers,
    bus::{consumers_of, producers_for},
};

/// What the process gives a hosted context beyond its settings.
pub struct HostDeps {
    pub clock: SharedClock,
    /// A listener bound by the caller (tests bind port 0); otherwise `PIM_LISTEN_ADDR` is bound.
    pub listener: Option<TcpListener>,
    /// `pim dev`'s in-process bus, used when no Redis URL is configured.
    pub local_bus: Option<LocalBus>,
}

/// A context that is up. Dropping it does not stop it; call [`RunningService::shutdown`].
pub struct RunningService {
    pub name: ServiceName,
    pub addr: std::net::SocketAddr,
    pub context: HostContext,
    cancel: CancellationToken,
    tracker: TaskTracker,
    drain: Duration,
}

impl RunningService {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.context.db
    }

    /// Health NOT_SERVING, cancel, let consumers finish their entry, wait at most the drain
    /// deadline, then close the database.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.drain, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(service = %self.name, "tasks still running after the drain deadline");
        }
        if let Err(e) = self.context.db.clone().close().await {
            tracing::warn!(service = %self.name, error = %e, "closing the database failed");
        }
    }
}

/// The token verifier: a JWKS (refreshed by a task on `tracker`), a PEM key, or dev HS256.
pub(crate) async fn verifier(
    settings: &Settings,
    clock: SharedClock,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<Verifier> {
    let auth = &settings.auth;
    let pem = |path: &std::path::Path| -> anyhow::Result<KeyMaterial> {
        Ok(KeyMaterial::Pem(std::fs::read(path).with_context(
            || format!("PIM_AUTH_PUBLIC_KEY_FILE {}", path.display()),
        )?))
    };
    if let Some(url) = &auth.jwks_url {
        let jwks = JwksCache::fetch(url, JwksConfig::default())
            .await
            .context("PIM_AUTH_JWKS_URL")?;
        tracker.spawn(jwks.clone().run_refresh(cancel.clone()));
        let verifier = Verifier::from_jwks(jwks, &auth.issuer, &auth.audience, clock);
        return match &auth.public_key_file {
            Some(path) => Ok(verifier.with_service_key(pem(path)?)?),
            None => Ok(verifier),
        };
    }
    let key = match (&auth.public_key_file, &auth.dev_hs256_secret) {
        (Some(path), _) => pem(path)?,
        (None, Some(secret)) if auth.dev_mode => {
            KeyMaterial::Hs256(secret.expose().as_bytes().to_vec())
        }
        _ => anyhow::bail!("configuration key PIM_AUTH_PUBLIC_KEY_FILE is required"),
    };
    Verifier::new(key, &auth.issuer, &auth.audience, clock).context("token verification key")
}

pub(crate) fn signer(settings: &Settings, clock: SharedClock) -> anyhow::Result<TokenSigner> {
    let auth = &settings.auth;
    match (&auth.service_signing_key_file, &auth.dev_hs256_secret) {
        (Some(path), _) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("PIM_SERVICE_SIGNING_KEY_FILE {}", path.display()))?;
            TokenSigner::from_pem(&pem, &auth.issuer, &auth.audience, clock)
                .context("PIM_SERVICE_SIGNING_KEY_FILE")
        }
        (None, Some(secret)) if auth.dev_mode => Ok(TokenSigner::hs256(
            secret.expose().as_bytes(),
            &auth.issuer,
            &auth.audience,
            clock,
        )),
        _ => anyhow::bail!(
            "configuration key PIM_SERVICE_SIGNING_KEY_FILE is required to call peers"
        ),
    }
}

/// Starts context `S`: database and migrations, relay, consumers, gap fillers, gRPC server.
pub async fn start<S: ContextService>(
    settings: Settings,
    deps: HostDeps,
) -> anyhow::Result<RunningService> {
    let name = S::NAME;
    let settings = Arc::new(settings);
    let db = pim_db::connect(
        &settings.db.url,
        PoolSize {
            max: settings.db.pool_max,
            min: settings.db.pool_min,
        },
    )
    .await?;
    if settings.db.migrate_on_start {
        pim_db::migrate::<S::Migrator>(&db).await?;
    }
    let clock = deps.clock;
    let outbox = Outbox::new(name.as_str(), clock.clone());
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let security = SecurityEvents::start(
        db.clone(),
        outbox.clone(),
        settings.events.security_events_per_minute,
        cancel.clone(),
    );
    let verifier = verifier(&settings, clock.clone(), &tracker, &cancel).await?;
    let signer = signer(&settings, clock.clone())?;
    let peers = Peers::new(
        &settings,
        Credentials::Service(ServiceToken::new(signer, name.as_str(), clock.clone())),
    )?;
    let context = HostContext {
        service: name,
        settings: settings.clone(),
        db: db.clone(),
        clock: clock.clone(),
        outbox: outbox.clone(),
        security: security.clone(),
        peers: peers.clone(),
        cancel: cancel.clone(),
    };
    let built = S::build(context.clone()).await?;
    let events = &settings.events;
    let relay_options = RelayOptions {
        poll: events.relay_poll,
        replay_window: events.replay_window,
        ..RelayOptions::default()
    };
    let redis_url = events.redis_url.clone();
    match (&redis_url, &deps.local_bus) {
        (Some(url), _) => {
            let groups = consumers_of(name)
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect();
            let publisher = RedisPublisher::connect(
                url,
                stream_key(&events.stream_prefix, name.as_str()),
                groups,
            )
            .await?;
            spawn_in(
                &tracker,
                name,
                Relay::new(
                    db.clone(),
                    outbox.clone(),
                    Arc::new(publisher),
                    relay_options,
                )
                .run(cancel.clone()),
            );
            if let Some(handler) = &built.handler {
                for &producer in producers_for(name) {
                    let inbox =
                        Inbox::new(db.clone(), clock.clone(), name.as_str(), handler.clone());
                    let consumer = RedisConsumer::connect(
                        url,
                        stream_key(&events.stream_prefix, producer.as_str()),
                        inbox.clone(),
                        ConsumerOptions {
                            group: name.as_str().to_owned(),
                            consumer: format!("{name}-{}", uuid::Uuid::now_v7()),
                            batch: 200,
                            block: Duration::from_millis(500),
                            reclaim_idle: events.reclaim_idle,
                            max_attempts: events.max_attempts,
                        },
                    )
                    .await?;
                    spawn_in(&tracker, name, consumer.run(cancel.clone()));
                    let client = peers.get(producer).replay();
                    let source = GrpcReplaySource::new(move |request| {
                        let mut client = client.clone();
                        Box::pin(async move {
                            client
                                .replay(request)
                                .await
                                .map(tonic::Response::into_inner)
                        })
                    });
                    let filler = GapFiller::new(
                        inbox,
                        producer.as_str(),
                        Arc::new(source),
                        events.gap_grace,
                        events.gap_check,
                        events.max_attempts,
                    );
                    spawn_in(&tracker, name, filler.run(cancel.clone()));
                }
            }
        }
        (None, Some(bus)) => {
            bus.register(name, OutboxReplaySource::new(db.clone(), outbox.clone()));
            spawn_in(
                &tracker,
                name,
                Relay::new(db.clone(), outbox.clone(), Arc::new(()), relay_options)
                    .run(cancel.clone()),
            );
            if let Some(handler) = &built.handler {
                for &producer in producers_for(name) {
                    let inbox =
                        Inbox::new(db.clone(), clock.clone(), name.as_str(), handler.clone());
                    // Grace zero: every published event is due at once; the outbox is the bus.
                    let filler = GapFiller::new(
                        inbox,
                        producer.as_str(),
                        bus.source(producer),
                        Duration::ZERO,
                        Duration::from_millis(25),
                        events.max_attempts,
                    );
                    spawn_in(&tracker, name, filler.run(cancel.clone()));
                }
            }
        }
        (None, None) => anyhow::bail!("configuration key PIM_REDIS_URL is required"),
    }

    let listener = match deps.listener {
        Some(listener) => listener,
        None => TcpListener::bind(settings.grpc.listen)
            .await
            .with_context(|| format!("binding {}", settings.grpc.listen))?,
    };
    let addr = listener.local_addr()?;
    let mut routes = built.routes;
    routes.add_service(EventReplayServiceServer::new(ReplayServer::new(
        OutboxReplaySource::new(db.clone(), outbox.clone()),
    )));
    let all: Vec<&str> = ServiceName::ALL.iter().map(|s| s.as_str()).collect();
    let policy = S::access_policy().allow_services("/pim.events.v1.EventReplayService/", &all);
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    check_health(&reporter, &db, redis_url.as_deref()).await;
    tracker.spawn(watch_health(
        reporter.clone(),
        db.clone(),
        redis_url,
        cancel.clone(),
    ));
    let options = ServerOptions {
        service: name.as_str(),
        timeout: settings.grpc.timeout,
        concurrency_limit: settings.grpc.concurrency_limit,
        drain: settings.grpc.drain,
        verifier,
        policy,
        denials: Arc::new(security),
        tls: crate::tls::server(&settings)?,
    };
    let server_cancel = cancel.clone();
    tracker.spawn(async move {
        if let Err(e) = pim_grpc::serve(
            listener,
            routes,
            (reporter, health_service),
            options,
            server_cancel,
        )
        .await
        {
            tracing::error!(service = %name, error = ?e, "gRPC server failed");
        }
    });
    tracing::info!(service = %name, %addr, "serving");
    Ok(RunningService {
        name,
        addr,
        context,
        cancel,
        tracker,
        drain: settings.grpc.drain,
    })
}

/// Spawns a background task of context `name`: the spans it starts without a parent (a relay
/// step, a replayed event) are exported as that context's.
fn spawn_in<F>(tracker: &TaskTracker, name: ServiceName, task: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tracker.spawn(pim_telemetry::in_service(name.as_str(), task));
}

/// SERVING only while the database and the bus answer.
async fn check_health(reporter: &HealthReporter, db: &DatabaseConnection, redis_url: Option<&str>) {
    let db_ok = db.ping().await.is_ok();
    let bus_ok = match redis_url {
        None => true,
        Some(url) => ping_redis(url).await,
    };
    let status = if db_ok && bus_ok {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
}

async fn ping_redis(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let connect = client.get_multiplexed_async_connection();
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(mut connection)) => redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .is_ok(),
        _ => false,
    }
}

async fn watch_health(
    reporter: HealthReporter,
    db: DatabaseConnection,
    redis_url: Option<String>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                reporter.set_service_status("", ServingStatus::NotServing).await;
                return;
            }
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        check_health(&reporter, &db, redis_url.as_deref()).await;
    }
}
