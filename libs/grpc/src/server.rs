//! Serving one context: layers in one place, health and reflection, and a shutdown that drains
//! in-flight requests for at most a deadline.

use std::{sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{service::RoutesBuilder, transport::Server};
use tonic_health::server::HealthReporter;
use tower::{ServiceBuilder, limit::GlobalConcurrencyLimitLayer, load_shed::LoadShedLayer};

use crate::{AccessPolicy, AuthLayer, DenialRecorder, TraceLayer};

pub struct ServerOptions {
    pub service: &'static str,
    pub timeout: Duration,
    pub concurrency_limit: usize,
    pub drain: Duration,
    pub verifier: pim_auth::Verifier,
    pub policy: AccessPolicy,
    pub denials: Arc<dyn DenialRecorder>,
    /// Server TLS, with client-certificate checks when it carries a client CA.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
}

/// Serves `routes` plus health and reflection on `listener` until `shutdown` fires, then drains
/// for at most `options.drain`. Health starts as NOT_SERVING; the caller flips it once the
/// database and the bus answer.
pub async fn serve(
    listener: TcpListener,
    mut routes: RoutesBuilder,
    health: (
        HealthReporter,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    ),
    options: ServerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (reporter, health_service) = health;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pim_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let layers = ServiceBuilder::new()
        // Shedding sits outside the process-wide limit, so excess load gets RESOURCE_EXHAUSTED
        // at once instead of queueing.
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(options.concurrency_limit))
        .layer(TraceLayer::new(options.service))
        .layer(AuthLayer::new(
            options.verifier,
            options.policy,
            options.denials,
        ))
        .into_inner();
    routes.add_service(health_service).add_service(reflection);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let drain = options.drain;
    let stop = shutdown.clone();
    let mut builder = Server::builder();
    if let Some(tls) = options.tls {
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        .timeout(options.timeout)
        .layer(layers)
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map_err(Into::into),
        () = shutdown.cancelled() => {}
    }
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    match tokio::time::timeout(drain, server).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => {
            tracing::warn!(
                service = options.service,
                "drain deadline passed; closing remaining connections"
            );
            Ok(())
        }
    }
}
