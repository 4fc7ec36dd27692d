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

/// Facebook Messenger: one Facebook Page of a Meta app (`reference/platforms.md` §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessengerCredentials {
    /// The Page's numeric id (`entry[].id` and `recipient.id` in webhooks).
    pub page_id: String,
    /// A Page access token with `pages_messaging`.
    pub page_access_token: String,
    /// The Meta app's secret: the key of `X-Hub-Signature-256`.
    pub app_secret: String,
    /// The verify token entered in the App Dashboard with the callback URL.
    pub verify_token: String,
}

impl MessengerCredentials {
    /// Checks the forms Meta issues.
    pub fn validate(&self) -> Result<(), FieldError> {
        numeric_id("credentials.page_id", &self.page_id)?;
        token("credentials.page_access_token", &self.page_access_token)?;
        token("credentials.app_secret", &self.app_secret)?;
        verify_token("credentials.verify_token", &self.verify_token)
    }
}

/// WhatsApp Business Cloud API: one business phone number of a Meta app (§3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatsappCredentials {
    /// The phone number's id (`metadata.phone_number_id` in webhooks), not the number.
    pub phone_number_id: String,
    /// A system-user or business integration token (sent as `Authorization: Bearer`).
    pub access_token: String,
    /// The Meta app's secret: the key of `X-Hub-Signature-256`.
    pub app_secret: String,
    /// The verify token entered in the App Dashboard with the callback URL.
    pub verify_token: String,
}

impl WhatsappCredentials {
    /// Checks the forms Meta issues.
    pub fn validate(&self) -> Result<(), FieldError> {
        numeric_id("credentials.phone_number_id", &self.phone_number_id)?;
        token("credentials.access_token", &self.access_token)?;
        token("credentials.app_secret", &self.app_secret)?;
        verify_token("credentials.verify_token", &self.verify_token)
    }
}

/// Meta object ids: 1–32 digits.
fn numeric_id(field: &str, v: &str) -> Result<(), FieldError> {
    if v.is_empty() || v.len() > 32 || !v.chars().all(|c| c.is_ascii_digit()) {
        return Err(FieldError::new(
            field,
            "must be Meta's numeric id (1-32 digits)",
        ));
    }
    Ok(())
}

/// Tokens and secrets: 1–1024 printable ASCII characters without spaces.
fn token(field: &str, v: &str) -> Result<(), FieldError> {
    if v.is_empty() || v.len() > 1024 || !v.chars().all(|c| c.is_ascii_graphic()) {
        return Err(FieldError::new(
            field,
            "must be 1-1024 printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

/// The verify token travels in a query string: 1–256 printable ASCII characters.
fn verify_token(field: &str, v: &str) -> Result<(), FieldError> {
    if v.is_empty() || v.len() > 256 || !v.chars().all(|c| c.is_ascii_graphic()) {
        return Err(FieldError::new(
            field,
            "must be 1-256 printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(credentials: &serde_json::Value) -> Result<T, FieldError> {
    serde_json::from_value::<T>(credentials.clone())
        .map_err(|e| FieldError::new("credentials", e.to_string()))
}

/// Validates `credentials` for `platform`: the error names the field.
pub fn validate(platform: Platform, credentials: &serde_json::Value) -> Result<(), FieldError> {
    match platform {
        Platform::Telegram => parse::<TelegramCredentials>(credentials)?.validate(),
        Platform::Messenger => parse::<MessengerCredentials>(credentials)?.validate(),
        Platform::Whatsapp => parse::<WhatsappCredentials>(credentials)?.validate(),
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

    #[test]
    fn meta_credentials_are_checked() {
        let ok = json!({"page_id": "1061", "page_access_token": "EAAB", "app_secret": "a1", "verify_token": "vt"});
        assert_eq!(validate(Platform::Messenger, &ok), Ok(()));
        let check = |platform, body: serde_json::Value, field: &str| {
            let e = validate(platform, &body).unwrap_err();
            assert!(
                e.field == field || e.message.contains(field),
                "{field}: {e}"
            );
        };
        check(
            Platform::Messenger,
            json!({"page_id": "PAGE", "page_access_token": "t", "app_secret": "a", "verify_token": "v"}),
            "credentials.page_id",
        );
        check(
            Platform::Messenger,
            json!({"page_id": "1", "page_access_token": "t", "app_secret": "a b", "verify_token": "v"}),
            "credentials.app_secret",
        );
        check(
            Platform::Messenger,
            json!({"page_id": "1", "page_access_token": "t", "app_secret": "a", "verify_token": "v", "extra": 1}),
            "extra",
        );
        let ok = json!({"phone_number_id": "106", "access_token": "EAAG", "app_secret": "s", "verify_token": "v"});
        assert_eq!(validate(Platform::Whatsapp, &ok), Ok(()));
        check(
            Platform::Whatsapp,
            json!({"phone_number_id": "106", "access_token": "", "app_secret": "s", "verify_token": "v"}),
            "credentials.access_token",
        );
        check(
            Platform::Whatsapp,
            json!({"phone_number_id": "106", "access_token": "t", "app_secret": "s", "verify_token": ""}),
            "credentials.verify_token",
        );
        check(
            Platform::Whatsapp,
            json!({"phone_number_id": "106", "access_token": "t", "app_secret": "s"}),
            "verify_token",
        );
    }
}
