//! One-time codes for web views (DESIGN.md, "One-time codes").
//!
//! * `GET /go/{token}` (public, opened by the user's browser): the token is a Patchbay link the
//!   router put in place of a URL button containing `:code` (links bucket, bound to bot, user
//!   and the tenant's URL). Mints a one-time code (256 random bits, URL-safe), stores it in the
//!   codes bucket (TTL `PATCHBAY_CODE_TTL_MS`, 5 minutes), substitutes it for `:code` and
//!   answers 302 to the tenant's page. The first opening binds the link to that browser (a
//!   device cookie, its hash in the link record, set with a compare-and-set): for the button's
//!   `reuse_seconds` (10 minutes unless it says; 0: once) the same browser may open it again,
//!   each opening minting a new code, at most `MAX_CODES_PER_LINK`; another browser (a
//!   forwarded message) gets a 410 page. Unknown link: 404 page; expired link or disabled bot:
//!   410 page.
//! * `POST /v1/codes/claim` (bot API key), `{"code": "…"}`: the user's profile, once. The
//!   code's entry is deleted with its revision as the expected last revision, so of any number
//!   of concurrent claims exactly one deletes it and gets 200. Every claim that cannot succeed
//!   (unknown, expired, already claimed, or minted for another bot) answers the same 410
//!   `code_invalid`, so a bot learns nothing about other bots' codes; a claim by the wrong bot
//!   does not consume the code.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use patchbay_contract::subjects::Bucket;
use patchbay_contract::{CodeRecord, LinkRecord, MAX_CODES_PER_LINK, V1};
use patchbay_runtime::http::ApiJson;
use patchbay_runtime::{ApiError, BoxError, Deps};
use serde::Deserialize;

use crate::Api;
use crate::auth::BotAuth;
use crate::users::{Profile, profile};

/// The placeholder replaced by the code.
const CODE_PLACEHOLDER: &str = ":code";

/// The buckets behind links and codes.
pub(crate) struct Codes {
    links: kv::Store,
    codes: kv::Store,
    code_ttl: Duration,
    /// Codes per bot and code lifetime.
    quota: patchbay_bus::quota::Quota,
    /// Whether the device cookie is `Secure` (the public URL is https).
    secure_cookies: bool,
}

impl Codes {
    /// Opens the links and codes buckets (created by `ensure_topology`).
    pub(crate) async fn open(deps: &Deps) -> Result<Arc<Self>, BoxError> {
        let s = deps.bus.subjects();
        let js = deps.bus.jetstream();
        Ok(Arc::new(Self {
            links: js.get_key_value(s.bucket(Bucket::Links)).await?,
            codes: js.get_key_value(s.bucket(Bucket::Codes)).await?,
            code_ttl: Duration::from_millis(deps.config.code_ttl_ms),
            quota: patchbay_bus::quota::Quota::open(
                &deps.bus,
                "codes",
                Duration::from_millis(deps.config.code_ttl_ms),
                deps.config.codes_per_bot,
            )
            .await?,
            secure_cookies: deps.config.public_url.starts_with("https://"),
        }))
    }
}

/// The routes, to merge into the api's router.
pub(crate) fn routes(codes: Arc<Codes>) -> Router<Arc<Api>> {
    Router::new()
        .route("/go/{token}", get(open_link))
        .route("/v1/codes/claim", post(claim))
        .layer(Extension(codes))
}

/// Tokens and codes are 43 characters of URL-safe base64; anything else is not looked up
/// (and cannot be an invalid KV key).
fn well_formed(token: &str) -> bool {
    (20..=100).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A short page for the user's browser (this route is opened by people, not programs).
fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{text}</p></body></html>"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn unavailable_page() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again",
        "This page is temporarily unavailable. Please try again in a moment.",
    )
}

