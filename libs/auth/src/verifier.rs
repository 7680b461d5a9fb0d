//! Bearer-token verification: signature, issuer, audience, and expiry against the clock. The key
//! is either one static key (PEM, or HS256 in dev mode) or an identity provider's JWKS, chosen by
//! the token's `kid`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use pim_clock::SharedClock;

use crate::jwks::{JwksCache, VerificationKey};
use crate::{Caller, Claims};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("key: {0}")]
    Key(String),
    /// A JWKS is configured and the token names no key.
    #[error("token has no key id")]
    MissingKeyId,
    /// The token's `kid` is not in the key set (yet): an early refresh has been asked for.
    #[error("unknown signing key")]
    UnknownKey,
}

/// A static key that verifies tokens. For a JWKS URL, see [`Verifier::from_jwks`].
#[derive(Clone)]
pub enum KeyMaterial {
    /// A PEM public key: RSA for RS256, EC P-256 for ES256.
    Pem(Vec<u8>),
    /// Dev mode only.
    Hs256(Vec<u8>),
}

/// Verifies bearer tokens into callers. Cloning is cheap.
#[derive(Clone)]
pub struct Verifier {
    keys: Keys,
    /// With a JWKS: the key of PIM's own service tokens, which carry no `kid`. Only
    /// `service:<name>` subjects may be verified with it.
    service_key: Option<Arc<VerificationKey>>,
    issuer: String,
    audience: String,
    clock: SharedClock,
    /// Clock skew tolerated on `exp`, in seconds.
    leeway: i64,
    /// Tokens whose signature and claims verified lately. A backend service presents the same
    /// token on every call; decoding and checking it each time cost more than the call itself.
    verified: Arc<Mutex<HashMap<String, Verified>>>,
}

/// Keyed by whole tokens, which only enter once verified, so a fast hash (seeded per process) is
/// safe here; SipHash over a token cost more than the rest of the lookup.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A token that verified, with what the clock must still be checked against.
#[derive(Clone)]
struct Verified {
    caller: Caller,
    exp: i64,
    iat: i64,
    /// Re-verified after [`VERIFIED_FOR`], so that a key rotated out of a JWKS stops being
    /// honoured soon, not only when the token expires.
    at: Instant,
}

/// How long a verified signature is trusted before the token is verified again.
const VERIFIED_FOR: Duration = Duration::from_secs(60);
/// At most this many tokens are remembered; when full, the memory starts over.
const VERIFIED_MAX: usize = 10_000;

#[derive(Clone)]
enum Keys {
    /// One key; the token's `kid` is not consulted.
    Static(Arc<VerificationKey>),
    /// The key the token's `kid` names in the set.
    Jwks(JwksCache),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("Verifier");
        match &self.keys {
            Keys::Static(key) => debug.field("algorithm", &key.algorithm),
            Keys::Jwks(cache) => debug.field("jwks", &cache.url()),
        };
        debug
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(
        key: KeyMaterial,
        issuer: &str,
        audience: &str,
        clock: SharedClock,
    ) -> Result<Self, AuthError> {
        let key = verification_key(key)?;
        Ok(Self::with_keys(Keys::Static(key), issuer, audience, clock))
    }

    /// With a JWKS, also accept PIM's own service tokens (no `kid`) signed by this key; only
    /// `service:<name>` subjects may use it.
    pub fn with_service_key(mut self, key: KeyMaterial) -> Result<Self, AuthError> {
        self.service_key = Some(verification_key(key)?);
        Ok(self)
    }

    /// Verifies with the keys of an identity provider's JWKS: RS256 or ES256 only, and every
    /// token must carry a `kid`. The cache's refresher must be running for rotated keys to be
    /// picked up.
    pub fn from_jwks(jwks: JwksCache, issuer: &str, audience: &str, clock: SharedClock) -> Self {
        Self::with_keys(Keys::Jwks(jwks), issuer, audience, clock)
    }

    fn with_keys(keys: Keys, issuer: &str, audience: &str, clock: SharedClock) -> Self {
        Self {
            keys,
            service_key: None,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            clock,
            leeway: 5,
            verified: Arc::new(Mutex::new(HashMap::default())),
        }
    }

