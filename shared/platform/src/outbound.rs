//! The body of every `outbound-<platform>` service: consume `<p>.outbound.<platform>.>`, send
//! through the adapter, and report the outcome on `<p>.status.<bot>`. Retryable failures are
//! retried by the consumer runtime (with the platform's `retry_after` when given); on the last
//! attempt, and for permanent failures, a `failed` status goes back so tenants learn of it.

use std::sync::Arc;

use patchbay_bus::{ConfigView, Delivery, Handler, HandlerError};
use patchbay_config::MasterKey;
use patchbay_contract::{
    DeliveryError, DeliveryStatus, OutboundJob, SendSource, StatusEvent, V1, topology,
};
use patchbay_runtime::{BoxError, Deps, Service};

use crate::ingress::open_credentials;
use crate::{OutboundAdapter, SendError, Target};

type Keyed = governor::DefaultKeyedRateLimiter<String>;

/// Per-channel and per-conversation pace (GCRA, in memory: a channel's partitions, of its
/// conversations' messages and of its broadcasts', are read by one replica at a time, so this
/// replica sees all of the channel's sends).
///
/// A broadcast's message takes the channel's next token only while none of the channel's
/// conversations' messages waits for one, and not while the platform has asked to slow down
/// after one of the channel's broadcast messages: interactive traffic always goes first, and a
/// 429 slows the broadcast, not the conversations.
struct Pace {
    channel: Keyed,
    conversation: Keyed,
    /// Conversations' messages waiting for their channel's token, per channel.
    waiting: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Until when a channel's broadcast messages wait: the platform's `retry_after` to one.
    held: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Per channel, the broadcast message whose turn is next: one watches the channel's
    /// tokens, the others wait behind it in order (not one wake-up each per token).
    turns: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// How often a broadcast message waiting behind conversations' messages looks again.
const BULK_YIELD: std::time::Duration = std::time::Duration::from_millis(5);

/// A conversation's message waiting for its channel's token (counted in [`Pace::waiting`]
/// until dropped).
struct Waiting<'p> {
    pace: &'p Pace,
    channel: &'p str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = self.pace.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = waiting.get_mut(self.channel) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                waiting.remove(self.channel);
            }
        }
    }
}

impl Pace {
    fn new(l: crate::Limits) -> Self {
        use governor::Quota;
        use std::num::NonZeroU32;
        let nz = |v: u32| NonZeroU32::new(v.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            // A tenth of a second's worth at once at most: in any one second a channel sends
            // at most its limit and a tenth (governor's default burst, a whole second's worth,
            // let a second hold twice the limit).
            channel: governor::RateLimiter::keyed(
                Quota::per_second(nz(l.per_channel_per_second))
                    .allow_burst(nz(l.per_channel_per_second.div_ceil(10))),
            ),
            conversation: governor::RateLimiter::keyed(
                Quota::per_second(nz(l.per_conversation_per_second))
                    .allow_burst(nz(l.per_conversation_burst)),
            ),
            waiting: std::sync::Mutex::default(),
            held: std::sync::Mutex::default(),
            turns: std::sync::Mutex::default(),
        }
    }

    /// A conversation's message of `channel` waits for the channel's token.
    async fn interactive_turn(&self, channel: &str) {
        *self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(channel.to_owned())
            .or_default() += 1;
        let _waiting = Waiting {
            pace: self,
            channel,
        };
        self.channel.until_key_ready(&channel.to_owned()).await;
    }

    /// A broadcast message of `channel` waits for a token no conversation wants, and for the
    /// end of a hold.
    async fn bulk_turn(&self, channel: &str) {
        use governor::clock::Clock;
        let key = channel.to_owned();
        let turn = self
            .turns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _turn = turn.lock().await;
        loop {
            let held = self
                .held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(channel)
                .copied()
                .filter(|until| *until > std::time::Instant::now());
            if let Some(until) = held {
                tokio::time::sleep_until(until.into()).await;
                continue;
            }
            let busy = self
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(channel);
            if busy {
                tokio::time::sleep(BULK_YIELD).await;
                continue;
            }
            match self.channel.check_key(&key) {
                Ok(()) => return,
                Err(not_until) => {
                    let clock = governor::clock::DefaultClock::default();
                    tokio::time::sleep(not_until.wait_time_from(clock.now())).await;
                }
            }
        }
    }

    /// The platform asked to slow down after a broadcast message of `channel`: its broadcast
    /// messages wait `after` (a second when it did not say).
    fn hold_bulk(&self, channel: &str, after: Option<std::time::Duration>) {
        let until = std::time::Instant::now() + after.unwrap_or(std::time::Duration::from_secs(1));
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let entry = held.entry(channel.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }
}

/// A platform's acceptance of one message, as remembered here.
#[derive(Debug, Clone)]
struct Accepted {
    platform_message_id: Option<String>,
    /// Stored in the sent-messages bucket.
    recorded: bool,
    at: std::time::Instant,
}

/// How long an accepted message is remembered here after it was recorded.
const REMEMBER_ACCEPTED: std::time::Duration = std::time::Duration::from_secs(180);

/// How long a broadcast found not cancelled in the bucket is believed so without asking again
/// (a cancel the watch delivers counts at once; this bounds a missed one while the watch
/// reconnects).
const NOT_CANCELLED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// What this sender knows of a broadcast's cancel.
enum Known {
    Cancelled,
    NotCancelledAt(std::time::Instant),
}

/// Cancelled broadcasts, as the `<p>_broadcasts` bucket has them, held in memory: a watch of
/// the bucket adds each cancel as it is written, and a broadcast the watch has not named is
/// read from the bucket at most once every [`NOT_CANCELLED_FOR`]. A broadcast's messages then
/// cost no bucket read each (two each before: one before the pace wait, one before the send).
struct CancelledBroadcasts {
    kv: async_nats::jetstream::kv::Store,
    known: std::sync::Mutex<std::collections::HashMap<String, Known>>,
}

impl CancelledBroadcasts {
    async fn contains(&self, id: &str) -> Result<bool, HandlerError> {
        match self.known.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            Some(Known::Cancelled) => return Ok(true),
            Some(Known::NotCancelledAt(at)) if at.elapsed() < NOT_CANCELLED_FOR => {
                return Ok(false);
            }
            _ => {}
        }
        let at = std::time::Instant::now();
        let cancelled = self
            .kv
            .get(id)
            .await
            .map_err(|e| HandlerError::unavailable(format!("broadcasts bucket: {e}")))?
            .is_some();
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let entry = known
            .entry(id.to_owned())
            .or_insert(Known::NotCancelledAt(at));
        // A cancel the watch delivered meanwhile is not undone by this older read.
        if cancelled {
            *entry = Known::Cancelled;
        } else if let Known::NotCancelledAt(t) = entry {
            *t = at;
        }
        Ok(matches!(entry, Known::Cancelled))
    }

