//! `bot-router`: the owner of users, conversations and messages (schema `router`).
//!
//! * inbound (`<p>.inbound.>`): resolves the user and conversation, updates the messaging
//!   window, stores the message, and, if the bot subscribes to the event, stores a dispatch job
//!   on `<p>.dispatch.<bot>`. Effectively once: JetStream drops platform retries inside the
//!   duplicate window; `inbound_events` catches later ones and remembers whether the dispatch
//!   job was stored, so a redelivery after a crash finishes the job instead of dropping it;
//! * sends (`<p>.send.>`): resolves the recipient and channel, checks each message against the
//!   platform's messaging window (`patchbay_contract::windows`; the window starts at the
//!   conversation's `last_inbound_at`, which the inbound side keeps in the same upsert that
//!   resolves the conversation), stores outbound messages (ids derived from the command, so
//!   redeliveries create nothing twice), and stores one outbound job per message, in order, on
//!   `<p>.outbound.<platform>.<channel>`. A free-form message outside the window is not sent:
//!   the bot's fallback template for the platform goes out in its place (once per command),
//!   or the message fails with `outside_window` (a status on `<p>.status.<bot>`, so it is
//!   recorded and reported as `message.failed` like any platform failure);
//! * status (`<p>.status.>`): records the platform's verdict and tells subscribed tenants
//!   (`message.sent`, `message.failed`);
//! * receipts (inbound events with a `receipt`: `message.delivered`, `message.read`, and
//!   `message.failed` reported after the send, as WhatsApp does): finds the bot's outbound
//!   messages by the platform message id its senders reported (or, for Messenger watermarks,
//!   every message to that user up to the time), moves their status forward only (sent →
//!   delivered → read; failed from sent or delivered) and tells subscribed tenants;
//! * URL buttons containing `:code` become Patchbay links on the way out (`links.rs`);
//! * request/reply `<p>.rpc.router.get_user` (by Patchbay id), `find_user` (by platform
//!   user id) and `resolve_recipient` (the API's check before it stores a send), always within
//!   the asking bot.

mod broadcasts;
mod links;
mod store;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use patchbay_bus::rpc::{decode, encode};
use patchbay_bus::{Bus, BusError, ConfigView, Delivery, Handler, HandlerError};
use patchbay_contract::content::TemplateMessage;
use patchbay_contract::ids::{derive_id, hashed_id, message_ids, prefix};
use patchbay_contract::windows::Verdict;
use patchbay_contract::{
    BotRecord, Content, DeliveryError, DeliveryStatus, DispatchJob, EventMessage, EventType,
    FindNumberedUserRequest, FindUserRequest, GetUserRequest, HandledBy, HistoryRequest,
    InboundEvent, MessageTag, OutboundJob, Platform, ResolveRecipientRequest, RpcError,
    SendCommand, SendSource, StatusEvent, TenantEvent, UpsertContactRequest, V1, router_ops,
    topology,
};
use patchbay_runtime::db::{batch_error, db_error};
use patchbay_runtime::{BoxError, Deps, Service};
use patchbay_store::batch::GroupCommit;
use sqlx::PgPool;

/// Embedded migrations of schema `router`.
pub const MIGRATIONS: &[patchbay_store::EmbeddedMigration] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "users_by_platform_id",
        include_str!("../migrations/0002_users_by_platform_id.sql"),
    ),
    (
        3,
        "contacts",
        include_str!("../migrations/0003_contacts.sql"),
    ),
    (
        4,
        "brandchat_user_ids",
        include_str!("../migrations/0004_brandchat_user_ids.sql"),
    ),
    (
        5,
        "replaced_content",
        include_str!("../migrations/0005_replaced_content.sql"),
    ),
    (
        6,
        "messages_by_platform_id",
        include_str!("../migrations/0006_messages_by_platform_id.sql"),
    ),
    (
        7,
        "batch_functions",
        include_str!("../migrations/0007_batch_functions.sql"),
    ),
    (
        8,
        "room_for_hot_updates",
        include_str!("../migrations/0008_room_for_hot_updates.sql"),
    ),
    (
        9,
        "contact_fields",
        include_str!("../migrations/0009_contact_fields.sql"),
    ),
    (
        10,
        "templates",
        include_str!("../migrations/0010_templates.sql"),
    ),
    (
        11,
        "handover",
        include_str!("../migrations/0011_handover.sql"),
    ),
    (
        12,
        "journey",
        include_str!("../migrations/0012_journey.sql"),
    ),
    (13, "inbox", include_str!("../migrations/0013_inbox.sql")),
    (
        14,
        "group_chats",
        include_str!("../migrations/0014_group_chats.sql"),
    ),
    (
        15,
        "message_source_id",
        include_str!("../migrations/0015_message_source_id.sql"),
    ),
    (
        16,
        "broadcasts",
        include_str!("../migrations/0016_broadcasts.sql"),
    ),
    (
        17,
        "broadcast_events",
        include_str!("../migrations/0017_broadcast_events.sql"),
    ),
];

struct Router {
    pool: PgPool,
    bus: Bus,
    view: ConfigView,
    links: links::Links,
    batches: Batches,
    /// Where the API is reached from outside (media download URLs).
    public_url: String,
    /// Cancelled broadcasts (the broadcasts bucket).
    cancelled: async_nats::jetstream::kv::Store,
    /// `PATCHBAY_BROADCAST_WINDOW`.
    broadcast_window: u32,
    /// `PATCHBAY_BROADCAST_PROGRESS_MS`.
    broadcast_progress: std::time::Duration,
}

impl Router {
    /// `content` with, when it is media given only by the `media_id` of a file the bot
    /// uploaded, the URL the platform fetches it from (`<public URL>/media/<bot>/<media id>`,
    /// served by the API without credentials: the id is the capability).
    fn with_upload_url(&self, bot_id: &str, mut content: Content) -> Content {
        if let Some(media) = patchbay_contract::content::Media::of_mut(&mut content)
            && media.url.is_none()
            && media.file_id.is_none()
            && let Some(id) = &media.media_id
        {
            media.url = Some(patchbay_contract::ids::upload_url(
                &self.public_url,
                bot_id,
                id,
            ));
        }
        content
    }

    /// `content` with, when it is media, the id and URL the bot downloads it from.
    fn with_media_link(&self, content: &Content, message_id: &str) -> Content {
        let mut content = content.clone();
        if let Some(media) = patchbay_contract::content::Media::of_mut(&mut content) {
            let id = patchbay_contract::ids::media_id(message_id);
            media.download_url = Some(format!(
                "{}/v1/media/{id}",
                self.public_url.trim_end_matches('/')
            ));
            media.media_id = Some(id);
        }
        content
    }
}

/// Group commit of the hot path's statements (see [`patchbay_store::batch`]): the handlers
/// waiting at the same time share one statement per step, and each returns (and its message
/// is acknowledged) only after its own rows are committed.
struct Batches {
    inbound: GroupCommit<store::InboundRecord, store::StoredInbound>,
    /// `inbound_events.dispatched_at` by dedupe key, for events the tenant does not get (see
    /// [`Inbound`]'s handler).
    marks: GroupCommit<String, ()>,
    recipients: GroupCommit<store::RecipientQuery, Option<store::Resolved>>,
    outbound: GroupCommit<store::OutboundRows, Vec<bool>>,
    statuses: GroupCommit<store::StatusRecord, Option<store::StatusOwner>>,
    /// Broadcast recipients moved by their messages' statuses and receipts.
    outcomes: GroupCommit<broadcasts::Outcome, ()>,
}

impl Batches {
    /// `linger`: how long a status waits for others to share its statement (see
    /// [`GroupCommit::lingering`]); the other statements are on the way of a message and go at
    /// once.
    fn start(pool: &PgPool, linger: std::time::Duration) -> Self {
        macro_rules! batch {
            ($name:literal, $f:path) => {
                batch!($name, $f, std::time::Duration::ZERO)
            };
            ($name:literal, $f:path, $linger:expr) => {{
                let pool = pool.clone();
                GroupCommit::lingering($name, $linger, move |b| {
                    let pool = pool.clone();
                    async move { $f(&pool, b).await }
                })
            }};
        }
        Self {
            inbound: batch!("router_inbound", store::record_inbound),
            marks: batch!("router_marks", store::mark_dispatched),
            recipients: batch!("router_recipients", store::resolve_recipients),
            outbound: batch!("router_outbound", store::insert_outbound),
            // History: a message is at the platform before its status is written.
            statuses: batch!("router_statuses", store::record_status, linger),
            outcomes: batch!(
                "router_broadcast_outcomes",
                broadcasts::record_outcomes,
                linger
            ),
        }
    }
}

struct Inbound(Arc<Router>);
struct Sends(Arc<Router>);
struct Statuses(Arc<Router>);

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let pool = deps.database("router", MIGRATIONS).await?;
        let links_bucket = deps
            .bus
            .subjects()
            .bucket(patchbay_contract::subjects::Bucket::Links);
        let links = links::Links::new(
            deps.bus.jetstream().get_key_value(&links_bucket).await?,
            &deps.config.public_url,
            std::time::Duration::from_millis(deps.config.link_ttl_ms),
            patchbay_bus::quota::Quota::open(
                &deps.bus,
                "links",
                std::time::Duration::from_millis(deps.config.link_ttl_ms),
                deps.config.links_per_bot,
            )
            .await?,
        );
        let router = Arc::new(Router {
            pool: pool.clone(),
            bus: deps.bus.clone(),
            view: deps.view.clone(),
            links,
            batches: Batches::start(
                &pool,
                std::time::Duration::from_millis(deps.config.record_linger_ms),
            ),
            public_url: deps.config.public_url.clone(),
            cancelled: deps
                .bus
                .jetstream()
                .get_key_value(
                    &deps
                        .bus
                        .subjects()
                        .bucket(patchbay_contract::subjects::Bucket::Broadcasts),
                )
                .await?,
            broadcast_window: deps.config.broadcast_window,
            broadcast_progress: std::time::Duration::from_millis(deps.config.broadcast_progress_ms),
        });
        let s = deps.bus.subjects();
        let c = deps.config.consumer_concurrency;
        let rpc = router.clone();
        let responder = deps
            .bus
            .responder(s.rpc_all("router"), "bot-router".into())
            .await?;
        let service = Service::new("bot-router")
            .task(deps.consumer::<InboundEvent, _>(
                topology::router_inbound(s),
                Arc::new(Inbound(router.clone())),
            ))
            .task(deps.consumer::<SendCommand, _>(
                topology::router_send(s),
                Arc::new(Sends(router.clone())),
            ))
            .task(deps.consumer::<StatusEvent, _>(
                topology::router_status(s),
                Arc::new(Statuses(router.clone())),
            ))
            .task(responder.serve(
                c,
                move |op, body| {
                    let r = rpc.clone();
                    async move { r.answer(&op, body).await }
                },
                deps.shutdown.clone(),
            ))
            .task(return_idle_conversations(
                router.clone(),
                deps.shutdown.clone(),
            ))
            .task(broadcasts::drive(router.clone(), deps.shutdown.clone()));
        Ok(service)
    })
}

