//! LINE webhooks as LINE sends them (`reference/platforms.md` §6.2; the field layout of
//! `line/line-openapi`'s `webhook.yml`): a POST is `{"destination": <the bot's user id>,
//! "events": [...]}`, each event with `type`, `mode`, `timestamp` (milliseconds), `source`,
//! `webhookEventId`, `deliveryContext.isRedelivery` and, on events that can be answered, a
//! `replyToken`. Ids and tokens are fake. For the unit tests here and the end-to-end suite.

use base64::Engine;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

/// The channel secret the fixtures are signed with.
pub const CHANNEL_SECRET: &str = "8c570fa6dd201bb328f1c1eac23a96d8";
/// A channel access token.
pub const ACCESS_TOKEN: &str = "fixture-access-token-0123456789abcdef";
/// The bot's user id (`destination`).
pub const BOT_USER_ID: &str = "Ub0700000000000000000000000000000";
/// A user.
pub const USER: &str = "U4af4980629000000000000000000000a";
/// Another user.
pub const OTHER_USER: &str = "U4af4980629000000000000000000000b";
/// A group.
pub const GROUP: &str = "Ca56f94637c000000000000000000000c";
/// A multi-person chat (room).
pub const ROOM: &str = "Ra8dbf4673c000000000000000000000d";
/// When the fixtures happened: 2026-01-01T00:00:00Z, in milliseconds.
pub const TIME: i64 = 1_767_225_600_000;

