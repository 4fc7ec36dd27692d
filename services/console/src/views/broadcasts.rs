//! A bot developer's broadcasts: the list with each one's progress, a form for a text
//! broadcast, and one broadcast's page (state, counts, reasons; pause, resume, cancel). While
//! a broadcast goes out its numbers refresh every second by themselves; they stop once it
//! has ended.

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use patchbay_contract::broadcasts::{Broadcast, BroadcastPage};
use patchbay_contract::{ChannelView, Platform};
use serde::Deserialize;
use serde_json::json;

use crate::Console;
use crate::api::Call;
use crate::page::{ConsoleError, Nav, render};
use crate::session::{Posted, Role, Signed};
use crate::views::{Items, Notice, id_ok, q, time};

/// How often an open page fetches a sending broadcast's numbers again.
const REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/bot/broadcasts", get(list).post(create))
        .route("/console/bot/broadcasts/list", get(list_part))
        .route("/console/bot/broadcasts/live", get(live))
        .route("/console/bot/broadcasts/{broadcast_id}", get(one))
        .route("/console/bot/broadcasts/{broadcast_id}/part", get(one_part))
        .route("/console/bot/broadcasts/{broadcast_id}/live", get(live))
        .route(
            "/console/bot/broadcasts/{broadcast_id}/{action}",
            post(control),
        )
}

/// A broadcast as the pages show it.
pub(crate) struct Shown {
    b: Broadcast,
    /// Recipients with an outcome (sent, failed, skipped).
    done: i64,
    /// `done` of `recipients`, in whole percent.
    percent: i64,
    /// Who it goes to, in words.
    audience: String,
    /// What it sends, in words.
    content: String,
    created: String,
}

impl Shown {
    fn of(b: Broadcast) -> Self {
        let done = b.counts.done();
        let percent = (done * 100)
            .checked_div(b.counts.recipients)
            .unwrap_or(if b.state.is_final() { 100 } else { 0 });
        let a = &b.audience;
        let mut audience = Vec::new();
        if a.users.is_none() {
            // `all`, or narrowed by the filters below.
            audience.push("every subscribed user".to_owned());
        }
        if let Some(p) = &a.platforms {
            let names: Vec<&str> = p.iter().map(|p| p.as_str()).collect();
            audience.push(format!("on {}", names.join(", ")));
        }
        if let Some(c) = &a.channels {
            audience.push(format!("of channels {}", c.join(", ")));
        }
        if let Some(f) = &a.fields {
            let f = serde_json::to_string(f).unwrap_or_default();
            audience.push(format!("with fields {f}"));
        }
        if let Some(u) = &a.users {
            audience.push(format!("{} listed users", u.len()));
        }
        let content = match (&b.template, b.messages.first()) {
            (Some(t), _) => format!("template {}", t.id),
            (None, Some(m)) => serde_json::to_value(m)
                .ok()
                .and_then(|v| v["text"].as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{} message(s)", b.messages.len())),
            (None, None) => String::new(),
        };
        Shown {
            done,
            percent,
            audience: audience.join(" "),
            content,
            created: time(&b.created_at),
            b,
        }
    }

    fn state(&self) -> &'static str {
        self.b.state.as_str()
    }

    fn active(&self) -> bool {
        !self.b.state.is_final()
    }
}

#[derive(Template)]
#[template(path = "developer/broadcasts.html")]
struct ListPage {
    nav: Nav,
    csrf: String,
    notice: Option<String>,
    /// The platforms of the bot's channels, for the audience.
    platforms: Vec<Platform>,
    rows: Vec<Shown>,
    next: Option<String>,
    /// The fragment this page's list refreshes from (the same page of the list).
    refresh: String,
}

#[derive(Template)]
#[template(path = "developer/broadcasts_rows.html")]
struct ListPart {
    rows: Vec<Shown>,
    next: Option<String>,
}

impl ListPart {
    /// Whether any listed broadcast may still change.
    fn active(&self) -> bool {
        self.rows.iter().any(Shown::active)
    }
}

impl ListPage {
    /// Whether any listed broadcast may still change.
    fn active(&self) -> bool {
        self.rows.iter().any(Shown::active)
    }
}

#[derive(Deserialize)]
struct After {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    done: Option<String>,
}

async fn page_of(
    console: &Console,
    bearer: &str,
    after: Option<&str>,
) -> Result<(Vec<Shown>, Option<String>), ConsoleError> {
    let path = match after {
        Some(a) => format!("/v1/broadcasts?limit=20&after={}", q(id_ok(a)?)),
        None => "/v1/broadcasts?limit=20".to_owned(),
    };
    let page: BroadcastPage = console.api.get(bearer, path).await?;
    Ok((page.items.into_iter().map(Shown::of).collect(), page.next))
}

