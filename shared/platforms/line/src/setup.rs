//! The channel at LINE (`reference/platforms.md` §6.1): its webhook URL, and the bot's user id,
//! which LINE posts as every webhook's `destination`.
//!
//! [`LineSetup`] runs in `outbound-line` (the only service that calls LINE with a channel's
//! access token; `patchbay_platform::setup::Configurator` says when and how it retries): it
//! reads the bot's account (`GET /v2/bot/info`: `userId`, `basicId`, `displayName`) and the
//! channel's webhook (`GET /v2/bot/channel/webhook/endpoint`), and unless the webhook is already
//! `<PATCHBAY_PUBLIC_URL>/webhooks/line/<channel id>`, sets it (`PUT` with `{"endpoint"}`) and
//! reads it back. The channel's `setup.platform_config` then shows `webhook`, `active` (LINE's
//! "Use webhook" switch, which only the console turns on: `false` means LINE posts nothing) and
//! the bot's `bot_user_id`, `basic_id` and `display_name`; `ingress-line` compares each
//! webhook's `destination` with `bot_user_id` ([`route_of_setup`]). LINE cannot unset a
//! webhook URL, so a disabled channel's stays (its webhooks answer 404).

use patchbay_platform::SendError;
use patchbay_platform::setup::{ChannelSetup, Configured};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::LineCredentials;
use crate::outbound::{api_url, call, classify};

/// The bot's account.
pub const BOT_INFO_PATH: &str = "/v2/bot/info";
/// The channel's webhook URL.
pub const WEBHOOK_ENDPOINT_PATH: &str = "/v2/bot/channel/webhook/endpoint";

/// The bot's account as `GET /v2/bot/info` answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BotInfo {
    /// The bot's user id: the `destination` of its webhooks.
    pub user_id: String,
    /// `@…`, what users search for.
    #[serde(default)]
    pub basic_id: Option<String>,
    /// The bot's name.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// The channel's webhook as `GET /v2/bot/channel/webhook/endpoint` answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Endpoint {
    /// The URL (empty when none).
    #[serde(default)]
    pub endpoint: String,
    /// "Use webhook" is on.
    #[serde(default)]
    pub active: bool,
}

async fn get<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    base_url: &str,
    creds: &LineCredentials,
    path: &str,
) -> Result<T, SendError> {
    let answer = call(http.get(api_url(base_url, path)?), creds, path).await?;
    if answer.status != 200 {
        return Err(classify(answer.status, answer.after, &answer.body));
    }
    serde_json::from_slice(&answer.body).map_err(|e| {
        SendError::permanent(
            "platform_error",
            format!("LINE's answer to {path} is not what it documents: {e}"),
            None,
        )
    })
}

/// `PUT /v2/bot/channel/webhook/endpoint` with `webhook`.
async fn put_endpoint(
    http: &reqwest::Client,
    base_url: &str,
    creds: &LineCredentials,
    webhook: &str,
) -> Result<(), SendError> {
    let request = http
        .put(api_url(base_url, WEBHOOK_ENDPOINT_PATH)?)
        .json(&json!({ "endpoint": webhook }));
    let answer = call(request, creds, WEBHOOK_ENDPOINT_PATH).await?;
    if answer.status == 200 {
        Ok(())
    } else {
        Err(classify(answer.status, answer.after, &answer.body))
    }
}

/// What Patchbay records of the channel at LINE.
fn config(info: &BotInfo, endpoint: &Endpoint) -> Value {
    json!({
        "webhook": endpoint.endpoint,
        "active": endpoint.active,
        "bot_user_id": info.user_id,
        "basic_id": info.basic_id,
        "display_name": info.display_name,
    })
}

