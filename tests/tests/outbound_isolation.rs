//! Outbound isolation: a bot waiting on its own pace holds nothing another bot needs. One bot
//! floods a single Telegram chat (paced at 1/s) with more messages than a partition may have
//! unacknowledged; sixteen other bots, all in the same partition, still get their messages out
//! at once, each conversation in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use patchbay_telegram::fixtures;
use patchbay_testkit::telegram::Call;
use patchbay_tests::{Layout, Options, Stack, TestBot, eventually};
use serde_json::{Value, json};

/// More than a partition consumer's `MaxAckPending` used to allow (1000).
const FLOOD: usize = 1100;
const OTHERS: usize = 16;
const EACH: usize = 3;
/// Flood messages (at 1/s after a burst of 3) allowed to go out before the last of the other
/// bots' messages. Before the fix they came after more than a hundred.
const FLOOD_BEFORE_OTHERS: usize = 25;

async fn user_of(stack: &Stack, bot: &TestBot, update_id: i64, chat: i64) -> Value {
    assert_eq!(
        stack
            .post_update(bot, &fixtures::text_update(update_id, chat, "hi"))
            .await,
        200
    );
    eventually(
        patchbay_tests::TIMEOUT,
        "the user's first message",
        || async {
            stack
                .tenant
                .received()
                .into_iter()
                .map(|r| r.json())
                .find(|e| e["type"] == "message.received" && e["bot_id"] == bot.id.as_str())
                .map(|e| e["user"]["id"].clone())
        },
    )
    .await
}

async fn send(stack: &Stack, bot: &TestBot, user: &Value, texts: &[String]) {
    let messages: Vec<Value> = texts
        .iter()
        .map(|t| json!({"type": "text", "text": t}))
        .collect();
    let (status, body) = stack
        .post(
            &format!("{}/v1/messages", stack.api_url()),
            &bot.api_key,
            &json!({"user_id": user, "messages": messages}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

fn texts_of(calls: &[Call], bot: &TestBot) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.token == bot.bot_token)
        .map(|c| c.body["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_flooding_one_chat_does_not_hold_up_the_others_in_its_partition() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| {
            // One partition: every bot's channel shares it with the flood.
            c.partitions = 1;
            c.telegram_per_bot_per_second = 30;
            c.telegram_per_chat_per_second = 1;
            c.telegram_per_chat_burst = 3;
            c.api_rate_per_second = 10_000;
            c.api_rate_burst = 10_000;
        }),
        ..Options::default()
    })
    .await;
    let flooder = stack.bot().await;
    let flooded = user_of(&stack, &flooder, 1, 5000).await;
    let mut others = Vec::new();
    for i in 0..OTHERS {
        let bot = stack.bot().await;
        let n = i64::try_from(i).unwrap();
        let user = user_of(&stack, &bot, 100 + n, 6000 + n).await;
        others.push((bot, user));
    }

    let flood: Vec<String> = (0..FLOOD).map(|n| format!("flood {n}")).collect();
    for chunk in flood.chunks(10) {
        send(&stack, &flooder, &flooded, chunk).await;
    }
    // Every flood job is stored in the outbound stream before the others send anything, and
    // the flood is going out.
    eventually(
        Duration::from_secs(60),
        "the flood's jobs stored",
        || async {
            let (_, last) = stack
                .stream_state(patchbay_contract::subjects::Stream::Outbound)
                .await;
            (last >= u64::try_from(FLOOD).unwrap()).then_some(())
        },
    )
    .await;
    stack
        .telegram
        .wait_for("sendMessage", 1, patchbay_tests::TIMEOUT)
        .await;

    let theirs: Vec<String> = (0..EACH).map(|n| format!("hello {n}")).collect();
    for (bot, user) in &others {
        send(&stack, bot, user, &theirs).await;
    }

    // Wait until every other bot's messages are out, or the flood is well ahead of them.
    let calls = eventually(
        Duration::from_secs(120),
        "the other bots' messages, or the flood's",
        || async {
            let calls = stack.telegram.accepted("sendMessage");
            let done = others
                .iter()
                .all(|(bot, _)| texts_of(&calls, bot).len() >= EACH);
            let flooded = texts_of(&calls, &flooder).len();
            (done || flooded >= FLOOD_BEFORE_OTHERS).then_some(calls)
        },
    )
    .await;

    let last_other = calls
        .iter()
        .rposition(|c| others.iter().any(|(bot, _)| c.token == bot.bot_token));
    let flood_before = texts_of(&calls[..last_other.map_or(0, |i| i + 1)], &flooder).len();
    for (bot, _) in &others {
        assert_eq!(
            texts_of(&calls, bot),
            theirs,
            "every other bot's messages arrive, in order, before the flood's {}th ({} flood \
             messages had arrived)",
            FLOOD_BEFORE_OTHERS,
            texts_of(&calls, &flooder).len()
        );
    }
    assert!(
        flood_before < FLOOD_BEFORE_OTHERS,
        "{flood_before} flood messages went out before the last of the others'"
    );
    // The flood itself keeps its order.
    let sent = texts_of(&calls, &flooder);
    assert_eq!(sent, flood[..sent.len()].to_vec());
    stack.shutdown().await;
}

