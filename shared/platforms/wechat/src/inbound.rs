//! Inbound WeChat: the `echostr` handshake, the signature of every POST (and safe mode's
//! `msg_signature` and decryption), splitting and normalisation.
//!
//! Every webhook carries `signature` = SHA-1 of the sorted Token, `timestamp` and `nonce` in
//! its query. In the safe and compatible modes (`encrypt_type=aes`) the message is the
//! `Encrypt` element, signed by `msg_signature` and decrypted with the EncodingAESKey; the
//! decrypted XML is what is published (in the compatible mode it replaces the plaintext copy).
//! One webhook is one message or event; its envelope body is the XML's fields as a JSON object
//! of strings. WeChat retries an unanswered webhook twice within 15 seconds: the envelope is
//! keyed by `MsgId` for messages and by `FromUserName`, `CreateTime` and `Event` for events, so
//! the retries collapse.
//!
//! | webhook | event |
//! |---|---|
//! | `text` | `message.received`, text |
//! | `text` with `bizmsgmenuid` (a tap on an in-chat menu) | `message.received`, `postback` (payload: the item id, title: its label) |
//! | `image` | `message.received`, image (`PicUrl`, `MediaId` as file id) |
//! | `voice` | `message.received`, voice (`MediaId`; the caption is WeChat's speech recognition, when present) |
//! | `video`, `shortvideo` | `message.received`, video |
//! | `location` | `message.received`, location (`Label` as name) |
//! | `link` | `message.received`, text: title, description and URL on their own lines |
//! | event `CLICK` / `VIEW` (menu) | `message.received`, `postback` (payload: the menu key / URL) |
//! | event `subscribe` | `user.subscribed` (`qrscene_<scene>` → `ref` `<scene>`) |
//! | event `SCAN` (a follower scans a parametrised QR code) | `user.subscribed` with the scene as `ref` |
//! | event `unsubscribe` | `user.unsubscribed` |
//! | event `TEMPLATESENDJOBFINISH` | `message.delivered` (`success`) or `message.failed` (`blocked` for `failed:user block`, else `platform_error`) for the template message whose `msgid` the sender reported |
//! | anything else (location reports, scan-code pushes, …) | none (counted, not an error) |
//!
//! WeChat no longer tells Official Accounts a user's nickname or avatar (since late December
//! 2021): events carry the OpenID, and the user's language, which the ingress looks up with
//! `user/info` for followers ([`LOCALE_FIELD`]); nothing else is invented.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use patchbay_contract::content::{Location, Media};
use patchbay_contract::ids::{derive_id, prefix};
use patchbay_contract::{
    ChannelRef, Content, DeliveryError, EventType, InboundEvent, InboundMessage, IngressEnvelope,
    Platform, PlatformUser, Receipt, V1,
};
use patchbay_platform::{InboundAdapter, NormaliseError, Rejection, Split};

use crate::WechatCredentials;
use crate::crypto;

/// The WeChat adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wechat;

/// The envelope field the ingress adds with the user's language (`user/info`).
pub const LOCALE_FIELD: &str = "patchbay_locale";

/// The user-profile lookups of this process, per installation (subject prefix): a sender
/// that shares the installation's access tokens.
async fn profiles(
    bus: &patchbay_bus::Bus,
) -> Option<std::sync::Arc<crate::WechatSender<crate::tokens::SharedTokens>>> {
    type Profiles = std::sync::Arc<crate::WechatSender<crate::tokens::SharedTokens>>;
    static BY_PREFIX: std::sync::Mutex<BTreeMap<String, Profiles>> =
        std::sync::Mutex::new(BTreeMap::new());
    let prefix = bus.subjects().prefix().to_owned();
    if let Some(p) = BY_PREFIX
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&prefix)
    {
        return Some(p.clone());
    }
    let bucket = bus
        .subjects()
        .bucket(patchbay_contract::subjects::Bucket::Tokens);
    let kv = bus.jetstream().get_key_value(bucket).await.ok()?;
    let timeout = patchbay_platform::enrich::BUDGET;
    let tokens = crate::tokens::SharedTokens::new(kv, timeout)
        .ok()?
        .sealed_with(bus.master_key().cloned());
    let limits = patchbay_platform::Limits {
        per_channel_per_second: 1,
        per_conversation_per_second: 1,
        per_conversation_burst: 1,
    };
    let sender = std::sync::Arc::new(
        crate::WechatSender::new(crate::outbound::DEFAULT_BASE_URL, timeout, limits, tokens)
            .ok()?,
    );
    BY_PREFIX
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(prefix, sender.clone());
    Some(sender)
}

