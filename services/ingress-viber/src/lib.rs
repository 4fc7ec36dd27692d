//! `ingress-viber`: receives a Viber bot's callbacks on `POST /webhooks/viber/{channel_id}`,
//! checks `X-Viber-Content-Signature` (HMAC-SHA256 of the body with the bot's auth token),
//! answers Viber's `webhook` check, answers `conversation_started` with the bot's welcome
//! message when its settings have one, and publishes each callback to
//! `<p>.ingress.viber.<channel>` keyed by its event and `message_token`. Profiles Viber did not
//! send are looked up off the messages' way (`get_user_details`). Stateless.

use futures::future::BoxFuture;
use patchbay_runtime::{BoxError, Deps, Service};

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        patchbay_platform::ingress::service::<patchbay_viber::Viber>("ingress-viber", &deps)
    })
}
