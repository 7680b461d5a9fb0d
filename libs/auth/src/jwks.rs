//! An identity provider's JSON Web Key Set, fetched from its URL and kept in memory. The verifier
//! looks keys up by `kid` without touching the network; a background task refreshes the set on an
//! interval, and early (rate-limited) when a token names a key the set lacks, so a rotated key is
//! picked up within seconds.
//!
//! Only RS256 (RSA) and ES256 (EC P-256) signing keys are taken from the set. Symmetric (`oct`)
//! keys, other curves and algorithms, encryption keys and keys without a `kid` are skipped, so no
//! set can turn the verifier into an HMAC verifier.
//!
//! Transport: plain `http://` only. Fetching keys over plain HTTP across a network lets anyone on
//! the path substitute their own keys, so point the URL at a TLS-terminating proxy on loopback (or
//! a trusted network) until an HTTPS connector is added here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A key set larger than this is not a key set.
const MAX_BODY_BYTES: usize = 1 << 20;

/// After a failed refresh, try again this soon (or at the interval, if that is sooner) rather
/// than waiting out a whole interval with a possibly stale set.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// How often and how patiently the set is fetched.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    /// Scheduled refresh period.
    pub refresh_interval: Duration,
    /// The least time between two fetches when refreshes are triggered by unknown `kid`s, which
    /// anyone can forge: this bounds the load they can put on the identity provider.
    pub min_refresh_gap: Duration,
    /// A fetch (connect, response and body) that takes longer fails.
    pub fetch_timeout: Duration,
}

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(300),
            min_refresh_gap: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// Why fetching the key set failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksFailure {
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    #[error("only http:// URLs are supported; put HTTPS behind a TLS-terminating proxy")]
    UnsupportedScheme,
    #[error("request failed: {0}")]
    Request(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("reading the body: {0}")]
    Body(String),
    #[error("not a JWK set: {0}")]
    Json(String),
    #[error("no usable RS256 or ES256 signing key with a kid")]
    NoUsableKeys,
}

/// A failure to fetch the key set, naming its URL.
#[derive(Debug, Clone, thiserror::Error)]
#[error("JWKS {url}: {failure}")]
pub struct JwksError {
    url: String,
    failure: JwksFailure,
}

impl JwksError {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn failure(&self) -> &JwksFailure {
        &self.failure
    }
}

/// A key a signature may be checked with, and the one algorithm it is for.
pub(crate) struct VerificationKey {
    pub(crate) key: DecodingKey,
    pub(crate) algorithm: Algorithm,
}

type KeySet = HashMap<String, Arc<VerificationKey>>;

