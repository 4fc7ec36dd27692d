//! What Facebook Messenger and the WhatsApp Cloud API share as Meta Graph API platforms
//! (`reference/platforms.md` §2.1, §2.7, §3.1, §3.6): the `hub.*` verification handshake, the
//! `X-Hub-Signature-256` check (HMAC-SHA256 of the raw body with the app secret, compared in
//! constant time), the Graph error envelope, and one Graph `POST` with its transport errors
//! classified.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::HeaderMap;
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::{Rejection, SendError};

/// The signature header Meta sends with every event POST.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Checks `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, body)>` over the raw bytes.
pub fn verify_signature(
    app_secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Rejection> {
    let given = headers
        .get(SIGNATURE_HEADER)
        .ok_or_else(|| Rejection::Unauthorized("missing X-Hub-Signature-256".into()))?
        .to_str()
        .map_err(|_| Rejection::Unauthorized("X-Hub-Signature-256 is not ASCII".into()))?;
    let hex = given
        .strip_prefix("sha256=")
        .ok_or_else(|| Rejection::Unauthorized("X-Hub-Signature-256 lacks sha256=".into()))?;
    let expected = signature_hex(app_secret, body);
    if !expected.is_empty()
        && bool::from(
            hex.to_ascii_lowercase()
                .as_bytes()
                .ct_eq(expected.as_bytes()),
        )
    {
        Ok(())
    } else {
        Err(Rejection::Unauthorized(
            "X-Hub-Signature-256 does not match the app secret".into(),
        ))
    }
}

/// Lowercase hex of HMAC-SHA256(`app_secret`, `body`) (empty, so never matching, in the
/// impossible case that HMAC refuses the key: it takes keys of any length).
pub fn signature_hex(app_secret: &str, body: &[u8]) -> String {
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(app_secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `GET` verification: `hub.challenge` when `hub.mode` is `subscribe` and
/// `hub.verify_token` equals `verify_token` (compared in constant time).
pub fn handshake(verify_token: &str, query: &HashMap<String, String>) -> Result<String, Rejection> {
    let mode = query.get("hub.mode").map(String::as_str);
    if mode != Some("subscribe") {
        return Err(Rejection::Unauthorized(format!(
            "hub.mode is {mode:?}, not subscribe"
        )));
    }
    let token = query.get("hub.verify_token").map_or("", String::as_str);
    if !bool::from(token.as_bytes().ct_eq(verify_token.as_bytes())) {
        return Err(Rejection::Unauthorized(
            "hub.verify_token does not match".into(),
        ));
    }
    query
        .get("hub.challenge")
        .cloned()
        .ok_or_else(|| Rejection::Malformed("hub.challenge is missing".into()))
}

/// Checks a Graph object id in a channel's credentials (digits only, as Meta shows them).
pub fn graph_id(name: &str, value: &str) -> Result<(), patchbay_contract::content::FieldError> {
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_digit()) {
        return Err(patchbay_contract::content::FieldError::new(
            format!("credentials.{name}"),
            "must be the numeric id Meta shows",
        ));
    }
    Ok(())
}

/// Meta's time stamps in milliseconds (Messenger) as a time.
pub fn time_ms(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_else(chrono::Utc::now)
}

/// The Graph error envelope `{"error": {...}}`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct GraphError {
    /// The message.
    #[serde(default)]
    pub message: String,
    /// The code Meta documents (`190`, `131047`, …).
    #[serde(default)]
    pub code: i64,
    /// The subcode (Messenger; deprecated on WhatsApp).
    #[serde(default)]
    pub error_subcode: Option<i64>,
    /// WhatsApp's `error_data.details`.
    #[serde(default)]
    pub error_data: Option<ErrorData>,
}

/// WhatsApp's `error_data`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct ErrorData {
    /// What went wrong, in words.
    #[serde(default)]
    pub details: Option<String>,
}

impl GraphError {
    /// The message with the details, for `message.failed`.
    pub fn describe(&self) -> String {
        match self.error_data.as_ref().and_then(|d| d.details.as_deref()) {
            Some(d) if !d.is_empty() && d != self.message => format!("{} ({d})", self.message),
            _ => self.message.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    error: GraphError,
}

/// The error in a Graph answer body, if it has one.
pub fn graph_error(body: &[u8]) -> Option<GraphError> {
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .map(|e| e.error)
}

/// How long Meta asks to wait, from `X-Business-Use-Case-Usage`'s
/// `estimated_time_to_regain_access` (minutes) when present.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let raw = headers.get("x-business-use-case-usage")?.to_str().ok()?;
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    let minutes = v
        .as_object()?
        .values()
        .filter_map(|entries| entries.as_array())
        .flatten()
        .filter_map(|e| e.get("estimated_time_to_regain_access")?.as_u64())
        .max()?;
    (minutes > 0).then(|| Duration::from_secs(minutes * 60))
}

/// One Graph API `POST` of a JSON body with a bearer token: the status, the headers and the
/// body, or a retryable error when Meta could not be reached (never with the URL or token).
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
    platform: &str,
) -> Result<(u16, reqwest::header::HeaderMap, bytes::Bytes), SendError> {
    call_json(
        http,
        reqwest::Method::POST,
        url,
        token,
        Some(body),
        platform,
    )
    .await
}

