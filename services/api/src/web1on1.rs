//! Web1on1 (v2) compatibility: the calls the `chipchat` SDK makes, as a thin translation onto
//! the native paths (`docs/compat.md`, "Web1on1").
//!
//! - `POST /web1on1/v2/auth/token`: `{"clientId", "refreshToken"}` (the SDK's renewal) or
//!   `{"apiKey"}` (a bot's API key, or a partner's installation token) → `{"token",
//!   "refreshToken"}`. The token is a JWT, as the SDK needs (it decodes `_id`, `scope` and
//!   `grant_type`); it wraps a Patchbay access token and is signed with it, so nothing new is
//!   stored and revoking the key ends it.
//! - `POST /web1on1/v2/conversations`: the upsert: `organization` (the caller's tenant, bot
//!   id or bot name), `type: contact`, `contact.profile` (`telephone`/`email`, `name`) and
//!   `messages` (field messages set contact fields, chat messages with `meta.template` send a
//!   registry template, `/accept`, `/join` and `/leave` commands pass the conversation between
//!   an agent and the bot): 201 when the contact is new, 200 when found.
//! - `POST /web1on1/v2/conversations/{id}/messages`: one message or an array.
//! - `GET /web1on1/v2/conversations/{id}`.
//!
//! Every call takes `Authorization: Bearer` with such a JWT or any credential of the bot.
//! Errors are Web1on1's `{"error": {"message": …}}`; an expired token answers 401 `jwt
//! expired`, which is what makes the SDK renew it.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use patchbay_contract::content::{TemplateMessage, TemplateRef};
use patchbay_contract::templates::StoredTemplate;
use patchbay_contract::web1on1::{MessageView, Translated, conversation_json, translate};
use patchbay_contract::{
    Contact, Content, HandledBy, HistoryPage, HistoryRequest, IssuedTokens, Recipient, TemplateOp,
    TemplateRequest, TokenRequest, UserProfile, V1, auth_ops, router_ops,
};
use patchbay_runtime::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::auth::{BotAuth, KeyOwner, key_owner};
use crate::{Api, ask, check_messages, check_recipient, queue};

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/web1on1/v2/auth/token", post(token))
        .route("/web1on1/v2/conversations", post(upsert))
        .route("/web1on1/v2/conversations/{conversation_id}", get(read))
        .route(
            "/web1on1/v2/conversations/{conversation_id}/messages",
            post(post_messages),
        )
}

// ---------------------------------------------------------------------------------------------
// Tokens.