/// The cached key set of one JWKS URL. Cloning is cheap and clones share the cache.
#[derive(Clone)]
pub struct JwksCache {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    uri: http::Uri,
    config: JwksConfig,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// `kid` -> key. Replaced whole on each refresh, so keys dropped by the IdP stop verifying.
    keys: RwLock<KeySet>,
    /// Set when a token named an unknown `kid`; the refresher clears it when it fetches.
    wanted: AtomicBool,
    wake: Notify,
    /// When the last fetch started: the early-refresh rate limit counts from it.
    last_fetch: Mutex<Instant>,
    /// The number of successful refreshes, including the first.
    refreshed: watch::Sender<u64>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &self.inner.url)
            .field("keys", &self.key_ids())
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// Fetches the set at `url` once; fails, naming the URL, if that fetch fails or the set has
    /// no usable key. Start the refresher with [`JwksCache::spawn_refresh`] or
    /// [`JwksCache::run_refresh`], or unknown keys are never fetched.
    pub async fn fetch(url: &str, config: JwksConfig) -> Result<Self, JwksError> {
        let uri = parse_url(url).map_err(|failure| JwksError {
            url: url.to_owned(),
            failure,
        })?;
        if !is_loopback(&uri) {
            tracing::warn!(url, "JWKS fetched over plain HTTP from a non-loopback host");
        }
        let client = Client::builder(TokioExecutor::new())
            // Fetches are minutes apart: a pooled connection would only go stale.
            .pool_max_idle_per_host(0)
            .build_http();
        let cache = Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                uri,
                config,
                client,
                keys: RwLock::new(KeySet::new()),
                wanted: AtomicBool::new(false),
                wake: Notify::new(),
                last_fetch: Mutex::new(Instant::now()),
                refreshed: watch::Sender::new(0),
            }),
        };
        cache.refresh().await?;
        Ok(cache)
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The `kid`s of the keys held now, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.read_keys().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Fetches the set and replaces the cached one; returns the number of usable keys. On
    /// failure the cached set is kept: a flaky IdP must not log everyone out.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        *self
            .inner
            .last_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let keys = self.download().await.and_then(|body| parse_set(&body));
        let keys = keys.map_err(|failure| JwksError {
            url: self.inner.url.clone(),
            failure,
        })?;
        let count = keys.len();
        *self
            .inner
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner) = keys;
        self.inner.refreshed.send_modify(|n| *n += 1);
        tracing::debug!(url = %self.inner.url, keys = count, "JWKS refreshed");
        Ok(count)
    }

    /// Counts successful refreshes; `changed()` on it awaits the next one.
    pub fn refreshed(&self) -> watch::Receiver<u64> {
        self.inner.refreshed.subscribe()
    }

    /// Spawns [`JwksCache::run_refresh`] on the current tokio runtime.
    pub fn spawn_refresh(&self, cancel: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.clone().run_refresh(cancel))
    }

    /// Refreshes every `refresh_interval`, and early when a token named an unknown `kid` (at most
    /// once per `min_refresh_gap`), until `cancel` fires.
    pub async fn run_refresh(self, cancel: CancellationToken) {
        let config = self.inner.config.clone();
        let mut next = Instant::now() + config.refresh_interval;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
                () = self.inner.wake.notified() => {
                    let earliest = self.last_fetch() + config.min_refresh_gap;
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep_until(earliest) => {}
                    }
                    // A wake left over from requests the last fetch already answered.
                    if !self.inner.wanted.load(Ordering::Acquire) {
                        continue;
                    }
                }
            }
            // Requests from here on may name keys this fetch will not see: they wake us again.
            self.inner.wanted.store(false, Ordering::Release);
            let result = tokio::select! {
                () = cancel.cancelled() => return,
                result = self.refresh() => result,
            };
            next = Instant::now()
                + match result {
                    Ok(_) => config.refresh_interval,
                    Err(e) => {
                        tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached keys");
                        config.refresh_interval.min(RETRY_AFTER_FAILURE)
                    }
                };
        }
    }

    /// The key for `kid`, from memory.
    pub(crate) fn key(&self, kid: &str) -> Option<Arc<VerificationKey>> {
        self.read_keys().get(kid).cloned()
    }

    /// Asks the refresher for an early fetch; returns at once.
    pub(crate) fn request_refresh(&self) {
        self.inner.wanted.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, KeySet> {
        // The set is replaced whole, so a writer that panicked cannot have left it half-written.
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn last_fetch(&self) -> Instant {
        *self
            .inner
            .last_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn download(&self) -> Result<Bytes, JwksFailure> {
        let limit = self.inner.config.fetch_timeout;
        tokio::time::timeout(limit, self.get())
            .await
            .map_err(|_| JwksFailure::Timeout(limit))?
    }

    async fn get(&self) -> Result<Bytes, JwksFailure> {
        let response = self
            .inner
            .client
            .get(self.inner.uri.clone())
            .await
            .map_err(|e| JwksFailure::Request(error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(JwksFailure::Status(status.as_u16()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| JwksFailure::Body(e.to_string()))?;
        Ok(body.to_bytes())
    }
}

fn parse_url(url: &str) -> Result<http::Uri, JwksFailure> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| JwksFailure::InvalidUrl(e.to_string()))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => Ok(uri),
        Some("http") => Err(JwksFailure::InvalidUrl("no host".into())),
        Some(_) => Err(JwksFailure::UnsupportedScheme),
        None => Err(JwksFailure::InvalidUrl("not an absolute URL".into())),
    }
}

fn is_loopback(uri: &http::Uri) -> bool {
    match uri.host() {
        Some("localhost") => true,
        Some(host) => host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// hyper's errors say little at the top ("client error (Connect)"); the cause is in the chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[derive(Deserialize)]
struct RawSet {
    // Each key is parsed on its own, so one key of a kind we do not know does not sink the set.
    keys: Vec<serde_json::Value>,
}

fn parse_set(body: &[u8]) -> Result<KeySet, JwksFailure> {
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| JwksFailure::Json(e.to_string()))?;
    let mut keys = KeySet::new();
    for value in raw.keys {
        let kid = value
            .get("kid")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let accepted = match kid {
            None => Err("no kid"),
            Some(ref kid) if keys.contains_key(kid) => Err("duplicate kid; the first is kept"),
            Some(_) => serde_json::from_value::<Jwk>(value)
                .map_err(|_| "not a JWK")
                .and_then(|jwk| verification_key(&jwk)),
        };
        match (kid, accepted) {
            (Some(kid), Ok(key)) => {
                keys.insert(kid, Arc::new(key));
            }
            (kid, Err(reason)) => tracing::debug!(kid = kid.as_deref(), reason, "JWK skipped"),
            (None, Ok(_)) => {}
        }
    }
    if keys.is_empty() {
        return Err(JwksFailure::NoUsableKeys);
    }
    Ok(keys)
}

/// The verification key of a JWK, if it is an RS256 or ES256 signing key.
fn verification_key(jwk: &Jwk) -> Result<VerificationKey, &'static str> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|usage| *usage != PublicKeyUse::Signature)
    {
        return Err("not a signing key");
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return Err("key_ops lacks verify");
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return Err("neither an RSA nor an EC P-256 key"),
    };
    // A key's declared `alg`, when present, must be the one algorithm we use it for.
    match (jwk.common.key_algorithm, algorithm) {
        (None, _)
        | (Some(KeyAlgorithm::RS256), Algorithm::RS256)
        | (Some(KeyAlgorithm::ES256), Algorithm::ES256) => {}
        _ => return Err("alg is not RS256 for an RSA key or ES256 for a P-256 key"),
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "invalid key parameters")?;
    Ok(VerificationKey { key, algorithm })
}

#[cfg(test)]
mod tests;
