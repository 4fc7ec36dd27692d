//! Configuration of every Patchbay service: defaults, then an optional TOML file
//! (`PATCHBAY_CONFIG`), then `PATCHBAY_*` environment variables. Validated at start; an error
//! names the key at fault. Also holds the master key that seals secrets at rest.

pub mod secrets;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use secrets::MasterKey;

/// Environment variable prefix.
pub const ENV_PREFIX: &str = "PATCHBAY_";
/// Environment variable naming an optional TOML configuration file.
pub const CONFIG_FILE_ENV: &str = "PATCHBAY_CONFIG";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines (development).
    Text,
}

/// The whole configuration. Every field maps to `PATCHBAY_<FIELD>` in upper case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address of the HTTP listener (webhooks, API, `/metrics`, `/healthz`, `/readyz`).
    pub http_addr: SocketAddr,
    /// NATS server URL(s), comma separated.
    pub nats_url: String,
    /// Prefix of every subject, stream and bucket (`pb`), so installations can share a server.
    pub nats_prefix: String,
    /// Stream and bucket replicas: 1 on one machine, 3 on Kubernetes.
    pub nats_replicas: usize,
    /// Byte limit of each pipeline stream; beyond it publishes fail and edges answer 503.
    pub nats_max_stream_bytes: i64,
    /// Messages one bot or channel may have waiting in each pipeline stream; beyond it its
    /// publishes are refused (API 429 `backlog_full`, a send fails with `backlog_full`) while
    /// the others' flow, so one bot cannot fill the streams every bot shares.
    pub pipeline_backlog_per_key: i64,
    /// Partitions of each pipeline stream: the most replicas of one worker that share its
    /// work (more stand by). Set it once per installation.
    pub partitions: u32,
    /// JetStream's de-duplication window of the pipeline streams; platform retries later than
    /// this are caught by the router's unique key in PostgreSQL instead.
    pub nats_duplicate_window_ms: u64,
    /// How long a publish may wait for JetStream's acknowledgement.
    pub publish_timeout_ms: u64,
    /// This process's NATS password (`patchbay nats-auth` makes one per service); the user is
    /// `<prefix>-<service>`. Unset: connect without credentials (a NATS without authorisation).
    pub nats_password: Option<String>,
    /// A file holding this process's NATS password (instead of `nats_password`: a mounted
    /// Secret, or `patchbay nats-auth`'s `passwords/<service>`).
    pub nats_password_file: Option<String>,
    /// PEM file of the CA that signed the NATS servers' certificates: connect over TLS only.
    pub nats_tls_ca_file: Option<String>,
    /// PEM client certificate for NATS servers that verify clients (with `nats_tls_key_file`).
    pub nats_tls_cert_file: Option<String>,
    /// PEM private key of `nats_tls_cert_file`.
    pub nats_tls_key_file: Option<String>,
    /// PostgreSQL URL, for the services that own tables (auth, bot-router, webhook-dispatcher).
    pub database_url: Option<String>,
    /// Connections per service pool.
    pub database_max_connections: u32,
    /// Base64 of the 32-byte master key that seals channel and webhook secrets at rest.
    pub master_key: Option<String>,
    /// More master keys that open sealed values but never seal (comma-separated base64): the
    /// previous key until `patchbay master-key reseal` re-sealed everything, or the next key
    /// while a rotation is rolled out (`docs/security.md`, "Master key rotation").
    pub master_key_accepted: Option<String>,
    /// The operator's Bearer token for `/admin/v1`.
    pub admin_token: Option<String>,
    /// How long a rotated API key or webhook secret keeps working beside the new one, unless
    /// the rotation asks for another overlap.
    pub key_rotation_overlap_ms: u64,
    /// How long an access token from `POST /v1/auth/token` works.
    pub access_token_ttl_ms: u64,
    /// How long a refresh token works (each refresh issues a new one).
    pub refresh_token_ttl_ms: u64,
    /// API requests per second a bot may make (installation-wide), unless it has its own limit.
    pub api_rate_per_second: u32,
    /// API requests a bot may make at once before the per-second rate applies.
    pub api_rate_burst: u32,
    /// Allow callback URLs on loopback and private networks (development only).
    pub allow_private_callbacks: bool,
    /// `json` or `text`.
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `patchbay_api=debug,info`.
    pub log_level: String,
    /// OTLP/HTTP traces endpoint (e.g. `http://collector:4318/v1/traces`); off when unset.
    pub otlp_endpoint: Option<String>,
    /// Largest webhook body an ingress accepts; larger ones get 413.
    pub ingress_max_body_bytes: usize,
    /// How long a client may take to send a request's line and headers; the connection is
    /// closed beyond it. The clock also runs while a kept-alive connection waits for its next
    /// request, so this bounds idle connections too.
    pub http_header_timeout_ms: u64,
    /// How long a client may take to send a request's body once the handler reads it; 408 and
    /// the connection closed beyond it.
    pub http_body_timeout_ms: u64,
    /// How long a response may make no progress (a client that stopped reading it) before the
    /// connection is closed.
    pub http_write_timeout_ms: u64,
    /// Proxies whose `X-Forwarded-For` names the client (comma-separated addresses or CIDRs,
    /// e.g. `10.0.0.0/8,127.0.0.1`); empty: the peer address is the client.
    pub http_trusted_proxies: TrustedProxies,
    /// Requests per second one client address may make to `/admin`, `/go` and the token
    /// exchange (per replica).
    pub http_ip_rate_per_second: u32,
    /// Requests one client address may make to `/admin`, `/go` and the token exchange at once.
    pub http_ip_rate_burst: u32,
    /// Requests per second one client address may post to the ingress routes (`/webhooks`,
    /// `/v1/custom`; per replica). Platforms post from few addresses: keep it generous.
    pub ingress_ip_rate_per_second: u32,
    /// Requests one client address may post to the ingress routes at once.
    pub ingress_ip_rate_burst: u32,
    /// Per-attempt timeout of a tenant callback.
    pub webhook_timeout_ms: u64,
    /// Delays of successive callback attempts, e.g. `0s,5s,5m,30m,2h,5h,10h,10h`.
    pub webhook_retry_schedule: RetrySchedule,
    /// How much of a tenant's response body is read and logged.
    pub webhook_response_max_bytes: usize,
    /// Dead letters kept per consumer and bot (or channel) in the dead-letter stream; the
    /// oldest go first, so one bot's failures cannot fill it for the others.
    pub dead_letters_per_key: i64,
    /// Dead letters one bot may replay a minute (`POST /v1/deliveries/replay`; also the most
    /// one call replays), so a replayed backlog cannot crowd the shared dispatch stream.
    pub replay_per_minute: u32,
    /// Messages each consumer handles at once, per process. Also the pull batch, so the most
    /// one consumer can give a group commit at once: 32 left a saturated round trip with
    /// batches of 5–8 statements' requests; 128 gave 10–28 % more throughput for 9–20 % less
    /// CPU per message (`docs/benchmarks.md`).
    pub consumer_concurrency: usize,
    /// How long a history write that nothing waits on to go on (a send's status in the
    /// router, a callback's attempt log in the dispatcher) waits, when it is alone, for others
    /// to share its statement: at low rates these go several to a statement instead of one
    /// each (`docs/benchmarks.md`). 0 writes each at once.
    pub record_linger_ms: u64,
    /// Recipients of one broadcast handed to the send path and not yet sent, failed or skipped,
    /// at most: what waits for the platform's pace in the bulk stream, and what a pause still
    /// lets go out.
    pub broadcast_window: u32,
    /// How often, at most, a sending broadcast's `broadcast.progress` event goes to the bots
    /// that subscribe to it (only when its counts moved).
    pub broadcast_progress_ms: u64,
    /// How long a stopping service may take to finish what it holds.
    pub shutdown_grace_ms: u64,
    /// Telegram Bot API base URL (channels may override it).
    pub telegram_api_base_url: String,
    /// Per-call timeout of platform API calls.
    pub outbound_timeout_ms: u64,
    /// Largest media file a bot may download through `GET /v1/media/{media_id}` or upload
    /// through `POST /v1/media` (bytes).
    pub media_max_bytes: u64,
    /// What one bot's uploads (`POST /v1/media`, kept 30 days) may take in all (bytes).
    pub media_quota_bytes: u64,
    /// Telegram pace per bot (messages per second; the Bots FAQ says about 30).
    pub telegram_per_bot_per_second: u32,
    /// Telegram pace per chat (messages per second; the Bots FAQ says about 1).
    pub telegram_per_chat_per_second: u32,
    /// Messages a Telegram chat may get in a burst before the per-chat pace applies.
    pub telegram_per_chat_burst: u32,
    /// Graph API base URL for Messenger, with the version (channels may override it).
    pub messenger_api_base_url: String,
    /// Messenger pace per Page (messages per second; Meta allows 300 for text, 10 for media).
    pub messenger_per_page_per_second: u32,
    /// Messenger pace per user (messages per second).
    pub messenger_per_user_per_second: u32,
    /// Messages a Messenger user may get in a burst before the per-user pace applies.
    pub messenger_per_user_burst: u32,
    /// Graph API base URL for WhatsApp, with the version (channels may override it).
    pub whatsapp_api_base_url: String,
    /// WhatsApp pace per business phone number (messages per second; 80 by default at Meta).
    pub whatsapp_per_number_per_second: u32,
    /// WhatsApp pace per user (messages per second; Meta's pair limit is about one per 6 s
    /// with bursts, and its 131056 answers are retried).
    pub whatsapp_per_user_per_second: u32,
    /// Messages a WhatsApp user may get in a burst before the per-user pace applies.
    pub whatsapp_per_user_burst: u32,
    /// WeChat server API base URL (channels may override it).
    pub wechat_api_base_url: String,
    /// WeChat pace per Official Account (messages per second).
    pub wechat_per_account_per_second: u32,
    /// WeChat pace per user (messages per second).
    pub wechat_per_user_per_second: u32,
    /// Messages a WeChat user may get in a burst before the per-user pace applies.
    pub wechat_per_user_burst: u32,
    /// Kik bot API base URL (channels may override it).
    pub kik_api_base_url: String,
    /// Kik pace per bot (sends per second; Kik's global per-second limit was not published).
    pub kik_per_bot_per_second: u32,
    /// Kik pace per user (sends per second).
    pub kik_per_user_per_second: u32,
    /// Sends a Kik user may get in a burst before the per-user pace applies.
    pub kik_per_user_burst: u32,
    /// Viber REST bot API base URL (channels may override it).
    pub viber_api_base_url: String,
    /// Viber pace per bot (sends per second; Viber publishes no per-bot rate).
    pub viber_per_bot_per_second: u32,
    /// Viber pace per user (sends per second).
    pub viber_per_user_per_second: u32,
    /// Sends a Viber user may get in a burst before the per-user pace applies.
    pub viber_per_user_burst: u32,
    /// LINE Messaging API base URL (channels may override it).
    pub line_api_base_url: String,
    /// LINE pace per channel (sends per second; LINE allows 2,000 requests per second per
    /// channel on the reply and push endpoints).
    pub line_per_channel_per_second: u32,
    /// LINE pace per user or group (sends per second).
    pub line_per_user_per_second: u32,
    /// Sends a LINE user or group may get in a burst before the per-user pace applies.
    pub line_per_user_burst: u32,
    /// Public base URL of the `api` service as users' browsers reach it (links `/go/<token>`).
    pub public_url: String,
    /// How long a Patchbay link that replaced a `:code` URL button stays valid.
    pub link_ttl_ms: u64,
    /// How long a one-time code minted by a Patchbay link may be claimed.
    pub code_ttl_ms: u64,
    /// Patchbay links one bot may create per link lifetime (`link_ttl_ms`); beyond it a
    /// message with a `:code` URL button fails with `link_quota_exceeded`, so one bot cannot
    /// fill the links bucket every bot shares. At most twice this many are alive at once.
    pub links_per_bot: u64,
    /// One-time codes one bot's links may mint per code lifetime (`code_ttl_ms`); beyond it
    /// `/go/` answers 429. At most twice this many are alive at once.
    pub codes_per_bot: u64,
    /// How long a custom channel's message request waits for the bot's replies at most.
    pub custom_reply_wait_ms: u64,
    /// How long a console sign-in lasts; TTL of the `<p>_sessions` bucket.
    pub console_session_ttl_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_prefix: patchbay_contract::subjects::DEFAULT_PREFIX.into(),
            nats_replicas: 1,
            nats_max_stream_bytes: 1 << 30,
            pipeline_backlog_per_key: patchbay_contract::topology::DEFAULT_BACKLOG_PER_KEY,
            partitions: patchbay_contract::topology::DEFAULT_PARTITIONS,
            nats_duplicate_window_ms: 120_000,
            publish_timeout_ms: 5_000,
            nats_password: None,
            nats_password_file: None,
            nats_tls_ca_file: None,
            nats_tls_cert_file: None,
            nats_tls_key_file: None,
            database_url: None,
            database_max_connections: 10,
            master_key: None,
            master_key_accepted: None,
            admin_token: None,
            key_rotation_overlap_ms: 24 * 3600 * 1000,
            access_token_ttl_ms: 3600 * 1000,
            refresh_token_ttl_ms: 90 * 24 * 3600 * 1000,
            api_rate_per_second: 50,
            api_rate_burst: 100,
            allow_private_callbacks: false,
            log_format: LogFormat::Json,
            log_level: "info".into(),
            otlp_endpoint: None,
            ingress_max_body_bytes: 1 << 20,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 30_000,
            http_write_timeout_ms: 60_000,
            http_trusted_proxies: TrustedProxies::default(),
            http_ip_rate_per_second: 20,
            http_ip_rate_burst: 100,
            ingress_ip_rate_per_second: 1_000,
            ingress_ip_rate_burst: 2_000,
            webhook_timeout_ms: 15_000,
            webhook_retry_schedule: RetrySchedule::default(),
            webhook_response_max_bytes: 64 << 10,
            replay_per_minute: 1000,
            dead_letters_per_key: patchbay_contract::topology::DEFAULT_DEAD_LETTERS_PER_KEY,
            consumer_concurrency: 128,
            record_linger_ms: 25,
            broadcast_window: 1000,
            broadcast_progress_ms: 10_000,
            shutdown_grace_ms: 10_000,
            telegram_api_base_url: "https://api.telegram.org".into(),
            outbound_timeout_ms: 10_000,
            media_max_bytes: 25 * 1024 * 1024,
            media_quota_bytes: 1024 * 1024 * 1024,
            telegram_per_bot_per_second: 30,
            telegram_per_chat_per_second: 1,
            telegram_per_chat_burst: 3,
            messenger_api_base_url: "https://graph.facebook.com/v25.0".into(),
            messenger_per_page_per_second: 250,
            messenger_per_user_per_second: 1,
            messenger_per_user_burst: 5,
            whatsapp_api_base_url: "https://graph.facebook.com/v25.0".into(),
            whatsapp_per_number_per_second: 80,
            whatsapp_per_user_per_second: 1,
            whatsapp_per_user_burst: 10,
            wechat_api_base_url: "https://api.weixin.qq.com".into(),
            wechat_per_account_per_second: 100,
            wechat_per_user_per_second: 1,
            wechat_per_user_burst: 5,
            kik_api_base_url: "https://api.kik.com".into(),
            kik_per_bot_per_second: 20,
            kik_per_user_per_second: 1,
            kik_per_user_burst: 5,
            viber_api_base_url: "https://chatapi.viber.com".into(),
            viber_per_bot_per_second: 20,
            viber_per_user_per_second: 1,
            viber_per_user_burst: 5,
            line_api_base_url: "https://api.line.me".into(),
            line_per_channel_per_second: 1000,
            line_per_user_per_second: 1,
            line_per_user_burst: 5,
            public_url: "http://localhost:8080".into(),
            link_ttl_ms: 86_400_000,
            code_ttl_ms: 300_000,
            links_per_bot: 100_000,
            codes_per_bot: 10_000,
            custom_reply_wait_ms: 10_000,
            console_session_ttl_ms: 8 * 3_600_000,
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or a value has the wrong type.
    #[error("invalid configuration: {key}: {message}")]
    Load {
        /// The environment variable of the key at fault, e.g. `PATCHBAY_HTTP_ADDR`.
        key: String,
        /// What is wrong, and which source the value came from.
        message: String,
    },
    /// A value is present but not acceptable.
    #[error("invalid configuration: {key}: {message}")]
    Invalid {
        /// The environment variable, e.g. `PATCHBAY_MASTER_KEY`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// A problem with `field` (the lowercase field name).
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: env_key(field),
            message: message.into(),
        }
    }
}