/// How often a replica looks for conversations to return to their bots.
const IDLE_SWEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// The shortest hand-back time a bot may set.
pub const HANDOVER_IDLE_MIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Returns conversations no agent wrote in for their bot's idle time to the bot, each with
/// its `conversation.handover` event. Replicas race harmlessly: the update is conditional.
async fn return_idle_conversations(
    router: Arc<Router>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), BoxError> {
    let mut every = tokio::time::interval(IDLE_SWEEP);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        if let Err(e) = router.return_idle().await {
            tracing::warn!(error = %e, "returning idle conversations failed; next sweep");
        }
    }
}

impl Router {
    /// One sweep of [`return_idle_conversations`].
    async fn return_idle(&self) -> Result<(), BoxError> {
        let now = chrono::Utc::now();
        for (id, bot_id, since) in store::held_idle(&self.pool, HANDOVER_IDLE_MIN).await? {
            let Some(bot) = self.view.bot(&bot_id).await? else {
                continue;
            };
            let idle = bot
                .handover_idle_secs
                .unwrap_or(patchbay_contract::HANDOVER_IDLE_DEFAULT_SECS);
            let idle = chrono::TimeDelta::seconds(i64::try_from(idle).unwrap_or(i64::MAX));
            if since + idle > now {
                continue;
            }
            if let Some(h) = store::return_idle(&self.pool, &id, since).await? {
                tracing::info!(conversation_id = %id, %bot_id, "no agent message for the bot's idle time: conversation returned to the bot");
                self.announce_handover(&bot, &h, "idle")
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// `POST /v1/conversations/{id}/handover`: passes the conversation, announcing a change.
    async fn handover(
        &self,
        req: &patchbay_contract::HandoverRequest,
    ) -> Result<patchbay_contract::ConversationState, RpcError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "hand-over failed");
            RpcError::new(503, "unavailable", "the database is unavailable")
        };
        if req.to == HandledBy::Human
            && req
                .agent
                .as_ref()
                .is_some_and(|a| a.trim().is_empty() || a.chars().count() > 100)
        {
            return Err(RpcError::new(
                422,
                "invalid_request",
                "agent: must be 1 to 100 characters",
            ));
        }
        let Some((h, changed)) = store::handover(
            &self.pool,
            &req.bot_id,
            &req.conversation_id,
            req.to,
            req.agent.as_deref(),
        )
        .await
        .map_err(|e| unavailable(&e))?
        else {
            return Err(RpcError::new(
                404,
                "not_found",
                format!("no conversation {}", req.conversation_id),
            ));
        };
        if changed {
            tracing::info!(conversation_id = %req.conversation_id, bot_id = %req.bot_id, to = req.to.as_str(), agent = ?h.state.agent, "conversation handed over");
            let bot = self
                .view
                .bot(&req.bot_id)
                .await
                .map_err(|e| unavailable(&e))?
                .ok_or_else(|| RpcError::new(404, "not_found", "no such bot"))?;
            self.announce_handover(&bot, &h, "requested")
                .await
                .map_err(|e| unavailable(&e.to_string()))?;
        }
        Ok(h.state)
    }

    /// Tells the bot (if it subscribes) that a conversation changed hands: a
    /// `conversation.handover` event naming to whom, the agent and why.
    async fn announce_handover(
        &self,
        bot: &BotRecord,
        h: &store::HandedOver,
        reason: &str,
    ) -> Result<(), HandlerError> {
        let Some(user) = store::user_profile(&self.pool, &bot.id, &h.user_id)
            .await
            .map_err(db_error)?
        else {
            return Ok(());
        };
        let at = h.state.since.unwrap_or_else(chrono::Utc::now);
        let event = TenantEvent {
            id: hashed_id(
                prefix::EVENT,
                &[&h.state.conversation_id, "handover", &at.to_rfc3339()],
            ),
            event_type: EventType::ConversationHandover,
            created_at: at,
            bot_id: bot.id.clone(),
            channel: Some(user.channel.clone()),
            user: Some(patchbay_contract::EventUser {
                id: user.id.clone(),
                platform_user_id: user.platform_user_id.clone(),
                display_name: user.display_name.clone(),
                username: user.username.clone(),
                locale: user.locale.clone(),
                fields: user.fields.clone(),
            }),
            conversation_id: Some(h.state.conversation_id.clone()),
            chat: None,
            message: None,
            error: None,
            referral: None,
            resubscribed: false,
            installation: None,
            handled_by: (h.state.handled_by == HandledBy::Human).then_some(HandledBy::Human),
            handover: Some(patchbay_contract::Handover {
                to: h.state.handled_by,
                agent: h.state.agent.clone().or_else(|| h.previous_agent.clone()),
                reason: reason.to_owned(),
            }),
            broadcast: None,
        };
        self.dispatch(bot, event, None).await.map(|_| ())
    }

    async fn bot(&self, bot_id: &str) -> Result<Arc<BotRecord>, HandlerError> {
        self.view
            .bot(bot_id)
            .await?
            .ok_or_else(|| HandlerError::reject(format!("unknown bot {bot_id}")))
    }

    /// Stores the dispatch job of `event` if the bot has a callback that accepts its type and
    /// platform; whether it did. `reply_address`: the user's address, on events whose time
    /// opened the user's window (see [`DispatchJob::reply_address`]).
    async fn dispatch(
        &self,
        bot: &BotRecord,
        event: TenantEvent,
        reply_address: Option<String>,
    ) -> Result<bool, HandlerError> {
        let subject = self.bus.subjects().dispatch(&bot.id)?;
        // A copy for each partner app enabled on the bot (and the event's channel) that
        // subscribes to it, under its own id: delivered, retried and logged apart from the
        // bot's own webhook.
        let mut stored = false;
        for ins in bot.installations.iter().filter(|i| {
            i.accepts(
                event.event_type,
                event.channel.as_ref().map(|c| c.id.as_str()),
            )
        }) {
            let copy = TenantEvent {
                id: hashed_id(prefix::EVENT, &[&event.id, &ins.id]),
                installation: Some(patchbay_contract::partners::InstallationContext {
                    id: ins.id.clone(),
                    app_id: ins.app_id.clone(),
                    tenant_id: bot.tenant_id.clone(),
                }),
                ..event.clone()
            };
            let job = DispatchJob {
                v: V1,
                event: copy,
                reply_address: reply_address.clone(),
            };
            self.bus.publish(&subject, &job.event.id, &job).await?;
            stored = true;
        }
        if bot.webhook.url.is_none()
            || !bot
                .webhook
                .accepts(event.event_type, event.channel.as_ref().map(|c| c.platform))
        {
            return Ok(stored);
        }
        let id = event.id.clone();
        self.bus
            .publish(
                &subject,
                &id,
                &DispatchJob {
                    v: V1,
                    event,
                    reply_address,
                },
            )
            .await?;
        Ok(true)
    }

    /// `PATCH /v1/users/{id}`: the fields changed, then the whole profile.
    async fn set_user_fields(
        &self,
        req: &patchbay_contract::SetUserFieldsRequest,
    ) -> Result<patchbay_contract::UserProfile, RpcError> {
        let unavailable = |e: sqlx::Error| {
            tracing::error!(error = %e, "changing a user's fields failed");
            RpcError::new(503, "unavailable", "the database is unavailable")
        };
        if let Some(wanted) = req.broadcasts {
            let known = store::set_broadcasts(&self.pool, &req.bot_id, &req.user_id, wanted)
                .await
                .map_err(unavailable)?;
            if !known {
                return Err(RpcError::new(404, "not_found", "no such user"));
            }
            if req.fields.is_empty() {
                return found(store::user_profile(&self.pool, &req.bot_id, &req.user_id).await);
            }
        }
        match store::change_fields(&self.pool, &req.bot_id, &req.user_id, &req.fields, &[])
            .await
            .map_err(unavailable)?
        {
            Ok(_) => found(store::user_profile(&self.pool, &req.bot_id, &req.user_id).await),
            Err(store::FieldsRefused::NoUser) => {
                Err(RpcError::new(404, "not_found", "no such user"))
            }
            Err(store::FieldsRefused::Invalid(e)) => Err(RpcError::new(
                422,
                "invalid_field",
                format!("{}: {}", e.field, e.message),
            )),
        }
    }