const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// A JWT the SDK reads (`_id`, `scope`, `grant_type`, `exp`), wrapping `credential` and
/// signed with it (HS256).
pub(crate) fn jwt(credential: &str, bot_id: &str, tenant_id: &str, expires_in: u64) -> String {
    let now = chrono::Utc::now().timestamp();
    let exp = now.saturating_add(i64::try_from(expires_in).unwrap_or(i64::MAX));
    let claims = json!({
        "_id": bot_id,
        "scope": "bot",
        "grant_type": "access_token",
        "organization": tenant_id,
        "iat": now,
        "exp": exp,
        "pbt": credential,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(JWT_HEADER),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = URL_SAFE_NO_PAD.encode(mac(credential, &signing_input));
    format!("{signing_input}.{signature}")
}

fn mac(key: &str, input: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(input.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// The credential a bearer stands for: a JWT of [`jwt`] opened (its signature checked in
/// constant time, its expiry enforced), or the bearer itself. The errors are the SDK's cue to
/// renew: `jwt expired`, `invalid signature`, `invalid token`.
pub(crate) fn credential(bearer: &str) -> Result<String, &'static str> {
    let mut parts = bearer.split('.');
    let (Some(header), Some(encoded), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(bearer.to_owned());
    };
    let claims: Value = URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()
        .and_then(|c| serde_json::from_slice(&c).ok())
        .ok_or("invalid token")?;
    let inner = claims["pbt"].as_str().ok_or("invalid token")?;
    let given = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "invalid signature")?;
    let expected = mac(inner, &format!("{header}.{encoded}"));
    if !bool::from(expected.ct_eq(&given)) {
        return Err("invalid signature");
    }
    if claims["exp"]
        .as_i64()
        .is_some_and(|exp| exp <= chrono::Utc::now().timestamp())
    {
        return Err("jwt expired");
    }
    Ok(inner.to_owned())
}

/// Web1on1's error answer.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

fn unauthorized(message: &str) -> ApiError {
    error(StatusCode::UNAUTHORIZED, "invalid_token", message)
}

/// The caller, when its credential holds `needed`.
async fn authenticate(
    api: &Api,
    headers: &HeaderMap,
    owner: Option<KeyOwner>,
    needed: &str,
) -> Result<BotAuth, ApiError> {
    let owner = match owner {
        Some(o) => o,
        None => {
            let bearer = crate::auth::bearer_token(headers)
                .ok_or_else(|| unauthorized("send Authorization: Bearer <token>"))?;
            let inner = credential(bearer).map_err(unauthorized)?;
            key_owner(api, &inner)
                .await?
                .ok_or_else(|| unauthorized("invalid token"))?
        }
    };
    BotAuth::of(owner, needed, "this call")
}

/// Body of `POST /web1on1/v2/auth/token`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenBody {
    /// The bot's e-mail (`bot+<bot id>@…`), as the SDK sends it; informative.
    #[serde(default)]
    client_id: Option<String>,
    /// The refresh token of the previous answer (used up by this one).
    #[serde(default)]
    refresh_token: Option<String>,
    /// A bot's API key (`pbk_…`), or an access token (a partner's for an installation).
    #[serde(default)]
    api_key: Option<String>,
}

async fn token(State(api): State<Arc<Api>>, body: Bytes) -> Result<axum::Json<Value>, ApiError> {
    let body: TokenBody = serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?;
    // clientId names the bot the refresh token names anyway; it is not checked (refusing
    // after the exchange would lose the pair it made).
    let _ = body.client_id;
    let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let (refresh, key) = (non_empty(body.refresh_token), non_empty(body.api_key));
    // An access token (a partner's) is wrapped as it is: it cannot be exchanged.
    if let Some(access) = key.as_deref().filter(|k| k.starts_with("pbat_")) {
        let record = api
            .view
            .api_key(&patchbay_config::secrets::api_key_hash(access))
            .await?
            .ok_or_else(|| unauthorized("invalid token"))?;
        let bot = api
            .view
            .bot(&record.bot_id)
            .await?
            .ok_or_else(|| unauthorized("invalid token"))?;
        let left = record.expires_at.map_or(0, |t| {
            u64::try_from((t - chrono::Utc::now()).num_seconds()).unwrap_or(0)
        });
        return Ok(axum::Json(json!({
            "token": jwt(access, &bot.id, &bot.tenant_id, left),
            "expiresIn": left,
        })));
    }
    if refresh.is_some() == key.is_some() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "give clientId and refreshToken, or apiKey",
        ));
    }
    let req = TokenRequest {
        v: V1,
        api_key: key,
        refresh_token: refresh,
    };
    let issued: IssuedTokens = ask(&api, "auth", auth_ops::ISSUE_TOKENS, &req).await?;
    let owner = key_owner(&api, &issued.access_token)
        .await?
        .and_then(|o| o.bot)
        .ok_or_else(|| unauthorized("invalid token"))?;
    Ok(axum::Json(json!({
        "token": jwt(&issued.access_token, &owner.id, &owner.tenant_id, issued.expires_in),
        "refreshToken": issued.refresh_token,
        "expiresIn": issued.expires_in,
    })))
}

// ---------------------------------------------------------------------------------------------
// Conversations.

/// Body of `POST /web1on1/v2/conversations`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct UpsertBody {
    /// The caller's tenant (`ten_…`), or its bot's id or name.
    organization: String,
    /// `contact`, the only kind of conversation Patchbay has.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// The contact: `profile.telephone` (E.164) and/or `profile.email`, and `profile.name`.
    contact: UpsertContact,
    /// One to ten messages.
    messages: Vec<Value>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct UpsertContact {
    profile: Profile,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct Profile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    telephone: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

/// One step of a message list: send these, or pass the conversation.
enum Step {
    Send(Vec<Content>),
    Handover(HandledBy),
}

/// The bot's templates, listed once per request when a message names one.
async fn registry_template(
    api: &Api,
    bot_id: &str,
    listed: &mut Option<Vec<StoredTemplate>>,
    reference: &str,
    name: &str,
) -> Result<String, String> {
    if listed.is_none() {
        let req = TemplateRequest {
            v: V1,
            bot_id: bot_id.to_owned(),
            op: TemplateOp::List,
        };
        *listed = Some(
            ask(api, "router", router_ops::TEMPLATES, &req)
                .await
                .map_err(|e| e.message)?,
        );
    }
    let all = listed.as_deref().unwrap_or_default();
    all.iter()
        .find(|t| t.id == reference || t.def.name == reference)
        .or_else(|| all.iter().find(|t| t.def.name == name))
        .map(|t| t.id.clone())
        .ok_or_else(|| {
            format!(
                "meta.template: this bot has no template {reference:?} (by id or name), nor one \
                 named {name:?}"
            )
        })
}

/// Web1on1 messages as steps, consecutive sends together; 422 naming the message at fault.
async fn steps(api: &Api, bot_id: &str, messages: &[Value]) -> Result<Vec<Step>, ApiError> {
    if messages.is_empty() || messages.len() > 10 {
        return Err(crate::unprocessable(
            "messages: give between 1 and 10 messages",
        ));
    }
    let mut listed = None;
    let mut out: Vec<Step> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let at = |e: String| crate::unprocessable(format!("messages[{i}]: {e}"));
        let content = match translate(m).map_err(at)? {
            Translated::Send(c) => c,
            Translated::Template {
                reference,
                name,
                meta,
            } => {
                let id = registry_template(api, bot_id, &mut listed, &reference, &name)
                    .await
                    .map_err(at)?;
                Content::Template(TemplateMessage::Registered(TemplateRef { id, meta }))
            }
            Translated::Handover(to) => {
                out.push(Step::Handover(to));
                continue;
            }
        };
        match out.last_mut() {
            Some(Step::Send(batch)) => batch.push(content),
            _ => out.push(Step::Send(vec![content])),
        }
    }
    for step in &out {
        if let Step::Send(batch) = step {
            check_messages(batch, 1)?;
        }
    }
    Ok(out)
}

