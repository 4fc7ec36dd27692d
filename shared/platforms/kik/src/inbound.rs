//! Inbound Kik: the signature and bot-name checks, splitting and normalisation
//! (`reference/platforms.md` §5.1–§5.2).
//!
//! Kik posts `{"messages": [...]}` to the bot's webhook, signed with `X-Kik-Signature`: the hex
//! of HMAC-SHA1 over the raw body with the bot's API key (Kik sends uppercase; either case is
//! accepted, compared in constant time), and names the bot in `X-Kik-Username`, which must be
//! the channel's bot (Kik usernames are case-insensitive). Either check failing answers 401 and
//! publishes nothing (the reference says 403; Patchbay's ingresses answer every failed
//! authenticity check with 401). One POST may carry several messages: each becomes an
//! envelope `{"messages": [<message>]}` keyed by its `id` (`kik:<channel>:<id>`), ordered by its
//! `chatId`.
//!
//! | message `type` | event |
//! |---|---|
//! | `text` | `message.received`, text (`body`) |
//! | `text` with `metadata` (a tap on a suggested response Patchbay sent with a payload) | `message.received`, `postback` (payload: the metadata, as text when it is not a string; title: the body) |
//! | `link` | `message.received`, text: `title`, `text` and `url` on their own lines |
//! | `picture` | `message.received`, image (`picUrl`) |
//! | `video` | `message.received`, video (`videoUrl`) |
//! | `sticker` | `message.received`, sticker (id: `stickerUrl`, else `stickerPackId`) |
//! | `friend-picker` | `message.received`, `postback` (payload: the `picked` usernames joined by `,`) |
//! | `start-chatting` (the user opened the chat for the first time) | `user.subscribed` |
//! | `scan-data` (the user scanned the bot's Kik Code) | `user.subscribed`, `ref` the code's `data` |
//! | `delivery-receipt` | `message.delivered` for the bot's messages named in `messageIds` |
//! | `read-receipt` | `message.read` for the bot's messages named in `messageIds` |
//! | `is-typing`, anything else | none (counted, not an error) |
//!
//! Suggested-response taps arrive as ordinary text messages (the reference); a response sent
//! without metadata (a reply button, a quick reply without payload) is a plain text. Kik has
//! no unfollow event. `timestamp` is in milliseconds (captured live payloads); a value too
//! small to be milliseconds of this century (the SDK's tests use seconds) is read as seconds.
//! Messages in group chats are answered in the user's chat with the bot: the address is the
//! sender's username.
//!
//! Kik tells only the sender's username. The ingress looks up the name and picture with
//! `GET /v1/user/<username>` ([`crate::outbound::profile`], cached per process for a day, an
//! hour when Kik has none) before publishing, within `patchbay_platform::enrich::BUDGET`, and
//! adds them to the envelope as `patchbay_profile` (`display_name`, `avatar_url`).

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use patchbay_contract::content::Media;
use patchbay_contract::ids::{derive_id, prefix};
use patchbay_contract::{
    ChannelRef, Content, EventType, InboundEvent, InboundMessage, IngressEnvelope, Platform,
    PlatformUser, Receipt, V1,
};
use patchbay_platform::enrich::Context;
use patchbay_platform::{InboundAdapter, NormaliseError, Rejection, Split};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::KikCredentials;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-kik-signature";
/// The header naming the bot a POST is for.
pub const USERNAME_HEADER: &str = "x-kik-username";
/// The key under which the ingress adds the sender's profile to an envelope.
pub const PROFILE_FIELD: &str = "patchbay_profile";

/// The Kik adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kik;

/// The bytes of a hex string, in either letter case.
fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Rejection> {
    headers
        .get(name)
        .ok_or_else(|| Rejection::Unauthorized(format!("missing {name}")))?
        .to_str()
        .map_err(|_| Rejection::Unauthorized(format!("{name} is not ASCII")))
}

