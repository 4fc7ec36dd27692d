//! Web1on1 (v2, the `chipchat` SDK) compatibility, the wire side (`docs/compat.md`,
//! "Web1on1"): Web1on1's messages as Patchbay content, and what a bot with the `web1on1`
//! webhook flavour receives: Web1on1's webhook body (`id`, `event`, `timestamp`,
//! `organization`, `activity`, `data.conversation`, `data.message`) with its event names
//! (`message.create.contact.chat`, …), signed `X-Hub-Signature: sha1=<hex HMAC-SHA1 of the
//! body>` with the bot's signing secret by the dispatcher.
//!
//! Web1on1 → Patchbay: a Web1on1 organisation is the tenant, its contact conversation is the
//! user's conversation (ids are Patchbay's: `conv_…`), its contact is the user (`usr_…`).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::content::{Button, FieldAssignment, Location, Media, QuickReply};
use crate::{Content, EventType, HandledBy, Platform, TenantEvent};

/// The header carrying the signature of a Web1on1-flavoured callback.
pub const SIGNATURE_HEADER: &str = "x-hub-signature";

/// What a Web1on1 message asks Patchbay to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Translated {
    /// Send (or, for a field message, apply) this content.
    Send(Content),
    /// Send one of the bot's registry templates: `reference` is `meta.template` (a template's
    /// id or name), `name` the message's text (WhatsApp's template name, Web1on1 sends it as
    /// the text); the other `meta` keys fill its variables.
    Template {
        /// `meta.template`.
        reference: String,
        /// The message's `text`.
        name: String,
        /// The variables.
        meta: BTreeMap<String, String>,
    },
    /// A conversation command: `/accept` and `/join` pass the conversation to a human agent,
    /// `/leave` hands it back to the bot.
    Handover(HandledBy),
}

/// Web1on1's touchpoint of a platform.
pub fn touchpoint(platform: Platform) -> &'static str {
    match platform {
        Platform::Messenger => "facebook",
        Platform::Custom => "web",
        other => other.as_str(),
    }
}

/// A Web1on1 message (`type` `chat` by default, `field`, `command`; `text`, `meta`,
/// `actions`, `contentType`) as what Patchbay does with it; the error says what is wrong.
pub fn translate(message: &Value) -> Result<Translated, String> {
    let Some(object) = message.as_object() else {
        return Err("a message is a JSON object".into());
    };
    let kind = object.get("type").and_then(Value::as_str).unwrap_or("chat");
    let text = object
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match kind {
        "field" => Ok(Translated::Send(Content::Field(FieldAssignment {
            text: Some(text.to_owned()),
            field: None,
            value: None,
        }))),
        "command" => match text.split_whitespace().next().unwrap_or_default() {
            "/accept" | "/join" => Ok(Translated::Handover(HandledBy::Human)),
            "/leave" => Ok(Translated::Handover(HandledBy::Bot)),
            other => Err(format!(
                "command {other:?}: Patchbay runs /accept, /join and /leave"
            )),
        },
        "chat" => chat(object, text),
        other => Err(format!(
            "type {other:?}: Patchbay takes chat, field and command messages"
        )),
    }
}

