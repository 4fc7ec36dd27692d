//! Platform credentials as operators give them to `POST /admin/v1/bots/{id}/channels`. Stored
//! sealed; opened only by the services that need them (ingress to verify, outbound to send).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::content::FieldError;
use crate::wire::Platform;

/// Telegram: the bot token from @BotFather and the `secret_token` given to `setWebhook`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelegramCredentials {
    /// `123456:ABC-DEF…`.
    pub bot_token: String,
    /// 1–256 characters of `A-Z a-z 0-9 _ -`; Telegram echoes it in
    /// `X-Telegram-Bot-Api-Secret-Token`.
    pub secret_token: String,
}

impl TelegramCredentials {
    /// Checks the forms Telegram accepts.
    pub fn validate(&self) -> Result<(), FieldError> {
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

/// A custom channel as the operator creates it. Patchbay generates what is not given.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomChannelInput {
    /// The channel's secret domain key, which apps present to register users (at least 22
    /// characters, so at least 128 bits when random). Generated when absent.
    #[serde(default)]
    pub domain_key: Option<String>,
    /// Where messages that reach a user later (a human agent, a broadcast, the bot) are
    /// pushed, signed per Standard Webhooks with `event_webhook_secret`.
    #[serde(default)]
    pub event_webhook_url: Option<String>,
}

impl CustomChannelInput {
    /// Checks the given fields.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(k) = &self.domain_key
            && !(22..=256).contains(&k.len())
        {
            return Err(FieldError::new(
                "credentials.domain_key",
                "must be 22 to 256 characters (make it unguessable)",
            ));
        }
        if let Some(k) = &self.domain_key
            && !k.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(FieldError::new(
                "credentials.domain_key",
                "must be printable ASCII without spaces",
            ));
        }
        if let Some(u) = &self.event_webhook_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(FieldError::new(
                "credentials.event_webhook_url",
                "must be an http or https URL",
            ));
        }
        Ok(())
    }
}

/// A custom channel's stored credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomCredentials {
    /// Presented by apps (`Authorization: Bearer <domain key>`) to register users.
    pub domain_key: String,
    /// Server-side key of the users' tokens (HMAC-SHA256); never shown.
    pub token_secret: String,
    /// The channel's event webhook.
    #[serde(default)]
    pub event_webhook_url: Option<String>,
    /// Its Standard Webhooks signing secret (`whsec_…`).
    pub event_webhook_secret: String,
}

/// Validates `credentials` for `platform`: the error names the field.
pub fn validate(platform: Platform, credentials: &serde_json::Value) -> Result<(), FieldError> {
    match platform {
        Platform::Telegram => serde_json::from_value::<TelegramCredentials>(credentials.clone())
            .map_err(|e| FieldError::new("credentials", e.to_string()))?
            .validate(),
        Platform::Custom => serde_json::from_value::<CustomChannelInput>(credentials.clone())
            .map_err(|e| FieldError::new("credentials", e.to_string()))?
            .validate(),
        other => Err(FieldError::new(
            "platform",
            format!("{other} channels are not supported by this release yet"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn telegram_credentials_are_checked() {
        let ok = json!({"bot_token": "123:AbC_d-e", "secret_token": "s3cr3t_-"});
        assert_eq!(validate(Platform::Telegram, &ok), Ok(()));
        let bad_token = json!({"bot_token": "nope", "secret_token": "s"});
        assert_eq!(
            validate(Platform::Telegram, &bad_token).unwrap_err().field,
            "credentials.bot_token"
        );
        let bad_secret = json!({"bot_token": "1:a", "secret_token": "has space"});
        assert_eq!(
            validate(Platform::Telegram, &bad_secret).unwrap_err().field,
            "credentials.secret_token"
        );
        let missing = json!({"bot_token": "1:a"});
        assert!(
            validate(Platform::Telegram, &missing)
                .unwrap_err()
                .message
                .contains("secret_token")
        );
    }
}
