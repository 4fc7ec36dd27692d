//! The one message-content union shared by every platform, inbound and outbound.
//!
//! Outbound senders declare which variants their platform supports and degrade the rest (see
//! `patchbay-platform`); inbound parsers map what users send onto the same variants.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A piece of message content, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Content {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// A picture.
    Image(Media),
    /// An audio file.
    Audio(Media),
    /// A voice note.
    Voice(Media),
    /// A video.
    Video(Media),
    /// Any other file.
    File(Media),
    /// A place on the map.
    Location(Location),
    /// A sticker, by the platform's sticker id.
    Sticker {
        /// The platform's sticker id.
        id: String,
    },
    /// Text with buttons under it.
    Buttons {
        /// The text above the buttons.
        text: String,
        /// One to ten buttons.
        buttons: Vec<Button>,
    },
    /// Text with quick replies the user can tap instead of typing.
    QuickReplies {
        /// The text above the replies.
        text: String,
        /// One to thirteen replies.
        replies: Vec<QuickReply>,
    },
    /// A horizontal list of cards.
    Carousel {
        /// One to ten cards.
        cards: Vec<Card>,
    },
    /// A template: one of the bot's registry by id (`{"id": "tpl_…", "meta": {…}}`), rendered
    /// by the router for the recipient's platform, or WhatsApp's own form inline (`name`,
    /// `language`, `components`), which other platforms refuse.
    Template(TemplateMessage),
    /// A message in one platform's own format, passed through unread (LINE's Flex Messages):
    /// sent only through that platform's channels, refused (`unsupported_content`) by every
    /// other.
    Native {
        /// The platform whose message object `message` is.
        platform: crate::wire::Platform,
        /// The platform's message object as its API takes it, e.g. LINE's
        /// `{"type": "flex", "altText": "…", "contents": {…}}`; at most 64 KiB as JSON.
        message: serde_json::Value,
    },
    /// Sets (or removes) one of the user's contact fields; nothing goes to the platform. The
    /// message is kept in the conversation's history with status `applied`.
    Field(FieldAssignment),
    /// Inbound: the user pressed a postback button or a quick reply.
    Postback {
        /// The button's payload.
        payload: String,
        /// The button's title, when the platform tells.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
}

