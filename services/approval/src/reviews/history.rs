//! The activation history recommendations read, kept from activation's events: a review never
//! reads another context's database.

use pim_events::{EventHandler, HandlerFuture};
use pim_proto::{activation::v1::RequestChanged, events::v1::Event};
use prost::Message as _;
use sea_orm::DatabaseTransaction;

use super::ReviewStore;

pub struct History {
    pub store: ReviewStore,
}

impl EventHandler for History {
    fn handle<'a>(&'a self, txn: &'a DatabaseTransaction, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            if event.r#type != "activation.request_granted" {
                return Ok(());
            }
            let payload = event.payload.clone().unwrap_or_default();
            let request = RequestChanged::decode(payload.value.as_slice())?
                .request
                .unwrap_or_default();
            let at = request
                .start_time
                .as_ref()
                .map(pim_proto::millis_from_timestamp)
                .unwrap_or_default();
            self.store
                .record_activation(
                    txn,
                    &request.id,
                    &request.principal_id,
                    &request.role_id,
                    &request.scope,
                    at,
                )
                .await
        })
    }
}
