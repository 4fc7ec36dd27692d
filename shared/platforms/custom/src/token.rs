//! User tokens of custom channels: `<platform user id>.<issued at>.<base64url HMAC-SHA256>`,
//! the issue time in Unix milliseconds (decimal), the MAC keyed with the channel's
//! `token_secret` over the channel id, the user id and the issue time. Unguessable without the
//! channel's secret, bound to one user of one channel and one issue time, and checked without
//! any lookup.
//!
//! A token expires `token_ttl_seconds` (a channel credential) after its issue time, judged with
//! the channel's current lifetime. It is revoked when its user's or its channel's tokens were
//! revoked at or after its issue time ([`crate::users`]).
//!
//! Tokens issued before issue times existed (`<platform user id>.<base64url HMAC>`, the MAC
//! over the channel id and user id only) are still recognised as [`Verified::issued_at_ms`]
//! `None`: they are expired, and `POST /v1/custom/{channel_id}/token` exchanges one for a
//! current token as long as no revocation of its user or channel happened since.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

fn hmac(secret: &str) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

/// The MAC of a current token.
fn mac(secret: &str, channel_id: &str, platform_user_id: &str, issued_at_ms: i64) -> [u8; 32] {
    let mut m = hmac(secret);
    m.update(b"patchbay-custom-user-token-v2\0");
    m.update(channel_id.as_bytes());
    m.update(b"\0");
    m.update(platform_user_id.as_bytes());
    m.update(b"\0");
    m.update(issued_at_ms.to_string().as_bytes());
    m.finalize().into_bytes().into()
}

/// The MAC of a token without an issue time (before expiry existed).
fn legacy_mac(secret: &str, channel_id: &str, platform_user_id: &str) -> [u8; 32] {
    let mut m = hmac(secret);
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

/// The token of `platform_user_id` on `channel_id`, issued at `issued_at_ms` (Unix ms).
pub fn issue(secret: &str, channel_id: &str, platform_user_id: &str, issued_at_ms: i64) -> String {
    format!(
        "{platform_user_id}.{issued_at_ms}.{}",
        URL_SAFE_NO_PAD.encode(mac(secret, channel_id, platform_user_id, issued_at_ms))
    )
}

/// A token whose MAC is right: whom it names and when it was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified<'t> {
    /// The user's id within the channel.
    pub user: &'t str,
    /// When it was issued (Unix ms); `None` for a token from before issue times.
    pub issued_at_ms: Option<i64>,
}

/// Why a token with the right MAC is not accepted to send as its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Older than the channel's token lifetime, or from before issue times.
    Expired,
    /// Issued at or before a revocation of its user's or its channel's tokens.
    Revoked,
}

impl Verified<'_> {
    /// Whether the token was issued at or before `revoked_at_ms` (a token without an issue
    /// time was issued before any revocation).
    pub fn revoked_by(&self, revoked_at_ms: Option<i64>) -> bool {
        match (self.issued_at_ms, revoked_at_ms) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(issued), Some(revoked)) => issued <= revoked,
        }
    }

    /// Whether the token may send as its user at `now_ms` on a channel whose tokens live
    /// `ttl_seconds`, given the latest revocation of its user's or its channel's tokens.
    /// Revocation is reported before expiry: the app must not just refresh a revoked token.
    pub fn check(
        &self,
        now_ms: i64,
        ttl_seconds: u64,
        revoked_at_ms: Option<i64>,
    ) -> Result<(), Refusal> {
        if self.revoked_by(revoked_at_ms) {
            return Err(Refusal::Revoked);
        }
        let ttl_ms = i64::try_from(ttl_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        match self.issued_at_ms {
            Some(issued) if now_ms < issued.saturating_add(ttl_ms) => Ok(()),
            _ => Err(Refusal::Expired),
        }
    }
}

/// The user and issue time a token names, if it is one of `channel_id`'s (its MAC is right);
/// whether it may still be used is [`Verified::check`]'s question.
pub fn verify<'t>(secret: &str, channel_id: &str, token: &'t str) -> Option<Verified<'t>> {
    let (head, sig) = token.rsplit_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    // `<user>.<issued at>`: the issue time is decimal digits, without a sign or leading zero,
    // so one token has one reading.
    if let Some((user, issued)) = head.rsplit_once('.')
        && valid_user_id(user)
        && (1..=19).contains(&issued.len())
        && issued.bytes().all(|b| b.is_ascii_digit())
        && !issued.starts_with('0')
        && let Ok(issued_at_ms) = issued.parse::<i64>()
        && bool::from(
            mac(secret, channel_id, user, issued_at_ms)
                .as_slice()
                .ct_eq(&sig),
        )
    {
        return Some(Verified {
            user,
            issued_at_ms: Some(issued_at_ms),
        });
    }
    // A token from before issue times: `<user>.<MAC>`.
    if valid_user_id(head)
        && bool::from(legacy_mac(secret, channel_id, head).as_slice().ct_eq(&sig))
    {
        return Some(Verified {
            user: head,
            issued_at_ms: None,
        });
    }
    None
}

