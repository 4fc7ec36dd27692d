//! Inbound Messenger: verification, splitting and normalisation of `messaging` events
//! (`reference/platforms.md` §2.1–2.2).
//!
//! One POST (`object: "page"`) can carry several entries for several Pages, each with several
//! events; every event becomes one envelope routed by its Page id (`entry[].id`) and keyed by
//! its `mid` (receipts, referrals and opt-ins, which have none, by kind, user and time).
//!
//! | event | event |
//! |---|---|
//! | `message.text` | `message.received` text |
//! | `message.text` + `quick_reply.payload` | `message.received` postback (payload, title) |
//! | `message.attachments[]` image / audio / video / file | `message.received` image / audio / video / file (CDN `url`), one event per attachment |
//! | `message.attachments[]` sticker (and the duplicate image sent with it until 30 Aug 2026) | `message.received` sticker (`sticker_id`), once |
//! | `message.attachments[]` location (older payloads) | `message.received` location |
//! | `postback` | `message.received` postback (payload, title) |
//! | `postback` with `referral` (Get Started through an m.me link or ad) | `user.subscribed` with `ref`, then the postback |
//! | `referral` (m.me link or ad into an existing thread) | `user.subscribed` with `ref` |
//! | `optin` (plugins; marketing messages opt-in) | `user.subscribed` with `ref` or `payload`; `user.unsubscribed` when notifications are stopped |
//! | `delivery` | `message.delivered` for `mids` (or everything up to the watermark) |
//! | `read` | `message.read` for everything up to the watermark |
//! | echoes, reactions, edits, handovers, other attachment kinds | none (counted, not an error) |
//!
//! The sender's name and picture are not in the webhook. The ingress looks them up with the
//! Graph user profile API ([`crate::outbound::profile`], Page token, cached per process for a
//! day, an hour when Meta shares nothing) before publishing, within
//! `patchbay_platform::enrich::BUDGET`, and adds them to the envelope as `patchbay_profile`
//! (`display_name`, `avatar_url`, `locale`); the router keeps the last known values.

use std::collections::HashMap;

use axum::http::HeaderMap;
use patchbay_contract::content::{Location, Media};
use patchbay_contract::ids::{derive_id, prefix};
use patchbay_contract::{
    ChannelRef, Content, EventType, InboundEvent, InboundMessage, IngressEnvelope, Platform,
    PlatformUser, Receipt, V1,
};
use patchbay_platform::enrich::Context;
use patchbay_platform::meta::{handshake, time_ms, verify_signature};
use patchbay_platform::{InboundAdapter, NormaliseError, Rejection, Split};
use serde::Deserialize;
use serde_json::Value;

use crate::MessengerCredentials;

/// The Messenger adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Messenger;

