//! Viber callbacks as Viber sends them (`reference/platforms.md` §7.1–§7.2; the field layout
//! of the official SDKs' request tests): one event per POST, with `event`, `timestamp`
//! (milliseconds), `chat_hostname` and `message_token` (a 64-bit number), and the event's own
//! fields. Ids, tokens and names are fake. For the unit tests here and the end-to-end suite.

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

/// The bot's auth token the fixtures are signed with.
pub const AUTH_TOKEN: &str = "4453b6ac12345678-e02c5f12174805f9-daec9cbb5448c51f";
/// A user (Viber ids are Base64 text).
pub const USER: &str = "01234567890A=";
/// When the fixtures happened: 2026-01-01T00:00:00Z, in milliseconds.
pub const TIME: i64 = 1_767_225_600_000;

/// `X-Viber-Content-Signature` of `body` under `auth_token`: lowercase hex of HMAC-SHA256, as
/// Viber sends it (computed here independently of the adapter's check).
pub fn signature(auth_token: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length: the empty answer (never a match) cannot happen.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(auth_token.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The user as a `message` names its sender (and `conversation_started` / `subscribed` their
/// `user`).
pub fn user(id: &str) -> Value {
    json!({"id": id, "name": "Ana Lima", "avatar": "https://media-direct.cdn.viber.com/ana.jpg",
           "language": "pt", "country": "PT", "api_version": 10})
}

/// The fields every callback has.
fn callback(event: &str, token: u64, fields: Value) -> Value {
    let mut c = json!({"event": event, "timestamp": TIME, "chat_hostname": "SN-CHAT-05_",
                       "message_token": token});
    if let (Some(o), Value::Object(f)) = (c.as_object_mut(), fields) {
        o.extend(f);
    }
    c
}

/// A `message` callback from `from` carrying `message`.
pub fn message(token: u64, from: &str, message: Value) -> Value {
    callback(
        "message",
        token,
        json!({"sender": user(from), "message": message, "silent": false}),
    )
}

/// A text message.
pub fn text(token: u64, from: &str, text: &str) -> Value {
    message(token, from, json!({"type": "text", "text": text}))
}

/// A text message echoing the `tracking_data` of the bot's last message (a keyboard reply).
pub fn tracked_text(token: u64, from: &str, text: &str, tracking_data: &str) -> Value {
    message(
        token,
        from,
        json!({"type": "text", "text": text, "tracking_data": tracking_data}),
    )
}

/// A picture with a description.
pub fn picture(token: u64, from: &str, media: &str, caption: &str) -> Value {
    message(
        token,
        from,
        json!({"type": "picture", "media": media, "thumbnail": media, "text": caption,
               "file_name": "photo.jpg", "size": 120_000}),
    )
}

/// A video.
pub fn video(token: u64, from: &str, media: &str) -> Value {
    message(
        token,
        from,
        json!({"type": "video", "media": media, "thumbnail": media, "size": 2_000_000,
               "duration": 12}),
    )
}

/// A file.
pub fn file(token: u64, from: &str, media: &str, name: &str) -> Value {
    message(
        token,
        from,
        json!({"type": "file", "media": media, "file_name": name, "size": 30_000}),
    )
}

/// A sticker.
pub fn sticker(token: u64, from: &str, sticker_id: u64) -> Value {
    message(
        token,
        from,
        json!({"type": "sticker", "sticker_id": sticker_id,
               "media": "https://viber-stickers.example/40100.png"}),
    )
}

/// A shared contact.
pub fn contact(token: u64, from: &str, name: &str, phone: &str) -> Value {
    message(
        token,
        from,
        json!({"type": "contact", "contact": {"name": name, "phone_number": phone,
                                              "avatar": "https://cdn.example/c.jpg"}}),
    )
}

/// A shared location.
pub fn location(token: u64, from: &str, lat: f64, lon: f64) -> Value {
    message(
        token,
        from,
        json!({"type": "location", "location": {"lat": lat, "lon": lon}}),
    )
}

/// A shared link.
pub fn url(token: u64, from: &str, url: &str) -> Value {
    message(token, from, json!({"type": "url", "media": url}))
}

/// The user opened the chat (from a deep link with `context`, when given).
pub fn conversation_started(token: u64, id: &str, context: Option<&str>) -> Value {
    let mut c = callback(
        "conversation_started",
        token,
        json!({"type": "open", "user": user(id), "subscribed": false}),
    );
    if let Some(ctx) = context {
        c["context"] = json!(ctx);
    }
    c
}

/// The user subscribed.
pub fn subscribed(token: u64, id: &str) -> Value {
    callback("subscribed", token, json!({"user": user(id)}))
}

/// The user unsubscribed.
pub fn unsubscribed(token: u64, id: &str) -> Value {
    callback("unsubscribed", token, json!({"user_id": id}))
}

/// The bot's message `token` reached the user.
pub fn delivered(token: u64, id: &str) -> Value {
    callback("delivered", token, json!({"user_id": id}))
}

/// The user saw the bot's message `token`.
pub fn seen(token: u64, id: &str) -> Value {
    callback("seen", token, json!({"user_id": id}))
}

/// The bot's message `token` could not be delivered.
pub fn failed(token: u64, id: &str, desc: &str) -> Value {
    callback("failed", token, json!({"user_id": id, "desc": desc}))
}

/// The check callback Viber posts during `set_webhook`.
pub fn webhook(token: u64) -> Value {
    callback("webhook", token, json!({}))
}

/// An event Patchbay does not model.
pub fn client_status(token: u64, id: &str) -> Value {
    callback("client_status", token, json!({"user_id": id}))
}

/// `c` with its `timestamp` set to `at`.
pub fn at(mut c: Value, at: i64) -> Value {
    c["timestamp"] = json!(at);
    c
}
