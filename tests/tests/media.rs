//! `GET /v1/media/{media_id}`: every media event carries a `media_id` and a `download_url`
//! where the bot downloads the file with its API key, whatever the platform: downloaded once
//! from the platform with the channel's credentials (Telegram's `getFile`, WhatsApp's media
//! URL, WeChat's `media/get`, the CDN URL Kik gave), then served from the media store; another
//! bot's media is not found; a file over the limit is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_telegram::fixtures;
use patchbay_tests::{Stack, TestBot};
use serde_json::Value;

/// A small JPEG-ish payload (the fakes do not decode it).
const PHOTO: &[u8] = b"\xff\xd8\xff\xe0 a photo of a receipt \xff\xd9";

/// `GET url` with `key`: status, content type and body.
async fn download(stack: &Stack, url: &str, key: &str) -> (u16, Option<String>, Vec<u8>) {
    let r = stack.http.get(url).bearer_auth(key).send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, content_type, r.bytes().await.unwrap().to_vec())
}

/// The bot's `message.received` event whose content is media.
async fn media_event(stack: &Stack) -> Value {
    let got = stack.events_of("message.received", 1).await;
    got[0].json()
}

/// The download URL of the event's media, checked against the public URL and the media id.
fn download_url(stack: &Stack, event: &Value) -> String {
    let media = &event["message"]["content"];
    let id = media["media_id"].as_str().expect("a media_id");
    assert!(id.starts_with("med_"), "{media}");
    let url = media["download_url"].as_str().expect("a download_url");
    assert_eq!(
        url,
        format!(
            "{}/v1/media/{id}",
            stack.config.public_url.trim_end_matches('/')
        )
    );
    // The test reaches the API directly rather than through the public URL.
    format!("{}/v1/media/{id}", stack.api_url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_photo_is_downloaded_once_with_the_bots_token_and_only_for_its_bot() {
    let stack = Stack::start().await;
    let bot: TestBot = stack.bot().await;
    stack.telegram.add_file(&bot.bot_token, "AgAC-large", PHOTO);
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::photo_update(91001, 4242))
            .await,
        200
    );
    let event = media_event(&stack).await;
    assert_eq!(event["message"]["content"]["type"], "image");
    assert_eq!(event["message"]["content"]["file_id"], "AgAC-large");
    let url = download_url(&stack, &event);

    let (status, content_type, body) = download(&stack, &url, &bot.api_key).await;
    assert_eq!(status, 200);
    assert_eq!(body, PHOTO);
    // Telegram's files come as octet-stream; a photo is a JPEG.
    assert_eq!(content_type.as_deref(), Some("image/jpeg"));
    let got_file = stack.telegram.calls_of("getFile");
    assert_eq!(got_file.len(), 1);
    assert_eq!(got_file[0].token, bot.bot_token);
    assert_eq!(got_file[0].body["file_id"], "AgAC-large");

    // Again: from the media store, not from Telegram.
    let (status, _, again) = download(&stack, &url, &bot.api_key).await;
    assert_eq!((status, again.as_slice()), (200, PHOTO));
    assert_eq!(stack.telegram.calls_of("getFile").len(), 1);
    assert_eq!(stack.telegram.calls_of("file").len(), 1);

    // Another bot, even with the id in hand: not found. No key: 401.
    let other = stack.bot().await;
    let (status, _, body) = download(&stack, &url, &other.api_key).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let r = stack.http.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Not a media id at all: 404.
    let (status, _, _) = download(
        &stack,
        &format!(
            "{}/v1/media/msg_01JD5W2Q8Y3T9K6V1M4N7P0R2S",
            stack.api_url()
        ),
        &bot.api_key,
    )
    .await;
    assert_eq!(status, 404);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_the_platform_no_longer_has_is_not_found_and_nothing_is_stored() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    // No file registered at the fake: Telegram answers "invalid file_id".
    stack
        .post_update(&bot, &fixtures::photo_update(91002, 4243))
        .await;
    let event = media_event(&stack).await;
    let url = download_url(&stack, &event);
    let (status, _, body) = download(&stack, &url, &bot.api_key).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "not_found", "{error}");
    // Asked again, Telegram is asked again (a refusal is not cached).
    stack.telegram.add_file(&bot.bot_token, "AgAC-large", PHOTO);
    let (status, _, body) = download(&stack, &url, &bot.api_key).await;
    assert_eq!((status, body.as_slice()), (200, PHOTO));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_document_is_fetched_through_its_media_url_with_the_numbers_token() {
    use patchbay_whatsapp::fixtures as fx;
    let stack = Stack::start().await;
    let bot = stack
        .whatsapp_bot(fx::PHONE_NUMBER_ID, "wa-app-secret", None)
        .await;
    let pdf = b"%PDF-1.7 an invoice".as_slice();
    stack.graph.add_whatsapp_media(
        fx::PHONE_NUMBER_ID,
        "1037543291543636",
        "application/pdf",
        pdf,
    );
    let post = fx::post(&[(
        fx::PHONE_NUMBER_ID,
        fx::from_user(fx::media(
            "wamid.DOC1",
            "document",
            "1037543291543636",
            None,
        )),
    )]);
    assert_eq!(
        stack
            .post_meta("whatsapp", &bot.webhook_path, Some("wa-app-secret"), &post)
            .await,
        200
    );
    let event = media_event(&stack).await;
    assert_eq!(event["message"]["content"]["type"], "file");
    let url = download_url(&stack, &event);
    let (status, content_type, body) = download(&stack, &url, &bot.api_key).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        (content_type.as_deref(), body.as_slice()),
        (Some("application/pdf"), pdf)
    );
    // The lookup and the download, both with the number's token.
    let calls: Vec<_> = stack
        .graph
        .calls()
        .into_iter()
        .filter(|c| c.method == "GET")
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].id, "1037543291543636");
    assert_eq!(calls[1].id, "attachment:1037543291543636");
    assert!(
        calls
            .iter()
            .all(|c| c.status == 200 && c.token.as_deref() == Some(bot.token.as_str()))
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wechat_picture_is_fetched_with_media_get_and_the_shared_access_token() {
    use patchbay_tests::WechatMode;
    use patchbay_wechat::fixtures as fx;
    let stack = Stack::start().await;
    let bot = stack.wechat_bot(None).await;
    stack
        .wechat
        .add_media(&bot.app_id, "MEDIA_ID_1", "image/png", PHOTO);
    let xml = fx::image(
        fx::OPENID,
        61001,
        "http://mmbiz.qpic.cn/unreachable.png",
        "MEDIA_ID_1",
    );
    let (status, _) = stack
        .post_wechat(&bot, &bot.token, WechatMode::Safe, &xml)
        .await;
    assert_eq!(status, 200);
    let event = media_event(&stack).await;
    assert_eq!(event["message"]["content"]["file_id"], "MEDIA_ID_1");
    let url = download_url(&stack, &event);
    let (status, content_type, body) = download(&stack, &url, &bot.api_key).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        (content_type.as_deref(), body.as_slice()),
        (Some("image/png"), PHOTO)
    );
    let gets = stack
        .wechat
        .calls_to(patchbay_testkit::wechat::MEDIA_GET_PATH);
    assert_eq!(gets.len(), 1);
    assert_eq!(
        (gets[0].errcode, gets[0].app_id.as_deref()),
        (0, Some(bot.app_id.as_str()))
    );
    assert_eq!(gets[0].query["media_id"], "MEDIA_ID_1");
    stack.shutdown().await;
}