    /// Follows the bucket until `shutdown`, from its start (each cancel is kept for the
    /// bucket's lifetime of its keys).
    async fn watch(&self, shutdown: tokio_util::sync::CancellationToken) -> Result<(), BoxError> {
        patchbay_bus::follow_bucket(
            &self.kv,
            ">",
            "broadcasts",
            std::time::Duration::from_secs(1),
            &shutdown,
            |entry| {
                let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
                match entry.operation {
                    async_nats::jetstream::kv::Operation::Put => {
                        known.insert(entry.key, Known::Cancelled);
                    }
                    _ => {
                        known.remove(&entry.key);
                    }
                }
            },
        )
        .await;
        Ok(())
    }

    /// Forgets what was read long ago (the watch's cancels stay).
    fn prune(&self) {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, k| match k {
                Known::Cancelled => true,
                Known::NotCancelledAt(at) => at.elapsed() < NOT_CANCELLED_FOR,
            });
    }
}

struct Sender<A> {
    adapter: A,
    /// Messages the platform accepted recently (message id → what it answered): a retry
    /// after a bus hiccup, or a redelivery right after a recovered copy was handled, reports
    /// them instead of sending again, even before the sent-messages bucket has the record (or
    /// while a replica answering reads lags behind). Kept until recorded and a few minutes old.
    accepted: std::sync::Mutex<std::collections::HashMap<String, Accepted>>,
    pace: Pace,
    /// Cancelled broadcasts, whose messages still waiting here are not sent.
    cancelled: Arc<CancelledBroadcasts>,
    sent: async_nats::jetstream::kv::Store,
    deps: Deps,
    view: ConfigView,
    key: MasterKey,
    max_attempts: u32,
    /// Downloads of platform CDN URLs (media users sent).
    urls: crate::media::UrlFetcher,
    /// The media object store.
    media: async_nats::jetstream::object_store::ObjectStore,
    /// Files bots uploaded (`POST /v1/media`).
    uploads: async_nats::jetstream::object_store::ObjectStore,
    /// The platforms' references to files bots uploaded ([`OutboundAdapter::MEDIA_REFERENCES`]).
    references: References,
}

/// References remembered in a replica's memory at most (then the expired ones are dropped, or
/// all).
const REFERENCES_MAX: usize = 4096;

/// A platform's reference to a file a bot uploaded, as kept in the sent-messages bucket.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredReference {
    reference: String,
    /// When the platform named it (Unix seconds).
    at: i64,
    /// The channel's version then: a reference made with other credentials (another account)
    /// is not reused.
    channel_version: String,
}

/// The platform's references to files bots uploaded (`POST /v1/media`), per channel and
/// media id: what [`OutboundAdapter::upload_media`] returned or a send answered
/// ([`crate::Sent::media_reference`]). Kept in this replica's memory and in the sent-messages
/// bucket (`media.<channel>.<media id>`, for the bucket's lifetime at most), so every replica,
/// and one started later, reuses what one of them learned instead of uploading the file again.
struct References {
    kv: async_nats::jetstream::kv::Store,
    memory: std::sync::Mutex<
        std::collections::HashMap<(String, String), (StoredReference, std::time::Instant)>,
    >,
}

impl References {
    fn key(channel_id: &str, media_id: &str) -> String {
        format!("media.{channel_id}.{media_id}")
    }

    /// The reference to `media_id` through `channel_id` (at `channel_version`), if one younger
    /// than `reuse` is known.
    async fn get(
        &self,
        channel_id: &str,
        media_id: &str,
        channel_version: &str,
        reuse: std::time::Duration,
    ) -> Option<String> {
        let fresh = |r: &StoredReference| {
            r.channel_version == channel_version
                && chrono::Utc::now().timestamp().saturating_sub(r.at)
                    < i64::try_from(reuse.as_secs()).unwrap_or(i64::MAX)
        };
        let key = (channel_id.to_owned(), media_id.to_owned());
        if let Some((r, _)) = self
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .filter(|(r, _)| fresh(r))
        {
            return Some(r.reference.clone());
        }
        let stored = match self.kv.get(Self::key(channel_id, media_id)).await {
            Ok(Some(bytes)) => serde_json::from_slice::<StoredReference>(&bytes).ok()?,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, media_id, "reading a media reference failed; sending without");
                return None;
            }
        };
        if !fresh(&stored) {
            return None;
        }
        let reference = stored.reference.clone();
        self.remember(key, stored);
        Some(reference)
    }

    /// Keeps `reference` to `media_id` through `channel_id` (at `channel_version`), here and in
    /// the bucket (a failure to store it is logged: the next send learns it again).
    async fn put(&self, channel_id: &str, media_id: &str, channel_version: &str, reference: &str) {
        let stored = StoredReference {
            reference: reference.to_owned(),
            at: chrono::Utc::now().timestamp(),
            channel_version: channel_version.to_owned(),
        };
        match serde_json::to_vec(&stored) {
            Ok(bytes) => {
                if let Err(e) = self
                    .kv
                    .put(Self::key(channel_id, media_id), bytes.into())
                    .await
                {
                    tracing::warn!(error = %e, media_id, "storing a media reference failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "encoding a media reference failed"),
        }
        self.remember((channel_id.to_owned(), media_id.to_owned()), stored);
    }

    fn remember(&self, key: (String, String), stored: StoredReference) {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        if memory.len() >= REFERENCES_MAX {
            let day = std::time::Duration::from_secs(24 * 3600);
            memory.retain(|_, (_, at)| at.elapsed() < day);
            if memory.len() >= REFERENCES_MAX {
                memory.clear();
            }
        }
        memory.insert(key, (stored, std::time::Instant::now()));
    }
}

/// The outbound service of adapter `A`.
pub async fn service<A: OutboundAdapter>(
    name: &'static str,
    deps: &Deps,
    adapter: A,
) -> Result<Service, BoxError> {
    let spec = topology::outbound(deps.bus.subjects(), A::PLATFORM);
    let bulk = topology::bulk(deps.bus.subjects(), A::PLATFORM);
    let cancelled = deps
        .bus
        .jetstream()
        .get_key_value(
            &deps
                .bus
                .subjects()
                .bucket(patchbay_contract::subjects::Bucket::Broadcasts),
        )
        .await?;
    let bucket = deps
        .bus
        .subjects()
        .bucket(patchbay_contract::subjects::Bucket::Sent);
    let sent = deps.bus.jetstream().get_key_value(&bucket).await?;
    let pace = Pace::new(adapter.limits());
    let media = deps
        .bus
        .jetstream()
        .get_object_store(&deps.bus.subjects().media_store())
        .await?;
    let uploads = deps
        .bus
        .jetstream()
        .get_object_store(&deps.bus.subjects().uploads_store())
        .await?;
    let urls = crate::media::UrlFetcher::new(
        std::time::Duration::from_millis(deps.config.outbound_timeout_ms),
        deps.config.allow_private_callbacks,
    )?;
    let service_name = format!("outbound-{}", A::PLATFORM.as_str());
    let responder = deps
        .bus
        .responder(
            deps.bus.subjects().rpc_all(&service_name),
            service_name.clone(),
        )
        .await?;
    let handler = Arc::new(Sender {
        accepted: std::sync::Mutex::default(),
        pace,
        adapter,
        cancelled: Arc::new(CancelledBroadcasts {
            kv: cancelled,
            known: std::sync::Mutex::default(),
        }),
        sent: sent.clone(),
        deps: deps.clone(),
        view: deps.view.clone(),
        key: deps.config.require_master_key()?,
        max_attempts: spec.max_attempts,
        urls,
        media,
        uploads,
        references: References {
            kv: sent.clone(),
            memory: std::sync::Mutex::default(),
        },
    });
    let prune = handler.clone();
    let rpc = handler.clone();
    let shutdown = deps.shutdown.clone();
    let (cancels, watching) = (handler.cancelled.clone(), deps.shutdown.clone());
    Ok(Service::new(name)
        .task(async move { cancels.watch(watching).await })
        .task(deps.consumer::<OutboundJob, _>(spec, handler.clone()))
        .task(deps.consumer::<OutboundJob, _>(bulk, handler))
        .task(responder.serve(
            MEDIA_CONCURRENCY,
            move |op, body| {
                let rpc = rpc.clone();
                async move { rpc.answer(&op, &body).await }
            },
            deps.shutdown.clone(),
        ))
        .task(async move {
            // Forget the pace of keys that have been idle.
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        prune.pace.channel.retain_recent();
                        prune
                            .pace
                            .held
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .retain(|_, until| *until > std::time::Instant::now());
                        prune
                            .pace
                            .turns
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .retain(|_, turn| Arc::strong_count(turn) > 1);
                        prune.pace.conversation.retain_recent();
                        prune.cancelled.prune();
                        prune
                            .accepted
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .retain(|_, a| !a.recorded || a.at.elapsed() < REMEMBER_ACCEPTED);
                    }
                    () = shutdown.cancelled() => return Ok::<(), BoxError>(()),
                }
            }
        }))
}

