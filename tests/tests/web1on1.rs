//! Web1on1 (v2) compatibility, driven by the seed document's own upsert, byte for byte: a
//! token pair from `/web1on1/v2/auth/token`, the upsert that sets two contact fields and sends
//! a registry template to a new WhatsApp contact (201, then 200 for the same contact), the
//! conversation read back with its fields, a message posted to the conversation, and the
//! webhook in Web1on1's shape: the `type=subscribe` challenge, `message.create.contact.chat`
//! signed with `X-Hub-Signature`, and Web1on1's synchronous `{"token", "messages"}` answer
//! sent back to the user. Then the `chipchat` SDK itself, unchanged, against Patchbay.

use patchbay_testkit::tenant::FakeTenant;
use patchbay_tests::{MetaBot, Options, Stack, TIMEOUT, eventually, raw_json};
use patchbay_whatsapp::fixtures as fx;
use serde_json::{Value, json};

const SECRET: &str = "web1on1-app-secret";
/// The seed's organisation: the bot is named after it, so the payload needs no change.
const ORGANIZATION: &str = "5e8493ba4d84280011860499";
/// The seed's contact, as WhatsApp names them.
const CONTACT_WA_ID: &str = "31619626759";

/// The seed document's upsert ("Method 1: HTTP Request"), byte for byte.
const SEED_UPSERT: &str = r#"{
"organization": "5e8493ba4d84280011860499",
"type": "contact",
"contact": {
"profile": {
"name": "John Johnson",
"telephone": "+31619626759"
}
},
"messages": [{
"type": "field",
"text": ".licenseplate XX-99-WZ"
}, {
"type": "field",
"text": ".location 3204"
}, {
"text": "appointment_24_hours_before",
"role": "agent",
"touchpoint": "whatsapp",
"type": "chat",
"meta": {
"template": "609a61ec5b25a7001e2fedce",
"PlanTime": "3.15 pm"
}
}]
}"#;

/// The WhatsApp template the seed's "Dear {{contact.name}}, … at {{PlanTime}}" was approved
/// as, in the bot's registry under the name the seed sends as the message's text.
fn registry_template() -> Value {
    json!({
        "name": "appointment_24_hours_before",
        "text": "Dear {{contact.name}}, you have an appointment tomorrow at {{PlanTime}}.",
        "whatsapp": {"name": "appointment_24_hours_before", "language": "en", "components": [
            {"type": "body", "parameters": [
                {"type": "text", "text": "{{contact.name}}"},
                {"type": "text", "text": "{{PlanTime}}"}]}]}
    })
}

/// A request with a raw body and a Bearer, as the seed's HTTP request is made.
async fn raw(
    stack: &Stack,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    raw_json(method, &format!("{}{path}", stack.api_url()), bearer, body).await
}

/// The contact of the seed writes `text` on WhatsApp.
async fn contact_writes(stack: &Stack, bot: &MetaBot, id: &str, text: &str) {
    let ts = chrono::Utc::now().timestamp().to_string();
    let mut value = fx::from_user(fx::text(id, text));
    value["contacts"][0]["wa_id"] = json!(CONTACT_WA_ID);
    value["contacts"][0]["profile"]["name"] = json!("John Johnson");
    value["messages"][0]["from"] = json!(CONTACT_WA_ID);
    value["messages"][0]["timestamp"] = json!(ts);
    let post = fx::post(&[(fx::PHONE_NUMBER_ID, value)]);
    assert_eq!(
        stack
            .post_meta("whatsapp", &bot.webhook_path, Some(SECRET), &post)
            .await,
        200
    );
}

