//! gRPC handlers of the approval context.

use pim_auth::Caller;
use pim_client::roles;
use pim_config::ServiceName;
use pim_grpc::{
    ApiError, DenialRecorder as _, Violations, caller, code_name, page_size, reason_of,
};
use pim_host::HostContext;
use pim_proto::approval::v1::{
    AcceptRecommendationsRequest, AcceptRecommendationsResponse, CancelCaseRequest,
    CancelCaseResponse, Case, CaseKind, CaseStatus, CreateReviewDefinitionRequest,
    CreateReviewDefinitionResponse, DecideBulkRequest, DecideBulkResponse, DecideRequest,
    DecideResponse, DecideReviewItemsRequest, DecideReviewItemsResponse, Decision, DecisionResult,
    DeleteReviewDefinitionRequest, DeleteReviewDefinitionResponse, GetCaseRequest, GetCaseResponse,
    GetReviewDefinitionRequest, GetReviewDefinitionResponse, ListAwaitingMeRequest,
    ListAwaitingMeResponse, ListCasesRequest, ListCasesResponse, ListReviewDefinitionsRequest,
    ListReviewDefinitionsResponse, ListReviewInstancesRequest, ListReviewInstancesResponse,
    ListReviewItemsRequest, ListReviewItemsResponse, OpenCaseRequest, OpenCaseResponse,
    StopReviewDefinitionRequest, StopReviewDefinitionResponse, UpdateReviewDefinitionRequest,
    UpdateReviewDefinitionResponse, approval_internal_service_server::ApprovalInternalService,
    approval_service_server::ApprovalService,
};
use tonic::{Code, Request, Response, Status};

use crate::{
    directory::Directory,
    domain::{Action, CaseRecord, Entry, MAX_STAGES, MAX_TEXT, Refusal, stage_rules},
    reviews::Reviews,
    store::{Applied, Filter, Store},
};

const MAX_BULK: usize = 100;

#[derive(Clone)]
pub struct ApprovalApi {
    store: Store,
    ctx: HostContext,
    reviews: Reviews,
}

/// A peer's failure as our caller sees it: UNAVAILABLE when it did not answer, INTERNAL (and
/// logged) otherwise.
pub(crate) fn peer_failed(status: Status) -> Status {
    if status.code() == Code::Unavailable || status.code() == Code::DeadlineExceeded {
        Status::unavailable("the assignment service did not answer")
    } else {
        tracing::error!(code = ?status.code(), message = status.message(), "assignment call failed");
        Status::internal("internal error")
    }
}

fn internal(e: anyhow::Error) -> Status {
    ApiError::Internal(e).into()
}

fn refused(refusal: Refusal) -> Status {
    let api = match refusal {
        Refusal::SelfApproval => ApiError::PermissionDenied {
            reason: "SELF_APPROVAL",
            message: "nobody may decide their own request".into(),
        },
        Refusal::NotAnApprover => ApiError::PermissionDenied {
            reason: "NOT_AN_APPROVER",
            message: "you are not an approver of this case's current stage".into(),
        },
        Refusal::AlreadyDecided(message) => ApiError::FailedPrecondition {
            reason: "ALREADY_DECIDED",
            message,
        },
        Refusal::DeadlinePassed => ApiError::FailedPrecondition {
            reason: "DEADLINE_PASSED",
            message: "the stage's deadline has passed".into(),
        },
        Refusal::Canceled => ApiError::FailedPrecondition {
            reason: "CASE_CANCELED",
            message: "the request was canceled".into(),
        },
        Refusal::DistinctApproversRequired => ApiError::FailedPrecondition {
            reason: "DISTINCT_APPROVERS_REQUIRED",
            message: "this policy needs a different approver for each stage".into(),
        },
        Refusal::JustificationRequired => ApiError::InvalidArgument(vec![(
            "justification".into(),
            "is required by this case's policy".into(),
        )]),
    };
    api.into()
}

