//! gRPC handlers of the audit context.

use pim_client::roles;
use pim_config::ServiceName;
use pim_db::stmt;
use pim_grpc::{ApiError, DenialRecorder as _, caller};
use pim_host::HostContext;
use pim_proto::{
    assignment::v1::CheckAccessRequest,
    audit::v1::{
        AuditRecord, ListRecordsRequest, ListRecordsResponse, audit_service_server::AuditService,
    },
    timestamp_from_millis,
};
use sea_orm::ConnectionTrait;
use tonic::{Request, Response, Status};

pub struct AuditApi {
    ctx: HostContext,
}

impl AuditApi {
    pub fn new(ctx: HostContext) -> Self {
        Self { ctx }
    }

    /// Readers hold Global Administrator, Global Reader, Security Reader or Security
    /// Administrator at `/`, as the assignment context says now.
    async fn may_read(&self, principal: &str) -> Result<bool, Status> {
        let assignment = self.ctx.peers.get(ServiceName::Assignment);
        for role in roles::READERS {
            let answer = pim_client::retry_idempotent(|| {
                let mut client = assignment.assignment();
                let check = CheckAccessRequest {
                    principal_id: principal.to_owned(),
                    role_id: role.to_owned(),
                    scope: "/".to_owned(),
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
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_records(
        &self,
        request: Request<ListRecordsRequest>,
    ) -> Result<Response<ListRecordsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut violations = Vec::new();
        if req.page_size < 0 || req.page_size > 1000 {
            violations.push((
                "page_size".to_owned(),
                "must be between 0 and 1000".to_owned(),
            ));
        }
        let after: i64 = if req.page_token.is_empty() {
            0
        } else {
            match req.page_token.parse() {
                Ok(after) => after,
                Err(_) => {
                    violations.push((
                        "page_token".to_owned(),
                        "is not a token this service issued".to_owned(),
                    ));
                    0
                }
            }
        };
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations).into());
        }
        if !self.may_read(&caller.subject).await? {
            self.ctx.security.record_denial(
                "/pim.audit.v1.AuditService/ListRecords",
                &caller.subject,
                "NOT_AUTHORIZED",
            );
            return Err(ApiError::PermissionDenied {
                reason: "NOT_AUTHORIZED",
                message: "reading the audit trail needs a reader role at /".into(),
            }
            .into());
        }
        let limit = if req.page_size == 0 {
            100
        } else {
            i64::from(req.page_size)
        };
        let db = &self.ctx.db;
        let rows = db
            .query_all_raw(stmt(
                db,
                "SELECT * FROM audit_records WHERE sequence > $1 AND ($2 = '' OR correlation_id = $2) ORDER BY sequence LIMIT $3",
                [after.into(), req.correlation_id.clone().into(), limit.into()],
            ))
            .await
            .map_err(|e| Status::from(ApiError::Internal(e.into())))?;
        let records = rows
            .iter()
            .map(|row| -> Result<AuditRecord, sea_orm::DbErr> {
                Ok(AuditRecord {
                    sequence: row.try_get::<i64>("", "sequence")? as u64,
                    occurred_at: Some(timestamp_from_millis(row.try_get("", "occurred_at_ms")?)),
                    recorded_at: Some(timestamp_from_millis(row.try_get("", "recorded_at_ms")?)),
                    activity: row.try_get("", "activity")?,
                    event_type: row.try_get("", "event_type")?,
                    event_id: row.try_get("", "event_id")?,
                    producer: row.try_get("", "producer")?,
                    producer_sequence: row.try_get::<i64>("", "producer_sequence")? as u64,
                    actor_id: row.try_get("", "actor_id")?,
                    subject: row.try_get("", "subject")?,
                    correlation_id: row.try_get("", "correlation_id")?,
                    trace_id: row.try_get("", "trace_id")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::from(ApiError::Internal(e.into())))?;
        let next_page_token = match records.last() {
            Some(last) if records.len() as i64 == limit => last.sequence.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(ListRecordsResponse {
            records,
            next_page_token,
        }))
    }
}