#[derive(Debug, Deserialize)]
struct Post {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
    /// Added by the ingress ([`Messenger::enrich`]), not by Meta.
    #[serde(default)]
    patchbay_profile: Option<ProfileHint>,
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

/// The key under which the ingress adds the sender's profile to an envelope.
pub const PROFILE_FIELD: &str = "patchbay_profile";

/// Whether a `messaging` event is from a person whose profile is worth knowing (not an echo,
/// not a receipt).
fn wants_profile(event: &Value) -> bool {
    let echo = event.pointer("/message/is_echo").and_then(Value::as_bool) == Some(true);
    !echo
        && ["message", "postback", "referral", "optin"]
            .iter()
            .any(|k| event.get(*k).is_some())
}

#[derive(Debug, Deserialize)]
struct Entry {
    id: String,
    #[serde(default)]
    time: Option<i64>,
    #[serde(default)]
    messaging: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct Party {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Event {
    sender: Party,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    postback: Option<Postback>,
    #[serde(default)]
    referral: Option<Referral>,
    #[serde(default)]
    optin: Option<Optin>,
    #[serde(default)]
    delivery: Option<Delivery>,
    #[serde(default)]
    read: Option<Read>,
}

#[derive(Debug, Deserialize)]
struct Message {
    mid: String,
    #[serde(default)]
    is_echo: bool,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    quick_reply: Option<QuickReplyTap>,
    #[serde(default)]
    attachments: Vec<Attachment>,
}

#[derive(Debug, Deserialize)]
struct QuickReplyTap {
    payload: String,
}

#[derive(Debug, Deserialize)]
struct Attachment {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    payload: Option<AttachmentPayload>,
}

#[derive(Debug, Default, Deserialize)]
struct AttachmentPayload {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    sticker_id: Option<Value>,
    #[serde(default)]
    coordinates: Option<Coordinates>,
}

#[derive(Debug, Deserialize)]
struct Coordinates {
    lat: f64,
    long: f64,
}

#[derive(Debug, Deserialize)]
struct Postback {
    #[serde(default)]
    mid: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    referral: Option<Referral>,
}

#[derive(Debug, Deserialize)]
struct Referral {
    #[serde(default, rename = "ref")]
    reference: Option<String>,
    #[serde(default)]
    ad_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Optin {
    #[serde(default, rename = "ref")]
    reference: Option<String>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    notification_messages_status: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delivery {
    #[serde(default)]
    mids: Vec<String>,
    #[serde(default)]
    watermark: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Read {
    watermark: i64,
}

/// The platform's own id of one `messaging` event: its `mid`, or kind + user + time.
fn event_key(e: &Value) -> Option<String> {
    let psid = e
        .pointer("/sender/id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let ts = e
        .get("timestamp")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    if let Some(mid) = e
        .pointer("/message/mid")
        .or_else(|| e.pointer("/postback/mid"))
        .and_then(Value::as_str)
    {
        return Some(mid.to_owned());
    }
    if let Some(w) = e.pointer("/delivery/watermark").and_then(Value::as_i64) {
        return Some(format!("delivery:{psid}:{w}"));
    }
    if let Some(w) = e.pointer("/read/watermark").and_then(Value::as_i64) {
        return Some(format!("read:{psid}:{w}"));
    }
    let kind = e
        .as_object()?
        .keys()
        .find(|k| !matches!(k.as_str(), "sender" | "recipient" | "timestamp"))?
        .clone();
    Some(format!("{kind}:{psid}:{ts}"))
}

fn media(url: Option<String>) -> Media {
    Media {
        url,
        file_id: None,
        caption: None,
        filename: None,
        mime_type: None,
        media_id: None,
        download_url: None,
        preview_url: None,
        duration_ms: None,
        size_bytes: None,
    }
}

/// What a message carries: text (or a quick-reply tap) and its attachments, in order.
fn contents(m: &Message) -> Vec<Content> {
    let mut out = Vec::new();
    if let Some(text) = &m.text {
        out.push(match &m.quick_reply {
            Some(q) => Content::Postback {
                payload: q.payload.clone(),
                title: Some(text.clone()),
            },
            None => Content::Text { text: text.clone() },
        });
    }
    let has_sticker = m.attachments.iter().any(|a| a.kind == "sticker");
    for a in &m.attachments {
        let p = a.payload.as_ref();
        let url = p.and_then(|p| p.url.clone());
        let sticker_id = p
            .and_then(|p| p.sticker_id.as_ref())
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        let c = match a.kind.as_str() {
            "sticker" => sticker_id.map(|id| Content::Sticker { id }),
            // The image Meta sends along with a sticker (or alone, in older payloads).
            "image" if has_sticker => None,
            "image" if sticker_id.is_some() => sticker_id.map(|id| Content::Sticker { id }),
            "image" => Some(Content::Image(media(url))),
            "audio" => Some(Content::Audio(media(url))),
            "video" => Some(Content::Video(media(url))),
            "file" => Some(Content::File(media(url))),
            "location" => p.and_then(|p| p.coordinates.as_ref()).map(|c| {
                Content::Location(Location {
                    latitude: c.lat,
                    longitude: c.long,
                    name: a.title.clone(),
                    address: None,
                })
            }),
            _ => None,
        };
        out.extend(c);
    }
    out
}

impl InboundAdapter for Messenger {
    const PLATFORM: Platform = Platform::Messenger;
    const SIGNATURE_HEADER: Option<&'static str> = Some(patchbay_platform::meta::SIGNATURE_HEADER);
    type Credentials = MessengerCredentials;
    const ROUTED: bool = true;

    fn verify(
        creds: &MessengerCredentials,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Rejection> {
        verify_signature(&creds.app_secret, headers, body)
    }

    fn challenge(
        creds: &MessengerCredentials,
        query: &HashMap<String, String>,
    ) -> Option<Result<String, Rejection>> {
        Some(handshake(&creds.verify_token, query))
    }

    fn route_id(creds: &MessengerCredentials) -> Option<String> {
        Some(creds.page_id.clone())
    }

    fn api_base_url(config: &patchbay_config::Config) -> Option<String> {
        Some(config.messenger_api_base_url.clone())
    }

    async fn enrich(ctx: Context<'_, MessengerCredentials>, splits: &mut [Split]) {
        let mut wanted: Vec<String> = splits
            .iter()
            .filter(|s| {
                s.body
                    .pointer("/entry/0/messaging/0")
                    .is_some_and(wants_profile)
            })
            .filter_map(|s| s.order_key.clone())
            .collect();
        wanted.sort();
        wanted.dedup();
        let key = |psid: &str| format!("{}:{psid}", ctx.channel_id);
        let lookups = wanted
            .iter()
            .filter(|psid| ctx.cache.get(&key(psid)).is_none())
            .map(|psid| async {
                let found = tokio::time::timeout(
                    patchbay_platform::enrich::BUDGET,
                    crate::outbound::profile(
                        ctx.http,
                        ctx.base_url,
                        &ctx.creds.page_access_token,
                        psid,
                    ),
                )
                .await;
                // A timeout is not remembered: the next message tries again.
                if let Ok(found) = found {
                    let value = found.map(|u| {
                        serde_json::json!({"display_name": u.display_name,
                                           "avatar_url": u.avatar_url, "locale": u.locale})
                    });
                    ctx.cache.put(key(psid), value);
                }
            });
        futures::future::join_all(lookups).await;
        for s in splits.iter_mut() {
            let Some(psid) = &s.order_key else { continue };
            if let Some(Some(profile)) = ctx.cache.get(&key(psid))
                && s.body
                    .pointer("/entry/0/messaging/0")
                    .is_some_and(wants_profile)
            {
                s.body[PROFILE_FIELD] = profile;
            }
        }
    }

    fn split(channel_id: &str, body: &[u8]) -> Result<Vec<Split>, Rejection> {
        let post: Post = serde_json::from_slice(body)
            .map_err(|e| Rejection::Malformed(format!("not a Messenger webhook: {e}")))?;
        if post.object != "page" {
            return Err(Rejection::Malformed(format!(
                "object is {:?}, not \"page\"",
                post.object
            )));
        }
        let mut out = Vec::new();
        for entry in post.entry {
            for event in entry.messaging {
                let key = event_key(&event).ok_or_else(|| {
                    Rejection::Malformed("a messaging event must be an object".into())
                })?;
                // The user's PSID; for echoes the Page is the sender.
                let echo = event.pointer("/message/is_echo").and_then(Value::as_bool) == Some(true);
                let user = if echo { "/recipient/id" } else { "/sender/id" };
                let order_key = event
                    .pointer(user)
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                out.push(Split {
                    dedupe_key: format!("messenger:{channel_id}:{key}"),
                    body: serde_json::json!({"object": "page", "entry": [
                        {"id": entry.id, "time": entry.time, "messaging": [event]}]}),
                    order_key,
                    route: Some(entry.id.clone()),
                });
            }
        }
        Ok(out)
    }

    fn normalise(env: &IngressEnvelope) -> Result<Vec<InboundEvent>, NormaliseError> {
        let post: Post = serde_json::from_value(env.body.clone())
            .map_err(|e| NormaliseError(format!("not a Messenger webhook: {e}")))?;
        let raw = post
            .entry
            .first()
            .and_then(|e| e.messaging.first())
            .ok_or_else(|| NormaliseError("the envelope holds no messaging event".into()))?;
        let e: Event = serde_json::from_value(raw.clone())
            .map_err(|err| NormaliseError(format!("not a Messenger messaging event: {err}")))?;
        let Some(psid) = e.sender.id.clone() else {
            // Plugin opt-ins by `user_ref` have no PSID yet: nothing to address.
            return Ok(vec![]);
        };
        let occurred_at = e.timestamp.map_or(env.received_at, time_ms);
        let profile = post.patchbay_profile.unwrap_or_default();
        let mut out = Vec::new();
        let mut push = |event_type,
                        message: Option<InboundMessage>,
                        referral: Option<String>,
                        receipt: Option<Receipt>| {
            let index = out.len() as u32;
            out.push(InboundEvent {
                v: V1,
                id: derive_id(prefix::EVENT, &env.id, index),
                event_type,
                bot_id: env.bot_id.clone(),
                channel: ChannelRef {
                    id: env.channel_id.clone(),
                    platform: Platform::Messenger,
                },
                occurred_at,
                sender: PlatformUser {
                    platform_user_id: psid.clone(),
                    display_name: profile.display_name.clone(),
                    username: None,
                    locale: profile.locale.clone(),
                    avatar_url: profile.avatar_url.clone(),
                    email: None,
                    phone: None,
                },
                address: psid.clone(),
                chat: None,
                dedupe_key: format!("{}:{index}", env.dedupe_key),
                message,
                referral,
                resubscribed: false,
                receipt,
            });
        };
        if let Some(m) = &e.message {
            if m.is_echo {
                return Ok(vec![]);
            }
            let contents = contents(m);
            let many = contents.len() > 1;
            for (i, content) in contents.into_iter().enumerate() {
                let platform_message_id = if many {
                    format!("{}#{i}", m.mid)
                } else {
                    m.mid.clone()
                };
                push(
                    EventType::MessageReceived,
                    Some(InboundMessage {
                        platform_message_id,
                        content,
                    }),
                    None,
                    None,
                );
            }
        } else if let Some(p) = &e.postback {
            if let Some(r) = &p.referral {
                push(
                    EventType::UserSubscribed,
                    None,
                    r.reference.clone().or_else(|| r.ad_id.clone()),
                    None,
                );
            }
            let mid = p
                .mid
                .clone()
                .unwrap_or_else(|| format!("postback:{}", e.timestamp.unwrap_or_default()));
            push(
                EventType::MessageReceived,
                Some(InboundMessage {
                    platform_message_id: mid,
                    content: Content::Postback {
                        payload: p.payload.clone().unwrap_or_default(),
                        title: p.title.clone(),
                    },
                }),
                None,
                None,
            );
        } else if let Some(r) = &e.referral {
            push(
                EventType::UserSubscribed,
                None,
                r.reference.clone().or_else(|| r.ad_id.clone()),
                None,
            );
        } else if let Some(o) = &e.optin {
            let stopped = o.notification_messages_status.as_deref() == Some("STOP_NOTIFICATIONS");
            let event_type = if stopped {
                EventType::UserUnsubscribed
            } else {
                EventType::UserSubscribed
            };
            push(
                event_type,
                None,
                o.reference.clone().or_else(|| o.payload.clone()),
                None,
            );
        } else if let Some(d) = &e.delivery {
            push(
                EventType::MessageDelivered,
                None,
                None,
                Some(Receipt {
                    platform_message_ids: d.mids.clone(),
                    watermark: d.watermark.map(time_ms).filter(|_| d.mids.is_empty()),
                    error: None,
                }),
            );
        } else if let Some(r) = &e.read {
            push(
                EventType::MessageRead,
                None,
                None,
                Some(Receipt {
                    platform_message_ids: vec![],
                    watermark: Some(time_ms(r.watermark)),
                    error: None,
                }),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures as fx;
    use chrono::{DateTime, Utc};
    use patchbay_testkit::fixtures::meta_signature;
    use serde_json::json;

    fn at(ms: i64) -> DateTime<Utc> {
        time_ms(ms)
    }

    fn envelopes(post: &Value) -> Vec<IngressEnvelope> {
        let body = serde_json::to_vec(post).unwrap();
        Messenger::split("ch_1", &body)
            .unwrap()
            .into_iter()
            .map(|s| IngressEnvelope {
                v: V1,
                id: patchbay_contract::ids::new_id("env"),
                platform: Platform::Messenger,
                channel_id: "ch_1".into(),
                bot_id: "bot_1".into(),
                received_at: Utc::now(),
                dedupe_key: s.dedupe_key,
                body: s.body,
                order_key: s.order_key,
            })
            .collect()
    }

    /// Every event of a one-event POST.
    fn normalise(event: Value) -> Vec<InboundEvent> {
        let envs = envelopes(&fx::post(&[(fx::PAGE_ID, vec![event])]));
        assert_eq!(envs.len(), 1);
        Messenger::normalise(&envs[0]).expect("normalises")
    }

    fn content(c: &InboundEvent) -> Content {
        c.message.as_ref().expect("a message").content.clone()
    }

    fn media_url(url: &str) -> Media {
        media(Some(url.into()))
    }

    #[test]
    fn every_documented_event_normalises_as_the_table_says() {
        type Check = fn(&[InboundEvent]);
        let cases: Vec<(&str, Value, Check)> = vec![
            ("text", fx::text(fx::PSID, "m_1", "hello"), |e| {
                assert_eq!(e[0].event_type, EventType::MessageReceived);
                assert_eq!(
                    content(&e[0]),
                    Content::Text {
                        text: "hello".into()
                    }
                );
                assert_eq!(e[0].message.as_ref().unwrap().platform_message_id, "m_1");
                assert_eq!(e[0].address, fx::PSID);
                assert_eq!(e[0].sender.platform_user_id, fx::PSID);
                assert_eq!(e[0].occurred_at, at(1767225600000));
            }),
            (
                "quick reply",
                fx::quick_reply(fx::PSID, "m_2", "Green", "COLOR_GREEN"),
                |e| {
                    assert_eq!(
                        content(&e[0]),
                        Content::Postback {
                            payload: "COLOR_GREEN".into(),
                            title: Some("Green".into())
                        }
                    );
                },
            ),
            (
                "image",
                fx::attachment(fx::PSID, "m_3", "image", "https://cdn.example/x.jpg"),
                |e| {
                    assert_eq!(
                        content(&e[0]),
                        Content::Image(media_url("https://cdn.example/x.jpg"))
                    );
                },
            ),
            (
                "audio",
                fx::attachment(fx::PSID, "m_4", "audio", "https://cdn.example/a.mp4"),
                |e| {
                    assert_eq!(
                        content(&e[0]),
                        Content::Audio(media_url("https://cdn.example/a.mp4"))
                    );
                },
            ),
            (
                "video",
                fx::attachment(fx::PSID, "m_5", "video", "https://cdn.example/v.mp4"),
                |e| {
                    assert_eq!(
                        content(&e[0]),
                        Content::Video(media_url("https://cdn.example/v.mp4"))
                    );
                },
            ),
            (
                "file",
                fx::attachment(fx::PSID, "m_6", "file", "https://cdn.example/f.pdf"),
                |e| {
                    assert_eq!(
                        content(&e[0]),
                        Content::File(media_url("https://cdn.example/f.pdf"))
                    );
                },
            ),
            (
                "sticker with its duplicate image",
                fx::sticker(fx::PSID, "m_7", 369239263222822),
                |e| {
                    assert_eq!(e.len(), 1, "the duplicate image is dropped");
                    assert_eq!(
                        content(&e[0]),
                        Content::Sticker {
                            id: "369239263222822".into()
                        }
                    );
                },
            ),
            (
                "location",
                fx::location(fx::PSID, "m_8", 38.72, -9.14),
                |e| {
                    assert_eq!(
                        content(&e[0]),
                        Content::Location(Location {
                            latitude: 38.72,
                            longitude: -9.14,
                            name: Some("Pinned".into()),
                            address: None
                        })
                    );
                },
            ),
            (
                "postback",
                fx::postback(fx::PSID, "m_9", "Start Chatting", "GET_STARTED"),
                |e| {
                    assert_eq!(
                        content(&e[0]),
                        Content::Postback {
                            payload: "GET_STARTED".into(),
                            title: Some("Start Chatting".into())
                        }
                    );
                    assert_eq!(e[0].message.as_ref().unwrap().platform_message_id, "m_9");
                },
            ),
            (
                "get started through an m.me link",
                fx::get_started_with_ref(fx::PSID, "m_10", "promo_7"),
                |e| {
                    assert_eq!(e.len(), 2);
                    assert_eq!(e[0].event_type, EventType::UserSubscribed);
                    assert_eq!(e[0].referral.as_deref(), Some("promo_7"));
                    assert_eq!(e[1].event_type, EventType::MessageReceived);
                    assert_ne!(e[0].id, e[1].id);
                    assert_ne!(e[0].dedupe_key, e[1].dedupe_key);
                },
            ),
            ("referral", fx::referral(fx::PSID, "spring"), |e| {
                assert_eq!(e[0].event_type, EventType::UserSubscribed);
                assert_eq!(e[0].referral.as_deref(), Some("spring"));
                assert!(e[0].message.is_none());
            }),
            ("opt-in", fx::optin(fx::PSID, "checkbox_1"), |e| {
                assert_eq!(e[0].event_type, EventType::UserSubscribed);
                assert_eq!(e[0].referral.as_deref(), Some("checkbox_1"));
            }),
            (
                "delivery",
                fx::delivery(fx::PSID, &["m_out_1", "m_out_2"], 1767225790000),
                |e| {
                    assert_eq!(e[0].event_type, EventType::MessageDelivered);
                    let r = e[0].receipt.as_ref().unwrap();
                    assert_eq!(r.platform_message_ids, vec!["m_out_1", "m_out_2"]);
                    assert_eq!(r.watermark, None);
                },
            ),
            (
                "delivery by watermark only",
                fx::delivery(fx::PSID, &[], 1767225790000),
                |e| {
                    let r = e[0].receipt.as_ref().unwrap();
                    assert_eq!(r.watermark, Some(at(1767225790000)));
                },
            ),
            ("read", fx::read(fx::PSID, 1767225790000), |e| {
                assert_eq!(e[0].event_type, EventType::MessageRead);
                assert_eq!(
                    e[0].receipt.as_ref().unwrap().watermark,
                    Some(at(1767225790000))
                );
            }),
            ("echo", fx::echo(fx::PSID, "m_echo"), |e| {
                assert!(e.is_empty())
            }),
        ];
        for (name, event, check) in cases {
            let events = normalise(event);
            assert!(
                events
                    .iter()
                    .all(|e| e.channel.platform == Platform::Messenger && e.bot_id == "bot_1"),
                "{name}"
            );
            check(&events);
        }
    }

    #[test]
    fn one_post_for_several_pages_splits_per_event_with_routes() {
        let post = fx::post(&[
            (
                fx::PAGE_ID,
                vec![fx::text("1", "m_a", "a"), fx::text("2", "m_b", "b")],
            ),
            ("106100000000002", vec![fx::read("3", 5)]),
        ]);
        let splits = Messenger::split("ch_1", &serde_json::to_vec(&post).unwrap()).unwrap();
        let got: Vec<_> = splits
            .iter()
            .map(|s| {
                (
                    s.dedupe_key.as_str(),
                    s.route.as_deref(),
                    s.order_key.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("messenger:ch_1:m_a", Some(fx::PAGE_ID), Some("1")),
                ("messenger:ch_1:m_b", Some(fx::PAGE_ID), Some("2")),
                (
                    "messenger:ch_1:read:3:5",
                    Some("106100000000002"),
                    Some("3")
                ),
            ]
        );
    }

    #[test]
    fn messenger_malformed_bodies_are_refused_and_unreadable_envelopes_are_errors() {
        assert!(matches!(
            Messenger::split("c", b"{nope"),
            Err(Rejection::Malformed(_))
        ));
        assert!(matches!(
            Messenger::split("c", br#"{"object":"instagram","entry":[]}"#),
            Err(Rejection::Malformed(_))
        ));
        let mut env =
            envelopes(&fx::post(&[(fx::PAGE_ID, vec![fx::text("1", "m", "x")])])).remove(0);
        env.body = json!({"object": "page", "entry": [{"id": "1", "messaging": [{"sender": 5}]}]});
        assert!(Messenger::normalise(&env).is_err());
    }

    #[tokio::test]
    async fn enrichment_adds_shared_profiles_and_remembers_missing_ones() {
        let graph = patchbay_testkit::graph::FakeGraph::start().await;
        graph.add_page(fx::PAGE_ID, "EAAB");
        graph.set_profile(
            "1",
            json!({"first_name": "Ana", "profile_pic": "https://p/a.jpg"}),
        );
        let creds = MessengerCredentials {
            page_id: fx::PAGE_ID.into(),
            page_access_token: "EAAB".into(),
            app_secret: "s".into(),
            verify_token: "v".into(),
        };
        let http = patchbay_platform::http::client_builder(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        let cache = patchbay_platform::enrich::Cache::default();
        let base = graph.base_url();
        let post = fx::post(&[(
            fx::PAGE_ID,
            vec![
                fx::text("1", "m_1", "a"),
                fx::text("2", "m_2", "b"),
                fx::read("1", 5),
            ],
        )]);
        let body = serde_json::to_vec(&post).unwrap();
        for _ in 0..2 {
            let mut splits = Messenger::split("ch_1", &body).unwrap();
            let ctx = Context {
                http: &http,
                creds: &creds,
                base_url: &base,
                channel_id: "ch_1",
                cache: &cache,
                bus: None,
            };
            Messenger::enrich(ctx, &mut splits).await;
            assert_eq!(
                splits[0].body[PROFILE_FIELD],
                json!({"display_name": "Ana", "avatar_url": "https://p/a.jpg", "locale": null})
            );
            assert!(
                splits[1].body.get(PROFILE_FIELD).is_none(),
                "Meta shared nothing"
            );
            assert!(
                splits[2].body.get(PROFILE_FIELD).is_none(),
                "receipts need no profile"
            );
        }
        let lookups: Vec<String> = graph.calls().into_iter().map(|c| c.id).collect();
        assert_eq!(lookups, vec!["1", "2"], "one lookup per user, found or not");
    }

    #[test]
    fn messenger_reads_its_app_secret_verify_token_and_page_id() {
        let creds = MessengerCredentials {
            page_id: fx::PAGE_ID.into(),
            page_access_token: "EAAB".into(),
            app_secret: "app-secret".into(),
            verify_token: "vt".into(),
        };
        let body = br#"{"object":"page","entry":[]}"#;
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            format!("sha256={}", meta_signature("app-secret", body))
                .parse()
                .unwrap(),
        );
        assert!(Messenger::verify(&creds, &h, body).is_ok());
        let q: HashMap<String, String> = [
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "vt"),
            ("hub.challenge", "42"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        assert_eq!(Messenger::challenge(&creds, &q), Some(Ok("42".into())));
        assert_eq!(Messenger::route_id(&creds).as_deref(), Some(fx::PAGE_ID));
    }
}