/// The caller's bot.
async fn bot_record(
    api: &Api,
    bot: &BotAuth,
) -> Result<Arc<patchbay_contract::BotRecord>, ApiError> {
    api.view
        .bot(&bot.bot_id)
        .await?
        .ok_or_else(|| unauthorized("invalid token"))
}

/// Checks that `organization` names the caller's tenant or bot.
async fn check_organization(
    api: &Api,
    bot: &BotAuth,
    organization: &str,
) -> Result<(String, Arc<patchbay_contract::BotRecord>), ApiError> {
    let record = bot_record(api, bot).await?;
    if [&record.tenant_id, &record.id, &record.name].contains(&&organization.to_owned()) {
        Ok((record.tenant_id.clone(), record))
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            "organization_mismatch",
            format!(
                "organization {organization} is not this token's (its tenant is {}, its bot {} \
                 named {:?})",
                record.tenant_id, record.id, record.name
            ),
        ))
    }
}

/// Runs `steps` for the conversation's user; the messages sent, in Web1on1's shape.
async fn run(
    api: &Api,
    bot: &BotAuth,
    headers: &HeaderMap,
    organization: &str,
    user: &UserProfile,
    conversation_id: &str,
    steps: Vec<Step>,
) -> Result<Vec<Value>, ApiError> {
    let mut sent = Vec::new();
    let to = Recipient::User {
        user_id: user.id.clone(),
    };
    for step in steps {
        match step {
            Step::Send(batch) => {
                bot.may_send_through(&user.channel.id)?;
                let (source, source_id) = bot.source(None, None)?;
                check_recipient(api, bot, &to, &batch, source).await?;
                let accepted = queue(
                    api,
                    &bot.bot_id,
                    headers,
                    to.clone(),
                    batch.clone(),
                    source,
                    source_id,
                )
                .await?;
                let now = chrono::Utc::now();
                for (id, content) in accepted.message_ids.iter().zip(&batch) {
                    sent.push(
                        MessageView {
                            id,
                            conversation: conversation_id,
                            organization,
                            content,
                            role: "bot",
                            user: &bot.bot_id,
                            platform: user.channel.platform,
                            created_at: now,
                        }
                        .to_json(),
                    );
                }
            }
            Step::Handover(to) => {
                let req = patchbay_contract::HandoverRequest {
                    v: V1,
                    bot_id: bot.bot_id.clone(),
                    conversation_id: conversation_id.to_owned(),
                    to,
                    agent: bot.agent.as_deref().map(str::to_owned),
                };
                let state: patchbay_contract::ConversationState =
                    ask(api, "router", router_ops::HANDOVER, &req).await?;
                // The command as Web1on1 echoes it (commands are not stored as messages).
                sent.push(json!({
                    "conversation": conversation_id,
                    "organization": organization,
                    "type": "command",
                    "role": "bot",
                    "text": match to {
                        HandledBy::Human => "/accept",
                        HandledBy::Bot => "/leave",
                    },
                    "user": bot.bot_id,
                    "meta": {"handledBy": state.handled_by, "agent": state.agent},
                    "createdAt": chrono::Utc::now()
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                }));
            }
        }
    }
    Ok(sent)
}