impl Content {
    /// The `type` tag of this content.
    pub fn kind(&self) -> &'static str {
        match self {
            Content::Text { .. } => "text",
            Content::Image(_) => "image",
            Content::Audio(_) => "audio",
            Content::Voice(_) => "voice",
            Content::Video(_) => "video",
            Content::File(_) => "file",
            Content::Location(_) => "location",
            Content::Sticker { .. } => "sticker",
            Content::Buttons { .. } => "buttons",
            Content::QuickReplies { .. } => "quick_replies",
            Content::Carousel { .. } => "carousel",
            Content::Template(_) => "template",
            Content::Native { .. } => "native",
            Content::Field(_) => "field",
            Content::Postback { .. } => "postback",
        }
    }

    /// Checks what the schema cannot: lengths, counts, and that media name a source. The
    /// error names the offending field relative to this content, e.g. `buttons[2].title`.
    pub fn validate(&self) -> Result<(), FieldError> {
        fn non_empty(field: &str, v: &str) -> Result<(), FieldError> {
            if v.trim().is_empty() {
                return Err(FieldError::new(field, "must not be empty"));
            }
            Ok(())
        }
        fn count<T>(field: &str, v: &[T], max: usize) -> Result<(), FieldError> {
            if v.is_empty() || v.len() > max {
                return Err(FieldError::new(
                    field,
                    format!("must have between 1 and {max} entries"),
                ));
            }
            Ok(())
        }
        match self {
            Content::Text { text } => {
                non_empty("text", text)?;
                if text.chars().count() > 4096 {
                    return Err(FieldError::new("text", "must be at most 4096 characters"));
                }
                Ok(())
            }
            Content::Image(m)
            | Content::Audio(m)
            | Content::Voice(m)
            | Content::Video(m)
            | Content::File(m) => m.validate(),
            Content::Location(l) => l.validate(),
            Content::Sticker { id } => non_empty("id", id),
            Content::Buttons { text, buttons } => {
                non_empty("text", text)?;
                count("buttons", buttons, 10)?;
                for (i, b) in buttons.iter().enumerate() {
                    b.validate()
                        .map_err(|e| e.within(&format!("buttons[{i}]")))?;
                }
                Ok(())
            }
            Content::QuickReplies { text, replies } => {
                non_empty("text", text)?;
                count("replies", replies, 13)?;
                for (i, r) in replies.iter().enumerate() {
                    non_empty(&format!("replies[{i}].title"), &r.title)?;
                }
                Ok(())
            }
            Content::Carousel { cards } => {
                count("cards", cards, 10)?;
                for (i, c) in cards.iter().enumerate() {
                    non_empty(&format!("cards[{i}].title"), &c.title)?;
                    for (j, b) in c.buttons.iter().enumerate() {
                        b.validate()
                            .map_err(|e| e.within(&format!("cards[{i}].buttons[{j}]")))?;
                    }
                }
                Ok(())
            }
            Content::Template(t) => t.validate(),
            Content::Native { message, .. } => {
                let object = message.as_object().is_some_and(|o| !o.is_empty());
                if !object {
                    return Err(FieldError::new(
                        "message",
                        "must be the platform's message object",
                    ));
                }
                if message.to_string().len() > NATIVE_MAX_BYTES {
                    return Err(FieldError::new(
                        "message",
                        format!("must be at most {NATIVE_MAX_BYTES} bytes as JSON"),
                    ));
                }
                Ok(())
            }
            Content::Field(f) => f.change().map(|_| ()),
            Content::Postback { payload, .. } => non_empty("payload", payload),
        }
    }
}

/// A field message, in one of two forms: Web1on1's text, `{"text": ".licenseplate XX-99-WZ"}`
/// (`.licenseplate` alone removes the field), or `{"field": "licenseplate", "value":
/// "XX-99-WZ"}` (a `null` or absent value removes it). See [`crate::fields`] for the limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldAssignment {
    /// `.<field> <value>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The field's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Its new value; `null` or absent removes the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl FieldAssignment {
    /// The field this sets and its value (`None`: removed), checked.
    pub fn change(&self) -> Result<(String, Option<String>), FieldError> {
        match (&self.text, &self.field) {
            (Some(text), None) if self.value.is_none() => {
                crate::fields::parse_dot_form(text).map_err(|m| FieldError::new("text", m))
            }
            (None, Some(name)) => {
                crate::fields::check_name(name).map_err(|m| FieldError::new("field", m))?;
                if let Some(v) = &self.value {
                    crate::fields::check_value(v).map_err(|m| FieldError::new("value", m))?;
                }
                Ok((name.clone(), self.value.clone()))
            }
            _ => Err(FieldError::new(
                "field",
                "give either text (`.<field> <value>`) or field and value, not both",
            )),
        }
    }
}

/// The largest [`Content::Native`] message, as JSON.
pub const NATIVE_MAX_BYTES: usize = 64 << 10;

/// A media attachment: a public URL for Patchbay or the platform to fetch, or the platform's
/// own file id (what inbound media carry). In the events Patchbay delivers, media a user sent
/// also carry `media_id` and `download_url`, where the bot fetches the file with its API key
/// (`GET /v1/media/{media_id}`): platform file ids are of no use outside Patchbay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// A URL the platform can fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The platform's file id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// Patchbay's id of the file (`med_…`): in events, of media a user sent; in sends, of a
    /// file the bot uploaded (`POST /v1/media`), used when neither `url` nor `file_id` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    /// Where the bot downloads it: `<public URL>/v1/media/<media_id>` (events only, ignored in
    /// sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    /// A caption shown with the media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// The file name, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// The MIME type, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// A still picture of a video, an absolute http(s) URL: LINE shows a video only with one
    /// (`previewImageUrl`), Viber uses it as the `thumbnail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_url: Option<String>,
    /// How long an audio or video plays, in milliseconds: LINE shows audio only with it,
    /// Viber's video takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The file's size in bytes: Viber shows a video or a file only with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