/// `PATCHBAY_<FIELD>`.
pub fn env_key(field: &str) -> String {
    format!("{ENV_PREFIX}{}", field.to_ascii_uppercase())
}

impl Config {
    /// Defaults, then the file named by `PATCHBAY_CONFIG` (if any), then `PATCHBAY_*`.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var_os(CONFIG_FILE_ENV).map(std::path::PathBuf::from);
        Self::figment(file.as_deref()).and_then(Self::from_figment)
    }

    fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut f = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::invalid(
                    "config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            f = f.merge(Toml::file(path));
        }
        Ok(f.merge(Env::prefixed(ENV_PREFIX).ignore(&["config", "data_dir"])))
    }

    /// Extracts and validates a configuration from any figment (tests build their own).
    pub fn from_figment(f: Figment) -> Result<Self, ConfigError> {
        let c: Config = f.extract().map_err(|e| {
            let field = e.path.join("_").to_ascii_lowercase();
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            ConfigError::Load {
                key: if field.is_empty() {
                    "configuration".into()
                } else {
                    env_key(&field)
                },
                message: format!("{}{source}", e.kind),
            }
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        patchbay_contract::Subjects::new(&self.nats_prefix)
            .map_err(|e| ConfigError::invalid("nats_prefix", e.to_string()))?;
        if self.nats_tls_cert_file.is_some() != self.nats_tls_key_file.is_some() {
            return Err(ConfigError::invalid(
                "nats_tls_cert_file",
                "needs nats_tls_key_file, and the other way round",
            ));
        }
        if self.nats_password.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::invalid("nats_password", "is empty"));
        }
        if self.nats_password.is_some() && self.nats_password_file.is_some() {
            return Err(ConfigError::invalid(
                "nats_password_file",
                "give the NATS password or a file holding it, not both",
            ));
        }
        if self.pipeline_backlog_per_key < 1 {
            return Err(ConfigError::invalid(
                "pipeline_backlog_per_key",
                "must be at least 1",
            ));
        }
        if self.dead_letters_per_key < 1 {
            return Err(ConfigError::invalid(
                "dead_letters_per_key",
                "must be at least 1",
            ));
        }
        if self.replay_per_minute == 0 {
            return Err(ConfigError::invalid(
                "replay_per_minute",
                "must be at least 1",
            ));
        }
        if !(1..=5).contains(&self.nats_replicas) {
            return Err(ConfigError::invalid(
                "nats_replicas",
                "must be between 1 and 5",
            ));
        }
        if !(1..=patchbay_contract::topology::MAX_PARTITIONS).contains(&self.partitions) {
            return Err(ConfigError::invalid(
                "partitions",
                format!(
                    "must be between 1 and {}",
                    patchbay_contract::topology::MAX_PARTITIONS
                ),
            ));
        }
        if self.nats_duplicate_window_ms < 100 {
            return Err(ConfigError::invalid(
                "nats_duplicate_window_ms",
                "must be at least 100",
            ));
        }
        if self.api_rate_per_second == 0 || self.api_rate_burst == 0 {
            return Err(ConfigError::invalid(
                "api_rate_per_second",
                "the API rate and burst must be at least 1",
            ));
        }
        if self.broadcast_window == 0 || self.broadcast_window > 10_000 {
            return Err(ConfigError::invalid(
                "broadcast_window",
                "must be between 1 and 10000",
            ));
        }
        if self.broadcast_progress_ms < 250 {
            return Err(ConfigError::invalid(
                "broadcast_progress_ms",
                "must be at least 250 (a broadcast steps every 250 ms)",
            ));
        }
        if self.consumer_concurrency == 0 {
            return Err(ConfigError::invalid(
                "consumer_concurrency",
                "must be at least 1",
            ));
        }
        if self.webhook_retry_schedule.0.is_empty() {
            return Err(ConfigError::invalid(
                "webhook_retry_schedule",
                "needs at least one attempt",
            ));
        }
        for (field, v) in [
            (
                "telegram_per_bot_per_second",
                self.telegram_per_bot_per_second,
            ),
            (
                "telegram_per_chat_per_second",
                self.telegram_per_chat_per_second,
            ),
            ("telegram_per_chat_burst", self.telegram_per_chat_burst),
            (
                "messenger_per_page_per_second",
                self.messenger_per_page_per_second,
            ),
            (
                "messenger_per_user_per_second",
                self.messenger_per_user_per_second,
            ),
            ("messenger_per_user_burst", self.messenger_per_user_burst),
            (
                "whatsapp_per_number_per_second",
                self.whatsapp_per_number_per_second,
            ),
            (
                "whatsapp_per_user_per_second",
                self.whatsapp_per_user_per_second,
            ),
            ("whatsapp_per_user_burst", self.whatsapp_per_user_burst),
            (
                "wechat_per_account_per_second",
                self.wechat_per_account_per_second,
            ),
            (
                "wechat_per_user_per_second",
                self.wechat_per_user_per_second,
            ),
            ("wechat_per_user_burst", self.wechat_per_user_burst),
            ("kik_per_bot_per_second", self.kik_per_bot_per_second),
            ("kik_per_user_per_second", self.kik_per_user_per_second),
            ("kik_per_user_burst", self.kik_per_user_burst),
            ("viber_per_bot_per_second", self.viber_per_bot_per_second),
            ("viber_per_user_per_second", self.viber_per_user_per_second),
            ("viber_per_user_burst", self.viber_per_user_burst),
            (
                "line_per_channel_per_second",
                self.line_per_channel_per_second,
            ),
            ("line_per_user_per_second", self.line_per_user_per_second),
            ("line_per_user_burst", self.line_per_user_burst),
            ("http_ip_rate_per_second", self.http_ip_rate_per_second),
            ("http_ip_rate_burst", self.http_ip_rate_burst),
            (
                "ingress_ip_rate_per_second",
                self.ingress_ip_rate_per_second,
            ),
            ("ingress_ip_rate_burst", self.ingress_ip_rate_burst),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(field, "must be at least 1"));
            }
        }
        if self.ingress_max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "ingress_max_body_bytes",
                "must be at least 1024",
            ));
        }
        if let Some(k) = &self.master_key {
            MasterKey::from_base64(k)
                .map_err(|e| ConfigError::invalid("master_key", e.to_string()))?;
        }
        if self.master_key_accepted.is_some() {
            if self.master_key.is_none() {
                return Err(ConfigError::invalid(
                    "master_key_accepted",
                    "needs PATCHBAY_MASTER_KEY (the key that seals)",
                ));
            }
            for k in self.accepted_master_keys() {
                MasterKey::from_base64(k)
                    .map_err(|e| ConfigError::invalid("master_key_accepted", e.to_string()))?;
            }
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::invalid(
                "admin_token",
                "must be at least 16 characters",
            ));
        }
        if !(1..=100 * 1024 * 1024).contains(&self.media_max_bytes) {
            return Err(ConfigError::invalid(
                "media_max_bytes",
                "must be between 1 and 104857600 (100 MiB)",
            ));
        }
        if self.media_quota_bytes < self.media_max_bytes {
            return Err(ConfigError::invalid(
                "media_quota_bytes",
                "must be at least media_max_bytes",
            ));
        }
        if self.record_linger_ms > 1_000 {
            return Err(ConfigError::invalid(
                "record_linger_ms",
                "must be at most 1000",
            ));
        }
        if self.refresh_token_ttl_ms <= self.access_token_ttl_ms {
            return Err(ConfigError::invalid(
                "refresh_token_ttl_ms",
                "must be longer than access_token_ttl_ms",
            ));
        }
        if self.custom_reply_wait_ms > 60_000 {
            return Err(ConfigError::invalid(
                "custom_reply_wait_ms",
                "must be at most 60000",
            ));
        }
        for (field, ms) in [
            ("link_ttl_ms", self.link_ttl_ms),
            ("code_ttl_ms", self.code_ttl_ms),
            ("console_session_ttl_ms", self.console_session_ttl_ms),
            ("access_token_ttl_ms", self.access_token_ttl_ms),
            ("refresh_token_ttl_ms", self.refresh_token_ttl_ms),
            ("http_header_timeout_ms", self.http_header_timeout_ms),
            ("http_body_timeout_ms", self.http_body_timeout_ms),
            ("http_write_timeout_ms", self.http_write_timeout_ms),
        ] {
            if ms < 1_000 {
                return Err(ConfigError::invalid(field, "must be at least 1000"));
            }
        }
        for (field, url) in [
            ("telegram_api_base_url", Some(&self.telegram_api_base_url)),
            ("messenger_api_base_url", Some(&self.messenger_api_base_url)),
            ("whatsapp_api_base_url", Some(&self.whatsapp_api_base_url)),
            ("wechat_api_base_url", Some(&self.wechat_api_base_url)),
            ("kik_api_base_url", Some(&self.kik_api_base_url)),
            ("viber_api_base_url", Some(&self.viber_api_base_url)),
            ("line_api_base_url", Some(&self.line_api_base_url)),
            ("public_url", Some(&self.public_url)),
            ("otlp_endpoint", self.otlp_endpoint.as_ref()),
        ] {
            if let Some(u) = url
                && !(u.starts_with("http://") || u.starts_with("https://"))
            {
                return Err(ConfigError::invalid(field, "must be an http(s) URL"));
            }
        }
        Ok(())
    }

    /// The database URL, or an error naming `PATCHBAY_DATABASE_URL`.
    pub fn require_database_url(&self) -> Result<&str, ConfigError> {
        self.database_url
            .as_deref()
            .ok_or_else(|| ConfigError::invalid("database_url", "is required by this service"))
    }

    /// This process's NATS password: `nats_password`, or the trimmed contents of
    /// `nats_password_file`; `None` when neither is set.
    pub fn nats_password(&self) -> Result<Option<String>, ConfigError> {
        if let Some(p) = &self.nats_password {
            return Ok(Some(p.clone()));
        }
        let Some(path) = &self.nats_password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::invalid("nats_password_file", format!("{path}: {e}")))?;
        let password = text.trim();
        if password.is_empty() {
            return Err(ConfigError::invalid(
                "nats_password_file",
                format!("{path} is empty"),
            ));
        }
        Ok(Some(password.to_owned()))
    }

    /// The master keys (`master_key` seals, `master_key_accepted` only open), or an error
    /// naming `PATCHBAY_MASTER_KEY`.
    pub fn require_master_key(&self) -> Result<MasterKey, ConfigError> {
        let raw = self.master_key.as_deref().ok_or_else(|| {
            ConfigError::invalid(
                "master_key",
                "is required by this service (base64 of 32 random bytes; `openssl rand -base64 32`)",
            )
        })?;
        MasterKey::from_base64(raw)
            .map_err(|e| ConfigError::invalid("master_key", e.to_string()))?;
        MasterKey::keyring(raw, &self.accepted_master_keys())
            .map_err(|e| ConfigError::invalid("master_key_accepted", e.to_string()))
    }

    /// The master keys when `master_key` is set.
    pub fn master_key(&self) -> Result<Option<MasterKey>, ConfigError> {
        match self.master_key {
            Some(_) => self.require_master_key().map(Some),
            None => Ok(None),
        }
    }

    /// The entries of `master_key_accepted`.
    fn accepted_master_keys(&self) -> Vec<&str> {
        self.master_key_accepted
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect()
    }

    /// The operator token, or an error naming `PATCHBAY_ADMIN_TOKEN`.
    pub fn require_admin_token(&self) -> Result<&str, ConfigError> {
        self.admin_token
            .as_deref()
            .ok_or_else(|| ConfigError::invalid("admin_token", "is required by this service"))
    }

    /// `publish_timeout_ms` as a duration.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    /// `http_header_timeout_ms` as a duration.
    pub fn http_header_timeout(&self) -> Duration {
        Duration::from_millis(self.http_header_timeout_ms)
    }

    /// `http_body_timeout_ms` as a duration.
    pub fn http_body_timeout(&self) -> Duration {
        Duration::from_millis(self.http_body_timeout_ms)
    }

    /// `http_write_timeout_ms` as a duration.
    pub fn http_write_timeout(&self) -> Duration {
        Duration::from_millis(self.http_write_timeout_ms)
    }

    /// `shutdown_grace_ms` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// `PATCHBAY_*` variables set in the environment that match no configuration key, so a
    /// typo is reported instead of silently ignored.
    pub fn unknown_env_keys() -> Vec<String> {
        let known = serde_json::to_value(Config::default())
            .ok()
            .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
            .unwrap_or_default();
        std::env::vars()
            .filter_map(|(k, _)| {
                let field = k.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
                (!known.contains(&field) && field != "config" && field != "data_dir").then_some(k)
            })
            .collect()
    }
}

