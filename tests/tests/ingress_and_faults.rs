//! Bad input, duplicates, poison messages and restarts: nothing acknowledged is lost, nothing
//! bad is published, nothing is delivered twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use patchbay_contract::subjects::Stream;
use patchbay_telegram::fixtures;
use patchbay_tests::{Layout, Options, Stack, TIMEOUT, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_secret_malformed_and_oversized_bodies_publish_nothing() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| c.ingress_max_body_bytes = 4096),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    let update = serde_json::to_vec(&fixtures::text_update(1, 4242, "hi")).unwrap();

    assert_eq!(
        stack
            .post_update_with(&bot, Some("not-the-secret"), update.clone())
            .await,
        401
    );
    assert_eq!(
        stack.post_update_with(&bot, None, update.clone()).await,
        401
    );
    assert_eq!(
        stack
            .post_update_with(&bot, Some(&bot.secret_token), b"{not json".to_vec())
            .await,
        400
    );
    assert_eq!(
        stack
            .post_update_with(
                &bot,
                Some(&bot.secret_token),
                br#"{"message": {}}"#.to_vec()
            )
            .await,
        400,
        "an Update without update_id is malformed"
    );
    let big = serde_json::to_vec(&fixtures::text_update(2, 4242, &"x".repeat(5000))).unwrap();
    assert_eq!(
        stack
            .post_update_with(&bot, Some(&bot.secret_token), big)
            .await,
        413
    );
    let unknown = format!("{}/webhooks/telegram/ch_doesnotexist", stack.ingress_url());
    let r = stack
        .http
        .post(unknown)
        .header("X-Telegram-Bot-Api-Secret-Token", &bot.secret_token)
        .body(update)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    for (stream, last_sequence) in stack.stream_sequences().await {
        assert_eq!(last_sequence, 0, "{stream} received a message");
    }
    assert!(stack.tenant.received().is_empty());
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_update_is_delivered_once() {
    // One message at a time in every consumer, so later updates cannot overtake earlier ones
    // and "B arrived" proves everything before B was handled.
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| c.consumer_concurrency = 1),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    let a = fixtures::text_update(500, 4242, "A");
    assert_eq!(stack.post_update(&bot, &a).await, 200);
    assert_eq!(
        stack.post_update(&bot, &a).await,
        200,
        "Telegram's retry is acknowledged too"
    );
    assert_eq!(
        ingress_sequence(&stack).await,
        1,
        "JetStream dropped the retry inside its window"
    );
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(501, 4242, "B"))
            .await,
        200
    );
    assert_eq!(
        stack.received_texts(2).await,
        vec![json!("A"), json!("B")],
        "A once, then B"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_duplicate_window_is_not_delivered_again() {
    let window = std::time::Duration::from_millis(300);
    let stack = Stack::start_with(Options {
        configure: Box::new(move |c| {
            c.consumer_concurrency = 1;
            c.nats_duplicate_window_ms = window.as_millis() as u64;
        }),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    let a = fixtures::text_update(700, 4242, "A");
    assert_eq!(stack.post_update(&bot, &a).await, 200);
    stack.events_of("message.received", 1).await;
    // Let JetStream's window run out (checked below: the late retry is stored, not dropped).
    tokio::time::sleep(window * 3).await;
    assert_eq!(stack.post_update(&bot, &a).await, 200);
    assert_eq!(
        ingress_sequence(&stack).await,
        2,
        "the late retry got past JetStream"
    );
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(701, 4242, "B"))
            .await,
        200
    );
    assert_eq!(
        stack.received_texts(2).await,
        vec![json!("A"), json!("B")],
        "the late retry of A was dropped (by the dispatcher, which knows its event id)"
    );
    stack.shutdown().await;
}

async fn ingress_sequence(stack: &Stack) -> u64 {
    stack
        .stream_sequences()
        .await
        .into_iter()
        .find(|(s, _)| s.ends_with("_INGRESS"))
        .unwrap()
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_stream_and_the_next_one_flows() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let nats = stack.raw_nats().await;
    let js = async_nats::jetstream::new(nats.clone());
    let prefix = &stack.config.nats_prefix;
    let subject = format!("{prefix}.ingress.telegram.{}", bot.channel_id);
    // Not JSON at all, and a well-formed envelope whose body is not a Telegram Update.
    js.publish(subject.clone(), "\u{1}garbage".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let not_an_update = json!({
        "v": 1, "id": "env_01JD5W2Q8Y3T9K6V1M4N7P0R2T", "platform": "telegram",
        "channel_id": bot.channel_id, "bot_id": bot.id, "received_at": "2026-11-21T10:00:00Z",
        "dedupe_key": "telegram:x:1", "body": {"update_id": "seven"},
    });
    js.publish(subject, serde_json::to_vec(&not_an_update).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();

    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(9, 4242, "still works"))
            .await,
        200
    );
    let got = stack.events_of("message.received", 1).await;
    assert_eq!(got[0].json()["message"]["content"]["text"], "still works");

    let dlq = js
        .get_stream(format!("{}_DLQ", prefix.to_uppercase()))
        .await
        .unwrap();
    let consumer = dlq
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut messages = consumer
        .fetch()
        .max_messages(2)
        .expires(TIMEOUT)
        .messages()
        .await
        .unwrap();
    let mut reasons = Vec::new();
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        assert_eq!(
            m.subject.as_str(),
            format!("{prefix}.dlq.normaliser.{}", bot.channel_id)
        );
        let h = m.headers.clone().unwrap();
        assert_eq!(h.get("Pb-Dlq-Consumer").unwrap().as_str(), "normaliser");
        assert_eq!(
            h.get("Pb-Dlq-Subject").unwrap().as_str(),
            format!("{prefix}.ingress.telegram.{}", bot.channel_id)
        );
        reasons.push(h.get("Pb-Dlq-Reason").unwrap().to_string());
    }
    // Envelopes that cannot be read have no conversation to keep in order: either may be
    // dead-lettered first.
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].starts_with("malformed payload"), "{reasons:?}");
    assert!(reasons[1].contains("not a Telegram Update"), "{reasons:?}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_restarts_cleanly_and_resumes_from_its_durable_consumer() {
    let mut stack = Stack::start_with(Options {
        layout: Layout::Split,
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    stack.tenant.respond_with(|r| {
        let e = r.json();
        let text = e["message"]["content"]["text"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        (
            reqwest::StatusCode::OK,
            Some(json!({"messages": [{"type": "text", "text": format!("re: {text}")}]})),
        )
    });
    let mut update_id = 1000;
    let mut expected = 0;
    // Consumers: stopped while work arrives, then restarted; the work must come through.
    for service in [
        "normaliser",
        "bot-router",
        "webhook-dispatcher",
        "outbound-telegram",
    ] {
        stack.stop(service).await;
        update_id += 1;
        let text = format!("while {service} was down");
        assert_eq!(
            stack
                .post_update(&bot, &fixtures::text_update(update_id, 4242, &text))
                .await,
            200
        );
        stack.restart(service).await;
        expected += 1;
        let calls = stack
            .telegram
            .wait_for("sendMessage", expected, TIMEOUT)
            .await;
        assert!(
            calls
                .iter()
                .any(|c| c.body["text"] == format!("re: {text}")),
            "the reply to the update sent while {service} was down arrived"
        );
    }
    // The HTTP and request/reply services: restarted, they serve again.
    for service in ["auth", "api", "ingress-telegram"] {
        stack.stop(service).await;
        stack.restart(service).await;
    }
    let second = stack.bot().await;
    update_id += 1;
    assert_eq!(
        stack
            .post_update(&second, &fixtures::text_update(update_id, 99, "after"))
            .await,
        200
    );
    stack
        .telegram
        .wait_for("sendMessage", expected + 1, TIMEOUT)
        .await;
    assert_eq!(
        stack.tenant.received().len(),
        expected + 1,
        "each event delivered once"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_to_private_addresses_need_the_operator_flag() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| c.allow_private_callbacks = false),
        ..Options::default()
    })
    .await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.7/hook",
        "http://localhost:9/hook",
    ] {
        let (status, body) = stack
            .post(
                &format!("{}/admin/v1/bots", stack.api_url()),
                stack.admin_token(),
                &json!({"name": "x", "webhook": {"url": url, "flavour": "native"}}),
            )
            .await;
        assert_eq!(status, 422, "{url}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("webhook.url:")
                && message.contains("PATCHBAY_ALLOW_PRIVATE_CALLBACKS"),
            "{message}"
        );
    }
    stack.shutdown().await;
}

