//! The end-to-end harness: a real nats-server and PostgreSQL, every Patchbay service started
//! in-process exactly as `patchbay all` (or each on its own, as on Kubernetes), a fake tenant
//! and a fake Telegram Bot API. Every stack has its own servers, subject prefix and ports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use patchbay_config::{Config, LogFormat, MasterKey, RetrySchedule};
use patchbay_contract::access::Role;
use patchbay_runtime::lifecycle::{Running, launch};
use patchbay_testkit::graph::FakeGraph;
use patchbay_testkit::kik::FakeKik;
use patchbay_testkit::line::FakeLine;
use patchbay_testkit::nats::NatsServer;
use patchbay_testkit::postgres::PgServer;
use patchbay_testkit::telegram::FakeTelegram;
use patchbay_testkit::tenant::FakeTenant;
use patchbay_testkit::viber::FakeViber;
use patchbay_testkit::wechat::FakeWechat;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use patchbay_telegram::fixtures;
pub use patchbay_testkit::{eventually, tenant::WAIT};

/// The NATS users of a stack: one per role (as `patchbay nats-auth` makes them, with a cheap
/// hash) and the test's own user, which may do anything.
pub struct NatsAuth {
    /// Every role's user.
    pub users: Vec<patchbay::nats_auth::User>,
    /// The test's user and password.
    pub observer: (String, String),
    /// The server's `authorization` block.
    pub server_config: String,
}

impl NatsAuth {
    /// Users for `config`'s prefix and partitions.
    pub fn new(config: &Config) -> Self {
        let subjects = patchbay_contract::Subjects::new(&config.nats_prefix).unwrap();
        let settings = patchbay_runtime::lifecycle::topology_settings(config);
        let users = patchbay::nats_auth::fresh_users(&subjects).unwrap();
        // The lowest bcrypt cost: the hashes are only as strong as a test needs.
        let mut block =
            patchbay::nats_auth::authorization(&subjects, &settings, &users, 4).unwrap();
        let observer = (
            format!("{}-observer", subjects.prefix()),
            patchbay::nats_auth::new_password().unwrap(),
        );
        block["authorization"]["users"]
            .as_array_mut()
            .unwrap()
            .push(json!({"user": observer.0, "password": observer.1}));
        Self {
            users,
            observer,
            server_config: serde_json::to_string_pretty(&block).unwrap(),
        }
    }

    /// The password of `role`'s user.
    pub fn password_of(&self, role: Role) -> String {
        self.users
            .iter()
            .find(|u| u.role == Some(role))
            .map(|u| u.password.clone())
            .unwrap_or_else(|| panic!("no user for {role:?}"))
    }
}

/// How the services are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One process, one listener (`patchbay all`).
    All,
    /// One launch per service, each with its own listener and NATS connection (as pods).
    Split,
}

/// A running installation plus its fakes.
pub struct Stack {
    /// The NATS server.
    pub nats: NatsServer,
    /// Its users.
    pub nats_auth: NatsAuth,
    /// The database server.
    pub pg: PgServer,
    /// The configuration every service got.
    pub config: Config,
    /// The fake tenant.
    pub tenant: FakeTenant,
    /// The fake Telegram API.
    pub telegram: FakeTelegram,
    /// The fake Meta Graph API (Messenger and WhatsApp).
    pub graph: FakeGraph,
    /// The fake WeChat server API.
    pub wechat: FakeWechat,
    /// The fake Kik bot API.
    pub kik: FakeKik,
    /// The fake Viber REST bot API (its check callbacks go to the Viber ingress).
    pub viber: FakeViber,
    /// The fake LINE Messaging API.
    pub line: FakeLine,
    /// An HTTP client.
    pub http: reqwest::Client,
    layout: Layout,
    running: Vec<(&'static str, Running)>,
}

/// A bot created through the admin API, with a Telegram channel.
#[derive(Debug, Clone)]
pub struct TestBot {
    /// Bot id.
    pub id: String,
    /// API key.
    pub api_key: String,
    /// Standard Webhooks secret.
    pub webhook_secret: String,
    /// Channel id.
    pub channel_id: String,
    /// `/webhooks/telegram/<channel>`.
    pub webhook_path: String,
    /// The channel's Telegram secret token.
    pub secret_token: String,
    /// The channel's bot token.
    pub bot_token: String,
}

/// A bot created through the admin API with a Messenger or WhatsApp channel on the fake
/// Graph API.
#[derive(Debug, Clone)]
pub struct MetaBot {
    /// Bot id.
    pub id: String,
    /// API key.
    pub api_key: String,
    /// Standard Webhooks secret.
    pub webhook_secret: String,
    /// Channel id.
    pub channel_id: String,
    /// `/webhooks/<platform>/<channel>`.
    pub webhook_path: String,
    /// The Page id or phone number id.
    pub route_id: String,
    /// The Page access token or WhatsApp access token.
    pub token: String,
    /// The Meta app secret that signs webhooks.
    pub app_secret: String,
    /// The verify token of the `hub.*` handshake.
    pub verify_token: String,
}

/// A bot created through the admin API with a WeChat Official Account channel on the fake
/// WeChat API.
#[derive(Debug, Clone)]
pub struct WechatBot {
    /// Bot id.
    pub id: String,
    /// API key.
    pub api_key: String,
    /// Standard Webhooks secret.
    pub webhook_secret: String,
    /// Channel id.
    pub channel_id: String,
    /// `/webhooks/wechat/<channel>`.
    pub webhook_path: String,
    /// The account's AppID.
    pub app_id: String,
    /// The server configuration's Token.
    pub token: String,
}

/// A bot created through the admin API with a Kik channel on the fake Kik API.
#[derive(Debug, Clone)]
pub struct KikBot {
    /// Bot id.
    pub id: String,
    /// API key.
    pub api_key: String,
    /// Standard Webhooks secret.
    pub webhook_secret: String,
    /// Channel id.
    pub channel_id: String,
    /// `/webhooks/kik/<channel>`.
    pub webhook_path: String,
    /// The Kik bot's username.
    pub username: String,
    /// The Kik bot's API key (signs webhooks, authenticates calls).
    pub kik_api_key: String,
}

/// A bot created through the admin API with a Viber channel on the fake Viber API.
#[derive(Debug, Clone)]
pub struct ViberBot {
    /// Bot id.
    pub id: String,
    /// API key.
    pub api_key: String,
    /// Standard Webhooks secret.
    pub webhook_secret: String,
    /// Channel id.
    pub channel_id: String,
    /// `/webhooks/viber/<channel>`.
    pub webhook_path: String,
    /// The Viber bot's auth token (signs callbacks, authenticates calls).
    pub auth_token: String,
}

/// A bot created through the admin API with a LINE channel on the fake LINE API.
#[derive(Debug, Clone)]
pub struct LineBot {
    /// Bot id.
    pub id: String,
    /// API key.
    pub api_key: String,
    /// Standard Webhooks secret.
    pub webhook_secret: String,
    /// Channel id.
    pub channel_id: String,
    /// `/webhooks/line/<channel>`.
    pub webhook_path: String,
    /// The channel secret (signs webhooks).
    pub channel_secret: String,
    /// The channel access token (authenticates calls).
    pub access_token: String,
}

/// How a WeChat webhook is posted: the admin console's three message modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WechatMode {
    /// Plaintext, signed.
    Plain,
    /// Both forms in one body, `encrypt_type=aes`.
    Compatible,
    /// Encrypted only.
    Safe,
}

