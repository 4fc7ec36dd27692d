//! Custom channels end to end (every service its own listener and NATS connection): an app
//! registers a user with the channel's domain key, sends as the user and gets the bot's inline
//! replies in the answer; every message for the user is pushed to the channel's event webhook,
//! signed, with `X-Patchbay-Source`; `POST /v1/conversations` finds or creates contacts by
//! e-mail or phone, and the history pages the conversation. The attacks on user tokens: taking
//! over an existing `external_id` with the domain key alone, using a token past its lifetime,
//! after its user's or its channel's tokens were revoked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_custom::{registration, token};
use patchbay_testkit::tenant::{FakeTenant, verify_standard_webhook};
use patchbay_tests::{Layout, Options, Stack, WAIT, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn split() -> Stack {
    Stack::start_with(Options {
        layout: Layout::Split,
        ..Options::default()
    })
    .await
}

/// The tenant answers a user's "hi" with two messages, and anything else with 200 and no body.
fn greeter(stack: &Stack) {
    stack.tenant.respond_with(|r| {
        let e = r.json();
        if e["type"] == "message.received" && e["message"]["content"]["text"] == "hi" {
            (
                StatusCode::OK,
                Some(json!({"messages": [
                    {"type": "text", "text": "Hello!"},
                    {"type": "buttons", "text": "How can I help?",
                     "buttons": [{"type": "postback", "title": "Prices", "payload": "PRICES"}]}
                ]})),
            )
        } else {
            (StatusCode::OK, None)
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_user_talks_to_the_bot_and_gets_its_replies() {
    let stack = split().await;
    greeter(&stack);
    let app = FakeTenant::start().await;
    let bot = stack.bot().await;
    let (channel, domain_key, push_secret) = stack.custom_channel(&bot, Some(&app.url())).await;
    let base = format!("{}/v1/custom/{channel}", stack.custom_url());

    // Registration needs the domain key.
    let profile = json!({"external_id": "app-user-1", "display_name": "Ada",
                         "email": "Ada@Example.com", "phone": "+31612345678"});
    let (status, answer) = stack
        .post(&format!("{base}/users"), "not-the-key", &profile)
        .await;
    assert_eq!(status, 401, "{answer}");
    let (status, user) = stack
        .post(&format!("{base}/users"), &domain_key, &profile)
        .await;
    assert_eq!(status, 201, "{user}");
    let token = user["token"].as_str().unwrap().to_owned();
    let user_id = user["user_id"].as_str().unwrap().to_owned();
    assert_eq!(user["platform_user_id"], "app-user-1");
    assert!(user["expires_at"].is_string(), "{user}");

    // The tenant learns of the user.
    let subscribed = eventually(WAIT, "user.subscribed at the tenant", || async {
        stack
            .tenant
            .received()
            .into_iter()
            .map(|r| r.json())
            .find(|e| e["type"] == "user.subscribed")
    })
    .await;
    assert_eq!(subscribed["user"]["id"], user_id.as_str());
    assert_eq!(subscribed["user"]["display_name"], "Ada");
    assert_eq!(subscribed["channel"]["platform"], "custom");

    // A message as the user: the bot's inline reply comes back in the answer, in order.
    let (status, sent) = stack
        .post(
            &format!("{base}/messages"),
            &token,
            &json!({"content": {"type": "text", "text": "hi"}, "wait_ms": 15000}),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["complete"], true, "{sent}");
    assert_eq!(sent["duplicate"], false);
    let replies = sent["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 2, "{sent}");
    assert_eq!(
        replies[0]["content"],
        json!({"type": "text", "text": "Hello!"})
    );
    assert_eq!(replies[1]["content"]["type"], "buttons");
    for r in replies {
        assert_eq!(r["in_reply_to"], sent["event_id"]);
        assert_eq!(r["source"], "bot");
        assert_eq!(r["source_id"], bot.id.as_str());
        assert_eq!(r["user_id"], user_id.as_str());
    }
    // The tenant saw the message as the user's, with the ids the answer gave.
    let event = stack
        .tenant
        .received()
        .into_iter()
        .map(|r| r.json())
        .find(|e| e["type"] == "message.received")
        .expect("message.received at the tenant");
    assert_eq!(event["id"], sent["event_id"]);
    assert_eq!(event["message"]["id"], sent["message_id"]);
    assert_eq!(event["user"]["id"], user_id.as_str());

    // Both replies were pushed to the app's event webhook too, signed, marked as the bot's.
    let pushed = app.wait_for(2, WAIT).await;
    for (r, reply) in pushed.iter().zip(replies) {
        verify_standard_webhook(&push_secret, r).expect("push signed with the channel's secret");
        assert_eq!(r.header("x-patchbay-source").as_deref(), Some("bot"));
        assert_eq!(r.json()["id"], reply["id"]);
        assert_eq!(
            r.header("webhook-id"),
            reply["id"].as_str().map(str::to_owned)
        );
    }

    // A human agent's message later reaches the app through the event webhook only.
    let (status, queued) = stack
        .post(
            &format!("{}/v1/messages", stack.api_url()),
            &bot.api_key,
            &json!({"user_id": user_id, "source": "human", "source_id": "agent-7",
                    "messages": [{"type": "text", "text": "Agent Smith here"}]}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let pushed = app.wait_for(3, WAIT).await;
    let human = &pushed[2];
    assert_eq!(human.header("x-patchbay-source").as_deref(), Some("human"));
    assert_eq!(
        human.header("x-patchbay-source-id").as_deref(),
        Some("agent-7")
    );
    assert_eq!(human.json()["content"]["text"], "Agent Smith here");

    // The profile the app gave is the user's profile.
    let (status, p) = stack
        .call(
            "get",
            &format!("/v1/users/{user_id}"),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["platform"], "custom");
    assert_eq!(p["email"], "ada@example.com");
    assert_eq!(p["phone"], "+31612345678");

    // A tenant that fails: the answer says the reply is not complete, and holds none.
    stack
        .tenant
        .respond_with(|_| (StatusCode::INTERNAL_SERVER_ERROR, None));
    let (status, failed) = stack
        .post(
            &format!("{base}/messages"),
            &token,
            &json!({"content": {"type": "text", "text": "hi"}, "wait_ms": 15000}),
        )
        .await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["complete"], false, "{failed}");
    assert_eq!(failed["replies"], json!([]));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_channel_requests_are_checked() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let (channel, domain_key, _) = stack.custom_channel(&bot, None).await;
    let (other, other_key, _) = stack.custom_channel(&bot, None).await;
    let base = format!("{}/v1/custom/{channel}", stack.custom_url());
    let (_, user) = stack
        .post(&format!("{base}/users"), &domain_key, &json!({}))
        .await;
    let token = user["token"].as_str().unwrap().to_owned();
    assert!(
        user["platform_user_id"]
            .as_str()
            .unwrap()
            .starts_with("cu_")
    );
    let text = json!({"content": {"type": "text", "text": "x"}, "wait_ms": 0});

    // Tokens: none, tampered, or another channel's user: 401, nothing published.
    let (_, other_user) = stack
        .post(
            &format!("{}/v1/custom/{other}/users", stack.custom_url()),
            &other_key,
            &json!({"external_id": "u1"}),
        )
        .await;
    let tampered = format!("{}x", &token[..token.len() - 1]);
    let foreign = other_user["token"].as_str().unwrap().to_owned();
    // What the ingress published (the registrations above are still moving through the
    // other stages).
    let ingress = || async {
        stack
            .stream_sequences()
            .await
            .into_iter()
            .find(|(name, _)| name.ends_with("_INGRESS"))
            .unwrap()
    };
    let before = ingress().await;
    for bad in [tampered.as_str(), foreign.as_str(), domain_key.as_str()] {
        let (status, answer) = stack.post(&format!("{base}/messages"), bad, &text).await;
        assert_eq!(status, 401, "{answer}");
    }
    let r = stack
        .http
        .post(format!("{base}/messages"))
        .json(&text)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Another channel's domain key does not register users here.
    let (status, _) = stack
        .post(&format!("{base}/users"), &other_key, &json!({}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        ingress().await,
        before,
        "refused requests published nothing"
    );

    // Bodies: the field at fault is named.
    for (body, field) in [
        (
            json!({"content": {"type": "carousel", "cards": []}}),
            "content.type",
        ),
        (
            json!({"content": {"type": "text", "text": ""}}),
            "content.text",
        ),
        (
            json!({"content": {"type": "text", "text": "x"}, "id": ""}),
            "id",
        ),
    ] {
        let (status, answer) = stack.post(&format!("{base}/messages"), &token, &body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body}: {message}");
    }
    for (body, field) in [
        (json!({"external_id": "a b"}), "external_id"),
        (json!({"email": "nope"}), "email"),
        (json!({"phone": "0612345678"}), "phone"),
    ] {
        let (status, answer) = stack
            .post(&format!("{base}/users"), &domain_key, &body)
            .await;
        assert_eq!(status, 422, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body}: {message}");
    }

    // An unknown channel, or a Telegram channel: 404.
    for ch in ["ch_unknown", bot.channel_id.as_str()] {
        let (status, _) = stack
            .post(
                &format!("{}/v1/custom/{ch}/users", stack.custom_url()),
                &domain_key,
                &json!({}),
            )
            .await;
        assert_eq!(status, 404);
    }

    // The same message id twice: stored once, the second answer says so.
    let once = json!({"content": {"type": "text", "text": "x"}, "id": "m-1", "wait_ms": 0});
    let (_, first) = stack.post(&format!("{base}/messages"), &token, &once).await;
    let (_, second) = stack.post(&format!("{base}/messages"), &token, &once).await;
    assert_eq!(first["duplicate"], false, "{first}");
    assert_eq!(second["duplicate"], true, "{second}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_are_upserted_by_email_or_phone_and_paged() {
    let stack = Stack::start().await;
    let app = FakeTenant::start().await;
    let bot = stack.bot().await;
    let ch = stack
        .custom_channel_with(&bot, json!({"event_webhook_url": app.url()}))
        .await;
    let channel = ch["id"].as_str().unwrap().to_owned();
    let domain_key = ch["generated"]["domain_key"].as_str().unwrap().to_owned();
    let registration_secret = ch["generated"]["registration_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let upsert = |contact: Value, text: &str| json!({"contact": contact, "messages": [{"type": "text", "text": text}]});

    // New by e-mail: created on the custom channel, the message pushed to the app.
    let (status, created) = stack
        .call(
            "post",
            "/v1/conversations",
            Some(&bot.api_key),
            Some(&upsert(
                json!({"email": "Neo@Example.com", "name": "Neo"}),
                "Welcome",
            )),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["created"], true);
    assert_eq!(created["user"]["platform"], "custom");
    assert_eq!(created["user"]["platform_user_id"], "neo@example.com");
    assert_eq!(created["user"]["display_name"], "Neo");
    let conversation = created["conversation_id"].as_str().unwrap().to_owned();
    let pushed = app.wait_for(1, WAIT).await;
    assert_eq!(pushed[0].json()["content"]["text"], "Welcome");
    assert_eq!(pushed[0].json()["platform_user_id"], "neo@example.com");

    // Again: the same contact and conversation, 200.
    let (status, existing) = stack
        .call(
            "post",
            "/v1/conversations",
            Some(&bot.api_key),
            Some(&upsert(json!({"email": "neo@example.com"}), "Second")),
        )
        .await;
    assert_eq!(status, 200, "{existing}");
    assert_eq!(existing["created"], false);
    assert_eq!(existing["conversation_id"], conversation.as_str());
    assert_eq!(existing["user"]["id"], created["user"]["id"]);

    // The app registering that address gets the same user: the contact exists, so only with
    // the back end's proof.
    let base = format!("{}/v1/custom/{channel}", stack.custom_url());
    let neo = json!({"external_id": "neo@example.com"});
    let (status, refused) = register(&stack, &base, &domain_key, None, &neo).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "registration_proof_required");
    let proof = registration::sign(
        &registration_secret,
        chrono::Utc::now().timestamp(),
        &channel,
        "neo@example.com",
    );
    let (status, registered) = register(&stack, &base, &domain_key, Some(proof), &neo).await;
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["user_id"], created["user"]["id"]);

    // A phone number the bot does not know, and no WhatsApp channel: the custom channel.
    let (status, by_phone) = stack
        .call(
            "post",
            "/v1/conversations",
            Some(&bot.api_key),
            Some(&json!({"contact": {"phone": "+31612345678"}})),
        )
        .await;
    assert_eq!(status, 201, "{by_phone}");
    assert_eq!(by_phone["user"]["platform_user_id"], "31612345678");
    assert!(by_phone.get("send").is_none());

    // History: newest first, a page at a time, once both messages are sent.
    let path = format!("/v1/conversations/{conversation}/messages");
    eventually(WAIT, "both messages sent", || async {
        let (_, page) = stack.call("get", &path, Some(&bot.api_key), None).await;
        let m = page["messages"].as_array()?;
        (m.len() == 2 && m.iter().all(|m| m["status"] == "sent")).then_some(())
    })
    .await;
    let (status, first) = stack
        .call("get", &format!("{path}?limit=1"), Some(&bot.api_key), None)
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["messages"][0]["content"]["text"], "Second");
    assert_eq!(first["messages"][0]["direction"], "outbound");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = stack
        .call(
            "get",
            &format!("{path}?limit=1&before={cursor}"),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(second["messages"][0]["content"]["text"], "Welcome");
    assert!(second.get("next_cursor").is_none(), "{second}");

    // Refusals name the field; another bot sees nothing.
    for (body, field) in [
        (json!({"contact": {}}), "contact"),
        (json!({"contact": {"phone": "612345678"}}), "contact.phone"),
        (json!({"contact": {"email": "x"}}), "contact.email"),
        (
            json!({"contact": {"email": "a@b.co"}, "channel_id": bot.channel_id}),
            "channel_id",
        ),
    ] {
        let (status, answer) = stack
            .call("post", "/v1/conversations", Some(&bot.api_key), Some(&body))
            .await;
        assert_eq!(status, 422, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body}: {message}");
    }
    let stranger = stack.bot().await;
    let (status, _) = stack
        .call("get", &path, Some(&stranger.api_key), None)
        .await;
    assert_eq!(status, 404);
    // A bot with no channel for new contacts: 422, nothing created.
    let (status, answer) = stack
        .call(
            "post",
            "/v1/conversations",
            Some(&stranger.api_key),
            Some(&json!({"contact": {"email": "neo@example.com"}})),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "no_channel");
    stack.shutdown().await;
}

/// Registers `body` on `base` with the domain key and, when given, the back end's proof.
async fn register(
    stack: &Stack,
    base: &str,
    domain_key: &str,
    proof: Option<String>,
    body: &Value,
) -> (u16, Value) {
    let mut req = stack
        .http
        .post(format!("{base}/users"))
        .bearer_auth(domain_key)
        .json(body);
    if let Some(p) = proof {
        req = req.header("X-Patchbay-Registration", p);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The last sequence of the ingress stream: what `ingress-custom` ever published.
async fn ingress_seq(stack: &Stack) -> u64 {
    stack
        .stream_sequences()
        .await
        .into_iter()
        .find(|(name, _)| name.ends_with("_INGRESS"))
        .unwrap()
        .1
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

const QUIET: &str = r#"{"content": {"type": "text", "text": "x"}, "wait_ms": 0}"#;

/// Sends as the token's user; the status and the error code, if any.
async fn send(stack: &Stack, base: &str, token: &str) -> (u16, Value) {
    let body: Value = serde_json::from_str(QUIET).unwrap();
    let (status, answer) = stack.post(&format!("{base}/messages"), token, &body).await;
    (status, answer["error"]["code"].clone())
}

/// The attack: the domain key ships inside the app, so anyone can call the registration route.
/// Registering someone else's `external_id` must not hand out that user's token (or change
/// their profile); only the app's back end, signing with the channel's registration secret,
/// registers an existing user again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_external_id_is_registered_again_only_with_the_back_ends_proof() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let ch = stack.custom_channel_with(&bot, json!({})).await;
    let channel = ch["id"].as_str().unwrap().to_owned();
    let domain_key = ch["generated"]["domain_key"].as_str().unwrap().to_owned();
    let secret = ch["generated"]["registration_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(secret.starts_with("rs_"), "{ch}");
    let base = format!("{}/v1/custom/{channel}", stack.custom_url());
    let victim = json!({"external_id": "victim-1", "display_name": "Ada"});

    // The victim's first registration: the domain key is enough.
    let (status, first) = register(&stack, &base, &domain_key, None, &victim).await;
    assert_eq!(status, 201, "{first}");
    let victims_token = first["token"].as_str().unwrap().to_owned();

    // The attacker, with the domain key: no token, nothing published.
    let before = ingress_seq(&stack).await;
    let takeover = json!({"external_id": "victim-1", "display_name": "Mallory"});
    let (status, answer) = register(&stack, &base, &domain_key, None, &takeover).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "registration_proof_required");
    assert!(answer.get("token").is_none());
    // Guessed, stale, another user's or another channel's proofs.
    for (proof, why) in [
        (
            registration::sign(
                "rs_guessed-secret-of-32-characters",
                now(),
                &channel,
                "victim-1",
            ),
            "another secret",
        ),
        (
            registration::sign(&secret, now() - 301, &channel, "victim-1"),
            "stale",
        ),
        (
            registration::sign(&secret, now(), &channel, "mallory"),
            "another external_id",
        ),
        (
            registration::sign(&secret, now(), "ch_other", "victim-1"),
            "another channel",
        ),
        ("t=1,v1=zz".to_owned(), "malformed"),
    ] {
        let (status, answer) = register(&stack, &base, &domain_key, Some(proof), &takeover).await;
        assert_eq!(status, 401, "{why}: {answer}");
        assert_eq!(
            answer["error"]["code"], "invalid_registration_proof",
            "{why}"
        );
    }
    assert_eq!(
        ingress_seq(&stack).await,
        before,
        "refused registrations published nothing"
    );
    assert_eq!(send(&stack, &base, &victims_token).await.0, 200);

    // The back end's proof registers the user again: the same user, a token that works.
    let proof = registration::sign(&secret, now(), &channel, "victim-1");
    let (status, again) = register(&stack, &base, &domain_key, Some(proof), &victim).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["user_id"], first["user_id"]);
    assert_eq!(
        send(&stack, &base, again["token"].as_str().unwrap())
            .await
            .0,
        200
    );

    // A new external_id still needs the domain key only; and then it exists.
    let (status, new) = register(
        &stack,
        &base,
        &domain_key,
        None,
        &json!({"external_id": "u2"}),
    )
    .await;
    assert_eq!(status, 201, "{new}");
    let (status, _) = register(
        &stack,
        &base,
        &domain_key,
        None,
        &json!({"external_id": "u2"}),
    )
    .await;
    assert_eq!(status, 403);

    // A channel that wants every registration signed: a new external_id too.
    let strict = stack
        .custom_channel_with(&bot, json!({"require_signed_registration": true}))
        .await;
    let strict_id = strict["id"].as_str().unwrap().to_owned();
    let strict_key = strict["generated"]["domain_key"].as_str().unwrap();
    let strict_secret = strict["generated"]["registration_secret"].as_str().unwrap();
    let strict_base = format!("{}/v1/custom/{strict_id}", stack.custom_url());
    let before = ingress_seq(&stack).await;
    let (status, answer) = register(
        &stack,
        &strict_base,
        strict_key,
        None,
        &json!({"external_id": "n1"}),
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "registration_proof_required");
    let (status, answer) = register(&stack, &strict_base, strict_key, None, &json!({})).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(ingress_seq(&stack).await, before);
    let proof = registration::sign(strict_secret, now(), &strict_id, "n1");
    let (status, answer) = register(
        &stack,
        &strict_base,
        strict_key,
        Some(proof),
        &json!({"external_id": "n1"}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    // A generated id: the proof is over the empty external id.
    let proof = registration::sign(strict_secret, now(), &strict_id, "");
    let (status, answer) =
        register(&stack, &strict_base, strict_key, Some(proof), &json!({})).await;
    assert_eq!(status, 201, "{answer}");

    // Bad settings name their field.
    for (credentials, field) in [
        (
            json!({"token_ttl_seconds": 10}),
            "credentials.token_ttl_seconds",
        ),
        (
            json!({"registration_secret": "short"}),
            "credentials.registration_secret",
        ),
    ] {
        let (status, answer) = stack
            .post(
                &format!("{}/admin/v1/bots/{}/channels", stack.api_url(), bot.id),
                stack.admin_token(),
                &json!({"platform": "custom", "credentials": credentials}),
            )
            .await;
        assert_eq!(status, 422, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{answer}"
        );
    }
    stack.shutdown().await;
}

/// The attacks on tokens once handed out: a token stolen long ago (past the channel's
/// lifetime, or from before tokens had one), a token of a user whose tokens the tenant
/// revoked, any token of a channel whose tokens the tenant revoked. Each is refused with a
/// code the app acts on, and publishes nothing; tokens issued later work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_tokens_expire_and_are_revoked_per_user_and_per_channel() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let ch = stack
        .custom_channel_with(&bot, json!({"token_ttl_seconds": 3600}))
        .await;
    let channel = ch["id"].as_str().unwrap().to_owned();
    let domain_key = ch["generated"]["domain_key"].as_str().unwrap().to_owned();
    let secret = ch["generated"]["registration_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = format!("{}/v1/custom/{channel}", stack.custom_url());
    let creds = stack.custom_credentials(&channel).await;
    assert_eq!(creds.token_ttl_seconds, 3600);

    let (_, ada) = register(
        &stack,
        &base,
        &domain_key,
        None,
        &json!({"external_id": "ada"}),
    )
    .await;
    let (_, bob) = register(
        &stack,
        &base,
        &domain_key,
        None,
        &json!({"external_id": "bob"}),
    )
    .await;
    let ada_token = ada["token"].as_str().unwrap().to_owned();
    let bob_token = bob["token"].as_str().unwrap().to_owned();
    let expires_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(ada["expires_at"].clone()).unwrap();
    let lifetime = expires_at - chrono::Utc::now();
    assert!(
        lifetime <= chrono::Duration::seconds(3600) && lifetime > chrono::Duration::seconds(3500),
        "{ada}"
    );
    assert_eq!(send(&stack, &base, &ada_token).await.0, 200);

    // Expiry: tokens issued an hour and a second ago, or before tokens had an issue time.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let old = token::issue(&creds.token_secret, &channel, "ada", now_ms - 3_601_000);
    let legacy = token::issue_legacy(&creds.token_secret, &channel, "ada");
    let before = ingress_seq(&stack).await;
    for stale in [&legacy, &old] {
        assert_eq!(
            send(&stack, &base, stale).await,
            (401, json!("token_expired")),
            "{stale}"
        );
    }
    // A token 59 minutes old still works.
    let recent = token::issue(&creds.token_secret, &channel, "ada", now_ms - 3_540_000);
    assert_eq!(send(&stack, &base, &recent).await.0, 200);
    let before = before + 1;
    // An expired token is not renewed; one from before issue times is exchanged once.
    let (status, answer) = stack.post(&format!("{base}/token"), &old, &json!({})).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (401, &json!("token_expired"))
    );
    let (status, exchanged) = stack
        .post(&format!("{base}/token"), &legacy, &json!({}))
        .await;
    assert_eq!(status, 200, "{exchanged}");
    assert_eq!(exchanged["user_id"], ada["user_id"]);
    let (status, renewed) = stack
        .post(&format!("{base}/token"), &ada_token, &json!({}))
        .await;
    assert_eq!(status, 200, "{renewed}");
    assert_ne!(renewed["token"], ada["token"]);
    assert_eq!(
        ingress_seq(&stack).await,
        before,
        "refusals and renewals published nothing"
    );

    // Revoking one user: the tenant names it by Patchbay's id, once the router has it.
    let ada_id = ada["user_id"].as_str().unwrap().to_owned();
    let revoke_ada = format!("/v1/users/{ada_id}/tokens/revoke");
    let stranger = stack.bot().await;
    eventually(WAIT, "ada known to the router", || async {
        let (status, _) = stack
            .call(
                "get",
                &format!("/v1/users/{ada_id}"),
                Some(&bot.api_key),
                None,
            )
            .await;
        (status == 200).then_some(())
    })
    .await;
    let (status, _) = stack
        .call("post", &revoke_ada, Some(&stranger.api_key), None)
        .await;
    assert_eq!(status, 404, "another bot's user");
    let (status, revoked) = stack
        .call("post", &revoke_ada, Some(&bot.api_key), None)
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["tokens_revoked_at"].is_string(), "{revoked}");
    let before = ingress_seq(&stack).await;
    for t in [
        &ada_token,
        renewed["token"].as_str().unwrap(),
        exchanged["token"].as_str().unwrap(),
        &recent,
    ] {
        assert_eq!(
            send(&stack, &base, t).await,
            (401, json!("token_revoked")),
            "{t}"
        );
    }
    for t in [&ada_token, &legacy] {
        let (status, answer) = stack.post(&format!("{base}/token"), t, &json!({})).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (401, &json!("token_revoked")),
            "{t}"
        );
    }
    // The attacker cannot register ada again with the domain key for a fresh token.
    let (status, _) = register(
        &stack,
        &base,
        &domain_key,
        None,
        &json!({"external_id": "ada"}),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        ingress_seq(&stack).await,
        before,
        "refused requests published nothing"
    );
    assert_eq!(
        send(&stack, &base, &bob_token).await.0,
        200,
        "other users keep theirs"
    );
    // The app's back end registers ada again: a new token works.
    let proof = registration::sign(&secret, now(), &channel, "ada");
    let (status, again) = register(
        &stack,
        &base,
        &domain_key,
        Some(proof),
        &json!({"external_id": "ada"}),
    )
    .await;
    assert_eq!(status, 201, "{again}");
    let ada_again = again["token"].as_str().unwrap().to_owned();
    assert_eq!(send(&stack, &base, &ada_again).await.0, 200);

    // Revoking the channel: every token issued until then, of every user.
    let revoke_channel = format!("/v1/channels/{channel}/tokens/revoke");
    let (status, _) = stack
        .call("post", &revoke_channel, Some(&stranger.api_key), None)
        .await;
    assert_eq!(status, 404, "another bot's channel");
    let (status, answer) = stack
        .call(
            "post",
            &format!("/v1/channels/{}/tokens/revoke", bot.channel_id),
            Some(&bot.api_key),
            None,
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "not_custom");
    let (status, revoked) = stack
        .call("post", &revoke_channel, Some(&bot.api_key), None)
        .await;
    assert_eq!(status, 200, "{revoked}");
    for t in [&ada_again, &bob_token] {
        assert_eq!(
            send(&stack, &base, t).await,
            (401, json!("token_revoked")),
            "{t}"
        );
    }
    // New registrations after it work.
    let (status, carol) = register(
        &stack,
        &base,
        &domain_key,
        None,
        &json!({"external_id": "carol"}),
    )
    .await;
    assert_eq!(status, 201, "{carol}");
    assert_eq!(
        send(&stack, &base, carol["token"].as_str().unwrap())
            .await
            .0,
        200
    );
    stack.shutdown().await;
}
