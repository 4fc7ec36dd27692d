//! `ingress-custom`: the API of custom channels (mobile apps, devices, the tenant's own web
//! chat), where the app plays the messenger.
//!
//! The caller is authenticated before the body is read: a request without valid credentials
//! gets 401 whatever it carries.
//!
//! | route | auth | does |
//! |---|---|---|
//! | `POST /v1/custom/{channel_id}/users` | `Bearer <domain key>` | register a user (201 with their token); publishes `user.subscribed` |
//! | `POST /v1/custom/{channel_id}/messages` | `Bearer <user token>` | send as the user; answers with the bot's replies, waiting a bounded time |
//!
//! Both publish an envelope to `<p>.ingress.custom.<channel>` like any ingress (200/201 only
//! once JetStream stored it, 503 otherwise), so the message takes the normal path: normaliser,
//! router, the tenant's callback, an inline reply, `outbound-custom`. The sender announces each
//! message for the user on `<p>.custom.replies.<channel>.<user>`, and the router or the
//! dispatcher announces what became of the event on `<p>.custom.outcome.<event>`; a message
//! request listens on both (subscribed before it publishes) and answers when the tenant's
//! inline reply is complete, the tenant failed or did not want the event, or the wait is over.
//! Replies are pushed to the channel's event webhook as well, so none is lost to a request
//! that stopped waiting.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use futures::StreamExt;
use futures::future::BoxFuture;
use patchbay_bus::{Bus, ConfigView};
use patchbay_config::MasterKey;
use patchbay_contract::ids::{derive_id, new_id, prefix, user_id};
use patchbay_contract::{
    ChannelRecord, Content, CustomOutcome, CustomReply, IngressEnvelope, Platform, V1,
};
use patchbay_custom::CustomCredentials;
use patchbay_custom::api::{RegisterUser, RegisteredUser, SendAsUser, SentAsUser};
use patchbay_custom::inbound::{AppUser, CustomBody};
use patchbay_custom::token;
use patchbay_runtime::http::{bearer_token, parse_json, read_body};
use patchbay_runtime::{ApiError, BoxError, Deps, Service};
use subtle::ConstantTimeEq;

struct Ingress {
    bus: Bus,
    view: ConfigView,
    key: MasterKey,
    max_wait: Duration,
}

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let state = Arc::new(Ingress {
            bus: deps.bus.clone(),
            view: deps.view.clone(),
            key: deps.config.require_master_key()?,
            max_wait: Duration::from_millis(deps.config.custom_reply_wait_ms),
        });
        let routes = Router::new()
            .route("/v1/custom/{channel_id}/users", post(register))
            .route("/v1/custom/{channel_id}/messages", post(send_as_user))
            .layer(DefaultBodyLimit::max(deps.config.ingress_max_body_bytes))
            .with_state(state);
        Ok(Service::new("ingress-custom").routes(routes))
    })
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        format!("{field}: {message}"),
    )
}

fn outcome(o: &'static str) {
    metrics::counter!("patchbay_ingress_requests_total", "platform" => "custom", "outcome" => o)
        .increment(1);
}

impl Ingress {
    /// The enabled custom channel `id` and its opened credentials (404 otherwise).
    async fn channel(&self, id: &str) -> Result<(Arc<ChannelRecord>, CustomCredentials), ApiError> {
        let channel = self
            .view
            .channel(id)
            .await?
            .filter(|c| c.platform == Platform::Custom && c.enabled)
            .ok_or_else(|| {
                outcome("unknown_channel");
                ApiError::not_found(format!("no custom channel {id}"))
            })?;
        let creds = patchbay_platform::ingress::open_credentials(&self.key, &channel)
            .map_err(ApiError::internal)?;
        Ok((channel, creds))
    }

