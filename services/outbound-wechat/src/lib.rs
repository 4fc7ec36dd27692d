//! `outbound-wechat`: consumes `<p>.outbound.wechat.>`, sends through the customer-service
//! message API (template messages outside the 48-hour window) at the channel's `api_base_url`
//! or `PATCHBAY_WECHAT_API_BASE_URL`, and reports each result on `<p>.status.<bot>`. Access
//! tokens are shared by every replica through the `<p>_tokens` bucket (one per AppID).

use std::time::Duration;

use futures::future::BoxFuture;
use patchbay_contract::subjects::Bucket;
use patchbay_runtime::{BoxError, Deps, Service};
use patchbay_wechat::WechatSender;
use patchbay_wechat::tokens::SharedTokens;

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let c = &deps.config;
        let timeout = Duration::from_millis(c.outbound_timeout_ms);
        let bucket = deps.bus.subjects().bucket(Bucket::Tokens);
        let kv = deps.bus.jetstream().get_key_value(&bucket).await?;
        let tokens = SharedTokens::new(kv, timeout)?.sealed_with(deps.bus.master_key().cloned());
        let sender = WechatSender::new(
            &c.wechat_api_base_url,
            timeout,
            patchbay_platform::Limits {
                per_channel_per_second: c.wechat_per_account_per_second,
                per_conversation_per_second: c.wechat_per_user_per_second,
                per_conversation_burst: c.wechat_per_user_burst,
            },
            tokens,
        )?
        // Media URLs are fetched to upload them: never from private addresses, unless the
        // operator allows them (as for callbacks).
        .allow_private_media(c.allow_private_callbacks)?
        .with_passive(deps.bus.client().clone(), deps.bus.subjects().clone());
        patchbay_platform::outbound::service("outbound-wechat", &deps, sender).await
    })
}
