//! JWKS fetching, caching and rotation against a real HTTP/1.1 server on 127.0.0.1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pim_clock::ManualClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::{AuthError, TokenSigner, Verifier};

const ISSUER_KEY: &[u8] = include_bytes!("../../../testkit/keys/issuer.key");
const ISSUER_PUB: &[u8] = include_bytes!("../../../testkit/keys/issuer.pub");
const OTHER_KEY: &[u8] = include_bytes!("../../../testkit/keys/other.key");
const ES256_KEY: &[u8] = include_bytes!("../../tests-data/es256.key");
const ISSUER_JWK: &str = include_str!("../../tests-data/issuer.jwk.json");
const OTHER_JWK: &str = include_str!("../../tests-data/other.jwk.json");
const ES256_JWK: &str = include_str!("../../tests-data/es256.jwk.json");

/// Long enough for a loaded 2-core machine, short enough to fail fast.
const PATIENCE: Duration = Duration::from_secs(10);

fn set(jwks: &[&str]) -> String {
    format!(r#"{{"keys":[{}]}}"#, jwks.join(","))
}

/// A JWKS endpoint: answers every request with the current body (503 when `None`) and counts
/// the requests.
struct Server {
    url: String,
    body: Arc<Mutex<Option<String>>>,
    hits: Arc<AtomicUsize>,
}

impl Server {
    async fn start(body: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let server = Self {
            url,
            body: Arc::new(Mutex::new(Some(body))),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let (body, hits) = (server.body.clone(), server.hits.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, body.clone(), hits.clone()));
            }
        });
        server
    }

    fn serve(&self, body: Option<String>) {
        *self.body.lock().unwrap() = body;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn answer(mut socket: TcpStream, body: Arc<Mutex<Option<String>>>, hits: Arc<AtomicUsize>) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    assert!(head.starts_with(b"GET /jwks.json HTTP/1.1\r\n"));
    hits.fetch_add(1, Ordering::SeqCst);
    let current = body.lock().unwrap().clone();
    let (status, json) = match current {
        Some(json) => ("200 OK", json),
        None => ("503 Service Unavailable", String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{json}",
        json.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

fn fast() -> JwksConfig {
    JwksConfig {
        min_refresh_gap: Duration::ZERO,
        ..JwksConfig::default()
    }
}

fn verifier(cache: &JwksCache, clock: &Arc<ManualClock>) -> Verifier {
    Verifier::from_jwks(cache.clone(), "idp", "pim", clock.clone())
}

fn token(pem: &[u8], kid: Option<&str>, clock: &Arc<ManualClock>) -> String {
    let mut signer = TokenSigner::from_pem(pem, "idp", "pim", clock.clone()).unwrap();
    if let Some(kid) = kid {
        signer = signer.with_kid(kid);
    }
    signer.sign(&signer.claims("alice", 60)).unwrap()
}

async fn next_refresh(refreshed: &mut watch::Receiver<u64>) {
    tokio::time::timeout(PATIENCE, refreshed.changed())
        .await
        .expect("a refresh in time")
        .unwrap();
}

#[tokio::test]
async fn a_token_signed_by_a_served_key_verifies_and_other_kids_do_not() {
    let server = Server::start(set(&[ISSUER_JWK])).await;
    let cache = JwksCache::fetch(&server.url, fast()).await.unwrap();
    assert_eq!(cache.key_ids(), ["issuer"]);
    let clock = ManualClock::starting_now();
    let verifier = verifier(&cache, &clock);

    let caller = verifier
        .verify(&token(ISSUER_KEY, Some("issuer"), &clock))
        .unwrap();
    assert_eq!(caller.subject, "alice");
    assert_eq!(
        verifier.verify(&token(ISSUER_KEY, Some("nope"), &clock)),
        Err(AuthError::UnknownKey)
    );
    assert_eq!(
        verifier.verify(&token(ISSUER_KEY, None, &clock)),
        Err(AuthError::MissingKeyId)
    );
    // Another key claiming the served key's kid fails the signature check.
    assert!(matches!(
        verifier.verify(&token(OTHER_KEY, Some("issuer"), &clock)),
        Err(AuthError::Invalid(_))
    ));
    // Expiry still follows the injected clock.
    let expiring = token(ISSUER_KEY, Some("issuer"), &clock);
    clock.advance(chrono::Duration::seconds(65));
    assert_eq!(verifier.verify(&expiring), Err(AuthError::Expired));
}

#[tokio::test]
async fn an_es256_key_from_the_set_verifies() {
    let server = Server::start(set(&[ES256_JWK, ISSUER_JWK])).await;
    let cache = JwksCache::fetch(&server.url, fast()).await.unwrap();
    let clock = ManualClock::starting_now();
    let verifier = verifier(&cache, &clock);
    assert!(
        verifier
            .verify(&token(ES256_KEY, Some("es256"), &clock))
            .is_ok()
    );
    // The right key pair under the wrong key's kid: the algorithms differ.
    assert_eq!(
        verifier.verify(&token(ES256_KEY, Some("issuer"), &clock)),
        Err(AuthError::Algorithm)
    );
}

#[tokio::test]
async fn a_rotated_key_is_fetched_on_first_sight_of_its_kid() {
    let server = Server::start(set(&[ISSUER_JWK])).await;
    let cache = JwksCache::fetch(&server.url, fast()).await.unwrap();
    let cancel = CancellationToken::new();
    let refresher = cache.spawn_refresh(cancel.clone());
    let clock = ManualClock::starting_now();
    let verifier = verifier(&cache, &clock);
    let mut refreshed = cache.refreshed();
    refreshed.borrow_and_update();

    // The IdP rotates: it publishes the new key and signs with it.
    server.serve(Some(set(&[ISSUER_JWK, OTHER_JWK])));
    let rotated = token(OTHER_KEY, Some("other"), &clock);
    assert_eq!(verifier.verify(&rotated), Err(AuthError::UnknownKey));
    next_refresh(&mut refreshed).await;
    assert_eq!(verifier.verify(&rotated).unwrap().subject, "alice");
    assert_eq!(server.hits(), 2);

    // The IdP retires the old key: the next refresh drops it.
    server.serve(Some(set(&[OTHER_JWK])));
    assert_eq!(cache.refresh().await.unwrap(), 1);
    assert_eq!(
        verifier.verify(&token(ISSUER_KEY, Some("issuer"), &clock)),
        Err(AuthError::UnknownKey)
    );

    cancel.cancel();
    tokio::time::timeout(PATIENCE, refresher)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn forged_kids_trigger_at_most_one_fetch_per_gap() {
    // Signed up front (RSA signing is slow in debug builds): the flood must fit in one gap.
    let clock = ManualClock::starting_now();
    let forged: Vec<String> = (0..10)
        .map(|i| token(ISSUER_KEY, Some(&format!("forged-{i}")), &clock))
        .collect();
    let server = Server::start(set(&[ISSUER_JWK])).await;
    let gap = Duration::from_millis(300);
    let config = JwksConfig {
        min_refresh_gap: gap,
        ..JwksConfig::default()
    };
    let cache = JwksCache::fetch(&server.url, config).await.unwrap();
    let cancel = CancellationToken::new();
    cache.spawn_refresh(cancel.clone());
    let verifier = verifier(&cache, &clock);
    let mut refreshed = cache.refreshed();
    refreshed.borrow_and_update();

    for forged in &forged {
        assert_eq!(verifier.verify(forged), Err(AuthError::UnknownKey));
        // Let the refresher take the wake, so later ones find it busy waiting out the gap.
        tokio::task::yield_now().await;
    }
    next_refresh(&mut refreshed).await;
    // Long enough for a second early fetch, were the flood not coalesced into one.
    tokio::time::sleep(gap * 2).await;
    assert_eq!(server.hits(), 2, "the first fetch and one early refresh");
    cancel.cancel();
}

#[tokio::test]
async fn hs256_tokens_are_refused_even_under_an_rsa_kid() {
    // The classic confusion: HMAC over the token, keyed with the RSA public key's bytes.
    let oct = r#"{"kty":"oct","kid":"hmac","alg":"HS256","k":"c2VjcmV0"}"#;
    let server = Server::start(set(&[ISSUER_JWK, oct])).await;
    let cache = JwksCache::fetch(&server.url, fast()).await.unwrap();
    assert_eq!(cache.key_ids(), ["issuer"]);
    let clock = ManualClock::starting_now();
    let verifier = verifier(&cache, &clock);
    for (secret, kid) in [(ISSUER_PUB, "issuer"), (b"secret".as_slice(), "hmac")] {
        let signer = TokenSigner::hs256(secret, "idp", "pim", clock.clone()).with_kid(kid);
        let forged = signer.sign(&signer.claims("mallory", 60)).unwrap();
        assert_eq!(verifier.verify(&forged), Err(AuthError::Algorithm));
    }
    // `alg: none` never gets as far as a key.
    // {"alg":"none","kid":"issuer"}.{"sub":"alice","iss":"idp","aud":"pim",...}.
    let none = "eyJhbGciOiJub25lIiwia2lkIjoiaXNzdWVyIn0.eyJzdWIiOiJhbGljZSIsImlzcyI6ImlkcCIsImF1ZCI6InBpbSIsImV4cCI6OTk5OTk5OTk5OSwiaWF0IjowfQ.";
    assert_eq!(verifier.verify(none), Err(AuthError::Malformed));
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_cached_keys() {
    let server = Server::start(set(&[ISSUER_JWK])).await;
    let cache = JwksCache::fetch(&server.url, fast()).await.unwrap();
    server.serve(None);
    let error = cache.refresh().await.unwrap_err();
    assert_eq!(error.failure(), &JwksFailure::Status(503));
    server.serve(Some(r#"{"keys":[]}"#.into()));
    let error = cache.refresh().await.unwrap_err();
    assert_eq!(error.failure(), &JwksFailure::NoUsableKeys);
    let clock = ManualClock::starting_now();
    assert!(
        verifier(&cache, &clock)
            .verify(&token(ISSUER_KEY, Some("issuer"), &clock))
            .is_ok()
    );
}

#[tokio::test]
async fn construction_failures_name_the_url() {
    // A port nobody listens on: bind one, then let it go.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    drop(listener);
    let error = JwksCache::fetch(&closed, fast()).await.unwrap_err();
    assert!(
        matches!(error.failure(), JwksFailure::Request(_)),
        "{error}"
    );
    assert!(error.to_string().contains(&closed), "{error}");

    let https = "https://idp.example/jwks.json";
    let error = JwksCache::fetch(https, fast()).await.unwrap_err();
    assert_eq!(error.failure(), &JwksFailure::UnsupportedScheme);
    assert!(error.to_string().contains(https), "{error}");

    let server = Server::start("not json".into()).await;
    let error = JwksCache::fetch(&server.url, fast()).await.unwrap_err();
    assert!(matches!(error.failure(), JwksFailure::Json(_)), "{error}");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    // Accepts and never answers.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config = JwksConfig {
        fetch_timeout: Duration::from_millis(200),
        ..JwksConfig::default()
    };
    let error = JwksCache::fetch(&url, config).await.unwrap_err();
    assert_eq!(
        error.failure(),
        &JwksFailure::Timeout(Duration::from_millis(200))
    );
    holder.abort();
}

#[test]
fn only_rs256_and_es256_signing_keys_with_a_kid_are_taken() {
    let issuer: serde_json::Value = serde_json::from_str(ISSUER_JWK).unwrap();
    let variant = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut key = issuer.clone();
        edit(&mut key);
        key.to_string()
    };
    let keys = [
        ISSUER_JWK.to_owned(),
        // Skipped, each for one reason:
        variant(&|k| {
            k["kid"] = "enc".into();
            k["use"] = "enc".into();
        }),
        variant(&|k| {
            k["kid"] = "ps256".into();
            k["alg"] = "PS256".into();
        }),
        variant(&|k| {
            k["kid"] = "mislabelled".into();
            k["alg"] = "ES256".into();
        }),
        variant(&|k| {
            k["kid"] = "sign-only".into();
            k["key_ops"] = serde_json::json!(["sign"]);
        }),
        variant(&|k| {
            k.as_object_mut().unwrap().remove("kid");
        }),
        variant(&|k| {
            k["kid"] = "bad-modulus".into();
            k["n"] = "!!".into();
        }),
        // A second key under a kid already taken: the first stays.
        OTHER_JWK.replace(r#""kid": "other""#, r#""kid": "issuer""#),
        r#"{"kty":"EC","crv":"P-384","kid":"p384","x":"AA","y":"AA"}"#.to_owned(),
        r#"{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"AA"}"#.to_owned(),
        r#"{"kty":"oct","kid":"hmac","k":"c2VjcmV0"}"#.to_owned(),
        r#"{"kty":"weird","kid":"weird"}"#.to_owned(),
    ];
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let parsed = parse_set(set(&refs).as_bytes()).unwrap();
    assert_eq!(parsed.keys().collect::<Vec<_>>(), ["issuer"]);
    assert_eq!(parsed["issuer"].algorithm, Algorithm::RS256);
    // The kept "issuer" is the first one listed.
    let clock = ManualClock::starting_now();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
    validation.set_audience(&["pim"]);
    let decoded = jsonwebtoken::decode::<crate::Claims>(
        &token(ISSUER_KEY, Some("issuer"), &clock),
        &parsed["issuer"].key,
        &validation,
    );
    assert!(decoded.is_ok(), "{decoded:?}");
}