/// Checks `X-Kik-Signature`: the hex (either case) of HMAC-SHA1 of `body` with `api_key`,
/// compared in constant time.
pub fn verify_signature(api_key: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), Rejection> {
    let given = header(headers, SIGNATURE_HEADER)?;
    let refused = || Rejection::Unauthorized("X-Kik-Signature does not match the API key".into());
    let given = from_hex(given.trim()).ok_or_else(refused)?;
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(api_key.as_bytes())
        .map_err(|_| Rejection::Unauthorized("the API key cannot key HMAC-SHA1".into()))?;
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| refused())
}

/// Checks that `X-Kik-Username` names the channel's bot.
fn verify_username(creds: &KikCredentials, headers: &HeaderMap) -> Result<(), Rejection> {
    let named = header(headers, USERNAME_HEADER)?;
    if named.trim().eq_ignore_ascii_case(&creds.username) {
        Ok(())
    } else {
        Err(Rejection::Unauthorized(format!(
            "X-Kik-Username names {named:?}, not this channel's bot"
        )))
    }
}

#[derive(Debug, Deserialize)]
struct Post {
    messages: Vec<Value>,
    /// Added by the ingress ([`Kik::enrich`]), not by Kik.
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
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    pic_url: Option<String>,
    #[serde(default)]
    video_url: Option<String>,
    #[serde(default)]
    sticker_pack_id: Option<String>,
    #[serde(default)]
    sticker_url: Option<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    picked: Vec<String>,
    #[serde(default)]
    message_ids: Vec<String>,
}

/// Whether a message of `kind` is from a person whose profile is worth knowing (not a
/// receipt, not typing).
fn wants_profile(kind: &str) -> bool {
    matches!(
        kind,
        "text"
            | "link"
            | "picture"
            | "video"
            | "sticker"
            | "friend-picker"
            | "start-chatting"
            | "scan-data"
    )
}

/// Kik's `timestamp` as a time: milliseconds, or seconds when too small to be milliseconds
/// after 1973 (the SDK's own tests use seconds).
pub fn time(timestamp: i64) -> Option<DateTime<Utc>> {
    // `unsigned_abs`: `abs` of i64::MIN overflows (a panic in debug builds).
    if timestamp.unsigned_abs() < 100_000_000_000 {
        DateTime::from_timestamp(timestamp, 0)
    } else {
        DateTime::from_timestamp_millis(timestamp)
    }
}

