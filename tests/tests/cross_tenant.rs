//! Access control on every route, driven by the API's own OpenAPI document (so a new route is
//! covered, or this test fails): no credentials → 401 on every protected route; a bot key on
//! operator routes → 401, and the operator token on bot routes → 401; and a bot naming another
//! tenant's bot's resources (its event, key, user, code) never gets them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use patchbay_telegram::fixtures;
use patchbay_tests::{Options, Stack, TIMEOUT, TestBot, eventually};
use serde_json::{Value, json};

const PUBLIC_URL: &str = "https://patchbay.example";

/// Bot B's resources, which bot A must never reach.
struct Victim {
    bot: TestBot,
    event_id: String,
    /// The message of B's user's event.
    message_id: String,
    user_id: String,
    key_id: String,
    code: String,
    conversation_id: String,
    custom_channel: String,
    /// A file B uploaded (`POST /v1/media`).
    media_id: String,
    /// A template of B's registry.
    template_id: String,
    /// B's human agent.
    agent_id: String,
    /// B's custom channel of the BotDistrikt flavour.
    webchat_app_id: String,
    /// B's broadcast, scheduled for next year.
    broadcast_id: String,
}

async fn victim(stack: &Stack) -> Victim {
    let (status, tenant) = stack
        .call(
            "post",
            "/admin/v1/tenants",
            Some(stack.admin_token()),
            Some(&json!({"name": "Other tenant"})),
        )
        .await;
    assert_eq!(status, 201, "{tenant}");
    let bot = stack.bot_in(tenant["id"].as_str().unwrap()).await;
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(1, 7700, "secret"))
            .await,
        200
    );
    let event = eventually(TIMEOUT, "B's event", || async {
        stack
            .tenant
            .received()
            .into_iter()
            .map(|r| r.json())
            .find(|e| e["bot_id"] == bot.id && e["type"] == "message.received")
    })
    .await;
    let user_id = event["user"]["id"].as_str().unwrap().to_owned();
    let conversation_id = event["conversation_id"].as_str().unwrap().to_owned();
    // Channel-scoped credentials (custom channels' keys and user tokens) are refused on
    // another channel in custom_channels.rs, whichever tenant owns it.
    let (custom_channel, _, _) = stack.custom_channel(&bot, None).await;
    let (status, rotated) = stack
        .call(
            "post",
            "/v1/keys/rotate",
            Some(&bot.api_key),
            Some(&json!({"overlap_seconds": 3600})),
        )
        .await;
    assert_eq!(status, 201, "{rotated}");
    // A one-time code for B's user: a `:code` button, its link opened by the user's browser.
    let (status, _) = stack
        .call(
            "post",
            "/v1/messages",
            Some(&bot.api_key),
            Some(
                &json!({"user_id": user_id, "messages": [{"type": "buttons", "text": "open",
                     "buttons": [{"type": "url", "title": "Go",
                                  "url": "https://shop.example/?c=:code"}]}]}),
            ),
        )
        .await;
    assert_eq!(status, 202);
    let link = eventually(TIMEOUT, "the link reaches Telegram", || async {
        let call = stack
            .telegram
            .calls_of("sendMessage")
            .into_iter()
            .find(|c| c.body["text"] == "open")?;
        call.body["reply_markup"]["inline_keyboard"][0][0]["url"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    let location = stack.open_link(&link).await;
    let code = location.rsplit("c=").next().unwrap().to_owned();
    let upload = stack
        .http
        .post(format!("{}/v1/media", stack.api_url()))
        .bearer_auth(&bot.api_key)
        .header("content-type", "multipart/form-data; boundary=B0UNDARY")
        .body(
            "--B0UNDARY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"secret.png\"\r\n\
             Content-Type: image/png\r\n\r\nB's secret picture\r\n--B0UNDARY--\r\n",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status().as_u16(), 201);
    let uploaded: Value = upload.json().await.unwrap();
    let media_id = uploaded["media_id"].as_str().unwrap().to_owned();
    let (status, template) = stack
        .call(
            "post",
            "/v1/templates",
            Some(&bot.api_key),
            Some(&json!({"name": "b_only", "text": "B's secret offer"})),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    let template_id = template["id"].as_str().unwrap().to_owned();
    let (status, agent) = stack
        .call(
            "post",
            "/v1/agents",
            Some(&bot.api_key),
            Some(&json!({"name": "B's agent"})),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let (status, webchat) = stack
        .call(
            "post",
            &format!("/admin/v1/bots/{}/channels", bot.id),
            Some(stack.admin_token()),
            Some(&json!({"platform": "custom", "flavour": "botdistrikt",
                         "credentials": {"domain_key": "https://b-only-secret.app.link"}})),
        )
        .await;
    assert_eq!(status, 201, "{webchat}");
    let (status, broadcast) = stack
        .call(
            "post",
            "/v1/broadcasts",
            Some(&bot.api_key),
            Some(
                &json!({"audience": {"users": [user_id]}, "start_at": "2099-01-01T00:00:00Z",
                         "messages": [{"type": "text", "text": "B's secret sale"}]}),
            ),
        )
        .await;
    assert_eq!(status, 202, "{broadcast}");
    Victim {
        broadcast_id: broadcast["id"].as_str().unwrap().to_owned(),
        webchat_app_id: webchat["generated"]["webchat_app_id"]
            .as_str()
            .unwrap()
            .to_owned(),
        agent_id: agent["id"].as_str().unwrap().to_owned(),
        bot,
        event_id: event["id"].as_str().unwrap().to_owned(),
        message_id: event["message"]["id"].as_str().unwrap().to_owned(),
        user_id,
        key_id: rotated["key_id"].as_str().unwrap().to_owned(),
        code,
        conversation_id,
        custom_channel,
        media_id,
        template_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_lets_a_caller_past_its_rights() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| c.public_url = PUBLIC_URL.into()),
        ..Options::default()
    })
    .await;
    let attacker = stack.bot().await;
    // A's own user, to send B's upload to.
    stack
        .post_update(
            &attacker,
            &patchbay_tests::fixtures::text_update(77001, 7801, "hi"),
        )
        .await;
    let attacker_user = eventually(TIMEOUT, "A's user stored", || async {
        let (status, user) = stack
            .call(
                "get",
                "/v1/users?platform=telegram&platform_user_id=7801",
                Some(&attacker.api_key),
                None,
            )
            .await;
        (status == 200).then(|| user["id"].as_str().unwrap().to_owned())
    })
    .await;
    let b = victim(&stack).await;
    // A partner app B enabled on its bot.
    let (_, partner) = stack
        .call(
            "post",
            "/admin/v1/partners",
            Some(stack.admin_token()),
            Some(&json!({"name": "Partner"})),
        )
        .await;
    let partner_key = partner["api_key"].as_str().unwrap().to_owned();
    let (_, app) = stack
        .call(
            "post",
            "/v1/partner/apps",
            Some(&partner_key),
            Some(&json!({"name": "App", "callback_url": stack.tenant.url(),
                         "events": ["message.*"], "scopes": ["messages:send"]})),
        )
        .await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    let (status, installation) = stack
        .call(
            "post",
            &format!("/v1/apps/{app_id}/enable"),
            Some(&b.bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{installation}");
    let installation_id = installation["id"].as_str().unwrap().to_owned();
    let (_, doc) = stack.call("get", "/openapi.json", None, None).await;
    let paths = doc["paths"].as_object().unwrap();

    // Every operation's path with its parameters filled in with B's resources.
    let fill = |path: &str| {
        path.replace("{bot_id}", &b.bot.id)
            .replace("{event_id}", &b.event_id)
            .replace("{message_id}", &b.message_id)
            .replace("{user_id}", &b.user_id)
            .replace("{key_id}", &b.key_id)
            .replace("{token}", "unknown-token")
            .replace("{conversation_id}", &b.conversation_id)
            .replace("{file_id}", "1")
            .replace("{channel_id}", &b.custom_channel)
            .replace("{media_id}", &b.media_id)
            .replace("{template_id}", &b.template_id)
            .replace("{agent_id}", &b.agent_id)
            .replace("{broadcast_id}", &b.broadcast_id)
            .replace("{webchat_app_id}", &b.webchat_app_id)
            .replace("{instance}", &format!("instance{}", b.bot.channel_id))
            .replace("{method}", "webhook")
            .replace("{app_id}", &app_id)
            .replace("{installation_id}", &installation_id)
            .replace("{workspace_id}", &b.bot.id)
    };
    let mut checked = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let url = fill(path);
            assert!(
                !url.contains('{'),
                "add a value for the parameters of {path}"
            );
            let scheme = op["security"][0]
                .as_object()
                .and_then(|s| s.keys().next().cloned());
            let body = op.get("requestBody").map(|_| json!({}));
            let Some(scheme) = scheme else {
                continue;
            };
            let (status, answer) = stack.call(method, &url, None, body.as_ref()).await;
            assert_eq!(status, 401, "{method} {path} without credentials: {answer}");
            let wrong = match scheme.as_str() {
                "operatorToken" => Some(attacker.api_key.clone()),
                "botApiKey" | "web1on1Token" => Some(stack.admin_token().to_owned()),
                "customDomainKey" | "customUserToken" | "partnerKey" | "uchatPartner" => {
                    Some(attacker.api_key.clone())
                }
                "uchatFlowKey" => Some(stack.admin_token().to_owned()),
                // These routes read `?bot=` and `X-Chat-Signature`, never a bearer token:
                // there is no other kind of token to try (brandchat.rs covers their rules).
                // BotDistrikt's read a domain in the body and a raw webchat_id (botdistrikt.rs).
                // chat-api's read `?token=`, which no bearer token reaches (chat_api.rs).
                "brandchatSignature" | "botdistriktDomain" | "chatApiToken" => None,
                other => panic!("unknown security scheme {other}"),
            };
            if let Some(wrong) = wrong {
                let (status, answer) = stack.call(method, &url, Some(&wrong), body.as_ref()).await;
                assert_eq!(
                    status, 401,
                    "{method} {path} with the wrong kind of token: {answer}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} protected operations found");
    println!("{checked} protected operations refuse missing and wrong credentials");

    // Bot A names B's resources on every bot route that takes a resource: never a 2xx, and
    // never B's data. A new bot route with a path parameter must be added here.
    let attempts: Vec<(&str, String, Option<Value>)> = vec![
        ("get", format!("/v1/deliveries/{}", b.event_id), None),
        (
            "get",
            format!("/v1/messages/{}/journey", b.message_id),
            None,
        ),
        ("post", format!("/v1/deliveries/{}/retry", b.event_id), None),
        ("get", format!("/v1/channels/{}", b.bot.channel_id), None),
        (
            "get",
            format!("/v1/channels/{}/profile", b.bot.channel_id),
            None,
        ),
        (
            "patch",
            format!("/v1/channels/{}/profile", b.bot.channel_id),
            Some(json!({"name": "stolen"})),
        ),
        ("get", format!("/v1/users/{}", b.user_id), None),
        (
            "patch",
            format!("/v1/users/{}", b.user_id),
            Some(json!({"fields": {"licenseplate": "stolen"}})),
        ),
        (
            "get",
            "/v1/users?platform=telegram&platform_user_id=7700".into(),
            None,
        ),
        ("delete", format!("/v1/keys/{}", b.key_id), None),
        (
            "get",
            format!("/v1/conversations/{}/messages", b.conversation_id),
            None,
        ),
        (
            "post",
            format!("/v1/conversations/{}/handover", b.conversation_id),
            Some(json!({"to": "human", "agent": "Mallory"})),
        ),
        (
            "post",
            "/v1/messages".into(),
            Some(json!({"user_id": b.user_id, "messages": [{"type": "text", "text": "x"}]})),
        ),
        (
            "post",
            "/v1/codes/claim".into(),
            Some(json!({"code": b.code})),
        ),
        ("get", format!("/v1/media/{}", b.media_id), None),
        ("get", format!("/v1/templates/{}", b.template_id), None),
        (
            "put",
            format!("/v1/templates/{}", b.template_id),
            Some(json!({"name": "stolen", "text": "x"})),
        ),
        ("delete", format!("/v1/templates/{}", b.template_id), None),
        ("delete", format!("/v1/agents/{}", b.agent_id), None),
        ("get", format!("/v1/broadcasts/{}", b.broadcast_id), None),
        (
            "post",
            format!("/v1/broadcasts/{}/cancel", b.broadcast_id),
            None,
        ),
        (
            "post",
            format!("/v1/broadcasts/{}/pause", b.broadcast_id),
            None,
        ),
        (
            "post",
            format!("/v1/broadcasts/{}/resume", b.broadcast_id),
            None,
        ),
        (
            "post",
            "/v1/broadcasts".into(),
            Some(json!({"audience": {"users": [b.user_id]},
                        "messages": [{"type": "text", "text": "x"}]})),
        ),
        (
            "post",
            "/v1/broadcasts".into(),
            Some(json!({"audience": {"channels": [b.bot.channel_id]},
                        "messages": [{"type": "text", "text": "x"}]})),
        ),
        (
            "post",
            format!("/v1/channels/{}/try", b.bot.channel_id),
            Some(json!({"text": "forged"})),
        ),
        // A's bot never enabled B's app: nothing to disable, and B's channel is not A's.
        ("delete", format!("/v1/apps/{app_id}"), None),
        (
            "post",
            format!("/v1/apps/{app_id}/enable"),
            Some(json!({"channels": [b.bot.channel_id]})),
        ),
        (
            "post",
            format!("/v1/users/{}/tokens/revoke", b.user_id),
            None,
        ),
        (
            "post",
            format!("/v1/channels/{}/tokens/revoke", b.custom_channel),
            None,
        ),
        (
            "post",
            "/v1/messages".into(),
            Some(json!({"user_id": attacker_user, "messages": [
                {"type": "image", "media_id": b.media_id}]})),
        ),
        (
            "get",
            format!("/web1on1/v2/conversations/{}", b.conversation_id),
            None,
        ),
        (
            "post",
            format!("/web1on1/v2/conversations/{}/messages", b.conversation_id),
            Some(json!({"text": "x"})),
        ),
        // B's bot named as the organisation of a send with A's key.
        (
            "post",
            "/web1on1/v2/conversations".into(),
            Some(json!({"organization": b.bot.id, "type": "contact",
                        "contact": {"profile": {"telephone": "+31619626759"}},
                        "messages": [{"text": "x"}]})),
        ),
    ];
    let parametrised: BTreeSet<String> = paths
        .iter()
        .filter(|(p, ops)| {
            p.contains('{')
                && ops.as_object().unwrap().values().any(|op| {
                    op["security"][0].get("botApiKey").is_some()
                        || op["security"][0].get("web1on1Token").is_some()
                })
        })
        .map(|(p, _)| p.clone())
        .collect();
    let covered: BTreeSet<String> = [
        "/v1/deliveries/{event_id}",
        "/v1/deliveries/{event_id}/retry",
        "/v1/users/{user_id}",
        "/v1/keys/{key_id}",
        "/v1/conversations/{conversation_id}/messages",
        "/v1/conversations/{conversation_id}/handover",
        "/v1/messages/{message_id}/journey",
        "/v1/media/{media_id}",
        "/v1/users/{user_id}/tokens/revoke",
        "/v1/channels/{channel_id}/tokens/revoke",
        "/v1/channels/{channel_id}",
        "/v1/channels/{channel_id}/profile",
        "/v1/templates/{template_id}",
        "/v1/agents/{agent_id}",
        "/v1/broadcasts/{broadcast_id}",
        "/v1/broadcasts/{broadcast_id}/cancel",
        "/v1/broadcasts/{broadcast_id}/pause",
        "/v1/broadcasts/{broadcast_id}/resume",
        "/v1/channels/{channel_id}/try",
        "/v1/apps/{app_id}",
        "/v1/apps/{app_id}/enable",
        "/web1on1/v2/conversations/{conversation_id}",
        "/web1on1/v2/conversations/{conversation_id}/messages",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(
        parametrised, covered,
        "a bot route takes a resource this test does not try across bots"
    );
    for (method, path, body) in &attempts {
        let (status, answer) = stack
            .call(method, path, Some(&attacker.api_key), body.as_ref())
            .await;
        assert!(
            [403, 404, 410, 422].contains(&status)
                && (status != 403 || answer["error"]["code"] == "organization_mismatch"),
            "{method} {path} with another bot's resource answered {status}: {answer}"
        );
        assert!(
            !answer.to_string().contains("secret"),
            "{method} {path} leaked B's data: {answer}"
        );
    }
    // B's app is still enabled.
    let (_, apps) = stack
        .call("get", "/v1/apps", Some(&b.bot.api_key), None)
        .await;
    assert_eq!(apps["items"][0]["id"], installation_id.as_str(), "{apps}");
    // B's own key and code still work afterwards: nothing was spent by the attempts.
    let (status, _) = stack
        .call(
            "get",
            &format!("/v1/users/{}", b.user_id),
            Some(&b.bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, profile) = stack
        .call(
            "post",
            "/v1/codes/claim",
            Some(&b.bot.api_key),
            Some(&json!({"code": b.code})),
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    let (status, _) = stack
        .call("get", "/v1/webhook", Some(&b.bot.api_key), None)
        .await;
    assert_eq!(status, 200, "B's key was revoked by another bot");
    let (status, kept) = stack
        .call(
            "get",
            &format!("/v1/templates/{}", b.template_id),
            Some(&b.bot.api_key),
            None,
        )
        .await;
    assert_eq!(
        status, 200,
        "B's template was deleted by another bot: {kept}"
    );
    assert_eq!(kept["name"], "b_only", "changed by another bot: {kept}");
    let (status, kept) = stack
        .call(
            "get",
            &format!("/v1/broadcasts/{}", b.broadcast_id),
            Some(&b.bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["state"], "scheduled", "changed by another bot: {kept}");
    let (_, agents) = stack
        .call("get", "/v1/agents", Some(&b.bot.api_key), None)
        .await;
    assert_eq!(
        agents["data"][0]["id"],
        b.agent_id.as_str(),
        "B's agent was revoked by another bot: {agents}"
    );

    stack.shutdown().await;
}
