//! Outbound WeChat: the content model rendered as customer-service messages
//! (`POST <base>/cgi-bin/message/custom/send?access_token=…`) and template messages
//! (`POST <base>/cgi-bin/message/template/send?access_token=…`), and WeChat's answers
//! classified (`reference/platforms.md` §4.3–§4.5).
//!
//! Every customer-service message is `{"touser": <OpenID>, "msgtype": <type>, <type>: {…}}`.
//! WeChat answers it with `{"errcode": 0, "errmsg": "ok"}` and no message id, so only template
//! messages report a [`Sent::platform_message_id`] (their `msgid`, which
//! `TEMPLATESENDJOBFINISH` names when WeChat reports the outcome).
//!
//! | content | request(s) |
//! |---|---|
//! | text | `text.content`, cut into pieces of at most 2048 bytes (at a newline or a space when there is one in the second half of the piece, else at a character boundary) |
//! | image | `image.media_id`; a caption follows as a text (WeChat images have none) |
//! | voice, audio | `voice.media_id`; a caption follows as a text |
//! | video | `video.media_id`, the caption as `title` |
//! | file | a text: the caption and an `<a href>` link to the file's URL (WeChat cannot send files; a file by `file_id` only is refused: `unsupported_content`) |
//! | location | a text with name, address and map link (`degrade`) |
//! | buttons | `msgmenu`: `head_content` the text, `list` the postback (`id` = payload) and reply (`id` = title) buttons, ten per menu; URL buttons become `<a href="…">title</a>` lines of the text; only URL buttons: one text with the links |
//! | quick replies | `msgmenu` (`id` = payload, or the title), ten per menu |
//! | carousel | per card, one `news` message with one article (`title`, `description` = subtitle, `url` = the first URL button's or the image's, `picurl` = the image); the card's other buttons follow as a `msgmenu` (or text) titled by the card; a card with no URL at all is sent as its text and buttons |
//! | template | a template message: `template_id` = the template's name, `data` = the body parameters keyed by `parameter_name` or `keyword1`, `keyword2`, … by position (currency and date values by their `fallback_value`), a header text as `first` (older templates' opening line), `url` = a URL button's parameter (an absolute URL); media headers, quick-reply and copy-code buttons are refused (`invalid_request`) |
//! | sticker | refused: `unsupported_content` |
//!
//! Media given by `file_id` is a WeChat `media_id` and is sent as is. Media given by `url` is
//! downloaded (no redirects beyond three, at most 10 MB for images and videos and 2 MB for
//! voice, WeChat's own limits), uploaded as temporary media (`POST <base>/cgi-bin/media/upload
//! ?access_token=…&type=image|voice|video`, one multipart file part `media` named after the
//! URL's last path segment, with an extension from its `Content-Type` when it has no fitting
//! one) and sent by the `media_id` answered. The `media_id` of a URL is reused for an hour
//! (WeChat keeps temporary media three days; uploads have a daily quota of a few thousand).
//! Downloads go through a resolver that refuses loopback and private addresses, and
//! addresses are checked before, unless [`WechatSender::allow_private_media`] says otherwise
//! (development and tests).
//!
//! Each customer-service message counts against WeChat's quota of five per message from the
//! user; a content that takes several messages (a long text, a caption, a carousel) uses
//! several. Accounts without the customer-service API (`customer_service_api: false`) send
//! templates as the others do, and hand anything else to the ingress request waiting to answer
//! the user's message inline ([`crate::passive`]); a reply with no one waiting (too late, a
//! second reply, not a reply) fails with `outside_window` and says why.
//!
//! Access tokens come from [`AccessTokens`]. When WeChat refuses one (40001, 40014, 42001) it
//! is invalidated and the call made once more with a fresh one.
//!
//! | `errcode` | Patchbay |
//! |---|---|
//! | -1 (system busy), HTTP 429 and 5xx, no answer | retry |
//! | 40001, 40014, 42001 (token invalid, not the latest or expired) | invalidate the token, call again once; then retry |
//! | 45009 (api freq out of limit: the daily quota) | retry after 60 s |
//! | 45015 (48-hour window closed, or the user unfollowed) | `outside_window` |
//! | 45047 (five messages per user message used up) | `rate_limited` |
//! | 43004 (not following) | `user_unavailable` |
//! | 40003 (invalid OpenID) | `unknown_recipient` |
//! | 40013, 40125, 41001, 48001, 40164 (AppID, AppSecret, no token, API not allowed for the account type, caller IP not allow-listed) | `unauthorized` |
//! | 40007, 45002, 40037, 40008, 47001, 44003, 44004, 45008 (media id, length, template id, message type, format, empty news or text, too many articles) | `invalid_request` |
//! | 40004, 40005, 40009–40012, 41005 (uploads: media type, file type, size, no data) | `invalid_request` |
//! | anything else | `platform_error` |
//!
//! WeChat's `errcode` is always the `platform_code`. Error texts never hold an access token nor
//! a URL carrying one.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use patchbay_contract::content::{
    Button, Card, Media, Template, TemplateButtonKind, TemplateComponent, TemplateParameter,
};
use patchbay_contract::{Content, OutboundJob, Platform};
use patchbay_platform::{
    Capabilities, Limits, MediaReferences, OutboundAdapter, SendError, Sent, Target, degrade,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::WechatCredentials;
use crate::capabilities::CAPABILITIES;
use crate::tokens::AccessTokens;

/// WeChat's API.
pub const DEFAULT_BASE_URL: &str = "https://api.weixin.qq.com";
/// Customer-service messages.
pub const CUSTOM_SEND_PATH: &str = "/cgi-bin/message/custom/send";
/// Template messages.
pub const TEMPLATE_SEND_PATH: &str = "/cgi-bin/message/template/send";
/// Temporary media uploads.
pub const MEDIA_UPLOAD_PATH: &str = "/cgi-bin/media/upload";
/// User profiles.
pub const USER_INFO_PATH: &str = "/cgi-bin/user/info";

/// The longest `text.content` WeChat accepts, in bytes.
pub const TEXT_MAX_BYTES: usize = 2048;
/// Items per `msgmenu`.
const MENU_MAX: usize = 10;
/// Redirects followed when downloading media.
const MAX_REDIRECTS: usize = 3;
/// How long the `media_id` of an uploaded URL is reused.
const UPLOAD_REUSE: Duration = Duration::from_secs(3600);
/// Uploaded URLs remembered at most.
const UPLOAD_CACHE_MAX: usize = 1024;
/// The codes of a refused access token.
const TOKEN_REFUSED: [i64; 3] = [40001, 40014, 42001];

/// The kinds of temporary media the sender uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// `image`: BMP, PNG, JPEG, GIF up to 10 MB.
    Image,
    /// `voice`: AMR, MP3 up to 2 MB (60 s).
    Voice,
    /// `video`: MP4 up to 10 MB.
    Video,
}

impl MediaKind {
    /// WeChat's name: the `msgtype` and the upload's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Voice => "voice",
            MediaKind::Video => "video",
        }
    }

    /// The largest file WeChat takes, in bytes.
    pub fn max_bytes(self) -> usize {
        match self {
            MediaKind::Image | MediaKind::Video => 10 << 20,
            MediaKind::Voice => 2 << 20,
        }
    }

    fn extensions(self) -> &'static [&'static str] {
        match self {
            MediaKind::Image => &["bmp", "png", "jpeg", "jpg", "gif"],
            MediaKind::Voice => &["amr", "mp3"],
            MediaKind::Video => &["mp4"],
        }
    }
}

/// One WeChat API call a content renders to (`touser` is added by [`request`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// A customer-service message: `{"msgtype", <msgtype>: {…}}`.
    Custom(Value),
    /// Download `url`, upload it as temporary media of `kind`, then send `message` (a
    /// customer-service message) with the `media_id` answered put into `message[kind]`.
    Upload {
        /// The upload's type.
        kind: MediaKind,
        /// Where the file is.
        url: String,
        /// The message to send once uploaded.
        message: Value,
    },
    /// A template message: `{"template_id", "url"?, "data"}`.
    Template(Value),
}

fn invalid(message: impl Into<String>) -> SendError {
    SendError::permanent("invalid_request", message, None)
}

fn unsupported(message: impl Into<String>) -> SendError {
    SendError::permanent("unsupported_content", message, None)
}

fn unavailable(message: impl Into<String>) -> SendError {
    SendError::permanent("media_unavailable", message, None)
}

fn retry(reason: impl Into<String>) -> SendError {
    SendError::Retryable {
        reason: reason.into(),
        after: None,
    }
}

/// A customer-service message of `msgtype` with its object.
fn message(msgtype: &str, object: Value) -> Value {
    let mut m = Map::new();
    m.insert("msgtype".into(), json!(msgtype));
    m.insert(msgtype.into(), object);
    Value::Object(m)
}

