//! The chain as a whole: verifying a range against the stored hashes and the signed
//! checkpoints, signing checkpoints of the head, and retention's purge behind a checkpoint at
//! the cut. Checkpoints and purges are announced through the outbox like any other fact.

use std::time::Duration;

use futures_util::StreamExt as _;
use pim_events::NewEvent;
use pim_host::HostContext;
use pim_proto::audit::v1::{ChainBreak, CheckpointSigned, RecordsPurged};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};

use crate::{
    record::{ChainedRecord, GENESIS_HASH},
    signing::{CheckpointSigner, CheckpointVerifier},
    store::{self, StoredCheckpoint},
    verify::{Break, ChainCheck},
};

/// Records read at a time: large enough that a round trip is a small part of a batch.
const BATCH: u64 = 2000;

/// The outcome of verifying a range.
#[derive(Debug, Clone)]
pub struct Verification {
    pub broken: Option<Break>,
    pub records_checked: u64,
    pub checkpoints_checked: u64,
    pub from: i64,
    pub to: i64,
}

/// Verifies records `from..=to` (defaults: the first record kept, the chain head). The first
/// record is anchored by the genesis hash, by the signed checkpoint at a purge's cut, or, for a
/// range that starts later, by the stored hash of the record before it.
pub async fn verify_range(
    db: &DatabaseConnection,
    signer: &CheckpointVerifier,
    from: Option<i64>,
    to: Option<i64>,
) -> anyhow::Result<Verification> {
    let Some(bounds) = store::bounds(db).await? else {
        return Ok(Verification {
            broken: None,
            records_checked: 0,
            checkpoints_checked: 0,
            from: 0,
            to: 0,
        });
    };
    let from = from.unwrap_or(bounds.first).max(bounds.first);
    let to = to.unwrap_or(bounds.head).min(bounds.head);
    let mut outcome = Verification {
        broken: None,
        records_checked: 0,
        checkpoints_checked: 0,
        from,
        to,
    };
    if from > to {
        return Ok(outcome);
    }
    let anchor = match anchor(db, signer, from, bounds.first).await? {
        Ok(anchor) => anchor,
        Err(broken) => {
            outcome.broken = Some(broken);
            return Ok(outcome);
        }
    };
    let mut check = ChainCheck::new(signer, from, anchor);
    // Batches by sequence, read and hashed by tasks of their own a few at a time and checked
    // here in order: reading and decoding rows is most of the work, and one task doing it
    // leaves the other core idle. A batch with rows missing simply holds fewer records; the
    // check finds the gap at the next record or at the end.
    let starts = (from..=to).step_by(BATCH as usize);
    let mut batches = futures_util::stream::iter(starts)
        .map(|start| {
            let db = db.clone();
            let end = to.min(start + BATCH as i64 - 1);
            AbortOnDrop(tokio::spawn(read_and_hash(db, start, end)))
        })
        .buffered(READERS);
    let result = loop {
        let Some(batch) = batches.next().await else {
            break check.finish(to);
        };
        let (records, holds, checkpoints) = batch??;
        check.expect_checkpoints(checkpoints);
        if let Err(broken) = records
            .iter()
            .zip(holds)
            .try_for_each(|(record, holds)| check.feed_hashed(record, holds))
        {
            break Err(broken);
        }
    };
    outcome.broken = result.err();
    outcome.records_checked = check.records_checked;
    outcome.checkpoints_checked = check.checkpoints_checked;
    Ok(outcome)
}

/// Batches read and hashed at once.
const READERS: usize = 3;

/// The records `start..=end`, whether each one's hash holds, and the checkpoints among them.
async fn read_and_hash(
    db: DatabaseConnection,
    start: i64,
    end: i64,
) -> anyhow::Result<(Vec<ChainedRecord>, Vec<bool>, Vec<StoredCheckpoint>)> {
    let records = store::range(&db, start, end, BATCH).await?;
    let checkpoints = store::checkpoints(&db, start, end, u64::MAX).await?;
    let (records, holds) = tokio::task::spawn_blocking(move || {
        let holds = records.iter().map(ChainedRecord::hash_holds).collect();
        (records, holds)
    })
    .await?;
    Ok((records, holds, checkpoints))
}

/// A spawned reader that stops when its result is no longer wanted (a break was found).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = anyhow::Result<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| joined.map_err(anyhow::Error::from))
    }
}

/// The hash that the record at `from` must follow.
async fn anchor(
    db: &impl ConnectionTrait,
    signer: &CheckpointVerifier,
    from: i64,
    first_kept: i64,
) -> anyhow::Result<Result<String, Break>> {
    if from == 1 {
        return Ok(Ok(GENESIS_HASH.to_owned()));
    }
    if from <= first_kept {
        // Everything before was purged: a signed checkpoint at the cut must vouch for it.
        let cut = first_kept - 1;
        let earlier = store::checkpoints(db, 0, cut, u64::MAX).await?;
        return Ok(match earlier.last() {
            Some(checkpoint) if checkpoint.sequence == cut => {
                let check = ChainCheck::new(signer, from, String::new());
                check
                    .signature_holds(checkpoint)
                    .map(|()| checkpoint.hash.clone())
            }
            other => {
                let missing = other.map(|c| c.sequence + 1).unwrap_or(1);
                Err(Break {
                    at: missing,
                    reason: ChainBreak::MissingRecord,
                    message: format!(
                        "records {missing} to {cut} are missing and no checkpoint covers their removal"
                    ),
                })
            }
        });
    }
    Ok(match store::get(db, from - 1).await? {
        Some(previous) => Ok(previous.hash),
        None => Err(Break {
            at: from - 1,
            reason: ChainBreak::MissingRecord,
            message: format!("record {} is missing", from - 1),
        }),
    })
}

