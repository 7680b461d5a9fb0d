//! gRPC handlers of the activation context.

use pim_auth::Caller;
use pim_client::roles;
use pim_config::ServiceName;
use pim_grpc::{ApiError, Violations, caller, code_name, page_size, reason_of};
use pim_proto::{
    activation::v1::{
        ActivationRequest, CancelRequest, CancelResponse, GetActivationRequestRequest,
        GetActivationRequestResponse, ListMyActivationsRequest, ListMyActivationsResponse,
        ListMyRequestsRequest, ListMyRequestsResponse, ListRequestsRequest, ListRequestsResponse,
        RequestAction, RequestStatus, SubmitBatchRequest, SubmitBatchResponse, SubmitBatchResult,
        SubmitRequest, SubmitResponse, activation_service_server::ActivationService,
    },
    assignment::v1::{
        ApprovalRule, ApprovalStage, CheckEligibilityRequest, GetEffectivePolicyRequest,
        GetEffectivePolicyResponse, GetRoleRequest, ListSchedulesRequest,
    },
    millis_from_timestamp, timestamp_from_millis,
};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::{
    flow::{Flow, from_peer},
    model::{GRANTED, status_text},
    rules::{self, Asked, Authentication},
    store::{Created, Filter},
};

/// Deactivating within the first minutes is refused, as in Entra.
const MIN_LIVE_BEFORE_DEACTIVATION_MS: i64 = 5 * 60 * 1000;
const MAX_BATCH: usize = 20;
/// Entra: a schedule is extended in the 14 days before it ends, renewed in the 30 after.
const EXTEND_WITHIN_MS: i64 = 14 * 24 * 3600 * 1000;
const RENEW_WITHIN_MS: i64 = 30 * 24 * 3600 * 1000;

