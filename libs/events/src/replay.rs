//! Replay from a producer's outbox: the gRPC service every context serves to service
//! identities, and the sources gap fillers read from.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use pim_proto::events::v1::{
    Event, ReplayRequest, ReplayResponse, event_replay_service_server::EventReplayService,
};
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};

use crate::Outbox;

/// The most events one replay returns.
const MAX_REPLAY: u32 = 1000;

/// Published events of one producer, from a sequence on.
pub trait ReplaySource: Send + Sync + 'static {
    /// Events with `sequence >= from_sequence`, in order, and the producer's head sequence.
    fn replay(
        &self,
        from_sequence: u64,
        limit: u32,
    ) -> BoxFuture<'_, anyhow::Result<(Vec<Event>, u64)>>;
}

/// Reads a producer's outbox table directly: the replay server's source, and the in-process bus.
#[derive(Clone)]
pub struct OutboxReplaySource {
    db: DatabaseConnection,
    outbox: Outbox,
}

impl OutboxReplaySource {
    pub fn new(db: DatabaseConnection, outbox: Outbox) -> Self {
        Self { db, outbox }
    }
}

impl ReplaySource for OutboxReplaySource {
    fn replay(
        &self,
        from_sequence: u64,
        limit: u32,
    ) -> BoxFuture<'_, anyhow::Result<(Vec<Event>, u64)>> {
        Box::pin(
            self.outbox
                .published_from(&self.db, from_sequence, limit.min(MAX_REPLAY)),
        )
    }
}

/// A peer's `EventReplayService`, reached over gRPC. Built by whoever holds the channel.
pub struct GrpcReplaySource<F> {
    call: F,
}

impl<F> GrpcReplaySource<F>
where
    F: Fn(ReplayRequest) -> BoxFuture<'static, Result<ReplayResponse, Status>>
        + Send
        + Sync
        + 'static,
{
    pub fn new(call: F) -> Self {
        Self { call }
    }
}

impl<F> ReplaySource for GrpcReplaySource<F>
where
    F: Fn(ReplayRequest) -> BoxFuture<'static, Result<ReplayResponse, Status>>
        + Send
        + Sync
        + 'static,
{
    fn replay(
        &self,
        from_sequence: u64,
        limit: u32,
    ) -> BoxFuture<'_, anyhow::Result<(Vec<Event>, u64)>> {
        let call = (self.call)(ReplayRequest {
            from_sequence,
            limit,
        });
        Box::pin(async move {
            let response = call.await?;
            Ok((response.events, response.head_sequence))
        })
    }
}

/// `pim.events.v1.EventReplayService`; the host admits only service identities to it.
#[derive(Clone)]
pub struct ReplayServer {
    source: Arc<OutboxReplaySource>,
}

impl ReplayServer {
    pub fn new(source: OutboxReplaySource) -> Self {
        Self {
            source: Arc::new(source),
        }
    }
}

#[tonic::async_trait]
impl EventReplayService for ReplayServer {
    async fn replay(
        &self,
        request: Request<ReplayRequest>,
    ) -> Result<Response<ReplayResponse>, Status> {
        let request = request.into_inner();
        if request.from_sequence == 0 {
            return Err(pim_grpc::ApiError::InvalidArgument(vec![(
                "from_sequence".into(),
                "sequences start at 1".into(),
            )])
            .into());
        }
        let limit = if request.limit == 0 {
            MAX_REPLAY
        } else {
            request.limit
        };
        let (events, head_sequence) = self
            .source
            .replay(request.from_sequence, limit)
            .await
            .map_err(|e| Status::from(pim_grpc::ApiError::Internal(e)))?;
        Ok(Response::new(ReplayResponse {
            events,
            head_sequence,
        }))
    }
}