fn page(records: Vec<CaseRecord>, limit: i64) -> (Vec<Case>, String) {
    let next = if records.len() as i64 == limit {
        records.last().map(|c| c.id.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    (records.iter().map(CaseRecord::to_proto).collect(), next)
}

fn people_only(caller: &Caller) -> Result<(), Status> {
    if caller.service().is_some() {
        return Err(ApiError::PermissionDenied {
            reason: "PRINCIPALS_ONLY",
            message: "approval decisions come from people, not services".into(),
        }
        .into());
    }
    Ok(())
}

impl ApprovalApi {
    pub fn new(store: Store, ctx: HostContext, reviews: Reviews) -> Self {
        Self {
            store,
            ctx,
            reviews,
        }
    }

    fn directory(&self) -> Directory<'_> {
        Directory {
            assignment: self.ctx.peers.get(ServiceName::Assignment),
        }
    }

    fn deny(&self, method: &str, caller: &Caller, refusal: Refusal) -> Status {
        if matches!(refusal, Refusal::SelfApproval | Refusal::NotAnApprover) {
            let reason = match refusal {
                Refusal::SelfApproval => "SELF_APPROVAL",
                _ => "NOT_AN_APPROVER",
            };
            self.ctx.security.record_denial(
                &format!("/pim.approval.v1.ApprovalService/{method}"),
                &caller.subject,
                reason,
            );
        }
        refused(refusal)
    }

    async fn is_admin(&self, principal: &str, scope: &str) -> Result<bool, Status> {
        let assignment = self.ctx.peers.get(ServiceName::Assignment);
        pim_client::holds_any_role(assignment, principal, &roles::ADMINS, scope).await
    }

    /// One decision, with every check: input, the case's rules, and the directory now.
    async fn decide_one(&self, caller: &Caller, req: DecideRequest) -> Result<Case, Status> {
        let mut v = Violations::default();
        v.require("case_id", &req.case_id);
        let decision = Decision::try_from(req.decision).unwrap_or_default();
        if decision == Decision::Unspecified {
            v.add("decision", "must be approve or deny");
        }
        if req.justification.chars().count() > MAX_TEXT {
            v.add(
                "justification",
                format!("must be at most {MAX_TEXT} characters"),
            );
        }
        v.check().map_err(Status::from)?;
        let now = self.ctx.clock.now_millis();
        let Some(case) = self.store.get(&req.case_id).await.map_err(internal)? else {
            return Err(ApiError::NotFound(format!("case {}", req.case_id)).into());
        };
        let stage = case
            .check_decider(&caller.subject, now)
            .map_err(|r| self.deny("Decide", caller, r))?;
        let directory = self.directory();
        if !directory.enabled(&caller.subject).await? {
            return Err(self.deny("Decide", caller, Refusal::NotAnApprover));
        }
        // Qualified only through groups: the membership must still hold now.
        let entries = case.entries_of(stage, &caller.subject);
        if entries.iter().all(|e| !e.via_group_id.is_empty()) {
            let groups = directory.groups_of(&caller.subject).await?;
            if !entries.iter().any(|e| groups.contains(&e.via_group_id)) {
                return Err(self.deny("Decide", caller, Refusal::NotAnApprover));
            }
        }
        let applied = self
            .store
            .apply(&self.ctx.outbox, &req.case_id, &caller.subject, |current| {
                current.decide(&caller.subject, decision, &req.justification, now)
            })
            .await
            .map_err(internal)?;
        self.ctx.outbox.wake();
        match applied {
            Applied::Done(after) => Ok(after.to_proto()),
            Applied::Refused(refusal) => Err(self.deny("Decide", caller, refusal)),
            Applied::Missing => Err(ApiError::NotFound(format!("case {}", req.case_id)).into()),
        }
    }

    /// The people each stage names now, without the requestor, and proof that every stage's
    /// quorum can be met by them.
    async fn resolve_approvers(
        &self,
        req: &OpenCaseRequest,
    ) -> Result<Vec<crate::domain::ApproverRow>, Status> {
        let rule = req.rule.clone().unwrap_or_default();
        let summary = req.summary.clone().unwrap_or_default();
        let directory = self.directory();
        let mut rows = Vec::new();
        let mut everyone = Vec::new();
        let mut needed = 0;
        for (i, (stage, normalized)) in rule.stages.iter().zip(stage_rules(&rule)).enumerate() {
            let people: Vec<_> = directory
                .resolve(&stage.approvers, &summary.scope)
                .await?
                .into_iter()
                .filter(|(p, _)| *p != summary.requestor_id)
                .collect();
            let mut distinct: Vec<String> = people.iter().map(|(p, _)| p.clone()).collect();
            if !stage.escalation_approvers.is_empty() {
                distinct.extend(
                    directory
                        .resolve(&stage.escalation_approvers, &summary.scope)
                        .await?
                        .into_iter()
                        .map(|(p, _)| p)
                        .filter(|p| *p != summary.requestor_id),
                );
            }
            distinct.sort();
            distinct.dedup();
            if (distinct.len() as u32) < normalized.quorum {
                return Err(ApiError::FailedPrecondition {
                    reason: "APPROVAL_UNSATISFIABLE",
                    message: format!(
                        "stage {i} needs {} approvals but only {} people other than the requestor can give one",
                        normalized.quorum,
                        distinct.len()
                    ),
                }
                .into());
            }
            needed += normalized.quorum as usize;
            everyone.extend(distinct);
            rows.extend(people.into_iter().map(|(principal_id, via_group_id)| {
                crate::domain::ApproverRow {
                    stage: i as u32,
                    principal_id,
                    via_group_id,
                    escalation: false,
                }
            }));
        }
        everyone.sort();
        everyone.dedup();
        if rule.distinct_approvers_across_stages && everyone.len() < needed {
            return Err(ApiError::FailedPrecondition {
                reason: "APPROVAL_UNSATISFIABLE",
                message: format!(
                    "the stages need {needed} distinct approvers but only {} people can approve",
                    everyone.len()
                ),
            }
            .into());
        }
        Ok(rows)
    }
}

fn validate_open(req: &OpenCaseRequest) -> Result<(), Status> {
    let mut v = Violations::default();
    v.require("request_id", &req.request_id);
    if req.request_id.len() > 128 {
        v.add("request_id", "must be at most 128 characters");
    }
    if CaseKind::try_from(req.kind).unwrap_or_default() == CaseKind::Unspecified {
        v.add("kind", "must be activation, extension or renewal");
    }
    match &req.rule {
        None => v.add("rule", "is required"),
        Some(rule) => {
            if rule.stages.is_empty() || rule.stages.len() > MAX_STAGES {
                v.add(
                    "rule.stages",
                    format!("must hold between 1 and {MAX_STAGES} stages"),
                );
            }
        }
    }
    match &req.summary {
        None => v.add("summary", "is required"),
        Some(s) => {
            v.require("summary.requestor_id", &s.requestor_id);
            v.require("summary.role_id", &s.role_id);
            v.require("summary.scope", &s.scope);
            if s.justification.chars().count() > MAX_TEXT {
                v.add(
                    "summary.justification",
                    format!("must be at most {MAX_TEXT} characters"),
                );
            }
        }
    }
    v.check().map_err(Status::from)
}

#[tonic::async_trait]
impl ApprovalInternalService for ApprovalApi {
    async fn open_case(
        &self,
        request: Request<OpenCaseRequest>,
    ) -> Result<Response<OpenCaseResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        validate_open(&req)?;
        if let Some(existing) = self
            .store
            .find_by_request(&req.request_id)
            .await
            .map_err(internal)?
        {
            return Ok(Response::new(OpenCaseResponse {
                case: Some(existing.to_proto()),
            }));
        }
        let approvers = self.resolve_approvers(&req).await?;
        let now = self.ctx.clock.now_millis();
        let case = CaseRecord {
            id: uuid::Uuid::now_v7().to_string(),
            request_id: req.request_id.clone(),
            kind: CaseKind::try_from(req.kind).unwrap_or_default(),
            policy_version: req.policy_version,
            opened_at_ms: now,
            summary: req.summary.unwrap_or_default(),
            rule: req.rule.unwrap_or_default(),
            approvers,
            log: vec![Entry {
                seq: 1,
                at_ms: now,
                actor_id: caller.subject.clone(),
                action: Action::Opened,
                stage: 0,
                justification: String::new(),
            }],
            trace: pim_telemetry::current_trace_context(),
        };
        let opened = self
            .store
            .open(&self.ctx.outbox, &case)
            .await
            .map_err(internal)?;
        self.ctx.outbox.wake();
        Ok(Response::new(OpenCaseResponse {
            case: Some(opened.to_proto()),
        }))
    }

    async fn cancel_case(
        &self,
        request: Request<CancelCaseRequest>,
    ) -> Result<Response<CancelCaseResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("case_id", &req.case_id);
        v.require("request_id", &req.request_id);
        v.check().map_err(Status::from)?;
        let now = self.ctx.clock.now_millis();
        let applied = self
            .store
            .apply(&self.ctx.outbox, &req.case_id, &caller.subject, |case| {
                if case.request_id != req.request_id {
                    // Treated as absent below: a case is canceled only by its own request.
                    return Err(Refusal::NotAnApprover);
                }
                case.cancel(&caller.subject, now)
            })
            .await
            .map_err(internal)?;
        self.ctx.outbox.wake();
        let missing = || Status::from(ApiError::NotFound(format!("case {}", req.case_id)));
        match applied {
            Applied::Done(after) => Ok(Response::new(CancelCaseResponse {
                case: Some(after.to_proto()),
            })),
            // Canceling twice is answered with the canceled case.
            Applied::Refused(Refusal::Canceled) => {
                let case = self.store.get(&req.case_id).await.map_err(internal)?;
                Ok(Response::new(CancelCaseResponse {
                    case: case.map(|c| c.to_proto()),
                }))
            }
            Applied::Refused(Refusal::NotAnApprover) | Applied::Missing => Err(missing()),
            Applied::Refused(other) => Err(refused(other)),
        }
    }
}