/// The largest profile picture fetched from a URL (WhatsApp takes JPEG and PNG pictures of
/// up to 5 MB).
const PROFILE_PICTURE_MAX_BYTES: u64 = 5 * 1024 * 1024;

/// Media downloads one replica runs at once.
const MEDIA_CONCURRENCY: usize = 8;

impl<A: OutboundAdapter> Sender<A> {
    /// Answers `<p>.rpc.outbound-<platform>.<op>`.
    async fn answer(&self, op: &str, body: &[u8]) -> Vec<u8> {
        use patchbay_bus::rpc::{decode, encode};
        match op {
            patchbay_contract::outbound_ops::FETCH_MEDIA => {
                encode(match decode::<patchbay_contract::FetchMediaRequest>(body) {
                    Ok(req) => self.fetch_media(&req).await,
                    Err(e) => Err(e),
                })
            }
            patchbay_contract::outbound_ops::CHANNEL_PROFILE => encode(
                match decode::<patchbay_contract::ChannelProfileRequest>(body) {
                    Ok(req) => self.channel_profile(&req).await,
                    Err(e) => Err(e),
                },
            ),
            other => encode::<()>(Err(patchbay_contract::RpcError::new(
                404,
                "unknown_operation",
                format!(
                    "outbound-{} has no operation {other:?}",
                    A::PLATFORM.as_str()
                ),
            ))),
        }
    }

    /// Channel `channel_id` of this platform (and of `bot_id`, when given) with its credentials
    /// opened, for a request/reply operation: 404 when there is none, 409 when its
    /// credentials do not open.
    async fn opened(
        &self,
        channel_id: &str,
        bot_id: Option<&str>,
    ) -> Result<
        (
            std::sync::Arc<patchbay_contract::ChannelRecord>,
            A::Credentials,
        ),
        patchbay_contract::RpcError,
    > {
        use patchbay_contract::RpcError;
        let channel = self
            .view
            .channel(channel_id)
            .await
            .map_err(|e| RpcError::new(503, "unavailable", e.to_string()))?
            .filter(|c| c.platform == A::PLATFORM && bot_id.is_none_or(|b| c.bot_id == b))
            .ok_or_else(|| RpcError::new(404, "not_found", format!("no channel {channel_id}")))?;
        let creds: A::Credentials = open_credentials(&self.key, &channel)
            .map_err(|e| RpcError::new(409, "channel_misconfigured", e.to_string()))?;
        Ok((channel, creds))
    }

