//! Writing one chained audit record per event, inside the consumer's transaction, so the record
//! and the inbox row commit together: a redelivered event finds its id in the inbox and writes
//! nothing. Gaps in a producer's sequence are found and replayed by the bus (`pim_events`).

use pim_clock::SharedClock;
use pim_events::{EventHandler, HandlerFuture};
use pim_proto::events::v1::Event;
use sea_orm::DatabaseTransaction;

use crate::{alerts::Alerting, extract::content_of, store};

pub struct Recorder {
    clock: SharedClock,
    /// Where the alerts a record raises or resolves go: audit's own outbox.
    alerting: Alerting,
}

impl Recorder {
    pub fn new(clock: SharedClock, alerting: Alerting) -> Self {
        Self { clock, alerting }
    }
}

impl EventHandler for Recorder {
    fn handle<'a>(&'a self, txn: &'a DatabaseTransaction, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            let now = self.clock.now_millis();
            let mut records = store::append_many(txn, vec![content_of(event, now)]).await?;
            let record = records.pop().map(|r| r.content);
            // Security alerts are evaluated with the record, in the same transaction.
            crate::alerts::observe_many(txn, &self.alerting, record.as_slice(), now).await
        })
    }

    /// A batch's records go into the chain many to a statement, then the alerts see them in
    /// order.
    fn handle_batch<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        events: &'a [&'a Event],
    ) -> Option<HandlerFuture<'a>> {
        Some(Box::pin(async move {
            let now = self.clock.now_millis();
            let contents = events.iter().map(|e| content_of(e, now)).collect();
            let records = store::append_many(txn, contents).await?;
            let contents: Vec<_> = records.into_iter().map(|r| r.content).collect();
            crate::alerts::observe_many(txn, &self.alerting, &contents, now).await
        }))
    }

    /// Alerts raised by the batch go out now, not at the relay's next poll.
    fn committed(&self) {
        self.alerting.outbox.wake();
    }
}