/// `text` in pieces of at most `max` bytes, cut at a character boundary: after the last
/// newline, else at the last whitespace, when either lies in the second half of the piece
/// (the newline or space itself is dropped).
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut hard = rest.floor_char_boundary(max);
        if hard == 0 {
            hard = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let window = &rest[..hard];
        let half = hard / 2;
        let soft = window
            .rfind('\n')
            .filter(|&i| i >= half && i > 0)
            .or_else(|| {
                window
                    .rfind(char::is_whitespace)
                    .filter(|&i| i >= half && i > 0)
            });
        match soft {
            Some(i) => {
                let gap = window[i..].chars().next().map_or(1, char::len_utf8);
                out.push(window[..i].to_owned());
                rest = &rest[i + gap..];
            }
            None => {
                out.push(window.to_owned());
                rest = &rest[hard..];
            }
        }
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

fn texts(text: &str) -> Vec<Call> {
    split_text(text, TEXT_MAX_BYTES)
        .into_iter()
        .map(|t| Call::Custom(message("text", json!({ "content": t }))))
        .collect()
}

/// A WeChat text link: `<a href="url">title</a>`.
fn link(title: &str, url: &str) -> String {
    let href = url
        .replace('"', "%22")
        .replace('<', "%3C")
        .replace('>', "%3E");
    format!("<a href=\"{href}\">{title}</a>")
}

fn caption(m: &Media) -> Option<&str> {
    m.caption.as_deref().filter(|c| !c.trim().is_empty())
}

/// A media message by `media_id`, or by URL to upload first; `object` holds the other fields.
fn media(kind: MediaKind, m: &Media, object: Value) -> Result<Call, SendError> {
    let mut object = object;
    match (&m.file_id, &m.url) {
        (Some(id), _) => {
            if let Some(o) = object.as_object_mut() {
                o.insert("media_id".into(), json!(id));
            }
            Ok(Call::Custom(message(kind.as_str(), object)))
        }
        (None, Some(url)) => Ok(Call::Upload {
            kind,
            url: url.clone(),
            message: message(kind.as_str(), object),
        }),
        (None, None) => Err(invalid(format!(
            "a WeChat {} needs a url or a file_id (media_id)",
            kind.as_str()
        ))),
    }
}

/// Media followed by its caption as text.
fn captioned(kind: MediaKind, m: &Media) -> Result<Vec<Call>, SendError> {
    let mut out = vec![media(kind, m, json!({}))?];
    if let Some(c) = caption(m) {
        out.extend(texts(c));
    }
    Ok(out)
}

/// `msgmenu`s of at most ten items (`id`, `content`); the first one headed by `head`.
fn menus(head: &str, items: &[(String, String)]) -> Vec<Call> {
    items
        .chunks(MENU_MAX)
        .enumerate()
        .map(|(i, chunk)| {
            let list: Vec<Value> = chunk
                .iter()
                .map(|(id, content)| json!({"id": id, "content": content}))
                .collect();
            let head = if i == 0 { head } else { "" };
            Call::Custom(message(
                "msgmenu",
                json!({"head_content": head, "list": list, "tail_content": ""}),
            ))
        })
        .collect()
}

fn buttons(text: &str, buttons: &[Button]) -> Vec<Call> {
    let mut head = text.to_owned();
    let mut items = Vec::new();
    for b in buttons {
        match b {
            Button::Url { title, url, .. } => {
                head.push('\n');
                head.push_str(&link(title, url));
            }
            Button::Postback { title, payload } => items.push((payload.clone(), title.clone())),
            Button::Reply { title } => items.push((title.clone(), title.clone())),
        }
    }
    if items.is_empty() {
        texts(&head)
    } else {
        menus(&head, &items)
    }
}

fn card(c: &Card) -> Vec<Call> {
    let first_url = c.buttons.iter().enumerate().find_map(|(i, b)| match b {
        Button::Url { url, .. } => Some((i, url.clone())),
        _ => None,
    });
    let rest: Vec<Button> = c
        .buttons
        .iter()
        .enumerate()
        .filter(|(i, _)| first_url.as_ref().is_none_or(|(first, _)| first != i))
        .map(|(_, b)| b.clone())
        .collect();
    let Some(url) = first_url
        .map(|(_, url)| url)
        .or_else(|| c.image_url.clone())
    else {
        let text = match &c.subtitle {
            Some(s) => format!("{}\n{s}", c.title),
            None => c.title.clone(),
        };
        return if c.buttons.is_empty() {
            texts(&text)
        } else {
            buttons(&text, &c.buttons)
        };
    };
    let mut article = json!({"title": c.title, "url": url});
    if let Some(s) = &c.subtitle {
        article["description"] = json!(s);
    }
    if let Some(p) = &c.image_url {
        article["picurl"] = json!(p);
    }
    let mut out = vec![Call::Custom(message(
        "news",
        json!({ "articles": [article] }),
    ))];
    if !rest.is_empty() {
        out.extend(buttons(&c.title, &rest));
    }
    out
}

fn template(t: &Template) -> Result<Call, SendError> {
    let mut data = Map::new();
    let mut url = None;
    for component in &t.components {
        match component {
            TemplateComponent::Header { parameters } => {
                for p in parameters {
                    match p {
                        TemplateParameter::Text { text, .. } => {
                            data.insert("first".into(), json!({ "value": text }));
                        }
                        other => {
                            return Err(invalid(format!(
                                "WeChat template messages have no {} header",
                                other.kind()
                            )));
                        }
                    }
                }
            }
            TemplateComponent::Body { parameters } => {
                for (i, p) in parameters.iter().enumerate() {
                    let (value, name) = match p {
                        TemplateParameter::Text {
                            text,
                            parameter_name,
                        } => (text, parameter_name),
                        TemplateParameter::Currency {
                            currency,
                            parameter_name,
                        } => (&currency.fallback_value, parameter_name),
                        TemplateParameter::DateTime {
                            date_time,
                            parameter_name,
                        } => (&date_time.fallback_value, parameter_name),
                        other => {
                            return Err(invalid(format!(
                                "WeChat template data cannot hold {} values",
                                other.kind()
                            )));
                        }
                    };
                    let key = name.clone().unwrap_or_else(|| format!("keyword{}", i + 1));
                    data.insert(key, json!({ "value": value }));
                }
            }
            TemplateComponent::Button {
                sub_type: TemplateButtonKind::Url,
                parameters,
                ..
            } => {
                let target = parameters.iter().find_map(|p| match p {
                    TemplateParameter::Text { text, .. } => Some(text),
                    _ => None,
                });
                match target {
                    Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
                        url.get_or_insert_with(|| u.clone());
                    }
                    _ => {
                        return Err(invalid(
                            "a WeChat template's URL button takes the whole URL (an absolute http(s) URL) as its text parameter",
                        ));
                    }
                }
            }
            TemplateComponent::Button { sub_type, .. } => {
                return Err(invalid(format!(
                    "WeChat template messages have no {} buttons",
                    match sub_type {
                        TemplateButtonKind::QuickReply => "quick-reply",
                        _ => "copy-code",
                    }
                )));
            }
        }
    }
    let mut body = json!({"template_id": t.name, "data": data});
    if let Some(u) = url {
        body["url"] = json!(u);
    }
    Ok(Call::Template(body))
}

/// Renders one (already degraded) content as the WeChat calls to make, in order.
pub fn render(content: &Content) -> Result<Vec<Call>, SendError> {
    Ok(match content {
        Content::Text { text } => texts(text),
        Content::Image(m) => captioned(MediaKind::Image, m)?,
        Content::Voice(m) | Content::Audio(m) => captioned(MediaKind::Voice, m)?,
        Content::Video(m) => {
            let object = match caption(m) {
                Some(c) => json!({ "title": c }),
                None => json!({}),
            };
            vec![media(MediaKind::Video, m, object)?]
        }
        Content::File(m) => {
            let Some(url) = &m.url else {
                return Err(unsupported(
                    "WeChat cannot send files; a file is sent as a link to its url, and this one has none",
                ));
            };
            let title = m.filename.as_deref().unwrap_or("file");
            let text = match caption(m) {
                Some(c) => format!("{c}\n{}", link(title, url)),
                None => link(title, url),
            };
            texts(&text)
        }
        Content::Buttons { text, buttons: b } => buttons(text, b),
        Content::QuickReplies { text, replies } => {
            let items: Vec<(String, String)> = replies
                .iter()
                .map(|r| {
                    (
                        r.payload.clone().unwrap_or_else(|| r.title.clone()),
                        r.title.clone(),
                    )
                })
                .collect();
            menus(text, &items)
        }
        Content::Carousel { cards } => cards.iter().flat_map(card).collect(),
        Content::Template(t) => vec![template(t.inline().map_err(|e| invalid(e.to_string()))?)?],
        other => {
            return Err(unsupported(format!(
                "WeChat cannot show {} messages",
                other.kind()
            )));
        }
    })
}

/// The request body of a rendered message (or template message) to `openid`.
pub fn request(openid: &str, body: Value) -> Value {
    let mut out = Map::new();
    out.insert("touser".into(), json!(openid));
    if let Value::Object(m) = body {
        out.extend(m);
    }
    Value::Object(out)
}

