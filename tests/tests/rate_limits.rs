//! API request limits per bot, shared fairly between `api` replicas: 429 with `Retry-After`
//! beyond the limit, `RateLimit-*` headers on every answer, other bots unaffected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patchbay_tests::{Layout, Options, Stack, TIMEOUT, eventually};
use serde_json::json;

async fn get(stack: &Stack, base: &str, key: &str) -> reqwest::Response {
    stack
        .http
        .get(format!("{base}/v1/webhook"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> Option<u64> {
    r.headers().get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bots_limit_holds_across_two_api_replicas() {
    let mut stack = Stack::start_with(Options {
        layout: Layout::Split,
        ..Options::default()
    })
    .await;
    stack.add_replica("api").await;
    let apis = stack.urls_of("api");
    assert_eq!(apis.len(), 2);
    let bot = stack.bot().await;
    let other = stack.bot().await;
    // Both replicas know there are two of them: each gives a bot half the default burst.
    for base in &apis {
        eventually(TIMEOUT, "the replica sees its peer", || async {
            let r = get(&stack, base, &other.api_key).await;
            (header(&r, "ratelimit-limit") == Some(50)).then_some(())
        })
        .await;
    }
    // The bot gets its own limit: 2/s with a burst of 6, so each replica a burst of 3 (and one
    // request a second). A new limit starts with full buckets; the probe that sees it arrive
    // takes one request from each.
    let status = stack
        .http
        .patch(format!("{}/admin/v1/bots/{}", apis[0], bot.id))
        .bearer_auth(stack.admin_token())
        .json(&json!({"rate_limit": {"per_second": 2, "burst": 6}}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    for base in &apis {
        eventually(TIMEOUT, "the replica applies the bot's share", || async {
            let r = get(&stack, base, &bot.api_key).await;
            (header(&r, "ratelimit-limit") == Some(3)).then_some(())
        })
        .await;
    }
    // 2 + 2 left, plus what refills while the requests run.
    let mut ok = 0;
    let mut refused = None;
    for i in 0..12 {
        let r = get(&stack, &apis[i % 2], &bot.api_key).await;
        match r.status().as_u16() {
            200 => ok += 1,
            429 => refused = Some(r),
            s => panic!("unexpected {s}"),
        }
    }
    // Two replicas with the whole limit each would let about 12 through.
    assert!(
        (4..=6).contains(&ok),
        "{ok} of 12 requests went through a limit of 6 shared by two replicas"
    );
    let refused = refused.expect("requests beyond the limit are refused");
    assert!(header(&refused, "retry-after").unwrap() >= 1);
    assert_eq!(header(&refused, "ratelimit-remaining"), Some(0));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another bot is unaffected.
    assert_eq!(get(&stack, &apis[0], &other.api_key).await.status(), 200);
    stack.shutdown().await;
}