/// A token of the format before issue times, for tests of the migration.
#[doc(hidden)]
pub fn issue_legacy(secret: &str, channel_id: &str, platform_user_id: &str) -> String {
    format!(
        "{platform_user_id}.{}",
        URL_SAFE_NO_PAD.encode(legacy_mac(secret, channel_id, platform_user_id))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_767_225_600_000;
    const DAY: u64 = 86_400;

    #[test]
    fn a_token_names_its_user_and_issue_time_on_its_channel_only() {
        let t = issue("s3cret", "ch_1", "cu_42", T);
        let v = verify("s3cret", "ch_1", &t).unwrap();
        assert_eq!(v.user, "cu_42");
        assert_eq!(v.issued_at_ms, Some(T));
        assert_ne!(
            issue("s3cret", "ch_1", "cu_42", T + 1),
            t,
            "bound to the time"
        );
        assert_eq!(verify("s3cret", "ch_2", &t), None, "another channel");
        assert_eq!(verify("other", "ch_1", &t), None, "another secret");
        let forged = t.replacen("cu_42", "cu_43", 1);
        assert_eq!(verify("s3cret", "ch_1", &forged), None, "another user");
        let younger = t.replacen(&T.to_string(), &(T + DAY as i64 * 1000).to_string(), 1);
        assert_eq!(
            verify("s3cret", "ch_1", &younger),
            None,
            "another issue time"
        );
        let padded = t.replacen(&T.to_string(), &format!("0{T}"), 1);
        assert_eq!(verify("s3cret", "ch_1", &padded), None, "one reading only");
        for bad in [
            "",
            ".",
            "cu_42.",
            "cu_42",
            "cu 42.1.abc",
            "cu_42.1.%%%",
            "..x",
        ] {
            assert_eq!(verify("s3cret", "ch_1", bad), None, "{bad:?}");
        }
    }

    #[test]
    fn user_ids_with_dots_and_digits_keep_their_reading() {
        for user in ["ada@example.com", "a.1", "1.2.3", "x.0"] {
            let t = issue("k", "ch_1", user, T);
            assert_eq!(
                verify("k", "ch_1", &t),
                Some(Verified {
                    user,
                    issued_at_ms: Some(T)
                }),
                "{user}"
            );
            let old = issue_legacy("k", "ch_1", user);
            assert_eq!(
                verify("k", "ch_1", &old),
                Some(Verified {
                    user,
                    issued_at_ms: None
                }),
                "{user}"
            );
        }
    }

    #[test]
    fn tokens_expire_after_the_channels_lifetime() {
        let t = issue("k", "ch_1", "u", T);
        let v = verify("k", "ch_1", &t).unwrap();
        assert_eq!(v.check(T, DAY, None), Ok(()));
        assert_eq!(v.check(T + 86_399_999, DAY, None), Ok(()));
        assert_eq!(v.check(T + 86_400_000, DAY, None), Err(Refusal::Expired));
        assert_eq!(
            v.check(T + 86_400_000, 2 * DAY, None),
            Ok(()),
            "lifetime now"
        );
        assert_eq!(v.check(T, u64::MAX, None), Ok(()), "no overflow");
    }

    #[test]
    fn a_revocation_ends_the_tokens_issued_until_then() {
        let t = issue("k", "ch_1", "u", T);
        let v = verify("k", "ch_1", &t).unwrap();
        assert_eq!(v.check(T + 1, DAY, Some(T - 1)), Ok(()), "issued after");
        assert_eq!(v.check(T + 1, DAY, Some(T)), Err(Refusal::Revoked));
        assert_eq!(
            v.check(T + 86_400_000, DAY, Some(T + 5)),
            Err(Refusal::Revoked),
            "revoked, not just expired"
        );
    }

    #[test]
    fn tokens_from_before_issue_times_are_expired_and_revocable() {
        let old = issue_legacy("k", "ch_1", "cu_42");
        let v = verify("k", "ch_1", &old).unwrap();
        assert_eq!(v.issued_at_ms, None);
        assert_eq!(v.check(T, DAY, None), Err(Refusal::Expired));
        assert!(!v.revoked_by(None));
        assert!(v.revoked_by(Some(0)));
        assert_eq!(verify("other", "ch_1", &old), None);
        assert_eq!(verify("k", "ch_2", &old), None);
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
