//! Secrets: the master keys that seal channel credentials and webhook secrets at rest
//! (XChaCha20-Poly1305 with a random nonce and the owner's id as associated data; each sealed
//! value names its key by id, so keys can be rotated), and the generation and hashing of API
//! keys and Standard Webhooks secrets.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use std::sync::Arc;

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
    /// The sealed value names a key this process does not hold.
    #[error(
        "sealed with master key {0}, which is neither PATCHBAY_MASTER_KEY nor one of PATCHBAY_MASTER_KEY_ACCEPTED"
    )]
    UnknownKey(String),
    /// The operating system's random source failed.
    #[error("random source failed")]
    Random,
}

/// One master key and its id.
struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn from_base64(s: &str) -> Result<Self, SecretError> {
        let raw = STANDARD
            .decode(s.trim())
            .map_err(|_| SecretError::BadKeyEncoding)?;
        if raw.len() != 32 {
            return Err(SecretError::BadKeyLength(raw.len()));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&raw)
            .map_err(|_| SecretError::BadKeyLength(raw.len()))?;
        Ok(Key {
            id: key_id_of(&raw),
            cipher,
        })
    }

    fn open(&self, owner: &str, body: &str) -> Result<Vec<u8>, SecretError> {
        let raw = STANDARD.decode(body).map_err(|_| SecretError::Open)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(SecretError::Open);
        }
        let (n, ct) = raw.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(n).map_err(|_| SecretError::Open)?;
        self.cipher
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

/// The id of the raw key `raw`: the first 8 bytes of SHA-256 over a label and the key, in hex.
/// It names the key in sealed values and logs and tells nothing of the key itself.
fn key_id_of(raw: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(KEY_ID_LABEL);
    h.update(raw);
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Domain separation of key ids from any other hash of the key.
const KEY_ID_LABEL: &[u8] = b"patchbay master key id\0";

/// The prefix of sealed values that name their key: `v2.<key id>.<base64>`. Values without it
/// (sealed before key ids, plain base64, which has no `.`) are opened by trying every key.
const SEALED_PREFIX: &str = "v2.";

/// The installation's master keys: the current key, which seals, and the accepted keys, which
/// only open (the previous key until `patchbay master-key reseal` has re-sealed everything, or
/// the next key while a rotation is rolled out). A sealed value names its key by id
/// (`v2.<key id>.<base64(nonce ‖ ciphertext)>`), so opening takes one attempt.
#[derive(Clone)]
pub struct MasterKey(Arc<Ring>);

struct Ring {
    current: Key,
    accepted: Vec<Key>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({}", self.0.current.id)?;
        for k in &self.0.accepted {
            write!(f, ", accepted {}", k.id)?;
        }
        f.write_str(")")
    }
}

const NONCE_LEN: usize = 24;

impl MasterKey {
    /// One key, from base64 of 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, SecretError> {
        Self::keyring(s, &[])
    }

    /// The current key `current` and the keys `accepted` that only open, each base64 of 32
    /// bytes. An accepted key equal to the current one is ignored.
    pub fn keyring(current: &str, accepted: &[&str]) -> Result<Self, SecretError> {
        let current = Key::from_base64(current)?;
        let mut others: Vec<Key> = Vec::with_capacity(accepted.len());
        for s in accepted {
            let k = Key::from_base64(s)?;
            if k.id != current.id && !others.iter().any(|o| o.id == k.id) {
                others.push(k);
            }
        }
        Ok(MasterKey(Arc::new(Ring {
            current,
            accepted: others,
        })))
    }

    /// The id of the key given as base64, as sealed values name it.
    pub fn id_of_base64(s: &str) -> Result<String, SecretError> {
        Key::from_base64(s).map(|k| k.id)
    }

    /// A fresh random key, as base64 (for `make run` and tests).
    pub fn generate_base64() -> Result<String, SecretError> {
        Ok(STANDARD.encode(random_bytes::<32>()?))
    }

    /// The current key's id.
    pub fn id(&self) -> &str {
        &self.0.current.id
    }

    /// The ids of the accepted keys.
    pub fn accepted_ids(&self) -> Vec<&str> {
        self.0.accepted.iter().map(|k| k.id.as_str()).collect()
    }

    /// Seals `plaintext` for `owner` (an id such as `ch_…`, the associated data) with the
    /// current key: `v2.<key id>.<base64(nonce ‖ ciphertext)>`.
    pub fn seal(&self, owner: &str, plaintext: &[u8]) -> Result<String, SecretError> {
        let key = &self.0.current;
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let nonce = XNonce::try_from(&nonce_bytes[..]).map_err(|_| SecretError::Random)?;
        let ct = key
            .cipher
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
        Ok(format!(
            "{SEALED_PREFIX}{}.{}",
            key.id,
            STANDARD.encode(out)
        ))
    }

    /// Opens what [`MasterKey::seal`] produced for the same `owner`, with the key it names
    /// (current or accepted); a value without a key id with each key in turn.
    pub fn open(&self, owner: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
        match split(sealed) {
            Some((id, body)) => self
                .keys()
                .find(|k| k.id == id)
                .ok_or_else(|| SecretError::UnknownKey(id.to_owned()))?
                .open(owner, body),
            None => self
                .keys()
                .find_map(|k| k.open(owner, sealed).ok())
                .ok_or(SecretError::Open),
        }
    }

    /// The id of the key that sealed `sealed`, when the value names it (`None`: sealed before
    /// key ids).
    pub fn sealed_key_id(sealed: &str) -> Option<&str> {
        split(sealed).map(|(id, _)| id)
    }

    /// Whether `sealed` is sealed with the current key (and names it).
    pub fn is_current(&self, sealed: &str) -> bool {
        Self::sealed_key_id(sealed) == Some(self.id())
    }

    /// `sealed` sealed again with the current key, or `None` when it already is. Fails as
    /// [`MasterKey::open`] does.
    pub fn reseal(&self, owner: &str, sealed: &str) -> Result<Option<String>, SecretError> {
        if self.is_current(sealed) {
            return Ok(None);
        }
        let plain = self.open(owner, sealed)?;
        self.seal(owner, &plain).map(Some)
    }

    fn keys(&self) -> impl Iterator<Item = &Key> {
        std::iter::once(&self.0.current).chain(&self.0.accepted)
    }
}

