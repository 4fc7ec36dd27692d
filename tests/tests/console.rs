//! The web console in a real headless Chromium (Debian's `chromium` through `chromedriver`),
//! against a real stack: an operator creates a bot and a Telegram channel (the platform's
//! field error shown at its field); a developer watches an event arrive live, finds its
//! failed delivery and retries it, and follows the message's journey; an agent the developer
//! invited takes a conversation over, sees the bot's reply held back, answers the user through
//! the fake Telegram API and hands the conversation back; each role is refused the others'
//! pages; a form without the session's CSRF token and a session past its lifetime are refused.
//!
//! With `PATCHBAY_CONSOLE_SCREENSHOTS=<dir>`, each page is saved there as PNG (how
//! `docs/console/*.png` were made).

use std::time::Duration;

use patchbay_telegram::fixtures;
use patchbay_testkit::browser::{Browser, Page};
use patchbay_tests::{Options, Stack, TIMEOUT, TestBot, eventually};
use reqwest::StatusCode;
use serde_json::json;

/// How long a page may take to show what the test waits for.
const PAGE: Duration = Duration::from_secs(20);

async fn shot(page: &Page, name: &str) {
    if let Some(dir) = std::env::var_os("PATCHBAY_CONSOLE_SCREENSHOTS") {
        page.save_screenshot(std::path::Path::new(&dir).join(format!("{name}.png")))
            .await
            .unwrap();
    }
}

async fn open(page: &Page, stack: &Stack, path: &str) {
    page.goto(&format!("{}{path}", stack.console_url()))
        .await
        .unwrap();
}

/// Signs `page` in with `credential`; waits for the signed-in header.
async fn sign_in(page: &Page, stack: &Stack, credential: &str) {
    open(page, stack, "/console/sign-in").await;
    page.fill("#credential", credential).await.unwrap();
    page.click("main form button[type=submit]").await.unwrap();
    page.wait_for("header.top .who", PAGE).await.unwrap();
}