/// The fields of a `<xml>` document: child element name → text (CDATA included).
pub fn fields(xml: &str) -> Result<BTreeMap<String, String>, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "xml" {
        return Err(format!(
            "the document is <{}>, not <xml>",
            root.tag_name().name()
        ));
    }
    Ok(root
        .children()
        .filter(roxmltree::Node::is_element)
        .map(|n| {
            (
                n.tag_name().name().to_owned(),
                n.text().unwrap_or_default().trim().to_owned(),
            )
        })
        .collect())
}

fn param<'a>(query: &'a HashMap<String, String>, name: &str) -> Result<&'a str, Rejection> {
    query
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| Rejection::Unauthorized(format!("the query has no {name}")))
}

/// Checks `signature` over the Token, `timestamp` and `nonce` of `query`.
fn check_signature(
    creds: &WechatCredentials,
    query: &HashMap<String, String>,
) -> Result<(), Rejection> {
    let (timestamp, nonce) = (param(query, "timestamp")?, param(query, "nonce")?);
    if crypto::signature_matches(
        param(query, "signature")?,
        &[&creds.token, timestamp, nonce],
    ) {
        Ok(())
    } else {
        Err(Rejection::Unauthorized("signature does not match".into()))
    }
}

impl InboundAdapter for Wechat {
    const PLATFORM: Platform = Platform::Wechat;
    type Credentials = WechatCredentials;
    /// WeChat then neither retries nor shows the user anything.
    const ACCEPTED: &'static str = "success";

    /// Unused: WeChat signs the query string, which [`Wechat::open`] checks.
    fn verify(_: &WechatCredentials, _: &HeaderMap, _: &[u8]) -> Result<(), Rejection> {
        Err(Rejection::Unauthorized(
            "WeChat webhooks are checked with their query".into(),
        ))
    }

    fn open<'a>(
        creds: &WechatCredentials,
        _headers: &HeaderMap,
        query: &HashMap<String, String>,
        body: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, Rejection> {
        check_signature(creds, query)?;
        if query.get("encrypt_type").map(String::as_str) != Some("aes") {
            return Ok(Cow::Borrowed(body));
        }
        let key = creds.aes_key().ok_or_else(|| {
            Rejection::Unauthorized(
                "an encrypted message, but the channel has no encoding_aes_key".into(),
            )
        })?;
        let text = std::str::from_utf8(body)
            .map_err(|_| Rejection::Malformed("the body is not UTF-8".into()))?;
        let outer = fields(text).map_err(Rejection::Malformed)?;
        let encrypt = outer.get("Encrypt").ok_or_else(|| {
            Rejection::Malformed("encrypt_type=aes, but no Encrypt element".into())
        })?;
        let (timestamp, nonce) = (param(query, "timestamp")?, param(query, "nonce")?);
        if !crypto::signature_matches(
            param(query, "msg_signature")?,
            &[&creds.token, timestamp, nonce, encrypt],
        ) {
            return Err(Rejection::Unauthorized(
                "msg_signature does not match".into(),
            ));
        }
        let xml = crypto::decrypt(&key, &creds.app_id, encrypt)
            .map_err(|e| Rejection::Unauthorized(format!("cannot decrypt: {e}")))?;
        Ok(Cow::Owned(xml.into_bytes()))
    }

