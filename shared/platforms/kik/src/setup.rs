//! The bot's configuration at Kik (`reference/platforms.md` §5.1): `POST <base>/v1/config`
//! `{"webhook": <url>, "features": {...}, "staticKeyboard"?: {...}}` tells Kik where to post
//! the bot's messages and what to send; `GET <base>/v1/config` reads it back. Kik has no
//! webhook handshake: this call is what connects a bot.
//!
//! [`Configurator`] runs [`KikSetup`] in `outbound-kik` (the only service that opens Kik
//! credentials to call Kik; `patchbay_platform::setup` says when and how it retries): it reads
//! the bot's configuration and, when the webhook or a feature differs from what Patchbay needs,
//! sets it and reads it back. The webhook is `<PATCHBAY_PUBLIC_URL>/webhooks/kik/<channel id>`;
//! the features:
//!
//! | feature | value | why |
//! |---|---|---|
//! | `receiveReadReceipts` | `true` | they become `message.read` |
//! | `receiveDeliveryReceipts` | `true` | they become `message.delivered` |
//! | `receiveIsTyping` | `false` | Patchbay ignores typing |
//! | `manuallySendReadReceipts` | `false` | Kik marks the user's messages read itself |
//!
//! A static keyboard the bot already has is kept. The outcome is logged (with the configuration
//! Kik read back), counted in `patchbay_setup_total{platform="kik", outcome}` and recorded in
//! the `<p>_setup` bucket, where `GET /admin/v1/bots/{bot_id}/channels/{channel_id}` shows it as
//! the channel's `setup` (`configured` with Kik's read-back, `retrying`, `refused`).

use patchbay_platform::SendError;
use patchbay_platform::setup::{ChannelSetup, Configured};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::KikCredentials;
use crate::outbound::{api_url, call};

/// The configuration endpoint.
pub const CONFIG_PATH: &str = "/v1/config";

/// Kik's feature flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    /// Kik posts `read-receipt` messages.
    pub receive_read_receipts: bool,
    /// Kik posts `delivery-receipt` messages.
    pub receive_delivery_receipts: bool,
    /// Kik posts `is-typing` messages.
    pub receive_is_typing: bool,
    /// The bot sends read receipts itself (else Kik does).
    pub manually_send_read_receipts: bool,
}

/// The features Patchbay sets.
pub const FEATURES: Features = Features {
    receive_read_receipts: true,
    receive_delivery_receipts: true,
    receive_is_typing: false,
    manually_send_read_receipts: false,
};

pub use patchbay_platform::setup::{MAX_BACKOFF, POLL, backoff};

/// The webhook URL of `channel_id`: `public_url` and the channel's webhook path.
pub fn webhook_url(public_url: &str, channel_id: &str) -> String {
    patchbay_platform::setup::webhook_url(public_url, &crate::SPEC, channel_id)
}

/// The body of `POST /v1/config` for `webhook`, keeping `static_keyboard` when there is one.
pub fn body(webhook: &str, static_keyboard: Option<&Value>) -> Value {
    let mut b = json!({"webhook": webhook, "features": FEATURES});
    if let Some(k) = static_keyboard.filter(|k| !k.is_null()) {
        b["staticKeyboard"] = k.clone();
    }
    b
}

/// Whether Kik's configuration `found` has `webhook` and every feature Patchbay sets.
pub fn is_set(found: &Value, webhook: &str) -> bool {
    let Ok(Value::Object(want)) = serde_json::to_value(FEATURES) else {
        return false;
    };
    found.get("webhook").and_then(Value::as_str) == Some(webhook)
        && want
            .iter()
            .all(|(k, v)| found.pointer(&format!("/features/{k}")) == Some(v))
}

fn parse(body: &[u8], what: &str) -> Result<Value, SendError> {
    serde_json::from_slice(body).map_err(|_| {
        SendError::permanent(
            "platform_error",
            format!("Kik's answer ({what}) is not JSON"),
            None,
        )
    })
}

/// `GET /v1/config`: the bot's configuration as Kik has it.
pub async fn read(
    http: &reqwest::Client,
    base_url: &str,
    creds: &KikCredentials,
) -> Result<Value, SendError> {
    let url = api_url(base_url, CONFIG_PATH)?;
    parse(&call(http.get(url), creds, "config").await?, "config")
}

/// `POST /v1/config` with `body`: the configuration as Kik confirms it.
pub async fn write(
    http: &reqwest::Client,
    base_url: &str,
    creds: &KikCredentials,
    body: &Value,
) -> Result<Value, SendError> {
    let url = api_url(base_url, CONFIG_PATH)?;
    parse(
        &call(http.post(url).json(body), creds, "config").await?,
        "config",
    )
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Kik had the configuration already (as read).
    Unchanged(Value),
    /// It was set; the configuration as read back.
    Set(Value),
}