/// Classifies a WeChat `errcode` (answered with HTTP 200 and `{"errcode", "errmsg"}`).
pub fn classify(errcode: i64, errmsg: &str) -> SendError {
    let wechat = format!("WeChat {errcode}: {errmsg}");
    let permanent = |code: &str, why: &str| {
        SendError::permanent(code, format!("{why} ({wechat})"), Some(errcode))
    };
    match errcode {
        -1 => SendError::Retryable {
            reason: format!("WeChat is busy ({wechat})"),
            after: None,
        },
        40001 | 40014 | 42001 => SendError::Retryable {
            reason: format!(
                "WeChat refused the access token as invalid, replaced or expired ({wechat})"
            ),
            after: None,
        },
        45009 => SendError::Retryable {
            reason: format!(
                "the Official Account's daily API quota is used up; it resets at midnight \
                 (Beijing time) or with /cgi-bin/clear_quota ({wechat})"
            ),
            after: Some(Duration::from_secs(60)),
        },
        45015 => permanent(
            "outside_window",
            "WeChat's 48-hour customer-service window is closed (the user last wrote more than \
             48 hours ago) or the user unfollowed",
        ),
        45047 => permanent(
            "rate_limited",
            "WeChat allows five customer-service messages per message from the user; they are \
             used up until the user writes again",
        ),
        43004 => permanent(
            "user_unavailable",
            "the user does not follow the Official Account",
        ),
        40003 => permanent(
            "unknown_recipient",
            "not an OpenID of this Official Account",
        ),
        40013 => permanent("unauthorized", "the AppID is invalid"),
        40125 => permanent("unauthorized", "the AppSecret is invalid"),
        41001 => permanent("unauthorized", "no access token was given"),
        48001 => permanent(
            "unauthorized",
            "the Official Account may not use this API: unverified subscription accounts have no \
             customer-service API, and template messages need a verified service account",
        ),
        40164 => permanent(
            "unauthorized",
            "the caller's IP address is not on the Official Account's IP allow-list (admin \
             console, Basic configuration)",
        ),
        40007 => permanent(
            "invalid_request",
            "the media_id is invalid or expired (temporary media lives three days)",
        ),
        45002 => permanent("invalid_request", "the content is too long"),
        40037 => permanent(
            "invalid_request",
            "the template_id is not one of the Official Account's templates",
        ),
        40008 => permanent("invalid_request", "WeChat does not know the message type"),
        47001 => permanent("invalid_request", "WeChat could not read the request"),
        44003 => permanent("invalid_request", "the news message has no articles"),
        44004 => permanent("invalid_request", "the text is empty"),
        45008 => permanent("invalid_request", "the news message has too many articles"),
        40004 => permanent("invalid_request", "WeChat does not know the media type"),
        40005 => permanent(
            "invalid_request",
            "WeChat does not accept this file type for this media type",
        ),
        40009..=40012 => permanent(
            "invalid_request",
            "the file is larger than WeChat takes (images and videos 10 MB, voice 2 MB, \
             thumbnails 64 KB)",
        ),
        41005 => permanent("invalid_request", "the upload holds no file"),
        _ => permanent("platform_error", "WeChat refused the request"),
    }
}

/// A WeChat user's profile (`GET /cgi-bin/user/info`). WeChat no longer returns nicknames or
/// avatars (`headimgurl`) to Official Accounts (since late December 2021), so the profile has
/// none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WechatProfile {
    /// The user's language, e.g. `zh_CN` or `en` (followers only).
    pub language: Option<String>,
    /// Whether the user follows the Official Account (`subscribe: 1`).
    pub subscribed: bool,
    /// When the user (last) followed it.
    pub subscribe_time: Option<DateTime<Utc>>,
    /// The UnionID, when the account is bound to an Open Platform account.
    pub unionid: Option<String>,
}

#[derive(Debug, Deserialize)]
struct UserInfo {
    #[serde(default)]
    subscribe: i64,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    subscribe_time: Option<i64>,
    #[serde(default)]
    unionid: Option<String>,
}

impl From<UserInfo> for WechatProfile {
    fn from(u: UserInfo) -> Self {
        if u.subscribe == 0 {
            return Self {
                language: None,
                subscribed: false,
                subscribe_time: None,
                unionid: None,
            };
        }
        Self {
            language: u.language.filter(|l| !l.is_empty()),
            subscribed: true,
            subscribe_time: u
                .subscribe_time
                .and_then(|s| DateTime::from_timestamp(s, 0)),
            unionid: u.unionid.filter(|u| !u.is_empty()),
        }
    }
}

/// A downloaded media file.
#[derive(Debug)]
struct Download {
    filename: String,
    content_type: String,
    bytes: Vec<u8>,
}

/// The file extension WeChat knows for a content type.
fn extension_for(content_type: &str) -> Option<&'static str> {
    Some(match content_type {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/bmp" | "image/x-ms-bmp" => "bmp",
        "audio/amr" => "amr",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "video/mp4" => "mp4",
        _ => return None,
    })
}

/// The essence of a `Content-Type` (`image/png` of `image/png; charset=x`), when printable.
fn content_type_of(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let raw = headers.get(reqwest::header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = raw.split(';').next()?.trim().to_ascii_lowercase();
    (!essence.is_empty() && essence.chars().all(|c| c.is_ascii_graphic())).then_some(essence)
}

/// The upload's file name: the URL's last path segment (`media` when there is none), with an
/// extension from `content_type` when it has none WeChat takes for `kind`.
fn filename(url: &reqwest::Url, content_type: Option<&str>, kind: MediaKind) -> String {
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    named(last, content_type, kind)
}

/// [`filename`] from a given name (`media` when it has no usable characters).
fn named(given: &str, content_type: Option<&str>, kind: MediaKind) -> String {
    let mut name: String = given
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '/' | ';'))
        .collect();
    if name.is_empty() {
        name = "media".into();
    }
    let fits = |n: &str| {
        n.rsplit_once('.')
            .is_some_and(|(_, e)| kind.extensions().contains(&e.to_ascii_lowercase().as_str()))
    };
    if fits(&name) {
        return name;
    }
    match content_type.and_then(extension_for) {
        Some(ext) if kind.extensions().contains(&ext) => {
            let stem = match name.rsplit_once('.') {
                Some((stem, _)) if !stem.is_empty() => stem,
                _ => name.as_str(),
            };
            format!("{stem}.{ext}")
        }
        _ => name,
    }
}

/// A `multipart/form-data` body with one file part `media`: its content type and bytes.
fn multipart(file: &Download) -> (String, Vec<u8>) {
    patchbay_platform::http::multipart(
        &[],
        "media",
        &file.filename,
        &file.content_type,
        &file.bytes,
    )
}

/// `<base><path>?<query>`, the values percent-encoded.
fn api_url(base: &str, path: &str, query: &[(&str, &str)]) -> Result<reqwest::Url, SendError> {
    let mut url = reqwest::Url::parse(&format!("{base}{path}")).map_err(|e| {
        SendError::permanent(
            "channel_misconfigured",
            format!("the WeChat API base URL {base:?} is not a URL: {e}"),
            None,
        )
    })?;
    url.query_pairs_mut().extend_pairs(query);
    Ok(url)
}

/// What WeChat answered: a success body, or its `errcode` and `errmsg`.
enum Answer {
    Ok(Value),
    Refused(i64, String),
}

/// Sends one API request and reads WeChat's answer.
async fn once(request: reqwest::RequestBuilder, what: &str) -> Result<Answer, SendError> {
    let response = request
        .headers(patchbay_platform::http::trace_headers())
        .send()
        .await
        .map_err(|e| retry(format!("WeChat unreachable ({what}): {}", e.without_url())))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| {
        retry(format!(
            "reading WeChat's answer ({what}): {}",
            e.without_url()
        ))
    })?;
    if status.as_u16() == 429 || status.is_server_error() {
        return Err(retry(format!("WeChat answered HTTP {status} ({what})")));
    }
    if !status.is_success() {
        return Err(SendError::permanent(
            "platform_error",
            format!("WeChat answered HTTP {status} ({what})"),
            None,
        ));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|_| {
        SendError::permanent(
            "platform_error",
            format!("WeChat's answer ({what}) is not JSON"),
            None,
        )
    })?;
    match v.get("errcode").and_then(Value::as_i64) {
        Some(code) if code != 0 => {
            let errmsg = v.get("errmsg").and_then(Value::as_str).unwrap_or_default();
            Ok(Answer::Refused(code, errmsg.to_owned()))
        }
        _ => Ok(Answer::Ok(v)),
    }
}

/// Uploaded URLs: (AppID, URL, kind) → (`media_id`, uploaded at).
type Uploads = HashMap<(String, String, MediaKind), (String, Instant)>;

/// Sends through the customer-service and template-message APIs.
pub struct WechatSender<T: AccessTokens> {
    http: reqwest::Client,
    media_http: reqwest::Client,
    timeout: Duration,
    allow_private_media: bool,
    base_url: String,
    limits: Limits,
    tokens: T,
    uploads: Mutex<Uploads>,
    /// Where replies of accounts without the customer-service API are handed to the ingress
    /// request waiting to answer inline.
    passive: Option<(async_nats::Client, patchbay_contract::Subjects)>,
}

impl<T: AccessTokens> std::fmt::Debug for WechatSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatSender")
            .field("base_url", &self.base_url)
            .field("limits", &self.limits)
            .field("allow_private_media", &self.allow_private_media)
            .finish_non_exhaustive()
    }
}

fn media_client(timeout: Duration, allow_private: bool) -> Result<reqwest::Client, reqwest::Error> {
    patchbay_platform::webhook::tenant_client(
        timeout,
        allow_private,
        concat!("Patchbay/", env!("CARGO_PKG_VERSION")),
    )
}

