//! The bus: Patchbay's only way for services to talk. Publishing with `Nats-Msg-Id` and W3C
//! trace context, idempotent creation of the JetStream topology, a consumer runtime that turns
//! handler results into ack / nak / dead letter, a watched view of the config bucket, the
//! channels' setup records, and request/reply helpers.

pub mod activity;
pub mod config_view;
pub mod consume;
pub mod follow;
pub mod group;
pub mod kv_write;
pub mod presence;
pub mod quota;
pub mod rpc;
pub mod setup;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode, stream};
use async_nats::{HeaderMap, jetstream::message::PublishMessage};
use bytes::Bytes;
use patchbay_contract::topology::{self, Retention, TopologySettings};
use patchbay_contract::{Subjects, headers};
use serde::Serialize;

pub use activity::{ActivityLog, Seen};
pub use config_view::ConfigView;
pub use consume::{Delivery, Handler, HandlerError};
pub use follow::follow_bucket;
pub use group::{GroupOptions, run_group};
pub use kv_write::write_at;
pub use presence::Presence;
pub use setup::SetupLog;

/// Errors talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// NATS is unreachable, too slow, or the stream refused the message (full): callers at an
    /// HTTP edge answer 503 so the sender retries.
    #[error("message bus unavailable: {0}")]
    Unavailable(String),
    /// The message can never be stored: it is larger than the server's `max_payload` or the
    /// stream's largest message. Retrying cannot help: HTTP edges answer 413, consumers
    /// dead-letter (or report the message failed).
    #[error("message too large for the bus: {0}")]
    TooLarge(String),
    /// The bot or channel the subject ends with has as many messages waiting in the stream as
    /// one key may (`PATCHBAY_PIPELINE_BACKLOG_PER_KEY`): its own backlog, not the stream's.
    /// HTTP edges answer 429 `backlog_full`; consumers wait for it to drain, like for a full
    /// stream; the router fails a send with `backlog_full` rather than hold it.
    #[error("backlog full: {0}")]
    Backlogged(String),
    /// The request was understood by nobody (no service answers that subject).
    #[error("no service answers {0}")]
    NoResponders(String),
    /// A payload could not be encoded or decoded.
    #[error("payload encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    /// A subject could not be built.
    #[error(transparent)]
    Contract(#[from] patchbay_contract::ContractError),
    /// Setting up streams, buckets or consumers failed.
    #[error("setting up JetStream: {0}")]
    Setup(String),
}

impl BusError {
    /// The outcome label of a refused publish, as metrics count it: `too_large`,
    /// `backlogged` or `unavailable`.
    pub fn outcome(&self) -> &'static str {
        match self {
            BusError::TooLarge(_) => "too_large",
            BusError::Backlogged(_) => "backlogged",
            _ => "unavailable",
        }
    }
}

/// The result of a publish that JetStream stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Stream sequence.
    pub sequence: u64,
    /// Whether JetStream recognised the `Nats-Msg-Id` as a duplicate and dropped this copy.
    pub duplicate: bool,
}

/// How a process identifies itself to NATS and protects the connection.
#[derive(Clone, Default)]
pub struct NatsAccess {
    /// User and password (`patchbay nats-auth`): the server limits the user to its role's
    /// subjects ([`patchbay_contract::access`]).
    pub credentials: Option<(String, String)>,
    /// The prefix of this process's reply inboxes, the only ones its user may read.
    pub inbox_prefix: Option<String>,
    /// PEM of the CA that signed the servers' certificates: TLS is required.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate and key, for servers that verify clients.
    pub tls_client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl std::fmt::Debug for NatsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAccess")
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .field("inbox_prefix", &self.inbox_prefix)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_client", &self.tls_client.is_some())
            .finish()
    }
}

/// A connection to NATS plus the names it uses. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Arc<Subjects>,
    publish_timeout: Duration,
    reconnects: Arc<std::sync::atomic::AtomicU64>,
    master_key: Option<patchbay_config::MasterKey>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("prefix", &self.subjects.prefix())
            .finish()
    }
}

