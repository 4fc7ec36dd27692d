//! Messenger Platform webhook payloads (`reference/platforms.md` §2.2): an `object: "page"`
//! envelope around `messaging` events. Page and user ids are fake but numeric, like Meta's.
//! For tests here and in the end-to-end suite.

use serde_json::{Value, json};

/// The Page the fixtures use by default.
pub const PAGE_ID: &str = "106100000000001";
/// A page-scoped user id.
pub const PSID: &str = "2468000000000001";

/// One POST: `entries` is a list of (page id, messaging events).
pub fn post(entries: &[(&str, Vec<Value>)]) -> Value {
    let entry: Vec<Value> = entries
        .iter()
        .map(|(page, events)| json!({"id": page, "time": 1767225600123_i64, "messaging": events}))
        .collect();
    json!({"object": "page", "entry": entry})
}

fn event(psid: &str, page: &str, ts: i64, body: (&str, Value)) -> Value {
    let mut e = json!({"sender": {"id": psid}, "recipient": {"id": page}, "timestamp": ts});
    e[body.0] = body.1;
    e
}

/// A text message.
pub fn text(psid: &str, mid: &str, text: &str) -> Value {
    event(
        psid,
        PAGE_ID,
        1767225600000,
        ("message", json!({"mid": mid, "text": text})),
    )
}

/// A tapped quick reply: text plus `quick_reply.payload`.
pub fn quick_reply(psid: &str, mid: &str, title: &str, payload: &str) -> Value {
    event(
        psid,
        PAGE_ID,
        1767225600000,
        (
            "message",
            json!({"mid": mid, "text": title, "quick_reply": {"payload": payload}}),
        ),
    )
}

/// A media attachment (`image`, `audio`, `video`, `file`).
pub fn attachment(psid: &str, mid: &str, kind: &str, url: &str) -> Value {
    event(
        psid,
        PAGE_ID,
        1767225660000,
        (
            "message",
            json!({"mid": mid, "attachments": [{"type": kind, "payload": {"url": url}}]}),
        ),
    )
}

/// A sticker as sent until 30 Aug 2026: a `sticker` and an `image` attachment for it.
pub fn sticker(psid: &str, mid: &str, sticker_id: i64) -> Value {
    event(
        psid,
        PAGE_ID,
        1767225660000,
        (
            "message",
            json!({"mid": mid, "attachments": [
            {"type": "sticker", "payload": {"sticker_id": sticker_id, "url": "https://cdn.example/s.png"}},
            {"type": "image", "payload": {"url": "https://cdn.example/s.png", "sticker_id": sticker_id}}]}),
        ),
    )
}

/// A shared location (older payloads: `location` attachment with coordinates).
pub fn location(psid: &str, mid: &str, lat: f64, long: f64) -> Value {
    event(
        psid,
        PAGE_ID,
        1767225660000,
        (
            "message",
            json!({"mid": mid, "attachments": [{"type": "location", "title": "Pinned",
            "payload": {"coordinates": {"lat": lat, "long": long}}}]}),
        ),
    )
}

/// A postback button (or Get Started, or the persistent menu).
pub fn postback(psid: &str, mid: &str, title: &str, payload: &str) -> Value {
    event(
        psid,
        PAGE_ID,
        1767225700000,
        (
            "postback",
            json!({"mid": mid, "title": title, "payload": payload}),
        ),
    )
}

/// Get Started tapped in a new thread opened through an m.me link with `ref`.
pub fn get_started_with_ref(psid: &str, mid: &str, r#ref: &str) -> Value {
    event(
        psid,
        PAGE_ID,
        1767225700000,
        (
            "postback",
            json!({"mid": mid, "title": "Get Started", "payload": "GET_STARTED",
            "referral": {"ref": r#ref, "source": "SHORTLINK", "type": "OPEN_THREAD"}}),
        ),
    )
}

/// An m.me link or ad opening an existing thread (`messaging_referrals`).
pub fn referral(psid: &str, r#ref: &str) -> Value {
    event(
        psid,
        PAGE_ID,
        1767225710000,
        (
            "referral",
            json!({"ref": r#ref, "source": "SHORTLINK", "type": "OPEN_THREAD"}),
        ),
    )
}

/// A plugin opt-in (`messaging_optins`) with its `ref`.
pub fn optin(psid: &str, r#ref: &str) -> Value {
    event(
        psid,
        PAGE_ID,
        1767225720000,
        ("optin", json!({"ref": r#ref})),
    )
}

/// A delivery receipt for `mids`, with its watermark.
pub fn delivery(psid: &str, mids: &[&str], watermark: i64) -> Value {
    event(
        psid,
        PAGE_ID,
        1767225790000,
        ("delivery", json!({"mids": mids, "watermark": watermark})),
    )
}

/// A read receipt: everything sent before `watermark` was read.
pub fn read(psid: &str, watermark: i64) -> Value {
    event(
        psid,
        PAGE_ID,
        1767225800000,
        ("read", json!({"watermark": watermark})),
    )
}

/// An echo of a message the Page itself sent (`message_echoes`).
pub fn echo(psid: &str, mid: &str) -> Value {
    event(
        PAGE_ID,
        psid,
        1767225800000,
        (
            "message",
            json!({"mid": mid, "is_echo": true, "app_id": 1517, "text": "from the page"}),
        ),
    )
}
