//! A bot developer's pages: the bot's settings and channels with a chart of its deliveries,
//! the live event tail, the delivery log (filters, one delivery's attempts, retry, replay), a
//! message's journey, and the bot's human agents.

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration, Utc};
use patchbay_contract::{
    Agent, ChannelView, Delivery, DeliveryDetail, DeliveryPage, DeliveryState, DispatchJob,
    Journey, WebhookSettings,
};
use serde::Deserialize;
use serde_json::json;

use crate::Console;
use crate::api::Call;
use crate::page::{ConsoleError, Nav, render, render_with};
use crate::session::{Posted, Role, Signed};
use crate::views::{Items, Notice, id_ok, q, time};

pub(crate) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/bot", get(overview))
        .route("/console/bot/webhook", post(set_webhook))
        .route("/console/bot/webhook/secret", post(rotate_secret))
        .route("/console/bot/channels/{channel_id}/try", post(try_it))
        .route("/console/bot/events", get(events))
        .route("/console/bot/events/live", get(events_live))
        .route("/console/bot/deliveries", get(deliveries))
        .route("/console/bot/deliveries/replay", post(replay))
        .route("/console/bot/deliveries/{event_id}", get(delivery))
        .route("/console/bot/deliveries/{event_id}/retry", post(retry))
        .route("/console/bot/journey", get(journey))
        .route("/console/bot/agents", get(agents).post(invite))
        .route("/console/bot/agents/{agent_id}/revoke", post(revoke))
}

/// One minute of the chart.
struct Minute {
    label: String,
    delivered: u32,
    pending: u32,
    failed: u32,
    /// The slowest delivery's time from event to outcome, in ms.
    slowest_ms: i64,
}

/// Deliveries per minute by outcome over the last `minutes`, from up to 100 of the newest.
fn chart(items: &[Delivery], now: DateTime<Utc>, minutes: i64) -> Vec<Minute> {
    (0..minutes)
        .rev()
        .map(|ago| {
            let end = now - Duration::minutes(ago);
            let start = end - Duration::minutes(1);
            let within: Vec<&Delivery> = items
                .iter()
                .filter(|d| d.created_at > start && d.created_at <= end)
                .collect();
            let count = |s: DeliveryState| {
                u32::try_from(within.iter().filter(|d| d.status == s).count()).unwrap_or(u32::MAX)
            };
            Minute {
                label: end.format("%H:%M").to_string(),
                delivered: count(DeliveryState::Delivered),
                pending: count(DeliveryState::Pending),
                failed: count(DeliveryState::Failed),
                slowest_ms: within
                    .iter()
                    .filter(|d| d.status == DeliveryState::Delivered)
                    .map(|d| (d.updated_at - d.created_at).num_milliseconds())
                    .max()
                    .unwrap_or(0),
            }
        })
        .collect()
}

/// A bar of the chart, in the SVG's units.
struct Bar {
    x: usize,
    /// (y, height, class) from the bottom up.
    parts: Vec<(u32, u32, &'static str)>,
    title: String,
}

fn bars(minutes: &[Minute]) -> (Vec<Bar>, u32) {
    const HEIGHT: u32 = 100;
    let top = minutes
        .iter()
        .map(|m| m.delivered + m.pending + m.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let bars = minutes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut y = HEIGHT;
            let mut parts = Vec::new();
            for (n, class) in [
                (m.delivered, "delivered"),
                (m.pending, "pending"),
                (m.failed, "failed"),
            ] {
                let h = n * HEIGHT / top;
                y -= h;
                if h > 0 {
                    parts.push((y, h, class));
                }
            }
            Bar {
                x: i * 12,
                parts,
                title: format!(
                    "{}: {} delivered, {} pending, {} failed; slowest {} ms",
                    m.label, m.delivered, m.pending, m.failed, m.slowest_ms
                ),
            }
        })
        .collect();
    (bars, top)
}

#[derive(Template)]
#[template(path = "developer/overview.html")]
struct OverviewPage {
    nav: Nav,
    bot_id: String,
    webhook: WebhookSettings,
    /// Each channel, its webhook URL, and whether its platform has a "try it" message.
    channels: Vec<(ChannelView, String, bool)>,
    minutes: Vec<Minute>,
    bars: Vec<Bar>,
    top: u32,
    notice: Option<String>,
}

