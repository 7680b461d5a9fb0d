//! `pim.audit.v1.AlertService`: thin handlers that authorize, validate and delegate. Readers read;
//! only Global Administrators and Privileged Role Administrators at `/` change anything.

use pim_client::roles;
use pim_config::ServiceName;
use pim_events::NewEvent;
use pim_grpc::{ApiError, Violations, caller};
use pim_host::HostContext;
use pim_proto::{
    assignment::v1::{
        AssignmentInternalServiceRemoveScheduleRequest, ConvertScheduleRequest, ScheduleKind,
    },
    audit::v1::{
        AlertConfigurationUpdated, AlertDismissed, DismissAlertRequest, DismissAlertResponse,
        GetAlertRequest, GetAlertResponse, ListAlertIncidentsRequest, ListAlertIncidentsResponse,
        ListAlertsRequest, ListAlertsResponse, RefreshAlertsRequest, RefreshAlertsResponse,
        RemediateAlertIncidentRequest, RemediateAlertIncidentResponse,
        UpdateAlertConfigurationRequest, UpdateAlertConfigurationResponse,
        alert_service_server::AlertService,
    },
};
use sea_orm::TransactionTrait;
use tonic::{Request, Response, Status};

use super::{
    definitions::{AlertKind, Settings},
    engine::{self, Alerting, Targets},
    incidents::{self, OPEN},
    refresh,
};

const READERS: [&str; 5] = [
    roles::GLOBAL_ADMINISTRATOR,
    roles::PRIVILEGED_ROLE_ADMINISTRATOR,
    roles::SECURITY_ADMINISTRATOR,
    roles::SECURITY_READER,
    roles::GLOBAL_READER,
];

pub struct AlertApi {
    ctx: HostContext,
    alerting: Alerting,
}

fn internal(e: impl Into<anyhow::Error>) -> Status {
    ApiError::Internal(e.into()).into()
}

fn kind_of(id: &str, violations: &mut Violations) -> Option<AlertKind> {
    if id.trim().is_empty() {
        violations.add("alert_id", "is required");
        return None;
    }
    let kind = AlertKind::from_id(id);
    if kind.is_none() {
        violations.add("alert_id", "is not an alert PIM knows");
    }
    kind
}

impl AlertApi {
    pub fn new(ctx: HostContext) -> Self {
        let alerting = Alerting::new(ctx.outbox.clone(), &ctx.settings.audit.alerts_disabled);
        Self { ctx, alerting }
    }

    /// The caller's principal id, if it holds one of `allowed` at `/`.
    async fn require<T>(
        &self,
        request: &Request<T>,
        allowed: &[&str],
        what: &str,
    ) -> Result<String, Status> {
        let caller = caller(request)?;
        let assignment = self.ctx.peers.get(ServiceName::Assignment);
        if caller.service().is_none()
            && pim_client::holds_any_role(assignment, &caller.subject, allowed, "/").await?
        {
            return Ok(caller.subject);
        }
        Err(ApiError::PermissionDenied {
            reason: "NOT_AUTHORIZED",
            message: format!("{what} at /"),
        }
        .into())
    }

    async fn reader<T>(&self, request: &Request<T>) -> Result<String, Status> {
        self.require(
            request,
            &READERS,
            "reading alerts needs Global Administrator, Privileged Role Administrator, Security \
             Administrator, Security Reader or Global Reader",
        )
        .await
    }

    async fn admin<T>(&self, request: &Request<T>) -> Result<String, Status> {
        self.require(
            request,
            &roles::ADMINS,
            "changing alerts needs Global Administrator or Privileged Role Administrator",
        )
        .await
    }

    async fn settings_of(&self, kind: AlertKind) -> Result<Settings, Status> {
        settings_in(&self.ctx.db, &self.alerting.disabled, kind).await
    }
}

async fn settings_in(
    db: &impl sea_orm::ConnectionTrait,
    disabled: &[String],
    kind: AlertKind,
) -> Result<Settings, Status> {
    let all = incidents::settings(db, disabled).await.map_err(internal)?;
    Ok(all
        .into_iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, s)| s)
        .unwrap_or_else(|| Settings::default_for(kind)))
}