    /// Where and how to call the platform for `channel`.
    fn target<'a>(
        &'a self,
        channel: &'a patchbay_contract::ChannelRecord,
        creds: &'a A::Credentials,
    ) -> Target<'a, A::Credentials> {
        Target {
            credentials: creds,
            base_url: channel
                .api_base_url
                .as_deref()
                .unwrap_or(self.adapter.default_base_url()),
        }
    }

    /// Reads (after changing, with `req.change`) a channel's profile at the platform with the
    /// channel's credentials. The platform's refusal is reported: 422 for what it found wrong
    /// with the change (or what Patchbay did first), 502 for anything else it answered, 503
    /// when it could not be reached.
    async fn channel_profile(
        &self,
        req: &patchbay_contract::ChannelProfileRequest,
    ) -> Result<patchbay_contract::ChannelProfile, patchbay_contract::RpcError> {
        use patchbay_contract::RpcError;
        let (channel, creds) = self.opened(&req.channel_id, Some(&req.bot_id)).await?;
        let target = self.target(&channel, &creds);
        let ctx = crate::media::Context {
            urls: &self.urls,
            max_bytes: PROFILE_PICTURE_MAX_BYTES,
        };
        let profile = self
            .adapter
            .profile(target, req.change.as_ref(), ctx)
            .await
            .map_err(|e| match e {
                SendError::Retryable { reason, .. } => RpcError::new(503, "unavailable", reason),
                SendError::Permanent(e) => {
                    let status = match e.code.as_str() {
                        "invalid_request" | "unsupported" | "too_large" | "not_found" => 422,
                        _ => 502,
                    };
                    RpcError::new(status, &e.code, e.message)
                }
            })?;
        if req.change.is_some() {
            tracing::info!(channel_id = %req.channel_id, bot_id = %req.bot_id, "channel profile changed at the platform");
        }
        Ok(patchbay_contract::ChannelProfile {
            channel_id: channel.id.clone(),
            platform: A::PLATFORM,
            profile,
        })
    }

    /// Downloads a user's media with the channel's credentials into the media store.
    async fn fetch_media(
        &self,
        req: &patchbay_contract::FetchMediaRequest,
    ) -> Result<patchbay_contract::FetchedMedia, patchbay_contract::RpcError> {
        use patchbay_contract::RpcError;
        let unavailable =
            |e: &dyn std::fmt::Display| RpcError::new(503, "unavailable", e.to_string());
        let (channel, creds) = self.opened(&req.channel_id, None).await?;
        let target = self.target(&channel, &creds);
        let ctx = crate::media::Context {
            urls: &self.urls,
            max_bytes: req.max_bytes,
        };
        let fetched = self
            .adapter
            .fetch_media(target, &req.media, ctx)
            .await
            .map_err(|e| match e {
                SendError::Retryable { reason, .. } => RpcError::new(503, "unavailable", reason),
                SendError::Permanent(e) => {
                    let status = match e.code.as_str() {
                        "not_found" => 404,
                        "too_large" => 413,
                        _ => 502,
                    };
                    RpcError::new(status, &e.code, e.message)
                }
            })?;
        let mut fetched = fetched;
        if fetched.content_type == "application/octet-stream"
            && let Some(known) = &req.media.mime_type
        {
            // What the webhook said (Telegram serves every file as octet-stream).
            fetched.content_type.clone_from(known);
        }
        let size = fetched.bytes.len() as u64;
        let meta = async_nats::jetstream::object_store::ObjectMetadata {
            name: req.object.clone(),
            metadata: [
                ("content-type".to_owned(), fetched.content_type.clone()),
                ("bot-id".to_owned(), req.bot_id.clone()),
            ]
            .into(),
            ..Default::default()
        };
        self.media
            .put(meta, &mut fetched.bytes.as_slice())
            .await
            .map_err(|e| unavailable(&e))?;
        metrics::counter!("patchbay_media_downloads_total", "platform" => A::PLATFORM.as_str())
            .increment(1);
        tracing::info!(channel_id = %req.channel_id, object = %req.object, size, "media downloaded from the platform");
        Ok(patchbay_contract::FetchedMedia {
            content_type: fetched.content_type,
            size,
        })
    }

    /// For media given by the `media_id` of a file the bot uploaded, on a platform that is
    /// given such files by reference ([`OutboundAdapter::MEDIA_REFERENCES`]): the job with the
    /// platform's reference as `file_id` (known, or uploaded now). `None`: send the job as it
    /// is (the platform fetches the upload's URL, and may name the file in its answer).
    async fn with_uploaded_media(
        &self,
        target: &Target<'_, A::Credentials>,
        job: &OutboundJob,
        channel_version: &str,
    ) -> Result<Option<OutboundJob>, SendError> {
        let reuse = match A::MEDIA_REFERENCES {
            crate::MediaReferences::Url => return Ok(None),
            crate::MediaReferences::Uploaded(d) | crate::MediaReferences::Learned(d) => {
                d.mul_f32(0.9)
            }
        };
        let Some(media) = patchbay_contract::content::Media::of(&job.content) else {
            return Ok(None);
        };
        let Some(media_id) = media.media_id.as_deref() else {
            return Ok(None);
        };
        if media.file_id.is_some() {
            return Ok(None);
        }
        let known = self
            .references
            .get(&job.channel.id, media_id, channel_version, reuse)
            .await;
        let reference = match known {
            Some(r) => r,
            // Learned from the send by URL.
            None if matches!(A::MEDIA_REFERENCES, crate::MediaReferences::Learned(_)) => {
                return Ok(None);
            }
            None => {
                let name = format!("{}/{media_id}", job.bot_id);
                let mut object = match self.uploads.get(&name).await {
                    Ok(o) => o,
                    Err(e)
                        if e.kind()
                            == async_nats::jetstream::object_store::GetErrorKind::NotFound =>
                    {
                        return Err(SendError::permanent(
                            "media_unavailable",
                            format!("no upload {media_id} of this bot (uploads are kept 30 days)"),
                            None,
                        ));
                    }
                    Err(e) => {
                        return Err(SendError::Retryable {
                            reason: format!("reading the upload: {e}"),
                            after: None,
                        });
                    }
                };
                let info = object.info().clone();
                let mut bytes = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut object, &mut bytes)
                    .await
                    .map_err(|e| SendError::Retryable {
                        reason: format!("reading the upload: {e}"),
                        after: None,
                    })?;
                let content_type = info
                    .metadata
                    .get("content-type")
                    .cloned()
                    .unwrap_or_else(|| "application/octet-stream".into());
                let kind = crate::spec::MediaKind::of(&content_type);
                let file = crate::media::Fetched {
                    content_type,
                    bytes,
                };
                let filename = info.metadata.get("filename").map(String::as_str);
                let Some(reference) = self
                    .adapter
                    .upload_media(
                        Target {
                            credentials: target.credentials,
                            base_url: target.base_url,
                        },
                        &file,
                        kind,
                        filename,
                    )
                    .await?
                else {
                    return Ok(None);
                };
                self.references
                    .put(&job.channel.id, media_id, channel_version, &reference)
                    .await;
                tracing::info!(media_id, channel_id = %job.channel.id, "upload handed to the platform");
                reference
            }
        };
        let mut prepared = job.clone();
        if let Some(m) = patchbay_contract::content::Media::of_mut(&mut prepared.content) {
            m.file_id = Some(reference);
        }
        Ok(Some(prepared))
    }

    /// Keeps the platform's reference to `job`'s uploaded media when its send answered one
    /// ([`crate::Sent::media_reference`]).
    async fn learned(&self, job: &OutboundJob, channel_version: &str, sent: &crate::Sent) {
        if let Some(reference) = &sent.media_reference
            && let Some(media_id) = patchbay_contract::content::Media::of(&job.content)
                .and_then(|m| m.media_id.as_deref())
        {
            self.references
                .put(&job.channel.id, media_id, channel_version, reference)
                .await;
        }
    }

    /// `job`'s channel, enabled, with its credentials opened; the failure of its messages when
    /// there is none or they do not open.
    async fn channel_of(
        &self,
        job: &OutboundJob,
    ) -> Result<
        Result<(Arc<patchbay_contract::ChannelRecord>, A::Credentials), DeliveryError>,
        HandlerError,
    > {
        let channel = self
            .view
            .channel(&job.channel.id)
            .await?
            .filter(|c| c.enabled && c.platform == A::PLATFORM);
        let Some(channel) = channel else {
            return Ok(Err(DeliveryError {
                code: "channel_unavailable".into(),
                message: format!("channel {} does not exist or is disabled", job.channel.id),
                platform_code: None,
            }));
        };
        match open_credentials(&self.key, &channel) {
            Ok(creds) => Ok(Ok((channel, creds))),
            Err(e) => {
                tracing::error!(error = %e, "cannot open channel credentials");
                Ok(Err(DeliveryError {
                    code: "channel_misconfigured".into(),
                    message: "the channel's credentials cannot be read".into(),
                    platform_code: None,
                }))
            }
        }
    }

    async fn attempt(
        &self,
        job: &OutboundJob,
        delivered: u64,
    ) -> Result<Result<crate::Sent, DeliveryError>, HandlerError> {
        let (channel, creds) = match self.channel_of(job).await? {
            Ok(opened) => opened,
            Err(e) => return Ok(Err(e)),
        };
        let base_url = channel
            .api_base_url
            .as_deref()
            .unwrap_or(self.adapter.default_base_url());
        let target = Target {
            credentials: &creds,
            base_url,
        };
        let channel_version = channel.updated_at.to_rfc3339();
        let result = match self
            .with_uploaded_media(&target, job, &channel_version)
            .await
        {
            Ok(Some(prepared)) => self.adapter.send(target, &prepared).await,
            Ok(None) => self.adapter.send(target, job).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(sent) => {
                self.learned(job, &channel_version, &sent).await;
                Ok(Ok(sent))
            }
            Err(SendError::Retryable { reason, after })
                if delivered < u64::from(self.max_attempts) =>
            {
                if job.source == SendSource::Broadcast {
                    self.pace.hold_bulk(&job.channel.id, after);
                }
                metrics::counter!("patchbay_outbound_sends_total", "platform" => A::PLATFORM.as_str(), "outcome" => "retry").increment(1);
                Err(HandlerError::Retry { reason, after })
            }
            Err(SendError::Retryable { reason, .. }) => Ok(Err(gave_up(delivered, &reason))),
            Err(SendError::Permanent(e)) => Ok(Err(e)),
        }
    }
}

