//! Inbound Telegram: verification, splitting and normalisation of `Update`s.
//!
//! | update | event |
//! |---|---|
//! | `message` with `/start [ref]` | `user.subscribed` (with `ref`) |
//! | `message` with text, photo, document, audio, voice, video, video_note, animation, sticker, location, venue | `message.received` |
//! | `callback_query` | `message.received` with `postback` content |
//! | `my_chat_member` → `kicked` / `member` | `user.unsubscribed` / `user.subscribed` |
//! | anything else (edits, channel posts, polls, contacts, …) | none (counted, not an error) |
//!
//! Groups (`chat.type` `group` or `supergroup`): the group is the conversation (`address` its
//! chat id, `chat` its kind and title) and the member who wrote its sender; the bot added to a
//! group or removed (`my_chat_member`) is an event of the group itself, sent by it.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use patchbay_contract::content::{Location, Media};
use patchbay_contract::ids::{derive_id, prefix};
use patchbay_contract::{
    ChannelRef, ChatKind, Content, EventType, InboundEvent, InboundMessage, IngressEnvelope,
    Platform, PlatformChat, PlatformUser, V1,
};
use patchbay_platform::{InboundAdapter, NormaliseError, Rejection, Split};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::TelegramCredentials;

/// The header Telegram echoes the webhook's `secret_token` in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// The Telegram adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Telegram;

#[derive(Debug, Deserialize)]
struct Update {
    update_id: i64,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    callback_query: Option<CallbackQuery>,
    #[serde(default)]
    my_chat_member: Option<ChatMemberUpdated>,
}

#[derive(Debug, Deserialize)]
struct User {
    id: i64,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    language_code: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Chat {
    id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    title: Option<String>,
}

impl Chat {
    /// The chat of a one-to-one exchange with `user`.
    fn private(user: i64) -> Self {
        Chat {
            id: user,
            kind: "private".into(),
            title: None,
        }
    }

    /// A group's description (none for a private chat).
    fn group(&self) -> Option<PlatformChat> {
        matches!(self.kind.as_str(), "group" | "supergroup").then(|| PlatformChat {
            kind: ChatKind::Group,
            title: self.title.clone(),
        })
    }

