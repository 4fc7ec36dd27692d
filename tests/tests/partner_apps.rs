//! Partner apps end to end (real NATS and PostgreSQL): the operator adds a partner; the
//! partner publishes an app; two organisations enable it, one on all its bot's channels, one
//! on some; the events of every enabling bot (on its enabled channels only) reach the
//! partner's callback signed with the app's secret and naming the installation and the
//! organisation, apart from the bot's own webhook; the partner's answer is sent for the bot;
//! the partner sends on a bot's behalf with an installation's token only through its
//! channels; another partner reaches none of it; and an organisation that disables the app
//! stops both its events and its tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_telegram::fixtures;
use patchbay_testkit::tenant::{FakeTenant, verify_standard_webhook};
use patchbay_tests::{Stack, TIMEOUT, TestBot, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn tenant(stack: &Stack, name: &str) -> String {
    let (status, t) = stack
        .call(
            "post",
            "/admin/v1/tenants",
            Some(stack.admin_token()),
            Some(&json!({"name": name})),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    t["id"].as_str().unwrap().to_owned()
}

async fn partner(stack: &Stack, name: &str) -> String {
    let (status, p) = stack
        .call(
            "post",
            "/admin/v1/partners",
            Some(stack.admin_token()),
            Some(&json!({"name": name})),
        )
        .await;
    assert_eq!(status, 201, "{p}");
    assert!(p["id"].as_str().unwrap().starts_with("ptn_"), "{p}");
    p["api_key"].as_str().unwrap().to_owned()
}

/// The events the partner received for `bot`.
fn for_bot(partner: &FakeTenant, bot: &TestBot) -> Vec<Value> {
    partner
        .received()
        .into_iter()
        .map(|r| r.json())
        .filter(|e| e["bot_id"] == bot.id.as_str())
        .collect()
}

/// Waits until `bot`'s own webhook has `n` `message.received` events: a barrier for "and the
/// partner got nothing more" (the router publishes the partner's copy first).
async fn own_events(stack: &Stack, bot: &TestBot, n: usize) {
    eventually(TIMEOUT, "the bot's own events", || async {
        let got = stack
            .tenant
            .received()
            .into_iter()
            .filter(|r| {
                let e = r.json();
                e["bot_id"] == bot.id.as_str() && e["type"] == "message.received"
            })
            .count();
        (got >= n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_app_enabled_by_two_organisations_gets_their_events_and_sends_only_where_enabled()
{
    let stack = Stack::start().await;
    let crm = FakeTenant::start().await;
    // The partner's callback answers a user's message for the bot.
    crm.respond_with(|r| {
        let e = r.json();
        if e["type"] == "message.received" && e["message"]["content"]["text"] == "call me" {
            (
                StatusCode::OK,
                Some(json!({"messages": [{"type": "text", "text": "CRM: we will call you"}]})),
            )
        } else {
            (StatusCode::OK, None)
        }
    });
    let key = partner(&stack, "Acme CRM").await;
    let (status, app) = stack
        .call(
            "post",
            "/v1/partner/apps",
            Some(&key),
            Some(
                &json!({"name": "CRM sync", "description": "Every chat in your CRM",
                         "callback_url": crm.url(), "events": ["message.received"],
                         "scopes": ["messages:send", "users:read"]}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    let app_id = app["id"].as_str().unwrap().to_owned();
    let secret = app["webhook_secret"].as_str().unwrap().to_owned();
    assert_eq!(app["partner_name"], "Acme CRM");
    let (status, bad) = stack
        .call(
            "post",
            "/v1/partner/apps",
            Some(&key),
            Some(
                &json!({"name": "x", "callback_url": crm.url(), "events": ["message.*"],
                         "scopes": ["settings:keys"]}),
            ),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("scopes: settings:keys is never granted"),
        "{bad}"
    );

    // Two organisations enable it: A on all its channels, B on its custom channel only.
    let (tenant_a, tenant_b) = (tenant(&stack, "Org A").await, tenant(&stack, "Org B").await);
    let a = stack.bot_in(&tenant_a).await;
    let b = stack.bot_in(&tenant_b).await;
    let (b_custom, _, _) = stack.custom_channel(&b, None).await;
    let (status, card) = stack
        .call("get", &format!("/v1/apps/{app_id}"), Some(&a.api_key), None)
        .await;
    assert_eq!(status, 200, "{card}");
    assert_eq!(card["scopes"], json!(["messages:send", "users:read"]));
    let enable = format!("/v1/apps/{app_id}/enable");
    let (status, ins_a) = stack.call("post", &enable, Some(&a.api_key), None).await;
    assert_eq!(status, 200, "{ins_a}");
    assert_eq!(ins_a["tenant_id"], tenant_a.as_str());
    assert!(ins_a.get("channels").is_none(), "{ins_a}");
    // A channel of another bot is not B's to enable.
    let (status, refused) = stack
        .call(
            "post",
            &enable,
            Some(&b.api_key),
            Some(&json!({"channels": [a.channel_id]})),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    let (status, ins_b) = stack
        .call(
            "post",
            &enable,
            Some(&b.api_key),
            Some(&json!({"channels": [b_custom]})),
        )
        .await;
    assert_eq!(status, 200, "{ins_b}");
    assert_eq!(ins_b["channels"], json!([b_custom]));
    let (status, listed) = stack
        .call("get", "/v1/partner/installations", Some(&key), None)
        .await;
    assert_eq!(status, 200, "{listed}");
    let tenants: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["tenant_id"].as_str().unwrap())
        .collect();
    assert_eq!(tenants.len(), 2, "{listed}");
    assert!(tenants.contains(&tenant_a.as_str()) && tenants.contains(&tenant_b.as_str()));

    // A user writes to A: the bot's own webhook and the partner both get it, each signed
    // with its own secret; the partner's copy names the installation and the organisation.
    assert_eq!(
        stack
            .post_update(&a, &fixtures::text_update(7001, 5101, "call me"))
            .await,
        200
    );
    own_events(&stack, &a, 1).await;
    let got = crm.wait_for(1, TIMEOUT).await;
    verify_standard_webhook(&secret, &got[0]).expect("signed with the app's secret");
    assert!(verify_standard_webhook(&a.webhook_secret, &got[0]).is_err());
    let copy = got[0].json();
    assert_eq!(copy["bot_id"], a.id.as_str());
    assert_eq!(
        copy["installation"],
        json!({"id": ins_a["id"], "app_id": app_id, "tenant_id": tenant_a})
    );
    let own: Vec<Value> = stack.tenant.received().iter().map(|r| r.json()).collect();
    let own = own
        .iter()
        .find(|e| e["bot_id"] == a.id.as_str() && e["type"] == "message.received")
        .unwrap();
    assert_ne!(own["id"], copy["id"], "the copy has its own id");
    assert!(own.get("installation").is_none());
    // The partner's answer went to the user, for the bot.
    eventually(TIMEOUT, "the partner's answer at Telegram", || async {
        stack
            .telegram
            .calls_of("sendMessage")
            .into_iter()
            .find(|c| c.token == a.bot_token && c.body["text"] == "CRM: we will call you")
    })
    .await;
    let user_a = copy["user"]["id"].as_str().unwrap().to_owned();

    // A user writes to B's Telegram channel, where the app is not enabled: nothing for it.
    assert_eq!(
        stack
            .post_update(&b, &fixtures::text_update(7002, 5102, "hello"))
            .await,
        200
    );
    own_events(&stack, &b, 1).await;
    let user_b = stack
        .tenant
        .received()
        .iter()
        .map(|r| r.json())
        .find(|e| e["bot_id"] == b.id.as_str() && e["type"] == "message.received")
        .unwrap()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(for_bot(&crm, &b).is_empty());

    // The partner sends for A with A's installation's token; B's token sends only through
    // B's custom channel.
    let token = |ins: &Value| {
        let path = format!(
            "/v1/partner/installations/{}/token",
            ins["id"].as_str().unwrap()
        );
        let stack = &stack;
        let key = key.clone();
        async move { stack.call("post", &path, Some(&key), None).await }
    };
    let (status, t_a) = token(&ins_a).await;
    assert_eq!(status, 200, "{t_a}");
    assert_eq!(t_a["bot_id"], a.id.as_str());
    assert_eq!(t_a["scopes"], json!(["messages:send", "users:read"]));
    let token_a = t_a["access_token"].as_str().unwrap().to_owned();
    let send = |token: String, user: String, text: &'static str| {
        let stack = &stack;
        async move {
            stack
                .call(
                    "post",
                    "/v1/messages",
                    Some(&token),
                    Some(&json!({"user_id": user, "messages": [{"type": "text", "text": text}]})),
                )
                .await
        }
    };
    let (status, sent) = send(token_a.clone(), user_a.clone(), "from the CRM").await;
    assert_eq!(status, 202, "{sent}");
    eventually(TIMEOUT, "the partner's message at Telegram", || async {
        stack
            .telegram
            .calls_of("sendMessage")
            .into_iter()
            .find(|c| c.token == a.bot_token && c.body["text"] == "from the CRM")
    })
    .await;
    // Its scopes are the app's: no webhook settings.
    let (status, body) = stack.call("get", "/v1/webhook", Some(&token_a), None).await;
    assert_eq!(status, 403, "{body}");
    let (_, t_b) = token(&ins_b).await;
    let token_b = t_b["access_token"].as_str().unwrap().to_owned();
    assert_eq!(t_b["channels"], json!([b_custom]));
    let (status, body) = send(token_b.clone(), user_b.clone(), "not here").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "channel_not_enabled", "{body}");
    // A's token is A's: B's user is not there.
    let (status, body) = send(token_a.clone(), user_b.clone(), "x").await;
    assert_eq!(status, 404, "{body}");

    // Another partner reaches none of it.
    let other = partner(&stack, "Other").await;
    for (method, path) in [
        ("get", format!("/v1/partner/apps/{app_id}")),
        ("delete", format!("/v1/partner/apps/{app_id}")),
        (
            "post",
            format!(
                "/v1/partner/installations/{}/token",
                ins_a["id"].as_str().unwrap()
            ),
        ),
    ] {
        let (status, body) = stack.call(method, &path, Some(&other), None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (status, body) = stack
        .call(
            "put",
            &format!("/v1/partner/apps/{app_id}"),
            Some(&other),
            Some(
                &json!({"name": "stolen", "callback_url": "https://evil.example/hook",
                         "events": ["*"], "scopes": ["users:read"]}),
            ),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, none) = stack
        .call("get", "/v1/partner/installations", Some(&other), None)
        .await;
    assert_eq!(none["items"], json!([]));

    // A sees what it enabled and disables it: the token stops working, events stop.
    let (status, mine) = stack.call("get", "/v1/apps", Some(&a.api_key), None).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    assert_eq!(mine["items"][0]["app_id"], app_id.as_str());
    let (status, _) = stack
        .call(
            "delete",
            &format!("/v1/apps/{app_id}"),
            Some(&a.api_key),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = send(token_a, user_a, "after").await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = token(&ins_a).await;
    assert_eq!(status, 404);
    let before = for_bot(&crm, &a).len();
    assert_eq!(
        stack
            .post_update(&a, &fixtures::text_update(7003, 5101, "still there?"))
            .await,
        200
    );
    own_events(&stack, &a, 2).await;
    assert_eq!(for_bot(&crm, &a).len(), before);
    let (status, _) = stack
        .call(
            "delete",
            &format!("/v1/apps/{app_id}"),
            Some(&a.api_key),
            None,
        )
        .await;
    assert_eq!(status, 404, "not enabled any more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_partner_callback_holds_up_nothing_of_the_bots_own() {
    let stack = Stack::start().await;
    let crm = FakeTenant::start().await;
    // The partner's callback is down.
    crm.respond_with(|_| (StatusCode::SERVICE_UNAVAILABLE, None));
    let key = partner(&stack, "Down CRM").await;
    let (status, app) = stack
        .call(
            "post",
            "/v1/partner/apps",
            Some(&key),
            Some(&json!({"name": "Down", "callback_url": crm.url(),
                         "events": ["message.received"], "scopes": ["users:read"]})),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    let bot = stack.bot().await;
    let (status, _) = stack
        .call(
            "post",
            &format!("/v1/apps/{}/enable", app["id"].as_str().unwrap()),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200);

    // The bot's own webhook gets every message, in order, while the partner's copies fail.
    for (i, text) in ["one", "two", "three"].into_iter().enumerate() {
        let update = fixtures::text_update(8001 + i as i64, 5201, text);
        assert_eq!(stack.post_update(&bot, &update).await, 200);
    }
    own_events(&stack, &bot, 3).await;
    let texts: Vec<Value> = stack
        .tenant
        .received()
        .iter()
        .map(|r| r.json())
        .filter(|e| e["bot_id"] == bot.id.as_str() && e["type"] == "message.received")
        .map(|e| e["message"]["content"]["text"].clone())
        .collect();
    assert_eq!(texts, [json!("one"), json!("two"), json!("three")]);
    // The partner was tried (and failed); its first copy waits for its retry, the later ones
    // queue behind it in the partner's own lane.
    let tried = crm.wait_for(1, TIMEOUT).await;
    assert_eq!(tried[0].json()["message"]["content"]["text"], "one");
    assert!(!tried[0].delivered());
    // The bot's delivery log is its own webhook's: three delivered, no partner copy.
    let log = eventually(TIMEOUT, "three deliveries logged", || async {
        let (status, log) = stack
            .call("get", "/v1/deliveries", Some(&bot.api_key), None)
            .await;
        assert_eq!(status, 200, "{log}");
        let items = log["items"].as_array().unwrap();
        let delivered = items.iter().filter(|d| d["status"] == "delivered").count();
        (delivered >= 3).then_some(log)
    })
    .await;
    assert_eq!(log["items"].as_array().unwrap().len(), 3, "{log}");
}
