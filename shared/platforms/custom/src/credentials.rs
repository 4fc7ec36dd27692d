//! A custom channel's credentials: what the operator gives (nothing is required) and what the
//! channel stores, completed with the secrets Patchbay generates (shown once).

use patchbay_config::secrets::{new_url_token, new_webhook_secret};
use patchbay_contract::content::FieldError;
use patchbay_platform::spec::{Completed, CredentialsError, parse};
use serde::{Deserialize, Serialize};

/// A custom channel as the operator creates it. Patchbay generates what is not given.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The [`patchbay_platform::PlatformSpec::credentials`] of custom channels: the given fields
/// checked, then a domain key (unless given), the users' token key and an event webhook
/// secret generated. The generated domain key and webhook secret are shown once.
pub fn complete(given: serde_json::Value) -> Result<Completed, CredentialsError> {
    let input: CustomChannelInput = parse(given)?;
    input.validate()?;
    let internal = |e: String| CredentialsError::Internal(e);
    let domain_key_given = input.domain_key.is_some();
    let creds = CustomCredentials {
        domain_key: match input.domain_key {
            Some(k) => k,
            None => format!(
                "dk_{}",
                new_url_token().map_err(|e| internal(e.to_string()))?
            ),
        },
        token_secret: new_url_token().map_err(|e| internal(e.to_string()))?,
        event_webhook_url: input.event_webhook_url,
        event_webhook_secret: new_webhook_secret().map_err(|e| internal(e.to_string()))?,
    };
    let mut generated = serde_json::json!({"event_webhook_secret": creds.event_webhook_secret});
    if !domain_key_given {
        generated["domain_key"] = creds.domain_key.clone().into();
    }
    Ok(Completed {
        stored: serde_json::to_value(&creds).map_err(|e| internal(e.to_string()))?,
        generated: Some(generated),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_secrets_are_stored_and_shown_once() {
        let c = complete(json!({})).unwrap();
        let stored: CustomCredentials = serde_json::from_value(c.stored).unwrap();
        let shown = c.generated.unwrap();
        assert_eq!(shown["domain_key"], stored.domain_key.as_str());
        assert_eq!(
            shown["event_webhook_secret"],
            stored.event_webhook_secret.as_str()
        );
        assert!(shown.get("token_secret").is_none(), "never shown");
        assert!(stored.domain_key.starts_with("dk_"));

        let given = complete(json!({"domain_key": "k".repeat(22)})).unwrap();
        assert!(given.generated.unwrap().get("domain_key").is_none());
        let Err(CredentialsError::Invalid(e)) = complete(json!({"domain_key": "short"})) else {
            panic!("a short domain key is refused");
        };
        assert_eq!(e.field, "credentials.domain_key");
    }
}
