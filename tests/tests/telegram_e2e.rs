//! Telegram end to end through every service, on real NATS and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_telegram::fixtures;
use patchbay_testkit::tenant::verify_standard_webhook;
use patchbay_tests::{Stack, TIMEOUT};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_in_signed_event_out_inline_reply_to_telegram() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    stack.tenant.respond_with(|r| {
        let event = r.json();
        if event["type"] == "message.received" {
            let text = format!(
                "you said: {}",
                event["message"]["content"]["text"].as_str().unwrap_or("")
            );
            (
                StatusCode::OK,
                Some(json!({"messages": [{"type": "text", "text": text}]})),
            )
        } else {
            (StatusCode::OK, None)
        }
    });

    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(90001, 4242, "hello"))
            .await,
        200
    );

    let got = stack.events_of("message.received", 1).await;
    let callback = &got[0];
    verify_standard_webhook(&bot.webhook_secret, callback)
        .expect("signature verifies with the bot's secret");
    let event = callback.json();
    assert_eq!(
        callback.header("webhook-id").as_deref(),
        event["id"].as_str()
    );
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(event["bot_id"], bot.id);
    assert_eq!(
        event["channel"],
        json!({"id": bot.channel_id, "platform": "telegram"})
    );
    assert_eq!(event["user"]["platform_user_id"], "4242");
    assert_eq!(event["user"]["display_name"], "Ana Lima");
    assert!(event["user"]["id"].as_str().unwrap().starts_with("usr_"));
    assert!(
        event["conversation_id"]
            .as_str()
            .unwrap()
            .starts_with("conv_")
    );
    assert_eq!(event["message"]["platform_message_id"], "90001");
    assert_eq!(
        event["message"]["content"],
        json!({"type": "text", "text": "hello"})
    );

    let calls = stack.telegram.wait_for("sendMessage", 1, TIMEOUT).await;
    assert_eq!(calls[0].token, bot.bot_token);
    assert_eq!(
        calls[0].body,
        json!({"chat_id": 4242, "text": "you said: hello"})
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_command_is_a_subscription_and_delivery_reports_reach_subscribers() {
    let stack = Stack::start().await;
    let bot = stack
        .bot_with_events(Some(vec!["user.*", "message.*"]))
        .await;
    stack.tenant.respond_with(|r| {
        if r.json()["type"] == "user.subscribed" {
            (
                StatusCode::OK,
                Some(json!([{"type": "text", "text": "welcome"}])),
            )
        } else {
            (StatusCode::OK, None)
        }
    });
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(1, 77, "/start promo_9"))
            .await,
        200
    );
    let sub = stack.events_of("user.subscribed", 1).await[0].json();
    assert_eq!(sub["ref"], "promo_9");
    assert!(sub.get("message").is_none());

    let sent = stack.events_of("message.sent", 1).await[0].json();
    assert_eq!(sent["user"]["id"], sub["user"]["id"]);
    assert_eq!(sent["message"]["platform_message_id"], "1");
    let calls = stack.telegram.calls_of("sendMessage");
    assert_eq!(calls[0].body, json!({"chat_id": 77, "text": "welcome"}));

    // The user blocks the bot: the next send fails with the platform's reason.
    stack.telegram.block_chat(77);
    let (status, body) = stack
        .post(
            &format!("{}/v1/messages", stack.api_url()),
            &bot.api_key,
            &json!({"user_id": sub["user"]["id"], "messages": [{"type": "text", "text": "still there?"}]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let failed = stack.events_of("message.failed", 1).await[0].json();
    assert_eq!(failed["message"]["id"], body["message_ids"][0]);
    assert_eq!(failed["error"]["code"], "blocked");
    assert_eq!(failed["error"]["platform_code"], 403);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_send_reaches_telegram_and_bad_requests_are_explained() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(5, 4242, "hi"))
            .await,
        200
    );
    let user_id = stack.events_of("message.received", 1).await[0].json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{}/v1/messages", stack.api_url());

    let (status, body) = stack
        .post(&url, &bot.api_key, &json!({"user_id": user_id, "messages": [
            {"type": "text", "text": "first"},
            {"type": "buttons", "text": "Pick", "buttons": [{"type": "postback", "title": "Yes", "payload": "y"}]}]}))
        .await;
    assert_eq!(status, 202, "{body}");
    let ids = body["message_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|i| i.as_str().unwrap().starts_with("msg_")));
    let calls = stack.telegram.wait_for("sendMessage", 2, TIMEOUT).await;
    let texts: Vec<_> = calls.iter().map(|c| c.body["text"].clone()).collect();
    assert!(
        texts.contains(&json!("first")) && texts.contains(&json!("Pick")),
        "{texts:?}"
    );
    let buttons = calls.iter().find(|c| c.body["text"] == "Pick").unwrap();
    assert_eq!(
        buttons.body["reply_markup"],
        json!({"inline_keyboard": [[{"text": "Yes", "callback_data": "y"}]]})
    );

    let (status, body) = stack
        .post(
            &url,
            &bot.api_key,
            &json!({"user_id": "usr_nobody", "messages": [{"type": "text", "text": "x"}]}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("user_not_found")),
        "{body}"
    );

    let (status, body) = stack
        .post(
            &url,
            &bot.api_key,
            &json!({"user_id": user_id, "messages": [{"type": "image"}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["message"],
        "messages[0].url: one of url, file_id or media_id is required"
    );

    let (status, body) = stack
        .post(
            &url,
            &bot.api_key,
            &json!({"user_id": user_id, "messages": [{"type": "hologram"}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0]"),
        "{body}"
    );

    let (status, _) = stack
        .post(
            &url,
            "pbk_not-a-key",
            &json!({"user_id": user_id, "messages": [{"type": "text", "text": "x"}]}),
        )
        .await;
    assert_eq!(status, 401);

    let (status, _) = stack
        .post(
            &format!("{}/admin/v1/bots", stack.api_url()),
            "wrong-operator-token",
            &json!({"name": "x"}),
        )
        .await;
    assert_eq!(status, 401);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_nats_client_can_send_with_hand_written_json() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(8, 5151, "hey"))
            .await,
        200
    );
    stack.events_of("message.received", 1).await;

    // Written from proto-schemas/send_command.v1.json alone: plain async-nats, no Patchbay crate.
    let js = async_nats::jetstream::new(stack.raw_nats().await);
    let subject = format!("{}.send.{}", stack.config.nats_prefix, bot.id);
    let payload = r#"{"v": 1, "id": "crm-42", "platform": "telegram", "address": "5151",
                      "messages": [{"type": "text", "text": "from the CRM"}]}"#;
    js.publish(subject, payload.into())
        .await
        .unwrap()
        .await
        .unwrap();

    let calls = stack.telegram.wait_for("sendMessage", 1, TIMEOUT).await;
    assert_eq!(
        calls[0].body,
        json!({"chat_id": 5151, "text": "from the CRM"})
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_message_from_the_webhook_to_the_platform_api() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    stack.tenant.respond_with(|r| {
        if r.json()["type"] == "message.received" {
            (
                StatusCode::OK,
                Some(json!([{"type": "text", "text": "traced"}])),
            )
        } else {
            (StatusCode::OK, None)
        }
    });
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let status = stack
        .http
        .post(format!("{}{}", stack.ingress_url(), bot.webhook_path))
        .header("X-Telegram-Bot-Api-Secret-Token", &bot.secret_token)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&fixtures::text_update(31, 4242, "trace me"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

    let callback = &stack.events_of("message.received", 1).await[0];
    let at_tenant = callback
        .header("traceparent")
        .expect("the callback carries traceparent");
    assert_eq!(at_tenant.split('-').nth(1), Some(trace_id), "{at_tenant}");
    let calls = stack.telegram.wait_for("sendMessage", 1, TIMEOUT).await;
    let at_platform = calls[0]
        .traceparent
        .clone()
        .expect("the API call carries traceparent");
    assert_eq!(
        at_platform.split('-').nth(1),
        Some(trace_id),
        "{at_platform}"
    );
    assert_ne!(at_platform, at_tenant, "each hop has its own span");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_paced_per_chat_without_holding_up_other_chats() {
    let stack = patchbay_tests::Stack::start_with(patchbay_tests::Options {
        configure: Box::new(|c| {
            c.telegram_per_chat_per_second = 2;
            c.telegram_per_chat_burst = 1;
        }),
        ..patchbay_tests::Options::default()
    })
    .await;
    let bot = stack.bot().await;
    for (i, chat) in [7001, 7002].iter().enumerate() {
        assert_eq!(
            stack
                .post_update(&bot, &fixtures::text_update(i as i64 + 1, *chat, "hi"))
                .await,
            200
        );
    }
    let users: Vec<serde_json::Value> = stack
        .events_of("message.received", 2)
        .await
        .iter()
        .map(|r| r.json()["user"]["id"].clone())
        .collect();
    let url = format!("{}/v1/messages", stack.api_url());
    let ten: Vec<_> = (0..10)
        .map(|n| json!({"type": "text", "text": format!("busy {n}")}))
        .collect();
    let (status, _) = stack
        .post(
            &url,
            &bot.api_key,
            &json!({"user_id": users[0], "messages": ten}),
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = stack
        .post(
            &url,
            &bot.api_key,
            &json!({"user_id": users[1], "messages": [{"type": "text", "text": "quiet"}]}),
        )
        .await;
    assert_eq!(status, 202);

    let calls = stack.telegram.wait_for("sendMessage", 11, TIMEOUT).await;
    let busy: Vec<_> = calls
        .iter()
        .filter(|c| c.body["text"].as_str().unwrap().starts_with("busy"))
        .collect();
    let quiet = calls.iter().find(|c| c.body["text"] == "quiet").unwrap();
    // Ten messages to one chat at 2/s with a burst of 1 take at least 9 / 2 s.
    let spread = busy[9].at.duration_since(busy[0].at);
    assert!(
        spread >= std::time::Duration::from_millis(4400),
        "busy chat paced: {spread:?}"
    );
    // The quiet chat's one message went out within the busy chat's first pacing interval
    // (its third message is due a second after the first): it queued behind none of them.
    assert!(
        quiet.at < busy[2].at,
        "the other chat waited for the busy one: quiet {:?} after the busy chat's first",
        quiet.at.saturating_duration_since(busy[0].at)
    );
    stack.shutdown().await;
}
