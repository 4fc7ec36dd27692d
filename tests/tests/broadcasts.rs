//! Broadcasts (`/v1/broadcasts`) end to end on real NATS and PostgreSQL, against the fake
//! Telegram and Graph APIs: each recipient gets the message once, windows and opt-outs are
//! respected per recipient, pause, resume and cancel hold what has not gone out, the platform's
//! pace holds, and the bot's conversations go ahead of its broadcast, even through a 429 storm.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use patchbay_contract::subjects::Stream;
use patchbay_line::fixtures as line_fx;
use patchbay_telegram::fixtures;
use patchbay_testkit::line::{MULTICAST_PATH, PUSH_PATH};
use patchbay_testkit::telegram::{Call, Failure};
use patchbay_testkit::viber::{BROADCAST_PATH, SEND_PATH};
use patchbay_tests::{LineBot, Options, Stack, TIMEOUT, TestBot, eventually};
use patchbay_viber::fixtures as viber_fx;
use patchbay_whatsapp::fixtures as fx;
use serde_json::{Value, json};

const SECRET: &str = "wa-app-secret";

/// Long enough for a paced broadcast of a few dozen users.
const DRAIN: Duration = Duration::from_secs(120);

/// `n` LINE users of `bot` who wrote to it just now (`U…` numbered `first..first + n`), in
/// that order.
async fn line_users(stack: &Stack, bot: &LineBot, first: u32, n: u32) -> Vec<String> {
    let users: Vec<String> = (first..first + n).map(|i| format!("U{i:032x}")).collect();
    let now = chrono::Utc::now().timestamp_millis();
    for (k, some) in users.chunks(100).enumerate() {
        let events = some
            .iter()
            .enumerate()
            .map(|(j, u)| line_fx::at(line_fx::text(&format!("e-{first}-{k}-{j}"), u, "hi"), now))
            .collect();
        assert_eq!(stack.post_line(bot, events).await, 200);
    }
    received_users(stack, &bot.id, "line", users.len()).await;
    users
}

/// `n` Telegram users of `bot` who wrote to it (chats `first..first + n`): user id by chat.
async fn telegram_users(stack: &Stack, bot: &TestBot, first: i64, n: i64) -> HashMap<i64, String> {
    for chat in first..first + n {
        assert_eq!(
            stack
                .post_update(bot, &fixtures::text_update(chat, chat, "hi"))
                .await,
            200
        );
    }
    received_users(stack, &bot.id, "telegram", usize::try_from(n).unwrap())
        .await
        .into_iter()
        .map(|(platform_id, user)| (platform_id.parse().unwrap(), user))
        .collect()
}

