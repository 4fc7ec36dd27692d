//! WeChat Official Accounts end to end: the server configuration's handshake, signed webhooks
//! in the three message modes (plaintext, compatible, safe), retries collapsed, a signed event
//! at the tenant, inline and API replies through the customer-service API with the shared
//! access token, the 48-hour window with template messages outside it and their outcome
//! (`TEMPLATESENDJOBFINISH`) as receipts, and WeChat's errors explained.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::Utc;
use patchbay_contract::subjects::Stream;
use patchbay_testkit::tenant::verify_standard_webhook;
use patchbay_testkit::wechat::{CUSTOM_SEND_PATH, TEMPLATE_SEND_PATH};
use patchbay_tests::{Options, Stack, TIMEOUT, WechatMode, eventually};
use patchbay_wechat::fixtures as fx;
use reqwest::StatusCode;
use serde_json::json;

/// The tenant answers every text message with an inline reply.
fn reply_with_echo(stack: &Stack) {
    stack.tenant.respond_with(|r| {
        let e = r.json();
        match e["message"]["content"]["text"].as_str() {
            Some(t) if e["type"] == "message.received" => (
                StatusCode::OK,
                Some(json!({"messages": [{"type": "text", "text": format!("echo: {t}")}]})),
            ),
            _ => (StatusCode::OK, None),
        }
    });
}