/// The bot's user id a channel's setup record holds (`platform_config.bot_user_id`): the
/// `destination` its webhooks must carry.
pub fn route_of_setup(platform_config: &Value) -> Option<String> {
    platform_config
        .get("bot_user_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// LINE's setup of a channel (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct LineSetup;

/// Keeps every enabled LINE channel's webhook set at LINE and learns its bot's user id.
pub type Configurator = patchbay_platform::setup::Configurator<LineSetup>;

impl ChannelSetup for LineSetup {
    const SPEC: &'static patchbay_platform::spec::PlatformSpec = &crate::SPEC;
    const NAME: &'static str = "LINE";
    type Credentials = LineCredentials;

    async fn ensure(
        &self,
        http: &reqwest::Client,
        base_url: &str,
        creds: &LineCredentials,
        webhook: &str,
    ) -> Result<Configured, SendError> {
        let info: BotInfo = get(http, base_url, creds, BOT_INFO_PATH).await?;
        let found: Endpoint = get(http, base_url, creds, WEBHOOK_ENDPOINT_PATH).await?;
        if found.endpoint == webhook {
            return Ok(Configured {
                changed: false,
                config: config(&info, &found),
            });
        }
        put_endpoint(http, base_url, creds, webhook).await?;
        let back: Endpoint = get(http, base_url, creds, WEBHOOK_ENDPOINT_PATH).await?;
        if back.endpoint != webhook {
            return Err(SendError::Retryable {
                reason: format!(
                    "LINE's webhook read back is {:?}, not the one set",
                    back.endpoint
                ),
                after: None,
            });
        }
        if !back.active {
            tracing::warn!(bot_user_id = %info.user_id,
                "LINE's \"Use webhook\" is off for this channel: switch it on in the LINE Developers Console");
        }
        Ok(Configured {
            changed: true,
            config: config(&info, &back),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures as fx;
    use patchbay_testkit::line::{Failure, FakeLine};

    fn creds(token: &str) -> LineCredentials {
        LineCredentials {
            channel_secret: "secret".into(),
            channel_access_token: token.into(),
        }
    }

    const HOOK: &str = "https://pb.example/webhooks/line/ch_1";

    #[test]
    fn the_fakes_bot_is_the_fixtures_destination() {
        assert_eq!(patchbay_testkit::line::BOT_USER_ID, fx::BOT_USER_ID);
        assert_eq!(
            route_of_setup(&json!({"bot_user_id": "U1", "webhook": HOOK})).as_deref(),
            Some("U1")
        );
        assert_eq!(route_of_setup(&json!({"webhook": HOOK})), None);
        assert_eq!(route_of_setup(&json!({"bot_user_id": ""})), None);
    }

    #[tokio::test]
    async fn ensure_sets_the_webhook_reads_it_back_learns_the_bot_and_then_leaves_it_alone() {
        let line = FakeLine::start().await;
        line.add_channel_as("tok", "U0123456789abcdef0123456789abcdef");
        let http = patchbay_platform::http::client_builder(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        let base = line.base_url();
        let set = LineSetup
            .ensure(&http, &base, &creds("tok"), HOOK)
            .await
            .unwrap();
        assert!(set.changed);
        assert_eq!(set.config["webhook"], HOOK);
        assert_eq!(set.config["active"], true);
        assert_eq!(
            set.config["bot_user_id"],
            "U0123456789abcdef0123456789abcdef"
        );
        assert_eq!(line.webhook("tok").as_deref(), Some(HOOK));
        let puts = line.calls_to(WEBHOOK_ENDPOINT_PATH);
        assert_eq!(
            puts.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(),
            ["GET", "PUT", "GET"]
        );
        assert_eq!(puts[1].body, json!({ "endpoint": HOOK }));
        let again = LineSetup
            .ensure(&http, &base, &creds("tok"), HOOK)
            .await
            .unwrap();
        assert!(!again.changed);
        assert_eq!(
            line.calls_to(WEBHOOK_ENDPOINT_PATH).len(),
            4,
            "one read only"
        );

        // The console's switch off: recorded, not an error.
        line.switch_webhook_off("tok");
        let off = LineSetup
            .ensure(&http, &base, &creds("tok"), HOOK)
            .await
            .unwrap();
        assert_eq!(off.config["active"], false);

        // LINE busy: tried again; a wrong token: refused.
        line.fail_next(BOT_INFO_PATH, [Failure::ServerError]);
        let e = LineSetup
            .ensure(&http, &base, &creds("tok"), HOOK)
            .await
            .unwrap_err();
        assert!(matches!(e, SendError::Retryable { .. }), "{e:?}");
        let Err(SendError::Permanent(d)) =
            LineSetup.ensure(&http, &base, &creds("wrong"), HOOK).await
        else {
            panic!("refusal expected");
        };
        assert_eq!(d.code, "unauthorized", "{d:?}");
    }
}