/// The users of `bot` on `platform` the tenant has heard from, once there are `n`: user id by
/// the platform's user id.
async fn received_users(
    stack: &Stack,
    bot_id: &str,
    platform: &str,
    n: usize,
) -> HashMap<String, String> {
    eventually(TIMEOUT, &format!("{n} {platform} users"), || async {
        let users: HashMap<String, String> = stack
            .tenant
            .received()
            .into_iter()
            .map(|r| r.json())
            .filter(|e| {
                e["type"] == "message.received"
                    && e["bot_id"] == bot_id
                    && e["channel"]["platform"] == platform
            })
            .map(|e| {
                (
                    e["user"]["platform_user_id"].as_str().unwrap().to_owned(),
                    e["user"]["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        (users.len() >= n).then_some(users)
    })
    .await
}

/// WhatsApp users `first..first + n` writing to the bot's number, at `at` (Unix seconds).
async fn whatsapp_users(stack: &Stack, wa: &patchbay_tests::MetaBot, first: u64, n: u64, at: i64) {
    let changes: Vec<(&str, Value)> = (first..first + n)
        .map(|i| {
            let phone = format!("3519{i:08}");
            let value = json!({
                "contacts": [{"profile": {"name": format!("User {i}")}, "wa_id": phone}],
                "messages": [{"from": phone, "id": format!("wamid.IN{i}"),
                              "timestamp": at.to_string(), "type": "text",
                              "text": {"body": "hi"}}]});
            (fx::PHONE_NUMBER_ID, value)
        })
        .collect();
    assert_eq!(
        stack
            .post_meta(
                "whatsapp",
                &wa.webhook_path,
                Some(SECRET),
                &fx::post(&changes)
            )
            .await,
        200
    );
}

async fn broadcast(stack: &Stack, key: &str, body: &Value) -> String {
    let (status, b) = stack
        .call("POST", "/v1/broadcasts", Some(key), Some(body))
        .await;
    assert_eq!(status, 202, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("brd_"), "{b}");
    id
}

async fn get(stack: &Stack, key: &str, id: &str) -> Value {
    let (status, b) = stack
        .call("GET", &format!("/v1/broadcasts/{id}"), Some(key), None)
        .await;
    assert_eq!(status, 200, "{b}");
    b
}

async fn control(stack: &Stack, key: &str, id: &str, action: &str) -> (u16, Value) {
    stack
        .call(
            "POST",
            &format!("/v1/broadcasts/{id}/{action}"),
            Some(key),
            None,
        )
        .await
}

/// The broadcast once it is in `state`.
async fn once_in(stack: &Stack, key: &str, id: &str, state: &str) -> Value {
    eventually(DRAIN, &format!("broadcast {id} {state}"), || async {
        let b = get(stack, key, id).await;
        (b["state"] == state).then_some(b)
    })
    .await
}

/// Nothing of any broadcast is left in the send path: released recipients all answered.
async fn drained(stack: &Stack, key: &str, id: &str) -> Value {
    eventually(DRAIN, &format!("broadcast {id} drained"), || async {
        let b = get(stack, key, id).await;
        let empty = stack.stream_state(Stream::Bulk).await.0 == 0
            && stack.stream_state(Stream::Send).await.0 == 0;
        (empty && b["counts"]["sending"] == 0).then_some(b)
    })
    .await
}

/// The `broadcast.*` events of broadcast `id` the tenant received, in the order received, once
/// its `broadcast.completed` is among them.
async fn broadcast_events(stack: &Stack, id: &str) -> Vec<Value> {
    eventually(DRAIN, &format!("broadcast.completed of {id}"), || async {
        let events: Vec<Value> = stack
            .tenant
            .received()
            .into_iter()
            .map(|r| r.json())
            .filter(|e| e["broadcast"]["id"] == id)
            .collect();
        events
            .iter()
            .any(|e| e["type"] == "broadcast.completed")
            .then_some(events)
    })
    .await
}

/// Checks a broadcast's events: progress with ever more recipients done, then one
/// `broadcast.completed` whose counts are `end`'s; no event names a channel, user or
/// conversation. The progress events.
fn check_broadcast_events(events: &[Value], end: &Value) -> Vec<Value> {
    let (last, progress) = events.split_last().unwrap();
    assert_eq!(last["type"], "broadcast.completed", "{events:?}");
    assert_eq!(last["broadcast"]["state"], end["state"], "{last}");
    assert_eq!(last["broadcast"]["counts"], end["counts"], "{last}");
    assert_eq!(
        last["broadcast"]["skipped_reasons"], end["skipped_reasons"],
        "{last}"
    );
    assert!(last["broadcast"]["finished_at"].is_string(), "{last}");
    let done = |e: &Value| {
        let c = &e["broadcast"]["counts"];
        c["sent"].as_i64().unwrap() + c["failed"].as_i64().unwrap() + c["skipped"].as_i64().unwrap()
    };
    let mut before = -1;
    for e in progress {
        assert_eq!(e["type"], "broadcast.progress", "{events:?}");
        assert!(
            done(e) > before,
            "progress went back or stood still: {events:?}"
        );
        before = done(e);
    }
    for e in events {
        for absent in ["channel", "user", "conversation_id"] {
            assert!(e.get(absent).is_none(), "{absent} in {e}");
        }
    }
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "an event twice: {events:?}");
    progress.to_vec()
}

/// The bot's accepted `sendMessage` calls.
fn accepted(stack: &Stack, bot: &TestBot) -> Vec<Call> {
    stack
        .telegram
        .calls_of("sendMessage")
        .into_iter()
        .filter(|c| c.token == bot.bot_token && c.status == 200)
        .collect()
}

fn text_of(c: &Call) -> &str {
    c.body["text"].as_str().unwrap_or_default()
}

/// Chats that got a message with `text`, each once (panics on a second copy).
fn once_each(calls: &[Call], text: &str) -> HashSet<i64> {
    let mut chats = HashSet::new();
    for c in calls.iter().filter(|c| text_of(c).contains(text)) {
        let chat = c.body["chat_id"].as_i64().unwrap();
        assert!(chats.insert(chat), "chat {chat} got {text:?} twice");
    }
    chats
}

/// The most calls in any one second.
fn busiest_second(calls: &[Call]) -> usize {
    let times: Vec<Instant> = calls.iter().map(|c| c.at).collect();
    times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && t.duration_since(*start) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_each_user_once_across_platforms_with_templates_outside_the_window() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| {
            c.telegram_per_bot_per_second = 1000;
            c.whatsapp_per_number_per_second = 1000;
        }),
        ..Options::default()
    })
    .await;
    let bot = stack.bot_with_events(Some(vec!["message.*"])).await;
    let wa = stack
        .whatsapp_channel_of(&bot, fx::PHONE_NUMBER_ID, SECRET)
        .await;
    let tg = telegram_users(&stack, &bot, 7001, 120).await;
    let now = chrono::Utc::now().timestamp();
    // Twenty wrote just now, twenty two days ago (WhatsApp's window long closed).
    whatsapp_users(&stack, &wa, 1, 20, now).await;
    whatsapp_users(&stack, &wa, 101, 20, now - 2 * 86_400).await;
    received_users(&stack, &bot.id, "whatsapp", 40).await;

    // Two users opted out of the bot's broadcasts.
    let opted_out = [7001, 7002];
    for chat in opted_out {
        let (status, user) = stack
            .call(
                "PATCH",
                &format!("/v1/users/{}", tg[&chat]),
                Some(&bot.api_key),
                Some(&json!({"broadcasts": false})),
            )
            .await;
        assert_eq!(status, 200, "{user}");
        assert_eq!(user["broadcasts"], false, "{user}");
    }

    let (status, template) = stack
        .call(
            "POST",
            "/v1/templates",
            Some(&bot.api_key),
            Some(&json!({"name": "spring_sale",
                "text": "Hi {{contact.name}}, the spring sale starts {{When}}!",
                "whatsapp": {"name": "spring_sale", "language": "en_US", "components": [
                    {"type": "body", "parameters": [{"type": "text", "text": "{{When}}"}]}]}})),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    let body = json!({"audience": {"all": true},
        "template": {"id": template["id"], "variables": {"When": "tomorrow"}}});
    let (status, first) = stack
        .call("POST", "/v1/broadcasts", Some(&bot.api_key), Some(&body))
        .await;
    assert_eq!(status, 202, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(
        ["queueing", "sending", "completed"].contains(&first["state"].as_str().unwrap()),
        "{first}"
    );

    let done = once_in(&stack, &bot.api_key, &id, "completed").await;
    assert_eq!(
        done["counts"],
        json!({"recipients": 160, "queued": 0, "sending": 0, "sent": 158, "delivered": 0,
               "read": 0, "failed": 0, "skipped": 2}),
        "{done}"
    );
    assert_eq!(done["skipped_reasons"], json!({"opted_out": 2}), "{done}");
    // The driver refreshed the planner's statistics of the recipients once the audience was
    // stored (its only page was its first and its last).
    let pool = sqlx::PgPool::connect(&stack.config.database_url.clone().unwrap())
        .await
        .unwrap();
    eventually(TIMEOUT, "broadcast_recipients analyzed", || async {
        let analyzed: i64 = sqlx::query_scalar(
            "select analyze_count from pg_stat_user_tables \
             where schemaname = 'router' and relname = 'broadcast_recipients'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (analyzed > 0).then_some(())
    })
    .await;

    // Telegram: every user but the two who opted out, once, the template's text form.
    let calls = accepted(&stack, &bot);
    let chats = once_each(&calls, "the spring sale starts tomorrow");
    assert_eq!(chats.len(), 118);
    assert!(opted_out.iter().all(|c| !chats.contains(c)));
    // WhatsApp: the text form inside the window, the approved template outside it; each
    // number once.
    let sends = stack.graph.sends(fx::PHONE_NUMBER_ID);
    assert_eq!(sends.len(), 40);
    let to: HashSet<&str> = sends
        .iter()
        .map(|c| c.body["to"].as_str().unwrap())
        .collect();
    assert_eq!(to.len(), 40);
    let templates = sends
        .iter()
        .filter(|c| c.body["type"] == "template")
        .count();
    let texts = sends.iter().filter(|c| c.body["type"] == "text").count();
    assert_eq!((templates, texts), (20, 20));
    // Every message event names the broadcast.
    let sent = stack.events_of("message.sent", 158).await;
    let ours = sent
        .iter()
        .map(|r| r.json())
        .filter(|e| e["message"]["source"] == "broadcast" && e["message"]["source_id"] == id)
        .count();
    assert_eq!(ours, 158);

    // Plain text to WhatsApp only: the twenty outside the window are skipped, with the reason.
    let second = broadcast(
        &stack,
        &bot.api_key,
        &json!({"audience": {"platforms": ["whatsapp"]},
                "messages": [{"type": "text", "text": "Last call!"}]}),
    )
    .await;
    let done = once_in(&stack, &bot.api_key, &second, "completed").await;
    assert_eq!(done["counts"]["recipients"], 40, "{done}");
    assert_eq!(done["counts"]["sent"], 20, "{done}");
    assert_eq!(
        done["skipped_reasons"],
        json!({"outside_window": 20}),
        "{done}"
    );
    assert_eq!(stack.graph.sends(fx::PHONE_NUMBER_ID).len(), 60);

    // Asked again with the same key: the same broadcast, nothing sent twice.
    let keyed = json!({"audience": {"users": [tg[&7003], tg[&7004]]},
                       "messages": [{"type": "text", "text": "Just you two"}]});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, b) = stack
            .call_with_headers(
                "POST",
                "/v1/broadcasts",
                &bot.api_key,
                &[("idempotency-key", "two-users")],
                &keyed,
            )
            .await;
        assert_eq!(status, 202, "{b}");
        ids.push(b["id"].as_str().unwrap().to_owned());
        once_in(&stack, &bot.api_key, &ids[0], "completed").await;
    }
    assert_eq!(ids[0], ids[1]);
    assert_eq!(once_each(&accepted(&stack, &bot), "Just you two").len(), 2);

    // The bot's broadcasts, newest first; others' are not found; finished ones stay finished.
    let (status, page) = stack
        .call("GET", "/v1/broadcasts?limit=2", Some(&bot.api_key), None)
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    assert_eq!(page["items"][0]["id"], ids[0].as_str(), "{page}");
    let (status, rest) = stack
        .call(
            "GET",
            &format!("/v1/broadcasts?after={}", page["next"].as_str().unwrap()),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["items"][0]["id"], id.as_str(), "{rest}");
    let other = stack.bot().await;
    let (status, _) = stack
        .call(
            "GET",
            &format!("/v1/broadcasts/{id}"),
            Some(&other.api_key),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, e) = control(&stack, &bot.api_key, &id, "pause").await;
    assert_eq!(status, 409, "{e}");
    assert_eq!(e["error"]["code"], "broadcast_finished", "{e}");
    let (status, e) = stack
        .call(
            "POST",
            "/v1/broadcasts",
            Some(&bot.api_key),
            Some(&json!({"audience": {"users": [], "all": true},
                         "messages": [{"type": "text", "text": "x"}]})),
        )
        .await;
    assert_eq!(status, 422, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("audience.users"),
        "{e}"
    );

    // A channel disabled: its recipients fail (`undeliverable`) and the broadcast completes.
    let (status, _) = stack
        .call(
            "PATCH",
            &format!("/admin/v1/bots/{}/channels/{}", bot.id, wa.channel_id),
            Some(stack.admin_token()),
            Some(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 204);
    let dark = broadcast(
        &stack,
        &bot.api_key,
        &json!({"audience": {"platforms": ["whatsapp"]},
                "messages": [{"type": "text", "text": "Into the void"}]}),
    )
    .await;
    let done = once_in(&stack, &bot.api_key, &dark, "completed").await;
    assert_eq!(done["counts"]["failed"], 40, "{done}");
    assert_eq!(
        done["failed_reasons"],
        json!({"undeliverable": 40}),
        "{done}"
    );
    assert_eq!(stack.graph.sends(fx::PHONE_NUMBER_ID).len(), 60);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_resume_goes_on_and_cancel_leaves_the_rest_unsent_at_the_platforms_pace() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| {
            c.telegram_per_bot_per_second = 10;
            c.broadcast_window = 4;
            c.broadcast_progress_ms = 500;
        }),
        ..Options::default()
    })
    .await;
    let bot = stack
        .bot_with_events(Some(vec!["message.received", "broadcast.*"]))
        .await;
    telegram_users(&stack, &bot, 8001, 60).await;
    let id = broadcast(
        &stack,
        &bot.api_key,
        &json!({"audience": {"all": true}, "messages": [{"type": "text", "text": "first wave"}]}),
    )
    .await;
    eventually(DRAIN, "the first sends", || async {
        (accepted(&stack, &bot).len() >= 8).then_some(())
    })
    .await;
    let (status, paused) = control(&stack, &bot.api_key, &id, "pause").await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["state"], "paused", "{paused}");
    let held = drained(&stack, &bot.api_key, &id).await;
    let at_pause = accepted(&stack, &bot).len();
    assert!(held["counts"]["queued"].as_i64().unwrap() > 0, "{held}");
    assert_eq!(held["counts"]["sent"].as_u64().unwrap(), at_pause as u64);
    // Another bot's broadcast starts and completes meanwhile (the broadcasts were stepped many
    // times): nothing more of the paused one went out.
    let other = stack.bot().await;
    telegram_users(&stack, &other, 9001, 3).await;
    let theirs = broadcast(
        &stack,
        &other.api_key,
        &json!({"audience": {"all": true}, "messages": [{"type": "text", "text": "other"}]}),
    )
    .await;
    once_in(&stack, &other.api_key, &theirs, "completed").await;
    assert_eq!(accepted(&stack, &bot).len(), at_pause);
    assert_eq!(get(&stack, &bot.api_key, &id).await["state"], "paused");

    let (status, resumed) = control(&stack, &bot.api_key, &id, "resume").await;
    assert_eq!(status, 200, "{resumed}");
    let done = once_in(&stack, &bot.api_key, &id, "completed").await;
    assert_eq!(done["counts"]["sent"], 60, "{done}");
    let calls = accepted(&stack, &bot);
    assert_eq!(once_each(&calls, "first wave").len(), 60);
    // The channel's pace held: 10/s, in any one second at most the limit and a tenth.
    let busiest = busiest_second(&calls);
    assert!(busiest <= 11, "{busiest} messages in one second");
    // The bot heard how it went: progress every half second or so (more than six seconds of
    // sending), then the final counts.
    let progress = check_broadcast_events(&broadcast_events(&stack, &id).await, &done);
    assert!(progress.len() >= 3, "{progress:?}");
    // The other bot subscribes to no broadcast events: none reached it.
    assert!(
        stack
            .tenant
            .received()
            .iter()
            .all(|r| r.json()["broadcast"]["id"] != theirs.as_str())
    );

    // A second wave, cancelled a few messages in: the rest stays unsent.
    let second = broadcast(
        &stack,
        &bot.api_key,
        &json!({"audience": {"all": true}, "messages": [{"type": "text", "text": "second wave"}]}),
    )
    .await;
    eventually(DRAIN, "the second wave going out", || async {
        (once_each(&accepted(&stack, &bot), "second wave").len() >= 5).then_some(())
    })
    .await;
    let (status, cancelled) = control(&stack, &bot.api_key, &second, "cancel").await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let (status, again) = control(&stack, &bot.api_key, &second, "cancel").await;
    assert_eq!(status, 200, "cancelling twice is harmless: {again}");
    // The driver skips what was queued; the senders drop what they held.
    let end = eventually(DRAIN, "the cancelled wave settled", || async {
        let b = drained(&stack, &bot.api_key, &second).await;
        (b["counts"]["queued"] == 0).then_some(b)
    })
    .await;
    let c = &end["counts"];
    let out = once_each(&accepted(&stack, &bot), "second wave").len();
    assert_eq!(c["sent"].as_u64().unwrap(), out as u64, "{end}");
    assert_eq!(
        c["sent"].as_i64().unwrap() + c["skipped"].as_i64().unwrap(),
        60,
        "{end}"
    );
    assert!(
        end["skipped_reasons"]["cancelled"].as_i64().unwrap() >= 40,
        "{end}"
    );
    // Its end is announced once what was on its way has an outcome, with the final counts.
    let events = broadcast_events(&stack, &second).await;
    check_broadcast_events(&events, &get(&stack, &bot.api_key, &second).await);
    assert_eq!(events.last().unwrap()["broadcast"]["state"], "cancelled");
    stack.shutdown().await;
}

