//! Handlers of the internal commands peers send on a decision: revoking a window (activation),
//! removing schedules, one or a batch (approval's reviews, audit's alert remediation) and converting one
//! (audit). The allow-list admits only those services; each call's decision id is recorded.

use pim_grpc::{Violations, caller};
use pim_proto::assignment::v1::{
    AssignmentInternalServiceRemoveScheduleRequest,
    AssignmentInternalServiceRemoveScheduleResponse, ConvertScheduleRequest,
    ConvertScheduleResponse, RemoveSchedulesRequest, RemoveSchedulesResponse, RevokeWindowRequest,
    RevokeWindowResponse, ScheduleKind,
};
use tonic::{Request, Response, Status};

use super::{AssignmentApi, invalid};

type Reply<T> = std::result::Result<Response<T>, Status>;

impl AssignmentApi {
    pub(super) async fn handle_revoke_window(
        &self,
        request: Request<RevokeWindowRequest>,
    ) -> Reply<RevokeWindowResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("request_id", &req.request_id);
        v.require("decision_id", &req.decision_id);
        invalid(v)?;
        let (window, revision) = self
            .store
            .revoke_window(
                &self.ctx.outbox,
                &req.request_id,
                &caller.subject,
                &req.decision_id,
                self.ctx.clock.now_millis(),
            )
            .await?;
        self.written(revision).await?;
        Ok(Response::new(RevokeWindowResponse {
            window: Some(window),
            revision,
        }))
    }

    pub(super) async fn handle_internal_remove_schedule(
        &self,
        request: Request<AssignmentInternalServiceRemoveScheduleRequest>,
    ) -> Reply<AssignmentInternalServiceRemoveScheduleResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("schedule_id", &req.schedule_id);
        v.require("decision_id", &req.decision_id);
        invalid(v)?;
        let revision = self
            .store
            .remove_schedule(
                &self.ctx.outbox,
                &req.schedule_id,
                &caller.subject,
                &req.justification,
                &req.decision_id,
                true,
            )
            .await?;
        self.written(revision).await?;
        Ok(Response::new(
            AssignmentInternalServiceRemoveScheduleResponse { revision },
        ))
    }

    pub(super) async fn handle_convert_schedule(
        &self,
        request: Request<ConvertScheduleRequest>,
    ) -> Reply<ConvertScheduleResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("schedule_id", &req.schedule_id);
        v.require("decision_id", &req.decision_id);
        if req.target_kind() == ScheduleKind::Unspecified {
            v.add("target_kind", "must be ELIGIBLE or ACTIVE");
        }
        invalid(v)?;
        let (schedule, revision) = self
            .store
            .convert_schedule(
                &self.ctx.outbox,
                &req.schedule_id,
                req.target_kind(),
                &caller.subject,
                &req.decision_id,
                self.ctx.clock.now_millis(),
                true,
            )
            .await?;
        self.written(revision).await?;
        Ok(Response::new(ConvertScheduleResponse {
            schedule: Some(schedule),
            revision,
        }))
    }

    pub(super) async fn handle_remove_schedules(
        &self,
        request: Request<RemoveSchedulesRequest>,
    ) -> Reply<RemoveSchedulesResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        if req.removals.len() > MAX_REMOVALS {
            v.add(
                "removals",
                format!("a batch holds at most {MAX_REMOVALS} removals"),
            );
        }
        for (i, r) in req.removals.iter().enumerate() {
            v.require(&format!("removals[{i}].schedule_id"), &r.schedule_id);
            v.require(&format!("removals[{i}].decision_id"), &r.decision_id);
        }
        invalid(v)?;
        let (outcomes, revision) = self
            .store
            .remove_schedules(&self.ctx.outbox, &req.removals, &caller.subject)
            .await?;
        self.written(revision).await?;
        Ok(Response::new(RemoveSchedulesResponse {
            outcomes,
            revision,
        }))
    }
}

/// The most removals one `RemoveSchedules` call carries: a review's denials go in pages.
const MAX_REMOVALS: usize = 500;