impl Media {
    /// The media of `content`, if it is an image, audio, video or file.
    pub fn of(content: &Content) -> Option<&Media> {
        match content {
            Content::Image(m) | Content::Audio(m) | Content::Video(m) | Content::File(m) => Some(m),
            _ => None,
        }
    }

    /// [`Media::of`], to change.
    pub fn of_mut(content: &mut Content) -> Option<&mut Media> {
        match content {
            Content::Image(m) | Content::Audio(m) | Content::Video(m) | Content::File(m) => Some(m),
            _ => None,
        }
    }

    fn validate(&self) -> Result<(), FieldError> {
        match (&self.url, &self.file_id) {
            (None, None) if self.media_id.is_some() => Ok(()),
            (None, None) => Err(FieldError::new(
                "url",
                "one of url, file_id or media_id is required",
            )),
            (Some(u), _) if !(u.starts_with("https://") || u.starts_with("http://")) => {
                Err(FieldError::new("url", "must be an absolute http(s) URL"))
            }
            _ => Ok(()),
        }?;
        if let Some(u) = &self.preview_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(FieldError::new(
                "preview_url",
                "must be an absolute http(s) URL",
            ));
        }
        if self.duration_ms == Some(0) {
            return Err(FieldError::new("duration_ms", "must be positive"));
        }
        if self.size_bytes == Some(0) {
            return Err(FieldError::new("size_bytes", "must be positive"));
        }
        Ok(())
    }
}

/// A place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Latitude in degrees, -90 to 90.
    pub latitude: f64,
    /// Longitude in degrees, -180 to 180.
    pub longitude: f64,
    /// The place's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The place's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl Location {
    fn validate(&self) -> Result<(), FieldError> {
        if !(-90.0..=90.0).contains(&self.latitude) {
            return Err(FieldError::new("latitude", "must be between -90 and 90"));
        }
        if !(-180.0..=180.0).contains(&self.longitude) {
            return Err(FieldError::new("longitude", "must be between -180 and 180"));
        }
        Ok(())
    }
}

/// How long a `:code` link opens again after its first opening, unless its button says.
pub const DEFAULT_LINK_REUSE_SECONDS: u32 = 600;

/// The longest a button may ask its link to open again after the first opening.
pub const MAX_LINK_REUSE_SECONDS: u32 = 86_400;

/// A button, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Button {
    /// Sends `payload` back to the bot as a `postback` message.
    Postback {
        /// The label.
        title: String,
        /// What the bot receives (1–64 bytes on Telegram).
        payload: String,
    },
    /// Opens a URL. A URL containing `:code` becomes a one-time-code link.
    Url {
        /// The label.
        title: String,
        /// The URL.
        url: String,
        /// For a `:code` URL: how long after its first opening the link still opens, on the
        /// device that opened it first only (a forwarded message opens nothing); `0`: once.
        /// Default [`DEFAULT_LINK_REUSE_SECONDS`], at most [`MAX_LINK_REUSE_SECONDS`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reuse_seconds: Option<u32>,
    },
    /// Sends its title back as if the user typed it.
    Reply {
        /// The label and the text sent.
        title: String,
    },
}

impl Button {
    /// The label.
    pub fn title(&self) -> &str {
        match self {
            Button::Postback { title, .. }
            | Button::Url { title, .. }
            | Button::Reply { title } => title,
        }
    }