    async fn answer(&self, op: &str, body: Bytes) -> Vec<u8> {
        match op {
            router_ops::GET_USER => encode(match decode::<GetUserRequest>(&body) {
                Ok(req) => found(store::user_profile(&self.pool, &req.bot_id, &req.user_id).await),
                Err(e) => Err(e),
            }),
            router_ops::FIND_USER => encode(match decode::<FindUserRequest>(&body) {
                Ok(req) => found(
                    store::find_user(&self.pool, &req.bot_id, req.platform, &req.platform_user_id)
                        .await,
                ),
                Err(e) => Err(e),
            }),
            router_ops::FIND_NUMBERED_USER => {
                encode(match decode::<FindNumberedUserRequest>(&body) {
                    Ok(req) => {
                        found(store::find_numbered_user(&self.pool, &req.bot_id, req.number).await)
                    }
                    Err(e) => Err(e),
                })
            }
            router_ops::RESOLVE_RECIPIENT => {
                encode(match decode::<ResolveRecipientRequest>(&body) {
                    Ok(req) => {
                        found(store::recipient_profile(&self.pool, &req.bot_id, &req.to).await)
                    }
                    Err(e) => Err(e),
                })
            }
            router_ops::UPSERT_CONTACT => encode(match decode::<UpsertContactRequest>(&body) {
                Ok(req) => store::upsert_contact(&self.pool, &req).await,
                Err(e) => Err(e),
            }),
            router_ops::MEDIA_SOURCE => encode(
                match decode::<patchbay_contract::MediaSourceRequest>(&body) {
                    Ok(req) => store::media_source(&self.pool, &req.bot_id, &req.message_id)
                        .await
                        .map_err(|e| {
                            tracing::error!(error = %e, "media lookup failed");
                            RpcError::new(503, "unavailable", "the database is unavailable")
                        })
                        .and_then(|m| {
                            m.ok_or_else(|| RpcError::new(404, "not_found", "no such media"))
                        }),
                    Err(e) => Err(e),
                },
            ),
            router_ops::SET_USER_FIELDS => encode(
                match decode::<patchbay_contract::SetUserFieldsRequest>(&body) {
                    Ok(req) => self.set_user_fields(&req).await,
                    Err(e) => Err(e),
                },
            ),
            router_ops::SEARCH_USERS => encode(
                match decode::<patchbay_contract::SearchUsersRequest>(&body) {
                    Ok(req) => store::search_users(
                        &self.pool,
                        &req.bot_id,
                        &req.fields,
                        req.after.as_deref(),
                        req.limit,
                    )
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "user search failed");
                        RpcError::new(503, "unavailable", "the database is unavailable")
                    }),
                    Err(e) => Err(e),
                },
            ),
            router_ops::TEMPLATES => {
                encode(match decode::<patchbay_contract::TemplateRequest>(&body) {
                    Ok(req) => store::templates(&self.pool, &req.bot_id, req.op).await,
                    Err(e) => Err(e),
                })
            }
            router_ops::INBOX => encode(match decode::<patchbay_contract::InboxRequest>(&body) {
                Ok(req) => store::inbox(&self.pool, &req).await.map_err(|e| {
                    tracing::error!(error = %e, "reading an inbox failed");
                    RpcError::new(503, "unavailable", "the database is unavailable")
                }),
                Err(e) => Err(e),
            }),
            router_ops::JOURNEY => {
                encode(match decode::<patchbay_contract::JourneyRequest>(&body) {
                    Ok(req) => match store::journey(&self.pool, &req.bot_id, &req.message_id).await
                    {
                        Ok(Some(j)) => Ok(j),
                        Ok(None) => Err(RpcError::new(
                            404,
                            "not_found",
                            format!("no message {}", req.message_id),
                        )),
                        Err(e) => {
                            tracing::error!(error = %e, "reading a journey failed");
                            Err(RpcError::new(
                                503,
                                "unavailable",
                                "the database is unavailable",
                            ))
                        }
                    },
                    Err(e) => Err(e),
                })
            }
            router_ops::HANDOVER => {
                encode(match decode::<patchbay_contract::HandoverRequest>(&body) {
                    Ok(req) => self.handover(&req).await,
                    Err(e) => Err(e),
                })
            }
            router_ops::BROADCASTS => encode(
                match decode::<patchbay_contract::broadcasts::BroadcastRequest>(&body) {
                    Ok(req) => self.broadcasts(req).await,
                    Err(e) => Err(e),
                },
            ),
            router_ops::HISTORY => encode(match decode::<HistoryRequest>(&body) {
                Ok(req) => store::history(&self.pool, &req).await,
                Err(e) => Err(e),
            }),
            other => encode::<()>(Err(RpcError::new(
                404,
                "unknown_operation",
                format!("bot-router has no operation {other:?}"),
            ))),
        }
    }
}

/// A profile lookup's answer: 404 when the bot has no such user, 503 when the database fails.
fn found(
    r: Result<Option<patchbay_contract::UserProfile>, sqlx::Error>,
) -> Result<patchbay_contract::UserProfile, RpcError> {
    r.map_err(|e| {
        tracing::error!(error = %e, "user lookup failed");
        RpcError::new(503, "unavailable", "the database is unavailable")
    })
    .and_then(|p| p.ok_or_else(|| RpcError::new(404, "not_found", "no such user")))
}

impl Handler<InboundEvent> for Inbound {
    fn key(&self, ev: &InboundEvent) -> Option<String> {
        // Receipts need no order (statuses only move forward) and may wait for a
        // `message.sent`: they must not hold the user's next messages up. A withdrawn message
        // follows the user's messages, so it finds the one it withdraws.
        if ev.receipt.is_some() && ev.event_type != EventType::MessageUnsent {
            return None;
        }
        Some(format!("{}:{}", ev.channel.id, ev.address))
    }

    async fn handle(&self, d: Delivery<InboundEvent>) -> Result<(), HandlerError> {
        let r = &self.0;
        let delivered = d.delivered;
        // Shared with the batch without a copy.
        let ev = Arc::new(d.payload);
        let bot = r.bot(&ev.bot_id).await?;
        if ev.event_type == EventType::MessageUnsent {
            return r.unsent(&bot, &ev).await;
        }
        if let Some(receipt) = &ev.receipt {
            return r.receipt(&bot, &ev, receipt, delivered).await;
        }
        let stored = r
            .batches
            .inbound
            .submit(store::InboundRecord(ev.clone()))
            .await
            .map_err(batch_error)?;
        if stored.already_dispatched {
            metrics::counter!("patchbay_router_duplicates_total").increment(1);
            tracing::info!(event_id = %stored.event_id, "platform retry of an event already handled; dropped");
            return Ok(());
        }
        let dispatched = if !bot.enabled {
            tracing::info!(bot_id = %bot.id, "bot disabled; event stored, not delivered");
            false
        } else {
            let event = TenantEvent {
                id: stored.event_id.clone(),
                event_type: ev.event_type,
                created_at: ev.occurred_at,
                bot_id: ev.bot_id.clone(),
                channel: Some(ev.channel.clone()),
                user: Some(stored.user.clone()),
                conversation_id: Some(stored.conversation_id.clone()),
                chat: stored.chat.clone(),
                message: ev.message.as_ref().map(|m| EventMessage {
                    id: stored.message_id.clone(),
                    platform_message_id: Some(m.platform_message_id.clone()),
                    content: Some(r.with_media_link(&m.content, &stored.message_id)),
                    source: None,
                    source_id: None,
                }),
                error: None,
                referral: ev.referral.clone(),
                resubscribed: ev.resubscribed,
                installation: None,
                handled_by: (stored.handled_by == HandledBy::Human).then_some(HandledBy::Human),
                handover: None,
                broadcast: None,
            };
            // The user's own action, at the event's time, opened their window (an
            // unsubscription opens none).
            let reply_address =
                (ev.event_type != EventType::UserUnsubscribed).then(|| ev.address.clone());
            r.dispatch(&bot, event, reply_address).await?
        };
        if dispatched {
            // No mark on the hot path: a platform retry after JetStream's duplicate window is
            // dispatched again under the same event id, and the dispatcher, whose delivery
            // record knows the event, drops it.
            return Ok(());
        }
        if ev.channel.platform == Platform::Custom {
            // A custom channel's request may be waiting for the tenant's answer: there will be
            // none.
            r.bus
                .announce_custom_outcome(&stored.event_id, false, 0)
                .await;
        }
        // Not for the tenant (a disabled bot, no callback for it): remember that, so a late
        // platform retry is not delivered either, whatever changed meanwhile.
        r.batches
            .marks
            .submit(ev.dedupe_key.clone())
            .await
            .map_err(batch_error)
    }
}

/// A receipt naming a message whose platform id is not recorded yet is tried this many times,
/// a second apart, while it is younger than [`RECEIPT_GRACE`]: the sender's `message.sent`
/// (which records the platform id) may still be on its way. Then it is dropped with a log
/// line (messages sent to the user outside Patchbay, e.g. from the Page inbox, get receipts
/// too).
const RECEIPT_TRIES: u64 = 5;
const RECEIPT_GRACE: chrono::TimeDelta = chrono::TimeDelta::minutes(2);

impl Router {
    /// Applies a platform receipt to the bot's outbound messages and tells the tenant.
    /// `message.unsent`: the user withdrew one of their messages (named by its platform id in
    /// the event's receipt); the bot is told which Patchbay message it was. Nothing when the
    /// message was never stored here (sent before the channel was connected).
    async fn unsent(&self, bot: &BotRecord, ev: &InboundEvent) -> Result<(), HandlerError> {
        let ids = ev
            .receipt
            .as_ref()
            .map(|r| r.platform_message_ids.clone())
            .unwrap_or_default();
        let found = store::user_messages(&self.pool, ev, &ids)
            .await
            .map_err(db_error)?;
        if found.is_empty() {
            tracing::info!(event_id = %ev.id, "withdrawn message not stored here; dropped");
            return Ok(());
        }
        if !bot.enabled {
            return Ok(());
        }
        for (i, m) in found.into_iter().enumerate() {
            let event = TenantEvent {
                id: derive_id(prefix::EVENT, &ev.id, i as u32),
                event_type: EventType::MessageUnsent,
                created_at: ev.occurred_at,
                bot_id: ev.bot_id.clone(),
                channel: Some(ev.channel.clone()),
                user: Some(m.user),
                conversation_id: Some(m.conversation_id),
                chat: None,
                message: Some(EventMessage {
                    id: m.message_id,
                    platform_message_id: m.platform_message_id,
                    content: None,
                    source: None,
                    source_id: None,
                }),
                error: None,
                referral: None,
                resubscribed: false,
                installation: None,
                handled_by: None,
                handover: None,
                broadcast: None,
            };
            self.dispatch(bot, event, None).await?;
        }
        Ok(())
    }

    async fn receipt(
        &self,
        bot: &BotRecord,
        ev: &InboundEvent,
        receipt: &patchbay_contract::Receipt,
        delivered: u64,
    ) -> Result<(), HandlerError> {
        let Some(to) = store::ReceiptStatus::of(ev.event_type) else {
            return Err(HandlerError::reject(format!(
                "a receipt cannot be a {} event",
                ev.event_type.as_str()
            )));
        };
        let found = store::receipt_targets(&self.pool, ev, receipt, to)
            .await
            .map_err(db_error)?;
        if found.is_empty() {
            let known = receipt.platform_message_ids.is_empty()
                || store::any_outbound_with_platform_id(
                    &self.pool,
                    &ev.bot_id,
                    &receipt.platform_message_ids,
                )
                .await
                .map_err(db_error)?;
            if !known
                && delivered < RECEIPT_TRIES
                && chrono::Utc::now() - ev.occurred_at < RECEIPT_GRACE
            {
                return Err(HandlerError::retry_after(
                    "receipt for a message whose platform id is not recorded yet",
                    std::time::Duration::from_secs(1),
                ));
            }
            tracing::info!(event_id = %ev.id, known, "receipt changes no message; dropped");
            return Ok(());
        }
        if bot.enabled {
            for (i, m) in found.iter().enumerate() {
                let event = TenantEvent {
                    id: derive_id(prefix::EVENT, &ev.id, i as u32),
                    event_type: ev.event_type,
                    created_at: ev.occurred_at,
                    bot_id: ev.bot_id.clone(),
                    channel: Some(ev.channel.clone()),
                    user: Some(m.user.clone()),
                    conversation_id: Some(m.conversation_id.clone()),
                    chat: None,
                    message: Some(EventMessage {
                        id: m.message_id.clone(),
                        platform_message_id: m.platform_message_id.clone(),
                        content: None,
                        source: m.source,
                        source_id: m.source_id.clone(),
                    }),
                    error: receipt.error.clone(),
                    referral: None,
                    resubscribed: false,
                    installation: None,
                    handled_by: None,
                    handover: None,
                    broadcast: None,
                };
                self.dispatch(bot, event, None).await?;
            }
        }
        // After the dispatch jobs: a redelivery before this finds the same messages and
        // republishes under the same event ids, which JetStream drops.
        // A receipt's failure is the platform's, after it took the message: a failure of
        // the recipient whatever its code.
        let outcomes: Vec<broadcasts::Outcome> = found
            .iter()
            .filter_map(|m| {
                broadcasts::Outcome::of(
                    m.source,
                    m.source_id.as_deref(),
                    &m.user.id,
                    &m.message_id,
                    to.name(),
                    receipt.error.as_ref().map(|e| e.code.as_str()),
                )
            })
            .collect();
        let ids: Vec<String> = found.into_iter().map(|m| m.message_id).collect();
        store::apply_receipt(&self.pool, &ids, to, receipt.error.as_ref(), ev.occurred_at)
            .await
            .map_err(db_error)?;
        futures::future::try_join_all(
            outcomes
                .into_iter()
                .map(|o| self.batches.outcomes.submit(o)),
        )
        .await
        .map_err(batch_error)?;
        Ok(())
    }
}

