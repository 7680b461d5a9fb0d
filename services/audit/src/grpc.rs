//! gRPC handlers of the audit context: they validate, authorize and delegate to `store` and
//! `chain`. Nothing here writes: the log is written only from the streams.

use std::{pin::Pin, sync::Arc};

use futures_util::Stream;
use pim_client::roles;
use pim_config::ServiceName;
use pim_grpc::{ApiError, Violations, caller};
use pim_host::HostContext;
use pim_proto::{
    audit::v1::{
        AuditRecord, ChainBreak, ExportFormat, ExportRecordsRequest, ExportRecordsResponse,
        GetRecordRequest, GetRecordResponse, GetSigningKeyRequest, GetSigningKeyResponse,
        ListCheckpointsRequest, ListCheckpointsResponse, ListRecordsRequest, ListRecordsResponse,
        RecordFilter, RecordOrder, SearchRecordsRequest, SearchRecordsResponse, VerifyChainRequest,
        VerifyChainResponse, audit_service_server::AuditService,
    },
    timestamp_from_millis,
};
use tonic::{Request, Response, Status};

use crate::{
    activity::CATEGORIES,
    chain,
    export::{self, Format},
    record::ChainedRecord,
    signing::CheckpointSigner,
    store::{self, Filter, Order},
};

/// Who may read the whole trail: PIM's administrators and readers at `/`.
const READERS: [&str; 5] = [
    roles::GLOBAL_ADMINISTRATOR,
    roles::PRIVILEGED_ROLE_ADMINISTRATOR,
    roles::SECURITY_ADMINISTRATOR,
    roles::SECURITY_READER,
    roles::GLOBAL_READER,
];

/// Records per export batch, and bytes per streamed message.
const EXPORT_BATCH: u64 = 1000;
const EXPORT_CHUNK: usize = 64 * 1024;

pub struct AuditApi {
    ctx: HostContext,
    signer: Arc<CheckpointSigner>,
}

fn internal(e: impl Into<anyhow::Error>) -> Status {
    ApiError::Internal(e.into()).into()
}

fn not_a_reader() -> Status {
    ApiError::PermissionDenied {
        reason: "NOT_AUTHORIZED",
        message: "this needs a reader role at / (Global Administrator, Privileged Role \
                  Administrator, Security Administrator, Security Reader or Global Reader)"
            .into(),
    }
    .into()
}

/// The keyset position of a page token: the last sequence of the previous page.
fn page_after(token: &str, violations: &mut Violations) -> Option<i64> {
    if token.is_empty() {
        return None;
    }
    match token.parse::<i64>() {
        Ok(after) if after >= 0 => Some(after),
        _ => {
            violations.add("page_token", "is not a token this service issued");
            None
        }
    }
}

fn page_size(size: i32, violations: &mut Violations) -> u64 {
    match size {
        0 => 100,
        1..=1000 => size as u64,
        _ => {
            violations.add("page_size", "must be between 0 and 1000");
            100
        }
    }
}

fn sequence_of(value: u64, field: &str, violations: &mut Violations) -> Option<i64> {
    match (value, i64::try_from(value)) {
        (0, _) => None,
        (_, Ok(v)) => Some(v),
        (_, Err(_)) => {
            violations.add(field, "is out of range");
            None
        }
    }
}

fn to_proto(record: &ChainedRecord) -> AuditRecord {
    let c = &record.content;
    AuditRecord {
        sequence: u64::try_from(c.sequence).unwrap_or_default(),
        occurred_at: Some(timestamp_from_millis(c.occurred_at_ms)),
        recorded_at: Some(timestamp_from_millis(c.recorded_at_ms)),
        activity: c.activity.clone(),
        event_type: c.event_type.clone(),
        event_id: c.event_id.clone(),
        producer: c.producer.clone(),
        producer_sequence: u64::try_from(c.producer_sequence).unwrap_or_default(),
        actor_id: c.actor_id.clone(),
        subject: c.subject.clone(),
        correlation_id: c.correlation_id.clone(),
        trace_id: c.trace_id.clone(),
        category: c.category.clone(),
        actor_type: c.actor_type.clone(),
        target_type: c.target_type.clone(),
        target_principal_id: c.target_principal_id.clone(),
        role_id: c.role_id.clone(),
        scope: c.scope.clone(),
        result: c.result.clone(),
        result_reason: c.result_reason.clone(),
        justification: c.justification.clone(),
        ticket: c.ticket.clone(),
        payload_type: c.payload_type.clone(),
        payload_json: c.payload_json.clone(),
        prev_hash: record.prev_hash.clone(),
        hash: record.hash.clone(),
    }
}

