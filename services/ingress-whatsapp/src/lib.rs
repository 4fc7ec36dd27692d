//! `ingress-whatsapp`: receives WhatsApp Cloud API webhooks on
//! `POST /webhooks/whatsapp/{channel_id}` (or, for one callback URL per Meta app,
//! `POST /webhooks/whatsapp`, routed by `phone_number_id`), answers Meta's `hub.*` handshake
//! on `GET` of the same paths, checks `X-Hub-Signature-256` with the app secret, and publishes
//! each message and status to `<p>.ingress.whatsapp.<channel>` keyed by its `wamid`.
//! Stateless.

use futures::future::BoxFuture;
use patchbay_runtime::{BoxError, Deps, Service};

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        patchbay_platform::ingress::service::<patchbay_whatsapp::Whatsapp>(
            "ingress-whatsapp",
            &deps,
        )
    })
}
