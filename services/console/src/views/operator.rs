//! The operator's pages: bots and their channels (a form per platform, from the platform's
//! own description of its credentials), keys, switches, limits and fallback templates.

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use patchbay_contract::access::PLATFORMS;
use patchbay_contract::{BotSummary, ChannelView, CreatedBot, CreatedChannel, Platform, Tenant};
use patchbay_platform::spec::{CredentialField, FieldKind};
use serde::Deserialize;
use serde_json::json;

use crate::Console;
use crate::api::Call;
use crate::page::{ConsoleError, Nav, render, render_with};
use crate::session::{Posted, Role, Session, Signed};
use crate::views::{Items, Notice, id_ok, time};

pub(crate) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/bots", get(bots).post(create_bot))
        .route("/console/bots/{bot_id}", get(bot))
        .route("/console/bots/{bot_id}/state", post(set_state))
        .route("/console/bots/{bot_id}/fallback", post(set_fallback))
        .route("/console/bots/{bot_id}/keys/rotate", post(rotate_key))
        .route("/console/bots/{bot_id}/keys/revoke", post(revoke_key))
        .route("/console/bots/{bot_id}/developer", post(open_as_developer))
        .route("/console/bots/{bot_id}/channels/new", get(new_channel))
        .route("/console/bots/{bot_id}/channels", post(create_channel))
        .route(
            "/console/bots/{bot_id}/channels/{channel_id}/state",
            post(set_channel_state),
        )
}

#[derive(Template)]
#[template(path = "operator/bots.html")]
struct BotsPage {
    nav: Nav,
    bots: Vec<BotSummary>,
    tenants: Vec<Tenant>,
    error: Option<String>,
    name: String,
}

async fn bots(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Operator])?;
    bots_page(&console, &session, StatusCode::OK, None, String::new()).await
}

async fn bots_page(
    console: &Console,
    session: &Session,
    status: StatusCode,
    error: Option<String>,
    name: String,
) -> Result<Response, ConsoleError> {
    let bots: Items<BotSummary> = console.api.get(&session.bearer, "/admin/v1/bots").await?;
    let tenants: Items<Tenant> = console
        .api
        .get(&session.bearer, "/admin/v1/tenants")
        .await?;
    Ok(render_with(
        status,
        &BotsPage {
            nav: Nav::of(session, "bots"),
            bots: bots.items,
            tenants: tenants.items,
            error,
            name,
        },
    ))
}

#[derive(Deserialize)]
struct CreateBotForm {
    name: String,
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    webhook_url: String,
}

#[derive(Template)]
#[template(path = "operator/created_bot.html")]
struct CreatedBotPage {
    nav: Nav,
    bot: CreatedBot,
}

async fn create_bot(
    State(console): State<Arc<Console>>,
    Posted {
        mut session,
        form,
        token,
        ..
    }: Posted<CreateBotForm>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Operator])?;
    let mut body = json!({"name": form.name.trim()});
    if !form.tenant_id.is_empty() {
        body["tenant_id"] = form.tenant_id.into();
    }
    if !form.webhook_url.trim().is_empty() {
        body["webhook"] = json!({"url": form.webhook_url.trim()});
    }
    let answer = console
        .api
        .call(Call::send(
            "POST",
            &session.bearer,
            "/admin/v1/bots",
            Some(body),
        ))
        .await?;
    if answer.status == 422 || answer.status == 400 {
        let (_, message) = answer.error();
        return bots_page(
            &console,
            &session,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(message),
            form.name,
        )
        .await;
    }
    let bot: CreatedBot = answer.into()?;
    remember_key(&console, &token, &mut session, &bot.id, &bot.api_key).await?;
    render(&CreatedBotPage {
        nav: Nav::of(&session, "bots"),
        bot,
    })
}

/// One channel as the bot's page shows it.
struct ChannelRow {
    view: ChannelView,
    webhook_url: String,
    setup: Option<String>,
    /// When its platform last reached Patchbay, in words.
    seen: String,
}

