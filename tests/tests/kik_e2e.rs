//! Kik end to end through every service, on real NATS and PostgreSQL, with a fake Kik bot API
//! and webhooks signed as Kik signs them: the signature and bot-name checks, a batch split into
//! one event per message, inline and API replies through `/v1/message` (Basic auth,
//! suggested-response keyboards, batches of at most five per user), subscriptions, receipts
//! for the ids the sender chose, Kik's refusals, profile enrichment, and the bot's
//! configuration set at Kik when its channel is created (and shown with the channel).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_contract::subjects::Stream;
use patchbay_kik::fixtures as fx;
use patchbay_testkit::kik::{CONFIG_PATH, MESSAGE_PATH};
use patchbay_testkit::tenant::{Received, verify_standard_webhook};
use patchbay_tests::{KikBot, Stack, TIMEOUT, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The tenant answers every text with `reply` (the text's own words when `None`).
fn reply_with(stack: &Stack, reply: Option<Value>) {
    stack.tenant.respond_with(move |r| {
        let e = r.json();
        match e["message"]["content"]["text"].as_str() {
            Some(t) if e["type"] == "message.received" => {
                let message = reply
                    .clone()
                    .unwrap_or_else(|| json!({"type": "text", "text": format!("echo: {t}")}));
                (StatusCode::OK, Some(json!({ "messages": [message] })))
            }
            _ => (StatusCode::OK, None),
        }
    });
}

/// The user writes `text`; returns their Patchbay user id once the event reached the tenant.
async fn user_writes(stack: &Stack, bot: &KikBot, id: &str, text: &str) -> Value {
    assert_eq!(
        stack
            .post_kik(bot, vec![fx::text(id, fx::USER, text)])
            .await,
        200
    );
    let events = stack.events_of("message.received", 1).await;
    events
        .iter()
        .map(Received::json)
        .find(|e| e["message"]["platform_message_id"] == id)
        .map(|e| e["user"]["id"].clone())
        .expect("the event of that message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_not_signed_for_the_channels_bot_are_refused_and_publish_nothing() {
    let stack = Stack::start().await;
    let bot = stack.kik_bot(None).await;
    let body = fx::post(vec![fx::text("m-1", fx::USER, "hi")]);
    let wrong_key = stack
        .post_kik_as(&bot, &bot.username, "not-the-api-key", &body)
        .await;
    let wrong_bot = stack
        .post_kik_as(&bot, "another.bot", &bot.kik_api_key, &body)
        .await;
    assert_eq!((wrong_key, wrong_bot), (401, 401));
    assert_eq!(
        stack.stream_state(Stream::Ingress).await,
        (0, 0),
        "nothing stored"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_messages_becomes_one_signed_event_each_in_order() {
    let stack = Stack::start().await;
    let bot = stack.kik_bot(Some(vec!["message.received"])).await;
    let batch = vec![
        fx::text("b-1", fx::USER, "one"),
        fx::text("b-2", fx::USER, "two"),
        fx::text("b-3", fx::USER, "three"),
    ];
    // Kik posts the batch again when it got no answer: the retry collapses.
    for _ in 0..2 {
        assert_eq!(stack.post_kik(&bot, batch.clone()).await, 200);
    }
    let events = stack.events_of("message.received", 3).await;
    let got: Vec<(Value, Value)> = events
        .iter()
        .map(|r| {
            let e = r.json();
            (
                e["message"]["platform_message_id"].clone(),
                e["message"]["content"]["text"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (json!("b-1"), json!("one")),
            (json!("b-2"), json!("two")),
            (json!("b-3"), json!("three")),
        ]
    );
    for r in &events {
        verify_standard_webhook(&bot.webhook_secret, r).expect("signed with the bot's secret");
        let e = r.json();
        assert_eq!(e["bot_id"], bot.id);
        assert_eq!(
            e["channel"],
            json!({"id": bot.channel_id, "platform": "kik"})
        );
        assert_eq!(e["user"]["platform_user_id"], fx::USER);
    }
    assert_eq!(
        stack.stream_state(Stream::Ingress).await.1,
        3,
        "the repeated batch was dropped as duplicates"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_reply_with_buttons_goes_to_v1_message_with_a_suggested_keyboard() {
    let stack = Stack::start().await;
    reply_with(
        &stack,
        Some(json!({"type": "buttons", "text": "Pick one", "buttons": [
            {"type": "postback", "title": "Yes", "payload": "ANSWER_YES"},
            {"type": "reply", "title": "Maybe"}]})),
    );
    let bot = stack.kik_bot(Some(vec!["*"])).await;
    user_writes(&stack, &bot, "i-1", "hello").await;

    let calls = stack.kik.wait_for(MESSAGE_PATH, 1, TIMEOUT).await;
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.username.as_deref(), Some(bot.username.as_str()));
    assert!(call.authorized, "Basic auth with the bot's API key");
    assert_eq!(call.status, 200);
    let sent = stack.events_of("message.sent", 1).await[0].json();
    let id = sent["message"]["platform_message_id"]
        .as_str()
        .expect("the id the sender chose")
        .to_owned();
    assert_eq!(
        call.body,
        json!({"messages": [{"type": "text", "body": "Pick one", "to": fx::USER, "id": id,
            "keyboards": [{"type": "suggested", "responses": [
                {"type": "text", "body": "Yes", "metadata": "ANSWER_YES"},
                {"type": "text", "body": "Maybe"}]}]}]})
    );

    // The tap on "Yes" comes back as a postback carrying the payload.
    let tap = fx::suggested_tap("i-2", fx::USER, "Yes", json!("ANSWER_YES"));
    assert_eq!(stack.post_kik(&bot, vec![tap]).await, 200);
    let events = stack.events_of("message.received", 2).await;
    assert_eq!(
        events[1].json()["message"]["content"],
        json!({"type": "postback", "payload": "ANSWER_YES", "title": "Yes"})
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_messages_to_one_user_go_out_as_requests_of_five_and_two_in_order() {
    let stack = Stack::start().await;
    let bot = stack.kik_bot(Some(vec!["*"])).await;
    let user = user_writes(&stack, &bot, "s-1", "show me everything").await;
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
    let calls = stack.kik.calls_to(MESSAGE_PATH);
    let requests: Vec<Vec<Value>> = calls
        .iter()
        .map(|c| {
            c.body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["body"].clone())
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
    assert!(calls.iter().all(|c| c.status == 200), "{calls:?}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_chatting_is_a_subscription() {
    let stack = Stack::start().await;
    let bot = stack.kik_bot(Some(vec!["user.*"])).await;
    assert_eq!(
        stack
            .post_kik(&bot, vec![fx::start_chatting("c-1", fx::USER)])
            .await,
        200
    );
    let subscribed = stack.events_of("user.subscribed", 1).await[0].json();
    assert_eq!(subscribed["user"]["platform_user_id"], fx::USER);
    assert_eq!(subscribed["channel"]["platform"], "kik");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_for_the_ids_the_sender_chose_become_delivered_and_read() {
    let stack = Stack::start().await;
    reply_with(&stack, None);
    let bot = stack.kik_bot(Some(vec!["*"])).await;
    user_writes(&stack, &bot, "r-1", "hello").await;
    let sent = stack.events_of("message.sent", 1).await[0].json();
    let id = sent["message"]["platform_message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(stack.kik.messages()[0]["id"], id.as_str());

    let delivered = fx::delivery_receipt("r-2", fx::USER, &[&id]);
    assert_eq!(stack.post_kik(&bot, vec![delivered]).await, 200);
    let delivered = stack.events_of("message.delivered", 1).await[0].json();
    assert_eq!(delivered["message"]["id"], sent["message"]["id"]);
    let read = fx::read_receipt("r-3", fx::USER, &[&id]);
    assert_eq!(stack.post_kik(&bot, vec![read]).await, 200);
    let read = stack.events_of("message.read", 1).await[0].json();
    assert_eq!(read["message"]["id"], sent["message"]["id"]);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiks_refusal_becomes_message_failed_with_its_code() {
    let stack = Stack::start().await;
    let bot = stack.kik_bot(Some(vec!["*"])).await;
    let user = user_writes(&stack, &bot, "f-1", "hi").await;
    // The user blocks the bot on Kik's side: the send answers 403.
    stack.kik.block_user(&bot.username, fx::USER);
    let (status, body) = stack
        .call(
            "POST",
            "/v1/messages",
            Some(&bot.api_key),
            Some(&json!({"user_id": user, "messages": [{"type": "text", "text": "still there?"}]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let failed = stack.events_of("message.failed", 1).await[0].json();
    assert_eq!(failed["error"]["code"], "user_unavailable", "{failed}");
    assert_eq!(failed["error"]["platform_code"], 403, "{failed}");
    eventually(TIMEOUT, "nothing left to send", || async {
        (stack.stream_state(Stream::Outbound).await.0 == 0).then_some(())
    })
    .await;
    assert_eq!(
        stack.kik.calls_to(MESSAGE_PATH).len(),
        1,
        "a refusal is not retried"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_are_named_from_their_kik_profile() {
    let stack = Stack::start().await;
    let bot = stack.kik_bot(Some(vec!["message.received"])).await;
    stack.kik.set_profile(
        fx::USER,
        json!({"firstName": "Ana", "lastName": "Lima",
               "profilePicUrl": "https://cdn.kik.example/ana.jpg",
               "profilePicLastModified": 1_458_657_367, "timezone": "America/Toronto"}),
    );
    for (id, text) in [("p-1", "hello"), ("p-2", "again")] {
        assert_eq!(
            stack
                .post_kik(&bot, vec![fx::text(id, fx::USER, text)])
                .await,
            200
        );
    }
    let events = stack.events_of("message.received", 2).await;
    for r in &events {
        assert_eq!(r.json()["user"]["display_name"], "Ana Lima", "{}", r.json());
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
    assert_eq!(profile["avatar_url"], "https://cdn.kik.example/ana.jpg");
    let lookups = stack.kik.calls_to("/v1/user/");
    assert_eq!(lookups.len(), 1, "looked up once, then cached: {lookups:?}");
    assert_eq!(lookups[0].path, format!("/v1/user/{}", fx::USER));
    assert_eq!(lookups[0].username.as_deref(), Some(bot.username.as_str()));
    assert!(lookups[0].authorized);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_channel_gets_its_webhook_and_features_set_at_kik_and_read_back() {
    let stack = Stack::start().await;
    let bot = stack.kik_bot(None).await;
    let webhook = format!(
        "{}{}",
        stack.config.public_url.trim_end_matches('/'),
        bot.webhook_path
    );
    let features = json!({"receiveReadReceipts": true, "receiveDeliveryReceipts": true,
                          "receiveIsTyping": false, "manuallySendReadReceipts": false});
    let config = eventually(TIMEOUT, "the bot configured at Kik", || async {
        stack
            .kik
            .config(&bot.username)
            .filter(|c| c["webhook"] == webhook.as_str())
    })
    .await;
    assert_eq!(config["features"], features);
    // Read, set, read back: the set is the last write and a read follows it.
    let calls = eventually(TIMEOUT, "the configuration read back", || async {
        let calls = stack.kik.calls_to(CONFIG_PATH);
        let set = calls.iter().rposition(|c| c.method == "POST")?;
        calls[set + 1..]
            .iter()
            .any(|c| c.method == "GET")
            .then_some(calls)
    })
    .await;
    let posts: Vec<_> = calls.iter().filter(|c| c.method == "POST").collect();
    assert_eq!(posts.len(), 1, "set once: {calls:?}");
    assert_eq!(
        posts[0].body,
        json!({"webhook": webhook, "features": features})
    );
    assert!(
        calls
            .iter()
            .all(|c| c.authorized && c.username.as_deref() == Some(bot.username.as_str()))
    );

    // The operator sees it with the channel: configured, with Kik's read-back.
    let path = format!("/admin/v1/bots/{}/channels/{}", bot.id, bot.channel_id);
    let channel = stack
        .channel_in_setup_state(&bot.id, &bot.channel_id, "configured")
        .await;
    assert_eq!(channel["platform"], "kik");
    assert_eq!(channel["webhook_path"], bot.webhook_path.as_str());
    assert_eq!(
        channel["setup"]["platform_config"]["webhook"],
        webhook.as_str()
    );
    assert_eq!(channel["setup"]["platform_config"]["features"], features);
    assert!(channel.get("credentials").is_none(), "{channel}");
    let (status, list) = stack
        .call(
            "GET",
            &format!("/admin/v1/bots/{}/channels", bot.id),
            Some(stack.admin_token()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"], json!([channel]));
    // Not this bot's channel, or no such bot: 404; not the operator: 401.
    let other = stack.kik_bot(None).await;
    let wrong = format!("/admin/v1/bots/{}/channels/{}", other.id, bot.channel_id);
    let (status, _) = stack
        .call("GET", &wrong, Some(stack.admin_token()), None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = stack
        .call(
            "GET",
            "/admin/v1/bots/bot_none/channels",
            Some(stack.admin_token()),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = stack.call("GET", &path, Some(&bot.api_key), None).await;
    assert_eq!(status, 401);
    stack.shutdown().await;
}

/// Kik refuses the channel's API key: the channel shows the setup refused, with Kik's reason,
/// and nothing is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_api_key_shows_in_the_channels_setup() {
    let stack = Stack::start().await;
    let username = format!("pb.{}", patchbay_testkit::unique_prefix());
    stack.kik.add_bot(&username, "the-key-kik-knows");
    let (status, bot) = stack
        .post(
            &format!("{}/admin/v1/bots", stack.api_url()),
            stack.admin_token(),
            &json!({"name": "Kik bot", "webhook": {"url": stack.tenant.url()}}),
        )
        .await;
    assert_eq!(status, 201, "{bot}");
    let bot_id = bot["id"].as_str().unwrap();
    let (status, ch) = stack
        .post(
            &format!("{}/admin/v1/bots/{bot_id}/channels", stack.api_url()),
            stack.admin_token(),
            &json!({"platform": "kik",
                    "credentials": {"username": username, "api_key": "a-wrong-key"},
                    "api_base_url": stack.kik.base_url()}),
        )
        .await;
    assert_eq!(status, 201, "{ch}");
    let channel = stack
        .channel_in_setup_state(bot_id, ch["id"].as_str().unwrap(), "refused")
        .await;
    let detail = channel["setup"]["detail"].as_str().unwrap();
    assert!(detail.contains("401"), "{detail}");
    assert!(
        !detail.contains("a-wrong-key"),
        "no secrets in the detail: {detail}"
    );
    assert!(channel["setup"].get("platform_config").is_none());
    assert!(stack.kik.config(&username).unwrap()["webhook"].is_null());
    assert!(
        stack
            .kik
            .calls_to(CONFIG_PATH)
            .iter()
            .all(|c| c.method == "GET")
    );
    stack.shutdown().await;
}