fn filter_of(filter: RecordFilter, violations: &mut Violations) -> Filter {
    let millis =
        |ts: Option<pim_proto::Timestamp>| ts.as_ref().map(pim_proto::millis_from_timestamp);
    let filter = Filter {
        occurred_from_ms: millis(filter.start_time),
        occurred_until_ms: millis(filter.end_time),
        actor_id: filter.actor_id,
        target_principal_id: filter.target_principal_id,
        role_id: filter.role_id,
        scope: filter.scope,
        activity: filter.activity,
        category: filter.category,
        result: filter.result,
        correlation_id: filter.correlation_id,
        trace_id: filter.trace_id,
        visible_to: None,
    };
    if let (Some(from), Some(until)) = (filter.occurred_from_ms, filter.occurred_until_ms)
        && from >= until
    {
        violations.add("filter.end_time", "must be after start_time");
    }
    if !filter.scope.is_empty() && !filter.scope.starts_with('/') {
        violations.add("filter.scope", "must start with /");
    }
    if !filter.category.is_empty() && !CATEGORIES.contains(&filter.category.as_str()) {
        violations.add(
            "filter.category",
            format!("must be one of {}", CATEGORIES.join(", ")),
        );
    }
    if !filter.result.is_empty() && filter.result != "success" && filter.result != "failure" {
        violations.add("filter.result", "must be success or failure");
    }
    filter
}

impl AuditApi {
    pub fn new(ctx: HostContext, signer: Arc<CheckpointSigner>) -> Self {
        Self { ctx, signer }
    }

    async fn is_reader(&self, principal: &str) -> Result<bool, Status> {
        let assignment = self.ctx.peers.get(ServiceName::Assignment);
        pim_client::holds_any_role(assignment, principal, &READERS, "/").await
    }

    /// `None` for readers; the caller's own id for everyone else, who see only the records
    /// where they are the actor or the target.
    async fn visibility<T>(&self, request: &Request<T>) -> Result<Option<String>, Status> {
        let caller = caller(request)?;
        if caller.service().is_none() && self.is_reader(&caller.subject).await? {
            return Ok(None);
        }
        Ok(Some(caller.subject))
    }