/// A send command handled again after JetStream's duplicate window (a redelivery long after a
/// crash, a republished command) finds its messages stored: the router marks their jobs as not
/// fresh, so the sender looks them up among sent messages and reports them instead of sending
/// them again. A new command's jobs are fresh: their first delivery skips that lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_send_command_is_reported_not_sent_again() {
    // JetStream drops a job published again under its id within the duplicate window, so the
    // repeat would never reach the sender: a short window lets this test repeat the command
    // after it, as a client retrying minutes later would.
    let window = Duration::from_millis(1_000);
    let stack = Stack::start_with(Options {
        configure: Box::new(move |c| {
            c.nats_duplicate_window_ms = u64::try_from(window.as_millis()).unwrap();
        }),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(1, 4242, "hi"))
            .await,
        200
    );
    let got = stack.events_of("message.received", 1).await;
    let user_id = got[0].json()["user"]["id"].as_str().unwrap().to_owned();

    let nats = stack.raw_nats().await;
    let prefix = stack.config.nats_prefix.clone();
    let mut jobs = nats
        .subscribe(format!("{prefix}.outbound.>"))
        .await
        .unwrap();
    // Core NATS sees every status publish, also one JetStream drops as a duplicate.
    let mut reports = nats.subscribe(format!("{prefix}.status.>")).await.unwrap();
    nats.flush().await.unwrap();
    let js = async_nats::jetstream::new(nats.clone());
    let command = json!({
        "v": 1, "id": "cmd_repeated", "user_id": user_id,
        "messages": [{"type": "text", "text": "only once"}], "source": "internal",
    });
    let subject = format!("{prefix}.send.{}", bot.id);
    let mut reported = Vec::new();
    for copy in ["first", "second"] {
        // Distinct message ids: the second copy gets past JetStream's de-duplication.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("cmd_repeated-{copy}").as_str());
        if copy == "second" {
            // Past the window the job published again is stored, not dropped as a duplicate.
            tokio::time::sleep(window * 2).await;
        }
        let (_, jobs_before) = stack.stream_state(Stream::Outbound).await;
        js.publish_with_headers(
            subject.clone(),
            headers,
            serde_json::to_vec(&command).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let job = tokio::time::timeout(TIMEOUT, jobs.next())
            .await
            .expect("an outbound job")
            .unwrap();
        let job: patchbay_contract::OutboundJob = serde_json::from_slice(&job.payload).unwrap();
        assert_eq!(job.fresh, copy == "first", "the {copy} copy's job");
        patchbay_tests::eventually(
            TIMEOUT,
            &format!("the {copy} copy's job stored for the sender"),
            || async {
                let (_, stored) = stack.stream_state(Stream::Outbound).await;
                (stored == jobs_before + 1).then_some(())
            },
        )
        .await;
        // Each copy's job is reported on the status stream, the second as already sent.
        let report = tokio::time::timeout(TIMEOUT, reports.next())
            .await
            .unwrap_or_else(|_| panic!("the {copy} copy was not reported"))
            .unwrap();
        let report: patchbay_contract::StatusEvent =
            serde_json::from_slice(&report.payload).unwrap();
        assert_eq!(
            report.message_id, job.message_id,
            "the {copy} copy's report"
        );
        assert_eq!(
            report.status,
            patchbay_contract::DeliveryStatus::Sent,
            "{report:?}"
        );
        reported.push(report.platform_message_id);
    }
    assert!(reported[0].is_some(), "{reported:?}");
    assert_eq!(
        reported[0], reported[1],
        "the repeat reports the first send's platform message id"
    );
    let sent: Vec<_> = stack
        .telegram
        .calls_of("sendMessage")
        .into_iter()
        .filter(|c| c.body["text"] == "only once")
        .collect();
    assert_eq!(sent.len(), 1, "sent once: {sent:?}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_channels_dead_letters_are_bounded_without_touching_anothers() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| c.dead_letters_per_key = 3),
        ..Options::default()
    })
    .await;
    let (flooder, other) = (stack.bot().await, stack.bot().await);
    let js = async_nats::jetstream::new(stack.raw_nats().await);
    let prefix = &stack.config.nats_prefix;
    // Six unreadable envelopes on one channel, one on another: seven dead letters.
    for (bot, n) in [(&flooder, 6), (&other, 1)] {
        let subject = format!("{prefix}.ingress.telegram.{}", bot.channel_id);
        for i in 0..n {
            js.publish(subject.clone(), format!("\u{1}garbage {i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    let dlq = js
        .get_stream(format!("{}_DLQ", prefix.to_uppercase()))
        .await
        .unwrap();
    let key = |bot: &patchbay_tests::TestBot| format!("{prefix}.dlq.normaliser.{}", bot.channel_id);
    let counts = eventually(TIMEOUT, "all seven dead-lettered", || async {
        let mut info = dlq
            .info_with_subjects(format!("{prefix}.dlq.>"))
            .await
            .ok()?;
        let stored = info.info.state.last_sequence;
        let mut per_subject = std::collections::HashMap::new();
        while let Some(Ok((subject, n))) = info.next().await {
            per_subject.insert(subject, n);
        }
        (stored == 7).then_some(per_subject)
    })
    .await;
    // The flooding channel keeps its newest three; the other channel keeps its own.
    assert_eq!(counts.get(&key(&flooder)), Some(&3), "{counts:?}");
    assert_eq!(counts.get(&key(&other)), Some(&1), "{counts:?}");
    stack.shutdown().await;
}
