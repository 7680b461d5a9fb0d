//! Bearer-token verification: signature, issuer, audience, and expiry against the clock.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pim_clock::SharedClock;

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
}

/// The key that verifies tokens.
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
    key: Arc<DecodingKey>,
    algorithm: Algorithm,
    issuer: String,
    audience: String,
    clock: SharedClock,
    /// Clock skew tolerated on `exp`, in seconds.
    leeway: i64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
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
        Ok(Self {
            key: Arc::new(key),
            algorithm,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            clock,
            leeway: 5,
        })
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
        // decode_header refuses `alg: none`, which jsonwebtoken has no variant for.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != self.algorithm {
            return Err(AuthError::Algorithm);
        }
        let mut validation = Validation::new(self.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        // Expiry is checked below against the injectable clock.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &validation)
            .map_err(|e| AuthError::Invalid(format!("{:?}", e.kind())))?;
        let claims = data.claims;
        let now = self.clock.now().timestamp();
        if claims.exp + self.leeway <= now {
            return Err(AuthError::Expired);
        }
        if claims.iat > now + self.leeway {
            return Err(AuthError::NotYetValid);
        }
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".into()));
        }
        Ok(Caller::from_subject(
            claims.sub,
            claims.amr,
            claims.auth_time,
            claims.acrs,
        ))
    }
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
