//! `ingress-custom`: the API of custom channels (mobile apps, devices, the tenant's own web
//! chat), where the app plays the messenger.
//!
//! The caller is authenticated before the body is read: a request without valid credentials
//! gets 401 whatever it carries.
//!
//! | route | auth | does |
//! |---|---|---|
//! | `POST /v1/custom/{channel_id}/users` | `Bearer <domain key>`, and for an `external_id` that already has a user `X-Patchbay-Registration` | register a user (201 with their token); publishes `user.subscribed` |
//! | `POST /v1/custom/{channel_id}/token` | `Bearer <user token>` | a new token for the token's user (a fresh lifetime) |
//! | `POST /v1/custom/{channel_id}/messages` | `Bearer <user token>` | send as the user; answers with the bot's replies, waiting a bounded time |
//! | `POST /api/webchat_apps/{id}/user`, `…/message` | BotDistrikt's: `domain` in the body, `Authorization: <webchat_id>` | the `botdistrikt` flavour ([`botdistrikt`]) |
//!
//! The domain key ships inside apps, so it registers new users only: whether an `external_id`
//! already has a user is told by the `<p>_custom_users` bucket (every registration creates its
//! entry atomically) and, for contacts the tenant created, by asking `bot-router`. Registering
//! it again takes the back end's signature ([`patchbay_custom::registration`]); a refused
//! registration publishes nothing. User tokens carry their issue time
//! ([`patchbay_custom::token`]); each message reads its user's and its channel's revocations
//! from the bucket ([`patchbay_custom::users`]) and refuses an expired or revoked token.
//!
//! Registrations and messages publish an envelope to `<p>.ingress.custom.<channel>` like any ingress (200/201 only
//! once JetStream stored it, 503 otherwise), so the message takes the normal path: normaliser,
//! router, the tenant's callback, an inline reply, `outbound-custom`. The sender announces each
//! message for the user on `<p>.custom.replies.<channel>.<user>`, and the router or the
//! dispatcher announces what became of the event on `<p>.custom.outcome.<event>`; a message
//! request listens on both (subscribed before it publishes) and answers when the tenant's
//! inline reply is complete, the tenant failed or did not want the event, or the wait is over.
//! Replies are pushed to the channel's event webhook as well, so none is lost to a request
//! that stopped waiting.

mod botdistrikt;
mod uchat;

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
    ChannelRecord, Content, CustomOutcome, CustomReply, GetUserRequest, IngressEnvelope, Platform,
    UserProfile, V1, router_ops,
};
use patchbay_custom::CustomCredentials;
use patchbay_custom::api::{RegisterUser, RegisteredUser, SendAsUser, SentAsUser};
use patchbay_custom::inbound::{AppUser, CustomBody};
use patchbay_custom::users::{Claim, Users};
use patchbay_custom::{registration, token};
use patchbay_runtime::http::{bearer_token, parse_json, read_body};
use patchbay_runtime::{ApiError, BoxError, Deps, Service};

struct Ingress {
    bus: Bus,
    view: ConfigView,
    key: MasterKey,
    users: Users,
    max_wait: Duration,
}