/// The `meta` object as text values (numbers and booleans as written).
fn meta_of(object: &Map<String, Value>) -> BTreeMap<String, String> {
    object
        .get("meta")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((k.clone(), text))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn chat(object: &Map<String, Value>, text: &str) -> Result<Translated, String> {
    let mut meta = meta_of(object);
    if let Some(reference) = meta.remove("template") {
        return Ok(Translated::Template {
            reference,
            name: text.to_owned(),
            meta,
        });
    }
    if text.is_empty() {
        return Err("text: a chat message needs its text".into());
    }
    // An attachment: its URL is the text, its type the contentType.
    if let Some(mime) = object.get("contentType").and_then(Value::as_str) {
        let media = Media {
            url: Some(text.to_owned()),
            mime_type: Some(mime.to_owned()),
            ..Media::default()
        };
        return Ok(Translated::Send(match mime.split('/').next() {
            Some("image") => Content::Image(media),
            Some("video") => Content::Video(media),
            Some("audio") => Content::Audio(media),
            _ => Content::File(media),
        }));
    }
    let actions = object
        .get("actions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if actions.is_empty() {
        return Ok(Translated::Send(Content::Text {
            text: text.to_owned(),
        }));
    }
    let field = |a: &Value, k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
    // Only replies: quick replies; any link or postback: buttons.
    if actions
        .iter()
        .all(|a| field(a, "type").as_deref() == Some("reply"))
    {
        let replies = actions
            .iter()
            .map(|a| QuickReply {
                title: field(a, "text").unwrap_or_default(),
                payload: field(a, "payload"),
            })
            .collect();
        return Ok(Translated::Send(Content::QuickReplies {
            text: text.to_owned(),
            replies,
        }));
    }
    let mut buttons = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        let title = field(a, "text").unwrap_or_default();
        let payload = field(a, "payload").unwrap_or_default();
        buttons.push(match field(a, "type").as_deref() {
            Some("link") => Button::Url {
                title,
                url: payload,
                reuse_seconds: None,
            },
            Some("postback") => Button::Postback { title, payload },
            Some("reply") => Button::Reply { title },
            other => {
                return Err(format!(
                    "actions[{i}].type {other:?}: reply, postback or link"
                ));
            }
        });
    }
    Ok(Translated::Send(Content::Buttons {
        text: text.to_owned(),
        buttons,
    }))
}

/// Web1on1's `type`, `text` and extra fields of a message with `content`.
fn shape(content: &Content) -> (&'static str, String, Map<String, Value>) {
    let mut extra = Map::new();
    let media = |m: &Media, extra: &mut Map<String, Value>, fallback: &str| {
        extra.insert(
            "contentType".into(),
            json!(m.mime_type.clone().unwrap_or_else(|| fallback.to_owned())),
        );
        if let Some(c) = &m.caption {
            extra.insert("meta".into(), json!({"caption": c}));
        }
        m.download_url
            .clone()
            .or_else(|| m.url.clone())
            .or_else(|| m.media_id.clone())
            .unwrap_or_default()
    };
    match content {
        Content::Text { text } => ("chat", text.clone(), extra),
        Content::Postback { payload, title } => {
            if let Some(t) = title {
                extra.insert("meta".into(), json!({"title": t}));
            }
            ("postback", payload.clone(), extra)
        }
        Content::Image(m) => ("chat", media(m, &mut extra, "image/*"), extra),
        Content::Video(m) => ("chat", media(m, &mut extra, "video/*"), extra),
        Content::Audio(m) | Content::Voice(m) => ("chat", media(m, &mut extra, "audio/*"), extra),
        Content::File(m) => (
            "chat",
            media(m, &mut extra, "application/octet-stream"),
            extra,
        ),
        Content::Location(Location {
            latitude,
            longitude,
            ..
        }) => {
            extra.insert(
                "meta".into(),
                json!({"latitude": latitude, "longitude": longitude}),
            );
            ("chat", format!("{latitude},{longitude}"), extra)
        }
        Content::Buttons { text, buttons } => {
            let actions: Vec<Value> = buttons
                .iter()
                .map(|b| match b {
                    Button::Postback { title, payload } => {
                        json!({"type": "postback", "text": title, "payload": payload})
                    }
                    Button::Url { title, url, .. } => {
                        json!({"type": "link", "text": title, "payload": url})
                    }
                    other => json!({"type": "reply", "text": other.title()}),
                })
                .collect();
            extra.insert("actions".into(), Value::Array(actions));
            ("chat", text.clone(), extra)
        }
        Content::QuickReplies { text, replies } => {
            let actions: Vec<Value> = replies
                .iter()
                .map(|r| json!({"type": "reply", "text": r.title, "payload": r.payload}))
                .collect();
            extra.insert("actions".into(), Value::Array(actions));
            ("chat", text.clone(), extra)
        }
        Content::Field(f) => (
            "field",
            f.text.clone().unwrap_or_else(|| {
                format!(
                    ".{} {}",
                    f.field.as_deref().unwrap_or_default(),
                    f.value.as_deref().unwrap_or_default()
                )
                .trim_end()
                .to_owned()
            }),
            extra,
        ),
        Content::Template(t) => {
            let name = match t {
                crate::content::TemplateMessage::Registered(r) => {
                    let mut meta: Map<String, Value> =
                        r.meta.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                    meta.insert("template".into(), json!(r.id));
                    extra.insert("meta".into(), Value::Object(meta));
                    r.id.clone()
                }
                crate::content::TemplateMessage::Inline(t) => t.name.clone(),
            };
            ("chat", name, extra)
        }
        other => ("chat", other.kind().to_owned(), extra),
    }
}

