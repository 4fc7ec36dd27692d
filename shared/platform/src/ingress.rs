//! The body of every `ingress-<platform>` service: `POST /webhooks/<platform>/{channel_id}`,
//! plus `GET` for platforms with an ownership handshake and, for platforms whose apps post
//! several channels' events to one URL (Meta), `POST`/`GET /webhooks/<platform>`.
//!
//! Channel looked up in the config view first (404 when unknown or disabled) and the
//! platform's signature header required ([`InboundAdapter::SIGNATURE_HEADER`], 401), so no
//! body is waited for that could not be used; then the raw body (size-capped, 413 beyond),
//! authenticity checked over the raw bytes (and the query, for platforms
//! that sign it) with the channel's opened credentials, and the body decrypted where the
//! platform encrypts it ([`InboundAdapter::open`]; 401, nothing published), body split into
//! envelopes (400 when malformed), each envelope published with the platform's event id as
//! `Nats-Msg-Id`, and 200 (with [`InboundAdapter::ACCEPTED`] as the body, or the adapter's
//! [`InboundAdapter::answer`] from the bot's settings) only after JetStream stored them all
//! (503 when it could not, so the platform retries; 413 when an envelope is larger than NATS
//! ever stores, so it stops retrying).
//!
//! Routing (adapters with [`InboundAdapter::ROUTED`]): each envelope names the platform
//! object it is for ([`crate::Split::route`], a Page id or `phone_number_id`); it is
//! published for the enabled channel whose [`InboundAdapter::route_id`] is that id, whichever
//! URL received it. The body must verify with the credentials of every channel concerned (one
//! Meta app signs all its Pages' events with its one secret), else 401 and nothing is
//! published. Envelopes for ids no channel has are dropped with a log line; the others still
//! go through.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
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

/// A channel's opened credentials and the sealed text they were opened from.
type Kept<C> = (String, Arc<C>);

struct State_<A: InboundAdapter> {
    bus: Bus,
    view: ConfigView,
    key: MasterKey,
    /// For [`InboundAdapter::enrich`].
    http: reqwest::Client,
    api_base_url: Option<String>,
    cache: crate::enrich::Cache,
    /// For [`InboundAdapter::reply_context`]: opened on first use.
    replies: tokio::sync::OnceCell<crate::replies::Replies>,
    /// Channels' opened credentials by channel id, with the sealed text they came from.
    opened: std::sync::Mutex<HashMap<String, Kept<A::Credentials>>>,
    /// When each channel's platform last reached it (the operator's channel views): opened
    /// on first use.
    activity: tokio::sync::OnceCell<patchbay_bus::ActivityLog>,
    /// For [`InboundAdapter::ROUTE_OF_SETUP`]: the setup bucket, opened on first use, and each
    /// channel's route id as read from it, for [`SETUP_ROUTE_TTL`].
    setup: tokio::sync::OnceCell<patchbay_bus::SetupLog>,
    setup_routes: std::sync::Mutex<HashMap<String, (Option<String>, std::time::Instant)>>,
    _adapter: PhantomData<fn() -> A>,
}

/// How long a channel's route id read from its setup record is used before it is read again.
const SETUP_ROUTE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

impl<A: InboundAdapter> State_<A> {
    /// Notes that the platform reached `channel_id` (never fails the webhook).
    async fn seen(&self, channel_id: &str, what: patchbay_bus::Seen) {
        match self
            .activity
            .get_or_try_init(|| patchbay_bus::ActivityLog::open(&self.bus))
            .await
        {
            Ok(log) => log.seen(channel_id, what),
            Err(e) => tracing::warn!(channel_id, error = %e, "activity bucket unavailable"),
        }
    }

