//! Human hand-over end to end (real NATS and PostgreSQL, the fake Telegram API), without the
//! console: a conversation passes to a human agent and back (`POST
//! /v1/conversations/{id}/handover`), each change a `conversation.handover` event; while the
//! agent holds it the bot's inline replies are held back (`message.failed`
//! `human_handover`, `suppressed` in the conversation) and its API sends refused (409), events
//! reach the bot marked `handled_by: human`, the conversation waits in the agents' inbox
//! (`GET /v1/conversations`) until an agent answers, and the agent's messages go out; a conversation no
//! agent writes in returns to the bot after the bot's idle time; the state survives a router
//! restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_telegram::fixtures;
use patchbay_tests::{Layout, Options, Stack, TIMEOUT, TestBot, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The bot answers every message inline with "bot: <text>".
fn bot_answers(stack: &Stack) {
    stack.tenant.respond_with(|r| {
        let e = r.json();
        if e["type"] == "message.received" {
            let text = format!(
                "bot: {}",
                e["message"]["content"]["text"].as_str().unwrap_or("")
            );
            (
                StatusCode::OK,
                Some(json!({"messages": [{"type": "text", "text": text}]})),
            )
        } else {
            (StatusCode::OK, None)
        }
    });
}

async fn telegram_got(stack: &Stack, bot: &TestBot, text: &str) {
    eventually(TIMEOUT, &format!("{text:?} at Telegram"), || async {
        stack
            .telegram
            .calls_of("sendMessage")
            .into_iter()
            .find(|c| c.token == bot.bot_token && c.body["text"] == text)
    })
    .await;
}

async fn handover(stack: &Stack, bot: &TestBot, conversation: &str, body: Value) -> (u16, Value) {
    stack
        .call(
            "post",
            &format!("/v1/conversations/{conversation}/handover"),
            Some(&bot.api_key),
            Some(&body),
        )
        .await
}

async fn send(stack: &Stack, bot: &TestBot, user: &str, text: &str, source: &str) -> (u16, Value) {
    stack
        .call(
            "post",
            "/v1/messages",
            Some(&bot.api_key),
            Some(&json!({"user_id": user, "source": source,
                         "messages": [{"type": "text", "text": text}]})),
        )
        .await
}

/// The `n`th event of `event_type` (1-based).
async fn nth(stack: &Stack, event_type: &str, n: usize) -> Value {
    stack.events_of(event_type, n).await[n - 1].json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_takes_over_the_bots_replies_are_held_back_and_the_agent_hands_back() {
    let stack = Stack::start().await;
    let bot = stack.bot_with_events(Some(vec!["*"])).await;
    let other = stack.bot().await;
    bot_answers(&stack);

    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(9001, 6101, "hello"))
            .await,
        200
    );
    telegram_got(&stack, &bot, "bot: hello").await;
    let first = nth(&stack, "message.received", 1).await;
    assert!(first.get("handled_by").is_none(), "{first}");
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    let user = first["user"]["id"].as_str().unwrap().to_owned();

    // Another bot cannot take it; an empty agent name is refused.
    let (status, body) = handover(&stack, &other, &conversation, json!({"to": "human"})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = handover(
        &stack,
        &bot,
        &conversation,
        json!({"to": "human", "agent": " "}),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // Ana takes it.
    let (status, state) = handover(
        &stack,
        &bot,
        &conversation,
        json!({"to": "human", "agent": "Ana"}),
    )
    .await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["handled_by"], "human");
    assert_eq!(state["agent"], "Ana");
    assert!(state["since"].is_string(), "{state}");
    let took = nth(&stack, "conversation.handover", 1).await;
    assert_eq!(
        took["handover"],
        json!({"to": "human", "agent": "Ana", "reason": "requested"})
    );
    assert_eq!(took["conversation_id"], conversation.as_str());
    assert_eq!(took["user"]["id"], user.as_str());
    assert_eq!(took["handled_by"], "human");

    // The user writes: the bot still hears it, marked; its inline reply is held back.
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(9002, 6101, "I need a person"))
            .await,
        200
    );
    let second = nth(&stack, "message.received", 2).await;
    assert_eq!(second["handled_by"], "human", "{second}");
    let held = nth(&stack, "message.failed", 1).await;
    assert_eq!(held["error"]["code"], "human_handover", "{held}");
    assert_eq!(held["message"]["source"], "inline", "{held}");
    let (status, history) = stack
        .call(
            "get",
            &format!("/v1/conversations/{conversation}/messages"),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    let suppressed: Vec<&Value> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "suppressed")
        .collect();
    assert_eq!(suppressed.len(), 1, "{history}");
    assert_eq!(suppressed[0]["id"], held["message"]["id"]);
    assert_eq!(suppressed[0]["content"]["text"], "bot: I need a person");
    // Ana's inbox: the conversation waits for her.
    let inbox = |query: &'static str| {
        let stack = &stack;
        let key = bot.api_key.clone();
        async move {
            stack
                .call(
                    "get",
                    &format!("/v1/conversations{query}"),
                    Some(&key),
                    None,
                )
                .await
        }
    };
    let (status, waiting) = inbox("?handled_by=human").await;
    assert_eq!(status, 200, "{waiting}");
    assert_eq!(waiting["items"].as_array().unwrap().len(), 1, "{waiting}");
    let entry = &waiting["items"][0];
    assert_eq!(entry["conversation_id"], conversation.as_str());
    assert_eq!(entry["agent"], "Ana");
    assert_eq!(entry["waiting"], true, "{entry}");
    assert_eq!(entry["user"]["id"], user.as_str());
    let (status, body) = inbox("?limit=0").await;
    assert_eq!(status, 422, "{body}");
    // The bot's API sends are refused up front; the agent's go out.
    let (status, body) = send(&stack, &bot, &user, "a bot's promotion", "api").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "human_handover");
    let (status, body) = send(&stack, &bot, &user, "Ana here, how can I help?", "human").await;
    assert_eq!(status, 202, "{body}");
    telegram_got(&stack, &bot, "Ana here, how can I help?").await;
    let (_, answered) = inbox("?handled_by=human").await;
    assert_eq!(answered["items"][0]["waiting"], false, "{answered}");
    assert!(
        stack
            .telegram
            .calls_of("sendMessage")
            .iter()
            .all(|c| c.body["text"] != "bot: I need a person"),
        "the held reply never reached Telegram"
    );

    // Ana hands it back: the bot answers again.
    let (status, state) = handover(&stack, &bot, &conversation, json!({"to": "bot"})).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["handled_by"], "bot");
    let back = nth(&stack, "conversation.handover", 2).await;
    assert_eq!(
        back["handover"],
        json!({"to": "bot", "agent": "Ana", "reason": "requested"})
    );
    assert!(back.get("handled_by").is_none(), "{back}");
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(9003, 6101, "thanks"))
            .await,
        200
    );
    telegram_got(&stack, &bot, "bot: thanks").await;
    let third = nth(&stack, "message.received", 3).await;
    assert!(third.get("handled_by").is_none(), "{third}");
    let (_, none) = inbox("?handled_by=human").await;
    assert_eq!(none["items"], json!([]), "{none}");
    let (_, all) = inbox("").await;
    assert_eq!(all["items"][0]["handled_by"], "bot", "{all}");
    let (_, others) = stack
        .call("get", "/v1/conversations", Some(&other.api_key), None)
        .await;
    assert_eq!(others["items"], json!([]), "another bot's inbox is its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_conversation_survives_a_router_restart_and_returns_to_the_bot_when_idle() {
    let mut stack = Stack::start_with(Options {
        layout: Layout::Split,
        ..Options::default()
    })
    .await;
    let bot = stack
        .bot_with_events(Some(vec!["conversation.handover", "message.*"]))
        .await;
    let (status, body) = stack
        .call(
            "patch",
            &format!("/admin/v1/bots/{}", bot.id),
            Some(stack.admin_token()),
            Some(&json!({"handover_idle_minutes": 2})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = stack
        .call(
            "patch",
            &format!("/admin/v1/bots/{}", bot.id),
            Some(stack.admin_token()),
            Some(&json!({"handover_idle_minutes": 0})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(9101, 6201, "hi"))
            .await,
        200
    );
    let first = nth(&stack, "message.received", 1).await;
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    let user = first["user"]["id"].as_str().unwrap().to_owned();
    let (status, _) = handover(
        &stack,
        &bot,
        &conversation,
        json!({"to": "human", "agent": "Bo"}),
    )
    .await;
    assert_eq!(status, 200);

    // The state lives with the router's conversation.
    stack.stop("bot-router").await;
    stack.restart("bot-router").await;
    let (status, body) = send(&stack, &bot, &user, "still the bot?", "api").await;
    assert_eq!(status, 409, "{body}");

    // Bo took it three minutes ago and has not written since (the test places the hand-over in
    // the past, as windows.rs places messages): past the bot's two minutes, it returns.
    let pool = sqlx::PgPool::connect(&stack.config.database_url.clone().unwrap())
        .await
        .unwrap();
    sqlx::query(
        "update router.conversations set handed_over_at = now() - interval '3 minutes'
         where id = $1",
    )
    .bind(&conversation)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let back = nth(&stack, "conversation.handover", 2).await;
    assert_eq!(
        back["handover"],
        json!({"to": "bot", "agent": "Bo", "reason": "idle"})
    );
    let (status, body) = send(&stack, &bot, &user, "the bot again", "api").await;
    assert_eq!(status, 202, "{body}");
    telegram_got(&stack, &bot, "the bot again").await;
}