/// What a re-seal pass (`patchbay master-key reseal`) found in one place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealCounts {
    /// Values already sealed with the current key.
    pub current: u64,
    /// Values sealed again with the current key (a check: values that would be).
    pub resealed: u64,
    /// Values that cannot be opened with any key held, each with where it is and why.
    pub failed: Vec<String>,
}

impl ResealCounts {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: ResealCounts) {
        self.current += other.current;
        self.resealed += other.resealed;
        self.failed.extend(other.failed);
    }

    /// `sealed` (at `place`, for `owner`) sealed again with `key`'s current key, counted:
    /// `None` when it already is current or cannot be opened.
    pub fn reseal(
        &mut self,
        key: &MasterKey,
        place: &str,
        owner: &str,
        sealed: &str,
    ) -> Option<String> {
        match key.reseal(owner, sealed) {
            Ok(None) => {
                self.current += 1;
                None
            }
            Ok(Some(new)) => {
                self.resealed += 1;
                Some(new)
            }
            Err(e) => {
                self.failed.push(format!("{place}: {e}"));
                None
            }
        }
    }
}

/// `v2.<key id>.<body>` → (key id, body).
fn split(sealed: &str) -> Option<(&str, &str)> {
    sealed.strip_prefix(SEALED_PREFIX)?.split_once('.')
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
        assert_eq!(
            other.open("ch_1", &s),
            Err(SecretError::UnknownKey(k.id().to_owned()))
        );
        assert_ne!(s, k.seal("ch_1", b"token").unwrap(), "nonces are random");
    }

    fn key() -> String {
        MasterKey::generate_base64().unwrap()
    }

    /// What the seal of a version without key ids produced: base64(nonce ‖ ciphertext).
    fn legacy_seal(key: &str, owner: &str, plaintext: &[u8]) -> String {
        let sealed = MasterKey::from_base64(key)
            .unwrap()
            .seal(owner, plaintext)
            .unwrap();
        split(&sealed).unwrap().1.to_owned()
    }

    #[test]
    fn sealed_values_name_their_key() {
        let a = key();
        let k = MasterKey::from_base64(&a).unwrap();
        let id = MasterKey::id_of_base64(&a).unwrap();
        assert_eq!(k.id(), id);
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!a.contains(&id), "the id is not part of the key");
        let s = k.seal("ch_1", b"token").unwrap();
        assert!(s.starts_with(&format!("v2.{id}.")), "{s}");
        assert_eq!(MasterKey::sealed_key_id(&s), Some(id.as_str()));
        assert!(k.is_current(&s));
        // The id is a stable function of the key.
        assert_eq!(MasterKey::from_base64(&a).unwrap().id(), id);
        assert_ne!(MasterKey::from_base64(&key()).unwrap().id(), id);
    }

    #[test]
    fn the_current_key_seals_and_accepted_keys_only_open() {
        let (a, b) = (key(), key());
        let old = MasterKey::from_base64(&a).unwrap();
        let by_a = old.seal("ch_1", b"token").unwrap();
        let ring = MasterKey::keyring(&b, &[&a]).unwrap();
        assert_eq!(ring.accepted_ids(), vec![old.id()]);
        assert_eq!(ring.open("ch_1", &by_a).unwrap(), b"token");
        assert_eq!(ring.open("ch_2", &by_a), Err(SecretError::Open));
        let by_ring = ring.seal("ch_1", b"token").unwrap();
        assert_eq!(
            MasterKey::sealed_key_id(&by_ring),
            Some(MasterKey::id_of_base64(&b).unwrap().as_str()),
            "only the current key seals"
        );
        assert!(!ring.is_current(&by_a));
        // A rolling update: the old key current, the new one accepted, opens what the new
        // ring seals.
        let rolling = MasterKey::keyring(&a, &[&b]).unwrap();
        assert_eq!(rolling.open("ch_1", &by_ring).unwrap(), b"token");
        // Without the key a value names, it is refused by name.
        assert_eq!(
            old.open("ch_1", &by_ring),
            Err(SecretError::UnknownKey(ring.id().to_owned()))
        );
        // The current key repeated among the accepted ones counts once.
        assert!(
            MasterKey::keyring(&b, &[&b])
                .unwrap()
                .accepted_ids()
                .is_empty()
        );
    }

    #[test]
    fn values_sealed_before_key_ids_still_open() {
        let (a, b) = (key(), key());
        let legacy = legacy_seal(&a, "bot_1", b"whsec");
        assert_eq!(MasterKey::sealed_key_id(&legacy), None);
        let alone = MasterKey::from_base64(&a).unwrap();
        assert_eq!(alone.open("bot_1", &legacy).unwrap(), b"whsec");
        let ring = MasterKey::keyring(&b, &[&a]).unwrap();
        assert_eq!(ring.open("bot_1", &legacy).unwrap(), b"whsec");
        assert_eq!(ring.open("bot_2", &legacy), Err(SecretError::Open));
        assert_eq!(
            MasterKey::from_base64(&b).unwrap().open("bot_1", &legacy),
            Err(SecretError::Open),
            "a wrong key is refused"
        );
        // A value whose key id was changed is not opened by another key.
        let by_a = alone.seal("bot_1", b"whsec").unwrap();
        let relabelled = by_a.replacen(alone.id(), ring.id(), 1);
        assert_eq!(ring.open("bot_1", &relabelled), Err(SecretError::Open));
    }

    #[test]
    fn reseal_moves_values_to_the_current_key_once() {
        let (a, b) = (key(), key());
        let by_a = MasterKey::from_base64(&a)
            .unwrap()
            .seal("ch_1", b"t")
            .unwrap();
        let legacy = legacy_seal(&a, "ch_1", b"t");
        let ring = MasterKey::keyring(&b, &[&a]).unwrap();
        let only_b = MasterKey::from_base64(&b).unwrap();
        for old in [by_a, legacy] {
            let new = ring.reseal("ch_1", &old).unwrap().expect("resealed");
            assert!(ring.is_current(&new));
            assert_eq!(only_b.open("ch_1", &new).unwrap(), b"t");
            assert_eq!(ring.reseal("ch_1", &new).unwrap(), None, "already current");
        }
        let unknown = MasterKey::from_base64(&key())
            .unwrap()
            .seal("ch_1", b"t")
            .unwrap();
        assert!(matches!(
            ring.reseal("ch_1", &unknown),
            Err(SecretError::UnknownKey(_))
        ));
        assert_eq!(ring.reseal("ch_1", "garbage"), Err(SecretError::Open));
    }

    #[test]
    fn debug_shows_ids_only() {
        let (a, b) = (key(), key());
        let ring = MasterKey::keyring(&b, &[&a]).unwrap();
        let shown = format!("{ring:?}");
        assert!(shown.contains(ring.id()), "{shown}");
        assert!(!shown.contains(&a) && !shown.contains(&b), "{shown}");
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