/// The one-stage rule an extension or renewal is decided by: the policy's extension approvers
/// (empty: the Privileged Role Administrators and Global Administrators at the scope).
fn extension_rule(approval: &ApprovalRule) -> ApprovalRule {
    ApprovalRule {
        required: true,
        required_for_extension: true,
        stages: vec![ApprovalStage {
            approvers: approval.extension_approvers.clone(),
            quorum: 1,
            timeout: Some(pim_proto::Duration {
                seconds: 24 * 3600,
                nanos: 0,
            }),
            approver_justification_required: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[derive(Clone)]
pub struct ActivationApi {
    flow: Flow,
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
            message: "activating this role needs a recent sign-in with MFA; sign in again with MFA and retry with the new token".into(),
        },
        rules::Refusal::AuthenticationContextRequired(claim) => ApiError::FailedPrecondition {
            reason: "AUTH_CONTEXT_REQUIRED",
            message: format!("activating this role needs the authentication context {claim}"),
        },
    };
    api.into()
}

/// `ALREADY_EXISTS`, carrying the request that is already live or pending.
fn already_exists(existing: &ActivationRequest) -> Status {
    let mut details = ErrorDetails::new();
    details.set_resource_info(
        "pim.activation.v1.ActivationRequest",
        existing.id.clone(),
        existing.principal_id.clone(),
        format!("status {}", status_text(existing.status())),
    );
    Status::with_error_details(
        Code::AlreadyExists,
        format!(
            "request {} for this role and scope is already {}",
            existing.id,
            status_text(existing.status())
        ),
        details,
    )
}

fn people_only(caller: &Caller) -> Result<(), Status> {
    if caller.service().is_some() {
        return Err(ApiError::PermissionDenied {
            reason: "PRINCIPALS_ONLY",
            message: "activation requests come from principals, not services".into(),
        }
        .into());
    }
    Ok(())
}

/// The status as it stands at `now_ms`: a scheduled window that began is live, and a window
/// that ended is expired, whether or not the expiry timer has run yet.
fn present(mut request: ActivationRequest, now_ms: i64) -> ActivationRequest {
    let start = request
        .start_time
        .as_ref()
        .map(millis_from_timestamp)
        .unwrap_or_default();
    let end = request
        .end_time
        .as_ref()
        .map(millis_from_timestamp)
        .unwrap_or_default();
    if GRANTED.contains(&request.status()) {
        if end <= now_ms {
            request.status = RequestStatus::Expired.into();
        } else if start <= now_ms {
            request.status = RequestStatus::Provisioned.into();
        }
    }
    request
}

fn next_token(requests: &[ActivationRequest], limit: i64) -> String {
    if requests.len() as i64 == limit {
        requests.last().map(|r| r.id.clone()).unwrap_or_default()
    } else {
        String::new()
    }
}

impl ActivationApi {
    pub fn new(flow: Flow) -> Self {
        Self { flow }
    }

    fn now(&self) -> i64 {
        self.flow.ctx.clock.now_millis()
    }

    async fn is_admin(&self, principal: &str) -> Result<bool, Status> {
        let assignment = self.flow.ctx.peers.get(ServiceName::Assignment);
        let mut admins = roles::ADMINS.to_vec();
        admins.extend(roles::READERS);
        pim_client::holds_any_role(assignment, principal, &admins, "/").await
    }

    /// Eligible directly, through a group or at an ancestor scope; an unknown role is bad
    /// input, not a refusal.
    async fn effective_policy(
        &self,
        req: &SubmitRequest,
    ) -> Result<GetEffectivePolicyResponse, Status> {
        let assignment = self.flow.ctx.peers.get(ServiceName::Assignment);
        let policy = pim_client::retry_idempotent(|| {
            let mut client = assignment.assignment();
            let query = GetEffectivePolicyRequest {
                role_id: req.role_id.clone(),
                scope: req.scope.clone(),
            };
            async move { client.get_effective_policy(query).await }
        })
        .await
        .map_err(from_peer)?;
        Ok(policy.into_inner())
    }

    async fn require_eligible(&self, caller: &Caller, req: &SubmitRequest) -> Result<(), Status> {
        let assignment = self.flow.ctx.peers.get(ServiceName::Assignment);
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
        if eligibility.eligible {
            return Ok(());
        }
        let role = pim_client::retry_idempotent(|| {
            let mut client = assignment.assignment();
            let query = GetRoleRequest {
                role_id: req.role_id.clone(),
            };
            async move { client.get_role(query).await }
        })
        .await;
        match role {
            Err(status) if status.code() == Code::NotFound => {
                Err(ApiError::InvalidArgument(vec![(
                    "role_id".into(),
                    format!("no role {} exists", req.role_id),
                )])
                .into())
            }
            Err(status) => Err(from_peer(status)),
            Ok(_) => Err(ApiError::FailedPrecondition {
                reason: "NOT_ELIGIBLE",
                message: format!(
                    "{} is not eligible for role {} at {}",
                    caller.subject, req.role_id, req.scope
                ),
            }
            .into()),
        }
    }

    async fn submit_one(
        &self,
        caller: &Caller,
        req: SubmitRequest,
        correlation: &str,
    ) -> Result<ActivationRequest, Status> {
        people_only(caller)?;
        let now = self.now();
        let mut v = Violations::default();
        let asked = rules::validate(&req, now, &mut v);
        v.check().map_err(Status::from)?;
        if req.action() == RequestAction::SelfDeactivate {
            return self.deactivate(caller, &req, now).await;
        }
        let store = &self.flow.store;
        if let Some(existing) = store
            .find(&caller.subject, &req.request_id)
            .await
            .map_err(internal)?
        {
            return Ok(present(existing, now));
        }
        if matches!(
            req.action(),
            RequestAction::SelfExtend | RequestAction::SelfRenew
        ) {
            return self
                .change_schedule(caller, &req, asked, correlation, now)
                .await;
        }
        // Two independent questions to assignment, asked at once: the answer waits for the
        // slower, not for both in turn. Eligibility is judged first, as if asked first.
        let (eligible, policy) = tokio::join!(
            self.require_eligible(caller, &req),
            self.effective_policy(&req)
        );
        eligible?;
        let policy = policy?;
        let rules = policy.rules.unwrap_or_default();
        let auth = Authentication {
            caller,
            now_ms: now,
            mfa_max_age_ms: self.flow.ctx.settings.mfa_max_age.as_millis() as i64,
        };
        let needs_approval = rules::enforce(&rules, &req, asked, &auth).map_err(refusal)?;
        if let Some(live) = store
            .find_live(&caller.subject, &req.role_id, &req.scope)
            .await
            .map_err(internal)?
        {
            self.refuse_live(live, now).await?;
        }
        let pending = self.pending(
            caller,
            &req,
            asked,
            needs_approval,
            policy.version,
            correlation,
            now,
        );
        if req.validate_only {
            return Ok(pending);
        }
        let approval_rule = rules.approval.filter(|_| needs_approval);
        let created = match store
            .create(&self.flow.ctx.outbox, &pending, approval_rule.as_ref())
            .await
            .map_err(internal)?
        {
            Created::New(created) => created,
            Created::Repeated(repeated) => return Ok(present(repeated, now)),
            Created::Live(live) => return Err(already_exists(&live)),
        };
        self.flow.ctx.outbox.wake();
        self.flow.faults.at("after_submit_recorded")?;
        let advanced = self.flow.advance(&created).await?;
        Ok(present(advanced, now))
    }

    /// A live or pending request for the same role and scope refuses a new one, unless its
    /// window has ended and only the expiry timer has not caught up: then it is expired now.
    async fn refuse_live(&self, live: ActivationRequest, now: i64) -> Result<(), Status> {
        if present(live.clone(), now).status() != RequestStatus::Expired {
            return Err(already_exists(&live));
        }
        self.flow
            .store
            .transition(
                &self.flow.ctx.outbox,
                &live.id,
                &GRANTED,
                crate::store::Change::to(RequestStatus::Expired).because("WINDOW_ENDED"),
                "",
            )
            .await
            .map_err(internal)?;
        self.flow.ctx.outbox.wake();
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn pending(
        &self,
        caller: &Caller,
        req: &SubmitRequest,
        asked: Asked,
        needs_approval: bool,
        policy_version: i64,
        correlation: &str,
        now: i64,
    ) -> ActivationRequest {
        let id = uuid::Uuid::now_v7().to_string();
        let start = asked.start_ms.unwrap_or(now);
        ActivationRequest {
            correlation_id: if correlation.is_empty() {
                id.clone()
            } else {
                correlation.to_owned()
            },
            id,
            request_id: req.request_id.clone(),
            principal_id: caller.subject.clone(),
            action: RequestAction::SelfActivate.into(),
            role_id: req.role_id.clone(),
            scope: req.scope.clone(),
            status: if needs_approval {
                RequestStatus::PendingApproval
            } else {
                RequestStatus::PendingProvisioning
            }
            .into(),
            justification: req.justification.clone(),
            ticket: req.ticket.clone(),
            start_time: Some(timestamp_from_millis(start)),
            end_time: Some(timestamp_from_millis(start + asked.duration_ms)),
            created_at: Some(timestamp_from_millis(now)),
            policy_version,
            duration: Some(pim_proto::Duration {
                seconds: asked.duration_ms / 1000,
                nanos: ((asked.duration_ms % 1000) * 1_000_000) as i32,
            }),
            requested_start: asked.start_ms.map(timestamp_from_millis),
            ..Default::default()
        }
    }

    /// Extends or renews one of the caller's schedules (Entra's selfExtend and selfRenew):
    /// within 14 days before it ends, or 30 days after it ended, always with an approver's yes
    /// under the policy's extension rule.
    async fn change_schedule(
        &self,
        caller: &Caller,
        req: &SubmitRequest,
        asked: Asked,
        correlation: &str,
        now: i64,
    ) -> Result<ActivationRequest, Status> {
        let assignment = self.flow.ctx.peers.get(ServiceName::Assignment);
        let mine = pim_client::retry_idempotent(|| {
            let mut client = assignment.assignment();
            let query = ListSchedulesRequest {
                role_id: req.role_id.clone(),
                scope: req.scope.clone(),
                principal_id: caller.subject.clone(),
                page_size: 500,
                ..Default::default()
            };
            async move { client.list_schedules(query).await }
        })
        .await
        .map_err(from_peer)?
        .into_inner()
        .schedules;
        let Some(schedule) = mine.into_iter().find(|s| s.id == req.schedule_id) else {
            return Err(ApiError::NotFound(format!(
                "your schedule {} of role {} at {}",
                req.schedule_id, req.role_id, req.scope
            ))
            .into());
        };
        let Some(end) = schedule.end_time.as_ref().map(millis_from_timestamp) else {
            return Err(ApiError::FailedPrecondition {
                reason: "NOT_EXTENDABLE",
                message: "a permanent schedule has nothing to extend or renew".into(),
            }
            .into());
        };
        let extend = req.action() == RequestAction::SelfExtend;
        let refuse = |reason: &'static str, message: &str| -> Result<(), Status> {
            Err(ApiError::FailedPrecondition {
                reason,
                message: message.into(),
            }
            .into())
        };
        if extend && end <= now {
            refuse(
                "SCHEDULE_EXPIRED",
                "the schedule has ended; renew it instead",
            )?;
        } else if extend && end - now > EXTEND_WITHIN_MS {
            refuse(
                "NOT_EXPIRING_SOON",
                "a schedule can be extended in the 14 days before it ends",
            )?;
        } else if !extend && end > now {
            refuse(
                "SCHEDULE_NOT_EXPIRED",
                "only a schedule that has ended can be renewed; extend it instead",
            )?;
        } else if !extend && now - end > RENEW_WITHIN_MS {
            refuse(
                "RENEWAL_WINDOW_PASSED",
                "a schedule can be renewed in the 30 days after it ended",
            )?;
        }
        let new_end = asked
            .end_ms
            .unwrap_or(if extend { end } else { now } + asked.duration_ms);
        let policy = self.effective_policy(req).await?;
        let rules = policy.rules.unwrap_or_default();
        let enablement = rules.activation_enablement.unwrap_or_default();
        if enablement.justification_required && req.justification.trim().is_empty() {
            return Err(ApiError::PolicyViolation {
                rule: "Enablement_EndUser_Assignment".into(),
                message: "a justification is required".into(),
            }
            .into());
        }
        let rule = extension_rule(&rules.approval.unwrap_or_default());
        let start = schedule
            .start_time
            .as_ref()
            .map(millis_from_timestamp)
            .unwrap_or(now);
        let mut pending = self.pending(
            caller,
            req,
            Asked {
                duration_ms: new_end - start,
                start_ms: None,
                end_ms: Some(new_end),
            },
            true,
            policy.version,
            correlation,
            now,
        );
        pending.action = req.action;
        pending.schedule_id = schedule.id;
        pending.start_time = Some(timestamp_from_millis(start));
        pending.end_time = Some(timestamp_from_millis(new_end));
        if req.validate_only {
            return Ok(pending);
        }
        let created = match self
            .flow
            .store
            .create(&self.flow.ctx.outbox, &pending, Some(&rule))
            .await
            .map_err(internal)?
        {
            Created::New(created) => created,
            Created::Repeated(existing) | Created::Live(existing) => {
                return Ok(present(existing, now));
            }
        };
        self.flow.ctx.outbox.wake();
        self.flow.advance(&created).await
    }

    async fn deactivate(
        &self,
        caller: &Caller,
        req: &SubmitRequest,
        now: i64,
    ) -> Result<ActivationRequest, Status> {
        let live = self
            .flow
            .store
            .find_live(&caller.subject, &req.role_id, &req.scope)
            .await
            .map_err(internal)?
            .filter(|live| GRANTED.contains(&live.status()))
            .filter(|live| present(live.clone(), now).status() != RequestStatus::Expired);
        let Some(live) = live else {
            return Err(ApiError::FailedPrecondition {
                reason: "NOT_ACTIVE",
                message: format!(
                    "no active activation of role {} at {} to deactivate (a pending request is canceled with Cancel)",
                    req.role_id, req.scope
                ),
            }
            .into());
        };
        let start = live
            .start_time
            .as_ref()
            .map(millis_from_timestamp)
            .unwrap_or_default();
        if start <= now && now - start < MIN_LIVE_BEFORE_DEACTIVATION_MS {
            return Err(ApiError::FailedPrecondition {
                reason: "DEACTIVATION_TOO_SOON",
                message: "an activation can be deactivated once it has been live for 5 minutes"
                    .into(),
            }
            .into());
        }
        // A window that has not started yet is canceled rather than revoked.
        let to = if start > now {
            RequestStatus::Canceled
        } else {
            RequestStatus::Revoked
        };
        if req.validate_only {
            let mut shown = live;
            shown.status = to.into();
            return Ok(shown);
        }
        let ended = self
            .flow
            .revoke(&live, to, &caller.subject, &req.request_id)
            .await?;
        Ok(present(ended, now))
    }

    async fn visible(&self, caller: &Caller, id: &str) -> Result<ActivationRequest, Status> {
        let missing = || Status::from(ApiError::NotFound(format!("activation request {id}")));
        let found = self
            .flow
            .store
            .get(id)
            .await
            .map_err(internal)?
            .ok_or_else(missing)?;
        // Someone else's request is reported as absent, not as forbidden, unless to admins.
        if found.principal_id == caller.subject || self.is_admin(&caller.subject).await? {
            Ok(found)
        } else {
            Err(missing())
        }
    }
}

fn correlation_of<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tonic::async_trait]
impl ActivationService for ActivationApi {
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let caller = caller(&request)?;
        let correlation = correlation_of(&request);
        let request = self
            .submit_one(&caller, request.into_inner(), &correlation)
            .await?;
        Ok(Response::new(SubmitResponse {
            request: Some(request),
        }))
    }

    async fn submit_batch(
        &self,
        request: Request<SubmitBatchRequest>,
    ) -> Result<Response<SubmitBatchResponse>, Status> {
        let caller = caller(&request)?;
        people_only(&caller)?;
        let mut correlation = correlation_of(&request);
        if correlation.is_empty() {
            correlation = uuid::Uuid::now_v7().to_string();
        }
        let items = request.into_inner().items;
        let mut v = Violations::default();
        if items.is_empty() || items.len() > MAX_BATCH {
            v.add(
                "items",
                format!("must hold between 1 and {MAX_BATCH} requests"),
            );
        }
        v.check().map_err(Status::from)?;
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            results.push(match self.submit_one(&caller, item, &correlation).await {
                Ok(request) => SubmitBatchResult {
                    code: "OK".into(),
                    request: Some(request),
                    ..Default::default()
                },
                Err(status) => SubmitBatchResult {
                    code: code_name(status.code()).into(),
                    reason: reason_of(&status),
                    message: status.message().to_owned(),
                    request: None,
                },
            });
        }
        Ok(Response::new(SubmitBatchResponse {
            correlation_id: correlation,
            results,
        }))
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelResponse>, Status> {
        let caller = caller(&request)?;
        let id = request.into_inner().id;
        let mut v = Violations::default();
        v.require("id", &id);
        v.check().map_err(Status::from)?;
        let found = self.visible(&caller, &id).await?;
        if found.principal_id != caller.subject {
            return Err(ApiError::PermissionDenied {
                reason: "NOT_REQUESTOR",
                message: "only the requestor cancels a request".into(),
            }
            .into());
        }
        let now = self.now();
        let start = found
            .start_time
            .as_ref()
            .map(millis_from_timestamp)
            .unwrap_or_default();
        let canceled = match found.status() {
            RequestStatus::PendingApproval => {
                self.flow.cancel_pending(&found, &caller.subject).await?
            }
            RequestStatus::ScheduleCreated if start > now => {
                self.flow
                    .revoke(&found, RequestStatus::Canceled, &caller.subject, &id)
                    .await?
            }
            RequestStatus::Canceled => found,
            other => {
                return Err(ApiError::FailedPrecondition {
                    reason: "NOT_CANCELABLE",
                    message: format!(
                        "a request that is {} cannot be canceled; deactivate a live one instead",
                        status_text(other)
                    ),
                }
                .into());
            }
        };
        Ok(Response::new(CancelResponse {
            request: Some(present(canceled, now)),
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
        let found = self.visible(&caller, &id).await?;
        Ok(Response::new(GetActivationRequestResponse {
            request: Some(present(found, self.now())),
        }))
    }

    async fn list_my_requests(
        &self,
        request: Request<ListMyRequestsRequest>,
    ) -> Result<Response<ListMyRequestsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let limit = page_size(req.page_size, &mut v);
        v.check().map_err(Status::from)?;
        let status = req.status();
        let filter = Filter {
            principal_id: caller.subject.clone(),
            status: if status == RequestStatus::Unspecified {
                String::new()
            } else {
                status_text(status).into()
            },
            role_id: req.role_id,
            created_after_ms: req
                .created_after
                .as_ref()
                .map(millis_from_timestamp)
                .unwrap_or(0),
            created_before_ms: req
                .created_before
                .as_ref()
                .map(millis_from_timestamp)
                .unwrap_or(0),
            after: req.page_token,
            limit,
        };
        let now = self.now();
        let requests = self.flow.store.list(&filter).await.map_err(internal)?;
        let next_page_token = next_token(&requests, limit);
        Ok(Response::new(ListMyRequestsResponse {
            requests: requests.into_iter().map(|r| present(r, now)).collect(),
            next_page_token,
        }))
    }

    async fn list_my_activations(
        &self,
        request: Request<ListMyActivationsRequest>,
    ) -> Result<Response<ListMyActivationsResponse>, Status> {
        let caller = caller(&request)?;
        let now = self.now();
        let activations = self
            .flow
            .store
            .live_of(&caller.subject, now)
            .await
            .map_err(internal)?;
        Ok(Response::new(ListMyActivationsResponse {
            activations: activations.into_iter().map(|r| present(r, now)).collect(),
        }))
    }

    async fn list_requests(
        &self,
        request: Request<ListRequestsRequest>,
    ) -> Result<Response<ListRequestsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let limit = page_size(req.page_size, &mut v);
        v.check().map_err(Status::from)?;
        if caller.service().is_none() && !self.is_admin(&caller.subject).await? {
            return Err(ApiError::PermissionDenied {
                reason: "NOT_AUTHORIZED",
                message: "listing everyone's requests needs an administrator or reader role at /"
                    .into(),
            }
            .into());
        }
        let status = req.status();
        let filter = Filter {
            principal_id: req.principal_id,
            status: if status == RequestStatus::Unspecified {
                String::new()
            } else {
                status_text(status).into()
            },
            role_id: req.role_id,
            after: req.page_token,
            limit,
            ..Default::default()
        };
        let now = self.now();
        let requests = self.flow.store.list(&filter).await.map_err(internal)?;
        let next_page_token = next_token(&requests, limit);
        Ok(Response::new(ListRequestsResponse {
            requests: requests.into_iter().map(|r| present(r, now)).collect(),
            next_page_token,
        }))
    }
}
