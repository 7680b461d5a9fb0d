//! The in-memory access index: every schedule, window, membership and disabled principal,
//! loaded at start and kept current by following the access change log, so that `CheckAccess`
//! reads no database.
//!
//! Freshness: a replica applies its own writes before it answers them, and another replica's
//! within one follow interval. A caller that needs another replica's write names its revision
//! (`at_least_revision`); the index then catches up before it answers, or says it cannot.

mod snapshot;

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

pub use snapshot::Snapshot;
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;

use crate::store::{AccessChange, Changes, Store, touched};

/// How often a replica looks for other replicas' writes. It bounds how stale a read without
/// `at_least_revision` can be; the look is one indexed read of the revision row.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(10);
/// Watchers that fall further behind than this lose their stream and must resume from a
/// revision.
const WATCH_BUFFER: usize = 4_096;
/// The log is trimmed each time the revision passes a multiple of this.
const TRIM_EVERY: i64 = 1_000;

#[derive(Clone)]
pub struct AccessIndex {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    snapshot: RwLock<Snapshot>,
    revision: AtomicI64,
    /// One catch-up at a time: each reads from the revision the previous one reached.
    syncing: Mutex<()>,
    changes: broadcast::Sender<AccessChange>,
}

impl AccessIndex {
    /// Loads everything, as of one revision.
    pub async fn load(store: Store) -> anyhow::Result<Self> {
        let started = Instant::now();
        let (snapshot, revision) = full_load(&store).await?;
        let (schedules, windows) = snapshot.len();
        tracing::info!(
            revision,
            schedules,
            windows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "access index loaded"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                snapshot: RwLock::new(snapshot),
                revision: AtomicI64::new(revision),
                syncing: Mutex::new(()),
                changes: broadcast::channel(WATCH_BUFFER).0,
            }),
        })
    }

    /// The revision every answer of the index reflects at least.
    pub fn revision(&self) -> i64 {
        self.inner.revision.load(Ordering::Acquire)
    }

    /// Answers a question from the current snapshot.
    pub fn read<R>(&self, question: impl FnOnce(&Snapshot) -> R) -> R {
        let snapshot = self
            .inner
            .snapshot
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        question(&snapshot)
    }

    /// Changes as this replica applies them, for `WatchAccessChanges`.
    pub fn subscribe(&self) -> broadcast::Receiver<AccessChange> {
        self.inner.changes.subscribe()
    }

    /// Makes sure the index reflects `revision` (a write this replica just committed).
    pub async fn reach(&self, revision: i64) -> anyhow::Result<i64> {
        if self.revision() >= revision {
            return Ok(self.revision());
        }
        self.sync().await
    }

    /// Applies every revision the database has committed since the index's own.
    pub async fn sync(&self) -> anyhow::Result<i64> {
        let inner = &self.inner;
        if inner.store.revision().await? <= self.revision() {
            return Ok(self.revision());
        }
        let _one_at_a_time = inner.syncing.lock().await;
        let from = self.revision();
        match inner.store.read_changes(from).await? {
            Changes::None => {}
            Changes::Gap => {
                tracing::warn!(
                    from,
                    "the access change log no longer reaches this replica's revision; reloading"
                );
                let (snapshot, revision) = full_load(&inner.store).await?;
                *inner
                    .snapshot
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = snapshot;
                inner.revision.store(revision, Ordering::Release);
            }
            Changes::Some { changes, rows } => {
                let subjects = touched(&changes);
                let last = changes.last().map_or(from, |c| c.revision);
                inner
                    .snapshot
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .replace(&subjects, rows);
                inner.revision.store(last, Ordering::Release);
                for change in changes {
                    // No watcher is no error.
                    let _ = inner.changes.send(change);
                }
                if last / TRIM_EVERY > from / TRIM_EVERY {
                    inner.store.trim_access_changes(last).await?;
                }
            }
        }
        Ok(self.revision())
    }

    /// Follows other replicas' writes until cancelled.
    pub async fn follow(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(FOLLOW_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(error) = self.sync().await {
                tracing::warn!(error = %error, "following the access change log failed; retrying");
            }
        }
    }
}

async fn full_load(store: &Store) -> anyhow::Result<(Snapshot, i64)> {
    let mut snapshot = Snapshot::default();
    let revision = store.read_index(|row| snapshot.insert(row)).await?;
    Ok((snapshot, revision))
}
