//! The API over NATS (`<p>.rpc.api.http`, sealed both ways): the console's requests, each run
//! through the very router that serves HTTP, with the signed-in person's own credential. So a
//! console page can do exactly what that person's API allows, with the same checks, limits and
//! errors, and the console needs no credential of its own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, header};
use patchbay_bus::rpc::{decode, encode};
use patchbay_contract::{ApiAnswer, ApiCall, RpcError, V1, api_ops};
use patchbay_runtime::edge::ClientIp;

/// The largest answer body passed back: a sealed reply must stay under NATS's message size
/// (1 MiB by default; sealing adds a third). Every listing the console reads is paged far below.
const MAX_ANSWER_BYTES: usize = 512 * 1024;

/// Answers one request on `<p>.rpc.api.<op>`.
pub(crate) async fn answer(router: Router, op: &str, body: Bytes) -> Vec<u8> {
    if op != api_ops::HTTP {
        return encode::<()>(Err(RpcError::new(
            404,
            "unknown_operation",
            format!("api has no operation {op:?}"),
        )));
    }
    encode(match decode::<ApiCall>(&body) {
        Ok(call) => run(router, call).await,
        Err(e) => Err(e),
    })
}

async fn run(router: Router, call: ApiCall) -> Result<ApiAnswer, RpcError> {
    let bad = |m: String| RpcError::new(400, "invalid_request", m);
    let method = Method::from_bytes(call.method.as_bytes())
        .map_err(|_| bad(format!("method: {:?} is no HTTP method", call.method)))?;
    if !call.path.starts_with('/') {
        return Err(bad("path: must start with /".into()));
    }
    let mut request = Request::builder().method(method).uri(&call.path);
    if let Some(bearer) = &call.bearer {
        request = request.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
    }
    if let Some(key) = &call.idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let body = match &call.body {
        Some(json) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(json).map_err(|e| bad(format!("body: {e}")))?)
        }
        None => Body::empty(),
    };
    let mut request = request
        .body(body)
        .map_err(|e| bad(format!("request: {e}")))?;
    let ip = call.client_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip, 0)));
    request.extensions_mut().insert(ClientIp(ip));
    let response = match tower::ServiceExt::oneshot(router, request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
        .await
        .map_err(|_| {
            RpcError::new(
                502,
                "answer_too_large",
                format!(
                    "the answer is larger than {MAX_ANSWER_BYTES} bytes; ask for a smaller page"
                ),
            )
        })?;
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Ok(ApiAnswer {
        v: V1,
        status,
        body,
    })
}