/// A message as Web1on1 represents it.
pub struct MessageView<'a> {
    /// Its id.
    pub id: &'a str,
    /// The conversation.
    pub conversation: &'a str,
    /// The organisation (tenant).
    pub organization: &'a str,
    /// What it says.
    pub content: &'a Content,
    /// `contact` (the user), `bot` or `agent`.
    pub role: &'a str,
    /// Who wrote it: the user's id for a contact's message, else the bot's.
    pub user: &'a str,
    /// The platform it travels on.
    pub platform: Platform,
    /// When.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl MessageView<'_> {
    /// Web1on1's message object.
    pub fn to_json(&self) -> Value {
        let (kind, text, extra) = shape(self.content);
        let mut m = json!({
            "id": self.id,
            "conversation": self.conversation,
            "organization": self.organization,
            "type": kind,
            "role": self.role,
            "touchpoint": touchpoint(self.platform),
            "text": text,
            "user": self.user,
            "isBackchannel": false,
            "createdAt": self.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "meta": {},
        });
        if let Some(object) = m.as_object_mut() {
            object.extend(extra);
        }
        m
    }

    /// The event Web1on1 names a new message of this kind with:
    /// `message.create.contact.<type>` (every Patchbay conversation is a contact's).
    pub fn event_name(&self) -> String {
        format!("message.create.contact.{}", shape(self.content).0)
    }
}

/// A contact conversation as Web1on1 represents it.
pub fn conversation_json(
    id: &str,
    organization: &str,
    user_id: &str,
    name: Option<&str>,
    platform: Platform,
    handled_by: Option<HandledBy>,
) -> Value {
    json!({
        "id": id,
        "organization": organization,
        "type": "contact",
        "name": name.unwrap_or_default(),
        "contact": user_id,
        "touchpoint": touchpoint(platform),
        "status": match handled_by {
            Some(HandledBy::Human) => "active",
            _ => "bot",
        },
        "participants": [],
        "meta": {},
    })
}