/// How long a registration waits for `bot-router` to say whether a contact exists.
const ROUTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let state = Arc::new(Ingress {
            bus: deps.bus.clone(),
            view: deps.view.clone(),
            key: deps.config.require_master_key()?,
            users: Users::open(deps.bus.jetstream(), deps.bus.subjects()).await?,
            max_wait: Duration::from_millis(deps.config.custom_reply_wait_ms),
        });
        let routes = Router::new()
            .route("/v1/custom/{channel_id}/users", post(register))
            .route("/v1/custom/{channel_id}/token", post(refresh))
            .route("/v1/custom/{channel_id}/messages", post(send_as_user))
            .route(
                "/api/webchat_apps/{webchat_app_id}/user",
                post(botdistrikt::user),
            )
            .route(
                "/api/webchat_apps/{webchat_app_id}/message",
                post(botdistrikt::message),
            )
            .route("/api/apichat/{channel_id}", post(uchat::send))
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

    /// Registers `user` on `channel` unless registered already (claimed in the users bucket,
    /// released again when publishing fails): whether they were new.
    async fn register_if_new(
        &self,
        channel: &ChannelRecord,
        user: AppUser,
    ) -> Result<bool, ApiError> {
        let id = user_id(&channel.id, &user.platform_user_id);
        let Claim::New(revision) = self
            .users
            .claim(&id, chrono::Utc::now())
            .await
            .map_err(ApiError::unavailable)?
        else {
            return Ok(false);
        };
        let envelope_id = new_id(prefix::ENVELOPE);
        let dedupe = format!("register:{envelope_id}");
        let order_key = user.platform_user_id.clone();
        let register = CustomBody::Register {
            user,
            at: chrono::Utc::now(),
        };
        if let Err(e) = self
            .publish(channel, envelope_id, &dedupe, &order_key, &register)
            .await
        {
            self.users.release(&id, revision).await;
            return Err(e);
        }
        Ok(true)
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
            .inspect_err(|e| outcome(e.outcome()))?;
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

fn refused(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    outcome("unauthorized");
    ApiError::new(status, code, message)
}

/// A new token of `platform_user_id`, issued now.
fn issued(
    channel: &ChannelRecord,
    creds: &CustomCredentials,
    platform_user_id: String,
) -> RegisteredUser {
    let now = chrono::Utc::now();
    let ttl = chrono::Duration::seconds(i64::try_from(creds.token_ttl_seconds).unwrap_or(i64::MAX));
    RegisteredUser {
        user_id: user_id(&channel.id, &platform_user_id),
        token: token::issue(
            &creds.token_secret,
            &channel.id,
            &platform_user_id,
            now.timestamp_millis(),
        ),
        expires_at: now
            .checked_add_signed(ttl)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
        platform_user_id,
    }
}

impl Ingress {
    /// Whether `bot-router` knows `user_id` of `bot_id` (a contact the tenant created with
    /// `POST /v1/conversations`, or a user registered before the bucket kept registrations).
    async fn router_knows(&self, bot_id: &str, user_id: &str) -> Result<bool, ApiError> {
        let subject = self.bus.subjects().rpc("router", router_ops::GET_USER);
        let req = GetUserRequest {
            v: V1,
            bot_id: bot_id.to_owned(),
            user_id: user_id.to_owned(),
        };
        match self
            .bus
            .request::<_, UserProfile>(&subject, &req, ROUTER_TIMEOUT)
            .await?
        {
            Ok(_) => Ok(true),
            Err(e) if e.status == 404 => Ok(false),
            Err(e) => Err(e.into()),
        }
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
    if !creds.is_domain_key(given) {
        outcome("unauthorized");
        return Err(ApiError::unauthorized("wrong domain key"));
    }
    let body: RegisterUser = parse_json(&read_body(req).await?)?;
    let generated = body.external_id.is_none();
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
    // The back end's proof, over the external id as the app sent it (empty when generated).
    let proven = match headers.get(registration::HEADER) {
        None => false,
        Some(h) => {
            let signed_id = if generated {
                ""
            } else {
                platform_user_id.as_str()
            };
            registration::verify(
                creds.registration_secret.as_deref(),
                h.to_str().unwrap_or_default(),
                &channel.id,
                signed_id,
                chrono::Utc::now().timestamp(),
            )
            .map_err(|e| {
                refused(
                    StatusCode::UNAUTHORIZED,
                    "invalid_registration_proof",
                    e.to_string(),
                )
            })?;
            true
        }
    };
    if creds.require_signed_registration && !proven {
        return Err(refused(
            StatusCode::UNAUTHORIZED,
            "registration_proof_required",
            "this channel registers users only with X-Patchbay-Registration signed by the app's back end",
        ));
    }
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
    // Whether the external id already has a user: registered here before (the bucket's entry
    // is created atomically, so of two first registrations one wins), or a contact the router
    // knows. Without the back end's proof only a new user is registered.
    let user_id = user_id(&channel.id, &platform_user_id);
    let claim = s
        .users
        .claim(&user_id, chrono::Utc::now())
        .await
        .map_err(ApiError::unavailable)?;
    if !proven {
        let existing = match claim {
            Claim::Existing => true,
            Claim::New(_) if generated => false,
            Claim::New(revision) => match s.router_knows(&channel.bot_id, &user_id).await {
                Ok(known) => known,
                Err(e) => {
                    s.users.release(&user_id, revision).await;
                    return Err(e);
                }
            },
        };
        if existing {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "registration_proof_required",
                format!(
                    "external_id {platform_user_id} already has a user; register it again with X-Patchbay-Registration signed by the app's back end, or renew its token with POST /v1/custom/{}/token",
                    channel.id
                ),
            ));
        }
    }
    let envelope_id = new_id(prefix::ENVELOPE);
    let dedupe = format!("register:{envelope_id}");
    let body = CustomBody::Register {
        user,
        at: chrono::Utc::now(),
    };
    if let Err(e) = s
        .publish(&channel, envelope_id, &dedupe, &platform_user_id, &body)
        .await
    {
        // Not registered: the app's retry is a first registration again.
        if let Claim::New(revision) = claim {
            s.users.release(&user_id, revision).await;
        }
        return Err(e);
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(issued(&channel, &creds, platform_user_id)),
    ))
}

