//! The HTTP edge shared by every service: `/healthz`, `/readyz`, `/metrics`, request metrics,
//! and [`ApiError`], the one place where errors become `{"error": {"code", "message"}}` with a
//! proper status. Internal details are logged, never returned.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use patchbay_bus::BusError;
use patchbay_contract::RpcError;
use serde::de::DeserializeOwned;

/// A readiness check: a name and a function saying whether that part is ready.
type Check = Arc<dyn Fn() -> bool + Send + Sync>;

/// The set of checks behind `/readyz`. Cheap to clone.
#[derive(Clone, Default)]
pub struct Readiness(Arc<RwLock<BTreeMap<String, Check>>>);

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Readiness(..)")
    }
}

impl Readiness {
    /// Adds (or replaces) the check `name`.
    pub fn add(&self, name: impl Into<String>, check: impl Fn() -> bool + Send + Sync + 'static) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.into(), Arc::new(check));
    }

    /// Every check and its current result.
    pub fn report(&self) -> BTreeMap<String, bool> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, c)| (k.clone(), c()))
            .collect()
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn ops_routes(readiness: Readiness) -> axum::Router {
    axum::Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let report = readiness.report();
                async move {
                    let ready = report.values().all(|v| *v);
                    let status = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (
                        status,
                        Json(serde_json::json!({"ready": ready, "checks": report})),
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    crate::telemetry::metrics_handle().render(),
                )
            }),
        )
}

/// Middleware recording `patchbay_http_requests_total` and `patchbay_http_request_seconds`
/// by matched route and status.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("patchbay_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("patchbay_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// An error answered to an HTTP caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: String,
    /// Human-readable message, safe to show.
    pub message: String,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// 500; `detail` is logged, not returned.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the service logs",
        )
    }
}

/// `Retry-After` of a `backlog_full` refusal: a paced backlog drains at a few messages a
/// second at least, so a few seconds free room.
const BACKLOG_RETRY_AFTER_SECONDS: u64 = 5;

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Unavailable(_) | BusError::NoResponders(_) => {
                tracing::warn!(error = %e, "bus unavailable");
                ApiError::unavailable("temporarily unable to store the request; retry shortly")
            }
            BusError::Backlogged(_) => {
                tracing::info!(error = %e, "refused: the key's backlog is full");
                ApiError {
                    retry_after: Some(BACKLOG_RETRY_AFTER_SECONDS),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "backlog_full",
                        "this bot (or channel) has as many messages waiting as it may \
                         (PATCHBAY_PIPELINE_BACKLOG_PER_KEY); retry when they have gone out",
                    )
                }
            }
            BusError::TooLarge(_) => {
                tracing::warn!(error = %e, "refused: too large for the bus");
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "the request is larger than Patchbay can store; send less (fewer or smaller messages)",
                )
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<patchbay_contract::ContractError> for ApiError {
    fn from(e: patchbay_contract::ContractError) -> Self {
        ApiError::bad_request("invalid_request", e.to_string())
    }
}

impl From<RpcError> for ApiError {
    fn from(e: RpcError) -> Self {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError {
            retry_after: e.retry_after,
            ..ApiError::new(status, &e.code, e.message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({
            "error": {"code": self.code, "message": self.message}
        }));
        let mut response = (self.status, body).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// A JSON body extractor whose rejections are [`ApiError`]s naming the field at fault.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Reads `req`'s body (within the route's `DefaultBodyLimit`), for handlers that check the
/// caller first and only then take the body: 413 beyond the limit, 400 when it cannot be read
/// (the listener answers 408 instead when it did not arrive in time).
pub async fn read_body(req: Request) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(req, &())
        .await
        .map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body is too large",
                )
            } else {
                ApiError::bad_request("invalid_request", "could not read the request body")
            }
        })
}

/// Parses a JSON body read as bytes (when the caller must be authenticated before the body is
/// looked at), with the same field-naming errors as [`ApiJson`].
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    Json::<T>::from_bytes(body)
        .map(|Json(v)| v)
        .map_err(json_rejection)
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("malformed_json", e.body_text()),
        JsonRejection::JsonDataError(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            e.body_text()
                .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
                .to_owned(),
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is too large",
            )
        }
        other => ApiError::bad_request("invalid_request", other.body_text()),
    }
}

/// The Bearer token of a request, if it carries one.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}