async fn upsert(
    State(api): State<Arc<Api>>,
    owner: Option<axum::Extension<KeyOwner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let bot = authenticate(&api, &headers, owner.map(|o| o.0), "messages:send").await?;
    let body: UpsertBody = serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?;
    if body.kind.as_deref().is_some_and(|k| k != "contact") {
        return Err(crate::unprocessable(
            "type: Patchbay's conversations are contact conversations",
        ));
    }
    let (tenant, _) = check_organization(&api, &bot, &body.organization).await?;
    let steps = steps(&api, &bot.bot_id, &body.messages).await?;
    let p = body.contact.profile;
    let contact = Contact {
        phone: p.telephone,
        email: p.email,
        name: p.name,
    };
    let found = crate::conversations::find_or_create(&api, &bot, contact, None).await?;
    let messages = run(
        &api,
        &bot,
        &headers,
        &tenant,
        &found.user,
        &found.conversation_id,
        steps,
    )
    .await?;
    let mut conversation = conversation_json(
        &found.conversation_id,
        &tenant,
        &found.user.id,
        found.user.display_name.as_deref(),
        found.user.channel.platform,
        None,
    );
    conversation["messages"] = Value::Array(messages);
    let status = if found.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(conversation)))
}

/// The conversation's user, within the caller's bot (404 otherwise).
async fn user_of(api: &Api, bot: &BotAuth, conversation_id: &str) -> Result<UserProfile, ApiError> {
    let req = HistoryRequest {
        v: V1,
        bot_id: bot.bot_id.clone(),
        conversation_id: conversation_id.to_owned(),
        before: None,
        limit: 1,
    };
    let page: HistoryPage = ask(api, "router", router_ops::HISTORY, &req).await?;
    let user_id = page
        .user_id
        .ok_or_else(|| ApiError::not_found(format!("no conversation {conversation_id}")))?;
    let req = patchbay_contract::GetUserRequest {
        v: V1,
        bot_id: bot.bot_id.clone(),
        user_id,
    };
    ask(api, "router", router_ops::GET_USER, &req).await
}

async fn read(
    State(api): State<Arc<Api>>,
    owner: Option<axum::Extension<KeyOwner>>,
    headers: HeaderMap,
    Path(conversation_id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let bot = authenticate(&api, &headers, owner.map(|o| o.0), "messages:read").await?;
    let user = user_of(&api, &bot, &conversation_id).await?;
    let record = bot_record(&api, &bot).await?;
    let mut conversation = conversation_json(
        &conversation_id,
        &record.tenant_id,
        &user.id,
        user.display_name.as_deref(),
        user.channel.platform,
        None,
    );
    conversation["contact"] = json!({
        "id": user.id,
        "profile": {"name": user.display_name, "telephone": user.phone, "email": user.email},
        "meta": user.fields,
    });
    Ok(axum::Json(conversation))
}

async fn post_messages(
    State(api): State<Arc<Api>>,
    owner: Option<axum::Extension<KeyOwner>>,
    headers: HeaderMap,
    Path(conversation_id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let bot = authenticate(&api, &headers, owner.map(|o| o.0), "messages:send").await?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?;
    let (one, messages) = match body {
        Value::Array(list) => (false, list),
        single => (true, vec![single]),
    };
    let user = user_of(&api, &bot, &conversation_id).await?;
    let record = bot_record(&api, &bot).await?;
    let steps = steps(&api, &bot.bot_id, &messages).await?;
    let mut sent = run(
        &api,
        &bot,
        &headers,
        &record.tenant_id,
        &user,
        &conversation_id,
        steps,
    )
    .await?;
    let answer = if one && sent.len() == 1 {
        sent.remove(0)
    } else {
        Value::Array(sent)
    };
    Ok((StatusCode::CREATED, axum::Json(answer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwt_opens_to_its_credential_and_refuses_tampering_and_expiry() {
        let t = jwt("pbat_secret", "bot_1", "ten_1", 60);
        assert_eq!(credential(&t).unwrap(), "pbat_secret");
        // The SDK decodes the claims without a key.
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(t.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["_id"], "bot_1");
        assert_eq!(claims["scope"], "bot");
        // Another credential in the claims: the signature no longer matches.
        let forged_claims =
            URL_SAFE_NO_PAD.encode(claims.to_string().replace("pbat_secret", "pbat_other"));
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert_eq!(credential(&forged), Err("invalid signature"));
        assert_eq!(
            credential(&jwt("pbat_secret", "b", "t", 0)),
            Err("jwt expired")
        );
        assert_eq!(credential("pbk_plain").unwrap(), "pbk_plain");
        assert_eq!(credential("a.b.c"), Err("invalid token"));
    }
}
