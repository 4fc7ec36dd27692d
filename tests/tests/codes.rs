//! One-time codes for web views and the user profile API, end to end with the fake Telegram:
//! a URL button with `:code` goes out as a Patchbay link, opening the link redirects with a
//! fresh code, the tenant claims it once (even under a race) and gets the user's profile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_telegram::fixtures;
use patchbay_tests::{Options, Stack, TIMEOUT, TestBot, eventually};
use serde_json::{Value, json};

const PUBLIC_URL: &str = "https://patchbay.example";

fn options(code_ttl_ms: u64) -> Options {
    Options {
        configure: Box::new(move |c| {
            c.public_url = PUBLIC_URL.into();
            c.code_ttl_ms = code_ttl_ms;
        }),
        ..Options::default()
    }
}

/// A client that does not follow redirects.
fn browser() -> reqwest::Client {
    patchbay_testkit::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Telegram user `tg_user` writes to `bot`; returns the Patchbay user id.
async fn user_of(stack: &Stack, bot: &TestBot, update_id: i64, tg_user: i64) -> String {
    assert_eq!(
        stack
            .post_update(bot, &fixtures::text_update(update_id, tg_user, "hi"))
            .await,
        200
    );
    let platform_user_id = tg_user.to_string();
    eventually(TIMEOUT, "the user's message reaches the tenant", || async {
        stack
            .tenant
            .received()
            .into_iter()
            .map(|r| r.json())
            .find(|e| {
                e["type"] == "message.received"
                    && e["bot_id"] == bot.id
                    && e["user"]["platform_user_id"] == platform_user_id.as_str()
            })
            .map(|e| e["user"]["id"].as_str().unwrap().to_owned())
    })
    .await
}

/// Sends `buttons` to `user_id` and returns the URLs of the inline keyboard Telegram got for
/// the message whose text is `text`.
async fn send_buttons(
    stack: &Stack,
    bot: &TestBot,
    user_id: &str,
    text: &str,
    buttons: Value,
) -> Vec<String> {
    let (status, body) = stack
        .post(
            &format!("{}/v1/messages", stack.api_url()),
            &bot.api_key,
            &json!({"user_id": user_id,
                    "messages": [{"type": "buttons", "text": text, "buttons": buttons}]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let call = eventually(TIMEOUT, "the buttons reach Telegram", || async {
        stack
            .telegram
            .calls_of("sendMessage")
            .into_iter()
            .find(|c| c.body["text"] == text)
    })
    .await;
    call.body["reply_markup"]["inline_keyboard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0]["url"].as_str().unwrap().to_owned())
        .collect()
}

/// A browser: its cookie for Patchbay links (`pb_go`), as the last answer set it.
#[derive(Default)]
struct Device(std::sync::Mutex<Option<String>>);

/// Opens a Patchbay link as a new browser would; returns the status and `Location`.
async fn open(stack: &Stack, link: &str) -> (u16, Option<String>, String) {
    open_on(stack, &Device::default(), link).await
}

/// Opens a Patchbay link in the browser `device` (sending and keeping its cookie).
async fn open_on(stack: &Stack, device: &Device, link: &str) -> (u16, Option<String>, String) {
    let path = link
        .strip_prefix(PUBLIC_URL)
        .unwrap_or_else(|| panic!("{link} is not under {PUBLIC_URL}"));
    let mut req = browser().get(format!("{}{path}", stack.api_url()));
    if let Some(c) = device.0.lock().unwrap().clone() {
        req = req.header("cookie", c);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    if let Some(set) = r.headers().get("set-cookie") {
        let set = set.to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains(&format!("Path={path}")),
            "{set}"
        );
        let pair = set.split(';').next().unwrap().to_owned();
        *device.0.lock().unwrap() = Some(pair);
    }
    (status, location, r.text().await.unwrap())
}

/// Opens `link` in a new browser and returns the code from the redirect to
/// `https://shop.example/page?c=<code>`.
async fn mint(stack: &Stack, link: &str) -> String {
    mint_on(stack, &Device::default(), link).await
}

/// [`mint`] in the browser `device`.
async fn mint_on(stack: &Stack, device: &Device, link: &str) -> String {
    let (status, location, body) = open_on(stack, device, link).await;
    assert_eq!(status, 302, "{body}");
    let location = location.unwrap();
    let code = location
        .strip_prefix("https://shop.example/page?c=")
        .unwrap_or_else(|| panic!("unexpected redirect {location}"))
        .to_owned();
    assert!(code.len() >= 22, "a code of at least 128 bits: {code}");
    assert!(
        code.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "URL-safe: {code}"
    );
    code
}

async fn claim(stack: &Stack, api_key: &str, code: &str) -> (u16, Value) {
    stack
        .post(
            &format!("{}/v1/codes/claim", stack.api_url()),
            api_key,
            &json!({"code": code}),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_button_becomes_a_link_whose_codes_are_claimed_once_by_their_bot() {
    let stack = Stack::start_with(options(300_000)).await;
    let bot = stack.bot().await;
    let other = stack.bot().await;
    let user_id = user_of(&stack, &bot, 1, 4242).await;

    let urls = send_buttons(
        &stack,
        &bot,
        &user_id,
        "Open the shop",
        json!([{"type": "url", "title": "Shop", "url": "https://shop.example/page?c=:code"},
               {"type": "url", "title": "Plain", "url": "https://plain.example/about"}]),
    )
    .await;
    assert!(
        urls[0].starts_with(&format!("{PUBLIC_URL}/go/")),
        "the :code button is a Patchbay link: {}",
        urls[0]
    );
    assert!(!urls[0].contains(":code"));
    assert_eq!(
        urls[1], "https://plain.example/about",
        "other URL buttons are untouched"
    );

    // Each opening of the link by the browser that opened it first mints a new code.
    let phone = Device::default();
    let code = mint_on(&stack, &phone, &urls[0]).await;
    let second = mint_on(&stack, &phone, &urls[0]).await;
    assert_ne!(code, second);

    // Another bot cannot claim it, and its attempt does not consume it.
    let (status, body) = claim(&stack, &other.api_key, &code).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], "code_invalid");

    let (status, profile) = claim(&stack, &bot.api_key, &code).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["id"], user_id);
    assert_eq!(profile["bot_id"], bot.id);
    assert_eq!(profile["platform"], "telegram");
    assert_eq!(profile["platform_user_id"], "4242");
    assert_eq!(profile["display_name"], "Ana Lima");
    assert_eq!(profile["locale"], "pt");
    assert_eq!(profile["subscribed"], true);

    let (status, body) = claim(&stack, &bot.api_key, &code).await;
    assert_eq!(status, 410, "a second claim fails: {body}");
    assert_eq!(body["error"]["code"], "code_invalid");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already claimed")
    );

    // The other code minted from the same link is still good, once.
    assert_eq!(claim(&stack, &bot.api_key, &second).await.0, 200);
    assert_eq!(claim(&stack, &bot.api_key, &second).await.0, 410);

    // Codes nobody minted, and malformed ones.
    for bogus in ["A".repeat(43), "not a code".into(), String::new()] {
        assert_eq!(
            claim(&stack, &bot.api_key, &bogus).await.0,
            410,
            "{bogus:?}"
        );
    }
    // Without a key.
    assert_eq!(claim(&stack, "pbk_wrong", &second).await.0, 401);

    // An unknown link is a page that says so.
    let (status, _, page) = open(&stack, &format!("{PUBLIC_URL}/go/{}", "B".repeat(43))).await;
    assert_eq!(status, 404);
    assert!(page.contains("unknown or has expired"), "{page}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_concurrent_claims_of_one_code_exactly_one_wins() {
    let stack = Stack::start_with(options(300_000)).await;
    let bot = stack.bot().await;
    let user_id = user_of(&stack, &bot, 1, 4242).await;
    let urls = send_buttons(
        &stack,
        &bot,
        &user_id,
        "Race",
        json!([{"type": "url", "title": "Shop", "url": "https://shop.example/page?c=:code"}]),
    )
    .await;
    let phone = Device::default();
    for round in 0..3 {
        let code = mint_on(&stack, &phone, &urls[0]).await;
        let claims = (0..24).map(|_| claim(&stack, &bot.api_key, &code));
        let results = futures::future::join_all(claims).await;
        let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
        let won: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
        let lost = statuses.iter().filter(|s| **s == 410).count();
        assert_eq!(won.len(), 1, "round {round}: one claim wins: {statuses:?}");
        assert_eq!(
            lost, 23,
            "round {round}: every other claim is 410: {statuses:?}"
        );
        assert_eq!(won[0].1["id"], user_id);
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_code_cannot_be_claimed() {
    // Codes live one second here (PATCHBAY_CODE_TTL_MS), so expiry is seen without waiting
    // five minutes.
    let stack = Stack::start_with(options(1_000)).await;
    let bot = stack.bot().await;
    let user_id = user_of(&stack, &bot, 1, 4242).await;
    let urls = send_buttons(
        &stack,
        &bot,
        &user_id,
        "Late",
        json!([{"type": "url", "title": "Shop", "url": "https://shop.example/page?c=:code"}]),
    )
    .await;
    let code = mint(&stack, &urls[0]).await;

    // Wait until the codes bucket itself dropped the code (its TTL), without claiming.
    let js = async_nats::jetstream::new(stack.raw_nats().await);
    let bucket = patchbay_contract::Subjects::new(&stack.config.nats_prefix)
        .unwrap()
        .bucket(patchbay_contract::subjects::Bucket::Codes);
    let kv = js.get_key_value(bucket).await.unwrap();
    assert!(
        kv.get(&code).await.unwrap().is_some(),
        "the code was stored"
    );
    eventually(TIMEOUT, "the code expires from its bucket", || async {
        kv.get(&code).await.unwrap().is_none().then_some(())
    })
    .await;

    let (status, body) = claim(&stack, &bot.api_key, &code).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], "code_invalid");

    // A link past its expiry time (as the router would have written it a day ago) is a 410
    // page, even before the links bucket's TTL removed it.
    let links = js
        .get_key_value(
            patchbay_contract::Subjects::new(&stack.config.nats_prefix)
                .unwrap()
                .bucket(patchbay_contract::subjects::Bucket::Links),
        )
        .await
        .unwrap();
    let token = "C".repeat(43);
    let record = json!({"v": 1, "bot_id": bot.id, "user_id": user_id,
                        "url": "https://shop.example/page?c=:code",
                        "expires_at": "2020-01-01T00:00:00Z"});
    links
        .put(&token, serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();
    let (status, location, page) = open(&stack, &format!("{PUBLIC_URL}/go/{token}")).await;
    assert_eq!(status, 410, "{page}");
    assert_eq!(location, None);
    assert!(page.contains("expired"), "{page}");
    stack.shutdown().await;
}

/// The API checks a code's own expiry time, not only the bucket's TTL: a record still in the
/// bucket whose `expires_at` has passed is refused and left in place, while the same record
/// with a future `expires_at` is claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_past_its_expiry_time_is_refused_while_still_stored() {
    let stack = Stack::start_with(options(300_000)).await;
    let bot = stack.bot().await;
    let user_id = user_of(&stack, &bot, 1, 4242).await;
    let js = async_nats::jetstream::new(stack.raw_nats().await);
    let kv = js
        .get_key_value(
            patchbay_contract::Subjects::new(&stack.config.nats_prefix)
                .unwrap()
                .bucket(patchbay_contract::subjects::Bucket::Codes),
        )
        .await
        .unwrap();
    let store = |code: &'static str, expires_at: chrono::DateTime<chrono::Utc>| {
        let kv = kv.clone();
        let record = json!({"v": 1, "bot_id": bot.id, "user_id": user_id,
                            "expires_at": expires_at});
        async move {
            kv.put(code, serde_json::to_vec(&record).unwrap().into())
                .await
                .unwrap();
        }
    };
    let (expired, live) = ("expiredcode_0123456789abcdef", "livecode_0123456789abcdef");
    store(expired, chrono::Utc::now() - chrono::TimeDelta::seconds(1)).await;
    store(live, chrono::Utc::now() + chrono::TimeDelta::minutes(5)).await;

    let (status, body) = claim(&stack, &bot.api_key, expired).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], "code_invalid");
    assert!(
        kv.get(expired).await.unwrap().is_some(),
        "refused by its expiry time while the bucket still held it"
    );
    let (status, profile) = claim(&stack, &bot.api_key, live).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["id"], user_id.as_str());
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_is_found_by_id_or_platform_id_only_within_its_bot() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let other = stack.bot().await;
    let user_id = user_of(&stack, &bot, 1, 4242).await;
    let get = |path: String, key: String| {
        let http = stack.http.clone();
        let url = format!("{}{path}", stack.api_url());
        async move {
            let r = http.get(url).bearer_auth(key).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };

    let (status, profile) = get(format!("/v1/users/{user_id}"), bot.api_key.clone()).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["id"], user_id);
    assert_eq!(profile["bot_id"], bot.id);
    assert_eq!(profile["platform"], "telegram");
    assert_eq!(
        profile["channel"],
        json!({"id": bot.channel_id, "platform": "telegram"})
    );
    assert_eq!(profile["platform_user_id"], "4242");
    assert_eq!(profile["display_name"], "Ana Lima");
    assert_eq!(profile["username"], "ana_l");
    assert_eq!(profile["locale"], "pt", "Telegram's language_code");
    assert_eq!(profile["subscribed"], true);
    assert_eq!(
        profile["last_seen_at"], "2026-01-01T00:00:00Z",
        "the time of the user's message"
    );

    let (status, found) = get(
        "/v1/users?platform=telegram&platform_user_id=4242".into(),
        bot.api_key.clone(),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found, profile);

    // The next message moves last_seen_at.
    let mut update = fixtures::text_update(2, 4242, "again");
    update["message"]["date"] = json!(1767225660);
    assert_eq!(stack.post_update(&bot, &update).await, 200);
    eventually(TIMEOUT, "last_seen_at follows the new message", || async {
        let (_, p) = get(format!("/v1/users/{user_id}"), bot.api_key.clone()).await;
        (p["last_seen_at"] == "2026-01-01T00:01:00Z").then_some(())
    })
    .await;

    // Another bot sees neither form.
    let (status, body) = get(format!("/v1/users/{user_id}"), other.api_key.clone()).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "user_not_found");
    let (status, body) = get(
        "/v1/users?platform=telegram&platform_user_id=4242".into(),
        other.api_key.clone(),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "user_not_found");

    let (status, _) = get("/v1/users/usr_nobody".into(), bot.api_key.clone()).await;
    assert_eq!(status, 404);
    let (status, body) = get("/v1/users?platform=telegram".into(), bot.api_key.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_query");
    let (status, _) = get(format!("/v1/users/{user_id}"), "pbk_wrong".into()).await;
    assert_eq!(status, 401);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_opens_only_on_the_first_device_for_its_reuse_window_or_once() {
    let stack = Stack::start_with(options(300_000)).await;
    let bot = stack.bot().await;
    let user_id = user_of(&stack, &bot, 1, 4242).await;
    let urls = send_buttons(
        &stack,
        &bot,
        &user_id,
        "Open",
        json!([{"type": "url", "title": "Again", "url": "https://shop.example/page?c=:code"},
               {"type": "url", "title": "Once", "url": "https://shop.example/page?c=:code",
                "reuse_seconds": 0}]),
    )
    .await;
    let (again, once) = (&urls[0], &urls[1]);

    // The user's phone opens the link; the message forwarded to someone else opens nothing,
    // not even while the window is open, and a forger's cookie does not help.
    let phone = Device::default();
    mint_on(&stack, &phone, again).await;
    let (status, _, page) = open(&stack, again).await;
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("another device"), "{page}");
    let forger = Device::default();
    *forger.0.lock().unwrap() = Some(format!("pb_go={}", "A".repeat(43)));
    assert_eq!(open_on(&stack, &forger, again).await.0, 410);
    // The phone again: fine, with a new code.
    mint_on(&stack, &phone, again).await;

    // A single-use link: once, even for the browser that opened it.
    let laptop = Device::default();
    mint_on(&stack, &laptop, once).await;
    let (status, _, page) = open_on(&stack, &laptop, once).await;
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("already used"), "{page}");

    // Minting is bounded: the phone may not mint codes from one link without end.
    let mut minted = 2;
    loop {
        let (status, _, page) = open_on(&stack, &phone, again).await;
        if status == 429 {
            assert!(page.contains("too many times"), "{page}");
            break;
        }
        assert_eq!(status, 302, "{page}");
        minted += 1;
        assert!(minted <= 20, "more than 20 codes from one link");
    }
    assert_eq!(minted, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_asking_for_a_reuse_window_beyond_a_day_is_refused() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let user_id = user_of(&stack, &bot, 1, 4242).await;
    let (status, body) = stack
        .post(
            &format!("{}/v1/messages", stack.api_url()),
            &bot.api_key,
            &json!({"user_id": user_id, "messages": [{"type": "buttons", "text": "x",
                "buttons": [{"type": "url", "title": "T", "url": "https://a.example/?c=:code",
                             "reuse_seconds": 86_401}]}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("reuse_seconds"), "{body}");
}

/// The attack: a bot sends `:code` buttons (or its links are opened) without end, and every
/// link and code is kept in buckets every bot shares. Each bot may create
/// `PATCHBAY_LINKS_PER_BOT` links per link lifetime and mint `PATCHBAY_CODES_PER_BOT` codes per
/// code lifetime: beyond them its message fails with `link_quota_exceeded` and its link answers
/// 429, while another bot's links and codes are untouched. Without the quotas the third link
/// and the third code were made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bots_links_and_codes_are_bounded_without_touching_anothers() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| {
            c.public_url = PUBLIC_URL.into();
            c.links_per_bot = 2;
            c.codes_per_bot = 2;
        }),
        ..Options::default()
    })
    .await;
    let bot = stack.bot_with_events(Some(vec!["*"])).await;
    let other = stack.bot().await;
    let user_id = user_of(&stack, &bot, 1, 4242).await;
    let other_user = user_of(&stack, &other, 2, 4343).await;
    let button =
        json!([{"type": "url", "title": "Shop", "url": "https://shop.example/page?c=:code"}]);

    let first = send_buttons(&stack, &bot, &user_id, "one", button.clone()).await;
    let second = send_buttons(&stack, &bot, &user_id, "two", button.clone()).await;
    let (status, body) = stack
        .post(
            &format!("{}/v1/messages", stack.api_url()),
            &bot.api_key,
            &json!({"user_id": user_id,
                    "messages": [{"type": "buttons", "text": "three", "buttons": button}]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let third = body["message_ids"][0].clone();
    let failed = eventually(TIMEOUT, "the third link's message failed", || async {
        stack
            .tenant
            .received()
            .into_iter()
            .map(|r| r.json())
            .find(|e| e["type"] == "message.failed" && e["message"]["id"] == third)
    })
    .await;
    assert_eq!(failed["error"]["code"], "link_quota_exceeded", "{failed}");
    assert!(
        stack
            .telegram
            .calls_of("sendMessage")
            .iter()
            .all(|c| c.body["text"] != "three"),
        "the message over the quota never reaches the platform"
    );

    // Two codes, then 429 whichever link is opened; the links keep their state.
    let phone = Device::default();
    mint_on(&stack, &phone, &first[0]).await;
    mint(&stack, &second[0]).await;
    let (status, _, page) = open_on(&stack, &phone, &first[0]).await;
    assert_eq!(status, 429, "{page}");
    assert!(page.contains("Too many pages opened"), "{page}");

    // Another bot's links and codes are its own.
    let theirs = send_buttons(&stack, &other, &other_user, "theirs", button.clone()).await;
    let code = mint(&stack, &theirs[0]).await;
    let (status, profile) = claim(&stack, &other.api_key, &code).await;
    assert_eq!(status, 200, "{profile}");
    stack.shutdown().await;
}
