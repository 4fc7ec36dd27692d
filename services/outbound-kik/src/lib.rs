//! `outbound-kik`: consumes `<p>.outbound.kik.>`, sends through Kik's message API (the
//! channel's `api_base_url` or `PATCHBAY_KIK_API_BASE_URL`) in batches of at most 25 messages
//! and 5 per user, and reports each result on `<p>.status.<bot>`. It also keeps every enabled
//! Kik channel's bot configured at Kik (`POST /v1/config`: the webhook
//! `<PATCHBAY_PUBLIC_URL>/webhooks/kik/<channel>` and the receipt features, read back and
//! logged; `patchbay_kik::setup`). The only service that calls Kik with a bot's API key.

use std::time::Duration;

use futures::future::BoxFuture;
use patchbay_kik::KikSender;
use patchbay_kik::setup::Configurator;
use patchbay_runtime::{BoxError, Deps, Service};

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let c = &deps.config;
        let timeout = Duration::from_millis(c.outbound_timeout_ms);
        let sender = KikSender::new(
            &c.kik_api_base_url,
            timeout,
            patchbay_platform::Limits {
                per_channel_per_second: c.kik_per_bot_per_second,
                per_conversation_per_second: c.kik_per_user_per_second,
                per_conversation_burst: c.kik_per_user_burst,
            },
        )?;
        let configurator = Configurator::new(
            patchbay_kik::setup::KikSetup,
            deps.view.clone(),
            patchbay_bus::SetupLog::open(&deps.bus).await?,
            c.require_master_key()?,
            timeout,
            &c.kik_api_base_url,
            &c.public_url,
        )?;
        let service = patchbay_platform::outbound::service("outbound-kik", &deps, sender).await?;
        Ok(service.task(configurator.run(deps.shutdown.clone())))
    })
}