async fn list(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
    Query(a): Query<After>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    let (rows, next) = page_of(&console, &session.bearer, a.after.as_deref()).await?;
    let channels: Items<ChannelView> = console.api.get(&session.bearer, "/v1/channels").await?;
    let mut platforms: Vec<Platform> = channels.items.iter().map(|c| c.platform).collect();
    platforms.sort_by_key(|p| p.as_str());
    platforms.dedup();
    let refresh = match a.after.as_deref() {
        Some(after) => format!("/console/bot/broadcasts/list?after={}", q(after)),
        None => "/console/bot/broadcasts/list".to_owned(),
    };
    render(&ListPage {
        nav: Nav::of(&session, "broadcasts"),
        csrf: session.csrf.clone(),
        notice: a.done,
        platforms,
        rows,
        next,
        refresh,
    })
}

async fn list_part(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
    Query(a): Query<After>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    let (rows, next) = page_of(&console, &session.bearer, a.after.as_deref()).await?;
    render(&ListPart { rows, next })
}

/// `changed` every [`REFRESH`]: a broadcast's numbers move with every recipient (statuses,
/// skips after a cancel, the audience being stored), so the page asks again at that pace
/// until what it shows has ended (`data-live-end`).
async fn live(Signed { session, .. }: Signed) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    Ok(crate::live::ticks(REFRESH).into_response())
}

#[derive(Deserialize)]
struct CreateForm {
    text: String,
    /// `all`, or a platform's name.
    #[serde(default)]
    audience: String,
}

async fn create(
    State(console): State<Arc<Console>>,
    Posted { session, form, .. }: Posted<CreateForm>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    let audience = match form.audience.as_str() {
        "" | "all" => json!({"all": true}),
        p => {
            let platform: Platform = p
                .parse()
                .map_err(|e: String| ConsoleError::BadForm(format!("audience: {e}")))?;
            json!({"platforms": [platform]})
        }
    };
    let b: Broadcast = console
        .api
        .call(Call::send(
            "POST",
            &session.bearer,
            "/v1/broadcasts",
            Some(json!({"audience": audience,
                        "messages": [{"type": "text", "text": form.text.trim()}]})),
        ))
        .await?
        .into()?;
    Ok(Redirect::to(&format!("/console/bot/broadcasts/{}", b.id)).into_response())
}

#[derive(Template)]
#[template(path = "developer/broadcast.html")]
struct OnePage {
    nav: Nav,
    notice: Option<String>,
    csrf: String,
    s: Shown,
    finished: Option<String>,
}

#[derive(Template)]
#[template(path = "developer/broadcast_part.html")]
struct OnePart {
    /// For the page around the part (its forms).
    csrf: String,
    s: Shown,
    finished: Option<String>,
}

async fn one_of(
    console: &Console,
    session: &crate::session::Session,
    id: &str,
) -> Result<OnePart, ConsoleError> {
    let id = id_ok(id)?;
    let b: Broadcast = console
        .api
        .get(&session.bearer, format!("/v1/broadcasts/{id}"))
        .await?;
    Ok(OnePart {
        csrf: session.csrf.clone(),
        finished: b.finished_at.as_ref().map(time),
        s: Shown::of(b),
    })
}

async fn one(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
    Path(id): Path<String>,
    Query(n): Query<Notice>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    let part = one_of(&console, &session, &id).await?;
    render(&OnePage {
        nav: Nav::of(&session, "broadcasts"),
        notice: n.done,
        csrf: part.csrf,
        s: part.s,
        finished: part.finished,
    })
}

async fn one_part(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Developer])?;
    render(&one_of(&console, &session, &id).await?)
}

async fn control(
    State(console): State<Arc<Console>>,
    Path((id, action)): Path<(String, String)>,
    Posted { session, form, .. }: Posted<super::sign_in::Empty>,
) -> Result<Response, ConsoleError> {
    let _ = form;
    session.require(&[Role::Developer])?;
    let id = id_ok(&id)?;
    let done = match action.as_str() {
        "pause" => "Paused: nothing more is handed to the senders.",
        "resume" => "Resumed.",
        "cancel" => "Cancelled: what has not gone out stays unsent.",
        other => return Err(ConsoleError::BadForm(format!("{other:?} is no action"))),
    };
    console
        .api
        .call(Call::send(
            "POST",
            &session.bearer,
            format!("/v1/broadcasts/{id}/{action}"),
            None,
        ))
        .await?
        .accepted()?;
    Ok(Redirect::to(&format!("/console/bot/broadcasts/{id}?done={}", q(done))).into_response())
}