/// Signs a checkpoint of the newest record when the interval has passed since the last one and
/// something new was recorded; verifies what it signs first, so tampering is never blessed.
pub async fn sign_if_due(
    ctx: &HostContext,
    signer: &CheckpointSigner,
) -> anyhow::Result<Option<StoredCheckpoint>> {
    let db = &ctx.db;
    let now = ctx.clock.now_millis();
    let interval =
        i64::try_from(ctx.settings.audit.checkpoint_interval.as_millis()).unwrap_or(i64::MAX);
    let last = store::last_checkpoint(db).await?;
    let Some(bounds) = store::bounds(db).await? else {
        return Ok(None);
    };
    // The first checkpoint is due one interval after the first record kept.
    let reference = match &last {
        Some(last) => last.signed_at_ms,
        None => match store::get(db, bounds.first).await? {
            Some(first) => first.content.recorded_at_ms,
            None => return Ok(None),
        },
    };
    if now - reference < interval {
        return Ok(None);
    }
    let since = last.as_ref().map(|c| c.sequence).unwrap_or(0);
    if !store::has_news_after(db, since).await? {
        return Ok(None);
    }
    let start = (since + 1).max(bounds.first);
    let checked = verify_range(db, &signer.verifier(), Some(start), Some(bounds.head)).await?;
    if let Some(broken) = checked.broken {
        tracing::error!(at = broken.at, reason = ?broken.reason, "the audit chain does not verify; no checkpoint signed");
        return Ok(None);
    }
    let Some(head) = store::get(db, bounds.head).await? else {
        return Ok(None);
    };
    let checkpoint = StoredCheckpoint {
        sequence: head.content.sequence,
        hash: head.hash.clone(),
        signed_at_ms: now,
        key_id: signer.key_id().to_owned(),
        signature: signer.sign(head.content.sequence, &head.hash, now),
    };
    let txn = db.begin().await?;
    if !store::insert_checkpoint(&txn, &checkpoint).await? {
        txn.rollback().await?;
        return Ok(None);
    }
    let event = NewEvent::new(
        "audit.checkpoint_signed",
        checkpoint.sequence.to_string(),
        pim_proto::pack(&CheckpointSigned {
            checkpoint: Some(checkpoint.to_proto()),
        }),
    );
    ctx.outbox.enqueue(&txn, event).await?;
    txn.commit().await?;
    ctx.outbox.wake();
    Ok(Some(checkpoint))
}

/// Purges the records recorded before the retention cutoff, if retention is set: verifies them,
/// signs a checkpoint at the cut (unless one is there), deletes through `audit_purge`, and
/// announces `audit.records_purged`, all in one transaction.
pub async fn purge_if_due(ctx: &HostContext, signer: &CheckpointSigner) -> anyhow::Result<u64> {
    let Some(days) = ctx.settings.audit.retention_days else {
        return Ok(0);
    };
    let db = &ctx.db;
    let now = ctx.clock.now_millis();
    let cutoff = now - i64::from(days) * 86_400_000;
    let Some(cut) = store::last_recorded_before(db, cutoff).await? else {
        return Ok(0);
    };
    let Some(bounds) = store::bounds(db).await? else {
        return Ok(0);
    };
    let checked = verify_range(db, &signer.verifier(), Some(bounds.first), Some(cut)).await?;
    if let Some(broken) = checked.broken {
        tracing::error!(at = broken.at, reason = ?broken.reason, "the audit chain does not verify; retention purge refused");
        return Ok(0);
    }
    let Some(at_cut) = store::get(db, cut).await? else {
        return Ok(0);
    };
    let checkpoint = match store::checkpoints(db, cut, cut, 1).await?.pop() {
        Some(existing) => existing,
        None => StoredCheckpoint {
            sequence: cut,
            hash: at_cut.hash.clone(),
            signed_at_ms: now,
            key_id: signer.key_id().to_owned(),
            signature: signer.sign(cut, &at_cut.hash, now),
        },
    };
    let txn = db.begin().await?;
    store::insert_checkpoint(&txn, &checkpoint).await?;
    let purged = store::purge(&txn, cut).await?;
    let event = NewEvent::new(
        "audit.records_purged",
        format!("{}-{cut}", bounds.first),
        pim_proto::pack(&RecordsPurged {
            from_sequence: u64::try_from(bounds.first).unwrap_or_default(),
            to_sequence: u64::try_from(cut).unwrap_or_default(),
            checkpoint: Some(checkpoint.to_proto()),
            retention_days: days,
        }),
    );
    ctx.outbox.enqueue(&txn, event).await?;
    txn.commit().await?;
    ctx.outbox.wake();
    tracing::info!(
        from = bounds.first,
        to = cut,
        purged,
        "audit records purged under retention"
    );
    Ok(purged)
}

/// Signs checkpoints and applies retention until cancelled. What is due is judged by the clock;
/// the poll is only how often it looks.
pub async fn run(ctx: HostContext, signer: std::sync::Arc<CheckpointSigner>) {
    let poll = ctx.settings.timer_interval.max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = ctx.cancel.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
        if let Err(e) = sign_if_due(&ctx, &signer).await {
            tracing::warn!(error = ?e, "signing an audit checkpoint failed");
        }
        if let Err(e) = purge_if_due(&ctx, &signer).await {
            tracing::warn!(error = ?e, "the audit retention purge failed");
        }
    }
}
