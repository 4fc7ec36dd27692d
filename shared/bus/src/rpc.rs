//! Request/reply between services (queries and admin operations), with typed JSON bodies and
//! `{"ok": ...}` / `{"error": ...}` replies.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use patchbay_contract::{RpcError, RpcReply};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::{Bus, BusError};

/// The associated data of a sealed reply to a request on `subject`.
fn reply_owner(subject: &str) -> String {
    format!("reply:{subject}")
}

impl Bus {
    /// Sends `request` to `subject` and decodes the reply.
    pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Result<Resp, RpcError>, BusError> {
        self.request_with(subject, request, timeout, false).await
    }

    /// [`Bus::request`] with the request and its reply sealed with the master key
    /// ([`patchbay_contract::headers::SEALED`]): for requests and replies that carry secrets.
    /// Fails when this process has no master key.
    pub async fn request_sealed<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Result<Resp, RpcError>, BusError> {
        self.request_with(subject, request, timeout, true).await
    }

    async fn request_with<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: &str,
        request: &Req,
        timeout: Duration,
        sealed: bool,
    ) -> Result<Result<Resp, RpcError>, BusError> {
        let mut body = serde_json::to_vec(request)?;
        let mut headers = async_nats::HeaderMap::new();
        if sealed {
            let key = self.master_key().ok_or_else(|| {
                BusError::Setup(format!(
                    "requests to {subject} are sealed, and this process has no master key"
                ))
            })?;
            body = key
                .seal(subject, &body)
                .map_err(|e| BusError::Setup(format!("sealing a request: {e}")))?
                .into_bytes();
            headers.insert(patchbay_contract::headers::SEALED, "1");
        }
        crate::trace::inject(&mut headers);
        let fut = self
            .client()
            .request_with_headers(subject.to_owned(), headers, body.into());
        let reply = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| BusError::Unavailable(format!("request to {subject} timed out")))?
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    BusError::NoResponders(subject.to_owned())
                }
                async_nats::RequestErrorKind::MaxPayloadExceeded => {
                    BusError::TooLarge(format!("request to {subject}: {e}"))
                }
                _ => BusError::Unavailable(format!("request to {subject}: {e}")),
            })?;
        let reply_sealed = reply
            .headers
            .as_ref()
            .is_some_and(|h| h.get(patchbay_contract::headers::SEALED).is_some());
        let payload = match (sealed, reply_sealed, self.master_key()) {
            (_, true, Some(key)) => {
                let text = std::str::from_utf8(&reply.payload).unwrap_or_default();
                Bytes::from(key.open(&reply_owner(subject), text).map_err(|e| {
                    BusError::Unavailable(format!("the reply from {subject} cannot be opened: {e}"))
                })?)
            }
            (true, false, _) => {
                // A sealed request is answered sealed; anything else is not its answer (or a
                // service that could not open it, which says so in clear).
                let refusal: Result<RpcReply<serde_json::Value>, _> =
                    serde_json::from_slice(&reply.payload);
                if let Ok(RpcReply::Error(e)) = refusal {
                    return Ok(Err(e));
                }
                return Err(BusError::Unavailable(format!(
                    "the reply from {subject} to a sealed request was not sealed"
                )));
            }
            _ => reply.payload,
        };
        let decoded: RpcReply<Resp> = serde_json::from_slice(&payload)?;
        Ok(match decoded {
            RpcReply::Ok(v) => Ok(v),
            RpcReply::Error(e) => Err(e),
        })
    }

    /// Subscribes to `subject` (may end in `>`) in queue group `queue`. Done at start, so a
    /// service is subscribed before its process accepts any HTTP request; serving is
    /// [`Responder::serve`], run as a task.
    pub async fn responder(&self, subject: String, queue: String) -> Result<Responder, BusError> {
        let sub = self
            .client()
            .queue_subscribe(subject.clone(), queue)
            .await
            .map_err(|e| BusError::Setup(format!("subscribe {subject}: {e}")))?;
        // Make sure the server registered the subscription before we report "started".
        self.client()
            .flush()
            .await
            .map_err(|e| BusError::Setup(format!("subscribe {subject}: {e}")))?;
        Ok(Responder {
            sub,
            client: self.client().clone(),
            key: self.master_key().cloned(),
        })
    }
}

