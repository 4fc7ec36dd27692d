//! `ingress-kik`: receives a Kik bot's webhooks on `POST /webhooks/kik/{channel_id}`, checks
//! `X-Kik-Signature` (HMAC-SHA1 of the body with the bot's API key) and `X-Kik-Username` (the
//! channel's bot), looks up the senders' names with `GET /v1/user/<username>`, and publishes
//! each message of the batch to `<p>.ingress.kik.<channel>` keyed by its `id`. Stateless.

use futures::future::BoxFuture;
use patchbay_runtime::{BoxError, Deps, Service};

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        patchbay_platform::ingress::service::<patchbay_kik::Kik>("ingress-kik", &deps)
    })
}
