//! The test kit: real servers and faithful fakes for tests, benchmarks and the demo.
//!
//! * [`nats::NatsServer`]: a real `nats-server -js` on a free port with a temporary store;
//! * [`postgres::PgServer`]: a real PostgreSQL cluster in a temporary directory;
//! * [`tenant::FakeTenant`]: a tenant's callback server that records and verifies what it gets;
//! * [`telegram::FakeTelegram`]: the Telegram Bot API, speaking its real wire format;
//! * [`graph::FakeGraph`]: Meta's Graph API for Messenger and WhatsApp (sends, profiles);
//! * [`wechat::FakeWechat`]: the WeChat Official Account API (tokens, sends, media, profiles);
//! * [`kik::FakeKik`]: the Kik bot API (messages, the bots' configuration, profiles);
//! * [`viber::FakeViber`]: the Viber REST bot API (sends, the webhook and its check callback,
//!   account and user details);
//! * [`fuzz`]: proptest strategies for the parsers' `fuzz_` tests (arbitrary and near-valid input);
//! * [`fixtures`]: Telegram updates and Messenger / WhatsApp webhooks as the platforms send them;
//! * [`browser::Browser`]: Debian's headless Chromium driven through chromedriver (WebDriver),
//!   for end-to-end tests of the web console;
//! * [`unique_prefix`]: a random subject prefix, so tests share nothing.
//!
//! Child processes write to log files (never to the test's pipes), die with the test process,
//! and are killed when their handle drops.

#![allow(unsafe_code)] // pre_exec for the parent-death signal and dropping root for PostgreSQL.

pub mod browser;
pub mod fixtures;
pub mod flaky;
pub mod fuzz;
pub mod graph;
pub mod kik;
pub mod line;
pub mod nats;
pub mod postgres;
pub mod process;
pub mod telegram;
pub mod tenant;
pub mod viber;
pub mod wechat;

use std::path::PathBuf;
use std::time::Duration;

/// A random subject prefix such as `t4k2m9x0qa1`.
pub fn unique_prefix() -> String {
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes).unwrap_or_default();
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = bytes
        .iter()
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect();
    format!("t{tail}")
}

/// The workspace root (where `.tools/` lives).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// Errors starting test servers.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// A binary was not found.
    #[error("{0} not found: run `make tools` (or set {1})")]
    Missing(&'static str, &'static str),
    /// A server did not come up.
    #[error("{0}")]
    Start(String),
    /// I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Polls `check` every 20 ms until it returns `Some`, or fails after `timeout` with `what`.
/// This waits for a condition; it never sleeps a fixed time and hopes. A check that does not
/// answer is bounded too: one still running at the deadline is dropped and the wait fails.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for {what} (the last check had not answered)"
            ),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The HTTP client of a test harness: every request is bounded (5 s to connect, 30 s in all),
/// so a server that takes a connection and never answers fails the test instead of hanging it.
pub fn http_client() -> reqwest::Client {
    http_client_builder()
        .build()
        .expect("an HTTP client with the default TLS stack")
}

/// [`http_client`]'s settings, for a harness that needs more (cookies, redirects).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
}
