//! Sign-ins: a random token in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` when the
//! public URL is `https`), the session under the token's hash in the `<p>_sessions` bucket,
//! sealed with the master key (it holds the person's credential), ending when the bucket's TTL
//! or its own `expires_at` passes, or at sign-out. Every form carries the session's CSRF token;
//! the sign-in form, before any session, a token doubled in a cookie.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use chrono::{DateTime, Utc};
use patchbay_config::MasterKey;
use patchbay_config::secrets::new_url_token;
use patchbay_contract::subjects::Bucket;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Console;
use crate::page::ConsoleError;

/// The session cookie.
pub(crate) const COOKIE: &str = "pb_console";
/// The sign-in form's own CSRF cookie.
pub(crate) const SIGN_IN_COOKIE: &str = "pb_console_signin";
/// The largest form accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Who is signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    /// The operator's admin token: every tenant's bots and channels.
    Operator,
    /// A bot's API key: the bot's settings, events, deliveries, agents.
    Developer,
    /// A bot's agent invite: its conversations.
    Agent,
}

impl Role {
    /// As the header shows it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Role::Operator => "Operator",
            Role::Developer => "Developer",
            Role::Agent => "Agent",
        }
    }
}

/// One sign-in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Session {
    pub(crate) role: Role,
    /// The credential every API request of this session carries.
    pub(crate) bearer: String,
    /// Every form's hidden `csrf` field must be this.
    pub(crate) csrf: String,
    /// Developers and agents: their bot.
    #[serde(default)]
    pub(crate) bot_id: Option<String>,
    #[serde(default)]
    pub(crate) bot_name: Option<String>,
    /// Agents: their name.
    #[serde(default)]
    pub(crate) agent: Option<String>,
    pub(crate) expires_at: DateTime<Utc>,
    /// Operators: the API keys of the bots this session created (or rotated the key of),
    /// so it can open their developer view (sealed with the rest).
    #[serde(default)]
    pub(crate) keys: std::collections::BTreeMap<String, String>,
}

impl Session {
    /// Refuses what `roles` may not see (403, naming who may).
    pub(crate) fn require(&self, roles: &[Role]) -> Result<(), ConsoleError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(format!(
                "this page is for {}; you are signed in as {}",
                roles
                    .iter()
                    .map(|r| r.label().to_lowercase())
                    .collect::<Vec<_>>()
                    .join(" or "),
                self.role.label().to_lowercase()
            )))
        }
    }

    /// Who is signed in, as the header shows it.
    pub(crate) fn who(&self) -> String {
        match (&self.agent, &self.bot_name) {
            (Some(agent), Some(bot)) => format!("{agent} · {bot}"),
            (None, Some(bot)) => bot.clone(),
            _ => "Operator".into(),
        }
    }
}

/// The sessions bucket.
pub(crate) struct Sessions {
    kv: kv::Store,
    key: MasterKey,
    ttl: Duration,
    secure: bool,
}

