//! The bot's webhook at Viber (`reference/platforms.md` §7.1): `set_webhook` with
//! `{"url": <webhook>, "event_types": [...], "send_name": true, "send_photo": true}` tells
//! Viber where to post the bot's callbacks; `get_account_info` reads it back (`webhook`).
//! During `set_webhook` Viber posts a `webhook` check callback to the URL and fails the call
//! unless it gets 200: the ingress answers it once the channel is in its config view (a
//! channel the ingress does not know yet answers 404, and the attempt is tried again).
//!
//! [`Configurator`] runs [`ViberSetup`] in `outbound-viber` (the only service that calls Viber
//! with a bot's token; `patchbay_platform::setup` says when and how it retries): it reads the
//! bot's account and, unless its webhook is already
//! `<PATCHBAY_PUBLIC_URL>/webhooks/viber/<channel id>`, sets it (with every event type
//! Patchbay handles: [`EVENT_TYPES`]; `message` events cannot be filtered out) and reads it
//! back. When a channel is disabled or deleted (it leaves the view), it removes the webhook
//! (`set_webhook` with `"url": ""`) with the credentials it opened before, so Viber stops
//! posting. A failed check callback is tried again. Outcomes are counted in
//! `patchbay_setup_total{platform="viber", outcome}`.

use patchbay_platform::SendError;
use patchbay_platform::setup::{ChannelSetup, Configured};
use serde_json::{Value, json};

use crate::ViberCredentials;
use crate::outbound::{ACCOUNT_INFO_PATH, SET_WEBHOOK_PATH, call};

/// The callbacks Patchbay asks for (`message` always comes).
pub const EVENT_TYPES: [&str; 6] = [
    "delivered",
    "seen",
    "failed",
    "subscribed",
    "unsubscribed",
    "conversation_started",
];

pub use patchbay_platform::setup::{MAX_BACKOFF, POLL, backoff};

/// The webhook URL of `channel_id`: `public_url` and the channel's webhook path.
pub fn webhook_url(public_url: &str, channel_id: &str) -> String {
    patchbay_platform::setup::webhook_url(public_url, &crate::SPEC, channel_id)
}

/// The body of `set_webhook` for `url` (`""` removes the webhook).
pub fn body(url: &str) -> Value {
    if url.is_empty() {
        return json!({ "url": "" });
    }
    json!({"url": url, "event_types": EVENT_TYPES, "send_name": true, "send_photo": true})
}

/// The webhook the account has (`get_account_info`), `""` when none.
pub async fn read(
    http: &reqwest::Client,
    base_url: &str,
    creds: &ViberCredentials,
) -> Result<String, SendError> {
    let info = call(http, base_url, creds, ACCOUNT_INFO_PATH, &json!({})).await?;
    Ok(info
        .get("webhook")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned())
}

/// `set_webhook` with `url` (`""` removes it): Viber's answer.
pub async fn write(
    http: &reqwest::Client,
    base_url: &str,
    creds: &ViberCredentials,
    url: &str,
) -> Result<Value, SendError> {
    match call(http, base_url, creds, SET_WEBHOOK_PATH, &body(url)).await {
        // The check callback failed (Viber names the URL): the ingress may not know the
        // channel yet. Tried again.
        Err(SendError::Permanent(d)) if d.platform_code == Some(1) => Err(SendError::Retryable {
            reason: d.message,
            after: None,
        }),
        other => other,
    }
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The account had the webhook already.
    Unchanged,
    /// It was set (and read back).
    Set,
}

/// Reads the account's webhook and, unless it is `url`, sets it and reads it back. A
/// read-back without it is a retryable failure.
pub async fn ensure(
    http: &reqwest::Client,
    base_url: &str,
    creds: &ViberCredentials,
    url: &str,
) -> Result<Outcome, SendError> {
    if read(http, base_url, creds).await? == url {
        return Ok(Outcome::Unchanged);
    }
    write(http, base_url, creds, url).await?;
    let back = read(http, base_url, creds).await?;
    if back == url {
        Ok(Outcome::Set)
    } else {
        Err(SendError::Retryable {
            reason: format!("Viber's webhook read back is {back:?}, not the one set"),
            after: None,
        })
    }
}

/// Viber's setup of a channel: its webhook, removed when the channel goes (run by
/// [`Configurator`] in `outbound-viber`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ViberSetup;

/// Keeps every enabled Viber channel's webhook set at Viber.
pub type Configurator = patchbay_platform::setup::Configurator<ViberSetup>;

impl ChannelSetup for ViberSetup {
    const SPEC: &'static patchbay_platform::spec::PlatformSpec = &crate::SPEC;
    const NAME: &'static str = "Viber";
    const REMOVES: bool = true;
    type Credentials = ViberCredentials;