/// `x-line-signature` of `body` under `channel_secret`: Base64 of HMAC-SHA256 (computed here
/// independently of the adapter's check).
pub fn signature(channel_secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length: the empty answer (never a match) cannot happen.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(channel_secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// One POST to the bot holding `events`.
pub fn post(events: Vec<Value>) -> Value {
    json!({ "destination": BOT_USER_ID, "events": events })
}

/// What the console's "Verify" button posts: no events.
pub fn verify_body() -> Value {
    post(vec![])
}

/// A one-to-one chat with `user`.
pub fn from_user(user: &str) -> Value {
    json!({"type": "user", "userId": user})
}

/// `user` in `group`.
pub fn in_group(group: &str, user: Option<&str>) -> Value {
    let mut s = json!({"type": "group", "groupId": group});
    if let Some(u) = user {
        s["userId"] = json!(u);
    }
    s
}

/// `user` in the room `room`.
pub fn in_room(room: &str, user: Option<&str>) -> Value {
    let mut s = json!({"type": "room", "roomId": room});
    if let Some(u) = user {
        s["userId"] = json!(u);
    }
    s
}

/// An event of `kind` with id `event_id` from `source`, answerable with `reply_token` when
/// given, and its type's `fields`.
pub fn event(
    kind: &str,
    event_id: &str,
    source: Value,
    reply_token: Option<&str>,
    fields: Value,
) -> Value {
    let mut e = json!({
        "type": kind,
        "mode": "active",
        "timestamp": TIME,
        "source": source,
        "webhookEventId": event_id,
        "deliveryContext": {"isRedelivery": false},
    });
    if let Some(t) = reply_token {
        e["replyToken"] = json!(t);
    }
    if let (Some(o), Value::Object(f)) = (e.as_object_mut(), fields) {
        o.extend(f);
    }
    e
}

/// The reply token the fixtures give event `event_id`.
pub fn reply_token(event_id: &str) -> String {
    format!("rt-{event_id}")
}

/// A message event with `message`.
pub fn message(event_id: &str, source: Value, message: Value) -> Value {
    let token = reply_token(event_id);
    event(
        "message",
        event_id,
        source,
        Some(&token),
        json!({ "message": message }),
    )
}

/// A text message from `user` in a one-to-one chat.
pub fn text(event_id: &str, user: &str, text: &str) -> Value {
    message(
        event_id,
        from_user(user),
        json!({"id": format!("m-{event_id}"), "type": "text", "text": text,
               "quoteToken": format!("q-{event_id}")}),
    )
}

/// A media message (`image`, `video`, `audio`, `file`) whose content LINE keeps.
pub fn media(event_id: &str, user: &str, kind: &str) -> Value {
    let mut m = json!({"id": format!("m-{event_id}"), "type": kind,
                       "contentProvider": {"type": "line"}});
    match kind {
        "video" | "audio" => m["duration"] = json!(60_000),
        "file" => {
            m["fileName"] = json!("report.pdf");
            m["fileSize"] = json!(2048);
        }
        "image" => m["quoteToken"] = json!(format!("q-{event_id}")),
        _ => {}
    }
    message(event_id, from_user(user), m)
}

/// An image sent from elsewhere (`contentProvider.type` `external`).
pub fn external_image(event_id: &str, user: &str, url: &str, preview: &str) -> Value {
    message(
        event_id,
        from_user(user),
        json!({"id": format!("m-{event_id}"), "type": "image",
               "contentProvider": {"type": "external", "originalContentUrl": url,
                                   "previewImageUrl": preview}}),
    )
}

/// A location message.
pub fn location(event_id: &str, user: &str, title: &str, address: &str) -> Value {
    message(
        event_id,
        from_user(user),
        json!({"id": format!("m-{event_id}"), "type": "location", "title": title,
               "address": address, "latitude": 35.6591,
               "longitude": 139.7037}),
    )
}

/// A sticker message.
pub fn sticker(event_id: &str, user: &str, package_id: &str, sticker_id: &str) -> Value {
    message(
        event_id,
        from_user(user),
        json!({"id": format!("m-{event_id}"), "type": "sticker", "packageId": package_id,
               "stickerId": sticker_id, "stickerResourceType": "STATIC"}),
    )
}

/// A postback (a tap on a postback action), with the date or time picker's `params`.
pub fn postback(event_id: &str, user: &str, data: &str, params: Option<Value>) -> Value {
    let mut p = json!({ "data": data });
    if let Some(params) = params {
        p["params"] = params;
    }
    let token = reply_token(event_id);
    event(
        "postback",
        event_id,
        from_user(user),
        Some(&token),
        json!({ "postback": p }),
    )
}

/// The user added the bot as a friend (or unblocked it).
pub fn follow(event_id: &str, user: &str, unblocked: bool) -> Value {
    let token = reply_token(event_id);
    event(
        "follow",
        event_id,
        from_user(user),
        Some(&token),
        json!({"follow": {"isUnblocked": unblocked}}),
    )
}

/// The user blocked the bot (no reply token).
pub fn unfollow(event_id: &str, user: &str) -> Value {
    event("unfollow", event_id, from_user(user), None, json!({}))
}

/// The bot was added to `source` (a group or room).
pub fn join(event_id: &str, source: Value) -> Value {
    let token = reply_token(event_id);
    event("join", event_id, source, Some(&token), json!({}))
}

/// The bot was removed from `source` (no reply token).
pub fn leave(event_id: &str, source: Value) -> Value {
    event("leave", event_id, source, None, json!({}))
}

fn members(users: &[&str]) -> Value {
    json!(
        users
            .iter()
            .map(|u| json!({"type": "user", "userId": u}))
            .collect::<Vec<_>>()
    )
}

/// `users` joined the group or room `source` the bot is in.
pub fn member_joined(event_id: &str, source: Value, users: &[&str]) -> Value {
    let token = reply_token(event_id);
    event(
        "memberJoined",
        event_id,
        source,
        Some(&token),
        json!({"joined": {"members": members(users)}}),
    )
}

/// `users` left the group or room `source` (no reply token).
pub fn member_left(event_id: &str, source: Value, users: &[&str]) -> Value {
    event(
        "memberLeft",
        event_id,
        source,
        None,
        json!({"left": {"members": members(users)}}),
    )
}

/// The user unsent one of their messages.
pub fn unsend(event_id: &str, user: &str, message_id: &str) -> Value {
    event(
        "unsend",
        event_id,
        from_user(user),
        None,
        json!({"unsend": {"messageId": message_id}}),
    )
}

/// An event Patchbay does not model (a beacon).
pub fn beacon(event_id: &str, user: &str) -> Value {
    let token = reply_token(event_id);
    event(
        "beacon",
        event_id,
        from_user(user),
        Some(&token),
        json!({"beacon": {"hwid": "d41d8cd98f", "type": "enter"}}),
    )
}

/// `event` as LINE redelivers it (same `webhookEventId`, `isRedelivery` true).
pub fn redelivered(mut event: Value) -> Value {
    event["deliveryContext"]["isRedelivery"] = json!(true);
    event
}

/// `event` at `timestamp` (milliseconds).
pub fn at(mut event: Value, timestamp: i64) -> Value {
    event["timestamp"] = json!(timestamp);
    event
}
