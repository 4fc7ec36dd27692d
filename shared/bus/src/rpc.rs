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

impl Bus {
    /// Sends `request` to `subject` and decodes the reply.
    pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Result<Resp, RpcError>, BusError> {
        let body = serde_json::to_vec(request)?;
        let mut headers = async_nats::HeaderMap::new();
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
        let decoded: RpcReply<Resp> = serde_json::from_slice(&reply.payload)?;
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
        })
    }
}

/// A subscription that answers requests.
#[derive(Debug)]
pub struct Responder {
    sub: async_nats::Subscriber,
    client: async_nats::Client,
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
            tokio::spawn(async move {
                let op = msg
                    .subject
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let span = tracing::info_span!("rpc", otel.kind = "server", rpc.method = %op);
                crate::trace::set_parent(&span, msg.headers.as_ref());
                let body = tracing::Instrument::instrument(handler(op, msg.payload), span).await;
                if let Some(reply) = msg.reply
                    && let Err(e) = client.publish(reply, body.into()).await
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
