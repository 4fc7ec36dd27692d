//! chat-api (WhatsApp) compatibility: the methods its clients call, as a thin translation onto
//! the native paths (`docs/compat.md`, "chat-api").
//!
//! `POST|GET /chat-api/instance{channel_id}/{method}?token=<API key or access token>` for one of
//! the bot's WhatsApp channels, and `/chat-api/{method}` for the bot's only one (chat-api's
//! short URLs): `message`/`sendMessage`, `sendFile`, `sendTemplate`, `webhook`, `status`, `me`,
//! `messages`. The token is any credential of the bot, with the scope the method needs. Errors
//! are chat-api's: `{"error": "…"}` (with the matching status), and a refused send answers
//! `{"sent": false, "message": "…"}`.

// chat-api's answers, errors included, are whole responses of its own shape; the error side is
// an axum `Response` (128 bytes), returned once per request.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use patchbay_contract::chat_api::{chat_id, phone_of, type_and_body};
use patchbay_contract::content::{Media, Template, TemplateComponent, TemplateMessage};
use patchbay_contract::{
    Content, HistoryPage, HistoryRequest, InboxEntry, InboxRequest, Platform, Recipient,
    UpdateWebhookRequest, V1, WebhookFlavour, WebhookInput, WebhookSettings, auth_ops, router_ops,
};
use patchbay_runtime::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{BotAuth, KeyOwner};
use crate::{Api, ask};

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route(
            "/chat-api/{instance}/{method}",
            get(instance_call).post(instance_call),
        )
        .route("/chat-api/{method}", get(short_call).post(short_call))
}

/// chat-api's error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// An [`ApiError`] in chat-api's shape.
fn from_api(e: ApiError) -> Response {
    let status = e.status;
    error(status, e.message)
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: Option<String>,
    #[serde(default, rename = "chatId")]
    chat_id: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// One chat-api request as both routes take it; `owner` is the `?token=` the rate-limit layer
/// already resolved.
struct Request {
    http: Method,
    q: TokenQuery,
    headers: HeaderMap,
    body: Bytes,
    owner: Option<KeyOwner>,
}

async fn instance_call(
    State(api): State<Arc<Api>>,
    Path((instance, method)): Path<(String, String)>,
    http: Method,
    Query(q): Query<TokenQuery>,
    owner: Option<axum::Extension<KeyOwner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(channel_id) = instance.strip_prefix("instance") else {
        return error(StatusCode::NOT_FOUND, format!("no instance {instance}"));
    };
    let owner = owner.map(|o| o.0);
    let req = Request {
        http,
        q,
        headers,
        body,
        owner,
    };
    call(&api, Some(channel_id), &method, req).await
}

async fn short_call(
    State(api): State<Arc<Api>>,
    Path(method): Path<String>,
    http: Method,
    Query(q): Query<TokenQuery>,
    owner: Option<axum::Extension<KeyOwner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let owner = owner.map(|o| o.0);
    let req = Request {
        http,
        q,
        headers,
        body,
        owner,
    };
    call(&api, None, &method, req).await
}

/// The scope each method needs.
fn scope(method: &str, http: &Method) -> Option<&'static str> {
    Some(match (method, *http == Method::GET) {
        ("message" | "sendMessage" | "sendFile" | "sendTemplate", false) => "messages:send",
        ("messages", true) => "messages:read",
        ("webhook" | "status" | "me", true) => "settings:read",
        ("webhook" | "me", false) => "settings:write",
        _ => return None,
    })
}