/// The bot with its registry template, and a Web1on1 token pair for it.
async fn setup(stack: &Stack) -> (MetaBot, String, String) {
    let bot = stack
        .whatsapp_bot_named(ORGANIZATION, fx::PHONE_NUMBER_ID, SECRET)
        .await;
    let (status, t) = stack
        .call(
            "post",
            "/v1/templates",
            Some(&bot.api_key),
            Some(&registry_template()),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    let (status, tokens) = raw(
        stack,
        "POST",
        "/web1on1/v2/auth/token",
        None,
        Some(&json!({"apiKey": bot.api_key}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let token = tokens["token"].as_str().unwrap().to_owned();
    let refresh = tokens["refreshToken"].as_str().unwrap().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT, as the SDK decodes it");
    (bot, token, refresh)
}

/// A stack whose access tokens live one second, so a test meets their expiry.
async fn short_lived_tokens() -> Stack {
    Stack::start_with(Options {
        configure: Box::new(|c| {
            c.access_token_ttl_ms = 1_000;
            c.refresh_token_ttl_ms = 60_000;
        }),
        ..Default::default()
    })
    .await
}

fn hub_signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha1={}",
        patchbay_testkit::fixtures::sha1_signature(secret, body)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web1on1_client_upserts_the_seed_conversation_and_gets_its_webhooks_unchanged() {
    let stack = Stack::start().await;
    let (bot, token, _) = setup(&stack).await;

    // The webhook, Web1on1's way: a URL that does not answer the type=subscribe challenge is
    // refused; one that does gets Web1on1's events.
    let hook = FakeTenant::start().await;
    let set = json!({"url": hook.url(), "flavour": "web1on1",
                     "events": ["message.*", "user.*"]});
    let (status, refused) = stack
        .call("put", "/v1/webhook", Some(&bot.api_key), Some(&set))
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "webhook_verification_failed");
    hook.answer_type_subscribe();
    let (status, settings) = stack
        .call("put", "/v1/webhook", Some(&bot.api_key), Some(&set))
        .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["flavour"], "web1on1");

    // The seed's upsert: a new contact (201), two fields set, the template sent.
    let (status, created) = raw(
        &stack,
        "POST",
        "/web1on1/v2/conversations",
        Some(&token),
        Some(SEED_UPSERT),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let conversation = created["id"].as_str().unwrap().to_owned();
    assert!(conversation.starts_with("conv_"), "{created}");
    assert_eq!(created["type"], "contact");
    assert_eq!(created["name"], "John Johnson");
    assert_eq!(created["touchpoint"], "whatsapp");
    let sent = created["messages"].as_array().unwrap();
    assert_eq!(
        sent.iter().map(|m| m["type"].clone()).collect::<Vec<_>>(),
        vec![json!("field"), json!("field"), json!("chat")],
        "{created}"
    );
    let calls = stack
        .graph
        .wait_for_sends(fx::PHONE_NUMBER_ID, 1, TIMEOUT)
        .await;
    assert_eq!(calls[0].body["to"], CONTACT_WA_ID);
    assert_eq!(
        calls[0].body["template"],
        json!({"name": "appointment_24_hours_before", "language": {"code": "en"}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "John Johnson"},
                                            {"type": "text", "text": "3.15 pm"}]}]})
    );
    // The fields are the contact's, in order before the template.
    let read = eventually(TIMEOUT, "the contact's fields", || async {
        let (status, c) = raw(
            &stack,
            "GET",
            &format!("/web1on1/v2/conversations/{conversation}"),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(status, 200, "{c}");
        (c["contact"]["meta"]["location"] == "3204").then_some(c)
    })
    .await;
    assert_eq!(
        read["contact"]["meta"]["licenseplate"], "XX-99-WZ",
        "{read}"
    );
    assert_eq!(read["contact"]["profile"]["telephone"], "+31619626759");

    // The same upsert again: the contact is found (200), the same conversation.
    let (status, again) = raw(
        &stack,
        "POST",
        "/web1on1/v2/conversations",
        Some(&token),
        Some(SEED_UPSERT),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], conversation.as_str());
    stack
        .graph
        .wait_for_sends(fx::PHONE_NUMBER_ID, 2, TIMEOUT)
        .await;

    // The contact answers: the webhook gets message.create.contact.chat, signed with the
    // bot's signing secret, and its synchronous answer is sent to the contact.
    hook.respond_with(|r| {
        let b = r.json();
        let from_contact = b["event"] == "message.create.contact.chat"
            && b["data"]["message"]["role"] == "contact";
        let reply = json!({"token": "ignored", "messages": [{"text": "Pong"}]});
        (axum::http::StatusCode::OK, from_contact.then_some(reply))
    });
    contact_writes(&stack, &bot, "wamid.W11IN1", "See you then").await;
    let received = eventually(TIMEOUT, "the contact's message at the webhook", || async {
        hook.received()
            .into_iter()
            .find(|r| r.json()["data"]["message"]["role"] == "contact")
    })
    .await;
    let body = received.json();
    assert_eq!(
        received.header("x-hub-signature").as_deref(),
        Some(hub_signature(&bot.webhook_secret, &received.body).as_str()),
        "X-Hub-Signature is sha1=<hex HMAC-SHA1 of the body> with the signing secret"
    );
    assert_eq!(body["event"], "message.create.contact.chat", "{body}");
    assert_eq!(body["data"]["message"]["text"], "See you then");
    assert_eq!(body["data"]["message"]["touchpoint"], "whatsapp");
    assert_eq!(
        body["data"]["message"]["conversation"],
        conversation.as_str()
    );
    assert_eq!(body["data"]["conversation"]["id"], conversation.as_str());
    assert_eq!(body["activity"]["type"], "Create");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'), "{body}");
    let pong = stack
        .graph
        .wait_for_sends(fx::PHONE_NUMBER_ID, 3, TIMEOUT)
        .await;
    assert_eq!(pong[2].body["text"]["body"], "Pong");
    // Delivery reports are not Web1on1 events: only the contact's message came.
    assert!(
        hook.received()
            .iter()
            .all(|r| r.json()["data"]["message"]["role"] == "contact"),
        "only the contact's message was posted"
    );

    // A message posted to the conversation, with reply actions: quick replies.
    let (status, posted) = raw(
        &stack,
        "POST",
        &format!("/web1on1/v2/conversations/{conversation}/messages"),
        Some(&token),
        Some(
            r#"{"text": "Still on?", "actions": [{"type": "reply", "text": "Yes"},
                                                  {"type": "reply", "text": "No"}]}"#,
        ),
    )
    .await;
    assert_eq!(status, 201, "{posted}");
    assert!(
        posted["id"].as_str().unwrap().starts_with("msg_"),
        "{posted}"
    );
    let calls = stack
        .graph
        .wait_for_sends(fx::PHONE_NUMBER_ID, 4, TIMEOUT)
        .await;
    assert_eq!(calls[3].body["interactive"]["body"]["text"], "Still on?");

    // Web1on1's commands: /accept passes the conversation to a human agent, /leave hands it
    // back to the bot.
    let handled_by = |who: &'static str| {
        let stack = &stack;
        let key = bot.api_key.clone();
        async move {
            let (_, inbox) = stack
                .call(
                    "get",
                    &format!("/v1/conversations?handled_by={who}"),
                    Some(&key),
                    None,
                )
                .await;
            inbox["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["conversation_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    for (command, who) in [("/accept", "human"), ("/leave", "bot")] {
        let (status, answer) = raw(
            &stack,
            "POST",
            &format!("/web1on1/v2/conversations/{conversation}/messages"),
            Some(&token),
            Some(&json!({"type": "command", "text": command}).to_string()),
        )
        .await;
        assert_eq!(status, 201, "{command}: {answer}");
        assert_eq!(answer["type"], "command", "{answer}");
        assert!(
            handled_by(who).await.contains(&conversation),
            "{command}: the conversation is handled by the {who}"
        );
    }

    // Web1on1's errors: another organisation, a message type Patchbay does not run, an
    // unknown template, a tampered token, no token.
    let cases = [
        (
            SEED_UPSERT.replace(ORGANIZATION, "5e8493ba4d84280011860400"),
            403,
            "organization_mismatch",
        ),
        (
            SEED_UPSERT.replace(r#""type": "field""#, r#""type": "card""#),
            422,
            "invalid_request",
        ),
        (
            SEED_UPSERT.replace("appointment_24_hours_before", "no_such_template"),
            422,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let (got, e) = raw(
            &stack,
            "POST",
            "/web1on1/v2/conversations",
            Some(&token),
            Some(&body),
        )
        .await;
        assert_eq!(got, status, "{e}");
        assert_eq!(e["error"]["code"], code, "{e}");
        assert!(e["error"]["message"].is_string(), "{e}");
    }
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    let (status, e) = raw(
        &stack,
        "POST",
        "/web1on1/v2/conversations",
        Some(&tampered),
        Some(SEED_UPSERT),
    )
    .await;
    assert_eq!(status, 401, "{e}");
    assert_eq!(e["error"]["message"], "invalid signature");
    let (status, _) = raw(
        &stack,
        "POST",
        "/web1on1/v2/conversations",
        None,
        Some(SEED_UPSERT),
    )
    .await;
    assert_eq!(status, 401);
    // Nothing more went out.
    assert_eq!(stack.graph.sends(fx::PHONE_NUMBER_ID).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_answers_jwt_expired_and_the_refresh_token_renews_it_once() {
    let stack = short_lived_tokens().await;
    let (bot, token, refresh) = setup(&stack).await;
    let path = "/web1on1/v2/conversations";
    // A read that changes nothing answers 404 until the token's own expiry (its `exp`, in
    // seconds) has passed.
    let probe = "/web1on1/v2/conversations/conv_none";
    let e = eventually(TIMEOUT, "the token to expire", || async {
        let (status, e) = raw(&stack, "GET", probe, Some(&token), None).await;
        assert!([401, 404].contains(&status), "{status} {e}");
        (status == 401).then_some(e)
    })
    .await;
    assert_eq!(e["error"]["message"], "jwt expired", "{e}");
    // The SDK's renewal: clientId and the refresh token, no Authorization.
    let renew =
        json!({"clientId": format!("bot+{}@web1on1.chat", bot.id), "refreshToken": refresh});
    let (status, renewed) = raw(
        &stack,
        "POST",
        "/web1on1/v2/auth/token",
        None,
        Some(&renew.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{renewed}");
    let fresh = renewed["token"].as_str().unwrap();
    assert_ne!(renewed["refreshToken"], refresh.as_str());
    let (status, created) = raw(&stack, "POST", path, Some(fresh), Some(SEED_UPSERT)).await;
    assert_eq!(status, 201, "{created}");
    // A refresh token works once.
    let (status, e) = raw(
        &stack,
        "POST",
        "/web1on1/v2/auth/token",
        None,
        Some(&renew.to_string()),
    )
    .await;
    assert_eq!(status, 401, "{e}");
}

/// The SDK's output lines, read as they come.
struct Sdk {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    seen: Vec<Value>,
}

impl Sdk {
    /// The next line matching `pick`, failing after [`TIMEOUT`] or when the SDK stops.
    async fn wait_for(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let found = tokio::time::timeout(TIMEOUT, async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .expect("read the SDK's output")
                    .unwrap_or_else(|| panic!("the SDK stopped before {what}: {:?}", self.seen));
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("the SDK printed {line:?}: {e}"));
                self.seen.push(v.clone());
                if pick(&v) {
                    return v;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!("timed out waiting for {what}; the SDK said {:?}", self.seen)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chipchat_sdk_runs_unchanged_against_patchbay() {
    use tokio::io::AsyncBufReadExt;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let modules = root.join(".tools/sdk/web1on1/node_modules");
    let Ok(node) = which_node() else {
        println!(
            "SKIPPED: Node.js is not installed, so Web1on1's SDK (chipchat) cannot run here; \
             install nodejs and run scripts/install-tools.sh"
        );
        return;
    };
    assert!(
        modules.join("chipchat/package.json").exists(),
        "the chipchat SDK is not installed: run scripts/install-tools.sh (make test does)"
    );
    let stack = short_lived_tokens().await;
    let (bot, token, refresh) = setup(&stack).await;
    let child = tokio::process::Command::new(node)
        .arg(root.join("tests/sdk/web1on1/web1on1.js"))
        .env("NODE_PATH", &modules)
        .env("APIHOST", format!("{}/web1on1", stack.api_url()))
        .env("TOKEN", &token)
        .env("REFRESHTOKEN", &refresh)
        .env("EMAIL", format!("bot+{}@web1on1.chat", bot.id))
        .env("SECRET", &bot.webhook_secret)
        .env("SEED", SEED_UPSERT)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let mut child = child;
    let stdout = child.stdout.take().unwrap();
    let mut sdk = Sdk {
        child,
        lines: tokio::io::BufReader::new(stdout).lines(),
        seen: Vec::new(),
    };
    let port = sdk
        .wait_for("the SDK's router", |v| v.get("listening").is_some())
        .await["listening"]
        .as_u64()
        .unwrap();

    // The SDK's router answers Web1on1's challenge: the webhook is set.
    let set = json!({"url": format!("http://127.0.0.1:{port}/webhook"), "flavour": "web1on1",
                     "events": ["message.*", "user.*"]});
    let (status, settings) = stack
        .call("put", "/v1/webhook", Some(&bot.api_key), Some(&set))
        .await;
    assert_eq!(status, 200, "{settings}");

    // bot.conversations.create(seed) with an expired token: renewed, then created.
    sdk.wait_for("the token's renewal", |v| v.get("renewed").is_some())
        .await;
    let created = sdk
        .wait_for("the upsert's answer", |v| {
            v.get("created").is_some() || v.get("failed").is_some()
        })
        .await;
    let conversation = created["created"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the upsert failed: {created}"))
        .to_owned();
    let calls = stack
        .graph
        .wait_for_sends(fx::PHONE_NUMBER_ID, 1, TIMEOUT)
        .await;
    assert_eq!(
        calls[0].body["template"]["name"],
        "appointment_24_hours_before"
    );

    // The contact answers: the SDK's listener for WhatsApp contact messages fires, in the
    // conversation the upsert made, and the SDK found the signature right.
    contact_writes(&stack, &bot, "wamid.SDK1", "See you then").await;
    let heard = sdk
        .wait_for("the SDK's WhatsApp listener", |v| {
            v.get("whatsapp").is_some()
        })
        .await;
    assert_eq!(heard["whatsapp"], "See you then");
    assert_eq!(heard["conversation"], conversation.as_str());
    assert_eq!(heard["role"], "contact");
    assert!(
        sdk.seen.iter().all(|v| v.get("error").is_none()),
        "the SDK reported errors: {:?}",
        sdk.seen
    );
    let _ = sdk.child.kill().await;
}

/// `node` on PATH.
fn which_node() -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("node"))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_app_upserts_for_the_organisation_that_enabled_it_and_no_other() {
    let stack = Stack::start().await;
    let (bot, _, _) = setup(&stack).await;
    let admin = Some(stack.admin_token());
    // The vendor's integration is a partner app the organisation (the bot's tenant) enabled.
    let (_, partner) = stack
        .call(
            "post",
            "/admin/v1/partners",
            admin,
            Some(&json!({"name": "Automote IT"})),
        )
        .await;
    let partner_key = partner["api_key"].as_str().unwrap().to_owned();
    let (status, app) = stack
        .call(
            "post",
            "/v1/partner/apps",
            Some(&partner_key),
            Some(&json!({"name": "DMS", "callback_url": stack.tenant.url(),
                         "events": ["message.received"], "scopes": ["messages:send"]})),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    let (status, installation) = stack
        .call(
            "post",
            &format!("/v1/apps/{}/enable", app["id"].as_str().unwrap()),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{installation}");
    let (status, issued) = stack
        .call(
            "post",
            &format!(
                "/v1/partner/installations/{}/token",
                installation["id"].as_str().unwrap()
            ),
            Some(&partner_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{issued}");
    // Its installation token, wrapped for the SDK (no refresh token: the partner takes a new
    // one with its key).
    let (status, wrapped) = raw(
        &stack,
        "POST",
        "/web1on1/v2/auth/token",
        None,
        Some(&json!({"apiKey": issued["access_token"]}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{wrapped}");
    assert!(wrapped.get("refreshToken").is_none(), "{wrapped}");
    let token = wrapped["token"].as_str().unwrap();
    // The organisation that enabled it, by its tenant id: the seed's upsert goes through.
    let tenant = installation["tenant_id"].as_str().unwrap();
    let body = SEED_UPSERT.replace(ORGANIZATION, tenant);
    let (status, created) = raw(
        &stack,
        "POST",
        "/web1on1/v2/conversations",
        Some(token),
        Some(&body),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["organization"], tenant);
    let sends = stack
        .graph
        .wait_for_sends(fx::PHONE_NUMBER_ID, 1, TIMEOUT)
        .await;
    assert_eq!(
        sends[0].body["template"]["name"],
        "appointment_24_hours_before"
    );
    // Another organisation: refused, nothing sent.
    let other = SEED_UPSERT.replace(ORGANIZATION, "ten_someone_else");
    let (status, e) = raw(
        &stack,
        "POST",
        "/web1on1/v2/conversations",
        Some(token),
        Some(&other),
    )
    .await;
    assert_eq!(status, 403, "{e}");
    assert_eq!(e["error"]["code"], "organization_mismatch");
    assert_eq!(stack.graph.sends(fx::PHONE_NUMBER_ID).len(), 1);
}
