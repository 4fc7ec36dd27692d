//! Fuzz tests of Telegram's inbound parser (`docs/security.md`): the secret-token check, then
//! split and normalisation of arbitrary and near-valid `Update`s.

use axum::http::{HeaderMap, HeaderValue};
use patchbay_platform::{InboundAdapter, conformance};
use patchbay_testkit::fuzz::{self, proptest::prelude::*};
use serde_json::Value;

use crate::fixtures::{callback_update, member_update, photo_update, text_update};
use crate::inbound::SECRET_HEADER;
use crate::{Telegram, TelegramCredentials};

const CHANNEL: &str = "ch_01HZX0000000000000000000TG";
const BODY: &[u8] = br#"{"update_id": 1}"#;

/// The field names of Telegram's `Update`s.
const KEYS: &[&str] = &[
    "update_id",
    "message",
    "message_id",
    "date",
    "from",
    "chat",
    "id",
    "type",
    "text",
    "caption",
    "photo",
    "file_id",
    "file_name",
    "mime_type",
    "document",
    "audio",
    "voice",
    "video",
    "video_note",
    "animation",
    "sticker",
    "location",
    "latitude",
    "longitude",
    "venue",
    "title",
    "address",
    "first_name",
    "last_name",
    "username",
    "language_code",
    "callback_query",
    "data",
    "my_chat_member",
    "new_chat_member",
    "status",
];

fn seeds() -> Vec<Value> {
    vec![
        text_update(1, 42, "hello"),
        text_update(2, 42, "/start ref-7"),
        photo_update(3, 42),
        callback_update(4, 42, "yes"),
        member_update(5, 42, "kicked"),
        member_update(6, 42, "member"),
        serde_json::json!({"update_id": 7, "message": {"message_id": 7, "date": 1767225600,
            "from": {"id": 42}, "chat": {"id": 42},
            "venue": {"location": {"latitude": 1.5, "longitude": 2.5}, "title": "t", "address": "a"}}}),
    ]
}

fn creds(secret: &str) -> TelegramCredentials {
    TelegramCredentials {
        bot_token: "123:abc".into(),
        secret_token: secret.into(),
    }
}

patchbay_platform::pipeline_fuzz_tests!(
    Telegram,
    CHANNEL,
    seeds(),
    KEYS,
    fuzz_telegram_split_normalise_bytes,
    fuzz_telegram_split_normalise_near_valid,
    fuzz_telegram_near_valid_bytes,
);

proptest! {
    #![proptest_config(fuzz::config())]

    /// The secret token Telegram echoes passes; any other header value, one bit off or
    /// arbitrary, is refused with a reason.
    #[test]
    fn fuzz_telegram_verify(
        secret in "[A-Za-z0-9_-]{1,256}",
        other in prop::collection::vec(any::<u8>(), 0..300),
        bit in any::<usize>(),
    ) {
        let creds = creds(&secret);
        let mut headers = HeaderMap::new();
        headers.insert(SECRET_HEADER, HeaderValue::from_str(&secret).map_err(|e| TestCaseError::fail(e.to_string()))?);
        prop_assert!(Telegram::verify(&creds, &headers, BODY).is_ok());

        let mut flipped = secret.clone().into_bytes();
        let at = bit % (flipped.len() * 7);
        flipped[at / 7] ^= 1 << (at % 7);
        for wrong in [flipped, other] {
            let Ok(value) = HeaderValue::from_bytes(&wrong) else { continue };
            headers.insert(SECRET_HEADER, value);
            match Telegram::verify(&creds, &headers, BODY) {
                Ok(()) => prop_assert_eq!(&wrong, secret.as_bytes()),
                Err(r) => { conformance::rejection(&r).map_err(TestCaseError::fail)?; }
            }
        }
        prop_assert!(Telegram::verify(&creds, &HeaderMap::new(), BODY).is_err());
    }
}

/// The near-valid inputs start from payloads the parser takes: most seeds become events
/// (a few, such as receipts of unknown messages or typing, are valid and make none).
#[test]
fn the_seeds_are_taken() {
    let seeds: Vec<Vec<u8>> = seeds().iter().map(|v| v.to_string().into_bytes()).collect();
    conformance::assert_seeds_taken::<Telegram>(CHANNEL, &seeds);
}