async fn call(api: &Api, instance: Option<&str>, method: &str, req: Request) -> Response {
    let Request {
        http,
        q,
        headers,
        body,
        owner,
    } = req;
    let headers = &headers;
    let Some(needed) = scope(method, &http) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no method {http} {method} (docs/compat.md lists what works)"),
        );
    };
    let Some(token) = q.token.as_deref().filter(|t| !t.is_empty()) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "Wrong token. Please provide token as a get parameter.",
        );
    };
    let bot = match authenticate(api, token, owner, needed).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let channel_id = match channel(api, &bot, instance).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    // JSON, or form fields (chat-api took both; the 1msg SDK sends its plain methods' fields
    // form-encoded).
    let form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let json = || -> Result<Value, Response> {
        if body.is_empty() {
            return Ok(json!({}));
        }
        if form {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
                .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid form: {e}")))?;
            return Ok(Value::Object(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))
    };
    let result = match (method, http == Method::GET) {
        ("message" | "sendMessage", false) => match json() {
            Ok(b) => send_message(api, &bot, &channel_id, headers, &b).await,
            Err(r) => return r,
        },
        ("sendFile", false) => match json() {
            Ok(b) => send_file(api, &bot, &channel_id, headers, &b).await,
            Err(r) => return r,
        },
        ("sendTemplate", false) => match json() {
            Ok(b) => send_template(api, &bot, &channel_id, headers, &b).await,
            Err(r) => return r,
        },
        ("webhook", true) => webhook(api, &bot, None).await,
        ("webhook", false) => match json() {
            Ok(b) => webhook(api, &bot, Some(&b)).await,
            Err(r) => return r,
        },
        ("status", true) => status(api, &channel_id).await,
        ("me", true) => me(api, &bot, &channel_id, None).await,
        ("me", false) => match json() {
            Ok(b) => me(api, &bot, &channel_id, Some(b)).await,
            Err(r) => return r,
        },
        ("messages", true) => messages(api, &bot, &channel_id, q.chat_id, q.limit).await,
        _ => return error(StatusCode::NOT_FOUND, format!("no method {http} {method}")),
    };
    result.unwrap_or_else(|r| r)
}

/// The bot of `token` (resolved already as `owner` when the rate-limit layer found it) when
/// it may do `needed` (401/403 in chat-api's shape otherwise).
async fn authenticate(
    api: &Api,
    token: &str,
    owner: Option<KeyOwner>,
    needed: &str,
) -> Result<BotAuth, Response> {
    let owner = match owner {
        Some(o) => o,
        None => crate::auth::key_owner(api, token)
            .await
            .map_err(from_api)?
            .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "Wrong token."))?,
    };
    BotAuth::of(owner, needed, "this method").map_err(from_api)
}

/// The WhatsApp channel the call is for: the instance's, or the bot's only one.
async fn channel(api: &Api, bot: &BotAuth, instance: Option<&str>) -> Result<String, Response> {
    let record = api
        .view
        .bot(&bot.bot_id)
        .await
        .map_err(|e| from_api(e.into()))?
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "Wrong token."))?;
    let whatsapp: Vec<&str> = record
        .channels
        .iter()
        .filter(|c| c.platform == Platform::Whatsapp)
        .map(|c| c.id.as_str())
        .collect();
    match instance {
        Some(id) if whatsapp.contains(&id) => Ok(id.to_owned()),
        Some(id) => Err(error(
            StatusCode::NOT_FOUND,
            format!("Instance {id} is not a WhatsApp channel of this token's bot."),
        )),
        None => match whatsapp.as_slice() {
            [one] => Ok((*one).to_owned()),
            [] => Err(error(
                StatusCode::NOT_FOUND,
                "This token's bot has no WhatsApp channel.",
            )),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                "This token's bot has several WhatsApp channels: call /chat-api/instance<channel id>/….",
            )),
        },
    }
}

/// The recipient of a send: `phone` or `chatId`.
fn recipient(body: &Value, channel_id: &str) -> Result<Recipient, Response> {
    let given = body["phone"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| body["phone"].as_u64().map(|n| n.to_string()))
        .or_else(|| body["chatId"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let phone = phone_of(&given);
    if phone.len() < 6 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Give phone (digits with the country code) or chatId (<digits>@c.us).",
        ));
    }
    Ok(Recipient::Address {
        platform: Platform::Whatsapp,
        address: phone,
        channel_id: Some(channel_id.to_owned()),
    })
}