    fn split(channel_id: &str, body: &[u8]) -> Result<Vec<Split>, Rejection> {
        let text = std::str::from_utf8(body)
            .map_err(|_| Rejection::Malformed("the body is not UTF-8".into()))?;
        let f = fields(text).map_err(Rejection::Malformed)?;
        if f.contains_key("Encrypt") && !f.contains_key("MsgType") {
            return Err(Rejection::Malformed(
                "an encrypted message without encrypt_type=aes".into(),
            ));
        }
        let get = |name: &str| {
            f.get(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Rejection::Malformed(format!("no {name}")))
        };
        let (from, create_time, msg_type) =
            (get("FromUserName")?, get("CreateTime")?, get("MsgType")?);
        let id = match f.get("MsgId").filter(|v| !v.is_empty()) {
            Some(msg_id) => msg_id.clone(),
            None if msg_type == "event" => {
                format!("{from}:{create_time}:{}", get("Event")?)
            }
            None => return Err(Rejection::Malformed("a message without MsgId".into())),
        };
        Ok(vec![Split {
            dedupe_key: format!("wechat:{channel_id}:{id}"),
            body: serde_json::to_value(&f).map_err(|e| Rejection::Malformed(e.to_string()))?,
            order_key: Some(from.clone()),
            route: None,
        }])
    }

    fn normalise(env: &IngressEnvelope) -> Result<Vec<InboundEvent>, NormaliseError> {
        let f: BTreeMap<String, String> = serde_json::from_value(env.body.clone())
            .map_err(|e| NormaliseError(format!("not a WeChat message's fields: {e}")))?;
        let get = |name: &str| f.get(name).map(String::as_str).filter(|v| !v.is_empty());
        let need = |name: &str| {
            get(name).ok_or_else(|| NormaliseError(format!("a WeChat message without {name}")))
        };
        let from = need("FromUserName")?;
        let create_time: i64 = need("CreateTime")?
            .parse()
            .map_err(|_| NormaliseError("CreateTime is not a number".into()))?;
        let occurred_at = DateTime::from_timestamp(create_time, 0).unwrap_or_else(Utc::now);
        let msg_id =
            get("MsgId").map_or_else(|| format!("evt:{from}:{create_time}"), str::to_owned);
        let event = |event_type, message: Option<Content>, referral, receipt| InboundEvent {
            v: V1,
            id: derive_id(prefix::EVENT, &env.id, 0),
            event_type,
            bot_id: env.bot_id.clone(),
            channel: ChannelRef {
                id: env.channel_id.clone(),
                platform: Platform::Wechat,
            },
            occurred_at,
            sender: PlatformUser {
                platform_user_id: from.to_owned(),
                display_name: None,
                username: None,
                locale: get(LOCALE_FIELD).map(str::to_owned),
                avatar_url: None,
                email: None,
                phone: None,
            },
            address: from.to_owned(),
            chat: None,
            dedupe_key: format!("{}:0", env.dedupe_key),
            message: message.map(|content| InboundMessage {
                platform_message_id: msg_id.clone(),
                content,
            }),
            referral,
            resubscribed: false,
            receipt,
        };
        let received = |content| {
            Ok(vec![event(
                EventType::MessageReceived,
                Some(content),
                None,
                None,
            )])
        };
        let media = |url: Option<&str>, file_id: Option<&str>, caption: Option<&str>| Media {
            url: url.map(str::to_owned),
            file_id: file_id.map(str::to_owned),
            caption: caption.map(str::to_owned),
            filename: None,
            mime_type: None,
            media_id: None,
            download_url: None,
            preview_url: None,
            duration_ms: None,
            size_bytes: None,
        };
        match need("MsgType")? {
            "text" => match get("bizmsgmenuid") {
                Some(item) => received(Content::Postback {
                    payload: item.to_owned(),
                    title: get("Content").map(str::to_owned),
                }),
                None => received(Content::Text {
                    text: get("Content").unwrap_or_default().to_owned(),
                }),
            },
            "image" => received(Content::Image(media(get("PicUrl"), get("MediaId"), None))),
            "voice" => {
                let mut voice = media(None, get("MediaId"), get("Recognition"));
                voice.mime_type = get("Format").map(|f| format!("audio/{}", f.to_lowercase()));
                received(Content::Voice(voice))
            }
            "video" | "shortvideo" => received(Content::Video(media(None, get("MediaId"), None))),
            "location" => {
                // `parse` also takes `NaN`, `inf` and `1e999`, which JSON cannot carry.
                let coordinate = |name: &str| -> Result<f64, NormaliseError> {
                    need(name)?
                        .parse()
                        .ok()
                        .filter(|v: &f64| v.is_finite())
                        .ok_or_else(|| NormaliseError(format!("{name} is not a number")))
                };
                received(Content::Location(Location {
                    latitude: coordinate("Location_X")?,
                    longitude: coordinate("Location_Y")?,
                    name: get("Label").map(str::to_owned),
                    address: None,
                }))
            }
            "link" => {
                let text = [get("Title"), get("Description"), get("Url")]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("\n");
                received(Content::Text { text })
            }
            "event" => match need("Event")? {
                "subscribe" => Ok(vec![event(
                    EventType::UserSubscribed,
                    None,
                    get("EventKey")
                        .and_then(|k| k.strip_prefix("qrscene_"))
                        .map(str::to_owned),
                    None,
                )]),
                "SCAN" => Ok(vec![event(
                    EventType::UserSubscribed,
                    None,
                    get("EventKey").map(str::to_owned),
                    None,
                )]),
                "unsubscribe" => Ok(vec![event(EventType::UserUnsubscribed, None, None, None)]),
                "CLICK" | "VIEW" => received(Content::Postback {
                    payload: need("EventKey")?.to_owned(),
                    title: None,
                }),
                "TEMPLATESENDJOBFINISH" => {
                    let status = need("Status")?;
                    let (event_type, error) = match status {
                        "success" => (EventType::MessageDelivered, None),
                        s if s.contains("user block") => (
                            EventType::MessageFailed,
                            Some(DeliveryError {
                                code: "blocked".into(),
                                message: format!(
                                    "WeChat: the user blocked template messages ({s})"
                                ),
                                platform_code: None,
                            }),
                        ),
                        s => (
                            EventType::MessageFailed,
                            Some(DeliveryError {
                                code: "platform_error".into(),
                                message: format!(
                                    "WeChat could not deliver the template message ({s})"
                                ),
                                platform_code: None,
                            }),
                        ),
                    };
                    Ok(vec![event(
                        event_type,
                        None,
                        None,
                        Some(Receipt {
                            platform_message_ids: vec![need("MsgID")?.to_owned()],
                            watermark: None,
                            error,
                        }),
                    )])
                }
                _ => Ok(vec![]),
            },
            _ => Ok(vec![]),
        }
    }

