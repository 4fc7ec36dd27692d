//! Telegram's channel credentials, as operators give them to
//! `POST /admin/v1/bots/{id}/channels`. Stored sealed; opened by the ingress (to check the
//! secret token) and the sender (to call the Bot API).

use patchbay_contract::content::FieldError;
use patchbay_platform::spec::ChannelCredentials;
use serde::{Deserialize, Serialize};

/// Telegram: the bot token from @BotFather and the `secret_token` given to `setWebhook`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramCredentials {
    /// `123456:ABC-DEF…`.
    pub bot_token: String,
    /// 1–256 characters of `A-Z a-z 0-9 _ -`; Telegram echoes it in
    /// `X-Telegram-Bot-Api-Secret-Token`.
    pub secret_token: String,
}

impl ChannelCredentials for TelegramCredentials {
    /// Checks the forms Telegram accepts.
    fn validate(&self) -> Result<(), FieldError> {
        let token_ok = self.bot_token.split_once(':').is_some_and(|(id, rest)| {
            !id.is_empty()
                && id.chars().all(|c| c.is_ascii_digit())
                && !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        if !token_ok {
            return Err(FieldError::new(
                "credentials.bot_token",
                "must look like 123456:ABC-DEF (digits, a colon, then letters, digits, '_' or '-')",
            ));
        }
        let secret_ok = (1..=256).contains(&self.secret_token.len())
            && self
                .secret_token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !secret_ok {
            return Err(FieldError::new(
                "credentials.secret_token",
                "must be 1-256 characters of A-Z, a-z, 0-9, '_' or '-'",
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
        match as_given::<TelegramCredentials>(given) {
            Err(CredentialsError::Invalid(e)) => e,
            other => panic!("refused expected, got {other:?}"),
        }
    }

    #[test]
    fn telegram_credentials_are_checked() {
        let ok = json!({"bot_token": "123:AbC_d-e", "secret_token": "s3cr3t_-"});
        assert_eq!(
            as_given::<TelegramCredentials>(ok.clone()).unwrap().stored,
            ok
        );
        let bad_token = json!({"bot_token": "nope", "secret_token": "s"});
        assert_eq!(field_of(bad_token).field, "credentials.bot_token");
        let bad_secret = json!({"bot_token": "1:a", "secret_token": "has space"});
        assert_eq!(field_of(bad_secret).field, "credentials.secret_token");
        let missing = json!({"bot_token": "1:a"});
        assert!(field_of(missing).message.contains("secret_token"));
    }
}
