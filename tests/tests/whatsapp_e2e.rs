//! WhatsApp Cloud API end to end through every service, on real NATS and PostgreSQL, with a
//! fake Graph API and webhooks signed as Meta signs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_contract::subjects::Stream;
use patchbay_testkit::tenant::verify_standard_webhook;
use patchbay_tests::{Stack, TIMEOUT};
use patchbay_whatsapp::fixtures as fx;
use reqwest::StatusCode;
use serde_json::json;

const SECRET: &str = "wa-app-secret";

/// A `statuses` value for `wamid` stamped now (older reports of unknown messages are not
/// waited for).
fn status_now(wamid: &str, status: &str) -> serde_json::Value {
    let mut v = fx::status(wamid, status);
    v["statuses"][0]["timestamp"] = json!(chrono::Utc::now().timestamp().to_string());
    v
}

/// A `messages` value stamped now: windows count from the user's last message, so a fixture's
/// fixed date would find WhatsApp's 24-hour window long closed.
fn now(mut value: serde_json::Value) -> serde_json::Value {
    let ts = chrono::Utc::now().timestamp().to_string();
    if let Some(messages) = value["messages"].as_array_mut() {
        for m in messages {
            m["timestamp"] = json!(ts);
        }
    }
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_in_signed_event_out_reply_buttons_to_the_cloud_api_and_statuses_back() {
    let stack = Stack::start().await;
    let bot = stack
        .whatsapp_bot(fx::PHONE_NUMBER_ID, SECRET, Some(vec!["message.*"]))
        .await;
    stack.tenant.respond_with(|r| {
        if r.json()["type"] == "message.received" {
            (
                StatusCode::OK,
                Some(
                    json!([{"type": "buttons", "text": "Confirm the order?", "buttons": [
                    {"type": "postback", "title": "Confirm", "payload": "confirm"},
                    {"type": "reply", "title": "Cancel"}]}]),
                ),
            )
        } else {
            (StatusCode::OK, None)
        }
    });
    let post = fx::post(&[(
        fx::PHONE_NUMBER_ID,
        now(fx::from_user(fx::text("wamid.IN1", "hello"))),
    )]);
    assert_eq!(
        stack
            .post_meta("whatsapp", &bot.webhook_path, Some(SECRET), &post)
            .await,
        200
    );
    let got = stack.events_of("message.received", 1).await;
    verify_standard_webhook(&bot.webhook_secret, &got[0]).expect("signed with the bot's secret");
    let event = got[0].json();
    assert_eq!(
        event["channel"],
        json!({"id": bot.channel_id, "platform": "whatsapp"})
    );
    assert_eq!(event["user"]["platform_user_id"], fx::BSUID);
    assert_eq!(event["user"]["display_name"], "Ana");
    assert_eq!(event["message"]["platform_message_id"], "wamid.IN1");

    let calls = stack
        .graph
        .wait_for_sends(fx::PHONE_NUMBER_ID, 1, TIMEOUT)
        .await;
    assert_eq!(calls[0].token.as_deref(), Some(bot.token.as_str()));
    assert_eq!(
        calls[0].body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": fx::WA_ID,
               "type": "interactive", "interactive": {"type": "button",
                 "body": {"text": "Confirm the order?"},
                 "action": {"buttons": [
                     {"type": "reply", "reply": {"id": "confirm", "title": "Confirm"}},
                     {"type": "reply", "reply": {"id": "Cancel", "title": "Cancel"}}]}}})
    );
    let sent = stack.events_of("message.sent", 1).await[0].json();
    assert_eq!(sent["message"]["platform_message_id"], "wamid.OUT1");
    // The tenant's inline reply: events about it say so.
    assert_eq!(sent["message"]["source"], "inline");
    assert!(sent["message"].get("source_id").is_none(), "{sent}");

    // The tap comes back as a postback; statuses find the sent message by its wamid.
    let tap = fx::post(&[(
        fx::PHONE_NUMBER_ID,
        now(fx::from_user(fx::button_reply(
            "wamid.IN2",
            "wamid.OUT1",
            "confirm",
            "Confirm",
        ))),
    )]);
    let mut statuses = status_now("wamid.OUT1", "delivered");
    statuses["statuses"]
        .as_array_mut()
        .unwrap()
        .push(status_now("wamid.OUT1", "read")["statuses"][0].clone());
    let both = fx::post(&[(fx::PHONE_NUMBER_ID, statuses)]);
    for body in [&tap, &both] {
        assert_eq!(
            stack
                .post_meta("whatsapp", &bot.webhook_path, Some(SECRET), body)
                .await,
            200
        );
    }
    let received = stack.events_of("message.received", 2).await;
    assert_eq!(
        received[1].json()["message"]["content"],
        json!({"type": "postback", "payload": "confirm", "title": "Confirm"})
    );
    let read = stack.events_of("message.read", 1).await[0].json();
    assert_eq!(read["message"]["id"], sent["message"]["id"]);
    assert_eq!(read["user"]["id"], event["user"]["id"]);
    assert_eq!(read["message"]["source"], "inline");
    // The user's own message has no source.
    assert!(received[1].json()["message"].get("source").is_none());
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_go_out_and_failed_statuses_become_message_failed() {
    let stack = Stack::start().await;
    let bot = stack
        .whatsapp_bot(fx::PHONE_NUMBER_ID, SECRET, Some(vec!["message.*"]))
        .await;
    let post = fx::post(&[(
        fx::PHONE_NUMBER_ID,
        now(fx::from_user(fx::text("wamid.IN1", "hi"))),
    )]);
    assert_eq!(
        stack
            .post_meta("whatsapp", &bot.webhook_path, Some(SECRET), &post)
            .await,
        200
    );
    let user_id = stack.events_of("message.received", 1).await[0].json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{}/v1/messages", stack.api_url());
    // Sent as part of a broadcast: every event about the message names it.
    let (status, body) = stack
        .post(&url, &bot.api_key, &json!({"user_id": user_id,
            "source": "broadcast", "source_id": "brd_spring", "messages": [{
            "type": "template", "name": "order_ready", "language": "en_US", "components": [
                {"type": "body", "parameters": [{"type": "text", "parameter_name": "order_no", "text": "A-17"}]}]}]}))
        .await;
    assert_eq!(status, 202, "{body}");
    let calls = stack
        .graph
        .wait_for_sends(fx::PHONE_NUMBER_ID, 1, TIMEOUT)
        .await;
    assert_eq!(
        calls[0].body["template"],
        json!({"name": "order_ready", "language": {"code": "en_US"}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "A-17", "parameter_name": "order_no"}]}]})
    );
    let sent = stack.events_of("message.sent", 1).await[0].json();
    assert_eq!(sent["message"]["id"], body["message_ids"][0]);
    assert_eq!(sent["message"]["source"], "broadcast");
    assert_eq!(sent["message"]["source_id"], "brd_spring");

    // A template error names the field at fault before anything is sent.
    let (status, bad) = stack
        .post(
            &url,
            &bot.api_key,
            &json!({"user_id": user_id, "messages": [{
            "type": "template", "name": "order_ready", "language": "en_US",
            "components": [{"type": "button", "index": 0}]}]}),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    let message = bad["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("messages[0]") && message.contains("sub_type"),
        "{message}"
    );

    // Meta accepted the message but reports it failed later.
    let mut failed = fx::failed("wamid.OUT1", 131047, "Re-engagement message");
    failed["statuses"][0]["timestamp"] = json!(chrono::Utc::now().timestamp().to_string());
    assert_eq!(
        stack
            .post_meta(
                "whatsapp",
                &bot.webhook_path,
                Some(SECRET),
                &fx::post(&[(fx::PHONE_NUMBER_ID, failed)])
            )
            .await,
        200
    );
    let failed = stack.events_of("message.failed", 1).await[0].json();
    assert_eq!(failed["message"]["id"], body["message_ids"][0]);
    assert_eq!(failed["error"]["code"], "outside_window");
    assert_eq!(failed["error"]["platform_code"], 131047);
    // The failure came from Meta's status webhook: the source is the stored message's.
    assert_eq!(failed["message"]["source"], "broadcast");
    assert_eq!(failed["message"]["source_id"], "brd_spring");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_url_routes_a_signed_post_by_phone_number_id() {
    // Refusals (bad or missing signature, wrong verify token) are the generic Meta ingress,
    // shared with Messenger and tested once in messenger_e2e.rs.
    let stack = Stack::start().await;
    let bot = stack.whatsapp_bot(fx::PHONE_NUMBER_ID, SECRET, None).await;
    let post = fx::post(&[(
        fx::PHONE_NUMBER_ID,
        now(fx::from_user(fx::text("wamid.X", "hi"))),
    )]);
    // Signed right, through the per-app URL: routed by phone_number_id.
    assert_eq!(
        stack
            .post_meta("whatsapp", "/webhooks/whatsapp", Some(SECRET), &post)
            .await,
        200
    );
    assert_eq!(
        stack.events_of("message.received", 1).await[0].json()["bot_id"],
        bot.id
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_are_refused_or_dead_lettered_with_the_reason() {
    use futures::StreamExt;
    let stack = Stack::start().await;
    let bot = stack.whatsapp_bot(fx::PHONE_NUMBER_ID, SECRET, None).await;
    // Not a WhatsApp webhook at all: 400, nothing stored.
    let not_whatsapp = json!({"object": "page", "entry": []});
    assert_eq!(
        stack
            .post_meta("whatsapp", &bot.webhook_path, Some(SECRET), &not_whatsapp)
            .await,
        400
    );
    assert_eq!(stack.stream_state(Stream::Ingress).await, (0, 0));
    // Split can cut it, but the message cannot be read: dead-lettered with the reason, and
    // the next message flows on.
    let mut bad = fx::text("wamid.BAD", "x");
    bad["type"] = json!(7);
    let body = fx::post(&[(fx::PHONE_NUMBER_ID, now(fx::from_user(bad)))]);
    assert_eq!(
        stack
            .post_meta("whatsapp", &bot.webhook_path, Some(SECRET), &body)
            .await,
        200
    );
    let good = fx::post(&[(
        fx::PHONE_NUMBER_ID,
        now(fx::from_user(fx::text("wamid.OK", "fine"))),
    )]);
    assert_eq!(
        stack
            .post_meta("whatsapp", &bot.webhook_path, Some(SECRET), &good)
            .await,
        200
    );
    let got = stack.events_of("message.received", 1).await;
    assert_eq!(got[0].json()["message"]["platform_message_id"], "wamid.OK");

    let prefix = &stack.config.nats_prefix;
    let js = async_nats::jetstream::new(stack.raw_nats().await);
    let dlq = js
        .get_stream(format!("{}_DLQ", prefix.to_uppercase()))
        .await
        .unwrap();
    let consumer = dlq
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut messages = consumer
        .fetch()
        .max_messages(1)
        .expires(TIMEOUT)
        .messages()
        .await
        .unwrap();
    let m = messages.next().await.expect("a dead letter").unwrap();
    let h = m.headers.clone().unwrap();
    assert_eq!(h.get("Pb-Dlq-Consumer").unwrap().as_str(), "normaliser");
    let reason = h.get("Pb-Dlq-Reason").unwrap().to_string();
    assert!(reason.contains("not a WhatsApp messages value"), "{reason}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_without_a_phone_number_are_answered_by_their_business_scoped_id() {
    let stack = Stack::start().await;
    let bot = stack.whatsapp_bot(fx::PHONE_NUMBER_ID, SECRET, None).await;
    stack.tenant.respond_with(|r| {
        if r.json()["type"] == "message.received" {
            (
                StatusCode::OK,
                Some(json!([{"type": "text", "text": "hi Bea"}])),
            )
        } else {
            (StatusCode::OK, None)
        }
    });
    let post = fx::post(&[(
        fx::PHONE_NUMBER_ID,
        now(fx::from_username_only("wamid.U1", "hello")),
    )]);
    assert_eq!(
        stack
            .post_meta("whatsapp", &bot.webhook_path, Some(SECRET), &post)
            .await,
        200
    );
    let event = stack.events_of("message.received", 1).await[0].json();
    assert_eq!(event["user"]["platform_user_id"], "US.998877");
    assert_eq!(event["user"]["username"], "bea");
    let calls = stack
        .graph
        .wait_for_sends(fx::PHONE_NUMBER_ID, 1, TIMEOUT)
        .await;
    assert_eq!(calls[0].body["recipient"], "US.998877");
    assert!(calls[0].body.get("to").is_none(), "{}", calls[0].body);
    assert_eq!(calls[0].body["text"]["body"], "hi Bea");
    stack.shutdown().await;
}

/// Web1on1's business-initiated conversation: a contact the bot has never heard from, by phone
/// number, reached with an approved template; free-form text waits until they write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_contact_is_reached_by_phone_with_a_template() {
    let stack = Stack::start().await;
    let bot = stack
        .whatsapp_bot(fx::PHONE_NUMBER_ID, SECRET, Some(vec!["message.*"]))
        .await;
    let template = json!({"type": "template", "name": "appointment_reminder", "language": "nl",
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Rita"},
                                                       {"type": "text", "text": "10:30"}]}]});
    let (status, created) = stack
        .call(
            "post",
            "/v1/conversations",
            Some(&bot.api_key),
            Some(
                &json!({"contact": {"phone": "+31612345678", "name": "Rita"},
                         "messages": [template]}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["user"]["platform"], "whatsapp");
    assert_eq!(created["user"]["platform_user_id"], "31612345678");
    assert_eq!(created["user"]["phone"], "+31612345678");
    let calls = stack
        .graph
        .wait_for_sends(fx::PHONE_NUMBER_ID, 1, TIMEOUT)
        .await;
    assert_eq!(calls[0].body["to"], "31612345678");
    assert_eq!(calls[0].body["type"], "template");
    assert_eq!(
        calls[0].body["template"]["components"][0]["parameters"][1]["text"],
        "10:30"
    );

    // The same number again is the same contact (200); free-form text is refused until the
    // contact writes, since WhatsApp's window has not opened.
    let (status, again) = stack
        .call(
            "post",
            "/v1/conversations",
            Some(&bot.api_key),
            Some(&json!({"contact": {"phone": "+31612345678"}})),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["conversation_id"], created["conversation_id"]);
    let (status, refused) = stack
        .call(
            "post",
            "/v1/messages",
            Some(&bot.api_key),
            Some(&json!({"user_id": created["user"]["id"],
                         "messages": [{"type": "text", "text": "Hi Rita"}]})),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "outside_window");
    stack.shutdown().await;
}