#[tonic::async_trait]
impl AlertService for AlertApi {
    async fn list_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        self.reader(&request).await?;
        let db = &self.ctx.db;
        let mut alerts = Vec::new();
        for (kind, settings) in incidents::settings(db, &self.alerting.disabled)
            .await
            .map_err(internal)?
        {
            alerts.push(engine::alert(db, kind, &settings).await.map_err(internal)?);
        }
        Ok(Response::new(ListAlertsResponse { alerts }))
    }

    async fn get_alert(
        &self,
        request: Request<GetAlertRequest>,
    ) -> Result<Response<GetAlertResponse>, Status> {
        self.reader(&request).await?;
        let mut violations = Violations::default();
        let kind = kind_of(&request.get_ref().alert_id, &mut violations);
        violations.check()?;
        let Some(kind) = kind else {
            return Err(Status::internal("unreachable"));
        };
        let settings = self.settings_of(kind).await?;
        let db = &self.ctx.db;
        let alert = engine::alert(db, kind, &settings).await.map_err(internal)?;
        let open = incidents::list(db, kind, false, 0, 1000)
            .await
            .map_err(internal)?;
        Ok(Response::new(GetAlertResponse {
            alert: Some(alert),
            incidents: open.iter().map(|i| i.to_proto()).collect(),
        }))
    }

    async fn list_alert_incidents(
        &self,
        request: Request<ListAlertIncidentsRequest>,
    ) -> Result<Response<ListAlertIncidentsResponse>, Status> {
        self.reader(&request).await?;
        let r = request.get_ref();
        let mut violations = Violations::default();
        let kind = kind_of(&r.alert_id, &mut violations);
        let size = match r.page_size {
            0 => 100,
            1..=1000 => r.page_size as u64,
            _ => {
                violations.add("page_size", "must be between 0 and 1000");
                100
            }
        };
        let offset = match r.page_token.as_str() {
            "" => 0,
            token => token.parse::<u64>().unwrap_or_else(|_| {
                violations.add("page_token", "is not a token this service issued");
                0
            }),
        };
        violations.check()?;
        let Some(kind) = kind else {
            return Err(Status::internal("unreachable"));
        };
        let page = incidents::list(&self.ctx.db, kind, r.include_closed, offset, size + 1)
            .await
            .map_err(internal)?;
        let more = page.len() as u64 > size;
        Ok(Response::new(ListAlertIncidentsResponse {
            incidents: page
                .iter()
                .take(size as usize)
                .map(|i| i.to_proto())
                .collect(),
            next_page_token: if more {
                (offset + size).to_string()
            } else {
                String::new()
            },
        }))
    }

    async fn update_alert_configuration(
        &self,
        request: Request<UpdateAlertConfigurationRequest>,
    ) -> Result<Response<UpdateAlertConfigurationResponse>, Status> {
        let by = self.admin(&request).await?;
        let r = request.into_inner();
        let update = r.configuration.unwrap_or_default();
        let mut violations = Violations::default();
        let Some(kind) = kind_of(&update.alert_id, &mut violations) else {
            violations.check()?;
            return Err(Status::internal("unreachable"));
        };
        let previous = self.settings_of(kind).await?;
        let mut next = Settings::apply(&previous, kind, &update, &mut violations);
        violations.check()?;
        let now = self.ctx.clock.now_millis();
        next.updated_by = by.clone();
        next.updated_at_ms = now;
        if r.validate_only {
            return Ok(Response::new(UpdateAlertConfigurationResponse {
                configuration: Some(next.to_proto(kind)),
            }));
        }
        let txn = self.ctx.db.begin().await.map_err(internal)?;
        engine::lock(&txn).await.map_err(internal)?;
        incidents::save_settings(&txn, kind, &next)
            .await
            .map_err(internal)?;
        let payload = AlertConfigurationUpdated {
            configuration: Some(next.to_proto(kind)),
            previous: Some(previous.to_proto(kind)),
        };
        self.ctx
            .outbox
            .enqueue(
                &txn,
                NewEvent::new(
                    "audit.alert_configuration_updated",
                    kind.id(),
                    pim_proto::pack(&payload),
                )
                .by(&by),
            )
            .await
            .map_err(internal)?;
        // New thresholds apply at once, to everything already known.
        engine::evaluate(
            &txn,
            &super::view::Tables(&txn),
            &self.alerting,
            Targets::all_of(kind),
            now,
        )
        .await
        .map_err(internal)?;
        txn.commit().await.map_err(internal)?;
        self.ctx.outbox.wake();
        Ok(Response::new(UpdateAlertConfigurationResponse {
            configuration: Some(next.to_proto(kind)),
        }))
    }

    async fn dismiss_alert(
        &self,
        request: Request<DismissAlertRequest>,
    ) -> Result<Response<DismissAlertResponse>, Status> {
        let by = self.admin(&request).await?;
        let r = request.into_inner();
        let mut violations = Violations::default();
        let kind = kind_of(&r.alert_id, &mut violations);
        violations.require("justification", &r.justification);
        violations.check()?;
        let Some(kind) = kind else {
            return Err(Status::internal("unreachable"));
        };
        let now = self.ctx.clock.now_millis();
        let txn = self.ctx.db.begin().await.map_err(internal)?;
        engine::lock(&txn).await.map_err(internal)?;
        let target = (!r.incident_id.is_empty()).then_some(r.incident_id.as_str());
        if let Some(id) = target {
            let found = incidents::get(&txn, id).await.map_err(internal)?;
            match found {
                Some(i) if i.alert_id == kind.id() && i.state == OPEN => {}
                Some(i) if i.alert_id == kind.id() => {
                    return Err(ApiError::FailedPrecondition {
                        reason: "INCIDENT_CLOSED",
                        message: format!("incident {id} is {}", i.state),
                    }
                    .into());
                }
                _ => return Err(ApiError::NotFound(format!("incident {id}")).into()),
            }
        }
        let dismissed = incidents::dismiss(&txn, kind, target, &by, &r.justification, now)
            .await
            .map_err(internal)?;
        if !dismissed.is_empty() {
            // Read through the transaction: `pim dev` has one SQLite connection.
            let settings = settings_in(&txn, &self.alerting.disabled, kind).await?;
            let payload = AlertDismissed {
                alert: Some(
                    engine::alert(&txn, kind, &settings)
                        .await
                        .map_err(internal)?,
                ),
                incidents: dismissed.iter().map(|i| i.to_proto()).collect(),
                justification: r.justification.clone(),
            };
            self.ctx
                .outbox
                .enqueue(
                    &txn,
                    NewEvent::new(
                        "audit.alert_dismissed",
                        kind.id(),
                        pim_proto::pack(&payload),
                    )
                    .by(&by),
                )
                .await
                .map_err(internal)?;
        }
        txn.commit().await.map_err(internal)?;
        self.ctx.outbox.wake();
        Ok(Response::new(DismissAlertResponse {
            incidents: dismissed.iter().map(|i| i.to_proto()).collect(),
        }))
    }

    async fn remediate_alert_incident(
        &self,
        request: Request<RemediateAlertIncidentRequest>,
    ) -> Result<Response<RemediateAlertIncidentResponse>, Status> {
        let by = self.admin(&request).await?;
        let r = request.into_inner();
        let mut violations = Violations::default();
        let kind = kind_of(&r.alert_id, &mut violations);
        violations.require("incident_id", &r.incident_id);
        violations.check()?;
        let Some(kind) = kind else {
            return Err(Status::internal("unreachable"));
        };
        if !kind.remediable() {
            return Err(ApiError::FailedPrecondition {
                reason: "NOT_REMEDIABLE",
                message: format!("{} has no remediation; dismiss it instead", kind.id()),
            }
            .into());
        }
        let incident = incidents::get(&self.ctx.db, &r.incident_id)
            .await
            .map_err(internal)?
            .filter(|i| i.alert_id == kind.id())
            .ok_or_else(|| ApiError::NotFound(format!("incident {}", r.incident_id)))?;
        if incident.state != OPEN {
            return Err(ApiError::FailedPrecondition {
                reason: "INCIDENT_CLOSED",
                message: format!("incident {} is {}", incident.id, incident.state),
            }
            .into());
        }
        let justification = if r.justification.trim().is_empty() {
            format!("remediation of alert incident {} by {by}", incident.id)
        } else {
            r.justification.clone()
        };
        // The assignment context keeps its own rules, the last Global Administrator first; its
        // refusal reaches the caller as it is.
        let mut client = self
            .ctx
            .peers
            .get(ServiceName::Assignment)
            .assignment_internal();
        let schedule_id = incident.finding.schedule_id.clone();
        let revision = match kind {
            AlertKind::RedundantAssignment => {
                client
                    .remove_schedule(AssignmentInternalServiceRemoveScheduleRequest {
                        schedule_id,
                        decision_id: incident.id.clone(),
                        justification,
                    })
                    .await?
                    .into_inner()
                    .revision
            }
            _ => {
                client
                    .convert_schedule(ConvertScheduleRequest {
                        schedule_id,
                        target_kind: ScheduleKind::Eligible.into(),
                        decision_id: incident.id.clone(),
                    })
                    .await?
                    .into_inner()
                    .revision
            }
        };
        let now = self.ctx.clock.now_millis();
        let txn = self.ctx.db.begin().await.map_err(internal)?;
        incidents::mark_remediated(&txn, &incident.id, &by, now)
            .await
            .map_err(internal)?;
        let updated = incidents::get(&txn, &incident.id)
            .await
            .map_err(internal)?
            .unwrap_or(incident);
        txn.commit().await.map_err(internal)?;
        Ok(Response::new(RemediateAlertIncidentResponse {
            incident: Some(updated.to_proto()),
            revision,
        }))
    }

    async fn refresh_alerts(
        &self,
        request: Request<RefreshAlertsRequest>,
    ) -> Result<Response<RefreshAlertsResponse>, Status> {
        self.admin(&request).await?;
        let now = self.ctx.clock.now_millis();
        let txn = self.ctx.db.begin().await.map_err(internal)?;
        let done = refresh::refresh(&txn, &self.alerting, now)
            .await
            .map_err(internal)?;
        let mut alerts = Vec::new();
        for (kind, settings) in incidents::settings(&txn, &self.alerting.disabled)
            .await
            .map_err(internal)?
        {
            alerts.push(
                engine::alert(&txn, kind, &settings)
                    .await
                    .map_err(internal)?,
            );
        }
        txn.commit().await.map_err(internal)?;
        self.ctx.outbox.wake();
        Ok(Response::new(RefreshAlertsResponse {
            alerts,
            records_scanned: done.records_scanned,
            incidents_raised: done.raised,
            incidents_resolved: done.resolved,
        }))
    }
}
