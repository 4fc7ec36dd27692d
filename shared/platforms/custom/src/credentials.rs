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
    /// How long a user token lives, in seconds: 300 (five minutes) to 31,536,000 (a year).
    /// [`DEFAULT_TOKEN_TTL_SECONDS`] (30 days) when absent.
    #[serde(default)]
    pub token_ttl_seconds: Option<u64>,
    /// The key the app's back end signs registrations with (`X-Patchbay-Registration`, see
    /// [`crate::registration`]; at least 32 characters). Generated when absent.
    #[serde(default)]
    pub registration_secret: Option<String>,
    /// Every registration needs the back end's proof, a new `external_id` too (by default only
    /// an `external_id` that already has a user does).
    #[serde(default)]
    pub require_signed_registration: bool,
    /// The API the channel's apps speak besides Patchbay's own: `botdistrikt` (BotDistrikt's
    /// webchat API, [`crate::botdistrikt`]) or `uchat` (UChat's API chat channel,
    /// [`crate::uchat`]). Given as the channel's `flavour` beside its credentials.
    #[serde(default)]
    pub flavour: Option<CustomFlavour>,
    /// The `uchat` flavour's webhook verification key: the token of its challenge and the key
    /// its messages are signed with (1 to 256 printable characters).
    #[serde(default)]
    pub verification_key: Option<String>,
}

/// The API a custom channel's apps speak besides Patchbay's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomFlavour {
    /// BotDistrikt's webchat API ("Other Channels"): `/api/webchat_apps/{id}/user` and
    /// `/message`, the domain as the password, the `webchat_id` as the user's credential, and
    /// `X-BotDistrikt-Source` on the event webhook.
    Botdistrikt,
    /// UChat's API chat channel: an outside system sends as its users through `bot_url`
    /// (`/api/apichat/{channel_id}`, with a bot API key), the bot's and agents' messages reach
    /// the event webhook in UChat's shapes, signed `X-Uchat-Signature`; a partner manages the
    /// webhook (`/api/partner/workspace/{workspace}/apichat-webhook`).
    Uchat,
}

/// A user token's lifetime when the channel names none: 30 days.
pub const DEFAULT_TOKEN_TTL_SECONDS: u64 = 30 * 86_400;

/// The shortest and longest token lifetimes a channel may set.
pub const TOKEN_TTL_SECONDS: std::ops::RangeInclusive<u64> = 300..=365 * 86_400;

