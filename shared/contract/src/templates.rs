//! The template registry: a bot's named templates (`/v1/templates`), each with the form every
//! platform needs: `text` for platforms without templates, a WhatsApp template (name,
//! language, components) and a WeChat template message (template id, data, url). Their texts
//! carry variables, `{{contact.name}}`, `{{contact.fields.<name>}}` or a send's own
//! `{{PlanTime}}` (from the send's `meta`); this module checks a definition and lists its
//! variables.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::content::{
    Content, FieldError, Template as WhatsappTemplate, TemplateComponent, TemplateParameter,
};
use crate::fields::Fields;
use crate::wire::{DeliveryError, Platform};

/// Longest template name.
pub const MAX_NAME_LEN: usize = 128;

/// Longest `text` form, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;

/// Templates a bot may keep.
pub const MAX_PER_BOT: usize = 500;

/// A template as the tenant defines it: a name and at least one form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateDef {
    /// Unique within the bot: 1 to 128 characters of `A-Z a-z 0-9 _ -`.
    pub name: String,
    /// What platforms without templates get (Telegram, LINE, Viber, Kik, custom channels, and
    /// any platform inside its messaging window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The WhatsApp template as Meta approved it; parameter texts may carry variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsappTemplate>,
    /// The WeChat template message (service accounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechat: Option<WechatTemplate>,
}

/// A WeChat template message: `message/template/send`'s `template_id`, `url` and `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WechatTemplate {
    /// The template's id in the official account's template library.
    pub template_id: String,
    /// Where tapping the message leads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The template's keys (`first`, `keyword1`, `remark`, …) and their texts.
    pub data: BTreeMap<String, String>,
}

/// A stored template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StoredTemplate {
    /// `tpl_…`.
    pub id: String,
    /// Its bot.
    pub bot_id: String,
    /// The definition.
    #[serde(flatten)]
    pub def: TemplateDef,
    /// Every variable its forms use, sorted: a send names it in `meta` unless it is a
    /// `contact.` one.
    pub variables: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The `{{…}}` variables of `text`, or the first malformed one.
fn variables_in(text: &str, out: &mut BTreeSet<String>) -> Result<(), String> {
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("a `{{` without its `}}`".to_owned());
        };
        let name = after[..end].trim();
        check_variable(name)?;
        out.insert(name.to_owned());
        rest = &after[end + 2..];
    }
    Ok(())
}

/// A variable is `contact.name`, `contact.fields.<field name>`, or a `meta` key (a letter,
/// then letters, digits and `_`, at most 64).
fn check_variable(name: &str) -> Result<(), String> {
    if let Some(contact) = name.strip_prefix("contact.") {
        return match contact {
            "name" => Ok(()),
            other => match other.strip_prefix("fields.") {
                Some(field) => {
                    crate::fields::check_name(field).map_err(|m| format!("{{{{{name}}}}}: {m}"))
                }
                None => Err(format!(
                    "{{{{{name}}}}}: a contact variable is contact.name or \
                     contact.fields.<name>"
                )),
            },
        };
    }
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{{{{{name}}}}}: a variable is contact.name, contact.fields.<name>, or a meta key \
             (a letter, then letters, digits and _)"
        ))
    }
}

impl TemplateDef {
    /// Checks the definition; answers its variables, sorted.
    pub fn check(&self) -> Result<Vec<String>, FieldError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME_LEN
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(FieldError::new(
                "name",
                format!("must be 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, '_' and '-'"),
            ));
        }
        if self.text.is_none() && self.whatsapp.is_none() && self.wechat.is_none() {
            return Err(FieldError::new(
                "text",
                "give at least one form: text, whatsapp or wechat",
            ));
        }
        let mut vars = BTreeSet::new();
        if let Some(text) = &self.text {
            if text.trim().is_empty() || text.chars().count() > MAX_TEXT_CHARS {
                return Err(FieldError::new(
                    "text",
                    format!("must be 1 to {MAX_TEXT_CHARS} characters"),
                ));
            }
            variables_in(text, &mut vars).map_err(|m| FieldError::new("text", m))?;
        }
        if let Some(w) = &self.whatsapp {
            w.validate().map_err(|e| e.within("whatsapp"))?;
            for (i, c) in w.components.iter().enumerate() {
                let params = match c {
                    TemplateComponent::Header { parameters }
                    | TemplateComponent::Body { parameters }
                    | TemplateComponent::Button { parameters, .. } => parameters,
                };
                for (j, p) in params.iter().enumerate() {
                    if let TemplateParameter::Text { text: t, .. } = p {
                        variables_in(t, &mut vars).map_err(|m| {
                            FieldError::new(
                                format!("whatsapp.components[{i}].parameters[{j}].text"),
                                m,
                            )
                        })?;
                    }
                }
            }
        }
        if let Some(w) = &self.wechat {
            if w.template_id.trim().is_empty() || w.template_id.len() > 128 {
                return Err(FieldError::new(
                    "wechat.template_id",
                    "must be 1 to 128 characters",
                ));
            }
            if w.data.is_empty() || w.data.len() > 32 {
                return Err(FieldError::new(
                    "wechat.data",
                    "must have between 1 and 32 keys",
                ));
            }
            if let Some(url) = &w.url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Err(FieldError::new("wechat.url", "must be an http(s) URL"));
            }
            for (k, v) in &w.data {
                if k.is_empty() || k.len() > 64 || v.chars().count() > 1024 {
                    return Err(FieldError::new(
                        format!("wechat.data.{k}"),
                        "a key is 1 to 64 characters, its text at most 1024",
                    ));
                }
                variables_in(v, &mut vars)
                    .map_err(|m| FieldError::new(format!("wechat.data.{k}"), m))?;
            }
            if let Some(url) = &w.url {
                variables_in(url, &mut vars).map_err(|m| FieldError::new("wechat.url", m))?;
            }
        }
        Ok(vars.into_iter().collect())
    }
}

