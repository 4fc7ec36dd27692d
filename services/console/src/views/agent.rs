//! Human agents' pages (and the bot developer's view of the same): the inbox of
//! conversations, those waiting for a human first, and a conversation with its history, its
//! messaging window and who holds it: take over, reply (text, buttons, or a registry template
//! once the window has closed), hand back. Both pages follow new messages live.

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use patchbay_contract::{HandledBy, HistoryMessage, HistoryPage, InboxEntry};
use serde::Deserialize;
use serde_json::json;

use crate::Console;
use crate::api::Call;
use crate::page::{ConsoleError, Nav, render};
use crate::session::{Posted, Role, Session, Signed};
use crate::views::{Items, Notice, id_ok, q, time};

const PEOPLE: &[Role] = &[Role::Agent, Role::Developer];

pub(crate) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/inbox", get(inbox))
        .route("/console/inbox/list", get(inbox_list))
        .route("/console/inbox/live", get(inbox_live))
        .route(
            "/console/conversations/{conversation_id}",
            get(conversation),
        )
        .route(
            "/console/conversations/{conversation_id}/messages",
            get(messages),
        )
        .route(
            "/console/conversations/{conversation_id}/live",
            get(conversation_live),
        )
        .route(
            "/console/conversations/{conversation_id}/handover",
            post(handover),
        )
        .route(
            "/console/conversations/{conversation_id}/reply",
            post(reply),
        )
}

/// One conversation of the inbox.
struct Row {
    entry: InboxEntry,
    name: String,
    wrote: String,
}

impl Row {
    fn of(entry: InboxEntry) -> Self {
        Row {
            name: entry
                .user
                .display_name
                .clone()
                .or_else(|| entry.user.username.clone())
                .unwrap_or_else(|| entry.user.platform_user_id.clone()),
            wrote: entry.user_wrote_at.as_ref().map(time).unwrap_or_default(),
            entry,
        }
    }

    fn human(&self) -> bool {
        self.entry.handled_by == HandledBy::Human
    }
}

#[derive(Template)]
#[template(path = "agent/inbox.html")]
struct InboxPage {
    nav: Nav,
    rows: Vec<Row>,
}

#[derive(Template)]
#[template(path = "agent/inbox_list.html")]
struct InboxList {
    rows: Vec<Row>,
}

async fn rows(console: &Console, session: &Session) -> Result<Vec<Row>, ConsoleError> {
    let items: Items<InboxEntry> = console
        .api
        .get(&session.bearer, "/v1/conversations?limit=100")
        .await?;
    Ok(items.items.into_iter().map(Row::of).collect())
}

async fn inbox(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
) -> Result<Response, ConsoleError> {
    session.require(PEOPLE)?;
    render(&InboxPage {
        nav: Nav::of(&session, "inbox"),
        rows: rows(&console, &session).await?,
    })
}

async fn inbox_list(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
) -> Result<Response, ConsoleError> {
    session.require(PEOPLE)?;
    render(&InboxList {
        rows: rows(&console, &session).await?,
    })
}

async fn inbox_live(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
) -> Result<Response, ConsoleError> {
    session.require(PEOPLE)?;
    let bot_id = session.bot_id.clone().unwrap_or_default();
    Ok(crate::live::changes(&console, &bot_id, None)
        .await?
        .into_response())
}

/// One message of a conversation.
struct Line {
    message: HistoryMessage,
    text: String,
    at: String,
}

impl Line {
    fn of(message: HistoryMessage) -> Self {
        let content = serde_json::to_value(&message.content).unwrap_or_default();
        let mut text = content["text"].as_str().map_or_else(
            || format!("[{}]", content["type"].as_str().unwrap_or("?")),
            str::to_owned,
        );
        if let Some(buttons) = content["buttons"]
            .as_array()
            .or(content["replies"].as_array())
        {
            let labels: Vec<&str> = buttons.iter().filter_map(|b| b["title"].as_str()).collect();
            text.push_str(&format!(" [{}]", labels.join("] [")));
        }
        if content["type"] == "template" {
            text = format!(
                "[template {}]",
                content["id"]
                    .as_str()
                    .or(content["name"].as_str())
                    .unwrap_or("?")
            );
        }
        Line {
            text,
            at: time(&message.created_at),
            message,
        }
    }

