//! Inbound LINE: the signature check, splitting and normalisation
//! (`reference/platforms.md` §6.1–§6.2).
//!
//! LINE posts `{"destination": <the bot's user id>, "events": [...]}` to the channel's webhook,
//! signed with `x-line-signature`: the Base64 of HMAC-SHA256 over the raw body with the
//! channel secret, checked before anything is parsed and compared in constant time (401 and
//! nothing published when it fails). The console's "Verify" button posts a body whose
//! `events` is empty: 200, nothing published. Each event becomes an envelope
//! `{"destination": ..., "events": [<event>]}` keyed by its `webhookEventId`
//! (`line:<channel>:<webhookEventId>`), so an event LINE redelivers (`isRedelivery: true`,
//! same `webhookEventId`) collapses onto the first; ordered by its chat (the group, room or
//! user id). The ingress answers as soon as JetStream stored the envelopes (profile lookups
//! within `patchbay_platform::enrich::BUDGET`), well within LINE's 2 s.
//!
//! Routing: the URL names the channel (`/webhooks/line/{channel_id}`) and the signature,
//! keyed by that channel's secret, proves the POST is for it. Each envelope's route is the
//! `destination`; once `outbound-line` has set the channel up ([`crate::setup`]) and learned
//! its bot's user id, a webhook for another bot (a URL pasted into the wrong LINE channel
//! whose secret matches) is dropped, counted as `unknown_route`, and nothing is published.
//! Until then any `destination` is accepted.
//!
//! | event `type` | event |
//! |---|---|
//! | `message` `text` | `message.received`, text |
//! | `message` `image`, `video`, `audio`, `file` | `message.received`, that media: `file_id` the message id when LINE keeps the content (`contentProvider.type` `line`; `GET api-data.line.me/v2/bot/message/{id}/content` downloads it), `url` the `originalContentUrl` when it is `external`; files with their `fileName` |
//! | `message` `location` | `message.received`, location (`title` as name, `address`) |
//! | `message` `sticker` | `message.received`, sticker, id `<packageId>:<stickerId>` (what the sender takes back) |
//! | `postback` | `message.received`, `postback` (platform message id: the `webhookEventId`): payload the `data`; title the value a date or time picker gave (`params.date`, `time` or `datetime`) or the rich menu switched to (`params.newRichMenuAliasId`) |
//! | `follow` (added as a friend, or unblocked: `follow.isUnblocked`) | `user.subscribed` (`resubscribed` when unblocked) |
//! | `unfollow` (blocked) | `user.unsubscribed` |
//! | `join` (the bot was added to a group or room) | `user.subscribed` from the group or room itself (no member acted that LINE names) |
//! | `leave` (the bot was removed) | `user.unsubscribed` from the group or room itself |
//! | `memberJoined` | `user.subscribed` for each member who joined |
//! | `memberLeft` | `user.unsubscribed` for each member who left |
//! | `unsend` | `message.unsent`, naming the withdrawn message (`unsend.messageId`) |
//! | `videoPlayComplete`, `beacon`, `accountLink`, `membership`, `module`, `activated`, `deactivated`, `botSuspended`, `botResumed`, `delivery`, anything else | none (counted, not an error) |
//!
//! Groups and rooms: the chat is the conversation, its member the sender. `address` (where a
//! reply goes, and the order key) is the group or room id and `chat` says which kind it is;
//! `sender.platform_user_id` is the member's `userId` (the group or room id itself when LINE
//! names no member, as for `join`). LINE's webhooks carry no group name: the ingress looks it
//! up (`GET /v2/bot/group/{groupId}/summary`, cached as profiles are, within the same budget)
//! and adds it as `patchbay_group`, which becomes `chat.title`. Rooms have no name.
//! A one-to-one chat's address is the user id. `timestamp` is in milliseconds and becomes
//! `occurred_at`. Events in `standby` mode (another channel has the chat) are normalised like
//! the others.
//!
//! Replying: every event with a `replyToken` has it kept for the sender by the ingress
//! ([`Line::reply_context`], `patchbay_platform::replies`) under the event's id, with the
//! event's time; `outbound` uses it for an inline reply while it is fresh.
//!
//! Profiles: before publishing, the ingress looks up each sender's name, picture and language
//! (`GET /v2/bot/profile/{userId}`, in groups and rooms the member forms;
//! [`crate::outbound::profile`], cached per process for a day, an hour when LINE has none) and
//! adds them to the envelope as `patchbay_profile`. A lookup gets at most [`PROFILE_BUDGET`]
//! (less than the ingress's general enrichment budget: LINE wants its answer within 2 s), so a
//! slow profile API delays the answer by half a second at most; what it did not answer in
//! time is looked up again with the sender's next event.

use axum::http::HeaderMap;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use patchbay_contract::content::{Location, Media};
use patchbay_contract::ids::{derive_id, prefix};
use patchbay_contract::{
    ChannelRef, ChatKind, Content, EventType, InboundEvent, InboundMessage, IngressEnvelope,
    Platform, PlatformChat, PlatformUser, Receipt, V1,
};
use patchbay_platform::enrich::Context;
use patchbay_platform::{InboundAdapter, NormaliseError, Rejection, Split};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::LineCredentials;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-line-signature";
/// The key under which the ingress adds the sender's profile to an envelope.
pub const PROFILE_FIELD: &str = "patchbay_profile";
/// The key under which the ingress adds the name of the group an event happened in.
pub const GROUP_FIELD: &str = "patchbay_group";
/// How long the ingress waits for a profile lookup.
pub const PROFILE_BUDGET: std::time::Duration = std::time::Duration::from_millis(500);