/// A JSON value as text: strings as they are, anything else as JSON.
fn as_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn url_media(url: String) -> Media {
    Media {
        url: Some(url),
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

/// What a message says: an event type with its content, `ref` and receipt; `None` for
/// messages Patchbay does not model.
type Said = (EventType, Option<Content>, Option<String>, Option<Receipt>);

fn said(m: Message) -> Result<Option<Said>, NormaliseError> {
    let missing = |field: &str| NormaliseError(format!("a Kik {} message without {field}", m.kind));
    let received = |c: Content| Ok(Some((EventType::MessageReceived, Some(c), None, None)));
    let receipt = |event_type, ids: Vec<String>| {
        Ok((!ids.is_empty()).then(|| {
            let r = Receipt {
                platform_message_ids: ids,
                watermark: None,
                error: None,
            };
            (event_type, None, None, Some(r))
        }))
    };
    match m.kind.as_str() {
        "text" => {
            let body = m.body.clone().unwrap_or_default();
            match m.metadata.as_ref().filter(|v| !v.is_null()) {
                Some(meta) => received(Content::Postback {
                    payload: as_text(meta),
                    title: Some(body),
                }),
                None => received(Content::Text { text: body }),
            }
        }
        "link" => {
            let url = m.url.clone().ok_or_else(|| missing("url"))?;
            let text = [m.title.as_deref(), m.text.as_deref(), Some(url.as_str())]
                .into_iter()
                .flatten()
                .filter(|s| !s.trim().is_empty())
                .collect::<Vec<_>>()
                .join("\n");
            received(Content::Text { text })
        }
        "picture" => {
            let url = m.pic_url.clone().ok_or_else(|| missing("picUrl"))?;
            received(Content::Image(url_media(url)))
        }
        "video" => {
            let url = m.video_url.clone().ok_or_else(|| missing("videoUrl"))?;
            received(Content::Video(url_media(url)))
        }
        "sticker" => {
            let id = m
                .sticker_url
                .clone()
                .or_else(|| m.sticker_pack_id.clone())
                .ok_or_else(|| missing("stickerUrl"))?;
            received(Content::Sticker { id })
        }
        "friend-picker" => received(Content::Postback {
            payload: m.picked.join(","),
            title: None,
        }),
        "start-chatting" => Ok(Some((EventType::UserSubscribed, None, None, None))),
        "scan-data" => Ok(Some((
            EventType::UserSubscribed,
            None,
            m.data.as_ref().filter(|d| !d.is_null()).map(as_text),
            None,
        ))),
        "delivery-receipt" => receipt(EventType::MessageDelivered, m.message_ids),
        "read-receipt" => receipt(EventType::MessageRead, m.message_ids),
        _ => Ok(None),
    }
}

impl InboundAdapter for Kik {
    const PLATFORM: Platform = Platform::Kik;
    const SIGNATURE_HEADER: Option<&'static str> = Some(SIGNATURE_HEADER);
    type Credentials = KikCredentials;

    fn verify(creds: &KikCredentials, headers: &HeaderMap, body: &[u8]) -> Result<(), Rejection> {
        verify_signature(&creds.api_key, headers, body)?;
        verify_username(creds, headers)
    }

    fn split(channel_id: &str, body: &[u8]) -> Result<Vec<Split>, Rejection> {
        let post: Post = serde_json::from_slice(body)
            .map_err(|e| Rejection::Malformed(format!("not a Kik webhook: {e}")))?;
        post.messages
            .into_iter()
            .map(|m| {
                let id = m
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| Rejection::Malformed("a Kik message without an id".into()))?
                    .to_owned();
                let order_key = m.get("chatId").and_then(Value::as_str).map(str::to_owned);
                Ok(Split {
                    dedupe_key: format!("kik:{channel_id}:{id}"),
                    body: json!({ "messages": [m] }),
                    order_key,
                    route: None,
                })
            })
            .collect()
    }

    fn normalise(env: &IngressEnvelope) -> Result<Vec<InboundEvent>, NormaliseError> {
        let post: Post = serde_json::from_value(env.body.clone())
            .map_err(|e| NormaliseError(format!("not a Kik webhook: {e}")))?;
        let raw = post
            .messages
            .into_iter()
            .next()
            .ok_or_else(|| NormaliseError("the envelope holds no Kik message".into()))?;
        let m: Message = serde_json::from_value(raw)
            .map_err(|e| NormaliseError(format!("not a Kik message: {e}")))?;
        let id = m.id.clone();
        let from = m.from.clone();
        let occurred_at = m
            .timestamp
            .as_ref()
            .and_then(Value::as_i64)
            .and_then(time)
            .unwrap_or(env.received_at);
        let Some((event_type, content, referral, receipt)) = said(m)? else {
            return Ok(vec![]);
        };
        let from = from
            .filter(|f| !f.is_empty())
            .ok_or_else(|| NormaliseError("a Kik message without from".into()))?;
        let profile = post.patchbay_profile.unwrap_or_default();
        Ok(vec![InboundEvent {
            v: V1,
            id: derive_id(prefix::EVENT, &env.id, 0),
            event_type,
            bot_id: env.bot_id.clone(),
            channel: ChannelRef {
                id: env.channel_id.clone(),
                platform: Platform::Kik,
            },
            occurred_at,
            sender: PlatformUser {
                platform_user_id: from.clone(),
                display_name: profile.display_name,
                username: Some(from.clone()),
                locale: None,
                avatar_url: profile.avatar_url,
                email: None,
                phone: None,
            },
            address: from,
            chat: None,
            dedupe_key: format!("{}:0", env.dedupe_key),
            message: content.map(|content| InboundMessage {
                platform_message_id: id,
                content,
            }),
            referral,
            resubscribed: false,
            receipt,
        }])
    }

    fn api_base_url(config: &patchbay_config::Config) -> Option<String> {
        Some(config.kik_api_base_url.clone())
    }

    async fn enrich(ctx: Context<'_, KikCredentials>, splits: &mut [Split]) {
        let sender = |s: &Split| -> Option<String> {
            let m = s.body.pointer("/messages/0")?;
            let kind = m.get("type").and_then(Value::as_str)?;
            wants_profile(kind)
                .then(|| m.get("from").and_then(Value::as_str).map(str::to_owned))
                .flatten()
                .filter(|f| !f.is_empty())
        };
        let mut wanted: Vec<String> = splits.iter().filter_map(sender).collect();
        wanted.sort();
        wanted.dedup();
        let key = |user: &str| format!("{}:{user}", ctx.channel_id);
        let lookups = wanted
            .iter()
            .filter(|user| ctx.cache.get(&key(user)).is_none())
            .map(|user| async {
                let found = tokio::time::timeout(
                    patchbay_platform::enrich::BUDGET,
                    crate::outbound::profile(ctx.http, ctx.base_url, ctx.creds, user),
                )
                .await;
                // A timeout is not remembered: the next message tries again.
                if let Ok(found) = found {
                    let value = found.map(
                        |u| json!({"display_name": u.display_name, "avatar_url": u.avatar_url}),
                    );
                    ctx.cache.put(key(user), value);
                }
            });
        futures::future::join_all(lookups).await;
        for s in splits.iter_mut() {
            let Some(user) = sender(s) else { continue };
            if let Some(Some(profile)) = ctx.cache.get(&key(&user)) {
                s.body[PROFILE_FIELD] = profile;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures as fx;
    use serde_json::json;

    fn creds() -> KikCredentials {
        KikCredentials {
            username: fx::BOT.into(),
            api_key: fx::API_KEY.into(),
        }
    }

    fn headers(signature: &str, username: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, signature.parse().unwrap());
        h.insert(USERNAME_HEADER, username.parse().unwrap());
        h
    }

    fn envelopes(post: &Value) -> Vec<IngressEnvelope> {
        let body = serde_json::to_vec(post).unwrap();
        Kik::split("ch_1", &body)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, s)| IngressEnvelope {
                v: V1,
                id: format!("env_01JH0000000000000000000{i:03}"),
                platform: Platform::Kik,
                channel_id: "ch_1".into(),
                bot_id: "bot_1".into(),
                received_at: Utc::now(),
                dedupe_key: s.dedupe_key,
                body: s.body,
                order_key: s.order_key,
            })
            .collect()
    }

    fn normalise(message: Value) -> Vec<InboundEvent> {
        let envs = envelopes(&fx::post(vec![message]));
        assert_eq!(envs.len(), 1);
        Kik::normalise(&envs[0]).expect("normalises")
    }

    fn media(url: &str) -> Media {
        url_media(url.into())
    }

    #[test]
    fn every_message_type_normalises_as_the_table_says() {
        let u = fx::USER;
        let postback = |payload: &str, title: Option<&str>| Content::Postback {
            payload: payload.into(),
            title: title.map(str::to_owned),
        };
        let text = |t: &str| Content::Text { text: t.into() };
        type Case = (
            Value,
            Option<(EventType, Option<Content>, Option<&'static str>)>,
        );
        let cases: Vec<Case> = vec![
            (
                fx::text("m1", u, "hello"),
                Some((EventType::MessageReceived, Some(text("hello")), None)),
            ),
            (
                fx::suggested_tap("m2", u, "Green", json!("COLOR_GREEN")),
                Some((
                    EventType::MessageReceived,
                    Some(postback("COLOR_GREEN", Some("Green"))),
                    None,
                )),
            ),
            (
                fx::suggested_tap("m3", u, "Buy", json!({"sku": 7})),
                Some((
                    EventType::MessageReceived,
                    Some(postback(r#"{"sku":7}"#, Some("Buy"))),
                    None,
                )),
            ),
            (
                fx::link("m4", u, "https://example.com/a", "A page", "Read this"),
                Some((
                    EventType::MessageReceived,
                    Some(text("A page\nRead this\nhttps://example.com/a")),
                    None,
                )),
            ),
            (
                fx::picture("m5", u, "https://cdn.kik.example/p.jpg"),
                Some((
                    EventType::MessageReceived,
                    Some(Content::Image(media("https://cdn.kik.example/p.jpg"))),
                    None,
                )),
            ),
            (
                fx::video("m6", u, "https://cdn.kik.example/v.mp4"),
                Some((
                    EventType::MessageReceived,
                    Some(Content::Video(media("https://cdn.kik.example/v.mp4"))),
                    None,
                )),
            ),
            (
                fx::sticker(
                    "m7",
                    u,
                    "memes",
                    "https://stickers.kik.example/memes/okay.png",
                ),
                Some((
                    EventType::MessageReceived,
                    Some(Content::Sticker {
                        id: "https://stickers.kik.example/memes/okay.png".into(),
                    }),
                    None,
                )),
            ),
            (
                fx::friend_picker("m8", u, &["bob", "cleo"]),
                Some((
                    EventType::MessageReceived,
                    Some(postback("bob,cleo", None)),
                    None,
                )),
            ),
            (
                fx::start_chatting("m9", u),
                Some((EventType::UserSubscribed, None, None)),
            ),
            (
                fx::scan_data("m10", u, "poster-7"),
                Some((EventType::UserSubscribed, None, Some("poster-7"))),
            ),
            (
                fx::delivery_receipt("m11", u, &["out-1", "out-2"]),
                Some((EventType::MessageDelivered, None, None)),
            ),
            (
                fx::read_receipt("m12", u, &["out-1"]),
                Some((EventType::MessageRead, None, None)),
            ),
            (fx::is_typing("m13", u, true), None),
            (fx::unknown("m14", u), None),
        ];
        for (message, expected) in cases {
            let id = message["id"].as_str().unwrap().to_owned();
            let events = normalise(message.clone());
            let Some((event_type, content, referral)) = expected else {
                assert!(events.is_empty(), "{message}: {events:?}");
                continue;
            };
            assert_eq!(events.len(), 1, "{message}");
            let e = &events[0];
            assert_eq!(e.event_type, event_type, "{message}");
            assert_eq!(
                e.message.as_ref().map(|m| m.content.clone()),
                content,
                "{message}"
            );
            if let Some(m) = &e.message {
                assert_eq!(m.platform_message_id, id);
            }
            assert_eq!(e.referral.as_deref(), referral, "{message}");
            assert_eq!(e.sender.platform_user_id, u);
            assert_eq!(e.sender.username.as_deref(), Some(u));
            assert_eq!(e.address, u);
            assert_eq!(e.channel.platform, Platform::Kik);
            assert_eq!(e.bot_id, "bot_1");
            assert_eq!(
                e.occurred_at,
                DateTime::from_timestamp_millis(fx::TIME).unwrap()
            );
            assert_eq!(e.dedupe_key, format!("kik:ch_1:{id}:0"));
        }
    }

    #[test]
    fn receipts_name_the_bots_messages() {
        let delivered = normalise(fx::delivery_receipt("r1", fx::USER, &["out-1", "out-2"]));
        let r = delivered[0].receipt.as_ref().unwrap();
        assert_eq!(r.platform_message_ids, ["out-1", "out-2"]);
        assert_eq!((r.watermark, r.error.as_ref()), (None, None));
        let read = normalise(fx::read_receipt("r2", fx::USER, &["out-3"]));
        assert_eq!(
            read[0].receipt.as_ref().unwrap().platform_message_ids,
            ["out-3"]
        );
        assert!(
            normalise(fx::read_receipt("r3", fx::USER, &[])).is_empty(),
            "a receipt naming nothing"
        );
    }

    #[test]
    fn timestamps_are_milliseconds_and_seconds_are_recognised() {
        let ms = normalise(fx::at(fx::text("t1", fx::USER, "a"), 1_458_336_131_000));
        let s = normalise(fx::at(fx::text("t2", fx::USER, "a"), 1_458_336_131));
        let expected = DateTime::from_timestamp(1_458_336_131, 0).unwrap();
        assert_eq!((ms[0].occurred_at, s[0].occurred_at), (expected, expected));
    }

    #[test]
    fn a_post_splits_into_one_envelope_per_message_in_order() {
        let post = fx::post(vec![
            fx::text("a-1", fx::USER, "one"),
            fx::text("a-2", "bob", "two"),
            fx::start_chatting("a-3", "cleo"),
        ]);
        let splits = Kik::split("ch_9", &serde_json::to_vec(&post).unwrap()).unwrap();
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
                ("kik:ch_9:a-1", Some(fx::CHAT_ID), None),
                ("kik:ch_9:a-2", Some(fx::CHAT_ID), None),
                ("kik:ch_9:a-3", Some(fx::CHAT_ID), None),
            ]
        );
        for (s, m) in splits.iter().zip(post["messages"].as_array().unwrap()) {
            assert_eq!(
                s.body,
                json!({"messages": [m]}),
                "the smallest documented shape"
            );
        }
    }

    #[test]
    fn malformed_posts_are_refused_and_unreadable_envelopes_are_errors() {
        for body in [
            &b"{nope"[..],
            br#"{"message": []}"#,
            br#"{"messages": [{"type": "text", "body": "no id"}]}"#,
            br#"{"messages": [{"type": "text", "id": ""}]}"#,
        ] {
            assert!(
                matches!(Kik::split("c", body), Err(Rejection::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let mut env =
            envelopes(&fx::post(vec![fx::picture("p", fx::USER, "https://x/p")])).remove(0);
        env.body["messages"][0]
            .as_object_mut()
            .unwrap()
            .remove("picUrl");
        assert!(Kik::normalise(&env).is_err(), "a picture without picUrl");
        let mut env = envelopes(&fx::post(vec![fx::text("t", fx::USER, "x")])).remove(0);
        env.body["messages"][0]
            .as_object_mut()
            .unwrap()
            .remove("from");
        assert!(Kik::normalise(&env).is_err(), "a message without from");
    }

    #[test]
    fn the_signature_is_checked_in_either_case_and_the_username_must_be_the_bots() {
        let body = serde_json::to_vec(&fx::post(vec![fx::text("s1", fx::USER, "hi")])).unwrap();
        let upper = fx::signature(fx::API_KEY, &body);
        let lower = upper.to_ascii_lowercase();
        assert_ne!(upper, lower);
        for sig in [&upper, &lower] {
            assert_eq!(Kik::verify(&creds(), &headers(sig, fx::BOT), &body), Ok(()));
        }
        assert_eq!(
            Kik::verify(
                &creds(),
                &headers(&upper, &fx::BOT.to_ascii_uppercase()),
                &body
            ),
            Ok(()),
            "Kik usernames are case-insensitive"
        );
        let refused = |h: HeaderMap, body: &[u8]| {
            matches!(
                Kik::verify(&creds(), &h, body),
                Err(Rejection::Unauthorized(_))
            )
        };
        let other_key = fx::signature("another-key", &body);
        let mut tampered = body.clone();
        tampered.push(b' ');
        assert!(refused(headers(&other_key, fx::BOT), &body));
        assert!(refused(headers(&upper, fx::BOT), &tampered));
        assert!(refused(headers(&upper[..38], fx::BOT), &body), "truncated");
        assert!(refused(headers("zz", fx::BOT), &body), "not hex");
        assert!(refused(headers(&upper, "another.bot"), &body));
        let mut no_username = headers(&upper, fx::BOT);
        no_username.remove(USERNAME_HEADER);
        assert!(refused(no_username, &body));
        let mut unsigned = headers(&upper, fx::BOT);
        unsigned.remove(SIGNATURE_HEADER);
        assert!(refused(unsigned, &body));
    }

    #[tokio::test]
    async fn enrichment_adds_profiles_and_remembers_missing_ones() {
        let kik = patchbay_testkit::kik::FakeKik::start().await;
        kik.add_bot(fx::BOT, fx::API_KEY);
        for user in [fx::USER, "bob"] {
            kik.add_user(fx::BOT, user);
        }
        kik.set_profile(
            fx::USER,
            json!({"firstName": "Ana", "lastName": "Lima",
                   "profilePicUrl": "https://cdn.kik.example/ana.jpg"}),
        );
        let http = patchbay_platform::http::client_builder(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        let cache = patchbay_platform::enrich::Cache::default();
        let base = kik.base_url();
        let body = serde_json::to_vec(&fx::post(vec![
            fx::text("e1", fx::USER, "a"),
            fx::text("e2", "bob", "b"),
            fx::read_receipt("e3", fx::USER, &["x"]),
        ]))
        .unwrap();
        for _ in 0..2 {
            let mut splits = Kik::split("ch_1", &body).unwrap();
            let creds = creds();
            let ctx = Context {
                http: &http,
                creds: &creds,
                base_url: &base,
                channel_id: "ch_1",
                cache: &cache,
                bus: None,
            };
            Kik::enrich(ctx, &mut splits).await;
            assert_eq!(
                splits[0].body[PROFILE_FIELD],
                json!({"display_name": "Ana Lima", "avatar_url": "https://cdn.kik.example/ana.jpg"})
            );
            assert!(
                splits[1].body.get(PROFILE_FIELD).is_none(),
                "Kik had no name"
            );
            assert!(
                splits[2].body.get(PROFILE_FIELD).is_none(),
                "receipts need none"
            );
        }
        let lookups: Vec<_> = kik
            .calls_to("/v1/user/")
            .into_iter()
            .map(|c| (c.path, c.username))
            .collect();
        assert_eq!(
            lookups,
            [
                (format!("/v1/user/{}", fx::USER), Some(fx::BOT.to_owned())),
                ("/v1/user/bob".to_owned(), Some(fx::BOT.to_owned())),
            ],
            "one lookup per user, found or not, with the bot's credentials"
        );
        let env = IngressEnvelope {
            v: V1,
            id: "env_01JH0000000000000000000001".into(),
            platform: Platform::Kik,
            channel_id: "ch_1".into(),
            bot_id: "bot_1".into(),
            received_at: Utc::now(),
            dedupe_key: "kik:ch_1:e1".into(),
            body: {
                let mut splits = Kik::split("ch_1", &body).unwrap();
                let creds = creds();
                let ctx = Context {
                    http: &http,
                    creds: &creds,
                    base_url: &base,
                    channel_id: "ch_1",
                    cache: &cache,
                    bus: None,
                };
                Kik::enrich(ctx, &mut splits).await;
                splits.remove(0).body
            },
            order_key: None,
        };
        let e = Kik::normalise(&env).unwrap();
        assert_eq!(e[0].sender.display_name.as_deref(), Some("Ana Lima"));
        assert_eq!(
            e[0].sender.avatar_url.as_deref(),
            Some("https://cdn.kik.example/ana.jpg")
        );
    }
}
