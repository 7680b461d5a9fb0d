//! Secrets at rest: webhook secrets (and `enc:` SMTP passwords) are sealed with AES-256-GCM under
//! the key from `PIM_NOTIFICATION_SECRET_KEY`. A sealed value is a version byte, a random
//! 96-bit nonce and the ciphertext with its tag. Plain secrets never reach the database or logs.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom as _, SystemRandom},
};

const VERSION: u8 = 1;
/// What Standard Webhooks secrets start with.
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the notification secret key must be base64 of 32 bytes")]
    BadKey,
    #[error("a sealed secret could not be opened (wrong key or corrupted)")]
    Unseal,
    #[error("no random bytes")]
    Random,
}

/// The key that seals secrets. Its `Debug` prints nothing of it.
pub struct SecretKey {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    /// From the configured base64 of 32 bytes.
    pub fn from_base64(encoded: &str) -> Result<Self, SecretError> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| SecretError::BadKey)?;
        Self::from_bytes(&bytes)
    }

    /// Dev mode only: a key derived from the dev signing secret, so `pim dev` works untouched.
    pub fn derived_for_dev(dev_secret: &str) -> Result<Self, SecretError> {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("pim-notification-secrets:{dev_secret}").as_bytes(),
        );
        Self::from_bytes(digest.as_ref())
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        if bytes.len() != 32 {
            return Err(SecretError::BadKey);
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SecretError::BadKey)?;
        Ok(Self {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }

    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SecretError::Random)?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from([VERSION]),
                &mut sealed,
            )
            .map_err(|_| SecretError::Unseal)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(SecretError::Unseal);
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN])
            .map_err(|_| SecretError::Unseal)?;
        let mut buffer = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from([VERSION]), &mut buffer)
            .map_err(|_| SecretError::Unseal)?;
        Ok(plain.to_vec())
    }

    /// `enc:` and base64 of the sealed value: how an SMTP password is written into configuration.
    pub fn seal_to_text(&self, plain: &str) -> Result<String, SecretError> {
        Ok(format!(
            "enc:{}",
            STANDARD.encode(self.seal(plain.as_bytes())?)
        ))
    }

    /// Opens an `enc:` value; any other value is returned as it is.
    pub fn open_text(&self, value: &str) -> Result<String, SecretError> {
        match value.strip_prefix("enc:") {
            None => Ok(value.to_owned()),
            Some(encoded) => {
                let sealed = STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| SecretError::Unseal)?;
                String::from_utf8(self.open(&sealed)?).map_err(|_| SecretError::Unseal)
            }
        }
    }
}

/// A fresh Standard Webhooks secret: `whsec_` and base64 of 32 random bytes.
pub fn generate_webhook_secret() -> Result<String, SecretError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretError::Random)?;
    Ok(format!("{WEBHOOK_SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// The key bytes of a Standard Webhooks secret, or why it is not one.
pub fn webhook_secret_bytes(secret: &str) -> Result<Vec<u8>, &'static str> {
    if secret.trim().is_empty() {
        return Err("must not be empty");
    }
    let encoded = secret
        .strip_prefix(WEBHOOK_SECRET_PREFIX)
        .ok_or("must start with whsec_")?;
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| "must be whsec_ followed by base64")?;
    if !(24..=64).contains(&bytes.len()) {
        return Err("must hold between 24 and 64 bytes");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key() {
        let sealed = key().seal(b"whsec_abc").unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"whsec_abc"));
        assert_eq!(key().open(&sealed).unwrap(), b"whsec_abc");
        let other = SecretKey::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(other.open(&sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(key().open(&tampered).is_err());
    }

    #[test]
    fn smtp_passwords_can_be_configured_sealed() {
        let sealed = key().seal_to_text("hunter2").unwrap();
        assert!(sealed.starts_with("enc:") && !sealed.contains("hunter2"));
        assert_eq!(key().open_text(&sealed).unwrap(), "hunter2");
        assert_eq!(key().open_text("plain").unwrap(), "plain");
    }

    #[test]
    fn webhook_secrets_follow_the_standard() {
        let secret = generate_webhook_secret().unwrap();
        assert_eq!(webhook_secret_bytes(&secret).unwrap().len(), 32);
        assert!(webhook_secret_bytes("").is_err());
        assert!(webhook_secret_bytes("whsec_c2hvcnQ=").is_err());
        assert!(webhook_secret_bytes("nope").is_err());
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(SecretKey::from_base64("c2hvcnQ=").is_err());
        assert!(format!("{:?}", key()).contains("***"));
    }
}