/// The LINE adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Line;

/// Checks `x-line-signature`: the Base64 of HMAC-SHA256 of `body` with `channel_secret`,
/// compared in constant time.
pub fn verify_signature(
    channel_secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Rejection> {
    let given = headers
        .get(SIGNATURE_HEADER)
        .ok_or_else(|| Rejection::Unauthorized(format!("missing {SIGNATURE_HEADER}")))?
        .to_str()
        .map_err(|_| Rejection::Unauthorized(format!("{SIGNATURE_HEADER} is not ASCII")))?;
    let refused =
        || Rejection::Unauthorized("x-line-signature does not match the channel secret".into());
    let given = base64::engine::general_purpose::STANDARD
        .decode(given.trim())
        .map_err(|_| refused())?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(channel_secret.as_bytes())
        .map_err(|_| Rejection::Unauthorized("the channel secret cannot key HMAC".into()))?;
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| refused())
}

#[derive(Debug, Deserialize)]
struct Post {
    events: Vec<Value>,
    /// Added by the ingress ([`Line::enrich`]), not by LINE.
    #[serde(default)]
    patchbay_profile: Option<ProfileHint>,
    /// Added by the ingress: the group's name.
    #[serde(default)]
    patchbay_group: Option<GroupHint>,
}

/// The group's summary as the ingress found it.
#[derive(Debug, Default, Deserialize)]
struct GroupHint {
    #[serde(default)]
    name: Option<String>,
}

/// The sender's profile as the ingress found it.
#[derive(Debug, Default, Deserialize)]
struct ProfileHint {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    avatar_url: Option<String>,
    #[serde(default)]
    locale: Option<String>,
}

/// Where an event happened: a one-to-one chat, a group or a room, and who acted in it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// `user`, `group` or `room`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The user (in groups and rooms: the member, when LINE names one).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The group.
    #[serde(default)]
    pub group_id: Option<String>,
    /// The room.
    #[serde(default)]
    pub room_id: Option<String>,
}

impl Source {
    /// The chat: the group or room id, else the user id (where replies go).
    pub fn chat(&self) -> Option<&str> {
        match self.kind.as_str() {
            "group" => self.group_id.as_deref(),
            "room" => self.room_id.as_deref(),
            _ => self.user_id.as_deref(),
        }
        .filter(|s| !s.is_empty())
    }

    /// A group's or room's kind (none for a one-to-one chat).
    pub fn chat_kind(&self) -> Option<ChatKind> {
        match self.kind.as_str() {
            "group" => Some(ChatKind::Group),
            "room" => Some(ChatKind::Room),
            _ => None,
        }
    }

