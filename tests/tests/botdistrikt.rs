//! BotDistrikt's webchat API ("Other Channels") on a custom channel of the `botdistrikt`
//! flavour, as the seed document describes it: a user registered with the channel's custom
//! domain (the seed's own example domain and sample `webchat_id`), a message sent as them with
//! `Authorization: <webchat_id>` answered with the bot's responses, form-encoded bodies as well
//! as JSON, refusals (another domain, an unknown or revoked `webchat_id`), and the event
//! webhook's `X-BotDistrikt-Source` for an agent's message.

use patchbay_testkit::tenant::FakeTenant;
use patchbay_tests::{Stack, TIMEOUT, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The seed's example of a good custom domain.
const DOMAIN: &str = "https://a9sn38h.app.link";

async fn post(
    stack: &Stack,
    path: &str,
    authorization: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut req = patchbay_testkit::http_client()
        .post(format!("{}{path}", stack.custom_url()))
        .json(body);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_botdistrikt_app_registers_a_user_and_talks_to_the_bot_unchanged() {
    let stack = Stack::start().await;
    let bot = stack.bot_with_events(Some(vec!["*"])).await;
    stack.tenant.respond_with(|r| {
        let e = r.json();
        match e["message"]["content"]["text"].as_str() {
            Some(text) if e["type"] == "message.received" => (
                StatusCode::OK,
                Some(json!({"messages": [{"type": "text", "text": format!("bot: {text}")}]})),
            ),
            _ => (StatusCode::OK, None),
        }
    });
    let events = FakeTenant::start().await;
    let (status, channel) = stack
        .call(
            "post",
            &format!("/admin/v1/bots/{}/channels", bot.id),
            Some(stack.admin_token()),
            Some(&json!({"platform": "custom", "flavour": "botdistrikt",
                         "credentials": {"domain_key": DOMAIN,
                                         "event_webhook_url": events.url()}})),
        )
        .await;
    assert_eq!(status, 201, "{channel}");
    let app = channel["generated"]["webchat_app_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app, channel["id"].as_str().unwrap());
    // Only custom channels have flavours.
    let (status, refused) = stack
        .call(
            "post",
            &format!("/admin/v1/bots/{}/channels", bot.id),
            Some(stack.admin_token()),
            Some(&json!({"platform": "telegram", "flavour": "botdistrikt",
                         "credentials": {"bot_token": "1:a", "secret_token": "s"}})),
        )
        .await;
    assert_eq!(status, 422, "{refused}");

    // Register, as the seed documents it: domain, the sample webchat_id, a bot_user.
    let user_path = format!("/api/webchat_apps/{app}/user");
    let (status, user) = post(
        &stack,
        &user_path,
        None,
        &json!({"domain": DOMAIN, "webchat_id": "webchat.zbqr0d",
                "user": {"first_name": "Ada", "last_name": "Lovelace", "gender": "female"}}),
    )
    .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["webchat_id"], "webchat.zbqr0d");
    assert_eq!(user["first_name"], "Ada");
    assert_eq!(user["channel"], "web");
    assert_eq!(user["active"], true);
    let subscribed = stack.events_of("user.subscribed", 1).await[0].json();
    assert_eq!(subscribed["user"]["display_name"], "Ada Lovelace");
    // The same id again: the same user, nothing new published.
    let (status, again) = post(
        &stack,
        &user_path,
        None,
        &json!({"domain": DOMAIN, "webchat_id": "webchat.zbqr0d"}),
    )
    .await;
    assert_eq!((status, &again["user_id"]), (200, &user["user_id"]));
    // Another domain is no password.
    let (status, bad) = post(
        &stack,
        &user_path,
        None,
        &json!({"domain": "https://app.mywebsite.com"}),
    )
    .await;
    assert_eq!(status, 401, "{bad}");
    assert_eq!(bad["error"]["code"], "invalid_domain");

    // Send as the user: the bot's responses come back in the answer.
    let message_path = format!("/api/webchat_apps/{app}/message");
    let (status, responses) = post(
        &stack,
        &message_path,
        Some("webchat.zbqr0d"),
        &json!({"domain": DOMAIN, "user": user, "message": {"text": "hello"}}),
    )
    .await;
    assert_eq!(status, 200, "{responses}");
    assert_eq!(responses[0]["text"], "bot: hello", "{responses}");
    assert_eq!(responses[0]["message_type"], "text");
    assert_eq!(responses[0]["source"], "bot");
    let received = stack.events_of("message.received", 1).await[0].json();
    assert_eq!(received["user"]["id"], user["user_id"]);
    // Without the user, or as a user nobody registered: refused, nothing sent.
    for (auth, code) in [
        (None, "unauthorized"),
        (Some("webchat.nobody"), "unknown_webchat_id"),
    ] {
        let (status, answer) = post(
            &stack,
            &message_path,
            auth,
            &json!({"domain": DOMAIN, "message": {"text": "sneaky"}}),
        )
        .await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"]["code"], code);
    }

    // A form-encoded app: a generated webchat_id, a tapped button.
    let form = patchbay_testkit::http_client();
    let r = form
        .post(format!("{}{user_path}", stack.custom_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("domain=https%3A%2F%2Fa9sn38h.app.link&user%5Bfirst_name%5D=Bo")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bo: Value = r.json().await.unwrap();
    let bo_id = bo["webchat_id"].as_str().unwrap().to_owned();
    assert!(bo_id.starts_with("webchat."), "{bo}");
    let r = form
        .post(format!("{}{message_path}", stack.custom_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", &bo_id)
        .body(
            "domain=https%3A%2F%2Fa9sn38h.app.link&message%5Btext%5D=Yes&message%5Bpayload%5D=YES",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let postback = stack.events_of("message.received", 2).await[1].json();
    assert_eq!(
        postback["message"]["content"]["type"], "postback",
        "{postback}"
    );
    assert_eq!(postback["message"]["content"]["payload"], "YES");

    // An agent answers Ada: the event webhook says so the BotDistrikt way.
    let (_, agent) = stack
        .call(
            "post",
            "/v1/agents",
            Some(&bot.api_key),
            Some(&json!({"name": "Ana"})),
        )
        .await;
    let invite = agent["invite"].as_str().unwrap();
    let (status, _) = stack
        .call(
            "post",
            "/v1/messages",
            Some(invite),
            Some(&json!({"user_id": user["user_id"],
                         "messages": [{"type": "text", "text": "Ana here"}]})),
        )
        .await;
    assert_eq!(status, 202);
    let pushed = eventually(
        TIMEOUT,
        "the agent's message at the event webhook",
        || async {
            events
                .received()
                .into_iter()
                .find(|r| r.json()["content"]["text"] == "Ana here")
        },
    )
    .await;
    assert_eq!(
        pushed.header("x-botdistrikt-source").as_deref(),
        Some("human")
    );
    assert_eq!(
        pushed.header("x-botdistrikt-source-id").as_deref(),
        agent["id"].as_str()
    );
    assert_eq!(pushed.header("x-patchbay-source").as_deref(), Some("human"));

    // Revoked, Ada's webchat_id stops working, for messages and registration alike.
    let (status, _) = stack
        .call(
            "post",
            &format!(
                "/v1/users/{}/tokens/revoke",
                user["user_id"].as_str().unwrap()
            ),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, answer) = post(
        &stack,
        &message_path,
        Some("webchat.zbqr0d"),
        &json!({"domain": DOMAIN, "message": {"text": "still me"}}),
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "webchat_id_revoked");
    let (status, _) = post(
        &stack,
        &user_path,
        None,
        &json!({"domain": DOMAIN, "webchat_id": "webchat.zbqr0d"}),
    )
    .await;
    assert_eq!(status, 401);
}
