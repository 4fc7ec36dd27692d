//! A Viber bot's channel credentials, as operators give them to
//! `POST /admin/v1/bots/{id}/channels` (`reference/platforms.md` §7.1): the bot's auth token,
//! and optionally the sender name and avatar its messages show. Every API call carries the
//! token in `X-Viber-Auth-Token`, and Viber signs every callback with it
//! (`X-Viber-Content-Signature`). Stored sealed; opened by the ingress (signatures, profile
//! lookups) and the sender (messages, the webhook).

use patchbay_contract::content::FieldError;
use patchbay_platform::spec::{self, ChannelCredentials};
use serde::{Deserialize, Serialize};

/// One Viber bot.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViberCredentials {
    /// The bot's auth token (shown in the bot's "edit info" screen or by its partner): the
    /// `X-Viber-Auth-Token` of every call and the key of every callback's signature.
    pub auth_token: String,
    /// The sender name every message shows (at most 28 characters); without it, the Patchbay
    /// bot's name (cut to 28 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_name: Option<String>,
    /// The sender avatar every message shows (an `https` URL of a picture of at most 100 KB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_avatar: Option<String>,
}

impl std::fmt::Debug for ViberCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViberCredentials")
            .field("sender_name", &self.sender_name)
            .field("sender_avatar", &self.sender_avatar)
            .finish_non_exhaustive()
    }
}

/// The longest sender name Viber shows.
pub const SENDER_NAME_MAX: usize = 28;
/// The longest auth token accepted.
const TOKEN_MAX: usize = 256;

impl ChannelCredentials for ViberCredentials {
    /// Checks the token's form, the sender name's length and the avatar's URL.
    fn validate(&self) -> Result<(), FieldError> {
        spec::tokens(&[("auth_token", &self.auth_token)])?;
        if self.auth_token.len() > TOKEN_MAX {
            return Err(FieldError::new(
                "credentials.auth_token",
                format!("must be the bot's auth token (at most {TOKEN_MAX} characters)"),
            ));
        }
        if let Some(name) = &self.sender_name {
            let chars = name.chars().count();
            if name.trim().is_empty() || chars > SENDER_NAME_MAX {
                return Err(FieldError::new(
                    "credentials.sender_name",
                    format!("must be 1 to {SENDER_NAME_MAX} characters (Viber's limit)"),
                ));
            }
        }
        if let Some(avatar) = &self.sender_avatar
            && !(avatar.starts_with("https://") || avatar.starts_with("http://"))
        {
            return Err(FieldError::new(
                "credentials.sender_avatar",
                "must be the URL of a picture (at most 100 KB)",
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
        match as_given::<ViberCredentials>(given) {
            Err(CredentialsError::Invalid(e)) => e,
            other => panic!("refused expected, got {other:?}"),
        }
    }

    #[test]
    fn viber_credentials_are_checked_naming_the_field() {
        let token = "445da6az1s345z78-dazcczb2542zv51a-e0vc5fva17480im9";
        for ok in [
            json!({"auth_token": token}),
            json!({"auth_token": token, "sender_name": "Shop", "sender_avatar": "https://cdn.example/a.jpg"}),
        ] {
            assert_eq!(as_given::<ViberCredentials>(ok.clone()).unwrap().stored, ok);
        }
        let cases = [
            (json!({"auth_token": ""}), "credentials.auth_token"),
            (json!({"auth_token": "a b"}), "credentials.auth_token"),
            (
                json!({"auth_token": "k".repeat(257)}),
                "credentials.auth_token",
            ),
            (
                json!({"auth_token": token, "sender_name": "x".repeat(29)}),
                "credentials.sender_name",
            ),
            (
                json!({"auth_token": token, "sender_name": " "}),
                "credentials.sender_name",
            ),
            (
                json!({"auth_token": token, "sender_avatar": "avatar.jpg"}),
                "credentials.sender_avatar",
            ),
        ];
        for (given, field) in cases {
            assert_eq!(field_of(given.clone()).field, field, "{given}");
        }
        assert!(field_of(json!({})).message.contains("auth_token"));
        let unknown = json!({"auth_token": token, "api_base_url": "http://x"});
        assert!(field_of(unknown).message.contains("unknown field"));
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let c = ViberCredentials {
            auth_token: "secret-token".into(),
            sender_name: Some("Shop".into()),
            sender_avatar: None,
        };
        assert!(!format!("{c:?}").contains("secret-token"));
    }
}