#[derive(Template)]
#[template(path = "operator/bot.html")]
struct BotPage {
    nav: Nav,
    /// This session created the bot (or rotated its key): it may open its developer view.
    knows_key: bool,
    bot: BotSummary,
    channels: Vec<ChannelRow>,
    platforms: Vec<&'static str>,
    fallbacks: Vec<(String, String)>,
    notice: Option<String>,
}

async fn find_bot(
    console: &Console,
    session: &Session,
    bot_id: &str,
) -> Result<BotSummary, ConsoleError> {
    let bots: Items<BotSummary> = console.api.get(&session.bearer, "/admin/v1/bots").await?;
    bots.items
        .into_iter()
        .find(|b| b.id == bot_id)
        .ok_or_else(|| ConsoleError::Forbidden(format!("there is no bot {bot_id}")))
}

async fn bot(
    State(console): State<Arc<Console>>,
    Signed { session, .. }: Signed,
    Path(bot_id): Path<String>,
    Query(n): Query<Notice>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Operator])?;
    let bot = find_bot(&console, &session, id_ok(&bot_id)?).await?;
    let channels: Items<ChannelView> = console
        .api
        .get(&session.bearer, format!("/admin/v1/bots/{bot_id}/channels"))
        .await?;
    let channels = channels
        .items
        .into_iter()
        .map(|c| ChannelRow {
            webhook_url: format!("{}{}", console.public_url, c.webhook_path),
            setup: c
                .setup
                .as_ref()
                .map(|s| format!("{:?}: {} ({})", s.state, s.detail, time(&s.at))),
            seen: seen(c.activity.as_ref()),
            view: c,
        })
        .collect();
    let fallbacks = bot
        .fallback_templates
        .iter()
        .map(|(p, t)| {
            (
                p.as_str().to_owned(),
                serde_json::to_string(t).unwrap_or_default(),
            )
        })
        .collect();
    render(&BotPage {
        nav: Nav::of(&session, "bots"),
        knows_key: session.keys.contains_key(&bot.id),
        bot,
        channels,
        platforms: PLATFORMS.iter().map(|p| p.as_str()).collect(),
        fallbacks,
        notice: n.done,
    })
}

#[derive(Deserialize)]
struct StateForm {
    /// `enable`, `disable`, or `limits`.
    action: String,
    #[serde(default)]
    per_second: String,
    #[serde(default)]
    burst: String,
    #[serde(default)]
    handover_idle_minutes: String,
}

fn number(field: &str, value: &str) -> Result<u64, ConsoleError> {
    value
        .trim()
        .parse()
        .map_err(|_| ConsoleError::BadForm(format!("{field}: enter a whole number")))
}

async fn set_state(
    State(console): State<Arc<Console>>,
    Path(bot_id): Path<String>,
    Posted { session, form, .. }: Posted<StateForm>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Operator])?;
    let bot_id = id_ok(&bot_id)?;
    let mut body = json!({});
    match form.action.as_str() {
        "enable" => body["enabled"] = true.into(),
        "disable" => body["enabled"] = false.into(),
        "limits" => {
            if !form.per_second.trim().is_empty() {
                body["rate_limit"] = json!({
                    "per_second": number("per_second", &form.per_second)?,
                    "burst": number("burst", &form.burst)?,
                });
            }
            if !form.handover_idle_minutes.trim().is_empty() {
                body["handover_idle_minutes"] =
                    number("handover_idle_minutes", &form.handover_idle_minutes)?.into();
            }
        }
        other => return Err(ConsoleError::BadForm(format!("no action {other:?}"))),
    }
    console
        .api
        .call(Call::send(
            "PATCH",
            &session.bearer,
            format!("/admin/v1/bots/{bot_id}"),
            Some(body),
        ))
        .await?
        .accepted()?;
    Ok(done(bot_id, "Saved."))
}