impl<A: OutboundAdapter> Handler<OutboundJob> for Sender<A> {
    /// A conversation's messages in order; a channel's jobs for many recipients in order too
    /// (the second message of a broadcast after its first).
    fn key(&self, job: &OutboundJob) -> Option<String> {
        if job.also.is_empty() {
            Some(format!("{}:{}", job.channel.id, job.address))
        } else {
            Some(job.channel.id.clone())
        }
    }

    /// A channel's messages share one budget of payloads in memory: a channel waiting for its
    /// pace keeps only so many, the rest wait as references.
    fn group(&self, job: &OutboundJob) -> Option<String> {
        Some(job.channel.id.clone())
    }

    /// The pace: the conversation's, then the channel's token bucket. The consumer runtime
    /// waits for it before each attempt without a handler slot, so a bot waiting for its own
    /// pace holds no slot that another bot needs. A message already sent (accepted here, or
    /// recorded in the sent-messages bucket) is reported without a platform call and spends
    /// no pace.
    async fn ready(&self, d: &Delivery<OutboundJob>) {
        let job = &d.payload;
        if !job.also.is_empty() {
            // One bulk call: one of the channel's tokens, behind its conversations. (Without a
            // bulk call, each recipient takes one as it goes, in the handling.)
            if A::BULK.is_none() || self.cancelled_broadcast(job).await.unwrap_or(false) {
                return;
            }
            let waited = std::time::Instant::now();
            self.pace.bulk_turn(&job.channel.id).await;
            metrics::histogram!("patchbay_outbound_bulk_wait_seconds", "platform" => A::PLATFORM.as_str())
                .record(waited.elapsed().as_secs_f64());
            return;
        }
        let known = self
            .accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&job.message_id);
        if known {
            return;
        }
        if (d.redelivered || !job.fresh)
            && matches!(self.sent.get(&job.message_id).await, Ok(Some(_)))
        {
            return;
        }
        let waited = std::time::Instant::now();
        let bulk = job.source == SendSource::Broadcast;
        if bulk && self.cancelled_broadcast(job).await.unwrap_or(false) {
            return;
        }
        self.pace
            .conversation
            .until_key_ready(&format!("{}:{}", job.channel.id, job.address))
            .await;
        if bulk {
            self.pace.bulk_turn(&job.channel.id).await;
            metrics::histogram!("patchbay_outbound_bulk_wait_seconds", "platform" => A::PLATFORM.as_str())
                .record(waited.elapsed().as_secs_f64());
        } else {
            self.pace.interactive_turn(&job.channel.id).await;
            metrics::histogram!("patchbay_outbound_pace_wait_seconds", "platform" => A::PLATFORM.as_str())
                .record(waited.elapsed().as_secs_f64());
        }
    }

    async fn handle(&self, d: Delivery<OutboundJob>) -> Result<(), HandlerError> {
        if !d.payload.also.is_empty() {
            return self.handle_bulk(&d).await;
        }
        let job = &d.payload;
        // Accepted by the platform in an earlier try here, or recorded in the sent-messages
        // bucket: report, do not resend.
        let here = self.accepted_here(&job.message_id).await?;
        let cancelled = here.is_none()
            && job.source == SendSource::Broadcast
            && self.cancelled_broadcast(job).await?;
        let result = match here {
            // A cancelled broadcast's message not sent yet stays unsent.
            None if cancelled => Err(cancelled_error()),
            Some(sent) => Ok(sent),
            // The router stored this message just now and this is its first delivery: no copy
            // of it can have been sent, so the bucket is not asked.
            None if job.fresh && !d.redelivered => self.send_new(job, d.delivered).await?,
            None => match self.recorded(&job.message_id).await? {
                Some(sent) => Ok(sent),
                None => self.send_new(job, d.delivered).await?,
            },
        };
        let event = status_of::<A>(job, &job.message_id, result);
        let subject = self.deps.bus.subjects().status(&job.bot_id)?;
        self.deps.bus.publish(&subject, &event.id, &event).await?;
        Ok(())
    }
}

