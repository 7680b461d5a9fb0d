//! A producer of the bench's own for the audit and notification suites: an outbox in a fresh
//! database and the relay every service runs, publishing to a run's stream under the name of a
//! context that is not running, so the measured consumer sees events committed exactly as a
//! producer commits them, at a rate the bench chooses. Each event's correlation id is the
//! wall-clock time, in microseconds, just before its commit.

use std::sync::Arc;

use pim_clock::{SharedClock, SystemClock};
use pim_config::ServiceName;
use pim_events::{NewEvent, Outbox, RedisPublisher, Relay, RelayOptions};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub(super) struct BenchProducer {
    db: DatabaseConnection,
    outbox: Outbox,
    cancel: CancellationToken,
    server_url: String,
    database: String,
}

impl BenchProducer {
    /// Creates the database, and starts the relay to `stream` as `producer`.
    pub(super) async fn start(
        server_url: &str,
        redis_url: &str,
        producer: ServiceName,
        stream: String,
    ) -> anyhow::Result<Self> {
        let database = format!("pim_bench_{}_producer", uuid::Uuid::new_v4().simple());
        pim_db::ensure_postgres_database(server_url, &database).await?;
        let url = pim_db::with_database(server_url, &database);
        // Any context's migrations bring the outbox tables; audit's are the smallest.
        crate::migrate_service(ServiceName::Audit, &url).await?;
        let db = pim_db::connect(&url, pim_db::PoolSize { max: 16, min: 4 }).await?;
        let clock: SharedClock = Arc::new(SystemClock);
        let outbox = Outbox::new(producer.as_str(), clock);
        let publisher = RedisPublisher::connect(redis_url, stream, Vec::new()).await?;
        let cancel = CancellationToken::new();
        tokio::spawn(
            Relay::new(
                db.clone(),
                outbox.clone(),
                Arc::new(publisher),
                RelayOptions::default(),
            )
            .run(cancel.clone()),
        );
        Ok(Self {
            db,
            outbox,
            cancel,
            server_url: server_url.to_owned(),
            database,
        })
    }

    /// Commits `event` in a transaction of its own; returns the time in its correlation id.
    pub(super) async fn commit(&self, event: NewEvent) -> anyhow::Result<i64> {
        let txn = self.db.begin().await?;
        let at = super::chrono_now_us();
        self.outbox
            .enqueue(&txn, event.correlated(at.to_string()))
            .await?;
        txn.commit().await?;
        self.outbox.wake();
        Ok(at)
    }

    /// Stops the relay and drops the database.
    pub(super) async fn remove(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        // Let the relay see the cancellation before its database goes.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        self.db.close().await?;
        let admin = sea_orm::Database::connect(&self.server_url).await?;
        admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.database
            ))
            .await?;
        admin.close().await?;
        Ok(())
    }
}