fn done(bot_id: &str, what: &str) -> Response {
    axum::response::IntoResponse::into_response(Redirect::to(&format!(
        "/console/bots/{bot_id}?done={}",
        super::q(what)
    )))
}

#[derive(Deserialize)]
struct FallbackForm {
    platform: String,
    /// A registry template's id; empty removes the platform's fallback.
    #[serde(default)]
    template_id: String,
}

async fn set_fallback(
    State(console): State<Arc<Console>>,
    Path(bot_id): Path<String>,
    Posted { session, form, .. }: Posted<FallbackForm>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Operator])?;
    let bot_id = id_ok(&bot_id)?;
    let platform: Platform = form
        .platform
        .parse()
        .map_err(|e: String| ConsoleError::BadForm(e))?;
    let template = match form.template_id.trim() {
        "" => serde_json::Value::Null,
        id => json!({"template_id": id}),
    };
    console
        .api
        .call(Call::send(
            "PATCH",
            &session.bearer,
            format!("/admin/v1/bots/{bot_id}"),
            Some(json!({"fallback_templates": {platform.as_str(): template}})),
        ))
        .await?
        .accepted()?;
    Ok(done(bot_id, "Fallback template saved."))
}

#[derive(Template)]
#[template(path = "operator/secret.html")]
struct SecretPage {
    nav: Nav,
    bot_id: String,
    title: &'static str,
    label: &'static str,
    secret: String,
    detail: String,
}

#[derive(Deserialize)]
struct RotateForm {
    #[serde(default)]
    overlap_seconds: String,
}

async fn rotate_key(
    State(console): State<Arc<Console>>,
    Path(bot_id): Path<String>,
    Posted {
        mut session,
        form,
        token,
        ..
    }: Posted<RotateForm>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Operator])?;
    let bot_id = id_ok(&bot_id)?;
    let body = match form.overlap_seconds.trim() {
        "" => json!({}),
        s => json!({"overlap_seconds": number("overlap_seconds", s)?}),
    };
    let key: patchbay_contract::RotatedKey = console
        .api
        .call(Call::send(
            "POST",
            &session.bearer,
            format!("/admin/v1/bots/{bot_id}/keys/rotate"),
            Some(body),
        ))
        .await?
        .into()?;
    remember_key(&console, &token, &mut session, bot_id, &key.api_key).await?;
    render(&SecretPage {
        nav: Nav::of(&session, "bots"),
        bot_id: bot_id.to_owned(),
        title: "New API key",
        label: "API key",
        secret: key.api_key,
        detail: format!(
            "Key {}. The bot's other keys work until {}.",
            key.key_id,
            time(&key.previous_expire_at)
        ),
    })
}

#[derive(Deserialize)]
struct RevokeForm {
    key_id: String,
}

async fn revoke_key(
    State(console): State<Arc<Console>>,
    Path(bot_id): Path<String>,
    Posted { session, form, .. }: Posted<RevokeForm>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Operator])?;
    let bot_id = id_ok(&bot_id)?;
    let key_id = id_ok(form.key_id.trim())?;
    console
        .api
        .call(Call::send(
            "POST",
            &session.bearer,
            format!("/admin/v1/bots/{bot_id}/keys/{key_id}/revoke"),
            None,
        ))
        .await?
        .accepted()?;
    Ok(done(bot_id, &format!("Key {key_id} revoked.")))
}

/// One field of a channel form, with what was entered and the API's complaint about it.
struct FieldRow {
    field: CredentialField,
    value: String,
    error: Option<String>,
}

impl FieldRow {
    fn input_type(&self) -> &'static str {
        match self.field.kind {
            FieldKind::Secret => "password",
            FieldKind::Number => "number",
            FieldKind::Text | FieldKind::Flag => "text",
        }
    }

    fn is_flag(&self) -> bool {
        self.field.kind == FieldKind::Flag
    }
}

