//! Custom channels end to end (every service its own listener and NATS connection): an app
//! registers a user with the channel's domain key, sends as the user and gets the bot's inline
//! replies in the answer; every message for the user is pushed to the channel's event webhook,
//! signed, with `X-Patchbay-Source`; `POST /v1/conversations` finds or creates contacts by
//! e-mail or phone, and the history pages the conversation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_testkit::tenant::{FakeTenant, verify_standard_webhook};
use patchbay_tests::{Layout, Options, Stack, WAIT, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn split() -> Stack {
    Stack::start_with(Options {
        layout: Layout::Split,
        ..Options::default()
    })
    .await
}

/// The tenant answers a user's "hi" with two messages, and anything else with 200 and no body.
fn greeter(stack: &Stack) {
    stack.tenant.respond_with(|r| {
        let e = r.json();
        if e["type"] == "message.received" && e["message"]["content"]["text"] == "hi" {
            (
                StatusCode::OK,
                Some(json!({"messages": [
                    {"type": "text", "text": "Hello!"},
                    {"type": "buttons", "text": "How can I help?",
                     "buttons": [{"type": "postback", "title": "Prices", "payload": "PRICES"}]}
                ]})),
            )
        } else {
            (StatusCode::OK, None)
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_user_talks_to_the_bot_and_gets_its_replies() {
    let stack = split().await;
    greeter(&stack);
    let app = FakeTenant::start().await;
    let bot = stack.bot().await;
    let (channel, domain_key, push_secret) = stack.custom_channel(&bot, Some(&app.url())).await;
    let base = format!("{}/v1/custom/{channel}", stack.custom_url());

    // Registration needs the domain key.
    let profile = json!({"external_id": "app-user-1", "display_name": "Ada",
                         "email": "Ada@Example.com", "phone": "+31612345678"});
    let (status, answer) = stack
        .post(&format!("{base}/users"), "not-the-key", &profile)
        .await;
    assert_eq!(status, 401, "{answer}");
    let (status, user) = stack
        .post(&format!("{base}/users"), &domain_key, &profile)
        .await;
    assert_eq!(status, 201, "{user}");
    let token = user["token"].as_str().unwrap().to_owned();
    let user_id = user["user_id"].as_str().unwrap().to_owned();
    assert_eq!(user["platform_user_id"], "app-user-1");
    let (_, again) = stack
        .post(&format!("{base}/users"), &domain_key, &profile)
        .await;
    assert_eq!(again["token"], user["token"], "re-registration: same token");
    assert_eq!(again["user_id"], user["user_id"]);

    // The tenant learns of the user.
    let subscribed = eventually(WAIT, "user.subscribed at the tenant", || async {
        stack
            .tenant
            .received()
            .into_iter()
            .map(|r| r.json())
            .find(|e| e["type"] == "user.subscribed")
    })
    .await;
    assert_eq!(subscribed["user"]["id"], user_id.as_str());
    assert_eq!(subscribed["user"]["display_name"], "Ada");
    assert_eq!(subscribed["channel"]["platform"], "custom");

    // A message as the user: the bot's inline reply comes back in the answer, in order.
    let (status, sent) = stack
        .post(
            &format!("{base}/messages"),
            &token,
            &json!({"content": {"type": "text", "text": "hi"}, "wait_ms": 15000}),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["complete"], true, "{sent}");
    assert_eq!(sent["duplicate"], false);
    let replies = sent["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 2, "{sent}");
    assert_eq!(
        replies[0]["content"],
        json!({"type": "text", "text": "Hello!"})
    );
    assert_eq!(replies[1]["content"]["type"], "buttons");
    for r in replies {
        assert_eq!(r["in_reply_to"], sent["event_id"]);
        assert_eq!(r["source"], "bot");
        assert_eq!(r["source_id"], bot.id.as_str());
        assert_eq!(r["user_id"], user_id.as_str());
    }
    // The tenant saw the message as the user's, with the ids the answer gave.
    let event = stack
        .tenant
        .received()
        .into_iter()
        .map(|r| r.json())
        .find(|e| e["type"] == "message.received")
        .expect("message.received at the tenant");
    assert_eq!(event["id"], sent["event_id"]);
    assert_eq!(event["message"]["id"], sent["message_id"]);
    assert_eq!(event["user"]["id"], user_id.as_str());

    // Both replies were pushed to the app's event webhook too, signed, marked as the bot's.
    let pushed = app.wait_for(2, WAIT).await;
    for (r, reply) in pushed.iter().zip(replies) {
        verify_standard_webhook(&push_secret, r).expect("push signed with the channel's secret");
        assert_eq!(r.header("x-patchbay-source").as_deref(), Some("bot"));
        assert_eq!(r.json()["id"], reply["id"]);
        assert_eq!(
            r.header("webhook-id"),
            reply["id"].as_str().map(str::to_owned)
        );
    }

    // A human agent's message later reaches the app through the event webhook only.
    let (status, queued) = stack
        .post(
            &format!("{}/v1/messages", stack.api_url()),
            &bot.api_key,
            &json!({"user_id": user_id, "source": "human", "source_id": "agent-7",
                    "messages": [{"type": "text", "text": "Agent Smith here"}]}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let pushed = app.wait_for(3, WAIT).await;
    let human = &pushed[2];
    assert_eq!(human.header("x-patchbay-source").as_deref(), Some("human"));
    assert_eq!(
        human.header("x-patchbay-source-id").as_deref(),
        Some("agent-7")
    );
    assert_eq!(human.json()["content"]["text"], "Agent Smith here");

    // The profile the app gave is the user's profile.
    let (status, p) = stack
        .call(
            "get",
            &format!("/v1/users/{user_id}"),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["platform"], "custom");
    assert_eq!(p["email"], "ada@example.com");
    assert_eq!(p["phone"], "+31612345678");

    // A tenant that fails: the answer says the reply is not complete, and holds none.
    stack
        .tenant
        .respond_with(|_| (StatusCode::INTERNAL_SERVER_ERROR, None));
    let (status, failed) = stack
        .post(
            &format!("{base}/messages"),
            &token,
            &json!({"content": {"type": "text", "text": "hi"}, "wait_ms": 15000}),
        )
        .await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["complete"], false, "{failed}");
    assert_eq!(failed["replies"], json!([]));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_channel_requests_are_checked() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let (channel, domain_key, _) = stack.custom_channel(&bot, None).await;
    let (other, other_key, _) = stack.custom_channel(&bot, None).await;
    let base = format!("{}/v1/custom/{channel}", stack.custom_url());
    let (_, user) = stack
        .post(&format!("{base}/users"), &domain_key, &json!({}))
        .await;
    let token = user["token"].as_str().unwrap().to_owned();
    assert!(
        user["platform_user_id"]
            .as_str()
            .unwrap()
            .starts_with("cu_")
    );
    let text = json!({"content": {"type": "text", "text": "x"}, "wait_ms": 0});

    // Tokens: none, tampered, or another channel's user: 401, nothing published.
    let (_, other_user) = stack
        .post(
            &format!("{}/v1/custom/{other}/users", stack.custom_url()),
            &other_key,
            &json!({"external_id": "u1"}),
        )
        .await;
    let tampered = format!("{}x", &token[..token.len() - 1]);
    let foreign = other_user["token"].as_str().unwrap().to_owned();
    // What the ingress published (the registrations above are still moving through the
    // other stages).
    let ingress = || async {
        stack
            .stream_sequences()
            .await
            .into_iter()
            .find(|(name, _)| name.ends_with("_INGRESS"))
            .unwrap()
    };
    let before = ingress().await;
    for bad in [tampered.as_str(), foreign.as_str(), domain_key.as_str()] {
        let (status, answer) = stack.post(&format!("{base}/messages"), bad, &text).await;
        assert_eq!(status, 401, "{answer}");
    }
    let r = stack
        .http
        .post(format!("{base}/messages"))
        .json(&text)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Another channel's domain key does not register users here.
    let (status, _) = stack
        .post(&format!("{base}/users"), &other_key, &json!({}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        ingress().await,
        before,
        "refused requests published nothing"
    );

    // Bodies: the field at fault is named.
    for (body, field) in [
        (
            json!({"content": {"type": "carousel", "cards": []}}),
            "content.type",
        ),
        (
            json!({"content": {"type": "text", "text": ""}}),
            "content.text",
        ),
        (
            json!({"content": {"type": "text", "text": "x"}, "id": ""}),
            "id",
        ),
    ] {
        let (status, answer) = stack.post(&format!("{base}/messages"), &token, &body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body}: {message}");
    }
    for (body, field) in [
        (json!({"external_id": "a b"}), "external_id"),
        (json!({"email": "nope"}), "email"),
        (json!({"phone": "0612345678"}), "phone"),
    ] {
        let (status, answer) = stack
            .post(&format!("{base}/users"), &domain_key, &body)
            .await;
        assert_eq!(status, 422, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body}: {message}");
    }

    // An unknown channel, or a Telegram channel: 404.
    for ch in ["ch_unknown", bot.channel_id.as_str()] {
        let (status, _) = stack
            .post(
                &format!("{}/v1/custom/{ch}/users", stack.custom_url()),
                &domain_key,
                &json!({}),
            )
            .await;
        assert_eq!(status, 404);
    }

    // The same message id twice: stored once, the second answer says so.
    let once = json!({"content": {"type": "text", "text": "x"}, "id": "m-1", "wait_ms": 0});
    let (_, first) = stack.post(&format!("{base}/messages"), &token, &once).await;
    let (_, second) = stack.post(&format!("{base}/messages"), &token, &once).await;
    assert_eq!(first["duplicate"], false, "{first}");
    assert_eq!(second["duplicate"], true, "{second}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_are_upserted_by_email_or_phone_and_paged() {
    let stack = Stack::start().await;
    let app = FakeTenant::start().await;
    let bot = stack.bot().await;
    let (channel, domain_key, _) = stack.custom_channel(&bot, Some(&app.url())).await;
    let upsert = |contact: Value, text: &str| json!({"contact": contact, "messages": [{"type": "text", "text": text}]});

    // New by e-mail: created on the custom channel, the message pushed to the app.
    let (status, created) = stack
        .call(
            "post",
            "/v1/conversations",
            Some(&bot.api_key),
            Some(&upsert(
                json!({"email": "Neo@Example.com", "name": "Neo"}),
                "Welcome",
            )),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["created"], true);
    assert_eq!(created["user"]["platform"], "custom");
    assert_eq!(created["user"]["platform_user_id"], "neo@example.com");
    assert_eq!(created["user"]["display_name"], "Neo");
    let conversation = created["conversation_id"].as_str().unwrap().to_owned();
    let pushed = app.wait_for(1, WAIT).await;
    assert_eq!(pushed[0].json()["content"]["text"], "Welcome");
    assert_eq!(pushed[0].json()["platform_user_id"], "neo@example.com");

    // Again: the same contact and conversation, 200.
    let (status, existing) = stack
        .call(
            "post",
            "/v1/conversations",
            Some(&bot.api_key),
            Some(&upsert(json!({"email": "neo@example.com"}), "Second")),
        )
        .await;
    assert_eq!(status, 200, "{existing}");
    assert_eq!(existing["created"], false);
    assert_eq!(existing["conversation_id"], conversation.as_str());
    assert_eq!(existing["user"]["id"], created["user"]["id"]);

    // The app registering that address gets the same user.
    let (_, registered) = stack
        .post(
            &format!("{}/v1/custom/{channel}/users", stack.custom_url()),
            &domain_key,
            &json!({"external_id": "neo@example.com"}),
        )
        .await;
    assert_eq!(registered["user_id"], created["user"]["id"]);

    // A phone number the bot does not know, and no WhatsApp channel: the custom channel.
    let (status, by_phone) = stack
        .call(
            "post",
            "/v1/conversations",
            Some(&bot.api_key),
            Some(&json!({"contact": {"phone": "+31612345678"}})),
        )
        .await;
    assert_eq!(status, 201, "{by_phone}");
    assert_eq!(by_phone["user"]["platform_user_id"], "31612345678");
    assert!(by_phone.get("send").is_none());

    // History: newest first, a page at a time, once both messages are sent.
    let path = format!("/v1/conversations/{conversation}/messages");
    eventually(WAIT, "both messages sent", || async {
        let (_, page) = stack.call("get", &path, Some(&bot.api_key), None).await;
        let m = page["messages"].as_array()?;
        (m.len() == 2 && m.iter().all(|m| m["status"] == "sent")).then_some(())
    })
    .await;
    let (status, first) = stack
        .call("get", &format!("{path}?limit=1"), Some(&bot.api_key), None)
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["messages"][0]["content"]["text"], "Second");
    assert_eq!(first["messages"][0]["direction"], "outbound");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = stack
        .call(
            "get",
            &format!("{path}?limit=1&before={cursor}"),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(second["messages"][0]["content"]["text"], "Welcome");
    assert!(second.get("next_cursor").is_none(), "{second}");

    // Refusals name the field; another bot sees nothing.
    for (body, field) in [
        (json!({"contact": {}}), "contact"),
        (json!({"contact": {"phone": "612345678"}}), "contact.phone"),
        (json!({"contact": {"email": "x"}}), "contact.email"),
        (
            json!({"contact": {"email": "a@b.co"}, "channel_id": bot.channel_id}),
            "channel_id",
        ),
    ] {
        let (status, answer) = stack
            .call("post", "/v1/conversations", Some(&bot.api_key), Some(&body))
            .await;
        assert_eq!(status, 422, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body}: {message}");
    }
    let stranger = stack.bot().await;
    let (status, _) = stack
        .call("get", &path, Some(&stranger.api_key), None)
        .await;
    assert_eq!(status, 404);
    // A bot with no channel for new contacts: 422, nothing created.
    let (status, answer) = stack
        .call(
            "post",
            "/v1/conversations",
            Some(&stranger.api_key),
            Some(&json!({"contact": {"email": "neo@example.com"}})),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "no_channel");
    stack.shutdown().await;
}