/// A CDN serving one file at `/pic.jpg` (Kik's `picUrl`), counting the downloads.
async fn cdn(bytes: &'static [u8]) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/pic.jpg",
        axum::routing::get(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { ([("content-type", "image/jpeg")], bytes) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/pic.jpg"), hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kik_picture_is_fetched_from_the_url_kik_gave_and_bounded_in_size() {
    let stack = Stack::start_with(patchbay_tests::Options {
        // Just above PHOTO: the second file is refused.
        configure: Box::new(|c| c.media_max_bytes = PHOTO.len() as u64),
        ..Default::default()
    })
    .await;
    let bot = stack.kik_bot(None).await;
    let (url, hits) = cdn(PHOTO).await;
    let status = stack
        .post_kik(
            &bot,
            vec![patchbay_kik::fixtures::picture(
                "4b6f6b7e-0001",
                "ana99",
                &url,
            )],
        )
        .await;
    assert_eq!(status, 200);
    let event = media_event(&stack).await;
    assert_eq!(event["message"]["content"]["url"], url.as_str());
    let download_at = download_url(&stack, &event);
    let (status, content_type, body) = download(&stack, &download_at, &bot.api_key).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        (content_type.as_deref(), body.as_slice()),
        (Some("image/jpeg"), PHOTO)
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    // One byte more than allowed: 413, nothing stored.
    const LARGER: &[u8] = b"\xff\xd8\xff\xe0 a photo of a receipt, larger \xff\xd9";
    let (url, _) = cdn(LARGER).await;
    stack
        .post_kik(
            &bot,
            vec![patchbay_kik::fixtures::picture(
                "4b6f6b7e-0002",
                "ana99",
                &url,
            )],
        )
        .await;
    let got = stack.events_of("message.received", 2).await;
    let second = got
        .iter()
        .map(|r| r.json())
        .find(|e| e["message"]["content"]["url"] == url.as_str())
        .unwrap();
    let (status, _, body) = download(&stack, &download_url(&stack, &second), &bot.api_key).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    stack.shutdown().await;
}

/// `POST /v1/media` with one file part: status and JSON answer.
async fn upload(
    stack: &Stack,
    key: &str,
    content_type: &str,
    name: &str,
    bytes: &[u8],
) -> (u16, Value) {
    let boundary = "patchbay-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = stack
        .http
        .post(format!("{}/v1/media", stack.api_url()))
        .bearer_auth(key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `bot` sends its upload `media_id` to `user` as an image (with `caption`); returns what
/// Telegram got as the `n`-th `sendPhoto`.
async fn send_upload(
    stack: &Stack,
    bot: &TestBot,
    user: &str,
    media_id: &str,
    caption: Option<&str>,
    n: usize,
) -> Value {
    let mut image = serde_json::json!({"type": "image", "media_id": media_id});
    if let Some(c) = caption {
        image["caption"] = c.into();
    }
    let (status, sent) = stack
        .call(
            "POST",
            "/v1/messages",
            Some(&bot.api_key),
            Some(&serde_json::json!({"user_id": user, "messages": [image]})),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    stack
        .telegram
        .wait_for("sendPhoto", n, patchbay_tests::TIMEOUT)
        .await
        .swap_remove(n - 1)
        .body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_image_is_sent_by_its_media_id_and_served_to_the_platform_without_credentials()
{
    let mut stack = Stack::start_with(patchbay_tests::Options {
        layout: patchbay_tests::Layout::Split,
        ..Default::default()
    })
    .await;
    let bot = stack.bot().await;
    let (status, up) = upload(&stack, &bot.api_key, "image/jpeg", "receipt.jpg", PHOTO).await;
    assert_eq!(status, 201, "{up}");
    let media_id = up["media_id"].as_str().unwrap().to_owned();
    assert!(media_id.starts_with("med_"), "{up}");
    assert_eq!(up["type"], "image");
    assert_eq!(up["size"], PHOTO.len());
    assert_eq!(up["filename"], "receipt.jpg");
    assert_eq!(up["accepted_by"], serde_json::json!(["telegram"]));

    // The user wrote first (Telegram lets the bot answer); the bot sends the upload.
    stack
        .post_update(
            &bot,
            &fixtures::text_update(91003, 4244, "the receipt please"),
        )
        .await;
    let user = stack.events_of("message.received", 1).await[0].json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = send_upload(&stack, &bot, &user, &media_id, Some("your receipt"), 1).await;
    let link = first["photo"].as_str().unwrap().to_owned();
    assert_eq!(
        link,
        format!(
            "{}/media/{}/{media_id}",
            stack.config.public_url.trim_end_matches('/'),
            bot.id
        )
    );
    assert_eq!(first["caption"], "your receipt");
    // Sent again: by the file_id Telegram gave it, not fetched again.
    let second = send_upload(&stack, &bot, &user, &media_id, None, 2).await;
    let file_id = second["photo"].as_str().unwrap().to_owned();
    assert!(file_id.starts_with("AgACsent"), "{second}");
    // A sender started afresh (another replica, a restart) knows the file_id too.
    stack.stop("outbound-telegram").await;
    stack.restart("outbound-telegram").await;
    let third = send_upload(&stack, &bot, &user, &media_id, None, 3).await;
    assert_eq!(third["photo"], file_id.as_str(), "not fetched again");
    // What Telegram fetches: no credentials needed.
    let public = link.replace(
        stack.config.public_url.trim_end_matches('/'),
        &stack.api_url(),
    );
    let r = stack.http.get(&public).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.bytes().await.unwrap().as_ref(), PHOTO);
    // The bot reads its own upload back; another bot can neither read nor send it.
    let own = format!("{}/v1/media/{media_id}", stack.api_url());
    let (status, _, body) = download(&stack, &own, &bot.api_key).await;
    assert_eq!((status, body.as_slice()), (200, PHOTO));
    let other = stack.bot().await;
    let (status, _, _) = download(&stack, &own, &other.api_key).await;
    assert_eq!(status, 404);
    let (status, refused) = stack
        .call(
            "POST",
            "/v1/messages",
            Some(&other.api_key),
            Some(&serde_json::json!({"user_id": user, "messages": [
                {"type": "image", "media_id": media_id}]})),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0].media_id"),
        "{refused}"
    );
    let wrong_bot = public.replace(&bot.id, &other.id);
    assert_eq!(
        stack
            .http
            .get(&wrong_bot)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_checked_against_the_bots_platforms_the_size_limit_and_the_quota() {
    let stack = Stack::start_with(patchbay_tests::Options {
        configure: Box::new(|c| {
            c.media_max_bytes = 64;
            c.media_quota_bytes = 100;
        }),
        ..Default::default()
    })
    .await;
    // A WeChat account sends no files; a Telegram bot does.
    let wechat = stack.wechat_bot(None).await;
    let (status, refused) = upload(
        &stack,
        &wechat.api_key,
        "application/pdf",
        "invoice.pdf",
        b"%PDF-1.7",
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "unsupported_media");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wechat sends no file"),
        "{refused}"
    );
    let bot = stack.bot().await;
    let (status, up) = upload(
        &stack,
        &bot.api_key,
        "application/pdf",
        "invoice.pdf",
        b"%PDF-1.7",
    )
    .await;
    assert_eq!(
        (status, &up["type"]),
        (201, &serde_json::json!("file")),
        "{up}"
    );
    // No content type, an empty file, one byte over the limit.
    let (status, _) = upload(
        &stack,
        &bot.api_key,
        "application/octet-stream",
        "x",
        b"abc",
    )
    .await;
    assert_eq!(status, 415);
    let (status, _) = upload(&stack, &bot.api_key, "image/png", "x.png", b"").await;
    assert_eq!(status, 422);
    let (status, big) = upload(&stack, &bot.api_key, "image/png", "x.png", &[7u8; 65]).await;
    assert_eq!(
        (status, &big["error"]["code"]),
        (413, &serde_json::json!("too_large")),
        "{big}"
    );
    // 8 bytes stored of 100: 60 more fit, then 40 do not.
    let (status, _) = upload(&stack, &bot.api_key, "image/png", "a.png", &[1u8; 60]).await;
    assert_eq!(status, 201);
    let (status, over) = upload(&stack, &bot.api_key, "image/png", "b.png", &[2u8; 40]).await;
    assert_eq!(
        (status, &over["error"]["code"]),
        (413, &serde_json::json!("quota_exceeded")),
        "{over}"
    );
    // Another bot has its own quota, and uploads at once never take more than it together.
    let other = stack.bot().await;
    let at_once = (0..4u8).map(|i| {
        let key = other.api_key.clone();
        let stack = &stack;
        async move { upload(stack, &key, "image/png", "b.png", &[i; 40]).await.0 }
    });
    let mut statuses = futures::future::join_all(at_once).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 201, 413, 413]);
    // Its storage record lost (the quotas bucket's TTL passed): rebuilt from the stores.
    let js = async_nats::jetstream::new(stack.raw_nats().await);
    let quotas = js
        .get_key_value(
            patchbay_contract::Subjects::new(&stack.config.nats_prefix)
                .unwrap()
                .bucket(patchbay_contract::subjects::Bucket::Quotas),
        )
        .await
        .unwrap();
    let record = format!("storage.{}", other.id);
    assert!(
        quotas.get(&record).await.unwrap().is_some(),
        "kept in the quotas bucket"
    );
    quotas.purge(&record).await.unwrap();
    let (status, _) = upload(&stack, &other.api_key, "image/png", "c.png", &[3u8; 40]).await;
    assert_eq!(status, 413, "80 of 100 bytes still stored");
    let (status, _) = upload(&stack, &other.api_key, "image/png", "c.png", &[3u8; 20]).await;
    assert_eq!(status, 201);
    stack.shutdown().await;
}

/// The user's first message, timestamped now (the platform's window counts from it).
fn whatsapp_now(mut value: Value) -> Value {
    let ts = chrono::Utc::now().timestamp().to_string();
    if let Some(messages) = value["messages"].as_array_mut() {
        for m in messages {
            m["timestamp"] = serde_json::json!(ts);
        }
    }
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_and_wechat_get_uploads_through_their_media_upload_apis_once() {
    use patchbay_tests::WechatMode;
    use patchbay_whatsapp::fixtures as wa;
    let stack = Stack::start().await;

    // WhatsApp: POST /<number>/media (multipart), then {"image": {"id": …}} for every send.
    let bot = stack
        .whatsapp_bot(wa::PHONE_NUMBER_ID, "wa-app-secret", None)
        .await;
    let post = wa::post(&[(
        wa::PHONE_NUMBER_ID,
        whatsapp_now(wa::from_user(wa::text("wamid.IN9", "send it"))),
    )]);
    stack
        .post_meta("whatsapp", &bot.webhook_path, Some("wa-app-secret"), &post)
        .await;
    let user = stack.events_of("message.received", 1).await[0].json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, up) = upload(&stack, &bot.api_key, "image/png", "chart.png", PHOTO).await;
    assert_eq!(status, 201, "{up}");
    for _ in 0..2 {
        let (status, sent) = stack
            .call(
                "POST",
                "/v1/messages",
                Some(&bot.api_key),
                Some(&serde_json::json!({"user_id": user, "messages": [
                    {"type": "image", "media_id": up["media_id"], "caption": "chart"}]})),
            )
            .await;
        assert_eq!(status, 202, "{sent}");
    }
    let sends = patchbay_tests::eventually(patchbay_tests::TIMEOUT, "two image sends", || async {
        let s = stack.graph.sends(wa::PHONE_NUMBER_ID);
        (s.len() >= 2).then_some(s)
    })
    .await;
    let uploads: Vec<_> = stack
        .graph
        .calls()
        .into_iter()
        .filter(|c| c.id == format!("{}/media", wa::PHONE_NUMBER_ID))
        .collect();
    assert_eq!(uploads.len(), 1, "uploaded once: {uploads:?}");
    assert_eq!(uploads[0].status, 200);
    assert_eq!(uploads[0].body["type"], "image/png");
    assert_eq!(uploads[0].body["file_size"], PHOTO.len());
    let media_id = sends[0].body["image"]["id"]
        .as_str()
        .expect("sent by id")
        .to_owned();
    assert_eq!(sends[1].body["image"]["id"], media_id.as_str());
    assert_eq!(sends[0].body["image"]["caption"], "chart");
    // What WhatsApp stored is the file.
    let url = format!("{}/{media_id}", stack.graph.base_url());
    let answer: Value = stack
        .http
        .get(url)
        .bearer_auth(&bot.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["file_size"], PHOTO.len());

    // WeChat: media/upload as temporary media, then the customer-service image by media_id.
    let wx = stack.wechat_bot(None).await;
    stack
        .wechat
        .add_follower(&wx.app_id, patchbay_wechat::fixtures::OPENID);
    let xml = patchbay_wechat::fixtures::text(patchbay_wechat::fixtures::OPENID, 62001, "send it")
        .replace(
            &format!(
                "<CreateTime>{}</CreateTime>",
                patchbay_wechat::fixtures::TIME
            ),
            &format!(
                "<CreateTime>{}</CreateTime>",
                chrono::Utc::now().timestamp()
            ),
        );
    stack
        .post_wechat(&wx, &wx.token, WechatMode::Plain, &xml)
        .await;
    let wx_user =
        patchbay_tests::eventually(patchbay_tests::TIMEOUT, "the WeChat user", || async {
            stack
                .events_of("message.received", 2)
                .await
                .iter()
                .map(|r| r.json())
                .find(|e| e["bot_id"] == wx.id.as_str())
                .map(|e| e["user"]["id"].as_str().unwrap().to_owned())
        })
        .await;
    let (status, up) = upload(&stack, &wx.api_key, "image/png", "chart.png", PHOTO).await;
    assert_eq!(status, 201, "{up}");
    let (status, sent) = stack
        .call(
            "POST",
            "/v1/messages",
            Some(&wx.api_key),
            Some(&serde_json::json!({"user_id": wx_user, "messages": [
                {"type": "image", "media_id": up["media_id"]}]})),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let sends = stack
        .wechat
        .wait_for(
            patchbay_testkit::wechat::CUSTOM_SEND_PATH,
            1,
            patchbay_tests::TIMEOUT,
        )
        .await;
    assert_eq!(sends[0].errcode, 0, "{:?}", sends[0]);
    let uploaded = stack.wechat.uploads();
    let ours = uploaded
        .iter()
        .find(|u| u.app_id == wx.app_id)
        .expect("uploaded");
    assert_eq!(
        (ours.kind.as_str(), ours.bytes.as_slice()),
        ("image", PHOTO)
    );
    assert_eq!(sends[0].body["image"]["media_id"], ours.media_id.as_str());
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_file_is_fetched_from_the_content_api_with_the_channels_token() {
    use patchbay_line::fixtures as line;
    let stack = Stack::start().await;
    let bot = stack.line_bot(None).await;
    let pdf = b"%PDF-1.7 a report".as_slice();
    let event = line::media("01JLINEMEDIA0000000000001", "Ufile0001", "file");
    stack.line.add_content(
        &bot.access_token,
        "m-01JLINEMEDIA0000000000001",
        "application/pdf",
        pdf,
    );
    assert_eq!(stack.post_line(&bot, vec![event]).await, 200);
    let event = media_event(&stack).await;
    assert_eq!(
        event["message"]["content"]["file_id"],
        "m-01JLINEMEDIA0000000000001"
    );
    let url = download_url(&stack, &event);
    let (status, content_type, body) = download(&stack, &url, &bot.api_key).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        (content_type.as_deref(), body.as_slice()),
        (Some("application/pdf"), pdf)
    );
    let fetched = stack
        .line
        .calls_to("/v2/bot/message/m-01JLINEMEDIA0000000000001/content");
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].token.as_deref(), Some(bot.access_token.as_str()));
    stack.shutdown().await;
}