impl Handler<SendCommand> for Sends {
    fn key(&self, cmd: &SendCommand) -> Option<String> {
        Some(match &cmd.to {
            patchbay_contract::Recipient::User { user_id } => user_id.clone(),
            patchbay_contract::Recipient::Address {
                platform, address, ..
            } => {
                format!("{platform}:{address}")
            }
        })
    }

    async fn handle(&self, d: Delivery<SendCommand>) -> Result<(), HandlerError> {
        // A broadcast's message the router cannot take (the bot or channel disabled, the user
        // gone) fails its recipient rather than go to the dead letters silently: the
        // broadcast's window would wait for it forever.
        let result = self.send(&d).await;
        let cmd = &d.payload;
        match (result, &cmd.source, &cmd.source_id, &cmd.to) {
            (
                Err(HandlerError::Reject { reason }),
                SendSource::Broadcast,
                Some(broadcast_id),
                patchbay_contract::Recipient::User { user_id },
            ) => {
                let users = std::iter::once(user_id).chain(&cmd.also_to);
                tracing::info!(%broadcast_id, recipients = 1 + cmd.also_to.len(), %reason, "a broadcast's message cannot be sent: its recipients failed");
                futures::future::try_join_all(users.map(|user_id| {
                    self.0
                        .batches
                        .outcomes
                        .submit(broadcasts::Outcome::undeliverable(broadcast_id, user_id))
                }))
                .await
                .map(drop)
                .map_err(batch_error)
            }
            (result, ..) => result,
        }
    }
}

impl Sends {
    async fn send(&self, d: &Delivery<SendCommand>) -> Result<(), HandlerError> {
        let r = &self.0;
        let cmd = &d.payload;
        let bot_id = d.subject.rsplit('.').next().unwrap_or_default().to_owned();
        let bot = r.bot(&bot_id).await?;
        if !bot.enabled {
            return Err(HandlerError::reject(format!("bot {bot_id} is disabled")));
        }
        if cmd.messages.is_empty() || cmd.messages.len() > 10 {
            return Err(HandlerError::reject(
                "messages: must have between 1 and 10 entries",
            ));
        }
        for (i, m) in cmd.messages.iter().enumerate() {
            m.validate()
                .map_err(|e| HandlerError::reject(e.within(&format!("messages[{i}]"))))?;
        }
        let cancelled = self.cancelled(cmd).await?;
        if let Some(users) = batch_of(cmd) {
            return self.send_batch(&bot, &users, cancelled, d).await;
        }
        let key = cmd
            .id
            .clone()
            .unwrap_or_else(|| format!("seq:{}", d.stream_sequence));
        let ready = self
            .prepare(&bot, cmd, &key, d.published_at, cancelled)
            .await?;
        for m in ready {
            self.publish(m).await?;
        }
        Ok(())
    }

    /// Whether `cmd` is a message of a cancelled broadcast.
    async fn cancelled(&self, cmd: &SendCommand) -> Result<bool, HandlerError> {
        match (&cmd.source, &cmd.source_id) {
            (SendSource::Broadcast, Some(id)) => self
                .0
                .broadcast_cancelled(id)
                .await
                .map_err(|e| HandlerError::unavailable(format!("broadcasts bucket: {e}"))),
            _ => Ok(false),
        }
    }

    /// A broadcast's command for many users ([`SendCommand::also_to`]): each user's messages
    /// are prepared as if the user had a command of their own (its id derived as the driver
    /// derives it), then the same message for many users of a platform with a bulk call
    /// becomes one job for them ([`OutboundJob::also`]), up to the platform's recipients per
    /// call. A user the router cannot send to fails alone; anything to retry retries the
    /// whole command, which stores and publishes nothing twice (the ids are the same).
    async fn send_batch(
        &self,
        bot: &BotRecord,
        users: &[&String],
        cancelled: bool,
        d: &Delivery<SendCommand>,
    ) -> Result<(), HandlerError> {
        let r = &self.0;
        let cmd = &d.payload;
        let broadcast_id = cmd.source_id.as_deref().unwrap_or_default();
        let base = SendCommand {
            also_to: Vec::new(),
            ..cmd.clone()
        };
        let prepared = futures::future::join_all(users.iter().map(|user| {
            let id = broadcasts::command_id(broadcast_id, user);
            let one = SendCommand {
                id: Some(id.clone()),
                to: patchbay_contract::Recipient::User {
                    user_id: (*user).clone(),
                },
                ..base.clone()
            };
            async move {
                self.prepare(bot, &one, &id, d.published_at, cancelled)
                    .await
            }
        }))
        .await;
        let mut ready = Vec::new();
        let mut undeliverable = Vec::new();
        for (user, p) in users.iter().zip(prepared) {
            match p {
                Ok(jobs) => ready.extend(jobs),
                Err(HandlerError::Reject { reason }) => {
                    tracing::info!(%broadcast_id, user_id = %user, %reason, "a broadcast's message cannot be sent: its recipient failed");
                    undeliverable.push(broadcasts::Outcome::undeliverable(broadcast_id, user));
                }
                Err(e) => return Err(e),
            }
        }
        futures::future::try_join_all(
            undeliverable
                .into_iter()
                .map(|o| r.batches.outcomes.submit(o)),
        )
        .await
        .map_err(batch_error)?;
        for m in bulk_jobs(ready) {
            self.publish(m).await?;
        }
        Ok(())
    }