    fn inbound(&self) -> bool {
        self.message.direction == "inbound"
    }

    fn who(&self) -> &str {
        match (self.inbound(), self.message.source.as_deref()) {
            (true, _) => "User",
            (false, Some("human")) => "Agent",
            (false, _) => "Bot",
        }
    }
}

/// Where the messaging window stands.
struct Window {
    /// Free-form messages may go out.
    open: bool,
    text: String,
}

fn window(entry: &InboxEntry, now: DateTime<Utc>) -> Window {
    let policy = patchbay_registry::window(entry.user.channel.platform);
    let from = entry.user.last_inbound_at;
    // An agent's messages have the platform's human-agent window where it has one.
    let secs = policy.human_agent_secs.or(policy.window_secs);
    match (secs, from) {
        (None, _) => Window {
            open: true,
            text: format!(
                "{} has no messaging window: you can always write.",
                policy.name
            ),
        },
        (Some(_), None) => Window {
            open: false,
            text: "The user never wrote: only a template can reach them.".into(),
        },
        (Some(secs), Some(from)) => {
            let until = from + chrono::Duration::seconds(secs);
            if until > now {
                Window {
                    open: true,
                    text: format!("The {} is open until {}.", policy.name, time(&until)),
                }
            } else {
                Window {
                    open: false,
                    text: format!(
                        "The {} closed at {}: send a template.",
                        policy.name,
                        time(&until)
                    ),
                }
            }
        }
    }
}

#[derive(Template)]
#[template(path = "agent/conversation.html")]
struct ConversationPage {
    nav: Nav,
    csrf: String,
    row: Row,
    lines: Vec<Line>,
    window: Window,
    /// The reply form's idempotency key.
    idem: String,
    notice: Option<String>,
}

#[derive(Template)]
#[template(path = "agent/messages.html")]
struct Messages {
    lines: Vec<Line>,
}

/// The conversation's inbox entry (404 as the API answers for another bot's).
async fn entry(
    console: &Console,
    session: &Session,
    conversation_id: &str,
) -> Result<InboxEntry, ConsoleError> {
    let items: Items<InboxEntry> = console
        .api
        .get(&session.bearer, "/v1/conversations?limit=200")
        .await?;
    items
        .items
        .into_iter()
        .find(|e| e.conversation_id == conversation_id)
        .ok_or_else(|| {
            ConsoleError::Forbidden(format!(
                "the bot has no conversation {conversation_id} among its 200 latest"
            ))
        })
}

async fn lines(
    console: &Console,
    session: &Session,
    conversation_id: &str,
) -> Result<Vec<Line>, ConsoleError> {
    let page: HistoryPage = console
        .api
        .get(
            &session.bearer,
            format!("/v1/conversations/{conversation_id}/messages?limit=50"),
        )
        .await?;
    // Oldest first, as a chat reads.
    Ok(page.messages.into_iter().rev().map(Line::of).collect())
}

async fn conversation(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
    Path(conversation_id): Path<String>,
    Query(n): Query<Notice>,
) -> Result<Response, ConsoleError> {
    session.require(PEOPLE)?;
    let id = id_ok(&conversation_id)?;
    let lines = lines(&console, &session, id).await?;
    let entry = entry(&console, &session, id).await?;
    render(&ConversationPage {
        nav: Nav::of(&session, "inbox"),
        csrf: session.csrf.clone(),
        window: window(&entry, Utc::now()),
        idem: patchbay_config::secrets::new_url_token().map_err(|_| ConsoleError::Internal)?,
        row: Row::of(entry),
        lines,
        notice: n.done,
    })
}