    fn validate(&self) -> Result<(), FieldError> {
        if self.title().trim().is_empty() {
            return Err(FieldError::new("title", "must not be empty"));
        }
        match self {
            Button::Postback { payload, .. } if payload.is_empty() || payload.len() > 1000 => {
                Err(FieldError::new("payload", "must be 1 to 1000 bytes"))
            }
            Button::Url { url, .. }
                if !(url.starts_with("https://") || url.starts_with("http://")) =>
            {
                Err(FieldError::new("url", "must be an absolute http(s) URL"))
            }
            Button::Url {
                reuse_seconds: Some(s),
                ..
            } if *s > MAX_LINK_REUSE_SECONDS => Err(FieldError::new(
                "reuse_seconds",
                format!("must be at most {MAX_LINK_REUSE_SECONDS}"),
            )),
            _ => Ok(()),
        }
    }
}

/// A quick reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuickReply {
    /// The label.
    pub title: String,
    /// What the bot receives; the title when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// One card of a carousel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// The title.
    pub title: String,
    /// Text under the title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<String>,
    /// A picture on the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// Up to three buttons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Button>,
}

/// The content of a `template` message: a registry template by id, or a platform template
/// inline. Told apart by `id`: `{"type": "template", "id": "tpl_…"}` names the registry.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum TemplateMessage {
    /// One of the bot's templates (`/v1/templates`).
    Registered(TemplateRef),
    /// A platform's template as its API takes it (WhatsApp's).
    Inline(Template),
}

impl<'de> Deserialize<'de> for TemplateMessage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // By `id`, so a malformed template gets its own form's error rather than "no variant
        // matched".
        let v = serde_json::Value::deserialize(d)?;
        let registered = v.get("id").is_some();
        let parsed = if registered {
            serde_json::from_value(v).map(TemplateMessage::Registered)
        } else {
            serde_json::from_value(v).map(TemplateMessage::Inline)
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

impl From<Template> for TemplateMessage {
    fn from(t: Template) -> Self {
        TemplateMessage::Inline(t)
    }
}

impl TemplateMessage {
    /// Checks the form given; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            TemplateMessage::Registered(r) => r.validate(),
            TemplateMessage::Inline(t) => t.validate(),
        }
    }

    /// The platform template a sender renders: a registry template reaches a sender only
    /// rendered (by the router), so one that did not is refused.
    pub fn inline(&self) -> Result<&Template, FieldError> {
        match self {
            TemplateMessage::Inline(t) => Ok(t),
            TemplateMessage::Registered(r) => Err(FieldError::new(
                "id",
                format!(
                    "template {} was not rendered for the channel (only the router renders \
                     registry templates)",
                    r.id
                ),
            )),
        }
    }
}

/// A registry template named by a send, with the values of its `meta` variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRef {
    /// `tpl_…`, a template of the sending bot.
    pub id: String,
    /// Values of the template's own variables (`{{PlanTime}}`): every one it uses, as text.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub meta: std::collections::BTreeMap<String, String>,
}

impl TemplateRef {
    /// Checks the id's shape and the meta values' sizes.
    pub fn validate(&self) -> Result<(), FieldError> {
        let id_ok = self.id.starts_with("tpl_")
            && self.id.len() <= 64
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !id_ok {
            return Err(FieldError::new("id", "must be a template id, tpl_…"));
        }
        if self.meta.len() > 64 {
            return Err(FieldError::new("meta", "must have at most 64 keys"));
        }
        for (k, v) in &self.meta {
            if k.is_empty() || k.len() > 64 || v.chars().count() > 1024 {
                return Err(FieldError::new(
                    format!("meta.{k}"),
                    "a key is 1 to 64 characters, its value at most 1024",
                ));
            }
        }
        Ok(())
    }
}

