//! Fuzz tests of Kik's inbound parser (`docs/security.md`): `X-Kik-Signature` and
//! `X-Kik-Username`, then split and normalisation of arbitrary and near-valid
//! `{"messages": [...]}` POSTs.

use axum::http::{HeaderMap, HeaderValue};
use patchbay_platform::conformance;
use patchbay_testkit::fuzz::{self, proptest::prelude::*};
use serde_json::{Value, json};

use crate::fixtures::*;
use crate::inbound::{SIGNATURE_HEADER, USERNAME_HEADER};
use crate::{Kik, KikCredentials};

const CHANNEL: &str = "ch_01HZX0000000000000000000KK";

/// The field names of Kik's webhooks.
const KEYS: &[&str] = &[
    "messages",
    "type",
    "id",
    "chatId",
    "from",
    "participants",
    "timestamp",
    "mention",
    "readReceiptRequested",
    "body",
    "metadata",
    "url",
    "title",
    "text",
    "picUrl",
    "videoUrl",
    "stickerPackId",
    "stickerUrl",
    "data",
    "isTyping",
    "picked",
    "messageIds",
    "attribution",
    "patchbay_profile",
    "username",
    "firstName",
    "lastName",
    "profilePicUrl",
];

fn seeds() -> Vec<Value> {
    vec![
        post(vec![
            text("e1", USER, "hi"),
            suggested_tap("e2", USER, "Yes", json!({"p": "Y"})),
        ]),
        post(vec![
            link("e3", USER, "https://x.example", "T", "t"),
            picture("e4", USER, "https://x.example/p.jpg"),
        ]),
        post(vec![
            video("e5", USER, "https://x.example/v.mp4"),
            sticker("e6", USER, "pack", "https://x.example/s.png"),
        ]),
        post(vec![
            scan_data("e7", USER, "ref"),
            start_chatting("e8", USER),
            is_typing("e9", USER, true),
        ]),
        post(vec![
            friend_picker("e10", USER, &["bea"]),
            delivery_receipt("e11", USER, &["m1"]),
        ]),
        post(vec![
            read_receipt("e12", USER, &["m1", "m2"]),
            unknown("e13", USER),
            at(text("e14", USER, "x"), 0),
        ]),
    ]
}

patchbay_platform::pipeline_fuzz_tests!(
    Kik,
    CHANNEL,
    seeds(),
    KEYS,
    fuzz_kik_split_normalise_bytes,
    fuzz_kik_split_normalise_near_valid,
    fuzz_kik_near_valid_bytes,
);

proptest! {
    #![proptest_config(fuzz::config())]

    /// `X-Kik-Signature` (hex HMAC-SHA1 under the API key) over random bodies: Kik's passes,
    /// one bit off or anything else is refused with a reason; a signed request naming another
    /// bot in `X-Kik-Username` is refused too.
    #[test]
    fn fuzz_kik_verify(
        body in fuzz::bytes(256),
        bit in any::<usize>(),
        arbitrary in prop::collection::vec(any::<u8>(), 0..80),
        username in fuzz::tricky_string(),
    ) {
        let creds = KikCredentials { username: BOT.into(), api_key: API_KEY.into() };
        let good = signature(API_KEY, &body);
        let mac = fuzz::unhex(&good).unwrap_or_default();
        let flipped = fuzz::hex(&fuzz::flip(&mac, bit));
        let mut headers = HeaderMap::new();
        headers.insert(USERNAME_HEADER, HeaderValue::from_static(BOT));
        conformance::signature::<Kik>(
            &creds, headers.clone(), SIGNATURE_HEADER, &body, &good, &flipped, &arbitrary,
        ).map_err(TestCaseError::fail)?;

        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&good).map_err(|e| TestCaseError::fail(e.to_string()))?);
        let Ok(named) = HeaderValue::from_str(&username) else { return Ok(()) };
        headers.insert(USERNAME_HEADER, named);
        if conformance::verify::<Kik>(&creds, &headers, &body).map_err(TestCaseError::fail)? {
            prop_assert!(username.trim().eq_ignore_ascii_case(BOT));
        }
    }
}

/// Found by `fuzz_kik_split_normalise_near_valid`: a message with `"timestamp":
/// -9223372036854775808` made `time` overflow taking its absolute value (a panic in debug
/// builds, a wrapped value in release ones).
#[test]
fn the_smallest_timestamp_does_not_overflow() {
    assert_eq!(crate::inbound::time(i64::MIN), None);
    let body = post(vec![at(text("e1", USER, "hi"), i64::MIN)]).to_string();
    let events = conformance::pipeline::<Kik>(CHANNEL, body.as_bytes()).expect("clear outcome");
    assert!(
        events.iter().all(|e| e.occurred_at.timestamp() > 0),
        "{events:?}"
    );
}

/// The near-valid inputs start from payloads the parser takes: most seeds become events
/// (a few, such as receipts of unknown messages or typing, are valid and make none).
#[test]
fn the_seeds_are_taken() {
    let seeds: Vec<Vec<u8>> = seeds().iter().map(|v| v.to_string().into_bytes()).collect();
    conformance::assert_seeds_taken::<Kik>(CHANNEL, &seeds);
}
