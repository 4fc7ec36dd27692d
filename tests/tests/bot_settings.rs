//! A bot's settings change at run time and apply everywhere (every service watches the config
//! bucket) without a restart: a new callback URL (verified by its challenge first), event and
//! platform filters, key and secret rotation with an overlap, revocation, disabling a bot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use patchbay_contract::subjects::Stream;
use patchbay_telegram::fixtures;
use patchbay_testkit::tenant::{FakeTenant, verify_standard_webhook};
use patchbay_tests::{Layout, Options, Stack, TIMEOUT, eventually};
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

fn texts(tenant: &FakeTenant) -> Vec<String> {
    tenant
        .received()
        .iter()
        .filter_map(|r| {
            r.json()["message"]["content"]["text"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_changes_apply_everywhere_without_a_restart() {
    let stack = Stack::start_with(Options {
        layout: Layout::Split,
        ..Options::default()
    })
    .await;
    // The API describes itself, without credentials.
    let doc: Value = stack
        .http
        .get(format!("{}/openapi.json", stack.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/webhook"]["put"].is_object());

    let bot = stack.bot().await;
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(1, 6100, "to a"))
            .await,
        200
    );
    eventually(TIMEOUT, "the first URL gets the event", || async {
        texts(&stack.tenant)
            .contains(&"to a".to_owned())
            .then_some(())
    })
    .await;

    // A URL that does not answer the challenge is refused; nothing changes.
    let other = FakeTenant::start().await;
    let (status, body) = call(
        &stack,
        "PUT",
        "/v1/webhook",
        &bot.api_key,
        Some(json!({"url": format!("{}/elsewhere", other.url())})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["code"], "webhook_verification_failed",
        "{body}"
    );
    let (_, current) = call(&stack, "GET", "/v1/webhook", &bot.api_key, None).await;
    assert_eq!(current["url"], stack.tenant.url());

    // A URL whose owner expects another verify token refuses the challenge: refused too.
    other.expect_verify_token("mine");
    let (status, body) = call(
        &stack,
        "PUT",
        "/v1/webhook",
        &bot.api_key,
        Some(json!({"url": other.url(), "verify_token": "not-mine"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["code"], "webhook_verification_failed",
        "{body}"
    );

    // A URL that echoes hub.challenge for its verify token is taken, with new subscriptions.
    let changed = Instant::now();
    let (status, body) = call(
        &stack,
        "PUT",
        "/v1/webhook",
        &bot.api_key,
        Some(json!({"url": other.url(), "events": ["message.*"], "verify_token": "mine"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["url"], other.url());
    assert_eq!(body["events"], json!(["message.*"]));
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(2, 6100, "to b"))
            .await,
        200
    );
    eventually(TIMEOUT, "the new URL gets the next event", || async {
        texts(&other).contains(&"to b".to_owned()).then_some(())
    })
    .await;
    println!(
        "new callback URL in use {:?} after the change",
        changed.elapsed()
    );
    assert!(!texts(&stack.tenant).contains(&"to b".to_owned()));
    verify_standard_webhook(&bot.webhook_secret, &other.received()[0]).unwrap();

    // A platform filter that leaves Telegram out: the next update is dropped. The router is
    // idle afterwards (its work queue empty), so the drop is settled, not pending.
    let (status, body) = call(
        &stack,
        "PUT",
        "/v1/webhook",
        &bot.api_key,
        Some(json!({"platforms": ["whatsapp"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["url"],
        other.url(),
        "an absent url keeps the current one"
    );
    let (_, dispatched_before) = stack.stream_state(Stream::Dispatch).await;
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(3, 6100, "filtered"))
            .await,
        200
    );
    stack.router_idle().await;
    let (_, dispatched_after) = stack.stream_state(Stream::Dispatch).await;
    assert_eq!(
        dispatched_after, dispatched_before,
        "a filtered event was dispatched"
    );
    assert!(!texts(&other).contains(&"filtered".to_owned()));

    // Unknown events and platforms are refused with the field named.
    let (status, body) = call(
        &stack,
        "PUT",
        "/v1/webhook",
        &bot.api_key,
        Some(json!({"events": ["message.exploded"]})),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webhook.events")
    );
    let (status, _) = call(
        &stack,
        "PUT",
        "/v1/webhook",
        &bot.api_key,
        Some(json!({"platforms": ["myspace"]})),
    )
    .await;
    assert_eq!(status, 422);
    stack.shutdown().await;
}

/// A `PUT /v1/webhook` that names no flavour keeps the one the bot has: a BrandChat bot that
/// only changes its events must not start getting native callbacks its client cannot read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_events_keeps_the_flavour() {
    let stack = Stack::start().await;
    let bot = stack.bot_with_flavour("brandchat").await;
    let (status, settings) = call(
        &stack,
        "PUT",
        "/v1/webhook",
        &bot.api_key,
        Some(json!({"events": ["message.*"]})),
    )
    .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["flavour"], "brandchat", "{settings}");
    let (_, current) = call(&stack, "GET", "/v1/webhook", &bot.api_key, None).await;
    assert_eq!(current["flavour"], "brandchat", "{current}");
    // Named, it changes.
    let (status, settings) = call(
        &stack,
        "PUT",
        "/v1/webhook",
        &bot.api_key,
        Some(json!({"flavour": "native"})),
    )
    .await;
    assert_eq!(
        (status, &settings["flavour"]),
        (200, &json!("native")),
        "{settings}"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_secrets_rotate_with_an_overlap_and_revocation_is_immediate() {
    let stack = Stack::start_with(Options {
        layout: Layout::Split,
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    let old_key = bot.api_key.clone();

    // Rotation: the new key works at once, the old one until the overlap ends.
    let (status, rotated) = call(
        &stack,
        "POST",
        "/v1/keys/rotate",
        &old_key,
        Some(json!({"overlap_seconds": 2})),
    )
    .await;
    assert_eq!(status, 201, "{rotated}");
    let new_key = rotated["api_key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);
    assert_eq!(
        call(&stack, "GET", "/v1/webhook", &new_key, None).await.0,
        200
    );
    assert_eq!(
        call(&stack, "GET", "/v1/webhook", &old_key, None).await.0,
        200
    );
    eventually(TIMEOUT, "the old key stops working", || async {
        (call(&stack, "GET", "/v1/webhook", &old_key, None).await.0 == 401).then_some(())
    })
    .await;
    assert_eq!(
        call(&stack, "GET", "/v1/webhook", &new_key, None).await.0,
        200
    );

    // Revocation by the operator: at once (within the config bucket's propagation).
    let (status, third) = call(
        &stack,
        "POST",
        &format!("/admin/v1/bots/{}/keys/rotate", bot.id),
        stack.admin_token(),
        None,
    )
    .await;
    assert_eq!(status, 201, "{third}");
    let third_key = third["api_key"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &stack,
        "POST",
        &format!(
            "/admin/v1/bots/{}/keys/{}/revoke",
            bot.id,
            rotated["key_id"].as_str().unwrap()
        ),
        stack.admin_token(),
        None,
    )
    .await;
    assert_eq!(status, 204);
    eventually(TIMEOUT, "the revoked key stops working", || async {
        (call(&stack, "GET", "/v1/webhook", &new_key, None).await.0 == 401).then_some(())
    })
    .await;
    assert_eq!(
        call(&stack, "GET", "/v1/webhook", &third_key, None).await.0,
        200
    );

    // Secret rotation: during the overlap callbacks carry both signatures, then only the new.
    let (status, secret) = call(
        &stack,
        "POST",
        "/v1/webhook/secret/rotate",
        &third_key,
        Some(json!({"overlap_seconds": 3})),
    )
    .await;
    assert_eq!(status, 201, "{secret}");
    let new_secret = secret["webhook_secret"].as_str().unwrap().to_owned();
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(1, 6200, "both"))
            .await,
        200
    );
    let both = stack.events_of("message.received", 1).await;
    verify_standard_webhook(&bot.webhook_secret, &both[0]).expect("old secret still signs");
    verify_standard_webhook(&new_secret, &both[0]).expect("new secret signs");
    let mut n = 1;
    let only_new = eventually(TIMEOUT, "a callback signed by the new secret only", || {
        n += 1;
        let stack = &stack;
        let bot = &bot;
        async move {
            let text = format!("later {n}");
            assert_eq!(
                stack
                    .post_update(bot, &fixtures::text_update(n, 6200, &text))
                    .await,
                200
            );
            let r = eventually(TIMEOUT, "the callback", || async {
                stack
                    .tenant
                    .received()
                    .into_iter()
                    .find(|r| r.json()["message"]["content"]["text"] == text.as_str())
            })
            .await;
            verify_standard_webhook(&bot.webhook_secret, &r)
                .is_err()
                .then_some(r)
        }
    })
    .await;
    verify_standard_webhook(&new_secret, &only_new).expect("the new secret signs");

    // A disabled bot's key stops working everywhere; enabling it restores it.
    let bot_path = format!("/admin/v1/bots/{}", bot.id);
    let (status, _) = call(
        &stack,
        "PATCH",
        &bot_path,
        stack.admin_token(),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, 204);
    eventually(TIMEOUT, "the disabled bot's key is refused", || async {
        (call(&stack, "GET", "/v1/webhook", &third_key, None).await.0 == 401).then_some(())
    })
    .await;
    let (status, _) = call(
        &stack,
        "PATCH",
        &bot_path,
        stack.admin_token(),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(status, 204);
    eventually(TIMEOUT, "the enabled bot's key works again", || async {
        (call(&stack, "GET", "/v1/webhook", &third_key, None).await.0 == 200).then_some(())
    })
    .await;
    stack.shutdown().await;
}

/// A bot's owner reads its channels as the operator does (no credentials), only its own, and
/// only with `settings:read`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_reads_its_own_channels_and_no_others() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let other = stack.bot().await;
    let (status, list) = call(&stack, "GET", "/v1/channels", &bot.api_key, None).await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["id"], bot.channel_id.as_str());
    assert_eq!(items[0]["bot_id"], bot.id.as_str());
    assert_eq!(items[0]["platform"], "telegram");
    assert_eq!(items[0]["enabled"], true);
    assert_eq!(
        items[0]["webhook_path"],
        format!("/webhooks/telegram/{}", bot.channel_id).as_str()
    );
    assert!(
        !list.to_string().contains("bot_token") && !list.to_string().contains("secret"),
        "no credentials: {list}"
    );
    let (status, one) = call(
        &stack,
        "GET",
        &format!("/v1/channels/{}", bot.channel_id),
        &bot.api_key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one, items[0]);
    let (status, body) = call(
        &stack,
        "GET",
        &format!("/v1/channels/{}", other.channel_id),
        &bot.api_key,
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (_, theirs) = call(&stack, "GET", "/v1/channels", &other.api_key, None).await;
    assert_eq!(theirs["items"][0]["id"], other.channel_id.as_str());
    assert_eq!(theirs["items"].as_array().unwrap().len(), 1);

    let (status, narrow) = call(
        &stack,
        "POST",
        &format!("/admin/v1/bots/{}/keys/rotate", bot.id),
        stack.admin_token(),
        Some(json!({"overlap_seconds": 3600, "scopes": ["messages:send"]})),
    )
    .await;
    assert_eq!(status, 201, "{narrow}");
    let (status, body) = call(
        &stack,
        "GET",
        "/v1/channels",
        narrow["api_key"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "missing_scope");
    stack.shutdown().await;
}