/// Sends `messages`; chat-api's answer.
async fn send(
    api: &Api,
    bot: &BotAuth,
    headers: &HeaderMap,
    to: Recipient,
    messages: Vec<Content>,
) -> Result<Response, Response> {
    let phone = match &to {
        Recipient::Address { address, .. } => address.clone(),
        Recipient::User { user_id } => user_id.clone(),
    };
    let refused = |e: ApiError| {
        (
            e.status,
            axum::Json(json!({"sent": false, "message": e.message, "error": e.code})),
        )
            .into_response()
    };
    crate::check_messages(&messages, 1).map_err(refused)?;
    let (source, source_id) = bot.source(None, None).map_err(refused)?;
    let to = match crate::check_recipient(api, bot, &to, &messages, source).await {
        Ok(()) => to,
        // A number that never wrote: chat-api's sends start a dialog with it (a template, as
        // WhatsApp's window wants), so it becomes a contact first, as
        // `POST /v1/conversations` makes one.
        Err(e) if e.code == "user_not_found" => {
            let to = new_contact(api, bot, &to).await.map_err(refused)?;
            crate::check_recipient(api, bot, &to, &messages, source)
                .await
                .map_err(refused)?;
            to
        }
        Err(e) => return Err(refused(e)),
    };
    let accepted = crate::queue(api, &bot.bot_id, headers, to, messages, source, source_id)
        .await
        .map_err(refused)?;
    let id = accepted.message_ids.first().cloned().unwrap_or_default();
    Ok(axum::Json(json!({
        "sent": true,
        "id": id,
        "message": format!("Sent to {phone}"),
        "queueNumber": 0,
    }))
    .into_response())
}

/// The contact of a phone number that never wrote, created on the channel (or found).
async fn new_contact(api: &Api, bot: &BotAuth, to: &Recipient) -> Result<Recipient, ApiError> {
    let Recipient::Address {
        address,
        channel_id: Some(channel_id),
        ..
    } = to
    else {
        return Err(ApiError::not_found("no such user"));
    };
    let contact = patchbay_contract::Contact {
        phone: Some(format!("+{address}")),
        email: None,
        name: None,
    }
    .normalised()
    .map_err(|e| crate::unprocessable(e.to_string()))?;
    let channel = patchbay_contract::ChannelRef {
        id: channel_id.clone(),
        platform: Platform::Whatsapp,
    };
    let req = patchbay_contract::UpsertContactRequest {
        v: V1,
        bot_id: bot.bot_id.clone(),
        contact,
        channel: Some(channel),
        platform_user_id: Some(address.clone()),
    };
    let found: patchbay_contract::UpsertedContact =
        ask(api, "router", router_ops::UPSERT_CONTACT, &req).await?;
    Ok(Recipient::User {
        user_id: found.user.id,
    })
}

async fn send_message(
    api: &Api,
    bot: &BotAuth,
    channel_id: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Response, Response> {
    let to = recipient(body, channel_id)?;
    let text = body["body"].as_str().unwrap_or_default();
    if text.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Give body, the message's text.",
        ));
    }
    // A file by URL, as chat-api's `message` takes one with its file name.
    let content = match body["filename"].as_str() {
        Some(name) => file(text, Some(name), body["caption"].as_str()),
        None => Content::Text {
            text: text.to_owned(),
        },
    };
    send(api, bot, headers, to, vec![content]).await
}

/// A file by URL as the content its extension suggests.
fn file(url: &str, filename: Option<&str>, caption: Option<&str>) -> Content {
    let name = filename.unwrap_or(url).to_ascii_lowercase();
    let media = Media {
        url: Some(url.to_owned()),
        file_id: None,
        media_id: None,
        download_url: None,
        caption: caption.map(str::to_owned),
        filename: filename.map(str::to_owned),
        mime_type: None,
        preview_url: None,
        duration_ms: None,
        size_bytes: None,
    };
    let ext = name.rsplit('.').next().unwrap_or_default();
    match ext {
        "jpg" | "jpeg" | "png" | "webp" | "gif" => Content::Image(media),
        "mp4" | "3gp" => Content::Video(media),
        "mp3" | "ogg" | "aac" | "amr" | "m4a" => Content::Audio(media),
        _ => Content::File(media),
    }
}

