//! Telegram `Update` payloads as the platform sends them (Bot API 10.1; shapes from
//! `reference/platforms.md` §1.2), for tests here and in the end-to-end suite.

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
