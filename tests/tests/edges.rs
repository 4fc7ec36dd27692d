//! Every edge bounded: each test performs an attack from outside on a real stack and checks
//! that it costs the installation little. A client that stalls its request head or body, or
//! stops reading its answers, is disconnected; a body is not waited for when the route cannot take it; a flood from one
//! address gets 429 while other addresses pass; a bad API key repeated costs one config read,
//! and works at once when it is created; badly signed posts to Meta's per-app URL open no
//! channel's credentials.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use patchbay_config::Config;
use patchbay_messenger::fixtures as fx;
use patchbay_tests::{Options, Stack, eventually};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The outer bound of every wait for the server to close a connection: generous, so a loaded
/// machine does not fail the test, and only there to turn a hang into a failure message.
const CLOSE_BOUND: Duration = Duration::from_secs(30);

async fn stack_with(configure: impl FnOnce(&mut Config) + 'static) -> Stack {
    Stack::start_with(Options {
        configure: Box::new(configure),
        ..Options::default()
    })
    .await
}

/// Connects to `base` (`http://host:port`), writes `sent` and reads until the server closes
/// the connection; what it answered, or a failure when it kept the connection past
/// [`CLOSE_BOUND`].
async fn send_and_read_until_closed(base: &str, sent: &[u8]) -> String {
    let addr = base.trim_start_matches("http://");
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(sent).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(CLOSE_BOUND, async {
        let mut buf = [0_u8; 4096];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server still held the connection after {CLOSE_BOUND:?}; it answered {:?}",
        String::from_utf8_lossy(&answer)
    );
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_head_or_body_is_disconnected() {
    let stack = stack_with(|c| {
        c.http_header_timeout_ms = 1_000;
        c.http_body_timeout_ms = 1_000;
    })
    .await;
    let api = stack.api_url();

    // Half a header line, then nothing: closed without an answer.
    let answer = send_and_read_until_closed(
        &api,
        b"POST /admin/v1/bots HTTP/1.1\r\nHost: x\r\nContent-Le",
    )
    .await;
    assert_eq!(
        answer, "",
        "a request without a complete head gets no answer"
    );

    // An idle kept-alive connection: one request answered, then the connection is closed.
    let answer =
        send_and_read_until_closed(&api, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The head complete and authenticated, a tenth of the body, then nothing: 408, closed.
    let head = format!(
        "POST /admin/v1/bots HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
        stack.admin_token()
    );
    let answer = send_and_read_until_closed(&api, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected() {
    let stack = stack_with(|c| c.http_write_timeout_ms = 1_000).await;
    let api = stack.api_url();
    // Requests pipelined on one connection whose answers are never read: 64 MiB of them, far
    // more than the two sockets' buffers hold, so the server's writes stop making progress.
    let size = stack
        .http
        .get(format!("{api}/openapi.json"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    let requests = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat((64 << 20) / size + 1);
    let mut socket = TcpStream::connect(api.trim_start_matches("http://"))
        .await
        .unwrap();
    socket.write_all(&requests).await.unwrap();
    eventually(CLOSE_BOUND, "the stalled response to time out", || async {
        (metric(&stack, &api, "patchbay_http_write_timeouts_total").await >= 1.0).then_some(())
    })
    .await;
    // The connection is closed: what the buffers held, then the end.
    let read = tokio::time::timeout(CLOSE_BOUND, async {
        let mut buf = vec![0_u8; 1 << 16];
        while let Ok(n) = socket.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection was still open after {CLOSE_BOUND:?}"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_not_waited_for_when_the_route_cannot_take_them() {
    // The timeouts are long here: an answer has to come from the cheap checks, not the clock.
    let stack = stack_with(|c| {
        c.http_header_timeout_ms = 60_000;
        c.http_body_timeout_ms = 60_000;
    })
    .await;
    let bot = stack.bot().await;
    let cases = [
        // An unknown channel: 404 before the body.
        (
            stack.ingress_url(),
            "POST /webhooks/telegram/ch_01JUNKNOWN00000000000000000 HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                .to_owned(),
            "HTTP/1.1 404",
        ),
        // A known channel with no secret token header: 401 before the body.
        (
            stack.ingress_url(),
            format!(
                "POST /webhooks/telegram/{} HTTP/1.1\r\nHost: x\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
                bot.channel_id
            ),
            "HTTP/1.1 401",
        ),
        // The API without a key: 401 before the body.
        (
            stack.api_url(),
            "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n"
                .to_owned(),
            "HTTP/1.1 401",
        ),
    ];
    for (base, head, status) in cases {
        let addr = base.trim_start_matches("http://").to_owned();
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0_u8; 4096];
        let n = tokio::time::timeout(CLOSE_BOUND, socket.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no answer without the body: {head}"))
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with(status), "{head}\n→ {answer}");
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_gets_429_while_other_addresses_pass() {
    let stack = stack_with(|c| {
        c.http_ip_rate_per_second = 1;
        c.http_ip_rate_burst = 5;
        c.ingress_ip_rate_per_second = 1;
        c.ingress_ip_rate_burst = 5;
        // The test's requests come from 127.0.0.1, a trusted proxy, naming their client.
        c.http_trusted_proxies = "127.0.0.1".parse().unwrap();
    })
    .await;
    let get = |path: String, client: &'static str| {
        let url = format!("{}{path}", stack.api_url());
        let http = stack.http.clone();
        async move {
            http.get(url)
                .header("x-forwarded-for", client)
                .send()
                .await
                .unwrap()
        }
    };
    let post = |path: String, client: &'static str| {
        let url = format!("{}{path}", stack.ingress_url());
        let http = stack.http.clone();
        async move {
            http.post(url)
                .header("x-forwarded-for", client)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap()
        }
    };
    for (route, class) in [
        ("/go/not-a-token", "public"),
        ("/admin/v1/bots", "public"),
        ("/webhooks/telegram/ch_none", "ingress"),
    ] {
        // A fresh flooding address per class (the two classes have separate buckets, the
        // routes of one class share one).
        let (flooder, other) = match (route, class) {
            ("/go/not-a-token", _) => ("203.0.113.1", "203.0.113.2"),
            ("/admin/v1/bots", _) => ("203.0.113.1", "203.0.113.3"),
            _ => ("203.0.113.1", "203.0.113.4"),
        };
        let send = |client: &'static str| {
            let path = route.to_owned();
            if class == "ingress" {
                futures::future::Either::Left(post(path, client))
            } else {
                futures::future::Either::Right(get(path, client))
            }
        };
        let mut refused = None;
        for _ in 0..50 {
            let r = send(flooder).await;
            if r.status() == 429 {
                refused = Some(r);
                break;
            }
        }
        let refused = refused.unwrap_or_else(|| panic!("{route}: 50 requests, none refused"));
        let retry_after: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after >= 1, "{route}");
        assert_eq!(
            refused.json::<serde_json::Value>().await.unwrap()["error"]["code"],
            "rate_limited"
        );
        let r = send(other).await;
        assert_ne!(r.status(), 429, "{route}: another address passes");
    }

    // A peer that is not a trusted proxy cannot pick its address: 127.0.0.2 naming a new
    // client on each request is still one client.
    let untrusted = patchbay_testkit::http_client_builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let mut refused = false;
    for i in 0..50 {
        let r = untrusted
            .get(format!("{}/go/not-a-token", stack.api_url()))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            refused = true;
            break;
        }
    }
    assert!(
        refused,
        "X-Forwarded-For from an untrusted peer was believed"
    );
    stack.shutdown().await;
}

/// `name{labels}` in the Prometheus text of `base`'s `/metrics` (0 when absent).
async fn metric(stack: &Stack, base: &str, name_and_labels: &str) -> f64 {
    let text = stack
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_api_key_repeated_costs_one_lookup_and_works_once_created() {
    let stack = Stack::start().await;
    let bot = stack.bot().await;
    let api = stack.api_url();
    let reads = r#"patchbay_config_reads_total{kind="apikey"}"#;
    // A key that does not exist yet (the attacker's guess, or a key about to be created).
    let key = format!("pbk_{}", patchbay_testkit::unique_prefix());
    let before = metric(&stack, &api, reads).await;
    for _ in 0..30 {
        let (status, _) = stack.call("GET", "/v1/deliveries", Some(&key), None).await;
        assert_eq!(status, 401);
    }
    let spent = metric(&stack, &api, reads).await - before;
    assert!(
        spent <= 1.0,
        "30 requests with one bad key read the config bucket {spent} times"
    );

    // The key is created (as `auth` writes it): it works at once, not after the bad key is
    // forgotten.
    let subjects = patchbay_contract::Subjects::new(&stack.config.nats_prefix).unwrap();
    let js = async_nats::jetstream::new(stack.raw_nats().await);
    let bucket = js
        .get_key_value(subjects.bucket(patchbay_contract::subjects::Bucket::Config))
        .await
        .unwrap();
    let record = patchbay_contract::ApiKeyRecord {
        v: patchbay_contract::V1,
        key_id: "key_edges".into(),
        bot_id: bot.id.clone(),
        expires_at: None,
        scopes: None,
        installation_id: None,
        channels: None,
        agent: None,
    };
    bucket
        .put(
            patchbay_contract::config_keys::api_key(&patchbay_config::secrets::api_key_hash(&key)),
            serde_json::to_vec(&record).unwrap().into(),
        )
        .await
        .unwrap();
    // Well within the negative cache's lifetime (30 s): the write itself must clear it.
    eventually(Duration::from_secs(10), "the new key works", || async {
        let (status, _) = stack.call("GET", "/v1/deliveries", Some(&key), None).await;
        (status == 200).then_some(())
    })
    .await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_badly_signed_post_to_the_per_app_url_opens_no_credentials() {
    const SECRET: &str = "meta-app-secret";
    let stack = Stack::start().await;
    let pages = [
        "106200000000001",
        "106200000000002",
        "106200000000003",
        "106200000000004",
    ];
    for page in pages {
        stack.messenger_bot(page, SECRET, None).await;
    }
    let now = chrono::Utc::now().timestamp_millis();
    let post = |tag: &str| {
        fx::post(
            &pages
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let mut e = fx::text(&format!("2{i}00"), &format!("m_{tag}_{i}"), "hi");
                    e["timestamp"] = json!(now);
                    (*p, vec![e])
                })
                .collect::<Vec<_>>(),
        )
    };
    // A genuine post reaches every Page's bot (so the ingress knows every channel).
    assert_eq!(
        stack
            .post_meta(
                "messenger",
                "/webhooks/messenger",
                Some(SECRET),
                &post("ok")
            )
            .await,
        200
    );
    stack.events_of("message.received", pages.len()).await;

    let ingress = stack.ingress_url();
    let opened = r#"patchbay_ingress_credentials_opened_total{platform="messenger"}"#;
    let before = metric(&stack, &ingress, opened).await;
    for i in 0..10 {
        assert_eq!(
            stack
                .post_meta(
                    "messenger",
                    "/webhooks/messenger",
                    Some("wrong-secret"),
                    &post(&format!("bad{i}"))
                )
                .await,
            401
        );
    }
    let spent = metric(&stack, &ingress, opened).await - before;
    assert_eq!(
        spent,
        0.0,
        "10 badly signed posts naming {} Pages opened channel credentials {spent} times",
        pages.len()
    );
    stack.shutdown().await;
}
