//! Callback retries, dead letters and tenant isolation, with the faults injected for real.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use patchbay_telegram::fixtures;
use patchbay_testkit::tenant::FakeTenant;
use patchbay_tests::{Options, Stack, TIMEOUT, eventually};
use reqwest::StatusCode;

fn text_of(r: &patchbay_testkit::tenant::Received) -> String {
    r.json()["message"]["content"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A failing event is retried on the schedule with the same `webhook-id`; the next events of
/// its conversation wait for it; after the last attempt it is dead-lettered and they go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_on_schedule_in_order_then_dead_lettered() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| {
            c.webhook_retry_schedule = "0s,100ms,150ms,200ms".parse().unwrap();
        }),
        ..Options::default()
    })
    .await;
    let bot = stack.bot().await;
    // What the tenant answered, in order: (text, status).
    let answers: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
    let tries: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let (a, t) = (answers.clone(), tries.clone());
    stack.tenant.respond_with(move |r| {
        let text = text_of(r);
        let mut tries = t.lock().unwrap();
        let n = tries.entry(text.clone()).or_insert(0);
        *n += 1;
        let status = match text.as_str() {
            "poison" => StatusCode::INTERNAL_SERVER_ERROR,
            "flaky" if *n < 3 => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::OK,
        };
        a.lock().unwrap().push((text, status.as_u16()));
        (status, None)
    });
    for (i, text) in ["a", "flaky", "b", "poison", "c"].iter().enumerate() {
        let update = fixtures::text_update(100 + i as i64, 4242, text);
        assert_eq!(stack.post_update(&bot, &update).await, 200);
    }
    eventually(TIMEOUT, "c delivered", || async {
        answers
            .lock()
            .unwrap()
            .iter()
            .any(|(t, s)| t == "c" && *s == 200)
            .then_some(())
    })
    .await;
    let answers = answers.lock().unwrap().clone();
    let delivered: Vec<&str> = answers
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(delivered, ["a", "flaky", "b", "c"], "{answers:?}");
    let poison = answers.iter().filter(|(t, _)| t == "poison").count();
    assert_eq!(poison, 4, "the schedule has four attempts: {answers:?}");
    let flaky_last = answers.iter().rposition(|(t, _)| t == "flaky").unwrap();
    let b_first = answers.iter().position(|(t, _)| t == "b").unwrap();
    assert!(b_first > flaky_last, "b waited for flaky: {answers:?}");
    let poison_last = answers.iter().rposition(|(t, _)| t == "poison").unwrap();
    let c_first = answers.iter().position(|(t, _)| t == "c").unwrap();
    assert!(
        c_first > poison_last,
        "c waited until poison was dead-lettered: {answers:?}"
    );

    // Every attempt of one event carried the same webhook-id.
    let mut ids: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    for r in stack.tenant.received() {
        ids.entry(text_of(&r))
            .or_default()
            .insert(r.header("webhook-id").unwrap());
    }
    assert!(ids.values().all(|s| s.len() == 1), "{ids:?}");

    // The dead letter holds the event and says why.
    let js = async_nats::jetstream::new(stack.raw_nats().await);
    let dlq = js
        .get_stream(format!("{}_DLQ", stack.config.nats_prefix.to_uppercase()))
        .await
        .unwrap();
    let consumer = dlq
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: format!("{}.dlq.webhook-dispatcher.>", stack.config.nats_prefix),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = consumer
        .fetch()
        .max_messages(1)
        .expires(TIMEOUT)
        .messages()
        .await
        .unwrap();
    let m = msgs.next().await.expect("a dead letter").unwrap();
    let reason = m
        .headers
        .as_ref()
        .unwrap()
        .get("Pb-Dlq-Reason")
        .unwrap()
        .to_string();
    assert!(
        reason.starts_with("gave up after 4 attempts") && reason.contains("HTTP 500"),
        "{reason}"
    );
    let job: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(job["event"]["message"]["content"]["text"], "poison");
    stack.shutdown().await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// A tenant whose endpoint times out does not hold up another tenant's deliveries; when it
