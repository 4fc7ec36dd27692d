//! Outbound custom-channel messages. The app renders the content union itself, so every kind
//! but WhatsApp templates is shown as is. Each message is
//!
//! 1. announced on `<p>.custom.replies.<channel>.<user>` (core NATS), where a request of
//!    `ingress-custom` waiting for the bot's replies to the user picks it up, and
//! 2. pushed to the channel's event webhook, when it has one: `POST` of a
//!    [`CustomReply`] signed per Standard Webhooks with the channel's `event_webhook_secret`
//!    (`webhook-id` = the message id), with `X-Patchbay-Source` (`bot`, `human`,
//!    `broadcast`) and `X-Patchbay-Source-Id` (the bot's, agent's or broadcast's id).
//!
//! | push answer | outcome |
//! |---|---|
//! | 2xx | sent |
//! | 408, 429 (with `Retry-After`), 5xx, timeout, connection error | retried |
//! | other 4xx | failed, `event_webhook_refused`, the status as the platform code |
//! | a loopback or private address (unless allowed) | failed, `event_webhook_refused` |

use crate::credentials::CustomCredentials;
use patchbay_contract::{CustomReply, OutboundJob, Platform, SendSource, Subjects, V1};
use patchbay_platform::{
    Capabilities, Limits, OutboundAdapter, SendError, Sent, Support, Target, webhook,
};

/// The `X-Patchbay-Source` header.
pub const SOURCE_HEADER: &str = "x-patchbay-source";
/// The `X-Patchbay-Source-Id` header.
pub const SOURCE_ID_HEADER: &str = "x-patchbay-source-id";

/// What a custom channel shows: everything but templates.
pub fn capabilities() -> Capabilities {
    Capabilities {
        media: |_| Support::Native,
        buttons: Support::Native,
        quick_replies: Support::Native,
        carousel: Support::Native,
        template: Support::Unsupported,
    }
}

/// The custom channels' sender.
pub struct CustomSender {
    nats: async_nats::Client,
    subjects: Subjects,
    http: reqwest::Client,
    allow_private: bool,
    caps: Capabilities,
}

impl CustomSender {
    /// A sender announcing on `nats` and pushing with `http` (a
    /// [`webhook::tenant_client`]).
    pub fn new(
        nats: async_nats::Client,
        subjects: Subjects,
        http: reqwest::Client,
        allow_private: bool,
    ) -> Self {
        Self {
            nats,
            subjects,
            http,
            allow_private,
            caps: capabilities(),
        }
    }
}

/// The reply as announced and pushed.
pub fn reply_of(job: &OutboundJob) -> CustomReply {
    let source = match job.source {
        SendSource::Human => "human",
        SendSource::Broadcast => "broadcast",
        SendSource::Api | SendSource::Inline | SendSource::Internal => "bot",
    };
    CustomReply {
        v: V1,
        id: job.message_id.clone(),
        channel_id: job.channel.id.clone(),
        user_id: job.user_id.clone(),
        platform_user_id: job.address.clone(),
        conversation_id: job.conversation_id.clone(),
        content: job.content.clone(),
        source: source.to_owned(),
        source_id: job.source_id.clone().unwrap_or_else(|| job.bot_id.clone()),
        in_reply_to: job.in_reply_to.clone(),
        created_at: job.created_at,
    }
}

impl CustomSender {
    async fn push(
        &self,
        creds: &CustomCredentials,
        url: &str,
        reply: &CustomReply,
        body: Vec<u8>,
    ) -> Result<(), SendError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            SendError::permanent(
                "event_webhook_refused",
                format!("event webhook URL: {e}"),
                None,
            )
        })?;
        if let Some(why) = webhook::refused_literal(&parsed, self.allow_private) {
            return Err(SendError::permanent(
                "event_webhook_refused",
                format!("event webhook refused: {why}"),
                None,
            ));
        }
        let ts = chrono::Utc::now().timestamp();
        let signature = webhook::sign(&creds.event_webhook_secret, &reply.id, ts, &body)
            .map_err(|e| SendError::permanent("channel_misconfigured", e.to_string(), None))?;
        let mut request = self
            .http
            .post(parsed)
            .headers(patchbay_platform::http::trace_headers())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &reply.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .header(SOURCE_HEADER, &reply.source)
            .header(SOURCE_ID_HEADER, &reply.source_id);
        match (creds.flavour, &creds.verification_key) {
            (Some(crate::CustomFlavour::Botdistrikt), _) => {
                // BotDistrikt's names for the same: clients written for it read these.
                request = request
                    .header(crate::botdistrikt::SOURCE_HEADER, &reply.source)
                    .header(crate::botdistrikt::SOURCE_ID_HEADER, &reply.source_id);
            }
            (Some(crate::CustomFlavour::Uchat), Some(key)) => {
                request = request.header(
                    crate::uchat::SIGNATURE_HEADER,
                    crate::uchat::signature(key, &body),
                );
            }
            _ => {}
        }
        let answer = request
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Retryable {
                reason: format!("event webhook: {}", e.without_url()),
                after: None,
            })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let code = status.as_u16();
        if code == 408 || code == 429 || status.is_server_error() {
            return Err(SendError::Retryable {
                reason: format!("event webhook answered {code}"),
                after: webhook::retry_after(answer.headers()),
            });
        }
        Err(SendError::permanent(
            "event_webhook_refused",
            format!("the channel's event webhook answered {code}"),
            Some(i64::from(code)),
        ))
    }
}

impl OutboundAdapter for CustomSender {
    const PLATFORM: Platform = Platform::Custom;
    type Credentials = CustomCredentials;

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn default_base_url(&self) -> &str {
        ""
    }

    fn limits(&self) -> Limits {
        Limits {
            per_channel_per_second: 500,
            per_conversation_per_second: 20,
            per_conversation_burst: 20,
        }
    }

    async fn send(
        &self,
        target: Target<'_, CustomCredentials>,
        job: &OutboundJob,
    ) -> Result<Sent, SendError> {
        patchbay_platform::degrade(&job.content, &self.caps, "custom channel")
            .map_err(SendError::Permanent)?;
        let reply = reply_of(job);
        let body = serde_json::to_vec(&reply)
            .map_err(|e| SendError::permanent("invalid_request", e.to_string(), None))?;
        // A request waiting for this user's replies, if any; announcing twice (on a retry)
        // is harmless, waiters keep each message id once.
        match self.subjects.custom_replies(&job.channel.id, &job.user_id) {
            Ok(subject) => {
                if let Err(e) = self.nats.publish(subject, body.clone().into()).await {
                    tracing::debug!(error = %e, "reply not announced");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reply subject"),
        }
        if let Some(url) = &target.credentials.event_webhook_url {
            // UChat's API chat webhook takes its own shapes.
            let body = if target.credentials.flavour == Some(crate::CustomFlavour::Uchat) {
                serde_json::to_vec(&crate::uchat::webhook_body(&reply))
                    .map_err(|e| SendError::permanent("invalid_request", e.to_string(), None))?
            } else {
                body
            };
            self.push(target.credentials, url, &reply, body).await?;
        }
        Ok(Sent {
            platform_message_id: Some(job.message_id.clone()),
            media_reference: None,
        })
    }
}
