//! Typed clients for PIM's services. Every call carries a bearer token and the current W3C
//! trace context; channels have a deadline; idempotent calls retry on `UNAVAILABLE`. The CLI
//! uses this crate, and so can any Rust service that calls PIM.

pub mod roles;
mod traced;

pub use traced::ClientSpans;

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

pub use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use pim_auth::TokenSigner;
use pim_clock::SharedClock;
use pim_proto::{
    activation::v1::activation_service_client::ActivationServiceClient,
    approval::v1::{
        approval_internal_service_client::ApprovalInternalServiceClient,
        approval_service_client::ApprovalServiceClient,
    },
    assignment::v1::{
        assignment_internal_service_client::AssignmentInternalServiceClient,
        assignment_service_client::AssignmentServiceClient,
    },
    audit::v1::{
        alert_service_client::AlertServiceClient, audit_service_client::AuditServiceClient,
    },
    events::v1::event_replay_service_client::EventReplayServiceClient,
    notification::v1::notification_service_client::NotificationServiceClient,
};
use tonic::{
    Code, Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

/// Where a client's bearer token comes from.
#[derive(Clone)]
pub enum Credentials {
    /// A token obtained elsewhere, for example from an identity provider.
    Token(String),
    /// A service signing its own short-lived identity, re-minted before it expires.
    Service(Arc<ServiceToken>),
}

/// A cached service token for `service:<name>`.
pub struct ServiceToken {
    signer: TokenSigner,
    service: String,
    clock: SharedClock,
    cached: Mutex<Option<(String, i64)>>,
}

impl ServiceToken {
    pub fn new(signer: TokenSigner, service: &str, clock: SharedClock) -> Arc<Self> {
        Arc::new(Self {
            signer,
            service: service.to_owned(),
            clock,
            cached: Mutex::new(None),
        })
    }

    fn current(&self) -> Result<String, Status> {
        let now = self.clock.now().timestamp();
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| Status::internal("token cache poisoned"))?;
        if let Some((token, minted)) = cached.as_ref()
            // Service tokens live 300 s; re-mint after 240 s, or if the clock moved backwards.
            && now >= *minted
            && now - minted < 240
        {
            return Ok(token.clone());
        }
        let token = self
            .signer
            .service_token(&self.service)
            .map_err(|e| Status::internal(format!("minting a service token: {e}")))?;
        *cached = Some((token.clone(), now));
        Ok(token)
    }
}

/// Adds `authorization` and the trace context to every call.
#[derive(Clone)]
pub struct Authorize {
    credentials: Credentials,
}

impl Interceptor for Authorize {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = match &self.credentials {
            Credentials::Token(token) => token.clone(),
            Credentials::Service(service) => service.current()?,
        };
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::invalid_argument("token is not a valid header value"))?;
        request.metadata_mut().insert("authorization", value);
        pim_telemetry::inject_into_metadata(request.metadata_mut());
        Ok(request)
    }
}

/// A channel whose calls carry credentials and the trace context, each in a client span.
pub type AuthorizedChannel = ClientSpans<InterceptedService<Channel, Authorize>>;

/// A lazily connecting channel with a per-call deadline; over TLS when `tls` is given.
pub fn channel(
    url: &str,
    timeout: Duration,
    tls: Option<ClientTlsConfig>,
) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())?
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint.connect_lazy())
}

/// Clients of one service, all sharing one channel and one set of credentials.
#[derive(Clone)]
pub struct PimClient {
    channel: Channel,
    authorize: Authorize,
}

impl PimClient {
    pub fn new(channel: Channel, credentials: Credentials) -> Self {
        Self {
            channel,
            authorize: Authorize { credentials },
        }
    }

    pub fn connect(url: &str, credentials: Credentials) -> anyhow::Result<Self> {
        Ok(Self::new(
            channel(url, Duration::from_secs(10), None)?,
            credentials,
        ))
    }

    /// The channel as every client here uses it.
    fn traced(&self) -> AuthorizedChannel {
        ClientSpans::new(InterceptedService::new(
            self.channel.clone(),
            self.authorize.clone(),
        ))
    }

    pub fn assignment(&self) -> AssignmentServiceClient<AuthorizedChannel> {
        AssignmentServiceClient::new(self.traced())
    }

    pub fn assignment_internal(&self) -> AssignmentInternalServiceClient<AuthorizedChannel> {
        AssignmentInternalServiceClient::new(self.traced())
    }

    pub fn activation(&self) -> ActivationServiceClient<AuthorizedChannel> {
        ActivationServiceClient::new(self.traced())
    }

    pub fn approval(&self) -> ApprovalServiceClient<AuthorizedChannel> {
        ApprovalServiceClient::new(self.traced())
    }

    pub fn approval_internal(&self) -> ApprovalInternalServiceClient<AuthorizedChannel> {
        ApprovalInternalServiceClient::new(self.traced())
    }

    pub fn audit(&self) -> AuditServiceClient<AuthorizedChannel> {
        AuditServiceClient::new(self.traced())
    }

    pub fn alerts(&self) -> AlertServiceClient<AuthorizedChannel> {
        AlertServiceClient::new(self.traced())
    }

    pub fn notification(&self) -> NotificationServiceClient<AuthorizedChannel> {
        NotificationServiceClient::new(self.traced())
    }

    pub fn replay(&self) -> EventReplayServiceClient<AuthorizedChannel> {
        EventReplayServiceClient::new(self.traced())
    }
}

/// Whether `principal` holds any of `roles` at `scope` now, as the assignment context answers
/// through `assignment` (a client of it).
pub async fn holds_any_role(
    assignment: &PimClient,
    principal: &str,
    roles: &[&str],
    scope: &str,
) -> Result<bool, Status> {
    for role in roles {
        let answer = retry_idempotent(|| {
            let mut client = assignment.assignment();
            let check = pim_proto::assignment::v1::CheckAccessRequest {
                principal_id: principal.to_owned(),
                role_id: (*role).to_owned(),
                scope: scope.to_owned(),
                ..Default::default()
            };
            async move { client.check_access(check).await }
        })
        .await
        .map_err(|s| {
            Status::unavailable(format!(
                "the assignment service did not answer: {}",
                s.message()
            ))
        })?;
        if answer.into_inner().allowed {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Retries an idempotent call on `UNAVAILABLE`, with a short backoff, up to three attempts.
pub async fn retry_idempotent<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut delay = Duration::from_millis(50);
    for _ in 0..2 {
        match call().await {
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            other => return other,
        }
    }
    call().await
}