    /// The group itself as the actor of an event about it (the bot added or removed).
    fn as_sender(&self) -> PlatformUser {
        PlatformUser {
            platform_user_id: self.id.to_string(),
            display_name: self.title.clone(),
            username: None,
            locale: None,
            avatar_url: None,
            email: None,
            phone: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct FileRef {
    file_id: String,
    #[serde(default)]
    file_name: Option<String>,
    #[serde(default)]
    mime_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TgLocation {
    latitude: f64,
    longitude: f64,
}

#[derive(Debug, Deserialize)]
struct Venue {
    location: TgLocation,
    title: String,
    address: String,
}

#[derive(Debug, Deserialize)]
struct Message {
    message_id: i64,
    date: i64,
    #[serde(default)]
    from: Option<User>,
    chat: Chat,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    caption: Option<String>,
    #[serde(default)]
    photo: Option<Vec<FileRef>>,
    #[serde(default)]
    document: Option<FileRef>,
    #[serde(default)]
    audio: Option<FileRef>,
    #[serde(default)]
    voice: Option<FileRef>,
    #[serde(default)]
    video: Option<FileRef>,
    #[serde(default)]
    video_note: Option<FileRef>,
    #[serde(default)]
    animation: Option<FileRef>,
    #[serde(default)]
    sticker: Option<FileRef>,
    #[serde(default)]
    location: Option<TgLocation>,
    #[serde(default)]
    venue: Option<Venue>,
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    id: String,
    from: User,
    #[serde(default)]
    message: Option<CallbackMessage>,
    #[serde(default)]
    data: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CallbackMessage {
    chat: Chat,
}

#[derive(Debug, Deserialize)]
struct ChatMemberUpdated {
    chat: Chat,
    from: User,
    date: i64,
    new_chat_member: ChatMember,
}

#[derive(Debug, Deserialize)]
struct ChatMember {
    status: String,
}

fn sender(u: &User) -> PlatformUser {
    let display_name = match (&u.first_name, &u.last_name) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (Some(f), None) => Some(f.clone()),
        (None, Some(l)) => Some(l.clone()),
        (None, None) => u.username.clone(),
    };
    PlatformUser {
        platform_user_id: u.id.to_string(),
        display_name,
        username: u.username.clone(),
        locale: u.language_code.clone(),
        avatar_url: None,
        email: None,
        phone: None,
    }
}

fn time(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).unwrap_or_else(Utc::now)
}

fn media(f: &FileRef, caption: &Option<String>) -> Media {
    Media {
        url: None,
        file_id: Some(f.file_id.clone()),
        caption: caption.clone(),
        filename: f.file_name.clone(),
        mime_type: f.mime_type.clone(),
        media_id: None,
        download_url: None,
        preview_url: None,
        duration_ms: None,
        size_bytes: None,
    }
}

/// What a message carries, or `None` for kinds Patchbay does not model.
fn content(m: &Message) -> Option<Content> {
    if let Some(t) = &m.text {
        return Some(Content::Text { text: t.clone() });
    }
    if let Some(sizes) = &m.photo {
        return sizes.last().map(|f| Content::Image(media(f, &m.caption)));
    }
    if let Some(f) = &m.voice {
        return Some(Content::Voice(media(f, &m.caption)));
    }
    if let Some(f) = &m.audio {
        return Some(Content::Audio(media(f, &m.caption)));
    }
    if let Some(f) = m
        .video
        .as_ref()
        .or(m.video_note.as_ref())
        .or(m.animation.as_ref())
    {
        return Some(Content::Video(media(f, &m.caption)));
    }
    if let Some(f) = &m.document {
        return Some(Content::File(media(f, &m.caption)));
    }
    if let Some(f) = &m.sticker {
        return Some(Content::Sticker {
            id: f.file_id.clone(),
        });
    }
    if let Some(v) = &m.venue {
        return Some(Content::Location(Location {
            latitude: v.location.latitude,
            longitude: v.location.longitude,
            name: Some(v.title.clone()),
            address: Some(v.address.clone()),
        }));
    }
    m.location.as_ref().map(|l| {
        Content::Location(Location {
            latitude: l.latitude,
            longitude: l.longitude,
            name: None,
            address: None,
        })
    })
}

/// `Some(ref)` when `text` is the `/start` command (with an optional deep-link parameter).
fn start_command(text: &str) -> Option<Option<String>> {
    let rest = text.strip_prefix("/start")?;
    let rest = rest
        .strip_prefix("@")
        .map_or(rest, |r| r.split_once(' ').map_or("", |(_, a)| a));
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let param = rest.trim();
    Some((!param.is_empty()).then(|| param.to_owned()))
}

impl InboundAdapter for Telegram {
    const PLATFORM: Platform = Platform::Telegram;
    const SIGNATURE_HEADER: Option<&'static str> = Some(SECRET_HEADER);
    type Credentials = TelegramCredentials;

    fn verify(
        creds: &TelegramCredentials,
        headers: &HeaderMap,
        _body: &[u8],
    ) -> Result<(), Rejection> {
        let given = headers.get(SECRET_HEADER).ok_or_else(|| {
            Rejection::Unauthorized("missing X-Telegram-Bot-Api-Secret-Token".into())
        })?;
        if bool::from(given.as_bytes().ct_eq(creds.secret_token.as_bytes())) {
            Ok(())
        } else {
            Err(Rejection::Unauthorized(
                "X-Telegram-Bot-Api-Secret-Token does not match".into(),
            ))
        }
    }

    fn split(channel_id: &str, body: &[u8]) -> Result<Vec<Split>, Rejection> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Rejection::Malformed(format!("not JSON: {e}")))?;
        let update_id = value
            .get("update_id")
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| Rejection::Malformed("an Update needs an integer update_id".into()))?;
        // The chat the update belongs to, wherever this kind of update keeps it.
        let order_key = value.as_object().and_then(|o| {
            o.iter().find_map(|(k, v)| {
                (k != "update_id").then(|| {
                    v.pointer("/chat/id")
                        .or_else(|| v.pointer("/message/chat/id"))
                        .or_else(|| v.pointer("/from/id"))
                        .map(|id| id.to_string())
                })?
            })
        });
        Ok(vec![Split {
            dedupe_key: format!("telegram:{channel_id}:{update_id}"),
            body: value,
            order_key,
            route: None,
        }])
    }