    /// The messages of `cmd` for its one recipient, ready for their senders: stored, their
    /// windows, hand-over, templates and links applied. Messages that fail on the way (or
    /// apply, as field messages do) are reported here and are not among them.
    async fn prepare(
        &self,
        bot: &BotRecord,
        cmd: &SendCommand,
        key: &str,
        now: chrono::DateTime<chrono::Utc>,
        cancelled: bool,
    ) -> Result<Vec<Ready>, HandlerError> {
        let r = &self.0;
        let bot_id = bot.id.clone();
        let recipient = match known_recipient(cmd, now) {
            Some(known) => known,
            None => r
                .batches
                .recipients
                .submit(store::RecipientQuery {
                    bot_id: bot_id.clone(),
                    to: cmd.to.clone(),
                })
                .await
                .map_err(batch_error)?
                .ok_or_else(|| {
                    HandlerError::reject(format!("bot {bot_id} has no recipient {:?}", cmd.to))
                })?,
        };
        r.view
            .channel(&recipient.channel.id)
            .await?
            .filter(|c| c.enabled && c.bot_id == bot_id)
            .ok_or_else(|| {
                HandlerError::reject(format!("channel {} is unavailable", recipient.channel.id))
            })?;
        let ids = message_ids(&bot_id, key, cmd.messages.len());
        // The window is judged at the time the command was stored (`now`), so a redelivery
        // decides as the first delivery did.
        let policy = patchbay_registry::window_for(recipient.channel.platform, Some(bot));
        // A quota per message from the user (WeChat's five): what the bot sent since then,
        // besides this command's own messages (stored already when this is a redelivery).
        let sent = match policy.per_inbound {
            Some(_) => store::counted_since_last_inbound(&r.pool, &recipient.conversation_id, &ids)
                .await
                .map_err(db_error)?,
            None => 0,
        };
        // Registry templates become the channel's content for this user (or fail, naming
        // what they lack); so does a fallback template from the registry.
        let text_first = policy.takes_free_form(recipient.last_inbound_at, now, cmd.source)
            && policy.per_inbound.is_none_or(|q| sent < q);
        let templates = Templates::new(r, &bot_id, &recipient, text_first);
        let held = recipient.handled_by == HandledBy::Human;
        // A cancelled broadcast's messages still on their way stay unsent.
        let (cmd, refused) = if cancelled {
            (
                std::borrow::Cow::Borrowed(cmd),
                refuse_all(
                    cmd,
                    patchbay_contract::broadcasts::CANCELLED,
                    "the broadcast was cancelled before this message went out",
                ),
            )
        } else if held && cmd.source != SendSource::Human {
            // A human agent holds the conversation: the bot's messages are held back (stored
            // as `suppressed`, reported as `message.failed`), none rendered.
            (std::borrow::Cow::Borrowed(cmd), held_back(cmd))
        } else {
            if held {
                // The agent's own go out, and restart the idle time after which the
                // conversation returns to the bot.
                store::agent_wrote(&r.pool, &recipient.conversation_id)
                    .await
                    .map_err(db_error)?;
            }
            templates.render_command(cmd).await?
        };
        let cmd = cmd.as_ref();
        let fallback = bot
            .fallback_templates
            .get(&recipient.channel.platform)
            .map(patchbay_contract::FallbackTemplate::content);
        // A fallback from the registry is read and rendered only when the plan puts it in
        // place of a message.
        let substitutes = |fallback: Option<&Content>| {
            plan_for(
                policy,
                recipient.last_inbound_at,
                sent,
                now,
                cmd,
                fallback,
                &refused,
            )
            .iter()
            .any(|p| matches!(p, Planned::Substitute { .. }))
        };
        let (fallback, fallback_error) = match fallback {
            Some(f @ Content::Template(TemplateMessage::Registered(_)))
                if substitutes(Some(&f)) =>
            {
                match templates.render(&f, false).await? {
                    Ok(rendered) => (Some(rendered), None),
                    Err(e) => (None, Some(e)),
                }
            }
            other => (other, None),
        };
        let mut plan = plan_for(
            policy,
            recipient.last_inbound_at,
            sent,
            now,
            cmd,
            fallback.as_ref(),
            &refused,
        );
        if let Some(why) = &fallback_error {
            for p in &mut plan {
                if let Planned::Refuse { error, .. } = p
                    && (error.code == patchbay_contract::windows::OUTSIDE_WINDOW
                        || error.code == patchbay_contract::windows::QUOTA_EXCEEDED)
                {
                    error.message = format!(
                        "{}; the bot's fallback template could not be used: {}",
                        error.message, why.message
                    );
                }
            }
        }
        let messages = ids
            .iter()
            .zip(&plan)
            .map(|(id, p)| {
                let (sent, replaced) = p.stored();
                (id.clone(), sent.clone(), replaced.cloned())
            })
            .collect();
        let created = r
            .batches
            .outbound
            .submit(store::OutboundRows {
                bot_id: bot_id.clone(),
                conversation_id: recipient.conversation_id.clone(),
                source: cmd.source,
                source_id: cmd.source_id.clone(),
                messages,
            })
            .await
            .map_err(batch_error)?;
        let platform = recipient.channel.platform.as_str();
        // A message that is not sent fails with `error`, reported like a platform's refusal.
        let fail = |id: &String, error: DeliveryError| {
            r.report(failure(
                id,
                &bot_id,
                &recipient.channel,
                now,
                cmd.source,
                cmd.source_id.as_ref(),
                error,
            ))
        };
        let mut ready = Vec::with_capacity(ids.len());
        for (index, ((id, planned), fresh)) in ids.iter().zip(&plan).zip(created).enumerate() {
            let (content, tag) = match planned {
                Planned::Send { content, tag } => (*content, *tag),
                Planned::Substitute {
                    template, refusal, ..
                } => {
                    metrics::counter!("patchbay_router_window_total", "platform" => platform, "outcome" => "substituted").increment(1);
                    tracing::info!(message_id = %id, %bot_id, user_id = %recipient.user_id, reason = %refusal.message, "outside the messaging window: the bot's fallback template is sent in place of the message");
                    (*template, None)
                }
                Planned::Apply { field, value, .. } => {
                    let changes = [(field.clone(), value.clone())].into();
                    match store::change_fields(
                        &r.pool,
                        &bot_id,
                        &recipient.user_id,
                        &changes,
                        std::slice::from_ref(id),
                    )
                    .await
                    .map_err(db_error)?
                    {
                        Ok(_) => {
                            tracing::debug!(message_id = %id, %bot_id, user_id = %recipient.user_id, field = %field, "field message applied");
                        }
                        Err(store::FieldsRefused::NoUser) => {
                            let error = DeliveryError {
                                code: "unknown_recipient".into(),
                                message: format!("bot {bot_id} has no user {}", recipient.user_id),
                                platform_code: None,
                            };
                            fail(id, error).await?;
                        }
                        Err(store::FieldsRefused::Invalid(e)) => {
                            let error = DeliveryError {
                                code: "invalid_request".into(),
                                message: format!("{}: {}", e.field, e.message),
                                platform_code: None,
                            };
                            fail(id, error).await?;
                        }
                    }
                    continue;
                }
                Planned::Refuse { error, .. } => {
                    if error.code == patchbay_contract::HUMAN_HANDOVER {
                        metrics::counter!("patchbay_router_suppressed_total", "platform" => platform).increment(1);
                        tracing::info!(message_id = %id, %bot_id, user_id = %recipient.user_id, "a human agent holds the conversation: the bot's message is held back");
                    } else {
                        metrics::counter!("patchbay_router_window_total", "platform" => platform, "outcome" => "refused").increment(1);
                        tracing::info!(message_id = %id, %bot_id, user_id = %recipient.user_id, reason = %error.message, "message refused before any platform call");
                    }
                    fail(id, error.clone()).await?;
                    continue;
                }
            };
            if tag.is_some() {
                metrics::counter!("patchbay_router_window_total", "platform" => platform, "outcome" => "human_agent").increment(1);
            }
            let content = match r
                .links
                .rewrite(&bot_id, &recipient.user_id, content)
                .await?
            {
                Ok(content) => content,
                // The bot made as many links as it may in a link lifetime: this message
                // fails rather than fill the links bucket every bot shares.
                Err(links::OverQuota(limit)) => {
                    metrics::counter!("patchbay_quota_refused_total", "kind" => "links")
                        .increment(1);
                    tracing::info!(message_id = %id, %bot_id, limit, "link quota used up: message failed");
                    let error = DeliveryError {
                        code: "link_quota_exceeded".into(),
                        message: format!(
                            "the bot has created {limit} links for `:code` URL buttons in this \
                             link lifetime (PATCHBAY_LINKS_PER_BOT); send it later or without a \
                             `:code` button"
                        ),
                        platform_code: None,
                    };
                    fail(id, error).await?;
                    continue;
                }
            };
            let content = r.with_upload_url(&bot_id, content);
            let job = OutboundJob {
                v: V1,
                message_id: id.clone(),
                bot_id: bot_id.clone(),
                channel: recipient.channel.clone(),
                user_id: recipient.user_id.clone(),
                conversation_id: recipient.conversation_id.clone(),
                address: recipient.address.clone(),
                content,
                source: cmd.source,
                source_id: cmd.source_id.clone(),
                in_reply_to: cmd.in_reply_to.clone(),
                tag,
                created_at: chrono::Utc::now(),
                // Not stored by an earlier handling of this command (or a command with its
                // id), so never published before.
                fresh,
                also: Vec::new(),
            };
            ready.push(Ready {
                index,
                job,
                at: now,
            });
        }
        Ok(ready)
    }

    /// Publishes `m` to its sender (a broadcast's behind the channel's conversations). What
    /// the bus will never take fails; a channel whose backlog is full fails a conversation's
    /// message, and holds a broadcast's (bounded by its window) until there is room.
    async fn publish(&self, m: Ready) -> Result<(), HandlerError> {
        let r = &self.0;
        let job = &m.job;
        let platform = job.channel.platform;
        let bulk = job.source == SendSource::Broadcast;
        let subject = if bulk {
            r.bus.subjects().bulk(platform, &job.channel.id)?
        } else {
            r.bus.subjects().outbound(platform, &job.channel.id)?
        };
        // A job for many recipients is stored under an id derived from all their messages:
        // one formed otherwise after a redelivery is another job, not a duplicate of this one.
        let stored_as = if job.also.is_empty() {
            job.message_id.clone()
        } else {
            job.batch_id()
        };
        // Every recipient's failure, reported together as a sender reports a job's.
        let fail_all = |error: DeliveryError| async move {
            let statuses = job
                .members()
                .iter()
                .map(|member| {
                    failure(
                        &member.message_id,
                        &job.bot_id,
                        &job.channel,
                        m.at,
                        job.source,
                        job.source_id.as_ref(),
                        error.clone(),
                    )
                })
                .collect();
            for event in StatusEvent::batches(statuses) {
                r.report(event).await?;
            }
            Ok::<(), HandlerError>(())
        };
        match r.bus.publish(&subject, &stored_as, job).await {
            // Never stored, however often it is tried: the message fails, and the user's
            // next messages are not held behind it.
            Err(BusError::TooLarge(reason)) => {
                tracing::warn!(message_id = %job.message_id, bot_id = %job.bot_id, %reason, "outbound job too large for the bus: message failed");
                fail_all(DeliveryError {
                    code: "too_large".into(),
                    message: "the message is larger than Patchbay can pass to the platform's sender; send less".into(),
                    platform_code: None,
                })
                .await
            }
            // The channel has as many messages waiting as one key may: the bot is sending
            // faster than the platform takes them. Refused rather than held, so the
            // router's partition keeps flowing for the other bots; the tenant learns it
            // from `message.failed` and sends again later.
            // A broadcast's release is bounded by its window: it waits for the channel.
            Err(BusError::Backlogged(reason)) if bulk => Err(HandlerError::retry_after(
                format!("channel's broadcast backlog full: {reason}"),
                std::time::Duration::from_secs(1),
            )),
            Err(BusError::Backlogged(reason)) => {
                metrics::counter!("patchbay_router_backlog_refused_total", "platform" => platform.as_str()).increment(1);
                tracing::info!(message_id = %job.message_id, bot_id = %job.bot_id, channel_id = %job.channel.id, %reason, "channel backlog full: message failed");
                fail_all(DeliveryError {
                    code: "backlog_full".into(),
                    message: "the channel has as many messages waiting to go out as it may \
                              (PATCHBAY_PIPELINE_BACKLOG_PER_KEY); send again once they \
                              have gone out"
                        .into(),
                    platform_code: None,
                })
                .await
            }
            other => {
                other?;
                Ok(())
            }
        }
    }
}

/// A message ready for its sender, as [`Sends::prepare`] made it for one recipient (or, once
/// [`bulk_jobs`] grouped it, for many).
struct Ready {
    /// The message's place among its command's messages.
    index: usize,
    job: OutboundJob,
    /// When its command was stored: a failure on the way is dated then.
    at: chrono::DateTime<chrono::Utc>,
}

