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

/// Messenger: one Facebook Page of a Meta app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessengerCredentials {
    /// The Page's id (`entry[].id` of its webhooks; the Send API's `/{page_id}/messages`).
    pub page_id: String,
    /// A Page access token with `pages_messaging`.
    pub page_access_token: String,
    /// The Meta app's secret: `X-Hub-Signature-256` is its HMAC-SHA256 of the body.
    pub app_secret: String,
    /// The verify token the webhook handshake (`hub.verify_token`) must carry.
    pub verify_token: String,
}

/// WhatsApp Business Cloud API: one business phone number of a Meta app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatsappCredentials {
    /// The phone number's id (`metadata.phone_number_id`; `/{phone_number_id}/messages`).
    pub phone_number_id: String,
    /// A system-user or business-integration access token.
    pub access_token: String,
    /// The Meta app's secret: `X-Hub-Signature-256` is its HMAC-SHA256 of the body.
    pub app_secret: String,
    /// The verify token the webhook handshake (`hub.verify_token`) must carry.
    pub verify_token: String,
}

/// Checks that each named field is non-empty and has no whitespace or control characters.
fn tokens(fields: &[(&str, &str)]) -> Result<(), FieldError> {
    for (name, value) in fields {
        if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(FieldError::new(
                format!("credentials.{name}"),
                "must be non-empty, without spaces or control characters",
            ));
        }
    }
    Ok(())
}

/// Checks a Graph object id (digits only).
fn graph_id(name: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_digit()) {
        return Err(FieldError::new(
            format!("credentials.{name}"),
            "must be the numeric id Meta shows",
        ));
    }
    Ok(())
}

impl MessengerCredentials {
    /// Checks the forms Meta uses.
    pub fn validate(&self) -> Result<(), FieldError> {
        graph_id("page_id", &self.page_id)?;
        tokens(&[
            ("page_access_token", &self.page_access_token),
            ("app_secret", &self.app_secret),
            ("verify_token", &self.verify_token),
        ])
    }
}

impl WhatsappCredentials {
    /// Checks the forms Meta uses.
    pub fn validate(&self) -> Result<(), FieldError> {
        graph_id("phone_number_id", &self.phone_number_id)?;
        tokens(&[
            ("access_token", &self.access_token),
            ("app_secret", &self.app_secret),
            ("verify_token", &self.verify_token),
        ])
    }
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
        Platform::Custom => parse::<CustomChannelInput>(credentials)?.validate(),
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
        let wa = json!({"phone_number_id": "106540352242922", "access_token": "EAAG1",
                        "app_secret": "s3cr3t", "verify_token": "vt"});
        assert_eq!(validate(Platform::Whatsapp, &wa), Ok(()));
        let mut with_base = wa.clone();
        with_base["api_base_url"] = json!("http://127.0.0.1:9");
        assert!(
            validate(Platform::Whatsapp, &with_base).is_err(),
            "api_base_url goes beside credentials, not in them"
        );
        let mut bad_id = wa.clone();
        bad_id["phone_number_id"] = json!("PNID");
        assert_eq!(
            validate(Platform::Whatsapp, &bad_id).unwrap_err().field,
            "credentials.phone_number_id"
        );
        let mut unknown = wa.clone();
        unknown["page_id"] = json!("1");
        assert!(
            validate(Platform::Whatsapp, &unknown)
                .unwrap_err()
                .message
                .contains("unknown field")
        );
        let fb = json!({"page_id": "1234", "page_access_token": "EAAB", "app_secret": "a",
                        "verify_token": "v"});
        assert_eq!(validate(Platform::Messenger, &fb), Ok(()));
        let mut bad_token = fb.clone();
        bad_token["page_access_token"] = json!("has space");
        assert_eq!(
            validate(Platform::Messenger, &bad_token).unwrap_err().field,
            "credentials.page_access_token"
        );
    }
}