/// Where a template's variables take their values when it is rendered for one user.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    /// `{{contact.name}}`: the user's display name (else user name).
    pub name: Option<&'a str>,
    /// `{{contact.fields.<name>}}`.
    pub fields: &'a Fields,
    /// Every other variable: the send's `meta`.
    pub meta: &'a BTreeMap<String, String>,
}

/// A user without fields.
static NO_FIELDS: Fields = BTreeMap::new();

impl<'a> Values<'a> {
    /// The values for `user` (none known: only `meta`'s) and a send's `meta`.
    pub fn of(
        user: Option<&'a crate::wire::UserProfile>,
        meta: &'a BTreeMap<String, String>,
    ) -> Self {
        Self {
            name: user.and_then(|u| u.display_name.as_deref().or(u.username.as_deref())),
            fields: user.map_or(&NO_FIELDS, |u| &u.fields),
            meta,
        }
    }
}

/// Code of a send whose template lacks values: [`RenderError::Missing`].
pub const MISSING_VARIABLES: &str = "missing_variables";
/// Code of a send whose template has no form the platform can send: [`RenderError::NoForm`].
pub const TEMPLATE_UNAVAILABLE: &str = "template_unavailable";

/// Why a template was not rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// These variables have no value (sorted): `meta` keys the send did not give, or contact
    /// fields the user does not have. Never rendered as blanks.
    Missing(Vec<String>),
    /// The template has neither a `text` form nor the platform's own.
    NoForm(Platform),
    /// Rendered, the content breaks a limit (a text grown past 4096 characters).
    Invalid(FieldError),
}

impl RenderError {
    /// The error a send reports for template `name`.
    pub fn error(&self, name: &str) -> DeliveryError {
        let (code, message) = match self {
            RenderError::Missing(vars) => (
                MISSING_VARIABLES,
                format!(
                    "template {name} needs values for {}: give the send's meta keys, and set \
                     the user's fields (PATCH /v1/users/{{id}})",
                    vars.join(", ")
                ),
            ),
            RenderError::NoForm(platform) => (
                TEMPLATE_UNAVAILABLE,
                format!("template {name} has no form for {platform}: give it a text form"),
            ),
            RenderError::Invalid(e) => (
                "invalid_request",
                format!("template {name} rendered: {}: {}", e.field, e.message),
            ),
        };
        DeliveryError {
            code: code.to_owned(),
            message,
            platform_code: None,
        }
    }
}

