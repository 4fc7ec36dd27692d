//! `patchbay-fakes`: the demo's tenant, Telegram API, Meta Graph API and WeChat API, for
//! `make run` and benchmarks.
//!
//! The tenant answers every `message.received` with an inline reply `echo: <text>`; the
//! Telegram API accepts any bot token, the Graph API any Page, phone number and token; the
//! WeChat API knows one Official Account (AppID `wx2c2769f8efd9abc2`, AppSecret
//! `demo-secret`) followed by the user `oUser123`; the Kik API one bot (`demobot`, API key
//! `demo-key`) that the user `ada` chats with; the LINE API one channel (access token
//! `demo-line-token`) whose friend is the user `Uada`, taking any reply token once; the Viber
//! API one bot (auth token `demo-viber-token`) with the subscriber `01234567890A=`. All print
//! one line per request.
//! Usage: `patchbay-fakes [TENANT_ADDR] [TELEGRAM_ADDR] [GRAPH_ADDR] [WECHAT_ADDR] [KIK_ADDR]
//! [LINE_ADDR] [VIBER_ADDR]` (default 127.0.0.1:8090, :8091, :8092, :8093, :8094, :8095 and
//! :8096).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::http::StatusCode;
use patchbay_testkit::graph::FakeGraph;
use patchbay_testkit::kik::FakeKik;
use patchbay_testkit::line::FakeLine;
use patchbay_testkit::telegram::FakeTelegram;
use patchbay_testkit::tenant::FakeTenant;
use patchbay_testkit::viber::FakeViber;
use patchbay_testkit::wechat::FakeWechat;
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tenant_addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let telegram_addr = args.next().unwrap_or_else(|| "127.0.0.1:8091".into());
    let graph_addr = args.next().unwrap_or_else(|| "127.0.0.1:8092".into());
    let wechat_addr = args.next().unwrap_or_else(|| "127.0.0.1:8093".into());
    let kik_addr = args.next().unwrap_or_else(|| "127.0.0.1:8094".into());
    let line_addr = args.next().unwrap_or_else(|| "127.0.0.1:8095".into());
    let viber_addr = args.next().unwrap_or_else(|| "127.0.0.1:8096".into());
    let tenant = FakeTenant::start_on(&tenant_addr).await;
    tenant.respond_with(|r| {
        let event = r.json();
        match event["message"]["content"]["text"].as_str() {
            Some(text) if event["type"] == "message.received" => (
                StatusCode::OK,
                Some(json!({"messages": [{"type": "text", "text": format!("echo: {text}")}]})),
            ),
            _ => (StatusCode::OK, None),
        }
    });
    let telegram = FakeTelegram::start_on(&telegram_addr).await;
    telegram.accept_any_token();
    println!("fake tenant:   {} (replies 'echo: <text>')", tenant.url());
    println!("fake Telegram: {}", telegram.base_url());
    let graph = FakeGraph::start_on(&graph_addr).await;
    graph.accept_any();
    println!("fake Graph API: {}", graph.base_url());
    let wechat = FakeWechat::start_on(&wechat_addr).await;
    wechat.add_app("wx2c2769f8efd9abc2", "demo-secret");
    wechat.add_follower("wx2c2769f8efd9abc2", "oUser123");
    println!("fake WeChat API: {}", wechat.base_url());
    let kik = FakeKik::start_on(&kik_addr).await;
    kik.add_bot("demobot", "demo-key");
    kik.add_user("demobot", "ada");
    println!("fake Kik API: {}", kik.base_url());
    let viber = FakeViber::start_on(&viber_addr).await;
    viber.add_bot("demo-viber-token", "Demo Shop");
    viber.add_subscriber("demo-viber-token", "01234567890A=");
    println!("fake Viber API: {}", viber.base_url());
    let mut seen_viber = 0;
    let line = FakeLine::start_on(&line_addr).await;
    line.add_channel("demo-line-token");
    line.add_friend("demo-line-token", "Uada");
    line.accept_unknown_reply_tokens();
    println!("fake LINE API: {}", line.base_url());
    let mut seen_line = 0;
    let (mut seen_events, mut seen_calls, mut seen_graph, mut seen_wechat, mut seen_kik) =
        (0, 0, 0, 0, 0);
    loop {
        let events = tenant.received();
        for r in &events[seen_events..] {
            println!(
                "tenant <- {} {}",
                r.header("webhook-id").unwrap_or_default(),
                String::from_utf8_lossy(&r.body)
            );
        }
        seen_events = events.len();
        let calls = telegram.calls();
        for c in &calls[seen_calls..] {
            println!("telegram <- {} {}", c.method, c.body);
        }
        seen_calls = calls.len();
        let calls = graph.calls();
        for c in &calls[seen_graph..] {
            println!("graph <- {} /{} {}", c.method, c.id, c.body);
        }
        seen_graph = calls.len();
        let calls = wechat.calls();
        for c in &calls[seen_wechat..] {
            println!(
                "wechat <- {} {} {} (errcode {})",
                c.method, c.path, c.body, c.errcode
            );
        }
        seen_wechat = calls.len();
        let calls = kik.calls();
        for c in &calls[seen_kik..] {
            println!(
                "kik <- {} {} {} (HTTP {})",
                c.method, c.path, c.body, c.status
            );
        }
        seen_kik = calls.len();
        let calls = viber.calls();
        for c in &calls[seen_viber..] {
            println!(
                "viber <- {} {} (status {:?}, HTTP {})",
                c.path, c.body, c.status, c.http_status
            );
        }
        seen_viber = calls.len();
        let calls = line.calls();
        for c in &calls[seen_line..] {
            println!(
                "line <- {} {} {} (HTTP {})",
                c.method, c.path, c.body, c.status
            );
        }
        seen_line = calls.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