    fn api_base_url(config: &patchbay_config::Config) -> Option<String> {
        Some(config.wechat_api_base_url.clone())
    }

    /// The user's language from `user/info` (followers only: WeChat tells nothing of others,
    /// and no longer tells anyone's nickname or avatar), with the installation's shared access
    /// token. Added to the envelope as [`LOCALE_FIELD`].
    async fn enrich(
        ctx: patchbay_platform::enrich::Context<'_, WechatCredentials>,
        splits: &mut [Split],
    ) {
        let Some(bus) = ctx.bus else { return };
        let Some(profiles) = profiles(bus).await else {
            return;
        };
        let key = |openid: &str| format!("{}:{openid}", ctx.channel_id);
        let mut wanted: Vec<String> = splits
            .iter()
            .filter(|s| {
                s.body.get("MsgType").and_then(|t| t.as_str()) != Some("event")
                    || matches!(
                        s.body.get("Event").and_then(|e| e.as_str()),
                        Some("subscribe" | "SCAN" | "CLICK" | "VIEW")
                    )
            })
            .filter_map(|s| s.order_key.clone())
            .filter(|openid| ctx.cache.get(&key(openid)).is_none())
            .collect();
        wanted.sort();
        wanted.dedup();
        let lookups = wanted.iter().map(|openid| {
            // In a task of its own: the ingress stops waiting after its budget, but a lookup
            // that claimed the shared token's refresh must finish it, or every replica would
            // wait for the claim to lapse (and a token WeChat issued would be lost).
            let (profiles, creds, base_url, user) = (
                profiles.clone(),
                ctx.creds.clone(),
                ctx.base_url.to_owned(),
                openid.clone(),
            );
            let lookup =
                tokio::spawn(async move { profiles.profile(&creds, &base_url, &user).await });
            async move {
                // An error is not remembered: the next message tries again.
                if let Ok(Ok(found)) = lookup.await {
                    let locale = found.and_then(|p| p.language);
                    ctx.cache
                        .put(key(openid), locale.map(serde_json::Value::String));
                }
            }
        });
        futures::future::join_all(lookups).await;
        for s in splits.iter_mut() {
            let Some(openid) = &s.order_key else { continue };
            if let Some(Some(locale)) = ctx.cache.get(&key(openid)) {
                s.body[LOCALE_FIELD] = locale;
            }
        }
    }

