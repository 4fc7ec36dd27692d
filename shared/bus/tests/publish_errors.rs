//! Publish errors, against a real nats-server: what can never be stored is a permanent error
//! (the consumer runtime dead-letters it, an HTTP edge refuses it), what may pass later is
//! not (retried; a full stream is backpressure).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::stream;
use bytes::Bytes;
use patchbay_bus::{Bus, BusError, HandlerError};
use patchbay_contract::Subjects;
use patchbay_contract::topology::TopologySettings;
use patchbay_testkit::nats::NatsServer;

const MAX_PAYLOAD: usize = 8 * 1024;

async fn bus(nats: &NatsServer) -> Bus {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let subjects = Subjects::new(&patchbay_testkit::unique_prefix()).unwrap();
    Bus::from_client(client, subjects, Duration::from_secs(5))
}

fn permanent(e: BusError) -> bool {
    matches!(HandlerError::from(e), HandlerError::Reject { .. })
}

#[tokio::test]
async fn a_message_over_max_payload_is_refused_for_good() {
    let nats = NatsServer::start_with_max_payload(MAX_PAYLOAD)
        .await
        .unwrap();
    let bus = bus(&nats).await;
    bus.ensure_topology(&TopologySettings::default())
        .await
        .unwrap();
    let subject = bus.subjects().send("bot_1").unwrap();

    let fits = Bytes::from(vec![b'x'; MAX_PAYLOAD / 2]);
    bus.publish_bytes(&subject, "m1", fits, HeaderMap::new())
        .await
        .unwrap();
    let too_large = Bytes::from(vec![b'x'; MAX_PAYLOAD + 1]);
    let e = bus
        .publish_bytes(&subject, "m2", too_large, HeaderMap::new())
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(permanent(e), "retried forever: {text}");
    assert!(text.contains("too large"), "{text}");
}

#[tokio::test]
async fn a_message_over_a_streams_max_message_size_is_refused_for_good_and_a_full_stream_is_not() {
    let nats = NatsServer::start().await.unwrap();
    let bus = bus(&nats).await;
    let prefix = bus.subjects().prefix().to_owned();
    bus.jetstream()
        .create_stream(stream::Config {
            name: format!("{prefix}_SMALL"),
            subjects: vec![format!("{prefix}.small.>")],
            max_message_size: 1024,
            max_bytes: 4096,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    let subject = format!("{prefix}.small.x");

    let e = bus
        .publish_bytes(
            &subject,
            "big",
            Bytes::from(vec![b'x'; 2048]),
            HeaderMap::new(),
        )
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(permanent(e), "retried forever: {text}");

    // Fill the stream: the refusal that follows is backpressure, retried.
    let mut refused = None;
    for i in 0..16 {
        let body = Bytes::from(vec![b'x'; 900]);
        if let Err(e) = bus
            .publish_bytes(&subject, &format!("m{i}"), body, HeaderMap::new())
            .await
        {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("a 4 KiB stream refuses the fifth 900-byte message");
    assert!(matches!(e, BusError::Unavailable(_)), "{e}");
}

/// A key with as many messages waiting as one key may is refused, and told so apart from a
/// full stream; other keys of the same stream still publish; a duplicate of a message that is
/// stored is still recognised as one (nothing is refused twice into a failure).
#[tokio::test]
async fn a_key_at_its_backlog_bound_is_refused_while_others_flow() {
    let nats = NatsServer::start().await.unwrap();
    let bus = bus(&nats).await;
    bus.ensure_topology(&TopologySettings {
        backlog_per_key: 3,
        ..TopologySettings::default()
    })
    .await
    .unwrap();
    let flooder = bus.subjects().send("bot_flood").unwrap();
    let other = bus.subjects().send("bot_other").unwrap();
    for i in 0..3 {
        bus.publish_bytes(
            &flooder,
            &format!("f{i}"),
            Bytes::from_static(b"{}"),
            HeaderMap::new(),
        )
        .await
        .unwrap();
    }
    let e = bus
        .publish_bytes(&flooder, "f3", Bytes::from_static(b"{}"), HeaderMap::new())
        .await
        .unwrap_err();
    assert!(matches!(e, BusError::Backlogged(_)), "{e}");
    // Waiting for room is not the message's fault: a consumer retries without counting.
    assert!(matches!(
        HandlerError::from(BusError::Backlogged(String::new())),
        HandlerError::Unavailable { .. }
    ));
    let again = bus
        .publish_bytes(&flooder, "f0", Bytes::from_static(b"{}"), HeaderMap::new())
        .await
        .unwrap();
    assert!(
        again.duplicate,
        "a stored message's copy is a duplicate, not refused"
    );
    for i in 0..3 {
        bus.publish_bytes(
            &other,
            &format!("o{i}"),
            Bytes::from_static(b"{}"),
            HeaderMap::new(),
        )
        .await
        .unwrap();
    }
}

/// A message that fitted the bus but whose dead-letter copy, with its `Pb-Dlq-*` headers, does
/// not: the copy keeps the start of the payload, marked with the original size, instead of
/// failing (which would nak the original to be dead-lettered again, forever).
#[tokio::test]
async fn a_dead_letter_that_no_longer_fits_is_kept_truncated() {
    let nats = NatsServer::start_with_max_payload(MAX_PAYLOAD)
        .await
        .unwrap();
    let bus = bus(&nats).await;
    bus.ensure_topology(&TopologySettings::default())
        .await
        .unwrap();
    let original = Bytes::from(vec![b'x'; MAX_PAYLOAD - 64]);
    let copy = patchbay_bus::consume::DeadLetter {
        consumer: "normaliser",
        stream: bus
            .subjects()
            .stream(patchbay_contract::subjects::Stream::Ingress),
        subject: bus
            .subjects()
            .ingress(patchbay_contract::Platform::Telegram, "ch_1")
            .unwrap(),
        stream_sequence: 7,
        delivered: 1,
        reason: "r".repeat(900),
        payload: original.clone(),
        headers: None,
    };
    copy.store(&bus).await.unwrap();

    let dlq = bus
        .jetstream()
        .get_stream(
            bus.subjects()
                .stream(patchbay_contract::subjects::Stream::Dlq),
        )
        .await
        .unwrap();
    let stored = dlq
        .get_last_raw_message_by_subject(&bus.subjects().dlq("normaliser", "ch_1").unwrap())
        .await
        .unwrap();
    let headers = stored.headers;
    assert_eq!(
        headers
            .get(patchbay_contract::headers::DLQ_TRUNCATED)
            .map(|v| v.as_str().to_owned()),
        Some(original.len().to_string())
    );
    assert!(stored.payload.len() < original.len());
    assert!(original.starts_with(&stored.payload));
    assert_eq!(
        headers
            .get(patchbay_contract::headers::DLQ_REASON)
            .map(|v| v.as_str().to_owned()),
        Some("r".repeat(900))
    );
}
