//! `outbound-custom`: consumes `<p>.outbound.custom.>`, hands each message to a request
//! waiting for the user's replies (core NATS) and pushes it to the channel's event webhook
//! (Standard Webhooks, `X-Patchbay-Source`), and reports each result on `<p>.status.<bot>`.
//! It calls tenant endpoints, so it uses the same guarded client as the dispatcher.

use std::time::Duration;

use futures::future::BoxFuture;
use patchbay_custom::CustomSender;
use patchbay_runtime::{BoxError, Deps, Service};

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let c = &deps.config;
        let http = patchbay_platform::webhook::tenant_client(
            Duration::from_millis(c.webhook_timeout_ms),
            c.allow_private_callbacks,
            concat!("Patchbay-Webhooks/", env!("CARGO_PKG_VERSION")),
        )?;
        let sender = CustomSender::new(
            deps.bus.client().clone(),
            deps.bus.subjects().clone(),
            http,
            c.allow_private_callbacks,
        );
        patchbay_platform::outbound::service("outbound-custom", &deps, sender).await
    })
}