/// Addresses and networks of trusted proxies. Written as a comma-separated string
/// (`10.0.0.0/8,127.0.0.1`) or a list; a bare address is a network of one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Whether `ip` is one of them.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }
}

impl std::str::FromStr for TrustedProxies {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{p:?} is neither an address nor a CIDR network"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }
}

impl Serialize for TrustedProxies {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        s.serialize_str(&parts.join(","))
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let joined = match Raw::deserialize(d)? {
            Raw::One(s) => s,
            Raw::Many(v) => v.join(","),
        };
        joined.parse().map_err(serde::de::Error::custom)
    }
}

/// Delays of successive attempts. Written as a comma-separated string (`0s,5s,5m`) or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl Default for RetrySchedule {
    fn default() -> Self {
        Self(
            [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        )
    }
}

impl std::str::FromStr for RetrySchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| humantime::parse_duration(p).map_err(|e| format!("bad duration {p:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(RetrySchedule)
    }
}

impl Serialize for RetrySchedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect();
        s.serialize_str(&parts.join(","))
    }
}

impl<'de> Deserialize<'de> for RetrySchedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let joined = match Raw::deserialize(d)? {
            Raw::One(s) => s,
            Raw::Many(v) => v.join(","),
        };
        joined.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error.
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn env_overrides_file_overrides_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "p.toml",
                "nats_prefix = \"fromfile\"\nconsumer_concurrency = 7\n",
            )?;
            jail.set_env("PATCHBAY_CONSUMER_CONCURRENCY", "9");
            jail.set_env("PATCHBAY_WEBHOOK_RETRY_SCHEDULE", "0s,5s,5m");
            jail.set_env("PATCHBAY_HTTP_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1");
            let c =
                Config::from_figment(Config::figment(Some(Path::new("p.toml"))).unwrap()).unwrap();
            assert_eq!(c.nats_prefix, "fromfile");
            assert_eq!(c.consumer_concurrency, 9);
            assert_eq!(
                c.webhook_retry_schedule.0,
                vec![
                    Duration::ZERO,
                    Duration::from_secs(5),
                    Duration::from_secs(300)
                ]
            );
            assert!(c.http_trusted_proxies.contains("10.1.2.3".parse().unwrap()));
            assert!(
                c.http_trusted_proxies
                    .contains("127.0.0.1".parse().unwrap())
            );
            assert!(
                !c.http_trusted_proxies
                    .contains("127.0.0.2".parse().unwrap())
            );
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key() {
        Jail::expect_with(|jail| {
            jail.set_env("PATCHBAY_HTTP_ADDR", "not an address");
            let e = Config::from_figment(Config::figment(None).unwrap()).unwrap_err();
            assert!(e.to_string().contains("PATCHBAY_HTTP_ADDR"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("PATCHBAY_NATS_PREFIX", "Bad.Prefix");
            let e = Config::from_figment(Config::figment(None).unwrap()).unwrap_err();
            assert!(e.to_string().contains("PATCHBAY_NATS_PREFIX"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("PATCHBAY_MASTER_KEY", "c2hvcnQ=");
            let e = Config::from_figment(Config::figment(None).unwrap()).unwrap_err();
            assert!(e.to_string().contains("PATCHBAY_MASTER_KEY"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("PATCHBAY_MASTER_KEY", MasterKey::generate_base64().unwrap());
            jail.set_env("PATCHBAY_MASTER_KEY_ACCEPTED", "c2hvcnQ=");
            let e = Config::from_figment(Config::figment(None).unwrap()).unwrap_err();
            assert!(
                e.to_string().contains("PATCHBAY_MASTER_KEY_ACCEPTED"),
                "{e}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env(
                "PATCHBAY_MASTER_KEY_ACCEPTED",
                MasterKey::generate_base64().unwrap(),
            );
            let e = Config::from_figment(Config::figment(None).unwrap()).unwrap_err();
            assert!(
                e.to_string().contains("PATCHBAY_MASTER_KEY_ACCEPTED"),
                "{e}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("PATCHBAY_WEBHOOK_RETRY_SCHEDULE", "5s,soon");
            let e = Config::from_figment(Config::figment(None).unwrap()).unwrap_err();
            assert!(
                e.to_string().contains("PATCHBAY_WEBHOOK_RETRY_SCHEDULE"),
                "{e}"
            );
            Ok(())
        });
    }

    /// `docs/configuration.md` documents every setting.
    #[test]
    fn every_key_is_documented() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
        )
        .expect("docs/configuration.md exists");
        let fields = serde_json::to_value(Config::default()).unwrap();
        for field in fields.as_object().unwrap().keys() {
            let key = env_key(field);
            assert!(
                doc.contains(&format!("`{key}`")),
                "{key} is not in docs/configuration.md"
            );
        }
    }

    #[test]
    fn accepted_master_keys_join_the_keyring() {
        Jail::expect_with(|jail| {
            let (a, b, c) = (
                MasterKey::generate_base64().unwrap(),
                MasterKey::generate_base64().unwrap(),
                MasterKey::generate_base64().unwrap(),
            );
            jail.set_env("PATCHBAY_MASTER_KEY", &b);
            jail.set_env("PATCHBAY_MASTER_KEY_ACCEPTED", format!("{a}, {c},"));
            let c_id = MasterKey::id_of_base64(&c).unwrap();
            let config = Config::from_figment(Config::figment(None).unwrap()).unwrap();
            let ring = config.require_master_key().unwrap();
            assert_eq!(ring.id(), MasterKey::id_of_base64(&b).unwrap());
            assert_eq!(
                ring.accepted_ids(),
                vec![MasterKey::id_of_base64(&a).unwrap().as_str(), c_id.as_str()]
            );
            assert_eq!(config.master_key().unwrap().unwrap().id(), ring.id());
            // Set but empty (compose passes `${PATCHBAY_MASTER_KEY_ACCEPTED:-}`): none.
            jail.set_env("PATCHBAY_MASTER_KEY_ACCEPTED", "");
            let config = Config::from_figment(Config::figment(None).unwrap()).unwrap();
            assert!(
                config
                    .require_master_key()
                    .unwrap()
                    .accepted_ids()
                    .is_empty()
            );
            Ok(())
        });
    }

    #[test]
    fn missing_required_keys_are_named() {
        let c = Config::default();
        assert!(
            c.require_database_url()
                .unwrap_err()
                .to_string()
                .contains("PATCHBAY_DATABASE_URL")
        );
        assert!(
            c.require_master_key()
                .unwrap_err()
                .to_string()
                .contains("PATCHBAY_MASTER_KEY")
        );
    }
}
