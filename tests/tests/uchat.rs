//! UChat's API chat channel and partner API: a partner whose app a workspace enabled sets the
//! workspace's API chat webhook exactly as UChat's page shows it (the URL answers the
//! `hub_mode`/`hub_verify_token`/`hub_challenge` form POST first; the answer names the
//! `bot_url`); its system sends text and a button payload as its users through the `bot_url`
//! with the workspace's key; the bot's and an agent's answers reach the webhook in UChat's
//! shapes, signed `X-Uchat-Signature`; the webhook is removed; strangers are refused.

use patchbay_testkit::tenant::FakeTenant;
use patchbay_tests::{Stack, TIMEOUT, eventually, raw_json};
use serde_json::{Value, json};

/// UChat's sample verification key.
const KEY: &str = "VERIFICATION_TOKEN";

/// A UChat call with a raw JSON body, as a partner's system makes it.
async fn uchat(
    base: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    raw_json(method, &format!("{base}{path}"), bearer, body).await
}

fn signature(key: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        patchbay_testkit::fixtures::meta_signature(key, body)
    )
}

/// The bot sends `body` (`POST /v1/messages`), accepted.
async fn bot_sends(stack: &Stack, key: &str, body: Value) {
    let (status, answer) = stack
        .call("post", "/v1/messages", Some(key), Some(&body))
        .await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uchat_partner_sets_the_api_chat_webhook_and_its_users_talk_to_the_bot() {
    let stack = Stack::start().await;
    let admin = stack.admin_token();
    // The workspace: a tenant with its bot.
    let (status, tenant) = stack
        .call(
            "post",
            "/admin/v1/tenants",
            Some(admin),
            Some(&json!({"name": "Acme workspace"})),
        )
        .await;
    assert_eq!(status, 201, "{tenant}");
    let workspace = tenant["id"].as_str().unwrap().to_owned();
    let bot = stack.bot_in(&workspace).await;
    // The partner, whose app the workspace enabled; and one it did not.
    let partner = |name: &'static str| {
        let stack = &stack;
        async move {
            let (_, p) = stack
                .call(
                    "post",
                    "/admin/v1/partners",
                    Some(admin),
                    Some(&json!({"name": name})),
                )
                .await;
            p["api_key"].as_str().unwrap().to_owned()
        }
    };
    let partner_key = partner("UChat partner").await;
    let stranger_key = partner("Another partner").await;
    let app_hook = FakeTenant::start().await;
    let (status, app) = stack
        .call(
            "post",
            "/v1/partner/apps",
            Some(&partner_key),
            Some(&json!({"name": "Api Chat", "callback_url": app_hook.url(),
                         "events": ["message.received"], "scopes": ["messages:send"]})),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    let (status, _) = stack
        .call(
            "post",
            &format!("/v1/apps/{}/enable", app["id"].as_str().unwrap()),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let api = stack.api_url();
    let path = format!("/api/partner/workspace/{workspace}/apichat-webhook");

    // The webhook: UChat's challenge with the verification key, then UChat's answer.
    let hook = FakeTenant::start().await;
    hook.expect_verify_token(KEY);
    let set = format!(
        r#"{{"webhook_url": "{}", "webhook_verification_key": "OTHER_TOKEN"}}"#,
        hook.url()
    );
    let (status, refused) = uchat(&api, "POST", &path, Some(&partner_key), Some(&set)).await;
    assert_eq!(status, 422, "a URL that refuses the challenge: {refused}");
    assert_eq!(refused["status"], "error");
    let set = set.replace("OTHER_TOKEN", KEY);
    let (status, answer) = uchat(&api, "POST", &path, Some(&partner_key), Some(&set)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "ok");
    assert_eq!(answer["data"]["webhook_url"], hook.url().as_str());
    assert_eq!(answer["data"]["webhook_verification_key"], KEY);
    assert_eq!(answer["data"]["webhook_status"], "verified");
    let bot_url = answer["data"]["bot_url"].as_str().unwrap().to_owned();
    let bot_path = bot_url
        .split_once("/api/apichat/")
        .map(|(_, id)| format!("/api/apichat/{id}"))
        .unwrap();
    let (status, read) = uchat(&api, "GET", &path, Some(&partner_key), None).await;
    assert_eq!(status, 200);
    assert_eq!(read, answer, "GET answers what POST set");
    // The operator may too; a partner the workspace did not enable may not.
    let (status, _) = uchat(&api, "GET", &path, Some(admin), None).await;
    assert_eq!(status, 200);
    let (status, e) = uchat(&api, "GET", &path, Some(&stranger_key), None).await;
    assert_eq!(status, 404, "{e}");
    let (status, _) = uchat(&api, "GET", &path, None, None).await;
    assert_eq!(status, 401);

    // The partner's system sends as its user through bot_url with the workspace's key.
    let ingress = stack.custom_url();
    let (status, sent) = uchat(
        &ingress,
        "POST",
        &bot_path,
        Some(&bot.api_key),
        Some(r#"{"user_id": "uc-501", "user_name": "Ana", "type": "text", "text": "hello"}"#),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["status"], "ok");
    let subscribed = stack.events_of("user.subscribed", 1).await;
    assert_eq!(subscribed[0].json()["user"]["display_name"], "Ana");
    let received = stack.events_of("message.received", 1).await;
    let event = received[0].json();
    assert_eq!(event["message"]["content"]["text"], "hello");
    assert_eq!(event["user"]["platform_user_id"], "uc-501");
    assert_eq!(event["channel"]["platform"], "custom");
    let user_id = event["user"]["id"].as_str().unwrap().to_owned();
    let conversation = event["conversation_id"].as_str().unwrap().to_owned();
    // A button's payload.
    let (status, _) = uchat(
        &ingress,
        "POST",
        &bot_path,
        Some(&bot.api_key),
        Some(r#"{"user_id": "uc-501", "type": "payload", "payload": "PLAN_A", "text": "Plan A"}"#),
    )
    .await;
    assert_eq!(status, 200);
    let received = stack.events_of("message.received", 2).await;
    assert_eq!(
        received[1].json()["message"]["content"],
        json!({"type": "postback", "payload": "PLAN_A", "title": "Plan A"})
    );

    // The bot answers with a button template: the webhook gets UChat's shape, signed.
    bot_sends(
        &stack,
        &bot.api_key,
        json!({"user_id": user_id, "messages": [{"type": "buttons", "text": "Pick one",
                "buttons": [{"type": "postback", "title": "Plan A", "payload": "PLAN_A"},
                            {"type": "url", "title": "Site", "url": "https://example.com"}]}]}),
    )
    .await;
    let got = hook.wait_for(1, TIMEOUT).await;
    let body = got[0].json();
    assert_eq!(
        got[0].header("x-uchat-signature").as_deref(),
        Some(signature(KEY, &got[0].body).as_str())
    );
    assert_eq!(body["type"], "bot", "{body}");
    assert_eq!(body["user_id"], "uc-501");
    assert_eq!(
        body["message"],
        json!({"type": "buttons", "text": "Pick one", "buttons": [
            {"type": "postback", "title": "Plan A", "payload": "PLAN_A"},
            {"type": "url", "title": "Site", "url": "https://example.com"}]})
    );
    // An agent takes over and answers: the webhook gets it as the agent's.
    let (status, _) = stack
        .call(
            "post",
            &format!("/v1/conversations/{conversation}/handover"),
            Some(&bot.api_key),
            Some(&json!({"to": "human", "agent": "Mia"})),
        )
        .await;
    assert_eq!(status, 200);
    bot_sends(
        &stack,
        &bot.api_key,
        json!({"user_id": user_id, "source": "human", "source_id": "agent-mia",
                         "messages": [{"type": "text", "text": "Mia here"}]}),
    )
    .await;
    let got = hook.wait_for(2, TIMEOUT).await;
    let agent = got[1].json();
    assert_eq!(agent["type"], "agent", "{agent}");
    assert_eq!(agent["agent_id"], "agent-mia");
    assert_eq!(
        agent["message"],
        json!({"type": "text", "text": "Mia here"})
    );

    // The bot_url refuses another bot's key (404, nothing learnt) and a missing one.
    let other = stack.bot().await;
    let hello = r#"{"user_id": "uc-501", "text": "x"}"#;
    let (status, _) = uchat(
        &ingress,
        "POST",
        &bot_path,
        Some(&other.api_key),
        Some(hello),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = uchat(&ingress, "POST", &bot_path, None, Some(hello)).await;
    assert_eq!(status, 401);
    let (status, e) = uchat(
        &ingress,
        "POST",
        &bot_path,
        Some(&bot.api_key),
        Some(r#"{"user_id": "uc-501", "type": "sticker"}"#),
    )
    .await;
    assert_eq!(status, 422, "{e}");

    // Removed: the webhook is gone, later answers are not pushed.
    let (status, removed) = uchat(&api, "DELETE", &path, Some(&partner_key), None).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed, json!({"status": "ok"}));
    let (status, _) = uchat(&api, "GET", &path, Some(&partner_key), None).await;
    assert_eq!(status, 200, "the channel stays, without a webhook");
    bot_sends(
        &stack,
        &bot.api_key,
        json!({"user_id": user_id, "source": "human", "source_id": "agent-mia",
                         "messages": [{"type": "text", "text": "after removal"}]}),
    )
    .await;
    // The message is sent (to no webhook): its journey ends sent, the hook got nothing more.
    eventually(TIMEOUT, "the send after removal to be done", || async {
        let (_, page) = stack
            .call(
                "get",
                &format!("/v1/conversations/{conversation}/messages"),
                Some(&bot.api_key),
                None,
            )
            .await;
        (page["messages"][0]["content"]["text"] == "after removal"
            && page["messages"][0]["status"] == "sent")
            .then_some(())
    })
    .await;
    assert_eq!(hook.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_first_sets_at_once_make_one_api_chat_channel() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let admin = stack.admin_token();
    let hooks = [FakeTenant::start().await, FakeTenant::start().await];
    for h in &hooks {
        h.expect_verify_token(KEY);
    }
    let api = stack.api_url();
    let path = format!("/api/partner/workspace/{}/apichat-webhook", bot.id);
    let set =
        |url: String| format!(r#"{{"webhook_url": "{url}", "webhook_verification_key": "{KEY}"}}"#);
    let (one, two) = (set(hooks[0].url()), set(hooks[1].url()));
    let ((s1, a1), (s2, a2)) = tokio::join!(
        uchat(&api, "POST", &path, Some(admin), Some(&one)),
        uchat(&api, "POST", &path, Some(admin), Some(&two)),
    );
    assert_eq!((s1, s2), (200, 200), "{a1} {a2}");
    assert_eq!(a1["data"]["bot_url"], a2["data"]["bot_url"], "one channel");
    let (_, channels) = stack
        .call("get", "/v1/channels", Some(&bot.api_key), None)
        .await;
    let custom = channels["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["platform"] == "custom")
        .count();
    assert_eq!(custom, 1, "{channels}");
}
