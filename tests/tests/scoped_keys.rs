//! Scoped API keys end to end (real NATS and PostgreSQL): a key does what its scopes allow and
//! gets 403 `missing_scope` naming the scope elsewhere; rotating keys needs `settings:keys`, and
//! a key gives a new key only scopes it holds; the OpenAPI document names each route's scope.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_telegram::fixtures;
use patchbay_tests::{Stack, TIMEOUT, eventually};
use serde_json::{Value, json};

async fn call(
    stack: &Stack,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    stack.call(method, path, Some(key), body.as_ref()).await
}

/// Rotates with `key` (or the operator token for `admin`), keeping the bot's other keys for
/// an hour; answers status and body.
async fn rotate(stack: &Stack, path: &str, key: &str, scopes: Option<Value>) -> (u16, Value) {
    let mut body = json!({"overlap_seconds": 3600});
    if let Some(s) = scopes {
        body["scopes"] = s;
    }
    call(stack, "POST", path, key, Some(body)).await
}

fn missing(body: &Value, scope: &str) {
    assert_eq!(body["error"]["code"], "missing_scope", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(scope), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_does_what_its_scopes_allow_and_gives_no_more_than_it_holds() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let full = bot.api_key.clone();
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(1, 7100, "hello"))
            .await,
        200
    );
    let event = stack.events_of("message.received", 1).await;
    let user_id = event[0].json()["user"]["id"].as_str().unwrap().to_owned();

    // The operator issues a key that may send and read users.
    let admin_rotate = format!("/admin/v1/bots/{}/keys/rotate", bot.id);
    let (status, sender) = rotate(
        &stack,
        &admin_rotate,
        stack.admin_token(),
        Some(json!(["messages:send", "users:read"])),
    )
    .await;
    assert_eq!(status, 201, "{sender}");
    assert_eq!(sender["scopes"], json!(["messages:send", "users:read"]));
    let sender_key = sender["api_key"].as_str().unwrap().to_owned();
    let (status, body) = call(
        &stack,
        "POST",
        "/v1/messages",
        &sender_key,
        Some(json!({"user_id": user_id, "messages": [{"type": "text", "text": "scoped"}]})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    eventually(
        TIMEOUT,
        "the scoped key's message reaches Telegram",
        || async {
            stack
                .telegram
                .calls_of("sendMessage")
                .into_iter()
                .find(|c| c.body["text"] == "scoped")
        },
    )
    .await;
    let (status, body) = call(
        &stack,
        "GET",
        &format!("/v1/users/{user_id}"),
        &sender_key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Everything else: 403 naming the scope, and nothing done.
    let (status, body) = call(&stack, "GET", "/v1/deliveries", &sender_key, None).await;
    assert_eq!(status, 403, "{body}");
    missing(&body, "deliveries:read");
    let (status, body) = call(
        &stack,
        "PATCH",
        &format!("/v1/users/{user_id}"),
        &sender_key,
        Some(json!({"fields": {"x": "y"}})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    missing(&body, "users:write");
    let (_, profile) = call(&stack, "GET", &format!("/v1/users/{user_id}"), &full, None).await;
    assert!(profile.get("fields").is_none(), "{profile}");
    let (status, body) = call(
        &stack,
        "PUT",
        "/v1/webhook",
        &sender_key,
        Some(json!({"url": "https://example.com/stolen"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    missing(&body, "settings:write");
    // It cannot rotate the bot's keys away (overlap 0 would end every other key at once).
    let (status, body) = call(
        &stack,
        "POST",
        "/v1/keys/rotate",
        &sender_key,
        Some(json!({"overlap_seconds": 0})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    missing(&body, "settings:keys");
    let (status, _) = call(&stack, "GET", "/v1/webhook", &full, None).await;
    assert_eq!(status, 200, "the bot's first key still works");

    // A key with every scope issues one for deliveries and keys (an area's wildcard).
    let (status, ops) = rotate(
        &stack,
        "/v1/keys/rotate",
        &full,
        Some(json!(["deliveries:*", "settings:keys"])),
    )
    .await;
    assert_eq!(status, 201, "{ops}");
    assert_eq!(
        ops["scopes"],
        json!(["deliveries:read", "deliveries:write", "settings:keys"])
    );
    let ops_key = ops["api_key"].as_str().unwrap().to_owned();
    let (status, body) = call(&stack, "GET", "/v1/deliveries", &ops_key, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &stack,
        "POST",
        "/v1/messages",
        &ops_key,
        Some(json!({"user_id": user_id, "messages": [{"type": "text", "text": "no"}]})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    missing(&body, "messages:send");
    // It gives a new key only what it holds.
    let (status, body) = rotate(&stack, "/v1/keys/rotate", &ops_key, Some(json!(["*"]))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "scope_not_held");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages:send"),
        "{body}"
    );
    let (status, narrower) = rotate(
        &stack,
        "/v1/keys/rotate",
        &ops_key,
        Some(json!(["deliveries:read"])),
    )
    .await;
    assert_eq!(status, 201, "{narrower}");
    assert_eq!(narrower["scopes"], json!(["deliveries:read"]));
    // Without scopes, the new key gets the caller's.
    let (status, same) = rotate(&stack, "/v1/keys/rotate", &ops_key, None).await;
    assert_eq!(status, 201, "{same}");
    assert_eq!(same["scopes"], ops["scopes"]);

    // Unknown scopes, and scopes on a secret, are refused.
    let (status, body) = rotate(
        &stack,
        "/v1/keys/rotate",
        &full,
        Some(json!(["messages:delete"])),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages:delete"),
        "{body}"
    );
    let (status, body) = rotate(
        &stack,
        "/v1/webhook/secret/rotate",
        &full,
        Some(json!(["messages:send"])),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // The OpenAPI document names each route's scope.
    let doc: Value = stack
        .http
        .get(format!("{}/openapi.json", stack.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["paths"]["/v1/messages"]["post"]["security"],
        json!([{"botApiKey": ["messages:send"]}])
    );
    assert_eq!(
        doc["paths"]["/v1/keys/rotate"]["post"]["security"],
        json!([{"botApiKey": ["settings:keys"]}])
    );
    stack.shutdown().await;
}