/// The body Web1on1 would post for `event` to the bot's webhook (`organization`: the bot's
/// tenant), when it has such an event: what users write (`message.create.contact.<type>`,
/// role `contact`), a send that failed (`message.create.contact.status`, a backchannel
/// message of role `bot` naming the error, which the SDK ignores unless asked), a new contact
/// (`contact.create`) and a hand-over (`conversation.update`). Delivery reports (`sent`,
/// `delivered`, `read`) are none of Web1on1's events: they are not posted.
pub fn callback_body(event: &TenantEvent, organization: &str) -> Option<Value> {
    // Web1on1 has no broadcast events.
    let conv = event.conversation()?;
    let user = conv.user;
    let conversation = conversation_json(
        conv.id,
        organization,
        &user.id,
        user.display_name.as_deref(),
        conv.channel.platform,
        event.handled_by,
    );
    let timestamp = event
        .created_at
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let activity = |kind: &str, actor: (&str, &str), object: (&str, &str), summary: String| {
        json!({
            "@context": "https://www.w3.org/ns/activitystreams",
            "type": kind,
            "actor": {"id": actor.0, "type": actor.1},
            "object": {"id": object.0, "type": object.1},
            "published": timestamp,
            "summary": summary,
        })
    };
    let body = |name: String, activity: Value, data: Value| {
        json!({
            "id": event.id,
            "event": name,
            "timestamp": timestamp,
            "organization": organization,
            "activity": activity,
            "data": data,
        })
    };
    let message_event = |content: &Content, id: &str, role: &str, author: &str| {
        let view = MessageView {
            id,
            conversation: conv.id,
            organization,
            content,
            role,
            user: author,
            platform: conv.channel.platform,
            created_at: event.created_at,
        };
        let summary = format!("{role} {author} created a {} message", shape(content).0);
        body(
            view.event_name(),
            activity("Create", (author, role), (id, "Message"), summary),
            json!({"conversation": conversation, "message": view.to_json()}),
        )
    };
    match event.event_type {
        EventType::MessageReceived => {
            let message = event.message.as_ref()?;
            message_event(message.content.as_ref()?, &message.id, "contact", &user.id).into()
        }
        EventType::MessageFailed => {
            let message = event.message.as_ref()?;
            let why = event
                .error
                .as_ref()
                .map(|e| format!("{}: {}", e.code, e.message))
                .unwrap_or_else(|| "not delivered".into());
            let status = Content::Text {
                text: format!("Message {} could not be delivered: {why}", message.id),
            };
            let mut b = message_event(&status, &event.id, "bot", &event.bot_id);
            b["event"] = json!("message.create.contact.status");
            b["data"]["message"]["type"] = json!("status");
            b["data"]["message"]["isBackchannel"] = json!(true);
            b["data"]["message"]["meta"] = json!({"message": message.id, "error": why});
            Some(b)
        }
        EventType::UserSubscribed => Some(body(
            "contact.create".into(),
            activity(
                "Create",
                (&user.id, "contact"),
                (&user.id, "Contact"),
                format!("contact {} was created", user.id),
            ),
            json!({
                "conversation": conversation,
                "contact": {
                    "id": user.id,
                    "organization": organization,
                    "profile": {"name": user.display_name, "username": user.username,
                                "locale": user.locale},
                    "meta": user.fields,
                },
            }),
        )),
        EventType::ConversationHandover => Some(body(
            "conversation.update".into(),
            activity(
                "Update",
                (&event.bot_id, "bot"),
                (conv.id, "Conversation"),
                format!("conversation {} changed hands", conv.id),
            ),
            json!({"conversation": conversation, "handover": event.handover}),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_messages_translate_to_a_field_a_field_and_a_registry_template() {
        let seed: Value = serde_json::from_str(
            r#"[{"type": "field", "text": ".licenseplate XX-99-WZ"},
                {"type": "field", "text": ".location 3204"},
                {"text": "appointment_24_hours_before", "role": "agent", "touchpoint": "whatsapp",
                 "type": "chat", "meta": {"template": "609a61ec5b25a7001e2fedce", "PlanTime": "3.15 pm"}}]"#,
        )
        .unwrap();
        let out: Vec<_> = seed
            .as_array()
            .unwrap()
            .iter()
            .map(|m| translate(m).unwrap())
            .collect();
        let Translated::Send(Content::Field(f)) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            f.change().unwrap(),
            ("licenseplate".into(), Some("XX-99-WZ".into()))
        );
        assert_eq!(
            out[2],
            Translated::Template {
                reference: "609a61ec5b25a7001e2fedce".into(),
                name: "appointment_24_hours_before".into(),
                meta: [("PlanTime".to_owned(), "3.15 pm".to_owned())].into(),
            }
        );
    }

    #[test]
    fn actions_become_quick_replies_or_buttons_and_unknown_types_are_named() {
        let replies = translate(&json!({"text": "Yes?", "actions": [
            {"type": "reply", "text": "Yes"}, {"type": "reply", "text": "No", "payload": "NO"}]}))
        .unwrap();
        assert!(
            matches!(replies, Translated::Send(Content::QuickReplies { ref replies, .. }) if replies.len() == 2)
        );
        let buttons = translate(&json!({"text": "Go", "actions": [
            {"type": "link", "text": "Site", "payload": "https://example.com"},
            {"type": "postback", "text": "Buy", "payload": "BUY"}]}))
        .unwrap();
        let Translated::Send(Content::Buttons { buttons, .. }) = buttons else {
            panic!()
        };
        assert!(matches!(&buttons[0], Button::Url { url, .. } if url == "https://example.com"));
        let err = translate(&json!({"type": "card", "text": "x"})).unwrap_err();
        assert!(err.contains("card"), "{err}");
        assert_eq!(
            translate(&json!({"type": "command", "text": "/leave"})).unwrap(),
            Translated::Handover(HandledBy::Bot)
        );
        let image = translate(&json!({"text": "https://x/y.png", "contentType": "image/png"}));
        assert!(matches!(image, Ok(Translated::Send(Content::Image(_)))));
    }
}