    async fn require_reader<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match self.visibility(request).await? {
            None => Ok(()),
            Some(_) => Err(not_a_reader()),
        }
    }

    async fn page(
        &self,
        filter: &Filter,
        order: Order,
        after: Option<i64>,
        limit: u64,
    ) -> Result<(Vec<AuditRecord>, String), Status> {
        let records = store::search(&self.ctx.db, filter, order, after, limit)
            .await
            .map_err(internal)?;
        let next = match records.last() {
            Some(last) if records.len() as u64 == limit => last.content.sequence.to_string(),
            _ => String::new(),
        };
        Ok((records.iter().map(to_proto).collect(), next))
    }
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<ExportRecordsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_records(
        &self,
        request: Request<ListRecordsRequest>,
    ) -> Result<Response<ListRecordsResponse>, Status> {
        let visible_to = self.visibility(&request).await?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let limit = page_size(req.page_size, &mut violations);
        let after = page_after(&req.page_token, &mut violations);
        violations.check()?;
        let filter = Filter {
            correlation_id: req.correlation_id,
            visible_to,
            ..Filter::default()
        };
        let (records, next_page_token) =
            self.page(&filter, Order::OldestFirst, after, limit).await?;
        Ok(Response::new(ListRecordsResponse {
            records,
            next_page_token,
        }))
    }

    async fn search_records(
        &self,
        request: Request<SearchRecordsRequest>,
    ) -> Result<Response<SearchRecordsResponse>, Status> {
        let visible_to = self.visibility(&request).await?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let limit = page_size(req.page_size, &mut violations);
        let after = page_after(&req.page_token, &mut violations);
        let order = match RecordOrder::try_from(req.order) {
            Ok(RecordOrder::OldestFirst) => Order::OldestFirst,
            Ok(RecordOrder::Unspecified | RecordOrder::NewestFirst) => Order::NewestFirst,
            Err(_) => {
                violations.add("order", "is not a known order");
                Order::NewestFirst
            }
        };
        let mut filter = filter_of(req.filter.unwrap_or_default(), &mut violations);
        violations.check()?;
        filter.visible_to = visible_to;
        let (records, next_page_token) = self.page(&filter, order, after, limit).await?;
        Ok(Response::new(SearchRecordsResponse {
            records,
            next_page_token,
        }))
    }

    async fn get_record(
        &self,
        request: Request<GetRecordRequest>,
    ) -> Result<Response<GetRecordResponse>, Status> {
        let visible_to = self.visibility(&request).await?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let sequence = sequence_of(req.sequence, "sequence", &mut violations);
        if sequence.is_none() && req.sequence == 0 {
            violations.add("sequence", "is required");
        }
        violations.check()?;
        let sequence = sequence.unwrap_or_default();
        let record = store::get(&self.ctx.db, sequence)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::from(ApiError::NotFound(format!("record {sequence}"))))?;
        if let Some(me) = visible_to
            && record.content.actor_id != me
            && record.content.target_principal_id != me
        {
            return Err(ApiError::PermissionDenied {
                reason: "NOT_AUTHORIZED",
                message: "you may read only the records where you are the actor or the target"
                    .into(),
            }
            .into());
        }
        Ok(Response::new(GetRecordResponse {
            record: Some(to_proto(&record)),
        }))
    }

    async fn verify_chain(
        &self,
        request: Request<VerifyChainRequest>,
    ) -> Result<Response<VerifyChainResponse>, Status> {
        self.require_reader(&request).await?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let from = sequence_of(req.from_sequence, "from_sequence", &mut violations);
        let to = sequence_of(req.to_sequence, "to_sequence", &mut violations);
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            violations.add("to_sequence", "must not be before from_sequence");
        }
        violations.check()?;
        let outcome = chain::verify_range(&self.ctx.db, &self.signer.verifier(), from, to)
            .await
            .map_err(internal)?;
        let broken = outcome.broken.clone();
        Ok(Response::new(VerifyChainResponse {
            ok: broken.is_none(),
            broken_at: broken
                .as_ref()
                .map(|b| u64::try_from(b.at).unwrap_or_default())
                .unwrap_or_default(),
            reason: broken
                .as_ref()
                .map(|b| b.reason)
                .unwrap_or(ChainBreak::Unspecified)
                .into(),
            message: broken.map(|b| b.message).unwrap_or_default(),
            records_checked: outcome.records_checked,
            checkpoints_checked: outcome.checkpoints_checked,
            from_sequence: u64::try_from(outcome.from).unwrap_or_default(),
            to_sequence: u64::try_from(outcome.to).unwrap_or_default(),
        }))
    }

    type ExportRecordsStream = ExportStream;

    async fn export_records(
        &self,
        request: Request<ExportRecordsRequest>,
    ) -> Result<Response<Self::ExportRecordsStream>, Status> {
        self.require_reader(&request).await?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let format = match ExportFormat::try_from(req.format) {
            Ok(ExportFormat::Csv) => Format::Csv,
            Ok(ExportFormat::Jsonl) => Format::Jsonl,
            _ => {
                violations.add("format", "must be CSV or JSONL");
                Format::Csv
            }
        };
        let from = sequence_of(req.from_sequence, "from_sequence", &mut violations);
        let to = sequence_of(req.to_sequence, "to_sequence", &mut violations);
        let millis =
            |ts: Option<pim_proto::Timestamp>| ts.as_ref().map(pim_proto::millis_from_timestamp);
        let (since, until) = (millis(req.start_time), millis(req.end_time));
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            violations.add("end_time", "must be after start_time");
        }
        violations.check()?;
        let db = self.ctx.db.clone();
        // A verifiable export is a contiguous range: the time range picks its first and last
        // record by recorded_at, which grows with the sequence.
        let (first, last) = if since.is_some() || until.is_some() {
            store::recorded_range(&db, since, until)
                .await
                .map_err(internal)?
        } else {
            match store::bounds(&db).await.map_err(internal)? {
                Some(b) => (Some(b.first), Some(b.last)),
                None => (None, None),
            }
        };
        let first = match (first, from) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, _) => a,
        };
        let last = match (last, to) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, _) => a,
        };
        let range = match (first, last) {
            (Some(first), Some(last)) if first <= last => Some((first, last)),
            _ => None,
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let result = stream_export(&db, format, range, &sender).await;
            if let Err(e) = result {
                let _ = sender.send(Err(internal(e))).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn list_checkpoints(
        &self,
        request: Request<ListCheckpointsRequest>,
    ) -> Result<Response<ListCheckpointsResponse>, Status> {
        self.require_reader(&request).await?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let limit = page_size(req.page_size, &mut violations);
        let after = page_after(&req.page_token, &mut violations);
        let from = sequence_of(req.from_sequence, "from_sequence", &mut violations).unwrap_or(0);
        violations.check()?;
        let start = after.map(|a| a + 1).unwrap_or(0).max(from);
        let checkpoints = store::checkpoints(&self.ctx.db, start, i64::MAX, limit)
            .await
            .map_err(internal)?;
        let next_page_token = match checkpoints.last() {
            Some(last) if checkpoints.len() as u64 == limit => last.sequence.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(ListCheckpointsResponse {
            checkpoints: checkpoints.iter().map(|c| c.to_proto()).collect(),
            next_page_token,
        }))
    }

    async fn get_signing_key(
        &self,
        request: Request<GetSigningKeyRequest>,
    ) -> Result<Response<GetSigningKeyResponse>, Status> {
        caller(&request)?;
        Ok(Response::new(GetSigningKeyResponse {
            public_key: self.signer.public_key().as_bytes().to_vec(),
            key_id: self.signer.key_id().to_owned(),
            public_key_pem: self.signer.public_key_pem(),
        }))
    }
}

type ExportSender = tokio::sync::mpsc::Sender<Result<ExportRecordsResponse, Status>>;

/// Streams `range` in batches, so memory stays bounded whatever its size: one batch of records
/// and at most a few chunks in flight (the channel's capacity).
async fn stream_export(
    db: &sea_orm::DatabaseConnection,
    format: Format,
    range: Option<(i64, i64)>,
    sender: &ExportSender,
) -> anyhow::Result<()> {
    let total = range.map(|(a, b)| (b - a + 1) as u64).unwrap_or(0);
    let mut buffer = export::header(format);
    let mut sent = 0u64;
    if let Some((first, last)) = range {
        let mut next = first;
        while next <= last {
            let batch = store::range(db, next, last, EXPORT_BATCH).await?;
            let Some(tail) = batch.last() else { break };
            next = tail.content.sequence + 1;
            for record in &batch {
                export::render(format, record, &mut buffer);
                sent += 1;
                if buffer.len() >= EXPORT_CHUNK {
                    let data = std::mem::take(&mut buffer).into_bytes();
                    let message = ExportRecordsResponse {
                        data,
                        checkpoints: Vec::new(),
                        records: sent,
                        total_records: total,
                    };
                    if sender.send(Ok(message)).await.is_err() {
                        return Ok(()); // The client went away.
                    }
                }
            }
        }
    }
    // The checkpoints that anchor the first record and cover the range.
    let checkpoints = match range {
        Some((first, last)) => store::checkpoints(db, first - 1, last, u64::MAX).await?,
        None => Vec::new(),
    };
    let message = ExportRecordsResponse {
        data: buffer.into_bytes(),
        checkpoints: checkpoints.iter().map(|c| c.to_proto()).collect(),
        records: sent,
        total_records: total,
    };
    let _ = sender.send(Ok(message)).await;
    Ok(())
}