/// The bucket key of a cookie's token: its hash, so the bucket holds no usable cookie.
fn key_of(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The associated data a session is sealed with: its bucket key, as every value sealed whole
/// in a bucket is (so `patchbay master-key reseal` reseals it; a session cannot be moved to
/// another key).
fn owner(key: &str) -> String {
    key.to_owned()
}

impl Sessions {
    pub(crate) async fn open(
        bus: &patchbay_bus::Bus,
        key: MasterKey,
        ttl: Duration,
        secure: bool,
    ) -> Result<Self, patchbay_runtime::BoxError> {
        let kv = bus
            .jetstream()
            .get_key_value(bus.subjects().bucket(Bucket::Sessions))
            .await?;
        Ok(Sessions {
            kv,
            key,
            ttl,
            secure,
        })
    }

    /// Stores a new session; the cookie's token.
    pub(crate) async fn create(&self, mut session: Session) -> Result<String, ConsoleError> {
        let token = new_url_token().map_err(|_| ConsoleError::Internal)?;
        session.csrf = new_url_token().map_err(|_| ConsoleError::Internal)?;
        session.expires_at = Utc::now()
            + chrono::Duration::from_std(self.ttl).map_err(|_| ConsoleError::Internal)?;
        self.update(&token, &session).await?;
        Ok(token)
    }

    /// Stores a changed session under its cookie's token (its lifetime unchanged).
    pub(crate) async fn update(&self, token: &str, session: &Session) -> Result<(), ConsoleError> {
        let key = key_of(token);
        let json = serde_json::to_vec(session).map_err(|_| ConsoleError::Internal)?;
        let sealed = self
            .key
            .seal(&owner(&key), &json)
            .map_err(|_| ConsoleError::Internal)?;
        self.kv
            .put(&key, sealed.into_bytes().into())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "could not store a session");
                ConsoleError::Unavailable
            })?;
        Ok(())
    }

    /// The session of a cookie's token, if it has not ended.
    pub(crate) async fn load(&self, token: &str) -> Result<Option<Session>, ConsoleError> {
        let key = key_of(token);
        let Some(sealed) = self.kv.get(&key).await.map_err(|e| {
            tracing::warn!(error = %e, "could not read a session");
            ConsoleError::Unavailable
        })?
        else {
            return Ok(None);
        };
        let Ok(json) = self.key.open(
            &owner(&key),
            std::str::from_utf8(&sealed).unwrap_or_default(),
        ) else {
            return Ok(None);
        };
        let session: Option<Session> = serde_json::from_slice(&json).ok();
        Ok(session.filter(|s| s.expires_at > Utc::now()))
    }

    /// Ends the session of a cookie's token.
    pub(crate) async fn end(&self, token: &str) -> Result<(), ConsoleError> {
        self.kv.purge(key_of(token)).await.map_err(|e| {
            tracing::warn!(error = %e, "could not end a session");
            ConsoleError::Unavailable
        })
    }

    /// The `Set-Cookie` of a new session.
    pub(crate) fn cookie(&self, token: &str) -> HeaderValue {
        self.cookie_value(COOKIE, token, self.ttl.as_secs())
    }

    /// The `Set-Cookie` that removes the session's cookie.
    pub(crate) fn cleared(&self) -> HeaderValue {
        self.cookie_value(COOKIE, "", 0)
    }

    /// The `Set-Cookie` of the sign-in form's CSRF token (an hour).
    pub(crate) fn sign_in_cookie(&self, token: &str) -> HeaderValue {
        self.cookie_value(SIGN_IN_COOKIE, token, 3600)
    }

    fn cookie_value(&self, name: &str, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The value of cookie `name`.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Whether two tokens are equal, in constant time.
pub(crate) fn same(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A signed-in request: its session and the cookie's token. Without a working session the
/// request goes to the sign-in page (a form is not acted on).
pub(crate) struct Signed {
    pub(crate) session: Session,
    pub(crate) token: String,
}

impl FromRequestParts<Arc<Console>> for Signed {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, ConsoleError> {
        let token = cookie(&parts.headers, COOKIE)
            .filter(|t| !t.is_empty())
            .ok_or(ConsoleError::SignIn { ended: false })?
            .to_owned();
        let session = console
            .sessions
            .load(&token)
            .await?
            .ok_or(ConsoleError::SignIn { ended: true })?;
        Ok(Signed { session, token })
    }
}

/// A form posted by a signed-in person, its CSRF token checked: `T` from the form's fields.
pub(crate) struct Posted<T> {
    pub(crate) session: Session,
    pub(crate) form: T,
    /// The cookie's token (to change or end the session).
    pub(crate) token: String,
    /// Whether the page's script asked for JSON (`Accept: application/json`).
    pub(crate) wants_json: bool,
}

/// The `csrf` field every form carries.
#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

impl<T: DeserializeOwned> FromRequest<Arc<Console>> for Posted<T> {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, console: &Arc<Console>) -> Result<Self, ConsoleError> {
        let (mut parts, body) = req.into_parts();
        let wants_json = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let Signed { session, token } = Signed::from_request_parts(&mut parts, console).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| ConsoleError::BadForm("the form is too large".into()))?;
        let field: CsrfField = serde_urlencoded::from_bytes(&bytes).unwrap_or(CsrfField {
            csrf: String::new(),
        });
        if !same(&field.csrf, &session.csrf) {
            return Err(ConsoleError::Csrf);
        }
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ConsoleError::BadForm(e.to_string()))?;
        Ok(Posted {
            session,
            form,
            token,
            wants_json,
        })
    }
}
