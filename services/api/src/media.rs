//! `GET /v1/media/{media_id}`: media a user sent, for the bot whose user it is. Platform file
//! ids (Telegram's, WhatsApp's, WeChat's) are of no use outside Patchbay, and CDN URLs expire;
//! every media event carries `media_id` and `download_url` instead. The file is downloaded once
//! by the platform's sender (the only service that opens the channel's credentials, see
//! `patchbay_platform::media`) into the media object store under `<bot id>/<media id>`, kept
//! there a day, and streamed from there.

use std::sync::Arc;

use async_nats::jetstream::object_store::{GetErrorKind, ObjectStore};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use patchbay_contract::content::Media;
use patchbay_contract::{
    FetchMediaRequest, FetchedMedia, MediaSource, MediaSourceRequest, V1, ids, outbound_ops,
    router_ops,
};
use patchbay_runtime::ApiError;

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
