//! Master key rotation end to end, on real NATS and PostgreSQL: secrets sealed under key A
//! keep working with B current and A accepted, `patchbay master-key reseal` moves every
//! stored value to B, and then A can go. Dropping A before the re-seal breaks the bot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_config::MasterKey;
use patchbay_telegram::fixtures;
use patchbay_testkit::tenant::verify_standard_webhook;
use patchbay_tests::{Stack, TIMEOUT, TestBot};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Row;

/// One Telegram update in, the signed event to the tenant, its inline reply out to Telegram:
/// the `n`th round trip of this test.
async fn round_trip(stack: &Stack, bot: &TestBot, n: usize) {
    let text = format!("hello {n}");
    assert_eq!(
        stack
            .post_update(bot, &fixtures::text_update(90_000 + n as i64, 4242, &text))
            .await,
        200
    );
    let got = stack.events_of("message.received", n).await;
    let callback = got
        .iter()
        .find(|r| r.json()["message"]["content"]["text"] == text)
        .expect("the event reached the tenant");
    verify_standard_webhook(&bot.webhook_secret, callback)
        .expect("signed with the bot's webhook secret");
    let calls = stack.telegram.wait_for("sendMessage", n, TIMEOUT).await;
    assert_eq!(
        calls[n - 1].token,
        bot.bot_token,
        "sent with the channel's token"
    );
    assert_eq!(
        calls[n - 1].body,
        json!({"chat_id": 4242, "text": format!("you said: {text}")})
    );
}

/// Every sealed column of schema `auth`, as (place, sealed value).
async fn sealed_rows(stack: &Stack) -> Vec<(String, String)> {
    let pool = sqlx::PgPool::connect(&stack.config.database_url.clone().unwrap())
        .await
        .unwrap();
    let rows = sqlx::query(
        "select 'webhook_secrets' as place, sealed from auth.webhook_secrets
         union all select 'api_keys', sealed from auth.api_keys where sealed is not null
         union all select 'channels', credentials_sealed from auth.channels",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|r| (r.get("place"), r.get("sealed")))
        .collect()
}

async fn restart_with(stack: &mut Stack, current: &str, accepted: Option<&str>) {
    stack.stop("patchbay").await;
    stack.config.master_key = Some(current.to_owned());
    stack.config.master_key_accepted = accepted.map(str::to_owned);
    stack.restart("patchbay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_master_key_reseals_everything_and_the_old_key_can_go() {
    let mut stack = Stack::start().await;
    let key_a = stack.config.master_key.clone().unwrap();
    let key_b = MasterKey::generate_base64().unwrap();
    let (id_a, id_b) = (
        MasterKey::id_of_base64(&key_a).unwrap(),
        MasterKey::id_of_base64(&key_b).unwrap(),
    );
    stack.tenant.respond_with(|r| {
        let event = r.json();
        let text = event["message"]["content"]["text"].as_str().unwrap_or("");
        (
            StatusCode::OK,
            Some(json!({"messages": [{"type": "text", "text": format!("you said: {text}")}]})),
        )
    });
    // A bot with a webhook secret, an API key and a Telegram channel, all sealed under A.
    let bot = stack.bot().await;
    let rows = sealed_rows(&stack).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (place, sealed) in &rows {
        assert_eq!(
            MasterKey::sealed_key_id(sealed),
            Some(id_a.as_str()),
            "{place}"
        );
    }
    // The webhook secret as an installation from before key ids has it: no key id.
    let pool = sqlx::PgPool::connect(&stack.config.database_url.clone().unwrap())
        .await
        .unwrap();
    sqlx::query(
        "update auth.webhook_secrets set sealed = regexp_replace(sealed, '^v2\\.[0-9a-f]+\\.', '')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    round_trip(&stack, &bot, 1).await;
    // A console session, sealed under A in the sessions bucket.
    let session = console_sign_in(&stack, &bot.api_key).await;
    assert_eq!(console_status(&stack, &session).await, 200);

    // Steps 1 and 2 of a rotation: B current, A accepted. Everything sealed under A still
    // opens; what is sealed from now on is sealed under B.
    restart_with(&mut stack, &key_b, Some(&key_a)).await;
    round_trip(&stack, &bot, 2).await;

    // The check counts what is left under A: the three rows, the two records' copies and the
    // console session.
    let check = stack.reseal(true).await;
    let total = check.total();
    assert!(!check.done(), "{}", check.render());
    assert!(total.resealed >= 6, "{}", check.render());
    assert!(total.failed.is_empty(), "{}", check.render());

    // Step 3: the re-seal, while the services run.
    let pass = stack.reseal(false).await;
    assert!(pass.done(), "{}", pass.render());
    assert_eq!(pass.total().resealed, total.resealed, "{}", pass.render());
    for (place, sealed) in sealed_rows(&stack).await {
        assert_eq!(
            MasterKey::sealed_key_id(&sealed),
            Some(id_b.as_str()),
            "{place}"
        );
    }
    let again = stack.reseal(true).await;
    assert!(again.done(), "{}", again.render());
    assert_eq!(again.total().resealed, 0, "{}", again.render());
    assert!(again.total().current >= 5, "{}", again.render());
    // Idempotent: a second pass finds nothing to do.
    assert_eq!(stack.reseal(false).await.total().resealed, 0);

    // Step 4: A dropped. Messages still flow end to end; the console session still opens.
    restart_with(&mut stack, &key_b, None).await;
    round_trip(&stack, &bot, 3).await;
    assert_eq!(console_status(&stack, &session).await, 200);
    stack.shutdown().await;
}

/// Signs in to the console with `credential` as a browser's form would; the session cookie.
async fn console_sign_in(stack: &Stack, credential: &str) -> String {
    let client = patchbay_testkit::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client
        .get(format!("{}/console/sign-in", stack.console_url()))
        .send()
        .await
        .unwrap();
    let form_cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let signed = client
        .post(format!("{}/console/sign-in", stack.console_url()))
        .header("cookie", form_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={}&credential={}",
            url::form_urlencoded::byte_serialize(csrf.as_bytes()).collect::<String>(),
            url::form_urlencoded::byte_serialize(credential.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    signed.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The status of the developer's first console page with the session cookie `session` (a
/// redirect to the sign-in once the session cannot be opened).
async fn console_status(stack: &Stack, session: &str) -> u16 {
    patchbay_testkit::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/console/bot/agents", stack.console_url()))
        .header("cookie", session)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_old_key_before_the_reseal_breaks_the_bot() {
    let mut stack = Stack::start().await;
    let key_a = stack.config.master_key.clone().unwrap();
    let key_b = MasterKey::generate_base64().unwrap();
    let bot = stack.bot().await;
    restart_with(&mut stack, &key_b, None).await;
    // The channel's credentials cannot be opened: the update is not taken.
    assert_ne!(
        stack
            .post_update(&bot, &fixtures::text_update(1, 4242, "hello"))
            .await,
        200
    );
    let check = stack.reseal(true).await;
    assert_eq!(check.total().failed.len(), 5, "{}", check.render());
    assert!(check.total().failed[0].contains(&MasterKey::id_of_base64(&key_a).unwrap()));
    stack.shutdown().await;
}
