//! Channel profiles end to end (real NATS and PostgreSQL, fake platforms speaking their wire
//! formats): `GET`/`PATCH /v1/channels/{id}/profile` read and change Telegram's name and
//! descriptions, WhatsApp's business profile (its picture fetched from a URL and uploaded
//! through Meta's Resumable Upload API) and Messenger's greeting, get-started button,
//! persistent menu and ice breakers, through each platform's sender; bad keys are refused
//! naming them before any call, the platform's refusals are reported, another bot's channel is
//! not found and platforms without profiles say so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_tests::Stack;
use serde_json::{Value, json};

async fn profile(stack: &Stack, key: &str, channel: &str, change: Option<Value>) -> (u16, Value) {
    let path = format!("/v1/channels/{channel}/profile");
    match change {
        None => stack.call("get", &path, Some(key), None).await,
        Some(c) => stack.call("patch", &path, Some(key), Some(&c)).await,
    }
}

fn refused(answer: (u16, Value), status: u16, starts: &str) -> String {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    let message = body["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with(starts), "{message}");
    message
}

/// Serves `bytes` as `content_type` at the URL it answers.
async fn picture(bytes: &'static [u8], content_type: &'static str) -> String {
    let app = axum::Router::new().route(
        "/logo",
        axum::routing::get(move || async move { ([("content-type", content_type)], bytes) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/logo")
}

/// Not a real PNG beyond its signature: the fake, like the sender, goes by the content type.
const LOGO: &[u8] = b"\x89PNG\r\n\x1a\n-patchbay-logo-bytes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_name_and_descriptions_are_read_and_changed_at_telegram() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let other = stack.bot().await;
    let key = bot.api_key.as_str();

    let (status, read) = profile(&stack, key, &bot.channel_id, None).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["channel_id"], bot.channel_id.as_str());
    assert_eq!(read["platform"], "telegram");
    assert_eq!(
        read["profile"],
        json!({"name": "", "description": "", "short_description": ""})
    );

    let (status, changed) = profile(
        &stack,
        key,
        &bot.channel_id,
        Some(json!({"name": "Acme Support", "short_description": "We answer in minutes"})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        changed["profile"],
        json!({"name": "Acme Support", "description": "",
               "short_description": "We answer in minutes"})
    );
    let set = stack.telegram.calls_of("setMyName");
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].token, bot.bot_token);
    assert_eq!(set[0].body, json!({"name": "Acme Support"}));
    let (_, read) = profile(&stack, key, &bot.channel_id, None).await;
    assert_eq!(read, changed);

    // `null` removes a text (Telegram takes an empty one).
    let (status, cleared) = profile(
        &stack,
        key,
        &bot.channel_id,
        Some(json!({"short_description": null})),
    )
    .await;
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(cleared["profile"]["short_description"], "");
    assert_eq!(cleared["profile"]["name"], "Acme Support");

    // Refused before any call, naming the key.
    let calls = stack.telegram.calls().len();
    refused(
        profile(&stack, key, &bot.channel_id, Some(json!({"about": "x"}))).await,
        422,
        "about: a Telegram profile has name",
    );
    refused(
        profile(
            &stack,
            key,
            &bot.channel_id,
            Some(json!({"name": "x".repeat(65)})),
        )
        .await,
        422,
        "name: at most 64 characters",
    );
    refused(
        profile(&stack, key, &bot.channel_id, Some(json!({}))).await,
        422,
        "give at least one key",
    );
    assert_eq!(stack.telegram.calls().len(), calls);

    // Another bot's channel is not there for this key, whatever it asks.
    for change in [None, Some(json!({"name": "Hijacked"}))] {
        let (status, body) = profile(&stack, &other.api_key, &bot.channel_id, change).await;
        assert_eq!(status, 404, "{body}");
    }
    assert_eq!(stack.telegram.calls_of("setMyName").len(), 1);

    // A custom channel has no profile at a platform.
    let (custom, _, _) = stack.custom_channel(&bot, None).await;
    refused(
        profile(&stack, key, &custom, None).await,
        422,
        "Patchbay cannot read or change the profile of custom channels",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whatsapp_business_profile_and_its_picture_are_changed_at_meta() {
    use patchbay_whatsapp::fixtures::PHONE_NUMBER_ID;
    let stack = Stack::start().await;
    let bot = stack
        .whatsapp_bot(PHONE_NUMBER_ID, "wa-app-secret", None)
        .await;
    let key = bot.api_key.as_str();
    let (status, read) = profile(&stack, key, &bot.channel_id, None).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["profile"], json!({}));

    let logo = picture(LOGO, "image/png").await;
    let (status, changed) = profile(
        &stack,
        key,
        &bot.channel_id,
        Some(
            json!({"about": "Open 9-5", "email": "help@acme.test", "vertical": "RETAIL",
                    "websites": ["https://acme.test"], "photo_url": logo}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    let p = &changed["profile"];
    assert_eq!(p["about"], "Open 9-5");
    assert_eq!(p["email"], "help@acme.test");
    assert_eq!(p["vertical"], "RETAIL");
    assert_eq!(p["websites"], json!(["https://acme.test"]));
    // The picture went through an upload session and its handle; Meta serves it back.
    let shown = p["profile_picture_url"].as_str().unwrap();
    let served = stack.http.get(shown).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.bytes().await.unwrap().as_ref(), LOGO);
    let posted: Vec<_> = stack
        .graph
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST")
        .map(|c| c.id)
        .collect();
    assert!(
        posted.len() == 3
            && posted[0] == format!("{}/uploads", patchbay_testkit::graph::APP_ID)
            && posted[1].starts_with("upload:")
            && posted[2] == format!("{PHONE_NUMBER_ID}/whatsapp_business_profile"),
        "{posted:?}"
    );
    // No message was sent.
    assert!(stack.graph.sends(PHONE_NUMBER_ID).is_empty());

    // `null` empties a text; Meta's own refusal is reported with its words.
    let (status, cleared) =
        profile(&stack, key, &bot.channel_id, Some(json!({"about": null}))).await;
    assert_eq!(status, 200, "{cleared}");
    assert!(cleared["profile"].get("about").is_none(), "{cleared}");
    let m = refused(
        profile(
            &stack,
            key,
            &bot.channel_id,
            Some(json!({"vertical": "SPACESHIPS"})),
        )
        .await,
        422,
        "(#100) Param vertical must be one of",
    );
    assert!(m.contains("RETAIL"), "{m}");
    let (_, body) = profile(
        &stack,
        key,
        &bot.channel_id,
        Some(json!({"vertical": "SPACESHIPS"})),
    )
    .await;
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    // A picture that is not one is refused before Meta hears of it.
    let text = picture(b"not a picture", "text/plain").await;
    let before = stack.graph.calls().len();
    refused(
        profile(
            &stack,
            key,
            &bot.channel_id,
            Some(json!({"photo_url": text})),
        )
        .await,
        422,
        "photo_url: WhatsApp takes JPEG or PNG pictures, not text/plain",
    );
    assert_eq!(stack.graph.calls().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_messenger_profile_is_set_and_emptied_key_by_key_at_meta() {
    use patchbay_messenger::fixtures::PAGE_ID;
    let stack = Stack::start().await;
    let bot = stack.messenger_bot(PAGE_ID, "m-app-secret", None).await;
    let key = bot.api_key.as_str();
    let (status, read) = profile(&stack, key, &bot.channel_id, None).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(
        read["profile"],
        json!({"greeting": null, "get_started": null, "persistent_menu": null,
               "ice_breakers": null})
    );
    let menu = json!([{"locale": "default", "composer_input_disabled": false,
        "call_to_actions": [{"type": "postback", "title": "Talk to a person",
                             "payload": "HUMAN"}]}]);

    // Meta refuses a menu without a get-started button: its words come back.
    refused(
        profile(
            &stack,
            key,
            &bot.channel_id,
            Some(json!({"persistent_menu": menu})),
        )
        .await,
        422,
        "(#100) You must set a Get Started button",
    );
    let greeting = json!([{"locale": "default", "text": "Hi {{user_first_name}}!"}]);
    let (status, changed) = profile(
        &stack,
        key,
        &bot.channel_id,
        Some(
            json!({"get_started": {"payload": "GET_STARTED"}, "greeting": greeting,
                    "persistent_menu": menu}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["profile"]["greeting"], greeting);
    assert_eq!(
        changed["profile"]["get_started"],
        json!({"payload": "GET_STARTED"})
    );
    assert_eq!(changed["profile"]["persistent_menu"], menu);
    assert_eq!(changed["profile"]["ice_breakers"], Value::Null);

    let (status, emptied) = profile(
        &stack,
        key,
        &bot.channel_id,
        Some(json!({"greeting": null})),
    )
    .await;
    assert_eq!(status, 200, "{emptied}");
    assert_eq!(emptied["profile"]["greeting"], Value::Null);
    assert_eq!(emptied["profile"]["persistent_menu"], menu);
    let deleted: Vec<_> = stack
        .graph
        .calls()
        .into_iter()
        .filter(|c| c.method == "DELETE")
        .collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].id, format!("{PAGE_ID}/messenger_profile"));
    assert_eq!(deleted[0].body, json!({"fields": ["greeting"]}));
    refused(
        profile(
            &stack,
            key,
            &bot.channel_id,
            Some(json!({"greeting": "Hi"})),
        )
        .await,
        422,
        "greeting: must be a list of",
    );
}
