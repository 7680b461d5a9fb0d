//! Activation requests. Each change of status and its event commit in one transaction.

use pim_db::stmt;
use pim_events::{NewEvent, Outbox};
use pim_proto::{
    activation::v1::{ActivationRequest, RequestGranted, RequestStatus, RequestSubmitted, Ticket},
    timestamp_from_millis,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult, TransactionTrait};

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

fn status_text(status: RequestStatus) -> &'static str {
    match status {
        RequestStatus::PendingApproval => "pending_approval",
        RequestStatus::Provisioned => "provisioned",
        RequestStatus::Denied => "denied",
        RequestStatus::Canceled => "canceled",
        RequestStatus::Failed => "failed",
        RequestStatus::Unspecified => "pending_provisioning",
    }
}

impl Store {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn find(
        &self,
        principal: &str,
        client_request_id: &str,
    ) -> anyhow::Result<Option<ActivationRequest>> {
        self.db
            .query_one_raw(stmt(
                &self.db,
                "SELECT * FROM requests WHERE principal_id = $1 AND client_request_id = $2",
                [principal.into(), client_request_id.into()],
            ))
            .await?
            .map(|row| request(&row))
            .transpose()
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<ActivationRequest>> {
        self.db
            .query_one_raw(stmt(
                &self.db,
                "SELECT * FROM requests WHERE id = $1",
                [id.into()],
            ))
            .await?
            .map(|row| request(&row))
            .transpose()
    }

    /// Records a submitted request and `activation.request_submitted`.
    pub async fn submit(
        &self,
        outbox: &Outbox,
        request: &ActivationRequest,
        correlation: &str,
    ) -> anyhow::Result<()> {
        let txn = self.db.begin().await?;
        let ticket = request.ticket.clone().unwrap_or_default();
        txn.execute_raw(stmt(
            &txn,
            "INSERT INTO requests (id, principal_id, client_request_id, action, role_id, scope, status, justification, \
             ticket_system, ticket_number, start_ms, end_ms, created_at_ms, policy_version) \
             VALUES ($1, $2, $3, 'self_activate', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            [
                request.id.clone().into(),
                request.principal_id.clone().into(),
                request.request_id.clone().into(),
                request.role_id.clone().into(),
                request.scope.clone().into(),
                status_text(request.status()).into(),
                request.justification.clone().into(),
                ticket.system.into(),
                ticket.number.into(),
                millis(request.start_time.as_ref()).into(),
                millis(request.end_time.as_ref()).into(),
                millis(request.created_at.as_ref()).into(),
                request.policy_version.into(),
            ],
        ))
        .await?;
        let payload = RequestSubmitted {
            request: Some(request.clone()),
        };
        let event = NewEvent::new(
            "activation.request_submitted",
            request.id.clone(),
            pim_proto::pack(&payload),
        )
        .by(&request.principal_id)
        .correlated(correlation);
        outbox.enqueue(&txn, event).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Marks the request provisioned with its window, and announces `activation.request_granted`.
    pub async fn granted(
        &self,
        outbox: &Outbox,
        mut request: ActivationRequest,
        window_id: &str,
        correlation: &str,
    ) -> anyhow::Result<ActivationRequest> {
        let txn = self.db.begin().await?;
        txn.execute_raw(stmt(
            &txn,
            "UPDATE requests SET status = $1, window_id = $2 WHERE id = $3",
            [
                status_text(RequestStatus::Provisioned).into(),
                window_id.into(),
                request.id.clone().into(),
            ],
        ))
        .await?;
        request.status = RequestStatus::Provisioned.into();
        request.window_id = window_id.to_owned();
        let payload = RequestGranted {
            request: Some(request.clone()),
        };
        let event = NewEvent::new(
            "activation.request_granted",
            request.id.clone(),
            pim_proto::pack(&payload),
        )
        .by(&request.principal_id)
        .correlated(correlation);
        outbox.enqueue(&txn, event).await?;
        txn.commit().await?;
        Ok(request)
    }
}

fn millis(ts: Option<&pim_proto::Timestamp>) -> i64 {
    ts.map(pim_proto::millis_from_timestamp).unwrap_or_default()
}

fn request(row: &QueryResult) -> anyhow::Result<ActivationRequest> {
    let status: String = row.try_get("", "status")?;
    let status = match status.as_str() {
        "pending_approval" => RequestStatus::PendingApproval,
        "provisioned" => RequestStatus::Provisioned,
        "denied" => RequestStatus::Denied,
        "canceled" => RequestStatus::Canceled,
        "failed" => RequestStatus::Failed,
        _ => RequestStatus::Unspecified,
    };
    Ok(ActivationRequest {
        id: row.try_get("", "id")?,
        request_id: row.try_get("", "client_request_id")?,
        principal_id: row.try_get("", "principal_id")?,
        action: pim_proto::activation::v1::RequestAction::SelfActivate.into(),
        role_id: row.try_get("", "role_id")?,
        scope: row.try_get("", "scope")?,
        status: status.into(),
        justification: row.try_get("", "justification")?,
        ticket: Some(Ticket {
            system: row.try_get("", "ticket_system")?,
            number: row.try_get("", "ticket_number")?,
        }),
        start_time: Some(timestamp_from_millis(row.try_get("", "start_ms")?)),
        end_time: Some(timestamp_from_millis(row.try_get("", "end_ms")?)),
        created_at: Some(timestamp_from_millis(row.try_get("", "created_at_ms")?)),
        window_id: row
            .try_get::<Option<String>>("", "window_id")?
            .unwrap_or_default(),
        policy_version: row.try_get("", "policy_version")?,
    })
}
