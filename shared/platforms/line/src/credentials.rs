//! A LINE channel's credentials, as operators give them to
//! `POST /admin/v1/bots/{id}/channels` (`reference/platforms.md` §6.1, §6.3): the channel
//! secret (the key of every webhook's `x-line-signature`) and a channel access token (the
//! `Authorization: Bearer` of every API call: a long-lived token from the console, or one
//! issued by the token API). Stored sealed; opened by the ingress (signatures, profile
//! lookups) and the sender (replies, pushes).

use patchbay_contract::content::FieldError;
use patchbay_platform::spec::{self, ChannelCredentials};
use serde::{Deserialize, Serialize};

/// One LINE Messaging API channel.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineCredentials {
    /// The channel secret (Basic settings tab of the LINE Developers Console): the HMAC key
    /// of `x-line-signature`.
    pub channel_secret: String,
    /// A channel access token (Messaging API tab), sent as `Authorization: Bearer`.
    pub channel_access_token: String,
}

impl std::fmt::Debug for LineCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineCredentials").finish_non_exhaustive()
    }
}

/// The longest channel secret accepted (LINE's are 32 hex digits).
const SECRET_MAX: usize = 128;
/// The longest access token accepted (long-lived tokens are about 170 characters, JWT-issued
/// ones longer).
const TOKEN_MAX: usize = 2048;

impl ChannelCredentials for LineCredentials {
    /// Checks both are tokens (no spaces) of a plausible length.
    fn validate(&self) -> Result<(), FieldError> {
        spec::tokens(&[
            ("channel_secret", &self.channel_secret),
            ("channel_access_token", &self.channel_access_token),
        ])?;
        if self.channel_secret.len() > SECRET_MAX {
            return Err(FieldError::new(
                "credentials.channel_secret",
                format!("must be the channel secret (at most {SECRET_MAX} characters)"),
            ));
        }
        if self.channel_access_token.len() > TOKEN_MAX {
            return Err(FieldError::new(
                "credentials.channel_access_token",
                format!("must be a channel access token (at most {TOKEN_MAX} characters)"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_platform::spec::{CredentialsError, as_given};
    use serde_json::json;

    fn field_of(given: serde_json::Value) -> FieldError {
        match as_given::<LineCredentials>(given) {
            Err(CredentialsError::Invalid(e)) => e,
            other => panic!("refused expected, got {other:?}"),
        }
    }

    #[test]
    fn line_credentials_are_checked_naming_the_field() {
        let ok = json!({"channel_secret": "8c570fa6dd201bb328f1c1eac23a96d8",
                        "channel_access_token": "AbCdEf0123+/=="});
        assert_eq!(as_given::<LineCredentials>(ok.clone()).unwrap().stored, ok);
        let cases = [
            (
                json!({"channel_secret": "", "channel_access_token": "t"}),
                "credentials.channel_secret",
            ),
            (
                json!({"channel_secret": "a b", "channel_access_token": "t"}),
                "credentials.channel_secret",
            ),
            (
                json!({"channel_secret": "s".repeat(129), "channel_access_token": "t"}),
                "credentials.channel_secret",
            ),
            (
                json!({"channel_secret": "s", "channel_access_token": ""}),
                "credentials.channel_access_token",
            ),
            (
                json!({"channel_secret": "s", "channel_access_token": "t".repeat(2049)}),
                "credentials.channel_access_token",
            ),
        ];
        for (given, field) in cases {
            assert_eq!(field_of(given.clone()).field, field, "{given}");
        }
        assert!(
            field_of(json!({"channel_secret": "s"}))
                .message
                .contains("channel_access_token")
        );
        let unknown = json!({"channel_secret": "s", "channel_access_token": "t",
                             "api_base_url": "http://x"});
        assert!(field_of(unknown).message.contains("unknown field"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = LineCredentials {
            channel_secret: "the-secret".into(),
            channel_access_token: "the-token".into(),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("the-secret") && !shown.contains("the-token"));
    }
}