/// The status of `job`'s message `message_id` (the job's own or a member's), counted.
fn status_of<A: OutboundAdapter>(
    job: &OutboundJob,
    message_id: &str,
    result: Result<crate::Sent, DeliveryError>,
) -> StatusEvent {
    let (status, platform_message_id, error) = match result {
        Ok(sent) => (DeliveryStatus::Sent, sent.platform_message_id, None),
        Err(e) => {
            tracing::info!(%message_id, code = %e.code, "message failed");
            (DeliveryStatus::Failed, None, Some(e))
        }
    };
    metrics::counter!("patchbay_outbound_sends_total", "platform" => A::PLATFORM.as_str(), "outcome" => status.as_str()).increment(1);
    StatusEvent {
        v: V1,
        id: StatusEvent::id_of(message_id, status),
        message_id: message_id.to_owned(),
        bot_id: job.bot_id.clone(),
        channel: job.channel.clone(),
        status,
        platform_message_id,
        error,
        at: chrono::Utc::now(),
        source: Some(job.source),
        source_id: job.source_id.clone(),
        also: Vec::new(),
    }
}

/// The failure of a cancelled broadcast's message that had not gone out.
fn cancelled_error() -> DeliveryError {
    DeliveryError {
        code: patchbay_contract::broadcasts::CANCELLED.into(),
        message: "the broadcast was cancelled before this message went out".into(),
        platform_code: None,
    }
}

/// The failure of a message the platform still asked to retry on the last attempt.
fn gave_up(delivered: u64, reason: &str) -> DeliveryError {
    DeliveryError {
        code: "platform_unavailable".into(),
        message: format!("gave up after {delivered} attempts: {reason}"),
        platform_code: None,
    }
}

/// A job for many recipients ready to go: its channel with the credentials opened, and the
/// job to send with a bot's upload given by the platform's reference where it takes one.
struct Opened<C> {
    channel: Arc<patchbay_contract::ChannelRecord>,
    creds: C,
    /// The channel's version (a platform's media reference is kept per version).
    version: String,
    /// The job, its media by reference ([`Sender::with_uploaded_media`]); `None`: as it came.
    prepared: Option<OutboundJob>,
}

impl<A: OutboundAdapter> Sender<A> {
    /// `job` (for many recipients) opened: its channel and its media
    /// ([`Sender::with_uploaded_media`]). The failure of all its recipients when the channel
    /// cannot be used or the media is refused; an error when the job is to be retried.
    async fn open_job(
        &self,
        job: &OutboundJob,
    ) -> Result<Result<Opened<A::Credentials>, DeliveryError>, HandlerError> {
        let (channel, creds) = match self.channel_of(job).await? {
            Ok(opened) => opened,
            Err(e) => return Ok(Err(e)),
        };
        let version = channel.updated_at.to_rfc3339();
        let target = self.target(&channel, &creds);
        let prepared = match self.with_uploaded_media(&target, job, &version).await {
            Ok(prepared) => prepared,
            Err(SendError::Permanent(e)) => return Ok(Err(e)),
            Err(SendError::Retryable { reason, after }) => {
                return Err(HandlerError::Retry { reason, after });
            }
        };
        Ok(Ok(Opened {
            channel,
            creds,
            version,
            prepared,
        }))
    }
}

/// A job's recipients sent one by one ([`Sender::send_paced`]) at once at most: waiting for
/// their turn at the channel's pace, or at the platform.
const PACED_IN_FLIGHT: usize = 16;

/// How often a job whose recipients go out one by one reports those done so far.
const PACED_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What became of one recipient of a job sent one by one.
enum Paced {
    /// Sent, or failed for good.
    Done(Result<crate::Sent, DeliveryError>),
    /// Not sent: the platform asked to try again later without saying when (its reason), or
    /// the job stopped before this recipient after such an answer (`None`). Tried again with
    /// the job.
    Again(Option<String>),
}

impl<A: OutboundAdapter> Sender<A> {
    /// A job for many recipients ([`OutboundJob::also`]): members sent before (accepted here,
    /// or recorded in the sent-messages bucket) are reported as they were, the others go out
    /// in one bulk call ([`OutboundAdapter::send_many`]), and every member gets a status of
    /// its own. A member the platform refused fails alone; one it asks to retry is retried with
    /// the job, after those it accepted are recorded (so they are not sent again).
    async fn handle_bulk(&self, d: &Delivery<OutboundJob>) -> Result<(), HandlerError> {
        let job = &d.payload;
        let members = job.members();
        let mut outcomes: Vec<Option<Result<crate::Sent, DeliveryError>>> =
            vec![None; members.len()];
        for (m, outcome) in members.iter().zip(outcomes.iter_mut()) {
            *outcome = self.accepted_here(&m.message_id).await?.map(Ok);
        }
        // Stored by an earlier handling of its command: it may have been sent.
        let unknown: Vec<usize> = (0..members.len())
            .filter(|&i| outcomes[i].is_none() && (d.redelivered || !members[i].fresh))
            .collect();
        let recorded = futures::future::try_join_all(
            unknown
                .iter()
                .map(|&i| self.recorded(&members[i].message_id)),
        )
        .await?;
        for (i, sent) in unknown.into_iter().zip(recorded) {
            outcomes[i] = sent.map(Ok);
        }
        let unsent: Vec<usize> = (0..members.len())
            .filter(|&i| outcomes[i].is_none())
            .collect();
        if !unsent.is_empty() && A::BULK.is_none() {
            let known = outcomes
                .into_iter()
                .enumerate()
                .filter_map(|(i, o)| o.map(|o| (i, o)))
                .collect();
            return self.send_paced(d, &members, known, unsent).await;
        }
        if !unsent.is_empty() {
            let results = if self.cancelled_broadcast(job).await? {
                // A cancelled broadcast's messages not sent yet stay unsent.
                vec![Err(cancelled_error()); unsent.len()]
            } else {
                self.send_bulk(job, &members, &unsent, d.delivered).await?
            };
            for (&i, result) in unsent.iter().zip(results) {
                outcomes[i] = Some(result);
            }
        }
        let outcomes = outcomes.into_iter().enumerate().map(|(i, outcome)| {
            let outcome = outcome.unwrap_or_else(|| {
                Err(DeliveryError {
                    code: "platform_unavailable".into(),
                    message: "the bulk call answered nothing for this recipient".into(),
                    platform_code: None,
                })
            });
            (i, outcome)
        });
        self.report(job, &members, outcomes).await
    }

