//! Backpressure: with NATS unreachable or a stream full, the ingress and the API answer 503
//! (never 200), and everything resumes by itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_telegram::fixtures;
use patchbay_tests::{Layout, Options, Stack, TIMEOUT, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_means_503_and_everything_resumes_when_it_is_back() {
    let mut stack = Stack::start_with(Options {
        configure: Box::new(|c| c.publish_timeout_ms = 500),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(1, 4242, "before"))
            .await,
        200
    );
    let user = stack.events_of("message.received", 1).await[0].json()["user"]["id"].clone();

    stack.nats.kill();
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(2, 4242, "during"))
            .await,
        503
    );
    let (status, body) = stack
        .post(
            &format!("{}/v1/messages", stack.api_url()),
            &bot.api_key,
            &json!({"user_id": user, "messages": [{"type": "text", "text": "during"}]}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    let ready = stack
        .http
        .get(format!("{}/readyz", stack.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503, "not ready without NATS");

    stack.nats.restart().await.unwrap();
    // The platform retries until we answer 200; do the same.
    eventually(TIMEOUT, "the ingress accepting again", || async {
        (stack
            .post_update(&bot, &fixtures::text_update(2, 4242, "during"))
            .await
            == 200)
            .then_some(())
    })
    .await;
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(3, 4242, "after"))
            .await,
        200
    );
    assert_eq!(
        stack.received_texts(3).await,
        vec![json!("before"), json!("during"), json!("after")]
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_means_503_until_it_drains() {
    let mut stack = Stack::start_with(Options {
        layout: Layout::Split,
        configure: Box::new(|c| c.nats_max_stream_bytes = 8 * 1024),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    stack.stop("normaliser").await;
    let mut accepted = 0;
    let mut refused_at = None;
    for n in 0..100 {
        match stack
            .post_update(&bot, &fixtures::text_update(10 + n, 4242, &n.to_string()))
            .await
        {
            200 => accepted += 1,
            503 => {
                refused_at = Some(n);
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let refused_at = refused_at.expect("the ingress stream filled up and refused");
    assert!(accepted > 0);
    stack.restart("normaliser").await;
    // Drained: the refused update is accepted now.
    eventually(TIMEOUT, "the ingress accepting again", || async {
        let update = fixtures::text_update(10 + refused_at, 4242, &refused_at.to_string());
        (stack.post_update(&bot, &update).await == 200).then_some(())
    })
    .await;
    let texts = stack.received_texts(accepted + 1).await;
    let expected: Vec<_> = (0..=refused_at).map(|n| json!(n.to_string())).collect();
    assert_eq!(texts, expected, "nothing accepted was lost, in order");
    stack.shutdown().await;
}

/// The nats-server of the tests below takes messages of at most this size.
const MAX_PAYLOAD: usize = 64 * 1024;

/// A send of one image whose caption is `caption` bytes long.
fn captioned(user: &serde_json::Value, caption: usize) -> serde_json::Value {
    json!({"user_id": user, "messages": [{"type": "image", "url": "https://cdn.example/a.jpg",
                                          "caption": "x".repeat(caption)}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_nats_can_never_store_is_refused_at_the_edges_not_retried() {
    let stack = Stack::start_with(Options {
        nats_max_payload: Some(MAX_PAYLOAD),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(1, 4242, "hi"))
            .await,
        200
    );
    let user = stack.events_of("message.received", 1).await[0].json()["user"]["id"].clone();

    // A webhook whose envelope is over max_payload: 413, so the platform stops retrying
    // (a 503 would have it retry forever).
    let huge = fixtures::text_update(2, 4242, &"x".repeat(MAX_PAYLOAD));
    assert_eq!(stack.post_update(&bot, &huge).await, 413);

    // A send command over it: 413 with a clear error, not 503 "retry shortly".
    let (status, body) = stack
        .post(
            &format!("{}/v1/messages", stack.api_url()),
            &bot.api_key,
            &captioned(&user, MAX_PAYLOAD),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large", "{body}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_outbound_job_nats_can_never_store_fails_at_once() {
    let stack = Stack::start_with(Options {
        nats_max_payload: Some(MAX_PAYLOAD),
        ..Options::default()
    })
    .await;
    let bot = stack.bot_with_events(Some(vec!["*"])).await;
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(1, 4242, "hi"))
            .await,
        200
    );
    let user = stack.events_of("message.received", 1).await[0].json()["user"]["id"].clone();

    // The largest command the API stores: its outbound job, which adds the conversation,
    // the address and more ids, is over max_payload.
    let url = format!("{}/v1/messages", stack.api_url());
    let (mut fits, mut over) = (MAX_PAYLOAD / 2, MAX_PAYLOAD);
    let mut last_accepted = None;
    while over - fits > 1 {
        let mid = (fits + over) / 2;
        let (status, body) = stack.post(&url, &bot.api_key, &captioned(&user, mid)).await;
        if status == 202 {
            fits = mid;
            last_accepted = Some(body["message_ids"][0].clone());
        } else {
            over = mid;
        }
    }
    let id = last_accepted.expect("a command of half max_payload is stored");

    // The router cannot store the job, ever: the message fails with the reason, at once,
    // instead of the command being retried in place (holding the user's later sends) forever.
    let failed = eventually(TIMEOUT, "message.failed of the largest send", || async {
        stack
            .tenant
            .received()
            .into_iter()
            .map(|r| r.json())
            .find(|e| e["type"] == "message.failed" && e["message"]["id"] == id)
    })
    .await;
    assert_eq!(failed["error"]["code"], "too_large", "{failed}");

    // The user's next message goes out: nothing is held behind the failed one.
    let (status, body) = stack
        .post(
            &url,
            &bot.api_key,
            &json!({"user_id": user, "messages": [{"type": "text", "text": "after"}]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let after = body["message_ids"][0].clone();
    eventually(TIMEOUT, "the next send reaching Telegram", || async {
        stack
            .tenant
            .received()
            .into_iter()
            .map(|r| r.json())
            .find(|e| e["type"] == "message.sent" && e["message"]["id"] == after)
    })
    .await;
    stack.shutdown().await;
}
