//! Fuzz tests of Viber's inbound parser (`docs/security.md`): `X-Viber-Content-Signature`,
//! then split and normalisation of arbitrary and near-valid callbacks.

use axum::http::HeaderMap;
use patchbay_platform::conformance;
use patchbay_testkit::fuzz::{self, proptest::prelude::*};
use serde_json::{Value, json};

use crate::fixtures::*;
use crate::inbound::SIGNATURE_HEADER;
use crate::{Viber, ViberCredentials};

const CHANNEL: &str = "ch_01HZX0000000000000000000VB";

/// The field names of Viber's callbacks.
const KEYS: &[&str] = &[
    "event",
    "timestamp",
    "chat_hostname",
    "message_token",
    "sender",
    "user",
    "id",
    "name",
    "avatar",
    "language",
    "country",
    "api_version",
    "message",
    "type",
    "text",
    "media",
    "thumbnail",
    "file_name",
    "size",
    "duration",
    "sticker_id",
    "contact",
    "phone_number",
    "location",
    "lat",
    "lon",
    "tracking_data",
    "context",
    "subscribed",
    "user_id",
    "desc",
    "silent",
];

fn seeds() -> Vec<Value> {
    vec![
        text(1, USER, "hi"),
        tracked_text(2, USER, "Yes", "pb:yes"),
        picture(3, USER, "https://x.example/p.jpg", "look"),
        video(4, USER, "https://x.example/v.mp4"),
        file(5, USER, "https://x.example/f.pdf", "f.pdf"),
        sticker(6, USER, 40100),
        contact(7, USER, "Bea", "+351910000000"),
        location(8, USER, 1.5, 2.5),
        url(9, USER, "https://x.example"),
        conversation_started(10, USER, Some("ref")),
        subscribed(11, USER),
        unsubscribed(12, USER),
        delivered(13, USER),
        seen(14, USER),
        failed(15, USER, "blocked"),
        webhook(16),
        client_status(17, USER),
        at(json!({"event": "message"}), 0),
    ]
}

patchbay_platform::pipeline_fuzz_tests!(
    Viber,
    CHANNEL,
    seeds(),
    KEYS,
    fuzz_viber_split_normalise_bytes,
    fuzz_viber_split_normalise_near_valid,
    fuzz_viber_near_valid_bytes,
);

proptest! {
    #![proptest_config(fuzz::config())]

    /// `X-Viber-Content-Signature` (hex HMAC-SHA256 under the auth token) over random bodies:
    /// Viber's passes, one bit off or anything else is refused with a reason.
    #[test]
    fn fuzz_viber_verify(
        body in fuzz::bytes(256),
        bit in any::<usize>(),
        arbitrary in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let creds: ViberCredentials = serde_json::from_value(json!({"auth_token": AUTH_TOKEN}))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let good = signature(AUTH_TOKEN, &body);
        let mac = fuzz::unhex(&good).unwrap_or_default();
        let flipped = fuzz::hex(&fuzz::flip(&mac, bit));
        conformance::signature::<Viber>(
            &creds, HeaderMap::new(), SIGNATURE_HEADER, &body, &good, &flipped, &arbitrary,
        ).map_err(TestCaseError::fail)?;
    }
}

/// The near-valid inputs start from payloads the parser takes: most seeds become events
/// (a few, such as receipts of unknown messages or typing, are valid and make none).
#[test]
fn the_seeds_are_taken() {
    let seeds: Vec<Vec<u8>> = seeds().iter().map(|v| v.to_string().into_bytes()).collect();
    conformance::assert_seeds_taken::<Viber>(CHANNEL, &seeds);
}
