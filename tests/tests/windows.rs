//! Messaging windows, end to end against real NATS and PostgreSQL: the router counts each
//! platform's window from the platform's timestamp of the user's last message (inbound events
//! with old timestamps place it in the past), refuses free-form sends outside it before any
//! platform call (synchronously from `POST /v1/messages`, as `message.failed` for any other
//! NATS client), lets templates through on WhatsApp, sends the bot's fallback template when
//! one is configured (a change through the admin API applies without a restart), and lets a
//! human agent answer on Messenger for 7 days with the `HUMAN_AGENT` tag.
//!
//! The outbound jobs the router publishes are watched on their subjects (core NATS sees every
//! publish), since the Messenger and WhatsApp senders consume the stream; absences are checked
//! against the outbound stream's sequence once the send stream is drained. The channels point
//! at the fake Graph API, so nothing leaves the machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use patchbay_contract::ids::{message_ids, new_id};
use patchbay_contract::subjects::Stream;
use patchbay_contract::{
    ChannelRef, Content, EventType, InboundEvent, InboundMessage, OutboundJob, Platform,
    PlatformUser, Subjects, V1,
};
use patchbay_tests::{Stack, TIMEOUT, TestBot, eventually};
use serde_json::{Value, json};

/// Connects a `platform` channel with placeholder credentials; returns its id.
async fn channel(stack: &Stack, bot: &TestBot, platform: Platform) -> String {
    let credentials = match platform {
        Platform::Whatsapp => json!({"phone_number_id": "106540352242922",
            "access_token": "EAAG-placeholder", "app_secret": "app-secret", "verify_token": "vt"}),
        _ => json!({"page_id": "1234567890", "page_access_token": "EAAB-placeholder",
            "app_secret": "app-secret", "verify_token": "vt"}),
    };
    match platform {
        Platform::Whatsapp => stack
            .graph
            .add_phone_number("106540352242922", "EAAG-placeholder"),
        _ => stack.graph.add_page("1234567890", "EAAB-placeholder"),
    }
    let (status, ch) = stack
        .call(
            "POST",
            &format!("/admin/v1/bots/{}/channels", bot.id),
            Some(stack.admin_token()),
            Some(&json!({"platform": platform, "credentials": credentials,
                         "api_base_url": stack.graph.base_url()})),
        )
        .await;
    assert_eq!(status, 201, "{ch}");
    ch["id"].as_str().unwrap().to_owned()
}

/// Publishes what the normaliser publishes when `address` writes on `channel` at `at` (the
/// platform's timestamp); waits until the router stored it and returns the user's id.
async fn user_wrote(
    stack: &Stack,
    bot: &TestBot,
    channel: &str,
    platform: Platform,
    address: &str,
    at: DateTime<Utc>,
) -> String {
    let id = new_id("evt");
    let ev = InboundEvent {
        v: V1,
        id: id.clone(),
        event_type: EventType::MessageReceived,
        bot_id: bot.id.clone(),
        channel: ChannelRef {
            id: channel.to_owned(),
            platform,
        },
        occurred_at: at,
        sender: PlatformUser {
            platform_user_id: address.to_owned(),
            display_name: None,
            username: None,
            locale: None,
            avatar_url: None,
            email: None,
            phone: None,
        },
        address: address.to_owned(),
        chat: None,
        dedupe_key: format!("{platform}:{channel}:{id}"),
        message: Some(InboundMessage {
            platform_message_id: format!("wamid.{id}"),
            content: Content::Text {
                text: "hello".into(),
            },
        }),
        referral: None,
        resubscribed: false,
        receipt: None,
    };
    let subject = subjects(stack).inbound(&bot.id).unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.as_str());
    async_nats::jetstream::new(stack.raw_nats().await)
        .publish_with_headers(subject, headers, serde_json::to_vec(&ev).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let path = format!("/v1/users?platform={platform}&platform_user_id={address}");
    let user = eventually(TIMEOUT, "the router stored the user", || async {
        let (status, user) = stack.call("GET", &path, Some(&bot.api_key), None).await;
        (status == 200).then_some(user)
    })
    .await;
    assert_eq!(
        user["last_inbound_at"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().unwrap()),
        Some(at),
        "{user}"
    );
    user["id"].as_str().unwrap().to_owned()
}

fn subjects(stack: &Stack) -> Subjects {
    Subjects::new(&stack.config.nats_prefix).unwrap()
}