    /// Publishes `body` as an envelope of `channel`; whether JetStream had it already.
    async fn publish(
        &self,
        channel: &ChannelRecord,
        envelope_id: String,
        dedupe: &str,
        order_key: &str,
        body: &CustomBody,
    ) -> Result<bool, ApiError> {
        let envelope = IngressEnvelope {
            v: V1,
            id: envelope_id,
            platform: Platform::Custom,
            channel_id: channel.id.clone(),
            bot_id: channel.bot_id.clone(),
            received_at: chrono::Utc::now(),
            dedupe_key: format!("custom:{}:{dedupe}", channel.id),
            body: serde_json::to_value(body).map_err(ApiError::internal)?,
            order_key: Some(order_key.to_owned()),
        };
        let subject = self.bus.subjects().ingress(Platform::Custom, &channel.id)?;
        let published = self
            .bus
            .publish(&subject, &envelope.dedupe_key, &envelope)
            .await
            .inspect_err(|e| {
                outcome(match e {
                    patchbay_bus::BusError::TooLarge(_) => "too_large",
                    patchbay_bus::BusError::Backlogged(_) => "backlogged",
                    _ => "unavailable",
                })
            })?;
        outcome(if published.duplicate {
            "duplicate"
        } else {
            "accepted"
        });
        Ok(published.duplicate)
    }
}

fn optional_text(field: &str, v: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    match v.map(|s| s.trim().to_owned()) {
        Some(s) if s.is_empty() => Ok(None),
        Some(s) if s.chars().count() > max => {
            Err(invalid(field, &format!("at most {max} characters")))
        }
        other => Ok(other),
    }
}

async fn register(
    State(s): State<Arc<Ingress>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> Result<(StatusCode, axum::Json<RegisteredUser>), ApiError> {
    let (channel, creds) = s.channel(&channel_id).await?;
    let given = bearer_token(&headers).ok_or_else(|| {
        outcome("unauthorized");
        ApiError::unauthorized("send Authorization: Bearer <the channel's domain key>")
    })?;
    if !bool::from(given.as_bytes().ct_eq(creds.domain_key.as_bytes())) {
        outcome("unauthorized");
        return Err(ApiError::unauthorized("wrong domain key"));
    }
    let body: RegisterUser = parse_json(&read_body(req).await?)?;
    let platform_user_id = match body.external_id {
        Some(id) if token::valid_user_id(&id) => id,
        Some(_) => {
            return Err(invalid(
                "external_id",
                "must be 1 to 128 characters of A-Z, a-z, 0-9, '_', '-', ':', '@' or '.'",
            ));
        }
        None => format!("cu_{}", new_id("x").trim_start_matches("x_")),
    };
    let email = match optional_text("email", body.email, 254)? {
        Some(e) => Some(
            patchbay_contract::normalise_email(&e)
                .ok_or_else(|| invalid("email", "not an e-mail address"))?,
        ),
        None => None,
    };
    let phone = optional_text("phone", body.phone, 16)?;
    if let Some(p) = &phone
        && !patchbay_contract::is_e164(p)
    {
        return Err(invalid("phone", "must be E.164, e.g. +31612345678"));
    }
    let avatar_url = optional_text("avatar_url", body.avatar_url, 2048)?;
    if let Some(u) = &avatar_url
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        return Err(invalid("avatar_url", "must be an http or https URL"));
    }
    let user = AppUser {
        platform_user_id: platform_user_id.clone(),
        display_name: optional_text("display_name", body.display_name, 200)?,
        locale: optional_text("locale", body.locale, 35)?,
        avatar_url,
        email,
        phone,
    };
    let envelope_id = new_id(prefix::ENVELOPE);
    let dedupe = format!("register:{envelope_id}");
    let body = CustomBody::Register {
        user,
        at: chrono::Utc::now(),
    };
    s.publish(&channel, envelope_id, &dedupe, &platform_user_id, &body)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(RegisteredUser {
            user_id: user_id(&channel.id, &platform_user_id),
            token: token::issue(&creds.token_secret, &channel.id, &platform_user_id),
            platform_user_id,
        }),
    ))
}

/// What a user may send: not the bot's kinds (buttons, carousels, templates, …).
fn user_content(content: &Content) -> Result<(), ApiError> {
    match content {
        Content::Text { .. }
        | Content::Image(_)
        | Content::Audio(_)
        | Content::Voice(_)
        | Content::Video(_)
        | Content::File(_)
        | Content::Location(_)
        | Content::Sticker { .. }
        | Content::Postback { .. } => content.validate().map_err(|e| {
            let e = e.within("content");
            invalid(&e.field, &e.message)
        }),
        other => Err(invalid(
            "content.type",
            &format!(
                "users send text, image, audio, voice, video, file, location, sticker or postback, not {}",
                other.kind()
            ),
        )),
    }
}