/// How long the platform asks the broadcast to wait after its 429s.
const RETRY_AFTER: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_go_ahead_of_a_broadcast_and_a_429_slows_only_the_broadcast() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| {
            c.telegram_per_bot_per_second = 4;
            // Every recipient's message waits at the sender at once, each for a token.
            c.consumer_concurrency = 64;
        }),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    let users = telegram_users(&stack, &bot, 6001, 40).await;
    let send = |text: String, chat: i64| {
        let user = users[&chat].clone();
        let stack = &stack;
        let key = bot.api_key.clone();
        async move {
            let (status, b) = stack
                .call(
                    "POST",
                    "/v1/messages",
                    Some(&key),
                    Some(&json!({"user_id": user, "messages": [{"type": "text", "text": text}]})),
                )
                .await;
            assert_eq!(status, 202, "{b}");
            Instant::now()
        }
    };
    let bulk_between = |calls: &[Call], from: Instant, to: Instant| {
        calls
            .iter()
            .filter(|c| text_of(c) == "bulk" && c.at > from && c.at < to)
            .count()
    };
    // The platform answers the broadcast's first calls with 429.
    stack.telegram.fail_next([
        Failure::TooManyRequests {
            retry_after: RETRY_AFTER,
        },
        Failure::TooManyRequests {
            retry_after: RETRY_AFTER,
        },
    ]);
    let id = broadcast(
        &stack,
        &bot.api_key,
        &json!({"audience": {"all": true}, "messages": [{"type": "text", "text": "bulk"}]}),
    )
    .await;
    let storm = eventually(DRAIN, "the 429s", || async {
        let refused: Vec<Call> = stack
            .telegram
            .calls_of("sendMessage")
            .into_iter()
            .filter(|c| c.status == 429)
            .collect();
        (refused.len() == 2).then(|| refused[1].at)
    })
    .await;
    // A conversation's reply during the broadcast's hold goes out (what had passed the gate
    // with the refused two went out with them).
    let asked = send("reply during the hold".into(), 6005).await;
    let resumed = eventually(DRAIN, "the broadcast going again", || async {
        let calls = accepted(&stack, &bot);
        calls
            .iter()
            .find(|c| text_of(c) == "bulk" && c.at > asked)
            .map(|c| c.at)
    })
    .await;
    let reply = accepted(&stack, &bot)
        .into_iter()
        .find(|c| text_of(c) == "reply during the hold")
        .expect("the reply went out")
        .at;
    assert!(reply < resumed, "the reply waited for the broadcast's hold");
    // The broadcast waited as long as the platform asked (within the fake's clock).
    let hold = resumed.duration_since(storm);
    assert!(
        hold >= Duration::from_millis(RETRY_AFTER * 1000 - 200),
        "the broadcast went on {hold:?} after the 429s"
    );

    // Mid-broadcast, a burst of replies takes the channel's next tokens: at most what was
    // already past the gate goes out among them.
    eventually(DRAIN, "the broadcast flowing", || async {
        (bulk_between(&accepted(&stack, &bot), resumed, Instant::now()) >= 4).then_some(())
    })
    .await;
    let texts: Vec<String> = (0..8).map(|i| format!("reply {i}")).collect();
    let asked = futures::future::join_all(
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| send(t.clone(), 6010 + i as i64)),
    )
    .await;
    let first_asked = asked.iter().min().copied().unwrap();
    let calls = eventually(DRAIN, "the replies", || async {
        let calls = accepted(&stack, &bot);
        texts
            .iter()
            .all(|t| calls.iter().any(|c| text_of(c) == t.as_str()))
            .then_some(calls)
    })
    .await;
    let last_reply = calls
        .iter()
        .filter(|c| text_of(c).starts_with("reply "))
        .map(|c| c.at)
        .max()
        .unwrap();
    let ahead = bulk_between(&calls, first_asked, last_reply);
    assert!(
        ahead <= 3,
        "{ahead} broadcast messages went out among the 8 replies"
    );
    let done = once_in(&stack, &bot.api_key, &id, "completed").await;
    assert_eq!(done["counts"]["sent"], 40, "{done}");
    assert_eq!(once_each(&accepted(&stack, &bot), "bulk").len(), 40);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_and_viber_broadcasts_go_out_in_their_bulk_calls_each_user_once() {
    let stack = Stack::start().await;

    // LINE: 520 friends, two messages: each goes in a multicast to 500 and one to 20, the
    // first message's before the second's, and nothing is pushed one by one.
    let line = stack.line_bot(Some(vec!["message.*"])).await;
    let users = line_users(&stack, &line, 1, 520).await;
    let id = broadcast(
        &stack,
        &line.api_key,
        &json!({"audience": {"all": true}, "messages": [
            {"type": "text", "text": "LINE news"}, {"type": "text", "text": "More news"}]}),
    )
    .await;
    let done = once_in(&stack, &line.api_key, &id, "completed").await;
    assert_eq!(done["counts"]["sent"], 520, "{done}");
    assert_eq!(done["counts"]["failed"], 0, "{done}");
    // The two commands (500 users and 20) reach the sender in either order.
    let mut calls: Vec<(usize, String)> = stack
        .line
        .accepted(MULTICAST_PATH)
        .iter()
        .map(|c| {
            let texts: Vec<&str> = c.body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["text"].as_str().unwrap())
                .collect();
            (c.body["to"].as_array().unwrap().len(), texts.join("|"))
        })
        .collect();
    calls.sort();
    let expected: Vec<(usize, String)> = [
        (20, "LINE news"),
        (20, "More news"),
        (500, "LINE news"),
        (500, "More news"),
    ]
    .into_iter()
    .map(|(n, t)| (n, t.to_owned()))
    .collect();
    assert_eq!(calls, expected);
    assert!(stack.line.calls_to(PUSH_PATH).is_empty(), "nothing pushed");
    let mut got: HashMap<String, Vec<String>> = HashMap::new();
    for m in stack.line.messages() {
        got.entry(m["to"].as_str().unwrap().to_owned())
            .or_default()
            .push(m["text"].as_str().unwrap().to_owned());
    }
    assert_eq!(got.len(), users.len());
    for u in &users {
        assert_eq!(got[u], ["LINE news", "More news"], "{u}");
    }

    // Viber: 320 subscribers, ten of whom unsubscribed at Viber unnoticed: one
    // `broadcast_message` to 300 and one to 20; the ten fail with Viber's reason.
    let viber = stack.viber_bot(Some(vec!["message.*"]), json!({})).await;
    let subscribers: Vec<String> = (1..=320).map(|i| format!("viber-user-{i:04}==")).collect();
    let now = chrono::Utc::now().timestamp_millis();
    for (token, u) in (9000..).zip(&subscribers) {
        let (status, _) = stack
            .post_viber(&viber, &viber_fx::at(viber_fx::text(token, u, "hi"), now))
            .await;
        assert_eq!(status, 200);
    }
    received_users(&stack, &viber.id, "viber", subscribers.len()).await;
    for u in &subscribers[..10] {
        stack.viber.remove_subscriber(&viber.auth_token, u);
    }
    let id = broadcast(
        &stack,
        &viber.api_key,
        &json!({"audience": {"all": true},
                "messages": [{"type": "text", "text": "Viber news"}]}),
    )
    .await;
    let done = once_in(&stack, &viber.api_key, &id, "completed").await;
    assert_eq!(done["counts"]["sent"], 310, "{done}");
    assert_eq!(done["counts"]["failed"], 10, "{done}");
    assert_eq!(
        done["failed_reasons"],
        json!({"user_unavailable": 10}),
        "{done}"
    );
    let calls = stack.viber.calls_to(BROADCAST_PATH);
    let sizes: Vec<usize> = calls
        .iter()
        .map(|c| c.body["broadcast_list"].as_array().unwrap().len())
        .collect();
    assert_eq!(
        sizes.iter().collect::<HashSet<_>>(),
        [300, 20].iter().collect::<HashSet<_>>()
    );
    assert_eq!(sizes.len(), 2);
    assert!(
        stack.viber.calls_to(SEND_PATH).is_empty(),
        "nothing sent one by one"
    );
    let reached: Vec<String> = stack
        .viber
        .messages()
        .iter()
        .map(|m| m["receiver"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        reached.iter().collect::<HashSet<_>>(),
        subscribers[10..].iter().collect::<HashSet<_>>()
    );
    assert_eq!(reached.len(), 310, "each once");

    // Viber's receipt of one user's copy names the token all 300 share: it moves that user's
    // message alone.
    let call = calls.iter().find(|c| c.delivered_to.len() > 1).unwrap();
    let token = call.message_token.unwrap();
    let (status, _) = stack
        .post_viber(
            &viber,
            &viber_fx::at(
                viber_fx::delivered(token, &call.delivered_to[0]),
                chrono::Utc::now().timestamp_millis(),
            ),
        )
        .await;
    assert_eq!(status, 200);
    stack.router_idle().await;
    let counted = eventually(TIMEOUT, "the receipt counted", || async {
        let b = get(&stack, &viber.api_key, &id).await;
        (b["counts"]["delivered"].as_i64() > Some(0)).then_some(b)
    })
    .await;
    assert_eq!(counted["counts"]["delivered"], 1, "{counted}");
    stack.shutdown().await;
}

