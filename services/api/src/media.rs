//! Media both ways.
//!
//! * `GET /v1/media/{media_id}`: media a user sent, for the bot whose user it is. Platform file
//!   ids (Telegram's, WhatsApp's, WeChat's) are of no use outside Patchbay, and CDN URLs
//!   expire; every media event carries `media_id` and `download_url` instead. The file is
//!   downloaded once by the platform's sender (the only service that opens the channel's
//!   credentials, see `patchbay_platform::media`) into the media object store under
//!   `<bot id>/<media id>`, kept there a day, and streamed from there. A file the bot uploaded
//!   is served the same way.
//! * `POST /v1/media`: one file (multipart), checked against what each platform of the bot's
//!   channels can send (`PlatformSpec::media`) and the bot's storage quota (`crate::storage`),
//!   kept 30 days in the
//!   uploads store; any send may then give `{"type": "image", "media_id": "med_…"}`. The
//!   router turns the id into `<public URL>/media/<bot id>/<media id>`, which platforms fetch
//!   without credentials (`GET /media/{bot_id}/{media_id}`: the id's 80 random bits are the
//!   capability) and WeChat's sender downloads to upload it with `media/upload`.

use std::sync::Arc;

use std::collections::BTreeMap;

use async_nats::jetstream::object_store::{GetErrorKind, ObjectMetadata, ObjectStore};
use axum::body::Body;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use patchbay_contract::content::Media;
use patchbay_contract::{
    FetchMediaRequest, FetchedMedia, MediaSource, MediaSourceRequest, Platform, V1, ids,
    outbound_ops, router_ops,
};
use patchbay_runtime::ApiError;
use serde::Serialize;

use crate::auth::BotAuth;
use crate::{Api, ask};

/// How long the API waits for the platform's sender to download a file.
const DOWNLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn no_media(media_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "media_not_found",
        format!("no media {media_id} for this bot"),
    )
}

/// The stored object `name`, streamed; `None` when it is not stored (or expired).
async fn stored(store: &ObjectStore, name: &str) -> Result<Option<Response>, ApiError> {
    let object = match store.get(name).await {
        Ok(o) => o,
        Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ApiError::unavailable(format!("reading the media: {e}"))),
    };
    let info = object.info();
    let content_type = info
        .metadata
        .get("content-type")
        .cloned()
        .unwrap_or_else(|| "application/octet-stream".into());
    let size = info.size;
    let stream = tokio_util::io::ReaderStream::new(object);
    Ok(Some(
        (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CONTENT_LENGTH, size.to_string()),
                (header::CACHE_CONTROL, "private, max-age=3600".to_owned()),
            ],
            Body::from_stream(stream),
        )
            .into_response(),
    ))
}

/// `GET /v1/media/{media_id}`.
pub(crate) async fn get(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(media_id): Path<String>,
) -> Result<Response, ApiError> {
    let message_id = ids::media_message_id(&media_id).ok_or_else(|| no_media(&media_id))?;
    // Per bot: another bot can never be served this one's copy.
    let object = format!("{}/{media_id}", bot.bot_id);
    if let Some(response) = stored(&api.uploads, &object).await? {
        return Ok(response);
    }
    if let Some(response) = stored(&api.media, &object).await? {
        return Ok(response);
    }
    let source: MediaSource = ask(
        &api,
        "router",
        router_ops::MEDIA_SOURCE,
        &MediaSourceRequest {
            v: V1,
            bot_id: bot.bot_id.clone(),
            message_id,
        },
    )
    .await
    .map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            no_media(&media_id)
        } else {
            e
        }
    })?;
    let media: Media = Media::of(&source.content)
        .cloned()
        .ok_or_else(|| no_media(&media_id))?;
    let request = FetchMediaRequest {
        v: V1,
        channel_id: source.channel_id,
        media,
        object: object.clone(),
        bot_id: bot.bot_id.clone(),
        max_bytes: api.media_max_bytes,
    };
    let subject = api.bus.subjects().rpc(
        &format!("outbound-{}", source.platform.as_str()),
        outbound_ops::FETCH_MEDIA,
    );
    let _: FetchedMedia = api.bus.request(&subject, &request, DOWNLOAD_WAIT).await??;
    stored(&api.media, &object)
        .await?
        .ok_or_else(|| ApiError::unavailable("the media was downloaded but is not stored"))
}