    fn normalise(env: &IngressEnvelope) -> Result<Vec<InboundEvent>, NormaliseError> {
        let update: Update = serde_json::from_value(env.body.clone())
            .map_err(|e| NormaliseError(format!("not a Telegram Update: {e}")))?;
        let event =
            |event_type, sender: PlatformUser, chat: &Chat, occurred_at, message, referral| {
                InboundEvent {
                    v: V1,
                    id: derive_id(prefix::EVENT, &env.id, 0),
                    event_type,
                    bot_id: env.bot_id.clone(),
                    channel: ChannelRef {
                        id: env.channel_id.clone(),
                        platform: Platform::Telegram,
                    },
                    occurred_at,
                    sender,
                    address: chat.id.to_string(),
                    chat: chat.group(),
                    dedupe_key: format!("{}:0", env.dedupe_key),
                    message,
                    referral,
                    resubscribed: false,
                    receipt: None,
                }
            };
        if let Some(m) = &update.message {
            let Some(from) = &m.from else {
                return Ok(vec![]);
            };
            if let Some(referral) = m.text.as_deref().and_then(start_command) {
                return Ok(vec![event(
                    EventType::UserSubscribed,
                    sender(from),
                    &m.chat,
                    time(m.date),
                    None,
                    referral,
                )]);
            }
            let Some(content) = content(m) else {
                return Ok(vec![]);
            };
            return Ok(vec![event(
                EventType::MessageReceived,
                sender(from),
                &m.chat,
                time(m.date),
                Some(InboundMessage {
                    platform_message_id: m.message_id.to_string(),
                    content,
                }),
                None,
            )]);
        }
        if let Some(q) = &update.callback_query {
            let private = Chat::private(q.from.id);
            let chat = q.message.as_ref().map_or(&private, |m| &m.chat);
            return Ok(vec![event(
                EventType::MessageReceived,
                sender(&q.from),
                chat,
                env.received_at,
                Some(InboundMessage {
                    platform_message_id: format!("cb:{}", q.id),
                    content: Content::Postback {
                        payload: q.data.clone().unwrap_or_default(),
                        title: None,
                    },
                }),
                None,
            )]);
        }
        if let Some(c) = &update.my_chat_member {
            let event_type = match c.new_chat_member.status.as_str() {
                "kicked" | "left" => EventType::UserUnsubscribed,
                "member" => EventType::UserSubscribed,
                _ => return Ok(vec![]),
            };
            // In a group, the event is the group's (whoever added or removed the bot).
            let actor = match c.chat.group() {
                Some(_) => c.chat.as_sender(),
                None => sender(&c.from),
            };
            return Ok(vec![event(
                event_type,
                actor,
                &c.chat,
                time(c.date),
                None,
                None,
            )]);
        }
        let _ = update.update_id;
        Ok(vec![])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use serde_json::{Value, json};

    fn envelope(body: Value) -> IngressEnvelope {
        IngressEnvelope {
            v: V1,
            id: patchbay_contract::ids::new_id("env"),
            platform: Platform::Telegram,
            channel_id: "ch_1".into(),
            bot_id: "bot_1".into(),
            received_at: Utc::now(),
            dedupe_key: "telegram:ch_1:1".into(),
            body,
            order_key: None,
        }
    }

    fn one(body: Value) -> InboundEvent {
        let mut events = Telegram::normalise(&envelope(body)).expect("normalises");
        assert_eq!(events.len(), 1);
        events.remove(0)
    }

    #[test]
    fn text_message() {
        let e = one(fixtures::text_update(90001, 4242, "hello"));
        assert_eq!(e.event_type, EventType::MessageReceived);
        assert_eq!(e.address, "4242");
        assert_eq!(e.sender.platform_user_id, "4242");
        assert_eq!(e.sender.display_name.as_deref(), Some("Ana Lima"));
        assert_eq!(e.sender.locale.as_deref(), Some("pt"));
        let m = e.message.unwrap();
        assert_eq!(m.platform_message_id, "90001");
        assert_eq!(
            m.content,
            Content::Text {
                text: "hello".into()
            }
        );
    }

    #[test]
    fn start_is_a_subscription_with_its_deep_link() {
        let e = one(fixtures::text_update(1, 4242, "/start promo_42"));
        assert_eq!(e.event_type, EventType::UserSubscribed);
        assert_eq!(e.referral.as_deref(), Some("promo_42"));
        assert!(e.message.is_none());
        assert_eq!(one(fixtures::text_update(2, 4242, "/start")).referral, None);
        assert_eq!(
            one(fixtures::text_update(3, 4242, "/started")).event_type,
            EventType::MessageReceived
        );
    }

    #[test]
    fn photo_takes_the_largest_size() {
        let e = one(fixtures::photo_update(2, 4242));
        match e.message.unwrap().content {
            Content::Image(m) => {
                assert_eq!(m.file_id.as_deref(), Some("AgAC-large"));
                assert_eq!(m.caption.as_deref(), Some("receipt"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn button_press_is_a_postback() {
        let e = one(fixtures::callback_update(3, 4242, "order:confirm"));
        assert_eq!(
            e.message.unwrap().content,
            Content::Postback {
                payload: "order:confirm".into(),
                title: None
            }
        );
    }

    #[test]
    fn blocking_and_unblocking() {
        assert_eq!(
            one(fixtures::member_update(4, 4242, "kicked")).event_type,
            EventType::UserUnsubscribed
        );
        assert_eq!(
            one(fixtures::member_update(5, 4242, "member")).event_type,
            EventType::UserSubscribed
        );
    }

    #[test]
    fn unmodelled_updates_yield_nothing_and_garbage_is_an_error() {
        let edited = json!({"update_id": 6, "edited_message": {"message_id": 1, "date": 0, "chat": {"id": 1}}});
        assert!(Telegram::normalise(&envelope(edited)).unwrap().is_empty());
        assert!(Telegram::normalise(&envelope(json!({"update_id": "x"}))).is_err());
        assert!(
            Telegram::normalise(&envelope(json!({"update_id": 7, "message": {"chat": 1}})))
                .is_err()
        );
    }

    #[test]
    fn in_a_group_the_group_is_the_chat_and_the_member_the_sender() {
        let group = json!({"id": -1001, "type": "supergroup", "title": "Shop fans"});
        let m = one(json!({"update_id": 1, "message": {
            "message_id": 5, "date": 1767225600, "chat": group,
            "from": {"id": 4242, "first_name": "Ana"}, "text": "hi all"}}));
        assert_eq!(
            (m.address.as_str(), m.sender.platform_user_id.as_str()),
            ("-1001", "4242")
        );
        let chat = m.chat.clone().expect("a group");
        assert_eq!(
            (chat.kind, chat.title.as_deref()),
            (ChatKind::Group, Some("Shop fans"))
        );
        assert_eq!(m.member_chat(), Some(&chat));
        let cb = one(json!({"update_id": 2, "callback_query": {
            "id": "q1", "from": {"id": 4242}, "data": "x",
            "message": {"message_id": 6, "date": 1767225600, "chat": group}}}));
        assert_eq!(cb.address, "-1001");
        assert!(cb.member_chat().is_some());
        // The bot added to the group: the group's own event.
        let added = one(json!({"update_id": 3, "my_chat_member": {
            "chat": group, "from": {"id": 4242}, "date": 1767225600,
            "new_chat_member": {"status": "member"}}}));
        assert_eq!(added.event_type, EventType::UserSubscribed);
        assert_eq!(added.sender.platform_user_id, "-1001");
        assert_eq!(added.sender.display_name.as_deref(), Some("Shop fans"));
        assert!(added.chat.is_some() && added.member_chat().is_none());
        // A private chat has none.
        let private = one(fixtures::text_update(90001, 4242, "hello"));
        assert!(private.chat.is_none());
    }

    #[test]
    fn verify_compares_the_secret_header() {
        let creds = TelegramCredentials {
            bot_token: "1:a".into(),
            secret_token: "s3cret".into(),
        };
        let mut h = HeaderMap::new();
        assert!(Telegram::verify(&creds, &h, b"").is_err());
        h.insert(SECRET_HEADER, "wrong".parse().unwrap());
        assert!(Telegram::verify(&creds, &h, b"").is_err());
        h.insert(SECRET_HEADER, "s3cret".parse().unwrap());
        assert!(Telegram::verify(&creds, &h, b"").is_ok());
    }

    #[test]
    fn split_keys_by_update_id() {
        let s = Telegram::split(
            "ch_9",
            br#"{"update_id": 90001, "message": {"chat": {"id": -42}}}"#,
        )
        .unwrap();
        assert_eq!(s[0].dedupe_key, "telegram:ch_9:90001");
        assert_eq!(s[0].order_key.as_deref(), Some("-42"));
        let cb = serde_json::to_vec(&crate::fixtures::callback_update(1, 77, "x")).unwrap();
        assert_eq!(
            Telegram::split("ch_9", &cb).unwrap()[0]
                .order_key
                .as_deref(),
            Some("77")
        );
        assert!(matches!(
            Telegram::split("ch_9", b"{nope"),
            Err(Rejection::Malformed(_))
        ));
        assert!(matches!(
            Telegram::split("ch_9", b"{}"),
            Err(Rejection::Malformed(_))
        ));
    }
}
