//! What the shared services ask about a messenger, answered by its own crate.
//!
//! Every platform crate defines one [`PlatformSpec`] (`SPEC`): how its channels' credentials
//! are checked and stored, its messaging window, how its envelopes become canonical events,
//! where its webhooks arrive and how a new contact can be reached on it. `patchbay-registry`
//! lists the specs, one line per platform, and the services (auth, normaliser, bot-router,
//! api) look a platform up there instead of matching on it.

use patchbay_contract::content::{FieldError, Template};
use patchbay_contract::templates::TemplateDef;
use patchbay_contract::windows::WindowPolicy;
use patchbay_contract::{InboundEvent, IngressEnvelope, Platform, PlatformSettings};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::NormaliseError;

/// Everything about one messenger that services other than its own ingress and sender need.
#[derive(Debug)]
pub struct PlatformSpec {
    /// Which messenger.
    pub platform: Platform,
    /// How long after a user's message the bot may write, and what it may send afterwards.
    pub window: WindowPolicy,
    /// Checks the credentials an operator gives for a new channel (the error names the field)
    /// and completes them into what is sealed, plus what Patchbay generated (shown once).
    pub credentials: fn(serde_json::Value) -> Result<Completed, CredentialsError>,
    /// The credentials an operator gives, field by field, as the console's form for a new
    /// channel asks for them (what [`PlatformSpec::credentials`] checks).
    pub form: &'static [CredentialField],
    /// Turns an envelope of the platform's ingress into canonical events (the normaliser).
    pub normalise: fn(&IngressEnvelope) -> Result<Vec<InboundEvent>, NormaliseError>,
    /// The path the platform posts a channel's webhooks to, given the channel id.
    pub webhook_path: fn(&str) -> String,
    /// How a contact who never wrote can be reached on it (`POST /v1/conversations`).
    pub first_contact: FirstContact,
    /// What media the bot may send through it (`POST /v1/media` checks uploads against the
    /// platforms of the bot's channels).
    pub media: MediaLimits,
    /// Checks a bot's settings on the platform (`platform_settings.<platform>` of
    /// `PATCH /admin/v1/bots/{id}`); the error names the field relative to them. Platforms
    /// with none use [`no_settings`].
    pub settings: fn(&PlatformSettings) -> Result<(), FieldError>,
    /// The platform's own form of a registry template, when it has templates (WhatsApp's
    /// approved templates, WeChat's template messages); the router fills in its variables.
    /// Platforms without use [`no_template`], and get the template's `text` form.
    pub template: fn(&TemplateDef) -> Option<Template>,
    /// A text message from a made-up user as the platform posts it to a channel's webhook,
    /// signed with the channel's stored credentials: the console's "try it" box (the
    /// operator's browser posts it). Given the stored credentials, the text and a number unique
    /// to this try (the platform's update and message ids). `None` where the platform has none.
    pub try_it: Option<TryItFn>,
    /// The platform's call that sends one message to many users (LINE's multicast, Viber's
    /// `broadcast_message`), when it has one: the router puts up to this many recipients of a
    /// broadcast's identical message into one job, which the sender's
    /// [`crate::OutboundAdapter::send_many`] sends (its [`crate::OutboundAdapter::BULK`] is this).
    pub bulk: Option<crate::BulkSend>,
}

/// Makes a [`TryIt`] from a channel's stored credentials, the text and a unique number.
pub type TryItFn = fn(&serde_json::Value, &str, u64) -> Result<TryIt, String>;

/// A webhook request as a platform would send it ([`PlatformSpec::try_it`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TryIt {
    /// Headers to send (the platform's signature among them).
    pub headers: Vec<(&'static str, String)>,
    /// The body, as the platform posts it.
    pub body: String,
}

/// One credential an operator gives for a new channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialField {
    /// The key in `credentials`.
    pub name: &'static str,
    /// What the form calls it.
    pub label: &'static str,
    /// What to enter, and where the platform shows it.
    pub help: &'static str,
    /// How it is entered.
    pub kind: FieldKind,
    /// Whether a channel needs it.
    pub required: bool,
}

/// How a [`CredentialField`] is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Text shown as typed (ids, names, URLs).
    Text,
    /// A secret, not shown while typed.
    Secret,
    /// A yes/no switch (a JSON boolean).
    Flag,
    /// A whole number (a JSON number).
    Number,
}

impl CredentialField {
    /// A required field shown as typed.
    pub const fn text(name: &'static str, label: &'static str, help: &'static str) -> Self {
        CredentialField {
            name,
            label,
            help,
            kind: FieldKind::Text,
            required: true,
        }
    }