impl<T: AccessTokens> WechatSender<T> {
    /// A sender with `base_url` as default API, `timeout` per call, the given pace and access
    /// tokens from `tokens`. Media downloads refuse loopback and private addresses.
    pub fn new(
        base_url: &str,
        timeout: Duration,
        limits: Limits,
        tokens: T,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: patchbay_platform::http::client_builder(timeout).build()?,
            media_http: media_client(timeout, false)?,
            timeout,
            allow_private_media: false,
            base_url: base_url.trim_end_matches('/').to_owned(),
            limits,
            tokens,
            uploads: Mutex::new(HashMap::new()),
            passive: None,
        })
    }

    /// Hands the replies of accounts without the customer-service API to the ingress waiting
    /// to answer inline, over `client` on `<p>.passive.wechat.<event>`.
    pub fn with_passive(
        mut self,
        client: async_nats::Client,
        subjects: patchbay_contract::Subjects,
    ) -> Self {
        self.passive = Some((client, subjects));
        self
    }

    /// An account without the customer-service API answers inline only: the reply goes to the
    /// ingress request that waits (within WeChat's five seconds) for the bot's answer to the
    /// user's message it replies to, once; no one waiting means the reply came too late.
    async fn hand_over(&self, job: &OutboundJob) -> Result<Sent, SendError> {
        let too_late = || {
            SendError::permanent(
                patchbay_contract::windows::OUTSIDE_WINDOW,
                "missed WeChat's five-second passive-reply window: this Official Account has no \
                 customer-service message API (customer_service_api is false), so the bot can \
                 only answer a user's message inline, once, within five seconds of it",
                None,
            )
        };
        crate::passive::supported(&job.content)
            .map_err(|e| SendError::permanent("unsupported_content", e, None))?;
        let (Some((client, subjects)), Some(event)) = (&self.passive, &job.in_reply_to) else {
            return Err(too_late());
        };
        let subject = subjects
            .passive_reply(Platform::Wechat, event)
            .map_err(|e| SendError::permanent("invalid_request", e.to_string(), None))?;
        let body = serde_json::to_vec(&job.content)
            .map_err(|e| SendError::permanent("invalid_request", e.to_string(), None))?;
        match tokio::time::timeout(Duration::from_secs(2), client.request(subject, body.into()))
            .await
        {
            Ok(Ok(_)) => Ok(Sent {
                platform_message_id: None,
                media_reference: None,
            }),
            _ => Err(too_late()),
        }
    }

    /// Whether media URLs may name loopback and private addresses (the operator's
    /// `allow_private_callbacks`, for development and tests).
    pub fn allow_private_media(mut self, allow: bool) -> Result<Self, reqwest::Error> {
        self.media_http = media_client(self.timeout, allow)?;
        self.allow_private_media = allow;
        Ok(self)
    }

    /// The access tokens it uses.
    pub fn tokens(&self) -> &T {
        &self.tokens
    }

    /// Calls the API with an access token; when WeChat refuses the token, invalidates it and
    /// calls once more with a fresh one. `build` makes the request for a token.
    async fn api<F>(
        &self,
        creds: &WechatCredentials,
        base_url: &str,
        what: &str,
        build: F,
    ) -> Result<Value, SendError>
    where
        F: Fn(&str) -> Result<reqwest::RequestBuilder, SendError> + Send + Sync,
    {
        let token = self.tokens.get(creds, base_url).await?;
        let answer = match once(build(&token)?, what).await? {
            Answer::Refused(code, _) if TOKEN_REFUSED.contains(&code) => {
                self.tokens.invalidate(creds, &token).await;
                let fresh = self.tokens.get(creds, base_url).await?;
                once(build(&fresh)?, what).await?
            }
            answer => answer,
        };
        match answer {
            Answer::Ok(v) => Ok(v),
            Answer::Refused(code, errmsg) => Err(classify(code, &errmsg)),
        }
    }

    async fn post(
        &self,
        creds: &WechatCredentials,
        base_url: &str,
        path: &str,
        body: &Value,
        what: &str,
    ) -> Result<Value, SendError> {
        self.api(creds, base_url, what, |token| {
            let url = api_url(base_url, path, &[("access_token", token)])?;
            Ok(self.http.post(url).json(body))
        })
        .await
    }

    /// Refuses URLs on loopback or private addresses, unless allowed. Host names are also
    /// resolved through the guarded resolver when downloading, so a changed DNS answer cannot
    /// get past this check.
    async fn check_host(&self, url: &reqwest::Url) -> Result<(), SendError> {
        if self.allow_private_media {
            return Ok(());
        }
        if let Some(why) = patchbay_platform::webhook::refused_literal(url, false) {
            return Err(unavailable(format!("media URL refused: {why}")));
        }
        let Some(domain) = url.domain() else {
            return Ok(());
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs = tokio::net::lookup_host((domain, port))
            .await
            .map_err(|e| retry(format!("media host {domain} does not resolve: {e}")))?;
        for a in addrs {
            if !patchbay_platform::http::is_public_ip(a.ip()) {
                return Err(unavailable(format!(
                    "media host {domain} resolves to an address that is not public"
                )));
            }
        }
        Ok(())
    }

    /// Downloads media for an upload of `kind`.
    async fn download(&self, raw: &str, kind: MediaKind) -> Result<Download, SendError> {
        let what = kind.as_str();
        let mut url = reqwest::Url::parse(raw)
            .map_err(|e| unavailable(format!("the {what}'s URL is not a URL: {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(unavailable(format!(
                    "the {what}'s URL must be http or https"
                )));
            }
            self.check_host(&url).await?;
            let host = url.host_str().unwrap_or_default().to_owned();
            let mut response = self.media_http.get(url.clone()).send().await.map_err(|e| {
                retry(format!(
                    "downloading the {what} from {host}: {}",
                    e.without_url()
                ))
            })?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| {
                        unavailable(format!(
                            "{host} answered HTTP {status} without a Location for the {what}"
                        ))
                    })?;
                url = url.join(location).map_err(|e| {
                    unavailable(format!("{host} redirected the {what} to no URL: {e}"))
                })?;
                continue;
            }
            if status.as_u16() == 429 || status.is_server_error() {
                return Err(retry(format!(
                    "{host} answered HTTP {status} for the {what}"
                )));
            }
            if !status.is_success() {
                return Err(unavailable(format!(
                    "{host} answered HTTP {status} for the {what}"
                )));
            }
            let max = kind.max_bytes();
            let too_large = || {
                invalid(format!(
                    "the {what} is larger than WeChat takes ({} MB)",
                    max >> 20
                ))
            };
            if response
                .content_length()
                .is_some_and(|len| len > max as u64)
            {
                return Err(too_large());
            }
            let content_type = content_type_of(response.headers());
            let mut bytes = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| {
                retry(format!(
                    "downloading the {what} from {host}: {}",
                    e.without_url()
                ))
            })? {
                if bytes.len() + chunk.len() > max {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            return Ok(Download {
                filename: filename(&url, content_type.as_deref(), kind),
                content_type: content_type.unwrap_or_else(|| "application/octet-stream".into()),
                bytes,
            });
        }
        Err(unavailable(format!(
            "the {what}'s URL redirects more than {MAX_REDIRECTS} times"
        )))
    }

    fn uploads(&self) -> MutexGuard<'_, Uploads> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `media_id` of the file at `url`: uploaded within the last hour, or downloaded and
    /// uploaded now.
    async fn upload(
        &self,
        creds: &WechatCredentials,
        base_url: &str,
        kind: MediaKind,
        url: &str,
    ) -> Result<String, SendError> {
        let key = (creds.app_id.clone(), url.to_owned(), kind);
        if let Some((id, at)) = self.uploads().get(&key)
            && at.elapsed() < UPLOAD_REUSE
        {
            return Ok(id.clone());
        }
        let file = self.download(url, kind).await?;
        let media_id = self.upload_file(creds, base_url, kind, &file).await?;
        let mut uploads = self.uploads();
        if uploads.len() >= UPLOAD_CACHE_MAX {
            uploads.retain(|_, (_, at)| at.elapsed() < UPLOAD_REUSE);
            if uploads.len() >= UPLOAD_CACHE_MAX {
                uploads.clear();
            }
        }
        uploads.insert(key, (media_id.clone(), Instant::now()));
        Ok(media_id)
    }

    /// `media/upload` of `file` as temporary media of `kind`: its `media_id`.
    async fn upload_file(
        &self,
        creds: &WechatCredentials,
        base_url: &str,
        kind: MediaKind,
        file: &Download,
    ) -> Result<String, SendError> {
        let (content_type, body) = multipart(file);
        let answer = self
            .api(creds, base_url, "media upload", |token| {
                let url = api_url(
                    base_url,
                    MEDIA_UPLOAD_PATH,
                    &[("access_token", token), ("type", kind.as_str())],
                )?;
                Ok(self
                    .http
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, content_type.as_str())
                    .body(body.clone()))
            })
            .await?;
        let media_id = answer
            .get("media_id")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                SendError::permanent(
                    "platform_error",
                    "WeChat's upload answer has no media_id",
                    None,
                )
            })?
            .to_owned();
        Ok(media_id)
    }

    /// The profile of `openid` (`GET <base>/cgi-bin/user/info?…&lang=zh_CN`): `None` when
    /// WeChat does not know the OpenID for this account (40003); a user who does not follow
    /// the account has `subscribed: false` and nothing else. WeChat no longer returns
    /// nicknames or avatars (since late December 2021), so the profile has none.
    pub async fn profile(
        &self,
        creds: &WechatCredentials,
        base_url: &str,
        openid: &str,
    ) -> Result<Option<WechatProfile>, SendError> {
        let base = base_url.trim_end_matches('/');
        let answer = self
            .api(creds, base, "user info", |token| {
                let url = api_url(
                    base,
                    USER_INFO_PATH,
                    &[
                        ("access_token", token),
                        ("openid", openid),
                        ("lang", "zh_CN"),
                    ],
                )?;
                Ok(self.http.get(url))
            })
            .await;
        let answer = match answer {
            Err(SendError::Permanent(d)) if d.platform_code == Some(40003) => return Ok(None),
            other => other?,
        };
        let info: UserInfo = serde_json::from_value(answer).map_err(|e| {
            SendError::permanent(
                "platform_error",
                format!("WeChat's user info is unreadable: {e}"),
                None,
            )
        })?;
        Ok(Some(info.into()))
    }
}

