//! `normaliser`: consumes raw envelopes from `<p>.ingress.>`, turns each into canonical
//! events with its platform's adapter (found in `patchbay-registry`), and publishes them to `<p>.inbound.<bot>` keyed by event
//! id. A pure transformation: it holds no state and calls no platform. An envelope that cannot
//! be read goes to the dead-letter stream with the reason; the next one flows on.

use std::sync::Arc;

use futures::future::BoxFuture;
use patchbay_bus::{Bus, Delivery, Handler, HandlerError};
use patchbay_contract::{IngressEnvelope, topology};
use patchbay_runtime::{BoxError, Deps, Service};

struct Normaliser {
    bus: Bus,
}

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let spec = topology::normaliser(deps.bus.subjects());
        let handler = Arc::new(Normaliser {
            bus: deps.bus.clone(),
        });
        Ok(Service::new("normaliser").task(deps.consumer::<IngressEnvelope, _>(spec, handler)))
    })
}

impl Handler<IngressEnvelope> for Normaliser {
    fn key(&self, env: &IngressEnvelope) -> Option<String> {
        Some(match &env.order_key {
            Some(k) => format!("{}:{k}", env.channel_id),
            None => env.channel_id.clone(),
        })
    }

    async fn handle(&self, d: Delivery<IngressEnvelope>) -> Result<(), HandlerError> {
        let env = &d.payload;
        let spec = patchbay_registry::spec(env.platform).map_err(HandlerError::reject)?;
        let events = (spec.normalise)(env).map_err(HandlerError::reject)?;
        if events.is_empty() {
            metrics::counter!("patchbay_normaliser_ignored_total", "platform" => env.platform.as_str())
                .increment(1);
            tracing::debug!(envelope = %env.id, "update carries nothing Patchbay models; ignored");
        }
        for event in &events {
            let subject = self.bus.subjects().inbound(&event.bot_id)?;
            self.bus.publish(&subject, &event.id, event).await?;
        }
        Ok(())
    }
}
