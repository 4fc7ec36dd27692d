//! WeChat Official Account message crypto (`reference/platforms.md` §4.1).
//!
//! # Signatures
//!
//! * **Server configuration signature** (every GET verification and every POST): the three strings
//!   `[token, timestamp, nonce]` are sorted lexicographically (byte order), concatenated, hashed with
//!   SHA-1 and rendered as lowercase hex. Compare it with the `signature` query parameter.
//! * **Safe mode `msg_signature`**: the same, over the four strings
//!   `[token, timestamp, nonce, <Encrypt element text>]`.
//!
//! Both are computed by [`signature`] and checked in constant time by [`signature_matches`].
//! Always check `msg_signature` **before** calling [`decrypt`]: the cipher below is unauthenticated
//! CBC, and the signature (which covers the ciphertext and the secret token) is the only integrity
//! protection the protocol has.
//!
//! # Key
//!
//! The 43-character `EncodingAESKey` from the admin console is Base64 without its final `=`:
//! `key = Base64Decode(EncodingAESKey + "=")`, 32 bytes (AES-256); the IV is the first 16 bytes of the
//! key. 43 characters carry 258 bits, so the last character has two trailing bits that are dropped;
//! the official keys do not always have them zero (the sample key ends in `G`), hence the decoder
//! allows non-zero trailing bits. See [`AesKey::from_encoding_aes_key`].
//!
//! # Framing
//!
//! ```text
//! plaintext  = random[16] ‖ u32_be(len(xml)) ‖ xml ‖ app_id
//! padded     = plaintext ‖ [p; p]           p = 32 - len(plaintext) % 32, so 1 ..= 32
//! ciphertext = AES-256-CBC(key, iv = key[..16], padded)   (no further padding)
//! Encrypt    = Base64(ciphertext)           (standard alphabet, padded)
//! ```
//!
//! # Why the PKCS#7 block size is 32, not 16
//!
//! WeChat's reference implementations (`WXBizMsgCrypt`) pad with PKCS#7 to a **32-byte** block, not to
//! AES's 16-byte block. The pad is therefore 1..=32 bytes, and a full 32-byte pad block is appended when
//! the plaintext is already aligned. A generic AES PKCS#7 unpadder (block size 16) happens to work
//! whenever the pad is 16 or less – which includes several of the official samples – but rejects
//! every message whose pad byte is 17..=32 (about half of real traffic). So the padding here is done
//! by hand, and the cipher itself runs with no padding of its own.

use std::fmt;

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use cbc::cipher::array::Array;
use cbc::cipher::consts::U16;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use sha1::{Digest, Sha1};
use subtle::{Choice, ConstantTimeEq, ConstantTimeGreater, ConstantTimeLess};

/// The PKCS#7 block size WeChat uses (twice the AES block size).
pub const PAD_BLOCK: usize = 32;

/// Length of an `EncodingAESKey` in characters.
pub const ENCODING_AES_KEY_LEN: usize = 43;

/// Length of the random prefix of every plaintext.
const RANDOM_LEN: usize = 16;

/// Length of the big-endian XML length field.
const LEN_FIELD: usize = 4;

/// AES block size.
const AES_BLOCK: usize = 16;

/// Base64 decoder for `EncodingAESKey + "="`: standard alphabet, canonical padding, but tolerant of
/// non-zero trailing bits in the last character (the official sample key has them).
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

type Aes256CbcEnc = cbc::Encryptor<Aes256>;
type Aes256CbcDec = cbc::Decryptor<Aes256>;

/// Errors from key parsing and message decryption.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The `EncodingAESKey` is not 43 Base64 characters decoding to 32 bytes.
    #[error("invalid EncodingAESKey: {0}")]
    InvalidKey(String),
    /// The `Encrypt` text is not valid Base64, not whole AES blocks, badly padded or badly framed.
    #[error("malformed encrypted message: {0}")]
    Malformed(String),
    /// The message decrypted and is well formed, but it was encrypted for another AppID.
    #[error("AppID mismatch: message is for {found:?}, expected {expected:?}")]
    AppIdMismatch {
        /// The AppID found at the end of the plaintext (lossily decoded as UTF-8).
        found: String,
        /// The AppID the caller expected.
        expected: String,
    },
}

