//! chat-api (WhatsApp) compatibility: what a bot with the `chat_api` webhook flavour receives,
//! in chat-api's shapes (`docs/compat.md`, "chat-api"): `{"messages": [...]}` for what users
//! wrote, `{"ack": [...]}` for the statuses of the bot's messages. chat-api documents no
//! signature; the body carries `instanceId` (the channel) as 1msg's webhooks do.

use serde_json::{Value, json};

use crate::content::Media;
use crate::{Content, EventType, TenantEvent};

/// chat-api's id of a WhatsApp user's chat: `<digits>@c.us`.
pub fn chat_id(phone: &str) -> String {
    format!("{}@c.us", phone.trim_start_matches('+'))
}

/// The digits of a phone number or chat id (`79995253422`, `+7 999…`, `79995253422@c.us`).
pub fn phone_of(phone_or_chat_id: &str) -> String {
    phone_or_chat_id
        .split('@')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect()
}

/// chat-api's `type` and `body` of a message's content (`body`: the text, a file's URL, a
/// place's coordinates), and its caption.
pub fn type_and_body(content: &Content) -> (&'static str, String, Option<String>) {
    let media = |m: &Media| {
        (
            m.url
                .clone()
                .or_else(|| m.media_id.clone())
                .unwrap_or_default(),
            m.caption.clone(),
        )
    };
    match content {
        Content::Text { text } => ("chat", text.clone(), None),
        Content::Postback { payload, title } => (
            "chat",
            title.clone().unwrap_or_else(|| payload.clone()),
            None,
        ),
        Content::Image(m) => {
            let (b, c) = media(m);
            ("image", b, c)
        }
        Content::Video(m) => {
            let (b, c) = media(m);
            ("video", b, c)
        }
        Content::Audio(m) => {
            let (b, c) = media(m);
            ("audio", b, c)
        }
        Content::Voice(m) => {
            let (b, c) = media(m);
            ("ptt", b, c)
        }
        Content::File(m) => {
            let (b, c) = media(m);
            ("document", b, c)
        }
        Content::Location(l) => ("location", format!("{};{}", l.latitude, l.longitude), None),
        Content::Sticker { id } => ("sticker", id.clone(), None),
        other => ("chat", other.kind().to_owned(), None),
    }
}

/// The body chat-api would post for `event`, when it has such an event. `address` is the
/// user's phone number when the event names it (what users wrote carries it); else the chat is
/// named by the user's platform id.
pub fn callback_body(event: &TenantEvent, address: Option<&str>) -> Option<Value> {
    // chat-api has no broadcast events.
    let conv = event.conversation()?;
    let chat = chat_id(address.unwrap_or(&conv.user.platform_user_id));
    let instance = &conv.channel.id;
    match event.event_type {
        EventType::MessageReceived => {
            let message = event.message.as_ref()?;
            let (kind, body, caption) = type_and_body(message.content.as_ref()?);
            Some(json!({
                "instanceId": instance,
                "messages": [{
                    "id": message.platform_message_id.clone().unwrap_or_else(|| message.id.clone()),
                    "body": body,
                    "fromMe": false,
                    "self": 0,
                    "isForwarded": false,
                    "author": chat,
                    "time": event.created_at.timestamp(),
                    "chatId": chat,
                    "type": kind,
                    "senderName": conv.user.display_name.clone().unwrap_or_default(),
                    "caption": caption,
                    "quotedMsgId": null,
                }],
            }))
        }
        EventType::MessageSent
        | EventType::MessageDelivered
        | EventType::MessageRead
        | EventType::MessageFailed => {
            let message = event.message.as_ref()?;
            let status = match event.event_type {
                EventType::MessageSent => "sent",
                EventType::MessageDelivered => "delivered",
                EventType::MessageRead => "viewed",
                _ => "failed",
            };
            Some(json!({
                "instanceId": instance,
                "ack": [{"id": message.id, "chatId": chat, "status": status}],
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_and_chat_ids_name_the_same_digits() {
        assert_eq!(phone_of("79995253422"), "79995253422");
        assert_eq!(phone_of("79995253422@c.us"), "79995253422");
        assert_eq!(phone_of("+7 999 525-34-22"), "79995253422");
        assert_eq!(chat_id("+79995253422"), "79995253422@c.us");
    }
}
