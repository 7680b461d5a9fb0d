//! The Ed25519 key that signs checkpoints. The private key never leaves this module: it is not
//! `Debug`, not logged, and only signatures come out.

use anyhow::Context as _;
use ed25519_dalek::{
    Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey,
    pkcs8::{DecodePrivateKey as _, EncodePublicKey as _, spki::der::pem::LineEnding},
};
use pim_config::Settings;
use sha2::{Digest as _, Sha256};

use crate::record::checkpoint_message;

/// Where the key came from, for the start-up log line (never the key itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    File,
    DevSecret,
    Ephemeral,
}

pub struct CheckpointSigner {
    key: SigningKey,
    key_id: String,
    pub source: KeySource,
    /// Keys that signed earlier checkpoints, still trusted for verifying them.
    previous: Vec<VerifyingKey>,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("key_id", &self.key_id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// `PIM_AUDIT_SIGNING_KEY_FILE` (PKCS#8 PEM); in dev mode a key derived from the dev secret;
    /// otherwise a random key for this process only, which later processes cannot vouch for.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let previous = settings
            .audit
            .previous_public_keys
            .iter()
            .map(|hex_key| parse_public_key(hex_key))
            .collect::<anyhow::Result<Vec<_>>>()
            .context("configuration key PIM_AUDIT_PREVIOUS_PUBLIC_KEYS")?;
        Ok(Self::current_key(settings)?.trusting(previous))
    }

    fn current_key(settings: &Settings) -> anyhow::Result<Self> {
        if let Some(path) = &settings.audit.signing_key_file {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("PIM_AUDIT_SIGNING_KEY_FILE {}", path.display()))?;
            let key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| {
                anyhow::anyhow!(
                    "configuration key PIM_AUDIT_SIGNING_KEY_FILE: not an Ed25519 PKCS#8 PEM private key"
                )
            })?;
            return Ok(Self::new(key, KeySource::File));
        }
        if settings.auth.dev_mode
            && let Some(secret) = &settings.auth.dev_hs256_secret
        {
            let seed: [u8; 32] = Sha256::new()
                .chain_update(b"pim-audit-dev-checkpoint-key:")
                .chain_update(secret.expose().as_bytes())
                .finalize()
                .into();
            return Ok(Self::new(
                SigningKey::from_bytes(&seed),
                KeySource::DevSecret,
            ));
        }
        let mut seed = [0u8; 32];
        seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Ok(Self::new(
            SigningKey::from_bytes(&seed),
            KeySource::Ephemeral,
        ))
    }

    pub fn new(key: SigningKey, source: KeySource) -> Self {
        let key_id = key_id(&key.verifying_key());
        Self {
            key,
            key_id,
            source,
            previous: Vec::new(),
        }
    }

    /// Also trusts `previous` keys when verifying the checkpoints they signed (key rotation).
    pub fn trusting(mut self, previous: Vec<VerifyingKey>) -> Self {
        self.previous = previous;
        self
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn public_key_pem(&self) -> String {
        self.public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// The hex signature of a checkpoint.
    pub fn sign(&self, sequence: i64, hash: &str, signed_at_ms: i64) -> String {
        let message = checkpoint_message(sequence, hash, signed_at_ms);
        hex::encode(self.key.sign(&message).to_bytes())
    }

    /// The public half, which checks signatures.
    pub fn verifier(&self) -> CheckpointVerifier {
        CheckpointVerifier::new(self.public_key()).trusting(self.previous.clone())
    }

    /// Whether `signature` (hex) is this key's signature of the checkpoint.
    pub fn verify(&self, sequence: i64, hash: &str, signed_at_ms: i64, signature: &str) -> bool {
        self.verifier()
            .verify(sequence, hash, signed_at_ms, signature)
    }
}

/// A public key that checks checkpoint signatures: the service's own, or one given to
/// `pim audit verify`.
#[derive(Debug, Clone)]
pub struct CheckpointVerifier {
    key: VerifyingKey,
    key_id: String,
    previous: Vec<(String, VerifyingKey)>,
}

impl CheckpointVerifier {
    pub fn new(key: VerifyingKey) -> Self {
        Self {
            key_id: key_id(&key),
            key,
            previous: Vec::new(),
        }
    }

    /// Also trusts `previous` keys for the checkpoints they signed.
    pub fn trusting(mut self, previous: Vec<VerifyingKey>) -> Self {
        self.previous = previous.into_iter().map(|k| (key_id(&k), k)).collect();
        self
    }

    /// Whether a checkpoint of key `key_id` can be checked: the current key or a trusted
    /// previous one.
    pub fn knows(&self, key_id: &str) -> bool {
        self.key_id == key_id || self.previous.iter().any(|(id, _)| id == key_id)
    }

    /// Verifies a checkpoint with the key it names; `false` for a key not trusted here.
    pub fn verify_with(
        &self,
        key_id: &str,
        sequence: i64,
        hash: &str,
        signed_at_ms: i64,
        signature: &str,
    ) -> bool {
        let key = if key_id == self.key_id {
            Some(&self.key)
        } else {
            self.previous
                .iter()
                .find(|(id, _)| id == key_id)
                .map(|(_, key)| key)
        };
        key.is_some_and(|key| check(key, sequence, hash, signed_at_ms, signature))
    }

    /// From the raw 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        let raw: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("an Ed25519 public key has 32 bytes"))?;
        Ok(Self::new(VerifyingKey::from_bytes(&raw).map_err(|_| {
            anyhow::anyhow!("not an Ed25519 public key")
        })?))
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Verifies with the current key.
    pub fn verify(&self, sequence: i64, hash: &str, signed_at_ms: i64, signature: &str) -> bool {
        check(&self.key, sequence, hash, signed_at_ms, signature)
    }
}

fn check(
    key: &VerifyingKey,
    sequence: i64,
    hash: &str,
    signed_at_ms: i64,
    signature: &str,
) -> bool {
    let Ok(bytes) = hex::decode(signature) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(&bytes) else {
        return false;
    };
    let message = checkpoint_message(sequence, hash, signed_at_ms);
    key.verify(&message, &signature).is_ok()
}

/// A public key from 64 hex digits (the raw 32 bytes).
pub fn parse_public_key(hex_key: &str) -> anyhow::Result<VerifyingKey> {
    let bytes = hex::decode(hex_key.trim()).context("a public key is 64 hex digits")?;
    let raw: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("an Ed25519 public key has 32 bytes"))?;
    VerifyingKey::from_bytes(&raw).map_err(|_| anyhow::anyhow!("not an Ed25519 public key"))
}

