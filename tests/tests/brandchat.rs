//! BrandChat compatibility end to end, with BrandChat's documented payloads
//! (`reference/seed-systems.md` §1): callbacks in its event shapes, signed with
//! `X-Chat-Signature` (lowercase hex HMAC-SHA1 of the body with the API key) and carrying
//! `?bot=`, its inline reply (a JSON array), and its API (`user/profile`, `send/messages`,
//! `code/claim`) with its signature rules (401 missing, 403 wrong, compared case-insensitively).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hmac::{KeyInit, Mac};
use patchbay_telegram::fixtures;
use patchbay_tests::{Options, Stack, TestBot, WAIT, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PUBLIC_URL: &str = "https://patchbay.example";

/// PHP's `hash_hmac('sha1', $payload, $key)`, computed here independently of the gateway.
fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Calls a BrandChat route as the PHP client does: `?bot=`, the signature of the exact bytes.
async fn brandchat(
    stack: &Stack,
    bot_id: Option<&str>,
    route: &str,
    body: &Value,
    signature: Option<String>,
) -> (u16, Value) {
    let raw = serde_json::to_vec(body).unwrap();
    let mut url = format!("{}/brandchat/api/{route}", stack.api_url());
    if let Some(b) = bot_id {
        url.push_str(&format!("?bot={b}"));
    }
    let mut req = stack
        .http
        .post(url)
        .header("content-type", "application/json")
        .body(raw);
    if let Some(s) = signature {
        req = req.header("X-Chat-Signature", s);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `file/upload` as BrandChat's PHP client sends it: multipart with the file in field `media`,
/// `X-Chat-Signature` over the file's bytes.
async fn upload(
    stack: &Stack,
    bot: &TestBot,
    content_type: &str,
    file: &[u8],
    signature: &str,
) -> (u16, Value) {
    let boundary = "----patchbay-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"upload\"\r\n\
         Content-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = stack
        .http
        .post(format!(
            "{}/brandchat/api/file/upload?bot={}",
            stack.api_url(),
            bot.id
        ))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("X-Chat-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn signed(stack: &Stack, bot: &TestBot, route: &str, body: &Value) -> (u16, Value) {
    let sig = sign(&bot.api_key, &serde_json::to_vec(body).unwrap());
    brandchat(stack, Some(&bot.id), route, body, Some(sig)).await
}

/// The BrandChat event of `kind` the tenant received, with its request.
async fn event_of(stack: &Stack, kind: &str, n: usize) -> patchbay_testkit::tenant::Received {
    eventually(WAIT, &format!("BrandChat {kind} event #{n}"), || async {
        stack
            .tenant
            .received()
            .into_iter()
            .filter(|r| r.json()["type"] == kind)
            .nth(n)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brandchat_client_works_unchanged() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| c.public_url = PUBLIC_URL.into()),
        ..Options::default()
    })
    .await;
    let bot = stack.bot_with_flavour("brandchat").await;
    stack.tenant.respond_with(|r| {
        let e = r.json();
        if e["type"] == "message" && e["message"]["text"] == "hi" {
            (
                StatusCode::OK,
                Some(json!([{"type": "text", "text": "Hello from PHP"}])),
            )
        } else {
            (StatusCode::OK, None)
        }
    });

    // subscribe: BrandChat's shape, ?bot=, signed with the API key.
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(1, 4242, "/start"))
            .await,
        200
    );
    let subscribe = event_of(&stack, "subscribe", 0).await;
    assert_eq!(
        subscribe.query.as_deref(),
        Some(format!("bot={}", bot.id).as_str())
    );
    assert_eq!(
        subscribe.header("x-chat-signature"),
        Some(sign(&bot.api_key, &subscribe.body)),
        "lowercase hex HMAC-SHA1 of the body"
    );
    let s = subscribe.json();
    assert!(s["timestamp"].is_i64(), "{s}");
    let user_id = s["subscribe"]["userId"]
        .as_i64()
        .expect("a 64-bit integer userId");

    // message: BrandChat's text message; the inline reply (a JSON array) reaches Telegram.
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(2, 4242, "hi"))
            .await,
        200
    );
    let m = event_of(&stack, "message", 0).await.json();
    assert_eq!(
        m["message"],
        json!({"type": "text", "userId": user_id, "text": "hi"})
    );
    eventually(WAIT, "the inline reply at Telegram", || async {
        stack
            .telegram
            .calls_of("sendMessage")
            .into_iter()
            .find(|c| c.body["text"] == "Hello from PHP")
    })
    .await;

    // user/profile, and the signature rules.
    let body = json!({"userId": user_id});
    let (status, profile) = signed(&stack, &bot, "user/profile", &body).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["userId"], user_id);
    assert_eq!(profile["platform"], "telegram");
    assert_eq!(profile["displayName"], "Ana Lima");
    assert_eq!(profile["isSubscribed"], true);
    assert_eq!(profile["platformIdentifier"], "4242");
    let upper = sign(&bot.api_key, &serde_json::to_vec(&body).unwrap()).to_uppercase();
    let (status, _) = brandchat(&stack, Some(&bot.id), "user/profile", &body, Some(upper)).await;
    assert_eq!(status, 200, "signatures compare case-insensitively");
    let (status, answer) = brandchat(&stack, Some(&bot.id), "user/profile", &body, None).await;
    assert_eq!(status, 401, "missing signature: {answer}");
    assert!(answer["reason"].is_string(), "{answer}");
    let wrong = sign("not-the-key", &serde_json::to_vec(&body).unwrap());
    let (status, _) = brandchat(&stack, Some(&bot.id), "user/profile", &body, Some(wrong)).await;
    assert_eq!(status, 403, "wrong signature");
    let good = sign(&bot.api_key, &serde_json::to_vec(&body).unwrap());
    let (status, _) = brandchat(&stack, None, "user/profile", &body, Some(good)).await;
    assert_eq!(status, 401, "no ?bot=");
    let (status, _) = signed(&stack, &bot, "user/profile", &json!({"userId": 1})).await;
    assert_eq!(status, 404, "unknown user");
    let native = stack.bot().await;
    let sig = sign(&native.api_key, &serde_json::to_vec(&body).unwrap());
    let (status, _) = brandchat(&stack, Some(&native.id), "user/profile", &body, Some(sig)).await;
    assert_eq!(status, 401, "a native bot has no BrandChat API");

    // send/messages: all-or-nothing batches of at most ten.
    let send_stream = || async {
        stack
            .stream_sequences()
            .await
            .into_iter()
            .find(|(name, _)| name.ends_with("_SEND"))
            .unwrap()
    };
    let before = send_stream().await;
    for (batch, reason) in [
        (
            json!([{"type": "text", "userId": user_id, "text": "ok"},
                   {"type": "text", "userId": user_id, "text": "x".repeat(1001)}]),
            "[1].text",
        ),
        (
            Value::Array(vec![
                json!({"type": "text", "userId": user_id, "text": "x"});
                11
            ]),
            "messages",
        ),
        (
            json!([{"type": "text", "userId": user_id, "text": "ok"},
                   {"type": "text", "userId": 1, "text": "to nobody"}]),
            "[1].userId",
        ),
        (json!([{"type": "list", "userId": user_id}]), "[0].type"),
    ] {
        let (status, answer) = signed(&stack, &bot, "send/messages", &batch).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["reason"].as_str().unwrap().starts_with(reason),
            "{reason}: {answer}"
        );
    }
    assert_eq!(send_stream().await, before, "refused batches sent nothing");
    let batch = json!([
        {"type": "text", "userId": user_id, "text": "One"},
        {"type": "text", "userId": user_id, "text": "Two",
         "buttons": [{"label": "Open", "url": "https://shop.example/login?c=:code"}]}
    ]);
    let (status, answer) = signed(&stack, &bot, "send/messages", &batch).await;
    assert_eq!(status, 200, "{answer}");
    let link = eventually(WAIT, "both messages at Telegram, in order", || async {
        let texts: Vec<Value> = stack
            .telegram
            .calls_of("sendMessage")
            .into_iter()
            .map(|c| c.body)
            .filter(|b| b["text"] == "One" || b["text"] == "Two")
            .collect();
        (texts.len() == 2 && texts[0]["text"] == "One").then(|| {
            texts[1]["reply_markup"]["inline_keyboard"][0][0]["url"]
                .as_str()
                .unwrap()
                .to_owned()
        })
    })
    .await;

    // file/upload: one file, signed over its bytes; messages name it by fileId, and the
    // platform fetches it from Patchbay.
    let png: Vec<u8> = [b"\x89PNG\r\n\x1a\n".as_slice(), &[7u8; 2000]].concat();
    let (status, uploaded) =
        upload(&stack, &bot, "image/png", &png, &sign(&bot.api_key, &png)).await;
    assert_eq!(status, 200, "{uploaded}");
    let file_id = uploaded["fileId"].as_i64().expect("an integer fileId");
    let (status, _) = upload(&stack, &bot, "image/png", &png, &sign("nope", &png)).await;
    assert_eq!(status, 403, "wrong signature");
    let big = vec![1u8; 128 * 1024 + 1];
    let (status, answer) = upload(&stack, &bot, "image/png", &big, &sign(&bot.api_key, &big)).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = upload(
        &stack,
        &bot,
        "application/pdf",
        &png,
        &sign(&bot.api_key, &png),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = signed(
        &stack,
        &bot,
        "send/messages",
        &json!([{"type": "image", "userId": user_id, "fileId": file_id}]),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let photo = eventually(WAIT, "the uploaded image at Telegram", || async {
        stack
            .telegram
            .calls_of("sendPhoto")
            .into_iter()
            .find_map(|c| c.body["photo"].as_str().map(str::to_owned))
    })
    .await;
    assert_eq!(
        photo,
        format!("{PUBLIC_URL}/brandchat/files/{}/{file_id}", bot.id)
    );
    let served = stack
        .http
        .get(format!(
            "{}{}",
            stack.api_url(),
            photo.strip_prefix(PUBLIC_URL).unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "image/png");
    assert_eq!(served.bytes().await.unwrap().as_ref(), png.as_slice());

    // code/claim: the web view's code gives the profile once.
    let location = stack.open_link(&link).await;
    let code = location.rsplit("c=").next().unwrap().to_owned();
    let (status, claimed) = signed(&stack, &bot, "code/claim", &json!({"code": code})).await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["userId"], user_id);
    let (status, again) = signed(&stack, &bot, "code/claim", &json!({"code": code})).await;
    assert_eq!(status, 410, "a code is claimed once: {again}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_no_longer_signs_brandchat_requests() {
    let stack = Stack::start().await;
    let bot = stack.bot_with_flavour("brandchat").await;
    let (status, rotated) = stack
        .post(
            &format!("{}/admin/v1/bots/{}/keys/rotate", stack.api_url(), bot.id),
            stack.admin_token(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 201, "{rotated}");
    let new_key = rotated["api_key"].as_str().unwrap().to_owned();
    // An unknown user: a good signature gets 404, a refused one 403.
    let body = json!({"userId": 1});
    let raw = serde_json::to_vec(&body).unwrap();
    let with = |key: &str| {
        let sig = sign(key, &raw);
        let (stack, bot_id, body) = (&stack, bot.id.clone(), body.clone());
        async move {
            brandchat(stack, Some(&bot_id), "user/profile", &body, Some(sig))
                .await
                .0
        }
    };
    eventually(WAIT, "the new key signs", || async {
        (with(&new_key).await == 404).then_some(())
    })
    .await;
    let (status, _) = stack
        .post(
            &format!(
                "{}/admin/v1/bots/{}/keys/{}/revoke",
                stack.api_url(),
                bot.id,
                rotated["key_id"].as_str().unwrap()
            ),
            stack.admin_token(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 204);
    eventually(WAIT, "the revoked key stops signing", || async {
        (with(&new_key).await == 403).then_some(())
    })
    .await;
    assert_eq!(with(&bot.api_key).await, 404, "the first key still signs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bots_files_are_bounded_by_its_storage_quota() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| {
            c.media_max_bytes = 200_000;
            c.media_quota_bytes = 200_000;
        }),
        ..Options::default()
    })
    .await;
    let bot = stack.bot_with_flavour("brandchat").await;
    let other = stack.bot_with_flavour("brandchat").await;
    let png: Vec<u8> = [b"\x89PNG\r\n\x1a\n".as_slice(), &[7u8; 90_000]].concat();
    for n in 0..2 {
        let (status, answer) =
            upload(&stack, &bot, "image/png", &png, &sign(&bot.api_key, &png)).await;
        assert_eq!(status, 200, "upload {n}: {answer}");
    }
    // A third would take the bot past its 200,000 bytes.
    let (status, answer) = upload(&stack, &bot, "image/png", &png, &sign(&bot.api_key, &png)).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("quota"),
        "{answer}"
    );
    // Another bot's quota is its own.
    let (status, answer) = upload(
        &stack,
        &other,
        "image/png",
        &png,
        &sign(&other.api_key, &png),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}
