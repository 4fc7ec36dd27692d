//! `outbound-viber`: consumes `<p>.outbound.viber.>`, sends through Viber's REST bot API (the
//! channel's `api_base_url` or `PATCHBAY_VIBER_API_BASE_URL`) with `send_message`, and
//! reports each result on `<p>.status.<bot>`. It also keeps every enabled Viber channel's
//! webhook set at Viber (`set_webhook` with `<PATCHBAY_PUBLIC_URL>/webhooks/viber/<channel>`,
//! read back and logged) and removes it when the channel is disabled or deleted
//! (`patchbay_viber::setup`). The only service that calls Viber with a bot's auth token.

use std::time::Duration;

use futures::future::BoxFuture;
use patchbay_runtime::{BoxError, Deps, Service};
use patchbay_viber::ViberSender;
use patchbay_viber::setup::Configurator;

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let c = &deps.config;
        let timeout = Duration::from_millis(c.outbound_timeout_ms);
        let sender = ViberSender::new(
            &c.viber_api_base_url,
            timeout,
            patchbay_platform::Limits {
                per_channel_per_second: c.viber_per_bot_per_second,
                per_conversation_per_second: c.viber_per_user_per_second,
                per_conversation_burst: c.viber_per_user_burst,
            },
            Some(deps.view.clone()),
        )?;
        let configurator = Configurator::new(
            patchbay_viber::setup::ViberSetup,
            deps.view.clone(),
            patchbay_bus::SetupLog::open(&deps.bus).await?,
            c.require_master_key()?,
            timeout,
            &c.viber_api_base_url,
            &c.public_url,
        )?;
        let service = patchbay_platform::outbound::service("outbound-viber", &deps, sender).await?;
        Ok(service.task(configurator.run(deps.shutdown.clone())))
    })
}