/// recovers, its parked events arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tenant_does_not_delay_another() {
    // Each attempt at the slow tenant holds a handler for the whole callback timeout: were the
    // healthy tenant's events to wait behind them, they would wait at least that long. One
    // partition, so both bots share the dispatcher's consumer and its handlers, and as many
    // slow conversations as handlers: only the dispatcher's admission keeps them apart.
    let callback_timeout = Duration::from_secs(3);
    let stack = Stack::start_with(Options {
        configure: Box::new(move |c| {
            c.partitions = 1;
            c.consumer_concurrency = 8;
            c.webhook_timeout_ms = u64::try_from(callback_timeout.as_millis()).unwrap();
            c.webhook_retry_schedule = "0s,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms".parse().unwrap();
        }),
        ..Options::default()
    })
    .await;
    let slow = FakeTenant::start().await;
    slow.set_delay(Duration::from_secs(10));
    let slow_bot = stack.bot_for(&slow.url(), None).await;
    let good_bot = stack.bot().await;

    let (chats, per_chat) = (8_i64, 5_i64);
    let mut sent_at = HashMap::new();
    for n in 0..per_chat {
        for chat in 0..chats {
            let text = format!("{chat}-{n}");
            let id = 1 + chat * 100 + n;
            assert_eq!(
                stack
                    .post_update(&slow_bot, &fixtures::text_update(id, 500 + chat, &text))
                    .await,
                200
            );
            // Only the healthy tenant's updates are timed.
            assert_eq!(
                stack
                    .post_update(&good_bot, &fixtures::text_update(id, 600 + chat, &text))
                    .await,
                200
            );
            sent_at.insert(text.clone(), Instant::now());
        }
    }
    let total = usize::try_from(chats * per_chat).unwrap();
    let good = stack.tenant.wait_for(total, TIMEOUT).await;
    let mut latencies: Vec<Duration> = good
        .iter()
        .map(|r| r.at.saturating_duration_since(sent_at[&text_of(r)]))
        .collect();
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "healthy tenant: {total} events, p50 {p50:?}, p99 {p99:?}, max {:?} (update posted to callback received); slow tenant meanwhile: {} requests",
        latencies[latencies.len() - 1],
        slow.received().len()
    );
    assert!(
        good.iter().all(|r| r.status == 200),
        "the healthy tenant answers 200"
    );
    assert_eq!(good.len(), total, "each healthy event delivered once");
    // Generous for a loaded machine (tens of milliseconds are usual), yet half of one attempt
    // at the slow tenant: no healthy event waited for a handler the slow tenant held.
    let bound = callback_timeout / 2;
    assert!(
        p99 < bound,
        "the healthy tenant's p99 {p99:?} is not below {bound:?}, half the slow tenant's callback timeout: {latencies:?}"
    );

    // The slow tenant recovers: everything it missed is delivered (answered 2xx at once),
    // exactly once and in order per conversation.
    slow.set_delay(Duration::ZERO);
    let started = Instant::now();
    let delivered = eventually(TIMEOUT, "the slow tenant's backlog delivered", || async {
        let delivered: Vec<_> = slow
            .received()
            .into_iter()
            .filter(|r| r.delivered())
            .collect();
        (delivered.len() >= total).then_some(delivered)
    })
    .await;
    println!(
        "slow tenant after recovery: {total} events in {:?}",
        started.elapsed()
    );
    for chat in 0..chats {
        let order: Vec<String> = delivered
            .iter()
            .map(text_of)
            .filter(|t| t.starts_with(&format!("{chat}-")))
            .collect();
        let expected: Vec<String> = (0..per_chat).map(|n| format!("{chat}-{n}")).collect();
        assert_eq!(
            order, expected,
            "chat {chat}: deliveries in order, once each"
        );
    }
    assert_eq!(delivered.len(), total);
    stack.shutdown().await;
}

