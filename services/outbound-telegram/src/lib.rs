//! `outbound-telegram`: consumes `<p>.outbound.telegram.>`, calls the Bot API (the channel's
//! `api_base_url` or `PATCHBAY_TELEGRAM_API_BASE_URL`), and reports each result on
//! `<p>.status.<bot>`. The only service that opens bot tokens.

use std::time::Duration;

use futures::future::BoxFuture;
use patchbay_runtime::{BoxError, Deps, Service};
use patchbay_telegram::TelegramSender;

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let c = &deps.config;
        let sender = TelegramSender::new(
            &c.telegram_api_base_url,
            Duration::from_millis(c.outbound_timeout_ms),
            patchbay_platform::Limits {
                per_channel_per_second: c.telegram_per_bot_per_second,
                per_conversation_per_second: c.telegram_per_chat_per_second,
                per_conversation_burst: c.telegram_per_chat_burst,
            },
        )?;
        patchbay_platform::outbound::service("outbound-telegram", &deps, sender).await
    })
}
