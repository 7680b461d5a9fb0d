//! A test's Redis keys, all under its own prefix, deleted when the test ends (even by panic).

use redis::AsyncCommands as _;

/// Deletes every key under `prefix` on drop.
pub struct RedisKeys {
    pub url: String,
    pub prefix: String,
}

impl RedisKeys {
    pub fn new(url: String) -> Self {
        Self {
            url,
            prefix: crate::stream_prefix(),
        }
    }
}

async fn delete_prefixed(url: &str, prefix: &str) -> anyhow::Result<()> {
    let mut redis = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = {
        let mut iter = redis.scan_match::<_, String>(format!("{prefix}*")).await?;
        let mut keys = Vec::new();
        while let Some(key) = iter.next_item().await {
            keys.push(key?);
        }
        keys
    };
    if !keys.is_empty() {
        let _: i64 = redis.del(keys).await?;
    }
    Ok(())
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        // Drop runs outside any runtime guarantee, so use a small runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            if let Err(e) = runtime.block_on(delete_prefixed(&url, &prefix)) {
                tracing::warn!(error = ?e, "cleaning up a test's Redis keys failed");
            }
        })
        .join();
    }
}
