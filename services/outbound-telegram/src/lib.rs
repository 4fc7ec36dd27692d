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
        let sender = TelegramSender::new(
            &deps.config.telegram_api_base_url,
            Duration::from_millis(deps.config.outbound_timeout_ms),
        )?;
        patchbay_platform::outbound::service("outbound-telegram", &deps, sender).await
    })
}
