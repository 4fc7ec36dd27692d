//! `outbound-line`: consumes `<p>.outbound.line.>`, sends through LINE's Messaging API (the
//! channel's `api_base_url` or `PATCHBAY_LINE_API_BASE_URL`): an inline reply with the reply
//! API while the event's reply token (kept by `ingress-line` in the `<p>_replies` bucket) is
//! fresh and unused, everything else with the push API and an `X-Line-Retry-Key` derived from
//! the message id, at most 5 messages per call; and reports each result on `<p>.status.<bot>`.
//! It also keeps every enabled LINE channel's webhook set at LINE and learns its bot's user id
//! (`patchbay_line::setup`), which `ingress-line` compares with each webhook's `destination`.

use std::time::Duration;

use futures::future::BoxFuture;
use patchbay_line::LineSender;
use patchbay_platform::replies::Replies;
use patchbay_runtime::{BoxError, Deps, Service};

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let c = &deps.config;
        let timeout = Duration::from_millis(c.outbound_timeout_ms);
        let replies = Replies::open(&deps.bus).await?;
        let sender = LineSender::new(
            &c.line_api_base_url,
            timeout,
            patchbay_platform::Limits {
                per_channel_per_second: c.line_per_channel_per_second,
                per_conversation_per_second: c.line_per_user_per_second,
                per_conversation_burst: c.line_per_user_burst,
            },
        )?
        .with_replies(replies);
        let configurator = patchbay_line::setup::Configurator::new(
            patchbay_line::setup::LineSetup,
            deps.view.clone(),
            patchbay_bus::SetupLog::open(&deps.bus).await?,
            c.require_master_key()?,
            timeout,
            &c.line_api_base_url,
            &c.public_url,
        )?;
        let service = patchbay_platform::outbound::service("outbound-line", &deps, sender).await?;
        Ok(service.task(configurator.run(deps.shutdown.clone())))
    })
}