/// The users of a broadcast's command for many ([`SendCommand::also_to`]), each once; `None`
/// for any other command.
fn batch_of(cmd: &SendCommand) -> Option<Vec<&String>> {
    let patchbay_contract::Recipient::User { user_id } = &cmd.to else {
        return None;
    };
    if cmd.source != SendSource::Broadcast || cmd.source_id.is_none() || cmd.also_to.is_empty() {
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    Some(
        std::iter::once(user_id)
            .chain(&cmd.also_to)
            .filter(|u| seen.insert(u.as_str()))
            .collect(),
    )
}

/// A broadcast's messages for many users, grouped into jobs of many recipients: the same
/// message (its place in the command, its content after templates and links) through the same
/// channel becomes one job for up to [`patchbay_registry::job_recipients`] (a bulk call's
/// recipients, [`patchbay_platform::PlatformSpec::bulk`], else recipients its sender sends one
/// by one at the channel's pace); tagged messages and replies stay one job each. Ordered by
/// the message's place, so each user's messages go out in the command's order.
///
/// A sender keeps order per key: a job of many recipients is keyed by its channel, a job of
/// one by its channel and address. So a user with a message in a job of their own and another
/// in a job of many (a template that personalises one message of the broadcast and not the
/// next) gets every message in a job of their own, and those others grouped without them
/// are grouped again, until no user is in both.
fn bulk_jobs(ready: Vec<Ready>) -> Vec<Ready> {
    let mut rest = ready;
    let mut alone: Vec<Ready> = Vec::new();
    loop {
        let grouped = group_jobs(rest);
        let (mut single, mut many) = (
            std::collections::HashSet::new(),
            std::collections::HashSet::new(),
        );
        for m in &grouped {
            let channel = m.job.channel.id.as_str();
            if m.job.also.is_empty() {
                single.insert((channel, m.job.user_id.as_str()));
            } else {
                many.extend(
                    std::iter::once(m.job.user_id.as_str())
                        .chain(m.job.also.iter().map(|b| b.user_id.as_str()))
                        .map(|u| (channel, u)),
                );
            }
        }
        let mixed: std::collections::HashSet<(String, String)> = single
            .intersection(&many)
            .map(|(c, u)| ((*c).to_owned(), (*u).to_owned()))
            .collect();
        if mixed.is_empty() {
            let mut out = grouped;
            out.append(&mut alone);
            out.sort_by_key(|m| m.index);
            return out;
        }
        rest = Vec::new();
        for one in grouped.into_iter().flat_map(Ready::each) {
            if mixed.contains(&(one.job.channel.id.clone(), one.job.user_id.clone())) {
                alone.push(one);
            } else {
                rest.push(one);
            }
        }
    }
}

/// One pass of [`bulk_jobs`]: each message joins the group still filling for its channel and
/// place when its content is the group's and the group has room.
fn group_jobs(ready: Vec<Ready>) -> Vec<Ready> {
    let mut out: Vec<Ready> = Vec::with_capacity(ready.len());
    // The group still filling, per channel and place.
    let mut open: std::collections::HashMap<(String, usize), usize> =
        std::collections::HashMap::new();
    for m in ready {
        let max = patchbay_registry::job_recipients(m.job.channel.platform);
        if max < 2 || m.job.tag.is_some() || m.job.in_reply_to.is_some() {
            out.push(m);
            continue;
        }
        let key = (m.job.channel.id.clone(), m.index);
        if let Some(&at) = open.get(&key) {
            let group = &mut out[at].job;
            if group.content == m.job.content && group.also.len() + 1 < max {
                group.also.push(patchbay_contract::BulkMember {
                    message_id: m.job.message_id,
                    user_id: m.job.user_id,
                    conversation_id: m.job.conversation_id,
                    address: m.job.address,
                    fresh: m.job.fresh,
                });
                continue;
            }
        }
        open.insert(key, out.len());
        out.push(m);
    }
    out
}

impl Ready {
    /// Each recipient's message of this job as a job of its own, in the job's order.
    fn each(self) -> Vec<Ready> {
        if self.job.also.is_empty() {
            return vec![self];
        }
        let Ready { index, job, at } = self;
        job.members()
            .iter()
            .map(|m| Ready {
                index,
                job: job.for_member(m),
                at,
            })
            .collect()
    }
}

/// The `failed` status of message `id`, which did not reach its platform.
fn failure(
    id: &str,
    bot_id: &str,
    channel: &patchbay_contract::ChannelRef,
    at: chrono::DateTime<chrono::Utc>,
    source: SendSource,
    source_id: Option<&String>,
    error: DeliveryError,
) -> StatusEvent {
    StatusEvent {
        v: V1,
        id: StatusEvent::id_of(id, DeliveryStatus::Failed),
        message_id: id.to_owned(),
        bot_id: bot_id.to_owned(),
        channel: channel.clone(),
        status: DeliveryStatus::Failed,
        platform_message_id: None,
        error: Some(error),
        at,
        source: Some(source),
        source_id: source_id.cloned(),
        also: Vec::new(),
    }
}

impl Router {
    /// Publishes a message's status, as its sender would.
    async fn report(&self, status: StatusEvent) -> Result<(), HandlerError> {
        let subject = self.bus.subjects().status(&status.bot_id)?;
        self.bus.publish(&subject, &status.id, &status).await?;
        Ok(())
    }
}

/// Per message of `cmd`, the refusal of a bot's message while a human agent holds the
/// conversation (field messages reach no platform, and apply).
fn held_back(cmd: &SendCommand) -> Vec<Option<DeliveryError>> {
    refuse_all(
        cmd,
        patchbay_contract::HUMAN_HANDOVER,
        "a human agent answers this conversation: the bot's message was held back \
         (suppressed) until the conversation is handed back to the bot",
    )
}

/// Per message of `cmd`, a refusal with `code` (field messages reach no platform, and apply).
fn refuse_all(cmd: &SendCommand, code: &str, message: &str) -> Vec<Option<DeliveryError>> {
    cmd.messages
        .iter()
        .map(|m| {
            (!matches!(m, Content::Field(_))).then(|| DeliveryError {
                code: code.into(),
                message: message.into(),
                platform_code: None,
            })
        })
        .collect()
}

/// Renders registry templates for one recipient of a send
/// ([`patchbay_registry::render_template`]), reading the user's name and fields once.
struct Templates<'r> {
    router: &'r Router,
    bot_id: &'r str,
    recipient: &'r store::Resolved,
    /// Whether the window takes free-form messages: a template's `text` form goes first.
    text_first: bool,
    user: tokio::sync::OnceCell<Option<patchbay_contract::UserProfile>>,
}

impl<'r> Templates<'r> {
    fn new(
        router: &'r Router,
        bot_id: &'r str,
        recipient: &'r store::Resolved,
        text_first: bool,
    ) -> Self {
        Self {
            router,
            bot_id,
            recipient,
            text_first,
            user: tokio::sync::OnceCell::new(),
        }
    }

    /// `cmd` with its registry templates rendered, and per message the error of one that
    /// could not be (none when nothing needed rendering).
    async fn render_command<'c>(
        &self,
        cmd: &'c SendCommand,
    ) -> Result<
        (
            std::borrow::Cow<'c, SendCommand>,
            Vec<Option<DeliveryError>>,
        ),
        HandlerError,
    > {
        let registered =
            |c: &Content| matches!(c, Content::Template(TemplateMessage::Registered(_)));
        if !cmd.messages.iter().any(registered) {
            return Ok((std::borrow::Cow::Borrowed(cmd), Vec::new()));
        }
        let mut out = cmd.clone();
        let mut failed = vec![None; out.messages.len()];
        for (m, failure) in out.messages.iter_mut().zip(&mut failed) {
            if !registered(m) {
                continue;
            }
            match self.render(m, self.text_first).await? {
                Ok(rendered) => *m = rendered,
                Err(e) => *failure = Some(e),
            }
        }
        Ok((std::borrow::Cow::Owned(out), failed))
    }

    /// `content` rendered when it is a registry template (else as it is); `text_first`: its
    /// text form goes first. The error is the send's, naming what is missing.
    async fn render(
        &self,
        content: &Content,
        text_first: bool,
    ) -> Result<Result<Content, DeliveryError>, HandlerError> {
        let Content::Template(TemplateMessage::Registered(named)) = content else {
            return Ok(Ok(content.clone()));
        };
        let pool = &self.router.pool;
        let Some(template) = store::template(pool, self.bot_id, &named.id)
            .await
            .map_err(|e| HandlerError::retry(e.message))?
        else {
            return Ok(Err(DeliveryError {
                code: "unknown_template".into(),
                message: format!("the bot has no template {}", named.id),
                platform_code: None,
            }));
        };
        let user = self
            .user
            .get_or_try_init(|| store::user_profile(pool, self.bot_id, &self.recipient.user_id))
            .await
            .map_err(db_error)?;
        let values = patchbay_contract::templates::Values::of(user.as_ref(), &named.meta);
        Ok(patchbay_registry::render_template(
            self.recipient.channel.platform,
            &template,
            text_first,
            &values,
        )
        .map_err(|e| e.error(&template.def.name)))
    }
}

/// How long after the event an inline reply's recipient is taken as the event named it
/// ([`SendCommand::known_recipient`]) instead of being looked up: the user's window opened at
/// the event or later, and every platform's window is longer than this, so the window check
/// decides as the stored window would.
const KNOWN_RECIPIENT_FOR: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// The recipient an inline reply names, when it is recent enough to be sent to without a
/// lookup (see [`KNOWN_RECIPIENT_FOR`]).
fn known_recipient(
    cmd: &SendCommand,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<store::Resolved> {
    let known = cmd.known_recipient.as_ref()?;
    let patchbay_contract::Recipient::User { user_id } = &cmd.to else {
        return None;
    };
    if *user_id != known.user_id || now - known.window_from > KNOWN_RECIPIENT_FOR {
        return None;
    }
    Some(store::Resolved {
        user_id: known.user_id.clone(),
        channel: known.channel.clone(),
        address: known.address.clone(),
        conversation_id: known.conversation_id.clone(),
        last_inbound_at: Some(known.window_from),
        handled_by: known.handled_by.unwrap_or(HandledBy::Bot),
    })
}

/// What happens to one message of a send command.
enum Planned<'a> {
    /// Sent as given, with a message tag when the window needs one.
    Send {
        content: &'a Content,
        tag: Option<MessageTag>,
    },
    /// Outside the window: the bot's fallback template goes out instead of `replaced`.
    Substitute {
        template: &'a Content,
        replaced: &'a Content,
        refusal: DeliveryError,
    },
    /// Outside the window, no fallback: stored as asked, fails with `outside_window`, never
    /// reaches the platform.
    Refuse {
        content: &'a Content,
        error: DeliveryError,
    },
    /// A field message: applied to the user's fields, never sent (no window applies).
    Apply {
        content: &'a Content,
        field: String,
        value: Option<String>,
    },
}

impl Planned<'_> {
    /// What is stored for the message: the content sent (or refused), and the tenant's
    /// content a fallback template replaced.
    fn stored(&self) -> (&Content, Option<&Content>) {
        match self {
            Planned::Send { content, .. }
            | Planned::Refuse { content, .. }
            | Planned::Apply { content, .. } => (content, None),
            Planned::Substitute {
                template, replaced, ..
            } => (template, Some(replaced)),
        }
    }
}

/// Checks every message of `cmd` against `platform`'s messaging window at `now`, and against
/// its quota of free-form messages per message from the user (`sent`: how many the bot sent
/// since the user's last message). Outside the window or over the quota, the first free-form
/// message becomes `fallback` (when the bot has one); the others fail, so the user gets the
/// template once, not once per message.
#[cfg(test)]
fn plan<'a>(
    platform: patchbay_contract::Platform,
    last_inbound: Option<chrono::DateTime<chrono::Utc>>,
    sent: u32,
    now: chrono::DateTime<chrono::Utc>,
    cmd: &'a SendCommand,
    fallback: Option<&'a Content>,
) -> Vec<Planned<'a>> {
    plan_for(
        patchbay_registry::window(platform),
        last_inbound,
        sent,
        now,
        cmd,
        fallback,
        &[],
    )
}