async fn overview(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
    Query(n): Query<Notice>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    let webhook: WebhookSettings = console.api.get(&session.bearer, "/v1/webhook").await?;
    let channels: Items<ChannelView> = console.api.get(&session.bearer, "/v1/channels").await?;
    let now = Utc::now();
    let since = now - Duration::minutes(30);
    let page: DeliveryPage = console
        .api
        .get(
            &session.bearer,
            format!("/v1/deliveries?limit=100&since={}", q(&since.to_rfc3339())),
        )
        .await?;
    let minutes = chart(&page.items, now, 30);
    let (bars, top) = bars(&minutes);
    render(&OverviewPage {
        nav: Nav::of(&session, "bot"),
        bot_id: session.bot_id.clone().unwrap_or_default(),
        webhook,
        channels: channels
            .items
            .into_iter()
            .map(|c| {
                let url = format!("{}{}", console.public_url, c.webhook_path);
                let tryable = patchbay_registry::spec(c.platform).is_ok_and(|s| s.try_it.is_some());
                (c, url, tryable)
            })
            .collect(),
        minutes,
        bars,
        top,
        notice: n.done,
    })
}

#[derive(Deserialize)]
struct WebhookForm {
    #[serde(default)]
    url: String,
    #[serde(default)]
    events: String,
}

async fn set_webhook(
    State(console): State<Arc<Console>>,
    Posted { session, form, .. }: Posted<WebhookForm>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    let events: Vec<&str> = form
        .events
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let mut body = json!({"url": form.url.trim()});
    if !events.is_empty() {
        body["events"] = json!(events);
    }
    console
        .api
        .call(Call::send(
            "PUT",
            &session.bearer,
            "/v1/webhook",
            Some(body),
        ))
        .await?
        .accepted()?;
    Ok(Redirect::to("/console/bot?done=Callback+saved.").into_response())
}

#[derive(Template)]
#[template(path = "developer/events.html")]
struct EventsPage {
    nav: Nav,
}

async fn events(Signed { session, .. }: Signed) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    render(&EventsPage {
        nav: Nav::of(&session, "events"),
    })
}

/// One row of the live tail.
#[derive(Template)]
#[template(path = "developer/event_row.html")]
pub(crate) struct EventRow {
    id: String,
    event_type: String,
    at: String,
    platform: String,
    user: String,
    text: String,
    /// `None` on a broadcast's event.
    conversation_id: Option<String>,
}

impl EventRow {
    fn of(job: &DispatchJob) -> Self {
        let e = &job.event;
        let text = e
            .message
            .as_ref()
            .and_then(|m| serde_json::to_value(&m.content).ok())
            .map(|c| {
                c["text"].as_str().map_or_else(
                    || c["type"].as_str().unwrap_or("").to_owned(),
                    str::to_owned,
                )
            })
            .unwrap_or_default();
        let Some(conv) = e.conversation() else {
            // A broadcast's event: its counts instead of a user's words.
            let text = e.broadcast.as_ref().map_or_else(String::new, |b| {
                format!(
                    "{} {}: {} sent, {} failed, {} skipped of {}",
                    b.id,
                    b.state.as_str(),
                    b.counts.sent,
                    b.counts.failed,
                    b.counts.skipped,
                    b.counts.recipients
                )
            });
            return EventRow {
                id: e.id.clone(),
                event_type: e.event_type.as_str().to_owned(),
                at: time(&e.created_at),
                platform: String::new(),
                user: String::new(),
                text,
                conversation_id: None,
            };
        };
        EventRow {
            id: e.id.clone(),
            event_type: e.event_type.as_str().to_owned(),
            at: time(&e.created_at),
            platform: conv.channel.platform.as_str().to_owned(),
            user: conv
                .user
                .display_name
                .clone()
                .unwrap_or_else(|| conv.user.id.clone()),
            text,
            conversation_id: Some(conv.id.to_owned()),
        }
    }
}

async fn events_live(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    let bot_id = session.bot_id.clone().unwrap_or_default();
    let sse = crate::live::events(&console, &bot_id, |job| {
        askama::Template::render(&EventRow::of(job)).ok()
    })
    .await?;
    Ok(sse.into_response())
}

#[derive(Deserialize)]
struct DeliveryFilter {
    #[serde(default)]
    status: String,
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    cursor: String,
}

#[derive(Template)]
#[template(path = "developer/deliveries.html")]
struct DeliveriesPage {
    nav: Nav,
    csrf: String,
    items: Vec<Delivery>,
    status: String,
    event_type: String,
    next: Option<String>,
    notice: Option<String>,
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    #[serde(flatten)]
    filter: DeliveryFilter,
    #[serde(default)]
    done: Option<String>,
}

