//! Inbound Viber: the signature check, splitting and normalisation (`reference/platforms.md`
//! §7.1–§7.2, §7.4).
//!
//! Viber posts one callback per request to the bot's webhook, signed with
//! `X-Viber-Content-Signature`: the hex of HMAC-SHA256 over the raw body with the bot's auth
//! token (Viber sends lowercase; either case is accepted, compared in constant time). A wrong
//! or missing signature answers 401 and publishes nothing. Each callback is one envelope, the
//! callback as received, keyed by its event and `message_token`
//! (`viber:<channel>:<event>:<token>`: a receipt names the token of the bot's message, so the
//! event keeps `delivered` and `seen` of one message apart), ordered by the user's id.
//!
//! | callback | event |
//! |---|---|
//! | `webhook` (the check during `set_webhook`) | none: answered 200, nothing published |
//! | `message` `text` | `message.received`, text |
//! | `message` `text` that is a postback button's payload named by the `tracking_data` Patchbay set on the keyboard's message | `message.received`, `postback` (payload, title) |
//! | `message` `picture` | `message.received`, image (`media`; caption: `text`; file name) |
//! | `message` `video` | `message.received`, video (`media`) |
//! | `message` `file` | `message.received`, file (`media`, `file_name`) |
//! | `message` `sticker` | `message.received`, sticker (id: `sticker_id`) |
//! | `message` `contact` | `message.received`, text: the contact's name and phone number on their own lines |
//! | `message` `location` | `message.received`, location (`lat`, `lon`, `address` when given) |
//! | `message` `url` | `message.received`, text: the URL (`media`) |
//! | `conversation_started` (the user opened the chat) | `user.subscribed`, `ref` the deep link's `context`; the webhook's response carries the bot's welcome message, when its settings have one ([`Viber::answer`]) |
//! | `subscribed` | `user.subscribed` |
//! | `unsubscribed` | `user.unsubscribed` |
//! | `delivered` | `message.delivered` for the bot's message `message_token` |
//! | `seen` | `message.read` for the bot's message `message_token` |
//! | `failed` | `message.failed` for the bot's message `message_token`, code `platform_error` with Viber's `desc` |
//! | another `message` type, `client_status`, anything else | none (counted, not an error) |
//!
//! Media arrive as URLs on Viber's CDN: `url` of the content (Viber has no media ids). A
//! user's first message subscribes them without a `subscribed` callback. `timestamp` is in
//! milliseconds. The sender's name, avatar and language come with `message`,
//! `conversation_started` and `subscribed` (when the webhook was set with `send_name` and
//! `send_photo`, as Patchbay sets it). Viber allows `get_user_details` twice per 12 hours per
//! user, so it is never called on a message's way: when a message comes without a name, the
//! ingress publishes it as it is and looks the profile up in a task of its own
//! ([`crate::outbound::user_details`]), cached per process for a day whatever Viber answered;
//! the user's later events carry it as `patchbay_profile`.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use patchbay_contract::content::{Location, Media};
use patchbay_contract::ids::{derive_id, prefix};
use patchbay_contract::{
    BotRecord, ChannelRef, Content, DeliveryError, EventType, InboundEvent, InboundMessage,
    IngressEnvelope, Platform, PlatformUser, Receipt, V1,
};
use patchbay_platform::enrich::Context;
use patchbay_platform::{InboundAdapter, NormaliseError, Rejection, Split};
use serde::Deserialize;
use serde_json::Value;

use crate::ViberCredentials;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-viber-content-signature";
/// The key under which the ingress adds the sender's profile to an envelope.
pub const PROFILE_FIELD: &str = "patchbay_profile";

/// The Viber adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Viber;

/// The bytes of a hex string, in either letter case.
fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