impl Bus {
    /// Connects to `url` (comma-separated server list), retrying the first connection in the
    /// background, so a service can start before NATS does.
    pub async fn connect(
        url: &str,
        name: &str,
        subjects: Subjects,
        publish_timeout: Duration,
        access: &NatsAccess,
    ) -> Result<Self, BusError> {
        let reconnects = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = reconnects.clone();
        let mut options = async_nats::ConnectOptions::new();
        if let Some((user, password)) = &access.credentials {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(prefix) = &access.inbox_prefix {
            options = options.custom_inbox_prefix(prefix.clone());
        }
        if let Some(ca) = &access.tls_ca_file {
            options = options.require_tls(true).add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &access.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = options
            .name(name)
            .event_callback(move |event| {
                let counter = counter.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        // A permissions violation is a bug in the role's grants (or an attack):
                        // the server refused the publish or subscription.
                        async_nats::Event::ServerError(e) => {
                            metrics::counter!("patchbay_nats_server_errors_total").increment(1);
                            tracing::error!(error = %e, "NATS server error");
                        }
                        _ => {}
                    }
                }
            })
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(publish_timeout))
            .connect(url.split(',').map(str::trim).collect::<Vec<_>>().as_slice())
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        let mut bus = Self::from_client(client, subjects, publish_timeout);
        bus.reconnects = reconnects;
        Ok(bus)
    }

    /// A bus over an existing client (tests, single-binary mode).
    pub fn from_client(
        client: async_nats::Client,
        subjects: Subjects,
        publish_timeout: Duration,
    ) -> Self {
        let mut js = jetstream::new(client.clone());
        js.set_timeout(publish_timeout);
        Self {
            client,
            js,
            subjects: Arc::new(subjects),
            publish_timeout,
            reconnects: Arc::default(),
            master_key: None,
        }
    }

    /// The bus with the master key that seals requests and replies carrying secrets
    /// ([`Bus::request_sealed`]) and opens the sealed requests this process answers.
    #[must_use]
    pub fn with_master_key(mut self, key: patchbay_config::MasterKey) -> Self {
        self.master_key = Some(key);
        self
    }

    /// The master key, when this process has one.
    pub fn master_key(&self) -> Option<&patchbay_config::MasterKey> {
        self.master_key.as_ref()
    }

    /// The subject builder.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The underlying client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// How many times the connection was (re-)established. Consumers compare it to notice a
    /// reconnect, after which messages in transit may have been lost and must be recovered.
    pub fn connections(&self) -> u64 {
        self.reconnects.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the connection is up (for `/readyz`).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Waits until every stream, bucket and object store of the topology exists: how a
    /// service whose NATS user may not create them (see
    /// [`patchbay_contract::access::Role::manages_topology`]) waits for `patchbay migrate`.
    pub async fn await_topology(
        &self,
        settings: &TopologySettings,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<(), BusError> {
        let names = patchbay_contract::access::stream_names(&self.subjects, settings);
        let mut waiting_since = None::<std::time::Instant>;
        for name in names {
            loop {
                match self.js.get_stream(&name).await {
                    Ok(_) => break,
                    Err(e) => {
                        let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() >= Duration::from_secs(5) {
                            tracing::warn!(stream = name, error = %e, "waiting for the JetStream topology; run `patchbay migrate`");
                            waiting_since = Some(std::time::Instant::now());
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    () = shutdown.cancelled() => return Err(BusError::Setup("stopped while waiting for the topology".into())),
                }
            }
        }
        Ok(())
    }

    /// Creates or updates every stream and bucket of the topology. Safe to run from many
    /// replicas at once: creation races are resolved by re-reading.
    pub async fn ensure_topology(&self, settings: &TopologySettings) -> Result<(), BusError> {
        for spec in topology::streams(&self.subjects, settings) {
            let name = self.subjects.stream(spec.stream);
            let pipeline = spec.retention == Retention::WorkQueue;
            let config = stream::Config {
                name: name.clone(),
                subjects: vec![self.subjects.stream_filter(spec.stream)],
                retention: match spec.retention {
                    Retention::WorkQueue => stream::RetentionPolicy::WorkQueue,
                    Retention::Limits => stream::RetentionPolicy::Limits,
                },
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                max_age: spec.max_age,
                duplicate_window: spec.duplicate_window,
                max_bytes: if pipeline && settings.max_stream_bytes > 0 {
                    settings.max_stream_bytes
                } else {
                    -1
                },
                discard: if pipeline {
                    stream::DiscardPolicy::New
                } else {
                    stream::DiscardPolicy::Old
                },
                max_messages_per_subject: spec.max_messages_per_subject.unwrap_or(-1),
                discard_new_per_subject: spec.discard_new_per_subject,
                subject_transform: spec
                    .partitioning
                    .as_ref()
                    .map(|p| stream::SubjectTransform {
                        source: p.source.clone(),
                        destination: p.destination.clone(),
                    }),
                ..Default::default()
            };
            retry_setup(|| async {
                self.js
                    .create_or_update_stream(config.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| BusError::Setup(format!("stream {name}: {e}")))?;
        }
        for (bucket, ttl) in topology::buckets(settings) {
            let name = self.subjects.bucket(bucket);
            let config = jetstream::kv::Config {
                bucket: name.clone(),
                history: 1,
                max_age: ttl.unwrap_or_default(),
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                ..Default::default()
            };
            retry_setup(|| async {
                self.js
                    .create_or_update_key_value(config.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| BusError::Setup(format!("bucket {name}: {e}")))?;
        }
        for (store, description, max_age) in [
            (
                self.subjects.media_store(),
                "Media users sent, downloaded when a bot asks",
                topology::MEDIA_TTL,
            ),
            (
                self.subjects.uploads_store(),
                "Files bots uploaded for their sends",
                topology::UPLOAD_TTL,
            ),
        ] {
            if self.js.get_object_store(&store).await.is_ok() {
                continue;
            }
            let config = jetstream::object_store::Config {
                bucket: store.clone(),
                description: Some(description.into()),
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                max_age,
                max_bytes: if settings.max_stream_bytes > 0 {
                    settings.max_stream_bytes
                } else {
                    -1
                },
                ..Default::default()
            };
            retry_setup(|| async {
                match self.js.create_object_store(config.clone()).await {
                    Ok(_) => Ok(()),
                    Err(_) if self.js.get_object_store(&store).await.is_ok() => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await
            .map_err(|e| BusError::Setup(format!("object store {store}: {e}")))?;
        }
        let files = self.subjects.files_store();
        if self.js.get_object_store(&files).await.is_err() {
            let config = jetstream::object_store::Config {
                bucket: files.clone(),
                description: Some("Files uploaded through BrandChat's file/upload".into()),
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                max_bytes: if settings.max_stream_bytes > 0 {
                    settings.max_stream_bytes
                } else {
                    -1
                },
                ..Default::default()
            };
            retry_setup(|| async {
                match self.js.create_object_store(config.clone()).await {
                    Ok(_) => Ok(()),
                    // Another replica created it meanwhile.
                    Err(_) if self.js.get_object_store(&files).await.is_ok() => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await
            .map_err(|e| BusError::Setup(format!("object store {files}: {e}")))?;
        }
        Ok(())
    }

    /// Publishes `payload` as JSON to `subject` with `Nats-Msg-Id: msg_id` and the current trace
    /// context, and waits until JetStream stored it.
    pub async fn publish<T: Serialize>(
        &self,
        subject: &str,
        msg_id: &str,
        payload: &T,
    ) -> Result<Published, BusError> {
        let body = serde_json::to_vec(payload)?;
        self.publish_bytes(subject, msg_id, Bytes::from(body), HeaderMap::new())
            .await
    }

    /// Tells a custom channel's request that may be waiting for `event_id`'s replies what
    /// became of the event at the tenant (core NATS, best effort: nobody may be listening).
    pub async fn announce_custom_outcome(&self, event_id: &str, delivered: bool, replies: u32) {
        let outcome = patchbay_contract::CustomOutcome {
            v: patchbay_contract::V1,
            event_id: event_id.to_owned(),
            delivered,
            replies,
        };
        if let (Ok(subject), Ok(body)) = (
            self.subjects.custom_outcome(event_id),
            serde_json::to_vec(&outcome),
        ) && let Err(e) = self.client.publish(subject, body.into()).await
        {
            tracing::debug!(error = %e, "custom outcome not announced");
        }
    }

    /// Publishes raw bytes with extra headers; `Nats-Msg-Id` and trace context are added.
    pub async fn publish_bytes(
        &self,
        subject: &str,
        msg_id: &str,
        body: Bytes,
        mut headers: HeaderMap,
    ) -> Result<Published, BusError> {
        headers.insert(headers::MSG_ID, msg_id);
        trace::inject(&mut headers);
        let started = std::time::Instant::now();
        let ack = self
            .js
            .send_publish(
                subject.to_owned(),
                PublishMessage::build().payload(body).headers(headers),
            )
            .await
            .map_err(|e| publish_error(subject, &e))?;
        let ack = tokio::time::timeout(self.publish_timeout, ack)
            .await
            .map_err(|_| BusError::Unavailable(format!("publish to {subject} timed out")))?
            .map_err(|e| publish_error(subject, &e))?;
        metrics::histogram!("patchbay_publish_seconds", "stream" => ack.stream.clone())
            .record(started.elapsed().as_secs_f64());
        Ok(Published {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

/// A failed publish as a [`BusError`]: [`BusError::TooLarge`] for what can never be stored
/// (over the server's `max_payload`, which the client checks before sending, or the stream's
/// largest message, JetStream's error 10054), [`BusError::Backlogged`] when the subject's key
/// holds as many messages as one key may (error 10077, "maximum messages per subject
/// exceeded", from a stream that discards new messages per subject),
/// [`BusError::Unavailable`] for the rest, which may pass later: timeouts, no stream
/// answering (a leader election, NATS restarting), a full stream (backpressure: the edges
/// answer 503).
fn publish_error(subject: &str, e: &PublishError) -> BusError {
    let js = || std::error::Error::source(e).and_then(|s| s.downcast_ref::<jetstream::Error>());
    let error = match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => {
            BusError::TooLarge(format!("publish to {subject}: {e}"))
        }
        PublishErrorKind::Other => match js() {
            Some(js) if js.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM => {
                BusError::TooLarge(format!("publish to {subject}: {e}"))
            }
            Some(js)
                if js.error_code() == ErrorCode::STREAM_STORE_FAILED
                    && js.to_string().contains(PER_SUBJECT_LIMIT) =>
            {
                BusError::Backlogged(format!("publish to {subject}: {e}"))
            }
            _ => BusError::Unavailable(format!("publish to {subject}: {e}")),
        },
        PublishErrorKind::StreamNotFound => {
            BusError::Unavailable(format!("no stream holds {subject}"))
        }
        _ => BusError::Unavailable(format!("publish to {subject}: {e}")),
    };
    metrics::counter!("patchbay_publish_errors_total", "outcome" => error.outcome()).increment(1);
    error
}

/// How nats-server describes a refusal by a stream that discards new messages per subject
/// (`ErrMaxMsgsPerSubject`, inside error 10077 `JSStreamStoreFailedF`, which other store
/// failures share).
const PER_SUBJECT_LIMIT: &str = "maximum messages per subject exceeded";

/// Retries a setup call a few times: replicas starting together may race on creation.
async fn retry_setup<F, Fut>(mut f: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut last = String::new();
    for attempt in 0..20u64 {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::debug!(attempt, error = %e, "JetStream setup call failed; retrying");
                last = e;
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1).min(10))).await;
            }
        }
    }
    Err(last)
}
