//! `ingress-messenger`: receives Messenger webhooks on `POST /webhooks/messenger/{channel_id}`
//! (or, for one callback URL per Meta app, `POST /webhooks/messenger`, routed by Page id),
//! answers Meta's `hub.*` handshake on `GET` of the same paths, checks
//! `X-Hub-Signature-256` with the app secret, and publishes each `messaging` event to
//! `<p>.ingress.messenger.<channel>` keyed by its `mid`. Stateless.

use futures::future::BoxFuture;
use patchbay_runtime::{BoxError, Deps, Service};

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        patchbay_platform::ingress::service::<patchbay_messenger::Messenger>(
            "ingress-messenger",
            &deps,
        )
    })
}
