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