fn status_filter(status: CaseStatus) -> &'static str {
    match status {
        CaseStatus::Unspecified => "",
        CaseStatus::Pending => "pending",
        CaseStatus::Approved => Action::CaseApproved.as_str(),
        CaseStatus::Denied => Action::CaseDenied.as_str(),
        CaseStatus::TimedOut => Action::TimedOut.as_str(),
        CaseStatus::Canceled => Action::Canceled.as_str(),
    }
}

#[tonic::async_trait]
impl ApprovalService for ApprovalApi {
    async fn decide(
        &self,
        request: Request<DecideRequest>,
    ) -> Result<Response<DecideResponse>, Status> {
        let caller = caller(&request)?;
        people_only(&caller)?;
        let case = self.decide_one(&caller, request.into_inner()).await?;
        Ok(Response::new(DecideResponse { case: Some(case) }))
    }

    async fn decide_bulk(
        &self,
        request: Request<DecideBulkRequest>,
    ) -> Result<Response<DecideBulkResponse>, Status> {
        let caller = caller(&request)?;
        people_only(&caller)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        if req.decisions.is_empty() || req.decisions.len() > MAX_BULK {
            v.add(
                "decisions",
                format!("must hold between 1 and {MAX_BULK} decisions"),
            );
        }
        v.check().map_err(Status::from)?;
        let mut results = Vec::with_capacity(req.decisions.len());
        for decision in req.decisions {
            let case_id = decision.case_id.clone();
            results.push(match self.decide_one(&caller, decision).await {
                Ok(case) => DecisionResult {
                    case_id,
                    code: "OK".into(),
                    case: Some(case),
                    ..Default::default()
                },
                Err(status) => DecisionResult {
                    case_id,
                    code: code_name(status.code()).into(),
                    reason: reason_of(&status),
                    message: status.message().to_owned(),
                    case: None,
                },
            });
        }
        Ok(Response::new(DecideBulkResponse { results }))
    }

