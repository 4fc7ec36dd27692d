//! `ingress-wechat`: receives an Official Account's webhooks on
//! `/webhooks/wechat/{channel_id}`: `GET` answers the server configuration's `echostr`
//! handshake; every `POST` is checked by its `signature` (and, in the safe and compatible modes,
//! by `msg_signature` and decrypted), published to `<p>.ingress.wechat.<channel>` keyed by
//! `MsgId` (events: sender, time and kind), and answered `success` once stored. Stateless.

use futures::future::BoxFuture;
use patchbay_runtime::{BoxError, Deps, Service};

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        patchbay_platform::ingress::service::<patchbay_wechat::Wechat>("ingress-wechat", &deps)
    })
}
