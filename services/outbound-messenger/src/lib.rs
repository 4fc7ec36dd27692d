//! `outbound-messenger`: consumes `<p>.outbound.messenger.>`, calls the Send API (the
//! channel's `api_base_url` or `PATCHBAY_MESSENGER_API_BASE_URL`) with the Page access token,
//! and reports each result on `<p>.status.<bot>`. With `ingress-messenger`, the only service
//! that opens Page tokens.

use std::time::Duration;

use futures::future::BoxFuture;
use patchbay_messenger::MessengerSender;
use patchbay_runtime::{BoxError, Deps, Service};

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let c = &deps.config;
        let sender = MessengerSender::new(
            &c.messenger_api_base_url,
            Duration::from_millis(c.outbound_timeout_ms),
            patchbay_platform::Limits {
                per_channel_per_second: c.messenger_per_page_per_second,
                per_conversation_per_second: c.messenger_per_user_per_second,
                per_conversation_burst: c.messenger_per_user_burst,
            },
        )?;
        patchbay_platform::outbound::service("outbound-messenger", &deps, sender).await
    })
}