async fn open_link(
    State(api): State<Arc<Api>>,
    Extension(codes): Extension<Arc<Codes>>,
    Path(token): Path<String>,
    headers: header::HeaderMap,
) -> Response {
    let unknown = || {
        page(
            StatusCode::NOT_FOUND,
            "Link not found",
            "This link is unknown or has expired. Open the page again from the chat.",
        )
    };
    let expired = || {
        page(
            StatusCode::GONE,
            "Link expired",
            "This link has expired. Open the page again from a newer message in the chat.",
        )
    };
    let used = || {
        page(
            StatusCode::GONE,
            "Link already used",
            "This link opens once, and it was opened already. Open the page again from a newer \
             message in the chat.",
        )
    };
    let elsewhere = || {
        page(
            StatusCode::GONE,
            "Link opened on another device",
            "This link was opened on another device. Open it from the chat on your own device.",
        )
    };
    if !well_formed(&token) {
        return unknown();
    }
    let device = device_cookie(&headers);
    let now = chrono::Utc::now();
    // The link's entry, at a revision: its first opening is recorded with a compare-and-set,
    // so of two first openings at once exactly one becomes the opener.
    let mut quota_taken = false;
    let (link, device_token) = loop {
        let entry = match codes.links.entry(&token).await {
            Ok(Some(e)) if e.operation == Operation::Put => e,
            Ok(_) => return unknown(),
            Err(e) => {
                tracing::warn!(error = %e, "links bucket unavailable");
                return unavailable_page();
            }
        };
        let mut link: LinkRecord = match serde_json::from_slice(&entry.value) {
            Ok(link) => link,
            Err(e) => {
                tracing::error!(error = %e, "undecodable link record");
                return unknown();
            }
        };
        if link.expires_at <= now {
            return expired();
        }
        let mut device_token = None;
        match (&link.opened_at, &link.opener) {
            (Some(opened_at), Some(opener)) => {
                if link.reuse_seconds == 0 {
                    return used();
                }
                if now > *opened_at + chrono::Duration::seconds(i64::from(link.reuse_seconds)) {
                    return expired();
                }
                if device.as_deref().map(device_hash).as_deref() != Some(opener.as_str()) {
                    return elsewhere();
                }
            }
            _ => {
                let Ok(t) = patchbay_config::secrets::new_url_token() else {
                    return unavailable_page();
                };
                link.opened_at = Some(now);
                link.opener = Some(device_hash(&t));
                device_token = Some(t);
            }
        }
        if link.codes_minted >= MAX_CODES_PER_LINK {
            return page(
                StatusCode::TOO_MANY_REQUESTS,
                "Opened too often",
                "This link was opened too many times. Open the page again from a newer message \
                 in the chat.",
            );
        }
        // The bot's codes in this code lifetime, taken once (not again when the compare-and-set
        // below has to look again), before the opening is recorded: a refused opening leaves
        // the link as it was.
        if !quota_taken {
            match codes.quota.take(&link.bot_id).await {
                Ok(true) => quota_taken = true,
                Ok(false) => {
                    metrics::counter!("patchbay_quota_refused_total", "kind" => "codes")
                        .increment(1);
                    return page(
                        StatusCode::TOO_MANY_REQUESTS,
                        "Too many pages opened",
                        "Too many pages of this service were opened in the last minutes. Try \
                         again in a few minutes.",
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "quotas bucket unavailable");
                    return unavailable_page();
                }
            }
        }
        link.codes_minted += 1;
        let Ok(body) = serde_json::to_vec(&link) else {
            return unavailable_page();
        };
        match codes
            .links
            .update(&token, body.into(), entry.revision)
            .await
        {
            Ok(_) => break (link, device_token),
            // Opened at the same moment elsewhere: judge again with what that opening wrote.
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
            Err(e) => {
                tracing::warn!(error = %e, "links bucket unavailable");
                return unavailable_page();
            }
        }
    };
    match api.view.bot(&link.bot_id).await {
        Ok(Some(bot)) if bot.enabled => {}
        Ok(_) => return expired(),
        Err(e) => {
            tracing::warn!(error = %e, "config view unavailable");
            return unavailable_page();
        }
    }
    let (code, ttl) = match (
        patchbay_config::secrets::new_url_token(),
        chrono::Duration::from_std(codes.code_ttl),
    ) {
        (Ok(code), Ok(ttl)) => (code, ttl),
        (Err(e), _) => {
            tracing::error!(error = %e, "no randomness for a code");
            return unavailable_page();
        }
        (_, Err(e)) => {
            tracing::error!(error = %e, "code TTL out of range");
            return unavailable_page();
        }
    };
    let record = CodeRecord {
        v: V1,
        bot_id: link.bot_id.clone(),
        user_id: link.user_id.clone(),
        expires_at: now + ttl,
    };
    let stored = match serde_json::to_vec(&record) {
        Ok(body) => codes.codes.create(&code, body.into()).await.map(|_| ()),
        Err(e) => {
            tracing::error!(error = %e, "code record not encodable");
            return unavailable_page();
        }
    };
    if let Err(e) = stored {
        tracing::warn!(error = %e, "codes bucket unavailable");
        return unavailable_page();
    }
    let location = link.url.replace(CODE_PLACEHOLDER, &code);
    let mut response = (
        StatusCode::FOUND,
        [
            (header::LOCATION, location.as_str()),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
    )
        .into_response();
    // The first opener's browser keeps the device token that opens the link again.
    if let Some(t) = device_token
        && link.reuse_seconds > 0
    {
        let secure = if codes.secure_cookies { "; Secure" } else { "" };
        let cookie = format!(
            "{DEVICE_COOKIE}={t}; Path=/go/{token}; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
            link.reuse_seconds
        );
        if let Ok(v) = header::HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    response
}

/// The cookie that marks the browser that opened a link first.
const DEVICE_COOKIE: &str = "pb_go";

/// The device token the request's cookies carry for this link, if any.
fn device_cookie(headers: &header::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == DEVICE_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| well_formed(v))
}

/// How a device token is kept in the link record: SHA-256, hex.
fn device_hash(token: &str) -> String {
    patchbay_config::secrets::api_key_hash(token)
}

/// Body of `POST /v1/codes/claim`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimBody {
    code: String,
}