/// The page's main text.
async fn main_text(page: &Page) -> String {
    page.text("main").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_creates_a_bot_and_a_telegram_channel() {
    let stack = Stack::start().await;
    let browser = Browser::start().await.unwrap();
    let page = browser.page().await.unwrap();

    open(&page, &stack, "/console/sign-in").await;
    shot(&page, "sign-in").await;
    // A wrong credential is refused, on the page.
    page.fill("#credential", "not-the-token").await.unwrap();
    page.click("main form button[type=submit]").await.unwrap();
    page.wait_for_text("#sign-in-error", "not accepted", PAGE)
        .await
        .unwrap();

    sign_in(&page, &stack, stack.admin_token()).await;
    assert!(page.url().await.unwrap().ends_with("/console/bots"));
    let session = page.cookie("pb_console").await.unwrap().unwrap();
    assert!(session.http_only, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"));

    page.fill("#bot-name", "Corner shop").await.unwrap();
    page.fill("#bot-webhook", &stack.tenant.url())
        .await
        .unwrap();
    page.click("form[action='/console/bots'] button")
        .await
        .unwrap();
    let key = page.wait_for_text_of("#api-key", PAGE).await.unwrap();
    assert!(key.starts_with("pbk_"), "{key}");
    let bot_id = page.wait_for_text_of("#bot-id", PAGE).await.unwrap();
    shot(&page, "operator-bot-created").await;

    page.click("#open-bot").await.unwrap();
    page.wait_for_text("main h1", "Corner shop", PAGE)
        .await
        .unwrap();
    page.select("#platform", "telegram").await.unwrap();
    page.click("form[action$='/channels/new'] button")
        .await
        .unwrap();
    page.wait_for("#f-bot_token", PAGE).await.unwrap();

    // Telegram's own check of the token shows at the token's field.
    page.fill("#f-bot_token", "no token").await.unwrap();
    page.fill("#f-secret_token", "s3cret").await.unwrap();
    page.click("main form.card button[type=submit]")
        .await
        .unwrap();
    page.wait_for_text_of("#e-bot_token", PAGE).await.unwrap();
    assert_eq!(
        page.find("#f-bot_token")
            .await
            .unwrap()
            .attr("aria-invalid")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    shot(&page, "operator-channel-field-error").await;

    page.fill("#f-bot_token", "123456:console-test")
        .await
        .unwrap();
    page.fill("#f-secret_token", "s3cret").await.unwrap();
    page.click("main form.card button[type=submit]")
        .await
        .unwrap();
    let url = page.wait_for_text_of("#webhook-url", PAGE).await.unwrap();
    let channel_id = page.wait_for_text_of("#channel-id", PAGE).await.unwrap();
    assert!(
        url.ends_with(&format!("/webhooks/telegram/{channel_id}")),
        "{url}"
    );
    shot(&page, "operator-channel-created").await;

    // What the operator made is what the API has.
    let (status, channels) = stack
        .call(
            "get",
            &format!("/admin/v1/bots/{bot_id}/channels"),
            Some(stack.admin_token()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{channels}");
    assert_eq!(channels["items"][0]["id"], channel_id.as_str());
    assert_eq!(channels["items"][0]["platform"], "telegram");

    // Telegram reaches the channel: the bot's page says when.
    let update = fixtures::text_update(6001, 4101, "first");
    let posted = patchbay_testkit::http_client()
        .post(format!(
            "{}/webhooks/telegram/{channel_id}",
            stack.ingress_url()
        ))
        .header("x-telegram-bot-api-secret-token", "s3cret")
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    open(&page, &stack, &format!("/console/bots/{bot_id}")).await;
    page.wait_for_text("main table", &channel_id, PAGE)
        .await
        .unwrap();
    eventually(
        TIMEOUT,
        "the channel's last event on the bot's page",
        || async {
            page.refresh().await.unwrap();
            page.text("td.seen")
                .await
                .unwrap()
                .starts_with("last event")
                .then_some(())
        },
    )
    .await;
    shot(&page, "operator-bot").await;
    page.click("form[action$='/state'] button.danger")
        .await
        .unwrap();
    page.wait_for_text(".notice", "Saved", PAGE).await.unwrap();
    let (_, bots) = stack
        .call("get", "/admin/v1/bots", Some(stack.admin_token()), None)
        .await;
    let bot = bots["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == bot_id.as_str())
        .unwrap();
    assert_eq!(bot["enabled"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_watches_an_event_live_and_retries_its_failed_delivery() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let browser = Browser::start().await.unwrap();
    let page = browser.page().await.unwrap();
    // The bot's endpoint fails until it is fixed.
    stack
        .tenant
        .respond_with(|_| (StatusCode::INTERNAL_SERVER_ERROR, Some(json!({"oops": 1}))));

    sign_in(&page, &stack, &bot.api_key).await;
    assert!(page.url().await.unwrap().ends_with("/console/bot"));
    page.wait_for_text("main", &bot.channel_id, PAGE)
        .await
        .unwrap();

    open(&page, &stack, "/console/bot/events").await;
    page.wait_for("#tail[data-live-ready]", PAGE).await.unwrap();
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(7001, 5101, "hello, live"))
            .await,
        200
    );
    let row = page
        .wait_for_text("#tail tr.event", "hello, live", PAGE)
        .await
        .unwrap();
    let event_id = row.attr("data-event-id").await.unwrap().unwrap();
    shot(&page, "developer-live-events").await;

    // The delivery fails; its attempts show the endpoint's answer.
    open(
        &page,
        &stack,
        &format!("/console/bot/deliveries/{event_id}"),
    )
    .await;
    eventually(
        TIMEOUT,
        "the failed attempt on the delivery's page",
        || async {
            page.refresh().await.unwrap();
            main_text(&page).await.contains("HTTP 500").then_some(())
        },
    )
    .await;
    shot(&page, "developer-delivery-failed").await;

    // Fixed, and retried from the console.
    stack.tenant.respond_with(|_| (StatusCode::OK, None));
    page.click("#retry").await.unwrap();
    eventually(TIMEOUT, "the retried delivery delivered", || async {
        page.refresh().await.unwrap();
        (page.text("#delivery-status").await.unwrap() == "delivered").then_some(())
    })
    .await;
    shot(&page, "developer-delivery").await;

    // The log lists it; its journey shows every stage.
    open(&page, &stack, "/console/bot/deliveries?status=delivered").await;
    page.wait_for_text("main table", &event_id, PAGE)
        .await
        .unwrap();
    shot(&page, "developer-deliveries").await;
    open(
        &page,
        &stack,
        &format!("/console/bot/deliveries/{event_id}"),
    )
    .await;
    page.click("#journey-link").await.unwrap();
    page.wait_for_text("#stages", "callback", PAGE)
        .await
        .unwrap();
    let stages = page.text("#stages").await.unwrap();
    for stage in ["received", "stored", "HTTP 500", "HTTP 200"] {
        assert!(stages.contains(stage), "{stage} in {stages}");
    }
    shot(&page, "developer-journey").await;
    open(&page, &stack, "/console/bot").await;
    page.wait_for(".chart svg", PAGE).await.unwrap();
    shot(&page, "developer-bot").await;
    // A new signing secret, shown once; callbacks are signed with it from now on.
    page.click("#rotate-secret").await.unwrap();
    let secret = page.wait_for_text_of("#secret", PAGE).await.unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_ne!(secret, bot.webhook_secret);
}

/// The bot answers every message inline with "bot: <text>".
fn bot_answers(stack: &Stack) {
    stack.tenant.respond_with(|r| {
        let e = r.json();
        if e["type"] == "message.received" {
            let text = format!(
                "bot: {}",
                e["message"]["content"]["text"].as_str().unwrap_or("")
            );
            (
                StatusCode::OK,
                Some(json!({"messages": [{"type": "text", "text": text}]})),
            )
        } else {
            (StatusCode::OK, None)
        }
    });
}

fn telegram_has(stack: &Stack, bot: &TestBot, text: &str) -> bool {
    stack
        .telegram
        .calls_of("sendMessage")
        .iter()
        .any(|c| c.token == bot.bot_token && c.body["text"] == text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_takes_a_conversation_over_answers_and_hands_it_back() {
    let stack = Stack::start().await;
    let bot = stack.bot_with_events(Some(vec!["*"])).await;
    bot_answers(&stack);
    let browser = Browser::start().await.unwrap();

    // The developer invites Ana.
    let developer = browser.page().await.unwrap();
    sign_in(&developer, &stack, &bot.api_key).await;
    open(&developer, &stack, "/console/bot/agents").await;
    developer.fill("#agent-name", "Ana").await.unwrap();
    developer
        .click("form[action='/console/bot/agents'] button")
        .await
        .unwrap();
    let invite = developer.wait_for_text_of("#invite", PAGE).await.unwrap();
    assert!(invite.starts_with("pbag_"), "{invite}");
    shot(&developer, "developer-agents").await;

    // A user writes; the bot answers.
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(8001, 5201, "hello"))
            .await,
        200
    );
    eventually(TIMEOUT, "the bot's answer at Telegram", || async {
        telegram_has(&stack, &bot, "bot: hello").then_some(())
    })
    .await;

    // Ana signs in with the invite: her inbox has the conversation.
    let agent = browser.page().await.unwrap();
    sign_in(&agent, &stack, &invite).await;
    assert!(agent.url().await.unwrap().ends_with("/console/inbox"));
    agent
        .wait_for("#inbox li.conversation a", PAGE)
        .await
        .unwrap();
    shot(&agent, "agent-inbox").await;
    agent.click("#inbox li.conversation a").await.unwrap();
    agent
        .wait_for("#messages[data-live-ready]", PAGE)
        .await
        .unwrap();
    agent
        .wait_for_text("#messages", "bot: hello", PAGE)
        .await
        .unwrap();

    // She takes it over; the user writes again, and the bot's reply is held back, shown live.
    agent.click("#take-over").await.unwrap();
    agent
        .wait_for_text("#holder", "Held by Ana", PAGE)
        .await
        .unwrap();
    agent
        .wait_for("#messages[data-live-ready]", PAGE)
        .await
        .unwrap();
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(8002, 5201, "I need a person"))
            .await,
        200
    );
    agent
        .wait_for_text("#messages li.suppressed", "bot: I need a person", PAGE)
        .await
        .unwrap();
    assert!(!telegram_has(&stack, &bot, "bot: I need a person"));
    shot(&agent, "agent-conversation").await;

    // Her answer reaches the user through Telegram, as hers.
    agent
        .fill("#reply-text", "Hi, Ana here. How can I help?")
        .await
        .unwrap();
    agent.click("#send").await.unwrap();
    agent.wait_for_text(".notice", "Sent", PAGE).await.unwrap();
    eventually(TIMEOUT, "the agent's answer at Telegram", || async {
        telegram_has(&stack, &bot, "Hi, Ana here. How can I help?").then_some(())
    })
    .await;
    agent
        .wait_for_text("#messages li.outbound", "Hi, Ana here", PAGE)
        .await
        .unwrap();
    let (_, history) = stack
        .call(
            "get",
            &format!(
                "/v1/conversations/{}/messages",
                agent
                    .url()
                    .await
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .split('?')
                    .next()
                    .unwrap()
            ),
            Some(&bot.api_key),
            None,
        )
        .await;
    let sent = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["content"]["text"] == "Hi, Ana here. How can I help?")
        .unwrap_or_else(|| panic!("{history}"));
    assert_eq!(sent["source"], "human");

    // And she hands it back: the bot answers again.
    agent.click("#hand-back").await.unwrap();
    agent.wait_for_text("#holder", "bot", PAGE).await.unwrap();
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(8003, 5201, "thanks"))
            .await,
        200
    );
    eventually(TIMEOUT, "the bot's answer after the hand-back", || async {
        telegram_has(&stack, &bot, "bot: thanks").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_refused_the_others_pages_and_forms_need_the_sessions_token() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let other = stack.bot().await;
    // A conversation of the other bot.
    assert_eq!(
        stack
            .post_update(&other, &fixtures::text_update(9101, 5301, "elsewhere"))
            .await,
        200
    );
    let theirs = stack.events_of("message.received", 1).await[0].json();
    let their_conversation = theirs["conversation_id"].as_str().unwrap().to_owned();
    let (_, invited) = stack
        .call(
            "post",
            "/v1/agents",
            Some(&bot.api_key),
            Some(&json!({"name": "Bo"})),
        )
        .await;
    let invite = invited["invite"].as_str().unwrap().to_owned();

    let browser = Browser::start().await.unwrap();
    let operator = browser.page().await.unwrap();
    let developer = browser.page().await.unwrap();
    let agent = browser.page().await.unwrap();
    sign_in(&operator, &stack, stack.admin_token()).await;
    sign_in(&developer, &stack, &bot.api_key).await;
    sign_in(&agent, &stack, &invite).await;

    for (page, path) in [
        (&operator, "/console/bot"),
        (&operator, "/console/inbox"),
        (&developer, "/console/bots"),
        (&developer, &format!("/console/bots/{}", bot.id)),
        (&agent, "/console/bots"),
        (&agent, "/console/bot"),
        (&agent, "/console/bot/deliveries"),
        (&agent, "/console/bot/agents"),
        (&agent, "/console/bot/broadcasts"),
        (&operator, "/console/bot/broadcasts"),
    ] {
        open(page, &stack, path).await;
        page.wait_for_text("main h1", "Not for this sign-in", PAGE)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    shot(&agent, "refused").await;
    // Another bot's conversation is not theirs: the API's 404, as the page says.
    for page in [&developer, &agent] {
        open(
            page,
            &stack,
            &format!("/console/conversations/{their_conversation}"),
        )
        .await;
        page.wait_for_text("main h1", "Refused", PAGE)
            .await
            .unwrap();
    }

    // A form whose CSRF token is not the session's does nothing.
    open(&developer, &stack, "/console/bot/agents").await;
    developer.fill("#agent-name", "Mallory").await.unwrap();
    developer
        .execute(
            "document.querySelector(\"form[action='/console/bot/agents'] input[name=csrf]\").value = 'forged'",
            vec![],
        )
        .await
        .unwrap();
    developer
        .click("form[action='/console/bot/agents'] button")
        .await
        .unwrap();
    developer
        .wait_for_text("main h1", "Form refused", PAGE)
        .await
        .unwrap();
    let (_, agents) = stack
        .call("get", "/v1/agents", Some(&bot.api_key), None)
        .await;
    assert_eq!(agents["data"].as_array().unwrap().len(), 1, "{agents}");

    // Signed out, the session is over everywhere: its pages go to the sign-in.
    open(&operator, &stack, "/console/bots").await;
    operator.click(".signout button").await.unwrap();
    operator
        .wait_for_text(".notice", "signed out", PAGE)
        .await
        .unwrap();
    open(&operator, &stack, "/console/bots").await;
    operator.wait_for("#credential", PAGE).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_past_its_lifetime_is_refused() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| c.console_session_ttl_ms = 1_000),
        ..Default::default()
    })
    .await;
    let bot = stack.bot().await;
    let browser = Browser::start().await.unwrap();
    let page = browser.page().await.unwrap();
    open(&page, &stack, "/console/sign-in").await;
    page.fill("#credential", &bot.api_key).await.unwrap();
    page.click("main form button[type=submit]").await.unwrap();
    page.wait_for("header.top .who", PAGE).await.unwrap();
    let cookie = page.cookie("pb_console").await.unwrap().unwrap();
    assert!(cookie.expiry.is_some(), "{cookie:?}");
    // The browser forgets the cookie when the session ends; whenever that is, the console
    // sends the person back to sign in.
    eventually(TIMEOUT, "the ended session sent to the sign-in", || async {
        open(&page, &stack, "/console/bot/agents").await;
        page.url()
            .await
            .unwrap()
            .contains("/console/sign-in")
            .then_some(())
    })
    .await;
    // A cookie kept past the session's end (a copied one) is refused by the console itself:
    // its pages go to the sign-in, its forms are not acted on.
    let client = patchbay_testkit::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let with_cookie = |method: reqwest::Method, path: &str| {
        client
            .request(method, format!("{}{path}", stack.console_url()))
            .header("cookie", format!("pb_console={}", cookie.value))
    };
    let r = with_cookie(reqwest::Method::GET, "/console/bot")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/sign-in?ended=1");
    let r = with_cookie(reqwest::Method::POST, "/console/bot/agents")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=x&name=Late")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/sign-in?ended=1");
    let (_, agents) = stack
        .call("get", "/v1/agents", Some(&bot.api_key), None)
        .await;
    assert_eq!(agents["data"].as_array().unwrap().len(), 0, "{agents}");
    open(&page, &stack, "/console/sign-in?ended=1").await;
    page.wait_for_text(".notice", "session has ended", PAGE)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_goes_from_nothing_to_a_round_trip_in_the_console_alone() {
    let stack = Stack::start().await;
    bot_answers(&stack);
    let browser = Browser::start().await.unwrap();
    let page = browser.page().await.unwrap();
    const TOKEN: &str = "123456:newcomer";
    // The made-up user has started the bot, as far as the fake Telegram API knows.
    stack
        .telegram
        .open_chat(TOKEN, patchbay_telegram::TRY_IT_USER_ID);

    // The operator creates a bot that calls the demo tenant, and a Telegram channel.
    sign_in(&page, &stack, stack.admin_token()).await;
    page.fill("#bot-name", "First bot").await.unwrap();
    page.fill("#bot-webhook", &stack.tenant.url())
        .await
        .unwrap();
    page.click("form[action='/console/bots'] button")
        .await
        .unwrap();
    page.wait_for("#api-key", PAGE).await.unwrap();
    page.click("#open-bot").await.unwrap();
    page.select("#platform", "telegram").await.unwrap();
    page.click("form[action$='/channels/new'] button")
        .await
        .unwrap();
    page.fill("#f-bot_token", TOKEN).await.unwrap();
    page.fill("#f-secret_token", "s3cret").await.unwrap();
    page.click("main form.card button[type=submit]")
        .await
        .unwrap();
    page.wait_for("#webhook-url", PAGE).await.unwrap();

    // Then looks at it as its developer, and writes to it as a user.
    page.click("#open-developer").await.unwrap();
    page.wait_for("#tail[data-live-ready]", PAGE).await.unwrap();
    page.fill("form[data-try] input[name=text]", "Is anyone there?")
        .await
        .unwrap();
    page.click("form[data-try] button").await.unwrap();
    page.wait_for("form[data-try] output[data-status='200']", PAGE)
        .await
        .unwrap();
    page.wait_for_text("#tail tr.event", "Is anyone there?", PAGE)
        .await
        .unwrap();
    shot(&page, "newcomer-try-it").await;
    // The round trip: the bot's answer reached the user through Telegram.
    eventually(TIMEOUT, "the bot's answer at Telegram", || async {
        stack
            .telegram
            .calls_of("sendMessage")
            .into_iter()
            .find(|c| c.token == TOKEN && c.body["text"] == "bot: Is anyone there?")
    })
    .await;

    // Platforms without a try-it message say so.
    let bot = stack.bot().await;
    let (custom, _, _) = stack.custom_channel(&bot, None).await;
    let (status, answer) = stack
        .call(
            "post",
            &format!("/v1/channels/{custom}/try"),
            Some(&bot.api_key),
            Some(&json!({"text": "hi"})),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "try_unsupported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_sends_a_broadcast_and_follows_its_numbers_live_through_a_pause() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| {
            // Thirty recipients take six seconds: long enough to watch them move.
            c.telegram_per_bot_per_second = 5;
            c.broadcast_window = 2;
        }),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    for chat in 9101..9131 {
        assert_eq!(
            stack
                .post_update(&bot, &fixtures::text_update(chat, chat, "hi"))
                .await,
            200
        );
    }
    stack.events_of("message.received", 30).await;
    let browser = Browser::start().await.unwrap();
    let page = browser.page().await.unwrap();
    sign_in(&page, &stack, &bot.api_key).await;
    open(&page, &stack, "/console/bot/broadcasts").await;
    page.wait_for_text("#broadcasts", "No broadcasts yet", PAGE)
        .await
        .unwrap();
    page.select("#broadcast-audience", "telegram")
        .await
        .unwrap();
    page.fill("#broadcast-text", "Console sale today")
        .await
        .unwrap();
    page.click("#send-broadcast").await.unwrap();
    page.wait_for("#broadcast[data-live-ready]", PAGE)
        .await
        .unwrap();
    let id = page.text("h1 code").await.unwrap();
    assert!(id.starts_with("brd_"), "{id}");
    assert!(
        main_text(&page)
            .await
            .contains("To every subscribed user on telegram: Console sale today")
    );

    // The numbers move on the page by themselves, without a reload. (The fragment is
    // replaced every second: an element read as it goes is read again.)
    eventually(PAGE, "some sent, shown live", || async {
        let n: i64 = page.text("#count-sent").await.ok()?.parse().ok()?;
        (n > 0 && n < 30).then_some(())
    })
    .await;
    shot(&page, "developer-broadcast").await;

    // Paused from the console: the state says so; resumed, it completes with every user once.
    page.click("#pause").await.unwrap();
    page.wait_for_text(".notice", "Paused", PAGE).await.unwrap();
    eventually(PAGE, "the state shown paused", || async {
        (page.text("#broadcast-state").await.ok()? == "paused").then_some(())
    })
    .await;
    assert_eq!(
        stack
            .call(
                "GET",
                &format!("/v1/broadcasts/{id}"),
                Some(&bot.api_key),
                None
            )
            .await
            .1["state"],
        "paused"
    );
    page.click("#resume").await.unwrap();
    page.wait_for_text(".notice", "Resumed", PAGE)
        .await
        .unwrap();
    page.wait_for("#broadcast[data-live-ended]", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(page.text("#broadcast-state").await.unwrap(), "completed");
    assert_eq!(page.text("#count-sent").await.unwrap(), "30");
    assert_eq!(page.text("#count-recipients").await.unwrap(), "30");
    // Nothing left to pause or cancel.
    let hidden = page
        .execute(
            "return document.getElementById('cancel').closest('[data-while-live]').hidden",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(hidden, json!(true));
    let chats: std::collections::HashSet<i64> = stack
        .telegram
        .calls_of("sendMessage")
        .into_iter()
        .filter(|c| c.token == bot.bot_token && c.body["text"] == "Console sale today")
        .map(|c| c.body["chat_id"].as_i64().unwrap())
        .collect();
    assert_eq!(chats.len(), 30);

    // The list shows it completed, and stops following once nothing there moves.
    open(&page, &stack, "/console/bot/broadcasts").await;
    page.wait_for("#broadcasts[data-live-ended]", PAGE)
        .await
        .unwrap();
    let row = page
        .text(&format!("tr.broadcast[data-broadcast-id='{id}']"))
        .await
        .unwrap();
    assert!(
        row.contains("completed") && row.contains("30 / 30"),
        "{row}"
    );
    shot(&page, "developer-broadcasts").await;
}