    /// A required secret.
    pub const fn secret(name: &'static str, label: &'static str, help: &'static str) -> Self {
        CredentialField {
            kind: FieldKind::Secret,
            ..Self::text(name, label, help)
        }
    }

    /// The same field, optional.
    pub const fn optional(self) -> Self {
        CredentialField {
            required: false,
            ..self
        }
    }

    /// The same field as a yes/no switch (optional: absent is no).
    pub const fn flag(self) -> Self {
        CredentialField {
            kind: FieldKind::Flag,
            required: false,
            ..self
        }
    }

    /// The same field as a number.
    pub const fn number(self) -> Self {
        CredentialField {
            kind: FieldKind::Number,
            ..self
        }
    }
}

/// The kinds of media a bot sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// `image`.
    Image,
    /// `audio`.
    Audio,
    /// `video`.
    Video,
    /// `file`.
    File,
}

impl MediaKind {
    /// Patchbay's content type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Audio => "audio",
            Self::Video => "video",
            Self::File => "file",
        }
    }

    /// The kind a file of MIME type `mime` is sent as.
    pub fn of(mime: &str) -> Self {
        match mime.split('/').next().unwrap_or_default() {
            "image" => Self::Image,
            "audio" => Self::Audio,
            "video" => Self::Video,
            _ => Self::File,
        }
    }
}

/// One kind's limit on a platform: the largest size, and the MIME types it takes (empty: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaLimit {
    /// Largest size in bytes.
    pub max_bytes: u64,
    /// MIME types accepted; empty for any.
    pub types: &'static [&'static str],
}

/// What a platform takes per kind of media; `None`: it cannot send that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaLimits {
    /// Images.
    pub image: Option<MediaLimit>,
    /// Audio.
    pub audio: Option<MediaLimit>,
    /// Video.
    pub video: Option<MediaLimit>,
    /// Files.
    pub file: Option<MediaLimit>,
}

/// `n` MiB.
pub const fn mib(n: u64) -> u64 {
    n * 1024 * 1024
}

impl MediaLimits {
    /// Any kind, any type, up to `max_bytes` (channels whose app downloads the file itself).
    pub const fn any(max_bytes: u64) -> Self {
        let l = Some(MediaLimit {
            max_bytes,
            types: &[],
        });
        Self {
            image: l,
            audio: l,
            video: l,
            file: l,
        }
    }

    /// Whether the platform can send a file of `mime` and `size` bytes, or why not.
    pub fn check(&self, mime: &str, size: u64) -> Result<MediaKind, String> {
        let kind = MediaKind::of(mime);
        let limit = match kind {
            MediaKind::Image => self.image,
            MediaKind::Audio => self.audio,
            MediaKind::Video => self.video,
            MediaKind::File => self.file,
        };
        let Some(limit) = limit else {
            return Err(format!("sends no {}", kind.as_str()));
        };
        if !limit.types.is_empty() && !limit.types.contains(&mime) {
            return Err(format!(
                "takes {} only as {}",
                kind.as_str(),
                limit.types.join(", ")
            ));
        }
        if size > limit.max_bytes {
            return Err(format!(
                "takes {} of at most {} bytes",
                kind.as_str(),
                limit.max_bytes
            ));
        }
        Ok(kind)
    }
}

/// The [`PlatformSpec::template`] of platforms without templates.
pub fn no_template(_: &TemplateDef) -> Option<Template> {
    None
}

/// The [`PlatformSpec::settings`] of platforms that take no settings: anything but the
/// defaults is refused, naming the field.
pub fn no_settings(s: &PlatformSettings) -> Result<(), FieldError> {
    if s.send_outside_window {
        return Err(FieldError::new(
            "send_outside_window",
            "this platform does not bill messages outside a window: there is nothing to allow",
        ));
    }
    if s.welcome.is_some() {
        return Err(FieldError::new(
            "welcome",
            "this platform has no welcome message in a webhook's response",
        ));
    }
    Ok(())
}

/// Credentials ready to seal, and what Patchbay generated for them.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    /// What the channel record stores (sealed).
    pub stored: serde_json::Value,
    /// Secrets Patchbay generated, shown to the operator once.
    pub generated: Option<serde_json::Value>,
}

/// Why credentials were not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The operator gave something the platform does not accept (422, the field named).
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(FieldError),
    /// Patchbay could not complete them (no randomness): 500.
    #[error("{0}")]
    Internal(String),
}