async fn send(stack: &Stack, bot: &TestBot, body: Value) -> (u16, Value) {
    stack
        .call("POST", "/v1/messages", Some(&bot.api_key), Some(&body))
        .await
}

/// The outbound jobs published since it started, one per message id, in order. Core NATS
/// sees every publish (the Messenger and WhatsApp senders consume the stream itself); a
/// message the watcher cannot decode is kept as an error that fails the test when read, never
/// a panic in the watcher's task.
#[derive(Clone)]
struct Watch(std::sync::Arc<std::sync::Mutex<Vec<Result<OutboundJob, String>>>>);

/// Watches `<p>.outbound.>` from now on.
async fn watch(stack: &Stack) -> Watch {
    let client = stack.raw_nats().await;
    let mut sub = client
        .subscribe(format!("{}.outbound.>", subjects(stack).prefix()))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let watch = Watch(std::sync::Arc::default());
    let jobs = watch.0.clone();
    tokio::spawn(async move {
        let _client = client;
        while let Some(m) = futures::StreamExt::next(&mut sub).await {
            let job = serde_json::from_slice::<OutboundJob>(&m.payload)
                .map_err(|e| format!("{}: {e}", m.subject));
            let mut jobs = jobs.lock().unwrap_or_else(|p| p.into_inner());
            let seen = |j: &OutboundJob| {
                jobs.iter()
                    .any(|k| k.as_ref().is_ok_and(|k| k.message_id == j.message_id))
            };
            if job.as_ref().map_or(true, |j| !seen(j)) {
                jobs.push(job);
            }
        }
    });
    watch
}

