//! Several replicas of one worker: they split the stream's partitions between them, a bot's
//! platform pace holds across them, and a replica leaving hands its partitions over without
//! losing or reordering anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use patchbay_telegram::fixtures;
use patchbay_testkit::eventually;
use patchbay_tests::{Layout, Options, Stack, TIMEOUT};
use serde_json::json;

const PARTITIONS: u32 = 8;

/// Waits until `consumer` has exactly `members` members whose partitions are disjoint, cover
/// every partition, and are spread evenly.
async fn wait_for_split(stack: &Stack, consumer: &str, members: usize) {
    eventually(
        TIMEOUT,
        &format!("{consumer} split between {members} members"),
        || async {
            let groups = stack.group_members(consumer).await;
            if groups.len() != members {
                return None;
            }
            let all: Vec<u32> = groups.iter().flatten().copied().collect();
            let distinct: BTreeSet<u32> = all.iter().copied().collect();
            let cap = (PARTITIONS as usize).div_ceil(members);
            let even = groups.iter().all(|g| !g.is_empty() && g.len() <= cap);
            (all.len() == distinct.len() && distinct == (0..PARTITIONS).collect() && even)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_split_the_partitions_and_keep_one_bots_pace() {
    let mut stack = Stack::start_with(Options {
        layout: Layout::Split,
        configure: Box::new(|c| {
            c.partitions = PARTITIONS;
            c.telegram_per_bot_per_second = 4;
        }),
        ..Options::default()
    })
    .await;
    stack.add_replica("outbound-telegram").await;
    wait_for_split(&stack, "outbound-telegram", 2).await;

    let bot = stack.bot().await;
    for chat in 0..10 {
        let update = fixtures::text_update(chat + 1, 8000 + chat, "hi");
        assert_eq!(stack.post_update(&bot, &update).await, 200);
    }
    let users: Vec<serde_json::Value> = stack
        .events_of("message.received", 10)
        .await
        .iter()
        .map(|r| r.json()["user"]["id"].clone())
        .collect();
    let url = format!("{}/v1/messages", stack.api_url());
    for user in &users {
        let two = json!([{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]);
        let (status, body) = stack
            .post(
                &url,
                &bot.api_key,
                &json!({"user_id": user, "messages": two}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let mut calls = stack.telegram.wait_for("sendMessage", 20, TIMEOUT).await;
    calls.sort_by_key(|c| c.at);
    // 20 messages of one bot at 4/s (a burst of 4, then one every 250 ms) take 4 s, however
    // many sender replicas there are: the bot's pace lives in the one replica that owns its
    // partition. Two independent paces would finish in about 2 s.
    let spread = calls[19].at.duration_since(calls[0].at);
    assert!(
        spread >= Duration::from_millis(3_700),
        "the bot's pace was exceeded across replicas: 20 calls in {spread:?}"
    );
    stack.shutdown().await;
}

/// Posts messages `from..to` of two conversations per bot, each conversation in order.
async fn send(stack: &Stack, bots: &[patchbay_tests::TestBot], from: i64, to: i64) {
    let each = bots.iter().enumerate().map(|(b, bot)| async move {
        let b = i64::try_from(b).unwrap();
        for n in from..to {
            for chat in 0..2i64 {
                let update = fixtures::text_update(
                    1 + b * 10_000 + chat * 1000 + n,
                    9000 + chat,
                    &format!("{b}/{chat}:{n}"),
                );
                assert_eq!(stack.post_update(bot, &update).await, 200);
            }
        }
    });
    futures::future::join_all(each).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_leaving_hands_its_partitions_over_in_order() {
    let mut stack = Stack::start_with(Options {
        layout: Layout::Split,
        configure: Box::new(|c| c.partitions = PARTITIONS),
        ..Options::default()
    })
    .await;
    stack.add_replica("webhook-dispatcher").await;
    wait_for_split(&stack, "webhook-dispatcher", 2).await;

    // Several bots, so their partitions fall to both replicas.
    let mut bots = Vec::new();
    for _ in 0..6 {
        bots.push(stack.bot().await);
    }
    let per_chat = 12;
    send(&stack, &bots, 0, per_chat / 2).await;
    // One replica stops (as in a rolling update) while events flow.
    stack.stop("webhook-dispatcher").await;
    send(&stack, &bots, per_chat / 2, per_chat).await;
    wait_for_split(&stack, "webhook-dispatcher", 1).await;

    let total = bots.len() * 2 * usize::try_from(per_chat).unwrap();
    let received = eventually(TIMEOUT, &format!("{total} events"), || async {
        let texts: HashSet<String> = stack
            .tenant
            .received()
            .iter()
            .filter_map(|r| {
                r.json()["message"]["content"]["text"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        (texts.len() >= total).then(|| stack.tenant.received())
    })
    .await;
    let mut order: HashMap<String, Vec<i64>> = HashMap::new();
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    for r in &received {
        let Some(text) = r.json()["message"]["content"]["text"]
            .as_str()
            .map(str::to_owned)
        else {
            continue;
        };
        ids.entry(text.clone())
            .or_default()
            .insert(r.header("webhook-id").unwrap());
        let (conversation, n) = text.split_once(':').unwrap();
        let seq = order.entry(conversation.to_owned()).or_default();
        let n: i64 = n.parse().unwrap();
        // A repeated delivery (same webhook-id) may follow; order counts first deliveries.
        if !seq.contains(&n) {
            seq.push(n);
        }
    }
    assert!(
        ids.values().all(|s| s.len() == 1),
        "an event was delivered under two webhook-ids"
    );
    for (conversation, seq) in &order {
        assert_eq!(
            seq,
            &(0..per_chat).collect::<Vec<_>>(),
            "conversation {conversation} out of order or incomplete"
        );
    }
    stack.shutdown().await;
}
