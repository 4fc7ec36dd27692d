//! Proof that the app's back end vouches for a registration: the header
//! `X-Patchbay-Registration: t=<unix seconds>,v1=<hex HMAC-SHA256>`, the MAC keyed with the
//! channel's `registration_secret` over `<t>.<channel id>.<external id>` (the external id empty
//! when the app lets Patchbay generate one), accepted within [`TOLERANCE_SECONDS`] of the
//! ingress's clock either way.
//!
//! The domain key ships inside apps, so anyone may hold it: it registers new users only. An
//! `external_id` that already has a user is registered again only with this proof, made where
//! the app's users sign in; a channel with `require_signed_registration` wants it for every
//! registration. Several `v1=` values are allowed (one matching is enough), for back ends
//! that roll their secret over.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header's name.
pub const HEADER: &str = "x-patchbay-registration";

/// How far the proof's time may be from the ingress's clock.
pub const TOLERANCE_SECONDS: i64 = 300;

fn mac(secret: &str, t: i64, channel_id: &str, external_id: &str) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(format!("{t}.{channel_id}.{external_id}").as_bytes());
    m.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The header value the app's back end sends to register `external_id` at `t` (Unix seconds).
pub fn sign(secret: &str, t: i64, channel_id: &str, external_id: &str) -> String {
    format!("t={t},v1={}", hex(&mac(secret, t, channel_id, external_id)))
}

/// Why a registration proof is refused (the message tells the app's developer what to fix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofError {
    /// Not `t=<unix seconds>,v1=<64 hex digits>`.
    Malformed,
    /// `t` is more than [`TOLERANCE_SECONDS`] from now.
    Stale,
    /// No `v1` is the MAC of this channel, external id and time.
    Mismatch,
    /// The channel has no `registration_secret` to check it with.
    NoSecret,
}

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProofError::Malformed => {
                "X-Patchbay-Registration must be t=<unix seconds>,v1=<hex HMAC-SHA256>"
            }
            ProofError::Stale => {
                "X-Patchbay-Registration: t is more than 300 seconds from now; sign each registration when it is made"
            }
            ProofError::Mismatch => {
                "X-Patchbay-Registration: v1 is not HMAC-SHA256(registration_secret, \"<t>.<channel_id>.<external_id>\")"
            }
            ProofError::NoSecret => {
                "this channel has no registration_secret, so it cannot check X-Patchbay-Registration"
            }
        })
    }
}

/// Checks `header` for registering `external_id` on `channel_id` at `now` (Unix seconds).
pub fn verify(
    secret: Option<&str>,
    header: &str,
    channel_id: &str,
    external_id: &str,
    now: i64,
) -> Result<(), ProofError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) if t.is_none() && !v.is_empty() && v.len() <= 12 => {
                t = Some(
                    v.bytes()
                        .all(|b| b.is_ascii_digit())
                        .then(|| v.parse::<i64>().ok())
                        .flatten()
                        .ok_or(ProofError::Malformed)?,
                );
            }
            Some(("v1", v)) if v.len() == 64 => sigs.push(decode_hex(v)?),
            // Later schemes are ignored, so back ends can send them alongside.
            Some((k, _)) if k.starts_with('v') && k != "v1" => {}
            _ => return Err(ProofError::Malformed),
        }
    }
    let t = t.ok_or(ProofError::Malformed)?;
    if sigs.is_empty() {
        return Err(ProofError::Malformed);
    }
    let secret = secret.ok_or(ProofError::NoSecret)?;
    if (now - t).abs() > TOLERANCE_SECONDS {
        return Err(ProofError::Stale);
    }
    let expected = mac(secret, t, channel_id, external_id);
    sigs.iter()
        .any(|s| bool::from(expected.as_slice().ct_eq(s)))
        .then_some(())
        .ok_or(ProofError::Mismatch)
}

fn decode_hex(s: &str) -> Result<[u8; 32], ProofError> {
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).map_err(|_| ProofError::Malformed)?;
        *out.get_mut(i).ok_or(ProofError::Malformed)? =
            u8::from_str_radix(pair, 16).map_err(|_| ProofError::Malformed)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600;

    #[test]
    fn a_proof_is_for_one_channel_one_external_id_and_a_few_minutes() {
        let h = sign("rs_secret", NOW, "ch_1", "app-user-1");
        assert!(h.starts_with(&format!("t={NOW},v1=")));
        assert_eq!(
            verify(Some("rs_secret"), &h, "ch_1", "app-user-1", NOW + 299),
            Ok(())
        );
        assert_eq!(
            verify(Some("rs_secret"), &h, "ch_1", "app-user-1", NOW - 300),
            Ok(())
        );
        for (secret, ch, id, now, want) in [
            (
                "rs_secret",
                "ch_1",
                "app-user-1",
                NOW + 301,
                ProofError::Stale,
            ),
            ("rs_secret", "ch_1", "app-user-2", NOW, ProofError::Mismatch),
            ("rs_secret", "ch_2", "app-user-1", NOW, ProofError::Mismatch),
            ("other", "ch_1", "app-user-1", NOW, ProofError::Mismatch),
        ] {
            assert_eq!(
                verify(Some(secret), &h, ch, id, now),
                Err(want),
                "{ch} {id}"
            );
        }
        assert_eq!(
            verify(None, &h, "ch_1", "app-user-1", NOW),
            Err(ProofError::NoSecret)
        );
    }

    #[test]
    fn the_header_is_parsed_strictly() {
        let good = sign("k", NOW, "ch_1", "u");
        let sig = good.split_once("v1=").unwrap().1.to_owned();
        let other = sign("other", NOW, "ch_1", "u");
        let other_sig = other.split_once("v1=").unwrap().1;
        for ok in [
            format!("v1={sig},t={NOW}"),
            format!("t={NOW}, v1={other_sig}, v1={sig}"),
            format!("t={NOW},v2=whatever,v1={sig}"),
        ] {
            assert_eq!(verify(Some("k"), &ok, "ch_1", "u", NOW), Ok(()), "{ok}");
        }
        for bad in [
            String::new(),
            format!("t={NOW}"),
            format!("v1={sig}"),
            format!("t=-{NOW},v1={sig}"),
            format!("t=+{NOW},v1={sig}"),
            format!("t={NOW},t={NOW},v1={sig}"),
            format!("t={NOW},v1={}", &sig[..63]),
            format!("t={NOW},v1={}g", &sig[..63]),
            format!("t={NOW},v1={sig},x=1"),
            format!("t=99999999999999999999,v1={sig}"),
            format!("t={NOW},v1=ä{}", &sig[..62]),
        ] {
            assert_eq!(
                verify(Some("k"), &bad, "ch_1", "u", NOW),
                Err(ProofError::Malformed),
                "{bad}"
            );
        }
    }
}
