//! Viber end to end through every service, on real NATS and PostgreSQL, with a fake Viber REST
//! bot API and callbacks signed as Viber signs them: the signature check, the webhook set at
//! Viber when the channel is created (through the check callback the ingress answers), inline
//! and API replies through `send_message` (keyboards, the channel's sender), postbacks told
//! from typed text, the welcome message answering `conversation_started`, receipts for
//! Viber's message tokens, Viber's refusals, profiles looked up off the messages' way, and
//! the 24-hour session with billed sends allowed by the bot's settings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_contract::subjects::Stream;
use patchbay_testkit::tenant::{Received, verify_standard_webhook};
use patchbay_testkit::viber::{ACCOUNT_INFO_PATH, SEND_PATH, SET_WEBHOOK_PATH, USER_DETAILS_PATH};
use patchbay_tests::{Stack, TIMEOUT, ViberBot, eventually};
use patchbay_viber::fixtures as fx;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The tenant answers every text with `reply`.
fn reply_with(stack: &Stack, reply: Value) {
    stack.tenant.respond_with(move |r| {
        let e = r.json();
        match e["message"]["content"]["text"].as_str() {
            Some(_) if e["type"] == "message.received" => {
                (StatusCode::OK, Some(json!({ "messages": [reply.clone()] })))
            }
            _ => (StatusCode::OK, None),
        }
    });
}

/// The user writes `text` (message token `token`); returns their Patchbay user id once the
/// event reached the tenant.
async fn user_writes(stack: &Stack, bot: &ViberBot, token: u64, text: &str) -> Value {
    let (status, _) = post(stack, bot, fx::text(token, fx::USER, text)).await;
    assert_eq!(status, 200);
    let events = stack.events_of("message.received", 1).await;
    events
        .iter()
        .map(Received::json)
        .find(|e| e["message"]["platform_message_id"].as_str() == Some(token.to_string().as_str()))
        .map(|e| e["user"]["id"].clone())
        .expect("the event of that message")
}

/// Posts `callback` as Viber would, stamped now (the fixtures' own time is long past, and
/// Viber's session counts from it).
async fn post(stack: &Stack, bot: &ViberBot, callback: Value) -> (u16, String) {
    let now = chrono::Utc::now().timestamp_millis();
    stack.post_viber(bot, &fx::at(callback, now)).await
}

async fn send(stack: &Stack, bot: &ViberBot, user: &Value, messages: Value) -> (u16, Value) {
    stack
        .call(
            "POST",
            "/v1/messages",
            Some(&bot.api_key),
            Some(&json!({"user_id": user, "messages": messages})),
        )
        .await
}

