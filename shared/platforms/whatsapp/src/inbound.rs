//! Inbound WhatsApp: verification, splitting and normalisation of `messages` webhooks
//! (`reference/platforms.md` §3.1–3.2).
//!
//! One POST (`object: "whatsapp_business_account"`) can carry up to 1000 updates for several
//! phone numbers; every message and every status becomes one envelope routed by
//! `metadata.phone_number_id`, keyed by its `wamid` (statuses by `wamid` and status). Fields
//! other than `messages` (template and quality updates, `user_preferences`, …) are not
//! published.
//!
//! | update | event |
//! |---|---|
//! | `text` | `message.received` text |
//! | `image` / `audio` (`voice: true`: voice) / `video` / `document` / `sticker` | `message.received` with the media id as `file_id`, caption, file name, MIME type |
//! | `location` | `message.received` location |
//! | `interactive.button_reply`, `interactive.list_reply` | `message.received` postback (id, title) |
//! | `button` (template quick-reply button) | `message.received` postback (payload, text) |
//! | any message with a Click-to-WhatsApp `referral` | `user.subscribed` with the ad's `source_id` as `ref`, then the message |
//! | `statuses[]` `delivered` | `message.delivered` for the `wamid` |
//! | `statuses[]` `read`, `played` | `message.read` for the `wamid` |
//! | `statuses[]` `failed` | `message.failed` for the `wamid`, error classified like a send error |
//! | `statuses[]` `sent` | none (the sender reported `message.sent` when Meta accepted it) |
//! | `contacts`, `reaction`, `order`, `system`, `unsupported`, `revoke`, `edit` | none (counted, not an error) |
//!
//! The sender's name is `contacts[].profile.name` (WhatsApp has no profile API), the username
//! `contacts[].username` when the user adopted one.

use std::collections::HashMap;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use patchbay_contract::content::{Location, Media};
use patchbay_contract::ids::{derive_id, prefix};
use patchbay_contract::{
    ChannelRef, Content, EventType, InboundEvent, InboundMessage, IngressEnvelope, Platform,
    PlatformUser, Receipt, V1,
};
use patchbay_platform::meta::{handshake, verify_signature};
use patchbay_platform::{InboundAdapter, NormaliseError, Rejection, SendError, Split};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::WhatsappCredentials;

/// The WhatsApp adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Whatsapp;

#[derive(Debug, Deserialize)]
struct Post {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Debug, Deserialize)]
struct Change {
    field: String,
    #[serde(default)]
    value: Value,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    /// Required: the routing key (checked by `split`, required here too).
    #[serde(rename = "phone_number_id")]
    _phone_number_id: String,
}

#[derive(Debug, Default, Deserialize)]
struct Value_ {
    metadata: Option<Metadata>,
    #[serde(default)]
    contacts: Vec<Contact>,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    statuses: Vec<Status>,
}