impl From<FieldError> for CredentialsError {
    fn from(e: FieldError) -> Self {
        CredentialsError::Invalid(e)
    }
}

/// A platform's channel credentials, as operators give them and channels store them.
pub trait ChannelCredentials: Serialize + DeserializeOwned {
    /// Checks the forms the platform accepts; the error names the field
    /// (`credentials.<field>`).
    fn validate(&self) -> Result<(), FieldError>;
}

/// The [`PlatformSpec::credentials`] of platforms whose credentials are stored as given:
/// parsed as `C` (unknown fields refused), validated, stored unchanged.
pub fn as_given<C: ChannelCredentials>(
    given: serde_json::Value,
) -> Result<Completed, CredentialsError> {
    let creds: C = parse(given)?;
    creds.validate()?;
    Ok(Completed {
        stored: serde_json::to_value(&creds)
            .map_err(|e| CredentialsError::Internal(e.to_string()))?,
        generated: None,
    })
}

/// Parses credentials; a missing, unknown or mistyped field is named in the error.
pub fn parse<T: DeserializeOwned>(given: serde_json::Value) -> Result<T, FieldError> {
    serde_json::from_value::<T>(given).map_err(|e| FieldError::new("credentials", e.to_string()))
}

/// Checks that each named field is non-empty and has no whitespace or control characters.
pub fn tokens(fields: &[(&str, &str)]) -> Result<(), FieldError> {
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

/// `/webhooks/<platform>/<channel id>`: where most platforms post a channel's webhooks.
pub fn webhook_path_for(platform: Platform, channel_id: &str) -> String {
    format!("/webhooks/{platform}/{channel_id}")
}

/// How a contact who never wrote to the bot can be reached on a platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstContact {
    /// Not at all: the user must write first.
    None,
    /// By phone number (digits, without `+`), which is the platform's address.
    Phone,
    /// By e-mail address, or else by phone number (the app's own user ids).
    EmailOrPhone,
}

impl FirstContact {
    /// The platform address of a contact with `phone` and `email`, if it can be reached.
    pub fn address(self, phone: Option<&str>, email: Option<&str>) -> Option<String> {
        let digits = phone.map(|p| p.trim_start_matches('+').to_owned());
        match self {
            FirstContact::None => None,
            FirstContact::Phone => digits,
            FirstContact::EmailOrPhone => email.map(str::to_owned).or(digits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Token {
        token: String,
    }

    impl ChannelCredentials for Token {
        fn validate(&self) -> Result<(), FieldError> {
            tokens(&[("token", &self.token)])
        }
    }

    #[test]
    fn credentials_as_given_are_parsed_validated_and_stored_unchanged() {
        let ok = serde_json::json!({"token": "abc"});
        assert_eq!(
            as_given::<Token>(ok.clone()),
            Ok(Completed {
                stored: ok,
                generated: None
            })
        );
        let Err(CredentialsError::Invalid(e)) =
            as_given::<Token>(serde_json::json!({"token": "a b"}))
        else {
            panic!("a token with a space is refused");
        };
        assert_eq!(e.field, "credentials.token");
        let Err(CredentialsError::Invalid(e)) =
            as_given::<Token>(serde_json::json!({"token": "a", "api_base_url": "http://x"}))
        else {
            panic!("unknown fields are refused");
        };
        assert!(e.message.contains("unknown field"), "{}", e.message);
    }

    #[test]
    fn platforms_without_settings_refuse_any() {
        assert_eq!(no_settings(&PlatformSettings::default()), Ok(()));
        let billed = PlatformSettings {
            send_outside_window: true,
            ..PlatformSettings::default()
        };
        assert_eq!(
            no_settings(&billed).unwrap_err().field,
            "send_outside_window"
        );
        let welcome = PlatformSettings {
            welcome: Some(patchbay_contract::Content::Text { text: "hi".into() }),
            ..PlatformSettings::default()
        };
        assert_eq!(no_settings(&welcome).unwrap_err().field, "welcome");
    }

    #[test]
    fn first_contact_addresses() {
        assert_eq!(
            FirstContact::Phone.address(Some("+351910000001"), Some("a@b.c")),
            Some("351910000001".into())
        );
        assert_eq!(
            FirstContact::EmailOrPhone.address(Some("+351"), Some("a@b.c")),
            Some("a@b.c".into())
        );
        assert_eq!(
            FirstContact::EmailOrPhone.address(Some("+351"), None),
            Some("351".into())
        );
        assert_eq!(FirstContact::None.address(Some("+351"), None), None);
    }
}
