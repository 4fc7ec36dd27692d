//! Telegram `Update` payloads as the platform sends them (Bot API 10.1; shapes from
//! `reference/platforms.md` §1.2).

use serde_json::{Value, json};

/// A private text message from `user_id`.
pub fn text_update(update_id: i64, user_id: i64, text: &str) -> Value {
    json!({
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1767225600,
            "from": {"id": user_id, "is_bot": false, "first_name": "Ana", "last_name": "Lima",
                     "username": "ana_l", "language_code": "pt"},
            "chat": {"id": user_id, "type": "private", "first_name": "Ana"},
            "text": text
        }
    })
}

/// A photo with a caption.
pub fn photo_update(update_id: i64, user_id: i64) -> Value {
    json!({
        "update_id": update_id,
        "message": {
            "message_id": update_id, "date": 1767225660,
            "from": {"id": user_id, "is_bot": false, "first_name": "Ana"},
            "chat": {"id": user_id, "type": "private"},
            "photo": [
                {"file_id": "AgAC-small", "file_unique_id": "u1", "width": 90, "height": 60},
                {"file_id": "AgAC-large", "file_unique_id": "u2", "width": 1280, "height": 853}
            ],
            "caption": "receipt"
        }
    })
}

/// An inline-keyboard button press.
pub fn callback_update(update_id: i64, user_id: i64, data: &str) -> Value {
    json!({
        "update_id": update_id,
        "callback_query": {
            "id": "8812", "from": {"id": user_id, "is_bot": false, "first_name": "Ana"},
            "chat_instance": "-55", "data": data,
            "message": {"message_id": 19, "date": 1767225700, "chat": {"id": user_id, "type": "private"}}
        }
    })
}

/// The user blocked (`kicked`) or unblocked (`member`) the bot.
pub fn member_update(update_id: i64, user_id: i64, status: &str) -> Value {
    let old = if status == "kicked" {
        "member"
    } else {
        "kicked"
    };
    json!({
        "update_id": update_id,
        "my_chat_member": {
            "chat": {"id": user_id, "type": "private"},
            "from": {"id": user_id, "is_bot": false, "first_name": "Ana"},
            "date": 1767225800,
            "old_chat_member": {"status": old, "user": {"id": 777, "is_bot": true, "first_name": "MyBot"}},
            "new_chat_member": {"status": status, "user": {"id": 777, "is_bot": true, "first_name": "MyBot"}, "until_date": 0}
        }
    })
}

/// The chat an update comes from (`chat.id` of its message, button press or membership change,
/// else its sender's id): the chat whose user the bot may write to once the update is posted.
pub fn update_chat_id(update: &Value) -> Option<i64> {
    let object = update
        .as_object()?
        .iter()
        .find_map(|(k, v)| (k != "update_id" && v.is_object()).then_some(v))?;
    object["chat"]["id"]
        .as_i64()
        .or_else(|| object["message"]["chat"]["id"].as_i64())
        .or_else(|| object["from"]["id"].as_i64())
}

/// The lowercase hex of HMAC-SHA256(`app_secret`, `body`): what Meta puts after `sha256=` in
/// `X-Hub-Signature-256` (computed here independently of the ingress).
pub fn meta_signature(app_secret: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(app_secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Messenger Platform webhook payloads (`reference/platforms.md` §2.2): an `object: "page"`
/// envelope around `messaging` events. Page and user ids are fake but numeric, like Meta's.
pub mod messenger {
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
}

/// WhatsApp Cloud API webhook payloads (§3.2): an `object: "whatsapp_business_account"`
/// envelope around `changes[].value` with `messages`, `contacts` and `statuses`.
pub mod whatsapp {
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
}