async fn send_as_user(
    State(s): State<Arc<Ingress>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> Result<axum::Json<SentAsUser>, ApiError> {
    let (channel, creds) = s.channel(&channel_id).await?;
    let given = bearer_token(&headers).ok_or_else(|| {
        outcome("unauthorized");
        ApiError::unauthorized("send Authorization: Bearer <the user's token>")
    })?;
    let platform_user_id = token::verify(&creds.token_secret, &channel.id, given)
        .ok_or_else(|| {
            outcome("unauthorized");
            ApiError::unauthorized("not a token of this channel's users")
        })?
        .to_owned();
    let body: SendAsUser = parse_json(&read_body(req).await?)?;
    user_content(&body.content)?;
    let message_id = match body.id {
        Some(id) if (1..=200).contains(&id.len()) && !id.chars().any(char::is_control) => id,
        Some(_) => return Err(invalid("id", "must be 1 to 200 characters")),
        None => new_id("cm"),
    };
    let wait = body
        .wait_ms
        .map_or(s.max_wait, |ms| Duration::from_millis(ms).min(s.max_wait));
    let envelope_id = new_id(prefix::ENVELOPE);
    let event_id = derive_id(prefix::EVENT, &envelope_id, 0);
    let user_id = user_id(&channel.id, &platform_user_id);
    // Listen before publishing, so no reply can come before the request is ready for it.
    let listening = if wait.is_zero() {
        None
    } else {
        let client = s.bus.client();
        let replies = client
            .subscribe(s.bus.subjects().custom_replies(&channel.id, &user_id)?)
            .await
            .map_err(|e| ApiError::unavailable(format!("subscribing: {e}")))?;
        let outcomes = client
            .subscribe(s.bus.subjects().custom_outcome(&event_id)?)
            .await
            .map_err(|e| ApiError::unavailable(format!("subscribing: {e}")))?;
        client
            .flush()
            .await
            .map_err(|e| ApiError::unavailable(format!("subscribing: {e}")))?;
        Some((replies, outcomes))
    };
    let dedupe = format!("{platform_user_id}:{message_id}");
    let duplicate = s
        .publish(
            &channel,
            envelope_id,
            &dedupe,
            &platform_user_id,
            &CustomBody::Message {
                user: AppUser {
                    platform_user_id: platform_user_id.clone(),
                    ..AppUser::default()
                },
                message_id,
                content: body.content,
                at: chrono::Utc::now(),
            },
        )
        .await?;
    let mut answer = SentAsUser {
        message_id: derive_id(prefix::MESSAGE, &event_id, 0),
        event_id,
        replies: Vec::new(),
        complete: false,
        duplicate,
    };
    if let (Some((replies, outcomes)), false) = (listening, duplicate) {
        wait_for_replies(&mut answer, replies, outcomes, wait).await;
    }
    Ok(axum::Json(answer))
}

/// Collects the user's replies until the tenant's inline reply is complete, the tenant failed
/// or did not want the event, or `wait` is over.
async fn wait_for_replies(
    answer: &mut SentAsUser,
    mut replies: async_nats::Subscriber,
    mut outcomes: async_nats::Subscriber,
    wait: Duration,
) {
    let deadline = tokio::time::Instant::now() + wait;
    let mut expected: Option<CustomOutcome> = None;
    loop {
        if let Some(o) = &expected {
            let inline = answer
                .replies
                .iter()
                .filter(|r| r.in_reply_to.as_deref() == Some(answer.event_id.as_str()))
                .count();
            if !o.delivered || inline >= usize::try_from(o.replies).unwrap_or(usize::MAX) {
                answer.complete = o.delivered;
                break;
            }
        }
        tokio::select! {
            m = replies.next() => {
                let Some(m) = m else { break };
                match serde_json::from_slice::<CustomReply>(&m.payload) {
                    Ok(r) if !answer.replies.iter().any(|x| x.id == r.id) => answer.replies.push(r),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "unreadable reply announcement"),
                }
            }
            m = outcomes.next(), if expected.is_none() => {
                let Some(m) = m else { break };
                match serde_json::from_slice::<CustomOutcome>(&m.payload) {
                    Ok(o) => expected = Some(o),
                    Err(e) => tracing::warn!(error = %e, "unreadable outcome announcement"),
                }
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    // Unsubscribing is best effort; dropping the subscribers unsubscribes anyway.
    let _ = replies.unsubscribe().await;
    let _ = outcomes.unsubscribe().await;
}
