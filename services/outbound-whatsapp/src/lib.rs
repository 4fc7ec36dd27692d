//! `outbound-whatsapp`: consumes `<p>.outbound.whatsapp.>`, calls the Cloud API (the
//! channel's `api_base_url` or `PATCHBAY_WHATSAPP_API_BASE_URL`) with the access token, and
//! reports each result on `<p>.status.<bot>`. Delivery and read reports, and most failures,
//! arrive later as webhook statuses (see `ingress-whatsapp`).

use std::time::Duration;

use futures::future::BoxFuture;
use patchbay_runtime::{BoxError, Deps, Service};
use patchbay_whatsapp::WhatsappSender;

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let c = &deps.config;
        let sender = WhatsappSender::new(
            &c.whatsapp_api_base_url,
            Duration::from_millis(c.outbound_timeout_ms),
            patchbay_platform::Limits {
                per_channel_per_second: c.whatsapp_per_number_per_second,
                per_conversation_per_second: c.whatsapp_per_user_per_second,
                per_conversation_burst: c.whatsapp_per_user_burst,
            },
        )?;
        patchbay_platform::outbound::service("outbound-whatsapp", &deps, sender).await
    })
}
