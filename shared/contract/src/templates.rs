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
    FieldError, Template as WhatsappTemplate, TemplateComponent, TemplateParameter,
};

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
}
