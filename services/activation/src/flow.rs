//! The steps after a request is stored, each idempotent so that the submission, the event
//! consumer and the reconciler can all drive them: open the approval case, provision the window,
//! revoke it. A peer that does not answer leaves the request where it is for the reconciler; a
//! peer that refuses ends it as `Failed` with the reason.

use std::sync::Arc;

use pim_config::ServiceName;
use pim_grpc::ApiError;
use pim_host::HostContext;
use pim_proto::{
    activation::v1::{ActivationRequest, RequestAction, RequestStatus},
    approval::v1::{CancelCaseRequest, CaseKind, CaseSummary, OpenCaseRequest},
    assignment::v1::{
        ExtendScheduleRequest, ProvisionWindowRequest, RenewScheduleRequest, RevokeWindowRequest,
    },
};
use tonic::{Code, Status};

use crate::store::{Change, Store};

/// Points where a flow stops as if the process crashed there (`PIM_FAULT_POINTS`), so tests
/// can show that the reconciler finishes every request.
#[derive(Clone, Default)]
pub struct Faults(Arc<Vec<String>>);

impl Faults {
    pub fn new(points: Vec<String>) -> Self {
        Self(Arc::new(points))
    }

    pub fn at(&self, point: &str) -> Result<(), Status> {
        if self.0.iter().any(|p| p == point) {
            tracing::warn!(point, "injected fault: stopping here as if crashed");
            return Err(Status::unavailable(format!("injected fault at {point}")));
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct Flow {
    pub store: Store,
    pub ctx: HostContext,
    pub faults: Faults,
}

/// Why a peer's refusal failed a request: its reason, or its code when it has none.
fn failure(status: &Status) -> String {
    let reason = pim_grpc::reason_of(status);
    if reason.is_empty() {
        format!("{:?}", status.code())
    } else {
        reason
    }
}

/// A peer that is down is UNAVAILABLE to our caller; a peer's refusal keeps its code and
/// details; anything else is internal.
pub fn from_peer(status: Status) -> Status {
    match status.code() {
        Code::FailedPrecondition
        | Code::InvalidArgument
        | Code::NotFound
        | Code::PermissionDenied
        | Code::AlreadyExists => status,
        Code::Unavailable | Code::DeadlineExceeded => {
            Status::unavailable(format!("a peer did not answer: {}", status.message()))
        }
        _ => {
            tracing::error!(code = ?status.code(), message = status.message(), "peer call failed");
            Status::internal("internal error")
        }
    }
}

fn internal(e: anyhow::Error) -> Status {
    ApiError::Internal(e).into()
}

/// A refusal by a peer that no retry will change.
fn is_final(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::FailedPrecondition | Code::InvalidArgument | Code::NotFound | Code::PermissionDenied
    )
}

impl Flow {
    fn millis(ts: Option<&pim_proto::Timestamp>) -> i64 {
        ts.map(pim_proto::millis_from_timestamp).unwrap_or_default()
    }

    /// The request as stored now, for answers after a step was skipped.
    async fn current(&self, id: &str) -> Result<ActivationRequest, Status> {
        self.store
            .get(id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::internal(format!("request {id} vanished")))
    }

    /// Opens the approval case of a stored request waiting for one, and records it.
    pub async fn open_case(
        &self,
        request: &ActivationRequest,
    ) -> Result<ActivationRequest, Status> {
        let rule = self
            .store
            .approval_rule(&request.id)
            .await
            .map_err(internal)?;
        let ticket = request.ticket.clone().unwrap_or_default();
        let open = OpenCaseRequest {
            request_id: request.id.clone(),
            kind: match request.action() {
                RequestAction::SelfExtend => CaseKind::Extension,
                RequestAction::SelfRenew => CaseKind::Renewal,
                _ => CaseKind::Activation,
            }
            .into(),
            rule: Some(rule),
            policy_version: request.policy_version,
            summary: Some(CaseSummary {
                requestor_id: request.principal_id.clone(),
                role_id: request.role_id.clone(),
                scope: request.scope.clone(),
                start_time: request.start_time,
                end_time: request.end_time,
                justification: request.justification.clone(),
                ticket_system: ticket.system,
                ticket_number: ticket.number,
            }),
        };
        let approval = self.ctx.peers.get(ServiceName::Approval);
        let opened = pim_client::retry_idempotent(|| {
            let mut client = approval.approval_internal();
            let open = open.clone();
            async move { client.open_case(open).await }
        })
        .await;
        let case = match opened {
            Ok(case) => case.into_inner().case.unwrap_or_default(),
            Err(status) if is_final(&status) => {
                self.fail(request, RequestStatus::PendingApproval, &status)
                    .await?;
                return Err(from_peer(status));
            }
            Err(status) => return Err(from_peer(status)),
        };
        self.faults.at("after_case_opened")?;
        let recorded = self
            .store
            .transition(
                &self.ctx.outbox,
                &request.id,
                &[RequestStatus::PendingApproval],
                Change {
                    case_id: Some(case.id),
                    first_case: true,
                    ..Change::to(RequestStatus::PendingApproval)
                },
                "",
            )
            .await
            .map_err(internal)?;
        self.ctx.outbox.wake();
        match recorded {
            Some(recorded) => Ok(recorded),
            None => self.current(&request.id).await,
        }
    }

    /// Writes the window of an approved request into the assignment context and marks it
    /// granted. ProvisionWindow is idempotent by request id, so retrying it is safe.
    pub async fn provision(
        &self,
        request: &ActivationRequest,
    ) -> Result<ActivationRequest, Status> {
        self.faults.at("before_provision")?;
        if matches!(
            request.action(),
            RequestAction::SelfExtend | RequestAction::SelfRenew
        ) {
            return self.change_schedule(request).await;
        }
        let provision = ProvisionWindowRequest {
            request_id: request.id.clone(),
            principal_id: request.principal_id.clone(),
            role_id: request.role_id.clone(),
            scope: request.scope.clone(),
            start_time: request.start_time,
            end_time: request.end_time,
        };
        let assignment = self.ctx.peers.get(ServiceName::Assignment);
        let provisioned = pim_client::retry_idempotent(|| {
            let mut client = assignment.assignment_internal();
            let provision = provision.clone();
            async move { client.provision_window(provision).await }
        })
        .await;
        let window = match provisioned {
            Ok(window) => window.into_inner().window.unwrap_or_default(),
            Err(status) if is_final(&status) => {
                self.fail(request, RequestStatus::PendingProvisioning, &status)
                    .await?;
                return Err(from_peer(status));
            }
            Err(status) => return Err(from_peer(status)),
        };
        self.faults.at("after_provisioned")?;
        let now = self.ctx.clock.now_millis();
        let status = if Self::millis(window.start_time.as_ref()) > now {
            RequestStatus::ScheduleCreated
        } else {
            RequestStatus::Provisioned
        };
        let granted = self
            .store
            .transition(
                &self.ctx.outbox,
                &request.id,
                &[RequestStatus::PendingProvisioning],
                Change {
                    window_id: Some(window.id),
                    schedule_id: Some(window.eligibility_schedule_id),
                    ..Change::to(status)
                },
                "",
            )
            .await
            .map_err(internal)?;
        self.ctx.outbox.wake();
        match granted {
            Some(granted) => Ok(granted),
            None => self.current(&request.id).await,
        }
    }

    /// Applies an approved extension or renewal to its schedule. Both are idempotent by the
    /// request id (the decision id the assignment context records).
    async fn change_schedule(
        &self,
        request: &ActivationRequest,
    ) -> Result<ActivationRequest, Status> {
        let assignment = self.ctx.peers.get(ServiceName::Assignment);
        let (schedule_id, end_time, decision_id) = (
            request.schedule_id.clone(),
            request.end_time,
            request.id.clone(),
        );
        let changed = if request.action() == RequestAction::SelfExtend {
            pim_client::retry_idempotent(|| {
                let mut client = assignment.assignment_internal();
                let extend = ExtendScheduleRequest {
                    schedule_id: schedule_id.clone(),
                    end_time,
                    decision_id: decision_id.clone(),
                };
                async move { client.extend_schedule(extend).await.map(drop) }
            })
            .await
        } else {
            pim_client::retry_idempotent(|| {
                let mut client = assignment.assignment_internal();
                let renew = RenewScheduleRequest {
                    schedule_id: schedule_id.clone(),
                    end_time,
                    decision_id: decision_id.clone(),
                };
                async move { client.renew_schedule(renew).await.map(drop) }
            })
            .await
        };
        match changed {
            Ok(()) => {}
            Err(status) if is_final(&status) => {
                self.fail(request, RequestStatus::PendingProvisioning, &status)
                    .await?;
                return Err(from_peer(status));
            }
            Err(status) => return Err(from_peer(status)),
        }
        self.faults.at("after_provisioned")?;
        let done = self
            .store
            .transition(
                &self.ctx.outbox,
                &request.id,
                &[RequestStatus::PendingProvisioning],
                Change::to(RequestStatus::Provisioned),
                "",
            )
            .await
            .map_err(internal)?;
        self.ctx.outbox.wake();
        match done {
            Some(done) => Ok(done),
            None => self.current(&request.id).await,
        }
    }

    /// Ends a request that a peer refused for good as `Failed`, with the peer's reason.
    async fn fail(
        &self,
        request: &ActivationRequest,
        from: RequestStatus,
        status: &Status,
    ) -> Result<(), Status> {
        self.store
            .transition(
                &self.ctx.outbox,
                &request.id,
                &[from],
                Change::to(RequestStatus::Failed).because(failure(status)),
                "",
            )
            .await
            .map_err(internal)?;
        self.ctx.outbox.wake();
        Ok(())
    }

    /// Ends a granted request's window now, then records `to` (Revoked or Canceled).
    pub async fn revoke(
        &self,
        request: &ActivationRequest,
        to: RequestStatus,
        actor: &str,
        decision_id: &str,
    ) -> Result<ActivationRequest, Status> {
        let revoke = RevokeWindowRequest {
            request_id: request.id.clone(),
            decision_id: decision_id.to_owned(),
        };
        let assignment = self.ctx.peers.get(ServiceName::Assignment);
        pim_client::retry_idempotent(|| {
            let mut client = assignment.assignment_internal();
            let revoke = revoke.clone();
            async move { client.revoke_window(revoke).await }
        })
        .await
        .map_err(from_peer)?;
        let ended = self
            .store
            .transition(
                &self.ctx.outbox,
                &request.id,
                &crate::model::GRANTED,
                Change::to(to),
                actor,
            )
            .await
            .map_err(internal)?;
        self.ctx.outbox.wake();
        match ended {
            Some(ended) => Ok(ended),
            None => self.current(&request.id).await,
        }
    }

    /// Cancels a request waiting for approval: its case first, so that a decision cannot slip
    /// in between; the case's cancellation event also finishes the request if we crash here.
    pub async fn cancel_pending(
        &self,
        request: &ActivationRequest,
        actor: &str,
    ) -> Result<ActivationRequest, Status> {
        if !request.case_id.is_empty() {
            let cancel = CancelCaseRequest {
                case_id: request.case_id.clone(),
                request_id: request.id.clone(),
            };
            let approval = self.ctx.peers.get(ServiceName::Approval);
            pim_client::retry_idempotent(|| {
                let mut client = approval.approval_internal();
                let cancel = cancel.clone();
                async move { client.cancel_case(cancel).await }
            })
            .await
            .map_err(from_peer)?;
        }
        let canceled = self
            .store
            .transition(
                &self.ctx.outbox,
                &request.id,
                &[RequestStatus::PendingApproval],
                Change::to(RequestStatus::Canceled),
                actor,
            )
            .await
            .map_err(internal)?;
        self.ctx.outbox.wake();
        match canceled {
            Some(canceled) => Ok(canceled),
            None => self.current(&request.id).await,
        }
    }

    /// Takes a stored request as far as it can go now: the one entry point of the submission
    /// path, the consumer's wake-ups and the reconciler.
    pub async fn advance(&self, request: &ActivationRequest) -> Result<ActivationRequest, Status> {
        match request.status() {
            RequestStatus::PendingApproval if request.case_id.is_empty() => {
                self.open_case(request).await
            }
            RequestStatus::PendingProvisioning => self.provision(request).await,
            _ => Ok(request.clone()),
        }
    }
}