    /// Publishes the statuses of `job`'s recipients at the given places of `members`, up to
    /// [`StatusEvent::MAX_MEMBERS`] in one event.
    async fn report(
        &self,
        job: &OutboundJob,
        members: &[patchbay_contract::BulkMember],
        outcomes: impl IntoIterator<Item = (usize, Result<crate::Sent, DeliveryError>)>,
    ) -> Result<(), HandlerError> {
        let statuses: Vec<StatusEvent> = outcomes
            .into_iter()
            .map(|(i, outcome)| status_of::<A>(job, &members[i].message_id, outcome))
            .collect();
        let subject = self.deps.bus.subjects().status(&job.bot_id)?;
        let events = StatusEvent::batches(statuses);
        futures::future::try_join_all(
            events
                .iter()
                .map(|event| self.deps.bus.publish(&subject, &event.id, event)),
        )
        .await?;
        Ok(())
    }

    /// A job for many recipients on a platform without a bulk call: each recipient at
    /// `unsent` (of `members`) is sent the job's content on their own, one after another at
    /// the channel's pace behind its conversations ([`Pace::bulk_turn`], up to
    /// [`PACED_IN_FLIGHT`] at once), recorded as soon as the platform accepts it, and
    /// reported with those `known` before about every [`PACED_REPORT_EVERY`]. The handling
    /// holds one of the consumer's slots while it goes (the bulk consumer's, never the
    /// conversations'; a channel has one such job at a time).
    ///
    /// A 429 holds the channel's broadcast for the time the platform asked, and the recipient
    /// is tried again in place (each up to the consumer's attempts). Any other answer to try
    /// again later stops the job: recipients not done are retried with it after the
    /// consumer's backoff (those done are recorded, so they are not sent again).
    async fn send_paced(
        &self,
        d: &Delivery<OutboundJob>,
        members: &[patchbay_contract::BulkMember],
        known: Vec<(usize, Result<crate::Sent, DeliveryError>)>,
        unsent: Vec<usize>,
    ) -> Result<(), HandlerError> {
        use futures::StreamExt;
        let job = &d.payload;
        let Opened {
            channel,
            creds,
            version: channel_version,
            prepared,
        } = match self.open_job(job).await? {
            Ok(opened) => opened,
            Err(e) => {
                let failed = unsent.into_iter().map(|i| (i, Err(e.clone())));
                return self
                    .report(job, members, known.into_iter().chain(failed))
                    .await;
            }
        };
        let base = prepared.as_ref().unwrap_or(job);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let one = |i: usize| {
            let (stop, channel_version) = (&stop, &channel_version);
            let target = self.target(&channel, &creds);
            async move {
                let single = base.for_member(&members[i]);
                let outcome = self
                    .send_one_paced(target, &single, channel_version, stop, d.delivered)
                    .await?;
                Ok::<_, HandlerError>((i, outcome))
            }
        };
        let mut results = futures::stream::iter(unsent)
            .map(one)
            .buffer_unordered(PACED_IN_FLIGHT);
        let mut done = known;
        // Whether a recipient is left for the job's retry, and the platform's reason.
        let (mut again, mut reason) = (false, None);
        let mut reported = std::time::Instant::now();
        while let Some(result) = results.next().await {
            match result? {
                (i, Paced::Done(outcome)) => done.push((i, outcome)),
                (_, Paced::Again(why)) => {
                    again = true;
                    reason = reason.or(why);
                }
            }
            if reported.elapsed() >= PACED_REPORT_EVERY && !done.is_empty() {
                self.report(job, members, std::mem::take(&mut done)).await?;
                reported = std::time::Instant::now();
            }
        }
        self.report(job, members, done).await?;
        if again {
            return Err(HandlerError::Retry {
                reason: reason.unwrap_or_else(|| "a recipient is to be tried again".into()),
                after: None,
            });
        }
        Ok(())
    }