/// On a platform without a bulk call, a broadcast's job names up to 50 recipients and its
/// sender sends them one by one at the channel's pace. A server error in the middle of a job
/// stops it: the recipients it had sent are recorded and not sent again when the job is
/// retried, the one refused and those not yet sent go out with the retry, and the progress
/// the statuses carry ends at every recipient sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_in_the_middle_of_a_paced_job_retries_only_the_recipients_not_yet_sent() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| c.telegram_per_bot_per_second = 20),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    let users = telegram_users(&stack, &bot, 7001, 60).await;
    let id = broadcast(
        &stack,
        &bot.api_key,
        &json!({"audience": {"all": true}, "messages": [{"type": "text", "text": "paced"}]}),
    )
    .await;
    eventually(DRAIN, "a few of the first job sent", || async {
        (once_each(&accepted(&stack, &bot), "paced").len() >= 10).then_some(())
    })
    .await;
    stack.telegram.fail_next([Failure::ServerError]);
    let done = once_in(&stack, &bot.api_key, &id, "completed").await;
    assert_eq!(done["counts"]["sent"], 60, "{done}");
    assert_eq!(done["counts"]["failed"], 0, "{done}");
    let refused: Vec<Call> = stack
        .telegram
        .calls_of("sendMessage")
        .into_iter()
        .filter(|c| c.status == 500)
        .collect();
    assert_eq!(refused.len(), 1, "the one server error");
    let calls = accepted(&stack, &bot);
    let chats = once_each(&calls, "paced");
    assert_eq!(chats, users.keys().copied().collect::<HashSet<i64>>());
    // The refused recipient went out after its job's retry, and so did the job's recipients
    // not sent before the error; those sent before it were not sent again.
    let refused_chat = refused[0].body["chat_id"].as_i64().unwrap();
    let again = calls
        .iter()
        .find(|c| c.body["chat_id"] == refused_chat && text_of(c) == "paced")
        .unwrap();
    assert!(
        again.at > refused[0].at,
        "{refused_chat} sent before its refusal"
    );
    let after = calls
        .iter()
        .filter(|c| text_of(c) == "paced" && c.at > refused[0].at)
        .count();
    assert!(after >= 60 - 50, "{after} sent after the error");
    stack.shutdown().await;
}
