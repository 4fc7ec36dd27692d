//! Order per conversation: events reach the tenant, and replies reach the user, in the order
//! they were produced, while conversations proceed in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use patchbay_telegram::fixtures;
use patchbay_testkit::eventually;
use patchbay_tests::{Layout, Options, Stack, TIMEOUT};
use reqwest::StatusCode;
use serde_json::json;

async fn stored(stack: &Stack, suffix: &str) -> u64 {
    stack
        .stream_sequences()
        .await
        .into_iter()
        .find(|(s, _)| s.ends_with(suffix))
        .unwrap()
        .1
}

/// Work piles up behind a stopped dispatcher and a stopped sender, then is released as a
/// burst to 16 parallel handlers: without per-conversation lanes it would come out shuffled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_replies_keep_their_order_per_conversation() {
    let mut stack = Stack::start_with(Options {
        layout: Layout::Split,
        configure: Box::new(|c| c.consumer_concurrency = 16),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    stack.tenant.respond_with(|r| {
        let text = r.json()["message"]["content"]["text"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        (
            StatusCode::OK,
            Some(json!([{"type": "text", "text": format!("re {text}")}])),
        )
    });
    stack.stop("webhook-dispatcher").await;
    stack.stop("outbound-telegram").await;

    let (chats, per_chat) = (6_i64, 25_i64);
    let total = u64::try_from(chats * per_chat).unwrap();
    // Each chat's updates are sent in order (as Telegram does per chat); chats run in parallel.
    let sends = (0..chats).map(|chat| {
        let stack = &stack;
        let bot = &bot;
        async move {
            for n in 0..per_chat {
                let update = fixtures::text_update(1 + chat * 1000 + n, 100 + chat, &n.to_string());
                assert_eq!(stack.post_update(bot, &update).await, 200);
            }
        }
    });
    futures::future::join_all(sends).await;
    eventually(TIMEOUT, "all dispatch jobs stored", || async {
        (stored(&stack, "_DISPATCH").await == total).then_some(())
    })
    .await;

    stack.restart("webhook-dispatcher").await;
    let events = stack.events_of("message.received", total as usize).await;
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for e in &events {
        let e = e.json();
        let chat = e["user"]["platform_user_id"].as_str().unwrap().to_owned();
        let n: i64 = e["message"]["content"]["text"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        seen.entry(chat).or_default().push(n);
    }
    assert_eq!(seen.len(), usize::try_from(chats).unwrap());
    for (chat, ns) in &seen {
        assert_eq!(
            ns,
            &(0..per_chat).collect::<Vec<_>>(),
            "events of chat {chat} out of order"
        );
    }

    eventually(TIMEOUT, "all outbound jobs stored", || async {
        (stored(&stack, "_OUTBOUND").await == total).then_some(())
    })
    .await;
    stack.restart("outbound-telegram").await;
    let calls = stack
        .telegram
        .wait_for("sendMessage", total as usize, TIMEOUT)
        .await;
    let mut replies: HashMap<i64, Vec<i64>> = HashMap::new();
    for c in &calls {
        let n: i64 = c.body["text"]
            .as_str()
            .unwrap()
            .trim_start_matches("re ")
            .parse()
            .unwrap();
        replies
            .entry(c.body["chat_id"].as_i64().unwrap())
            .or_default()
            .push(n);
    }
    assert_eq!(replies.len(), usize::try_from(chats).unwrap());
    for (chat, ns) in &replies {
        assert_eq!(
            ns,
            &(0..per_chat).collect::<Vec<_>>(),
            "replies to chat {chat} out of order"
        );
    }
    stack.shutdown().await;
}