/// A pre-approved template message, shaped like the WhatsApp Cloud API's `template` object so a
/// sender can render it field by field: `{"type": "template", "name": "order_ready",
/// "language": "en_US", "components": [{"type": "body", "parameters": [{"type": "text",
/// "text": "A-17"}]}]}` becomes `"template": {"name", "language": {"code"}, "components"}`.
/// Templates are the only content WhatsApp accepts outside its customer-service window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The template's name as approved on the platform (WhatsApp: `a-z`, `0-9`, `_`), or its
    /// id (WeChat's template ids mix cases and `-`); at most 512 characters.
    pub name: String,
    /// Its language code, e.g. `en_US` (WhatsApp's `language.code`).
    pub language: String,
    /// Values for the template's variables: at most one header, one body, and up to ten
    /// buttons (each `index` once). Absent when the template has no variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<TemplateComponent>,
}

impl Template {
    /// A template whose body variables are `body_parameters`, in order (none: no components).
    pub fn with_body(name: &str, language: &str, body_parameters: &[String]) -> Self {
        let components = if body_parameters.is_empty() {
            Vec::new()
        } else {
            vec![TemplateComponent::Body {
                parameters: body_parameters
                    .iter()
                    .map(|t| TemplateParameter::Text {
                        text: t.clone(),
                        parameter_name: None,
                    })
                    .collect(),
            }]
        };
        Self {
            name: name.to_owned(),
            language: language.to_owned(),
            components,
        }
    }

    /// Checks name, language and components; the error names the field, e.g.
    /// `components[1].parameters[0].text`.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.name.is_empty()
            || self.name.len() > 512
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(FieldError::new(
                "name",
                "must be 1-512 characters of A-Z, a-z, 0-9, '_' and '-'",
            ));
        }
        let lang_ok = (2..=16).contains(&self.language.len())
            && self
                .language
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !lang_ok {
            return Err(FieldError::new(
                "language",
                "must be a language code such as en or en_US",
            ));
        }
        let (mut header, mut body) = (false, false);
        let mut button_indexes = Vec::new();
        for (i, c) in self.components.iter().enumerate() {
            let at = format!("components[{i}]");
            let mut button = false;
            let seen = match c {
                TemplateComponent::Header { .. } => &mut header,
                TemplateComponent::Body { .. } => &mut body,
                TemplateComponent::Button { index, .. } => {
                    if *index > 9 {
                        return Err(FieldError::new(
                            format!("{at}.index"),
                            "must be between 0 and 9",
                        ));
                    }
                    if button_indexes.contains(index) {
                        return Err(FieldError::new(
                            format!("{at}.index"),
                            format!("button {index} is given twice"),
                        ));
                    }
                    button_indexes.push(*index);
                    &mut button
                }
            };
            if *seen {
                return Err(FieldError::new(
                    format!("{at}.type"),
                    "at most one header and one body component",
                ));
            }
            *seen = true;
            c.validate().map_err(|e| e.within(&at))?;
        }
        Ok(())
    }
}

/// The variables of one part of a template, tagged by `type` as in WhatsApp's `components[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TemplateComponent {
    /// The header's variable: one text, or the media of a media header.
    Header {
        /// Exactly one parameter (`text`, `image`, `video` or `document`).
        parameters: Vec<TemplateParameter>,
    },
    /// The body's variables, in order (`{{1}}`, `{{2}}`, …) or named (`parameter_name`).
    Body {
        /// One to a hundred parameters (`text`, `currency` or `date_time`).
        parameters: Vec<TemplateParameter>,
    },
    /// The variable of one button of the template.
    Button {
        /// The kind of button.
        sub_type: TemplateButtonKind,
        /// The button's position in the template, 0 to 9 (a number here; WhatsApp's API
        /// takes it as a string).
        index: u8,
        /// Exactly one parameter: `payload` for a quick reply, `text` (the URL suffix) for a
        /// URL button, `text` (the code) for a copy-code button.
        parameters: Vec<TemplateParameter>,
    },
}