/// One Graph API call of `method` with a bearer token and, when given, a JSON body; as
/// [`post_json`].
pub async fn call_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<&serde_json::Value>,
    platform: &str,
) -> Result<(u16, reqwest::header::HeaderMap, bytes::Bytes), SendError> {
    let mut request = http
        .request(method, url)
        .headers(crate::http::trace_headers())
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.map_err(|e| SendError::Retryable {
        reason: format!("{platform} unreachable: {}", e.without_url()),
        after: None,
    })?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(|e| SendError::Retryable {
        reason: format!("reading {platform}'s answer: {}", e.without_url()),
        after: None,
    })?;
    Ok((status, headers, body))
}

/// One Graph API call whose answer is JSON (a profile read or change): the answer, or Meta's
/// refusal as `classify` reads it.
pub async fn call_graph(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<&serde_json::Value>,
    platform: &str,
    classify: Classify,
) -> Result<serde_json::Value, SendError> {
    let (status, headers, bytes) = call_json(http, method, url, token, body, platform).await?;
    if !(200..300).contains(&status) {
        classify(status, &headers, &bytes)?;
    }
    Ok(serde_json::from_slice(&bytes).unwrap_or_default())
}

/// How a Graph answer is read: the platform's message id, or why the send failed.
pub type Classify =
    fn(u16, &reqwest::header::HeaderMap, &[u8]) -> Result<Option<String>, crate::SendError>;

/// Posts `bodies` to `url` in order (one content may take several requests, e.g. a caption
/// after its picture), stopping at the first failure; the first message id is the one Patchbay
/// records for the message.
pub async fn post_each(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    bodies: impl IntoIterator<Item = serde_json::Value>,
    platform: &str,
    classify: Classify,
) -> Result<crate::Sent, SendError> {
    let mut first_id = None;
    for body in bodies {
        let (status, headers, answer) = post_json(http, url, token, &body, platform).await?;
        first_id = first_id.or(classify(status, &headers, &answer)?);
    }
    Ok(crate::Sent {
        platform_message_id: first_id,
        media_reference: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_the_raw_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature_hex("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let body = br#"{"object":"page","entry":[]}"#;
        let mut h = HeaderMap::new();
        assert!(verify_signature("s", &h, body).is_err());
        h.insert(SIGNATURE_HEADER, "sha1=abc".parse().unwrap());
        assert!(verify_signature("s", &h, body).is_err());
        let good = format!("sha256={}", signature_hex("s", body));
        h.insert(SIGNATURE_HEADER, good.parse().unwrap());
        assert!(verify_signature("s", &h, body).is_ok());
        assert!(verify_signature("other", &h, body).is_err());
        assert!(verify_signature("s", &h, b"{}").is_err());
        h.insert(
            SIGNATURE_HEADER,
            good.to_uppercase()
                .replace("SHA256=", "sha256=")
                .parse()
                .unwrap(),
        );
        assert!(
            verify_signature("s", &h, body).is_ok(),
            "hex case does not matter"
        );
    }

    #[test]
    fn handshake_echoes_the_challenge_for_the_right_token_only() {
        let q = |mode: &str, token: &str| -> HashMap<String, String> {
            [
                ("hub.mode", mode),
                ("hub.verify_token", token),
                ("hub.challenge", "1158201444"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
        };
        assert_eq!(
            handshake("vt", &q("subscribe", "vt")),
            Ok("1158201444".into())
        );
        assert!(handshake("vt", &q("subscribe", "nope")).is_err());
        assert!(handshake("vt", &q("unsubscribe", "vt")).is_err());
        assert!(handshake("vt", &HashMap::new()).is_err());
    }

    #[test]
    fn graph_errors_and_usage_headers_are_read() {
        let e = graph_error(br#"{"error":{"message":"Re-engagement message","type":"OAuthException","code":131047,"error_data":{"messaging_product":"whatsapp","details":"More than 24 hours have passed"},"fbtrace_id":"A"}}"#).unwrap();
        assert_eq!(e.code, 131047);
        assert_eq!(
            e.describe(),
            "Re-engagement message (More than 24 hours have passed)"
        );
        assert_eq!(graph_error(b"<html>"), None);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "x-business-use-case-usage",
            r#"{"1061":[{"type":"messenger","call_count":100,"estimated_time_to_regain_access":2}]}"#
                .parse()
                .unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
    }
}