async fn patch_bot(stack: &Stack, bot: &ViberBot, body: Value) -> (u16, Value) {
    stack
        .call(
            "PATCH",
            &format!("/admin/v1/bots/{}", bot.id),
            Some(stack.admin_token()),
            Some(&body),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_is_set_at_viber_through_its_check_callback_and_bad_signatures_are_refused() {
    let stack = Stack::start().await;
    let bot = stack.viber_bot(None, json!({})).await;
    // Read, set (Viber's check callback answered 200 by the ingress), read back.
    let calls = eventually(TIMEOUT, "the webhook read back", || async {
        let c: Vec<String> = stack.viber.calls().into_iter().map(|c| c.path).collect();
        (c.len() >= 3).then_some(c)
    })
    .await;
    assert_eq!(
        calls[..3],
        [ACCOUNT_INFO_PATH, SET_WEBHOOK_PATH, ACCOUNT_INFO_PATH]
    );
    let set = &stack.viber.calls_to(SET_WEBHOOK_PATH)[0];
    assert_eq!(set.token.as_deref(), Some(bot.auth_token.as_str()));
    assert_eq!(set.status, Some(0), "the check callback got 200");
    assert_eq!(set.body["send_name"], true);
    assert_eq!(
        set.body["event_types"],
        json!([
            "delivered",
            "seen",
            "failed",
            "subscribed",
            "unsubscribed",
            "conversation_started"
        ])
    );
    assert_eq!(
        stack.stream_state(Stream::Ingress).await,
        (0, 0),
        "the check publishes nothing"
    );

    // Viber's own check callback, posted again by hand: 200, nothing published.
    assert_eq!(post(&stack, &bot, fx::webhook(77)).await.0, 200);
    let raw = serde_json::to_vec(&fx::text(1, fx::USER, "hi")).unwrap();
    let wrong = fx::signature("not-the-token", &raw);
    assert_eq!(
        stack.post_viber_signed(&bot, &wrong, raw.clone()).await.0,
        401
    );
    assert_eq!(stack.post_viber_signed(&bot, "", raw).await.0, 401);
    assert_eq!(
        stack.stream_state(Stream::Ingress).await,
        (0, 0),
        "nothing stored"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_reply_with_buttons_is_a_keyboard_and_a_tap_comes_back_as_a_postback() {
    let stack = Stack::start().await;
    reply_with(
        &stack,
        json!({"type": "buttons", "text": "Pick one", "buttons": [
            {"type": "postback", "title": "Yes", "payload": "ANSWER_YES"},
            {"type": "url", "title": "Site", "url": "https://shop.example"}]}),
    );
    let bot = stack
        .viber_bot(Some(vec!["*"]), json!({"sender_name": "Corner Shop"}))
        .await;
    user_writes(&stack, &bot, 1001, "hello").await;
    let event = stack.events_of("message.received", 1).await[0].clone();
    verify_standard_webhook(&bot.webhook_secret, &event).expect("signed with the bot's secret");
    let e = event.json();
    assert_eq!(
        e["channel"],
        json!({"id": bot.channel_id, "platform": "viber"})
    );
    assert_eq!(e["user"]["display_name"], "Ana Lima");

    let sent = stack.events_of("message.sent", 1).await[0].json();
    let call = stack
        .viber
        .calls_to(SEND_PATH)
        .into_iter()
        .next()
        .expect("a send");
    assert_eq!(call.token.as_deref(), Some(bot.auth_token.as_str()));
    assert_eq!(
        sent["message"]["platform_message_id"],
        call.message_token.unwrap().to_string()
    );
    assert_eq!(
        call.body,
        json!({"receiver": fx::USER, "type": "text", "text": "Pick one",
               "sender": {"name": "Corner Shop"}, "min_api_version": 4,
               "tracking_data": r#"{"pb":{"ANSWER_YES":"Yes"}}"#,
               "keyboard": {"Type": "keyboard", "DefaultHeight": false, "Buttons": [
                   {"Columns": 6, "Rows": 1, "ActionType": "reply", "ActionBody": "ANSWER_YES",
                    "Text": "Yes", "Silent": true},
                   {"Columns": 6, "Rows": 1, "ActionType": "open-url",
                    "ActionBody": "https://shop.example", "Text": "Site"}]}})
    );
    // The tap comes back as text with the keyboard message's tracking data.
    let tracking = call.body["tracking_data"].as_str().unwrap();
    let tap = fx::tracked_text(1002, fx::USER, "ANSWER_YES", tracking);
    assert_eq!(post(&stack, &bot, tap).await.0, 200);
    let events = stack.events_of("message.received", 2).await;
    assert_eq!(
        events[1].json()["message"]["content"],
        json!({"type": "postback", "payload": "ANSWER_YES", "title": "Yes"})
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_started_is_a_subscription_answered_with_the_welcome_from_the_bots_settings() {
    let stack = Stack::start().await;
    let bot = stack.viber_bot(Some(vec!["user.*"]), json!({})).await;
    // Without a welcome message: the usual empty answer.
    let (status, body) = stack
        .post_viber(
            &bot,
            &fx::conversation_started(2001, fx::USER, Some("poster-7")),
        )
        .await;
    assert_eq!((status, body.as_str()), (200, ""));
    let started = stack.events_of("user.subscribed", 1).await[0].json();
    assert_eq!(started["ref"], "poster-7");
    assert_eq!(started["user"]["platform_user_id"], fx::USER);

    // Settings are checked by the platform: Telegram has no welcome message, and a Viber
    // welcome must be one Viber message.
    let cards: Vec<Value> = (0..7).map(|i| json!({"title": format!("C{i}")})).collect();
    for (settings, field) in [
        (
            json!({"telegram": {"welcome": {"type": "text", "text": "hi"}}}),
            "platform_settings.telegram.welcome",
        ),
        (
            json!({"viber": {"welcome": {"type": "carousel", "cards": cards}}}),
            "platform_settings.viber.welcome",
        ),
    ] {
        let (status, e) = patch_bot(&stack, &bot, json!({ "platform_settings": settings })).await;
        assert_eq!(status, 422, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{e}"
        );
    }
    let welcome = json!({"type": "text", "text": "Welcome! Type 'menu' to start."});
    let (status, e) = patch_bot(
        &stack,
        &bot,
        json!({"platform_settings": {"viber": {"welcome": welcome}}}),
    )
    .await;
    assert_eq!(status, 204, "{e}");
    let answer = eventually(TIMEOUT, "the welcome message answered", || async {
        let (status, body) = stack
            .post_viber(&bot, &fx::conversation_started(2002, "U2=", None))
            .await;
        assert_eq!(status, 200);
        (!body.is_empty()).then_some(body)
    })
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap(),
        json!({"type": "text", "text": "Welcome! Type 'menu' to start.",
               "sender": {"name": "Test bot"}}),
        "one message without a receiver, the bot's name as sender"
    );
    // Only conversation_started gets it.
    assert_eq!(
        post(&stack, &bot, fx::subscribed(2010, "U3=")).await,
        (200, String::new())
    );
    assert!(
        stack.viber.calls_to(SEND_PATH).is_empty(),
        "the welcome is not a send"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_for_viber_s_message_tokens_become_delivered_read_and_failed() {
    let stack = Stack::start().await;
    reply_with(&stack, json!({"type": "text", "text": "thanks"}));
    let bot = stack.viber_bot(Some(vec!["*"]), json!({})).await;
    user_writes(&stack, &bot, 3001, "hello").await;
    let sent = stack.events_of("message.sent", 1).await[0].json();
    let token: u64 = sent["message"]["platform_message_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    assert_eq!(
        post(&stack, &bot, fx::delivered(token, fx::USER)).await.0,
        200
    );
    let delivered = stack.events_of("message.delivered", 1).await[0].json();
    assert_eq!(delivered["message"]["id"], sent["message"]["id"]);
    assert_eq!(post(&stack, &bot, fx::seen(token, fx::USER)).await.0, 200);
    let read = stack.events_of("message.read", 1).await[0].json();
    assert_eq!(read["message"]["id"], sent["message"]["id"]);

    // A later failure of another message (Viber's client refused its keyboard).
    let (status, body) = send(
        &stack,
        &bot,
        &sent["user"]["id"],
        json!([{"type": "text", "text": "two"}]),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let second = eventually(TIMEOUT, "the second send", || async {
        let sent = stack.events_of("message.sent", 2).await;
        sent.get(1).map(Received::json)
    })
    .await;
    let token2: u64 = second["message"]["platform_message_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        post(
            &stack,
            &bot,
            fx::failed(token2, fx::USER, "keyboard is invalid")
        )
        .await
        .0,
        200
    );
    let failed = stack.events_of("message.failed", 1).await[0].json();
    assert_eq!(failed["message"]["id"], second["message"]["id"]);
    assert_eq!(failed["error"]["code"], "platform_error");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keyboard is invalid")
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viber_s_refusal_becomes_message_failed_with_its_status() {
    let stack = Stack::start().await;
    let bot = stack.viber_bot(Some(vec!["*"]), json!({})).await;
    let user = user_writes(&stack, &bot, 4001, "hi").await;
    // The user unsubscribes; Viber answers status 6 to the next send.
    assert_eq!(
        post(&stack, &bot, fx::unsubscribed(4002, fx::USER)).await.0,
        200
    );
    stack.events_of("user.unsubscribed", 1).await;
    let (status, body) = send(
        &stack,
        &bot,
        &user,
        json!([{"type": "text", "text": "still there?"}]),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let failed = stack.events_of("message.failed", 1).await[0].json();
    assert_eq!(failed["error"]["code"], "user_unavailable", "{failed}");
    assert_eq!(failed["error"]["platform_code"], 6, "{failed}");
    eventually(TIMEOUT, "nothing left to send", || async {
        (stack.stream_state(Stream::Outbound).await.0 == 0).then_some(())
    })
    .await;
    assert_eq!(
        stack.viber.calls_to(SEND_PATH).len(),
        1,
        "a refusal is not retried"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nameless_senders_are_named_from_get_user_details_looked_up_once() {
    let stack = Stack::start().await;
    let bot = stack
        .viber_bot(Some(vec!["message.received"]), json!({}))
        .await;
    stack.viber.set_profile(
        fx::USER,
        json!({"name": "Ana Lima", "avatar": "https://cdn.viber.example/ana.jpg", "language": "pt"}),
    );
    let nameless = |token: u64, text: &str| {
        let mut m = fx::text(token, fx::USER, text);
        m["sender"] = json!({"id": fx::USER, "api_version": 10});
        m
    };
    assert_eq!(post(&stack, &bot, nameless(5001, "first")).await.0, 200);
    let first = stack.events_of("message.received", 1).await[0].json();
    assert!(
        first["user"].get("display_name").is_none(),
        "published without waiting: {first}"
    );
    stack.viber.wait_for(USER_DETAILS_PATH, 1, TIMEOUT).await;
    // Later messages carry the profile once the lookup is in.
    let named = eventually(TIMEOUT, "a message named from the lookup", || async {
        let n = stack.tenant.received().len() as u64;
        assert_eq!(post(&stack, &bot, nameless(5100 + n, "again")).await.0, 200);
        let events = stack.events_of("message.received", (n + 1) as usize).await;
        let last = events.last().unwrap().json();
        last["user"].get("display_name").is_some().then_some(last)
    })
    .await;
    assert_eq!(named["user"]["display_name"], "Ana Lima");
    let lookups = stack.viber.calls_to(USER_DETAILS_PATH);
    assert_eq!(lookups.len(), 1, "looked up once, then cached: {lookups:?}");
    assert_eq!(lookups[0].body, json!({"id": fx::USER}));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_24_hour_session_sends_go_out_only_when_the_bot_allows_billed_ones() {
    let stack = Stack::start().await;
    let bot = stack.viber_bot(Some(vec!["*"]), json!({})).await;
    // The user's last message was 25 hours ago (Viber's timestamp).
    let ago = chrono::Utc::now().timestamp_millis() - 25 * 3_600_000;
    let (status, _) = stack
        .post_viber(&bot, &fx::at(fx::text(6001, fx::USER, "old"), ago))
        .await;
    assert_eq!(status, 200);
    let user = stack.events_of("message.received", 1).await[0].json()["user"]["id"].clone();
    let hi = json!([{"type": "text", "text": "news!"}]);
    let (status, e) = send(&stack, &bot, &user, hi.clone()).await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["code"], "outside_window");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("Viber's 24-hour session"), "{message}");
    assert!(
        message.contains("platform_settings.viber.send_outside_window"),
        "{message}"
    );

    let (status, e) = patch_bot(
        &stack,
        &bot,
        json!({"platform_settings": {"viber": {"send_outside_window": true}}}),
    )
    .await;
    assert_eq!(status, 204, "{e}");
    let (status, e) = eventually(TIMEOUT, "the setting applied", || async {
        let r = send(&stack, &bot, &user, hi.clone()).await;
        (r.0 != 422).then_some(r)
    })
    .await;
    assert_eq!(status, 202, "{e}");
    stack.events_of("message.sent", 1).await;
    assert_eq!(stack.viber.messages()[0]["text"], "news!");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_the_channel_removes_the_webhook_at_viber_and_enabling_sets_it_again() {
    let stack = Stack::start().await;
    let bot = stack.viber_bot(None, json!({})).await;
    let webhook = stack.viber.webhook(&bot.auth_token).unwrap();
    assert!(webhook.ends_with(&bot.webhook_path), "{webhook}");
    let path = format!("/admin/v1/bots/{}/channels/{}", bot.id, bot.channel_id);
    // The operator sees the setup with the channel, and its removal once disabled.
    let setup = |want: String| {
        let path = path.clone();
        let stack = &stack;
        async move {
            eventually(TIMEOUT, "the setup recorded", || async {
                let (_, v) = stack
                    .call("GET", &path, Some(stack.admin_token()), None)
                    .await;
                (v["setup"]["platform_config"]["webhook"] == want.as_str()
                    && v["setup"]["state"] == "configured")
                    .then_some(v)
            })
            .await
        }
    };
    let shown = setup(webhook.clone()).await;
    assert_eq!(shown["enabled"], true);
    let (status, e) = stack
        .call(
            "PATCH",
            &path,
            Some(stack.admin_token()),
            Some(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 204, "{e}");
    eventually(TIMEOUT, "the webhook removed at Viber", || async {
        (stack.viber.webhook(&bot.auth_token).as_deref() == Some("")).then_some(())
    })
    .await;
    let shown = setup(String::new()).await;
    assert_eq!(shown["enabled"], false, "{shown}");
    let removal = stack.viber.calls_to(SET_WEBHOOK_PATH).pop().unwrap();
    assert_eq!(removal.body, json!({"url": ""}));
    assert_eq!(removal.token.as_deref(), Some(bot.auth_token.as_str()));
    // The disabled channel's webhooks are refused.
    assert_eq!(
        post(&stack, &bot, fx::text(7001, fx::USER, "hi")).await.0,
        404
    );

    let (status, e) = stack
        .call(
            "PATCH",
            &path,
            Some(stack.admin_token()),
            Some(&json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 204, "{e}");
    eventually(TIMEOUT, "the webhook set again", || async {
        (stack.viber.webhook(&bot.auth_token).as_deref() == Some(webhook.as_str())).then_some(())
    })
    .await;
    let other = stack.viber_bot(None, json!({})).await;
    let (status, _) = stack
        .call(
            "PATCH",
            &format!("/admin/v1/bots/{}/channels/{}", bot.id, other.channel_id),
            Some(stack.admin_token()),
            Some(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 404, "another bot's channel");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_kind_arrives_as_its_event_with_viber_s_media_urls() {
    let stack = Stack::start().await;
    let bot = stack
        .viber_bot(Some(vec!["message.received"]), json!({}))
        .await;
    let u = fx::USER;
    let cases = [
        (
            fx::picture(8001, u, "https://dl-media.viber.com/p.jpg", "Look"),
            json!({"type": "image", "url": "https://dl-media.viber.com/p.jpg", "caption": "Look",
                   "filename": "photo.jpg"}),
        ),
        (
            fx::video(8002, u, "https://dl-media.viber.com/v.mp4"),
            json!({"type": "video", "url": "https://dl-media.viber.com/v.mp4",
                   "size_bytes": 2_000_000, "duration_ms": 12_000,
                   "preview_url": "https://dl-media.viber.com/v.mp4"}),
        ),
        (
            fx::file(8003, u, "https://dl-media.viber.com/r.pdf", "r.pdf"),
            json!({"type": "file", "url": "https://dl-media.viber.com/r.pdf", "filename": "r.pdf",
                   "size_bytes": 30_000}),
        ),
        (
            fx::sticker(8004, u, 40100),
            json!({"type": "sticker", "id": "40100"}),
        ),
        (
            fx::contact(8005, u, "Rui", "+351910000002"),
            json!({"type": "text", "text": "Rui\n+351910000002"}),
        ),
        (
            fx::location(8006, u, 38.7, -9.14),
            json!({"type": "location", "latitude": 38.7, "longitude": -9.14}),
        ),
        (
            fx::url(8007, u, "https://example.com/a"),
            json!({"type": "text", "text": "https://example.com/a"}),
        ),
    ];
    for (callback, _) in &cases {
        assert_eq!(post(&stack, &bot, callback.clone()).await.0, 200);
    }
    let events = stack.events_of("message.received", cases.len()).await;
    for (callback, content) in &cases {
        let token = callback["message_token"].to_string();
        let e = events
            .iter()
            .map(Received::json)
            .find(|e| e["message"]["platform_message_id"] == token.as_str())
            .unwrap_or_else(|| panic!("the event of {callback}"));
        let mut got = e["message"]["content"].clone();
        // Media also carry where the bot downloads them (tests/tests/media.rs).
        if let Some(media) = got.as_object_mut()
            && let Some(id) = media.remove("media_id")
        {
            let url = media.remove("download_url").unwrap();
            assert!(
                url.as_str().unwrap().ends_with(id.as_str().unwrap()),
                "{url}"
            );
        }
        assert_eq!(&got, content, "{callback}");
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_and_a_file_with_their_sizes_go_out_as_viber_media() {
    let stack = Stack::start().await;
    let bot = stack.viber_bot(Some(vec!["*"]), json!({})).await;
    let user = user_writes(&stack, &bot, 2001, "the files please").await;
    let (status, body) = send(
        &stack,
        &bot,
        &user,
        json!([
            {"type": "video", "url": "https://cdn.example/clip.mp4", "size_bytes": 5_000_000,
             "duration_ms": 61_500, "preview_url": "https://cdn.example/clip.jpg"},
            {"type": "file", "url": "https://cdn.example/price-list.pdf", "size_bytes": 20_480,
             "caption": "Prices"},
            {"type": "video", "url": "https://cdn.example/other.mp4"}]),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    stack.events_of("message.sent", 3).await;
    let sent: Vec<Value> = stack
        .viber
        .calls_to(SEND_PATH)
        .iter()
        .map(|c| c.body.clone())
        .collect();
    assert_eq!(sent[0]["type"], "video");
    assert_eq!(sent[0]["size"], 5_000_000);
    assert_eq!(sent[0]["duration"], 62);
    assert_eq!(sent[0]["thumbnail"], "https://cdn.example/clip.jpg");
    assert_eq!(sent[1]["type"], "file");
    assert_eq!(sent[1]["file_name"], "price-list.pdf");
    assert_eq!(sent[1]["size"], 20_480);
    assert_eq!(sent[2]["type"], "text", "the caption follows the file");
    assert_eq!(sent[2]["text"], "Prices");
    // Without its size a video is a link, as before.
    assert_eq!(sent[3]["type"], "url");
    assert_eq!(sent[3]["media"], "https://cdn.example/other.mp4");
}
