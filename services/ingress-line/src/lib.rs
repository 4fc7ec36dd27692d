//! `ingress-line`: receives a LINE channel's webhooks on `POST /webhooks/line/{channel_id}`,
//! checks `x-line-signature` (Base64 HMAC-SHA256 of the body with the channel secret), answers
//! the console's "Verify" body (no events) with 200 and publishes nothing, looks up the
//! senders' profiles with `GET /v2/bot/profile/{userId}` (the member forms in groups and rooms),
//! keeps each event's reply token for `outbound-line` in the `<p>_replies` bucket, and publishes
//! each event to `<p>.ingress.line.<channel>` keyed by its `webhookEventId`. Stateless.

use futures::future::BoxFuture;
use patchbay_runtime::{BoxError, Deps, Service};

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        patchbay_platform::ingress::service::<patchbay_line::Line>("ingress-line", &deps)
    })
}