    /// The route id of `channel_id` its setup at the platform learned
    /// ([`InboundAdapter::ROUTE_OF_SETUP`]); `None` while it has none (or the bucket cannot be
    /// read: every route is then the channel's, as before the setup).
    async fn setup_route(&self, channel_id: &str) -> Option<String> {
        let of = A::ROUTE_OF_SETUP?;
        let cached = self
            .setup_routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(channel_id)
            .filter(|(_, at)| at.elapsed() < SETUP_ROUTE_TTL)
            .map(|(route, _)| route.clone());
        if let Some(route) = cached {
            return route;
        }
        let log = match self
            .setup
            .get_or_try_init(|| patchbay_bus::SetupLog::open(&self.bus))
            .await
        {
            Ok(log) => log,
            Err(e) => {
                tracing::warn!(channel_id, error = %e, "setup bucket unavailable");
                return None;
            }
        };
        let route = match log.read(channel_id).await {
            Ok(setup) => setup.and_then(|s| s.platform_config).and_then(|c| of(&c)),
            Err(e) => {
                tracing::warn!(channel_id, error = %e, "reading the channel's setup failed");
                return None;
            }
        };
        self.setup_routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                channel_id.to_owned(),
                (route.clone(), std::time::Instant::now()),
            );
        route
    }

    async fn replies(&self) -> Result<&crate::replies::Replies, String> {
        self.replies
            .get_or_try_init(|| crate::replies::Replies::open(&self.bus))
            .await
    }
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
        http: crate::http::client_builder(std::time::Duration::from_millis(
            deps.config.outbound_timeout_ms,
        ))
        .build()?,
        api_base_url: A::api_base_url(&deps.config),
        cache: crate::enrich::Cache::default(),
        replies: tokio::sync::OnceCell::new(),
        opened: std::sync::Mutex::default(),
        activity: tokio::sync::OnceCell::new(),
        setup: tokio::sync::OnceCell::new(),
        setup_routes: std::sync::Mutex::default(),
        _adapter: PhantomData,
    });
    let path = format!("/webhooks/{}/{{channel_id}}", A::PLATFORM.as_str());
    let mut routes = Router::new().route(&path, post(receive::<A>).get(challenge::<A>));
    if A::ROUTED {
        let app_path = format!("/webhooks/{}", A::PLATFORM.as_str());
        routes = routes.route(&app_path, post(receive_app::<A>).get(challenge_app::<A>));
    }
    let routes = routes
        .layer(DefaultBodyLimit::max(deps.config.ingress_max_body_bytes))
        .with_state(state);
    Ok(Service::new(name).routes(routes))
}

fn outcome(platform: &'static str, o: &'static str) {
    metrics::counter!("patchbay_ingress_requests_total", "platform" => platform, "outcome" => o)
        .increment(1);
}

fn read_body(
    platform: &'static str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        outcome(platform, "rejected");
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "webhook body is too large",
            )
        } else {
            ApiError::bad_request("malformed_payload", "could not read the request body")
        }
    })
}

/// An enabled channel of `A`'s platform with its opened credentials.
struct Opened<C> {
    channel: Arc<ChannelRecord>,
    creds: Arc<C>,
}

impl<A: InboundAdapter> State_<A> {
    async fn channel(&self, channel_id: &str) -> Result<Opened<A::Credentials>, ApiError> {
        let platform = A::PLATFORM.as_str();
        let channel = self
            .view
            .channel(channel_id)
            .await?
            .filter(|c| c.platform == A::PLATFORM && c.enabled)
            .ok_or_else(|| {
                outcome(platform, "unknown_channel");
                ApiError::not_found(format!("no {platform} channel {channel_id}"))
            })?;
        let creds = self.open(&channel).map_err(ApiError::internal)?;
        Ok(Opened { channel, creds })
    }

    /// `channel`'s credentials, opened once per sealed version and kept: webhooks, signed or
    /// not, never make the ingress unseal a channel again, and the per-app route, which must
    /// learn every channel's platform id, opens each once, not once per request. Openings are
    /// counted (`patchbay_ingress_credentials_opened_total`).
    fn open(&self, channel: &ChannelRecord) -> Result<Arc<A::Credentials>, String> {
        let sealed = &channel.credentials.sealed;
        if let Some((was, creds)) = self
            .opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&channel.id)
            && was == sealed
        {
            return Ok(creds.clone());
        }
        metrics::counter!("patchbay_ingress_credentials_opened_total",
            "platform" => A::PLATFORM.as_str())
        .increment(1);
        let creds: Arc<A::Credentials> = Arc::new(open_credentials(&self.key, channel)?);
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel.id.clone(), (sealed.clone(), creds.clone()));
        Ok(creds)
    }

    /// Every enabled channel of the platform with its credentials (unreadable ones are
    /// logged and skipped).
    fn all_channels(&self) -> Vec<Opened<A::Credentials>> {
        let channels = self.view.channels(A::PLATFORM);
        // Forget the credentials of channels gone or disabled.
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| channels.iter().any(|c| &c.id == id));
        channels
            .into_iter()
            .filter_map(|channel| match self.open(&channel) {
                Ok(creds) => Some(Opened { channel, creds }),
                Err(e) => {
                    tracing::error!(error = %e, "cannot open channel credentials");
                    None
                }
            })
            .collect()
    }
}

