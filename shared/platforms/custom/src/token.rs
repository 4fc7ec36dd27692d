//! User tokens of custom channels: `<platform user id>.<base64url HMAC-SHA256>` keyed with the
//! channel's `token_secret` over the channel id and the user id. Unguessable without the
//! channel's secret, bound to one user of one channel, and checked without any lookup; the
//! same registration always yields the same token. Rotating the channel's `token_secret`
//! revokes every token of the channel.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

fn mac(secret: &str, channel_id: &str, platform_user_id: &str) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(b"patchbay-custom-user-token-v1\0");
    m.update(channel_id.as_bytes());
    m.update(b"\0");
    m.update(platform_user_id.as_bytes());
    m.finalize().into_bytes().into()
}

/// Whether `id` can be a custom channel's user id: 1 to 128 characters of `A-Z a-z 0-9 _ - : @ .`.
pub fn valid_user_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '@' | '.'))
}

/// The token of `platform_user_id` on `channel_id`.
pub fn issue(secret: &str, channel_id: &str, platform_user_id: &str) -> String {
    format!(
        "{platform_user_id}.{}",
        URL_SAFE_NO_PAD.encode(mac(secret, channel_id, platform_user_id))
    )
}

/// The user a token names, if it is one of `channel_id`'s.
pub fn verify<'t>(secret: &str, channel_id: &str, token: &'t str) -> Option<&'t str> {
    let (user, sig) = token.rsplit_once('.')?;
    if !valid_user_id(user) {
        return None;
    }
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    let expected = mac(secret, channel_id, user);
    bool::from(expected.as_slice().ct_eq(&sig)).then_some(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_user_on_its_channel_only() {
        let t = issue("s3cret", "ch_1", "cu_42");
        assert_eq!(verify("s3cret", "ch_1", &t), Some("cu_42"));
        assert_eq!(issue("s3cret", "ch_1", "cu_42"), t, "deterministic");
        assert_eq!(verify("s3cret", "ch_2", &t), None, "another channel");
        assert_eq!(verify("other", "ch_1", &t), None, "another secret");
        let forged = t.replacen("cu_42", "cu_43", 1);
        assert_eq!(verify("s3cret", "ch_1", &forged), None, "another user");
        for bad in ["", ".", "cu_42.", "cu_42", "cu 42.abc", "cu_42.%%%"] {
            assert_eq!(verify("s3cret", "ch_1", bad), None, "{bad:?}");
        }
    }

    #[test]
    fn user_ids_are_checked() {
        assert!(valid_user_id("cu_01JD5W2Q8Y3T9K6V1M4N7P0R2S"));
        assert!(valid_user_id("ada@example.com"));
        for bad in ["", "a b", "a*", "a/b", &"x".repeat(129)] {
            assert!(!valid_user_id(bad), "{bad:?}");
        }
    }
}