async fn deliveries(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    let f = query.filter;
    let mut path = "/v1/deliveries?limit=50".to_owned();
    for (name, value) in [
        ("status", &f.status),
        ("event_type", &f.event_type),
        ("cursor", &f.cursor),
    ] {
        if !value.is_empty() {
            path.push_str(&format!("&{name}={}", q(value)));
        }
    }
    let answer = console.api.call(Call::get(&session.bearer, path)).await?;
    let page: DeliveryPage = answer.into()?;
    let next = page.next_cursor.map(|c| {
        format!(
            "/console/bot/deliveries?status={}&event_type={}&cursor={}",
            q(&f.status),
            q(&f.event_type),
            q(&c)
        )
    });
    render(&DeliveriesPage {
        nav: Nav::of(&session, "deliveries"),
        csrf: session.csrf.clone(),
        items: page.items,
        status: f.status,
        event_type: f.event_type,
        next,
        notice: query.done,
    })
}

#[derive(Template)]
#[template(path = "developer/delivery.html")]
struct DeliveryPageView {
    nav: Nav,
    csrf: String,
    detail: DeliveryDetail,
    event_json: String,
    message_id: Option<String>,
}

async fn delivery(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
    Path(event_id): Path<String>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    let event_id = id_ok(&event_id)?;
    let detail: DeliveryDetail = console
        .api
        .get(&session.bearer, format!("/v1/deliveries/{event_id}"))
        .await?;
    render(&DeliveryPageView {
        nav: Nav::of(&session, "deliveries"),
        csrf: session.csrf.clone(),
        event_json: serde_json::to_string_pretty(&detail.event).unwrap_or_default(),
        message_id: detail.event.message.as_ref().map(|m| m.id.clone()),
        detail,
    })
}

async fn retry(
    State(console): State<Arc<Console>>,
    Path(event_id): Path<String>,
    Posted { session, form, .. }: Posted<super::sign_in::Empty>,
) -> Result<Response, ConsoleError> {
    let _ = form;
    session.require(&[Role::Developer])?;
    let event_id = id_ok(&event_id)?;
    console
        .api
        .call(Call::send(
            "POST",
            &session.bearer,
            format!("/v1/deliveries/{event_id}/retry"),
            None,
        ))
        .await?
        .accepted()?;
    Ok(Redirect::to(&format!("/console/bot/deliveries/{event_id}")).into_response())
}

#[derive(Deserialize)]
struct ReplayForm {
    /// Replay the dead letters of the last this many hours.
    hours: String,
}

async fn replay(
    State(console): State<Arc<Console>>,
    Posted { session, form, .. }: Posted<ReplayForm>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    let hours: i64 = form
        .hours
        .trim()
        .parse()
        .ok()
        .filter(|h| (1..=24 * 30).contains(h))
        .ok_or_else(|| ConsoleError::BadForm("hours: enter 1 to 720".into()))?;
    let since = Utc::now() - Duration::hours(hours);
    let replayed: patchbay_contract::Replayed = console
        .api
        .call(Call::send(
            "POST",
            &session.bearer,
            "/v1/deliveries/replay",
            Some(json!({"since": since})),
        ))
        .await?
        .into()?;
    let what = format!(
        "{} failed deliveries queued again{}.",
        replayed.replayed,
        if replayed.more {
            " (more remain: replay again)"
        } else {
            ""
        }
    );
    Ok(Redirect::to(&format!("/console/bot/deliveries?done={}", q(&what))).into_response())
}