fn default_token_ttl_seconds() -> u64 {
    DEFAULT_TOKEN_TTL_SECONDS
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
        if let Some(k) = &self.verification_key
            && (!(1..=256).contains(&k.len()) || !k.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(FieldError::new(
                "credentials.verification_key",
                "must be 1 to 256 printable ASCII characters without spaces",
            ));
        }
        if let Some(ttl) = self.token_ttl_seconds
            && !TOKEN_TTL_SECONDS.contains(&ttl)
        {
            return Err(FieldError::new(
                "credentials.token_ttl_seconds",
                "must be 300 (five minutes) to 31536000 (a year)",
            ));
        }
        if let Some(k) = &self.registration_secret
            && (!(32..=256).contains(&k.len()) || !k.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(FieldError::new(
                "credentials.registration_secret",
                "must be 32 to 256 printable ASCII characters without spaces (make it unguessable)",
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
    /// How long a user token lives, in seconds.
    #[serde(default = "default_token_ttl_seconds")]
    pub token_ttl_seconds: u64,
    /// The back end's key for `X-Patchbay-Registration` (absent on channels created before
    /// registrations could be signed: an existing `external_id` cannot be registered again
    /// there).
    #[serde(default)]
    pub registration_secret: Option<String>,
    /// Every registration needs the back end's proof.
    #[serde(default)]
    pub require_signed_registration: bool,
    /// The API its apps speak besides Patchbay's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavour: Option<CustomFlavour>,
    /// The `uchat` flavour's verification key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_key: Option<String>,
}

impl CustomCredentials {
    /// Whether `given` is the channel's domain key (compared in constant time; never an
    /// empty one).
    pub fn is_domain_key(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        !given.is_empty() && bool::from(given.as_bytes().ct_eq(self.domain_key.as_bytes()))
    }
}

/// The [`patchbay_platform::PlatformSpec::credentials`] of custom channels: the given fields
/// checked, then a domain key and a registration secret (unless given), the users' token key
/// and an event webhook secret generated. The generated domain key, registration secret and
/// webhook secret are shown once.
pub fn complete(given: serde_json::Value) -> Result<Completed, CredentialsError> {
    let input: CustomChannelInput = parse(given)?;
    input.validate()?;
    let internal = |e: String| CredentialsError::Internal(e);
    let domain_key_given = input.domain_key.is_some();
    let registration_secret_given = input.registration_secret.is_some();
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
        token_ttl_seconds: input.token_ttl_seconds.unwrap_or(DEFAULT_TOKEN_TTL_SECONDS),
        registration_secret: Some(match input.registration_secret {
            Some(k) => k,
            None => format!(
                "rs_{}",
                new_url_token().map_err(|e| internal(e.to_string()))?
            ),
        }),
        require_signed_registration: input.require_signed_registration,
        flavour: input.flavour,
        verification_key: input.verification_key,
    };
    let mut generated = serde_json::json!({"event_webhook_secret": creds.event_webhook_secret});
    if !domain_key_given {
        generated["domain_key"] = creds.domain_key.clone().into();
    }
    if !registration_secret_given {
        generated["registration_secret"] = creds.registration_secret.clone().into();
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
        assert_eq!(
            shown["registration_secret"],
            stored.registration_secret.as_deref().unwrap()
        );
        assert!(stored.registration_secret.unwrap().starts_with("rs_"));
        assert_eq!(stored.token_ttl_seconds, DEFAULT_TOKEN_TTL_SECONDS);
        assert!(!stored.require_signed_registration);

        let given = complete(json!({"domain_key": "k".repeat(22)})).unwrap();
        assert!(given.generated.unwrap().get("domain_key").is_none());
        let Err(CredentialsError::Invalid(e)) = complete(json!({"domain_key": "short"})) else {
            panic!("a short domain key is refused");
        };
        assert_eq!(e.field, "credentials.domain_key");
    }

    #[test]
    fn token_lifetime_and_registration_settings_are_checked() {
        let c = complete(
            json!({"token_ttl_seconds": 3600, "require_signed_registration": true,
                                "registration_secret": "r".repeat(32)}),
        )
        .unwrap();
        let stored: CustomCredentials = serde_json::from_value(c.stored).unwrap();
        assert_eq!(stored.token_ttl_seconds, 3600);
        assert!(stored.require_signed_registration);
        assert_eq!(stored.registration_secret, Some("r".repeat(32)));
        assert!(c.generated.unwrap().get("registration_secret").is_none());
        for (given, field) in [
            (
                json!({"token_ttl_seconds": 299}),
                "credentials.token_ttl_seconds",
            ),
            (
                json!({"token_ttl_seconds": 31_536_001}),
                "credentials.token_ttl_seconds",
            ),
            (json!({"token_ttl_seconds": -1}), "credentials"),
            (
                json!({"registration_secret": "short"}),
                "credentials.registration_secret",
            ),
            (
                json!({"registration_secret": format!("{} x", "r".repeat(32))}),
                "credentials.registration_secret",
            ),
        ] {
            let Err(CredentialsError::Invalid(e)) = complete(given.clone()) else {
                panic!("{given} is refused");
            };
            assert!(e.field.starts_with(field), "{given}: {e:?}");
        }
    }

    #[test]
    fn credentials_stored_before_expiry_still_open() {
        let old = json!({"domain_key": "k".repeat(22), "token_secret": "t",
                         "event_webhook_secret": "whsec_x"});
        let c: CustomCredentials = serde_json::from_value(old).unwrap();
        assert_eq!(c.token_ttl_seconds, DEFAULT_TOKEN_TTL_SECONDS);
        assert_eq!(c.registration_secret, None);
        assert!(!c.require_signed_registration);
    }
}
