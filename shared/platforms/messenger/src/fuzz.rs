//! Fuzz tests of Messenger's inbound parser (`docs/security.md`): `X-Hub-Signature-256` and
//! the `hub.*` handshake, then split and normalisation of arbitrary and near-valid `page` POSTs.

use std::collections::HashMap;

use axum::http::HeaderMap;
use patchbay_platform::meta::{SIGNATURE_HEADER, signature_hex};
use patchbay_platform::{InboundAdapter, conformance};
use patchbay_testkit::fuzz::{self, proptest::prelude::*};
use serde_json::Value;

use crate::fixtures::*;
use crate::{Messenger, MessengerCredentials};

const CHANNEL: &str = "ch_01HZX0000000000000000000MS";

/// The field names of Messenger's webhooks.
const KEYS: &[&str] = &[
    "object",
    "entry",
    "id",
    "time",
    "messaging",
    "sender",
    "recipient",
    "timestamp",
    "message",
    "mid",
    "text",
    "quick_reply",
    "payload",
    "attachments",
    "type",
    "url",
    "sticker_id",
    "coordinates",
    "lat",
    "long",
    "postback",
    "title",
    "referral",
    "ref",
    "source",
    "optin",
    "delivery",
    "mids",
    "watermark",
    "read",
    "is_echo",
    "reply_to",
];

fn seeds() -> Vec<Value> {
    vec![
        post(&[(
            PAGE_ID,
            vec![text(PSID, "m1", "hi"), quick_reply(PSID, "m2", "Yes", "Y")],
        )]),
        post(&[(
            PAGE_ID,
            vec![attachment(PSID, "m3", "image", "https://cdn.example/a.jpg")],
        )]),
        post(&[(
            PAGE_ID,
            vec![
                sticker(PSID, "m4", 369239263222822),
                location(PSID, "m5", 1.5, 2.5),
            ],
        )]),
        post(&[(
            PAGE_ID,
            vec![
                postback(PSID, "m6", "Go", "GO"),
                get_started_with_ref(PSID, "m7", "r"),
            ],
        )]),
        post(&[(PAGE_ID, vec![referral(PSID, "r"), optin(PSID, "o")])]),
        post(&[(
            PAGE_ID,
            vec![
                delivery(PSID, &["m8"], 1767225600000),
                read(PSID, 1767225600000),
            ],
        )]),
        post(&[
            (PAGE_ID, vec![echo(PSID, "m9")]),
            ("106100000000002", vec![text(PSID, "m10", "x")]),
        ]),
    ]
}

fn creds() -> MessengerCredentials {
    MessengerCredentials {
        page_id: PAGE_ID.into(),
        page_access_token: "token".into(),
        app_secret: "app-secret".into(),
        verify_token: "verify-me".into(),
    }
}

patchbay_platform::pipeline_fuzz_tests!(
    Messenger,
    CHANNEL,
    seeds(),
    KEYS,
    fuzz_messenger_split_normalise_bytes,
    fuzz_messenger_split_normalise_near_valid,
    fuzz_messenger_near_valid_bytes,
);

proptest! {
    #![proptest_config(fuzz::config())]

    /// `X-Hub-Signature-256` over random bodies: Meta's signature passes, one bit off or
    /// anything else is refused with a reason.
    #[test]
    fn fuzz_messenger_verify(
        body in fuzz::bytes(256),
        bit in any::<usize>(),
        arbitrary in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let creds = creds();
        let good = signature_hex(&creds.app_secret, &body);
        let mac = fuzz::unhex(&good).unwrap_or_default();
        let flipped = format!("sha256={}", fuzz::hex(&fuzz::flip(&mac, bit)));
        conformance::signature::<Messenger>(
            &creds, HeaderMap::new(), SIGNATURE_HEADER, &body,
            &format!("sha256={good}"), &flipped, &arbitrary,
        ).map_err(TestCaseError::fail)?;
    }

    /// The `hub.*` handshake answers the challenge only with the verify token.
    #[test]
    fn fuzz_messenger_handshake(
        query in prop::collection::hash_map(
            prop::sample::select(&["hub.mode", "hub.verify_token", "hub.challenge", "x"][..]),
            prop_oneof![Just("subscribe".to_owned()), Just("verify-me".to_owned()), fuzz::tricky_string()],
            0..4),
    ) {
        let query: HashMap<String, String> =
            query.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        match Messenger::challenge(&creds(), &query) {
            Some(Ok(challenge)) => {
                prop_assert_eq!(query.get("hub.verify_token").map(String::as_str), Some("verify-me"));
                prop_assert_eq!(Some(&challenge), query.get("hub.challenge"));
            }
            Some(Err(r)) => { conformance::rejection(&r).map_err(TestCaseError::fail)?; }
            None => prop_assert!(false, "Messenger has a handshake"),
        }
    }
}

/// The near-valid inputs start from payloads the parser takes: most seeds become events
/// (a few, such as receipts of unknown messages or typing, are valid and make none).
#[test]
fn the_seeds_are_taken() {
    let seeds: Vec<Vec<u8>> = seeds().iter().map(|v| v.to_string().into_bytes()).collect();
    conformance::assert_seeds_taken::<Messenger>(CHANNEL, &seeds);
}
