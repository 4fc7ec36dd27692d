//! `ingress-telegram`: receives Telegram webhooks on `POST /webhooks/telegram/{channel_id}`,
//! checks `X-Telegram-Bot-Api-Secret-Token`, and publishes each `Update` to
//! `<p>.ingress.telegram.<channel>` keyed by `update_id`. Stateless.

use futures::future::BoxFuture;
use patchbay_runtime::{BoxError, Deps, Service};

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        patchbay_platform::ingress::service::<patchbay_telegram::Telegram>(
            "ingress-telegram",
            &deps,
        )
    })
}