/// [`plan`] under `policy` (the platform's window as the bot's settings shape it: billed
/// sends outside it allowed or not).
fn plan_for<'a>(
    policy: patchbay_contract::windows::WindowPolicy,
    last_inbound: Option<chrono::DateTime<chrono::Utc>>,
    sent: u32,
    now: chrono::DateTime<chrono::Utc>,
    cmd: &'a SendCommand,
    fallback: Option<&'a Content>,
    unrendered: &[Option<DeliveryError>],
) -> Vec<Planned<'a>> {
    let mut substituted = false;
    let mut counted = sent;
    let mut refuse = |content: &'a Content, refusal: DeliveryError| match fallback {
        Some(template) if !substituted => {
            substituted = true;
            Planned::Substitute {
                template,
                replaced: content,
                refusal,
            }
        }
        Some(_) => Planned::Refuse {
            content,
            error: DeliveryError {
                message: format!(
                    "{}; the fallback template was sent once, in place of the first such message of this request",
                    refusal.message
                ),
                ..refusal
            },
        },
        None => Planned::Refuse {
            content,
            error: refusal,
        },
    };
    cmd.messages
        .iter()
        .enumerate()
        .map(|(i, content)| match content {
            // A registry template that could not be rendered for the user.
            _ if unrendered.get(i).is_some_and(Option::is_some) => Planned::Refuse {
                content,
                error: unrendered[i].clone().unwrap_or_else(|| DeliveryError {
                    code: "invalid_request".into(),
                    message: "the template could not be rendered".into(),
                    platform_code: None,
                }),
            },
            // Validated with the command: a failure here cannot happen, and is refused.
            Content::Field(f) => match f.change() {
                Ok((field, value)) => Planned::Apply {
                    content,
                    field,
                    value,
                },
                Err(e) => Planned::Refuse {
                    content,
                    error: DeliveryError {
                        code: "invalid_request".into(),
                        message: format!("{}: {}", e.field, e.message),
                        platform_code: None,
                    },
                },
            },
            _ => match policy.check(last_inbound, now, content, cmd.source) {
                Verdict::Closed { closed_at } => refuse(content, policy.refusal(closed_at)),
                Verdict::Open { .. }
                    if !matches!(content, Content::Template(_))
                        && policy.per_inbound.is_some_and(|q| counted >= q) =>
                {
                    let since = last_inbound.unwrap_or(now);
                    refuse(content, policy.over_quota(counted, since))
                }
                Verdict::Open { .. } => {
                    if !matches!(content, Content::Template(_)) {
                        counted += 1;
                    }
                    Planned::Send { content, tag: None }
                }
                Verdict::HumanAgent { .. } => Planned::Send {
                    content,
                    tag: Some(MessageTag::HumanAgent),
                },
                Verdict::Unlimited | Verdict::Template | Verdict::Billed { .. } => {
                    Planned::Send { content, tag: None }
                }
            },
        })
        .collect()
}

impl Handler<StatusEvent> for Statuses {
    /// A message's status, or the statuses of a job's messages reported together
    /// ([`StatusEvent::also`]): each is recorded (in the same statements, by the group
    /// commit) and told to the tenant as its own. Anything to retry retries them all (each
    /// step is idempotent); messages unknown here are dead-lettered with the event, named in
    /// the reason, after the others are recorded.
    async fn handle(&self, d: Delivery<StatusEvent>) -> Result<(), HandlerError> {
        let members = d.payload.members();
        let results = futures::future::join_all(members.into_iter().map(|st| self.one(st))).await;
        let mut unknown = Vec::new();
        for result in results {
            match result {
                Ok(()) => {}
                Err(HandlerError::Reject { reason }) => unknown.push(reason),
                Err(e) => return Err(e),
            }
        }
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(HandlerError::reject(unknown.join("; ")))
        }
    }
}

