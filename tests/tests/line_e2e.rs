//! LINE end to end through every service, on real NATS and PostgreSQL, with a fake LINE
//! Messaging API and webhooks signed as LINE signs them: the signature, the console's Verify
//! body, one event per `webhookEventId` (redeliveries collapse), groups (the group is the
//! conversation, the member its sender), inline replies with the event's reply token (once, while
//! it is fresh), pushes when it is used, expired or refused, retries that send nothing twice,
//! pushes of at most five messages, LINE's refusals, and profiles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_contract::subjects::Stream;
use patchbay_line::fixtures as fx;
use patchbay_testkit::line::{Failure, PUSH_PATH, REPLY_PATH};
use patchbay_testkit::tenant::{Received, verify_standard_webhook};
use patchbay_tests::{LineBot, Stack, TIMEOUT, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// `event` as if it happened just now (the fixtures' events are dated 2026-01-01).
fn now(event: Value) -> Value {
    fx::at(event, chrono::Utc::now().timestamp_millis())
}

/// The tenant answers every text with `replies` (an echo when empty).
fn reply_with(stack: &Stack, replies: Vec<Value>) {
    stack.tenant.respond_with(move |r| {
        let e = r.json();
        match e["message"]["content"]["text"].as_str() {
            Some(t) if e["type"] == "message.received" => {
                let messages = if replies.is_empty() {
                    vec![json!({"type": "text", "text": format!("echo: {t}")})]
                } else {
                    replies.clone()
                };
                (StatusCode::OK, Some(json!({ "messages": messages })))
            }
            _ => (StatusCode::OK, None),
        }
    });
}

/// The user writes `text` (event `id`); returns the tenant's event.
async fn user_writes(stack: &Stack, bot: &LineBot, id: &str, text: &str) -> Value {
    assert_eq!(
        stack
            .post_line(bot, vec![now(fx::text(id, fx::USER, text))])
            .await,
        200
    );
    let platform_id = format!("m-{id}");
    eventually(TIMEOUT, "the event of that message", || async {
        stack
            .tenant
            .received()
            .iter()
            .map(Received::json)
            .find(|e| e["message"]["platform_message_id"] == platform_id.as_str())
    })
    .await
}

/// Waits until nothing is left to send.
async fn drained(stack: &Stack) {
    eventually(TIMEOUT, "nothing left to send", || async {
        (stack.stream_state(Stream::Outbound).await.0 == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_refused_and_the_verify_body_publishes_nothing() {
    let stack = Stack::start().await;
    let bot = stack.line_bot(None).await;
    let body = fx::post(vec![fx::text("v-1", fx::USER, "hi")]);
    assert_eq!(
        stack
            .post_line_as(&bot, Some("not-the-secret"), &body)
            .await,
        401
    );
    assert_eq!(stack.post_line_as(&bot, None, &body).await, 401, "unsigned");
    // The console's Verify button: signed, no events.
    assert_eq!(
        stack
            .post_line_as(&bot, Some(&bot.channel_secret), &fx::verify_body())
            .await,
        200
    );
    assert_eq!(
        stack.stream_state(Stream::Ingress).await,
        (0, 0),
        "nothing stored"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_signed_tenant_events_and_redeliveries_collapse() {
    let stack = Stack::start().await;
    let bot = stack
        .line_bot(Some(vec!["message.received", "user.*"]))
        .await;
    let events = vec![
        fx::follow("e-1", fx::USER, false),
        fx::text("e-2", fx::USER, "one"),
        fx::postback(
            "e-3",
            fx::USER,
            "action=buy",
            Some(json!({"date": "2026-12-24"})),
        ),
        fx::sticker("e-4", fx::USER, "446", "1988"),
    ];
    assert_eq!(stack.post_line(&bot, events.clone()).await, 200);
    // LINE redelivers what it thinks failed: the same webhookEventIds.
    let again: Vec<Value> = events.into_iter().map(fx::redelivered).collect();
    assert_eq!(stack.post_line(&bot, again).await, 200);
    let got = eventually(TIMEOUT, "four events", || async {
        let r = stack.tenant.received();
        (r.len() >= 4).then_some(r)
    })
    .await;
    let summary: Vec<(Value, Value)> = got
        .iter()
        .map(|r| {
            let e = r.json();
            (e["type"].clone(), e["message"]["content"].clone())
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!("user.subscribed"), Value::Null),
            (
                json!("message.received"),
                json!({"type": "text", "text": "one"})
            ),
            (
                json!("message.received"),
                json!({"type": "postback", "payload": "action=buy", "title": "2026-12-24"})
            ),
            (
                json!("message.received"),
                json!({"type": "sticker", "id": "446:1988"})
            ),
        ]
    );
    for r in &got {
        verify_standard_webhook(&bot.webhook_secret, r).expect("signed with the bot's secret");
        let e = r.json();
        assert_eq!(
            e["channel"],
            json!({"id": bot.channel_id, "platform": "line"})
        );
        assert_eq!(e["user"]["platform_user_id"], fx::USER);
    }
    assert_eq!(
        stack.stream_state(Stream::Ingress).await.1,
        4,
        "the redelivered events were dropped as duplicates"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_reply_uses_the_reply_token_once_and_pushes_the_rest() {
    let stack = Stack::start().await;
    reply_with(
        &stack,
        vec![
            json!({"type": "quick_replies", "text": "Colour?", "replies": [
                {"title": "Red", "payload": "RED"}, {"title": "Blue"}]}),
            json!({"type": "text", "text": "(second message)"}),
        ],
    );
    let bot = stack.line_bot(Some(vec!["*"])).await;
    user_writes(&stack, &bot, "i-1", "hello").await;
    stack.events_of("message.sent", 2).await;
    let replies = stack.line.calls_to(REPLY_PATH);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!((replies[0].status, replies[0].authorized), (200, true));
    assert_eq!(
        replies[0].body,
        json!({"replyToken": fx::reply_token("i-1"), "messages": [
            {"type": "text", "text": "Colour?", "quickReply": {"items": [
                {"type": "action", "action": {"type": "postback", "label": "Red",
                                              "data": "RED", "displayText": "Red"}},
                {"type": "action", "action": {"type": "message", "label": "Blue",
                                              "text": "Blue"}}]}}]})
    );
    // The token was taken by the first message: the second is pushed, with its retry key.
    let pushes = stack.line.calls_to(PUSH_PATH);
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(
        pushes[0].body,
        json!({"to": fx::USER, "messages": [{"type": "text", "text": "(second message)"}]})
    );
    assert!(pushes[0].retry_key.is_some());
    let sent = stack.events_of("message.sent", 2).await;
    for s in &sent {
        assert!(
            s.json()["message"]["platform_message_id"].is_string(),
            "{}",
            s.json()
        );
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_refused_reply_token_falls_back_to_push() {
    let stack = Stack::start().await;
    reply_with(&stack, vec![]);
    let bot = stack.line_bot(Some(vec!["*"])).await;
    // An event older than a reply token lives: pushed without trying the token.
    let old = fx::at(
        fx::text("x-1", fx::USER, "late"),
        chrono::Utc::now().timestamp_millis() - 120_000,
    );
    assert_eq!(stack.post_line(&bot, vec![old]).await, 200);
    stack.events_of("message.sent", 1).await;
    assert!(stack.line.calls_to(REPLY_PATH).is_empty());
    // A fresh event whose token LINE no longer takes (never issued at the fake: what LINE
    // answers for a used or expired one): refused with LINE's error, then pushed.
    let body = fx::post(vec![now(fx::text("x-2", fx::USER, "refused"))]);
    assert_eq!(
        stack
            .post_line_as(&bot, Some(&bot.channel_secret), &body)
            .await,
        200
    );
    stack.events_of("message.sent", 2).await;
    let replies = stack.line.calls_to(REPLY_PATH);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].status, 400);
    let pushed: Vec<Value> = stack
        .line
        .accepted(PUSH_PATH)
        .iter()
        .map(|c| c.body["messages"][0]["text"].clone())
        .collect();
    assert_eq!(pushed, [json!("echo: late"), json!("echo: refused")]);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_retried_after_a_lost_answer_is_delivered_once() {
    let stack = Stack::start().await;
    let bot = stack.line_bot(Some(vec!["*"])).await;
    let user = user_writes(&stack, &bot, "r-1", "hi").await["user"]["id"].clone();
    // LINE accepts the push but the answer is lost (500): the sender retries with the same key.
    stack
        .line
        .fail_next(PUSH_PATH, [Failure::ServerErrorAfterAccepting]);
    let (status, body) = stack
        .call(
            "POST",
            "/v1/messages",
            Some(&bot.api_key),
            Some(&json!({"user_id": user, "messages": [{"type": "text", "text": "once"}]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    stack.events_of("message.sent", 1).await;
    let pushes = stack.line.calls_to(PUSH_PATH);
    let statuses: Vec<u16> = pushes.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [500, 409]);
    assert_eq!(pushes[0].retry_key, pushes[1].retry_key);
    let delivered: Vec<Value> = stack
        .line
        .messages()
        .into_iter()
        .filter(|m| m["text"] == "once")
        .collect();
    assert_eq!(delivered.len(), 1, "delivered once");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_cards_go_out_as_pushes_of_five_and_two_in_order() {
    let stack = Stack::start().await;
    let bot = stack.line_bot(Some(vec!["*"])).await;
    let user = user_writes(&stack, &bot, "s-1", "show me everything").await["user"]["id"].clone();
    let cards: Vec<Value> = (1..=7)
        .map(|i| json!({"title": format!("Item {i}")}))
        .collect();
    let (status, body) = stack
        .call(
            "POST",
            "/v1/messages",
            Some(&bot.api_key),
            Some(&json!({"user_id": user, "messages": [{"type": "carousel", "cards": cards}]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    stack.events_of("message.sent", 1).await;
    let requests: Vec<Vec<Value>> = stack
        .line
        .calls_to(PUSH_PATH)
        .iter()
        .map(|c| {
            c.body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["text"].clone())
                .collect()
        })
        .collect();
    assert_eq!(
        requests,
        [
            (1..=5)
                .map(|i| json!(format!("Item {i}")))
                .collect::<Vec<_>>(),
            (6..=7)
                .map(|i| json!(format!("Item {i}")))
                .collect::<Vec<_>>(),
        ]
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flex_message_passes_through_and_templates_reach_line_as_templates() {
    let stack = Stack::start().await;
    let bot = stack.line_bot(Some(vec!["*"])).await;
    let user = user_writes(&stack, &bot, "f-1", "menu?").await["user"]["id"].clone();
    let flex = json!({"type": "flex", "altText": "Today's menu", "contents": {"type": "bubble",
        "body": {"type": "box", "layout": "vertical", "contents": [
            {"type": "text", "text": "Ramen", "weight": "bold"}]}}});
    let (status, body) = stack
        .call(
            "POST",
            "/v1/messages",
            Some(&bot.api_key),
            Some(&json!({"user_id": user, "messages": [
                {"type": "native", "platform": "line", "message": flex},
                {"type": "buttons", "text": "Order?", "buttons": [
                    {"type": "postback", "title": "Yes", "payload": "ORDER"},
                    {"type": "url", "title": "Menu", "url": "https://example.com/menu"}]}]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    stack.events_of("message.sent", 2).await;
    let pushed: Vec<Value> = stack
        .line
        .accepted(PUSH_PATH)
        .iter()
        .map(|c| c.body["messages"][0].clone())
        .collect();
    assert_eq!(pushed[0], flex, "passed through as given");
    assert_eq!(
        pushed[1],
        json!({"type": "template", "altText": "Order?", "template": {"type": "confirm",
            "text": "Order?", "actions": [
                {"type": "postback", "label": "Yes", "data": "ORDER", "displayText": "Yes"},
                {"type": "uri", "label": "Menu", "uri": "https://example.com/menu"}]}})
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_group_the_group_is_the_conversation_and_the_member_its_sender() {
    let stack = Stack::start().await;
    reply_with(&stack, vec![]);
    let bot = stack.line_bot(Some(vec!["*"])).await;
    stack.line.set_profile(
        fx::USER,
        json!({"displayName": "Ana", "pictureUrl": "https://profile.line.example/ana"}),
    );
    stack.line.set_group_name(fx::GROUP, "Shop fans");
    // Ana writes to the bot alone first: her own conversation.
    let alone = user_writes(&stack, &bot, "g-0", "hello bot").await;
    let said = now(fx::message(
        "g-1",
        fx::in_group(fx::GROUP, Some(fx::USER)),
        json!({"id": "m-g-1", "type": "text", "text": "hello group"}),
    ));
    let joined = now(fx::member_joined(
        "g-2",
        fx::in_group(fx::GROUP, None),
        &[fx::OTHER_USER],
    ));
    assert_eq!(stack.post_line(&bot, vec![said, joined]).await, 200);
    let received = eventually(TIMEOUT, "the group message's event", || async {
        stack
            .tenant
            .received()
            .iter()
            .map(Received::json)
            .find(|e| e["message"]["platform_message_id"] == "m-g-1")
    })
    .await;
    assert_eq!(received["user"]["platform_user_id"], fx::USER);
    assert_eq!(received["user"]["id"], alone["user"]["id"], "the same Ana");
    assert_eq!(
        received["user"]["display_name"], "Ana",
        "the group-member profile"
    );
    let chat = received["chat"].clone();
    assert_eq!(chat["platform_chat_id"], fx::GROUP);
    assert_eq!(chat["kind"], "group");
    assert_eq!(
        chat["title"], "Shop fans",
        "named from LINE's group summary"
    );
    assert_ne!(chat["id"], received["user"]["id"]);
    assert_ne!(
        received["conversation_id"], alone["conversation_id"],
        "the group's conversation, not Ana's"
    );
    let subscribed = stack.events_of("user.subscribed", 1).await[0].json();
    assert_eq!(subscribed["user"]["platform_user_id"], fx::OTHER_USER);
    assert_eq!(subscribed["conversation_id"], received["conversation_id"]);
    assert_eq!(subscribed["chat"]["id"], chat["id"]);
    // The inline reply answers in the group with the event's token.
    let replies = eventually(TIMEOUT, "the reply in the group", || async {
        stack
            .line
            .calls_to(REPLY_PATH)
            .into_iter()
            .find(|c| c.body["replyToken"] == fx::reply_token("g-1"))
    })
    .await;
    assert_eq!(replies.status, 200);
    // A push to Ana goes to Ana, not to the group where she wrote last; a push to the chat's
    // id goes to the group.
    for (to, address) in [
        (&received["user"]["id"], fx::USER),
        (&chat["id"], fx::GROUP),
    ] {
        let (status, body) = stack
            .call(
                "POST",
                "/v1/messages",
                Some(&bot.api_key),
                Some(&json!({"user_id": to, "messages": [{"type": "text", "text": address}]})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let push = eventually(TIMEOUT, "the push", || async {
            stack
                .line
                .calls_to(PUSH_PATH)
                .into_iter()
                .find(|c| c.body["messages"][0]["text"] == address)
        })
        .await;
        assert_eq!(push.body["to"], address);
    }
    // The group's history names who wrote; the chat is a user of kind group.
    let conversation = received["conversation_id"].as_str().unwrap();
    let (status, history) = stack
        .call(
            "GET",
            &format!("/v1/conversations/{conversation}/messages"),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["user_id"], chat["id"]);
    let inbound = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["direction"] == "inbound")
        .cloned()
        .unwrap();
    assert_eq!(inbound["sender_id"], received["user"]["id"]);
    let (status, group) = stack
        .call(
            "GET",
            &format!("/v1/users/{}", chat["id"].as_str().unwrap()),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{group}");
    assert_eq!(
        (
            &group["chat_kind"],
            &group["platform_user_id"],
            &group["display_name"]
        ),
        (&json!("group"), &json!(fx::GROUP), &json!("Shop fans"))
    );
    // Looked up at once: their order at the fake is not theirs to keep.
    let mut lookups: Vec<String> = stack
        .line
        .calls_to("/v2/bot/group/")
        .into_iter()
        .map(|c| c.path)
        .collect();
    lookups.sort();
    assert_eq!(
        lookups,
        [
            format!("/v2/bot/group/{}/member/{}", fx::GROUP, fx::USER),
            format!("/v2/bot/group/{}/summary", fx::GROUP),
        ]
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_are_named_from_their_line_profile_looked_up_once() {
    let stack = Stack::start().await;
    let bot = stack.line_bot(Some(vec!["message.received"])).await;
    stack.line.set_profile(
        fx::USER,
        json!({"displayName": "Ana", "pictureUrl": "https://profile.line.example/ana",
               "language": "ja", "statusMessage": "hi"}),
    );
    for (id, text) in [("p-1", "hello"), ("p-2", "again")] {
        user_writes(&stack, &bot, id, text).await;
    }
    let events = stack.events_of("message.received", 2).await;
    for r in &events {
        let e = r.json();
        assert_eq!(
            (
                e["user"]["display_name"].clone(),
                e["user"]["locale"].clone()
            ),
            (json!("Ana"), json!("ja")),
            "{e}"
        );
    }
    let user = events[0].json()["user"]["id"].as_str().unwrap().to_owned();
    let (status, profile) = stack
        .call(
            "GET",
            &format!("/v1/users/{user}"),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["avatar_url"], "https://profile.line.example/ana");
    let lookups = stack.line.calls_to("/v2/bot/profile/");
    assert_eq!(lookups.len(), 1, "looked up once, then cached: {lookups:?}");
    assert_eq!(lookups[0].path, format!("/v2/bot/profile/{}", fx::USER));
    assert!(lookups[0].authorized, "with the channel's access token");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monthly_limit_fails_the_message_with_its_code_and_is_not_retried() {
    let stack = Stack::start().await;
    let bot = stack.line_bot(Some(vec!["*"])).await;
    let user = user_writes(&stack, &bot, "q-1", "hi").await["user"]["id"].clone();
    stack.line.set_monthly_quota(&bot.access_token, Some(0));
    let (status, body) = stack
        .call(
            "POST",
            "/v1/messages",
            Some(&bot.api_key),
            Some(&json!({"user_id": user, "messages": [{"type": "text", "text": "news"}]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let failed = stack.events_of("message.failed", 1).await[0].json();
    assert_eq!(failed["error"]["code"], "quota_exceeded", "{failed}");
    assert_eq!(failed["error"]["platform_code"], 429, "{failed}");
    drained(&stack).await;
    assert_eq!(stack.line.calls_to(PUSH_PATH).len(), 1, "not retried");
    stack.shutdown().await;
}

/// A user withdraws a message (LINE's `unsend`): a bot subscribed to `message.*` learns which
/// Patchbay message it was. Another user cannot withdraw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsent_message_is_named_to_the_bot() {
    let stack = Stack::start().await;
    let bot = stack.line_bot(Some(vec!["message.*"])).await;
    let received = user_writes(&stack, &bot, "01JUNSEND00000000000000001", "oops").await;
    let message_id = received["message"]["id"].as_str().unwrap().to_owned();
    // Someone else names the same message, then writes: their events are handled in order,
    // so once their text arrived, their unsend was handled, and it produced nothing.
    let other = vec![
        now(fx::unsend(
            "01JUNSEND00000000000000002",
            fx::OTHER_USER,
            "m-01JUNSEND00000000000000001",
        )),
        now(fx::text("01JUNSEND00000000000000003", fx::OTHER_USER, "hi")),
    ];
    assert_eq!(stack.post_line(&bot, other).await, 200);
    eventually(TIMEOUT, "the other user's text", || async {
        stack
            .tenant
            .received()
            .iter()
            .map(Received::json)
            .find(|e| e["message"]["platform_message_id"] == "m-01JUNSEND00000000000000003")
    })
    .await;
    let unsent = |stack: &Stack| {
        stack
            .tenant
            .received()
            .iter()
            .filter(|r| r.json()["type"] == "message.unsent")
            .count()
    };
    assert_eq!(unsent(&stack), 0);
    let own = now(fx::unsend(
        "01JUNSEND00000000000000004",
        fx::USER,
        "m-01JUNSEND00000000000000001",
    ));
    assert_eq!(stack.post_line(&bot, vec![own]).await, 200);
    let e = stack.events_of("message.unsent", 1).await[0].json();
    assert_eq!(e["message"]["id"], message_id.as_str(), "{e}");
    assert_eq!(
        e["message"]["platform_message_id"],
        "m-01JUNSEND00000000000000001"
    );
    assert_eq!(e["user"]["id"], received["user"]["id"]);
    assert!(e["message"].get("content").is_none(), "{e}");
    assert_eq!(unsent(&stack), 1);
    stack.shutdown().await;
}

/// A follow after a block reaches the bot as `user.subscribed` with `resubscribed: true`; a
/// first follow has no such field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unblocking_follow_is_a_resubscription() {
    let stack = Stack::start().await;
    let bot = stack.line_bot(None).await;
    let follows = vec![
        now(fx::follow("01JFOLLOW00000000000000001", fx::USER, false)),
        now(fx::follow(
            "01JFOLLOW00000000000000002",
            fx::OTHER_USER,
            true,
        )),
    ];
    assert_eq!(stack.post_line(&bot, follows).await, 200);
    let got: Vec<Value> = stack
        .events_of("user.subscribed", 2)
        .await
        .iter()
        .map(Received::json)
        .collect();
    let of = |user: &str| {
        got.iter()
            .find(|e| e["user"]["platform_user_id"] == user)
            .unwrap_or_else(|| panic!("{user} in {got:?}"))
            .clone()
    };
    assert!(of(fx::USER).get("resubscribed").is_none(), "{got:?}");
    assert_eq!(of(fx::OTHER_USER)["resubscribed"], true, "{got:?}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_with_a_preview_and_audio_with_a_duration_go_out_as_line_media() {
    let stack = Stack::start().await;
    let bot = stack.line_bot(Some(vec!["*"])).await;
    let user = user_writes(&stack, &bot, "m-1", "show me").await["user"]["id"].clone();
    let (status, body) = stack
        .call(
            "POST",
            "/v1/messages",
            Some(&bot.api_key),
            Some(&json!({"user_id": user, "messages": [
                {"type": "video", "url": "https://cdn.example/clip.mp4",
                 "preview_url": "https://cdn.example/clip.jpg"},
                {"type": "voice", "url": "https://cdn.example/note.m4a", "duration_ms": 4200},
                {"type": "video", "url": "https://cdn.example/other.mp4"}]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    stack.events_of("message.sent", 3).await;
    let pushed: Vec<Value> = stack
        .line
        .accepted(PUSH_PATH)
        .iter()
        .flat_map(|c| c.body["messages"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(
        pushed[0],
        json!({"type": "video", "originalContentUrl": "https://cdn.example/clip.mp4",
               "previewImageUrl": "https://cdn.example/clip.jpg"})
    );
    assert_eq!(
        pushed[1],
        json!({"type": "audio", "originalContentUrl": "https://cdn.example/note.m4a",
               "duration": 4200})
    );
    // Without a preview a video is a link, as before.
    assert_eq!(
        pushed[2],
        json!({"type": "text", "text": "https://cdn.example/other.mp4"})
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_is_set_at_line_and_a_webhook_for_another_bot_publishes_nothing() {
    let stack = Stack::start().await;
    let bot = stack.line_bot(None).await;
    // outbound-line sets the channel's webhook at LINE and learns its bot's user id.
    let channel = stack
        .channel_in_setup_state(&bot.id, &bot.channel_id, "configured")
        .await;
    let webhook = format!(
        "{}{}",
        stack.config.public_url.trim_end_matches('/'),
        bot.webhook_path
    );
    let config = &channel["setup"]["platform_config"];
    assert_eq!(config["webhook"], webhook.as_str());
    assert_eq!(config["active"], true);
    assert_eq!(config["bot_user_id"], fx::BOT_USER_ID);
    assert_eq!(
        stack.line.webhook(&bot.access_token).as_deref(),
        Some(webhook.as_str())
    );
    // Signed with this channel's secret but for another bot: answered, dropped.
    let mut elsewhere = fx::post(vec![now(fx::text("d-1", fx::USER, "not for this bot"))]);
    elsewhere["destination"] = json!("U0ther0000000000000000000000000000");
    assert_eq!(
        stack
            .post_line_as(&bot, Some(&bot.channel_secret), &elsewhere)
            .await,
        200
    );
    // The next webhook for this bot arrives; the one before it, of the same user, never does.
    user_writes(&stack, &bot, "d-2", "for this bot").await;
    let received: Vec<Value> = stack.tenant.received().iter().map(Received::json).collect();
    assert!(
        received
            .iter()
            .all(|e| e["message"]["platform_message_id"] != "m-d-1"),
        "{received:?}"
    );
    stack.shutdown().await;
}