/// The `msgid` of a template send, as text.
fn msgid(answer: &Value) -> Option<String> {
    match answer.get("msgid")? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

impl<T: AccessTokens> OutboundAdapter for WechatSender<T> {
    const PLATFORM: Platform = Platform::Wechat;
    type Credentials = WechatCredentials;

    fn capabilities(&self) -> &Capabilities {
        &CAPABILITIES
    }

    fn default_base_url(&self) -> &str {
        &self.base_url
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    /// Temporary media lasts 3 days.
    const MEDIA_REFERENCES: MediaReferences =
        MediaReferences::Uploaded(Duration::from_secs(3 * 24 * 3600));

    /// `media/upload` as temporary media: images, voice (AMR, MP3) and video; WeChat sends no
    /// files (`unsupported_content`).
    async fn upload_media(
        &self,
        target: Target<'_, WechatCredentials>,
        file: &patchbay_platform::media::Fetched,
        kind: patchbay_platform::spec::MediaKind,
        filename: Option<&str>,
    ) -> Result<Option<String>, SendError> {
        use patchbay_platform::spec::MediaKind as Kind;
        let kind = match kind {
            Kind::Image => MediaKind::Image,
            Kind::Audio => MediaKind::Voice,
            Kind::Video => MediaKind::Video,
            Kind::File => return Err(unsupported("WeChat cannot send files")),
        };
        if file.bytes.len() > kind.max_bytes() {
            return Err(invalid(format!(
                "the {} is larger than WeChat takes ({} MB)",
                kind.as_str(),
                kind.max_bytes() >> 20
            )));
        }
        let filename = named(filename.unwrap_or_default(), Some(&file.content_type), kind);
        let download = Download {
            filename,
            content_type: file.content_type.clone(),
            bytes: file.bytes.clone(),
        };
        let base = target.base_url.trim_end_matches('/');
        self.upload_file(target.credentials, base, kind, &download)
            .await
            .map(Some)
    }

    /// `GET /cgi-bin/media/get?media_id=…` with the access token (WeChat keeps a follower's
    /// media 3 days): the file, or WeChat's JSON error (40007: no such media).
    async fn fetch_media(
        &self,
        target: Target<'_, WechatCredentials>,
        media: &Media,
        ctx: patchbay_platform::media::Context<'_>,
    ) -> Result<patchbay_platform::media::Fetched, SendError> {
        let Some(id) = media.file_id.as_deref() else {
            return Err(SendError::permanent(
                "not_found",
                "the media has no WeChat MediaId",
                None,
            ));
        };
        let (creds, base) = (target.credentials, target.base_url.trim_end_matches('/'));
        let mut refused_once = false;
        loop {
            let token = self.tokens.get(creds, base).await?;
            let url = api_url(
                base,
                "/cgi-bin/media/get",
                &[("access_token", &token), ("media_id", id)],
            )?;
            let response = self
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| retry(format!("WeChat unreachable: {}", e.without_url())))?;
            patchbay_platform::media::check_status(&response, "WeChat")?;
            let is_error = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/plain"));
            if !is_error {
                return patchbay_platform::media::read_limited(response, ctx.max_bytes, "WeChat")
                    .await;
            }
            let body: Value = response
                .json()
                .await
                .map_err(|e| retry(format!("reading WeChat's answer: {}", e.without_url())))?;
            let code = body["errcode"].as_i64().unwrap_or(-1);
            let errmsg = body["errmsg"].as_str().unwrap_or_default();
            if TOKEN_REFUSED.contains(&code) && !refused_once {
                refused_once = true;
                self.tokens.invalidate(creds, &token).await;
                continue;
            }
            return Err(match code {
                40007 => SendError::permanent(
                    "not_found",
                    format!("WeChat has no such media ({code}: {errmsg})"),
                    Some(code),
                ),
                _ => classify(code, errmsg),
            });
        }
    }

    async fn send(
        &self,
        target: Target<'_, WechatCredentials>,
        job: &OutboundJob,
    ) -> Result<Sent, SendError> {
        let creds = target.credentials;
        if !creds.customer_service_api && !matches!(job.content, Content::Template(_)) {
            return self.hand_over(job).await;
        }
        let parts = degrade(&job.content, &CAPABILITIES, "WeChat").map_err(SendError::Permanent)?;
        let mut calls = Vec::new();
        for p in &parts {
            calls.extend(render(p)?);
        }
        let base = target.base_url.trim_end_matches('/');
        let mut first_id = None;
        for call in calls {
            match call {
                Call::Custom(m) => {
                    let body = request(&job.address, m);
                    self.post(
                        creds,
                        base,
                        CUSTOM_SEND_PATH,
                        &body,
                        "customer-service message",
                    )
                    .await?;
                }
                Call::Upload {
                    kind,
                    url,
                    mut message,
                } => {
                    let media_id = self.upload(creds, base, kind, &url).await?;
                    if let Some(o) = message
                        .get_mut(kind.as_str())
                        .and_then(Value::as_object_mut)
                    {
                        o.insert("media_id".into(), json!(media_id));
                    }
                    let body = request(&job.address, message);
                    self.post(
                        creds,
                        base,
                        CUSTOM_SEND_PATH,
                        &body,
                        "customer-service message",
                    )
                    .await?;
                }
                Call::Template(t) => {
                    let body = request(&job.address, t);
                    let answer = self
                        .post(creds, base, TEMPLATE_SEND_PATH, &body, "template message")
                        .await?;
                    first_id = first_id.or_else(|| msgid(&answer));
                }
            }
        }
        Ok(Sent {
            platform_message_id: first_id,
            media_reference: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_contract::content::QuickReply;
    use patchbay_contract::{ChannelRef, SendSource, V1};
    use patchbay_testkit::wechat::{FakeWechat, Follower};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn code_of(e: &SendError) -> (&str, Option<i64>) {
        match e {
            SendError::Permanent(d) => (d.code.as_str(), d.platform_code),
            SendError::Retryable { .. } => ("retry", None),
        }
    }

    #[test]
    fn wechat_every_documented_errcode_is_classified() {
        let table: &[(i64, &str)] = &[
            (45015, "outside_window"),
            (45047, "rate_limited"),
            (43004, "user_unavailable"),
            (40003, "unknown_recipient"),
            (40013, "unauthorized"),
            (40125, "unauthorized"),
            (41001, "unauthorized"),
            (48001, "unauthorized"),
            (40164, "unauthorized"),
            (40007, "invalid_request"),
            (45002, "invalid_request"),
            (40037, "invalid_request"),
            (40008, "invalid_request"),
            (47001, "invalid_request"),
            (44003, "invalid_request"),
            (44004, "invalid_request"),
            (45008, "invalid_request"),
            (40004, "invalid_request"),
            (40005, "invalid_request"),
            (40009, "invalid_request"),
            (40010, "invalid_request"),
            (40011, "invalid_request"),
            (40012, "invalid_request"),
            (41005, "invalid_request"),
            (40002, "platform_error"),
            (61451, "platform_error"),
        ];
        for (errcode, expected) in table {
            let e = classify(*errcode, "some errmsg rid: 1");
            assert_eq!(code_of(&e), (*expected, Some(*errcode)), "{errcode}");
            let SendError::Permanent(d) = e else {
                unreachable!()
            };
            assert!(
                d.message
                    .contains(&format!("WeChat {errcode}: some errmsg")),
                "{d:?}"
            );
        }
        for errcode in [-1, 40001, 40014, 42001] {
            assert_eq!(
                classify(errcode, "x"),
                SendError::Retryable {
                    reason: match errcode {
                        -1 => "WeChat is busy (WeChat -1: x)".into(),
                        _ => format!(
                            "WeChat refused the access token as invalid, replaced or expired (WeChat {errcode}: x)"
                        ),
                    },
                    after: None
                }
            );
        }
        match classify(45009, "api freq out of limit") {
            SendError::Retryable { reason, after } => {
                assert_eq!(after, Some(Duration::from_secs(60)));
                assert!(reason.contains("daily API quota"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let SendError::Permanent(d) = classify(48001, "api unauthorized") else {
            unreachable!()
        };
        assert!(
            d.message.contains("unverified subscription accounts"),
            "{d:?}"
        );
    }

    #[test]
    fn long_texts_are_cut_at_whitespace_or_character_boundaries() {
        assert_eq!(split_text("hi", 2048), vec!["hi"]);
        assert_eq!(split_text("", 2048), vec![""]);
        assert_eq!(split_text("aaaa bbbb cc", 10), vec!["aaaa bbbb", "cc"]);
        assert_eq!(
            split_text("aaa\nbbb ccc dd", 10),
            vec!["aaa\nbbb", "ccc dd"]
        );
        assert_eq!(split_text("aaaaaaa\nbb cc", 10), vec!["aaaaaaa", "bb cc"]);
        assert_eq!(split_text("a bbbbbbbbbbbb", 10), vec!["a bbbbbbbb", "bbbb"]);
        // 700 three-byte characters: no space, cut at the last boundary under 2048 bytes.
        let han = "汉".repeat(700);
        let parts = split_text(&han, TEXT_MAX_BYTES);
        assert_eq!(
            parts.iter().map(String::len).collect::<Vec<_>>(),
            [2046, 54]
        );
        assert_eq!(parts.concat(), han);
        let words = "word ".repeat(1000);
        let parts = split_text(&words, TEXT_MAX_BYTES);
        assert!(
            parts
                .iter()
                .all(|p| p.len() <= TEXT_MAX_BYTES && !p.starts_with(' '))
        );
        assert_eq!(parts.join(" ").trim_end(), words.trim_end());
    }

    fn url_media(url: &str, caption: Option<&str>) -> Media {
        Media {
            url: Some(url.into()),
            file_id: None,
            caption: caption.map(str::to_owned),
            filename: None,
            mime_type: None,
            media_id: None,
            download_url: None,
            preview_url: None,
            duration_ms: None,
            size_bytes: None,
        }
    }

    fn id_media(id: &str, caption: Option<&str>) -> Media {
        Media {
            url: None,
            file_id: Some(id.into()),
            caption: caption.map(str::to_owned),
            filename: None,
            mime_type: None,
            media_id: None,
            download_url: None,
            preview_url: None,
            duration_ms: None,
            size_bytes: None,
        }
    }

    fn custom(v: Value) -> Call {
        Call::Custom(v)
    }

    fn text(t: &str) -> Call {
        custom(json!({"msgtype": "text", "text": {"content": t}}))
    }

    fn postback(title: &str, payload: &str) -> Button {
        Button::Postback {
            title: title.into(),
            payload: payload.into(),
        }
    }

    fn url_button(title: &str, url: &str) -> Button {
        Button::Url {
            title: title.into(),
            url: url.into(),
            reuse_seconds: None,
        }
    }

    #[test]
    fn renders_the_content_model_as_wechat_calls() {
        let check = |c: Content, expected: Vec<Call>| {
            assert_eq!(render(&c).unwrap(), expected, "{c:?}");
        };
        check(Content::Text { text: "hi".into() }, vec![text("hi")]);
        check(
            Content::Image(id_media("MEDIA_1", Some("A cat"))),
            vec![
                custom(json!({"msgtype": "image", "image": {"media_id": "MEDIA_1"}})),
                text("A cat"),
            ],
        );
        check(
            Content::Image(url_media("https://x.test/cat.png", None)),
            vec![Call::Upload {
                kind: MediaKind::Image,
                url: "https://x.test/cat.png".into(),
                message: json!({"msgtype": "image", "image": {}}),
            }],
        );
        check(
            Content::Audio(url_media("https://x.test/a.mp3", Some("listen"))),
            vec![
                Call::Upload {
                    kind: MediaKind::Voice,
                    url: "https://x.test/a.mp3".into(),
                    message: json!({"msgtype": "voice", "voice": {}}),
                },
                text("listen"),
            ],
        );
        check(
            Content::Voice(id_media("V1", None)),
            vec![custom(
                json!({"msgtype": "voice", "voice": {"media_id": "V1"}}),
            )],
        );
        check(
            Content::Video(id_media("VID", Some("Trailer"))),
            vec![custom(
                json!({"msgtype": "video", "video": {"media_id": "VID", "title": "Trailer"}}),
            )],
        );
        check(
            Content::File(Media {
                filename: Some("invoice.pdf".into()),
                ..url_media("https://x.test/i.pdf", Some("Your invoice"))
            }),
            vec![text(
                "Your invoice\n<a href=\"https://x.test/i.pdf\">invoice.pdf</a>",
            )],
        );
        check(
            Content::Buttons {
                text: "Were you satisfied?".into(),
                buttons: vec![
                    postback("Yes", "101"),
                    Button::Reply { title: "No".into() },
                    url_button("Help", "https://x.test/help?a=\"b\""),
                ],
            },
            vec![custom(json!({"msgtype": "msgmenu", "msgmenu": {
                "head_content": "Were you satisfied?\n<a href=\"https://x.test/help?a=%22b%22\">Help</a>",
                "list": [{"id": "101", "content": "Yes"}, {"id": "No", "content": "No"}],
                "tail_content": ""}}))],
        );
        check(
            Content::Buttons {
                text: "Docs".into(),
                buttons: vec![
                    url_button("Guide", "https://x.test/g"),
                    url_button("FAQ", "https://x.test/f"),
                ],
            },
            vec![text(
                "Docs\n<a href=\"https://x.test/g\">Guide</a>\n<a href=\"https://x.test/f\">FAQ</a>",
            )],
        );
        let replies: Vec<QuickReply> = (1..=12)
            .map(|i| QuickReply {
                title: format!("R{i}"),
                payload: (i == 1).then(|| "FIRST".to_owned()),
            })
            .collect();
        let out = render(&Content::QuickReplies {
            text: "Pick".into(),
            replies,
        })
        .unwrap();
        let [Call::Custom(a), Call::Custom(b)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(a["msgmenu"]["head_content"], "Pick");
        assert_eq!(a["msgmenu"]["list"].as_array().unwrap().len(), 10);
        assert_eq!(
            a["msgmenu"]["list"][0],
            json!({"id": "FIRST", "content": "R1"})
        );
        assert_eq!(
            a["msgmenu"]["list"][1],
            json!({"id": "R2", "content": "R2"})
        );
        assert_eq!(b["msgmenu"]["head_content"], "");
        assert_eq!(b["msgmenu"]["list"].as_array().unwrap().len(), 2);

        let long = render(&Content::Text {
            text: "x".repeat(2049),
        })
        .unwrap();
        assert_eq!(long, vec![text(&"x".repeat(2048)), text("x")]);
    }

    #[test]
    fn carousels_become_one_news_message_per_card() {
        let cards = vec![
            Card {
                title: "Shoes".into(),
                subtitle: Some("Red".into()),
                image_url: Some("https://x.test/shoes.jpg".into()),
                buttons: vec![
                    url_button("View", "https://x.test/shoes"),
                    postback("Buy", "BUY_SHOES"),
                ],
            },
            Card {
                title: "Hat".into(),
                subtitle: None,
                image_url: Some("https://x.test/hat.jpg".into()),
                buttons: vec![],
            },
            Card {
                title: "Gift card".into(),
                subtitle: Some("Any amount".into()),
                image_url: None,
                buttons: vec![postback("Buy", "BUY_GIFT")],
            },
        ];
        let out = render(&Content::Carousel { cards }).unwrap();
        assert_eq!(
            out,
            vec![
                custom(
                    json!({"msgtype": "news", "news": {"articles": [{"title": "Shoes",
                    "description": "Red", "url": "https://x.test/shoes",
                    "picurl": "https://x.test/shoes.jpg"}]}})
                ),
                custom(
                    json!({"msgtype": "msgmenu", "msgmenu": {"head_content": "Shoes",
                    "list": [{"id": "BUY_SHOES", "content": "Buy"}], "tail_content": ""}})
                ),
                custom(
                    json!({"msgtype": "news", "news": {"articles": [{"title": "Hat",
                    "url": "https://x.test/hat.jpg", "picurl": "https://x.test/hat.jpg"}]}})
                ),
                custom(
                    json!({"msgtype": "msgmenu", "msgmenu": {"head_content": "Gift card\nAny amount",
                    "list": [{"id": "BUY_GIFT", "content": "Buy"}], "tail_content": ""}})
                ),
            ]
        );
    }

    fn template_of(v: Value) -> Template {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn templates_render_as_template_messages() {
        let t = template_of(
            json!({"name": "order_ready", "language": "zh_CN", "components": [
            {"type": "header", "parameters": [{"type": "text", "text": "Your order"}]},
            {"type": "body", "parameters": [
                {"type": "text", "text": "A-17", "parameter_name": "order_no"},
                {"type": "currency", "currency": {"fallback_value": "¥12.50", "code": "CNY", "amount_1000": 12500}},
                {"type": "date_time", "date_time": {"fallback_value": "May 1"}}]},
            {"type": "button", "sub_type": "url", "index": 0,
             "parameters": [{"type": "text", "text": "https://x.test/orders/A-17"}]}]}),
        );
        assert_eq!(
            render(&Content::Template(t.into())).unwrap(),
            vec![Call::Template(json!({"template_id": "order_ready",
                "url": "https://x.test/orders/A-17",
                "data": {"first": {"value": "Your order"}, "order_no": {"value": "A-17"},
                         "keyword2": {"value": "¥12.50"}, "keyword3": {"value": "May 1"}}}))]
        );
        let plain = Template::with_body("tpl", "zh_CN", &["a".into(), "b".into()]);
        assert_eq!(
            render(&Content::Template(plain.into())).unwrap(),
            vec![Call::Template(json!({"template_id": "tpl",
                "data": {"keyword1": {"value": "a"}, "keyword2": {"value": "b"}}}))]
        );
        for refused in [
            json!({"type": "header", "parameters": [{"type": "image", "image": {"link": "https://x.test/h.png"}}]}),
            json!({"type": "button", "sub_type": "quick_reply", "index": 0, "parameters": [{"type": "payload", "payload": "STOP"}]}),
            json!({"type": "button", "sub_type": "copy_code", "index": 0, "parameters": [{"type": "text", "text": "123456"}]}),
            json!({"type": "button", "sub_type": "url", "index": 0, "parameters": [{"type": "text", "text": "orders/A-17"}]}),
        ] {
            let t = template_of(json!({"name": "t", "language": "zh_CN", "components": [refused]}));
            let e = render(&Content::Template(t.into())).unwrap_err();
            assert_eq!(code_of(&e), ("invalid_request", None), "{refused}");
        }
    }

    #[test]
    fn degraded_and_refused_content() {
        let sticker = degrade(
            &Content::Sticker { id: "s".into() },
            &CAPABILITIES,
            "WeChat",
        )
        .unwrap_err();
        assert_eq!(sticker.code, "unsupported_content");
        let location = degrade(
            &Content::Location(patchbay_contract::content::Location {
                latitude: 31.23,
                longitude: 121.47,
                name: Some("The Bund".into()),
                address: None,
            }),
            &CAPABILITIES,
            "WeChat",
        )
        .unwrap();
        assert_eq!(
            render(&location[0]).unwrap(),
            vec![text(
                "The Bund\nhttps://www.openstreetmap.org/?mlat=31.23&mlon=121.47"
            )]
        );
        let file = render(&Content::File(id_media("F1", None))).unwrap_err();
        assert_eq!(code_of(&file), ("unsupported_content", None));
        assert_eq!(
            request(
                "oUser",
                json!({"msgtype": "text", "text": {"content": "a"}})
            ),
            json!({"touser": "oUser", "msgtype": "text", "text": {"content": "a"}})
        );
    }

    #[test]
    fn upload_file_names_come_from_the_url_and_content_type() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        for (url, ct, kind, expected) in [
            (
                "https://x.test/a/cat.png",
                Some("image/png"),
                MediaKind::Image,
                "cat.png",
            ),
            (
                "https://x.test/a/cat.PNG?v=2",
                None,
                MediaKind::Image,
                "cat.PNG",
            ),
            (
                "https://x.test/photo",
                Some("image/jpeg"),
                MediaKind::Image,
                "photo.jpg",
            ),
            (
                "https://x.test/img.php?id=3",
                Some("image/gif"),
                MediaKind::Image,
                "img.gif",
            ),
            (
                "https://x.test/",
                Some("audio/mpeg"),
                MediaKind::Voice,
                "media.mp3",
            ),
            ("https://x.test/", None, MediaKind::Video, "media"),
            (
                "https://x.test/clip",
                Some("image/png"),
                MediaKind::Video,
                "clip",
            ),
            (
                "https://x.test/we%22ird.mp4",
                None,
                MediaKind::Video,
                "we%22ird.mp4",
            ),
        ] {
            assert_eq!(filename(&u(url), ct, kind), expected, "{url}");
        }
        let file = Download {
            filename: "cat.png".into(),
            content_type: "image/png".into(),
            bytes: b"--patchbay-media-00000000 inside".to_vec(),
        };
        let (ct, body) = multipart(&file);
        assert_eq!(ct, "multipart/form-data; boundary=patchbay-media-00000001");
        let body = String::from_utf8(body).unwrap();
        assert_eq!(
            body,
            "--patchbay-media-00000001\r\nContent-Disposition: form-data; name=\"media\"; \
             filename=\"cat.png\"\r\nContent-Type: image/png\r\n\r\n--patchbay-media-00000000 \
             inside\r\n--patchbay-media-00000001--\r\n"
        );
    }

    // ---- HTTP, against the fake WeChat ----------------------------------------------------

    const APP: &str = "wx0000000000000001";
    const SECRET: &str = "s3cret";

    /// Fetches `/cgi-bin/token` itself and keeps the token until it is invalidated (or, when
    /// `sticky`, forever).
    struct FetchingTokens {
        http: reqwest::Client,
        current: Mutex<Option<String>>,
        fetches: AtomicUsize,
        invalidated: Mutex<Vec<String>>,
        sticky: bool,
    }

    impl FetchingTokens {
        fn new(sticky: bool) -> Self {
            Self {
                http: patchbay_platform::http::client_builder(Duration::from_secs(5))
                    .build()
                    .unwrap(),
                current: Mutex::new(None),
                fetches: AtomicUsize::new(0),
                invalidated: Mutex::new(Vec::new()),
                sticky,
            }
        }
    }

    impl AccessTokens for FetchingTokens {
        async fn get(
            &self,
            creds: &WechatCredentials,
            base_url: &str,
        ) -> Result<String, SendError> {
            let cached = self.current.lock().unwrap().clone();
            if let Some(t) = cached {
                return Ok(t);
            }
            let url = format!(
                "{base_url}/cgi-bin/token?grant_type=client_credential&appid={}&secret={}",
                creds.app_id, creds.app_secret
            );
            let answer: Value = self
                .http
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let token = answer["access_token"].as_str().unwrap().to_owned();
            self.fetches.fetch_add(1, Ordering::SeqCst);
            *self.current.lock().unwrap() = Some(token.clone());
            Ok(token)
        }

        async fn invalidate(&self, _creds: &WechatCredentials, token: &str) {
            self.invalidated.lock().unwrap().push(token.to_owned());
            let mut current = self.current.lock().unwrap();
            if !self.sticky && current.as_deref() == Some(token) {
                *current = None;
            }
        }
    }

    fn creds() -> WechatCredentials {
        WechatCredentials {
            app_id: APP.into(),
            app_secret: SECRET.into(),
            token: "spamtest".into(),
            encoding_aes_key: None,
            customer_service_api: true,
        }
    }

    fn limits() -> Limits {
        Limits {
            per_channel_per_second: 100,
            per_conversation_per_second: 1,
            per_conversation_burst: 5,
        }
    }

    async fn fake() -> FakeWechat {
        let wx = FakeWechat::start().await;
        wx.add_app(APP, SECRET);
        wx.add_follower(APP, "oFollower");
        wx
    }

    fn sender(wx: &FakeWechat, sticky: bool) -> WechatSender<FetchingTokens> {
        WechatSender::new(
            &wx.base_url(),
            Duration::from_secs(5),
            limits(),
            FetchingTokens::new(sticky),
        )
        .unwrap()
        .allow_private_media(true)
        .unwrap()
    }

    fn job(to: &str, content: Content) -> OutboundJob {
        OutboundJob {
            v: V1,
            message_id: "msg_1".into(),
            bot_id: "bot_1".into(),
            channel: ChannelRef {
                id: "ch_1".into(),
                platform: Platform::Wechat,
            },
            user_id: "usr_1".into(),
            conversation_id: "cnv_1".into(),
            address: to.into(),
            content,
            source: SendSource::Api,
            source_id: None,
            in_reply_to: None,
            tag: None,
            created_at: Utc::now(),
            fresh: true,
            also: Vec::new(),
        }
    }

    async fn send_to(
        s: &WechatSender<FetchingTokens>,
        wx: &FakeWechat,
        creds: &WechatCredentials,
        to: &str,
        content: Content,
    ) -> Result<Sent, SendError> {
        let base = wx.base_url();
        let target = Target {
            credentials: creds,
            base_url: &base,
        };
        s.send(target, &job(to, content)).await
    }

    #[tokio::test]
    async fn a_text_reaches_a_follower() {
        let wx = fake().await;
        let s = sender(&wx, false);
        let sent = send_to(
            &s,
            &wx,
            &creds(),
            "oFollower",
            Content::Text { text: "hi".into() },
        )
        .await
        .unwrap();
        assert_eq!(
            sent,
            Sent {
                platform_message_id: None,
                media_reference: None,
            }
        );
        let calls = wx.accepted("custom/send");
        assert_eq!(
            calls[0].body,
            json!({"touser": "oFollower", "msgtype": "text", "text": {"content": "hi"}})
        );
        assert_eq!(calls[0].app_id.as_deref(), Some(APP));

        let han = "汉".repeat(700);
        send_to(
            &s,
            &wx,
            &creds(),
            "oFollower",
            Content::Text { text: han.clone() },
        )
        .await
        .unwrap();
        let calls = wx.accepted("custom/send");
        assert_eq!(calls.len(), 3, "2100 bytes take two messages");
        let pieces: Vec<&str> = calls[1..]
            .iter()
            .map(|c| c.body["text"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(pieces.concat(), han);
        assert_eq!(s.tokens().fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_replaced_token_is_invalidated_and_the_call_made_once_more() {
        let wx = fake().await;
        let s = sender(&wx, false);
        let hi = || Content::Text { text: "hi".into() };
        send_to(&s, &wx, &creds(), "oFollower", hi()).await.unwrap();
        let first = wx.current_token(APP).unwrap();
        wx.rotate_token(APP).unwrap();
        send_to(&s, &wx, &creds(), "oFollower", hi()).await.unwrap();
        let codes: Vec<i64> = wx
            .calls_to("custom/send")
            .iter()
            .map(|c| c.errcode)
            .collect();
        assert_eq!(codes, [0, 40001, 0]);
        assert_eq!(s.tokens().fetches.load(Ordering::SeqCst), 2);
        assert_eq!(*s.tokens().invalidated.lock().unwrap(), vec![first]);

        // A token store that keeps handing out the refused token: one more call, then retry.
        let wx = fake().await;
        let s = sender(&wx, true);
        send_to(&s, &wx, &creds(), "oFollower", hi()).await.unwrap();
        wx.rotate_token(APP).unwrap();
        let e = send_to(&s, &wx, &creds(), "oFollower", hi())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, SendError::Retryable { reason, .. } if reason.contains("40001")),
            "{e:?}"
        );
        let codes: Vec<i64> = wx
            .calls_to("custom/send")
            .iter()
            .map(|c| c.errcode)
            .collect();
        assert_eq!(codes, [0, 40001, 40001]);
        let token = wx.current_token(APP).unwrap();
        assert!(!e.to_string().contains(&token), "no token in error text");
    }

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n-a-tiny-cat";

    /// Serves `/media/cat.png` (image/png), `/media/photo` (image/jpeg), `/media/moved`
    /// (a redirect to the cat) and 404 elsewhere, on 127.0.0.1.
    async fn media_server() -> String {
        use axum::http::StatusCode;
        use axum::http::header::{CONTENT_TYPE, LOCATION};
        use axum::routing::get;
        let app = axum::Router::new()
            .route(
                "/media/cat.png",
                get(|| async { ([(CONTENT_TYPE, "image/png")], PNG) }),
            )
            .route(
                "/media/photo",
                get(|| async { ([(CONTENT_TYPE, "image/jpeg; charset=binary")], PNG) }),
            )
            .route(
                "/media/moved",
                get(|| async { (StatusCode::FOUND, [(LOCATION, "/media/cat.png")]) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn an_image_by_url_is_uploaded_then_sent_with_its_caption_after() {
        let wx = fake().await;
        let s = sender(&wx, false);
        let media = media_server().await;
        let cat = format!("{media}/media/cat.png");
        send_to(
            &s,
            &wx,
            &creds(),
            "oFollower",
            Content::Image(url_media(&cat, Some("A cat"))),
        )
        .await
        .unwrap();
        let uploads = wx.uploads();
        assert_eq!(uploads.len(), 1);
        let up = &uploads[0];
        assert_eq!(
            (
                up.kind.as_str(),
                up.filename.as_deref(),
                up.content_type.as_deref()
            ),
            ("image", Some("cat.png"), Some("image/png"))
        );
        assert_eq!(up.bytes, PNG);
        let sent = wx.accepted("custom/send");
        assert_eq!(
            sent.iter().map(|c| c.body.clone()).collect::<Vec<_>>(),
            vec![
                json!({"touser": "oFollower", "msgtype": "image", "image": {"media_id": up.media_id}}),
                json!({"touser": "oFollower", "msgtype": "text", "text": {"content": "A cat"}}),
            ]
        );

        // The same URL again: the media_id is reused. Another one without an extension gets
        // one from its content type; a redirect is followed.
        send_to(
            &s,
            &wx,
            &creds(),
            "oFollower",
            Content::Image(url_media(&cat, None)),
        )
        .await
        .unwrap();
        assert_eq!(wx.uploads().len(), 1);
        for path in ["/media/photo", "/media/moved"] {
            send_to(
                &s,
                &wx,
                &creds(),
                "oFollower",
                Content::Image(url_media(&format!("{media}{path}"), None)),
            )
            .await
            .unwrap();
        }
        let names: Vec<Option<String>> = wx.uploads().into_iter().map(|u| u.filename).collect();
        assert_eq!(
            names,
            [
                Some("cat.png".into()),
                Some("photo.jpg".into()),
                Some("cat.png".into())
            ]
        );

        let e = send_to(
            &s,
            &wx,
            &creds(),
            "oFollower",
            Content::Image(url_media(&format!("{media}/media/gone.png"), None)),
        )
        .await
        .unwrap_err();
        assert_eq!(code_of(&e), ("media_unavailable", None), "{e:?}");
        assert_eq!(wx.uploads().len(), 3);
    }

    #[tokio::test]
    async fn media_on_private_addresses_is_refused_unless_allowed() {
        let wx = fake().await;
        let s = WechatSender::new(
            &wx.base_url(),
            Duration::from_secs(5),
            limits(),
            FetchingTokens::new(false),
        )
        .unwrap();
        let media = media_server().await;
        let e = send_to(
            &s,
            &wx,
            &creds(),
            "oFollower",
            Content::Image(url_media(&format!("{media}/media/cat.png"), None)),
        )
        .await
        .unwrap_err();
        assert_eq!(code_of(&e), ("media_unavailable", None), "{e:?}");
        let e = send_to(
            &s,
            &wx,
            &creds(),
            "oFollower",
            Content::Image(url_media("http://localhost:9/cat.png", None)),
        )
        .await
        .unwrap_err();
        assert_eq!(code_of(&e), ("media_unavailable", None), "{e:?}");
        assert!(wx.calls().is_empty(), "nothing reached WeChat");
    }

    #[tokio::test]
    async fn a_template_answers_its_msgid() {
        let wx = fake().await;
        wx.add_template(APP, "order_ready");
        let s = sender(&wx, false);
        let t = template_of(
            json!({"name": "order_ready", "language": "zh_CN", "components": [
            {"type": "body", "parameters": [
                {"type": "text", "text": "Ana", "parameter_name": "name"},
                {"type": "text", "text": "A-17"}]},
            {"type": "button", "sub_type": "url", "index": 0,
             "parameters": [{"type": "text", "text": "https://x.test/o/A-17"}]}]}),
        );
        // Accounts without the customer-service API may still send templates.
        let no_cs = WechatCredentials {
            customer_service_api: false,
            ..creds()
        };
        let sent = send_to(&s, &wx, &no_cs, "oFollower", Content::Template(t.into()))
            .await
            .unwrap();
        let call = &wx.accepted("template/send")[0];
        assert_eq!(
            call.body,
            json!({"touser": "oFollower", "template_id": "order_ready", "url": "https://x.test/o/A-17",
                   "data": {"name": {"value": "Ana"}, "keyword2": {"value": "A-17"}}})
        );
        let id = sent.platform_message_id.unwrap();
        assert!(id.parse::<i64>().unwrap() > 0, "{id}");

        let e = send_to(
            &s,
            &wx,
            &no_cs,
            "oFollower",
            Content::Text { text: "hi".into() },
        )
        .await
        .unwrap_err();
        // Without the customer-service API, a message that answers nothing inline is too late.
        assert_eq!(code_of(&e), ("outside_window", None));
        assert!(wx.calls_to("custom/send").is_empty());
    }

    #[tokio::test]
    async fn a_user_who_does_not_follow_is_unavailable() {
        let wx = fake().await;
        let s = sender(&wx, false);
        let e = send_to(
            &s,
            &wx,
            &creds(),
            "oStranger",
            Content::Text { text: "hi".into() },
        )
        .await
        .unwrap_err();
        assert_eq!(code_of(&e), ("user_unavailable", Some(43004)), "{e:?}");
        wx.close_window(APP, "oFollower");
        let e = send_to(
            &s,
            &wx,
            &creds(),
            "oFollower",
            Content::Text { text: "hi".into() },
        )
        .await
        .unwrap_err();
        assert_eq!(code_of(&e), ("outside_window", Some(45015)), "{e:?}");
        wx.open_window(APP, "oFollower");
        wx.fail_next(-1);
        let e = send_to(
            &s,
            &wx,
            &creds(),
            "oFollower",
            Content::Text { text: "hi".into() },
        )
        .await
        .unwrap_err();
        assert!(matches!(e, SendError::Retryable { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn profiles_of_followers_and_strangers() {
        let wx = fake().await;
        wx.add_follower_with(
            APP,
            "oEn",
            Follower {
                language: "en".into(),
                subscribe_time: 1_767_225_600,
                unionid: Some("uUnion".into()),
                ..Follower::default()
            },
        );
        wx.add_follower("wxother0000000001", "oOther");
        let s = sender(&wx, false);
        let base = wx.base_url();
        assert_eq!(
            s.profile(&creds(), &base, "oEn").await.unwrap(),
            Some(WechatProfile {
                language: Some("en".into()),
                subscribed: true,
                subscribe_time: DateTime::from_timestamp(1_767_225_600, 0),
                unionid: Some("uUnion".into()),
            })
        );
        assert_eq!(
            s.profile(&creds(), &base, "oStranger").await.unwrap(),
            Some(WechatProfile {
                language: None,
                subscribed: false,
                subscribe_time: None,
                unionid: None,
            })
        );
        assert_eq!(s.profile(&creds(), &base, "oOther").await.unwrap(), None);
        let info = &wx.calls_to("user/info")[0];
        assert_eq!(
            (info.query["openid"].as_str(), info.query["lang"].as_str()),
            ("oEn", "zh_CN")
        );
    }
}