impl Watch {
    fn jobs(&self) -> Vec<OutboundJob> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|j| j.clone().expect("an outbound job the watcher could decode"))
            .collect()
    }

    async fn job(&self, message_id: &Value) -> OutboundJob {
        eventually(TIMEOUT, "the outbound job", || async {
            self.jobs()
                .into_iter()
                .find(|j| json!(j.message_id) == *message_id)
        })
        .await
    }

    /// Every job there will be for the sends made so far: once the router has taken every
    /// send command (the send stream is empty), the outbound stream's last sequence counts
    /// every job stored for them; the watcher has seen exactly that many. A barrier for "was
    /// nothing else published?".
    async fn settled(&self, stack: &Stack) -> Vec<OutboundJob> {
        eventually(TIMEOUT, "the router took every send command", || async {
            (stack.stream_state(Stream::Send).await.0 == 0).then_some(())
        })
        .await;
        let (_, stored) = stack.stream_state(Stream::Outbound).await;
        let stored = usize::try_from(stored).unwrap();
        let jobs = eventually(TIMEOUT, "the watcher saw every stored job", || async {
            let jobs = self.jobs();
            (jobs.len() >= stored).then_some(jobs)
        })
        .await;
        assert_eq!(jobs.len(), stored, "one stored job per message: {jobs:?}");
        jobs
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn text(t: &str) -> Value {
    json!([{"type": "text", "text": t}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_sends_outside_the_window_are_refused_or_replaced_by_a_template() {
    let stack = Stack::start().await;
    let watch = watch(&stack).await;
    let bot = stack.bot_with_events(Some(vec!["*"])).await;
    let wa = channel(&stack, &bot, Platform::Whatsapp).await;
    // Whole seconds, as WhatsApp's timestamps are.
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let fresh_at = now - TimeDelta::hours(1);
    let stale_at = now - TimeDelta::hours(25);
    let fresh = user_wrote(
        &stack,
        &bot,
        &wa,
        Platform::Whatsapp,
        "351910000001",
        fresh_at,
    )
    .await;
    let stale = user_wrote(
        &stack,
        &bot,
        &wa,
        Platform::Whatsapp,
        "351910000002",
        stale_at,
    )
    .await;
    let closed_at = rfc3339(stale_at + TimeDelta::hours(24));

    // Inside the window: the job is published as asked.
    let (status, body) = send(
        &stack,
        &bot,
        json!({"user_id": fresh, "messages": text("inside")}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let inside = watch.job(&body["message_ids"][0]).await;
    assert_eq!(
        inside.content,
        Content::Text {
            text: "inside".into()
        }
    );
    assert_eq!(inside.channel.platform, Platform::Whatsapp);
    assert_eq!(inside.tag, None);

    // Outside: refused synchronously, naming the message and when the window closed, by user
    // id and by platform address alike.
    for to in [
        json!({"user_id": stale}),
        json!({"platform": "whatsapp", "address": "351910000002"}),
    ] {
        let mut req = to.clone();
        req["messages"] = json!([{"type": "image", "url": "https://example.com/a.jpg"},
                                 {"type": "text", "text": "late"}]);
        let (status, body) = send(&stack, &bot, req).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "outside_window", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("messages[0]: outside WhatsApp's 24-hour"),
            "{message}"
        );
        assert!(
            message.contains(&format!("closed at {closed_at}")),
            "{message}"
        );
    }
    // An unknown address is refused synchronously too.
    let (status, body) = send(
        &stack,
        &bot,
        json!({"platform": "whatsapp", "address": "15550000000", "messages": text("x")}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("user_not_found")),
        "{body}"
    );

    // Any other NATS client gets the refusal as `message.failed`; nothing reaches the
    // outbound stream.
    let command = json!({"v": 1, "id": "crm-7", "user_id": stale, "messages": text("late")});
    async_nats::jetstream::new(stack.raw_nats().await)
        .publish(
            subjects(&stack).send(&bot.id).unwrap(),
            serde_json::to_vec(&command).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let failed = stack.events_of("message.failed", 1).await[0].json();
    let refused_id = message_ids(&bot.id, "crm-7", 1).remove(0);
    assert_eq!(failed["message"]["id"], refused_id.as_str(), "{failed}");
    assert_eq!(failed["user"]["id"], stale.as_str());
    assert_eq!(failed["error"]["code"], "outside_window", "{failed}");
    // Refused by the router, it still says where the command came from.
    assert_eq!(failed["message"]["source"], "internal", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("closed at {closed_at}")),
        "{message}"
    );
    let jobs = watch.settled(&stack).await;
    assert!(jobs.iter().all(|j| j.message_id != refused_id), "{jobs:?}");
    assert_eq!(
        jobs.len(),
        1,
        "only the message inside the window: {jobs:?}"
    );

    // Templates are always allowed; a malformed one is refused naming the field.
    let template = json!({"type": "template", "name": "order_ready", "language": "en_US",
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "A-17"}]},
                       {"type": "button", "sub_type": "quick_reply", "index": 0,
                        "parameters": [{"type": "payload", "payload": "STOP"}]}]});
    let (status, body) = send(
        &stack,
        &bot,
        json!({"user_id": stale, "messages": [template]}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let sent = watch.job(&body["message_ids"][0]).await;
    assert_eq!(serde_json::to_value(&sent.content).unwrap(), template);
    let mut bad = template.clone();
    bad["components"][1]["parameters"][0] = json!({"type": "text", "text": "STOP"});
    let (status, body) = send(&stack, &bot, json!({"user_id": stale, "messages": [bad]})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["message"],
        "messages[0].components[1].parameters[0].type: must be one of payload"
    );

    // Fallback templates are checked: only platforms with a window a template can bridge, and
    // WhatsApp's naming rules.
    for (patch, field) in [
        (
            json!({"telegram": {"name": "hi", "language": "en"}}),
            "fallback_templates.telegram",
        ),
        // Messenger's sender sends no templates: a fallback would only ever fail.
        (
            json!({"messenger": {"name": "hi", "language": "en"}}),
            "fallback_templates.messenger: Patchbay sends no messenger templates",
        ),
        (
            json!({"whatsapp": {"name": "Hi There", "language": "en"}}),
            "fallback_templates.whatsapp.name",
        ),
        (
            json!({"whatsapp": {"name": "hi", "language": "en", "body_parameters": [""]}}),
            "fallback_templates.whatsapp.body_parameters[0]",
        ),
    ] {
        let (status, body) = stack
            .call(
                "PATCH",
                &format!("/admin/v1/bots/{}", bot.id),
                Some(stack.admin_token()),
                Some(&json!({"fallback_templates": patch})),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{body}"
        );
    }

    // With a fallback template configured (no restart), the template goes out instead.
    let (status, body) = stack
        .call(
            "PATCH",
            &format!("/admin/v1/bots/{}", bot.id),
            Some(stack.admin_token()),
            Some(&json!({"fallback_templates": {"whatsapp":
                {"name": "we_miss_you", "language": "en_US", "body_parameters": ["Ana"]}}})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (_, bots) = stack
        .call("GET", "/admin/v1/bots", Some(stack.admin_token()), None)
        .await;
    let listed = bots["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == bot.id.as_str())
        .unwrap();
    assert_eq!(
        listed["fallback_templates"],
        json!({"whatsapp": {"name": "we_miss_you", "language": "en_US", "body_parameters": ["Ana"]}})
    );
    let accepted = eventually(TIMEOUT, "the fallback template applies", || async {
        let (status, body) = send(
            &stack,
            &bot,
            json!({"user_id": stale, "messages": text("late")}),
        )
        .await;
        (status == 202).then_some(body)
    })
    .await;
    let substituted = watch.job(&accepted["message_ids"][0]).await;
    assert_eq!(
        serde_json::to_value(&substituted.content).unwrap(),
        json!({"type": "template", "name": "we_miss_you", "language": "en_US",
               "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}]})
    );
    // Inside the window the template is not used.
    let (_, body) = send(
        &stack,
        &bot,
        json!({"user_id": fresh, "messages": text("still open")}),
    )
    .await;
    assert_eq!(
        watch.job(&body["message_ids"][0]).await.content,
        Content::Text {
            text: "still open".into()
        }
    );

    // Removing it (null) restores the refusal.
    let (status, _) = stack
        .call(
            "PATCH",
            &format!("/admin/v1/bots/{}", bot.id),
            Some(stack.admin_token()),
            Some(&json!({"fallback_templates": {"whatsapp": null}})),
        )
        .await;
    assert_eq!(status, 204);
    eventually(TIMEOUT, "the fallback template is gone", || async {
        let (status, body) = send(
            &stack,
            &bot,
            json!({"user_id": stale, "messages": text("late")}),
        )
        .await;
        (status == 422 && body["error"]["code"] == "outside_window").then_some(())
    })
    .await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messenger_human_agent_sends_are_tagged_up_to_seven_days_then_refused() {
    let stack = Stack::start().await;
    let watch = watch(&stack).await;
    let bot = stack.bot_with_events(Some(vec!["*"])).await;
    let fb = channel(&stack, &bot, Platform::Messenger).await;
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let fresh_at = now - TimeDelta::hours(2);
    let days3_at = now - TimeDelta::days(3);
    let days9_at = now - TimeDelta::days(9);
    let fresh = user_wrote(&stack, &bot, &fb, Platform::Messenger, "PSID_1", fresh_at).await;
    let days3 = user_wrote(&stack, &bot, &fb, Platform::Messenger, "PSID_3", days3_at).await;
    let days9 = user_wrote(&stack, &bot, &fb, Platform::Messenger, "PSID_9", days9_at).await;

    // The bot itself is past the 24-hour window after three days ...
    let (status, body) = send(
        &stack,
        &bot,
        json!({"user_id": days3, "messages": text("bot")}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "outside_window");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "closed at {}",
                rfc3339(days3_at + TimeDelta::hours(24))
            )),
        "{body}"
    );
    // ... a human agent is not, and the job carries the HUMAN_AGENT tag.
    let (status, body) = send(
        &stack,
        &bot,
        json!({"user_id": days3, "source": "human", "messages": text("agent")}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let tagged = watch.job(&body["message_ids"][0]).await;
    assert_eq!(tagged.tag, Some(patchbay_contract::MessageTag::HumanAgent));
    assert_eq!(serde_json::to_value(tagged.tag).unwrap(), "HUMAN_AGENT");
    assert_eq!(tagged.source, patchbay_contract::SendSource::Human);

    // Inside the standard window a human agent's message needs no tag.
    let (_, body) = send(
        &stack,
        &bot,
        json!({"user_id": fresh, "source": "human", "messages": text("agent, early")}),
    )
    .await;
    assert_eq!(watch.job(&body["message_ids"][0]).await.tag, None);

    // After seven days nobody may write.
    let (status, body) = send(
        &stack,
        &bot,
        json!({"user_id": days9, "source": "human", "messages": text("too late")}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "closed at {}",
                rfc3339(days9_at + TimeDelta::days(7))
            )),
        "{body}"
    );

    // No template bridges Messenger's window here: refused before anything is stored, with
    // the one way that does named.
    let (status, body) = send(
        &stack,
        &bot,
        json!({"user_id": days3, "messages": [{"type": "template", "name": "utility_update",
               "language": "en_US", "components": []}]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "outside_window");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only a human agent's messages (source human) within 7 days"),
        "{body}"
    );

    // A broadcast is not a human agent: past the standard window it is refused too.
    let (status, body) = send(
        &stack,
        &bot,
        json!({"user_id": days3, "source": "broadcast", "messages": text("sale")}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "outside_window");
    assert_eq!(watch.settled(&stack).await.len(), 2);
    stack.shutdown().await;
}