    /// The member who acted, when LINE names one.
    pub fn user(&self) -> Option<&str> {
        self.user_id.as_deref().filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    webhook_event_id: String,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    source: Option<Source>,
    #[serde(default)]
    message: Option<Value>,
    #[serde(default)]
    postback: Option<Postback>,
    #[serde(default)]
    joined: Option<Members>,
    #[serde(default)]
    left: Option<Members>,
    #[serde(default)]
    unsend: Option<Unsend>,
    #[serde(default)]
    follow: Option<Follow>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Follow {
    #[serde(default)]
    is_unblocked: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Unsend {
    message_id: String,
}

#[derive(Debug, Deserialize)]
struct Postback {
    data: String,
    #[serde(default)]
    params: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct Members {
    #[serde(default)]
    members: Vec<Source>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    content_provider: Option<ContentProvider>,
    #[serde(default)]
    file_name: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
    #[serde(default)]
    package_id: Option<String>,
    #[serde(default)]
    sticker_id: Option<String>,
    /// An audio's or video's length, in milliseconds.
    #[serde(default)]
    duration: Option<u64>,
    /// A file's size, in bytes.
    #[serde(default)]
    file_size: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContentProvider {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    original_content_url: Option<String>,
}

/// Whether an event of `kind` is from a person whose profile is worth knowing.
fn wants_profile(kind: &str) -> bool {
    matches!(kind, "message" | "postback" | "follow")
}

/// A message's media: LINE's message id as `file_id` when LINE keeps the content, else the
/// external URL.
fn media(m: &Message) -> Result<Media, NormaliseError> {
    let provider = m.content_provider.as_ref();
    let (url, file_id) = match provider.map(|p| p.kind.as_str()) {
        Some("external") => {
            let url = provider
                .and_then(|p| p.original_content_url.clone())
                .ok_or_else(|| {
                    NormaliseError(format!(
                        "an external LINE {} without originalContentUrl",
                        m.kind
                    ))
                })?;
            (Some(url), None)
        }
        _ => (None, Some(m.id.clone())),
    };
    Ok(Media {
        url,
        file_id,
        caption: None,
        filename: m.file_name.clone(),
        mime_type: None,
        media_id: None,
        download_url: None,
        preview_url: None,
        duration_ms: m.duration.filter(|d| *d > 0),
        size_bytes: m.file_size.filter(|s| *s > 0),
    })
}

/// A message's content; `None` for kinds Patchbay does not model.
fn content(m: &Message) -> Result<Option<Content>, NormaliseError> {
    let missing =
        |field: &str| NormaliseError(format!("a LINE {} message without {field}", m.kind));
    Ok(Some(match m.kind.as_str() {
        "text" => Content::Text {
            text: m.text.clone().ok_or_else(|| missing("text"))?,
        },
        "image" => Content::Image(media(m)?),
        "video" => Content::Video(media(m)?),
        "audio" => Content::Audio(media(m)?),
        "file" => Content::File(media(m)?),
        "location" => Content::Location(Location {
            latitude: m.latitude.ok_or_else(|| missing("latitude"))?,
            longitude: m.longitude.ok_or_else(|| missing("longitude"))?,
            name: m.title.clone().filter(|s| !s.is_empty()),
            address: m.address.clone().filter(|s| !s.is_empty()),
        }),
        "sticker" => Content::Sticker {
            id: format!(
                "{}:{}",
                m.package_id
                    .as_deref()
                    .ok_or_else(|| missing("packageId"))?,
                m.sticker_id
                    .as_deref()
                    .ok_or_else(|| missing("stickerId"))?
            ),
        },
        _ => return Ok(None),
    }))
}

/// What a date or time picker or a rich-menu switch gave, as the postback's title.
fn picked(params: &serde_json::Map<String, Value>) -> Option<String> {
    ["datetime", "date", "time", "newRichMenuAliasId"]
        .iter()
        .find_map(|k| params.get(*k).and_then(Value::as_str))
        .map(str::to_owned)
}

/// One event to emit: its type, who acted, the message.
struct Emitted {
    event_type: EventType,
    sender: String,
    message: Option<InboundMessage>,
    /// For `message.unsent`: the withdrawn message's id.
    withdrawn: Option<String>,
    /// For `user.subscribed`: the user unblocked the bot (`follow.isUnblocked`).
    resubscribed: bool,
}

/// What `e` says, as events (possibly several: one per member who joined or left).
fn emitted(e: &Event, source: &Source, chat: &str) -> Result<Vec<Emitted>, NormaliseError> {
    let actor = source.user().unwrap_or(chat).to_owned();
    let one = |event_type, message| {
        Ok(vec![Emitted {
            event_type,
            sender: actor.clone(),
            message,
            withdrawn: None,
            resubscribed: false,
        }])
    };
    let each = |event_type, members: &Option<Members>| {
        Ok(members
            .iter()
            .flat_map(|m| &m.members)
            .filter_map(Source::user)
            .map(|u| Emitted {
                event_type,
                sender: u.to_owned(),
                message: None,
                withdrawn: None,
                resubscribed: false,
            })
            .collect())
    };
    match e.kind.as_str() {
        "message" => {
            let raw = e
                .message
                .clone()
                .ok_or_else(|| NormaliseError("a LINE message event without message".into()))?;
            let m: Message = serde_json::from_value(raw)
                .map_err(|err| NormaliseError(format!("not a LINE message: {err}")))?;
            match content(&m)? {
                Some(content) => one(
                    EventType::MessageReceived,
                    Some(InboundMessage {
                        platform_message_id: m.id,
                        content,
                    }),
                ),
                None => Ok(vec![]),
            }
        }
        "postback" => {
            let p = e
                .postback
                .as_ref()
                .ok_or_else(|| NormaliseError("a LINE postback event without postback".into()))?;
            one(
                EventType::MessageReceived,
                Some(InboundMessage {
                    // A postback is no message: its event id stands in.
                    platform_message_id: e.webhook_event_id.clone(),
                    content: Content::Postback {
                        payload: p.data.clone(),
                        title: p.params.as_ref().and_then(picked),
                    },
                }),
            )
        }
        "follow" => Ok(vec![Emitted {
            event_type: EventType::UserSubscribed,
            sender: actor.clone(),
            message: None,
            withdrawn: None,
            resubscribed: e.follow.as_ref().is_some_and(|f| f.is_unblocked),
        }]),
        "join" => one(EventType::UserSubscribed, None),
        "unfollow" | "leave" => one(EventType::UserUnsubscribed, None),
        "memberJoined" => each(EventType::UserSubscribed, &e.joined),
        "memberLeft" => each(EventType::UserUnsubscribed, &e.left),
        "unsend" => {
            let u = e
                .unsend
                .as_ref()
                .ok_or_else(|| NormaliseError("a LINE unsend event without unsend".into()))?;
            Ok(vec![Emitted {
                event_type: EventType::MessageUnsent,
                sender: actor.clone(),
                message: None,
                withdrawn: Some(u.message_id.clone()),
                resubscribed: false,
            }])
        }
        _ => Ok(vec![]),
    }
}

/// The event inside an envelope body.
fn only_event(body: &Value) -> Option<&Value> {
    body.get("events")?.as_array()?.first()
}

impl InboundAdapter for Line {
    const PLATFORM: Platform = Platform::Line;
    const SIGNATURE_HEADER: Option<&'static str> = Some(SIGNATURE_HEADER);
    type Credentials = LineCredentials;

    /// The bot's user id, which `outbound-line` learns setting the channel up.
    const ROUTE_OF_SETUP: Option<fn(&Value) -> Option<String>> = Some(crate::setup::route_of_setup);

    fn verify(creds: &LineCredentials, headers: &HeaderMap, body: &[u8]) -> Result<(), Rejection> {
        verify_signature(&creds.channel_secret, headers, body)
    }

    fn split(channel_id: &str, body: &[u8]) -> Result<Vec<Split>, Rejection> {
        let post: Value = serde_json::from_slice(body)
            .map_err(|e| Rejection::Malformed(format!("not a LINE webhook: {e}")))?;
        let destination = post.get("destination").cloned().unwrap_or(Value::Null);
        let events = post
            .get("events")
            .and_then(Value::as_array)
            .ok_or_else(|| Rejection::Malformed("a LINE webhook without an events array".into()))?;
        events
            .iter()
            .map(|e| {
                let id = e
                    .get("webhookEventId")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| {
                        Rejection::Malformed("a LINE event without a webhookEventId".into())
                    })?;
                let order_key = e
                    .get("source")
                    .cloned()
                    .and_then(|s| serde_json::from_value::<Source>(s).ok())
                    .and_then(|s| s.chat().map(str::to_owned));
                Ok(Split {
                    dedupe_key: format!("line:{channel_id}:{id}"),
                    body: json!({ "destination": destination, "events": [e] }),
                    order_key,
                    route: destination
                        .as_str()
                        .filter(|d| !d.is_empty())
                        .map(str::to_owned),
                })
            })
            .collect()
    }

    fn normalise(env: &IngressEnvelope) -> Result<Vec<InboundEvent>, NormaliseError> {
        let post: Post = serde_json::from_value(env.body.clone())
            .map_err(|e| NormaliseError(format!("not a LINE webhook: {e}")))?;
        let raw = post
            .events
            .into_iter()
            .next()
            .ok_or_else(|| NormaliseError("the envelope holds no LINE event".into()))?;
        let e: Event = serde_json::from_value(raw)
            .map_err(|err| NormaliseError(format!("not a LINE event: {err}")))?;
        let Some(source) = e.source.clone() else {
            // Events about the channel itself (activated, botSuspended, ...) have no source.
            return Ok(vec![]);
        };
        let chat = source
            .chat()
            .ok_or_else(|| NormaliseError(format!("a LINE {} event without its chat id", e.kind)))?
            .to_owned();
        let occurred_at = e
            .timestamp
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or(env.received_at);
        let profile = post.patchbay_profile.unwrap_or_default();
        let title = post
            .patchbay_group
            .and_then(|g| g.name)
            .filter(|n| !n.trim().is_empty());
        let actor = source.user().unwrap_or(&chat).to_owned();
        Ok(emitted(&e, &source, &chat)?
            .into_iter()
            .enumerate()
            .map(|(i, em)| {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                // The profile the ingress found is the actor's; the group itself (the bot added
                // or removed) goes by its name.
                let own = em.sender == actor;
                let the_chat = source.chat_kind().is_some() && em.sender == chat;
                InboundEvent {
                    v: V1,
                    id: derive_id(prefix::EVENT, &env.id, index),
                    event_type: em.event_type,
                    bot_id: env.bot_id.clone(),
                    channel: ChannelRef {
                        id: env.channel_id.clone(),
                        platform: Platform::Line,
                    },
                    occurred_at,
                    sender: PlatformUser {
                        platform_user_id: em.sender,
                        display_name: if the_chat {
                            title.clone()
                        } else {
                            own.then(|| profile.display_name.clone()).flatten()
                        },
                        username: None,
                        locale: own.then(|| profile.locale.clone()).flatten(),
                        avatar_url: own.then(|| profile.avatar_url.clone()).flatten(),
                        email: None,
                        phone: None,
                    },
                    address: chat.clone(),
                    chat: source.chat_kind().map(|kind| PlatformChat {
                        kind,
                        title: title.clone(),
                    }),
                    dedupe_key: format!("{}:{i}", env.dedupe_key),
                    message: em.message,
                    referral: None,
                    resubscribed: em.resubscribed,
                    receipt: em.withdrawn.map(|id| Receipt {
                        platform_message_ids: vec![id],
                        watermark: None,
                        error: None,
                    }),
                }
            })
            .collect())
    }

    fn reply_context(split: &Split) -> Option<(String, DateTime<Utc>)> {
        let e = only_event(&split.body)?;
        let token = e.get("replyToken")?.as_str().filter(|t| !t.is_empty())?;
        let at = e
            .get("timestamp")
            .and_then(Value::as_i64)
            .and_then(DateTime::from_timestamp_millis)?;
        Some((token.to_owned(), at))
    }

    fn api_base_url(config: &patchbay_config::Config) -> Option<String> {
        Some(config.line_api_base_url.clone())
    }

    async fn enrich(ctx: Context<'_, LineCredentials>, splits: &mut [Split]) {
        // Each split's source, read once: whose profile it wants (the member who acted in a
        // message, postback or follow) and which group it happened in (rooms have no name).
        let sources: Vec<(Option<Source>, Option<String>)> = splits
            .iter()
            .map(|s| {
                let Some(e) = only_event(&s.body) else {
                    return (None, None);
                };
                let kind = e.get("type").and_then(Value::as_str).unwrap_or_default();
                let Some(source) = e
                    .get("source")
                    .and_then(|v| serde_json::from_value::<Source>(v.clone()).ok())
                else {
                    return (None, None);
                };
                let group = (source.kind == "group")
                    .then(|| source.group_id.clone())
                    .flatten();
                let wanted = (wants_profile(kind) && source.user().is_some()).then_some(source);
                (wanted, group)
            })
            .collect();
        let key = |s: &Source| {
            format!(
                "{}:{}:{}",
                ctx.channel_id,
                s.chat().unwrap_or_default(),
                s.user().unwrap_or_default()
            )
        };
        let group_key = |g: &str| format!("{}:group:{g}", ctx.channel_id);
        let mut wanted: Vec<&Source> = sources.iter().filter_map(|(w, _)| w.as_ref()).collect();
        wanted.sort_by_key(|s| key(s));
        wanted.dedup_by_key(|s| key(s));
        let mut groups: Vec<&String> = sources.iter().filter_map(|(_, g)| g.as_ref()).collect();
        groups.sort();
        groups.dedup();
        let budget = PROFILE_BUDGET.min(patchbay_platform::enrich::BUDGET);
        // A timeout is not remembered: the next event tries again.
        let lookups = wanted
            .iter()
            .filter(|s| ctx.cache.get(&key(s)).is_none())
            .map(|s| async {
                let found = tokio::time::timeout(
                    budget,
                    crate::outbound::profile(ctx.http, ctx.base_url, ctx.creds, s),
                )
                .await;
                if let Ok(found) = found {
                    let value = found.map(|u| {
                        json!({"display_name": u.display_name, "avatar_url": u.avatar_url,
                               "locale": u.locale})
                    });
                    ctx.cache.put(key(s), value);
                }
            });
        let summaries = groups
            .iter()
            .filter(|g| ctx.cache.get(&group_key(g)).is_none())
            .map(|g| async {
                let found = tokio::time::timeout(
                    budget,
                    crate::outbound::group_name(ctx.http, ctx.base_url, ctx.creds, g),
                )
                .await;
                if let Ok(found) = found {
                    ctx.cache
                        .put(group_key(g), found.map(|name| json!({ "name": name })));
                }
            });
        futures::future::join(
            futures::future::join_all(lookups),
            futures::future::join_all(summaries),
        )
        .await;
        for (s, (wanted, group)) in splits.iter_mut().zip(&sources) {
            if let Some(source) = wanted
                && let Some(Some(profile)) = ctx.cache.get(&key(source))
            {
                s.body[PROFILE_FIELD] = profile;
            }
            if let Some(g) = group
                && let Some(Some(name)) = ctx.cache.get(&group_key(g))
            {
                s.body[GROUP_FIELD] = name;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures as fx;

    fn creds() -> LineCredentials {
        LineCredentials {
            channel_secret: fx::CHANNEL_SECRET.into(),
            channel_access_token: fx::ACCESS_TOKEN.into(),
        }
    }

    fn signed(signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, signature.parse().unwrap());
        h
    }

    fn envelopes(post: &Value) -> Vec<IngressEnvelope> {
        let body = serde_json::to_vec(post).unwrap();
        Line::split("ch_1", &body)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, s)| IngressEnvelope {
                v: V1,
                id: format!("env_01JH0000000000000000000{i:03}"),
                platform: Platform::Line,
                channel_id: "ch_1".into(),
                bot_id: "bot_1".into(),
                received_at: Utc::now(),
                dedupe_key: s.dedupe_key,
                body: s.body,
                order_key: s.order_key,
            })
            .collect()
    }

    fn normalise(event: Value) -> Vec<InboundEvent> {
        let envs = envelopes(&fx::post(vec![event]));
        assert_eq!(envs.len(), 1);
        Line::normalise(&envs[0]).expect("normalises")
    }

    fn kept(file_id: Option<&str>, url: Option<&str>, filename: Option<&str>) -> Media {
        Media {
            url: url.map(str::to_owned),
            file_id: file_id.map(str::to_owned),
            caption: None,
            filename: filename.map(str::to_owned),
            mime_type: None,
            media_id: None,
            download_url: None,
            preview_url: None,
            duration_ms: None,
            size_bytes: None,
        }
    }

    /// An expected event: type, sender, address, content.
    type Expected = (EventType, &'static str, &'static str, Option<Content>);

    #[test]
    fn every_event_normalises_as_the_table_says() {
        let (u, g, r) = (fx::USER, fx::GROUP, fx::ROOM);
        let text = |t: &str| Content::Text { text: t.into() };
        let postback = |p: &str, t: Option<&str>| Content::Postback {
            payload: p.into(),
            title: t.map(str::to_owned),
        };
        let received = EventType::MessageReceived;
        let cases: Vec<(Value, Vec<Expected>)> = vec![
            (
                fx::text("e1", u, "hello"),
                vec![(received, u, u, Some(text("hello")))],
            ),
            (
                fx::media("e2", u, "image"),
                vec![(
                    received,
                    u,
                    u,
                    Some(Content::Image(kept(Some("m-e2"), None, None))),
                )],
            ),
            (
                fx::media("e3", u, "video"),
                vec![(
                    received,
                    u,
                    u,
                    Some(Content::Video(Media {
                        duration_ms: Some(60_000),
                        ..kept(Some("m-e3"), None, None)
                    })),
                )],
            ),
            (
                fx::media("e4", u, "audio"),
                vec![(
                    received,
                    u,
                    u,
                    Some(Content::Audio(Media {
                        duration_ms: Some(60_000),
                        ..kept(Some("m-e4"), None, None)
                    })),
                )],
            ),
            (
                fx::media("e5", u, "file"),
                vec![(
                    received,
                    u,
                    u,
                    Some(Content::File(Media {
                        size_bytes: Some(2048),
                        ..kept(Some("m-e5"), None, Some("report.pdf"))
                    })),
                )],
            ),
            (
                fx::external_image(
                    "e6",
                    u,
                    "https://img.example/a.jpg",
                    "https://img.example/p.jpg",
                ),
                vec![(
                    received,
                    u,
                    u,
                    Some(Content::Image(kept(
                        None,
                        Some("https://img.example/a.jpg"),
                        None,
                    ))),
                )],
            ),
            (
                fx::location("e7", u, "Shibuya", "Tokyo"),
                vec![(
                    received,
                    u,
                    u,
                    Some(Content::Location(Location {
                        latitude: 35.6591,
                        longitude: 139.7037,
                        name: Some("Shibuya".into()),
                        address: Some("Tokyo".into()),
                    })),
                )],
            ),
            (
                fx::sticker("e8", u, "446", "1988"),
                vec![(
                    received,
                    u,
                    u,
                    Some(Content::Sticker {
                        id: "446:1988".into(),
                    }),
                )],
            ),
            (
                fx::postback("e9", u, "action=buy&id=7", None),
                vec![(received, u, u, Some(postback("action=buy&id=7", None)))],
            ),
            (
                fx::postback("e10", u, "pick=date", Some(json!({"date": "2026-03-01"}))),
                vec![(
                    received,
                    u,
                    u,
                    Some(postback("pick=date", Some("2026-03-01"))),
                )],
            ),
            (
                fx::postback(
                    "e11",
                    u,
                    "pick=dt",
                    Some(json!({"datetime": "2026-03-01T10:00"})),
                ),
                vec![(
                    received,
                    u,
                    u,
                    Some(postback("pick=dt", Some("2026-03-01T10:00"))),
                )],
            ),
            (
                fx::postback(
                    "e12",
                    u,
                    "menu",
                    Some(json!({"newRichMenuAliasId": "menu-b", "status": "SUCCESS"})),
                ),
                vec![(received, u, u, Some(postback("menu", Some("menu-b"))))],
            ),
            (
                fx::follow("e13", u, false),
                vec![(EventType::UserSubscribed, u, u, None)],
            ),
            (
                fx::follow("e14", u, true),
                vec![(EventType::UserSubscribed, u, u, None)],
            ),
            (
                fx::unfollow("e15", u),
                vec![(EventType::UserUnsubscribed, u, u, None)],
            ),
            (
                fx::message(
                    "e16",
                    fx::in_group(g, Some(u)),
                    json!({"id": "m-e16", "type": "text", "text": "hi all"}),
                ),
                vec![(received, u, g, Some(text("hi all")))],
            ),
            (
                fx::message(
                    "e17",
                    fx::in_room(r, Some(u)),
                    json!({"id": "m-e17", "type": "text", "text": "hi room"}),
                ),
                vec![(received, u, r, Some(text("hi room")))],
            ),
            (
                fx::message(
                    "e18",
                    fx::in_group(g, None),
                    json!({"id": "m-e18", "type": "text", "text": "who?"}),
                ),
                vec![(received, g, g, Some(text("who?")))],
            ),
            (
                fx::join("e19", fx::in_group(g, None)),
                vec![(EventType::UserSubscribed, g, g, None)],
            ),
            (
                fx::leave("e20", fx::in_room(r, None)),
                vec![(EventType::UserUnsubscribed, r, r, None)],
            ),
            (
                fx::member_joined("e21", fx::in_group(g, None), &[u, fx::OTHER_USER]),
                vec![
                    (EventType::UserSubscribed, u, g, None),
                    (EventType::UserSubscribed, fx::OTHER_USER, g, None),
                ],
            ),
            (
                fx::member_left("e22", fx::in_group(g, None), &[fx::OTHER_USER]),
                vec![(EventType::UserUnsubscribed, fx::OTHER_USER, g, None)],
            ),
            (
                fx::unsend("e23", u, "m-e1"),
                vec![(EventType::MessageUnsent, u, u, None)],
            ),
            (fx::beacon("e24", u), vec![]),
            (
                fx::message(
                    "e25",
                    fx::from_user(u),
                    json!({"id": "m-e25", "type": "imagemap"}),
                ),
                vec![],
            ),
        ];
        for (event, expected) in cases {
            let id = event["webhookEventId"].as_str().unwrap().to_owned();
            let events = normalise(event.clone());
            assert_eq!(events.len(), expected.len(), "{event}: {events:?}");
            for (i, (e, (event_type, sender, address, content))) in
                events.iter().zip(expected).enumerate()
            {
                assert_eq!(e.event_type, event_type, "{event}");
                assert_eq!(e.sender.platform_user_id, sender, "{event}");
                assert_eq!(e.address, address, "{event}");
                let kind = match address {
                    a if a == g => Some(ChatKind::Group),
                    a if a == r => Some(ChatKind::Room),
                    _ => None,
                };
                assert_eq!(e.chat.as_ref().map(|c| c.kind), kind, "{event}");
                assert_eq!(
                    e.message.as_ref().map(|m| m.content.clone()),
                    content,
                    "{event}"
                );
                assert_eq!(e.channel.platform, Platform::Line);
                assert_eq!(e.bot_id, "bot_1");
                assert_eq!(
                    e.occurred_at,
                    DateTime::from_timestamp_millis(fx::TIME).unwrap()
                );
                assert_eq!(e.dedupe_key, format!("line:ch_1:{id}:{i}"));
                assert_eq!(
                    e.id,
                    derive_id(prefix::EVENT, "env_01JH0000000000000000000000", i as u32)
                );
            }
        }
    }

    #[test]
    fn an_unblocking_follow_is_a_resubscription() {
        let first = normalise(fx::follow("f1", fx::USER, false));
        assert_eq!(first[0].event_type, EventType::UserSubscribed);
        assert!(!first[0].resubscribed);
        let back = normalise(fx::follow("f2", fx::USER, true));
        assert_eq!(back[0].event_type, EventType::UserSubscribed);
        assert!(back[0].resubscribed);
    }

    #[test]
    fn an_unsend_names_the_withdrawn_message() {
        let e = normalise(fx::unsend("u1", fx::USER, "m-p1"));
        assert_eq!(e[0].event_type, EventType::MessageUnsent);
        assert_eq!(
            e[0].receipt.as_ref().unwrap().platform_message_ids,
            vec!["m-p1".to_owned()]
        );
        assert!(e[0].message.is_none());
    }

    #[test]
    fn message_ids_are_the_platform_message_ids() {
        let e = normalise(fx::text("p1", fx::USER, "x"));
        assert_eq!(e[0].message.as_ref().unwrap().platform_message_id, "m-p1");
    }

    #[test]
    fn the_verify_body_splits_into_nothing_and_events_one_envelope_each() {
        let verify = serde_json::to_vec(&fx::verify_body()).unwrap();
        assert_eq!(Line::split("ch_1", &verify), Ok(vec![]));
        let post = fx::post(vec![
            fx::text("a-1", fx::USER, "one"),
            fx::join("a-2", fx::in_group(fx::GROUP, None)),
            fx::message(
                "a-3",
                fx::in_room(fx::ROOM, Some(fx::USER)),
                json!({"id": "m", "type": "text", "text": "x"}),
            ),
        ]);
        let splits = Line::split("ch_9", &serde_json::to_vec(&post).unwrap()).unwrap();
        let keys: Vec<_> = splits
            .iter()
            .map(|s| {
                (
                    s.dedupe_key.as_str(),
                    s.order_key.as_deref(),
                    s.route.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            [
                ("line:ch_9:a-1", Some(fx::USER), Some(fx::BOT_USER_ID)),
                ("line:ch_9:a-2", Some(fx::GROUP), Some(fx::BOT_USER_ID)),
                ("line:ch_9:a-3", Some(fx::ROOM), Some(fx::BOT_USER_ID)),
            ]
        );
        for (s, e) in splits.iter().zip(post["events"].as_array().unwrap()) {
            assert_eq!(
                s.body,
                json!({"destination": fx::BOT_USER_ID, "events": [e]}),
                "the smallest documented shape"
            );
        }
    }

    #[test]
    fn a_redelivery_has_the_first_deliverys_key() {
        let first = fx::text("r-1", fx::USER, "again");
        let again = fx::redelivered(first.clone());
        let key = |e: Value| {
            Line::split("c", &serde_json::to_vec(&fx::post(vec![e])).unwrap()).unwrap()[0]
                .dedupe_key
                .clone()
        };
        assert_eq!(key(first), key(again));
    }

    #[test]
    fn reply_tokens_are_kept_with_the_events_time() {
        let splits =
            |e: Value| Line::split("c", &serde_json::to_vec(&fx::post(vec![e])).unwrap()).unwrap();
        let s = splits(fx::text("t-1", fx::USER, "x"));
        assert_eq!(
            Line::reply_context(&s[0]),
            Some((
                fx::reply_token("t-1"),
                DateTime::from_timestamp_millis(fx::TIME).unwrap()
            ))
        );
        assert_eq!(
            Line::reply_context(&splits(fx::unfollow("t-2", fx::USER))[0]),
            None
        );
    }

    #[test]
    fn malformed_posts_are_refused_and_unreadable_envelopes_are_errors() {
        for body in [
            &b"{nope"[..],
            br#"{"destination": "U1"}"#,
            br#"{"destination": "U1", "events": {}}"#,
            br#"{"destination": "U1", "events": [{"type": "follow"}]}"#,
            br#"{"destination": "U1", "events": [{"type": "follow", "webhookEventId": ""}]}"#,
        ] {
            assert!(
                matches!(Line::split("c", body), Err(Rejection::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let broken = |edit: &dyn Fn(&mut Value)| {
            let mut env =
                envelopes(&fx::post(vec![fx::location("b", fx::USER, "a", "b")])).remove(0);
            edit(&mut env.body["events"][0]);
            Line::normalise(&env)
        };
        assert!(
            broken(&|e| {
                e["message"].as_object_mut().unwrap().remove("latitude");
            })
            .is_err()
        );
        assert!(
            broken(&|e| {
                e.as_object_mut().unwrap().remove("message");
            })
            .is_err()
        );
        assert!(broken(&|e| e["source"] = json!({"type": "user"})).is_err());
        assert!(broken(&|e| e["message"]["id"] = json!(5)).is_err());
    }

    #[test]
    fn the_signature_is_base64_hmac_sha256_of_the_raw_body() {
        let body = serde_json::to_vec(&fx::post(vec![fx::text("s1", fx::USER, "hi")])).unwrap();
        let good = fx::signature(fx::CHANNEL_SECRET, &body);
        assert_eq!(Line::verify(&creds(), &signed(&good), &body), Ok(()));
        let refused = |h: HeaderMap, body: &[u8]| {
            matches!(
                Line::verify(&creds(), &h, body),
                Err(Rejection::Unauthorized(_))
            )
        };
        let mut tampered = body.clone();
        tampered.push(b' ');
        assert!(
            refused(signed(&good), &tampered),
            "re-serialised or changed"
        );
        assert!(refused(
            signed(&fx::signature("another-secret", &body)),
            &body
        ));
        assert!(refused(signed(&good[..20]), &body), "truncated");
        assert!(refused(signed("not base64!"), &body));
        assert!(refused(HeaderMap::new(), &body), "unsigned");
    }

    #[tokio::test]
    async fn enrichment_adds_profiles_in_chats_and_groups_and_remembers_missing_ones() {
        let line = patchbay_testkit::line::FakeLine::start().await;
        line.add_channel(fx::ACCESS_TOKEN);
        line.set_group_name(fx::GROUP, "Shop fans");
        line.set_profile(
            fx::USER,
            json!({"displayName": "Ana", "pictureUrl": "https://profile.line.example/ana",
                   "language": "ja"}),
        );
        line.add_member(fx::ACCESS_TOKEN, fx::GROUP, fx::USER);
        line.add_friend(fx::ACCESS_TOKEN, fx::USER);
        line.add_friend(fx::ACCESS_TOKEN, fx::OTHER_USER);
        let http = patchbay_platform::http::client_builder(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        let cache = patchbay_platform::enrich::Cache::default();
        let base = line.base_url();
        let body = serde_json::to_vec(&fx::post(vec![
            fx::text("e1", fx::USER, "a"),
            fx::text("e2", fx::OTHER_USER, "b"),
            fx::message(
                "e3",
                fx::in_group(fx::GROUP, Some(fx::USER)),
                json!({"id": "m3", "type": "text", "text": "c"}),
            ),
            fx::unfollow("e4", fx::USER),
        ]))
        .unwrap();
        let creds = creds();
        let mut last = Vec::new();
        for _ in 0..2 {
            let mut splits = Line::split("ch_1", &body).unwrap();
            let ctx = Context {
                http: &http,
                creds: &creds,
                base_url: &base,
                channel_id: "ch_1",
                cache: &cache,
                bus: None,
            };
            Line::enrich(ctx, &mut splits).await;
            let ana = json!({"display_name": "Ana",
                             "avatar_url": "https://profile.line.example/ana", "locale": "ja"});
            assert_eq!(splits[0].body[PROFILE_FIELD], ana);
            assert!(splits[1].body.get(PROFILE_FIELD).is_none(), "LINE had none");
            assert_eq!(splits[2].body[PROFILE_FIELD], ana, "the group-member form");
            assert_eq!(splits[2].body[GROUP_FIELD], json!({"name": "Shop fans"}));
            assert!(splits[0].body.get(GROUP_FIELD).is_none(), "not in a group");
            assert!(
                splits[3].body.get(PROFILE_FIELD).is_none(),
                "unfollow needs none"
            );
            last = splits;
        }
        // Concurrent lookups: their order at the fake is not theirs to keep.
        let mut lookups: Vec<_> = line
            .calls_to("/v2/bot/")
            .into_iter()
            .map(|c| (c.path, c.authorized))
            .collect();
        lookups.sort();
        assert_eq!(
            lookups,
            [
                (
                    format!("/v2/bot/group/{}/member/{}", fx::GROUP, fx::USER),
                    true
                ),
                (format!("/v2/bot/group/{}/summary", fx::GROUP), true),
                (format!("/v2/bot/profile/{}", fx::USER), true),
                (format!("/v2/bot/profile/{}", fx::OTHER_USER), true),
            ],
            "one lookup per chat and user, and per group, found or not, with the channel's token"
        );
        let in_group = IngressEnvelope {
            v: V1,
            id: "env_01JH0000000000000000000003".into(),
            platform: Platform::Line,
            channel_id: "ch_1".into(),
            bot_id: "bot_1".into(),
            received_at: Utc::now(),
            dedupe_key: "line:ch_1:e3".into(),
            body: last[2].body.clone(),
            order_key: None,
        };
        let chat = Line::normalise(&in_group).unwrap()[0].chat.clone().unwrap();
        assert_eq!(chat.title.as_deref(), Some("Shop fans"));
        let env = IngressEnvelope {
            v: V1,
            id: "env_01JH0000000000000000000001".into(),
            platform: Platform::Line,
            channel_id: "ch_1".into(),
            bot_id: "bot_1".into(),
            received_at: Utc::now(),
            dedupe_key: "line:ch_1:e1".into(),
            body: last.remove(0).body,
            order_key: None,
        };
        let e = Line::normalise(&env).unwrap();
        assert_eq!(e[0].sender.display_name.as_deref(), Some("Ana"));
        assert_eq!(e[0].sender.locale.as_deref(), Some("ja"));
        assert_eq!(
            e[0].sender.avatar_url.as_deref(),
            Some("https://profile.line.example/ana")
        );
    }

    #[tokio::test]
    async fn a_slow_profile_api_delays_the_answer_by_the_profile_budget_at_most() {
        let line = patchbay_testkit::line::FakeLine::start().await;
        line.add_channel(fx::ACCESS_TOKEN);
        line.add_friend(fx::ACCESS_TOKEN, fx::USER);
        line.set_profile(fx::USER, json!({"displayName": "Ana"}));
        line.delay_profiles(std::time::Duration::from_secs(5));
        let http = patchbay_platform::http::client_builder(std::time::Duration::from_secs(10))
            .build()
            .unwrap();
        let cache = patchbay_platform::enrich::Cache::default();
        let base = line.base_url();
        let creds = creds();
        let body = serde_json::to_vec(&fx::post(vec![fx::text("s1", fx::USER, "a")])).unwrap();
        let mut splits = Line::split("ch_1", &body).unwrap();
        let ctx = Context {
            http: &http,
            creds: &creds,
            base_url: &base,
            channel_id: "ch_1",
            cache: &cache,
            bus: None,
        };
        let started = std::time::Instant::now();
        Line::enrich(ctx, &mut splits).await;
        let took = started.elapsed();
        assert!(
            took >= PROFILE_BUDGET && took < PROFILE_BUDGET * 3,
            "waited {took:?}"
        );
        assert!(splits[0].body.get(PROFILE_FIELD).is_none());
        let key = format!("ch_1:{}:{}", fx::USER, fx::USER);
        assert_eq!(cache.get(&key), None, "a timeout is not remembered");
    }
}