/// Options for [`Stack::start_with`].
pub struct Options {
    /// Layout.
    pub layout: Layout,
    /// Changes to the default test configuration.
    pub configure: Box<dyn FnOnce(&mut Config)>,
    /// The NATS server's `max_payload`, when not its default (1 MiB): messages over it are
    /// refused, whatever is retried.
    pub nats_max_payload: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            layout: Layout::All,
            configure: Box::new(|_| {}),
            nats_max_payload: None,
        }
    }
}

impl Stack {
    /// All services in one process.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// A stack with options.
    pub async fn start_with(options: Options) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (pg, tenant, telegram, graph, wechat, kik, viber, line) = tokio::join!(
            PgServer::start(),
            FakeTenant::start(),
            FakeTelegram::start(),
            FakeGraph::start(),
            FakeWechat::start(),
            FakeKik::start(),
            FakeViber::start(),
            FakeLine::start()
        );
        let pg = pg.expect("postgres starts");
        let mut config = Config {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            nats_prefix: patchbay_testkit::unique_prefix(),
            database_url: Some(pg.url()),
            database_max_connections: 5,
            master_key: Some(MasterKey::generate_base64().unwrap()),
            admin_token: Some(format!("admin-{}", patchbay_testkit::unique_prefix())),
            allow_private_callbacks: true,
            log_format: LogFormat::Text,
            log_level: "info,sqlx=warn,async_nats=warn".into(),
            consumer_concurrency: 4,
            webhook_retry_schedule: "0s,100ms,200ms".parse::<RetrySchedule>().unwrap(),
            webhook_timeout_ms: 5_000,
            shutdown_grace_ms: 3_000,
            telegram_api_base_url: telegram.base_url(),
            // Tests send bursts to one chat; the pacing test sets real limits.
            telegram_per_bot_per_second: 10_000,
            telegram_per_chat_per_second: 10_000,
            telegram_per_chat_burst: 10_000,
            messenger_api_base_url: graph.base_url(),
            whatsapp_api_base_url: graph.base_url(),
            messenger_per_user_burst: 10_000,
            whatsapp_per_user_burst: 10_000,
            wechat_api_base_url: wechat.base_url(),
            wechat_per_user_burst: 10_000,
            kik_api_base_url: kik.base_url(),
            kik_per_user_burst: 10_000,
            viber_api_base_url: viber.base_url(),
            viber_per_user_burst: 10_000,
            line_api_base_url: line.base_url(),
            line_per_user_burst: 10_000,
            // Every test client is 127.0.0.1; the edge test sets real limits.
            http_ip_rate_per_second: 100_000,
            http_ip_rate_burst: 100_000,
            ingress_ip_rate_per_second: 100_000,
            ingress_ip_rate_burst: 100_000,
            ..Config::default()
        };
        (options.configure)(&mut config);
        // NATS with authorisation on: every launch connects as its own role's user.
        let access = NatsAuth::new(&config);
        let mut server_config = access.server_config.clone();
        if let Some(bytes) = options.nats_max_payload {
            server_config.push_str(&format!(
                "\n{}\n",
                patchbay_testkit::nats::max_payload(bytes)
            ));
        }
        let nats = NatsServer::start_with_config(server_config)
            .await
            .expect("nats-server starts");
        config.nats_url = nats.url();
        config.validate().expect("test configuration is valid");
        static TELEMETRY: std::sync::OnceLock<Option<patchbay_runtime::telemetry::TelemetryGuard>> =
            std::sync::OnceLock::new();
        TELEMETRY.get_or_init(|| patchbay_runtime::telemetry::init("patchbay-tests", &config).ok());
        let mut stack = Self {
            nats,
            nats_auth: access,
            pg,
            config,
            tenant,
            telegram,
            graph,
            wechat,
            kik,
            viber,
            line,
            http: patchbay_testkit::http_client(),
            layout: options.layout,
            running: Vec::new(),
        };
        match stack.layout {
            Layout::All => {}
            Layout::Split => {
                // Services with their own users cannot create the topology: `patchbay migrate`
                // does, as the Kubernetes Job does.
                let mut config = stack.config.clone();
                config.nats_password = Some(stack.nats_auth.password_of(Role::Migrate));
                patchbay::migrate(&config).await.expect("migrate");
            }
        }
        match stack.layout {
            Layout::All => {
                let r = stack.launch("patchbay", &patchbay::all()).await;
                stack.running.push(("patchbay", r));
            }
            Layout::Split => {
                for (name, start) in patchbay::SERVICES {
                    let r = stack.launch(name, &[*start]).await;
                    stack.running.push((name, r));
                }
            }
        }
        // Viber's check callbacks reach the Viber ingress, as the public host would route them.
        stack.viber.deliver_via(&stack.addr_of("ingress-viber"));
        stack
    }

    async fn launch(&self, name: &str, starts: &[patchbay_runtime::StartFn]) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = self.config.clone();
        let role = Role::from_name(name).unwrap_or_else(|| panic!("{name} has no NATS role"));
        config.nats_password = Some(self.nats_auth.password_of(role));
        launch(name, config, starts, listener, CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{name} starts: {e}"))
    }

    fn addr_of(&self, service: &str) -> String {
        let name = match self.layout {
            Layout::All => "patchbay",
            Layout::Split => service,
        };
        let (_, r) = self
            .running
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} is not running"));
        format!("http://{}", r.addr)
    }

    /// Base URLs of every running replica of `service` (split layout).
    pub fn urls_of(&self, service: &str) -> Vec<String> {
        self.running
            .iter()
            .filter(|(n, _)| *n == service)
            .map(|(_, r)| format!("http://{}", r.addr))
            .collect()
    }

    /// Base URL of the tenant API.
    pub fn api_url(&self) -> String {
        self.addr_of("api")
    }

    /// Base URL of the web console's service (its pages are under `/console`).
    pub fn console_url(&self) -> String {
        self.addr_of("console")
    }

    /// Base URL of the Telegram ingress.
    pub fn ingress_url(&self) -> String {
        self.addr_of("ingress-telegram")
    }

    /// Opens a Patchbay link (`<public_url>/go/<token>`) as a user's browser would, without
    /// following the redirect; asserts the 302 and returns where it points (the tenant's page
    /// with a fresh one-time code in place of `:code`).
    pub async fn open_link(&self, link: &str) -> String {
        let path = link
            .strip_prefix(self.config.public_url.trim_end_matches('/'))
            .unwrap_or_else(|| panic!("{link} is not under {}", self.config.public_url));
        let browser = patchbay_testkit::http_client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = browser
            .get(format!("{}{path}", self.api_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "opening {link}");
        r.headers()["location"].to_str().unwrap().to_owned()
    }

    /// Base URL of the custom channels' ingress.
    pub fn custom_url(&self) -> String {
        self.addr_of("ingress-custom")
    }

    /// Adds a custom channel to `bot` whose event webhook is `event_webhook_url`; returns the
    /// channel id, its domain key and its event webhook secret.
    pub async fn custom_channel(
        &self,
        bot: &TestBot,
        event_webhook_url: Option<&str>,
    ) -> (String, String, String) {
        let (status, ch) = self
            .post(
                &format!("{}/admin/v1/bots/{}/channels", self.api_url(), bot.id),
                self.admin_token(),
                &json!({"platform": "custom",
                        "credentials": {"event_webhook_url": event_webhook_url}}),
            )
            .await;
        assert_eq!(status, 201, "create custom channel: {ch}");
        let generated = &ch["generated"];
        (
            ch["id"].as_str().unwrap().to_owned(),
            generated["domain_key"].as_str().unwrap().to_owned(),
            generated["event_webhook_secret"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    }

    /// Adds a custom channel with `credentials` to `bot`; returns the admin API's answer (its
    /// `generated` secrets included).
    pub async fn custom_channel_with(&self, bot: &TestBot, credentials: Value) -> Value {
        let (status, ch) = self
            .post(
                &format!("{}/admin/v1/bots/{}/channels", self.api_url(), bot.id),
                self.admin_token(),
                &json!({"platform": "custom", "credentials": credentials}),
            )
            .await;
        assert_eq!(status, 201, "create custom channel: {ch}");
        ch
    }

    /// A custom channel's stored credentials, opened with the installation's master key from
    /// the config bucket (a test's way to mint tokens as if issued long ago).
    pub async fn custom_credentials(&self, channel_id: &str) -> patchbay_custom::CustomCredentials {
        let subjects = patchbay_contract::Subjects::new(&self.config.nats_prefix).unwrap();
        let js = async_nats::jetstream::new(
            self.nats_as(Role::Ingress(patchbay_contract::Platform::Custom))
                .await,
        );
        let kv = js
            .get_key_value(subjects.bucket(patchbay_contract::subjects::Bucket::Config))
            .await
            .unwrap();
        let raw = kv
            .get(patchbay_contract::config_keys::channel(channel_id))
            .await
            .unwrap()
            .expect("the channel is in the config bucket");
        let record: patchbay_contract::ChannelRecord = serde_json::from_slice(&raw).unwrap();
        patchbay_platform::ingress::open_credentials(
            &self.config.require_master_key().unwrap(),
            &record,
        )
        .unwrap()
    }

    /// Stops one service (split layout) and waits until it stopped cleanly.
    pub async fn stop(&mut self, service: &str) {
        let idx = self
            .running
            .iter()
            .position(|(n, _)| *n == service)
            .unwrap_or_else(|| panic!("{service} is not running"));
        let (_, r) = self.running.remove(idx);
        r.stop()
            .await
            .unwrap_or_else(|e| panic!("{service} stops cleanly: {e}"));
    }

    /// Starts a stopped service again (split layout), or every service (`patchbay`, the
    /// all-in-one layout), with the stack's configuration as it is now.
    pub async fn restart(&mut self, service: &'static str) {
        let starts = match service {
            "patchbay" => patchbay::all(),
            name => vec![patchbay::by_name(name).unwrap()],
        };
        let r = self.launch(service, &starts).await;
        self.running.push((service, r));
    }

    /// Runs `patchbay master-key reseal` (`--check` when `check`) with the stack's
    /// configuration, as the migrate Job's NATS user.
    pub async fn reseal(&self, check: bool) -> patchbay::reseal::Report {
        let mut config = self.config.clone();
        config.nats_password = Some(self.nats_auth.password_of(Role::Migrate));
        patchbay::reseal::reseal(&config, check)
            .await
            .expect("the reseal pass runs")
    }

    /// Starts one more replica of `service` (split layout), as another pod would.
    pub async fn add_replica(&mut self, service: &'static str) {
        assert_eq!(self.layout, Layout::Split, "replicas need the split layout");
        let start = patchbay::by_name(service).unwrap();
        let r = self.launch(service, &[start]).await;
        self.running.push((service, r));
    }

    /// The live members of the consumer group `consumer`, each with the partitions it runs,
    /// as they publish themselves in the members bucket.
    pub async fn group_members(&self, consumer: &str) -> Vec<Vec<u32>> {
        let js = async_nats::jetstream::new(self.raw_nats().await);
        let bucket = patchbay_contract::Subjects::new(&self.config.nats_prefix)
            .unwrap()
            .bucket(patchbay_contract::subjects::Bucket::Members);
        let kv = js.get_key_value(bucket).await.unwrap();
        let mut keys = kv.keys().await.unwrap();
        let mut out = Vec::new();
        while let Some(key) = futures::StreamExt::next(&mut keys).await {
            let key = key.unwrap();
            if !key.starts_with(&format!("{consumer}.")) {
                continue;
            }
            if let Some(v) = kv.get(&key).await.unwrap() {
                let record: Value = serde_json::from_slice(&v).unwrap();
                out.push(serde_json::from_value(record["owns"].clone()).unwrap());
            }
        }
        out
    }

    /// Stops everything, each service cleanly.
    pub async fn shutdown(mut self) {
        for (name, r) in self.running.drain(..) {
            r.stop()
                .await
                .unwrap_or_else(|e| panic!("{name} stops cleanly: {e}"));
        }
    }

    /// `POST` JSON with a Bearer token; returns status and JSON body.
    pub async fn post(&self, url: &str, bearer: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(url)
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Calls the API: `method` on `path` (under the API's base URL), with an optional Bearer
    /// token and JSON body; returns status and JSON body (`Null` when there is none).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        self.call_with(method, path, bearer, &[], body).await
    }

    /// [`Stack::call`] with a JSON body and extra headers (`Idempotency-Key`).
    pub async fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        bearer: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> (u16, Value) {
        self.call_with(method, path, Some(bearer), headers, Some(body))
            .await
    }

    async fn call_with(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(
            method.to_uppercase().parse().unwrap(),
            format!("{}{path}", self.api_url()),
        );
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The operator token.
    pub fn admin_token(&self) -> &str {
        self.config.admin_token.as_deref().unwrap()
    }

    /// Channel `channel_id` of bot `bot_id` as the admin API shows it, once its setup at the
    /// platform (`setup.state`) is `state`.
    pub async fn channel_in_setup_state(
        &self,
        bot_id: &str,
        channel_id: &str,
        state: &str,
    ) -> Value {
        let path = format!("/admin/v1/bots/{bot_id}/channels/{channel_id}");
        eventually(TIMEOUT, &format!("the channel's setup {state}"), || async {
            let (status, v) = self
                .call("GET", &path, Some(self.admin_token()), None)
                .await;
            assert_eq!(status, 200, "{v}");
            (v["setup"]["state"] == state).then_some(v)
        })
        .await
    }

    /// Creates a bot calling the fake tenant, with a Telegram channel on the fake Telegram API.
    pub async fn bot(&self) -> TestBot {
        self.bot_with_events(None).await
    }

    /// [`Stack::bot`] with explicit event subscriptions.
    pub async fn bot_with_events(&self, events: Option<Vec<&str>>) -> TestBot {
        self.bot_for(&self.tenant.url(), events).await
    }

    /// A bot whose callback is `url`, with a Telegram channel on the fake Telegram API.
    pub async fn bot_for(&self, url: &str, events: Option<Vec<&str>>) -> TestBot {
        self.bot_of(None, url, events, "native").await
    }

    /// A bot of tenant `tenant_id` calling the fake tenant, with a Telegram channel.
    pub async fn bot_in(&self, tenant_id: &str) -> TestBot {
        self.bot_of(Some(tenant_id), &self.tenant.url(), None, "native")
            .await
    }

    /// A bot calling the fake tenant with callbacks of `flavour` (`native`, `brandchat`), with a
    /// Telegram channel.
    pub async fn bot_with_flavour(&self, flavour: &str) -> TestBot {
        self.bot_of(None, &self.tenant.url(), None, flavour).await
    }

    async fn bot_of(
        &self,
        tenant_id: Option<&str>,
        url: &str,
        events: Option<Vec<&str>>,
        flavour: &str,
    ) -> TestBot {
        let body = json!({"name": "Test bot", "tenant_id": tenant_id,
                          "webhook": {"url": url, "flavour": flavour, "events": events}});
        let mut attempts = 0;
        let (status, bot) = loop {
            let (status, bot) = self
                .post(
                    &format!("{}/admin/v1/bots", self.api_url()),
                    self.admin_token(),
                    &body,
                )
                .await;
            // 503 says "retry shortly": a test with a short publish timeout (backpressure)
            // can meet it on a loaded machine before its test has begun.
            attempts += 1;
            if status != 503 || attempts == 5 {
                break (status, bot);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        assert_eq!(status, 201, "create bot: {bot}");
        let id = bot["id"].as_str().unwrap().to_owned();
        let bot_token = format!(
            "{}:AAH{}",
            100_000 + self.telegram.calls().len(),
            patchbay_testkit::unique_prefix()
        );
        let secret_token = format!("sec_{}", patchbay_testkit::unique_prefix());
        self.telegram.add_bot(&bot_token);
        let ch = self
            .add_channel(
                &id,
                json!({"platform": "telegram",
                        "credentials": {"bot_token": bot_token, "secret_token": secret_token},
                        "api_base_url": self.telegram.base_url()}),
            )
            .await;
        TestBot {
            id,
            api_key: bot["api_key"].as_str().unwrap().to_owned(),
            webhook_secret: bot["webhook_secret"].as_str().unwrap().to_owned(),
            channel_id: ch["id"].as_str().unwrap().to_owned(),
            webhook_path: ch["webhook_path"].as_str().unwrap().to_owned(),
            secret_token,
            bot_token,
        }
    }

    /// Connects bot `bot_id` to a messenger account through the admin API (`request`: platform,
    /// credentials, `api_base_url`), which must answer 201; the created channel.
    async fn add_channel(&self, bot_id: &str, request: Value) -> Value {
        let (status, ch) = self
            .post(
                &format!("{}/admin/v1/bots/{bot_id}/channels", self.api_url()),
                self.admin_token(),
                &request,
            )
            .await;
        assert_eq!(status, 201, "create channel: {ch}");
        ch
    }

    async fn create_bot(
        &self,
        tenant_id: Option<&str>,
        url: &str,
        events: Option<Vec<&str>>,
    ) -> Value {
        let (status, bot) = self
            .post(
                &format!("{}/admin/v1/bots", self.api_url()),
                self.admin_token(),
                &json!({"name": "Test bot", "tenant_id": tenant_id,
                        "webhook": {"url": url, "flavour": "native", "events": events}}),
            )
            .await;
        assert_eq!(status, 201, "create bot: {bot}");
        bot
    }

    /// A bot calling the fake tenant with a Messenger channel for `page_id` (or, with
    /// `app_secret`, a channel of that Meta app) on the fake Graph API.
    pub async fn messenger_bot(
        &self,
        page_id: &str,
        app_secret: &str,
        events: Option<Vec<&str>>,
    ) -> MetaBot {
        let token = format!("EAAB{}", patchbay_testkit::unique_prefix());
        self.graph.add_page(page_id, &token);
        let creds = json!({"page_id": page_id, "page_access_token": token,
                           "app_secret": app_secret, "verify_token": format!("vt-{page_id}")});
        self.meta_bot("messenger", creds, page_id, &token, app_secret, events)
            .await
    }

    /// A bot calling the fake tenant with a WhatsApp channel for `phone_number_id`.
    pub async fn whatsapp_bot(
        &self,
        phone_number_id: &str,
        app_secret: &str,
        events: Option<Vec<&str>>,
    ) -> MetaBot {
        let (token, creds) = self.whatsapp_number(phone_number_id, app_secret);
        self.meta_bot(
            "whatsapp",
            creds,
            phone_number_id,
            &token,
            app_secret,
            events,
        )
        .await
    }

    /// A business number on the fake Graph API: its access token and the channel credentials.
    fn whatsapp_number(&self, phone_number_id: &str, app_secret: &str) -> (String, Value) {
        let token = format!("EAAG{}", patchbay_testkit::unique_prefix());
        self.graph.add_phone_number(phone_number_id, &token);
        let creds = json!({"phone_number_id": phone_number_id, "access_token": token,
                           "app_secret": app_secret,
                           "verify_token": format!("vt-{phone_number_id}")});
        (token, creds)
    }

    /// [`Stack::whatsapp_bot`] with the bot named `name` (Web1on1 payloads name their
    /// organisation by the bot's name).
    pub async fn whatsapp_bot_named(
        &self,
        name: &str,
        phone_number_id: &str,
        app_secret: &str,
    ) -> MetaBot {
        let (token, creds) = self.whatsapp_number(phone_number_id, app_secret);
        let (status, bot) = self
            .post(
                &format!("{}/admin/v1/bots", self.api_url()),
                self.admin_token(),
                &json!({"name": name, "webhook": {"url": self.tenant.url(), "flavour": "native"}}),
            )
            .await;
        assert_eq!(status, 201, "create bot: {bot}");
        self.meta_channel(bot, "whatsapp", creds, phone_number_id, &token, app_secret)
            .await
    }

    async fn meta_bot(
        &self,
        platform: &str,
        credentials: Value,
        route_id: &str,
        token: &str,
        app_secret: &str,
        events: Option<Vec<&str>>,
    ) -> MetaBot {
        let bot = self.create_bot(None, &self.tenant.url(), events).await;
        self.meta_channel(bot, platform, credentials, route_id, token, app_secret)
            .await
    }

    /// Adds a WhatsApp channel for `phone_number_id` to `bot` (a bot on several platforms).
    pub async fn whatsapp_channel_of(
        &self,
        bot: &TestBot,
        phone_number_id: &str,
        app_secret: &str,
    ) -> MetaBot {
        let (token, creds) = self.whatsapp_number(phone_number_id, app_secret);
        let record = json!({"id": bot.id, "api_key": bot.api_key,
                            "webhook_secret": bot.webhook_secret});
        self.meta_channel(
            record,
            "whatsapp",
            creds,
            phone_number_id,
            &token,
            app_secret,
        )
        .await
    }

    async fn meta_channel(
        &self,
        bot: Value,
        platform: &str,
        credentials: Value,
        route_id: &str,
        token: &str,
        app_secret: &str,
    ) -> MetaBot {
        let id = bot["id"].as_str().unwrap().to_owned();
        let ch = self
            .add_channel(
                &id,
                json!({"platform": platform, "credentials": credentials,
                        "api_base_url": self.graph.base_url()}),
            )
            .await;
        MetaBot {
            id,
            api_key: bot["api_key"].as_str().unwrap().to_owned(),
            webhook_secret: bot["webhook_secret"].as_str().unwrap().to_owned(),
            channel_id: ch["id"].as_str().unwrap().to_owned(),
            webhook_path: ch["webhook_path"].as_str().unwrap().to_owned(),
            route_id: route_id.to_owned(),
            token: token.to_owned(),
            app_secret: app_secret.to_owned(),
            verify_token: credentials["verify_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Posts `body` to `path` of the `platform`'s ingress as Meta would, signed with
    /// `app_secret` (unsigned with `None`); returns the status.
    pub async fn post_meta(
        &self,
        platform: &str,
        path: &str,
        app_secret: Option<&str>,
        body: &Value,
    ) -> u16 {
        let raw = serde_json::to_vec(body).unwrap();
        let mut req = self
            .http
            .post(format!(
                "{}{path}",
                self.addr_of(&format!("ingress-{platform}"))
            ))
            .header("content-type", "application/json");
        if let Some(secret) = app_secret {
            req = req.header(
                "X-Hub-Signature-256",
                format!(
                    "sha256={}",
                    patchbay_testkit::fixtures::meta_signature(secret, &raw)
                ),
            );
        }
        req.body(raw).send().await.unwrap().status().as_u16()
    }

    /// Meta's `GET` verification of `path` with `verify_token`: status and body.
    pub async fn meta_handshake(
        &self,
        platform: &str,
        path: &str,
        verify_token: &str,
    ) -> (u16, String) {
        let r = self
            .http
            .get(format!(
                "{}{path}?hub.mode=subscribe&hub.verify_token={verify_token}&hub.challenge=1158201444",
                self.addr_of(&format!("ingress-{platform}"))
            ))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    /// A bot calling the fake tenant with a WeChat channel (its own AppID on the fake, Token
    /// and EncodingAESKey of the official samples).
    pub async fn wechat_bot(&self, events: Option<Vec<&str>>) -> WechatBot {
        self.wechat_bot_with(events, true).await
    }

    /// [`Stack::wechat_bot`], for an account with or without the customer-service API.
    pub async fn wechat_bot_with(
        &self,
        events: Option<Vec<&str>>,
        customer_service_api: bool,
    ) -> WechatBot {
        let tail: String = patchbay_testkit::unique_prefix().chars().take(16).collect();
        let app_id = format!("wx{tail:0<16}");
        let secret = format!("sec{}", patchbay_testkit::unique_prefix());
        self.wechat.add_app(&app_id, &secret);
        let creds = json!({"app_id": app_id, "app_secret": secret,
                           "token": patchbay_wechat::fixtures::TOKEN,
                           "encoding_aes_key": patchbay_wechat::fixtures::AES_KEY,
                           "customer_service_api": customer_service_api});
        let bot = self.create_bot(None, &self.tenant.url(), events).await;
        let id = bot["id"].as_str().unwrap().to_owned();
        let ch = self
            .add_channel(
                &id,
                json!({"platform": "wechat", "credentials": creds,
                        "api_base_url": self.wechat.base_url()}),
            )
            .await;
        WechatBot {
            id,
            api_key: bot["api_key"].as_str().unwrap().to_owned(),
            webhook_secret: bot["webhook_secret"].as_str().unwrap().to_owned(),
            channel_id: ch["id"].as_str().unwrap().to_owned(),
            webhook_path: ch["webhook_path"].as_str().unwrap().to_owned(),
            app_id,
            token: patchbay_wechat::fixtures::TOKEN.to_owned(),
        }
    }

    /// Posts `xml` to the bot's WeChat webhook as WeChat would in `mode`, signed with `token`;
    /// returns the status and the body answered.
    pub async fn post_wechat(
        &self,
        bot: &WechatBot,
        token: &str,
        mode: WechatMode,
        xml: &str,
    ) -> (u16, String) {
        use patchbay_wechat::fixtures as fx;
        let (timestamp, nonce) = (chrono::Utc::now().timestamp().to_string(), "1320562132");
        let (body, query) = match mode {
            WechatMode::Plain => (
                xml.to_owned(),
                fx::query(token, &timestamp, nonce, fx::OPENID),
            ),
            WechatMode::Compatible | WechatMode::Safe => fx::encrypted(
                xml,
                token,
                &bot.app_id,
                fx::AES_KEY,
                &timestamp,
                nonce,
                mode == WechatMode::Compatible,
            ),
        };
        let url = reqwest::Url::parse_with_params(
            &format!("{}{}", self.addr_of("ingress-wechat"), bot.webhook_path),
            &query,
        )
        .unwrap();
        let r = self
            .http
            .post(url)
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    /// WeChat's `GET` check of the server configuration, signed with `token`.
    pub async fn wechat_handshake(&self, bot: &WechatBot, token: &str) -> (u16, String) {
        let mut query = patchbay_wechat::fixtures::query(token, "1409735669", "1320562132", "");
        query.retain(|(k, _)| k != "openid");
        query.push(("echostr".into(), "5838479218127813673".into()));
        let url = reqwest::Url::parse_with_params(
            &format!("{}{}", self.addr_of("ingress-wechat"), bot.webhook_path),
            &query,
        )
        .unwrap();
        let r = self.http.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    /// A bot calling the fake tenant with a Kik channel (its own bot username and API key on
    /// the fake Kik API).
    pub async fn kik_bot(&self, events: Option<Vec<&str>>) -> KikBot {
        let username = format!("pb.{}", patchbay_testkit::unique_prefix());
        let kik_api_key = format!("key-{}", patchbay_testkit::unique_prefix());
        self.kik.add_bot(&username, &kik_api_key);
        let bot = self.create_bot(None, &self.tenant.url(), events).await;
        let id = bot["id"].as_str().unwrap().to_owned();
        let ch = self
            .add_channel(
                &id,
                json!({"platform": "kik",
                        "credentials": {"username": username, "api_key": kik_api_key},
                        "api_base_url": self.kik.base_url()}),
            )
            .await;
        KikBot {
            id,
            api_key: bot["api_key"].as_str().unwrap().to_owned(),
            webhook_secret: bot["webhook_secret"].as_str().unwrap().to_owned(),
            channel_id: ch["id"].as_str().unwrap().to_owned(),
            webhook_path: ch["webhook_path"].as_str().unwrap().to_owned(),
            username,
            kik_api_key,
        }
    }

    /// Posts `messages` to the bot's Kik webhook as Kik would: `{"messages": [...]}`, named
    /// for the bot in `X-Kik-Username` and signed with its API key; returns the status. The
    /// senders of messages (not receipts or typing) have chatted with the bot: the fake Kik
    /// lets it message them, and refills their message bank by one.
    pub async fn post_kik(&self, bot: &KikBot, messages: Vec<Value>) -> u16 {
        for m in &messages {
            let from = m["from"].as_str();
            let kind = m["type"].as_str().unwrap_or_default();
            if let Some(from) = from
                && !matches!(kind, "delivery-receipt" | "read-receipt" | "is-typing")
            {
                self.kik.add_user(&bot.username, from);
            }
        }
        self.post_kik_as(
            bot,
            &bot.username,
            &bot.kik_api_key,
            &json!({ "messages": messages }),
        )
        .await
    }

    /// Posts `body` to the bot's Kik webhook with `username` in `X-Kik-Username`, signed with
    /// `key`; returns the status.
    pub async fn post_kik_as(&self, bot: &KikBot, username: &str, key: &str, body: &Value) -> u16 {
        let raw = serde_json::to_vec(body).unwrap();
        self.http
            .post(format!(
                "{}{}",
                self.addr_of("ingress-kik"),
                bot.webhook_path
            ))
            .header("content-type", "application/json")
            .header("X-Kik-Username", username)
            .header(
                "X-Kik-Signature",
                patchbay_kik::fixtures::signature(key, &raw),
            )
            .body(raw)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A bot calling the fake tenant with a Viber channel (its own auth token on the fake
    /// Viber API); `extra` adds credentials (`sender_name`, `sender_avatar`).
    pub async fn viber_bot(&self, events: Option<Vec<&str>>, extra: Value) -> ViberBot {
        let auth_token = format!(
            "{}-{}",
            patchbay_testkit::unique_prefix(),
            patchbay_testkit::unique_prefix()
        );
        self.viber.add_bot(&auth_token, "Viber Test Bot");
        let bot = self.create_bot(None, &self.tenant.url(), events).await;
        let id = bot["id"].as_str().unwrap().to_owned();
        let mut credentials = json!({ "auth_token": auth_token });
        if let (Some(c), Value::Object(e)) = (credentials.as_object_mut(), extra) {
            c.extend(e);
        }
        let ch = self
            .add_channel(
                &id,
                json!({"platform": "viber", "credentials": credentials,
                        "api_base_url": self.viber.base_url()}),
            )
            .await;
        let channel_id = ch["id"].as_str().unwrap().to_owned();
        // Viber sends nothing for a bot without a webhook: wait until outbound-viber set it
        // (through the check callback the fake posts to the ingress).
        let webhook = format!(
            "{}{}",
            self.config.public_url.trim_end_matches('/'),
            ch["webhook_path"].as_str().unwrap()
        );
        eventually(WAIT, "the Viber webhook set", || async {
            (self.viber.webhook(&auth_token).as_deref() == Some(webhook.as_str())).then_some(())
        })
        .await;
        ViberBot {
            id,
            api_key: bot["api_key"].as_str().unwrap().to_owned(),
            webhook_secret: bot["webhook_secret"].as_str().unwrap().to_owned(),
            channel_id,
            webhook_path: ch["webhook_path"].as_str().unwrap().to_owned(),
            auth_token,
        }
    }

    /// Posts `callback` to the bot's Viber webhook as Viber would (signed with its auth
    /// token); returns the status and the body answered. A user who writes or subscribes
    /// becomes a subscriber at the fake Viber (the bot may message them); one who
    /// unsubscribes stops being one.
    pub async fn post_viber(&self, bot: &ViberBot, callback: &Value) -> (u16, String) {
        let user = callback
            .pointer("/sender/id")
            .or_else(|| callback.pointer("/user/id"))
            .or_else(|| callback.get("user_id"))
            .and_then(Value::as_str);
        if let Some(user) = user {
            match callback["event"].as_str().unwrap_or_default() {
                "message" | "subscribed" => self.viber.add_subscriber(&bot.auth_token, user),
                "unsubscribed" => self.viber.remove_subscriber(&bot.auth_token, user),
                _ => {}
            }
        }
        let raw = serde_json::to_vec(callback).unwrap();
        let signature = patchbay_viber::fixtures::signature(&bot.auth_token, &raw);
        self.post_viber_signed(bot, &signature, raw).await
    }

    /// Posts `raw` to the bot's Viber webhook with `signature`; returns status and body.
    pub async fn post_viber_signed(
        &self,
        bot: &ViberBot,
        signature: &str,
        raw: Vec<u8>,
    ) -> (u16, String) {
        let r = self
            .http
            .post(format!(
                "{}{}",
                self.addr_of("ingress-viber"),
                bot.webhook_path
            ))
            .header("content-type", "application/json")
            .header("X-Viber-Content-Signature", signature)
            .body(raw)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    /// A bot calling the fake tenant with a LINE channel (its own channel secret and access
    /// token on the fake LINE API).
    pub async fn line_bot(&self, events: Option<Vec<&str>>) -> LineBot {
        let channel_secret = format!("secret-{}", patchbay_testkit::unique_prefix());
        let access_token = format!("token-{}", patchbay_testkit::unique_prefix());
        self.line.add_channel(&access_token);
        let bot = self.create_bot(None, &self.tenant.url(), events).await;
        let id = bot["id"].as_str().unwrap().to_owned();
        let ch = self
            .add_channel(
                &id,
                json!({"platform": "line",
                        "credentials": {"channel_secret": channel_secret,
                                        "channel_access_token": access_token},
                        "api_base_url": self.line.base_url()}),
            )
            .await;
        LineBot {
            id,
            api_key: bot["api_key"].as_str().unwrap().to_owned(),
            webhook_secret: bot["webhook_secret"].as_str().unwrap().to_owned(),
            channel_id: ch["id"].as_str().unwrap().to_owned(),
            webhook_path: ch["webhook_path"].as_str().unwrap().to_owned(),
            channel_secret,
            access_token,
        }
    }

    /// Posts `events` to the bot's LINE webhook as LINE would: `{"destination", "events"}`
    /// signed with the channel secret; returns the status. What the events tell, the fake LINE
    /// learns first: a user who follows or writes one to one is a friend, a member who writes
    /// in a group or room is in it, and each `replyToken` is issued.
    pub async fn post_line(&self, bot: &LineBot, events: Vec<Value>) -> u16 {
        for e in &events {
            let source = &e["source"];
            let user = source["userId"].as_str();
            let chat = source["groupId"].as_str().or(source["roomId"].as_str());
            match (chat, user, e["type"].as_str().unwrap_or_default()) {
                (_, Some(u), "unfollow") => self.line.block(&bot.access_token, u),
                (None, Some(u), _) => self.line.add_friend(&bot.access_token, u),
                (Some(c), Some(u), _) => self.line.add_member(&bot.access_token, c, u),
                (Some(c), None, _) => self.line.add_chat(&bot.access_token, c),
                (None, None, _) => {}
            }
            if let Some(t) = e["replyToken"].as_str() {
                self.line.issue_reply_token(&bot.access_token, t);
            }
        }
        let body = patchbay_line::fixtures::post(events);
        self.post_line_as(bot, Some(&bot.channel_secret), &body)
            .await
    }

    /// Posts `body` to the bot's LINE webhook signed with `secret` (unsigned: `None`);
    /// returns the status.
    pub async fn post_line_as(&self, bot: &LineBot, secret: Option<&str>, body: &Value) -> u16 {
        let raw = serde_json::to_vec(body).unwrap();
        let mut request = self
            .http
            .post(format!(
                "{}{}",
                self.addr_of("ingress-line"),
                bot.webhook_path
            ))
            .header("content-type", "application/json");
        if let Some(secret) = secret {
            request = request.header(
                "x-line-signature",
                patchbay_line::fixtures::signature(secret, &raw),
            );
        }
        request.body(raw).send().await.unwrap().status().as_u16()
    }

    /// Posts a Telegram update to the bot's webhook with `secret` in the secret header.
    pub async fn post_update_with(
        &self,
        bot: &TestBot,
        secret: Option<&str>,
        body: Vec<u8>,
    ) -> u16 {
        // The user behind the update has started the bot: the fake Telegram lets this bot's
        // token (and only it) write to their chat from now on.
        if let Some(chat) = serde_json::from_slice(&body)
            .ok()
            .as_ref()
            .and_then(fixtures::update_chat_id)
        {
            self.telegram.open_chat(&bot.bot_token, chat);
        }
        let mut req = self
            .http
            .post(format!("{}{}", self.ingress_url(), bot.webhook_path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = secret {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        req.send().await.unwrap().status().as_u16()
    }

    /// Posts a Telegram update as Telegram would; returns the status.
    pub async fn post_update(&self, bot: &TestBot, update: &Value) -> u16 {
        self.post_update_with(
            bot,
            Some(&bot.secret_token),
            serde_json::to_vec(update).unwrap(),
        )
        .await
    }

    /// A raw NATS client on the stack's server (not the project's bus crate), as the test's
    /// own user that may do anything (an operator's).
    pub async fn raw_nats(&self) -> async_nats::Client {
        async_nats::ConnectOptions::with_user_and_password(
            self.nats_auth.observer.0.clone(),
            self.nats_auth.observer.1.clone(),
        )
        .connect(self.nats.url())
        .await
        .unwrap()
    }

    /// A raw NATS client connected as `role`'s user, with its inbox prefix.
    pub async fn nats_as(&self, role: Role) -> async_nats::Client {
        let subjects = patchbay_contract::Subjects::new(&self.config.nats_prefix).unwrap();
        async_nats::ConnectOptions::with_user_and_password(
            role.user(&subjects),
            self.nats_auth.password_of(role),
        )
        .custom_inbox_prefix(role.inbox_prefix(&subjects))
        .connect(self.nats.url())
        .await
        .unwrap()
    }

    /// The last sequence of every stream: how many messages were ever stored in each.
    pub async fn stream_sequences(&self) -> Vec<(String, u64)> {
        let js = async_nats::jetstream::new(self.raw_nats().await);
        let mut out = Vec::new();
        for s in patchbay_contract::subjects::Stream::ALL {
            let name = patchbay_contract::Subjects::new(&self.config.nats_prefix)
                .unwrap()
                .stream(s);
            let mut stream = js.get_stream(&name).await.unwrap();
            out.push((name, stream.info().await.unwrap().state.last_sequence));
        }
        out
    }

    /// Messages held now and the last sequence ever stored, of one stream.
    pub async fn stream_state(&self, stream: patchbay_contract::subjects::Stream) -> (u64, u64) {
        let js = async_nats::jetstream::new(self.raw_nats().await);
        let name = patchbay_contract::Subjects::new(&self.config.nats_prefix)
            .unwrap()
            .stream(stream);
        let mut s = js.get_stream(&name).await.unwrap();
        let state = s.info().await.unwrap().state.clone();
        (state.messages, state.last_sequence)
    }

    /// Waits until the bot-router has taken every inbound event there is (the work-queue
    /// stream is empty once they are all acknowledged): a barrier for "was it dropped?".
    pub async fn router_idle(&self) {
        eventually(WAIT, "the router took every inbound event", || async {
            // Ingress first: once it is empty, what it held is in the inbound stream or done.
            let (ingress, _) = self
                .stream_state(patchbay_contract::subjects::Stream::Ingress)
                .await;
            let (held, _) = self
                .stream_state(patchbay_contract::subjects::Stream::Inbound)
                .await;
            (held == 0 && ingress == 0).then_some(())
        })
        .await;
    }

    /// Waits for `n` `message.received` callbacks and returns their texts in arrival order.
    pub async fn received_texts(&self, n: usize) -> Vec<Value> {
        self.events_of("message.received", n)
            .await
            .iter()
            .map(|r| r.json()["message"]["content"]["text"].clone())
            .collect()
    }

    /// Waits for `n` callbacks whose type is `event_type`.
    pub async fn events_of(
        &self,
        event_type: &str,
        n: usize,
    ) -> Vec<patchbay_testkit::tenant::Received> {
        eventually(WAIT, &format!("{n} {event_type} events"), || async {
            let got: Vec<_> = self
                .tenant
                .received()
                .into_iter()
                .filter(|r| r.json()["type"] == event_type)
                .collect();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// Default wait for asynchronous outcomes.
pub const TIMEOUT: Duration = WAIT;

/// A request with a raw JSON body (absent for `GET` and `DELETE`), as another system's client
/// sends it, with `bearer` as `Authorization: Bearer` if given; the status and the JSON answer
/// (null when it is none).
pub async fn raw_json(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let client = patchbay_testkit::http_client();
    let mut req = match method {
        "GET" => client.get(url),
        "DELETE" => client.delete(url),
        _ => client
            .post(url)
            .header("content-type", "application/json")
            .body(body.unwrap_or("").to_owned()),
    };
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