/// The AES-256 key derived from an `EncodingAESKey`. The IV is its first 16 bytes.
///
/// `Debug` never prints the key material.
#[derive(Clone)]
pub struct AesKey {
    key: [u8; 32],
}

impl AesKey {
    /// Derives the key from the 43-character `EncodingAESKey` of the admin console:
    /// `Base64Decode(EncodingAESKey + "=")`, which must yield exactly 32 bytes.
    /// Surrounding ASCII whitespace (a pasted key) is ignored.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] if the key is not 43 characters, is not Base64, or does not decode
    /// to 32 bytes. The message never contains the key itself.
    pub fn from_encoding_aes_key(s: &str) -> Result<AesKey, CryptoError> {
        let s = s.trim_ascii();
        let chars = s.chars().count();
        if chars != ENCODING_AES_KEY_LEN {
            return Err(CryptoError::InvalidKey(format!(
                "expected {ENCODING_AES_KEY_LEN} characters, got {chars}"
            )));
        }
        let mut padded = String::with_capacity(ENCODING_AES_KEY_LEN + 1);
        padded.push_str(s);
        padded.push('=');
        let bytes = KEY_ENGINE
            .decode(padded.as_bytes())
            .map_err(|e| CryptoError::InvalidKey(format!("not valid Base64: {e}")))?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            CryptoError::InvalidKey(format!("decodes to {} bytes, expected 32", bytes.len()))
        })?;
        Ok(AesKey { key })
    }

    /// The CBC IV: the first 16 bytes of the key.
    fn iv(&self) -> [u8; AES_BLOCK] {
        let mut iv = [0u8; AES_BLOCK];
        iv.copy_from_slice(&self.key[..AES_BLOCK]);
        iv
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

/// SHA-1 (lowercase hex) of the lexicographically sorted concatenation of `parts`.
///
/// `signature(&[token, timestamp, nonce])` is the server-configuration `signature`;
/// `signature(&[token, timestamp, nonce, encrypt])` is safe mode's `msg_signature`.
/// The order of `parts` does not matter.
#[must_use]
pub fn signature(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    for part in sorted {
        hasher.update(part.as_bytes());
    }
    to_hex(&hasher.finalize())
}

/// Whether `expected_hex` (as received, either letter case) equals [`signature`] of `parts`.
/// The comparison is constant time in the content of the signatures.
#[must_use]
pub fn signature_matches(expected_hex: &str, parts: &[&str]) -> bool {
    let expected = expected_hex.trim_ascii().to_ascii_lowercase();
    let actual = signature(parts);
    bool::from(expected.as_bytes().ct_eq(actual.as_bytes()))
}

/// Encrypts `xml` for `app_id`, returning the Base64 text of the `Encrypt` element.
///
/// `random` is the 16-byte random prefix; pass fresh random bytes for every message (it only has to
/// be unpredictable, it is discarded by the receiver).
///
/// An XML body longer than `u32::MAX` bytes cannot be framed; its length field saturates and the
/// result will not decrypt (WeChat's own limits are far below that).
#[must_use]
pub fn encrypt(key: &AesKey, app_id: &str, random: [u8; 16], xml: &str) -> String {
    let xml_len = u32::try_from(xml.len()).unwrap_or(u32::MAX);
    let unpadded = RANDOM_LEN + LEN_FIELD + xml.len() + app_id.len();
    let pad = PAD_BLOCK - unpadded % PAD_BLOCK;
    let mut buf = Vec::with_capacity(unpadded + pad);
    buf.extend_from_slice(&random);
    buf.extend_from_slice(&xml_len.to_be_bytes());
    buf.extend_from_slice(xml.as_bytes());
    buf.extend_from_slice(app_id.as_bytes());
    // `pad` is 1..=32, so it fits a byte.
    let pad_byte = u8::try_from(pad).unwrap_or(u8::MAX);
    buf.resize(unpadded + pad, pad_byte);

    let iv = key.iv();
    let mut enc = Aes256CbcEnc::new(&key.key.into(), &iv.into());
    // The buffer is a multiple of 32 bytes, so there is no partial tail block.
    let (blocks, _tail) = Array::<u8, U16>::slice_as_chunks_mut(&mut buf);
    enc.encrypt_blocks(blocks);
    STANDARD.encode(&buf)
}

/// Decrypts the Base64 text of an `Encrypt` element and returns the XML, checking that the message was
/// encrypted for `app_id`.
///
/// Verify `msg_signature` with [`signature_matches`] first; this function does not authenticate.
///
/// # Errors
/// * [`CryptoError::Malformed`]: not Base64; empty or not a multiple of the AES block size; invalid
///   32-byte PKCS#7 padding (one message for every padding fault, checked in constant time); too short
///   for the framing; the length field runs past the data; the XML is not UTF-8.
/// * [`CryptoError::AppIdMismatch`]: the trailing AppID is not `app_id`.
pub fn decrypt(key: &AesKey, app_id: &str, encrypt_b64: &str) -> Result<String, CryptoError> {
    let mut buf = STANDARD
        .decode(encrypt_b64.trim_ascii().as_bytes())
        .map_err(|e| CryptoError::Malformed(format!("Encrypt is not valid Base64: {e}")))?;
    if buf.is_empty() || buf.len() % AES_BLOCK != 0 {
        return Err(CryptoError::Malformed(format!(
            "ciphertext length {} is not a positive multiple of {AES_BLOCK}",
            buf.len()
        )));
    }

    let iv = key.iv();
    let mut dec = Aes256CbcDec::new(&key.key.into(), &iv.into());
    let (blocks, _tail) = Array::<u8, U16>::slice_as_chunks_mut(&mut buf);
    dec.decrypt_blocks(blocks);

    let pad = checked_pad_len(&buf)
        .ok_or_else(|| CryptoError::Malformed("invalid PKCS#7 padding".to_owned()))?;
    let content = buf.get(..buf.len().saturating_sub(pad)).unwrap_or_default();

    let header = RANDOM_LEN + LEN_FIELD;
    let len_field: [u8; LEN_FIELD] = content
        .get(RANDOM_LEN..header)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| {
            CryptoError::Malformed(format!(
                "plaintext of {} bytes is shorter than the {header}-byte header",
                content.len()
            ))
        })?;
    let xml_len = u32::from_be_bytes(len_field);
    let body = content.get(header..).unwrap_or_default();
    let xml_end = usize::try_from(xml_len)
        .ok()
        .filter(|&n| n <= body.len())
        .ok_or_else(|| {
            CryptoError::Malformed(format!(
                "length field {xml_len} exceeds the {} bytes of message data",
                body.len()
            ))
        })?;
    let (xml, found_app_id) = body.split_at(xml_end);

    if found_app_id != app_id.as_bytes() {
        return Err(CryptoError::AppIdMismatch {
            found: String::from_utf8_lossy(found_app_id).into_owned(),
            expected: app_id.to_owned(),
        });
    }
    String::from_utf8(xml.to_vec())
        .map_err(|e| CryptoError::Malformed(format!("decrypted XML is not UTF-8: {e}")))
}