    async fn list_awaiting_me(
        &self,
        request: Request<ListAwaitingMeRequest>,
    ) -> Result<Response<ListAwaitingMeResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let limit = page_size(req.page_size, &mut v);
        v.check().map_err(Status::from)?;
        let filter = Filter {
            kind: req.kind,
            role_id: req.role_id,
            requestor_id: req.requestor_id,
            after: req.page_token,
            limit,
            ..Default::default()
        };
        let records = self
            .store
            .awaiting(&caller.subject, &filter)
            .await
            .map_err(internal)?;
        let (cases, next_page_token) = page(records, limit);
        Ok(Response::new(ListAwaitingMeResponse {
            cases,
            next_page_token,
        }))
    }

    async fn get_case(
        &self,
        request: Request<GetCaseRequest>,
    ) -> Result<Response<GetCaseResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("case_id", &req.case_id);
        v.check().map_err(Status::from)?;
        let missing = || Status::from(ApiError::NotFound(format!("case {}", req.case_id)));
        let case = self
            .store
            .get(&req.case_id)
            .await
            .map_err(internal)?
            .ok_or_else(missing)?;
        let visible = case.requestor() == caller.subject
            || case.is_approver_anywhere(&caller.subject)
            || caller.service().is_some()
            || self.is_admin(&caller.subject, &case.summary.scope).await?;
        // A case the caller may not see is reported as absent, not as forbidden.
        if !visible {
            return Err(missing());
        }
        Ok(Response::new(GetCaseResponse {
            case: Some(case.to_proto()),
        }))
    }

    async fn list_cases(
        &self,
        request: Request<ListCasesRequest>,
    ) -> Result<Response<ListCasesResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let limit = page_size(req.page_size, &mut v);
        v.check().map_err(Status::from)?;
        // Admins see every case; anyone else sees the cases of their own requests.
        let requestor_id =
            if caller.service().is_some() || self.is_admin(&caller.subject, "/").await? {
                req.requestor_id
            } else {
                caller.subject.clone()
            };
        let filter = Filter {
            requestor_id,
            request_id: req.request_id,
            status: status_filter(CaseStatus::try_from(req.status).unwrap_or_default()).into(),
            after: req.page_token,
            limit,
            ..Default::default()
        };
        let records = self.store.list(&filter).await.map_err(internal)?;
        let (cases, next_page_token) = page(records, limit);
        Ok(Response::new(ListCasesResponse {
            cases,
            next_page_token,
        }))
    }

    async fn create_review_definition(
        &self,
        request: Request<CreateReviewDefinitionRequest>,
    ) -> Result<Response<CreateReviewDefinitionResponse>, Status> {
        let caller = caller(&request)?;
        let definition = self
            .reviews
            .create(&caller, request.into_inner().definition)
            .await?;
        Ok(Response::new(CreateReviewDefinitionResponse {
            definition: Some(definition),
        }))
    }

    async fn get_review_definition(
        &self,
        request: Request<GetReviewDefinitionRequest>,
    ) -> Result<Response<GetReviewDefinitionResponse>, Status> {
        let caller = caller(&request)?;
        let definition = self.reviews.get(&caller, &request.into_inner().id).await?;
        Ok(Response::new(GetReviewDefinitionResponse {
            definition: Some(definition),
        }))
    }

    async fn list_review_definitions(
        &self,
        request: Request<ListReviewDefinitionsRequest>,
    ) -> Result<Response<ListReviewDefinitionsResponse>, Status> {
        let caller = caller(&request)?;
        let definitions = self.reviews.list(&caller).await?;
        Ok(Response::new(ListReviewDefinitionsResponse { definitions }))
    }

    async fn update_review_definition(
        &self,
        request: Request<UpdateReviewDefinitionRequest>,
    ) -> Result<Response<UpdateReviewDefinitionResponse>, Status> {
        let caller = caller(&request)?;
        let definition = self
            .reviews
            .update(&caller, request.into_inner().definition)
            .await?;
        Ok(Response::new(UpdateReviewDefinitionResponse {
            definition: Some(definition),
        }))
    }

    async fn stop_review_definition(
        &self,
        request: Request<StopReviewDefinitionRequest>,
    ) -> Result<Response<StopReviewDefinitionResponse>, Status> {
        let caller = caller(&request)?;
        let definition = self.reviews.stop(&caller, &request.into_inner().id).await?;
        Ok(Response::new(StopReviewDefinitionResponse {
            definition: Some(definition),
        }))
    }

    async fn delete_review_definition(
        &self,
        request: Request<DeleteReviewDefinitionRequest>,
    ) -> Result<Response<DeleteReviewDefinitionResponse>, Status> {
        let caller = caller(&request)?;
        self.reviews
            .delete(&caller, &request.into_inner().id)
            .await?;
        Ok(Response::new(DeleteReviewDefinitionResponse {}))
    }

    async fn list_review_instances(
        &self,
        request: Request<ListReviewInstancesRequest>,
    ) -> Result<Response<ListReviewInstancesResponse>, Status> {
        let caller = caller(&request)?;
        let instances = self
            .reviews
            .instances(&caller, &request.into_inner().definition_id)
            .await?;
        Ok(Response::new(ListReviewInstancesResponse { instances }))
    }

    async fn list_review_items(
        &self,
        request: Request<ListReviewItemsRequest>,
    ) -> Result<Response<ListReviewItemsResponse>, Status> {
        let caller = caller(&request)?;
        let items = self
            .reviews
            .items(&caller, &request.into_inner().instance_id)
            .await?;
        Ok(Response::new(ListReviewItemsResponse { items }))
    }

    async fn decide_review_items(
        &self,
        request: Request<DecideReviewItemsRequest>,
    ) -> Result<Response<DecideReviewItemsResponse>, Status> {
        let caller = caller(&request)?;
        people_only(&caller)?;
        let decisions = request.into_inner().decisions;
        let mut v = Violations::default();
        if decisions.is_empty() || decisions.len() > 500 {
            v.add("decisions", "must hold between 1 and 500 decisions");
        }
        v.check().map_err(Status::from)?;
        let results = self.reviews.decide_many(&caller, &decisions).await;
        Ok(Response::new(DecideReviewItemsResponse { results }))
    }

    async fn accept_recommendations(
        &self,
        request: Request<AcceptRecommendationsRequest>,
    ) -> Result<Response<AcceptRecommendationsResponse>, Status> {
        let caller = caller(&request)?;
        people_only(&caller)?;
        let items = self
            .reviews
            .accept_recommendations(&caller, &request.into_inner().instance_id)
            .await?;
        Ok(Response::new(AcceptRecommendationsResponse { items }))
    }
}