#[derive(Debug, Default, Deserialize)]
struct Contact {
    #[serde(default)]
    profile: Option<Profile>,
    #[serde(default)]
    wa_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Profile {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    id: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    from_user_id: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<Text>,
    #[serde(default)]
    image: Option<WaMedia>,
    #[serde(default)]
    audio: Option<WaMedia>,
    #[serde(default)]
    video: Option<WaMedia>,
    #[serde(default)]
    document: Option<WaMedia>,
    #[serde(default)]
    sticker: Option<WaMedia>,
    #[serde(default)]
    location: Option<WaLocation>,
    #[serde(default)]
    interactive: Option<Interactive>,
    #[serde(default)]
    button: Option<TemplateButton>,
    #[serde(default)]
    referral: Option<Referral>,
}

#[derive(Debug, Deserialize)]
struct Text {
    body: String,
}

#[derive(Debug, Deserialize)]
struct WaMedia {
    id: String,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    caption: Option<String>,
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    voice: bool,
}

#[derive(Debug, Deserialize)]
struct WaLocation {
    latitude: f64,
    longitude: f64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    address: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Interactive {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    button_reply: Option<Reply>,
    #[serde(default)]
    list_reply: Option<Reply>,
}

#[derive(Debug, Deserialize)]
struct Reply {
    id: String,
    #[serde(default)]
    title: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TemplateButton {
    payload: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Referral {
    #[serde(default)]
    source_id: Option<String>,
    #[serde(default)]
    source_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Status {
    id: String,
    status: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    recipient_id: Option<String>,
    #[serde(default)]
    recipient_user_id: Option<String>,
    #[serde(default)]
    errors: Vec<StatusError>,
}

#[derive(Debug, Deserialize)]
struct StatusError {
    code: i64,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error_data: Option<patchbay_platform::meta::ErrorData>,
}

fn time(unix: &Option<String>, fallback: DateTime<Utc>) -> DateTime<Utc> {
    unix.as_deref()
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .unwrap_or(fallback)
}

fn media(m: &WaMedia) -> Media {
    Media {
        url: None,
        file_id: Some(m.id.clone()),
        caption: m.caption.clone(),
        filename: m.filename.clone(),
        mime_type: m.mime_type.clone(),
        media_id: None,
        download_url: None,
        preview_url: None,
        duration_ms: None,
        size_bytes: None,
    }
}

/// What a message carries, or `None` for kinds Patchbay does not model.
fn content(m: &Message) -> Option<Content> {
    Some(match m.kind.as_str() {
        "text" => Content::Text {
            text: m.text.as_ref()?.body.clone(),
        },
        "image" => Content::Image(media(m.image.as_ref()?)),
        "audio" => {
            let a = m.audio.as_ref()?;
            if a.voice {
                Content::Voice(media(a))
            } else {
                Content::Audio(media(a))
            }
        }
        "video" => Content::Video(media(m.video.as_ref()?)),
        "document" => Content::File(media(m.document.as_ref()?)),
        "sticker" => Content::Sticker {
            id: m.sticker.as_ref()?.id.clone(),
        },
        "location" => {
            let l = m.location.as_ref()?;
            Content::Location(Location {
                latitude: l.latitude,
                longitude: l.longitude,
                name: l.name.clone(),
                address: l.address.clone(),
            })
        }
        "interactive" => {
            let i = m.interactive.as_ref()?;
            let r = match i.kind.as_str() {
                "button_reply" => i.button_reply.as_ref()?,
                "list_reply" => i.list_reply.as_ref()?,
                _ => return None,
            };
            Content::Postback {
                payload: r.id.clone(),
                title: r.title.clone(),
            }
        }
        "button" => {
            let b = m.button.as_ref()?;
            Content::Postback {
                payload: b.payload.clone(),
                title: b.text.clone(),
            }
        }
        _ => return None,
    })
}

/// The change's value with only `messages[i]` (and its contact) or `statuses[i]`.
fn single(value: &Value, list: &str, item: &Value) -> Value {
    let mut v = json!({
        "messaging_product": value.get("messaging_product").cloned().unwrap_or(json!("whatsapp")),
        "metadata": value.get("metadata").cloned().unwrap_or(Value::Null),
    });
    if list == "messages" {
        let from = item.get("from");
        let from_user = item.get("from_user_id");
        let contacts = value
            .get("contacts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let contact = contacts
            .iter()
            .find(|c| {
                (from.is_some() && c.get("wa_id") == from)
                    || (from_user.is_some() && c.get("user_id") == from_user)
            })
            .or(contacts.first());
        if let Some(c) = contact {
            v["contacts"] = json!([c]);
        }
    }
    v[list] = json!([item]);
    v
}

impl InboundAdapter for Whatsapp {
    const PLATFORM: Platform = Platform::Whatsapp;
    const SIGNATURE_HEADER: Option<&'static str> = Some(patchbay_platform::meta::SIGNATURE_HEADER);
    type Credentials = WhatsappCredentials;
    const ROUTED: bool = true;

    fn verify(
        creds: &WhatsappCredentials,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Rejection> {
        verify_signature(&creds.app_secret, headers, body)
    }

    fn challenge(
        creds: &WhatsappCredentials,
        query: &HashMap<String, String>,
    ) -> Option<Result<String, Rejection>> {
        Some(handshake(&creds.verify_token, query))
    }

    fn route_id(creds: &WhatsappCredentials) -> Option<String> {
        Some(creds.phone_number_id.clone())
    }

    fn split(channel_id: &str, body: &[u8]) -> Result<Vec<Split>, Rejection> {
        let post: Post = serde_json::from_slice(body)
            .map_err(|e| Rejection::Malformed(format!("not a WhatsApp webhook: {e}")))?;
        if post.object != "whatsapp_business_account" {
            return Err(Rejection::Malformed(format!(
                "object is {:?}, not \"whatsapp_business_account\"",
                post.object
            )));
        }
        let mut out = Vec::new();
        for entry in post.entry {
            for change in entry.changes {
                if change.field != "messages" {
                    tracing::debug!(field = %change.field, "WhatsApp webhook field not handled");
                    continue;
                }
                let route = change
                    .value
                    .pointer("/metadata/phone_number_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        Rejection::Malformed("value.metadata.phone_number_id is missing".into())
                    })?
                    .to_owned();
                let wrap = |value: Value| {
                    json!({"object": "whatsapp_business_account",
                           "entry": [{"id": entry.id, "changes": [{"field": "messages", "value": value}]}]})
                };
                let list = |name: &str| {
                    change
                        .value
                        .get(name)
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                };
                for m in list("messages") {
                    let id = m
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| Rejection::Malformed("a message needs an id".into()))?;
                    let user = m
                        .get("from_user_id")
                        .or_else(|| m.get("from"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    out.push(Split {
                        dedupe_key: format!("whatsapp:{channel_id}:{id}"),
                        body: wrap(single(&change.value, "messages", &m)),
                        order_key: user,
                        route: Some(route.clone()),
                    });
                }
                for s in list("statuses") {
                    let (Some(id), Some(status)) = (
                        s.get("id").and_then(Value::as_str),
                        s.get("status").and_then(Value::as_str),
                    ) else {
                        return Err(Rejection::Malformed(
                            "a status needs an id and a status".into(),
                        ));
                    };
                    let user = s
                        .get("recipient_user_id")
                        .or_else(|| s.get("recipient_id"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    out.push(Split {
                        dedupe_key: format!("whatsapp:{channel_id}:{id}:{status}"),
                        body: wrap(single(&change.value, "statuses", &s)),
                        order_key: user,
                        route: Some(route.clone()),
                    });
                }
            }
        }
        Ok(out)
    }

    fn normalise(env: &IngressEnvelope) -> Result<Vec<InboundEvent>, NormaliseError> {
        let post: Post = serde_json::from_value(env.body.clone())
            .map_err(|e| NormaliseError(format!("not a WhatsApp webhook: {e}")))?;
        let change = post
            .entry
            .first()
            .and_then(|e| e.changes.first())
            .ok_or_else(|| NormaliseError("the envelope holds no change".into()))?;
        let value: Value_ = serde_json::from_value(change.value.clone())
            .map_err(|e| NormaliseError(format!("not a WhatsApp messages value: {e}")))?;
        if value.metadata.is_none() {
            return Err(NormaliseError("value.metadata is missing".into()));
        }
        let mut out = Vec::new();
        let mut push = |event_type,
                        sender: PlatformUser,
                        address: String,
                        occurred_at,
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
                    platform: Platform::Whatsapp,
                },
                occurred_at,
                sender,
                address,
                chat: None,
                dedupe_key: format!("{}:{index}", env.dedupe_key),
                message,
                referral,
                resubscribed: false,
                receipt,
            });
        };
        if let Some(m) = value.messages.first() {
            let contact = value.contacts.first();
            let bsuid = m
                .from_user_id
                .clone()
                .or_else(|| contact.and_then(|c| c.user_id.clone()));
            let phone = m
                .from
                .clone()
                .or_else(|| contact.and_then(|c| c.wa_id.clone()));
            // The number in E.164, so `POST /v1/conversations` finds the user by phone.
            let e164 = phone
                .as_deref()
                .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                .map(|p| format!("+{p}"));
            let (Some(user_id), Some(address)) = (bsuid.clone().or(phone.clone()), phone.or(bsuid))
            else {
                return Err(NormaliseError(format!(
                    "message {} names no sender (from, from_user_id, contacts)",
                    m.id
                )));
            };
            let sender = PlatformUser {
                platform_user_id: user_id,
                display_name: contact.and_then(|c| c.profile.as_ref()?.name.clone()),
                username: contact.and_then(|c| c.username.clone()),
                locale: None,
                avatar_url: None,
                email: None,
                phone: e164,
            };
            let at = time(&m.timestamp, env.received_at);
            if let Some(r) = &m.referral {
                push(
                    EventType::UserSubscribed,
                    sender.clone(),
                    address.clone(),
                    at,
                    None,
                    r.source_id.clone().or_else(|| r.source_url.clone()),
                    None,
                );
            }
            if let Some(content) = content(m) {
                push(
                    EventType::MessageReceived,
                    sender,
                    address,
                    at,
                    Some(InboundMessage {
                        platform_message_id: m.id.clone(),
                        content,
                    }),
                    None,
                    None,
                );
            }
        } else if let Some(s) = value.statuses.first() {
            let event_type = match s.status.as_str() {
                "delivered" => EventType::MessageDelivered,
                "read" | "played" => EventType::MessageRead,
                "failed" => EventType::MessageFailed,
                _ => return Ok(vec![]),
            };
            let (Some(user_id), Some(address)) = (
                s.recipient_user_id.clone().or(s.recipient_id.clone()),
                s.recipient_id.clone().or(s.recipient_user_id.clone()),
            ) else {
                return Err(NormaliseError(format!(
                    "status of {} names no recipient",
                    s.id
                )));
            };
            let error = (event_type == EventType::MessageFailed).then(|| {
                let e = s.errors.first();
                let code = e.map(|e| e.code);
                let message = e
                    .map(|e| {
                        let base = e.message.clone().or(e.title.clone()).unwrap_or_default();
                        match e.error_data.as_ref().and_then(|d| d.details.clone()) {
                            Some(d) if d != base => format!("{base} ({d})"),
                            _ => base,
                        }
                    })
                    .unwrap_or_else(|| "WhatsApp reported the message as failed".into());
                match code.map(|c| crate::outbound::classify_code(c, 400, message.clone())) {
                    Some(SendError::Permanent(d)) => d,
                    // A retryable code reported after the fact: nothing will retry it now.
                    _ => patchbay_contract::DeliveryError {
                        code: "platform_error".into(),
                        message,
                        platform_code: code,
                    },
                }
            });
            push(
                event_type,
                PlatformUser {
                    platform_user_id: user_id,
                    display_name: None,
                    username: None,
                    locale: None,
                    avatar_url: None,
                    email: None,
                    phone: None,
                },
                address,
                time(&s.timestamp, env.received_at),
                None,
                None,
                Some(Receipt {
                    platform_message_ids: vec![s.id.clone()],
                    watermark: None,
                    error,
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
    use patchbay_testkit::fixtures::meta_signature;

    fn envelopes(post: &Value) -> Vec<IngressEnvelope> {
        let body = serde_json::to_vec(post).unwrap();
        Whatsapp::split("ch_1", &body)
            .unwrap()
            .into_iter()
            .map(|s| IngressEnvelope {
                v: V1,
                id: patchbay_contract::ids::new_id("env"),
                platform: Platform::Whatsapp,
                channel_id: "ch_1".into(),
                bot_id: "bot_1".into(),
                received_at: Utc::now(),
                dedupe_key: s.dedupe_key,
                body: s.body,
                order_key: s.order_key,
            })
            .collect()
    }

    fn normalise(value: Value) -> Vec<InboundEvent> {
        let envs = envelopes(&fx::post(&[(fx::PHONE_NUMBER_ID, value)]));
        assert_eq!(envs.len(), 1);
        Whatsapp::normalise(&envs[0]).expect("normalises")
    }

    fn content(e: &InboundEvent) -> Content {
        e.message.as_ref().expect("a message").content.clone()
    }

    fn file(id: &str, caption: Option<&str>, mime: &str, filename: Option<&str>) -> Media {
        Media {
            url: None,
            file_id: Some(id.into()),
            caption: caption.map(Into::into),
            filename: filename.map(Into::into),
            mime_type: Some(mime.into()),
            media_id: None,
            download_url: None,
            preview_url: None,
            duration_ms: None,
            size_bytes: None,
        }
    }

    #[test]
    fn every_documented_update_normalises_as_the_table_says() {
        type Check = fn(&[InboundEvent]);
        let cases: Vec<(&str, Value, Check)> = vec![
            ("text", fx::from_user(fx::text("wamid.A", "hello")), |e| {
                assert_eq!(e[0].event_type, EventType::MessageReceived);
                assert_eq!(
                    content(&e[0]),
                    Content::Text {
                        text: "hello".into()
                    }
                );
                assert_eq!(e[0].sender.platform_user_id, fx::BSUID);
                assert_eq!(e[0].sender.display_name.as_deref(), Some("Ana"));
                assert_eq!(e[0].address, fx::WA_ID);
                assert_eq!(
                    e[0].message.as_ref().unwrap().platform_message_id,
                    "wamid.A"
                );
                assert_eq!(
                    e[0].occurred_at,
                    DateTime::from_timestamp(1767225600, 0).unwrap()
                );
            }),
            (
                "image",
                fx::from_user(fx::media("wamid.B", "image", "MEDIA_77", Some("receipt"))),
                |e| {
                    assert_eq!(
                        content(&e[0]),
                        Content::Image(file("MEDIA_77", Some("receipt"), "image/jpeg", None))
                    );
                },
            ),
            (
                "audio",
                fx::from_user(fx::media("wamid.C", "audio", "M1", None)),
                |e| {
                    assert_eq!(
                        content(&e[0]),
                        Content::Audio(file("M1", None, "image/jpeg", None))
                    );
                },
            ),
            (
                "video",
                fx::from_user(fx::media("wamid.D", "video", "M2", None)),
                |e| {
                    assert!(matches!(content(&e[0]), Content::Video(_)));
                },
            ),
            (
                "document",
                fx::from_user(fx::media("wamid.E", "document", "M3", None)),
                |e| {
                    assert_eq!(
                        content(&e[0]),
                        Content::File(file("M3", None, "application/pdf", Some("invoice.pdf")))
                    );
                },
            ),
            (
                "sticker",
                fx::from_user(fx::media("wamid.F", "sticker", "M4", None)),
                |e| {
                    assert_eq!(content(&e[0]), Content::Sticker { id: "M4".into() });
                },
            ),
            ("location", fx::from_user(fx::location("wamid.G")), |e| {
                assert_eq!(
                    content(&e[0]),
                    Content::Location(Location {
                        latitude: 38.7223,
                        longitude: -9.1393,
                        name: Some("Rossio".into()),
                        address: Some("Lisboa".into())
                    })
                );
            }),
            (
                "button reply",
                fx::from_user(fx::button_reply(
                    "wamid.H",
                    "wamid.OUT1",
                    "confirm",
                    "Confirm",
                )),
                |e| {
                    assert_eq!(
                        content(&e[0]),
                        Content::Postback {
                            payload: "confirm".into(),
                            title: Some("Confirm".into())
                        }
                    );
                },
            ),
            (
                "list reply",
                fx::from_user(fx::list_reply("wamid.I", "row_2", "Two")),
                |e| {
                    assert_eq!(
                        content(&e[0]),
                        Content::Postback {
                            payload: "row_2".into(),
                            title: Some("Two".into())
                        }
                    );
                },
            ),
            (
                "template button",
                fx::from_user(fx::template_button(
                    "wamid.J",
                    "STOP_PROMOS",
                    "Stop promotions",
                )),
                |e| {
                    assert_eq!(
                        content(&e[0]),
                        Content::Postback {
                            payload: "STOP_PROMOS".into(),
                            title: Some("Stop promotions".into())
                        }
                    );
                },
            ),
            (
                "ad referral",
                fx::from_user(fx::ad_referral("wamid.K", "Hi, I saw your ad")),
                |e| {
                    assert_eq!(e.len(), 2);
                    assert_eq!(e[0].event_type, EventType::UserSubscribed);
                    assert_eq!(e[0].referral.as_deref(), Some("ad_77"));
                    assert_eq!(e[1].event_type, EventType::MessageReceived);
                },
            ),
            (
                "user without a phone number",
                fx::from_username_only("wamid.L", "hi"),
                |e| {
                    assert_eq!(e[0].sender.platform_user_id, "US.998877");
                    assert_eq!(e[0].address, "US.998877");
                    assert_eq!(e[0].sender.username.as_deref(), Some("bea"));
                },
            ),
            (
                "reaction",
                fx::from_user(
                    json!({"from": fx::WA_ID, "id": "wamid.M", "timestamp": "1", "type": "reaction",
                "reaction": {"message_id": "wamid.OUT1", "emoji": "👍"}}),
                ),
                |e| assert!(e.is_empty()),
            ),
            ("delivered", fx::status("wamid.OUT1", "delivered"), |e| {
                assert_eq!(e[0].event_type, EventType::MessageDelivered);
                assert_eq!(
                    e[0].receipt.as_ref().unwrap().platform_message_ids,
                    vec!["wamid.OUT1"]
                );
                assert_eq!(e[0].sender.platform_user_id, fx::BSUID);
                assert_eq!(e[0].address, fx::WA_ID);
            }),
            ("read", fx::status("wamid.OUT1", "read"), |e| {
                assert_eq!(e[0].event_type, EventType::MessageRead)
            }),
            ("played", fx::status("wamid.OUT1", "played"), |e| {
                assert_eq!(e[0].event_type, EventType::MessageRead)
            }),
            ("sent", fx::status("wamid.OUT1", "sent"), |e| {
                assert!(e.is_empty())
            }),
            (
                "failed outside the window",
                fx::failed("wamid.OUT2", 131047, "Re-engagement message"),
                |e| {
                    assert_eq!(e[0].event_type, EventType::MessageFailed);
                    let err = e[0].receipt.as_ref().unwrap().error.clone().unwrap();
                    assert_eq!(
                        (err.code.as_str(), err.platform_code),
                        ("outside_window", Some(131047))
                    );
                    assert_eq!(
                        err.message,
                        "Re-engagement message (Message failed to send)"
                    );
                },
            ),
            (
                "failed undeliverable",
                fx::failed("wamid.OUT3", 131026, "Message undeliverable"),
                |e| {
                    let err = e[0].receipt.as_ref().unwrap().error.clone().unwrap();
                    assert_eq!(err.code, "user_unavailable");
                },
            ),
        ];
        for (name, value, check) in cases {
            let events = normalise(value);
            assert!(
                events
                    .iter()
                    .all(|e| e.channel.platform == Platform::Whatsapp),
                "{name}"
            );
            check(&events);
        }
    }

    #[test]
    fn one_post_for_several_numbers_splits_per_message_and_status() {
        let mut two = fx::from_user(fx::text("wamid.A", "a"));
        two["messages"]
            .as_array_mut()
            .unwrap()
            .push(fx::text("wamid.B", "b"));
        two["statuses"] = fx::status("wamid.OUT", "read")["statuses"].clone();
        let post = fx::post(&[
            (fx::PHONE_NUMBER_ID, two),
            ("106500000000002", fx::status("wamid.X", "delivered")),
        ]);
        let splits = Whatsapp::split("ch_1", &serde_json::to_vec(&post).unwrap()).unwrap();
        let got: Vec<_> = splits
            .iter()
            .map(|s| (s.dedupe_key.as_str(), s.route.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("whatsapp:ch_1:wamid.A", Some(fx::PHONE_NUMBER_ID)),
                ("whatsapp:ch_1:wamid.B", Some(fx::PHONE_NUMBER_ID)),
                ("whatsapp:ch_1:wamid.OUT:read", Some(fx::PHONE_NUMBER_ID)),
                ("whatsapp:ch_1:wamid.X:delivered", Some("106500000000002")),
            ]
        );
        assert_eq!(
            splits[1].body["entry"][0]["changes"][0]["value"]["contacts"][0]["wa_id"],
            fx::WA_ID
        );
        assert_eq!(splits[0].order_key.as_deref(), Some(fx::BSUID));
    }

    #[test]
    fn whatsapp_malformed_bodies_are_refused_and_unreadable_envelopes_are_errors() {
        assert!(matches!(
            Whatsapp::split("c", b"[]"),
            Err(Rejection::Malformed(_))
        ));
        assert!(matches!(
            Whatsapp::split("c", br#"{"object":"page","entry":[]}"#),
            Err(Rejection::Malformed(_))
        ));
        let no_meta = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {"messages": []}}]}]});
        assert!(matches!(
            Whatsapp::split("c", &serde_json::to_vec(&no_meta).unwrap()),
            Err(Rejection::Malformed(_))
        ));
        let other = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "message_template_status_update", "value": {}}]}]});
        assert_eq!(
            Whatsapp::split("c", &serde_json::to_vec(&other).unwrap()),
            Ok(vec![])
        );
        let mut env = envelopes(&fx::post(&[(
            fx::PHONE_NUMBER_ID,
            fx::from_user(fx::text("w", "x")),
        )]))
        .remove(0);
        env.body["entry"][0]["changes"][0]["value"]["messages"][0]["type"] = json!(7);
        assert!(Whatsapp::normalise(&env).is_err());
    }

    #[test]
    fn whatsapp_reads_its_app_secret_verify_token_and_phone_number_id() {
        let creds = WhatsappCredentials {
            phone_number_id: fx::PHONE_NUMBER_ID.into(),
            access_token: "EAAG".into(),
            app_secret: "wa-secret".into(),
            verify_token: "vt".into(),
        };
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            format!("sha256={}", meta_signature("wa-secret", body))
                .parse()
                .unwrap(),
        );
        assert!(Whatsapp::verify(&creds, &h, body).is_ok());
        let q: HashMap<String, String> = [
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "vt"),
            ("hub.challenge", "42"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        assert_eq!(Whatsapp::challenge(&creds, &q), Some(Ok("42".into())));
        assert_eq!(
            Whatsapp::route_id(&creds).as_deref(),
            Some(fx::PHONE_NUMBER_ID)
        );
    }
}