/// An endpoint answering 410 Gone is disabled: its events go to the dead-letter stream without
/// attempts until an operator re-enables it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint_until_re_enabled() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let g = gone.clone();
    stack.tenant.respond_with(move |_| {
        if g.load(std::sync::atomic::Ordering::SeqCst) {
            (StatusCode::GONE, None)
        } else {
            (StatusCode::OK, None)
        }
    });
    let js = async_nats::jetstream::new(stack.raw_nats().await);
    let dlq = js
        .get_stream(format!("{}_DLQ", stack.config.nats_prefix.to_uppercase()))
        .await
        .unwrap();
    let reasons = || {
        let dlq = dlq.clone();
        async move {
            let consumer = dlq
                .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
                .await
                .unwrap();
            let mut out = Vec::new();
            let mut msgs = consumer
                .fetch()
                .max_messages(100)
                .expires(Duration::from_millis(300))
                .messages()
                .await
                .unwrap();
            while let Some(Ok(m)) = msgs.next().await {
                out.push(
                    m.headers
                        .as_ref()
                        .unwrap()
                        .get("Pb-Dlq-Reason")
                        .unwrap()
                        .to_string(),
                );
            }
            out
        }
    };
    assert_eq!(
        stack
            .post_update(&bot, &fixtures::text_update(1, 4242, "first"))
            .await,
        200
    );
    let first = eventually(TIMEOUT, "the first event dead-lettered", || async {
        let r = reasons().await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert!(
        first[0].starts_with("callback answered 410 Gone"),
        "{first:?}"
    );

    // Once the disabled state reached the dispatcher, events are dead-lettered unattempted.
    let deadline = Instant::now() + TIMEOUT;
    let mut n: i64 = 1;
    let all = loop {
        assert!(
            Instant::now() < deadline,
            "no event was dead-lettered as 'endpoint disabled'"
        );
        n += 1;
        assert_eq!(
            stack
                .post_update(&bot, &fixtures::text_update(n, 4242, "later"))
                .await,
            200
        );
        let wanted = usize::try_from(n).unwrap();
        let r = eventually(TIMEOUT, "the probe dead-lettered", || async {
            let r = reasons().await;
            (r.len() >= wanted).then_some(r)
        })
        .await;
        if r.iter().any(|x| x.starts_with("endpoint disabled")) {
            break r;
        }
    };
    let gone_answers = all
        .iter()
        .filter(|r| r.starts_with("callback answered 410 Gone"))
        .count();
    assert_eq!(
        stack.tenant.received().len(),
        gone_answers,
        "no attempts while disabled: {all:?}"
    );
    // The delivery log has every dead letter as failed, the unattempted ones with no attempts
    // (the dispatcher stores the dead letter before it marks the delivery failed: wait for the
    // log to catch up).
    let log = eventually(TIMEOUT, "every dead letter in the delivery log", || async {
        let (status, log) = stack
            .call(
                "GET",
                "/v1/deliveries?status=failed&limit=100",
                Some(&bot.api_key),
                None,
            )
            .await;
        assert_eq!(status, 200, "{log}");
        (log["items"].as_array()?.len() == all.len()).then_some(log)
    })
    .await;
    let failed = log["items"].as_array().unwrap();
    assert_eq!(failed.len(), all.len(), "{log}");
    let unattempted = failed.iter().filter(|d| d["attempts"] == 0).count();
    assert_eq!(unattempted, all.len() - gone_answers, "{log}");
    assert!(
        failed
            .iter()
            .filter(|d| d["attempts"] == 0)
            .all(|d| d["last_error"]
                .as_str()
                .unwrap()
                .starts_with("endpoint disabled")),
        "{log}"
    );

    // The operator re-enables it: events flow again.
    gone.store(false, std::sync::atomic::Ordering::SeqCst);
    let r = stack
        .http
        .post(format!(
            "{}/admin/v1/bots/{}/webhook/enable",
            stack.api_url(),
            bot.id
        ))
        .bearer_auth(stack.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(
            Instant::now() < deadline,
            "nothing delivered after re-enabling"
        );
        n += 1;
        let text = format!("again {n}");
        assert_eq!(
            stack
                .post_update(&bot, &fixtures::text_update(n, 4242, &text))
                .await,
            200
        );
        let wanted = usize::try_from(n).unwrap();
        // Each probe ends up either delivered or dead-lettered; wait for whichever.
        let delivered = eventually(TIMEOUT, "the probe settled", || async {
            if stack.tenant.received().iter().any(|r| text_of(r) == text) {
                return Some(true);
            }
            (reasons().await.len() >= wanted).then_some(false)
        })
        .await;
        if delivered {
            break;
        }
    }
    stack.shutdown().await;
}