    async fn ensure(
        &self,
        http: &reqwest::Client,
        base_url: &str,
        creds: &ViberCredentials,
        webhook: &str,
    ) -> Result<Configured, SendError> {
        let changed = ensure(http, base_url, creds, webhook).await? == Outcome::Set;
        Ok(Configured {
            changed,
            config: json!({ "webhook": webhook }),
        })
    }

    /// `set_webhook` with `""`: Viber stops posting.
    async fn remove(
        &self,
        http: &reqwest::Client,
        base_url: &str,
        creds: &ViberCredentials,
    ) -> Result<(), SendError> {
        write(http, base_url, creds, "").await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures as fx;
    use patchbay_testkit::viber::{Failure, FakeViber};
    use std::sync::{Arc, Mutex};

    fn creds() -> ViberCredentials {
        ViberCredentials {
            auth_token: fx::AUTH_TOKEN.into(),
            sender_name: None,
            sender_avatar: None,
        }
    }

    /// A webhook endpoint that answers `status` and records the signed bodies it got.
    async fn endpoint(status: u16) -> (String, Arc<Mutex<Vec<Value>>>) {
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let seen = got.clone();
        let app = axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let signed = crate::inbound::verify_signature(fx::AUTH_TOKEN, &headers, &body);
                    if signed.is_ok() {
                        seen.lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap());
                    }
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/webhooks/viber/ch_1",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, got)
    }

    #[test]
    fn the_body_names_the_url_and_events_and_empty_removes() {
        assert_eq!(
            webhook_url("https://pb.example/", "ch_1"),
            "https://pb.example/webhooks/viber/ch_1"
        );
        assert_eq!(
            body("https://pb.example/webhooks/viber/ch_1"),
            json!({"url": "https://pb.example/webhooks/viber/ch_1",
                   "event_types": ["delivered", "seen", "failed", "subscribed", "unsubscribed",
                                   "conversation_started"],
                   "send_name": true, "send_photo": true})
        );
        assert_eq!(body(""), json!({"url": ""}));
        let waits: Vec<u64> = (0..12).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[tokio::test]
    async fn ensure_sets_after_the_check_callback_reads_back_and_then_leaves_it_alone() {
        let viber = FakeViber::start().await;
        viber.add_bot(fx::AUTH_TOKEN, "Shop");
        let (hook, got) = endpoint(200).await;
        let http = patchbay_platform::http::client_builder(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        let base = viber.base_url();
        assert_eq!(
            ensure(&http, &base, &creds(), &hook).await.unwrap(),
            Outcome::Set
        );
        assert_eq!(
            viber.webhook(fx::AUTH_TOKEN).as_deref(),
            Some(hook.as_str())
        );
        let checks = got.lock().unwrap().clone();
        assert_eq!(checks.len(), 1, "one signed check callback");
        assert_eq!(checks[0]["event"], "webhook");
        let paths: Vec<String> = viber.calls().into_iter().map(|c| c.path).collect();
        assert_eq!(
            paths,
            [ACCOUNT_INFO_PATH, SET_WEBHOOK_PATH, ACCOUNT_INFO_PATH]
        );
        assert_eq!(viber.calls_to(SET_WEBHOOK_PATH)[0].body, body(&hook));
        assert_eq!(
            ensure(&http, &base, &creds(), &hook).await.unwrap(),
            Outcome::Unchanged
        );
        assert_eq!(viber.calls().len(), 4, "one read only");

        write(&http, &base, &creds(), "").await.unwrap();
        assert_eq!(viber.webhook(fx::AUTH_TOKEN).as_deref(), Some(""));

        // An endpoint that does not answer 200: Viber refuses (status 1), tried again.
        let (refusing, _) = endpoint(404).await;
        let e = ensure(&http, &base, &creds(), &refusing).await.unwrap_err();
        assert!(matches!(e, SendError::Retryable { .. }), "{e:?}");
        viber.fail_next(SET_WEBHOOK_PATH, [Failure::Http(503)]);
        let e = ensure(&http, &base, &creds(), &hook).await.unwrap_err();
        assert!(matches!(e, SendError::Retryable { .. }), "{e:?}");
        let wrong = ViberCredentials {
            auth_token: "wrong".into(),
            ..creds()
        };
        let Err(SendError::Permanent(d)) = ensure(&http, &base, &wrong, &hook).await else {
            panic!("refusal expected");
        };
        assert_eq!(
            (d.code.as_str(), d.platform_code),
            ("unauthorized", Some(2))
        );
    }
}