/// Checks 32-byte-block PKCS#7 padding on `buf` in constant time (over the last 32 bytes) and
/// returns the pad length 1..=32, or `None` for any fault (pad byte 0, over 32, longer than the
/// buffer, or pad bytes not all equal).
fn checked_pad_len(buf: &[u8]) -> Option<usize> {
    let last = *buf.last()?;
    // Lengths are capped at 33 so they fit a byte; the cap does not change the comparisons.
    let len = u8::try_from(buf.len().min(PAD_BLOCK + 1)).unwrap_or(u8::MAX);
    let block = u8::try_from(PAD_BLOCK).unwrap_or(u8::MAX);
    let mut ok: Choice = !last.ct_eq(&0) & !last.ct_gt(&block) & !last.ct_gt(&len);
    for (i, &byte) in buf.iter().rev().take(PAD_BLOCK).enumerate() {
        let i = u8::try_from(i).unwrap_or(u8::MAX);
        let in_pad = i.ct_lt(&last);
        ok &= !in_pad | byte.ct_eq(&last);
    }
    bool::from(ok).then_some(usize::from(last))
}

/// The passive-reply wrapper for safe mode: `reply_xml` encrypted for `app_id`, signed with `token`.
///
/// ```text
/// <xml><Encrypt><![CDATA[…]]></Encrypt><MsgSignature><![CDATA[…]]></MsgSignature>
/// <TimeStamp>…</TimeStamp><Nonce><![CDATA[…]]></Nonce></xml>
/// ```
/// (on one line), where `MsgSignature` = [`signature`]`(&[token, timestamp, nonce, encrypt])`.
#[must_use]
pub fn encrypted_reply(
    key: &AesKey,
    app_id: &str,
    token: &str,
    timestamp: &str,
    nonce: &str,
    random: [u8; 16],
    reply_xml: &str,
) -> String {
    let encrypted = encrypt(key, app_id, random, reply_xml);
    let msg_signature = signature(&[token, timestamp, nonce, &encrypted]);
    format!(
        "<xml><Encrypt>{}</Encrypt><MsgSignature>{}</MsgSignature>\
         <TimeStamp>{}</TimeStamp><Nonce>{}</Nonce></xml>",
        cdata(&encrypted),
        cdata(&msg_signature),
        escape_text(timestamp),
        cdata(nonce),
    )
}