/// Reads the bot's configuration and, unless it already has `webhook` and [`FEATURES`], sets
/// them (keeping its static keyboard) and reads it back. A read-back without them is a
/// retryable failure.
pub async fn ensure(
    http: &reqwest::Client,
    base_url: &str,
    creds: &KikCredentials,
    webhook: &str,
) -> Result<Outcome, SendError> {
    let found = match read(http, base_url, creds).await {
        Ok(found) => Some(found),
        // Nothing to keep, but the write may still work (a bot never configured).
        Err(SendError::Permanent(e)) if e.code != "unauthorized" => None,
        Err(e) => return Err(e),
    };
    if let Some(found) = &found
        && is_set(found, webhook)
    {
        return Ok(Outcome::Unchanged(found.clone()));
    }
    let keyboard = found.as_ref().and_then(|f| f.get("staticKeyboard"));
    write(http, base_url, creds, &body(webhook, keyboard)).await?;
    let back = read(http, base_url, creds).await?;
    if is_set(&back, webhook) {
        Ok(Outcome::Set(back))
    } else {
        Err(SendError::Retryable {
            reason: format!("Kik's configuration read back is not the one set: {back}"),
            after: None,
        })
    }
}

/// Kik's setup of a channel: the bot's webhook and features (run by [`Configurator`] in
/// `outbound-kik`).
#[derive(Debug, Clone, Copy, Default)]
pub struct KikSetup;

/// Keeps every enabled Kik channel's bot configured at Kik.
pub type Configurator = patchbay_platform::setup::Configurator<KikSetup>;

impl ChannelSetup for KikSetup {
    const SPEC: &'static patchbay_platform::spec::PlatformSpec = &crate::SPEC;
    const NAME: &'static str = "Kik";
    type Credentials = KikCredentials;

    async fn ensure(
        &self,
        http: &reqwest::Client,
        base_url: &str,
        creds: &KikCredentials,
        webhook: &str,
    ) -> Result<Configured, SendError> {
        Ok(match ensure(http, base_url, creds, webhook).await? {
            Outcome::Unchanged(config) => Configured {
                changed: false,
                config,
            },
            Outcome::Set(config) => Configured {
                changed: true,
                config,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures as fx;
    use patchbay_testkit::kik::{Failure, FakeKik};

    fn creds() -> KikCredentials {
        KikCredentials {
            username: fx::BOT.into(),
            api_key: fx::API_KEY.into(),
        }
    }

    const HOOK: &str = "https://pb.example/webhooks/kik/ch_1";

    #[test]
    fn the_body_names_the_webhook_and_features_and_keeps_a_static_keyboard() {
        assert_eq!(webhook_url("https://pb.example/", "ch_1"), HOOK);
        let features = json!({"receiveReadReceipts": true, "receiveDeliveryReceipts": true,
                              "receiveIsTyping": false, "manuallySendReadReceipts": false});
        assert_eq!(
            body(HOOK, None),
            json!({"webhook": HOOK, "features": features})
        );
        let keyboard =
            json!({"type": "suggested", "responses": [{"type": "text", "body": "Menu"}]});
        assert_eq!(body(HOOK, Some(&keyboard))["staticKeyboard"], keyboard);
        assert!(
            body(HOOK, Some(&Value::Null))
                .get("staticKeyboard")
                .is_none()
        );

        assert!(is_set(&body(HOOK, None), HOOK));
        assert!(!is_set(
            &body(HOOK, None),
            "https://elsewhere/webhooks/kik/ch_1"
        ));
        let mut typing = body(HOOK, None);
        typing["features"]["receiveIsTyping"] = json!(true);
        assert!(!is_set(&typing, HOOK));
        assert!(!is_set(&json!({"webhook": HOOK}), HOOK), "features missing");
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let waits: Vec<u64> = (0..12).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn ensure_sets_reads_back_and_then_leaves_it_alone() {
        let kik = FakeKik::start().await;
        kik.add_bot(fx::BOT, fx::API_KEY);
        let http = patchbay_platform::http::client_builder(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        let base = kik.base_url();
        let Outcome::Set(back) = ensure(&http, &base, &creds(), HOOK).await.unwrap() else {
            panic!("set expected");
        };
        assert!(is_set(&back, HOOK), "{back}");
        assert_eq!(kik.config(fx::BOT), Some(back.clone()));
        let calls: Vec<_> = kik
            .calls_to(CONFIG_PATH)
            .into_iter()
            .map(|c| (c.method, c.status))
            .collect();
        assert_eq!(
            calls,
            [
                ("GET".into(), 200),
                ("POST".into(), 200),
                ("GET".into(), 200)
            ]
        );
        assert_eq!(kik.calls_to(CONFIG_PATH)[1].body, body(HOOK, None));

        assert_eq!(
            ensure(&http, &base, &creds(), HOOK).await.unwrap(),
            Outcome::Unchanged(back)
        );
        assert_eq!(kik.calls_to(CONFIG_PATH).len(), 4, "one GET only");

        kik.fail_next(CONFIG_PATH, [Failure::ServerError]);
        let e = ensure(&http, &base, &creds(), "https://new/webhooks/kik/ch_1").await;
        assert!(matches!(e, Err(SendError::Retryable { .. })), "{e:?}");
        let wrong = KikCredentials {
            username: fx::BOT.into(),
            api_key: "wrong".into(),
        };
        let Err(SendError::Permanent(d)) = ensure(&http, &base, &wrong, HOOK).await else {
            panic!("refusal expected");
        };
        assert_eq!(d.code, "unauthorized");
    }
}
