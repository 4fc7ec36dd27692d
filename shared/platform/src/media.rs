//! Media users sent, fetched from their platform when a bot asks for it
//! (`GET /v1/media/{media_id}`): the API asks the platform's sender (the only service that
//! opens the channel's credentials to call the platform) on
//! `<p>.rpc.outbound-<platform>.fetch_media`; the sender downloads the file with
//! [`crate::OutboundAdapter::fetch_media`] and stores it in the media object store, from which
//! the API streams it.
//!
//! | platform | how |
//! |---|---|
//! | Telegram | `getFile` for the `file_path`, then `/file/bot<token>/<file_path>` |
//! | WhatsApp | `GET /<media id>` for a short-lived URL, then that URL, both with the access token |
//! | WeChat | `GET /cgi-bin/media/get?media_id=…` with the access token |
//! | LINE | `GET /v2/bot/message/{id}/content` on `api-data.line.me` with the access token |
//! | others (Messenger, Kik, Viber, custom) | the URL the webhook carried ([`UrlFetcher`]: public addresses only) |
//!
//! Every download is bounded (`PATCHBAY_MEDIA_MAX_BYTES`): a larger file is refused as
//! `too_large`, without reading the rest.

use std::time::Duration;

use crate::SendError;

/// A downloaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Its MIME type (`application/octet-stream` when the platform did not say).
    pub content_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// What a download may use: URLs through [`UrlFetcher`], at most `max_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The guarded fetcher of platform CDN URLs.
    pub urls: &'a UrlFetcher,
    /// The largest file accepted.
    pub max_bytes: u64,
}

/// The refusal of a file over `max` bytes.
pub fn too_large(max: u64) -> SendError {
    SendError::permanent(
        "too_large",
        format!("the file is larger than {max} bytes (PATCHBAY_MEDIA_MAX_BYTES)"),
        None,
    )
}

fn retry(reason: String) -> SendError {
    SendError::Retryable {
        reason,
        after: None,
    }
}

/// Classifies a download's HTTP answer: 2xx passes, 429 and 5xx are worth another try, 404 and
/// 410 mean the platform no longer has the file, anything else is refused.
pub fn check_status(response: &reqwest::Response, what: &str) -> Result<(), SendError> {
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.as_u16() == 429 || status.is_server_error() {
        Err(retry(format!("{what} answered HTTP {status}")))
    } else if matches!(status.as_u16(), 404 | 410) {
        Err(SendError::permanent(
            "not_found",
            format!("{what} no longer has the file (HTTP {status})"),
            Some(i64::from(status.as_u16())),
        ))
    } else {
        Err(SendError::permanent(
            "platform_error",
            format!("{what} refused the download (HTTP {status})"),
            Some(i64::from(status.as_u16())),
        ))
    }
}

/// Reads `response`'s body, refusing more than `max` bytes (by its `Content-Length`, or while
/// reading).
pub async fn read_limited(
    mut response: reqwest::Response,
    max: u64,
    what: &str,
) -> Result<Fetched, SendError> {
    if response.content_length().is_some_and(|len| len > max) {
        return Err(too_large(max));
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "application/octet-stream".into());
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| retry(format!("downloading from {what}: {}", e.without_url())))?
    {
        if (bytes.len() + chunk.len()) as u64 > max {
            return Err(too_large(max));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        content_type,
        bytes,
    })
}

/// Redirects followed (each target checked like the first URL).
const MAX_REDIRECTS: usize = 3;

/// Downloads from URLs a platform's webhook carried: http(s) only, public addresses only
/// (unless the operator allows private ones, `PATCHBAY_ALLOW_PRIVATE_CALLBACKS`), redirects
/// followed and checked.
#[derive(Debug, Clone)]
pub struct UrlFetcher {
    http: reqwest::Client,
    allow_private: bool,
}

impl UrlFetcher {
    /// A fetcher with `timeout` per request.
    pub fn new(timeout: Duration, allow_private: bool) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: crate::webhook::tenant_client(
                timeout,
                allow_private,
                concat!("Patchbay/", env!("CARGO_PKG_VERSION")),
            )?,
            allow_private,
        })
    }

    /// The file at `raw`, at most `max` bytes.
    pub async fn get(&self, raw: &str, max: u64) -> Result<Fetched, SendError> {
        let refused = |why: String| SendError::permanent("invalid_request", why, None);
        let mut url = reqwest::Url::parse(raw).map_err(|e| refused(format!("not a URL: {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(refused("the media URL must be http or https".into()));
            }
            if let Some(why) = crate::webhook::refused_literal(&url, self.allow_private) {
                return Err(refused(format!("media URL refused: {why}")));
            }
            let host = url.host_str().unwrap_or_default().to_owned();
            let response = self
                .http
                .get(url.clone())
                .send()
                .await
                .map_err(|e| retry(format!("downloading from {host}: {}", e.without_url())))?;
            if response.status().is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| refused(format!("{host} redirected without a Location")))?;
                url = url
                    .join(location)
                    .map_err(|e| refused(format!("{host} redirected to no URL: {e}")))?;
                continue;
            }
            check_status(&response, &host)?;
            return read_limited(response, max, &host).await;
        }
        Err(refused(format!(
            "the media URL redirects more than {MAX_REDIRECTS} times"
        )))
    }
}
