//! Fuzz tests of the content validator and BrandChat's message bodies (`docs/security.md`):
//! arbitrary and near-valid JSON through decoding and `validate`, BrandChat's `send/messages`
//! body through `contents`.

use patchbay_testkit::fuzz::{self, proptest::prelude::*};
use serde_json::{Value, json};

use crate::brandchat::{self, BrandchatMessage};
use crate::content::{Content, FieldError};

/// The field names of the content union.
const KEYS: &[&str] = &[
    "type",
    "text",
    "url",
    "file_id",
    "media_id",
    "download_url",
    "caption",
    "filename",
    "mime_type",
    "latitude",
    "longitude",
    "name",
    "address",
    "id",
    "buttons",
    "title",
    "payload",
    "replies",
    "cards",
    "subtitle",
    "image_url",
    "language",
    "components",
    "parameters",
    "index",
    "sub_type",
    "parameter_name",
    "currency",
    "fallback_value",
    "code",
    "amount_1000",
    "date_time",
    "image",
    "video",
    "document",
    "link",
    "platform",
    "message",
];

fn content_seeds() -> Vec<Value> {
    vec![
        json!({"type": "text", "text": "hello"}),
        json!({"type": "image", "url": "https://x.example/a.jpg", "caption": "c"}),
        json!({"type": "file", "file_id": "f", "filename": "a.pdf", "mime_type": "application/pdf"}),
        json!({"type": "voice", "media_id": "med_01HZX0000000000000000000AB"}),
        json!({"type": "location", "latitude": 38.7, "longitude": -9.1, "name": "n", "address": "a"}),
        json!({"type": "sticker", "id": "s"}),
        json!({"type": "buttons", "text": "pick", "buttons": [
            {"type": "postback", "title": "A", "payload": "a"},
            {"type": "url", "title": "B", "url": "https://x.example/:code"},
            {"type": "reply", "title": "C"}]}),
        json!({"type": "quick_replies", "text": "pick", "replies": [{"title": "A", "payload": "a"}, {"title": "B"}]}),
        json!({"type": "carousel", "cards": [{"title": "T", "subtitle": "s", "image_url": "https://x.example/i.jpg",
            "buttons": [{"type": "postback", "title": "A", "payload": "a"}]}]}),
        json!({"type": "template", "name": "order_ready", "language": "en_US", "components": [
            {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://x.example/h.jpg"}}]},
            {"type": "body", "parameters": [
                {"type": "text", "text": "A-17"},
                {"type": "currency", "currency": {"fallback_value": "$1", "code": "USD", "amount_1000": 1000}},
                {"type": "date_time", "date_time": {"fallback_value": "today"}}]},
            {"type": "button", "sub_type": "quick_reply", "index": 0, "parameters": [{"type": "payload", "payload": "p"}]}]}),
        json!({"type": "native", "platform": "telegram", "message": {"method": "sendDice"}}),
        json!({"type": "postback", "payload": "p", "title": "t"}),
    ]
}

fn brandchat_seeds() -> Vec<Value> {
    vec![
        json!([{"type": "text", "userId": 1337, "text": "hi"}]),
        json!([{"type": "text", "userId": 1, "text": "pick", "buttons": [
            {"label": "A", "value": "a"}, {"label": "B", "url": "https://x.example"}]},
            {"type": "image", "userId": 1, "url": "https://x.example/a.jpg"},
            {"type": "voice", "userId": 2, "fileId": 77},
            {"type": "video", "userId": 2, "url": "https://x.example/v.mp4"},
            {"type": "audio", "userId": 3, "fileId": 9007199254740993_i64}]),
    ]
}

fn clear(e: &FieldError) -> Result<(), TestCaseError> {
    fuzz::clear(&e.field)?;
    fuzz::clear(&e.message)
}

/// Decodes `v` as content; valid content must survive the trip through NATS.
fn check_content(v: &Value) -> Result<(), TestCaseError> {
    let Ok(content) = serde_json::from_value::<Content>(v.clone()) else {
        return Ok(());
    };
    match content.validate() {
        Err(e) => clear(&e),
        Ok(()) => {
            let wire =
                serde_json::to_string(&content).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: Content = serde_json::from_str(&wire).map_err(|e| {
                TestCaseError::fail(format!("valid content does not decode: {e}: {wire}"))
            })?;
            prop_assert!(
                back.validate().is_ok(),
                "valid content no longer valid: {}",
                wire
            );
            prop_assert_eq!(back.kind(), content.kind());
            Ok(())
        }
    }
}

/// BrandChat's `send/messages` body as `api` reads it: every message's content valid, or a
/// field named.
fn check_brandchat(body: &[u8]) -> Result<(), TestCaseError> {
    let Ok(messages) = serde_json::from_slice::<Vec<BrandchatMessage>>(body) else {
        return Ok(());
    };
    let files = |id: i64| format!("https://patchbay.example/brandchat/files/bot_1/{id}");
    match brandchat::contents(&messages, true, &files) {
        Err(e) => clear(&e),
        Ok(contents) => {
            prop_assert_eq!(contents.len(), messages.len());
            for c in &contents {
                prop_assert!(c.validate().is_ok(), "BrandChat content not valid: {:?}", c);
            }
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn fuzz_content_arbitrary(v in fuzz::json(KEYS)) {
        check_content(&v)?;
    }

    #[test]
    fn fuzz_content_near_valid(v in fuzz::near_valid_json(content_seeds(), KEYS)) {
        check_content(&v)?;
    }

    /// Text, button and quick-reply labels of any length and whitespace: the limits count
    /// characters, never slice bytes.
    #[test]
    fn fuzz_content_text_limits(
        text in prop_oneof![any::<String>(), "[ \t\n]{0,3}", "é{4090,4100}", "x{4090,4100}"],
        payload in prop_oneof![any::<String>(), "x{995,1005}"],
    ) {
        check_content(&json!({"type": "text", "text": text}))?;
        check_content(&json!({"type": "buttons", "text": text,
            "buttons": [{"type": "postback", "title": text, "payload": payload}]}))?;
        check_content(&json!({"type": "template", "name": "t", "language": "en",
            "components": [{"type": "body", "parameters": [{"type": "text", "text": text}]}]}))?;
    }

    #[test]
    fn fuzz_brandchat_messages_arbitrary(body in fuzz::bytes(512)) {
        check_brandchat(&body)?;
    }

    #[test]
    fn fuzz_brandchat_messages_near_valid(v in fuzz::near_valid_json(brandchat_seeds(), KEYS)) {
        check_brandchat(v.to_string().as_bytes())?;
    }

    /// BrandChat's numeric user ids are 52-bit, so PHP and JavaScript clients hold them
    /// exactly; upload types are BrandChat's or refused.
    #[test]
    fn fuzz_brandchat_ids_and_uploads(user_id in any::<String>(), content_type in fuzz::tricky_string()) {
        let n = brandchat::numeric_user_id(&user_id);
        prop_assert!((0..1i64 << 52).contains(&n), "{} out of range", n);
        if let Some((kind, max)) = brandchat::upload_kind(&content_type) {
            prop_assert!(!kind.is_empty() && max > 0);
        }
    }
}