/// `GET /media/{bot_id}/{media_id}`: a file the bot uploaded, for the platforms to fetch (no
/// credentials; only uploads, never what users sent).
pub(crate) async fn public(
    State(api): State<Arc<Api>>,
    Path((bot_id, media_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if ids::media_message_id(&media_id).is_none() {
        return Err(ApiError::not_found("no such file"));
    }
    stored(&api.uploads, &format!("{bot_id}/{media_id}"))
        .await?
        .ok_or_else(|| ApiError::not_found("no such file"))
}

/// Whether bot `bot_id` uploaded `media_id` (and it has not expired).
pub(crate) async fn uploaded(api: &Api, bot_id: &str, media_id: &str) -> Result<bool, ApiError> {
    match api.uploads.info(format!("{bot_id}/{media_id}")).await {
        Ok(info) => Ok(!info.deleted),
        Err(e) if e.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound => {
            Ok(false)
        }
        Err(e) => Err(ApiError::unavailable(format!("reading the uploads: {e}"))),
    }
}

/// The answer to `POST /v1/media`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Uploaded {
    /// The id any send may use: `{"type": "<type>", "media_id": "<id>"}`.
    media_id: String,
    /// The content type to send it as: `image`, `audio`, `video` or `file`.
    #[serde(rename = "type")]
    kind: String,
    /// Its MIME type.
    content_type: String,
    /// Its size in bytes.
    size: u64,
    /// Its file name, when the upload gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<String>,
    /// The platforms of the bot's channels that can send it.
    accepted_by: Vec<Platform>,
    /// The ones that cannot, and why.
    refused_by: BTreeMap<Platform, String>,
    /// When it is deleted.
    expires_at: chrono::DateTime<chrono::Utc>,
}

fn refused(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

/// `POST /v1/media`: one file part (any field name; `file` by convention).
pub(crate) async fn upload(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, axum::Json<Uploaded>), ApiError> {
    let bad = |m: String| refused(StatusCode::BAD_REQUEST, "invalid_upload", m);
    let mut multipart = multipart.map_err(|e| bad(e.body_text()))?;
    let mut file = None;
    while let Some(field) = multipart.next_field().await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(api.media_max_bytes)
        } else {
            bad(e.body_text())
        }
    })? {
        if field.file_name().is_none() && field.name() != Some("file") {
            continue;
        }
        if file.is_some() {
            return Err(bad("send exactly one file".into()));
        }
        let content_type = field
            .content_type()
            .unwrap_or("application/octet-stream")
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let filename = field.file_name().map(str::to_owned);
        let bytes = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(api.media_max_bytes)
            } else {
                bad(e.body_text())
            }
        })?;
        file = Some((content_type, filename, bytes));
    }
    let (content_type, filename, bytes) =
        file.ok_or_else(|| bad("send exactly one file (multipart part `file`)".into()))?;
    let size = bytes.len() as u64;
    if size == 0 {
        return Err(refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_upload",
            "the file is empty",
        ));
    }
    if size > api.media_max_bytes {
        return Err(too_large(api.media_max_bytes));
    }
    if !content_type.contains('/') || content_type == "application/octet-stream" {
        return Err(refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "give the file part a Content-Type (image/jpeg, video/mp4, application/pdf, …)",
        ));
    }

    // What each platform of the bot's channels can do with it.
    // As the bucket has it now: a channel connected a moment ago counts.
    let record = api
        .view
        .bot_latest(&bot.bot_id)
        .await?
        .ok_or_else(|| ApiError::unavailable("the bot is not in the configuration view yet"))?;
    let mut platforms: Vec<Platform> = record.channels.iter().map(|c| c.platform).collect();
    platforms.sort_by_key(|p| p.as_str());
    platforms.dedup();
    let kind = patchbay_platform::spec::MediaKind::of(&content_type);
    let mut accepted_by = Vec::new();
    let mut refused_by = BTreeMap::new();
    for p in platforms {
        let verdict = patchbay_registry::spec(p)
            .map_err(|e| e.to_string())
            .and_then(|spec| spec.media.check(&content_type, size));
        match verdict {
            Ok(_) => accepted_by.push(p),
            Err(why) => {
                refused_by.insert(p, format!("{} {why}", p.as_str()));
            }
        }
    }
    if accepted_by.is_empty() && !refused_by.is_empty() {
        let reasons: Vec<&str> = refused_by.values().map(String::as_str).collect();
        return Err(refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_media",
            format!(
                "none of the bot's channels can send a {} file of {size} bytes: {}",
                content_type,
                reasons.join("; ")
            ),
        ));
    }

    // The bot's storage quota: its bytes reserved before the file is stored.
    let reservation = match api
        .storage
        .reserve(&bot.bot_id, crate::storage::Kind::Upload, size)
        .await?
    {
        Ok(r) => r,
        Err(used) => {
            return Err(refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "quota_exceeded",
                format!(
                    "the bot's uploads take {used} of its {} bytes (PATCHBAY_MEDIA_QUOTA_BYTES); \
                     this file needs {size} more; uploads are deleted after 30 days",
                    api.storage.quota()
                ),
            ));
        }
    };

    let media_id = ids::new_id(ids::prefix::MEDIA);
    let mut metadata: std::collections::HashMap<String, String> =
        [("content-type".to_owned(), content_type.clone())].into();
    if let Some(name) = &filename {
        metadata.insert("filename".into(), name.clone());
    }
    let meta = ObjectMetadata {
        name: format!("{}/{media_id}", bot.bot_id),
        metadata,
        ..ObjectMetadata::default()
    };
    if let Err(e) = api.uploads.put(meta, &mut bytes.as_ref()).await {
        api.storage.release(reservation).await;
        return Err(ApiError::unavailable(format!("storing the file: {e}")));
    }
    tracing::info!(bot_id = %bot.bot_id, %media_id, size, %content_type, "media uploaded");
    let expires_at = chrono::Utc::now()
        + chrono::TimeDelta::from_std(patchbay_contract::topology::UPLOAD_TTL).unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        axum::Json(Uploaded {
            media_id,
            kind: kind.as_str().to_owned(),
            content_type,
            size,
            filename,
            accepted_by,
            refused_by,
            expires_at,
        }),
    ))
}

fn too_large(max: u64) -> ApiError {
    refused(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the file is larger than {max} bytes (PATCHBAY_MEDIA_MAX_BYTES)"),
    )
}