/// A text message from `openid` now (the window counts from `CreateTime`).
fn text_now(openid: &str, msg_id: i64, text: &str) -> String {
    fx::text(openid, msg_id, text).replace(
        &format!("<CreateTime>{}</CreateTime>", fx::TIME),
        &format!("<CreateTime>{}</CreateTime>", Utc::now().timestamp()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_needs_the_token_and_bad_signatures_publish_nothing() {
    let stack = Stack::start().await;
    let bot = stack.wechat_bot(None).await;
    assert_eq!(
        stack.wechat_handshake(&bot, &bot.token).await,
        (200, "5838479218127813673".to_owned())
    );
    assert_eq!(stack.wechat_handshake(&bot, "notthetoken").await.0, 403);

    let xml = text_now(fx::OPENID, 1, "hi");
    for mode in [WechatMode::Plain, WechatMode::Compatible, WechatMode::Safe] {
        let (status, _) = stack.post_wechat(&bot, "notthetoken", mode, &xml).await;
        assert_eq!(status, 401, "{mode:?}");
    }
    assert_eq!(
        stack.stream_state(Stream::Ingress).await,
        (0, 0),
        "nothing stored"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_in_every_mode_reach_the_tenant_once_and_inline_replies_go_out() {
    let stack = Stack::start().await;
    reply_with_echo(&stack);
    let bot = stack.wechat_bot(Some(vec!["*"])).await;
    stack.wechat.add_follower(&bot.app_id, fx::OPENID);

    let modes = [
        (WechatMode::Plain, "plain"),
        (WechatMode::Compatible, "compatible"),
        (WechatMode::Safe, "safe"),
    ];
    for (i, (mode, text)) in modes.iter().enumerate() {
        let xml = text_now(fx::OPENID, 100 + i as i64, text);
        // WeChat posts again when it gets no answer in time: the retry collapses.
        for _ in 0..2 {
            assert_eq!(
                stack.post_wechat(&bot, &bot.token, *mode, &xml).await,
                (200, "success".to_owned()),
                "{text}"
            );
        }
    }
    let events = stack.events_of("message.received", 3).await;
    let texts: Vec<_> = events
        .iter()
        .map(|r| r.json()["message"]["content"]["text"].clone())
        .collect();
    assert_eq!(texts, [json!("plain"), json!("compatible"), json!("safe")]);
    for r in &events {
        verify_standard_webhook(&bot.webhook_secret, r).unwrap();
        let e = r.json();
        assert_eq!(e["channel"]["platform"], "wechat");
        assert_eq!(e["user"]["platform_user_id"], fx::OPENID);
        assert_eq!(e["bot_id"], bot.id.as_str());
        // The follower's language from user/info; WeChat tells no names.
        assert_eq!(e["user"]["locale"], "zh_CN", "{e}");
        assert!(e["user"].get("display_name").is_none(), "{e}");
    }

    // Each inline reply went out through the customer-service API, to the user, with the one
    // shared token.
    let sends = stack.wechat.wait_for(CUSTOM_SEND_PATH, 3, TIMEOUT).await;
    let replies: Vec<_> = sends
        .iter()
        .map(|c| (c.body["touser"].clone(), c.body["text"]["content"].clone()))
        .collect();
    assert_eq!(
        replies,
        [
            (json!(fx::OPENID), json!("echo: plain")),
            (json!(fx::OPENID), json!("echo: compatible")),
            (json!(fx::OPENID), json!("echo: safe")),
        ]
    );
    assert!(sends.iter().all(|c| c.errcode == 0), "{sends:?}");
    // One access token for the ingress's profile lookups and the sender's calls alike.
    assert_eq!(stack.wechat.token_fetches(&bot.app_id), 1);
    assert!(!stack.wechat.calls_to("/cgi-bin/user/info").is_empty());
    let sent = stack.events_of("message.sent", 3).await;
    assert!(
        sent.iter()
            .all(|r| r.json()["channel"]["platform"] == "wechat")
    );
    // Exactly one event per message: the retries were collapsed before the router.
    assert_eq!(stack.stream_state(Stream::Dispatch).await.1, 6);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_with_a_scene_unfollows_and_menu_taps_are_events() {
    let stack = Stack::start().await;
    let bot = stack.wechat_bot(None).await;
    let now = Utc::now().timestamp();
    for xml in [
        fx::event(fx::OPENID, now, "subscribe", Some("qrscene_spring")),
        fx::event(fx::OPENID, now + 1, "CLICK", Some("MENU_HELP")),
        fx::event(fx::OPENID, now + 2, "unsubscribe", None),
    ] {
        assert_eq!(
            stack
                .post_wechat(&bot, &bot.token, WechatMode::Safe, &xml)
                .await
                .0,
            200
        );
    }
    let subscribed = stack.events_of("user.subscribed", 1).await[0].json();
    assert_eq!(subscribed["ref"], "spring", "{subscribed}");
    let tap = stack.events_of("message.received", 1).await[0].json();
    assert_eq!(
        tap["message"]["content"],
        json!({"type": "postback", "payload": "MENU_HELP"})
    );
    stack.events_of("user.unsubscribed", 1).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_48_hours_only_templates_go_out_and_their_outcome_comes_back() {
    let stack = Stack::start().await;
    let bot = stack.wechat_bot(Some(vec!["*"])).await;
    stack.wechat.add_follower(&bot.app_id, fx::OPENID);
    stack.wechat.add_template(&bot.app_id, "order_ready");
    // The user last wrote three days ago.
    let three_days_ago = Utc::now().timestamp() - 3 * 86_400;
    let old = fx::text(fx::OPENID, 7, "hello").replace(
        &format!("<CreateTime>{}</CreateTime>", fx::TIME),
        &format!("<CreateTime>{three_days_ago}</CreateTime>"),
    );
    assert_eq!(
        stack
            .post_wechat(&bot, &bot.token, WechatMode::Plain, &old)
            .await
            .0,
        200
    );
    let received = stack.events_of("message.received", 1).await[0].json();
    let user = received["user"]["id"].clone();

    // Free-form: refused before any call to WeChat.
    let (status, body) = stack
        .call(
            "POST",
            "/v1/messages",
            Some(&bot.api_key),
            Some(&json!({"user_id": user, "messages": [{"type": "text", "text": "late"}]})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "outside_window");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WeChat's 48-hour customer-service window"),
        "{body}"
    );

    // A template message goes out through the template API; its msgid comes back.
    let template = json!({"type": "template", "name": "order_ready", "language": "zh_CN",
        "components": [{"type": "body", "parameters": [
            {"type": "text", "text": "A-17", "parameter_name": "order"}]}]});
    let (status, body) = stack
        .call(
            "POST",
            "/v1/messages",
            Some(&bot.api_key),
            Some(&json!({"user_id": user, "messages": [template]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let calls = stack.wechat.wait_for(TEMPLATE_SEND_PATH, 1, TIMEOUT).await;
    assert_eq!(calls[0].body["template_id"], "order_ready");
    assert_eq!(calls[0].body["touser"], fx::OPENID);
    assert_eq!(calls[0].body["data"]["order"]["value"], "A-17");
    let sent = stack.events_of("message.sent", 1).await[0].json();
    let msgid = sent["message"]["platform_message_id"]
        .as_str()
        .expect("the template's msgid")
        .to_owned();
    assert!(stack.wechat.calls_to(CUSTOM_SEND_PATH).is_empty());

    // WeChat reports the template's outcome: message.delivered for that message.
    let finished = fx::template_finished(
        fx::OPENID,
        Utc::now().timestamp(),
        msgid.parse().unwrap(),
        "success",
    );
    assert_eq!(
        stack
            .post_wechat(&bot, &bot.token, WechatMode::Plain, &finished)
            .await
            .0,
        200
    );
    let delivered = stack.events_of("message.delivered", 1).await[0].json();
    assert_eq!(delivered["message"]["id"], sent["message"]["id"]);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_errors_become_message_failed_with_their_code() {
    let stack = Stack::start().await;
    let bot = stack.wechat_bot(Some(vec!["*"])).await;
    // The user writes, then unfollows on WeChat's side: the send answers 43004.
    let xml = text_now(fx::OPENID, 9, "hi");
    assert_eq!(
        stack
            .post_wechat(&bot, &bot.token, WechatMode::Plain, &xml)
            .await
            .0,
        200
    );
    let user = stack.events_of("message.received", 1).await[0].json()["user"]["id"].clone();
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
    assert_eq!(failed["error"]["platform_code"], 43004, "{failed}");
    let calls = stack.wechat.calls_to(CUSTOM_SEND_PATH);
    assert_eq!(calls.len(), 1, "not retried: {calls:?}");
    eventually(TIMEOUT, "nothing left to send", || async {
        (stack.stream_state(Stream::Outbound).await.0 == 0).then_some(())
    })
    .await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_messages_per_user_message_then_refused_before_any_call() {
    let stack = Stack::start().await;
    let bot = stack.wechat_bot(Some(vec!["*"])).await;
    stack.wechat.add_follower(&bot.app_id, fx::OPENID);
    let xml = text_now(fx::OPENID, 11, "hi");
    assert_eq!(
        stack
            .post_wechat(&bot, &bot.token, WechatMode::Plain, &xml)
            .await
            .0,
        200
    );
    let user = stack.events_of("message.received", 1).await[0].json()["user"]["id"].clone();
    let six: Vec<_> = (1..=6)
        .map(|n| json!({"type": "text", "text": format!("m{n}")}))
        .collect();
    let (status, body) = stack
        .call(
            "POST",
            "/v1/messages",
            Some(&bot.api_key),
            Some(&json!({"user_id": user, "messages": six})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let failed = stack.events_of("message.failed", 1).await[0].json();
    assert_eq!(failed["error"]["code"], "rate_limited", "{failed}");
    assert_eq!(failed["message"]["id"], body["message_ids"][5], "{failed}");
    stack.events_of("message.sent", 5).await;
    let texts: Vec<_> = stack
        .wechat
        .calls_to(CUSTOM_SEND_PATH)
        .iter()
        .map(|c| c.body["text"]["content"].clone())
        .collect();
    assert_eq!(
        texts,
        ["m1", "m2", "m3", "m4", "m5"].map(|t| json!(t)),
        "the sixth never reached WeChat"
    );

    // The user writes again: five more.
    let again = text_now(fx::OPENID, 12, "again");
    assert_eq!(
        stack
            .post_wechat(&bot, &bot.token, WechatMode::Plain, &again)
            .await
            .0,
        200
    );
    stack.events_of("message.received", 2).await;
    let (status, body) = stack
        .call(
            "POST",
            "/v1/messages",
            Some(&bot.api_key),
            Some(&json!({"user_id": user, "messages": [{"type": "text", "text": "m7"}]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    stack.events_of("message.sent", 6).await;
    assert_eq!(stack.wechat.calls_to(CUSTOM_SEND_PATH).len(), 6);
    stack.shutdown().await;
}

/// An account without the customer-service API (an unverified subscription account) answers
/// inline: the webhook's response is the bot's reply as passive-reply XML, encrypted in safe
/// mode; a reply too late, or not a reply, fails and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_customer_service_api_the_bot_answers_inline_within_five_seconds() {
    // The tenant may take longer than WeChat waits: its callback does not time out first.
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| c.webhook_timeout_ms = 15_000),
        ..Options::default()
    })
    .await;
    reply_with_echo(&stack);
    let bot = stack.wechat_bot_with(Some(vec!["*"]), false).await;

    let (status, answer) = stack
        .post_wechat(
            &bot,
            &bot.token,
            WechatMode::Plain,
            &text_now(fx::OPENID, 21, "plain"),
        )
        .await;
    assert_eq!(status, 200);
    let reply = patchbay_wechat::inbound::fields(&answer).unwrap();
    assert_eq!(reply["MsgType"], "text", "{answer}");
    assert_eq!(reply["Content"], "echo: plain");
    assert_eq!(reply["ToUserName"], fx::OPENID);
    assert_eq!(reply["FromUserName"], fx::OA);

    // Safe mode: the reply is encrypted and signed like WeChat's own messages.
    let (status, answer) = stack
        .post_wechat(
            &bot,
            &bot.token,
            WechatMode::Safe,
            &text_now(fx::OPENID, 22, "secret"),
        )
        .await;
    assert_eq!(status, 200);
    let wrapper = patchbay_wechat::inbound::fields(&answer).unwrap();
    assert!(
        patchbay_wechat::crypto::signature_matches(
            &wrapper["MsgSignature"],
            &[
                &bot.token,
                &wrapper["TimeStamp"],
                &wrapper["Nonce"],
                &wrapper["Encrypt"]
            ]
        ),
        "{answer}"
    );
    let key = patchbay_wechat::crypto::AesKey::from_encoding_aes_key(fx::AES_KEY).unwrap();
    let inner = patchbay_wechat::crypto::decrypt(&key, &bot.app_id, &wrapper["Encrypt"]).unwrap();
    assert_eq!(
        patchbay_wechat::inbound::fields(&inner).unwrap()["Content"],
        "echo: secret"
    );
    assert!(
        stack.wechat.calls_to(CUSTOM_SEND_PATH).is_empty(),
        "no API call"
    );
    stack.events_of("message.sent", 2).await;

    // A message that answers nothing inline cannot go out, and says why.
    let user = stack.events_of("message.received", 1).await[0].json()["user"]["id"].clone();
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
    assert_eq!(failed["error"]["code"], "outside_window", "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("five-second passive-reply window"),
        "{failed}"
    );

    // A tenant slower than WeChat's deadline: the webhook is answered without a reply, and
    // the late reply fails.
    stack.tenant.set_delay(std::time::Duration::from_secs(6));
    let (status, answer) = stack
        .post_wechat(
            &bot,
            &bot.token,
            WechatMode::Plain,
            &text_now(fx::OPENID, 23, "slow"),
        )
        .await;
    assert_eq!((status, answer.as_str()), (200, "success"));
    let failed = stack.events_of("message.failed", 2).await;
    assert_eq!(failed[1].json()["error"]["code"], "outside_window");
    stack.shutdown().await;
}
