//! Kik webhooks as Kik sends them (`reference/platforms.md` §5.2; the field layout of the
//! official SDK's incoming-message tests): a POST is `{"messages": [...]}`, each message with
//! `type`, `id` (a UUID), `chatId`, `from`, `participants`, `timestamp` (milliseconds, as in
//! captured live payloads), `mention`, `readReceiptRequested` and its type's fields. Ids and
//! usernames are fake. For the unit tests here and the end-to-end suite.

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

/// The bot the fixtures are for.
pub const BOT: &str = "patchbay.bot";
/// Its API key.
pub const API_KEY: &str = "7b939d69-e840-4d22-aab8-4188c2198f8a";
/// A user.
pub const USER: &str = "ana99";
/// The user's chat with the bot.
pub const CHAT_ID: &str = "b3be3bc15dbe59931666c06290abd944aaa769bb2ecaaf859bfb65678880afab";
/// When the fixtures happened: 2026-01-01T00:00:00Z, in milliseconds.
pub const TIME: i64 = 1_767_225_600_000;

/// `X-Kik-Signature` of `body` under `api_key`: uppercase hex of HMAC-SHA1, as Kik sends it
/// (computed here independently of the adapter's check).
pub fn signature(api_key: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length: the empty answer (never a match) cannot happen.
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(api_key.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// One POST holding `messages`.
pub fn post(messages: Vec<Value>) -> Value {
    json!({ "messages": messages })
}

/// The fields every message has, from `from` in the fixtures' chat at `TIME`.
fn message(kind: &str, id: &str, from: &str, fields: Value) -> Value {
    let mut m = json!({
        "type": kind,
        "id": id,
        "chatId": CHAT_ID,
        "from": from,
        "participants": [from],
        "timestamp": TIME,
        "mention": null,
        "readReceiptRequested": true,
    });
    if let (Some(o), Value::Object(f)) = (m.as_object_mut(), fields) {
        o.extend(f);
    }
    m
}

/// A text message.
pub fn text(id: &str, from: &str, body: &str) -> Value {
    message("text", id, from, json!({ "body": body }))
}

/// A tap on a suggested response that carried `metadata`: a text message with the response's
/// body and its metadata.
pub fn suggested_tap(id: &str, from: &str, body: &str, metadata: Value) -> Value {
    message(
        "text",
        id,
        from,
        json!({ "body": body, "metadata": metadata }),
    )
}

/// A link message.
pub fn link(id: &str, from: &str, url: &str, title: &str, text: &str) -> Value {
    message(
        "link",
        id,
        from,
        json!({"url": url, "title": title, "text": text, "noForward": false,
               "kikJsData": null, "attribution": {"name": "Webpage", "iconUrl": "https://example.com/icon.png"}}),
    )
}

/// A picture.
pub fn picture(id: &str, from: &str, pic_url: &str) -> Value {
    message(
        "picture",
        id,
        from,
        json!({"picUrl": pic_url, "attribution": {"name": "gallery", "iconUrl": "https://example.com/g.png"}}),
    )
}

/// A video.
pub fn video(id: &str, from: &str, video_url: &str) -> Value {
    message(
        "video",
        id,
        from,
        json!({"videoUrl": video_url, "muted": false, "autoplay": true, "loop": false,
               "attribution": {"name": "camera", "iconUrl": "https://example.com/c.png"}}),
    )
}

/// A sticker.
pub fn sticker(id: &str, from: &str, pack: &str, url: &str) -> Value {
    message(
        "sticker",
        id,
        from,
        json!({"stickerPackId": pack, "stickerUrl": url}),
    )
}

/// The data of a scanned Kik Code.
pub fn scan_data(id: &str, from: &str, data: &str) -> Value {
    message("scan-data", id, from, json!({ "data": data }))
}

/// The user opened the chat with the bot for the first time.
pub fn start_chatting(id: &str, from: &str) -> Value {
    message("start-chatting", id, from, json!({}))
}

/// The user started or stopped typing.
pub fn is_typing(id: &str, from: &str, typing: bool) -> Value {
    message("is-typing", id, from, json!({ "isTyping": typing }))
}

/// The friends the user picked with a friend-picker response.
pub fn friend_picker(id: &str, from: &str, picked: &[&str]) -> Value {
    message("friend-picker", id, from, json!({ "picked": picked }))
}

/// Messages of the bot delivered to the user's device.
pub fn delivery_receipt(id: &str, from: &str, message_ids: &[&str]) -> Value {
    message(
        "delivery-receipt",
        id,
        from,
        json!({ "messageIds": message_ids }),
    )
}

/// Messages of the bot the user read.
pub fn read_receipt(id: &str, from: &str, message_ids: &[&str]) -> Value {
    message(
        "read-receipt",
        id,
        from,
        json!({ "messageIds": message_ids }),
    )
}

/// A message of a type Patchbay does not know.
pub fn unknown(id: &str, from: &str) -> Value {
    message(
        "some-new-type",
        id,
        from,
        json!({"anUnknownProperty": [1, 2]}),
    )
}

/// `message` stamped at `ms` (windows and ordering read the platform's time).
pub fn at(mut message: Value, ms: i64) -> Value {
    message["timestamp"] = json!(ms);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_uppercase_hex_hmac_sha1() {
        // RFC 2202, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "EFFCDF6AE5EB2FA2D27416D5F184DF9C259A7C79"
        );
    }
}