async fn send_file(
    api: &Api,
    bot: &BotAuth,
    channel_id: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Response, Response> {
    let to = recipient(body, channel_id)?;
    let url = body["body"].as_str().unwrap_or_default();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Give body, the file's http(s) URL (uploads as data URIs are not taken).",
        ));
    }
    let content = file(url, body["filename"].as_str(), body["caption"].as_str());
    send(api, bot, headers, to, vec![content]).await
}

async fn send_template(
    api: &Api,
    bot: &BotAuth,
    channel_id: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Response, Response> {
    let to = recipient(body, channel_id)?;
    let name = body["template"].as_str().unwrap_or_default();
    let language = body["language"]["code"]
        .as_str()
        .or_else(|| body["language"].as_str())
        .unwrap_or_default();
    if name.is_empty() || language.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Give template (its name) and language.code.",
        ));
    }
    // chat-api's params are WhatsApp's components; a footer has no variables.
    let mut components = Vec::new();
    for (i, section) in body["params"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if section["type"] == "footer" {
            continue;
        }
        let component: TemplateComponent = serde_json::from_value(section.clone())
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("params[{i}]: {e}")))?;
        components.push(component);
    }
    let template = Content::Template(TemplateMessage::Inline(Template {
        name: name.to_owned(),
        language: language.to_owned(),
        components,
    }));
    send(api, bot, headers, to, vec![template]).await
}

async fn webhook(api: &Api, bot: &BotAuth, set: Option<&Value>) -> Result<Response, Response> {
    let settings: WebhookSettings = match set {
        None => api
            .view
            .bot(&bot.bot_id)
            .await
            .map_err(|e| from_api(e.into()))?
            .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "Wrong token."))?
            .webhook
            .clone(),
        Some(body) => {
            let url = body["webhookUrl"].as_str().unwrap_or_default();
            let req = UpdateWebhookRequest {
                v: V1,
                bot_id: bot.bot_id.clone(),
                webhook: WebhookInput {
                    url: Some(url.to_owned()),
                    flavour: Some(WebhookFlavour::ChatApi),
                    events: Some(vec![
                        "message.received".into(),
                        "message.sent".into(),
                        "message.delivered".into(),
                        "message.read".into(),
                        "message.failed".into(),
                    ]),
                    platforms: None,
                    verify_token: None,
                },
            };
            ask(api, "auth", auth_ops::UPDATE_WEBHOOK, &req)
                .await
                .map_err(from_api)?
        }
    };
    let url = settings.url.unwrap_or_default();
    Ok(axum::Json(json!({"set": set.is_some(), "webhookUrl": url})).into_response())
}

async fn status(api: &Api, channel_id: &str) -> Result<Response, Response> {
    let enabled = api
        .view
        .channel(channel_id)
        .await
        .map_err(|e| from_api(e.into()))?
        .is_some_and(|c| c.enabled);
    Ok(axum::Json(if enabled {
        json!({"accountStatus": "authenticated"})
    } else {
        json!({"accountStatus": "loading", "statusData": {"substatus": "disabled",
               "title": "The channel is disabled", "msg": "An operator disabled this channel."}})
    })
    .into_response())
}

/// `me`: the business profile (chat-api's `photo` is WhatsApp's picture).
async fn me(
    api: &Api,
    bot: &BotAuth,
    channel_id: &str,
    change: Option<Value>,
) -> Result<Response, Response> {
    let change = change.and_then(|v| v.as_object().cloned()).map(|mut m| {
        if let Some(photo) = m.remove("photo") {
            m.insert("photo_url".into(), photo);
        }
        // chat-api's `phone` is the number itself: not a profile field at WhatsApp.
        m.remove("phone");
        // chat-api's clients send "" for what they leave as it is (the seed's own example).
        m.retain(|_, v| v.as_str() != Some(""));
        m
    });
    let axum::Json(profile) =
        crate::channels::channel_profile(api, &bot.bot_id, channel_id, change)
            .await
            .map_err(from_api)?;
    let mut out = profile.profile;
    if let Some(photo) = out.remove("profile_picture_url") {
        out.insert("photo".into(), photo);
    }
    Ok(axum::Json(Value::Object(out)).into_response())
}

