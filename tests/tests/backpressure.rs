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

/// Messages a bot or channel may have waiting in each pipeline stream, in the tests below.
const BACKLOG: i64 = 8;

async fn first_user(stack: &Stack, bot: &patchbay_tests::TestBot, chat: i64) -> serde_json::Value {
    assert_eq!(
        stack
            .post_update(bot, &fixtures::text_update(chat, chat, "hi"))
            .await,
        200
    );
    eventually(TIMEOUT, "the user's first message", || async {
        stack
            .tenant
            .received()
            .into_iter()
            .map(|r| r.json())
            .find(|e| e["type"] == "message.received" && e["bot_id"] == bot.id.as_str())
            .map(|e| e["user"]["id"].clone())
    })
    .await
}

fn texts(n: std::ops::Range<usize>, who: &str) -> Vec<serde_json::Value> {
    n.map(|i| json!({"type": "text", "text": format!("{who} {i}")}))
        .collect()
}

/// The attack: one bot floods one Telegram chat (paced at 1/s) through the API. Without a
/// bound per key its jobs fill the outbound stream every bot shares, the router waits for
/// room holding the flood's commands, those fill the send stream, and every other bot's
/// `POST /v1/messages` is refused with 503 until the flood has drained (about a minute and a
/// half here). With it, the flood beyond the channel's bound fails at once with
/// `backlog_full`, nothing is lost or silently dropped, and another bot's message is taken
/// and goes out while the flood is still going out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_flooding_a_paced_chat_cannot_fill_the_pipeline_for_the_others() {
    const FLOOD: usize = 100;
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| {
            c.nats_max_stream_bytes = 32 * 1024;
            c.pipeline_backlog_per_key = BACKLOG;
            c.telegram_per_chat_per_second = 1;
            c.telegram_per_chat_burst = 1;
            c.api_rate_per_second = 10_000;
            c.api_rate_burst = 10_000;
        }),
        ..Options::default()
    })
    .await;
    let flooder = stack.bot_with_events(Some(vec!["*"])).await;
    let other = stack.bot().await;
    let flooded = first_user(&stack, &flooder, 5000).await;
    let user = first_user(&stack, &other, 6000).await;
    let url = format!("{}/v1/messages", stack.api_url());
    // One message per command, so the commands a stuck router would hold fill the send stream.
    let mut flood_ids = Vec::new();
    for n in 0..FLOOD {
        let (status, body) = stack
            .post(
                &url,
                &flooder.api_key,
                &json!({"user_id": flooded, "messages": texts(n..n + 1, "flood")}),
            )
            .await;
        match status {
            202 => flood_ids.push(body["message_ids"][0].clone()),
            429 => assert_eq!(body["error"]["code"], "backlog_full", "{body}"),
            _ => panic!("flood message {n}: {status} {body}"),
        }
    }
    let (status, body) = stack
        .post(
            &url,
            &other.api_key,
            &json!({"user_id": user, "messages": texts(0..1, "other")}),
        )
        .await;
    assert_eq!(status, 202, "the other bot's send is taken: {body}");

    let sent_by = |bot: &patchbay_tests::TestBot| {
        stack
            .telegram
            .accepted("sendMessage")
            .into_iter()
            .filter(|c| c.token == bot.bot_token)
            .count()
    };
    eventually(TIMEOUT, "the other bot's message", || async {
        (sent_by(&other) == 1).then_some(())
    })
    .await;
    let flood_out = sent_by(&flooder);
    assert!(
        flood_out < FLOOD / 2,
        "the other bot's message waited for {flood_out} of the flood's"
    );

    // Every flood message either goes out or fails with the reason: none is lost.
    let failed = eventually(TIMEOUT, "every flood message sent or failed", || async {
        let failed: Vec<serde_json::Value> = stack
            .tenant
            .received()
            .into_iter()
            .map(|r| r.json())
            .filter(|e| e["type"] == "message.failed" && e["bot_id"] == flooder.id.as_str())
            .collect();
        (failed.len() + sent_by(&flooder) == flood_ids.len()).then_some(failed)
    })
    .await;
    assert!(!failed.is_empty(), "the flood beyond the bound fails");
    for f in &failed {
        assert_eq!(f["error"]["code"], "backlog_full", "{f}");
        assert!(flood_ids.contains(&f["message"]["id"]), "{f}");
    }
    stack.shutdown().await;
}

/// At the edges, a key at its bound is refused with 429 `backlog_full` (the API) or 429 (the
/// ingress, which the platform retries), and only that key: with the consumers stopped, one
/// bot's API and one channel's webhooks are refused while another bot's are taken. Once the
/// consumers are back, everything taken is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_at_its_backlog_bound_is_refused_at_the_edges_and_only_that_key() {
    let mut stack = Stack::start_with(Options {
        layout: Layout::Split,
        configure: Box::new(|c| {
            c.pipeline_backlog_per_key = BACKLOG;
            c.api_rate_per_second = 10_000;
            c.api_rate_burst = 10_000;
        }),
        ..Options::default()
    })
    .await;
    let flooder = stack.bot().await;
    let other = stack.bot().await;
    let user = first_user(&stack, &flooder, 7000).await;
    let other_user = first_user(&stack, &other, 7001).await;
    stack.stop("bot-router").await;
    stack.stop("normaliser").await;

    let url = format!("{}/v1/messages", stack.api_url());
    let send = |bot: &patchbay_tests::TestBot, user: &serde_json::Value, n: usize| {
        let body = json!({"user_id": user, "messages": texts(n..n + 1, "m")});
        let stack = &stack;
        let url = url.clone();
        let key = bot.api_key.clone();
        async move { stack.post(&url, &key, &body).await }
    };
    for n in 0..usize::try_from(BACKLOG).unwrap() {
        let (status, body) = send(&flooder, &user, n).await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, body) = send(&flooder, &user, 99).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "backlog_full", "{body}");
    let (status, body) = send(&other, &other_user, 0).await;
    assert_eq!(status, 202, "another bot is not refused: {body}");

    for n in 0..BACKLOG {
        let update = fixtures::text_update(100 + n, 7000, &format!("u{n}"));
        assert_eq!(stack.post_update(&flooder, &update).await, 200);
    }
    let update = fixtures::text_update(200, 7000, "refused");
    assert_eq!(stack.post_update(&flooder, &update).await, 429);
    let update = fixtures::text_update(201, 7001, "taken");
    assert_eq!(stack.post_update(&other, &update).await, 200);

    stack.restart("normaliser").await;
    stack.restart("bot-router").await;
    // Everything taken is handled: the flooder's queued sends go out, its queued updates
    // reach the tenant, and the refused update is taken once there is room.
    stack
        .telegram
        .wait_for(
            "sendMessage",
            usize::try_from(BACKLOG).unwrap() + 1,
            TIMEOUT,
        )
        .await;
    eventually(
        TIMEOUT,
        "the refused update taken once there is room",
        || async {
            let update = fixtures::text_update(200, 7000, "refused");
            (stack.post_update(&flooder, &update).await == 200).then_some(())
        },
    )
    .await;
    stack
        .events_of(
            "message.received",
            2 + 2 + usize::try_from(BACKLOG).unwrap(),
        )
        .await;
    stack.shutdown().await;
}