#[derive(Template)]
#[template(path = "developer/journey.html")]
struct JourneyPage {
    nav: Nav,
    message_id: String,
    journey: Option<Journey>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct JourneyQuery {
    #[serde(default)]
    message_id: String,
}

async fn journey(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
    Query(jq): Query<JourneyQuery>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    let id = jq.message_id.trim().to_owned();
    let (journey, error, status) = if id.is_empty() {
        (None, None, StatusCode::OK)
    } else {
        let answer = console
            .api
            .call(Call::get(
                &session.bearer,
                format!("/v1/messages/{}/journey", id_ok(&id)?),
            ))
            .await?;
        if answer.ok() {
            (Some(answer.into()?), None, StatusCode::OK)
        } else {
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            (None, Some(answer.error().1), status)
        }
    };
    Ok(render_with(
        status,
        &JourneyPage {
            nav: Nav::of(&session, "journey"),
            message_id: id,
            journey,
            error,
        },
    ))
}

#[derive(Deserialize)]
struct AgentItems {
    data: Vec<Agent>,
}

#[derive(Template)]
#[template(path = "developer/agents.html")]
struct AgentsPage {
    nav: Nav,
    csrf: String,
    agents: Vec<Agent>,
    invited: Option<Agent>,
    notice: Option<String>,
}

async fn agents_page(
    console: &Console,
    session: &crate::session::Session,
    invited: Option<Agent>,
    notice: Option<String>,
) -> Result<Response, ConsoleError> {
    let list: AgentItems = console.api.get(&session.bearer, "/v1/agents").await?;
    render(&AgentsPage {
        nav: Nav::of(session, "agents"),
        csrf: session.csrf.clone(),
        agents: list.data,
        invited,
        notice,
    })
}

async fn agents(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
    Query(n): Query<Notice>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    agents_page(&console, &session, None, n.done).await
}

#[derive(Deserialize)]
struct InviteForm {
    name: String,
}

async fn invite(
    State(console): State<Arc<Console>>,
    Posted { session, form, .. }: Posted<InviteForm>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    let agent: Agent = console
        .api
        .call(Call::send(
            "POST",
            &session.bearer,
            "/v1/agents",
            Some(json!({"name": form.name.trim()})),
        ))
        .await?
        .into()?;
    agents_page(&console, &session, Some(agent), None).await
}

async fn revoke(
    State(console): State<Arc<Console>>,
    Path(agent_id): Path<String>,
    Posted { session, form, .. }: Posted<super::sign_in::Empty>,
) -> Result<Response, ConsoleError> {
    let _ = form;
    session.require(&[Role::Developer])?;
    let agent_id = id_ok(&agent_id)?;
    console
        .api
        .call(Call::send(
            "DELETE",
            &session.bearer,
            format!("/v1/agents/{agent_id}"),
            None,
        ))
        .await?
        .accepted()?;
    Ok(Redirect::to(&format!(
        "/console/bot/agents?done={}",
        q(&format!("Agent {agent_id} revoked."))
    ))
    .into_response())
}

#[derive(Deserialize)]
struct TryForm {
    text: String,
}

/// What the API answers for a "try it": the platform's request to post.
#[derive(Deserialize, serde::Serialize)]
struct TryRequest {
    method: String,
    path: String,
    headers: std::collections::BTreeMap<String, String>,
    body: String,
}

#[derive(Template)]
#[template(path = "developer/try.html")]
struct TryPage {
    nav: Nav,
    url: String,
    request: TryRequest,
}

/// `POST /console/bot/channels/{channel_id}/try`: the platform's request for a made-up
/// user's text, as JSON for the page's script to post to the channel's webhook, or (without
/// JavaScript) as a page with the command that posts it.
async fn try_it(
    State(console): State<Arc<Console>>,
    Path(channel_id): Path<String>,
    Posted {
        session,
        form,
        wants_json,
        ..
    }: Posted<TryForm>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    let channel_id = id_ok(&channel_id)?;
    let request: TryRequest = console
        .api
        .call(Call::send(
            "POST",
            &session.bearer,
            format!("/v1/channels/{channel_id}/try"),
            Some(json!({"text": form.text})),
        ))
        .await?
        .into()?;
    if wants_json {
        return Ok(axum::Json(request).into_response());
    }
    render(&TryPage {
        nav: Nav::of(&session, "bot"),
        url: format!("{}{}", console.public_url, request.path),
        request,
    })
}

#[derive(Template)]
#[template(path = "developer/secret.html")]
struct SecretPage {
    nav: Nav,
    secret: String,
    until: String,
}

/// `POST /console/bot/webhook/secret`: a new signing secret, shown once; the current ones sign
/// too until the overlap ends.
async fn rotate_secret(
    State(console): State<Arc<Console>>,
    Posted { session, .. }: Posted<super::sign_in::Empty>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    let rotated: patchbay_contract::RotatedSecret = console
        .api
        .call(Call::send(
            "POST",
            &session.bearer,
            "/v1/webhook/secret/rotate",
            Some(json!({})),
        ))
        .await?
        .into()?;
    render(&SecretPage {
        nav: Nav::of(&session, "bot"),
        secret: rotated.webhook_secret,
        until: time(&rotated.previous_expire_at),
    })
}