#[derive(Template)]
#[template(path = "operator/new_channel.html")]
struct NewChannelPage {
    nav: Nav,
    bot_id: String,
    platform: &'static str,
    fields: Vec<FieldRow>,
    api_base_url: String,
    error: Option<String>,
}

#[derive(Deserialize)]
struct PlatformQuery {
    platform: String,
}

fn channel_form(
    session: &Session,
    bot_id: &str,
    platform: Platform,
    values: &std::collections::HashMap<String, String>,
    error: Option<(Option<String>, String)>,
) -> Result<NewChannelPage, ConsoleError> {
    let spec = patchbay_registry::spec(platform)
        .map_err(|_| ConsoleError::BadForm(format!("no platform {platform}")))?;
    let (field, message) = error.unzip();
    let field = field.flatten();
    let fields = spec
        .form
        .iter()
        .map(|f| FieldRow {
            field: *f,
            value: values.get(f.name).cloned().unwrap_or_default(),
            error: (field.as_deref() == Some(f.name)).then(|| message.clone().unwrap_or_default()),
        })
        .collect::<Vec<_>>();
    // An error no field owns is shown above the form.
    let general = match (&field, &message) {
        (Some(f), Some(m)) if !spec.form.iter().any(|x| x.name == f) => Some(m.clone()),
        (None, Some(m)) => Some(m.clone()),
        _ => None,
    };
    Ok(NewChannelPage {
        nav: Nav::of(session, "bots"),
        bot_id: bot_id.to_owned(),
        platform: platform.as_str(),
        fields,
        api_base_url: values.get("api_base_url").cloned().unwrap_or_default(),
        error: general,
    })
}

async fn new_channel(
    Signed { session, .. }: Signed,
    Path(bot_id): Path<String>,
    Query(q): Query<PlatformQuery>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Operator])?;
    let platform: Platform = q.platform.parse().map_err(ConsoleError::BadForm)?;
    render(&channel_form(
        &session,
        id_ok(&bot_id)?,
        platform,
        &Default::default(),
        None,
    )?)
}

#[derive(Template)]
#[template(path = "operator/created_channel.html")]
struct CreatedChannelPage {
    nav: Nav,
    knows_key: bool,
    channel: CreatedChannel,
    webhook_url: String,
    generated: Vec<(String, String)>,
}