async fn messages(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
    Path(conversation_id): Path<String>,
) -> Result<Response, ConsoleError> {
    session.require(PEOPLE)?;
    render(&Messages {
        lines: lines(&console, &session, id_ok(&conversation_id)?).await?,
    })
}

async fn conversation_live(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
    Path(conversation_id): Path<String>,
) -> Result<Response, ConsoleError> {
    session.require(PEOPLE)?;
    let id = id_ok(&conversation_id)?.to_owned();
    let bot_id = session.bot_id.clone().unwrap_or_default();
    Ok(crate::live::changes(&console, &bot_id, Some(id))
        .await?
        .into_response())
}

fn back(conversation_id: &str, what: &str) -> Response {
    Redirect::to(&format!(
        "/console/conversations/{conversation_id}?done={}",
        q(what)
    ))
    .into_response()
}

#[derive(Deserialize)]
struct HandoverForm {
    /// `human` or `bot`.
    to: String,
}

async fn handover(
    State(console): State<Arc<Console>>,
    Path(conversation_id): Path<String>,
    Posted { session, form, .. }: Posted<HandoverForm>,
) -> Result<Response, ConsoleError> {
    session.require(PEOPLE)?;
    let id = id_ok(&conversation_id)?;
    let body = match form.to.as_str() {
        "human" => json!({
            "to": "human",
            "agent": session.agent.clone().unwrap_or_else(|| "developer".into()),
        }),
        "bot" => json!({"to": "bot"}),
        other => return Err(ConsoleError::BadForm(format!("to: no {other:?}"))),
    };
    console
        .api
        .call(Call::send(
            "POST",
            &session.bearer,
            format!("/v1/conversations/{id}/handover"),
            Some(body),
        ))
        .await?
        .accepted()?;
    Ok(back(
        id,
        if form.to == "human" {
            "You hold the conversation: the bot's messages are held back."
        } else {
            "The bot answers the conversation again."
        },
    ))
}

#[derive(Deserialize)]
struct ReplyForm {
    user_id: String,
    #[serde(default)]
    text: String,
    /// Button labels, comma-separated: each sends its label back to the bot.
    #[serde(default)]
    buttons: String,
    /// A registry template's id, instead of text.
    #[serde(default)]
    template_id: String,
    /// Each form carries its own key, so a form sent twice sends once.
    #[serde(default)]
    idempotency_key: String,
}

async fn reply(
    State(console): State<Arc<Console>>,
    Path(conversation_id): Path<String>,
    Posted { session, form, .. }: Posted<ReplyForm>,
) -> Result<Response, ConsoleError> {
    session.require(PEOPLE)?;
    let id = id_ok(&conversation_id)?;
    let text = form.text.trim();
    let labels: Vec<&str> = form
        .buttons
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    let message = if !form.template_id.trim().is_empty() {
        json!({"type": "template", "id": form.template_id.trim()})
    } else if text.is_empty() {
        return Err(ConsoleError::BadForm(
            "write a message or pick a template".into(),
        ));
    } else if labels.is_empty() {
        json!({"type": "text", "text": text})
    } else {
        json!({
            "type": "buttons",
            "text": text,
            "buttons": labels
                .iter()
                .map(|l| json!({"type": "postback", "title": l, "payload": l}))
                .collect::<Vec<_>>(),
        })
    };
    let mut call = Call::send(
        "POST",
        &session.bearer,
        "/v1/messages",
        Some(json!({
            "user_id": form.user_id,
            "messages": [message],
            "source": "human",
        })),
    );
    if !form.idempotency_key.is_empty() {
        call.idempotency_key = Some(form.idempotency_key.chars().take(200).collect());
    }
    console.api.call(call).await?.accepted()?;
    Ok(back(id, "Sent."))
}