/// Wraps `s` in a CDATA section, splitting any `]]>` inside it so the section cannot be closed early.
fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

/// Escapes XML text content.
fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

/// Lowercase hex of `bytes`.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbc::cipher::block_padding::Pkcs7;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const APP_ID_A: &str = "wxb11529c136998cb6";
    const RANDOM_A: [u8; 16] = *b"aaaabbbbccccdddd";
    const MSG_A: &str = "我是中文abcd123";
    const ENCRYPT_A: &str =
        "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg==";

    const TOKEN_B: &str = "spamtest";
    const TIMESTAMP_B: &str = "1409735669";
    const NONCE_B: &str = "1320562132";
    const APP_ID_B: &str = "wx2c2769f8efd9abc2";
    const ENCRYPT_B: &str = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";
    const MSG_SIGNATURE_B: &str = "5d197aaffba7e9b25a30732f161a50dee96bd5fa";

    fn key() -> AesKey {
        AesKey::from_encoding_aes_key(KEY).expect("official sample key decodes")
    }

    /// AES-256-CBC decryption with no unpadding at all, to inspect the raw padded plaintext.
    fn raw_decrypt(key: &AesKey, encrypt_b64: &str) -> Vec<u8> {
        let mut buf = STANDARD.decode(encrypt_b64).expect("base64");
        assert_eq!(buf.len() % AES_BLOCK, 0);
        let iv = key.iv();
        let mut dec = Aes256CbcDec::new(&key.key.into(), &iv.into());
        let (blocks, tail) = Array::<u8, U16>::slice_as_chunks_mut(&mut buf);
        assert!(tail.is_empty());
        dec.decrypt_blocks(blocks);
        buf
    }

    /// What a generic decrypter with AES's own 16-byte PKCS#7 would do.
    fn decrypt_with_16_byte_pkcs7(key: &AesKey, encrypt_b64: &str) -> bool {
        let ct = STANDARD.decode(encrypt_b64).expect("base64");
        let iv = key.iv();
        Aes256CbcDec::new(&key.key.into(), &iv.into())
            .decrypt_padded_vec::<Pkcs7>(&ct)
            .is_ok()
    }

    fn pad_for(xml_len: usize, app_id: &str) -> usize {
        let total = RANDOM_LEN + LEN_FIELD + xml_len + app_id.len();
        PAD_BLOCK - total % PAD_BLOCK
    }

    #[test]
    fn key_derivation() {
        let k = key();
        assert_eq!(k.key.len(), 32);
        assert_eq!(&k.iv()[..], &k.key[..16]);
        // Leading/trailing whitespace from a pasted key is ignored.
        let pasted = AesKey::from_encoding_aes_key(&format!("  {KEY}\n")).expect("trimmed");
        assert_eq!(pasted.key, k.key);
    }

    #[test]
    fn debug_does_not_leak_key() {
        let k = key();
        let shown = format!("{k:?}");
        assert_eq!(shown, "AesKey(<redacted>)");
        assert!(!shown.contains("abcdefg"));
    }

    #[test]
    fn vector_a_java_sample() {
        let k = key();
        assert_eq!(encrypt(&k, APP_ID_A, RANDOM_A, MSG_A), ENCRYPT_A);
        assert_eq!(decrypt(&k, APP_ID_A, ENCRYPT_A).expect("decrypts"), MSG_A);
    }

    #[test]
    fn vector_b_python_sample() {
        let k = key();
        assert_eq!(
            signature(&[TOKEN_B, TIMESTAMP_B, NONCE_B, ENCRYPT_B]),
            MSG_SIGNATURE_B
        );
        assert!(signature_matches(
            MSG_SIGNATURE_B,
            &[TOKEN_B, TIMESTAMP_B, NONCE_B, ENCRYPT_B]
        ));

        let raw = raw_decrypt(&k, ENCRYPT_B);
        assert_eq!(raw.last().copied(), Some(2), "vector B has pad length 2");

        let xml = decrypt(&k, APP_ID_B, ENCRYPT_B).expect("decrypts");
        assert!(xml.contains("oyORnuP8q7ou2gfYjqLzSIWZf0rs"), "{xml}");
        assert!(xml.contains("gh_10f6c3c3ac5a"), "{xml}");
        assert!(xml.contains("<MsgType><![CDATA[text]]></MsgType>"), "{xml}");

        let err = decrypt(&k, APP_ID_A, ENCRYPT_B).expect_err("wrong AppID");
        assert_eq!(
            err,
            CryptoError::AppIdMismatch {
                found: APP_ID_B.to_owned(),
                expected: APP_ID_A.to_owned(),
            }
        );
        let shown = err.to_string();
        assert!(
            shown.contains(APP_ID_B) && shown.contains(APP_ID_A),
            "{shown}"
        );
    }

    #[test]
    fn pad_over_16_round_trips() {
        let k = key();
        // 16 + 4 + 38 + 18 = 76 bytes of plaintext → pad 20 → 96 bytes of ciphertext.
        let xml = "<xml><Content>pad20!!!</Content></xml>";
        assert_eq!(xml.len(), 38);
        let pad = pad_for(xml.len(), APP_ID_A);
        assert_eq!(pad, 20);
        assert!(pad > 16 && pad <= 32);

        let enc = encrypt(&k, APP_ID_A, [7u8; 16], xml);
        let ct_len = STANDARD.decode(&enc).expect("base64").len();
        assert_eq!(ct_len, 96);
        assert_eq!(ct_len, 16 + 4 + 38 + 18 + 20);

        let raw = raw_decrypt(&k, &enc);
        assert_eq!(raw.last().copied(), Some(20));
        assert!(raw[raw.len() - 20..].iter().all(|&b| b == 20));
        // The byte before the pad is the end of the AppID, not pad.
        assert_eq!(raw[raw.len() - 21], b'6');
        // A decrypter unpadding to AES's 16-byte block rejects it (pad byte 20 > 16) ...
        assert!(!decrypt_with_16_byte_pkcs7(&k, &enc));
        // ... while it accepts the official vector B, whose pad is only 2.
        assert!(decrypt_with_16_byte_pkcs7(&k, ENCRYPT_B));

        assert_eq!(decrypt(&k, APP_ID_A, &enc).expect("round trip"), xml);
    }

    #[test]
    fn aligned_plaintext_gets_full_pad_block() {
        let k = key();
        // 16 + 4 + 26 + 18 = 64 bytes, already aligned → a whole 32-byte pad block.
        let xml = "<xml><A>aligned!</A></xml>";
        assert_eq!(xml.len(), 26);
        assert_eq!(pad_for(xml.len(), APP_ID_A), 32);

        let enc = encrypt(&k, APP_ID_A, [1u8; 16], xml);
        assert_eq!(STANDARD.decode(&enc).expect("base64").len(), 64 + 32);
        let raw = raw_decrypt(&k, &enc);
        assert!(raw[raw.len() - 32..].iter().all(|&b| b == 32));
        assert!(!decrypt_with_16_byte_pkcs7(&k, &enc));
        assert_eq!(decrypt(&k, APP_ID_A, &enc).expect("round trip"), xml);
    }

    #[test]
    fn every_pad_length_round_trips() {
        let k = key();
        let mut seen = [false; 33];
        for n in 0..64 {
            let xml = "x".repeat(n);
            let pad = pad_for(n, APP_ID_A);
            seen[pad] = true;
            let enc = encrypt(&k, APP_ID_A, [n as u8; 16], &xml);
            assert_eq!(raw_decrypt(&k, &enc).last().copied(), Some(pad as u8));
            assert_eq!(decrypt(&k, APP_ID_A, &enc).expect("round trip"), xml);
        }
        assert!(seen[1..].iter().all(|&s| s), "pads 1..=32 all covered");
        assert!(!seen[0]);
    }

    #[test]
    fn server_signature() {
        let parts = [TOKEN_B, TIMESTAMP_B, NONCE_B];
        let got = signature(&parts);

        // Independently: hand-sorted concatenation, hashed with sha1 directly.
        let digest = Sha1::digest(b"13205621321409735669spamtest");
        let expected: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, expected);
        assert_eq!(got.len(), 40);

        // Order independence.
        assert_eq!(signature(&[NONCE_B, TOKEN_B, TIMESTAMP_B]), got);
        assert_eq!(signature(&[TIMESTAMP_B, NONCE_B, TOKEN_B]), got);

        assert!(signature_matches(&got, &parts));
        assert!(signature_matches(&got.to_ascii_uppercase(), &parts));
        assert!(signature_matches(
            &got.to_ascii_uppercase(),
            &[NONCE_B, TIMESTAMP_B, TOKEN_B]
        ));
        let other = signature(&["spamtest", "1409735669", "1320562133"]);
        assert_ne!(other, got);
        assert!(!signature_matches(&other, &parts));
        assert!(!signature_matches("", &parts));
        assert!(!signature_matches(&got[..39], &parts));
    }

    #[test]
    fn rejects_bad_base64() {
        let err = decrypt(&key(), APP_ID_A, "not base64 at all!").expect_err("bad base64");
        assert!(matches!(err, CryptoError::Malformed(_)), "{err:?}");
        let err = decrypt(&key(), APP_ID_A, "").expect_err("empty");
        assert!(matches!(err, CryptoError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn rejects_truncated_ciphertext() {
        let k = key();
        let ct = STANDARD.decode(ENCRYPT_A).expect("base64");
        // Not a multiple of 16.
        let short = STANDARD.encode(&ct[..ct.len() - 1]);
        let err = decrypt(&k, APP_ID_A, &short).expect_err("partial block");
        assert!(matches!(err, CryptoError::Malformed(_)), "{err:?}");
        // Every whole-block truncation fails cleanly (padding or framing), never panics.
        for blocks in 1..ct.len() / 16 {
            let cut = STANDARD.encode(&ct[..blocks * 16]);
            assert!(decrypt(&k, APP_ID_A, &cut).is_err(), "{blocks} blocks");
        }
    }

    #[test]
    fn rejects_tampered_last_block() {
        let k = key();
        let ct = STANDARD.decode(ENCRYPT_A).expect("base64");
        for i in 0..=255u8 {
            let mut tampered = ct.clone();
            let n = tampered.len();
            tampered[n - 1] ^= i | 1;
            // Flipping the penultimate block's bytes flips the matching plaintext bytes of the last.
            tampered[n - 17] ^= i;
            let _ = decrypt(&k, APP_ID_A, &STANDARD.encode(&tampered));
        }
        // Corrupting the last ciphertext block garbles the pad byte: a padding error, not a panic.
        let mut tampered = ct.clone();
        let n = tampered.len();
        tampered[n - 5] ^= 0xff;
        let err = decrypt(&k, APP_ID_A, &STANDARD.encode(&tampered)).expect_err("tampered");
        assert!(matches!(err, CryptoError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn padding_checks() {
        let mut buf = vec![0u8; 64];
        assert_eq!(checked_pad_len(&buf), None, "pad byte 0");
        buf[63] = 33;
        assert_eq!(checked_pad_len(&buf), None, "pad byte over 32");
        buf[63] = 3;
        assert_eq!(checked_pad_len(&buf), None, "pad bytes differ");
        buf[62] = 3;
        buf[61] = 3;
        assert_eq!(checked_pad_len(&buf), Some(3));
        let full = [32u8; 32];
        assert_eq!(checked_pad_len(&full), Some(32));
        let short = [20u8; 16];
        assert_eq!(checked_pad_len(&short), None, "pad longer than the buffer");
        assert_eq!(checked_pad_len(&[]), None);
    }

    #[test]
    fn rejects_bad_framing() {
        let k = key();
        // Hand-framed plaintexts, encrypted raw, to reach the checks after the padding.
        let seal = |plain: &[u8]| -> String {
            let mut buf = plain.to_vec();
            let pad = PAD_BLOCK - buf.len() % PAD_BLOCK;
            buf.resize(buf.len() + pad, pad as u8);
            let iv = k.iv();
            let mut enc = Aes256CbcEnc::new(&k.key.into(), &iv.into());
            let (blocks, _) = Array::<u8, U16>::slice_as_chunks_mut(&mut buf);
            enc.encrypt_blocks(blocks);
            STANDARD.encode(&buf)
        };

        // Too short for random + length field.
        let err = decrypt(&k, APP_ID_A, &seal(&[0u8; 10])).expect_err("short");
        assert!(matches!(err, CryptoError::Malformed(_)), "{err:?}");

        // Length field past the end of the data.
        let mut plain = vec![0u8; 16];
        plain.extend_from_slice(&1000u32.to_be_bytes());
        plain.extend_from_slice(b"<xml/>");
        let err = decrypt(&k, APP_ID_A, &seal(&plain)).expect_err("length");
        assert!(
            matches!(err, CryptoError::Malformed(ref m) if m.contains("1000")),
            "{err:?}"
        );
        let mut plain = vec![0u8; 16];
        plain.extend_from_slice(&u32::MAX.to_be_bytes());
        let err = decrypt(&k, APP_ID_A, &seal(&plain)).expect_err("length");
        assert!(matches!(err, CryptoError::Malformed(_)), "{err:?}");

        // Invalid UTF-8 in the XML.
        let mut plain = vec![0u8; 16];
        plain.extend_from_slice(&2u32.to_be_bytes());
        plain.extend_from_slice(&[0xff, 0xfe]);
        plain.extend_from_slice(APP_ID_A.as_bytes());
        let err = decrypt(&k, APP_ID_A, &seal(&plain)).expect_err("utf-8");
        assert!(
            matches!(err, CryptoError::Malformed(ref m) if m.contains("UTF-8")),
            "{err:?}"
        );

        // Missing AppID.
        let mut plain = vec![0u8; 16];
        plain.extend_from_slice(&6u32.to_be_bytes());
        plain.extend_from_slice(b"<xml/>");
        let err = decrypt(&k, APP_ID_A, &seal(&plain)).expect_err("no appid");
        assert_eq!(
            err,
            CryptoError::AppIdMismatch {
                found: String::new(),
                expected: APP_ID_A.to_owned()
            }
        );
    }

    #[test]
    fn rejects_wrong_key_length() {
        for bad in [
            "",
            "abc",
            &KEY[..42],
            &format!("{KEY}H"),
            &format!("{KEY}="),
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDE==",
        ] {
            let err = AesKey::from_encoding_aes_key(bad).expect_err(bad);
            assert!(matches!(err, CryptoError::InvalidKey(_)), "{bad}: {err:?}");
        }
        // Right length, but not Base64.
        let err = AesKey::from_encoding_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDE!G")
            .expect_err("bad char");
        assert!(matches!(err, CryptoError::InvalidKey(_)), "{err:?}");
        // Error messages never echo the key.
        let err = AesKey::from_encoding_aes_key(&KEY[..42]).expect_err("short");
        assert!(!err.to_string().contains("abcdef"), "{err}");
    }

    #[test]
    fn encrypted_reply_wrapper() {
        let k = key();
        let reply = "<xml><ToUserName><![CDATA[oUser]]></ToUserName><Content><![CDATA[hi]]></Content></xml>";
        let out = encrypted_reply(
            &k,
            APP_ID_B,
            TOKEN_B,
            TIMESTAMP_B,
            NONCE_B,
            [9u8; 16],
            reply,
        );
        assert!(out.starts_with("<xml><Encrypt><![CDATA["), "{out}");

        let doc = roxmltree::Document::parse(&out).expect("well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "xml");
        let text = |name: &str| -> String {
            root.children()
                .find(|n| n.has_tag_name(name))
                .and_then(|n| n.text())
                .unwrap_or_else(|| panic!("missing <{name}>"))
                .to_owned()
        };
        let encrypted = text("Encrypt");
        let msg_signature = text("MsgSignature");
        assert_eq!(text("TimeStamp"), TIMESTAMP_B);
        assert_eq!(text("Nonce"), NONCE_B);

        assert_eq!(
            msg_signature,
            signature(&[TOKEN_B, TIMESTAMP_B, NONCE_B, &encrypted])
        );
        assert!(signature_matches(
            &msg_signature,
            &[TOKEN_B, TIMESTAMP_B, NONCE_B, &encrypted]
        ));
        assert_eq!(encrypted, encrypt(&k, APP_ID_B, [9u8; 16], reply));
        assert_eq!(decrypt(&k, APP_ID_B, &encrypted).expect("decrypts"), reply);
    }

    #[test]
    fn reply_wrapper_escapes_hostile_nonce() {
        let k = key();
        let nonce = "1]]><evil/>";
        let out = encrypted_reply(&k, APP_ID_B, TOKEN_B, "1&2", nonce, [0u8; 16], "<xml/>");
        let doc = roxmltree::Document::parse(&out).expect("still well-formed");
        let root = doc.root_element();
        let nonce_node = root
            .children()
            .find(|n| n.has_tag_name("Nonce"))
            .expect("Nonce");
        let nonce_text: String = nonce_node
            .descendants()
            .filter(roxmltree::Node::is_text)
            .filter_map(|n| n.text())
            .collect();
        assert_eq!(nonce_text, nonce);
        assert!(root.descendants().all(|n| !n.has_tag_name("evil")));
    }
}
