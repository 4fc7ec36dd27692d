//! Fuzz tests of WhatsApp's inbound parser (`docs/security.md`): `X-Hub-Signature-256`, then
//! split and normalisation of arbitrary and near-valid Cloud API webhooks (messages, contacts,
//! statuses).

use axum::http::HeaderMap;
use patchbay_platform::conformance;
use patchbay_platform::meta::{SIGNATURE_HEADER, signature_hex};
use patchbay_testkit::fuzz::{self, proptest::prelude::*};
use serde_json::Value;

use crate::fixtures::*;
use crate::{Whatsapp, WhatsappCredentials};

const CHANNEL: &str = "ch_01HZX0000000000000000000WA";

/// The field names of WhatsApp's webhooks.
const KEYS: &[&str] = &[
    "object",
    "entry",
    "id",
    "changes",
    "field",
    "value",
    "messaging_product",
    "metadata",
    "phone_number_id",
    "contacts",
    "profile",
    "name",
    "wa_id",
    "user_id",
    "username",
    "messages",
    "from",
    "from_user_id",
    "timestamp",
    "type",
    "text",
    "body",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "mime_type",
    "caption",
    "filename",
    "location",
    "latitude",
    "longitude",
    "address",
    "interactive",
    "button_reply",
    "list_reply",
    "title",
    "button",
    "payload",
    "context",
    "referral",
    "source_url",
    "statuses",
    "status",
    "recipient_id",
    "errors",
    "code",
    "message",
];

fn seeds() -> Vec<Value> {
    let msgs = |m: Value| post(&[(PHONE_NUMBER_ID, from_user(m))]);
    vec![
        msgs(text("wamid.1", "hi")),
        msgs(media("wamid.2", "image", "media-1", Some("look"))),
        msgs(media("wamid.3", "document", "media-2", None)),
        msgs(location("wamid.4")),
        msgs(button_reply("wamid.5", "wamid.0", "yes", "Yes")),
        msgs(list_reply("wamid.6", "row", "Row")),
        msgs(template_button("wamid.7", "P", "T")),
        msgs(ad_referral("wamid.8", "from the ad")),
        post(&[(PHONE_NUMBER_ID, from_username_only("wamid.9", "hey"))]),
        post(&[
            (PHONE_NUMBER_ID, status("wamid.10", "read")),
            ("106500000000002", failed("wamid.11", 131051, "Unsupported")),
        ]),
    ]
}

patchbay_platform::pipeline_fuzz_tests!(
    Whatsapp,
    CHANNEL,
    seeds(),
    KEYS,
    fuzz_whatsapp_split_normalise_bytes,
    fuzz_whatsapp_split_normalise_near_valid,
    fuzz_whatsapp_near_valid_bytes,
);

proptest! {
    #![proptest_config(fuzz::config())]

    /// `X-Hub-Signature-256` over random bodies: Meta's signature passes, one bit off or
    /// anything else is refused with a reason.
    #[test]
    fn fuzz_whatsapp_verify(
        body in fuzz::bytes(256),
        bit in any::<usize>(),
        arbitrary in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let creds = WhatsappCredentials {
            phone_number_id: PHONE_NUMBER_ID.into(),
            access_token: "token".into(),
            app_secret: "app-secret".into(),
            verify_token: "verify-me".into(),
        };
        let good = signature_hex(&creds.app_secret, &body);
        let mac = fuzz::unhex(&good).unwrap_or_default();
        let flipped = format!("sha256={}", fuzz::hex(&fuzz::flip(&mac, bit)));
        conformance::signature::<Whatsapp>(
            &creds, HeaderMap::new(), SIGNATURE_HEADER, &body,
            &format!("sha256={good}"), &flipped, &arbitrary,
        ).map_err(TestCaseError::fail)?;
    }
}

/// The near-valid inputs start from payloads the parser takes: most seeds become events
/// (a few, such as receipts of unknown messages or typing, are valid and make none).
#[test]
fn the_seeds_are_taken() {
    let seeds: Vec<Vec<u8>> = seeds().iter().map(|v| v.to_string().into_bytes()).collect();
    conformance::assert_seeds_taken::<Whatsapp>(CHANNEL, &seeds);
}
