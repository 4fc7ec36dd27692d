//! Fuzz tests of LINE's inbound parser (`docs/security.md`): `x-line-signature`, then split
//! and normalisation of arbitrary and near-valid webhook POSTs.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use patchbay_platform::conformance;
use patchbay_testkit::fuzz::{self, proptest::prelude::*};
use serde_json::{Value, json};

use crate::fixtures::*;
use crate::inbound::SIGNATURE_HEADER;
use crate::{Line, LineCredentials};

const CHANNEL: &str = "ch_01HZX0000000000000000000LN";

/// The field names of LINE's webhooks.
const KEYS: &[&str] = &[
    "destination",
    "events",
    "type",
    "mode",
    "timestamp",
    "source",
    "userId",
    "groupId",
    "roomId",
    "webhookEventId",
    "deliveryContext",
    "isRedelivery",
    "replyToken",
    "message",
    "id",
    "text",
    "quoteToken",
    "contentProvider",
    "originalContentUrl",
    "previewImageUrl",
    "duration",
    "fileName",
    "fileSize",
    "title",
    "address",
    "latitude",
    "longitude",
    "packageId",
    "stickerId",
    "postback",
    "data",
    "params",
    "date",
    "time",
    "datetime",
    "follow",
    "isUnblocked",
    "joined",
    "left",
    "members",
    "unsend",
    "messageId",
    "patchbay_profiles",
];

fn seeds() -> Vec<Value> {
    let group = in_group(GROUP, Some(USER));
    vec![
        verify_body(),
        post(vec![
            text("e1", USER, "hi"),
            media("e2", USER, "image"),
            media("e3", USER, "video"),
        ]),
        post(vec![
            media("e4", USER, "audio"),
            media("e5", USER, "file"),
            external_image(
                "e6",
                USER,
                "https://x.example/a.jpg",
                "https://x.example/p.jpg",
            ),
        ]),
        post(vec![
            location("e7", USER, "T", "A"),
            sticker("e8", USER, "1", "2"),
        ]),
        post(vec![
            postback("e9", USER, "d", Some(json!({"date": "2026-01-01"}))),
            follow("e10", USER, true),
            unfollow("e11", USER),
        ]),
        post(vec![
            join("e12", group.clone()),
            leave("e13", in_room(ROOM, None)),
        ]),
        post(vec![
            member_joined("e14", group.clone(), &[USER, OTHER_USER]),
            member_left("e15", group, &[USER]),
        ]),
        post(vec![
            unsend("e16", USER, "m-e1"),
            message(
                "e17",
                in_room(ROOM, Some(USER)),
                json!({"id": "m", "type": "text", "text": "x"}),
            ),
        ]),
    ]
}

patchbay_platform::pipeline_fuzz_tests!(
    Line,
    CHANNEL,
    seeds(),
    KEYS,
    fuzz_line_split_normalise_bytes,
    fuzz_line_split_normalise_near_valid,
    fuzz_line_near_valid_bytes,
);

proptest! {
    #![proptest_config(fuzz::config())]

    /// `x-line-signature` (Base64 HMAC-SHA256 under the channel secret) over random bodies:
    /// LINE's passes, one bit off or anything else is refused with a reason.
    #[test]
    fn fuzz_line_verify(
        body in fuzz::bytes(256),
        bit in any::<usize>(),
        arbitrary in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let creds = LineCredentials {
            channel_secret: CHANNEL_SECRET.into(),
            channel_access_token: ACCESS_TOKEN.into(),
        };
        let good = signature(CHANNEL_SECRET, &body);
        let mac = STANDARD.decode(&good).unwrap_or_default();
        let flipped = STANDARD.encode(fuzz::flip(&mac, bit));
        conformance::signature::<Line>(
            &creds, HeaderMap::new(), SIGNATURE_HEADER, &body, &good, &flipped, &arbitrary,
        ).map_err(TestCaseError::fail)?;
    }
}

/// The near-valid inputs start from payloads the parser takes: most seeds become events
/// (a few, such as receipts of unknown messages or typing, are valid and make none).
#[test]
fn the_seeds_are_taken() {
    let seeds: Vec<Vec<u8>> = seeds().iter().map(|v| v.to_string().into_bytes()).collect();
    conformance::assert_seeds_taken::<Line>(CHANNEL, &seeds);
}