/// Why a token is refused, as the app is told.
fn token_refused(refusal: token::Refusal, legacy: bool, channel_id: &str) -> ApiError {
    match (refusal, legacy) {
        (token::Refusal::Revoked, _) => refused(
            StatusCode::UNAUTHORIZED,
            "token_revoked",
            "this token was revoked; register the user again",
        ),
        (token::Refusal::Expired, true) => refused(
            StatusCode::UNAUTHORIZED,
            "token_expired",
            format!(
                "a token from before tokens expired; exchange it with POST /v1/custom/{channel_id}/token"
            ),
        ),
        (token::Refusal::Expired, false) => refused(
            StatusCode::UNAUTHORIZED,
            "token_expired",
            "this token expired; register the user again",
        ),
    }
}

impl Ingress {
    /// The user whose token `headers` carries, if the token is the channel's (401 otherwise)
    /// and was not revoked; `fresh` also wants it unexpired.
    async fn token_user(
        &self,
        channel: &ChannelRecord,
        creds: &CustomCredentials,
        headers: &HeaderMap,
        fresh: bool,
    ) -> Result<String, ApiError> {
        let given = bearer_token(headers).ok_or_else(|| {
            outcome("unauthorized");
            ApiError::unauthorized("send Authorization: Bearer <the user's token>")
        })?;
        let verified = token::verify(&creds.token_secret, &channel.id, given).ok_or_else(|| {
            outcome("unauthorized");
            ApiError::unauthorized("not a token of this channel's users")
        })?;
        let revoked_at = self
            .users
            .revoked_at_ms(&channel.id, &user_id(&channel.id, verified.user))
            .await
            .map_err(ApiError::unavailable)?;
        let legacy = verified.issued_at_ms.is_none();
        let checked = if fresh {
            verified.check(
                chrono::Utc::now().timestamp_millis(),
                creds.token_ttl_seconds,
                revoked_at,
            )
        } else if verified.revoked_by(revoked_at) {
            Err(token::Refusal::Revoked)
        } else {
            Ok(())
        };
        checked.map_err(|r| token_refused(r, legacy, &channel.id))?;
        Ok(verified.user.to_owned())
    }
}

/// `POST /v1/custom/{channel_id}/token`: a new token for the user of an unexpired, unrevoked
/// token, or of a token from before tokens expired that no revocation covers (the way such
/// tokens are exchanged). Publishes nothing.
async fn refresh(
    State(s): State<Arc<Ingress>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<RegisteredUser>, ApiError> {
    let (channel, creds) = s.channel(&channel_id).await?;
    let given = bearer_token(&headers).unwrap_or_default();
    let legacy = token::verify(&creds.token_secret, &channel.id, given)
        .is_some_and(|v| v.issued_at_ms.is_none());
    // A legacy token is judged by revocation alone; a current one must be unexpired too.
    let platform_user_id = s.token_user(&channel, &creds, &headers, !legacy).await?;
    outcome("refreshed");
    Ok(axum::Json(issued(&channel, &creds, platform_user_id)))
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
    let platform_user_id = s.token_user(&channel, &creds, &headers, true).await?;
    let body: SendAsUser = parse_json(&read_body(req).await?)?;
    Ok(axum::Json(
        deliver(&s, &channel, platform_user_id, body).await?,
    ))
}

/// Publishes `body` as `platform_user_id`'s message on `channel` and waits (within the
/// bounds) for the bot's replies.
async fn deliver(
    s: &Ingress,
    channel: &ChannelRecord,
    platform_user_id: String,
    body: SendAsUser,
) -> Result<SentAsUser, ApiError> {
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
            channel,
            envelope_id,
            &dedupe,
            &platform_user_id,
            &CustomBody::Message {
                user: AppUser {
                    platform_user_id: platform_user_id.clone(),
                    ..AppUser::default()
                },
                message_id,
                content: Box::new(body.content),
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
    Ok(answer)
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
