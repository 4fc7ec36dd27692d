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
    /// A pre-approved template (WhatsApp; other platforms refuse it).
    Template(Template),
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
            Content::Postback { payload, .. } => non_empty("payload", payload),
        }
    }
}

/// A media attachment: a public URL for Patchbay or the platform to fetch, or the platform's
/// own file id (what inbound media carry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// A URL the platform can fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The platform's file id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// A caption shown with the media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// The file name, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// The MIME type, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

impl Media {
    fn validate(&self) -> Result<(), FieldError> {
        match (&self.url, &self.file_id) {
            (None, None) => Err(FieldError::new("url", "either url or file_id is required")),
            (Some(u), _) if !(u.starts_with("https://") || u.starts_with("http://")) => {
                Err(FieldError::new("url", "must be an absolute http(s) URL"))
            }
            _ => Ok(()),
        }
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

/// A pre-approved template message (WhatsApp Cloud API `type: "template"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The template's name as approved (lowercase letters, digits and `_`).
    pub name: String,
    /// Its language code, e.g. `en_US`.
    pub language: String,
    /// Values for the template's variables, per component.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<TemplateComponent>,
}

/// Which part of a template a component fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateComponentKind {
    /// The header (text or media).
    Header,
    /// The body.
    Body,
    /// One of the buttons (`sub_type` and `index` say which).
    Button,
}

/// The kind of a template button whose parameters are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateButtonKind {
    /// A quick-reply button: its parameter is the `payload` sent back when tapped.
    QuickReply,
    /// A URL button: its parameter is the URL's variable suffix.
    Url,
    /// A copy-code button: its parameter is the `coupon_code`.
    CopyCode,
}

/// The values of one template component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateComponent {
    /// Header, body or button.
    #[serde(rename = "type")]
    pub kind: TemplateComponentKind,
    /// For buttons: the button's kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_type: Option<TemplateButtonKind>,
    /// For buttons: the button's position in the template, 0 to 9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u8>,
    /// The values, in order (or named with `parameter_name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<TemplateParameter>,
}

/// One template variable's value, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TemplateParameter {
    /// Text.
    Text {
        /// The value.
        text: String,
        /// The variable's name, for templates with named variables.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameter_name: Option<String>,
    },
    /// An amount of money.
    Currency {
        /// Shown where the amount cannot be localised.
        fallback_value: String,
        /// ISO 4217 code.
        code: String,
        /// The amount times 1000.
        amount_1000: i64,
        /// The variable's name, for templates with named variables.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameter_name: Option<String>,
    },
    /// A date and time, shown as given.
    DateTime {
        /// The text shown.
        fallback_value: String,
        /// The variable's name, for templates with named variables.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameter_name: Option<String>,
    },
    /// A header image.
    Image(Media),
    /// A header video.
    Video(Media),
    /// A header document.
    Document(Media),
    /// A quick-reply button's payload.
    Payload {
        /// What comes back when the button is tapped.
        payload: String,
    },
    /// A copy-code button's code.
    CouponCode {
        /// The code.
        coupon_code: String,
    },
}

impl Template {
    fn validate(&self) -> Result<(), FieldError> {
        if self.name.is_empty()
            || self.name.len() > 512
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(FieldError::new(
                "name",
                "must be 1-512 lowercase letters, digits or '_'",
            ));
        }
        if self.language.trim().is_empty() {
            return Err(FieldError::new("language", "must not be empty"));
        }
        for (i, c) in self.components.iter().enumerate() {
            c.validate()
                .map_err(|e| e.within(&format!("components[{i}]")))?;
        }
        Ok(())
    }
}

