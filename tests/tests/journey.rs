//! A message's journey end to end (real NATS and PostgreSQL, the fake WhatsApp Cloud API):
//! `GET /v1/messages/{id}/journey` shows every stage a user's message passed (the platform's
//! time, stored, each attempt to deliver it to the bot) and, for the bot's inline reply, its
//! own journey (queued, the platform's answer with its id, the platform's receipts), in order;
//! another bot's message is not there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_tests::{Stack, TIMEOUT, eventually};
use patchbay_whatsapp::fixtures as fx;
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "wa-app-secret";

fn stages(journey: &Value) -> Vec<&str> {
    journey["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_message_and_the_bots_reply_show_every_stage_they_passed() {
    let stack = Stack::start().await;
    let bot = stack
        .whatsapp_bot(fx::PHONE_NUMBER_ID, SECRET, Some(vec!["*"]))
        .await;
    let other = stack.bot().await;
    stack.tenant.respond_with(|r| {
        if r.json()["type"] == "message.received" {
            (
                StatusCode::OK,
                Some(json!({"messages": [{"type": "text", "text": "on it"}]})),
            )
        } else {
            (StatusCode::OK, None)
        }
    });
    let now = chrono::Utc::now().timestamp();
    let mut message = fx::text("wamid.IN1", "where is my order?");
    message["timestamp"] = json!(now.to_string());
    let post = fx::post(&[(fx::PHONE_NUMBER_ID, fx::from_user(message))]);
    assert_eq!(
        stack
            .post_meta("whatsapp", &bot.webhook_path, Some(SECRET), &post)
            .await,
        200
    );
    let sent = stack.events_of("message.sent", 1).await[0].json();
    let reply_id = sent["message"]["id"].as_str().unwrap().to_owned();
    let wamid = sent["message"]["platform_message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // WhatsApp reports the reply delivered, then read (each once the one before is recorded:
    // a receipt that comes after a later one moves nothing, and is not a stage).
    for (status, after) in [("delivered", 1), ("read", 2)] {
        let mut receipt = fx::status(&wamid, status);
        receipt["statuses"][0]["timestamp"] = json!((now + after).to_string());
        let post = fx::post(&[(fx::PHONE_NUMBER_ID, receipt)]);
        assert_eq!(
            stack
                .post_meta("whatsapp", &bot.webhook_path, Some(SECRET), &post)
                .await,
            200
        );
        stack.events_of(&format!("message.{status}"), 1).await;
    }
    let received = stack.events_of("message.received", 1).await[0].json();
    let inbound_id = received["message"]["id"].as_str().unwrap().to_owned();

    let path = format!("/v1/messages/{inbound_id}/journey");
    let journey = eventually(TIMEOUT, "the reply read in the journey", || async {
        let (status, j) = stack.call("get", &path, Some(&bot.api_key), None).await;
        assert_eq!(status, 200, "{j}");
        (j["replies"][0]["status"] == "read").then_some(j)
    })
    .await;
    assert_eq!(journey["direction"], "inbound");
    assert_eq!(journey["conversation_id"], received["conversation_id"]);
    assert_eq!(
        stages(&journey),
        ["received", "stored", "callback"],
        "{journey}"
    );
    let s = &journey["stages"];
    assert_eq!(
        s[0]["at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
            .timestamp(),
        now,
        "the platform's time"
    );
    assert_eq!(s[2]["attempt"], 1);
    assert_eq!(s[2]["status_code"], 200);
    assert!(s[2]["duration_ms"].is_u64(), "{journey}");
    let reply = &journey["replies"][0];
    assert_eq!(reply["message_id"], reply_id.as_str());
    assert_eq!(reply["direction"], "outbound");
    assert_eq!(
        stages(reply),
        ["queued", "sent", "delivered", "read"],
        "{reply}"
    );
    assert_eq!(reply["stages"][1]["platform_message_id"], wamid.as_str());
    let at = |i: usize| {
        reply["stages"][i]["at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    assert_eq!(at(2).timestamp(), now + 1, "the receipt's own time");
    assert_eq!(at(3).timestamp(), now + 2);

    // The reply's journey on its own.
    let (status, own) = stack
        .call(
            "get",
            &format!("/v1/messages/{reply_id}/journey"),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{own}");
    assert_eq!(&own, reply);

    // Another bot's key finds neither.
    for id in [&inbound_id, &reply_id] {
        let (status, body) = stack
            .call(
                "get",
                &format!("/v1/messages/{id}/journey"),
                Some(&other.api_key),
                None,
            )
            .await;
        assert_eq!(status, 404, "{body}");
    }
}
