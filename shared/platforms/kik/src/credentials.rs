//! A Kik bot's channel credentials, as operators give them to
//! `POST /admin/v1/bots/{id}/channels` (`reference/platforms.md` §5.1): the bot's username and
//! its API key. Every API call authenticates with HTTP Basic (`username:api_key`), and Kik
//! signs every webhook with the API key (`X-Kik-Signature`) and names the bot in
//! `X-Kik-Username`. Stored sealed; opened by the ingress (signatures, profile lookups) and the
//! sender (messages, the bot's configuration).

use patchbay_contract::content::FieldError;
use patchbay_platform::spec::{self, ChannelCredentials};
use serde::{Deserialize, Serialize};

/// One Kik bot.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KikCredentials {
    /// The bot's username, as `X-Kik-Username` names it: 2 to 32 letters, digits, `.` or `_`.
    pub username: String,
    /// The API key dev.kik.com showed for the bot (a UUID): the Basic auth password and the
    /// key of every webhook's `X-Kik-Signature`.
    pub api_key: String,
}

impl std::fmt::Debug for KikCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KikCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The longest username accepted.
const USERNAME_MAX: usize = 32;
/// The longest API key accepted.
const API_KEY_MAX: usize = 128;

impl ChannelCredentials for KikCredentials {
    /// Checks the forms Kik gives: a username of letters, digits, `.` and `_`, and an API key
    /// without spaces (HTTP Basic cannot carry a `:` in the username either).
    fn validate(&self) -> Result<(), FieldError> {
        let username_ok = (2..=USERNAME_MAX).contains(&self.username.len())
            && self
                .username
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
        if !username_ok {
            return Err(FieldError::new(
                "credentials.username",
                format!(
                    "must be the bot's Kik username: 2 to {USERNAME_MAX} letters, digits, '.' or '_'"
                ),
            ));
        }
        spec::tokens(&[("api_key", &self.api_key)])?;
        if self.api_key.len() > API_KEY_MAX {
            return Err(FieldError::new(
                "credentials.api_key",
                format!("must be the bot's API key (at most {API_KEY_MAX} characters)"),
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
        match as_given::<KikCredentials>(given) {
            Err(CredentialsError::Invalid(e)) => e,
            other => panic!("refused expected, got {other:?}"),
        }
    }

    #[test]
    fn kik_credentials_are_checked_naming_the_field() {
        let ok = json!({"username": "patchbay.bot_1", "api_key": "7b939d69-e840-4d22-aab8-4188c2198f8a"});
        assert_eq!(as_given::<KikCredentials>(ok.clone()).unwrap().stored, ok);

        let cases = [
            (
                json!({"username": "a", "api_key": "k"}),
                "credentials.username",
            ),
            (
                json!({"username": "has space", "api_key": "k"}),
                "credentials.username",
            ),
            (
                json!({"username": "a:b", "api_key": "k"}),
                "credentials.username",
            ),
            (
                json!({"username": "x".repeat(33), "api_key": "k"}),
                "credentials.username",
            ),
            (
                json!({"username": "bot", "api_key": ""}),
                "credentials.api_key",
            ),
            (
                json!({"username": "bot", "api_key": "a b"}),
                "credentials.api_key",
            ),
            (
                json!({"username": "bot", "api_key": "k".repeat(129)}),
                "credentials.api_key",
            ),
        ];
        for (given, field) in cases {
            assert_eq!(field_of(given.clone()).field, field, "{given}");
        }
        assert!(
            field_of(json!({"username": "bot"}))
                .message
                .contains("api_key")
        );
        let unknown = json!({"username": "bot", "api_key": "k", "api_base_url": "http://x"});
        assert!(field_of(unknown).message.contains("unknown field"));
    }

    #[test]
    fn the_api_key_stays_out_of_debug_output() {
        let c = KikCredentials {
            username: "bot".into(),
            api_key: "secret-key".into(),
        };
        assert!(!format!("{c:?}").contains("secret-key"));
    }
}