/// A subscription that answers requests.
#[derive(Debug)]
pub struct Responder {
    sub: async_nats::Subscriber,
    client: async_nats::Client,
    key: Option<patchbay_config::MasterKey>,
}

impl Responder {
    /// Answers requests until `shutdown`. The handler gets the last subject token (the
    /// operation) and the body, and returns the reply body; at most `concurrency` requests are
    /// handled at once.
    pub async fn serve<F, Fut>(
        mut self,
        concurrency: usize,
        handler: F,
        shutdown: CancellationToken,
    ) -> Result<(), BusError>
    where
        F: Fn(String, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<u8>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        loop {
            let msg = tokio::select! {
                m = self.sub.next() => match m { Some(m) => m, None => break },
                () = shutdown.cancelled() => break,
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let client = self.client.clone();
            let handler = handler.clone();
            let key = self.key.clone();
            tokio::spawn(async move {
                let op = msg
                    .subject
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let span = tracing::info_span!("rpc", otel.kind = "server", rpc.method = %op);
                crate::trace::set_parent(&span, msg.headers.as_ref());
                let sealed = msg
                    .headers
                    .as_ref()
                    .is_some_and(|h| h.get(patchbay_contract::headers::SEALED).is_some());
                let subject = msg.subject.to_string();
                let mut headers = async_nats::HeaderMap::new();
                let body = match (sealed, &key) {
                    (false, _) => {
                        tracing::Instrument::instrument(handler(op, msg.payload), span).await
                    }
                    (true, None) => encode::<()>(Err(RpcError::new(
                        500,
                        "no_master_key",
                        "this service has no master key to open sealed requests",
                    ))),
                    (true, Some(key)) => {
                        let text = std::str::from_utf8(&msg.payload).unwrap_or_default();
                        let answer = match key.open(&subject, text) {
                            Ok(body) => {
                                tracing::Instrument::instrument(handler(op, body.into()), span)
                                    .await
                            }
                            Err(e) => encode::<()>(Err(RpcError::new(
                                400,
                                "unsealable",
                                format!("the sealed request cannot be opened: {e}"),
                            ))),
                        };
                        match key.seal(&reply_owner(&subject), &answer) {
                            Ok(sealed) => {
                                headers.insert(patchbay_contract::headers::SEALED, "1");
                                sealed.into_bytes()
                            }
                            Err(e) => encode::<()>(Err(RpcError::new(
                                500,
                                "internal",
                                format!("sealing the reply: {e}"),
                            ))),
                        }
                    }
                };
                if let Some(reply) = msg.reply
                    && let Err(e) = client
                        .publish_with_headers(reply, headers, body.into())
                        .await
                {
                    tracing::warn!(error = %e, "could not send reply");
                }
                drop(permit);
            });
        }
        let _ = self.sub.unsubscribe().await;
        Ok(())
    }
}

/// Decodes a request body, or the reply that says why it cannot be.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, RpcError> {
    serde_json::from_slice(body).map_err(|e| RpcError::new(400, "invalid_request", e.to_string()))
}

/// Encodes a result as a reply body.
pub fn encode<T: Serialize>(result: Result<T, RpcError>) -> Vec<u8> {
    let reply = match result {
        Ok(v) => RpcReply::Ok(v),
        Err(e) => RpcReply::Error(e),
    };
    serde_json::to_vec(&reply).unwrap_or_else(|e| {
        format!(r#"{{"error":{{"code":"internal","message":"reply encoding: {e}","status":500}}}}"#)
            .into_bytes()
    })
}
