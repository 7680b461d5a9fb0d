//! What activation does with other contexts' events, inside the consumer's transaction:
//! approval decisions move requests on; removed eligibility and disabled principals end their
//! windows' requests (access itself already ended in the assignment context, at query time).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use pim_events::{EventHandler, HandlerFuture, Outbox};
use pim_proto::{
    activation::v1::RequestStatus,
    approval::v1::{CaseChanged, CaseKind, CaseStatus},
    assignment::v1::{PrincipalDisabled, ScheduleRemoved},
    events::v1::Event,
    millis_from_timestamp,
};
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use tokio::sync::Notify;

use crate::{
    model::GRANTED,
    store::{Change, Store, transition_in},
};

pub struct Consumer {
    pub store: Store,
    pub outbox: Outbox,
    /// Wakes the provisioner once approvals are committed.
    pub approved: Arc<Notify>,
    /// A case's outcome was applied since the last commit: only then is the provisioner woken,
    /// not after every event this consumer sees.
    pub decided: AtomicBool,
}

fn decode<M: prost::Message + Default>(event: &Event) -> anyhow::Result<M> {
    let payload = event.payload.clone().unwrap_or_default();
    Ok(M::decode(payload.value.as_slice())?)
}

impl Consumer {
    async fn on_case(&self, txn: &DatabaseTransaction, event: &Event) -> anyhow::Result<()> {
        let changed: CaseChanged = decode(event)?;
        let case = changed.case.unwrap_or_default();
        let mut actor = case.decided_by.clone();
        let pending = [RequestStatus::PendingApproval];
        let change = match (event.r#type.as_str(), case.status()) {
            ("approval.case_decided", CaseStatus::Approved)
                if case.kind() != CaseKind::Activation =>
            {
                // An extension or renewal keeps the end it asked for.
                Change::to(RequestStatus::PendingProvisioning)
            }
            ("approval.case_decided", CaseStatus::Approved) => {
                let Some(request) = self.store_get(txn, &case.request_id).await? else {
                    return Ok(());
                };
                // The window starts at approval, or at the requested start if that is later.
                let decided = case
                    .decided_at
                    .as_ref()
                    .map(millis_from_timestamp)
                    .unwrap_or_default();
                let start = request
                    .requested_start
                    .as_ref()
                    .map(millis_from_timestamp)
                    .unwrap_or(decided)
                    .max(decided);
                let duration = request
                    .duration
                    .map(|d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000)
                    .unwrap_or_default();
                Change {
                    start_ms: Some(start),
                    end_ms: Some(start + duration),
                    ..Change::to(RequestStatus::PendingProvisioning)
                }
            }
            ("approval.case_decided", CaseStatus::Denied) => {
                Change::to(RequestStatus::Denied).because("APPROVAL_DENIED")
            }
            ("approval.case_timed_out", _) => {
                Change::to(RequestStatus::TimedOut).because("APPROVAL_TIMED_OUT")
            }
            // Only the requestor cancels (activation's `Cancel` refuses anyone else), and
            // approval knows only that activation asked: when this event overtakes the
            // `Cancel` call's own write, the history still names who canceled.
            ("approval.case_canceled", _) => {
                actor = case
                    .summary
                    .as_ref()
                    .map(|s| s.requestor_id.clone())
                    .unwrap_or_default();
                Change::to(RequestStatus::Canceled)
            }
            _ => return Ok(()),
        };
        transition_in(
            txn,
            &self.outbox,
            &case.request_id,
            &pending,
            change,
            &actor,
        )
        .await?;
        Ok(())
    }

    async fn store_get(
        &self,
        txn: &DatabaseTransaction,
        id: &str,
    ) -> anyhow::Result<Option<pim_proto::activation::v1::ActivationRequest>> {
        self.store.get_in(txn, id).await
    }

    /// Ends the granted requests `ids` as revoked, for `reason`.
    async fn end(
        &self,
        txn: &impl ConnectionTrait,
        ids: Vec<String>,
        reason: &str,
    ) -> anyhow::Result<()> {
        for id in ids {
            transition_in(
                txn,
                &self.outbox,
                &id,
                &GRANTED,
                Change::to(RequestStatus::Revoked).because(reason),
                "",
            )
            .await?;
        }
        Ok(())
    }
}

impl EventHandler for Consumer {
    fn handle<'a>(&'a self, txn: &'a DatabaseTransaction, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            match event.r#type.as_str() {
                "approval.case_decided" | "approval.case_timed_out" | "approval.case_canceled" => {
                    self.decided.store(true, Ordering::Release);
                    self.on_case(txn, event).await
                }
                "assignment.schedule_removed" => {
                    let removed: ScheduleRemoved = decode(event)?;
                    let schedule = removed.schedule.unwrap_or_default();
                    let ids = self.store.granted_of(txn, "", &schedule.id).await?;
                    self.end(txn, ids, "ELIGIBILITY_REMOVED").await
                }
                "assignment.principal_disabled" => {
                    let disabled: PrincipalDisabled = decode(event)?;
                    let principal = disabled.principal.unwrap_or_default();
                    let ids = self.store.granted_of(txn, &principal.id, "").await?;
                    self.end(txn, ids, "PRINCIPAL_DISABLED").await
                }
                _ => Ok(()),
            }
        })
    }

    fn committed(&self) {
        if self.decided.swap(false, Ordering::AcqRel) {
            self.approved.notify_one();
        }
    }
}