async fn create_channel(
    State(console): State<Arc<Console>>,
    Path(bot_id): Path<String>,
    Posted { session, form, .. }: Posted<std::collections::HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Operator])?;
    let bot_id = id_ok(&bot_id)?;
    let platform: Platform = form
        .get("platform")
        .map(String::as_str)
        .unwrap_or_default()
        .parse()
        .map_err(ConsoleError::BadForm)?;
    let spec = patchbay_registry::spec(platform)
        .map_err(|_| ConsoleError::BadForm(format!("no platform {platform}")))?;
    let mut credentials = serde_json::Map::new();
    for f in spec.form {
        let value = form.get(f.name).map(|v| v.trim()).unwrap_or_default();
        match f.kind {
            FieldKind::Flag => {
                credentials.insert(f.name.into(), (value == "on").into());
            }
            _ if value.is_empty() => {}
            FieldKind::Number => {
                let n: u64 = value.parse().map_err(|_| {
                    ConsoleError::BadForm(format!("{}: enter a whole number", f.label))
                })?;
                credentials.insert(f.name.into(), n.into());
            }
            FieldKind::Text | FieldKind::Secret => {
                credentials.insert(f.name.into(), value.into());
            }
        }
    }
    let mut body = json!({"platform": platform.as_str(), "credentials": credentials});
    if let Some(url) = form
        .get("api_base_url")
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
    {
        body["api_base_url"] = url.into();
    }
    let answer = console
        .api
        .call(Call::send(
            "POST",
            &session.bearer,
            format!("/admin/v1/bots/{bot_id}/channels"),
            Some(body),
        ))
        .await?;
    if answer.status == 422 || answer.status == 400 {
        // The API names the field: "credentials.<name>: …" or "<field>: …".
        let (_, message) = answer.error();
        let field = message
            .split_once(':')
            .map(|(f, _)| f.trim().trim_start_matches("credentials.").to_owned());
        let mut values = form.clone();
        // Secrets are not sent back to the browser.
        for f in spec.form {
            if f.kind == FieldKind::Secret {
                values.remove(f.name);
            }
        }
        return Ok(render_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            &channel_form(&session, bot_id, platform, &values, Some((field, message)))?,
        ));
    }
    let channel: CreatedChannel = answer.into()?;
    let generated = channel
        .generated
        .as_ref()
        .and_then(|g| g.as_object())
        .map(|g| {
            g.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    render(&CreatedChannelPage {
        nav: Nav::of(&session, "bots"),
        knows_key: session.keys.contains_key(bot_id),
        webhook_url: format!("{}{}", console.public_url, channel.webhook_path),
        channel,
        generated,
    })
}

#[derive(Deserialize)]
struct ChannelStateForm {
    enabled: String,
}

async fn set_channel_state(
    State(console): State<Arc<Console>>,
    Path((bot_id, channel_id)): Path<(String, String)>,
    Posted { session, form, .. }: Posted<ChannelStateForm>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Operator])?;
    let (bot_id, channel_id) = (id_ok(&bot_id)?, id_ok(&channel_id)?);
    let enabled = form.enabled == "true";
    console
        .api
        .call(Call::send(
            "PATCH",
            &session.bearer,
            format!("/admin/v1/bots/{bot_id}/channels/{channel_id}"),
            Some(json!({"enabled": enabled})),
        ))
        .await?
        .accepted()?;
    Ok(done(
        bot_id,
        &format!(
            "Channel {channel_id} {}.",
            if enabled { "enabled" } else { "disabled" }
        ),
    ))
}

/// Keeps a bot's new API key in the operator's session (at most the last 20), so its
/// developer view can be opened from here.
async fn remember_key(
    console: &Console,
    token: &str,
    session: &mut Session,
    bot_id: &str,
    api_key: &str,
) -> Result<(), ConsoleError> {
    if session.keys.len() >= 20 && !session.keys.contains_key(bot_id) {
        let first = session.keys.keys().next().cloned();
        if let Some(first) = first {
            session.keys.remove(&first);
        }
    }
    session.keys.insert(bot_id.to_owned(), api_key.to_owned());
    console.sessions.update(token, session).await
}

/// `POST /console/bots/{bot_id}/developer`: signs in as the bot's developer with the key this
/// session created (the operator's session ends; the admin token signs in again).
async fn open_as_developer(
    State(console): State<Arc<Console>>,
    Path(bot_id): Path<String>,
    Posted { session, token, .. }: Posted<super::sign_in::Empty>,
) -> Result<Response, ConsoleError> {
    session.require(&[Role::Operator])?;
    let key = session.keys.get(id_ok(&bot_id)?).ok_or_else(|| {
        ConsoleError::Forbidden(
            "this session did not create the bot's key: sign in with one of its keys".into(),
        )
    })?;
    match super::sign_in::start_session(&console, key).await? {
        Ok(response) => {
            console.sessions.end(&token).await?;
            Ok(response)
        }
        Err((_, message)) => Err(ConsoleError::Forbidden(message)),
    }
}

/// A channel's activity as its row says it.
fn seen(activity: Option<&patchbay_contract::ChannelActivity>) -> String {
    let handshake = activity
        .and_then(|a| a.handshake_at.as_ref())
        .map(|at| format!("; handshake answered {}", time(at)))
        .unwrap_or_default();
    match activity.and_then(|a| a.last_event_at.as_ref()) {
        Some(at) => format!("last event {}{handshake}", time(at)),
        None => format!("no event yet{handshake}"),
    }
}