impl TemplateComponent {
    fn validate(&self) -> Result<(), FieldError> {
        let (parameters, max, allowed): (&[TemplateParameter], usize, &[&str]) = match self {
            TemplateComponent::Header { parameters } => {
                (parameters, 1, &["text", "image", "video", "document"])
            }
            TemplateComponent::Body { parameters } => {
                (parameters, 100, &["text", "currency", "date_time"])
            }
            TemplateComponent::Button {
                sub_type,
                parameters,
                ..
            } => (
                parameters,
                1,
                match sub_type {
                    TemplateButtonKind::QuickReply => &["payload"],
                    TemplateButtonKind::Url | TemplateButtonKind::CopyCode => &["text"],
                },
            ),
        };
        if parameters.is_empty() || parameters.len() > max {
            return Err(FieldError::new(
                "parameters",
                format!("must have between 1 and {max} entries"),
            ));
        }
        for (j, p) in parameters.iter().enumerate() {
            let at = format!("parameters[{j}]");
            if !allowed.contains(&p.kind()) {
                return Err(FieldError::new(
                    format!("{at}.type"),
                    format!("must be one of {}", allowed.join(", ")),
                ));
            }
            p.validate().map_err(|e| e.within(&at))?;
        }
        Ok(())
    }
}

/// The kind of a template button with a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateButtonKind {
    /// A quick-reply button; its `payload` comes back when tapped.
    QuickReply,
    /// A URL button whose URL ends with a variable.
    Url,
    /// A copy-code button (coupon, one-time password).
    CopyCode,
}

/// One variable's value, tagged by `type` as in WhatsApp's `parameters[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TemplateParameter {
    /// Text (header: at most 60 characters; body: at most 1024).
    Text {
        /// The value.
        text: String,
        /// The variable's name, for templates with named variables.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameter_name: Option<String>,
    },
    /// An amount of money.
    Currency {
        /// The amount.
        currency: TemplateCurrency,
        /// The variable's name, for templates with named variables.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameter_name: Option<String>,
    },
    /// A date and time, shown as given.
    DateTime {
        /// The value.
        date_time: TemplateDateTime,
        /// The variable's name, for templates with named variables.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameter_name: Option<String>,
    },
    /// A header image.
    Image {
        /// The image.
        image: TemplateMedia,
    },
    /// A header video.
    Video {
        /// The video.
        video: TemplateMedia,
    },
    /// A header document.
    Document {
        /// The document.
        document: TemplateMedia,
    },
    /// What a quick-reply button sends back when tapped.
    Payload {
        /// 1 to 1000 bytes.
        payload: String,
    },
}

impl TemplateParameter {
    /// The `type` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            TemplateParameter::Text { .. } => "text",
            TemplateParameter::Currency { .. } => "currency",
            TemplateParameter::DateTime { .. } => "date_time",
            TemplateParameter::Image { .. } => "image",
            TemplateParameter::Video { .. } => "video",
            TemplateParameter::Document { .. } => "document",
            TemplateParameter::Payload { .. } => "payload",
        }
    }

    fn validate(&self) -> Result<(), FieldError> {
        match self {
            TemplateParameter::Text { text, .. } => {
                if text.trim().is_empty() || text.chars().count() > 1024 {
                    return Err(FieldError::new("text", "must be 1 to 1024 characters"));
                }
                Ok(())
            }
            TemplateParameter::Currency { currency, .. } => {
                if currency.fallback_value.trim().is_empty() {
                    return Err(FieldError::new(
                        "currency.fallback_value",
                        "must not be empty",
                    ));
                }
                if currency.code.len() != 3
                    || !currency.code.chars().all(|c| c.is_ascii_uppercase())
                {
                    return Err(FieldError::new(
                        "currency.code",
                        "must be an ISO 4217 code such as EUR",
                    ));
                }
                Ok(())
            }
            TemplateParameter::DateTime { date_time, .. } => {
                if date_time.fallback_value.trim().is_empty() {
                    return Err(FieldError::new(
                        "date_time.fallback_value",
                        "must not be empty",
                    ));
                }
                Ok(())
            }
            TemplateParameter::Image { image: m } => m.validate("image"),
            TemplateParameter::Video { video: m } => m.validate("video"),
            TemplateParameter::Document { document: m } => m.validate("document"),
            TemplateParameter::Payload { payload } => {
                if payload.is_empty() || payload.len() > 1000 {
                    return Err(FieldError::new("payload", "must be 1 to 1000 bytes"));
                }
                Ok(())
            }
        }
    }
}

