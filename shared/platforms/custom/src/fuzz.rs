//! Fuzz tests of custom channels' inbound side (`docs/security.md`): user tokens, the bodies
//! apps post to `ingress-custom`, and the normaliser of the envelopes it publishes.

use patchbay_contract::{Content, InboundEvent, IngressEnvelope, Platform, V1};
use patchbay_testkit::fuzz::{self, proptest::prelude::*};
use serde_json::{Value, json};

use crate::api::{RegisterUser, SendAsUser};
use crate::inbound::normalise;
use crate::token;

const CHANNEL: &str = "ch_01HZX0000000000000000000CU";

const KEYS: &[&str] = &[
    "kind",
    "user",
    "platform_user_id",
    "display_name",
    "locale",
    "avatar_url",
    "email",
    "phone",
    "message_id",
    "content",
    "at",
    "type",
    "text",
    "url",
    "payload",
    "title",
    "latitude",
    "longitude",
    "external_id",
    "id",
    "wait_ms",
];

fn envelope_seeds() -> Vec<Value> {
    vec![
        json!({"kind": "register", "at": "2026-01-01T00:00:00Z",
               "user": {"platform_user_id": "app-user:1", "display_name": "Ana", "email": "ana@x.example"}}),
        json!({"kind": "message", "at": "2026-01-01T00:00:00Z", "message_id": "m1",
               "user": {"platform_user_id": "app-user:1"}, "content": {"type": "text", "text": "hi"}}),
        json!({"kind": "message", "at": "2026-01-01T00:00:00Z", "message_id": "m2",
               "user": {"platform_user_id": "u"}, "content": {"type": "location", "latitude": 1.5, "longitude": 2.5}}),
    ]
}

fn body_seeds() -> Vec<Value> {
    vec![
        json!({"external_id": "app-user:1", "display_name": "Ana", "locale": "pt", "phone": "+351910000000"}),
        json!({"id": "k1", "content": {"type": "postback", "payload": "p", "title": "t"}, "wait_ms": 0}),
        json!({"content": {"type": "image", "url": "https://x.example/a.jpg"}}),
    ]
}

/// The custom normaliser on `body`: a clear error, or events that cross NATS unchanged.
fn check_envelope(body: Value) -> Result<(), TestCaseError> {
    let env = IngressEnvelope {
        v: V1,
        id: "env_01HZX0000000000000000000AB".into(),
        platform: Platform::Custom,
        channel_id: CHANNEL.into(),
        bot_id: "bot_01HZX0000000000000000000AB".into(),
        received_at: chrono::Utc::now(),
        dedupe_key: format!("custom:{CHANNEL}:m"),
        body,
        order_key: None,
    };
    match normalise(&env) {
        Err(e) => fuzz::clear(&e.0),
        Ok(events) => {
            for e in events {
                let wire =
                    serde_json::to_string(&e).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let back: InboundEvent = serde_json::from_str(&wire)
                    .map_err(|err| TestCaseError::fail(format!("{err}: {wire}")))?;
                prop_assert_eq!(
                    serde_json::to_value(&back).ok(),
                    serde_json::to_value(&e).ok()
                );
                prop_assert!(token::valid_user_id(&e.address));
                if let Some(m) = &e.message {
                    prop_assert!(m.content.validate().is_ok());
                }
            }
            Ok(())
        }
    }
}

/// The bodies of `POST /v1/custom/{ch}/users` and `/messages`: decoded or refused, content
/// validated with a named field.
fn check_bodies(body: &[u8]) -> Result<(), TestCaseError> {
    let _ = serde_json::from_slice::<RegisterUser>(body);
    if let Ok(send) = serde_json::from_slice::<SendAsUser>(body)
        && let Err(e) = send.content.validate()
    {
        fuzz::clear(&e.field)?;
        fuzz::clear(&e.message)?;
    }
    if let Ok(content) = serde_json::from_slice::<Content>(body) {
        let _ = content.validate();
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz::config())]

    /// A token names its user and issue time on its channel only; one bit off, another
    /// channel's, or any other text names nobody; a token from before issue times is told
    /// apart and never read as a current one.
    #[test]
    fn fuzz_custom_token(
        secret in any::<String>(),
        user in "[A-Za-z0-9_:@.-]{1,128}",
        issued_at in 0i64..=i64::MAX,
        other_channel in "ch_[A-Z0-9]{1,26}",
        bit in any::<usize>(),
        arbitrary in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_:@.-]{1,20}\\.[A-Za-z0-9_-]{0,50}",
            "[A-Za-z0-9_:@.-]{1,20}\\.[0-9]{1,20}\\.[A-Za-z0-9_-]{0,50}",
        ],
    ) {
        let issued = token::issue(&secret, CHANNEL, &user, issued_at);
        let expected = token::Verified { user: user.as_str(), issued_at_ms: Some(issued_at) };
        prop_assert_eq!(token::verify(&secret, CHANNEL, &issued), Some(expected));
        let legacy = token::issue_legacy(&secret, CHANNEL, &user);
        let old = token::Verified { user: user.as_str(), issued_at_ms: None };
        prop_assert_eq!(token::verify(&secret, CHANNEL, &legacy), Some(old));
        if other_channel != CHANNEL {
            prop_assert_eq!(token::verify(&secret, &other_channel, &issued), None);
            prop_assert_eq!(token::verify(&secret, &other_channel, &legacy), None);
        }
        let flipped = fuzz::flip(issued.as_bytes(), bit);
        if let Ok(flipped) = String::from_utf8(flipped) {
            // A flip inside the user id or the issue time names another user or time, whose
            // MAC this is not.
            prop_assert_eq!(token::verify(&secret, CHANNEL, &flipped).is_some(), flipped == issued);
        }
        if let Some(named) = token::verify(&secret, CHANNEL, &arbitrary) {
            let again = match named.issued_at_ms {
                Some(t) => token::issue(&secret, CHANNEL, named.user, t),
                None => token::issue_legacy(&secret, CHANNEL, named.user),
            };
            prop_assert_eq!(again, arbitrary.clone());
        }
    }

    #[test]
    fn fuzz_custom_bodies(body in prop_oneof![
        fuzz::bytes(512),
        fuzz::near_valid_json(body_seeds(), KEYS).prop_map(|v| v.to_string().into_bytes()),
    ]) {
        check_bodies(&body)?;
    }

    #[test]
    fn fuzz_custom_normalise(body in prop_oneof![
        fuzz::json(KEYS),
        fuzz::near_valid_json(envelope_seeds(), KEYS),
    ]) {
        check_envelope(body)?;
    }
}
