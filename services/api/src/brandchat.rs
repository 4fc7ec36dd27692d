//! BrandChat's API for bots with the `brandchat` flavour, so that clients written for BrandChat
//! (its PHP SDK) work unchanged when pointed at Patchbay (`reference/seed-systems.md` §1):
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /brandchat/api/user/profile` | `{"userId": 1337}` | the profile object |
//! | `POST /brandchat/api/send/messages` | an array of 1–10 messages, each with `userId` | 200, empty; all valid or none sent |
//! | `POST /brandchat/api/code/claim` | `{"code": "…"}` | the profile object; a code is claimed once |
//! | `POST /brandchat/api/file/upload` | multipart, one file (field `media`); signed over the file's bytes | `{"fileId": <int64>}` |
//! | `GET /brandchat/files/{bot_id}/{file_id}` | none (the platforms fetch it) | the file |
//!
//! Every call names the bot with `?bot=<bot id>` and signs the raw body with
//! `X-Chat-Signature`: hex HMAC-SHA1 keyed with one of the bot's API keys, compared in constant
//! time and case-insensitively. A missing signature (or bot, or a bot without the flavour) is
//! 401, a wrong one 403, checked before the body is read. Errors are BrandChat's
//! `{"reason": "…"}` with its status codes (400 bad payload, 401, 403, 404 unknown user, 410 a
//! spent code, 429 beyond the bot's request limit, 503). Uploads (BrandChat's types and sizes:
//! images 128 kB, `audio/amr` 256 kB, `video/mp4` 1 MB) are kept in the `<p>_files` object
//! store and never expire, as BrandChat's do; messages name them by `fileId`, and the platforms
//! fetch them from `<PATCHBAY_PUBLIC_URL>/brandchat/files/<bot>/<fileId>`.

use std::sync::Arc;

use async_nats::jetstream::object_store::ObjectMetadata;
use axum::Router;
use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Extension, Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use patchbay_config::MasterKey;
use patchbay_contract::brandchat::{
    BrandchatMessage, BrandchatProfile, contents, file_url, key_owner, upload_kind,
};
use patchbay_contract::ids::{new_id, prefix};
use patchbay_contract::{
    BotRecord, FindNumberedUserRequest, Recipient, SendCommand, SendSource, UserProfile, V1,
    WebhookFlavour, router_ops,
};
use patchbay_runtime::ApiError;
use serde::Deserialize;

use crate::codes::{Codes, claim_code};
use crate::{Api, ask};

/// Uploaded files and where they are served.
pub(crate) struct Files {
    store: async_nats::jetstream::object_store::ObjectStore,
    public_url: String,
}

impl Files {
    /// Opens the files object store (created by `ensure_topology`).
    pub(crate) async fn open(
        deps: &patchbay_runtime::Deps,
    ) -> Result<Arc<Self>, patchbay_runtime::BoxError> {
        let name = deps.bus.subjects().files_store();
        Ok(Arc::new(Self {
            store: deps.bus.jetstream().get_object_store(&name).await?,
            public_url: deps.config.public_url.clone(),
        }))
    }

    fn url(&self, bot_id: &str, file_id: i64) -> String {
        file_url(&self.public_url, bot_id, file_id)
    }
}

/// The BrandChat routes.
pub(crate) fn routes(codes: Arc<Codes>, files: Arc<Files>, key: MasterKey) -> Router<Arc<Api>> {
    Router::new()
        .route("/brandchat/api/user/profile", post(user_profile))
        .route("/brandchat/api/send/messages", post(send_messages))
        .route("/brandchat/api/code/claim", post(code_claim))
        .route("/brandchat/api/file/upload", post(file_upload))
        .route(
            "/brandchat/files/{bot_id}/{file_id}",
            axum::routing::get(serve_file),
        )
        .layer(Extension(codes))
        .layer(Extension(files))
        .layer(Extension(Arc::new(key)))
}

/// An error as BrandChat answers it: a status and `{"reason": "…"}`.
pub(crate) struct Refusal {
    status: StatusCode,
    reason: String,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            retry_after: None,
        }
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Self {
            status: e.status,
            reason: e.message,
            retry_after: e.retry_after,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(serde_json::json!({"reason": self.reason})),
        )
            .into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert("retry-after", v);
        }
        r
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct BotQuery {
    #[serde(default)]
    bot: Option<String>,
}

/// Checks `?bot=` and `X-Chat-Signature` over `body`, and the bot's request limit: the bot.
async fn authenticate(
    api: &Api,
    key: &MasterKey,
    query: &BotQuery,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Arc<BotRecord>, Refusal> {
    let (bot, given) = identify(api, query, headers).await?;
    verify(api, key, &bot, given, body)?;
    Ok(bot)
}

/// The bot `?bot=` names, if it has the flavour, and the signature the request carries (401
/// otherwise): checked before anything of the body is read.
async fn identify<'h>(
    api: &Api,
    query: &BotQuery,
    headers: &'h HeaderMap,
) -> Result<(Arc<BotRecord>, &'h str), Refusal> {
    let unauthorized = |reason: &str| Refusal::new(StatusCode::UNAUTHORIZED, reason);
    let bot_id = query
        .bot
        .as_deref()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| unauthorized("Bot identifier missing from request (?bot=)"))?;
    let bot = api
        .view
        .bot(bot_id)
        .await
        .map_err(ApiError::from)?
        .filter(|b| b.enabled && b.webhook.flavour == WebhookFlavour::Brandchat)
        .ok_or_else(|| unauthorized("API not enabled for this bot"))?;
    let given = headers
        .get("x-chat-signature")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| unauthorized("X-Chat-Signature missing"))?;
    Ok((bot, given))
}

/// Checks `given` against `body`'s signature under each of the bot's working keys, then the
/// bot's request limit.
fn verify(
    api: &Api,
    key: &MasterKey,
    bot: &BotRecord,
    given: &str,
    body: &[u8],
) -> Result<(), Refusal> {
    let now = chrono::Utc::now();
    let matches = bot
        .brandchat_keys
        .iter()
        .filter(|k| k.expires_at.is_none_or(|t| t > now))
        .filter_map(|k| key.open(&key_owner(&bot.id), &k.sealed).ok())
        .any(|api_key| {
            patchbay_platform::webhook::chat_signature_matches(
                &String::from_utf8_lossy(&api_key),
                body,
                given,
            )
        });
    if !matches {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "X-Chat-Signature does not match",
        ));
    }
    api.limits
        .admit(&bot.id, bot.rate_limit)
        .map_err(|seconds| Refusal {
            retry_after: Some(seconds),
            ..Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("over this bot's request limit; retry after {seconds} s"),
            )
        })
}

fn bad_payload(reason: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, reason)
}

/// The bot's user with BrandChat's numeric id, or 404.
async fn numbered_user(api: &Api, bot_id: &str, number: i64) -> Result<UserProfile, Refusal> {
    let req = FindNumberedUserRequest {
        v: V1,
        bot_id: bot_id.to_owned(),
        number,
    };
    ask::<_, UserProfile>(api, "router", router_ops::FIND_NUMBERED_USER, &req)
        .await
        .map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                Refusal::new(StatusCode::NOT_FOUND, format!("no user {number}"))
            } else {
                e.into()
            }
        })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserProfileBody {
    user_id: i64,
}

async fn user_profile(
    State(api): State<Arc<Api>>,
    Extension(key): Extension<Arc<MasterKey>>,
    Query(query): Query<BotQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<BrandchatProfile>, Refusal> {
    let bot = authenticate(&api, key.as_ref(), &query, &headers, &body).await?;
    let body: UserProfileBody =
        serde_json::from_slice(&body).map_err(|e| bad_payload(e.to_string()))?;
    let user = numbered_user(&api, &bot.id, body.user_id).await?;
    Ok(axum::Json(BrandchatProfile::from(&user)))
}

async fn send_messages(
    State(api): State<Arc<Api>>,
    Extension(key): Extension<Arc<MasterKey>>,
    Extension(files): Extension<Arc<Files>>,
    Query(query): Query<BotQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    let bot = authenticate(&api, key.as_ref(), &query, &headers, &body).await?;
    let messages: Vec<BrandchatMessage> =
        serde_json::from_slice(&body).map_err(|e| bad_payload(e.to_string()))?;
    let contents = contents(&messages, true, &|id| files.url(&bot.id, id))
        .map_err(|e| bad_payload(e.to_string()))?;
    // All recipients must exist before anything is sent.
    let mut recipients: Vec<(i64, String)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let number = m.user_id.unwrap_or_default();
        if !recipients.iter().any(|(n, _)| *n == number) {
            let user = numbered_user(&api, &bot.id, number).await.map_err(|r| {
                if r.status == StatusCode::NOT_FOUND {
                    bad_payload(format!("[{i}].userId: no user {number}"))
                } else {
                    r
                }
            })?;
            recipients.push((number, user.id));
        }
    }
    // Consecutive messages to one user travel as one command, so they keep their order.
    let mut batches: Vec<(String, Vec<patchbay_contract::Content>)> = Vec::new();
    for (m, content) in messages.iter().zip(contents) {
        let number = m.user_id.unwrap_or_default();
        let user_id = recipients
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, id)| id.clone())
            .unwrap_or_default();
        match batches.last_mut() {
            Some((u, list)) if *u == user_id => list.push(content),
            _ => batches.push((user_id, vec![content])),
        }
    }
    let subject = api.bus.subjects().send(&bot.id).map_err(ApiError::from)?;
    for (user_id, messages) in batches {
        let id = new_id(prefix::COMMAND);
        let command = SendCommand {
            v: V1,
            id: Some(id.clone()),
            to: Recipient::User { user_id },
            messages,
            source: SendSource::Api,
            source_id: None,
            in_reply_to: None,
            known_recipient: None,
            also_to: Vec::new(),
        };
        api.bus
            .publish(&subject, &id, &command)
            .await
            .map_err(ApiError::from)?;
    }
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize)]
struct CodeClaimBody {
    code: String,
}

async fn code_claim(
    State(api): State<Arc<Api>>,
    Extension(key): Extension<Arc<MasterKey>>,
    Extension(codes): Extension<Arc<Codes>>,
    Query(query): Query<BotQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<BrandchatProfile>, Refusal> {
    let bot = authenticate(&api, key.as_ref(), &query, &headers, &body).await?;
    let body: CodeClaimBody =
        serde_json::from_slice(&body).map_err(|e| bad_payload(e.to_string()))?;
    let profile = claim_code(&api, &codes, &bot.id, &body.code).await?;
    Ok(axum::Json(BrandchatProfile::from(profile.inner())))
}

async fn file_upload(
    State(api): State<Arc<Api>>,
    Extension(key): Extension<Arc<MasterKey>>,
    Extension(files): Extension<Arc<Files>>,
    Query(query): Query<BotQuery>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<axum::Json<serde_json::Value>, Refusal> {
    let key = key.as_ref();
    let (bot, given) = identify(&api, &query, &headers).await?;
    let mut multipart = multipart.map_err(|e| bad_payload(e.body_text()))?;
    let mut file: Option<(String, Bytes)> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| bad_payload(e.body_text()))?
    {
        if field.file_name().is_none() && field.name() != Some("media") {
            continue;
        }
        if file.is_some() {
            return Err(bad_payload("send exactly one file"));
        }
        let content_type = field
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_owned();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| bad_payload(e.body_text()))?;
        file = Some((content_type, bytes));
    }
    let (content_type, bytes) =
        file.ok_or_else(|| bad_payload("send exactly one file (field media)"))?;
    // BrandChat signs an upload over the file's bytes, not the multipart body.
    verify(&api, key, &bot, given, &bytes)?;
    let (kind, max) = upload_kind(&content_type).ok_or_else(|| {
        bad_payload(format!(
            "{content_type} is not accepted: image/jpeg or image/png (128 kB), audio/amr \
             (256 kB), video/mp4 (1 MB)"
        ))
    })?;
    if bytes.is_empty() || bytes.len() > max {
        return Err(bad_payload(format!(
            "a {kind} file must have 1 byte to {} kB",
            max / 1024
        )));
    }
    // The bot's files count against its storage quota together with its uploads.
    let size = bytes.len() as u64;
    let reservation = match api
        .storage
        .reserve(&bot.id, crate::storage::Kind::BrandchatFile, size)
        .await?
    {
        Ok(r) => r,
        Err(used) => {
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Storage quota exceeded: this bot's files take {used} of its {} bytes",
                    api.storage.quota()
                ),
            ));
        }
    };
    let random = patchbay_config::secrets::random_bytes::<8>().map_err(ApiError::internal)?;
    let file_id = i64::try_from(u64::from_be_bytes(random) >> 12).unwrap_or(1);
    let meta = ObjectMetadata {
        name: object_name(&bot.id, file_id),
        metadata: [("content-type".to_owned(), content_type)].into(),
        ..ObjectMetadata::default()
    };
    if let Err(e) = files.store.put(meta, &mut bytes.as_ref()).await {
        api.storage.release(reservation).await;
        return Err(ApiError::unavailable(format!("storing the file: {e}")).into());
    }
    tracing::info!(bot_id = %bot.id, file_id, size = bytes.len(), "file uploaded");
    Ok(axum::Json(serde_json::json!({"fileId": file_id})))
}

fn object_name(bot_id: &str, file_id: i64) -> String {
    format!("{bot_id}/{file_id}")
}

/// An uploaded file, for the platforms to fetch.
async fn serve_file(
    Extension(files): Extension<Arc<Files>>,
    Path((bot_id, file_id)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let name = object_name(&bot_id, file_id);
    let mut object = match files.store.get(&name).await {
        Ok(o) => o,
        Err(e) if e.kind() == async_nats::jetstream::object_store::GetErrorKind::NotFound => {
            return Err(ApiError::not_found("no such file"));
        }
        Err(e) => return Err(ApiError::unavailable(format!("reading the file: {e}"))),
    };
    let content_type = object
        .info()
        .metadata
        .get("content-type")
        .cloned()
        .unwrap_or_else(|| "application/octet-stream".into());
    let mut body = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut body)
        .await
        .map_err(|e| ApiError::unavailable(format!("reading the file: {e}")))?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (
                axum::http::header::CACHE_CONTROL,
                "public, max-age=86400, immutable".to_owned(),
            ),
        ],
        body,
    )
        .into_response())
}
