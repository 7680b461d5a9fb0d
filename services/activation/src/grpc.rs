//! gRPC handlers of the activation context.

use pim_config::ServiceName;
use pim_grpc::{ApiError, Violations, caller};
use pim_host::HostContext;
use pim_proto::{
    activation::v1::{
        ActivationRequest, GetActivationRequestRequest, GetActivationRequestResponse,
        RequestStatus, SubmitRequest, SubmitResponse, activation_service_server::ActivationService,
    },
    assignment::v1::{CheckEligibilityRequest, GetEffectivePolicyRequest, ProvisionWindowRequest},
    timestamp_from_millis,
};
use tonic::{Code, Request, Response, Status};

use crate::{rules, store::Store};

#[derive(Clone)]
pub struct ActivationApi {
    store: Store,
    ctx: HostContext,
}

impl ActivationApi {
    pub fn new(store: Store, ctx: HostContext) -> Self {
        Self { store, ctx }
    }
}

fn internal(e: anyhow::Error) -> Status {
    ApiError::Internal(e).into()
}

fn refusal(refusal: rules::Refusal) -> Status {
    let api = match refusal {
        rules::Refusal::Violation { rule, message } => ApiError::PolicyViolation {
            rule: rule.to_owned(),
            message,
        },
        rules::Refusal::MfaRequired => ApiError::FailedPrecondition {
            reason: "MFA_REQUIRED",
            message: "activating this role needs a sign-in with MFA".into(),
        },
        rules::Refusal::AuthenticationContextRequired(claim) => ApiError::FailedPrecondition {
            reason: "AUTHENTICATION_CONTEXT_REQUIRED",
            message: format!("activating this role needs the authentication context {claim}"),
        },
        rules::Refusal::ApprovalRequired => ApiError::FailedPrecondition {
            reason: "APPROVAL_REQUIRED",
            message: "this role's policy requires approval; approval cases are not available yet, so it cannot be activated".into(),
        },
    };
    api.into()
}

/// A peer's refusal keeps its code and details; a peer that is down is UNAVAILABLE.
fn from_peer(status: Status) -> Status {
    match status.code() {
        Code::FailedPrecondition | Code::InvalidArgument | Code::NotFound => status,
        Code::Unavailable | Code::DeadlineExceeded => {
            Status::unavailable("the assignment service did not answer")
        }
        _ => {
            tracing::error!(code = ?status.code(), message = status.message(), "assignment call failed");
            Status::internal("internal error")
        }
    }
}

#[tonic::async_trait]
impl ActivationService for ActivationApi {
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let caller = caller(&request)?;
        let correlation = request
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let req = request.into_inner();
        let mut v = Violations::default();
        let duration_ms = rules::validate(&req, &mut v);
        v.check().map_err(Status::from)?;
        if caller.service().is_some() {
            return Err(Status::permission_denied(
                "activation requests come from principals, not services",
            ));
        }
        if let Some(existing) = self
            .store
            .find(&caller.subject, &req.request_id)
            .await
            .map_err(internal)?
        {
            return Ok(Response::new(SubmitResponse {
                request: Some(existing),
            }));
        }
        let assignment = self.ctx.peers.get(ServiceName::Assignment);
        let eligibility = pim_client::retry_idempotent(|| {
            let mut client = assignment.assignment();
            let check = CheckEligibilityRequest {
                principal_id: caller.subject.clone(),
                role_id: req.role_id.clone(),
                scope: req.scope.clone(),
            };
            async move { client.check_eligibility(check).await }
        })
        .await
        .map_err(from_peer)?
        .into_inner();
        if !eligibility.eligible {
            return Err(ApiError::FailedPrecondition {
                reason: "NOT_ELIGIBLE",
                message: format!(
                    "{} is not eligible for role {} at {}",
                    caller.subject, req.role_id, req.scope
                ),
            }
            .into());
        }
        let policy = pim_client::retry_idempotent(|| {
            let mut client = assignment.assignment();
            let query = GetEffectivePolicyRequest {
                role_id: req.role_id.clone(),
                scope: req.scope.clone(),
            };
            async move { client.get_effective_policy(query).await }
        })
        .await
        .map_err(from_peer)?
        .into_inner();
        rules::enforce(
            &policy.rules.unwrap_or_default(),
            &req,
            duration_ms,
            &caller,
        )
        .map_err(refusal)?;
        let now = self.ctx.clock.now_millis();
        let pending = ActivationRequest {
            id: uuid::Uuid::now_v7().to_string(),
            request_id: req.request_id.clone(),
            principal_id: caller.subject.clone(),
            action: req.action,
            role_id: req.role_id.clone(),
            scope: req.scope.clone(),
            status: RequestStatus::Unspecified.into(),
            justification: req.justification.clone(),
            ticket: req.ticket.clone(),
            start_time: Some(timestamp_from_millis(now)),
            end_time: Some(timestamp_from_millis(now + duration_ms)),
            created_at: Some(timestamp_from_millis(now)),
            window_id: String::new(),
            policy_version: policy.version,
        };
        if req.validate_only {
            return Ok(Response::new(SubmitResponse {
                request: Some(pending),
            }));
        }
        let correlation = if correlation.is_empty() {
            pending.id.clone()
        } else {
            correlation
        };
        self.store
            .submit(&self.ctx.outbox, &pending, &correlation)
            .await
            .map_err(internal)?;
        self.ctx.outbox.wake();
        let provision = ProvisionWindowRequest {
            request_id: pending.id.clone(),
            principal_id: pending.principal_id.clone(),
            role_id: pending.role_id.clone(),
            scope: pending.scope.clone(),
            start_time: pending.start_time,
            end_time: pending.end_time,
        };
        // ProvisionWindow is idempotent by request id, so retrying it is safe.
        let window = pim_client::retry_idempotent(|| {
            let mut client = assignment.assignment_internal();
            let provision = provision.clone();
            async move { client.provision_window(provision).await }
        })
        .await
        .map_err(from_peer)?
        .into_inner()
        .window
        .unwrap_or_default();
        let granted = self
            .store
            .granted(&self.ctx.outbox, pending, &window.id, &correlation)
            .await
            .map_err(internal)?;
        self.ctx.outbox.wake();
        Ok(Response::new(SubmitResponse {
            request: Some(granted),
        }))
    }

    async fn get_activation_request(
        &self,
        request: Request<GetActivationRequestRequest>,
    ) -> Result<Response<GetActivationRequestResponse>, Status> {
        let caller = caller(&request)?;
        let id = request.into_inner().id;
        let mut v = Violations::default();
        v.require("id", &id);
        v.check().map_err(Status::from)?;
        match self.store.get(&id).await.map_err(internal)? {
            // Someone else's request is reported as absent, not as forbidden.
            Some(found) if found.principal_id == caller.subject => {
                Ok(Response::new(GetActivationRequestResponse {
                    request: Some(found),
                }))
            }
            _ => Err(ApiError::NotFound(format!("activation request {id}")).into()),
        }
    }
}
