//! Minting tokens: services sign their own identity for peers; tests and `pim dev` sign tokens
//! for people.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pim_clock::SharedClock;
use serde::{Deserialize, Serialize};

use crate::AuthError;

/// The claims PIM reads and writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acrs: Vec<String>,
}

/// Signs tokens with one key. Cloning is cheap.
#[derive(Clone)]
pub struct TokenSigner {
    key: Arc<EncodingKey>,
    algorithm: Algorithm,
    /// The header `kid`, so verifiers holding a key set can pick this key.
    kid: Option<String>,
    issuer: String,
    audience: String,
    clock: SharedClock,
}

impl std::fmt::Debug for TokenSigner {
    // The key never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// An RS256 (RSA key) or ES256 (EC P-256 key) signer from a PEM private key.
    pub fn from_pem(
        pem: &[u8],
        issuer: &str,
        audience: &str,
        clock: SharedClock,
    ) -> Result<Self, AuthError> {
        let text = String::from_utf8_lossy(pem);
        let (key, algorithm) = if text.contains("EC PRIVATE KEY") || ec_pkcs8(&text) {
            (EncodingKey::from_ec_pem(pem), Algorithm::ES256)
        } else {
            (EncodingKey::from_rsa_pem(pem), Algorithm::RS256)
        };
        let key = key.map_err(|e| AuthError::Key(e.to_string()))?;
        Ok(Self::new(key, algorithm, issuer, audience, clock))
    }

    /// A dev-mode HS256 signer.
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str, clock: SharedClock) -> Self {
        Self::new(
            EncodingKey::from_secret(secret),
            Algorithm::HS256,
            issuer,
            audience,
            clock,
        )
    }

    fn new(
        key: EncodingKey,
        algorithm: Algorithm,
        issuer: &str,
        audience: &str,
        clock: SharedClock,
    ) -> Self {
        Self {
            key: Arc::new(key),
            algorithm,
            kid: None,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            clock,
        }
    }

    /// Puts `kid` in the header of every token signed from now on: the key's id in the JWKS
    /// that verifiers fetch.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Claims for `sub`, valid for `ttl_secs` from the clock's now.
    pub fn claims(&self, sub: &str, ttl_secs: i64) -> Claims {
        let now = self.clock.now().timestamp();
        Claims {
            sub: sub.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + ttl_secs,
            iat: now,
            amr: vec!["pwd".into()],
            auth_time: Some(now),
            acrs: Vec::new(),
        }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        let header = Header {
            kid: self.kid.clone(),
            ..Header::new(self.algorithm)
        };
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| AuthError::Key(e.to_string()))
    }

    /// A short-lived token for one of PIM's services: `sub = service:<name>`.
    pub fn service_token(&self, service: &str) -> Result<String, AuthError> {
        let mut claims = self.claims(&format!("service:{service}"), 300);
        claims.amr.clear();
        claims.auth_time = None;
        self.sign(&claims)
    }
}

fn ec_pkcs8(pem: &str) -> bool {
    // PKCS#8 EC keys carry the id-ecPublicKey OID (1.2.840.10045.2.1), which base64-encodes to this.
    pem.contains("BEGIN PRIVATE KEY") && pem.contains("MIGHAgEAMBMGByqGSM49AgEG")
}
