//! The body of every `ingress-<platform>` service: `POST /webhooks/<platform>/{channel_id}`.
//!
//! Raw body first (size-capped, 413 beyond), channel looked up in the config view (404 when
//! unknown or disabled), authenticity checked over the raw bytes with the channel's opened
//! credentials (401, nothing published), body split into envelopes (400 when malformed), each
//! envelope published with the platform's event id as `Nats-Msg-Id`, and 200 only after
//! JetStream stored them all (503 when it could not, so the platform retries).

use std::marker::PhantomData;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use patchbay_bus::{Bus, ConfigView};
use patchbay_config::MasterKey;
use patchbay_contract::ids::{new_id, prefix};
use patchbay_contract::{ChannelRecord, IngressEnvelope, V1};
use patchbay_runtime::{ApiError, BoxError, Deps, Service};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::{InboundAdapter, Rejection};

struct State_<A> {
    bus: Bus,
    view: ConfigView,
    key: MasterKey,
    _adapter: PhantomData<fn() -> A>,
}

/// Opens a channel's sealed credentials as `C`.
pub fn open_credentials<C: DeserializeOwned>(
    key: &MasterKey,
    channel: &ChannelRecord,
) -> Result<C, String> {
    let raw = key
        .open(&channel.id, &channel.credentials.sealed)
        .map_err(|e| format!("channel {}: {e}", channel.id))?;
    serde_json::from_slice(&raw).map_err(|e| format!("channel {} credentials: {e}", channel.id))
}

/// The ingress service of adapter `A`.
pub fn service<A: InboundAdapter>(name: &'static str, deps: &Deps) -> Result<Service, BoxError> {
    let state = Arc::new(State_::<A> {
        bus: deps.bus.clone(),
        view: deps.view.clone(),
        key: deps.config.require_master_key()?,
        _adapter: PhantomData,
    });
    let path = format!("/webhooks/{}/{{channel_id}}", A::PLATFORM.as_str());
    let routes = Router::new()
        .route(&path, post(receive::<A>))
        .layer(DefaultBodyLimit::max(deps.config.ingress_max_body_bytes))
        .with_state(state);
    Ok(Service::new(name).routes(routes))
}

async fn receive<A: InboundAdapter>(
    State(s): State<Arc<State_<A>>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let platform = A::PLATFORM.as_str();
    let outcome = |o: &'static str| {
        metrics::counter!("patchbay_ingress_requests_total", "platform" => platform, "outcome" => o)
            .increment(1);
    };
    let body = body.map_err(|e| {
        outcome("rejected");
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "webhook body is too large",
            )
        } else {
            ApiError::bad_request("malformed_payload", "could not read the request body")
        }
    })?;
    let channel = s
        .view
        .channel(&channel_id)
        .await?
        .filter(|c| c.platform == A::PLATFORM && c.enabled)
        .ok_or_else(|| {
            outcome("unknown_channel");
            ApiError::not_found(format!("no {platform} channel {channel_id}"))
        })?;
    let creds: A::Credentials = open_credentials(&s.key, &channel).map_err(ApiError::internal)?;
    let splits = A::verify(&creds, &headers, &body)
        .and_then(|()| A::split(&channel_id, &body))
        .map_err(|r| match r {
            Rejection::Unauthorized(m) => {
                outcome("unauthorized");
                tracing::info!(channel_id, reason = %m, "webhook refused");
                ApiError::unauthorized("signature check failed")
            }
            Rejection::Malformed(m) => {
                outcome("malformed");
                ApiError::bad_request("malformed_payload", m)
            }
        })?;
    let subject = s.bus.subjects().ingress(A::PLATFORM, &channel_id)?;
    let span = tracing::info_span!(
        "webhook",
        otel.kind = "server",
        messaging.system = "nats",
        messaging.destination.name = %subject,
        platform,
    );
    crate::http::adopt_trace(&span, &headers);
    publish_all::<A>(&s.bus, &subject, &channel, splits, outcome)
        .instrument(span)
        .await?;
    Ok(StatusCode::OK)
}

async fn publish_all<A: InboundAdapter>(
    bus: &Bus,
    subject: &str,
    channel: &ChannelRecord,
    splits: Vec<crate::Split>,
    outcome: impl Fn(&'static str),
) -> Result<(), ApiError> {
    let channel_id = &channel.id;
    for split in splits {
        let envelope = IngressEnvelope {
            v: V1,
            id: new_id(prefix::ENVELOPE),
            platform: A::PLATFORM,
            channel_id: channel_id.clone(),
            bot_id: channel.bot_id.clone(),
            received_at: chrono::Utc::now(),
            dedupe_key: split.dedupe_key,
            body: split.body,
            order_key: split.order_key,
        };
        let published = bus
            .publish(subject, &envelope.dedupe_key, &envelope)
            .await
            .inspect_err(|_| outcome("unavailable"))?;
        outcome(if published.duplicate {
            "duplicate"
        } else {
            "accepted"
        });
    }
    Ok(())
}