/// A currency value (WhatsApp: `{"fallback_value", "code", "amount_1000"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateCurrency {
    /// Shown where the amount cannot be localised, e.g. `€12.50`.
    pub fallback_value: String,
    /// ISO 4217 code, e.g. `EUR`.
    pub code: String,
    /// The amount times 1000 (12.50 → 12500).
    pub amount_1000: i64,
}

/// A date and time value (WhatsApp: `{"fallback_value"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateDateTime {
    /// The text shown, e.g. `February 25, 1977`.
    pub fallback_value: String,
}

/// The media of a media header: a public `link`, or a media `id` uploaded to the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateMedia {
    /// An absolute http(s) URL the platform fetches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The platform's media id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The file name shown, for documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

impl TemplateMedia {
    fn validate(&self, field: &str) -> Result<(), FieldError> {
        match (&self.link, &self.id) {
            (None, None) | (Some(_), Some(_)) => {
                Err(FieldError::new(field, "give exactly one of link and id"))
            }
            (Some(u), None) if !(u.starts_with("https://") || u.starts_with("http://")) => Err(
                FieldError::new(format!("{field}.link"), "must be an absolute http(s) URL"),
            ),
            (None, Some(id)) if id.trim().is_empty() => {
                Err(FieldError::new(format!("{field}.id"), "must not be empty"))
            }
            _ => Ok(()),
        }
    }
}

