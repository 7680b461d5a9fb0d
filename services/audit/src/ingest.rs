//! Writing one chained audit record per event, inside the consumer's transaction, so the record
//! and the inbox row commit together: a redelivered event finds its id in the inbox and writes
//! nothing. Gaps in a producer's sequence are found and replayed by the bus (`pim_events`).

use pim_clock::SharedClock;
use pim_events::{EventHandler, HandlerFuture};
use pim_proto::events::v1::Event;
use sea_orm::DatabaseTransaction;

use crate::{extract::content_of, store};

pub struct Recorder {
    clock: SharedClock,
}

impl Recorder {
    pub fn new(clock: SharedClock) -> Self {
        Self { clock }
    }
}

impl EventHandler for Recorder {
    fn handle<'a>(&'a self, txn: &'a DatabaseTransaction, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            store::append(txn, content_of(event, self.clock.now_millis())).await?;
            Ok(())
        })
    }
}
