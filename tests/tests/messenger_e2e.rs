//! Facebook Messenger end to end through every service, on real NATS and PostgreSQL, with a
//! fake Graph API and webhooks signed as Meta signs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_contract::subjects::Stream;
use patchbay_messenger::fixtures as fx;
use patchbay_testkit::graph::Failure;
use patchbay_testkit::tenant::verify_standard_webhook;
use patchbay_tests::{Stack, TIMEOUT};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "meta-app-secret";

fn reply_with_echo(stack: &Stack) {
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
}

/// `event` stamped now: windows count from the user's last message, so a fixture's fixed date
/// would find Messenger's 24-hour window long closed.
fn now(mut event: serde_json::Value) -> serde_json::Value {
    event["timestamp"] = json!(chrono::Utc::now().timestamp_millis());
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_in_signed_event_out_inline_reply_to_the_send_api_and_receipts_back() {
    let stack = Stack::start().await;
    let bot = stack
        .messenger_bot(fx::PAGE_ID, SECRET, Some(vec!["message.*"]))
        .await;
    reply_with_echo(&stack);
    stack.graph.set_profile(
        fx::PSID,
        json!({"first_name": "Ana", "last_name": "Lima", "profile_pic": "https://cdn.example/ana.jpg"}),
    );
    let post = fx::post(&[(
        fx::PAGE_ID,
        vec![now(fx::text(fx::PSID, "m_in_1", "hello"))],
    )]);
    assert_eq!(
        stack
            .post_meta("messenger", &bot.webhook_path, Some(SECRET), &post)
            .await,
        200
    );

    let got = stack.events_of("message.received", 1).await;
    verify_standard_webhook(&bot.webhook_secret, &got[0]).expect("signed with the bot's secret");
    let event = got[0].json();
    assert_eq!(event["bot_id"], bot.id);
    assert_eq!(
        event["channel"],
        json!({"id": bot.channel_id, "platform": "messenger"})
    );
    assert_eq!(event["user"]["platform_user_id"], fx::PSID);
    assert_eq!(
        event["user"]["display_name"], "Ana Lima",
        "from the user profile API"
    );
    let lookups: Vec<_> = stack
        .graph
        .calls()
        .into_iter()
        .filter(|c| c.method == "GET")
        .collect();
    assert_eq!(lookups.len(), 1);
    assert_eq!(lookups[0].id, fx::PSID);
    assert_eq!(lookups[0].token.as_deref(), Some(bot.token.as_str()));
    assert_eq!(
        lookups[0].query["fields"],
        "first_name,last_name,profile_pic"
    );
    let (status, user) = stack
        .call(
            "GET",
            &format!("/v1/users/{}", event["user"]["id"].as_str().unwrap()),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["avatar_url"], "https://cdn.example/ana.jpg");
    assert_eq!(event["message"]["platform_message_id"], "m_in_1");
    assert_eq!(
        event["message"]["content"],
        json!({"type": "text", "text": "hello"})
    );

    let calls = stack.graph.wait_for_sends(fx::PAGE_ID, 1, TIMEOUT).await;
    assert_eq!(calls[0].token.as_deref(), Some(bot.token.as_str()));
    assert_eq!(
        calls[0].body,
        json!({"recipient": {"id": fx::PSID}, "messaging_type": "RESPONSE",
               "message": {"text": "you said: hello"}})
    );
    let sent = stack.events_of("message.sent", 1).await[0].json();
    assert_eq!(sent["message"]["platform_message_id"], "m_out_1");

    // Receipts find the message by the id the Send API gave it.
    let delivery = fx::post(&[(fx::PAGE_ID, vec![fx::delivery(fx::PSID, &["m_out_1"], 1)])]);
    assert_eq!(
        stack
            .post_meta("messenger", &bot.webhook_path, Some(SECRET), &delivery)
            .await,
        200
    );
    let delivered = stack.events_of("message.delivered", 1).await[0].json();
    assert_eq!(delivered["message"]["id"], sent["message"]["id"]);
    assert_eq!(delivered["user"]["id"], event["user"]["id"]);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let read = fx::post(&[(fx::PAGE_ID, vec![fx::read(fx::PSID, now_ms)])]);
    assert_eq!(
        stack
            .post_meta("messenger", &bot.webhook_path, Some(SECRET), &read)
            .await,
        200
    );
    let read = stack.events_of("message.read", 1).await[0].json();
    assert_eq!(read["message"]["id"], sent["message"]["id"]);
    let again = fx::post(&[(
        fx::PAGE_ID,
        vec![now(fx::text(fx::PSID, "m_in_2", "again"))],
    )]);
    assert_eq!(
        stack
            .post_meta("messenger", &bot.webhook_path, Some(SECRET), &again)
            .await,
        200
    );
    let second = stack.events_of("message.received", 2).await[1].json();
    assert_eq!(second["user"]["display_name"], "Ana Lima");
    assert_eq!(
        stack
            .graph
            .calls()
            .iter()
            .filter(|c| c.method == "GET")
            .count(),
        1,
        "the profile is cached"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_refused_and_the_handshake_needs_the_verify_token() {
    // The Meta ingress is one generic service for Messenger and WhatsApp: this test stands for
    // both (each adapter's unit test shows it reads its own app secret and verify token).
    let stack = Stack::start().await;
    let bot = stack.messenger_bot(fx::PAGE_ID, SECRET, None).await;
    let post = fx::post(&[(fx::PAGE_ID, vec![now(fx::text(fx::PSID, "m_1", "hi"))])]);
    for secret in [Some("wrong-secret"), None] {
        assert_eq!(
            stack
                .post_meta("messenger", &bot.webhook_path, secret, &post)
                .await,
            401
        );
        assert_eq!(
            stack
                .post_meta("messenger", "/webhooks/messenger", secret, &post)
                .await,
            401
        );
    }
    assert_eq!(
        stack.stream_state(Stream::Ingress).await,
        (0, 0),
        "nothing stored"
    );

    for path in [bot.webhook_path.as_str(), "/webhooks/messenger"] {
        assert_eq!(
            stack
                .meta_handshake("messenger", path, &bot.verify_token)
                .await,
            (200, "1158201444".to_owned()),
            "{path}"
        );
        assert_eq!(
            stack
                .meta_handshake("messenger", path, "not-the-token")
                .await
                .0,
            403,
            "{path}"
        );
    }
    // The operator sees that the handshake happened, and no event: none was signed.
    let path = format!("/admin/v1/bots/{}/channels/{}", bot.id, bot.channel_id);
    let activity = patchbay_tests::eventually(TIMEOUT, "the handshake recorded", || async {
        let (_, channel) = stack
            .call("get", &path, Some(stack.admin_token()), None)
            .await;
        channel["activity"]["handshake_at"]
            .is_string()
            .then(|| channel["activity"].clone())
    })
    .await;
    assert!(activity.get("last_event_at").is_none(), "{activity}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_post_for_several_pages_reaches_each_bot_and_unknown_pages_are_dropped() {
    let stack = Stack::start().await;
    let a = stack.messenger_bot(fx::PAGE_ID, SECRET, None).await;
    let b = stack.messenger_bot("106100000000002", SECRET, None).await;
    let post = fx::post(&[
        (fx::PAGE_ID, vec![now(fx::text("1001", "m_a", "for a"))]),
        (
            "106100000000002",
            vec![now(fx::text("1002", "m_b", "for b"))],
        ),
        (
            "106100000000099",
            vec![now(fx::text("1003", "m_c", "for nobody"))],
        ),
    ]);
    // The per-app URL routes by Page id.
    assert_eq!(
        stack
            .post_meta("messenger", "/webhooks/messenger", Some(SECRET), &post)
            .await,
        200
    );
    let got = stack.events_of("message.received", 2).await;
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let e = r.json();
            (
                e["bot_id"].as_str().unwrap().to_owned(),
                e["message"]["content"]["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (a.id.clone(), "for a".to_owned()),
        (b.id.clone(), "for b".to_owned()),
    ];
    expected.sort();
    assert_eq!(seen, expected);

    // A bot's own URL routes another Page's entry to that Page's channel too.
    let post = fx::post(&[(
        "106100000000002",
        vec![now(fx::text("1002", "m_b2", "again b"))],
    )]);
    assert_eq!(
        stack
            .post_meta("messenger", &a.webhook_path, Some(SECRET), &post)
            .await,
        200
    );
    let got = stack.events_of("message.received", 3).await;
    let last = got
        .iter()
        .map(|r| r.json())
        .find(|e| e["message"]["content"]["text"] == "again b")
        .unwrap();
    assert_eq!(last["bot_id"], b.id);
    stack.router_idle().await;
    assert_eq!(
        stack.tenant.received().len(),
        3,
        "the unknown Page's entry was dropped"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_agents_send_with_the_tag_and_platform_errors_are_explained() {
    let stack = Stack::start().await;
    let bot = stack
        .messenger_bot(fx::PAGE_ID, SECRET, Some(vec!["message.*"]))
        .await;
    let post = fx::post(&[(
        fx::PAGE_ID,
        vec![now(fx::postback(fx::PSID, "m_pb", "Start", "GET_STARTED"))],
    )]);
    assert_eq!(
        stack
            .post_meta("messenger", &bot.webhook_path, Some(SECRET), &post)
            .await,
        200
    );
    let event = stack.events_of("message.received", 1).await[0].json();
    assert_eq!(
        event["message"]["content"],
        json!({"type": "postback", "payload": "GET_STARTED", "title": "Start"})
    );
    let user_id = event["user"]["id"].as_str().unwrap().to_owned();

    // A human agent's message, published on the send subject as any NATS client may.
    let subject = patchbay_contract::Subjects::new(&stack.config.nats_prefix)
        .unwrap()
        .send(&bot.id)
        .unwrap();
    let command = json!({"v": 1, "id": "human-1", "user_id": user_id, "source": "human",
                         "messages": [{"type": "quick_replies", "text": "Colour?",
                                       "replies": [{"title": "Red", "payload": "RED"}]}]});
    let js = async_nats::jetstream::new(stack.raw_nats().await);
    js.publish(subject, serde_json::to_vec(&command).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let calls = stack.graph.wait_for_sends(fx::PAGE_ID, 1, TIMEOUT).await;
    assert_eq!(
        calls[0].body,
        json!({"recipient": {"id": fx::PSID}, "messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT",
               "message": {"text": "Colour?", "quick_replies": [
                   {"content_type": "text", "title": "Red", "payload": "RED"}]}})
    );

    // Meta refuses the next one: outside the messaging window.
    stack.graph.fail_next([Failure::graph(
        400,
        10,
        Some(2018278),
        "(#10) This message is sent outside of allowed window.",
    )]);
    let (status, body) = stack
        .post(
            &format!("{}/v1/messages", stack.api_url()),
            &bot.api_key,
            &json!({"user_id": user_id, "messages": [{"type": "text", "text": "late"}]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let failed = stack.events_of("message.failed", 1).await[0].json();
    assert_eq!(failed["message"]["id"], body["message_ids"][0]);
    assert_eq!(failed["error"]["code"], "outside_window");
    assert_eq!(failed["error"]["platform_code"], 10);
    let texts: Vec<Value> = stack
        .graph
        .sends(fx::PAGE_ID)
        .iter()
        .map(|c| c.body["message"]["text"].clone())
        .collect();
    assert_eq!(texts, vec![json!("Colour?"), json!("late")], "not retried");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_for_messages_patchbay_did_not_send_hold_nothing_up_and_are_dropped() {
    let stack = Stack::start().await;
    let bot = stack
        .messenger_bot(fx::PAGE_ID, SECRET, Some(vec!["message.*"]))
        .await;
    // A delivery report for a message the Page sent from its inbox, stamped now: the router
    // waits a few seconds for a `message.sent` that never comes...
    let mut receipt = fx::delivery(fx::PSID, &["m_from_the_inbox"], 1);
    receipt["timestamp"] = json!(chrono::Utc::now().timestamp_millis());
    let post = fx::post(&[(fx::PAGE_ID, vec![receipt])]);
    assert_eq!(
        stack
            .post_meta("messenger", &bot.webhook_path, Some(SECRET), &post)
            .await,
        200
    );
    // ...without holding up the user's next message.
    let post = fx::post(&[(fx::PAGE_ID, vec![now(fx::text(fx::PSID, "m_next", "next"))])]);
    assert_eq!(
        stack
            .post_meta("messenger", &bot.webhook_path, Some(SECRET), &post)
            .await,
        200
    );
    stack.events_of("message.received", 1).await;
    let (held, _) = stack.stream_state(Stream::Inbound).await;
    assert_eq!(
        held, 1,
        "the receipt is still waiting while the message went through"
    );
    // Then it is dropped: no event, no dead letter. Once the router took every inbound event,
    // everything it will ever dispatch is in the dispatch stream: the message's event alone.
    stack.router_idle().await;
    assert_eq!(
        stack.stream_state(Stream::Dispatch).await.1,
        1,
        "only the message was dispatched"
    );
    assert!(
        stack
            .tenant
            .received()
            .iter()
            .all(|r| r.json()["type"] == "message.received")
    );
    assert_eq!(stack.stream_state(Stream::Dlq).await.0, 0);
    stack.shutdown().await;
}
