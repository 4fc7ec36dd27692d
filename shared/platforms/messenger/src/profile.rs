//! The Page's Messenger profile (`GET`/`PATCH /v1/channels/{id}/profile`): its `greeting`
//! (`[{"locale": "default", "text": "…"}]`, shown before the first message), `get_started`
//! (`{"payload": "…"}`, the button that starts a conversation, whose tap arrives as a
//! postback), `persistent_menu` and `ice_breakers`, in the Messenger Profile API's own shapes.
//!
//! * read: `GET /<PAGE_ID>/messenger_profile?fields=greeting,get_started,persistent_menu,
//!   ice_breakers`, whose answer is `{"data": [{…}]}` (empty when nothing is set); a key not
//!   set is `null`;
//! * change: `POST /<PAGE_ID>/messenger_profile` with the keys given, and
//!   `DELETE /<PAGE_ID>/messenger_profile` `{"fields": [...]}` for those given as `null`.
//!
//! Meta checks the objects' insides (a persistent menu needs the get-started button, and so
//! on); its refusals are classified as sends' are ([`crate::outbound::classify`]).

use patchbay_platform::SendError;
use patchbay_platform::meta::call_graph;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::credentials::MessengerCredentials;
use crate::outbound::classify;

/// The profile's keys.
const FIELDS: [&str; 4] = ["greeting", "get_started", "persistent_menu", "ice_breakers"];

fn invalid(message: String) -> SendError {
    SendError::permanent("invalid_request", message, None)
}

/// `change` split into what is set and what is removed, each key checked for its shape.
fn split(change: &Map<String, Value>) -> Result<(Map<String, Value>, Vec<String>), SendError> {
    let mut set = Map::new();
    let mut removed = Vec::new();
    for (key, value) in change {
        if !FIELDS.contains(&key.as_str()) {
            return Err(invalid(format!(
                "{key}: a Messenger profile has greeting, get_started, persistent_menu and \
                 ice_breakers"
            )));
        }
        let shaped = match (key.as_str(), value) {
            (_, Value::Null) => {
                removed.push(key.clone());
                continue;
            }
            ("greeting", Value::Array(g)) => g.iter().all(|e| {
                e["locale"].is_string()
                    && e["text"].as_str().is_some_and(|t| t.chars().count() <= 160)
            }),
            ("get_started", Value::Object(_)) => value["payload"]
                .as_str()
                .is_some_and(|p| !p.is_empty() && p.len() <= 1000),
            ("persistent_menu" | "ice_breakers", Value::Array(a)) => a.iter().all(Value::is_object),
            _ => false,
        };
        if !shaped {
            let shape = match key.as_str() {
                "greeting" => "a list of {\"locale\", \"text\"} (at most 160 characters)",
                "get_started" => "{\"payload\": \"…\"} (1 to 1000 characters)",
                _ => "a list of objects in the Messenger Profile API's shape",
            };
            return Err(invalid(format!("{key}: must be {shape}, or null")));
        }
        set.insert(key.clone(), value.clone());
    }
    Ok((set, removed))
}

async fn graph(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<Value, SendError> {
    call_graph(http, method, url, token, body, "Messenger", classify).await
}

/// Applies `change` (when given), then reads the profile back.
pub async fn profile(
    http: &reqwest::Client,
    base_url: &str,
    creds: &MessengerCredentials,
    change: Option<&Map<String, Value>>,
) -> Result<Map<String, Value>, SendError> {
    let token = &creds.page_access_token;
    let url = format!(
        "{}/{}/messenger_profile",
        base_url.trim_end_matches('/'),
        creds.page_id
    );
    if let Some(change) = change {
        let (set, removed) = split(change)?;
        if !set.is_empty() {
            graph(http, Method::POST, &url, token, Some(&Value::Object(set))).await?;
        }
        if !removed.is_empty() {
            let body = json!({ "fields": removed });
            graph(http, Method::DELETE, &url, token, Some(&body)).await?;
        }
    }
    let read = graph(
        http,
        Method::GET,
        &format!("{url}?fields={}", FIELDS.join(",")),
        token,
        None,
    )
    .await?;
    let found = read["data"][0].as_object().cloned().unwrap_or_default();
    Ok(FIELDS
        .iter()
        .map(|f| {
            (
                (*f).to_owned(),
                found.get(*f).cloned().unwrap_or(Value::Null),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_split_into_what_is_set_and_removed_and_bad_shapes_are_named() {
        let change: Map<String, Value> = serde_json::from_value(json!({
            "greeting": [{"locale": "default", "text": "Hi {{user_first_name}}!"}],
            "get_started": {"payload": "GET_STARTED"},
            "ice_breakers": null
        }))
        .unwrap();
        let (set, removed) = split(&change).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(removed, ["ice_breakers"]);
        for (bad, field) in [
            (json!({"about": "x"}), "about"),
            (json!({"greeting": "Hi"}), "greeting"),
            (
                json!({"greeting": [{"locale": "default", "text": "x".repeat(161)}]}),
                "greeting",
            ),
            (json!({"get_started": {"payload": ""}}), "get_started"),
            (json!({"persistent_menu": [1]}), "persistent_menu"),
        ] {
            let change: Map<String, Value> = serde_json::from_value(bad).unwrap();
            let Err(SendError::Permanent(e)) = split(&change) else {
                panic!("refused");
            };
            assert!(e.message.starts_with(field), "{}", e.message);
        }
    }
}
