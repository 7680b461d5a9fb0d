//! The assignment context's timer: it announces schedule expiry. It decides by the injectable
//! clock and only polls by the wall clock; two replicas cannot double-fire, because each
//! announcement is recorded under a primary key with its event.

use std::time::Duration;

use pim_host::HostContext;

use crate::store::Store;

pub async fn run(store: Store, ctx: HostContext, every: Duration) {
    loop {
        tokio::select! {
            () = ctx.cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match store
            .announce_due(&ctx.outbox, ctx.clock.now_millis())
            .await
        {
            Ok(0) => {}
            Ok(_) => ctx.outbox.wake(),
            Err(e) => tracing::warn!(error = ?e, "announcing schedule expiry failed; retrying"),
        }
    }
}
