//! WhatsApp Cloud API webhook payloads (§3.2): an `object: "whatsapp_business_account"`
//! envelope around `changes[].value` with `messages`, `contacts` and `statuses`.
//! For tests here and in the end-to-end suite.

use serde_json::{Value, json};

/// The business phone number's id the fixtures use by default.
pub const PHONE_NUMBER_ID: &str = "106500000000001";
/// The user's phone number (`wa_id`).
pub const WA_ID: &str = "351910000000";
/// The user's business-scoped user id.
pub const BSUID: &str = "PT.1234567890";

/// One POST: `changes` is a list of (phone_number_id, value without metadata).
pub fn post(changes: &[(&str, Value)]) -> Value {
    let changes: Vec<Value> = changes
        .iter()
        .map(|(pnid, value)| {
            let mut value = value.clone();
            value["messaging_product"] = json!("whatsapp");
            value["metadata"] =
                json!({"display_phone_number": "15550001111", "phone_number_id": pnid});
            json!({"field": "messages", "value": value})
        })
        .collect();
    json!({"object": "whatsapp_business_account",
           "entry": [{"id": "102290000000001", "changes": changes}]})
}

/// A `messages` value from the default user (with phone and BSUID).
pub fn from_user(message: Value) -> Value {
    json!({
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": WA_ID, "user_id": BSUID}],
        "messages": [message]
    })
}

fn message(id: &str, kind: &str, body: Value) -> Value {
    let mut m = json!({"from": WA_ID, "from_user_id": BSUID, "id": id,
                       "timestamp": "1767225600", "type": kind});
    m[kind] = body;
    m
}

/// A text message.
pub fn text(id: &str, body: &str) -> Value {
    message(id, "text", json!({"body": body}))
}

/// A media message (`image`, `audio`, `video`, `document`, `sticker`).
pub fn media(id: &str, kind: &str, media_id: &str, caption: Option<&str>) -> Value {
    let mut m = json!({"id": media_id, "mime_type": "image/jpeg", "sha256": "abc"});
    if let Some(c) = caption {
        m["caption"] = json!(c);
    }
    if kind == "document" {
        m["filename"] = json!("invoice.pdf");
        m["mime_type"] = json!("application/pdf");
    }
    message(id, kind, m)
}

/// A shared location.
pub fn location(id: &str) -> Value {
    message(
        id,
        "location",
        json!({"latitude": 38.7223, "longitude": -9.1393, "name": "Rossio", "address": "Lisboa"}),
    )
}

/// A tapped reply button of an interactive message sent as `context_id`.
pub fn button_reply(id: &str, context_id: &str, reply_id: &str, title: &str) -> Value {
    let mut m = message(
        id,
        "interactive",
        json!({"type": "button_reply", "button_reply": {"id": reply_id, "title": title}}),
    );
    m["context"] = json!({"from": "15550001111", "id": context_id});
    m
}

/// A chosen list row.
pub fn list_reply(id: &str, row_id: &str, title: &str) -> Value {
    message(
        id,
        "interactive",
        json!({"type": "list_reply", "list_reply": {"id": row_id, "title": title, "description": "d"}}),
    )
}

/// A tapped template quick-reply button.
pub fn template_button(id: &str, payload: &str, text: &str) -> Value {
    message(id, "button", json!({"payload": payload, "text": text}))
}

/// A first message after a Click-to-WhatsApp ad (`referral`).
pub fn ad_referral(id: &str, text: &str) -> Value {
    let mut m = message(id, "text", json!({"body": text}));
    m["referral"] = json!({"source_url": "https://fb.me/x", "source_id": "ad_77",
                           "source_type": "ad", "ctwa_clid": "clid"});
    m
}

/// A message from a user who has a username and no phone number in the payload.
pub fn from_username_only(id: &str, body: &str) -> Value {
    json!({
        "contacts": [{"profile": {"name": "Bea"}, "user_id": "US.998877", "username": "bea"}],
        "messages": [{"from_user_id": "US.998877", "id": id, "timestamp": "1767225600",
                      "type": "text", "text": {"body": body}}]
    })
}

/// A `statuses` value for the message `wamid` the business sent.
pub fn status(wamid: &str, status: &str) -> Value {
    json!({"statuses": [{"id": wamid, "status": status, "timestamp": "1767225800",
        "recipient_id": WA_ID, "recipient_user_id": BSUID,
        "pricing": {"billable": false, "pricing_model": "PMP", "type": "free_customer_service", "category": "service"}}]})
}

/// A `failed` status with the error Meta gives.
pub fn failed(wamid: &str, code: i64, title: &str) -> Value {
    json!({"statuses": [{"id": wamid, "status": "failed", "timestamp": "1767225800",
        "recipient_id": WA_ID,
        "errors": [{"code": code, "title": title, "message": title,
                    "error_data": {"details": "Message failed to send"}}]}]})
}