/// How many of the latest chats `messages` without a `chatId` reads.
const LATEST_CHATS: usize = 20;

/// `messages`: a chat's history (`chatId`), or without one the latest messages of the
/// channel's latest chats (at most [`LATEST_CHATS`]), oldest first, as chat-api lists them.
async fn messages(
    api: &Api,
    bot: &BotAuth,
    channel_id: &str,
    chat: Option<String>,
    limit: Option<u32>,
) -> Result<Response, Response> {
    let limit = limit.unwrap_or(100).clamp(1, 200);
    let inbox: Vec<InboxEntry> = ask(
        api,
        "router",
        router_ops::INBOX,
        &InboxRequest {
            v: V1,
            bot_id: bot.bot_id.clone(),
            handled_by: None,
            limit: 200,
        },
    )
    .await
    .map_err(from_api)?;
    let chats: Vec<InboxEntry> = match chat {
        Some(chat) => {
            // The chat's user, as a send to the phone finds them.
            let to = Recipient::Address {
                platform: Platform::Whatsapp,
                address: phone_of(&chat),
                channel_id: Some(channel_id.to_owned()),
            };
            let user: Result<patchbay_contract::UserProfile, ApiError> = ask(
                api,
                "router",
                router_ops::RESOLVE_RECIPIENT,
                &patchbay_contract::ResolveRecipientRequest {
                    v: V1,
                    bot_id: bot.bot_id.clone(),
                    to,
                },
            )
            .await;
            match user {
                Ok(u) => inbox.into_iter().filter(|e| e.user.id == u.id).collect(),
                Err(e) if e.status == StatusCode::NOT_FOUND => Vec::new(),
                Err(e) => return Err(from_api(e)),
            }
        }
        None => inbox
            .into_iter()
            .filter(|e| e.user.channel.id == channel_id)
            .take(LATEST_CHATS)
            .collect(),
    };
    let mut all: Vec<(chrono::DateTime<chrono::Utc>, Value)> = Vec::new();
    for entry in chats {
        let req = HistoryRequest {
            v: V1,
            bot_id: bot.bot_id.clone(),
            conversation_id: entry.conversation_id.clone(),
            before: None,
            limit,
        };
        let page: HistoryPage = ask(api, "router", router_ops::HISTORY, &req)
            .await
            .map_err(from_api)?;
        let name = entry.user.display_name.clone().unwrap_or_default();
        let chat = chat_id(
            entry
                .user
                .phone
                .as_deref()
                .unwrap_or(&entry.user.platform_user_id),
        );
        for m in &page.messages {
            let (kind, body, caption) = type_and_body(&m.content);
            let mine = m.direction == "outbound";
            all.push((
                m.created_at,
                json!({
                    "id": m.platform_message_id.clone().unwrap_or_else(|| m.id.clone()),
                    "body": body,
                    "fromMe": mine,
                    "self": i32::from(mine),
                    "isForwarded": false,
                    "author": chat,
                    "time": m.created_at.timestamp(),
                    "chatId": chat,
                    "type": kind,
                    "senderName": name,
                    "caption": caption,
                    "quotedMsgId": null,
                    "chatName": name,
                }),
            ));
        }
    }
    // The latest `limit`, oldest first, numbered.
    all.sort_by_key(|(at, _)| *at);
    let skip = all
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(usize::MAX));
    let items: Vec<Value> = all
        .into_iter()
        .skip(skip)
        .enumerate()
        .map(|(n, (_, mut m))| {
            m["messageNumber"] = json!(n + 1);
            m
        })
        .collect();
    Ok(axum::Json(json!({"messages": items, "lastMessageNumber": items.len()})).into_response())
}