/// Checks `X-Viber-Content-Signature`: the hex (either case) of HMAC-SHA256 of `body` with
/// `auth_token`, compared in constant time.
pub fn verify_signature(
    auth_token: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Rejection> {
    let given = headers
        .get(SIGNATURE_HEADER)
        .ok_or_else(|| Rejection::Unauthorized(format!("missing {SIGNATURE_HEADER}")))?
        .to_str()
        .map_err(|_| Rejection::Unauthorized(format!("{SIGNATURE_HEADER} is not ASCII")))?;
    let refused = || {
        Rejection::Unauthorized("X-Viber-Content-Signature does not match the auth token".into())
    };
    let given = from_hex(given.trim()).ok_or_else(refused)?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(auth_token.as_bytes())
        .map_err(|_| Rejection::Unauthorized("the auth token cannot key HMAC-SHA256".into()))?;
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| refused())
}

/// A JSON value as text: strings as they are, numbers (Viber's tokens) as digits.
fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The user a callback is about: `sender.id` (messages), `user.id` (`conversation_started`,
/// `subscribed`) or `user_id` (the others).
fn user_of(c: &Value) -> Option<String> {
    c.pointer("/sender/id")
        .or_else(|| c.pointer("/user/id"))
        .or_else(|| c.get("user_id"))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
}

/// Viber's `timestamp` (milliseconds) as a time.
pub fn time(timestamp: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(timestamp)
}

/// A user as Viber describes them.
#[derive(Debug, Default, Deserialize)]
struct User {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    avatar: Option<String>,
    #[serde(default)]
    language: Option<String>,
}

/// The sender's profile as the ingress found it.
#[derive(Debug, Default, Deserialize)]
struct ProfileHint {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    avatar_url: Option<String>,
    #[serde(default)]
    locale: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Callback {
    event: String,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    message_token: Option<Value>,
    #[serde(default)]
    sender: Option<User>,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    message: Option<Value>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    desc: Option<String>,
    /// Added by the ingress ([`Viber::enrich`]), not by Viber.
    #[serde(default)]
    patchbay_profile: Option<ProfileHint>,
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    media: Option<String>,
    #[serde(default)]
    file_name: Option<String>,
    #[serde(default)]
    sticker_id: Option<Value>,
    #[serde(default)]
    contact: Option<Contact>,
    #[serde(default)]
    location: Option<Place>,
    #[serde(default)]
    tracking_data: Option<String>,
    /// A video's or file's size, in bytes.
    #[serde(default)]
    size: Option<u64>,
    /// A video's length, in seconds.
    #[serde(default)]
    duration: Option<u64>,
    /// A video's or picture's thumbnail URL.
    #[serde(default)]
    thumbnail: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Contact {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    phone_number: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Place {
    lat: f64,
    lon: f64,
    #[serde(default)]
    address: Option<String>,
}

fn url_media(url: String, caption: Option<String>, filename: Option<String>) -> Media {
    Media {
        url: Some(url),
        file_id: None,
        caption: caption.filter(|c| !c.trim().is_empty()),
        filename,
        mime_type: None,
        media_id: None,
        download_url: None,
        preview_url: None,
        duration_ms: None,
        size_bytes: None,
    }
}

/// The content of a `message`; `None` for types Patchbay does not model.
fn content(m: Message) -> Result<Option<Content>, NormaliseError> {
    let missing =
        |field: &str| NormaliseError(format!("a Viber {} message without {field}", m.kind));
    let media = |m: &Message| m.media.clone().ok_or_else(|| missing("media"));
    Ok(Some(match m.kind.as_str() {
        "text" => {
            let text = m.text.clone().ok_or_else(|| missing("text"))?;
            match crate::outbound::postback_title(m.tracking_data.as_deref(), &text) {
                Some(title) => Content::Postback {
                    payload: text,
                    title: Some(title),
                },
                None => Content::Text { text },
            }
        }
        "picture" => Content::Image(url_media(media(&m)?, m.text.clone(), m.file_name.clone())),
        "video" => Content::Video(Media {
            size_bytes: m.size.filter(|s| *s > 0),
            duration_ms: m
                .duration
                .filter(|d| *d > 0)
                .map(|d| d.saturating_mul(1000)),
            preview_url: m.thumbnail.clone(),
            ..url_media(media(&m)?, m.text.clone(), None)
        }),
        "file" => Content::File(Media {
            size_bytes: m.size.filter(|s| *s > 0),
            ..url_media(media(&m)?, None, m.file_name.clone())
        }),
        "sticker" => Content::Sticker {
            id: m
                .sticker_id
                .as_ref()
                .and_then(as_text)
                .ok_or_else(|| missing("sticker_id"))?,
        },
        "contact" => {
            let c = m.contact.as_ref().ok_or_else(|| missing("contact"))?;
            let text = [c.name.as_deref(), c.phone_number.as_deref()]
                .into_iter()
                .flatten()
                .filter(|s| !s.trim().is_empty())
                .collect::<Vec<_>>()
                .join("\n");
            if text.is_empty() {
                return Err(missing("a name or phone number"));
            }
            Content::Text { text }
        }
        "location" => {
            let p = m.location.as_ref().ok_or_else(|| missing("location"))?;
            Content::Location(Location {
                latitude: p.lat,
                longitude: p.lon,
                name: None,
                address: p.address.clone().filter(|a| !a.trim().is_empty()),
            })
        }
        "url" => Content::Text { text: media(&m)? },
        _ => return Ok(None),
    }))
}

/// A receipt for the bot's message `token`.
fn receipt(token: String, error: Option<DeliveryError>) -> Receipt {
    Receipt {
        platform_message_ids: vec![token],
        watermark: None,
        error,
    }
}

impl InboundAdapter for Viber {
    const PLATFORM: Platform = Platform::Viber;
    const SIGNATURE_HEADER: Option<&'static str> = Some(SIGNATURE_HEADER);
    type Credentials = ViberCredentials;
    const ANSWERS: bool = true;

    fn verify(creds: &ViberCredentials, headers: &HeaderMap, body: &[u8]) -> Result<(), Rejection> {
        verify_signature(&creds.auth_token, headers, body)
    }

    fn split(channel_id: &str, body: &[u8]) -> Result<Vec<Split>, Rejection> {
        let c: Value = serde_json::from_slice(body)
            .map_err(|e| Rejection::Malformed(format!("not a Viber callback: {e}")))?;
        let event = c
            .get("event")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| Rejection::Malformed("a Viber callback without an event".into()))?
            .to_owned();
        if event == "webhook" {
            return Ok(vec![]);
        }
        let token = c.get("message_token").and_then(as_text).ok_or_else(|| {
            Rejection::Malformed(format!("a Viber {event} callback without a message_token"))
        })?;
        Ok(vec![Split {
            dedupe_key: format!("viber:{channel_id}:{event}:{token}"),
            order_key: user_of(&c),
            body: c,
            route: None,
        }])
    }

    fn normalise(env: &IngressEnvelope) -> Result<Vec<InboundEvent>, NormaliseError> {
        let c: Callback = serde_json::from_value(env.body.clone())
            .map_err(|e| NormaliseError(format!("not a Viber callback: {e}")))?;
        let token = c
            .message_token
            .as_ref()
            .and_then(as_text)
            .ok_or_else(|| NormaliseError("a Viber callback without a message_token".into()))?;
        let occurred_at = c.timestamp.and_then(time).unwrap_or(env.received_at);
        let person = c.sender.as_ref().or(c.user.as_ref());
        let user_id = person
            .and_then(|u| u.id.clone())
            .or_else(|| c.user_id.clone())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                NormaliseError(format!("a Viber {} callback without a user", c.event))
            })?;
        let (event_type, message, referral, receipt) = match c.event.as_str() {
            "message" => {
                let raw = c.message.clone().ok_or_else(|| {
                    NormaliseError("a Viber message callback without a message".into())
                })?;
                let m: Message = serde_json::from_value(raw)
                    .map_err(|e| NormaliseError(format!("not a Viber message: {e}")))?;
                let Some(content) = content(m)? else {
                    return Ok(vec![]);
                };
                let message = InboundMessage {
                    platform_message_id: token,
                    content,
                };
                (EventType::MessageReceived, Some(message), None, None)
            }
            "conversation_started" => (
                EventType::UserSubscribed,
                None,
                c.context.clone().filter(|x| !x.is_empty()),
                None,
            ),
            "subscribed" => (EventType::UserSubscribed, None, None, None),
            "unsubscribed" => (EventType::UserUnsubscribed, None, None, None),
            "delivered" => (
                EventType::MessageDelivered,
                None,
                None,
                Some(receipt(token, None)),
            ),
            "seen" => (
                EventType::MessageRead,
                None,
                None,
                Some(receipt(token, None)),
            ),
            "failed" => {
                let desc = c.desc.clone().unwrap_or_default();
                let error = DeliveryError {
                    code: "platform_error".into(),
                    message: if desc.is_empty() {
                        "Viber could not deliver the message".into()
                    } else {
                        format!("Viber could not deliver the message: {desc}")
                    },
                    platform_code: None,
                };
                (
                    EventType::MessageFailed,
                    None,
                    None,
                    Some(receipt(token, Some(error))),
                )
            }
            _ => return Ok(vec![]),
        };
        let hint = c.patchbay_profile.unwrap_or_default();
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        let sender = PlatformUser {
            platform_user_id: user_id.clone(),
            display_name: person.and_then(|p| nonempty(&p.name)).or(hint.display_name),
            username: None,
            locale: person.and_then(|p| nonempty(&p.language)).or(hint.locale),
            avatar_url: person.and_then(|p| nonempty(&p.avatar)).or(hint.avatar_url),
            email: None,
            phone: None,
        };
        Ok(vec![InboundEvent {
            v: V1,
            id: derive_id(prefix::EVENT, &env.id, 0),
            event_type,
            bot_id: env.bot_id.clone(),
            channel: ChannelRef {
                id: env.channel_id.clone(),
                platform: Platform::Viber,
            },
            occurred_at,
            sender,
            address: user_id,
            chat: None,
            dedupe_key: format!("{}:0", env.dedupe_key),
            message,
            referral,
            resubscribed: false,
            receipt,
        }])
    }

    fn api_base_url(config: &patchbay_config::Config) -> Option<String> {
        Some(config.viber_api_base_url.clone())
    }

    /// Adds cached profiles to messages that came without a name, and looks up the missing
    /// ones in a task of its own (never on the message's way: `get_user_details` allows two
    /// lookups per user in 12 hours).
    async fn enrich(ctx: Context<'_, ViberCredentials>, splits: &mut [Split]) {
        let nameless = |s: &Split| -> Option<String> {
            if s.body.get("event").and_then(Value::as_str) != Some("message") {
                return None;
            }
            let named = s
                .body
                .pointer("/sender/name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.trim().is_empty());
            (!named).then(|| user_of(&s.body)).flatten()
        };
        let key = |user: &str| format!("{}:{user}", ctx.channel_id);
        for s in splits.iter_mut() {
            let Some(user) = nameless(s) else { continue };
            match ctx.cache.get(&key(&user)) {
                Some(Some(profile)) => {
                    if profile.as_object().is_some_and(|o| !o.is_empty()) {
                        s.body[PROFILE_FIELD] = profile;
                    }
                }
                Some(None) => {}
                None => {
                    // Taken before the lookup, so a burst of messages costs one lookup.
                    ctx.cache.put(key(&user), None);
                    let (http, base, creds) =
                        (ctx.http.clone(), ctx.base_url.to_owned(), ctx.creds.clone());
                    let cache = ctx.cache.clone();
                    let cache_key = key(&user);
                    tokio::spawn(async move {
                        if let Some(found) =
                            crate::outbound::user_details(&http, &base, &creds, &user).await
                        {
                            cache.put(cache_key, Some(found));
                        }
                    });
                }
            }
        }
    }

    /// The bot's welcome message, rendered as Viber's message object without a receiver, as
    /// the answer to `conversation_started` (Viber allows one, free).
    fn answer(creds: &ViberCredentials, bot: &BotRecord, splits: &[Split]) -> Option<String> {
        let welcome = bot
            .platform_settings
            .get(&Platform::Viber)?
            .welcome
            .as_ref()?;
        let opened = splits
            .iter()
            .any(|s| s.body.get("event").and_then(Value::as_str) == Some("conversation_started"));
        if !opened {
            return None;
        }
        match crate::outbound::welcome(creds, &bot.name, welcome) {
            Ok(body) => Some(body.to_string()),
            Err(e) => {
                tracing::warn!(bot_id = %bot.id, error = %e, "cannot render the Viber welcome message");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures as fx;
    use serde_json::json;

    fn creds() -> ViberCredentials {
        ViberCredentials {
            auth_token: fx::AUTH_TOKEN.into(),
            sender_name: Some("Shop".into()),
            sender_avatar: None,
        }
    }

    fn signed(signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, signature.parse().unwrap());
        h
    }

    fn envelope(callback: &Value) -> Option<IngressEnvelope> {
        let body = serde_json::to_vec(callback).unwrap();
        let mut splits = Viber::split("ch_1", &body).unwrap();
        assert!(splits.len() <= 1, "one envelope per callback");
        let s = splits.pop()?;
        Some(IngressEnvelope {
            v: V1,
            id: "env_01JH0000000000000000000001".into(),
            platform: Platform::Viber,
            channel_id: "ch_1".into(),
            bot_id: "bot_1".into(),
            received_at: Utc::now(),
            dedupe_key: s.dedupe_key,
            body: s.body,
            order_key: s.order_key,
        })
    }

    fn normalise(callback: Value) -> Vec<InboundEvent> {
        Viber::normalise(&envelope(&callback).expect("an envelope")).expect("normalises")
    }

    fn media(url: &str, caption: Option<&str>, filename: Option<&str>) -> Media {
        url_media(
            url.into(),
            caption.map(str::to_owned),
            filename.map(str::to_owned),
        )
    }

    #[test]
    fn every_callback_normalises_as_the_table_says() {
        let u = fx::USER;
        let text = |t: &str| Content::Text { text: t.into() };
        let tracking = r#"{"pb":{"COLOR_GREEN":"Green"}}"#;
        type Case = (
            Value,
            Option<(EventType, Option<Content>, Option<&'static str>)>,
        );
        let received = |c: Content| Some((EventType::MessageReceived, Some(c), None));
        let cases: Vec<Case> = vec![
            (fx::text(101, u, "hello"), received(text("hello"))),
            (
                fx::tracked_text(102, u, "COLOR_GREEN", tracking),
                received(Content::Postback {
                    payload: "COLOR_GREEN".into(),
                    title: Some("Green".into()),
                }),
            ),
            (
                fx::tracked_text(103, u, "something else", tracking),
                received(text("something else")),
            ),
            (
                fx::picture(104, u, "https://dl-media.viber.com/p.jpg", "Look"),
                received(Content::Image(media(
                    "https://dl-media.viber.com/p.jpg",
                    Some("Look"),
                    Some("photo.jpg"),
                ))),
            ),
            (
                fx::video(105, u, "https://dl-media.viber.com/v.mp4"),
                received(Content::Video(Media {
                    size_bytes: Some(2_000_000),
                    duration_ms: Some(12_000),
                    preview_url: Some("https://dl-media.viber.com/v.mp4".into()),
                    ..media("https://dl-media.viber.com/v.mp4", None, None)
                })),
            ),
            (
                fx::file(106, u, "https://dl-media.viber.com/r.pdf", "r.pdf"),
                received(Content::File(Media {
                    size_bytes: Some(30_000),
                    ..media("https://dl-media.viber.com/r.pdf", None, Some("r.pdf"))
                })),
            ),
            (
                fx::sticker(107, u, 40100),
                received(Content::Sticker { id: "40100".into() }),
            ),
            (
                fx::contact(108, u, "Rui", "+351910000002"),
                received(text("Rui\n+351910000002")),
            ),
            (
                fx::location(109, u, 38.7, -9.14),
                received(Content::Location(Location {
                    latitude: 38.7,
                    longitude: -9.14,
                    name: None,
                    address: None,
                })),
            ),
            (
                fx::url(110, u, "https://example.com/a"),
                received(text("https://example.com/a")),
            ),
            (
                fx::conversation_started(111, u, Some("poster-7")),
                Some((EventType::UserSubscribed, None, Some("poster-7"))),
            ),
            (
                fx::conversation_started(112, u, None),
                Some((EventType::UserSubscribed, None, None)),
            ),
            (
                fx::subscribed(113, u),
                Some((EventType::UserSubscribed, None, None)),
            ),
            (
                fx::unsubscribed(114, u),
                Some((EventType::UserUnsubscribed, None, None)),
            ),
            (
                fx::delivered(115, u),
                Some((EventType::MessageDelivered, None, None)),
            ),
            (fx::seen(116, u), Some((EventType::MessageRead, None, None))),
            (
                fx::failed(117, u, "keyboard is invalid"),
                Some((EventType::MessageFailed, None, None)),
            ),
            (fx::client_status(118, u), None),
            (fx::message(119, u, json!({"type": "rich_media"})), None),
        ];
        for (callback, expected) in cases {
            let token = callback["message_token"].to_string();
            let event = callback["event"].as_str().unwrap().to_owned();
            let events = normalise(callback.clone());
            let Some((event_type, content, referral)) = expected else {
                assert!(events.is_empty(), "{callback}: {events:?}");
                continue;
            };
            assert_eq!(events.len(), 1, "{callback}");
            let e = &events[0];
            assert_eq!(e.event_type, event_type, "{callback}");
            assert_eq!(
                e.message.as_ref().map(|m| m.content.clone()),
                content,
                "{callback}"
            );
            if let Some(m) = &e.message {
                assert_eq!(m.platform_message_id, token);
            }
            assert_eq!(e.referral.as_deref(), referral, "{callback}");
            assert_eq!(
                (e.sender.platform_user_id.as_str(), e.address.as_str()),
                (u, u)
            );
            assert_eq!(e.channel.platform, Platform::Viber);
            assert_eq!(
                e.occurred_at,
                DateTime::from_timestamp_millis(fx::TIME).unwrap()
            );
            assert_eq!(e.dedupe_key, format!("viber:ch_1:{event}:{token}:0"));
            let named = matches!(
                event.as_str(),
                "message" | "conversation_started" | "subscribed"
            );
            assert_eq!(e.sender.display_name.is_some(), named, "{callback}");
            if named {
                assert_eq!(e.sender.display_name.as_deref(), Some("Ana Lima"));
                assert_eq!(e.sender.locale.as_deref(), Some("pt"));
                assert_eq!(
                    e.sender.avatar_url.as_deref(),
                    Some("https://media-direct.cdn.viber.com/ana.jpg")
                );
            }
        }
    }

    #[test]
    fn receipts_name_the_bots_message_token() {
        let delivered = normalise(fx::delivered(5_741_311_803_571_721_087, fx::USER));
        let r = delivered[0].receipt.as_ref().unwrap();
        assert_eq!(r.platform_message_ids, ["5741311803571721087"]);
        assert_eq!(r.error, None);
        let failed = normalise(fx::failed(42, fx::USER, "bad keyboard"));
        let r = failed[0].receipt.as_ref().unwrap();
        let e = r.error.as_ref().unwrap();
        assert_eq!(
            (e.code.as_str(), r.platform_message_ids.as_slice()),
            ("platform_error", &["42".to_owned()][..])
        );
        assert!(e.message.contains("bad keyboard"), "{}", e.message);
    }

    #[test]
    fn delivered_and_seen_of_one_message_are_two_envelopes() {
        let keys: Vec<String> = [
            fx::delivered(7, fx::USER),
            fx::seen(7, fx::USER),
            fx::text(7, fx::USER, "x"),
        ]
        .iter()
        .map(|c| envelope(c).unwrap().dedupe_key)
        .collect();
        assert_eq!(
            keys,
            [
                "viber:ch_1:delivered:7",
                "viber:ch_1:seen:7",
                "viber:ch_1:message:7"
            ]
        );
        assert_eq!(
            envelope(&fx::text(8, fx::USER, "x"))
                .unwrap()
                .order_key
                .as_deref(),
            Some(fx::USER)
        );
    }

    #[test]
    fn the_webhook_check_publishes_nothing_and_malformed_callbacks_are_refused() {
        assert!(envelope(&fx::webhook(1)).is_none());
        for body in [
            &b"{nope"[..],
            br#"{"timestamp": 1}"#,
            br#"{"event": "message", "sender": {"id": "u"}}"#,
            br#"{"event": "seen", "message_token": null, "user_id": "u"}"#,
        ] {
            assert!(
                matches!(Viber::split("c", body), Err(Rejection::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let mut env = envelope(&fx::picture(1, fx::USER, "https://x/p.jpg", "")).unwrap();
        env.body["message"].as_object_mut().unwrap().remove("media");
        assert!(Viber::normalise(&env).is_err(), "a picture without media");
        let mut env = envelope(&fx::text(2, fx::USER, "x")).unwrap();
        env.body.as_object_mut().unwrap().remove("sender");
        assert!(
            Viber::normalise(&env).is_err(),
            "a message without its sender"
        );
    }

    #[test]
    fn the_signature_is_checked_in_either_case() {
        let body = serde_json::to_vec(&fx::text(1, fx::USER, "hi")).unwrap();
        let lower = fx::signature(fx::AUTH_TOKEN, &body);
        assert_eq!(lower.len(), 64);
        for sig in [lower.clone(), lower.to_ascii_uppercase()] {
            assert_eq!(Viber::verify(&creds(), &signed(&sig), &body), Ok(()));
        }
        let refused = |h: HeaderMap, body: &[u8]| {
            matches!(
                Viber::verify(&creds(), &h, body),
                Err(Rejection::Unauthorized(_))
            )
        };
        let mut tampered = body.clone();
        tampered.push(b' ');
        assert!(refused(
            signed(&fx::signature("another-token", &body)),
            &body
        ));
        assert!(refused(signed(&lower), &tampered));
        assert!(refused(signed(&lower[..62]), &body), "truncated");
        assert!(refused(signed("zz"), &body), "not hex");
        assert!(refused(HeaderMap::new(), &body), "unsigned");
    }

    fn bot(welcome: Option<Content>) -> BotRecord {
        let mut b: BotRecord = serde_json::from_value(json!({
            "v": 1, "id": "bot_1", "tenant_id": "ten_1", "name": "Corner Shop", "enabled": true,
            "webhook": {"events": ["*"]}, "webhook_secrets": [],
            "updated_at": "2026-01-01T00:00:00Z"}))
        .unwrap();
        if let Some(w) = welcome {
            b.platform_settings.insert(
                Platform::Viber,
                patchbay_contract::PlatformSettings {
                    send_outside_window: false,
                    welcome: Some(w),
                },
            );
        }
        b
    }

    #[test]
    fn conversation_started_is_answered_with_the_welcome_message() {
        let splits = |c: Value| Viber::split("ch_1", &serde_json::to_vec(&c).unwrap()).unwrap();
        let hello = Content::Text {
            text: "Welcome to the shop!".into(),
        };
        let opened = splits(fx::conversation_started(9, fx::USER, None));
        let answer = Viber::answer(&creds(), &bot(Some(hello.clone())), &opened).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&answer).unwrap(),
            json!({"type": "text", "text": "Welcome to the shop!", "sender": {"name": "Shop"}})
        );
        let unnamed = ViberCredentials {
            sender_name: None,
            ..creds()
        };
        let answer = Viber::answer(&unnamed, &bot(Some(hello.clone())), &opened).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&answer).unwrap()["sender"],
            json!({"name": "Corner Shop"}),
            "the bot's name without a sender_name"
        );
        assert_eq!(
            Viber::answer(&creds(), &bot(None), &opened),
            None,
            "no welcome set"
        );
        let message = splits(fx::text(10, fx::USER, "hi"));
        assert_eq!(
            Viber::answer(&creds(), &bot(Some(hello)), &message),
            None,
            "only to conversation_started"
        );
    }

    #[tokio::test]
    async fn nameless_senders_are_looked_up_off_the_messages_way_once() {
        let viber = patchbay_testkit::viber::FakeViber::start().await;
        viber.add_bot(fx::AUTH_TOKEN, "Shop");
        viber.add_subscriber(fx::AUTH_TOKEN, fx::USER);
        viber.set_profile(
            fx::USER,
            json!({"name": "Ana Lima", "avatar": "https://a/ana.jpg", "language": "pt"}),
        );
        let http = patchbay_platform::http::client_builder(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        let cache = patchbay_platform::enrich::Cache::default();
        let base = viber.base_url();
        let mut nameless = fx::text(1, fx::USER, "a");
        nameless["sender"] = json!({"id": fx::USER});
        let body = serde_json::to_vec(&nameless).unwrap();
        let creds = creds();
        let enrich = |splits: &mut Vec<Split>| {
            let ctx = Context {
                http: &http,
                creds: &creds,
                base_url: &base,
                channel_id: "ch_1",
                cache: &cache,
                bus: None,
            };
            let mut owned = std::mem::take(splits);
            async move {
                Viber::enrich(ctx, &mut owned).await;
                owned
            }
        };
        let mut first = Viber::split("ch_1", &body).unwrap();
        first = enrich(&mut first).await;
        assert!(
            first[0].body.get(PROFILE_FIELD).is_none(),
            "published without waiting"
        );
        let calls = viber
            .wait_for(
                patchbay_testkit::viber::USER_DETAILS_PATH,
                1,
                std::time::Duration::from_secs(5),
            )
            .await;
        assert_eq!(calls[0].body, json!({"id": fx::USER}));
        let later = Viber::split("ch_1", &body).unwrap();
        let later = patchbay_testkit::eventually(
            std::time::Duration::from_secs(5),
            "the profile cached",
            || {
                let mut s = later.clone();
                let fut = enrich(&mut s);
                async move {
                    let s = fut.await;
                    s[0].body.get(PROFILE_FIELD).is_some().then_some(s)
                }
            },
        )
        .await;
        later_check(&later[0]);
        let named = Viber::split(
            "ch_1",
            &serde_json::to_vec(&fx::text(2, fx::USER, "b")).unwrap(),
        )
        .unwrap();
        let named = enrich(&mut named.clone()).await;
        assert!(
            named[0].body.get(PROFILE_FIELD).is_none(),
            "Viber named the sender"
        );
        assert_eq!(
            viber
                .calls_to(patchbay_testkit::viber::USER_DETAILS_PATH)
                .len(),
            1,
            "one lookup per user"
        );
    }

    fn later_check(s: &Split) {
        let env = IngressEnvelope {
            v: V1,
            id: "env_01JH0000000000000000000002".into(),
            platform: Platform::Viber,
            channel_id: "ch_1".into(),
            bot_id: "bot_1".into(),
            received_at: Utc::now(),
            dedupe_key: s.dedupe_key.clone(),
            body: s.body.clone(),
            order_key: None,
        };
        let e = Viber::normalise(&env).unwrap();
        assert_eq!(e[0].sender.display_name.as_deref(), Some("Ana Lima"));
        assert_eq!(e[0].sender.avatar_url.as_deref(), Some("https://a/ana.jpg"));
        assert_eq!(e[0].sender.locale.as_deref(), Some("pt"));
    }
}