/// `text` with its variables replaced; a variable without a value is added to `missing`.
fn fill(text: &str, values: &Values<'_>, missing: &mut BTreeSet<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = after[..end].trim();
        let value = match name.strip_prefix("contact.") {
            Some("name") => values.name,
            Some(contact) => contact
                .strip_prefix("fields.")
                .and_then(|f| values.fields.get(f))
                .map(String::as_str),
            None => values.meta.get(name).map(String::as_str),
        };
        match value {
            Some(v) => out.push_str(v),
            None => {
                missing.insert(name.to_owned());
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

impl StoredTemplate {
    /// The `meta` variables the template uses that `meta` does not give, sorted. A send
    /// gives every one, whichever form its platform gets.
    pub fn missing_meta(&self, meta: &BTreeMap<String, String>) -> Vec<String> {
        self.variables
            .iter()
            .filter(|v| !v.starts_with("contact.") && !meta.contains_key(*v))
            .cloned()
            .collect()
    }

    /// The template as content for one user: the `text` form when `text_first` (the
    /// platform's window allows free-form messages) and there is one, else the platform's
    /// own form `native` (its crate's rendering of the definition), else the `text` form.
    pub fn render(
        &self,
        platform: Platform,
        native: Option<WhatsappTemplate>,
        text_first: bool,
        values: &Values<'_>,
    ) -> Result<Content, RenderError> {
        let missing = self.missing_meta(values.meta);
        if !missing.is_empty() {
            return Err(RenderError::Missing(missing));
        }
        let mut missing = BTreeSet::new();
        let native = native.filter(|_| !(text_first && self.def.text.is_some()));
        let content = match (&self.def.text, native) {
            (Some(text), None) => Content::Text {
                text: fill(text, values, &mut missing),
            },
            (_, Some(mut t)) => {
                for c in &mut t.components {
                    let (TemplateComponent::Header { parameters }
                    | TemplateComponent::Body { parameters }
                    | TemplateComponent::Button { parameters, .. }) = c;
                    for p in parameters {
                        if let TemplateParameter::Text { text, .. } = p {
                            *text = fill(text, values, &mut missing);
                        }
                    }
                }
                Content::Template(t.into())
            }
            (None, None) => return Err(RenderError::NoForm(platform)),
        };
        if !missing.is_empty() {
            return Err(RenderError::Missing(missing.into_iter().collect()));
        }
        content.validate().map_err(RenderError::Invalid)?;
        Ok(content)
    }
}

impl WechatTemplate {
    /// The template message in the content model's template form, as the WeChat sender
    /// renders it back: the template id as `name`, each data key a named body parameter,
    /// `url` a URL button.
    pub fn as_template(&self) -> WhatsappTemplate {
        let mut components = vec![TemplateComponent::Body {
            parameters: self
                .data
                .iter()
                .map(|(k, v)| TemplateParameter::Text {
                    text: v.clone(),
                    parameter_name: Some(k.clone()),
                })
                .collect(),
        }];
        if let Some(url) = &self.url {
            components.push(TemplateComponent::Button {
                sub_type: crate::content::TemplateButtonKind::Url,
                index: 0,
                parameters: vec![TemplateParameter::Text {
                    text: url.clone(),
                    parameter_name: None,
                }],
            });
        }
        WhatsappTemplate {
            name: self.template_id.clone(),
            // WeChat's templates have no language; the form needs one.
            language: "zh_CN".to_owned(),
            components,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(v: serde_json::Value) -> TemplateDef {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn variables_come_from_every_form_sorted_and_once() {
        let d = def(json!({
            "name": "appointment_reminder",
            "text": "Hi {{contact.name}}, see you at {{ PlanTime }} ({{contact.fields.licenseplate}})",
            "whatsapp": {"name": "appointment_reminder", "language": "en_US", "components": [
                {"type": "body", "parameters": [
                    {"type": "text", "text": "{{contact.name}}"},
                    {"type": "text", "text": "{{PlanTime}}"}]}]},
            "wechat": {"template_id": "TM0001", "url": "https://example.com/a/{{AppointmentId}}",
                       "data": {"first": "Hi {{contact.name}}", "keyword1": "{{PlanTime}}"}}
        }));
        assert_eq!(
            d.check().unwrap(),
            [
                "AppointmentId",
                "PlanTime",
                "contact.fields.licenseplate",
                "contact.name"
            ]
        );
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let cases = [
            (json!({"name": "x"}), "text"),
            (json!({"name": "bad name", "text": "hi"}), "name"),
            (json!({"name": "x", "text": "hi {{contact.email}}"}), "text"),
            (json!({"name": "x", "text": "hi {{1st}}"}), "text"),
            (json!({"name": "x", "text": "hi {{PlanTime"}), "text"),
            (
                json!({"name": "x", "text": "hi {{contact.fields.9x}}"}),
                "text",
            ),
            (
                json!({"name": "x", "wechat": {"template_id": "", "data": {"a": "b"}}}),
                "wechat.template_id",
            ),
            (
                json!({"name": "x", "wechat": {"template_id": "T", "data": {}}}),
                "wechat.data",
            ),
            (
                json!({"name": "x", "whatsapp": {"name": "x", "language": "e", "components": []}}),
                "whatsapp.language",
            ),
        ];
        for (v, field) in cases {
            let e = def(v.clone()).check().unwrap_err();
            assert_eq!(e.field, field, "{v}: {e:?}");
        }
    }

    fn stored(v: serde_json::Value) -> StoredTemplate {
        let def = def(v);
        StoredTemplate {
            id: "tpl_1".into(),
            bot_id: "bot_1".into(),
            variables: def.check().unwrap(),
            def,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn rendering_picks_the_form_and_fills_every_variable_or_names_the_missing() {
        let t = stored(json!({
            "name": "reminder",
            "text": "Hi {{contact.name}}, at {{ PlanTime }} for {{contact.fields.plate}}",
            "whatsapp": {"name": "reminder", "language": "en_US", "components": [
                {"type": "body", "parameters": [
                    {"type": "text", "text": "{{contact.name}}"},
                    {"type": "text", "text": "{{PlanTime}}"}]}]}
        }));
        let native = t.def.whatsapp.clone();
        let fields: Fields = [("plate".to_owned(), "XX-99".to_owned())].into();
        let meta: BTreeMap<String, String> = [("PlanTime".to_owned(), "3 pm".to_owned())].into();
        let values = Values {
            name: Some("Ana"),
            fields: &fields,
            meta: &meta,
        };
        // The window takes free-form messages: the text.
        assert_eq!(
            t.render(Platform::Whatsapp, native.clone(), true, &values),
            Ok(Content::Text {
                text: "Hi Ana, at 3 pm for XX-99".into()
            })
        );
        // It does not: the platform's form, filled.
        let Ok(Content::Template(crate::content::TemplateMessage::Inline(w))) =
            t.render(Platform::Whatsapp, native.clone(), false, &values)
        else {
            panic!("a WhatsApp template");
        };
        assert_eq!(
            serde_json::to_value(&w.components).unwrap(),
            json!([{"type": "body", "parameters": [{"type": "text", "text": "Ana"},
                                                   {"type": "text", "text": "3 pm"}]}])
        );
        // No platform form: the text, whatever the window.
        assert!(matches!(
            t.render(Platform::Telegram, None, false, &values),
            Ok(Content::Text { .. })
        ));
        // Every meta variable is needed, whichever form goes; contact ones where used.
        let none = BTreeMap::new();
        let no_fields = Fields::new();
        let bare = Values {
            name: None,
            fields: &no_fields,
            meta: &none,
        };
        assert_eq!(
            t.render(Platform::Whatsapp, native.clone(), false, &bare),
            Err(RenderError::Missing(vec!["PlanTime".into()]))
        );
        let anonymous = Values {
            meta: &meta,
            ..bare
        };
        assert_eq!(
            t.render(Platform::Telegram, None, true, &anonymous),
            Err(RenderError::Missing(vec![
                "contact.fields.plate".into(),
                "contact.name".into()
            ]))
        );
        let only_wechat =
            stored(json!({"name": "w", "wechat": {"template_id": "T", "data": {"first": "x"}}}));
        assert_eq!(
            only_wechat.render(Platform::Line, None, true, &values),
            Err(RenderError::NoForm(Platform::Line))
        );
        let e = RenderError::Missing(vec!["PlanTime".into()]).error("reminder");
        assert_eq!(e.code, MISSING_VARIABLES);
        assert!(
            e.message.contains("reminder needs values for PlanTime"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_wechat_template_message_keeps_its_keys_and_url_in_the_template_form() {
        let w: WechatTemplate = serde_json::from_value(json!({"template_id": "TM-1",
            "url": "https://x.test/a", "data": {"first": "Hi", "keyword1": "3 pm"}}))
        .unwrap();
        assert_eq!(
            serde_json::to_value(w.as_template()).unwrap(),
            json!({"name": "TM-1", "language": "zh_CN", "components": [
                {"type": "body", "parameters": [
                    {"type": "text", "parameter_name": "first", "text": "Hi"},
                    {"type": "text", "parameter_name": "keyword1", "text": "3 pm"}]},
                {"type": "button", "sub_type": "url", "index": 0,
                 "parameters": [{"type": "text", "text": "https://x.test/a"}]}]})
        );
    }

    #[test]
    fn a_template_message_is_told_apart_by_its_id() {
        let by_id: Content = serde_json::from_value(
            json!({"type": "template", "id": "tpl_1", "meta": {"PlanTime": "3 pm"}}),
        )
        .unwrap();
        assert!(matches!(
            &by_id,
            Content::Template(crate::content::TemplateMessage::Registered(r)) if r.meta["PlanTime"] == "3 pm"
        ));
        let inline: Content =
            serde_json::from_value(json!({"type": "template", "name": "t", "language": "en"}))
                .unwrap();
        assert!(matches!(
            inline,
            Content::Template(crate::content::TemplateMessage::Inline(_))
        ));
        // Each form keeps its own errors.
        let e = serde_json::from_value::<Content>(
            json!({"type": "template", "id": "tpl_1", "name": "t"}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `name`"), "{e}");
        let e = serde_json::from_value::<Content>(json!({"type": "template", "name": "t"}))
            .unwrap_err();
        assert!(e.to_string().contains("missing field `language`"), "{e}");
        assert_eq!(
            serde_json::to_value(&by_id).unwrap(),
            json!({"type": "template", "id": "tpl_1", "meta": {"PlanTime": "3 pm"}})
        );
    }
}
