//! Authentication of every RPC, and the per-RPC allow-lists of internal services. Health and
//! reflection are the only unauthenticated paths, so standard tooling works.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use futures_util::future::BoxFuture;
use pim_auth::{Caller, Verifier};
use tonic::{Request, Status, body::Body};
use tower::{Layer, Service};

/// Receives denials of authenticated callers, for the rate-limited security-event path.
pub trait DenialRecorder: Send + Sync + 'static {
    fn record_denial(&self, method: &str, caller: &str, reason: &str);
}

/// Which service identities may call which methods. A path that matches no rule is open to any
/// authenticated caller, and its handler authorizes by role.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// (a service's path ending in `/`, or one method's path; allowed service names)
    rules: Vec<(String, Vec<String>)>,
}

impl AccessPolicy {
    /// Allows only these services on `path`: every method of a service when it ends in `/`
    /// (`/pim.assignment.v1.AssignmentInternalService/`), otherwise exactly one method
    /// (`/pim.assignment.v1.AssignmentInternalService/ProvisionWindow`). A method rule never
    /// covers another method whose name merely starts the same (`RemoveSchedule` is not
    /// `RemoveSchedules`), so a new method falls under its service's rule until it gets its own.
    pub fn allow_services(mut self, path: &str, services: &[&str]) -> Self {
        self.rules.push((
            path.to_owned(),
            services.iter().map(|s| (*s).to_owned()).collect(),
        ));
        self
    }

    /// `None` when the path is open; otherwise whether the caller is on its list. The longest
    /// matching rule decides, so a method rule can narrow a service-wide rule.
    fn permits(&self, path: &str, caller: &Caller) -> Option<bool> {
        let rule = self
            .rules
            .iter()
            .filter(|(rule, _)| {
                if rule.ends_with('/') {
                    path.starts_with(rule.as_str())
                } else {
                    path == rule
                }
            })
            .max_by_key(|(rule, _)| rule.len())?;
        Some(
            caller
                .service()
                .is_some_and(|name| rule.1.iter().any(|s| s == name)),
        )
    }
}

struct AuthState {
    verifier: Verifier,
    policy: AccessPolicy,
    denials: Arc<dyn DenialRecorder>,
    unauthenticated: AtomicU64,
}

/// The tower layer that authenticates each request and enforces the [`AccessPolicy`].
#[derive(Clone)]
pub struct AuthLayer {
    state: Arc<AuthState>,
}

impl AuthLayer {
    pub fn new(verifier: Verifier, policy: AccessPolicy, denials: Arc<dyn DenialRecorder>) -> Self {
        Self {
            state: Arc::new(AuthState {
                verifier,
                policy,
                denials,
                unauthenticated: AtomicU64::new(0),
            }),
        }
    }

    /// Requests refused as unauthenticated since start: counted, never stored.
    pub fn unauthenticated_count(&self) -> u64 {
        self.state.unauthenticated.load(Ordering::Relaxed)
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    state: Arc<AuthState>,
}

fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

impl<S, B> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !is_open(request.uri().path()) {
            let path = request.uri().path();
            let header = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            let caller = match self.state.verifier.verify_header(header) {
                Ok(caller) => caller,
                Err(e) => {
                    self.state.unauthenticated.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(method = %path, reason = %e, "unauthenticated request refused");
                    let status = Status::unauthenticated(e.to_string());
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            };
            if self.state.policy.permits(path, &caller) == Some(false) {
                self.state
                    .denials
                    .record_denial(path, &caller.subject, "NOT_ON_ALLOW_LIST");
                let status =
                    Status::permission_denied(format!("{} may not call {path}", caller.subject));
                return Box::pin(async move { Ok(status.into_http()) });
            }
            request.extensions_mut().insert(caller);
        }
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request))
    }
}

/// The authenticated caller of a request; `UNAUTHENTICATED` if the layer did not run.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no verified caller"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(sub: &str) -> Caller {
        Caller::from_subject(sub.into(), vec![], None, vec![])
    }

    #[test]
    fn internal_methods_admit_only_listed_services() {
        let policy = AccessPolicy::default()
            .allow_services(
                "/pim.events.v1.EventReplayService/",
                &["audit", "activation"],
            )
            .allow_services(
                "/pim.assignment.v1.AssignmentInternalService/",
                &["activation"],
            );
        let path = "/pim.assignment.v1.AssignmentInternalService/ProvisionWindow";
        assert_eq!(
            policy.permits(path, &caller("service:activation")),
            Some(true)
        );
        assert_eq!(policy.permits(path, &caller("service:audit")), Some(false));
        assert_eq!(policy.permits(path, &caller("alice")), Some(false));
        assert_eq!(
            policy.permits(
                "/pim.assignment.v1.AssignmentService/CheckAccess",
                &caller("alice")
            ),
            None
        );
    }

    #[test]
    fn a_method_rule_covers_that_method_only() {
        let policy = AccessPolicy::default()
            .allow_services("/pim.assignment.v1.AssignmentInternalService/", &[])
            .allow_services(
                "/pim.assignment.v1.AssignmentInternalService/RemoveSchedule",
                &["approval"],
            );
        let approval = caller("service:approval");
        assert_eq!(
            policy.permits(
                "/pim.assignment.v1.AssignmentInternalService/RemoveSchedule",
                &approval
            ),
            Some(true)
        );
        assert_eq!(
            policy.permits(
                "/pim.assignment.v1.AssignmentInternalService/RemoveSchedules",
                &approval
            ),
            Some(false),
            "a longer method name falls under the service-wide rule, not the method's"
        );
    }
}
