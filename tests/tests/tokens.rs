//! Expiring access tokens with refresh, end to end (real NATS and PostgreSQL): an API key is
//! exchanged for an access token (a Bearer on every `/v1` route, with the key's scopes) and a
//! refresh token; refresh tokens rotate on use, a reused one revokes its family, an access
//! token stops at its expiry, and revoking the API key ends every token exchanged for it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_tests::{Options, Stack, TIMEOUT, eventually};
use serde_json::{Value, json};

async fn exchange(stack: &Stack, body: Value) -> (u16, Value) {
    stack
        .call("POST", "/v1/auth/token", None, Some(&body))
        .await
}

async fn webhook_status(stack: &Stack, bearer: &str) -> u16 {
    stack.call("GET", "/v1/webhook", Some(bearer), None).await.0
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_its_family() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;

    let (status, first) = exchange(&stack, json!({"api_key": bot.api_key})).await;
    assert_eq!(status, 200, "{first}");
    assert!(s(&first, "access_token").starts_with("pbat_"), "{first}");
    assert!(s(&first, "refresh_token").starts_with("pbrt_"), "{first}");
    assert_eq!(first["token_type"], "Bearer");
    assert_eq!(
        first["expires_in"], 3600,
        "PATCHBAY_ACCESS_TOKEN_TTL_MS's default"
    );
    assert_eq!(first["refresh_expires_in"], 90 * 24 * 3600);
    assert!(
        first["scopes"].as_array().unwrap().len() >= 11,
        "every scope: {first}"
    );
    let access = s(&first, "access_token").to_owned();
    assert_eq!(webhook_status(&stack, &access).await, 200);
    // An access token cannot be exchanged itself.
    let (status, body) = exchange(&stack, json!({"api_key": access})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");

    // A refresh gives the next pair; both access tokens work.
    let (status, second) =
        exchange(&stack, json!({"refresh_token": s(&first, "refresh_token")})).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["access_token"], first["access_token"]);
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    let access2 = s(&second, "access_token").to_owned();
    assert_eq!(webhook_status(&stack, &access2).await, 200);
    assert_eq!(webhook_status(&stack, &access).await, 200);

    // The first refresh token again: refused, and the whole family is revoked.
    let (status, body) =
        exchange(&stack, json!({"refresh_token": s(&first, "refresh_token")})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "refresh_token_reused");
    let (status, body) = exchange(
        &stack,
        json!({"refresh_token": s(&second, "refresh_token")}),
    )
    .await;
    assert_eq!(status, 401, "the family's newest refresh token too: {body}");
    eventually(
        TIMEOUT,
        "the family's access tokens stop working",
        || async {
            (webhook_status(&stack, &access).await == 401
                && webhook_status(&stack, &access2).await == 401)
                .then_some(())
        },
    )
    .await;
    // The API key itself is untouched, and starts a new family.
    assert_eq!(webhook_status(&stack, &bot.api_key).await, 200);
    let (status, fresh) = exchange(&stack, json!({"api_key": bot.api_key})).await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(webhook_status(&stack, s(&fresh, "access_token")).await, 200);

    // Bad requests.
    for (body, code, status) in [
        (json!({}), "invalid_request", 422),
        (
            json!({"api_key": bot.api_key, "refresh_token": "pbrt_x"}),
            "invalid_request",
            422,
        ),
        (
            json!({"refresh_token": "pbrt_nothing"}),
            "invalid_refresh_token",
            401,
        ),
        (json!({"api_key": "pbk_nothing"}), "invalid_api_key", 401),
    ] {
        let (got, answer) = exchange(&stack, body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_carry_their_keys_scopes_expire_and_end_with_their_key() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| {
            c.access_token_ttl_ms = 2_000;
            c.refresh_token_ttl_ms = 60_000;
        }),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    let (status, scoped) = stack
        .call(
            "POST",
            &format!("/admin/v1/bots/{}/keys/rotate", bot.id),
            Some(stack.admin_token()),
            Some(&json!({"overlap_seconds": 3600, "scopes": ["deliveries:read"]})),
        )
        .await;
    assert_eq!(status, 201, "{scoped}");

    let (status, tokens) = exchange(&stack, json!({"api_key": scoped["api_key"]})).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scopes"], json!(["deliveries:read"]));
    assert_eq!(tokens["expires_in"], 2);
    let access = s(&tokens, "access_token").to_owned();
    let (status, body) = stack
        .call("GET", "/v1/deliveries", Some(&access), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = stack.call("GET", "/v1/webhook", Some(&access), None).await;
    assert_eq!(status, 403, "the key's scopes: {body}");
    assert_eq!(body["error"]["code"], "missing_scope");

    // It stops at its expiry; the refresh token still gives a new one.
    eventually(TIMEOUT, "the access token expires", || async {
        (stack
            .call("GET", "/v1/deliveries", Some(&access), None)
            .await
            .0
            == 401)
            .then_some(())
    })
    .await;
    let (status, next) = exchange(
        &stack,
        json!({"refresh_token": s(&tokens, "refresh_token")}),
    )
    .await;
    assert_eq!(status, 200, "{next}");
    let access2 = s(&next, "access_token").to_owned();
    assert_eq!(
        stack
            .call("GET", "/v1/deliveries", Some(&access2), None)
            .await
            .0,
        200
    );

    // Revoking the API key ends every token exchanged for it.
    let (status, _) = stack
        .call(
            "POST",
            &format!(
                "/admin/v1/bots/{}/keys/{}/revoke",
                bot.id,
                s(&scoped, "key_id")
            ),
            Some(stack.admin_token()),
            None,
        )
        .await;
    assert_eq!(status, 204);
    eventually(TIMEOUT, "the access token ends with its key", || async {
        (stack
            .call("GET", "/v1/deliveries", Some(&access2), None)
            .await
            .0
            == 401)
            .then_some(())
    })
    .await;
    let (status, body) =
        exchange(&stack, json!({"refresh_token": s(&next, "refresh_token")})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_refresh_token");
    stack.shutdown().await;
}