impl Statuses {
    /// One message's status.
    async fn one(&self, st: StatusEvent) -> Result<(), HandlerError> {
        let r = &self.0;
        // Shared with the batch without a copy.
        let st = Arc::new(st);
        let Some(found) = r
            .batches
            .statuses
            .submit(store::StatusRecord(st.clone()))
            .await
            .map_err(batch_error)?
        else {
            return Err(HandlerError::reject(format!(
                "unknown message {}",
                st.message_id
            )));
        };
        // A message refused before any platform call for one of the skip reasons (the
        // window, an opt-out, a cancel) skips its recipient; any other failure fails it.
        let state = match (&st.status, &st.error) {
            (DeliveryStatus::Sent, _) => "sent",
            (DeliveryStatus::Failed, Some(e))
                if patchbay_contract::broadcasts::is_skip(&e.code) =>
            {
                "skipped"
            }
            (DeliveryStatus::Failed, _) => "failed",
        };
        if let Some(outcome) = broadcasts::Outcome::of(
            st.source,
            st.source_id.as_deref(),
            &found.user.id,
            &st.message_id,
            state,
            st.error.as_ref().map(|e| e.code.as_str()),
        ) {
            r.batches
                .outcomes
                .submit(outcome)
                .await
                .map_err(batch_error)?;
        }
        let bot = r.bot(&st.bot_id).await?;
        let event_type = match st.status {
            DeliveryStatus::Sent => EventType::MessageSent,
            DeliveryStatus::Failed => EventType::MessageFailed,
        };
        let event = TenantEvent {
            id: derive_id(prefix::EVENT, &st.id, 0),
            event_type,
            created_at: st.at,
            bot_id: st.bot_id.clone(),
            channel: Some(st.channel.clone()),
            user: Some(found.user),
            conversation_id: Some(found.conversation_id),
            chat: None,
            message: Some(EventMessage {
                id: st.message_id.clone(),
                platform_message_id: st.platform_message_id.clone(),
                content: None,
                source: st.source,
                source_id: st.source_id.clone(),
            }),
            error: st.error.clone(),
            referral: None,
            resubscribed: false,
            installation: None,
            handled_by: None,
            handover: None,
            broadcast: None,
        };
        r.dispatch(&bot, event, None).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use patchbay_contract::Recipient;

    fn command(messages: Vec<Content>, source: SendSource) -> SendCommand {
        SendCommand {
            v: V1,
            id: Some("c".into()),
            to: Recipient::User {
                user_id: "usr_1".into(),
            },
            messages,
            source,
            source_id: None,
            in_reply_to: None,
            known_recipient: None,
            also_to: Vec::new(),
        }
    }

    fn text(t: &str) -> Content {
        Content::Text { text: t.into() }
    }

    /// What each message of a plan became: `send`, `send+tag`, `substitute`, `refuse`.
    fn outline(plan: &[Planned<'_>]) -> Vec<&'static str> {
        plan.iter()
            .map(|p| match p {
                Planned::Send { tag: None, .. } => "send",
                Planned::Send { tag: Some(_), .. } => "send+tag",
                Planned::Substitute { .. } => "substitute",
                Planned::Refuse { .. } => "refuse",
                Planned::Apply { .. } => "apply",
            })
            .collect()
    }

    /// A broadcast job of `user`'s message at `index` through `channel` of `platform`.
    fn ready(index: usize, user: u32, platform: Platform, channel: &str, t: &str) -> Ready {
        Ready {
            index,
            job: OutboundJob {
                v: V1,
                message_id: format!("msg_{user}_{index}"),
                bot_id: "bot_1".into(),
                channel: patchbay_contract::ChannelRef {
                    id: channel.into(),
                    platform,
                },
                user_id: format!("usr_{user}"),
                conversation_id: format!("conv_{user}"),
                address: format!("U{user}"),
                content: text(t),
                source: SendSource::Broadcast,
                source_id: Some("brd_1".into()),
                in_reply_to: None,
                tag: None,
                created_at: chrono::Utc::now(),
                fresh: true,
                also: Vec::new(),
            },
            at: chrono::Utc::now(),
        }
    }

    /// User numbers as [`shape`] names them.
    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|u| (*u).to_owned()).collect()
    }

    /// Each job as (its message's place, its channel, its recipients' user numbers).
    fn shape(jobs: &[Ready]) -> Vec<(usize, String, Vec<String>)> {
        jobs.iter()
            .map(|m| {
                let users = m
                    .job
                    .members()
                    .into_iter()
                    .map(|b| b.user_id.trim_start_matches("usr_").to_owned())
                    .collect();
                (m.index, m.job.channel.id.clone(), users)
            })
            .collect()
    }

    /// The same message for many users of one channel becomes one job, up to a bulk call's
    /// recipients (or, on a platform without one, the recipients a sender paces in one
    /// handling); a message whose content differs for a user (a template, a link) stays
    /// theirs; other channels get jobs of their own; every first message goes before every
    /// second.
    #[test]
    fn a_broadcast_message_for_many_users_of_a_channel_becomes_one_job_per_bulk_call_or_paced_group()
     {
        let mut jobs = Vec::new();
        for user in 1..=502 {
            jobs.push(ready(0, user, Platform::Line, "ch_line", "news"));
            jobs.push(ready(1, user, Platform::Line, "ch_line", "more"));
        }
        let line_max = patchbay_registry::bulk_recipients(Platform::Line).unwrap();
        assert_eq!(line_max, 500);
        let grouped = bulk_jobs(jobs);
        let first = shape(&grouped);
        let sizes: Vec<(usize, usize)> = first.iter().map(|(i, _, u)| (*i, u.len())).collect();
        assert_eq!(sizes, [(0, 500), (0, 2), (1, 500), (1, 2)]);
        assert_eq!(first[1].2, ["501", "502"]);
        let members: Vec<_> = grouped[0].job.members();
        assert_eq!(members[1].message_id, "msg_2_0");
        assert_eq!(members[1].address, "U2");

        let mut tagged = ready(0, 4, Platform::Line, "ch_line", "news");
        tagged.job.tag = Some(MessageTag::HumanAgent);
        let jobs = vec![
            ready(1, 9, Platform::Line, "ch_line", "second"),
            ready(0, 1, Platform::Line, "ch_line", "Hi Ann"),
            ready(0, 2, Platform::Line, "ch_line", "Hi Bob"),
            ready(0, 3, Platform::Line, "ch_line", "Hi Bob"),
            tagged,
            ready(0, 5, Platform::Line, "ch_other", "Hi Bob"),
            ready(0, 6, Platform::Telegram, "ch_tg", "Hi Bob"),
            ready(0, 7, Platform::Telegram, "ch_tg", "Hi Bob"),
            ready(1, 10, Platform::Line, "ch_line", "second"),
            ready(0, 8, Platform::Telegram, "ch_tg", "Hi Ann"),
        ];
        assert_eq!(
            shape(&bulk_jobs(jobs)),
            [
                (0, "ch_line".into(), s(&["1"])),
                (0, "ch_line".into(), s(&["2", "3"])),
                (0, "ch_line".into(), s(&["4"])),
                (0, "ch_other".into(), s(&["5"])),
                (0, "ch_tg".into(), s(&["6", "7"])),
                (0, "ch_tg".into(), s(&["8"])),
                (1, "ch_line".into(), s(&["9", "10"])),
            ]
        );

        // Without a bulk call: jobs of up to the paced recipients.
        let paced = patchbay_registry::PACED_RECIPIENTS;
        let jobs = (1..=u32::try_from(paced).unwrap() + 1)
            .map(|user| ready(0, user, Platform::Telegram, "ch_tg", "news"))
            .collect();
        let sizes: Vec<usize> = shape(&bulk_jobs(jobs))
            .iter()
            .map(|(_, _, u)| u.len())
            .collect();
        assert_eq!(sizes, [paced, 1]);
    }

    /// A user whose broadcast message is personalised at one place and not at the next gets
    /// every message in a job of their own (a job of one and a job of many have different
    /// ordering keys at the sender), and the others stay grouped; ungrouping one user can
    /// leave another alone, who is then ungrouped too.
    #[test]
    fn a_user_with_one_message_of_their_own_gets_all_their_messages_alone() {
        let jobs = vec![
            ready(0, 1, Platform::Telegram, "ch_tg", "Hi Ann"),
            ready(0, 2, Platform::Telegram, "ch_tg", "Hi all"),
            ready(0, 3, Platform::Telegram, "ch_tg", "Hi all"),
            ready(1, 1, Platform::Telegram, "ch_tg", "news"),
            ready(1, 2, Platform::Telegram, "ch_tg", "news"),
            ready(1, 3, Platform::Telegram, "ch_tg", "news"),
        ];
        assert_eq!(
            shape(&bulk_jobs(jobs)),
            [
                (0, "ch_tg".into(), s(&["2", "3"])),
                (0, "ch_tg".into(), s(&["1"])),
                (1, "ch_tg".into(), s(&["2", "3"])),
                (1, "ch_tg".into(), s(&["1"])),
            ]
        );

        // 1 and 3 are each alone at one place and grouped at the other; without them 2 is
        // alone at both.
        let jobs = vec![
            ready(0, 1, Platform::Line, "ch_line", "P"),
            ready(0, 2, Platform::Line, "ch_line", "P"),
            ready(0, 3, Platform::Line, "ch_line", "Q"),
            ready(1, 1, Platform::Line, "ch_line", "R"),
            ready(1, 2, Platform::Line, "ch_line", "S"),
            ready(1, 3, Platform::Line, "ch_line", "S"),
        ];
        let grouped = bulk_jobs(jobs);
        assert!(
            grouped.iter().all(|m| m.job.also.is_empty()),
            "{:?}",
            shape(&grouped)
        );
        let mut each: Vec<(usize, String)> = shape(&grouped)
            .into_iter()
            .map(|(i, _, u)| (i, u.concat()))
            .collect();
        each.sort();
        let expected: Vec<(usize, String)> = [0, 1]
            .into_iter()
            .flat_map(|i| ["1", "2", "3"].map(|u| (i, u.to_owned())))
            .collect();
        assert_eq!(each, expected);
        assert_eq!(grouped[0].job.message_id.split('_').nth(2), Some("0"));
    }

    /// A broadcast's command for many users names each once; other commands are no batch.
    #[test]
    fn only_a_broadcast_s_command_names_more_users() {
        let mut cmd = command(vec![text("x")], SendSource::Broadcast);
        cmd.source_id = Some("brd_1".into());
        assert!(batch_of(&cmd).is_none(), "one user");
        cmd.also_to = vec![
            "usr_2".into(),
            "usr_1".into(),
            "usr_3".into(),
            "usr_2".into(),
        ];
        assert_eq!(
            batch_of(&cmd).unwrap(),
            [
                &"usr_1".to_owned(),
                &"usr_2".to_owned(),
                &"usr_3".to_owned()
            ]
        );
        let mut api = cmd.clone();
        api.source = SendSource::Api;
        assert!(
            batch_of(&api).is_none(),
            "a tenant's command names one user"
        );
        cmd.source_id = None;
        assert!(batch_of(&cmd).is_none(), "no broadcast named");
    }

    /// An inline reply soon after its event goes to the recipient the event named, with the
    /// event's time as the window's start; a late one (a retried or replayed delivery), or one
    /// whose recipient is not the user named, is looked up.
    #[test]
    fn an_inline_reply_soon_after_its_event_needs_no_lookup() {
        let now = chrono::Utc::now();
        let known = |user_id: &str, minutes: i64| patchbay_contract::KnownRecipient {
            user_id: user_id.into(),
            channel: patchbay_contract::ChannelRef {
                id: "chn_1".into(),
                platform: Platform::Whatsapp,
            },
            address: "4915112345678".into(),
            conversation_id: "cnv_1".into(),
            window_from: now - chrono::TimeDelta::minutes(minutes),
            handled_by: None,
        };
        let mut cmd = command(vec![text("a")], SendSource::Inline);
        assert!(known_recipient(&cmd, now).is_none(), "no hint: looked up");
        cmd.known_recipient = Some(known("usr_1", 1));
        let r = known_recipient(&cmd, now).expect("taken as named");
        assert_eq!(
            (
                r.user_id.as_str(),
                r.address.as_str(),
                r.conversation_id.as_str()
            ),
            ("usr_1", "4915112345678", "cnv_1")
        );
        assert_eq!(r.last_inbound_at, Some(now - chrono::TimeDelta::minutes(1)));
        cmd.known_recipient = Some(known("usr_1", 11));
        assert!(known_recipient(&cmd, now).is_none(), "too old: looked up");
        cmd.known_recipient = Some(known("usr_2", 1));
        assert!(
            known_recipient(&cmd, now).is_none(),
            "names another user than the command: looked up"
        );
    }

    /// A field message is applied whatever the window and the quota: it never reaches the
    /// platform, takes no fallback template and counts against no quota.
    #[test]
    fn field_messages_are_applied_outside_the_window_and_beside_the_quota() {
        let now = chrono::Utc::now();
        let field = |text: &str| {
            Content::Field(patchbay_contract::content::FieldAssignment {
                text: Some(text.into()),
                field: None,
                value: None,
            })
        };
        let template = Content::Template(
            patchbay_contract::content::Template::with_body("we_miss_you", "en", &[]).into(),
        );
        let cmd = command(
            vec![field(".licenseplate XX-99-WZ"), text("a"), field(".old")],
            SendSource::Api,
        );
        let closed = Some(now - chrono::TimeDelta::hours(30));
        let p = plan(Platform::Whatsapp, closed, 0, now, &cmd, Some(&template));
        assert_eq!(outline(&p), ["apply", "substitute", "apply"]);
        let Planned::Apply {
            field: f, value, ..
        } = &p[0]
        else {
            unreachable!()
        };
        assert_eq!(
            (f.as_str(), value.as_deref()),
            ("licenseplate", Some("XX-99-WZ"))
        );
        let Planned::Apply {
            field: f, value, ..
        } = &p[2]
        else {
            unreachable!()
        };
        assert_eq!(
            (f.as_str(), value.as_deref()),
            ("old", None),
            "no value: removed"
        );
        // WeChat's five messages per user message: four sent, the field messages beside them.
        let open = Some(now - chrono::TimeDelta::minutes(1));
        let p = plan(Platform::Wechat, open, 4, now, &cmd, None);
        assert_eq!(outline(&p), ["apply", "send", "apply"]);
    }

    #[test]
    fn outside_the_window_the_fallback_template_replaces_one_message_only() {
        let now = chrono::Utc::now();
        let last = Some(now - chrono::TimeDelta::hours(30));
        let template = Content::Template(
            patchbay_contract::content::Template::with_body("we_miss_you", "en", &[]).into(),
        );
        let cmd = command(
            vec![text("a"), template.clone(), text("b")],
            SendSource::Api,
        );
        let with = plan(Platform::Whatsapp, last, 0, now, &cmd, Some(&template));
        assert_eq!(outline(&with), ["substitute", "send", "refuse"]);
        assert_eq!(
            with[0].stored(),
            (&template, Some(&text("a"))),
            "the tenant's message is kept beside the template sent in its place"
        );
        let Planned::Refuse { content, error } = &with[2] else {
            unreachable!()
        };
        assert_eq!(*content, &text("b"), "a refused message is stored as asked");
        assert_eq!(error.code, "outside_window");
        assert!(error.message.contains("fallback template was sent once"));
        let without = plan(Platform::Whatsapp, last, 0, now, &cmd, None);
        assert_eq!(outline(&without), ["refuse", "send", "refuse"]);
        // Inside the window, or on a platform without one, nothing changes.
        let fresh = Some(now - chrono::TimeDelta::hours(1));
        assert_eq!(
            outline(&plan(Platform::Whatsapp, fresh, 0, now, &cmd, None)),
            ["send", "send", "send"]
        );
        assert_eq!(
            outline(&plan(Platform::Telegram, last, 0, now, &cmd, None)),
            ["send", "send", "send"]
        );
    }

    #[test]
    fn a_human_agent_on_messenger_is_tagged_after_24_hours() {
        let now = chrono::Utc::now();
        let cmd = command(vec![text("a")], SendSource::Human);
        let days = |d| Some(now - chrono::TimeDelta::days(d));
        assert_eq!(
            outline(&plan(Platform::Messenger, days(3), 0, now, &cmd, None)),
            ["send+tag"]
        );
        assert_eq!(
            outline(&plan(Platform::Messenger, days(8), 0, now, &cmd, None)),
            ["refuse"]
        );
        let bot = command(vec![text("a")], SendSource::Api);
        assert_eq!(
            outline(&plan(Platform::Messenger, days(3), 0, now, &bot, None)),
            ["refuse"]
        );
    }

    #[test]
    fn wechat_allows_five_free_form_messages_per_message_from_the_user() {
        let now = chrono::Utc::now();
        let last = Some(now - chrono::TimeDelta::hours(1));
        let template = Content::Template(
            patchbay_contract::content::Template::with_body("order_ready", "zh_CN", &[]).into(),
        );
        let cmd = command(
            vec![text("a"), template.clone(), text("b"), text("c")],
            SendSource::Api,
        );
        // Three sent since the user wrote: two more free-form messages go; templates are
        // not counted and always go.
        let p = plan(Platform::Wechat, last, 3, now, &cmd, None);
        assert_eq!(outline(&p), ["send", "send", "send", "refuse"]);
        let Planned::Refuse { error, .. } = &p[3] else {
            unreachable!()
        };
        assert_eq!(error.code, "rate_limited");
        assert!(
            error
                .message
                .contains("5 free-form messages per message from the user, and 5 were sent"),
            "{}",
            error.message
        );
        // Over the quota, the bot's fallback template goes once in place of the first.
        let p = plan(Platform::Wechat, last, 5, now, &cmd, Some(&template));
        assert_eq!(outline(&p), ["substitute", "send", "refuse", "refuse"]);
        // Other platforms have no quota.
        assert_eq!(
            outline(&plan(Platform::Whatsapp, last, 50, now, &cmd, None)),
            ["send", "send", "send", "send"]
        );
    }
}