impl TemplateComponent {
    fn validate(&self) -> Result<(), FieldError> {
        match self.kind {
            TemplateComponentKind::Button => {
                if self.sub_type.is_none() {
                    return Err(FieldError::new("sub_type", "is required for buttons"));
                }
                if self.index.is_none_or(|i| i > 9) {
                    return Err(FieldError::new("index", "is required for buttons, 0 to 9"));
                }
            }
            _ => {
                if self.sub_type.is_some() {
                    return Err(FieldError::new("sub_type", "is only for buttons"));
                }
                if self.index.is_some() {
                    return Err(FieldError::new("index", "is only for buttons"));
                }
            }
        }
        for (i, p) in self.parameters.iter().enumerate() {
            let field = format!("parameters[{i}]");
            let media = matches!(
                p,
                TemplateParameter::Image(_)
                    | TemplateParameter::Video(_)
                    | TemplateParameter::Document(_)
            );
            if media && self.kind != TemplateComponentKind::Header {
                return Err(FieldError::new(
                    field,
                    "media parameters are only for headers",
                ));
            }
            let button_only = matches!(
                p,
                TemplateParameter::Payload { .. } | TemplateParameter::CouponCode { .. }
            );
            if button_only && self.kind != TemplateComponentKind::Button {
                return Err(FieldError::new(
                    field,
                    "payload and coupon_code parameters are only for buttons",
                ));
            }
            let empty = |name: &str, v: &str| {
                if v.trim().is_empty() {
                    Err(FieldError::new(
                        format!("{field}.{name}"),
                        "must not be empty",
                    ))
                } else {
                    Ok(())
                }
            };
            match p {
                TemplateParameter::Text { text, .. } => empty("text", text)?,
                TemplateParameter::Currency {
                    fallback_value,
                    code,
                    ..
                } => {
                    empty("fallback_value", fallback_value)?;
                    if code.len() != 3 || !code.chars().all(|c| c.is_ascii_uppercase()) {
                        return Err(FieldError::new(
                            format!("{field}.code"),
                            "must be an ISO 4217 code such as USD",
                        ));
                    }
                }
                TemplateParameter::DateTime { fallback_value, .. } => {
                    empty("fallback_value", fallback_value)?
                }
                TemplateParameter::Image(m)
                | TemplateParameter::Video(m)
                | TemplateParameter::Document(m) => m.validate().map_err(|e| e.within(&field))?,
                TemplateParameter::Payload { payload } => empty("payload", payload)?,
                TemplateParameter::CouponCode { coupon_code } => empty("coupon_code", coupon_code)?,
            }
        }
        Ok(())
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
    fn validation_names_the_field() {
        check(json!({"type": "text", "text": "hi"}), Ok(()));
        check(
            json!({"type": "text", "text": " "}),
            Err("text: must not be empty"),
        );
        check(
            json!({"type": "image"}),
            Err("url: either url or file_id is required"),
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
    fn templates_name_the_field_at_fault() {
        let t = |components: serde_json::Value| json!({"type": "template", "name": "order_ready", "language": "en_US", "components": components});
        check(
            t(json!([
                {"type": "header", "parameters": [{"type": "image", "url": "https://x.test/a.png"}]},
                {"type": "body", "parameters": [{"type": "text", "text": "A-17", "parameter_name": "order_no"},
                    {"type": "currency", "fallback_value": "$1", "code": "USD", "amount_1000": 1000}]},
                {"type": "button", "sub_type": "quick_reply", "index": 0, "parameters": [{"type": "payload", "payload": "p"}]}
            ])),
            Ok(()),
        );
        check(
            json!({"type": "template", "name": "Order Ready", "language": "en"}),
            Err("name: must be 1-512 lowercase letters, digits or '_'"),
        );
        check(
            t(json!([{"type": "button", "index": 0}])),
            Err("components[0].sub_type: is required for buttons"),
        );
        check(
            t(json!([{"type": "body", "parameters": [{"type": "text", "text": ""}]}])),
            Err("components[0].parameters[0].text: must not be empty"),
        );
        check(
            t(json!([{"type": "body", "parameters": [{"type": "image", "url": "https://x"}]}])),
            Err("components[0].parameters[0]: media parameters are only for headers"),
        );
        check(
            t(json!([{"type": "header", "parameters": [{"type": "image"}]}])),
            Err("components[0].parameters[0].url: either url or file_id is required"),
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
