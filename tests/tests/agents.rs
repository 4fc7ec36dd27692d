//! Human agents' invites (`/v1/agents`, `GET /v1/me`), without the console: an invite is a
//! credential of its bot that may read conversations, users and templates, take a
//! conversation over and send, always as the agent; it may not touch the bot's settings,
//! keys, deliveries or agents; key rotations leave it alone, and revoking it ends it at once.

use patchbay_telegram::fixtures;
use patchbay_tests::{Stack, TIMEOUT, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_invite_does_what_an_agent_does_and_nothing_more() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let (status, agent) = stack
        .call(
            "post",
            "/v1/agents",
            Some(&bot.api_key),
            Some(&json!({"name": "  Ana  "})),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    assert_eq!(agent["name"], "Ana");
    let invite = agent["invite"].as_str().unwrap().to_owned();
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    assert!(
        invite.starts_with("pbag_") && agent_id.starts_with("agt_"),
        "{agent}"
    );
    let (status, bad) = stack
        .call(
            "post",
            "/v1/agents",
            Some(&bot.api_key),
            Some(&json!({"name": ""})),
        )
        .await;
    assert_eq!(status, 422, "{bad}");

    // The list never shows an invite again.
    let (_, list) = stack
        .call("get", "/v1/agents", Some(&bot.api_key), None)
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["data"][0]["id"], agent_id.as_str());
    assert!(list["data"][0].get("invite").is_none(), "{list}");

    // Who each credential is.
    let (status, me) = stack.call("get", "/v1/me", Some(&invite), None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["bot_id"], bot.id.as_str());
    assert_eq!(me["agent"], json!({"id": agent_id, "name": "Ana"}));
    assert_eq!(
        me["scopes"],
        json!([
            "messages:send",
            "messages:read",
            "users:read",
            "templates:read"
        ])
    );
    let (_, me) = stack.call("get", "/v1/me", Some(&bot.api_key), None).await;
    assert!(me.get("agent").is_none(), "{me}");
    assert!(me["scopes"].as_array().unwrap().len() > 4, "{me}");

    // Not the bot's settings, keys, deliveries or agents.
    for (method, path, body) in [
        ("post", "/v1/keys/rotate", Some(json!({}))),
        ("get", "/v1/deliveries", None),
        ("get", "/v1/webhook", None),
        ("get", "/v1/agents", None),
        ("post", "/v1/agents", Some(json!({"name": "Eve"}))),
        ("delete", &format!("/v1/agents/{agent_id}") as &str, None),
    ] {
        let (status, answer) = stack.call(method, path, Some(&invite), body.as_ref()).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "missing_scope", "{answer}");
    }

    // A user writes; the agent takes the conversation over, as herself whatever she names.
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(4001, 3101, "hi"))
            .await,
        200
    );
    let event = stack.events_of("message.received", 1).await[0].json();
    let conversation = event["conversation_id"].as_str().unwrap();
    let user = event["user"]["id"].as_str().unwrap();
    let (status, state) = stack
        .call(
            "post",
            &format!("/v1/conversations/{conversation}/handover"),
            Some(&invite),
            Some(&json!({"to": "human", "agent": "Someone else"})),
        )
        .await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["agent"], "Ana");

    // Her sends are hers: asking to send as the bot is refused; the default is `human`.
    let (status, refused) = stack
        .call(
            "post",
            "/v1/messages",
            Some(&invite),
            Some(&json!({"user_id": user, "source": "api",
                         "messages": [{"type": "text", "text": "as the bot"}]})),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "agent_sends_as_human");
    let (status, sent) = stack
        .call(
            "post",
            "/v1/messages",
            Some(&invite),
            Some(&json!({"user_id": user, "messages": [{"type": "text", "text": "Ana here"}]})),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    eventually(TIMEOUT, "the agent's message at Telegram", || async {
        stack
            .telegram
            .calls_of("sendMessage")
            .into_iter()
            .find(|c| c.token == bot.bot_token && c.body["text"] == "Ana here")
    })
    .await;
    let (_, history) = stack
        .call(
            "get",
            &format!("/v1/conversations/{conversation}/messages"),
            Some(&invite),
            None,
        )
        .await;
    let mine = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["content"]["text"] == "Ana here")
        .unwrap_or_else(|| panic!("{history}"));
    assert_eq!(mine["source"], "human");

    // A key rotation without overlap ends the bot's other keys, not the invite.
    let (status, rotated) = stack
        .call(
            "post",
            "/v1/keys/rotate",
            Some(&bot.api_key),
            Some(&json!({"overlap_seconds": 0})),
        )
        .await;
    assert_eq!(status, 201, "{rotated}");
    let new_key = rotated["api_key"].as_str().unwrap().to_owned();
    eventually(TIMEOUT, "the old key ended", || async {
        let (status, _) = stack.call("get", "/v1/me", Some(&bot.api_key), None).await;
        (status == 401).then_some(())
    })
    .await;
    let (status, _) = stack.call("get", "/v1/me", Some(&invite), None).await;
    assert_eq!(status, 200, "the rotation ended the agent's invite");

    // Revoked, the invite stops at once.
    let (status, _) = stack
        .call(
            "delete",
            &format!("/v1/agents/{agent_id}"),
            Some(&new_key),
            None,
        )
        .await;
    assert_eq!(status, 204);
    eventually(TIMEOUT, "the revoked invite refused", || async {
        let (status, _) = stack.call("get", "/v1/me", Some(&invite), None).await;
        (status == 401).then_some(())
    })
    .await;
    let (status, gone) = stack
        .call(
            "delete",
            &format!("/v1/agents/{agent_id}"),
            Some(&new_key),
            None,
        )
        .await;
    assert_eq!(status, 204, "revoking twice is idempotent: {gone}");
}