    /// Verifies the value of an `authorization` header.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::Malformed)?;
        self.verify(token.trim())
    }

    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let remembered = self
            .verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(token)
            .filter(|v| v.at.elapsed() < VERIFIED_FOR)
            .cloned();
        let verified = match remembered {
            Some(verified) => verified,
            None => {
                let verified = self.verify_signed(token)?;
                let mut memory = self
                    .verified
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if memory.len() >= VERIFIED_MAX {
                    memory.clear();
                }
                memory.insert(token.to_owned(), verified.clone());
                verified
            }
        };
        // Time is checked on every call, against the injectable clock, remembered or not.
        let now = self.clock.now().timestamp();
        if verified.exp + self.leeway <= now {
            return Err(AuthError::Expired);
        }
        if verified.iat > now + self.leeway {
            return Err(AuthError::NotYetValid);
        }
        Ok(verified.caller)
    }

    /// Signature, algorithm, issuer, audience and subject: everything but time.
    fn verify_signed(&self, token: &str) -> Result<Verified, AuthError> {
        // decode_header refuses `alg: none`, which jsonwebtoken has no variant for.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let (key, services_only) = self.key_for(&header)?;
        // The token's `alg` must be the one its key is for: an RSA public key must never be
        // taken as an HMAC secret.
        if header.alg != key.algorithm {
            return Err(AuthError::Algorithm);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        // Expiry is checked below against the injectable clock.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| AuthError::Invalid(format!("{:?}", e.kind())))?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".into()));
        }
        if services_only && !claims.sub.starts_with("service:") {
            return Err(AuthError::MissingKeyId);
        }
        Ok(Verified {
            caller: Caller::from_subject(claims.sub, claims.amr, claims.auth_time, claims.acrs),
            exp: claims.exp,
            iat: claims.iat,
            at: Instant::now(),
        })
    }

    /// The key that should have signed a token with this header. Never touches the network.
    /// The key for a token, and whether only service identities may be verified with it.
    fn key_for(&self, header: &Header) -> Result<(Arc<VerificationKey>, bool), AuthError> {
        let cache = match &self.keys {
            Keys::Static(key) => return Ok((key.clone(), false)),
            Keys::Jwks(cache) => cache,
        };
        // Refused before the lookup, so tokens that could never verify trigger no refresh.
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::Algorithm);
        }
        let Some(kid) = header.kid.as_deref() else {
            return match &self.service_key {
                Some(key) => Ok((key.clone(), true)),
                None => Err(AuthError::MissingKeyId),
            };
        };
        let key = cache.key(kid).ok_or_else(|| {
            cache.request_refresh();
            AuthError::UnknownKey
        })?;
        Ok((key, false))
    }
}

fn verification_key(key: KeyMaterial) -> Result<Arc<VerificationKey>, AuthError> {
    let (key, algorithm) = match key {
        KeyMaterial::Hs256(secret) => (Ok(DecodingKey::from_secret(&secret)), Algorithm::HS256),
        KeyMaterial::Pem(pem) => {
            let text = String::from_utf8_lossy(&pem);
            if text.contains("BEGIN RSA PUBLIC KEY") {
                (DecodingKey::from_rsa_pem(&pem), Algorithm::RS256)
            } else {
                // A SubjectPublicKeyInfo PEM: try EC first, then RSA.
                match DecodingKey::from_ec_pem(&pem) {
                    Ok(key) => (Ok(key), Algorithm::ES256),
                    Err(_) => (DecodingKey::from_rsa_pem(&pem), Algorithm::RS256),
                }
            }
        }
    };
    let key = key.map_err(|e| AuthError::Key(e.to_string()))?;
    Ok(Arc::new(VerificationKey { key, algorithm }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Duration;
    use pim_clock::ManualClock;

    use super::*;
    use crate::TokenSigner;

    fn setup() -> (Arc<ManualClock>, TokenSigner, Verifier) {
        let clock = ManualClock::starting_now();
        let signer = TokenSigner::hs256(b"k1", "pim", "pim", clock.clone());
        let verifier = Verifier::new(
            KeyMaterial::Hs256(b"k1".to_vec()),
            "pim",
            "pim",
            clock.clone(),
        )
        .unwrap();
        (clock, signer, verifier)
    }

    #[test]
    fn a_valid_token_yields_its_caller() {
        let (_, signer, verifier) = setup();
        let token = signer.sign(&signer.claims("alice", 60)).unwrap();
        let caller = verifier
            .verify_header(Some(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(caller.subject, "alice");
        assert!(!caller.did_mfa());
        let service = verifier
            .verify(&signer.service_token("activation").unwrap())
            .unwrap();
        assert_eq!(service.service(), Some("activation"));
    }

    #[test]
    fn expiry_follows_the_injected_clock() {
        let (clock, signer, verifier) = setup();
        let token = signer.sign(&signer.claims("alice", 60)).unwrap();
        clock.advance(Duration::seconds(64));
        assert!(verifier.verify(&token).is_ok());
        clock.advance(Duration::seconds(1));
        assert_eq!(verifier.verify(&token), Err(AuthError::Expired));
    }

    #[test]
    fn wrong_audience_issuer_or_key_is_refused() {
        let (clock, signer, verifier) = setup();
        let mut claims = signer.claims("alice", 60);
        claims.aud = "other".into();
        assert!(matches!(
            verifier.verify(&signer.sign(&claims).unwrap()),
            Err(AuthError::Invalid(_))
        ));
        let mut claims = signer.claims("alice", 60);
        claims.iss = "evil".into();
        assert!(matches!(
            verifier.verify(&signer.sign(&claims).unwrap()),
            Err(AuthError::Invalid(_))
        ));
        let other = TokenSigner::hs256(b"k2", "pim", "pim", clock);
        assert!(matches!(
            verifier.verify(&other.sign(&other.claims("alice", 60)).unwrap()),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn alg_none_and_garbage_are_refused() {
        let (_, _, verifier) = setup();
        // {"alg":"none","typ":"JWT"}.{"sub":"alice"...}.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImlzcyI6InBpbSIsImF1ZCI6InBpbSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert_eq!(verifier.verify(none), Err(AuthError::Malformed));
        assert_eq!(
            verifier.verify_header(Some("Basic abc")),
            Err(AuthError::Malformed)
        );
        assert_eq!(verifier.verify_header(None), Err(AuthError::Missing));
    }
}