    /// Accounts without the customer-service API answer inline: the ingress waits for the
    /// bot's reply within WeChat's five seconds.
    fn passive_wait(creds: &WechatCredentials) -> Option<std::time::Duration> {
        (!creds.customer_service_api).then_some(crate::passive::WAIT)
    }

    /// The passive-reply XML, encrypted (`<Encrypt>`, `<MsgSignature>`, …) when the webhook
    /// came in the safe or compatible mode.
    fn passive_response(
        creds: &WechatCredentials,
        query: &HashMap<String, String>,
        split: &serde_json::Value,
        reply: &Content,
    ) -> Result<String, Rejection> {
        let field = |name: &str| {
            split[name]
                .as_str()
                .ok_or_else(|| Rejection::Malformed(format!("the message has no {name}")))
        };
        let now = Utc::now().timestamp();
        let xml = crate::passive::render(field("FromUserName")?, field("ToUserName")?, now, reply)
            .map_err(Rejection::Malformed)?;
        if query.get("encrypt_type").map(String::as_str) != Some("aes") {
            return Ok(xml);
        }
        let key = creds
            .aes_key()
            .ok_or_else(|| Rejection::Malformed("no encoding_aes_key to encrypt with".into()))?;
        let mut random = [0u8; 16];
        getrandom::fill(&mut random)
            .map_err(|e| Rejection::Malformed(format!("no randomness: {e}")))?;
        let nonce = query.get("nonce").map_or("", String::as_str);
        Ok(crypto::encrypted_reply(
            &key,
            &creds.app_id,
            &creds.token,
            &now.to_string(),
            nonce,
            random,
            &xml,
        ))
    }