fn refuse(platform: &'static str, channel: &str, r: Rejection) -> ApiError {
    match r {
        Rejection::Unauthorized(m) => {
            outcome(platform, "unauthorized");
            tracing::info!(channel, reason = %m, "webhook refused");
            ApiError::unauthorized("signature check failed")
        }
        Rejection::Malformed(m) => {
            outcome(platform, "malformed");
            ApiError::bad_request("malformed_payload", m)
        }
    }
}

/// Refuses a webhook without [`InboundAdapter::SIGNATURE_HEADER`], before its body is read.
fn signed<A: InboundAdapter>(headers: &HeaderMap, channel: &str) -> Result<(), ApiError> {
    match A::SIGNATURE_HEADER {
        Some(name) if !headers.contains_key(name) => Err(refuse(
            A::PLATFORM.as_str(),
            channel,
            Rejection::Unauthorized(format!("missing {name}")),
        )),
        _ => Ok(()),
    }
}

async fn receive<A: InboundAdapter>(
    State(s): State<Arc<State_<A>>>,
    Path(channel_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    req: Request,
) -> Result<(StatusCode, String), ApiError> {
    let platform = A::PLATFORM.as_str();
    // The cheap checks first: a client cannot make the ingress wait for a body it cannot use.
    let own = s.channel(&channel_id).await?;
    let headers = req.headers().clone();
    signed::<A>(&headers, &channel_id)?;
    let body = read_body(platform, Bytes::from_request(req, &()).await)?;
    let opened = A::open(&own.creds, &headers, &query, &body)
        .map_err(|r| refuse(platform, &channel_id, r))?;
    if let Some(wait) = A::passive_wait(&own.creds) {
        return passive::<A>(&s, own, &headers, &query, &opened, wait).await;
    }
    if A::ANSWERS {
        return answered::<A>(&s, own, &headers, &opened).await;
    }
    deliver::<A>(&s, Some(own), &headers, &opened).await?;
    Ok((StatusCode::OK, A::ACCEPTED.to_owned()))
}

/// [`deliver`], then the adapter's answer in the response (from the bot's settings) when it
/// has one for these envelopes.
async fn answered<A: InboundAdapter>(
    s: &State_<A>,
    own: Opened<A::Credentials>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(StatusCode, String), ApiError> {
    let platform = A::PLATFORM.as_str();
    let channel = own.channel.clone();
    let splits = A::split(&channel.id, body).map_err(|r| refuse(platform, &channel.id, r))?;
    let bot = s.view.bot(&channel.bot_id).await?.filter(|b| b.enabled);
    let answer = bot.and_then(|b| A::answer(&own.creds, &b, &splits));
    deliver::<A>(s, Some(own), headers, body).await?;
    match answer {
        Some(a) => {
            outcome(platform, "answered_inline");
            Ok((StatusCode::OK, a))
        }
        None => Ok((StatusCode::OK, A::ACCEPTED.to_owned())),
    }
}

/// A channel that can answer only in the webhook's own response: publishes the envelopes as
/// [`deliver`] does, having listened first for the bot's reply to each envelope's event, and
/// answers with the first reply handed over within `wait` (the sender learns it was taken;
/// later replies to the same message find no one listening). Without one in time, the usual
/// answer.
async fn passive<A: InboundAdapter>(
    s: &State_<A>,
    own: Opened<A::Credentials>,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
    wait: std::time::Duration,
) -> Result<(StatusCode, String), ApiError> {
    use futures::StreamExt;
    let platform = A::PLATFORM.as_str();
    let channel = own.channel.clone();
    let splits = A::split(&channel.id, body).map_err(|r| refuse(platform, &channel.id, r))?;
    let envelopes: Vec<(String, crate::Split)> = splits
        .into_iter()
        .map(|split| (new_id(prefix::ENVELOPE), split))
        .collect();
    let mut listening = Vec::new();
    for (envelope_id, split) in &envelopes {
        let event_id = patchbay_contract::ids::derive_id(prefix::EVENT, envelope_id, 0);
        let subject = s.bus.subjects().passive_reply(A::PLATFORM, &event_id)?;
        let sub = s
            .bus
            .client()
            .subscribe(subject)
            .await
            .map_err(|e| ApiError::unavailable(format!("cannot listen for the reply: {e}")))?;
        listening.push((sub, split.body.clone()));
    }
    let started = tokio::time::Instant::now();
    let subject = s.bus.subjects().ingress(A::PLATFORM, &channel.id)?;
    let span = webhook_span(&subject, platform, headers);
    publish_all::<A>(s, &subject, &channel, envelopes)
        .instrument(span)
        .await?;
    let replies = futures::stream::select_all(
        listening
            .into_iter()
            .map(|(sub, split)| sub.map(move |m| (m, split.clone()))),
    );
    tokio::pin!(replies);
    while let Ok(Some((m, split))) = tokio::time::timeout_at(started + wait, replies.next()).await {
        let Ok(content) = serde_json::from_slice::<patchbay_contract::Content>(&m.payload) else {
            tracing::warn!(channel_id = %channel.id, "an inline reply that is not content; ignored");
            continue;
        };
        match A::passive_response(&own.creds, query, &split, &content) {
            Ok(response) => {
                if let Some(reply) = m.reply {
                    let _ = s.bus.client().publish(reply, "taken".into()).await;
                }
                outcome(platform, "answered_inline");
                return Ok((StatusCode::OK, response));
            }
            Err(e) => {
                tracing::warn!(channel_id = %channel.id, error = %e, "cannot render the inline reply");
            }
        }
    }
    Ok((StatusCode::OK, A::ACCEPTED.to_owned()))
}

async fn receive_app<A: InboundAdapter>(
    State(s): State<Arc<State_<A>>>,
    req: Request,
) -> Result<(StatusCode, String), ApiError> {
    let headers = req.headers().clone();
    signed::<A>(&headers, "")?;
    let body = read_body(A::PLATFORM.as_str(), Bytes::from_request(req, &()).await)?;
    deliver::<A>(&s, None, &headers, &body).await?;
    Ok((StatusCode::OK, A::ACCEPTED.to_owned()))
}

/// Splits `body`, routes each envelope to its channel (the receiving channel `own` for
/// envelopes without a route or with its route id), checks the signature with the
/// credentials of every other channel concerned, and publishes.
async fn deliver<A: InboundAdapter>(
    s: &State_<A>,
    own: Option<Opened<A::Credentials>>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<StatusCode, ApiError> {
    let platform = A::PLATFORM.as_str();
    let own_id = own
        .as_ref()
        .map_or("", |o| o.channel.id.as_str())
        .to_owned();
    let probe = A::split(&own_id, body).map_err(|r| refuse(platform, &own_id, r))?;
    let own_route = match &own {
        Some(o) => match A::route_id(&o.creds) {
            Some(r) => Some(r),
            None => s.setup_route(&o.channel.id).await,
        },
        None => None,
    };
    // A channel that knows no route id of its own takes every route.
    let ours = |r: Option<&String>| r.is_none() || own_route.is_none() || r == own_route.as_ref();
    let foreign: Vec<String> = {
        let mut v: Vec<String> = probe
            .iter()
            .filter_map(|p| p.route.clone())
            .filter(|r| own.is_none() || !ours(Some(r)))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    // Channels concerned: the receiving one (if any envelope stays there) and one per
    // foreign route id that a channel claims.
    let mut targets: Vec<(Opened<A::Credentials>, Option<String>)> = Vec::new();
    let stays = probe.iter().any(|p| ours(p.route.as_ref()));
    if !foreign.is_empty() {
        let mut by_route: HashMap<String, Opened<A::Credentials>> = HashMap::new();
        for o in s.all_channels() {
            if let Some(r) = A::route_id(&o.creds)
                && foreign.contains(&r)
            {
                // Two channels claiming one id: the first seen wins, logged.
                if let Some(prev) = by_route.get(&r) {
                    tracing::warn!(route = %r, kept = %prev.channel.id, ignored = %o.channel.id,
                        "two channels claim one platform id");
                    continue;
                }
                by_route.insert(r, o);
            }
        }
        for r in &foreign {
            match by_route.remove(r) {
                Some(o) => targets.push((o, Some(r.clone()))),
                None => {
                    outcome(platform, "unknown_route");
                    tracing::warn!(route = %r, "webhook entry for an id no channel has; dropped");
                }
            }
        }
    }
    // Every channel concerned must accept the signature.
    for (o, _) in &targets {
        A::verify(&o.creds, headers, body).map_err(|r| refuse(platform, &o.channel.id, r))?;
    }
    if let Some(o) = own
        && stays
    {
        targets.insert(0, (o, None));
    }
    for (o, route) in targets {
        let channel = &o.channel;
        let mut splits: Vec<_> = A::split(&channel.id, body)
            .map_err(|r| refuse(platform, &channel.id, r))?
            .into_iter()
            .filter(|sp| match &route {
                Some(r) => sp.route.as_ref() == Some(r),
                None => ours(sp.route.as_ref()),
            })
            .collect();
        if let Some(base_url) = channel
            .api_base_url
            .as_deref()
            .or(s.api_base_url.as_deref())
        {
            let ctx = crate::enrich::Context {
                http: &s.http,
                creds: &*o.creds,
                base_url,
                channel_id: &channel.id,
                cache: &s.cache,
                bus: Some(&s.bus),
            };
            let enriched = A::enrich(ctx, &mut splits);
            if tokio::time::timeout(crate::enrich::BUDGET, enriched)
                .await
                .is_err()
            {
                tracing::info!(channel_id = %channel.id, "enrichment took too long; published without it");
            }
        }
        let subject = s.bus.subjects().ingress(A::PLATFORM, &channel.id)?;
        let span = webhook_span(&subject, platform, headers);
        let envelopes = splits
            .into_iter()
            .map(|split| (new_id(prefix::ENVELOPE), split))
            .collect();
        publish_all::<A>(s, &subject, channel, envelopes)
            .instrument(span)
            .await?;
    }
    Ok(StatusCode::OK)
}

async fn challenge<A: InboundAdapter>(
    State(s): State<Arc<State_<A>>>,
    Path(channel_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<(StatusCode, String), ApiError> {
    let own = s.channel(&channel_id).await?;
    match A::challenge(&own.creds, &query) {
        None => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this platform has no GET handshake",
        )),
        Some(Ok(body)) => {
            s.seen(&channel_id, patchbay_bus::Seen::Handshake).await;
            Ok((StatusCode::OK, body))
        }
        Some(Err(r)) => {
            tracing::info!(channel_id, reason = %r, "webhook handshake refused");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "verification failed",
            ))
        }
    }
}

/// The handshake of the per-app URL: answered when any channel of the platform accepts it.
async fn challenge_app<A: InboundAdapter>(
    State(s): State<Arc<State_<A>>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<(StatusCode, String), ApiError> {
    let answered: Vec<(String, String)> = s
        .all_channels()
        .iter()
        .filter_map(|o| {
            A::challenge(&o.creds, &query)
                .and_then(Result::ok)
                .map(|body| (o.channel.id.clone(), body))
        })
        .collect();
    // Every channel the handshake's token matches had its handshake.
    for (channel_id, _) in &answered {
        s.seen(channel_id, patchbay_bus::Seen::Handshake).await;
    }
    answered
        .into_iter()
        .next()
        .map(|(_, body)| (StatusCode::OK, body))
        .ok_or_else(|| {
            tracing::info!("per-app webhook handshake matched no channel");
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", "verification failed")
        })
}

/// The server span of a webhook published to `subject`, joined to the caller's trace.
fn webhook_span(subject: &str, platform: &'static str, headers: &HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        "webhook",
        otel.kind = "server",
        messaging.system = "nats",
        messaging.destination.name = %subject,
        platform,
    );
    crate::http::adopt_trace(&span, headers);
    span
}

/// Publishes each split under its envelope id, having kept its reply context (if any) for
/// the sender.
async fn publish_all<A: InboundAdapter>(
    s: &State_<A>,
    subject: &str,
    channel: &ChannelRecord,
    envelopes: Vec<(String, crate::Split)>,
) -> Result<(), ApiError> {
    let bus = &s.bus;
    let platform = A::PLATFORM.as_str();
    let channel_id = &channel.id;
    for (id, split) in envelopes {
        if let Some((token, issued_at)) = A::reply_context(&split) {
            let context = patchbay_contract::ReplyContext {
                v: V1,
                channel_id: channel_id.clone(),
                token,
                issued_at,
            };
            let event_id = patchbay_contract::ids::derive_id(prefix::EVENT, &id, 0);
            let kept = match s.replies().await {
                Ok(r) => r.keep(&event_id, &context).await,
                Err(e) => Err(e),
            };
            if let Err(e) = kept {
                // Its replies take the platform's other way.
                tracing::warn!(%channel_id, error = %e, "reply context not kept");
            }
        }
        let envelope = IngressEnvelope {
            v: V1,
            id,
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
            .inspect_err(|e| outcome(platform, e.outcome()))?;
        outcome(
            platform,
            if published.duplicate {
                "duplicate"
            } else {
                "accepted"
            },
        );
    }
    s.seen(channel_id, patchbay_bus::Seen::Event).await;
    Ok(())
}
