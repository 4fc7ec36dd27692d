//! The API over NATS: each request with the signed-in person's credential, answered by the
//! API's own router (`<p>.rpc.api.http`, sealed both ways).

use std::net::IpAddr;
use std::time::Duration;

use patchbay_bus::Bus;
use patchbay_contract::{ApiAnswer, ApiCall, V1, api_ops};
use serde::de::DeserializeOwned;

use crate::page::ConsoleError;

/// How long a page waits for the API.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the API.
pub(crate) struct ApiClient {
    bus: Bus,
    subject: String,
}

/// One request.
pub(crate) struct Call<'a> {
    pub(crate) method: &'static str,
    pub(crate) path: String,
    pub(crate) bearer: &'a str,
    pub(crate) body: Option<serde_json::Value>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) client_ip: Option<IpAddr>,
}

impl<'a> Call<'a> {
    /// `GET path`.
    pub(crate) fn get(bearer: &'a str, path: impl Into<String>) -> Self {
        Call {
            method: "GET",
            path: path.into(),
            bearer,
            body: None,
            idempotency_key: None,
            client_ip: None,
        }
    }

    /// `method path` with a JSON body.
    pub(crate) fn send(
        method: &'static str,
        bearer: &'a str,
        path: impl Into<String>,
        body: Option<serde_json::Value>,
    ) -> Self {
        Call {
            method,
            body,
            ..Call::get(bearer, path)
        }
    }
}

/// The API's answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: serde_json::Value,
}

impl Answer {
    /// Whether the status is 2xx.
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error's code and message (`{"error": {"code", "message"}}`).
    pub(crate) fn error(&self) -> (String, String) {
        let e = &self.body["error"];
        (
            e["code"].as_str().unwrap_or("error").to_owned(),
            e["message"].as_str().map_or_else(
                || format!("the API answered {}", self.status),
                str::to_owned,
            ),
        )
    }

    /// The answer when 2xx; the API's refusal as a page otherwise.
    pub(crate) fn accepted(self) -> Result<Self, ConsoleError> {
        if self.ok() {
            Ok(self)
        } else {
            Err(ConsoleError::Refused(self))
        }
    }

    /// The body as `T` when 2xx; the API's refusal as a page otherwise.
    pub(crate) fn into<T: DeserializeOwned>(self) -> Result<T, ConsoleError> {
        if !self.ok() {
            return Err(ConsoleError::Refused(self));
        }
        serde_json::from_value(self.body).map_err(|e| {
            tracing::warn!(error = %e, "the API's answer does not read as expected");
            ConsoleError::Internal
        })
    }
}

impl ApiClient {
    pub(crate) fn new(bus: &Bus) -> Self {
        ApiClient {
            bus: bus.clone(),
            subject: bus.subjects().rpc("api", api_ops::HTTP),
        }
    }

    /// Makes `call`.
    pub(crate) async fn call(&self, call: Call<'_>) -> Result<Answer, ConsoleError> {
        let req = ApiCall {
            v: V1,
            method: call.method.to_owned(),
            path: call.path,
            bearer: Some(call.bearer.to_owned()),
            body: call.body,
            idempotency_key: call.idempotency_key,
            client_ip: call.client_ip,
        };
        let answer: ApiAnswer = self
            .bus
            .request_sealed(&self.subject, &req, TIMEOUT)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "the API did not answer");
                ConsoleError::Unavailable
            })?
            .map_err(|e| {
                tracing::warn!(code = %e.code, message = %e.message, "the API refused the call");
                ConsoleError::Internal
            })?;
        Ok(Answer {
            status: answer.status,
            body: answer.body,
        })
    }

    /// `GET path` as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        bearer: &str,
        path: impl Into<String>,
    ) -> Result<T, ConsoleError> {
        self.call(Call::get(bearer, path)).await?.into()
    }
}