    /// The server configuration's check: `echostr` back when `signature` matches.
    fn challenge(
        creds: &WechatCredentials,
        query: &HashMap<String, String>,
    ) -> Option<Result<String, Rejection>> {
        Some(check_signature(creds, query).and_then(|()| {
            query
                .get("echostr")
                .cloned()
                .ok_or_else(|| Rejection::Malformed("echostr is missing".into()))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures as fx;
    use serde_json::json;

    fn creds(aes: bool) -> WechatCredentials {
        WechatCredentials {
            app_id: fx::APP_ID.into(),
            app_secret: "secret".into(),
            token: fx::TOKEN.into(),
            encoding_aes_key: aes.then(|| fx::AES_KEY.into()),
            customer_service_api: true,
        }
    }

    fn q(pairs: Vec<(String, String)>) -> HashMap<String, String> {
        pairs.into_iter().collect()
    }

    fn envelope(xml: &str) -> IngressEnvelope {
        let splits = Wechat::split("ch_1", xml.as_bytes()).expect("splits");
        assert_eq!(splits.len(), 1);
        IngressEnvelope {
            v: V1,
            id: "env_1".into(),
            platform: Platform::Wechat,
            channel_id: "ch_1".into(),
            bot_id: "bot_1".into(),
            received_at: Utc::now(),
            dedupe_key: splits[0].dedupe_key.clone(),
            body: splits[0].body.clone(),
            order_key: splits[0].order_key.clone(),
        }
    }

    fn one(xml: &str) -> InboundEvent {
        let mut events = Wechat::normalise(&envelope(xml)).expect("normalises");
        assert_eq!(events.len(), 1, "{events:?}");
        events.remove(0)
    }

    #[test]
    fn every_inbound_kind_is_normalised() {
        let o = fx::OPENID;
        let postback = |payload: &str, title: Option<&str>| Content::Postback {
            payload: payload.into(),
            title: title.map(str::to_owned),
        };
        let cases: Vec<(String, EventType, Option<Content>, Option<&str>)> = vec![
            (
                fx::text(o, 1, "hello"),
                EventType::MessageReceived,
                Some(Content::Text {
                    text: "hello".into(),
                }),
                None,
            ),
            (
                fx::menu_tap(o, 2, "Yes", "101"),
                EventType::MessageReceived,
                Some(postback("101", Some("Yes"))),
                None,
            ),
            (
                fx::image(o, 3, "https://mmbiz.example/p.jpg", "m_img"),
                EventType::MessageReceived,
                Some(Content::Image(Media {
                    url: Some("https://mmbiz.example/p.jpg".into()),
                    file_id: Some("m_img".into()),
                    caption: None,
                    filename: None,
                    mime_type: None,
                    media_id: None,
                    download_url: None,
                    preview_url: None,
                    duration_ms: None,
                    size_bytes: None,
                })),
                None,
            ),
            (
                fx::voice(o, 4, "m_voice", Some("你好")),
                EventType::MessageReceived,
                Some(Content::Voice(Media {
                    url: None,
                    file_id: Some("m_voice".into()),
                    caption: Some("你好".into()),
                    filename: None,
                    mime_type: Some("audio/amr".into()),
                    media_id: None,
                    download_url: None,
                    preview_url: None,
                    duration_ms: None,
                    size_bytes: None,
                })),
                None,
            ),
            (
                fx::voice(o, 5, "m_voice", None),
                EventType::MessageReceived,
                Some(Content::Voice(Media {
                    url: None,
                    file_id: Some("m_voice".into()),
                    caption: None,
                    filename: None,
                    mime_type: Some("audio/amr".into()),
                    media_id: None,
                    download_url: None,
                    preview_url: None,
                    duration_ms: None,
                    size_bytes: None,
                })),
                None,
            ),
            (
                fx::video(o, 6, "video", "m_vid"),
                EventType::MessageReceived,
                Some(Content::Video(Media {
                    url: None,
                    file_id: Some("m_vid".into()),
                    caption: None,
                    filename: None,
                    mime_type: None,
                    media_id: None,
                    download_url: None,
                    preview_url: None,
                    duration_ms: None,
                    size_bytes: None,
                })),
                None,
            ),
            (
                fx::video(o, 7, "shortvideo", "m_short"),
                EventType::MessageReceived,
                Some(Content::Video(Media {
                    url: None,
                    file_id: Some("m_short".into()),
                    caption: None,
                    filename: None,
                    mime_type: None,
                    media_id: None,
                    download_url: None,
                    preview_url: None,
                    duration_ms: None,
                    size_bytes: None,
                })),
                None,
            ),
            (
                fx::location(o, 8, 23.134521, 113.358803, "Guangzhou"),
                EventType::MessageReceived,
                Some(Content::Location(Location {
                    latitude: 23.134521,
                    longitude: 113.358803,
                    name: Some("Guangzhou".into()),
                    address: None,
                })),
                None,
            ),
            (
                fx::link(o, 9, "Docs", "Read this", "https://example.com/doc"),
                EventType::MessageReceived,
                Some(Content::Text {
                    text: "Docs\nRead this\nhttps://example.com/doc".into(),
                }),
                None,
            ),
            (
                fx::event(o, fx::TIME, "CLICK", Some("MENU_HELP")),
                EventType::MessageReceived,
                Some(postback("MENU_HELP", None)),
                None,
            ),
            (
                fx::event(o, fx::TIME, "VIEW", Some("https://example.com/shop")),
                EventType::MessageReceived,
                Some(postback("https://example.com/shop", None)),
                None,
            ),
            (
                fx::event(o, fx::TIME, "subscribe", Some("qrscene_42")),
                EventType::UserSubscribed,
                None,
                Some("42"),
            ),
            (
                fx::event(o, fx::TIME, "subscribe", None),
                EventType::UserSubscribed,
                None,
                None,
            ),
            (
                fx::event(o, fx::TIME, "SCAN", Some("42")),
                EventType::UserSubscribed,
                None,
                Some("42"),
            ),
            (
                fx::event(o, fx::TIME, "unsubscribe", None),
                EventType::UserUnsubscribed,
                None,
                None,
            ),
        ];
        for (xml, event_type, content, referral) in cases {
            let e = one(&xml);
            assert_eq!(e.event_type, event_type, "{xml}");
            assert_eq!(e.message.map(|m| m.content), content, "{xml}");
            assert_eq!(e.referral.as_deref(), referral, "{xml}");
            assert_eq!(e.sender.platform_user_id, o);
            assert_eq!(e.address, o);
            assert_eq!(e.sender.display_name, None, "WeChat tells no names");
            assert_eq!(
                e.occurred_at,
                DateTime::from_timestamp(fx::TIME, 0).unwrap()
            );
            assert_eq!(e.channel.platform, Platform::Wechat);
        }
        let text = one(&fx::text(o, 24001, "hi"));
        assert_eq!(text.message.unwrap().platform_message_id, "24001");
    }

    #[test]
    fn template_outcomes_are_receipts() {
        let o = fx::OPENID;
        let delivered = one(&fx::template_finished(o, fx::TIME, 200163836, "success"));
        assert_eq!(delivered.event_type, EventType::MessageDelivered);
        let receipt = delivered.receipt.unwrap();
        assert_eq!(receipt.platform_message_ids, vec!["200163836".to_owned()]);
        assert_eq!(receipt.error, None);
        let blocked = one(&fx::template_finished(o, fx::TIME, 1, "failed:user block"));
        assert_eq!(blocked.event_type, EventType::MessageFailed);
        assert_eq!(blocked.receipt.unwrap().error.unwrap().code, "blocked");
        let failed = one(&fx::template_finished(
            o,
            fx::TIME,
            2,
            "failed: system failed",
        ));
        assert_eq!(
            failed.receipt.unwrap().error.unwrap().code,
            "platform_error"
        );
    }

    #[test]
    fn other_events_are_ignored_and_broken_ones_refused() {
        let ignored = fx::event(fx::OPENID, fx::TIME, "LOCATION", None);
        assert!(Wechat::normalise(&envelope(&ignored)).unwrap().is_empty());
        assert!(matches!(
            Wechat::split("c", b"not xml"),
            Err(Rejection::Malformed(_))
        ));
        assert!(matches!(
            Wechat::split("c", b"<html><body/></html>"),
            Err(Rejection::Malformed(_))
        ));
        let no_id = "<xml><FromUserName>o</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType></xml>";
        assert!(matches!(
            Wechat::split("c", no_id.as_bytes()),
            Err(Rejection::Malformed(_))
        ));
        let mut env = envelope(&fx::location(fx::OPENID, 1, 1.0, 2.0, "x"));
        env.body["Location_X"] = json!("north");
        assert!(Wechat::normalise(&env).is_err());
    }

    #[test]
    fn retries_collapse_messages_by_msg_id_and_events_by_user_time_and_kind() {
        let key = |xml: &str| {
            Wechat::split("ch_1", xml.as_bytes()).unwrap()[0]
                .dedupe_key
                .clone()
        };
        assert_eq!(key(&fx::text("oA", 77, "a")), "wechat:ch_1:77");
        assert_eq!(key(&fx::text("oA", 77, "a")), key(&fx::text("oA", 77, "a")));
        assert_eq!(
            key(&fx::event("oA", 100, "subscribe", None)),
            "wechat:ch_1:oA:100:subscribe"
        );
        assert_ne!(
            key(&fx::event("oA", 100, "subscribe", None)),
            key(&fx::event("oA", 101, "subscribe", None))
        );
        assert_eq!(
            Wechat::split("ch_1", fx::text("oA", 1, "a").as_bytes()).unwrap()[0]
                .order_key
                .as_deref(),
            Some("oA")
        );
    }

    #[test]
    fn the_handshake_and_every_post_are_signed_with_the_token() {
        let c = creds(false);
        let mut query = q(fx::query(fx::TOKEN, "1409735669", "1320562132", fx::OPENID));
        query.insert("echostr".into(), "5838479218127813673".into());
        assert_eq!(
            Wechat::challenge(&c, &query),
            Some(Ok("5838479218127813673".into()))
        );
        let body = fx::text(fx::OPENID, 1, "hi");
        let opened = Wechat::open(&c, &HeaderMap::new(), &query, body.as_bytes()).unwrap();
        assert_eq!(opened.as_ref(), body.as_bytes());

        let forged = q(fx::query("other", "1409735669", "1320562132", fx::OPENID));
        assert!(matches!(
            Wechat::challenge(&c, &forged),
            Some(Err(Rejection::Unauthorized(_)))
        ));
        assert!(matches!(
            Wechat::open(&c, &HeaderMap::new(), &forged, body.as_bytes()),
            Err(Rejection::Unauthorized(_))
        ));
        assert!(matches!(
            Wechat::open(&c, &HeaderMap::new(), &HashMap::new(), body.as_bytes()),
            Err(Rejection::Unauthorized(_))
        ));
    }

    #[test]
    fn safe_and_compatible_mode_bodies_are_checked_and_decrypted() {
        let c = creds(true);
        let xml = fx::text(fx::OPENID, 5, "加密的消息");
        for compatible in [false, true] {
            let (body, query) = fx::encrypted(
                &xml,
                fx::TOKEN,
                fx::APP_ID,
                fx::AES_KEY,
                "1409735669",
                "42",
                compatible,
            );
            let opened =
                Wechat::open(&c, &HeaderMap::new(), &q(query.clone()), body.as_bytes()).unwrap();
            assert_eq!(std::str::from_utf8(&opened).unwrap(), xml);
            let e = Wechat::normalise(&envelope(std::str::from_utf8(&opened).unwrap())).unwrap();
            assert_eq!(
                e[0].message.as_ref().unwrap().content,
                Content::Text {
                    text: "加密的消息".into()
                }
            );

            // A msg_signature over another Encrypt, and the body of another AppID, are refused.
            let mut tampered = q(query.clone());
            tampered.insert(
                "msg_signature".into(),
                crypto::signature(&[fx::TOKEN, "1409735669", "42", "x"]),
            );
            assert!(matches!(
                Wechat::open(&c, &HeaderMap::new(), &tampered, body.as_bytes()),
                Err(Rejection::Unauthorized(_))
            ));
            let (other_app, other_query) = fx::encrypted(
                &xml,
                fx::TOKEN,
                "wxb11529c136998cb6",
                fx::AES_KEY,
                "1409735669",
                "42",
                compatible,
            );
            assert!(matches!(
                Wechat::open(&c, &HeaderMap::new(), &q(other_query), other_app.as_bytes()),
                Err(Rejection::Unauthorized(_))
            ));
        }
        // Safe mode needs the key.
        let (body, query) =
            fx::encrypted(&xml, fx::TOKEN, fx::APP_ID, fx::AES_KEY, "1", "2", false);
        assert!(matches!(
            Wechat::open(&creds(false), &HeaderMap::new(), &q(query), body.as_bytes()),
            Err(Rejection::Unauthorized(_))
        ));
        // An encrypted body without encrypt_type=aes is malformed, not silently empty.
        let signed_only = q(fx::query(fx::TOKEN, "1", "2", fx::OPENID));
        let opened = Wechat::open(&c, &HeaderMap::new(), &signed_only, body.as_bytes()).unwrap();
        assert!(matches!(
            Wechat::split("c", &opened),
            Err(Rejection::Malformed(_))
        ));
    }
}
