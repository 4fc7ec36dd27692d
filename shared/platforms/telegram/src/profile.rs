//! The bot's profile at Telegram (`GET`/`PATCH /v1/channels/{id}/profile`): its `name`,
//! `description` (shown in an empty chat) and `short_description` (on the bot's profile page
//! and in shares), for users of every language (Bot API `getMyName`/`setMyName`,
//! `getMyDescription`/`setMyDescription`, `getMyShortDescription`/`setMyShortDescription`).
//! An empty text or `null` removes one. Telegram's own refusals are reported as its answer
//! says (`classify`).

use patchbay_platform::SendError;
use serde_json::{Map, Value, json};

use crate::outbound::classify;

/// One profile key: its getter, its setter and Telegram's limit in characters.
struct Field {
    key: &'static str,
    get: &'static str,
    set: &'static str,
    max: usize,
}

const FIELDS: [Field; 3] = [
    Field {
        key: "name",
        get: "getMyName",
        set: "setMyName",
        max: 64,
    },
    Field {
        key: "description",
        get: "getMyDescription",
        set: "setMyDescription",
        max: 512,
    },
    Field {
        key: "short_description",
        get: "getMyShortDescription",
        set: "setMyShortDescription",
        max: 120,
    },
];

fn invalid(message: String) -> SendError {
    SendError::permanent("invalid_request", message, None)
}

/// The changes of `change` in order, each checked: a known key, a text within its limit or
/// `null` (removes it: Telegram takes an empty text for that).
fn checked(change: &Map<String, Value>) -> Result<Vec<(&'static Field, String)>, SendError> {
    let mut out = Vec::with_capacity(change.len());
    for (key, value) in change {
        let Some(field) = FIELDS.iter().find(|f| f.key == key) else {
            return Err(invalid(format!(
                "{key}: a Telegram profile has name, description and short_description"
            )));
        };
        let text = match value {
            Value::Null => String::new(),
            Value::String(s) if s.chars().count() <= field.max => s.clone(),
            Value::String(_) => {
                return Err(invalid(format!(
                    "{key}: at most {} characters (Telegram's limit)",
                    field.max
                )));
            }
            _ => return Err(invalid(format!("{key}: must be a text or null"))),
        };
        out.push((field, text));
    }
    Ok(out)
}

/// Calls `method` of the Bot API; answers its `result`.
async fn call(
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    method: &str,
    body: Value,
) -> Result<Value, SendError> {
    let unreachable = |e: reqwest::Error| SendError::Retryable {
        // Never log the URL: it carries the bot token.
        reason: format!("Telegram unreachable: {}", e.without_url()),
        after: None,
    };
    let response = http
        .post(format!(
            "{}/bot{token}/{method}",
            base_url.trim_end_matches('/')
        ))
        .json(&body)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(unreachable)?;
    classify(status, &bytes)?;
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Ok(answer["result"].clone())
}

/// Applies `change` (when given), then reads the profile back.
pub async fn profile(
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    change: Option<&Map<String, Value>>,
) -> Result<Map<String, Value>, SendError> {
    for (field, text) in checked(change.unwrap_or(&Map::new()))? {
        call(http, base_url, token, field.set, json!({ field.key: text })).await?;
    }
    let mut out = Map::new();
    for field in &FIELDS {
        let result = call(http, base_url, token, field.get, json!({})).await?;
        let text = result[field.key].as_str().unwrap_or_default();
        out.insert(field.key.to_owned(), json!(text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_a_known_key_and_keep_telegrams_limits() {
        let ok: Map<String, Value> =
            serde_json::from_value(json!({"name": "Acme", "description": null})).unwrap();
        let got: Vec<_> = checked(&ok)
            .unwrap()
            .into_iter()
            .map(|(f, t)| (f.set, t))
            .collect();
        assert_eq!(
            got,
            [
                ("setMyDescription", String::new()),
                ("setMyName", "Acme".into())
            ]
        );
        for (bad, field) in [
            (json!({"about": "x"}), "about"),
            (json!({"name": "x".repeat(65)}), "name"),
            (json!({"short_description": 7}), "short_description"),
        ] {
            let change: Map<String, Value> = serde_json::from_value(bad).unwrap();
            let Err(SendError::Permanent(e)) = checked(&change) else {
                panic!("refused");
            };
            assert_eq!(e.code, "invalid_request");
            assert!(e.message.starts_with(field), "{}", e.message);
        }
    }
}