/// The first 8 bytes of SHA-256 of the raw public key, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_own_checkpoint() {
        let signer = CheckpointSigner::new(SigningKey::from_bytes(&[7; 32]), KeySource::File);
        let hash = crate::record::GENESIS_HASH;
        let signature = signer.sign(5, hash, 1_000);
        assert!(signer.verify(5, hash, 1_000, &signature));
        assert!(!signer.verify(6, hash, 1_000, &signature));
        assert!(!signer.verify(5, hash, 1_001, &signature));
        assert!(!signer.verify(5, hash, 1_000, "00"));
        assert!(!format!("{signer:?}").contains("SigningKey"));
        assert!(
            signer
                .public_key_pem()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
    }

    #[test]
    fn a_rotated_key_still_verifies_the_checkpoints_it_signed_when_trusted() {
        let old = CheckpointSigner::new(SigningKey::from_bytes(&[1; 32]), KeySource::File);
        let hash = crate::record::GENESIS_HASH;
        let signature = old.sign(3, hash, 7);
        let new = CheckpointSigner::new(SigningKey::from_bytes(&[2; 32]), KeySource::File);
        assert!(!new.verifier().knows(old.key_id()));
        let trusting = new.trusting(vec![old.public_key()]).verifier();
        assert!(trusting.knows(old.key_id()));
        assert!(trusting.verify_with(old.key_id(), 3, hash, 7, &signature));
        let current = trusting.key_id().to_owned();
        assert!(!trusting.verify_with(&current, 3, hash, 7, &signature));
        let hex_key = hex::encode(old.public_key().as_bytes());
        assert_eq!(parse_public_key(&hex_key).unwrap(), old.public_key());
        assert!(parse_public_key("00").is_err());
    }
}
