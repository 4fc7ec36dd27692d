//! Secrets: the master key that seals channel credentials and webhook secrets at rest
//! (XChaCha20-Poly1305 with a random nonce and the owner's id as associated data), and the
//! generation and hashing of API keys and Standard Webhooks secrets.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

/// Errors sealing or opening secrets.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The master key is not base64 of exactly 32 bytes.
    #[error("must be base64 of exactly 32 bytes (got {0} bytes)")]
    BadKeyLength(usize),
    /// The master key is not base64.
    #[error("is not valid base64")]
    BadKeyEncoding,
    /// The sealed value is corrupt or was sealed with another key or for another owner.
    #[error("sealed secret cannot be opened: wrong master key, wrong owner, or corrupt data")]
    Open,
    /// The operating system's random source failed.
    #[error("random source failed")]
    Random,
}

/// The installation's master key.
#[derive(Clone)]
pub struct MasterKey(XChaCha20Poly1305);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

const NONCE_LEN: usize = 24;

impl MasterKey {
    /// From base64 of 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, SecretError> {
        let raw = STANDARD
            .decode(s.trim())
            .map_err(|_| SecretError::BadKeyEncoding)?;
        if raw.len() != 32 {
            return Err(SecretError::BadKeyLength(raw.len()));
        }
        XChaCha20Poly1305::new_from_slice(&raw)
            .map(MasterKey)
            .map_err(|_| SecretError::BadKeyLength(raw.len()))
    }

    /// A fresh random key, as base64 (for `make run` and tests).
    pub fn generate_base64() -> Result<String, SecretError> {
        Ok(STANDARD.encode(random_bytes::<32>()?))
    }

    /// Seals `plaintext` for `owner` (an id such as `ch_…`); returns base64(nonce ‖ ciphertext).
    pub fn seal(&self, owner: &str, plaintext: &[u8]) -> Result<String, SecretError> {
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let nonce = XNonce::try_from(&nonce_bytes[..]).map_err(|_| SecretError::Random)?;
        let ct = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: owner.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Open)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&ct);
        Ok(STANDARD.encode(out))
    }

    /// Opens what [`MasterKey::seal`] produced for the same `owner`.
    pub fn open(&self, owner: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let raw = STANDARD.decode(sealed).map_err(|_| SecretError::Open)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(SecretError::Open);
        }
        let (n, ct) = raw.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(n).map_err(|_| SecretError::Open)?;
        self.0
            .decrypt(
                &nonce,
                Payload {
                    msg: ct,
                    aad: owner.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Open)
    }
}

/// `N` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| SecretError::Random)?;
    Ok(b)
}

/// A new API key: `pbk_` and 32 random bytes in URL-safe base64 (256 bits).
pub fn new_api_key() -> Result<String, SecretError> {
    Ok(format!(
        "pbk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?)
    ))
}

/// A new unguessable token for URLs and one-time codes: 32 random bytes (256 bits) in URL-safe
/// base64 without padding (43 characters of `A-Za-z0-9-_`, valid as a NATS KV key).
pub fn new_url_token() -> Result<String, SecretError> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// A new Standard Webhooks signing secret: `whsec_` and base64 of 32 random bytes.
pub fn new_webhook_secret() -> Result<String, SecretError> {
    Ok(format!("whsec_{}", STANDARD.encode(random_bytes::<32>()?)))
}

/// Lowercase hex SHA-256 of an API key: how keys are stored and looked up.
pub fn api_key_hash(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_bound_to_owner() {
        let k = MasterKey::from_base64(&MasterKey::generate_base64().unwrap()).unwrap();
        let s = k.seal("ch_1", b"token").unwrap();
        assert_eq!(k.open("ch_1", &s).unwrap(), b"token");
        assert_eq!(k.open("ch_2", &s), Err(SecretError::Open));
        let other = MasterKey::from_base64(&MasterKey::generate_base64().unwrap()).unwrap();
        assert_eq!(other.open("ch_1", &s), Err(SecretError::Open));
        assert_ne!(s, k.seal("ch_1", b"token").unwrap(), "nonces are random");
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(
            MasterKey::from_base64("c2hvcnQ=").unwrap_err(),
            SecretError::BadKeyLength(5)
        );
        assert_eq!(
            MasterKey::from_base64("%%%").unwrap_err(),
            SecretError::BadKeyEncoding
        );
    }

    #[test]
    fn generated_secrets_have_their_forms() {
        assert!(new_api_key().unwrap().starts_with("pbk_"));
        let w = new_webhook_secret().unwrap();
        assert_eq!(
            STANDARD
                .decode(w.strip_prefix("whsec_").unwrap())
                .unwrap()
                .len(),
            32
        );
        assert_eq!(api_key_hash("abc").len(), 64);
    }
}
