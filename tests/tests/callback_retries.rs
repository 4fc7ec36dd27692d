//! How the dispatcher treats a tenant's answer: `Retry-After` is honoured within bounds
//! (never sooner than the schedule, never later than twice it), and redirects are not
//! followed but logged as failed attempts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use patchbay_telegram::fixtures;
use patchbay_testkit::tenant::FakeTenant;
use patchbay_tests::{Options, Stack, TIMEOUT, eventually};
use reqwest::StatusCode;
use serde_json::Value;

/// A tenant that answers 503 with `Retry-After: <seconds>` to its first request, then 200.
async fn busy_once(retry_after: &str) -> FakeTenant {
    let tenant = FakeTenant::start().await;
    tenant.set_response_headers(&[("retry-after", retry_after)]);
    let count = Arc::new(AtomicUsize::new(0));
    tenant.respond_with(move |_| {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            (StatusCode::SERVICE_UNAVAILABLE, None)
        } else {
            (StatusCode::OK, None)
        }
    });
    tenant
}

/// The gap between a tenant's first and second request.
async fn second_attempt_gap(tenant: &FakeTenant) -> Duration {
    let got = eventually(TIMEOUT, "a second attempt", || async {
        let r = tenant.received();
        (r.len() >= 2).then_some(r)
    })
    .await;
    got[1].at.duration_since(got[0].at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_within_one_to_two_scheduled_delays() {
    let stack = Stack::start_with(Options {
        // The second attempt is scheduled 1 s (±20 %) after the first.
        configure: Box::new(|c| c.webhook_retry_schedule = "0s,1s,1s".parse().unwrap()),
        ..Options::default()
    })
    .await;
    let asks_two_seconds = busy_once("2").await;
    let asks_an_hour = busy_once("3600").await;
    for (i, tenant) in [&asks_two_seconds, &asks_an_hour].iter().enumerate() {
        let bot = stack.bot_for(&tenant.url(), None).await;
        let update = fixtures::text_update(1, 5100 + i as i64, "hello");
        assert_eq!(stack.post_update(&bot, &update).await, 200);
    }
    // Asked for 2 s, inside 1–2× the scheduled second: waited 2 s, not the schedule's ~1 s.
    let gap = second_attempt_gap(&asks_two_seconds).await;
    assert!(
        gap >= Duration::from_millis(1_900),
        "Retry-After: 2 ignored, retried after {gap:?}"
    );
    // Asked for an hour: capped at twice the schedule (at most 2.4 s with jitter).
    let gap = second_attempt_gap(&asks_an_hour).await;
    assert!(
        gap <= Duration::from_millis(3_500),
        "Retry-After: 3600 not bounded, retried after {gap:?}"
    );
    assert!(
        gap >= Duration::from_millis(1_500),
        "Retry-After: 3600 retried sooner than twice the schedule: {gap:?}"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_count_as_failed_attempts() {
    let stack = Stack::start_with(Options {
        configure: Box::new(|c| c.webhook_retry_schedule = "0s,50ms".parse().unwrap()),
        ..Options::default()
    })
    .await;
    let elsewhere = FakeTenant::start().await;
    let redirecting = FakeTenant::start().await;
    redirecting.set_response_headers(&[("location", &elsewhere.url())]);
    redirecting.respond_with(|_| (StatusCode::TEMPORARY_REDIRECT, None));
    let bot = stack.bot_for(&redirecting.url(), None).await;
    let update = fixtures::text_update(1, 5200, "hello");
    assert_eq!(stack.post_update(&bot, &update).await, 200);

    let delivery = eventually(TIMEOUT, "a failed delivery", || async {
        let page: Value = stack
            .http
            .get(format!("{}/v1/deliveries", stack.api_url()))
            .bearer_auth(&bot.api_key)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let d = page["items"].as_array()?.first()?.clone();
        (d["status"] == "failed").then_some(d)
    })
    .await;
    assert_eq!(delivery["attempts"], 2);
    assert_eq!(delivery["last_status_code"], 307);
    assert_eq!(redirecting.received().len(), 2);
    assert!(
        elsewhere.received().is_empty(),
        "the redirect was followed to {}",
        elsewhere.url()
    );
    stack.shutdown().await;
}