    /// One recipient of a job sent one by one (see [`Sender::send_paced`]): its turn, then the
    /// platform's answer, recorded when it accepted.
    async fn send_one_paced(
        &self,
        target: Target<'_, A::Credentials>,
        single: &OutboundJob,
        channel_version: &str,
        stop: &std::sync::atomic::AtomicBool,
        delivered: u64,
    ) -> Result<Paced, HandlerError> {
        use std::sync::atomic::Ordering;
        let last_try = delivered >= u64::from(self.max_attempts);
        let channel_id = &single.channel.id;
        let mut tries = 0u32;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(Paced::Again(None));
            }
            if self.cancelled_broadcast(single).await? {
                return Ok(Paced::Done(Err(cancelled_error())));
            }
            let waited = std::time::Instant::now();
            let turn = async {
                self.pace
                    .conversation
                    .until_key_ready(&format!("{channel_id}:{}", single.address))
                    .await;
                self.pace.bulk_turn(channel_id).await;
            };
            tokio::select! {
                () = turn => {}
                // Shutting down: what is not sent goes with the job's redelivery.
                () = self.deps.shutdown.cancelled() => return Ok(Paced::Again(None)),
            }
            metrics::histogram!("patchbay_outbound_bulk_wait_seconds", "platform" => A::PLATFORM.as_str())
                .record(waited.elapsed().as_secs_f64());
            if stop.load(Ordering::Relaxed) {
                return Ok(Paced::Again(None));
            }
            tries += 1;
            let target = Target {
                credentials: target.credentials,
                base_url: target.base_url,
            };
            match self.adapter.send(target, single).await {
                Ok(sent) => {
                    self.learned(single, channel_version, &sent).await;
                    self.accept(&single.message_id, &sent);
                    // Until this is stored, a retry here reports instead of resending.
                    self.record(&single.message_id).await?;
                    return Ok(Paced::Done(Ok(sent)));
                }
                Err(SendError::Permanent(e)) => return Ok(Paced::Done(Err(e))),
                Err(SendError::Retryable { reason, .. }) if last_try => {
                    return Ok(Paced::Done(Err(gave_up(delivered, &reason))));
                }
                // The platform's pace: the broadcast waits as long as it asked, and this
                // recipient goes again.
                Err(SendError::Retryable {
                    reason,
                    after: Some(after),
                }) => {
                    self.pace.hold_bulk(channel_id, Some(after));
                    metrics::counter!("patchbay_outbound_sends_total", "platform" => A::PLATFORM.as_str(), "outcome" => "retry").increment(1);
                    if tries >= self.max_attempts {
                        return Ok(Paced::Done(Err(gave_up(u64::from(tries), &reason))));
                    }
                }
                Err(SendError::Retryable {
                    reason,
                    after: None,
                }) => {
                    stop.store(true, Ordering::Relaxed);
                    metrics::counter!("patchbay_outbound_sends_total", "platform" => A::PLATFORM.as_str(), "outcome" => "retry").increment(1);
                    return Ok(Paced::Again(Some(reason)));
                }
            }
        }
    }

    /// Sends `job`'s content to its members at `unsent` with the platform's bulk call: each
    /// one's outcome, in order; an error when the job is to be retried. The batch's id derives
    /// from every member of the job, so a retry (here, or on another replica after a crash) is
    /// the same batch to a platform with an idempotency key.
    async fn send_bulk(
        &self,
        job: &OutboundJob,
        members: &[patchbay_contract::BulkMember],
        unsent: &[usize],
        delivered: u64,
    ) -> Result<Vec<Result<crate::Sent, DeliveryError>>, HandlerError> {
        let opened = match self.open_job(job).await? {
            Ok(opened) => opened,
            Err(e) => return Ok(vec![Err(e); unsent.len()]),
        };
        let (target, prepared) = (
            self.target(&opened.channel, &opened.creds),
            &opened.prepared,
        );
        let content = prepared.as_ref().map_or(&job.content, |p| &p.content);
        let batch_id = job.batch_id();
        let addresses: Vec<String> = unsent.iter().map(|&i| members[i].address.clone()).collect();
        let batch = crate::Batch {
            id: &batch_id,
            bot_id: &job.bot_id,
            content,
            addresses: &addresses,
        };
        let last_try = delivered >= u64::from(self.max_attempts);
        let results = match self.adapter.send_many(target, batch).await {
            Ok(results) if results.len() == unsent.len() => results,
            Ok(results) => {
                return Err(HandlerError::unavailable(format!(
                    "the bulk call answered {} outcomes for {} recipients",
                    results.len(),
                    unsent.len()
                )));
            }
            Err(SendError::Retryable { reason, after }) if !last_try => {
                self.pace.hold_bulk(&job.channel.id, after);
                metrics::counter!("patchbay_outbound_sends_total", "platform" => A::PLATFORM.as_str(), "outcome" => "retry").increment(1);
                return Err(HandlerError::Retry { reason, after });
            }
            Err(SendError::Retryable { reason, .. }) => {
                return Ok(vec![Err(gave_up(delivered, &reason)); unsent.len()]);
            }
            Err(SendError::Permanent(e)) => return Ok(vec![Err(e); unsent.len()]),
        };
        let mut outcomes = Vec::with_capacity(unsent.len());
        let mut retry = None;
        let mut accepted = Vec::new();
        for (&i, result) in unsent.iter().zip(results) {
            let m = &members[i];
            outcomes.push(match result {
                Ok(sent) => {
                    accepted.push(m.message_id.as_str());
                    self.accept(&m.message_id, &sent);
                    Ok(sent)
                }
                Err(SendError::Retryable { reason, after }) if !last_try => {
                    retry = Some((reason, after));
                    Err(DeliveryError {
                        code: "platform_unavailable".into(),
                        message: String::new(),
                        platform_code: None,
                    })
                }
                Err(SendError::Retryable { reason, .. }) => Err(gave_up(delivered, &reason)),
                Err(SendError::Permanent(e)) => Err(e),
            });
        }
        // Until they are stored, a retry here reports them instead of sending again.
        futures::future::try_join_all(accepted.into_iter().map(|id| self.record(id))).await?;
        if let Some((reason, after)) = retry {
            self.pace.hold_bulk(&job.channel.id, after);
            return Err(HandlerError::Retry { reason, after });
        }
        Ok(outcomes)
    }

    /// Whether `job` belongs to a cancelled broadcast.
    async fn cancelled_broadcast(&self, job: &OutboundJob) -> Result<bool, HandlerError> {
        let Some(id) = &job.source_id else {
            return Ok(false);
        };
        self.cancelled.contains(id).await
    }

    /// Sends a message not sent before, and records the platform's acceptance.
    async fn send_new(
        &self,
        job: &OutboundJob,
        delivered: u64,
    ) -> Result<Result<crate::Sent, DeliveryError>, HandlerError> {
        let result = self.attempt(job, delivered).await?;
        if let Ok(sent) = &result {
            self.accept(&job.message_id, sent);
            // Until this is stored, a retry here reports instead of resending; if it cannot
            // be stored now, the message is retried in place.
            self.record(&job.message_id).await?;
        }
        Ok(result)
    }

    /// What the platform answered for `message_id` when it accepted it in an earlier try here
    /// (recorded in the sent-messages bucket now, if it was not yet).
    async fn accepted_here(&self, message_id: &str) -> Result<Option<crate::Sent>, HandlerError> {
        let here = self
            .accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(message_id)
            .cloned();
        let Some(a) = here else {
            return Ok(None);
        };
        if !a.recorded {
            self.record(message_id).await?;
        }
        Ok(Some(crate::Sent {
            platform_message_id: a.platform_message_id,
            media_reference: None,
        }))
    }

    /// What the platform answered for `message_id`, as the sent-messages bucket recorded it
    /// (any replica's send); `None` when it was never recorded as sent.
    async fn recorded(&self, message_id: &str) -> Result<Option<crate::Sent>, HandlerError> {
        let id = self
            .sent
            .get(message_id)
            .await
            .map_err(|e| HandlerError::unavailable(format!("sent-messages bucket: {e}")))?;
        Ok(id.map(|id| crate::Sent {
            platform_message_id: (!id.is_empty())
                .then(|| String::from_utf8_lossy(&id).into_owned()),
            media_reference: None,
        }))
    }

    /// Remembers that the platform accepted `message_id` (not yet recorded in the bucket).
    fn accept(&self, message_id: &str, sent: &crate::Sent) {
        self.accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                message_id.to_owned(),
                Accepted {
                    platform_message_id: sent.platform_message_id.clone(),
                    recorded: false,
                    at: std::time::Instant::now(),
                },
            );
    }

    /// Stores the platform's acceptance of `message_id` in the sent-messages bucket, so a
    /// redelivery anywhere reports it instead of sending again.
    async fn record(&self, message_id: &str) -> Result<(), HandlerError> {
        let id = self
            .accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(message_id)
            .map(|a| a.platform_message_id.clone().unwrap_or_default())
            .unwrap_or_default();
        self.sent
            .put(message_id, id.into_bytes().into())
            .await
            .map_err(|e| HandlerError::unavailable(format!("recording a sent message: {e}")))?;
        if let Some(a) = self
            .accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(message_id)
        {
            a.recorded = true;
            a.at = std::time::Instant::now();
        }
        Ok(())
    }
}
