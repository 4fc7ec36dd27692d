//! The delivery API: the log of every callback, one retry, and replay of dead letters, which
//! keep the original `webhook-id`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use patchbay_telegram::fixtures;
use patchbay_tests::{Options, Stack, TIMEOUT, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn get(stack: &Stack, key: &str, path: &str) -> (u16, Value) {
    let r = stack
        .http
        .get(format!("{}{path}", stack.api_url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_can_be_listed_inspected_retried_and_replayed() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| c.webhook_retry_schedule = "0s,50ms,50ms".parse().unwrap()),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    let broken = Arc::new(AtomicBool::new(true));
    let b = broken.clone();
    stack.tenant.respond_with(move |r| {
        let poison = r.json()["message"]["content"]["text"] == "poison";
        if poison && b.load(Ordering::SeqCst) {
            (StatusCode::INTERNAL_SERVER_ERROR, None)
        } else {
            (StatusCode::OK, None)
        }
    });
    let since = chrono::Utc::now() - chrono::Duration::seconds(5);
    for (i, text) in ["a", "poison", "b"].iter().enumerate() {
        assert_eq!(
            stack
                .post_update(&bot, &fixtures::text_update(1 + i as i64, 4242, text))
                .await,
            200
        );
    }
    // b waits for poison's last attempt, so once b is delivered all three are settled.
    let list = eventually(TIMEOUT, "three settled deliveries", || async {
        let (_, page) = get(&stack, &bot.api_key, "/v1/deliveries").await;
        let items = page["items"].as_array()?.clone();
        (items.len() == 3 && items.iter().all(|d| d["status"] != "pending")).then_some(items)
    })
    .await;
    let statuses: Vec<&str> = list.iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["delivered", "failed", "delivered"],
        "newest first: b, poison, a"
    );
    let poison = &list[1];
    assert_eq!(poison["attempts"], 3);
    assert_eq!(poison["last_status_code"], 500);
    assert_eq!(poison["event_type"], "message.received");
    let poison_id = poison["event_id"].as_str().unwrap().to_owned();

    let (_, failed) = get(&stack, &bot.api_key, "/v1/deliveries?status=failed").await;
    assert_eq!(failed["items"].as_array().unwrap().len(), 1);
    assert_eq!(failed["items"][0]["event_id"], poison_id.as_str());

    let (_, first) = get(&stack, &bot.api_key, "/v1/deliveries?limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let (_, second) = get(
        &stack,
        &bot.api_key,
        &format!("/v1/deliveries?limit=2&cursor={}", urlencode(&cursor)),
    )
    .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second.get("next_cursor").is_none());
    assert_eq!(second["items"][0]["event_id"], list[2]["event_id"]);

    let (status, detail) = get(&stack, &bot.api_key, &format!("/v1/deliveries/{poison_id}")).await;
    assert_eq!(status, 200);
    let log = detail["attempts_log"].as_array().unwrap();
    assert_eq!(
        log.iter()
            .map(|a| a["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        log.iter()
            .all(|a| a["status_code"] == 500 && a["error"] == "HTTP 500")
    );
    assert_eq!(detail["event"]["message"]["content"]["text"], "poison");

    // Another bot sees none of it.
    let other = stack.bot().await;
    let (status, _) = get(
        &stack,
        &other.api_key,
        &format!("/v1/deliveries/{poison_id}"),
    )
    .await;
    assert_eq!(status, 404);

    // The tenant is fixed; the dead letter is replayed with its original webhook-id.
    broken.store(false, Ordering::SeqCst);
    let (status, replayed) = stack
        .post(
            &format!("{}/v1/deliveries/replay", stack.api_url()),
            &bot.api_key,
            &json!({"since": since.to_rfc3339()}),
        )
        .await;
    assert_eq!(
        (status, replayed["replayed"].as_u64()),
        (202, Some(1)),
        "{replayed}"
    );
    eventually(TIMEOUT, "the replayed event delivered", || async {
        let (_, d) = get(&stack, &bot.api_key, &format!("/v1/deliveries/{poison_id}")).await;
        (d["status"] == "delivered").then_some(())
    })
    .await;
    let poison_ids: std::collections::HashSet<String> = stack
        .tenant
        .received()
        .iter()
        .filter(|r| r.json()["message"]["content"]["text"] == "poison")
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(
        poison_ids.len(),
        1,
        "one webhook-id for every attempt and the replay"
    );

    // One more delivery of a delivered event, on request.
    let a_id = list[2]["event_id"].as_str().unwrap().to_owned();
    let before = stack.tenant.received().len();
    let (status, _) = stack
        .post(
            &format!("{}/v1/deliveries/{a_id}/retry", stack.api_url()),
            &bot.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, 202);
    let got = stack.tenant.wait_for(before + 1, TIMEOUT).await;
    assert_eq!(
        got.last().unwrap().header("webhook-id").as_deref(),
        Some(a_id.as_str())
    );
    stack.shutdown().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A bot with `n` dead letters (its endpoint answers 500 to everything, one attempt each).
async fn dead_letters(stack: &Stack, n: i64) -> patchbay_tests::TestBot {
    let bot = stack.bot_for(&stack.tenant.url(), None).await;
    for i in 0..n {
        assert_eq!(
            stack
                .post_update(&bot, &fixtures::text_update(1 + i, 4242, &format!("m{i}")))
                .await,
            200
        );
    }
    eventually(TIMEOUT, "every delivery dead-lettered", || async {
        let (_, page) = get(stack, &bot.api_key, "/v1/deliveries").await;
        let items = page["items"].as_array()?.clone();
        (items.len() == usize::try_from(n).unwrap()
            && items.iter().all(|d| d["status"] == "failed"))
        .then_some(())
    })
    .await;
    bot
}

async fn replay(stack: &Stack, bot: &patchbay_tests::TestBot, body: Value) -> reqwest::Response {
    stack
        .http
        .post(format!("{}/v1/deliveries/replay", stack.api_url()))
        .bearer_auth(&bot.api_key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_bounded_per_call_and_paced_per_bot() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| {
            c.webhook_retry_schedule = "0s".parse().unwrap();
            c.replay_per_minute = 3;
        }),
        ..Options::default()
    })
    .await;
    stack
        .tenant
        .respond_with(|_| (StatusCode::INTERNAL_SERVER_ERROR, None));
    let since = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();
    let bot = dead_letters(&stack, 5).await;

    // At most `limit` per call, the oldest first; the answer says more are left.
    let r = replay(&stack, &bot, json!({"since": since, "limit": 2})).await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["replayed"].as_u64(), body["more"].as_bool()),
        (Some(2), Some(true))
    );
    // Without a limit: what is left of the bot's three a minute.
    let r = replay(&stack, &bot, json!({"since": since})).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["replayed"].as_u64(), body["more"].as_bool()),
        (Some(1), Some(true))
    );
    // Then the bot waits, and is told how long.
    let r = replay(&stack, &bot, json!({"since": since})).await;
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "replay_paced");

    // Another bot's budget is its own.
    let other = dead_letters(&stack, 1).await;
    let r = replay(&stack, &other, json!({"since": since})).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["replayed"].as_u64(), body["more"].as_bool()),
        (Some(1), Some(false))
    );
}
