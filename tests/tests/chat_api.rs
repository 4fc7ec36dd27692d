//! chat-api (WhatsApp) compatibility, driven by the seed document's own requests, byte for
//! byte: `sendTemplate` on an instance URL and `message` on a short URL, with the token in the
//! query; a webhook set with `webhookUrl` that gets what users write as `{"messages": [...]}`
//! and the statuses of the bot's messages as `{"ack": [...]}`; `status`, `webhook`, `me` (the
//! business profile, read and changed) and `messages` (a chat's history); chat-api's errors.

use patchbay_testkit::tenant::FakeTenant;
use patchbay_tests::{Stack, TIMEOUT, eventually, raw_json};
use patchbay_whatsapp::fixtures as fx;
use serde_json::{Value, json};

const SECRET: &str = "chat-api-app-secret";

fn now(mut value: Value) -> Value {
    let ts = chrono::Utc::now().timestamp().to_string();
    if let Some(messages) = value["messages"].as_array_mut() {
        for m in messages {
            m["timestamp"] = json!(ts);
        }
    }
    value
}

/// A request as the seed's curl sends it: the raw body, `Content-Type: application/json`.
async fn raw(
    stack: &Stack,
    method: &str,
    path_and_query: &str,
    body: Option<&str>,
) -> (u16, Value) {
    raw_json(
        method,
        &format!("{}{path_and_query}", stack.api_url()),
        None,
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_api_client_sends_templates_and_messages_and_gets_its_webhooks_unchanged() {
    let stack = Stack::start().await;
    let bot = stack.whatsapp_bot(fx::PHONE_NUMBER_ID, SECRET, None).await;
    let token = &bot.api_key;
    let instance = format!("instance{}", bot.channel_id);
    let hook = FakeTenant::start().await;

    // The webhook, chat-api's way: the URL is verified, then gets chat-api's shapes.
    let (status, set) = raw(
        &stack,
        "POST",
        &format!("/chat-api/{instance}/webhook?token={token}"),
        Some(&json!({"webhookUrl": hook.url()}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set, json!({"set": true, "webhookUrl": hook.url()}));
    let (_, got) = raw(
        &stack,
        "GET",
        &format!("/chat-api/webhook?token={token}"),
        None,
    )
    .await;
    assert_eq!(got["webhookUrl"], hook.url().as_str());
    let (_, status_now) = raw(
        &stack,
        "GET",
        &format!("/chat-api/{instance}/status?token={token}"),
        None,
    )
    .await;
    assert_eq!(status_now, json!({"accountStatus": "authenticated"}));

    // The user writes: the webhook gets {"messages": [...]} as chat-api's bots read it.
    let post = fx::post(&[(
        fx::PHONE_NUMBER_ID,
        now(fx::from_user(fx::text("wamid.IN1", "hello"))),
    )]);
    assert_eq!(
        stack
            .post_meta("whatsapp", &bot.webhook_path, Some(SECRET), &post)
            .await,
        200
    );
    let incoming = eventually(TIMEOUT, "the message at the chat-api webhook", || async {
        hook.received()
            .into_iter()
            .map(|r| r.json())
            .find(|b| b.get("messages").is_some())
    })
    .await;
    let m = &incoming["messages"][0];
    let chat = format!("{}@c.us", fx::WA_ID);
    assert_eq!(m["body"], "hello");
    assert_eq!(m["author"], chat.as_str());
    assert_eq!(m["chatId"], chat.as_str());
    assert_eq!(m["fromMe"], false);
    assert_eq!(m["type"], "chat");
    assert_eq!(m["senderName"], "Ana");
    assert_eq!(m["id"], "wamid.IN1");
    assert!(m["time"].as_i64().unwrap() > 0);

    // The seed's `message` call, byte for byte but for the phone (the user who wrote) and the
    // token: the short URL serves the bot's only WhatsApp channel.
    let message = r#"{"phone": "351910000000","body": "Hello, Andrew!"}"#;
    let (status, sent) = raw(
        &stack,
        "POST",
        &format!("/chat-api/message?token={token}"),
        Some(message),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["sent"], true);
    let id = sent["id"].as_str().unwrap().to_owned();
    let calls = stack
        .graph
        .wait_for_sends(fx::PHONE_NUMBER_ID, 1, TIMEOUT)
        .await;
    assert_eq!(calls[0].body["to"], fx::WA_ID);
    assert_eq!(calls[0].body["text"]["body"], "Hello, Andrew!");
    // Its status comes back as an ack of the id the send answered.
    let ack = eventually(TIMEOUT, "the ack at the chat-api webhook", || async {
        hook.received()
            .into_iter()
            .map(|r| r.json())
            .find(|b| b["ack"][0]["id"] == id.as_str())
    })
    .await;
    assert_eq!(ack["ack"][0]["status"], "sent", "{ack}");

    // The seed's `sendTemplate` call, byte for byte but for the phone and the token, on the
    // instance URL.
    let template = r#"{"phone": "351910000000","template": "template_name", "namespace" : "namespace_of_template", "language": { "code": "en", "policy": "deterministic"}}"#;
    let (status, sent) = raw(
        &stack,
        "POST",
        &format!("/chat-api/{instance}/sendTemplate?token={token}"),
        Some(template),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["sent"], true);
    let calls = stack
        .graph
        .wait_for_sends(fx::PHONE_NUMBER_ID, 2, TIMEOUT)
        .await;
    assert_eq!(calls[1].body["type"], "template");
    assert_eq!(calls[1].body["template"]["name"], "template_name");
    assert_eq!(calls[1].body["template"]["language"]["code"], "en");

    // A chat's history, chat-api's way.
    let (status, history) = raw(
        &stack,
        "GET",
        &format!("/chat-api/messages?token={token}&chatId={chat}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{history}");
    let items = history["messages"].as_array().unwrap();
    assert_eq!(items[0]["body"], "hello");
    assert_eq!(items[0]["fromMe"], false);
    assert!(
        items
            .iter()
            .any(|m| m["body"] == "Hello, Andrew!" && m["fromMe"] == true),
        "{history}"
    );

    // The business profile, read and changed as the seed's profile example does.
    let profile =
        r#"{"address": "79995253422", "description": "Best Company", "email": "", "vertical": ""}"#;
    let (status, me) = raw(
        &stack,
        "POST",
        &format!("/chat-api/{instance}/me?token={token}"),
        Some(profile),
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["description"], "Best Company");
    let (_, me) = raw(
        &stack,
        "GET",
        &format!("/chat-api/{instance}/me?token={token}"),
        None,
    )
    .await;
    assert_eq!(me["address"], "79995253422");

    // chat-api's errors.
    let (status, e) = raw(&stack, "POST", "/chat-api/message", Some(message)).await;
    assert_eq!(status, 401);
    assert!(e["error"].as_str().unwrap().contains("token"), "{e}");
    let (status, e) = raw(
        &stack,
        "POST",
        "/chat-api/message?token=83763g87x",
        Some(message),
    )
    .await;
    assert_eq!((status, e["error"].is_string()), (401, true));
    let other = stack
        .whatsapp_bot("106500000000077", "other-secret", None)
        .await;
    let (status, e) = raw(
        &stack,
        "POST",
        &format!(
            "/chat-api/instance{}/message?token={token}",
            other.channel_id
        ),
        Some(message),
    )
    .await;
    assert_eq!(status, 404, "another bot's instance: {e}");
    // A number that never wrote gets no free-form message ("initiate a dialog" with a
    // template, as the seed says), but the template reaches it.
    let (status, refused) = raw(
        &stack,
        "POST",
        &format!("/chat-api/message?token={token}"),
        Some(r#"{"phone": "79995253422","body": "Hello, Andrew!"}"#),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["sent"], false);
    assert_eq!(refused["error"], "outside_window");
    let (status, sent) = raw(
        &stack,
        "POST",
        &format!("/chat-api/{instance}/sendTemplate?token={token}"),
        Some(r#"{"phone": "79995253422","template": "template_name", "namespace" : "namespace_of_template", "language": { "code": "en", "policy": "deterministic"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    let calls = stack
        .graph
        .wait_for_sends(fx::PHONE_NUMBER_ID, 3, TIMEOUT)
        .await;
    assert_eq!(calls[2].body["to"], "79995253422");
    assert_eq!(calls[2].body["type"], "template");
}

/// `python3` on PATH.
fn python() -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|p| p.join("python3"))
        .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_msg_sdk_runs_unchanged_against_patchbay() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sdk = root.join(".tools/sdk/chat_api");
    let Some(python) = python() else {
        println!(
            "SKIPPED: Python 3 is not installed, so chat-api's SDK (one-msg-sdk) cannot run \
             here; install python3 and run scripts/install-tools.sh"
        );
        return;
    };
    assert!(
        sdk.join("one_msg_sdk").is_dir(),
        "the one-msg-sdk is not installed: run scripts/install-tools.sh (make test does)"
    );
    let stack = Stack::start().await;
    let bot = stack.whatsapp_bot(fx::PHONE_NUMBER_ID, SECRET, None).await;
    let hook = FakeTenant::start().await;
    // The user wrote first: the window is open for the SDK's text.
    let post = fx::post(&[(
        fx::PHONE_NUMBER_ID,
        now(fx::from_user(fx::text("wamid.SDK0", "hello"))),
    )]);
    assert_eq!(
        stack
            .post_meta("whatsapp", &bot.webhook_path, Some(SECRET), &post)
            .await,
        200
    );
    stack.events_of("message.received", 1).await;

    let run = tokio::process::Command::new(python)
        .arg(root.join("tests/sdk/chat_api/chat_api.py"))
        .env("PYTHONPATH", &sdk)
        .env(
            "HOST",
            format!("{}/chat-api/instance{}", stack.api_url(), bot.channel_id),
        )
        .env("TOKEN", &bot.api_key)
        .env("PHONE", fx::WA_ID)
        .env("HOOK", hook.url())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(TIMEOUT, run)
        .await
        .expect("the SDK finishes")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the SDK failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls: std::collections::HashMap<String, Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line"))
        .map(|v| (v["call"].as_str().unwrap().to_owned(), v))
        .collect();
    let answer = |name: &str| calls[name]["answer"].clone();
    assert_eq!(
        answer("setWebhook")["webhookUrl"],
        hook.url().as_str(),
        "{calls:?}"
    );
    assert_eq!(answer("getWebhook")["webhookUrl"], hook.url().as_str());
    assert_eq!(answer("sendMessage")["sent"], true, "{calls:?}");
    assert_eq!(answer("sendTemplate")["sent"], true, "{calls:?}");
    assert!(answer("getMe").is_object(), "{calls:?}");
    let listed = answer("listMessages");
    let bodies: Vec<&str> = listed["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{calls:?}"))
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert!(bodies.contains(&"hello"), "{listed}");
    assert_eq!(calls["wrongToken"]["error"], 401, "{calls:?}");
    // What reached WhatsApp: the text, then the template.
    let sends = stack
        .graph
        .wait_for_sends(fx::PHONE_NUMBER_ID, 2, TIMEOUT)
        .await;
    assert_eq!(sends[0].body["text"]["body"], "Hello from the SDK");
    assert_eq!(sends[0].body["to"], fx::WA_ID);
    assert_eq!(sends[1].body["template"]["name"], "template_name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_api_calls_count_against_the_bots_request_limit_and_are_refused_in_its_shape() {
    let stack = Stack::start().await;
    let bot = stack.whatsapp_bot(fx::PHONE_NUMBER_ID, SECRET, None).await;
    let (status, _) = stack
        .call(
            "patch",
            &format!("/admin/v1/bots/{}", bot.id),
            Some(stack.admin_token()),
            Some(&json!({"rate_limit": {"per_second": 1, "burst": 2}})),
        )
        .await;
    assert_eq!(status, 204);
    let url = format!(
        "{}/chat-api/instance{}/status?token={}",
        stack.api_url(),
        bot.channel_id,
        bot.api_key
    );
    // The limit reaches the replica (a full bucket of 2), then a burst beyond it is refused.
    eventually(
        TIMEOUT,
        "the bot's limit applied to chat-api calls",
        || async {
            let r = reqwest::get(&url).await.unwrap();
            (r.headers()
                .get("ratelimit-limit")
                .and_then(|v| v.to_str().ok())
                == Some("2"))
            .then_some(())
        },
    )
    .await;
    let mut refused = None;
    for _ in 0..4 {
        let r = reqwest::get(&url).await.unwrap();
        if r.status() == 429 {
            assert!(r.headers().get("retry-after").is_some());
            refused = Some(r.json::<Value>().await.unwrap());
            break;
        }
    }
    let refused = refused.expect("a burst of 4 beyond a burst of 2 is refused");
    assert!(
        refused["error"].as_str().unwrap().contains("requests"),
        "chat-api's {{\"error\": \"…\"}}: {refused}"
    );
}