/// A validation error that names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path of the field, e.g. `messages[0].buttons[1].url`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, seen from an enclosing value at `prefix`.
    pub fn within(self, prefix: &str) -> Self {
        Self {
            field: format!("{prefix}.{}", self.field),
            message: self.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(input: serde_json::Value, expected: Result<(), &str>) {
        let c: Content = serde_json::from_value(input.clone()).expect("parses");
        assert_eq!(
            c.validate().map_err(|e| e.to_string()),
            expected.map_err(str::to_owned),
            "{input}"
        );
    }

    #[test]
    fn native_messages_are_objects_of_bounded_size() {
        check(
            json!({"type": "native", "platform": "line",
                   "message": {"type": "flex", "altText": "a", "contents": {"type": "bubble"}}}),
            Ok(()),
        );
        check(
            json!({"type": "native", "platform": "line", "message": "flex"}),
            Err("message: must be the platform's message object"),
        );
        check(
            json!({"type": "native", "platform": "line", "message": {}}),
            Err("message: must be the platform's message object"),
        );
        check(
            json!({"type": "native", "platform": "line",
                   "message": {"type": "text", "text": "x".repeat(NATIVE_MAX_BYTES)}}),
            Err("message: must be at most 65536 bytes as JSON"),
        );
        assert!(
            serde_json::from_value::<Content>(
                json!({"type": "native", "platform": "icq", "message": {"type": "x"}})
            )
            .is_err(),
            "a platform Patchbay knows"
        );
    }

    #[test]
    fn validation_names_the_field() {
        check(json!({"type": "text", "text": "hi"}), Ok(()));
        check(
            json!({"type": "text", "text": " "}),
            Err("text: must not be empty"),
        );
        check(
            json!({"type": "image"}),
            Err("url: one of url, file_id or media_id is required"),
        );
        check(json!({"type": "image", "file_id": "AgAC"}), Ok(()));
        check(
            json!({"type": "buttons", "text": "pick", "buttons": [
                {"type": "postback", "title": "A", "payload": "a"},
                {"type": "url", "title": "B", "url": "ftp://x"}]}),
            Err("buttons[1].url: must be an absolute http(s) URL"),
        );
        check(
            json!({"type": "location", "latitude": 91.0, "longitude": 0.0}),
            Err("latitude: must be between -90 and 90"),
        );
    }

    #[test]
    fn templates_are_checked_like_whatsapp_checks_them() {
        let t = |components: serde_json::Value| {
            json!({"type": "template", "name": "order_ready", "language": "en_US",
                   "components": components})
        };
        check(t(json!([])), Ok(()));
        check(
            t(json!([
                {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://x/y.jpg"}}]},
                {"type": "body", "parameters": [
                    {"type": "text", "text": "A-17", "parameter_name": "order_no"},
                    {"type": "currency", "currency": {"fallback_value": "€12.50", "code": "EUR", "amount_1000": 12500}},
                    {"type": "date_time", "date_time": {"fallback_value": "May 1"}}]},
                {"type": "button", "sub_type": "quick_reply", "index": 0,
                 "parameters": [{"type": "payload", "payload": "STOP"}]},
                {"type": "button", "sub_type": "url", "index": 1,
                 "parameters": [{"type": "text", "text": "track/A-17"}]}])),
            Ok(()),
        );
        check(
            json!({"type": "template", "name": "Order Ready", "language": "en_US"}),
            Err("name: must be 1-512 characters of A-Z, a-z, 0-9, '_' and '-'"),
        );
        check(
            json!({"type": "template", "name": "x", "language": ""}),
            Err("language: must be a language code such as en or en_US"),
        );
        check(
            t(
                json!([{"type": "body", "parameters": [{"type": "text", "text": "a"}, {"type": "text", "text": " "}]}]),
            ),
            Err("components[0].parameters[1].text: must be 1 to 1024 characters"),
        );
        check(
            t(
                json!([{"type": "body", "parameters": [{"type": "text", "text": "a"}]},
                     {"type": "body", "parameters": [{"type": "text", "text": "b"}]}]),
            ),
            Err("components[1].type: at most one header and one body component"),
        );
        check(
            t(json!([{"type": "header", "parameters": [{"type": "image", "image": {}}]}])),
            Err("components[0].parameters[0].image: give exactly one of link and id"),
        );
        check(
            t(
                json!([{"type": "button", "sub_type": "quick_reply", "index": 0,
                      "parameters": [{"type": "text", "text": "x"}]}]),
            ),
            Err("components[0].parameters[0].type: must be one of payload"),
        );
        check(
            t(
                json!([{"type": "button", "sub_type": "url", "index": 2, "parameters": [{"type": "text", "text": "a"}]},
                     {"type": "button", "sub_type": "url", "index": 2, "parameters": [{"type": "text", "text": "b"}]}]),
            ),
            Err("components[1].index: button 2 is given twice"),
        );
        check(
            t(json!([{"type": "body", "parameters": []}])),
            Err("components[0].parameters: must have between 1 and 100 entries"),
        );
        // The shape is serde-stable: what parses serialises back the same.
        let full = t(json!([{"type": "body", "parameters": [{"type": "text", "text": "A-17"}]}]));
        let c: Content = serde_json::from_value(full.clone()).unwrap();
        assert_eq!(serde_json::to_value(&c).unwrap(), full);
        assert!(
            serde_json::from_value::<Content>(t(json!([{"type": "footer", "parameters": []}])))
                .is_err()
        );
    }

    #[test]
    fn unknown_types_and_fields_are_refused() {
        assert!(serde_json::from_value::<Content>(json!({"type": "hologram"})).is_err());
        assert!(
            serde_json::from_value::<Content>(json!({"type": "text", "text": "a", "x": 1}))
                .is_err()
        );
    }
}