fn invalid_code() -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "code_invalid",
        "this code cannot be claimed: it is unknown, expired, already claimed, or not this \
         bot's (codes are single use and expire a few minutes after the user opened the link)",
    )
}

fn bucket_unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "codes bucket unavailable");
    ApiError::unavailable("temporarily unable to check the code; retry shortly")
}

async fn claim(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Extension(codes): Extension<Arc<Codes>>,
    ApiJson(body): ApiJson<ClaimBody>,
) -> Result<axum::Json<Profile>, ApiError> {
    Ok(axum::Json(
        claim_code(&api, &codes, &bot.bot_id, &body.code).await?,
    ))
}

/// Claims `code` for `bot_id` once: the user's profile; 410 `code_invalid` otherwise (unknown,
/// expired, claimed, another bot's; a wrong bot's attempt does not consume it).
pub(crate) async fn claim_code(
    api: &Api,
    codes: &Codes,
    bot_id: &str,
    code: &str,
) -> Result<Profile, ApiError> {
    if !well_formed(code) {
        return Err(invalid_code());
    }
    let entry = codes
        .codes
        .entry(code)
        .await
        .map_err(bucket_unavailable)?
        .filter(|e| e.operation == Operation::Put)
        .ok_or_else(invalid_code)?;
    let record: CodeRecord = serde_json::from_slice(&entry.value).map_err(ApiError::internal)?;
    if record.bot_id != bot_id || record.expires_at <= chrono::Utc::now() {
        return Err(invalid_code());
    }
    // Read the profile before consuming the code, so a router hiccup does not burn it.
    let profile = profile(api, bot_id, &record.user_id).await?;
    match codes
        .codes
        .delete_expect_revision(code, Some(entry.revision))
        .await
    {
        Ok(()) => Ok(profile),
        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Err(invalid_code()),
        Err(e) => Err(bucket_unavailable(e)),
    }
}
