//! `WatchAccessChanges`: the access change log as a stream, for caches in other backend services
//! that must drop what a change made stale. It replays the log after the caller's revision, then
//! follows this replica's index as it applies each revision.

use std::pin::Pin;

use pim_grpc::{Violations, caller};
use pim_proto::assignment::v1::{WatchAccessChangesRequest, WatchAccessChangesResponse};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{AssignmentApi, Result, invalid};
use crate::{domain::scope::Scope, error::AssignmentError, store::AccessChange};

pub type WatchStream =
    Pin<Box<dyn Stream<Item = std::result::Result<WatchAccessChangesResponse, Status>> + Send>>;

/// Changes buffered for a slow watcher before the follower waits for it.
const BUFFER: usize = 256;

fn response(change: AccessChange) -> WatchAccessChangesResponse {
    WatchAccessChangesResponse {
        revision: change.revision,
        principal_ids: change.subjects,
    }
}

impl AssignmentApi {
    pub(super) async fn handle_watch_access_changes(
        &self,
        request: Request<WatchAccessChangesRequest>,
    ) -> std::result::Result<Response<WatchStream>, Status> {
        let caller = caller(&request)?;
        let since = request.into_inner().since_revision;
        let mut v = Violations::default();
        if since < 0 {
            v.add("since_revision", "must not be negative");
        }
        invalid(v)?;
        let root = Scope::parse("/").map_err(|e| AssignmentError::Internal(anyhow::anyhow!(e)))?;
        self.require_listing_reader(&caller, &root).await?;
        // Subscribe before reading the backlog, so that no revision falls between the two.
        let mut live = self.index.subscribe();
        let backlog = self.backlog(since).await?;
        let mut sent = backlog.last().map_or(since, |c| c.revision);
        let (sender, receiver) = mpsc::channel(BUFFER);
        let cancel = self.ctx.cancel.clone();
        self.ctx.spawn(async move {
            for change in backlog {
                if sender.send(Ok(response(change))).await.is_err() {
                    return;
                }
            }
            loop {
                let next = tokio::select! {
                    () = cancel.cancelled() => return,
                    () = sender.closed() => return,
                    next = live.recv() => next,
                };
                let item = match next {
                    Ok(change) if change.revision <= sent => continue,
                    Ok(change) => {
                        sent = change.revision;
                        Ok(response(change))
                    }
                    Err(RecvError::Lagged(_)) => Err(Status::aborted(format!(
                        "this watcher fell behind; watch again with since_revision {sent}"
                    ))),
                    Err(RecvError::Closed) => return,
                };
                let failed = item.is_err();
                if sender.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    /// The log after `since` up to what the index has applied; nothing when `since` is 0.
    async fn backlog(&self, since: i64) -> Result<Vec<AccessChange>> {
        let now = self.index.revision();
        if since == 0 || since >= now {
            return Ok(Vec::new());
        }
        let oldest = self.store.oldest_logged_revision().await?;
        if oldest.is_none_or(|oldest| oldest > since + 1) {
            return Err(AssignmentError::Refused {
                reason: "REVISION_TOO_OLD",
                message: format!(
                    "the access change log no longer reaches back to revision {since}; read the state again and watch from its revision"
                ),
            });
        }
        let changes = self
            .store
            .access_changes_after(since, (now - since) as u64)
            .await?;
        Ok(changes)
    }
}