/// Far more messages than a channel keeps in memory: the rest wait as references in their
/// lanes and are read back from the stream in turn. Two chats of one bot, interleaved, piled
/// up behind a stopped sender, which is stopped again midway (its waiting messages go back to
/// the stream and come to its successor): every message goes out once, each chat's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_beyond_a_channels_budget_go_out_once_and_in_order_across_a_restart() {
    let mut stack = Stack::start_with(Options {
        layout: Layout::Split,
        configure: Box::new(|c| {
            c.partitions = 1;
            c.telegram_per_bot_per_second = 200;
            c.telegram_per_chat_per_second = 20;
            c.telegram_per_chat_burst = 3;
            c.api_rate_per_second = 10_000;
            c.api_rate_burst = 10_000;
        }),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    let first = user_of(&stack, &bot, 1, 7000).await;
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(2, 7001, "hi"))
            .await,
        200
    );
    let second = eventually(patchbay_tests::TIMEOUT, "the second user", || async {
        stack
            .tenant
            .received()
            .into_iter()
            .map(|r| r.json())
            .map(|e| e["user"]["id"].clone())
            .find(|u| *u != first)
    })
    .await;
    let per_chat = 2 * patchbay_contract::topology::OUTBOUND_GROUP_BUDGET;
    let texts =
        |who: &str| -> Vec<String> { (0..per_chat).map(|n| format!("{who} {n}")).collect() };
    let (a, b) = (texts("a"), texts("b"));
    stack.stop("outbound-telegram").await;
    let (_, before) = stack
        .stream_state(patchbay_contract::subjects::Stream::Outbound)
        .await;
    for (ca, cb) in a.chunks(10).zip(b.chunks(10)) {
        send(&stack, &bot, &first, ca).await;
        send(&stack, &bot, &second, cb).await;
    }
    eventually(Duration::from_secs(60), "every job stored", || async {
        let (_, last) = stack
            .stream_state(patchbay_contract::subjects::Stream::Outbound)
            .await;
        (last >= before + u64::try_from(2 * per_chat).unwrap()).then_some(())
    })
    .await;
    stack.restart("outbound-telegram").await;
    stack
        .telegram
        .wait_for("sendMessage", 40, Duration::from_secs(60))
        .await;
    stack.stop("outbound-telegram").await;
    let midway = stack.telegram.calls_of("sendMessage").len();
    assert!(
        midway < 2 * per_chat,
        "stopped midway, after {midway} sends"
    );
    stack.restart("outbound-telegram").await;
    stack
        .telegram
        .wait_for("sendMessage", 2 * per_chat, Duration::from_secs(60))
        .await;
    // Every job acknowledged: nothing more will go out.
    eventually(
        patchbay_tests::TIMEOUT,
        "the outbound stream drained",
        || async {
            let (held, _) = stack
                .stream_state(patchbay_contract::subjects::Stream::Outbound)
                .await;
            (held == 0).then_some(())
        },
    )
    .await;
    let calls = stack.telegram.calls_of("sendMessage");
    let to = |chat: i64| -> Vec<String> {
        calls
            .iter()
            .filter(|c| c.body["chat_id"].to_string().trim_matches('"') == chat.to_string())
            .map(|c| c.body["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(to(7000), a);
    assert_eq!(to(7001), b);
    // They did wait as references.
    let metrics = stack
        .http
        .get(format!("{}/metrics", stack.urls_of("outbound-telegram")[0]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let parked: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("patchbay_consumer_parked_total{consumer=\"outbound-telegram\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(parked > 0.0, "no message waited as a reference:\n{metrics}");
    stack.shutdown().await;
}
