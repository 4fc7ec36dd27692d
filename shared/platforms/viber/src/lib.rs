//! Viber REST bot API adapter (`reference/platforms.md` §7, §9, §10).
//!
//! * [`inbound`]: `X-Viber-Content-Signature` (hex HMAC-SHA256 of the raw body with the bot's
//!   auth token), one envelope per callback keyed by its event and `message_token`,
//!   normalisation of every callback and message type, the welcome message answering
//!   `conversation_started`, profiles looked up off the messages' way;
//! * [`outbound`]: the content model rendered as `send_message` calls (keyboards, rich media,
//!   `min_api_version`, the channel's sender name and avatar), every `status` classified, and
//!   `get_user_details`;
//! * [`setup`]: the bot's webhook at Viber (`set_webhook`), set when a channel appears and
//!   removed (`""`) when it is disabled or deleted;
//! * [`capabilities`]: what Viber shows natively;
//! * [`credentials`]: the bot's auth token, sender name and avatar;
//! * [`SPEC`]: what the other services ask about Viber: its 24-hour session ([`WINDOW`]) and
//!   the bots' Viber settings ([`settings`]);
//! * [`fixtures`]: callbacks as Viber sends them, and their signature, for tests.

pub mod capabilities;
pub mod credentials;
pub mod fixtures;
#[cfg(test)]
mod fuzz;
pub mod inbound;
pub mod outbound;
pub mod setup;

pub use credentials::ViberCredentials;
pub use inbound::Viber;
pub use outbound::ViberSender;

use patchbay_contract::content::FieldError;
use patchbay_contract::windows::{DAY, WindowPolicy};
use patchbay_contract::{Platform, PlatformSettings};
use patchbay_platform::InboundAdapter;
use patchbay_platform::spec::{
    self, CredentialField, FirstContact, MediaLimit, MediaLimits, PlatformSpec,
};

/// Viber's session (§7): 24 hours after the user's last message, in which the bot's messages
/// are free; afterwards Viber still delivers what the bot starts, but bills it. Patchbay sends
/// such messages only for bots whose Viber settings allow them (`send_outside_window`), and
/// refuses them otherwise with `outside_window`. Viber has no templates.
pub const WINDOW: WindowPolicy = WindowPolicy {
    platform: Platform::Viber,
    window_secs: Some(DAY),
    templates_outside: false,
    human_agent_secs: None,
    reply_token_secs: None,
    per_inbound: None,
    billed_outside: true,
    billed_allowed: false,
    name: "Viber's 24-hour session",
};

/// Checks a bot's Viber settings: `send_outside_window` (any value), and a `welcome` that is
/// valid content Viber shows as one message (the welcome message is one message object).
pub fn settings(s: &PlatformSettings) -> Result<(), FieldError> {
    if let Some(w) = &s.welcome {
        w.validate().map_err(|e| e.within("welcome"))?;
        let creds = ViberCredentials {
            auth_token: "check".into(),
            sender_name: None,
            sender_avatar: None,
        };
        outbound::welcome(&creds, "check", w).map_err(|e| {
            let why = match e {
                patchbay_platform::SendError::Permanent(d) => d.message,
                other => other.to_string(),
            };
            FieldError::new("welcome", why)
        })?;
    }
    Ok(())
}

/// Viber, as the registry lists it: the 24-hour session (billed, not refused, outside it), no
/// way to reach someone who never subscribed, and the bots' Viber settings.
pub const SPEC: PlatformSpec = PlatformSpec {
    platform: Platform::Viber,
    window: WINDOW,
    credentials: spec::as_given::<ViberCredentials>,
    form: &[
        CredentialField::secret("auth_token", "Auth token", "The bot's token (Edit info)."),
        CredentialField::text(
            "sender_name",
            "Sender name",
            "At most 28 characters; the bot's name when empty.",
        )
        .optional(),
        CredentialField::text(
            "sender_avatar",
            "Sender avatar",
            "An https URL of a picture of at most 100 KB.",
        )
        .optional(),
    ],
    normalise: <Viber as InboundAdapter>::normalise,
    webhook_path: |channel| spec::webhook_path_for(Platform::Viber, channel),
    first_contact: FirstContact::None,
    // Pictures by URL (JPEG, PNG, GIF; Viber's FAQ: up to 1 MB); video, audio and files go
    // out as `url` messages (a link), whatever their size.
    media: MediaLimits {
        image: Some(MediaLimit {
            max_bytes: spec::mib(1),
            types: &["image/jpeg", "image/png", "image/gif"],
        }),
        audio: Some(MediaLimit {
            max_bytes: spec::mib(100),
            types: &[],
        }),
        video: Some(MediaLimit {
            max_bytes: spec::mib(100),
            types: &[],
        }),
        file: Some(MediaLimit {
            max_bytes: spec::mib(100),
            types: &[],
        }),
    },
    settings,
    template: spec::no_template,
    try_it: None,
    bulk: Some(patchbay_platform::BulkSend {
        max_recipients: outbound::BROADCAST_MAX,
    }),
};

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_contract::Content;
    use patchbay_contract::content::{Card, Media};

    #[test]
    fn welcome_messages_must_be_one_viber_message() {
        let ok = |welcome: Content| PlatformSettings {
            send_outside_window: false,
            welcome: Some(welcome),
        };
        assert_eq!(settings(&PlatformSettings::default()), Ok(()));
        assert_eq!(
            settings(&ok(Content::Text {
                text: "Welcome!".into()
            })),
            Ok(())
        );
        let image = Content::Image(Media {
            url: Some("https://cdn.example/w.jpg".into()),
            file_id: None,
            caption: Some("Hello".into()),
            filename: None,
            mime_type: None,
            media_id: None,
            download_url: None,
            preview_url: None,
            duration_ms: None,
            size_bytes: None,
        });
        assert_eq!(settings(&ok(image)), Ok(()));
        let card = |i: usize| Card {
            title: format!("C{i}"),
            subtitle: None,
            image_url: None,
            buttons: vec![],
        };
        let seven = Content::Carousel {
            cards: (0..7).map(card).collect(),
        };
        let e = settings(&ok(seven)).unwrap_err();
        assert_eq!(e.field, "welcome");
        assert!(e.message.contains("one Viber message"), "{}", e.message);
        let e = settings(&ok(Content::Text { text: " ".into() })).unwrap_err();
        assert!(e.field.starts_with("welcome"), "{}", e.field);
        let e = settings(&ok(Content::Template(
            patchbay_contract::content::Template::with_body("t", "en", &[]).into(),
        )))
        .unwrap_err();
        assert_eq!(e.field, "welcome");
        assert_eq!(
            settings(&PlatformSettings {
                send_outside_window: true,
                welcome: None
            }),
            Ok(())
        );
    }
}
