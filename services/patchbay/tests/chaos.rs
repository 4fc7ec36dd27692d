//! Chaos tests with real processes: every service runs as its own `patchbay service <name>`
//! process against a real nats-server and PostgreSQL, a stream of numbered messages flows
//! across many conversations, and faults are injected for real (SIGKILL, a NATS restart, a
//! flaky platform). Every platform the suite can drive is driven at once: the conversations
//! are spread over a Telegram bot, a WeChat bot, a Kik bot, a Viber bot and a LINE bot (several
//! bots take the platforms in turn), each with credentials of its own on its fake API (see [`Platform`]). At the end, counted like
//! NATS's own chaos test, at the fake tenant and the fake platform APIs: none lost, no event
//! delivered under two `webhook-id`s, order kept per conversation. Every bot has its own
//! credentials, which its fake accepts only for that bot's users (a Telegram token for its
//! chats, a WeChat AppID's access token for its followers' OpenIDs, a Kik bot's username and
//! API key for the users who chatted with it, a Viber bot's auth token for its subscribers, a
//! LINE channel's access token for its friends), so a reply sent with the
//! wrong credentials is refused (and counted); each accepted reply is also checked against the
//! conversation's own bot, platform and recipient. The messages go out in waves, one more than
//! there are faults: each fault fires once the tenant has seen half of the wave in flight (on
//! progress, never after a fixed sleep), and the next wave is released as it fires, so every
//! fault meets work in flight and traffic that follows it; the run checks both.
//!
//! Size: `PATCHBAY_CHAOS_SCALE` (default 1: 20 conversations × 15 messages, a few minutes for
//! the whole file); `make chaos` runs with 10.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use patchbay_kik::fixtures as kik_fx;
use patchbay_line::fixtures as line_fx;
use patchbay_telegram::fixtures as telegram_fx;
use patchbay_testkit::eventually;
use patchbay_testkit::kik::{FakeKik, MESSAGE_PATH as KIK_SEND_PATH, USER_PATH as KIK_USER_PATH};
use patchbay_testkit::line::{
    FakeLine, GROUP_PATH as LINE_GROUP_PATH, MULTICAST_PATH as LINE_MULTICAST_PATH,
    PROFILE_PATH as LINE_PROFILE_PATH, PUSH_PATH as LINE_PUSH_PATH, REPLY_PATH as LINE_REPLY_PATH,
};
use patchbay_testkit::nats::{NatsCluster, NatsServer};
use patchbay_testkit::postgres::PgServer;
use patchbay_testkit::process::{Guarded, spawn};
use patchbay_testkit::telegram::FakeTelegram;
use patchbay_testkit::tenant::FakeTenant;
use patchbay_testkit::unique_prefix;
use patchbay_testkit::viber::{FakeViber, SEND_PATH as VIBER_SEND_PATH};
use patchbay_testkit::wechat::{CUSTOM_SEND_PATH, FakeWechat};
use patchbay_viber::fixtures as viber_fx;
use patchbay_wechat::fixtures as wechat_fx;
use serde_json::{Value, json};

/// A messenger the runs drive. Each has its own ingress and sender processes, a fake API in
/// the [`Cluster`], bots with credentials of their own ([`Cluster::create_bot_for`]), webhooks
/// as the platform posts them ([`ChaosBot::webhook`]) and replies as its fake recorded them
/// ([`Platform::replies`]). Another messenger is one more variant and its arms in those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Platform {
    Telegram,
    Wechat,
    Kik,
    Viber,
    Line,
}

impl Platform {
    const ALL: [Platform; 5] = [
        Platform::Telegram,
        Platform::Wechat,
        Platform::Kik,
        Platform::Viber,
        Platform::Line,
    ];

    /// The run's `b`-th bot is on this platform: they take the platforms in turn.
    fn of_bot(b: i64) -> Self {
        Self::ALL[usize::try_from(b).unwrap() % Self::ALL.len()]
    }

    /// The platform's name in the API.
    fn name(self) -> &'static str {
        match self {
            Self::Telegram => "telegram",
            Self::Wechat => "wechat",
            Self::Kik => "kik",
            Self::Viber => "viber",
            Self::Line => "line",
        }
    }

    fn ingress(self) -> &'static str {
        match self {
            Self::Telegram => "ingress-telegram",
            Self::Wechat => "ingress-wechat",
            Self::Kik => "ingress-kik",
            Self::Viber => "ingress-viber",
            Self::Line => "ingress-line",
        }
    }

    fn outbound(self) -> &'static str {
        match self {
            Self::Telegram => "outbound-telegram",
            Self::Wechat => "outbound-wechat",
            Self::Kik => "outbound-kik",
            Self::Viber => "outbound-viber",
            Self::Line => "outbound-line",
        }
    }

    /// The user (and recipient) id of conversation `chat` on this platform.
    fn recipient(self, chat: i64) -> String {
        match self {
            Self::Telegram => chat_id(chat).to_string(),
            Self::Wechat => openid(chat),
            Self::Kik => kik_user(chat),
            Self::Viber => viber_user(chat),
            Self::Line => line_user(chat),
        }
    }

    /// How many of a user's messages may wait for the bot's reply at once, if the platform
    /// limits it. WeChat allows five customer-service messages per message from the user,
    /// counted since the user's latest message, and Patchbay refuses the rest as
    /// `rate_limited` before calling WeChat: replies that lag more than five behind a user
    /// who keeps writing are refused by the platform's rules, whichever message they answer.
    /// So a WeChat user here waits for the reply to their message `n - 5` before writing
    /// message `n`: at most five replies can then be stored after any of their messages.
    /// Kik's message bank is set large enough for the whole run ([`Cluster::create_bot_for`]).
    fn unanswered_max(self) -> Option<i64> {
        match self {
            Self::Telegram | Self::Kik | Self::Viber | Self::Line => None,
            Self::Wechat => patchbay_wechat::WINDOW.per_inbound.map(i64::from),
        }
    }

    /// The replies the platform's fake accepted, in the order they arrived.
    fn replies(self, c: &Cluster) -> Vec<Reply> {
        match self {
            Self::Telegram => c
                .telegram
                .accepted("sendMessage")
                .into_iter()
                .map(|call| Reply {
                    text: call.body["text"].as_str().unwrap_or_default().to_owned(),
                    to: call.body["chat_id"].to_string(),
                    by: call.token,
                })
                .collect(),
            Self::Wechat => c
                .wechat
                .accepted(CUSTOM_SEND_PATH)
                .into_iter()
                .map(|call| Reply {
                    text: call.body["text"]["content"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    to: call.body["touser"].as_str().unwrap_or_default().to_owned(),
                    by: call.app_id.unwrap_or_default(),
                })
                .collect(),
            // A send may carry several messages: each is a reply.
            Self::Kik => c
                .kik
                .accepted(KIK_SEND_PATH)
                .into_iter()
                .flat_map(|call| {
                    let by = call.username.unwrap_or_default();
                    call.body["messages"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |m| Reply {
                            text: m["body"].as_str().unwrap_or_default().to_owned(),
                            to: m["to"].as_str().unwrap_or_default().to_owned(),
                            by: by.clone(),
                        })
                })
                .collect(),
            Self::Viber => c
                .viber
                .calls_to(VIBER_SEND_PATH)
                .into_iter()
                .filter(|call| call.status == Some(0))
                .map(|call| Reply {
                    text: call.body["text"].as_str().unwrap_or_default().to_owned(),
                    to: call.body["receiver"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    by: call.token.unwrap_or_default(),
                })
                .collect(),
            // Replies (with a reply token, which names its chat here: [`ChaosBot::webhook`]),
            // pushes and multicasts (each friend reached), each of up to five messages.
            Self::Line => c
                .line
                .calls()
                .into_iter()
                .filter(|call| {
                    call.status == 200
                        && (call.path == LINE_REPLY_PATH
                            || call.path == LINE_PUSH_PATH
                            || call.path == LINE_MULTICAST_PATH)
                })
                .flat_map(|call| {
                    let by = call.token.unwrap_or_default();
                    let to: Vec<String> = if call.path == LINE_MULTICAST_PATH {
                        call.body["delivered_to"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|u| u.as_str().map(str::to_owned))
                            .collect()
                    } else {
                        vec![call.body["to"].as_str().map_or_else(
                            || {
                                line_token_user(
                                    call.body["replyToken"].as_str().unwrap_or_default(),
                                )
                            },
                            str::to_owned,
                        )]
                    };
                    let messages = call.body["messages"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    to.into_iter().flat_map(move |to| {
                        let by = by.clone();
                        messages.clone().into_iter().map(move |m| Reply {
                            text: m["text"].as_str().unwrap_or_default().to_owned(),
                            to: to.clone(),
                            by: by.clone(),
                        })
                    })
                })
                .collect(),
        }
    }

    /// The calls the platform's fake refused for their credentials: on Telegram 401 (unknown
    /// token) and 403 (a chat whose user did not start that bot); on WeChat 40013 (unknown
    /// AppID), 40003 (an OpenID of another app: sent with the wrong app's token) and 43004
    /// (not a follower of the token's app); on Kik 401 (unknown username or API key), 403 (a
    /// message to a user who never chatted with that bot) and 404 (the profile of such a user);
    /// on Viber status 2 (unknown auth token) and 6 (a message to another bot's subscriber);
    /// on LINE 401 (unknown access token), 400 to a push (not a friend of that channel's bot)
    /// or a reply (a reply token of another channel, or used twice) and 404 (the profile of
    /// another channel's friend).
    fn refused_credentials(self, c: &Cluster) -> Vec<String> {
        match self {
            Self::Telegram => c
                .telegram
                .calls()
                .into_iter()
                .filter(|call| call.status == 401 || call.status == 403)
                .map(|call| format!("telegram {} {}: {}", call.method, call.status, call.body))
                .collect(),
            Self::Wechat => c
                .wechat
                .calls()
                .into_iter()
                // 40001 and 42001 name the app's own token as replaced or expired: token
                // churn, which `one_token_per_app` bounds; these name another app's.
                .filter(|call| [40013, 40003, 43004].contains(&call.errcode))
                .map(|call| format!("wechat {} {}: {}", call.path, call.errcode, call.body))
                .collect(),
            Self::Kik => c
                .kik
                .calls()
                .into_iter()
                .filter(|call| {
                    call.status == 401
                        || (call.status == 403 && call.path == KIK_SEND_PATH)
                        || (call.status == 404 && call.path.starts_with(KIK_USER_PATH))
                })
                .map(|call| {
                    format!(
                        "kik {} {} by {:?}: {}",
                        call.path, call.status, call.username, call.body
                    )
                })
                .collect(),
            Self::Viber => c
                .viber
                .calls()
                .into_iter()
                .filter(|call| matches!(call.status, Some(2 | 6)))
                .map(|call| format!("viber {} {:?}: {}", call.path, call.status, call.body))
                .collect(),
            Self::Line => c
                .line
                .calls()
                .into_iter()
                .filter(|call| {
                    call.status == 401
                        || (call.status == 400
                            && (call.path == LINE_PUSH_PATH || call.path == LINE_REPLY_PATH))
                        || (call.status == 404
                            && (call.path.starts_with(LINE_PROFILE_PATH)
                                || call.path.starts_with(LINE_GROUP_PATH)))
                })
                .map(|call| format!("line {} {}: {}", call.path, call.status, call.body))
                .collect(),
        }
    }

    /// Makes the platform's fake fail a share of sends as the platform does when it is
    /// overloaded: Telegram 10 % 429 (`retry_after` 1 s) and 10 % 500, WeChat 20 % -1 (system
    /// busy), Kik 20 % 500, Viber 20 % 500, LINE 20 % 500.
    fn make_flaky(self, c: &Cluster) {
        match self {
            Self::Telegram => c.telegram.fail_randomly(100, 100),
            Self::Wechat => c.wechat.fail_randomly(200),
            Self::Kik => c.kik.fail_randomly(200),
            Self::Viber => c.viber.fail_randomly(200),
            Self::Line => c.line.fail_randomly(200),
        }
    }

    /// Send calls the platform's fake failed on purpose ([`Platform::make_flaky`]), and all.
    fn flaky_calls(self, c: &Cluster) -> (usize, usize) {
        match self {
            Self::Telegram => {
                let all = c.telegram.calls_of("sendMessage");
                let failed = all.iter().filter(|call| call.status != 200).count();
                (failed, all.len())
            }
            Self::Wechat => {
                let all = c.wechat.calls_to(CUSTOM_SEND_PATH);
                let failed = all.iter().filter(|call| call.errcode == -1).count();
                (failed, all.len())
            }
            Self::Kik => {
                let all = c.kik.calls_to(KIK_SEND_PATH);
                let failed = all.iter().filter(|call| call.status == 500).count();
                (failed, all.len())
            }
            Self::Viber => {
                let all = c.viber.calls_to(VIBER_SEND_PATH);
                let failed = all.iter().filter(|call| call.http_status == 500).count();
                (failed, all.len())
            }
            Self::Line => {
                let all: Vec<_> = c
                    .line
                    .calls()
                    .into_iter()
                    .filter(|call| call.path == LINE_PUSH_PATH || call.path == LINE_REPLY_PATH)
                    .collect();
                let failed = all.iter().filter(|call| call.status == 500).count();
                (failed, all.len())
            }
        }
    }
}

/// Messages per conversation for a scenario with a fault per service: one more wave than
/// there are faults, a message per conversation in each.
fn per_service_wave() -> i64 {
    i64::try_from(services().len() + 1).unwrap()
}

/// The services, in the order the faults hit them: the core, each platform's sender and
/// ingress, the API.
fn services() -> Vec<&'static str> {
    let mut all = vec!["auth", "bot-router", "normaliser", "webhook-dispatcher"];
    for p in Platform::ALL {
        all.extend([p.outbound(), p.ingress()]);
    }
    all.push("api");
    all
}

/// The JetStream workers: the services that may run as several replicas.
fn workers() -> Vec<&'static str> {
    let mut all = vec!["normaliser", "bot-router", "webhook-dispatcher"];
    all.extend(Platform::ALL.map(Platform::outbound));
    all
}

const SETTLE: Duration = Duration::from_secs(120);

/// How long a whole scenario may take at scale 1 (times [`scale`]): every wait in it is bounded
/// on its own, so this only catches a wait that is not (a hang fails, with the logs).
const SCENARIO_LIMIT: Duration = Duration::from_secs(10 * 60);

/// Set once anything in this test process panicked: a [`Cluster`] dropped after that prints its
/// processes' logs (it may be dropped on another thread than the one that panicked, while the
/// runtime shuts down).
static FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Records panics in [`FAILED`], then reports them as before.
fn record_failures() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            FAILED.store(true, std::sync::atomic::Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// Runs the scenario `name`, failing it when it has not finished within [`SCENARIO_LIMIT`]
/// (times [`scale`]). The scenario is dropped after the failure is recorded, so its cluster
/// reports its logs.
async fn within<T>(name: &str, scenario: impl Future<Output = T>) -> T {
    let limit = SCENARIO_LIMIT * u32::try_from(scale()).unwrap();
    let mut scenario = std::pin::pin!(scenario);
    match tokio::time::timeout(limit, &mut scenario).await {
        Ok(v) => v,
        Err(_) => {
            FAILED.store(true, std::sync::atomic::Ordering::SeqCst);
            panic!("{name}: not finished in {limit:?}; the processes' logs follow")
        }
    }
}

fn scale() -> i64 {
    std::env::var("PATCHBAY_CHAOS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The installation as separate processes, plus its fakes.
struct Cluster {
    /// Every service's NATS user.
    users: Vec<patchbay::nats_auth::User>,
    nats: Option<NatsServer>,
    nats_cluster: Option<NatsCluster>,
    _pg: PgServer,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    procs: HashMap<String, Guarded>,
    ports: HashMap<String, u16>,
    tenant: FakeTenant,
    telegram: FakeTelegram,
    wechat: FakeWechat,
    kik: FakeKik,
    viber: FakeViber,
    line: FakeLine,
    http: reqwest::Client,
}

impl Cluster {
    async fn start() -> Self {
        Self::start_on(None).await
    }

    /// With `Some(n)`: an n-node NATS cluster and streams with n replicas.
    async fn start_on(cluster_size: Option<usize>) -> Self {
        Self::start_with(cluster_size, &[]).await
    }

    /// [`Cluster::start_on`] with extra `PATCHBAY_*` settings.
    async fn start_with(cluster_size: Option<usize>, extra: &[(&str, &str)]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (pg, tenant, telegram, wechat, kik, viber, line) = tokio::join!(
            PgServer::start(),
            FakeTenant::start(),
            FakeTelegram::start(),
            FakeWechat::start(),
            FakeKik::start(),
            FakeViber::start(),
            FakeLine::start()
        );
        // The webhooks' reply tokens are made up by the run ([`ChaosBot::webhook`]).
        line.accept_unknown_reply_tokens();
        let pg = pg.unwrap();
        // NATS with authorisation on: each process connects as its service's user.
        let prefix = patchbay_testkit::unique_prefix();
        let subjects = patchbay_contract::Subjects::new(&prefix).unwrap();
        let users = patchbay::nats_auth::fresh_users(&subjects).unwrap();
        let auth = patchbay::nats_auth::server_config(
            &subjects,
            &patchbay_contract::topology::TopologySettings::default(),
            &users,
            4,
        )
        .unwrap();
        let (nats, nats_cluster, url, replicas) = match cluster_size {
            None => {
                let n = NatsServer::start_with_config(auth).await.unwrap();
                let url = n.url();
                (Some(n), None, url, 1)
            }
            Some(size) => {
                let c = NatsCluster::start_with_config(size, Some(auth))
                    .await
                    .unwrap();
                let url = c.urls();
                (None, Some(c), url, size)
            }
        };
        let admin = format!("admin-{}", patchbay_testkit::unique_prefix());
        let env = vec![
            ("PATCHBAY_NATS_URL", url),
            ("PATCHBAY_NATS_REPLICAS", replicas.to_string()),
            ("PATCHBAY_NATS_PREFIX", prefix),
            ("PATCHBAY_DATABASE_URL", pg.url()),
            ("PATCHBAY_DATABASE_MAX_CONNECTIONS", "4".into()),
            (
                "PATCHBAY_MASTER_KEY",
                patchbay_config::MasterKey::generate_base64().unwrap(),
            ),
            ("PATCHBAY_ADMIN_TOKEN", admin),
            ("PATCHBAY_ALLOW_PRIVATE_CALLBACKS", "true".into()),
            ("PATCHBAY_LOG_FORMAT", "text".into()),
            ("PATCHBAY_CONSUMER_CONCURRENCY", "16".into()),
            (
                "PATCHBAY_WEBHOOK_RETRY_SCHEDULE",
                "0s,100ms,200ms,400ms,800ms,1s,1s,1s,1s,1s,1s,1s".into(),
            ),
            ("PATCHBAY_SHUTDOWN_GRACE_MS", "3000".into()),
            // The harness posts every webhook and admin call from one address.
            ("PATCHBAY_INGRESS_IP_RATE_PER_SECOND", "100000".into()),
            ("PATCHBAY_INGRESS_IP_RATE_BURST", "100000".into()),
            ("PATCHBAY_HTTP_IP_RATE_PER_SECOND", "100000".into()),
            ("PATCHBAY_HTTP_IP_RATE_BURST", "100000".into()),
            ("PATCHBAY_TELEGRAM_API_BASE_URL", telegram.base_url()),
            ("PATCHBAY_TELEGRAM_PER_BOT_PER_SECOND", "10000".into()),
            ("PATCHBAY_TELEGRAM_PER_CHAT_PER_SECOND", "10000".into()),
            ("PATCHBAY_TELEGRAM_PER_CHAT_BURST", "10000".into()),
            ("PATCHBAY_WECHAT_API_BASE_URL", wechat.base_url()),
            ("PATCHBAY_WECHAT_PER_ACCOUNT_PER_SECOND", "10000".into()),
            ("PATCHBAY_WECHAT_PER_USER_PER_SECOND", "10000".into()),
            ("PATCHBAY_WECHAT_PER_USER_BURST", "10000".into()),
            ("PATCHBAY_KIK_API_BASE_URL", kik.base_url()),
            ("PATCHBAY_KIK_PER_BOT_PER_SECOND", "10000".into()),
            ("PATCHBAY_KIK_PER_USER_PER_SECOND", "10000".into()),
            ("PATCHBAY_KIK_PER_USER_BURST", "10000".into()),
            ("PATCHBAY_VIBER_API_BASE_URL", viber.base_url()),
            ("PATCHBAY_VIBER_PER_BOT_PER_SECOND", "10000".into()),
            ("PATCHBAY_VIBER_PER_USER_PER_SECOND", "10000".into()),
            ("PATCHBAY_VIBER_PER_USER_BURST", "10000".into()),
            ("PATCHBAY_LINE_API_BASE_URL", line.base_url()),
            ("PATCHBAY_LINE_PER_CHANNEL_PER_SECOND", "10000".into()),
            ("PATCHBAY_LINE_PER_USER_PER_SECOND", "10000".into()),
            ("PATCHBAY_LINE_PER_USER_BURST", "10000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect::<Vec<(String, String)>>();
        let mut env = env;
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        let mut c = Self {
            users,
            nats,
            nats_cluster,
            _pg: pg,
            dir: tempfile::tempdir().unwrap(),
            env,
            procs: HashMap::new(),
            ports: HashMap::new(),
            tenant,
            telegram,
            wechat,
            kik,
            viber,
            line,
            http: patchbay_testkit::http_client(),
        };
        record_failures();
        // The services may not create the topology with their users: `patchbay migrate` does.
        let mut migrate = Command::new(env!("CARGO_BIN_EXE_patchbay"));
        migrate
            .arg("migrate")
            .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PATCHBAY_NATS_PASSWORD", c.password_of("migrate"));
        let migrate_log = c.dir.path().join("migrate.log");
        let mut migrating = spawn(migrate, &migrate_log, None).unwrap();
        let status = migrating
            .wait_for(SETTLE)
            .unwrap_or_else(|e| panic!("patchbay migrate: {e}"));
        assert!(status.success(), "patchbay migrate: {status}");
        for s in services() {
            c.launch(s).await;
        }
        // Viber's check callbacks reach the Viber ingress, as the public host would route
        // them (it keeps its port when restarted).
        c.viber.deliver_via(&c.url("ingress-viber"));
        c
    }

    fn url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[service])
    }

    /// The NATS password of the service `role`.
    fn password_of(&self, role: &str) -> String {
        self.users
            .iter()
            .find(|u| u.role.map(|r| r.name()).as_deref() == Some(role))
            .unwrap_or_else(|| panic!("no NATS user for {role}"))
            .password
            .clone()
    }

    fn env(&self, key: &str) -> String {
        self.env.iter().find(|(k, _)| k == key).unwrap().1.clone()
    }

    /// Starts `service` (on its previous port after a restart) and waits until it is ready.
    async fn launch(&mut self, service: &'static str) {
        self.launch_as(service, service).await;
    }

    /// Starts `service` as the process `name` (a second replica is `<service>#2`).
    async fn launch_as(&mut self, name: &str, service: &'static str) {
        let port = *self.ports.entry(name.to_owned()).or_insert_with(free_port);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchbay"));
        cmd.args(["service", service])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PATCHBAY_NATS_PASSWORD", self.password_of(service))
            .env("PATCHBAY_HTTP_ADDR", format!("127.0.0.1:{port}"));
        let log = self.dir.path().join(format!("{name}.log"));
        self.procs
            .insert(name.to_owned(), spawn(cmd, &log, None).unwrap());
        let url = format!("http://127.0.0.1:{port}/readyz");
        let http = self.http.clone();
        eventually(
            Duration::from_secs(60),
            &format!("{name} ready"),
            || async {
                let r = http.get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await;
    }

    /// SIGKILL.
    fn kill9(&mut self, service: &str) {
        if let Some(mut p) = self.procs.remove(service) {
            p.kill();
        }
    }

    /// SIGTERM; the exit status.
    fn terminate(&mut self, service: &str) -> ExitStatus {
        // The services' grace is 3 s (`PATCHBAY_SHUTDOWN_GRACE_MS`); a service still running
        // well after it did not drain.
        let mut process = self.procs.remove(service).unwrap();
        process
            .terminate(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{service} on SIGTERM: {e}"))
    }

    /// A bot calling `callback`, with a `platform` channel of credentials of its own, whose
    /// users are the conversations `chats`: on Telegram a token of its own, which the fake
    /// accepts for the chats `chat_id(chats)` only; on WeChat an AppID and AppSecret of its
    /// own (and its own server-configuration Token and EncodingAESKey, its webhooks posted in
    /// safe mode), whose followers are the OpenIDs `openid(chats)`: the fake answers another
    /// app's token for them 40003; on Kik a bot username and API key of its own (which sign
    /// its webhooks), whose users, who chatted with it, are `kik_user(chats)`, each with a
    /// message bank that lasts the whole run: the fake answers a message to another bot's
    /// user 403; on Viber an auth token of its own (which signs its webhooks), whose
    /// subscribers are `viber_user(chats)`: the fake answers a message to another bot's
    /// subscriber status 6. A Viber bot is ready once outbound-viber set its webhook.
    /// On LINE a channel secret (which signs its webhooks) and access token of its
    /// own, whose friends (with a profile each) are `line_user(chats)`: the fake answers a push
    /// to another channel's friend 400.
    async fn create_bot_for(
        &self,
        callback: &str,
        platform: Platform,
        chats: Range<i64>,
    ) -> ChaosBot {
        let admin = self.env("PATCHBAY_ADMIN_TOKEN");
        let api = self.url("api");
        let bot: Value = self
            .http
            .post(format!("{api}/admin/v1/bots"))
            .bearer_auth(&admin)
            .json(&json!({"name": "chaos", "webhook": {"url": callback}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let bot_id = bot["id"].as_str().unwrap().to_owned();
        let (credentials, creds) = match platform {
            Platform::Telegram => {
                let token = format!("{}:chaos{}", chats.start + 1, unique_prefix());
                let secret = format!("sec_{}", unique_prefix());
                self.telegram.add_bot(&token);
                for chat in chats.clone() {
                    self.telegram.open_chat(&token, chat_id(chat));
                }
                (
                    json!({"bot_token": token, "secret_token": secret}),
                    Creds::Telegram { token, secret },
                )
            }
            Platform::Wechat => {
                let app_id = format!("wx{}", alphanumerics(16));
                let secret = alphanumerics(32);
                let token = format!("tok{}", alphanumerics(12));
                let aes_key = alphanumerics(43);
                self.wechat.add_app(&app_id, &secret);
                for chat in chats.clone() {
                    self.wechat.add_follower(&app_id, &openid(chat));
                }
                (
                    json!({"app_id": app_id, "app_secret": secret, "token": token,
                           "encoding_aes_key": aes_key, "customer_service_api": true}),
                    Creds::Wechat {
                        app_id,
                        token,
                        aes_key,
                    },
                )
            }
            Platform::Kik => {
                let username = format!("pb.chaos{}", alphanumerics(12));
                let api_key = format!("key-{}", alphanumerics(24));
                self.kik.add_bot(&username, &api_key);
                for chat in chats.clone() {
                    self.kik.add_user(&username, &kik_user(chat));
                    // The bank holds 20; a chaos run sends far more, and resends after a
                    // sender is killed withdraw again.
                    self.kik.set_bank(&username, &kik_user(chat), 1_000_000);
                }
                (
                    json!({"username": username, "api_key": api_key}),
                    Creds::Kik { username, api_key },
                )
            }
            Platform::Viber => {
                let token = format!("{}-{}", alphanumerics(16), alphanumerics(16));
                self.viber.add_bot(&token, "chaos");
                for chat in chats.clone() {
                    self.viber.add_subscriber(&token, &viber_user(chat));
                }
                (json!({"auth_token": token}), Creds::Viber { token })
            }
            Platform::Line => {
                let secret = alphanumerics(32);
                let access_token = format!("tok{}", alphanumerics(40));
                self.line.add_channel(&access_token);
                for chat in chats.clone() {
                    self.line.add_friend(&access_token, &line_user(chat));
                    self.line.set_profile(
                        &line_user(chat),
                        json!({"displayName": format!("user {chat}")}),
                    );
                }
                (
                    json!({"channel_secret": secret, "channel_access_token": access_token}),
                    Creds::Line {
                        secret,
                        access_token,
                    },
                )
            }
        };
        let ch: Value = self
            .http
            .post(format!("{api}/admin/v1/bots/{bot_id}/channels"))
            .bearer_auth(&admin)
            .json(&json!({"platform": platform.name(), "credentials": credentials}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let path = ch["webhook_path"]
            .as_str()
            .unwrap_or_else(|| panic!("a {} channel: {ch}", platform.name()))
            .to_owned();
        if let Creds::Viber { token } = &creds {
            // Viber sends nothing for a bot without a webhook.
            eventually(SETTLE, "the Viber webhook set", || async {
                self.viber
                    .webhook(token)
                    .is_some_and(|w| w.ends_with(&path))
                    .then_some(())
            })
            .await;
        }
        ChaosBot {
            path,
            creds,
            chats,
            api_key: bot["api_key"].as_str().unwrap().to_owned(),
        }
    }

    /// How many distinct messages the tenant has seen.
    fn seen(&self) -> usize {
        self.tenant
            .received()
            .iter()
            .filter_map(|r| {
                r.json()["message"]["content"]["text"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect::<HashSet<_>>()
            .len()
    }
}

/// `len` random lowercase letters and digits.
fn alphanumerics(len: usize) -> String {
    std::iter::repeat_with(|| unique_prefix().split_off(1))
        .flat_map(|tail| tail.chars().collect::<Vec<_>>())
        .take(len)
        .collect()
}

/// A bot of the run: where its webhooks go, what signs them, and which conversations are its
/// own.
struct ChaosBot {
    path: String,
    creds: Creds,
    chats: Range<i64>,
    /// The bot's API key.
    api_key: String,
}

/// A bot's credentials, by platform.
enum Creds {
    Telegram {
        /// The bot token its replies go out with.
        token: String,
        /// The webhooks' `X-Telegram-Bot-Api-Secret-Token`.
        secret: String,
    },
    Wechat {
        app_id: String,
        /// The server configuration's Token, which signs webhooks.
        token: String,
        /// The EncodingAESKey of safe mode.
        aes_key: String,
    },
    Kik {
        /// The bot's username: its `X-Kik-Username`, and the Basic auth user of its calls.
        username: String,
        /// Signs its webhooks (`X-Kik-Signature`) and authenticates its calls.
        api_key: String,
    },
    Viber {
        /// The auth token: signs its webhooks and authenticates its calls.
        token: String,
    },
    Line {
        /// The channel secret: signs its webhooks (`x-line-signature`).
        secret: String,
        /// Authenticates its calls (Bearer).
        access_token: String,
    },
}

/// One webhook as the platform posts it, posted again as it is until taken.
struct Webhook {
    query: Vec<(String, String)>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl ChaosBot {
    fn platform(&self) -> Platform {
        match self.creds {
            Creds::Telegram { .. } => Platform::Telegram,
            Creds::Wechat { .. } => Platform::Wechat,
            Creds::Kik { .. } => Platform::Kik,
            Creds::Viber { .. } => Platform::Viber,
            Creds::Line { .. } => Platform::Line,
        }
    }

    /// What the platform's calls name the bot by: its token on Telegram, its AppID on WeChat
    /// (the app of the access token), its username on Kik (Basic auth), its auth token on
    /// Viber, its access token on LINE (Bearer).
    fn identity(&self) -> &str {
        match &self.creds {
            Creds::Telegram { token, .. } => token,
            Creds::Wechat { app_id, .. } => app_id,
            Creds::Kik { username, .. } => username,
            Creds::Viber { token } => token,
            Creds::Line { access_token, .. } => access_token,
        }
    }

    /// Message `n` of conversation `chat`, saying `text`: a Telegram update with the secret
    /// header; a WeChat text message written now (the 48-hour window counts from its
    /// `CreateTime`), encrypted and signed in safe mode; a Kik POST of one text message in the
    /// user's own chat with the bot, named for the bot and signed with its API key; a Viber
    /// `message` callback written now (the 24-hour session counts from it), signed with the
    /// auth token; a LINE POST of one text event written now (the reply token's life counts
    /// from it), whose reply token names the user (`rt.<user>.<n>`, so a reply can be checked
    /// against its conversation), signed with the channel secret.
    fn webhook(&self, chat: i64, n: i64, text: &str) -> Webhook {
        let id = 1 + chat * 100_000 + n;
        match &self.creds {
            Creds::Telegram { secret, .. } => Webhook {
                query: Vec::new(),
                headers: vec![
                    ("content-type", "application/json".into()),
                    ("X-Telegram-Bot-Api-Secret-Token", secret.clone()),
                ],
                body: serde_json::to_vec(&telegram_fx::text_update(id, chat_id(chat), text))
                    .unwrap(),
            },
            Creds::Wechat {
                app_id,
                token,
                aes_key,
            } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    .to_string();
                let xml = wechat_fx::text(&openid(chat), id, text).replace(
                    &format!("<CreateTime>{}</CreateTime>", wechat_fx::TIME),
                    &format!("<CreateTime>{now}</CreateTime>"),
                );
                let nonce = id.to_string();
                let (body, mut query) =
                    wechat_fx::encrypted(&xml, token, app_id, aes_key, &now, &nonce, false);
                for (k, v) in &mut query {
                    if k == "openid" {
                        *v = openid(chat);
                    }
                }
                Webhook {
                    query,
                    headers: vec![("content-type", "text/xml".into())],
                    body: body.into_bytes(),
                }
            }
            Creds::Kik { username, api_key } => {
                let mut message = kik_fx::text(
                    &format!("00000000-0000-4000-8000-{id:012x}"),
                    &kik_user(chat),
                    text,
                );
                // Each conversation is its own chat (Kik orders by `chatId`), written now.
                message["chatId"] = json!(format!("{chat:064x}"));
                message["timestamp"] = json!(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis()
                        .try_into()
                        .unwrap_or(i64::MAX)
                );
                let body = serde_json::to_vec(&kik_fx::post(vec![message])).unwrap();
                Webhook {
                    query: Vec::new(),
                    headers: vec![
                        ("content-type", "application/json".into()),
                        ("X-Kik-Username", username.clone()),
                        ("X-Kik-Signature", kik_fx::signature(api_key, &body)),
                    ],
                    body,
                }
            }
            Creds::Viber { token } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis()
                    .try_into()
                    .unwrap_or(i64::MAX);
                let callback = viber_fx::at(
                    viber_fx::text(u64::try_from(id).unwrap(), &viber_user(chat), text),
                    now,
                );
                let body = serde_json::to_vec(&callback).unwrap();
                Webhook {
                    query: Vec::new(),
                    headers: vec![
                        ("content-type", "application/json".into()),
                        (
                            "X-Viber-Content-Signature",
                            viber_fx::signature(token, &body),
                        ),
                    ],
                    body,
                }
            }
            Creds::Line { secret, .. } => {
                let user = line_user(chat);
                let mut event = line_fx::text(&format!("01CHAOS{id:019}"), &user, text);
                event["replyToken"] = json!(format!("rt.{user}.{id}"));
                event["timestamp"] = json!(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis()
                        .try_into()
                        .unwrap_or(i64::MAX)
                );
                let body = serde_json::to_vec(&line_fx::post(vec![event])).unwrap();
                Webhook {
                    query: Vec::new(),
                    headers: vec![
                        ("content-type", "application/json".into()),
                        ("x-line-signature", line_fx::signature(secret, &body)),
                    ],
                    body,
                }
            }
        }
    }

    /// Posts `hook` to the platform's ingress at `ingress`; the status answered.
    async fn post(
        &self,
        http: &reqwest::Client,
        ingress: &str,
        hook: &Webhook,
    ) -> reqwest::Result<reqwest::StatusCode> {
        let mut url = reqwest::Url::parse(&format!("{ingress}{}", self.path)).unwrap();
        if !hook.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&hook.query);
        }
        let mut request = http
            .post(url)
            .body(hook.body.clone())
            .timeout(Duration::from_secs(10));
        for (name, value) in &hook.headers {
            request = request.header(*name, value);
        }
        request.send().await.map(|r| r.status())
    }
}

/// The Telegram chat (and user) id of conversation `chat`.
fn chat_id(chat: i64) -> i64 {
    1000 + chat
}

/// The WeChat OpenID of conversation `chat`.
fn openid(chat: i64) -> String {
    format!("o{chat}")
}

/// The Kik username of conversation `chat`'s user.
fn kik_user(chat: i64) -> String {
    format!("u{chat}")
}

/// The Viber user id of conversation `chat`'s user.
fn viber_user(chat: i64) -> String {
    format!("v{chat}=")
}

/// The LINE user id of conversation `chat`'s user.
fn line_user(chat: i64) -> String {
    format!("U{chat:032x}")
}

/// The user a chaos reply token names (`rt.<user>.<n>`).
fn line_token_user(token: &str) -> String {
    token.split('.').nth(1).unwrap_or_default().to_owned()
}

/// Who owns each conversation: its platform and its bot's [`ChaosBot::identity`].
type Owners = HashMap<i64, (Platform, String)>;

fn owners(bots: &[ChaosBot]) -> Owners {
    bots.iter()
        .flat_map(|b| {
            b.chats
                .clone()
                .map(|chat| (chat, (b.platform(), b.identity().to_owned())))
        })
        .collect()
}

/// A reply as a fake platform API accepted it.
#[derive(Debug)]
struct Reply {
    text: String,
    /// The recipient: a Telegram `chat_id`, a WeChat `touser`, a Kik message's `to`, a Viber
    /// message's `receiver`, a LINE push's `to` (or the user its reply token was given for).
    to: String,
    /// The credentials it was sent with: a Telegram token, the app of a WeChat access token,
    /// a Kik bot's username, a Viber auth token, a LINE channel access token.
    by: String,
}

/// When a fault fired and how far the run was then.
#[derive(Debug)]
struct Fault {
    what: String,
    /// Distinct messages the tenant had seen when it fired.
    seen_before: usize,
    /// Messages sent at the time (the rest of the run was still to come).
    released_before: usize,
}

/// The run the faults are injected into: its messages go out in waves; each fault waits for
/// the wave in flight to be half seen, fires, and releases the next wave.
struct Run {
    c: Shared,
    chats: i64,
    per_chat: i64,
    waves: usize,
    phase: tokio::sync::watch::Sender<usize>,
    faults: std::sync::Mutex<Vec<Fault>>,
}

impl Run {
    /// The wave message `n` of a conversation belongs to.
    fn wave_of(per_chat: i64, waves: usize, n: i64) -> usize {
        usize::try_from(n).unwrap() * waves / usize::try_from(per_chat).unwrap()
    }

    /// Messages in waves before `wave`.
    fn before(&self, wave: usize) -> usize {
        let per_chat = (0..self.per_chat)
            .filter(|n| Self::wave_of(self.per_chat, self.waves, *n) < wave)
            .count();
        per_chat * usize::try_from(self.chats).unwrap()
    }

    /// Waits until the tenant has seen half of the wave now in flight (failing after
    /// [`SETTLE`]); returns how many messages it has seen.
    async fn midway(&self) -> usize {
        let wave = *self.phase.borrow();
        let (start, end) = (self.before(wave), self.before(wave + 1));
        let wanted = start + ((end - start) / 2).max(1);
        let deadline = Instant::now() + SETTLE;
        loop {
            let seen = self.c.read().await.seen();
            if seen >= wanted {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "no progress: the tenant saw {seen} messages, wave {wave} needs {wanted}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Records a fault that just fired and releases the next wave.
    fn fired(&self, what: impl Into<String>, seen_before: usize) {
        let wave = *self.phase.borrow();
        let what = what.into();
        // Where a run that fails later got to.
        eprintln!("chaos: {what} with {seen_before} messages seen, wave {wave} in flight");
        self.faults.lock().unwrap().push(Fault {
            what,
            seen_before,
            released_before: self.before(wave + 1),
        });
        self.phase.send_replace((wave + 1).min(self.waves));
    }
}

/// Posts every message as its platform does: one conversation's messages in order, each once
/// its wave is released (and, where the platform limits replies per message from the user,
/// once few enough of the user's messages wait for a reply: [`Platform::unanswered_max`]),
/// retried until 200 for at most [`SETTLE`] (an ingress that never takes a message fails the
/// test).
async fn send_all(
    c: Shared,
    bot: ChaosBot,
    per_chat: i64,
    waves: usize,
    phase: tokio::sync::watch::Receiver<usize>,
) {
    let http = c.read().await.http.clone();
    let bot = Arc::new(bot);
    let sends = bot.chats.clone().map(|chat| {
        let (c, http, bot) = (c.clone(), http.clone(), bot.clone());
        let mut phase = phase.clone();
        async move {
            for n in 0..per_chat {
                let wave = Run::wave_of(per_chat, waves, n);
                phase.wait_for(|p| *p >= wave).await.unwrap();
                let text = format!("{chat}:{n}");
                if let Some(max) = bot.platform().unanswered_max()
                    && n >= max
                {
                    let answer = format!("re {chat}:{}", n - max);
                    let deadline = Instant::now() + SETTLE;
                    while !bot
                        .platform()
                        .replies(&*c.read().await)
                        .iter()
                        .any(|r| r.text == answer)
                    {
                        assert!(
                            Instant::now() < deadline,
                            "no {answer:?} in {SETTLE:?}: message {text} cannot be sent"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                let hook = bot.webhook(chat, n, &text);
                let deadline = Instant::now() + SETTLE;
                loop {
                    let ingress = c.read().await.url(bot.platform().ingress());
                    let answer = bot.post(&http, &ingress, &hook).await;
                    if answer.as_ref().is_ok_and(|s| s.is_success()) {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{} did not take message {text} in {SETTLE:?}; last answer: {answer:?}",
                        bot.platform().ingress()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    futures::future::join_all(sends).await;
}

/// Counts of one scenario.
#[derive(Debug, Default)]
struct Counts {
    sent: usize,
    delivered: usize,
    duplicates: usize,
    split_ids: usize,
    out_of_order: usize,
    replies: usize,
    /// Distinct replies each platform accepted.
    replies_per_platform: Vec<(&'static str, usize)>,
    reply_duplicates: usize,
    replies_out_of_order: usize,
    /// Platform calls refused for their credentials (see [`Platform::refused_credentials`]).
    refused_credentials: usize,
    /// Events and replies of a conversation on another platform than its own, and replies to
    /// another recipient or sent with other credentials than its bot's.
    misrouted: usize,
    /// The first few reorderings, for the report.
    reorders: Vec<String>,
    /// The first few refusals and misroutings, for the report.
    mixups: Vec<String>,
}

/// The conversation and number of a message's text (`<chat>:<n>`) or of its echo (`re …`).
fn parse(text: &str) -> (i64, i64) {
    let (chat, n) = text.trim_start_matches("re ").split_once(':').unwrap();
    (chat.parse().unwrap(), n.parse().unwrap())
}

/// Waits until every message reached the tenant and every reply reached its platform, then
/// counts.
async fn settle(c: &Cluster, owners: &Owners, per_chat: i64) -> Counts {
    let chats = i64::try_from(owners.len()).unwrap();
    let total = usize::try_from(chats * per_chat).unwrap();
    let deadline = Instant::now() + SETTLE;
    loop {
        let events: HashSet<String> = c
            .tenant
            .received()
            .iter()
            .filter_map(|r| {
                r.json()["message"]["content"]["text"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        let by_platform: Vec<(&str, HashSet<String>)> = Platform::ALL
            .iter()
            .map(|p| (p.name(), p.replies(c).into_iter().map(|r| r.text).collect()))
            .collect();
        let replies = by_platform.iter().map(|(_, r)| r.len()).sum::<usize>();
        if events.len() >= total && replies >= total {
            break;
        }
        if Instant::now() > deadline {
            for entry in std::fs::read_dir(c.dir.path()).unwrap().flatten() {
                let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                eprintln!(
                    "---- {} (last lines, newest first)\n{}",
                    entry.file_name().to_string_lossy(),
                    tail.join("\n")
                );
            }
            let per: Vec<String> = by_platform
                .iter()
                .map(|(p, r)| format!("{p} {}", r.len()))
                .collect();
            let missing: Vec<String> = events
                .iter()
                .filter(|t| {
                    by_platform
                        .iter()
                        .all(|(_, r)| !r.contains(&format!("re {t}")))
                })
                .take(20)
                .cloned()
                .collect();
            let router = router_records(c, &missing).await;
            panic!(
                "not settled after {SETTLE:?}: {} of {total} events, {replies} of {total} replies ({}); no reply to {missing:?}; the router's record of the first: {router:#?}",
                events.len(),
                per.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut counts = Counts {
        sent: total,
        ..Counts::default()
    };
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    let mut order: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut seen = HashSet::new();
    for r in c.tenant.received() {
        let e = r.json();
        let text = e["message"]["content"]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        ids.entry(text.clone())
            .or_default()
            .insert(r.header("webhook-id").unwrap_or_default());
        if !seen.insert(text.clone()) {
            counts.duplicates += 1;
            continue;
        }
        let (chat, n) = parse(&text);
        let platform = owners[&chat].0.name();
        if e["channel"]["platform"] != platform {
            counts.misrouted += 1;
            counts.mixups.push(format!(
                "event {text} of a {platform} conversation came on {}",
                e["channel"]["platform"]
            ));
        }
        order.entry(chat).or_default().push(n);
    }
    counts.delivered = seen.len();
    counts.split_ids = ids.values().filter(|s| s.len() > 1).count();
    counts.out_of_order = inversions("event", &order, &mut counts.reorders);
    let mut reply_order: HashMap<String, Vec<i64>> = HashMap::new();
    let mut seen = HashSet::new();
    for platform in Platform::ALL {
        let mut accepted = 0;
        for reply in platform.replies(c) {
            if !seen.insert(reply.text.clone()) {
                counts.reply_duplicates += 1;
                continue;
            }
            accepted += 1;
            let (chat, n) = parse(&reply.text);
            let (own_platform, own_credentials) = &owners[&chat];
            if platform != *own_platform
                || reply.to != own_platform.recipient(chat)
                || reply.by != *own_credentials
            {
                counts.misrouted += 1;
                counts.mixups.push(format!(
                    "reply {:?} of {} conversation {chat} (bot {own_credentials}): {reply:?}",
                    reply.text,
                    own_platform.name()
                ));
            }
            reply_order
                .entry(format!("{}:{}", platform.name(), reply.to))
                .or_default()
                .push(n);
        }
        counts
            .replies_per_platform
            .push((platform.name(), accepted));
        let refused = platform.refused_credentials(c);
        counts.refused_credentials += refused.len();
        counts.mixups.extend(refused.into_iter().take(3));
    }
    counts.replies = seen.len();
    counts.replies_out_of_order = inversions("reply", &reply_order, &mut counts.reorders);
    counts.mixups.truncate(10);
    counts
}

/// What the router stored of the replies to the first few `texts`: status and error.
async fn router_records(c: &Cluster, texts: &[String]) -> Vec<(String, String, Option<Value>)> {
    let Ok(pool) = sqlx::PgPool::connect(&c.env("PATCHBAY_DATABASE_URL")).await else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for t in texts.iter().take(3) {
        let rows: Vec<(String, Option<Value>)> = sqlx::query_as(
            "select status, error from router.messages
             where direction = 'outbound' and content->>'text' = $1",
        )
        .bind(format!("re {t}"))
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        found.extend(
            rows.into_iter()
                .map(|(status, error)| (t.clone(), status, error)),
        );
    }
    found
}

/// How many neighbours are out of order across the sequences of `order` (per chat); the first
/// few of each chat are described in `report`.
fn inversions<K: std::fmt::Display>(
    what: &str,
    order: &HashMap<K, Vec<i64>>,
    report: &mut Vec<String>,
) -> usize {
    let mut total = 0;
    for (chat, ns) in order {
        let inverted: Vec<&[i64]> = ns.windows(2).filter(|w| w[0] > w[1]).collect();
        total += inverted.len();
        for w in inverted.iter().take(3) {
            report.push(format!("{what} chat {chat}: {} before {}", w[0], w[1]));
        }
    }
    total
}

fn check(name: &str, counts: &Counts, started: Instant) {
    println!("chaos {name}: {counts:?} in {:?}", started.elapsed());
    assert_eq!(counts.delivered, counts.sent, "{name}: events lost");
    assert_eq!(counts.replies, counts.sent, "{name}: replies lost");
    assert_eq!(
        counts.split_ids, 0,
        "{name}: an event delivered under two webhook-ids"
    );
    assert_eq!(counts.out_of_order, 0, "{name}: events out of order");
    assert_eq!(
        counts.replies_out_of_order, 0,
        "{name}: replies out of order"
    );
    assert_eq!(
        counts.refused_credentials, 0,
        "{name}: a reply went out with another bot's credentials: {:?}",
        counts.mixups
    );
    assert_eq!(
        counts.misrouted, 0,
        "{name}: an event or reply crossed conversations, platforms or bots: {:?}",
        counts.mixups
    );
}

/// WeChat gives an AppID one access token at a time (a fetch invalidates the previous one, and
/// fetches are counted against a daily quota), so the installation fetches one and shares it
/// through the `<p>_tokens` bucket. No scenario lets the fake's token lapse (7200 s) or
/// refuses one, so each app's token is fetched exactly once for the whole run, whatever the
/// fault: a sender killed (-9) or stopped (SIGTERM) and started again, or a second replica,
/// reads the token shared in the bucket (the one fetch happens at the app's first reply, long
/// before the fault that hits the sender: it waits for several waves of progress); through a
/// NATS restart or a node loss the senders keep the token they hold in memory, and the bucket
/// is file-backed (and replicated on the cluster); WeChat's -1 (busy) of the flaky platform is
/// not a refusal of the token.
///
/// A token fetched just before NATS goes down is still shared once it is back: the replica
/// that fetched it keeps trying for as long as its claim keeps the others waiting (an early
/// version gave up at the first failed write, so about one run in ten fetched a second token
/// once the claim had lapsed).
fn one_token_per_app(name: &str, c: &Cluster, owners: &Owners) {
    let apps: HashSet<&String> = owners
        .values()
        .filter(|(p, _)| *p == Platform::Wechat)
        .map(|(_, app)| app)
        .collect();
    for app in apps {
        let fetched = c.wechat.token_fetches(app);
        assert!(
            fetched == 1,
            "{name}: {fetched} access tokens fetched for {app} (exactly one expected)"
        );
    }
}

/// The tenant echoes every message, so each one also produces a reply at its platform.
fn echo(tenant: &FakeTenant) {
    tenant.respond_with(|r| {
        let e = r.json();
        match e["message"]["content"]["text"].as_str() {
            Some(t) => (
                reqwest::StatusCode::OK,
                Some(json!({"messages": [{"type": "text", "text": format!("re {t}")}]})),
            ),
            None => (reqwest::StatusCode::OK, None),
        }
    });
}

type Shared = Arc<tokio::sync::RwLock<Cluster>>;

/// `bots` bots calling `callback`, the conversations `0..chats` spread evenly over them (as
/// evenly as they divide), their platforms taken in turn ([`Platform::of_bot`]).
async fn create_bots(c: &Cluster, callback: &str, bots: i64, chats: i64) -> Vec<ChaosBot> {
    let mut created = Vec::new();
    for b in 0..bots {
        let platform = Platform::of_bot(b);
        let own = b * chats / bots..(b + 1) * chats / bots;
        created.push(c.create_bot_for(callback, platform, own).await);
    }
    created
}

/// Streams 20 conversations × `per_chat` numbered messages through `c` (the tenant echoing
/// each), spread over a bot on each platform, in `faults + 1` waves while `fault` injects the
/// faults (see [`Run`]), waits until everything settled and checks the invariants, and that
/// every fault met messages not yet seen and messages not yet sent. Returns the cluster and the
/// counts for scenario-specific checks.
async fn stream_through_fault(
    name: &str,
    c: Cluster,
    per_chat: i64,
    faults: usize,
    fault: impl AsyncFnOnce(&Run),
) -> (Shared, Counts) {
    let bots = i64::try_from(Platform::ALL.len()).unwrap();
    stream_through_fault_on(name, c, bots, per_chat, faults, fault).await
}

/// [`stream_through_fault`] with the 20 conversations spread over `bots` bots (so over the
/// streams' partitions), taking the platforms in turn.
async fn stream_through_fault_on(
    name: &str,
    c: Cluster,
    bots: i64,
    per_chat: i64,
    faults: usize,
    fault: impl AsyncFnOnce(&Run),
) -> (Shared, Counts) {
    let started = Instant::now();
    assert!(
        usize::try_from(bots).unwrap() >= Platform::ALL.len(),
        "{name}: a bot on every platform"
    );
    echo(&c.tenant);
    let chats = 20;
    let created = create_bots(&c, &c.tenant.url(), bots, chats).await;
    let owners = owners(&created);
    let waves = faults + 1;
    assert!(
        usize::try_from(per_chat).unwrap() >= waves,
        "{name}: a message per conversation in every wave"
    );
    let (phase, watching) = tokio::sync::watch::channel(0);
    let run = Run {
        c: Arc::new(tokio::sync::RwLock::new(c)),
        chats,
        per_chat,
        waves,
        phase,
        faults: std::sync::Mutex::default(),
    };
    let senders: Vec<_> = created
        .into_iter()
        .map(|bot| {
            tokio::spawn(send_all(
                run.c.clone(),
                bot,
                per_chat,
                waves,
                watching.clone(),
            ))
        })
        .collect();
    fault(&run).await;
    let fired = std::mem::take(&mut *run.faults.lock().unwrap());
    assert_eq!(fired.len(), faults, "{name}: faults fired: {fired:?}");
    run.phase.send_replace(waves);
    for s in senders {
        s.await.unwrap();
    }
    let c = run.c;
    let counts = settle(&*c.read().await, &owners, per_chat).await;
    // A failed check keeps and prints the logs (`Drop for Cluster`).
    check(name, &counts, started);
    one_token_per_app(name, &*c.read().await, &owners);
    println!("chaos {name}: faults {fired:?}");
    for f in &fired {
        assert!(
            f.seen_before < counts.sent && f.released_before < counts.sent,
            "{name}: {} did not overlap the run: {f:?} of {}",
            f.what,
            counts.sent
        );
    }
    (c, counts)
}

/// No sender process died in this scenario, so nothing excuses sending a reply twice, on any
/// platform: the platform's acceptance is recorded (and remembered) before the status is
/// reported.
fn sent_once(name: &str, counts: &Counts) {
    assert_eq!(
        counts.reply_duplicates, 0,
        "{name}: a reply was sent to the platform twice"
    );
}

/// Copies the processes' logs somewhere that outlives the test, and says where.
fn keep_logs(c: &Cluster) {
    let dest = std::env::temp_dir().join(format!("patchbay-chaos-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dest);
    // Called while a panic unwinds: nothing here may panic again.
    let Ok(entries) = std::fs::read_dir(c.dir.path()) else {
        return;
    };
    for entry in entries.flatten() {
        let _ = std::fs::copy(entry.path(), dest.join(entry.file_name()));
    }
    eprintln!("chaos: logs kept in {}", dest.display());
}

/// The last lines of each process's log, on stderr: what a failure on a machine whose files
/// are gone afterwards (CI) leaves to read.
fn print_log_tails(c: &Cluster) {
    const LINES: usize = 30;
    let Ok(entries) = std::fs::read_dir(c.dir.path()) else {
        return;
    };
    let mut logs: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!(
            "──── {} (last {} of {} lines)",
            log.file_name().unwrap_or_default().to_string_lossy(),
            lines.len().min(LINES),
            lines.len()
        );
        for line in &lines[lines.len().saturating_sub(LINES)..] {
            eprintln!("{line}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if FAILED.load(std::sync::atomic::Ordering::SeqCst) || std::thread::panicking() {
            keep_logs(self);
            print_log_tails(self);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_each_service_in_turn_mid_stream() {
    within("kill_9_each_service_in_turn_mid_stream", async {
        let c = Cluster::start().await;
        stream_through_fault(
            "kill -9 each service",
            c,
            per_service_wave() * scale(),
            services().len(),
            async |run: &Run| {
                for service in services() {
                    let seen = run.midway().await;
                    run.c.write().await.kill9(service);
                    run.fired(format!("kill -9 {service}"), seen);
                    run.c.write().await.launch(service).await;
                }
            },
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_each_worker_one_of_each_killed_mid_stream() {
    within(
        "two_replicas_of_each_worker_one_of_each_killed_mid_stream",
        async {
            let mut c = Cluster::start().await;
            for w in workers() {
                c.launch_as(&format!("{w}#2"), w).await;
            }
            stream_through_fault_on(
                "two replicas of each worker, one of each killed",
                c,
                10,
                15 * scale(),
                workers().len(),
                async |run: &Run| {
                    for w in workers() {
                        let seen = run.midway().await;
                        run.c.write().await.kill9(w);
                        run.fired(format!("kill -9 {w}"), seen);
                    }
                },
            )
            .await;
        },
    )
    .await;
}

/// Senders paced for real (one message a second per conversation, every conversation in one
/// partition): replies queue in their conversations' lanes, beyond what a lane keeps in memory
/// (the rest wait as references, read back from the stream in turn), and each platform's
/// sender is killed mid-stream. Its successor takes the waiting messages over in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_senders_killed_while_their_conversations_wait() {
    within(
        "paced_senders_killed_while_their_conversations_wait",
        async {
            let c = Cluster::start_with(
                None,
                &[
                    ("PATCHBAY_PARTITIONS", "1"),
                    ("PATCHBAY_TELEGRAM_PER_CHAT_PER_SECOND", "1"),
                    ("PATCHBAY_TELEGRAM_PER_CHAT_BURST", "1"),
                    ("PATCHBAY_WECHAT_PER_USER_PER_SECOND", "1"),
                    ("PATCHBAY_WECHAT_PER_USER_BURST", "1"),
                    ("PATCHBAY_KIK_PER_USER_PER_SECOND", "1"),
                    ("PATCHBAY_KIK_PER_USER_BURST", "1"),
                    ("PATCHBAY_VIBER_PER_USER_PER_SECOND", "1"),
                    ("PATCHBAY_VIBER_PER_USER_BURST", "1"),
                    ("PATCHBAY_LINE_PER_USER_PER_SECOND", "1"),
                    ("PATCHBAY_LINE_PER_USER_BURST", "1"),
                ],
            )
            .await;
            let senders = Platform::ALL.map(Platform::outbound);
            let (c, _) = stream_through_fault(
                "paced senders killed while their conversations wait",
                c,
                20 * scale(),
                senders.len(),
                async |run: &Run| {
                    for sender in senders {
                        let seen = run.midway().await;
                        run.c.write().await.kill9(sender);
                        run.fired(format!("kill -9 {sender}"), seen);
                        run.c.write().await.launch(sender).await;
                    }
                },
            )
            .await;
            // The replies did wait as references (counted by the senders running since the kills).
            let c = c.read().await;
            let mut parked = 0.0;
            for sender in senders {
                let metrics = c
                    .http
                    .get(format!("{}/metrics", c.url(sender)))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                parked += metrics
                    .lines()
                    .filter(|l| l.starts_with("patchbay_consumer_parked_total"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>();
            }
            println!("paced senders: {parked} replies waited as references");
            assert!(
                parked > 0.0,
                "no reply waited as a reference: nothing was tested"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_mid_stream() {
    within("nats_restart_mid_stream", async {
        let c = Cluster::start().await;
        let (_, counts) = stream_through_fault(
            "nats-server restart",
            c,
            15 * scale(),
            1,
            async |run: &Run| {
                let seen = run.midway().await;
                run.c.write().await.nats.as_mut().unwrap().kill();
                run.fired("nats-server killed", seen);
                // Down for a while as the next wave is posted (the ingress answers 503 meanwhile).
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut c = run.c.write().await;
                c.nats.as_mut().unwrap().restart().await.unwrap();
            },
        )
        .await;
        sent_once("nats-server restart", &counts);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_platform_with_429_and_5xx() {
    within("flaky_platform_with_429_and_5xx", async {
        let c = Cluster::start().await;
        // Every platform fails a share of its sends (see `Platform::make_flaky`).
        for p in Platform::ALL {
            p.make_flaky(&c);
        }
        let (c, counts) =
            stream_through_fault("flaky platform", c, 10 * scale(), 0, async |_: &Run| {}).await;
        sent_once("flaky platform", &counts);
        let c = c.read().await;
        for p in Platform::ALL {
            let (failed, all) = p.flaky_calls(&c);
            println!(
                "flaky platform: {} failed {failed} of {all} sends, all retried",
                p.name()
            );
            assert!(failed > 0, "{} did fail some sends", p.name());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    within("sigterm_drains_and_exits_zero", async {
        let c = Cluster::start().await;
        let name = "SIGTERM each service in turn";
        let (_, counts) = stream_through_fault(
            name,
            c,
            per_service_wave() * scale(),
            services().len(),
            async |run: &Run| {
                for service in services() {
                    let seen = run.midway().await;
                    let status = run.c.write().await.terminate(service);
                    assert!(
                        status.success(),
                        "{service} exited with {status} on SIGTERM"
                    );
                    run.fired(format!("SIGTERM {service}"), seen);
                    run.c.write().await.launch(service).await;
                }
            },
        )
        .await;
        // A drained sender finished its calls and recorded them before it exited.
        sent_once(name, &counts);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_loses_a_node_mid_stream() {
    within("three_node_cluster_loses_a_node_mid_stream", async {
        let c = Cluster::start_on(Some(3)).await;
        let name = "three-node cluster, one node killed and restarted";
        let (_, counts) = stream_through_fault(name, c, 15 * scale(), 2, async |run: &Run| {
            let seen = run.midway().await;
            run.c.write().await.nats_cluster.as_mut().unwrap().kill(0);
            run.fired("node 0 killed", seen);
            // Traffic goes on while the node is down: the other two keep a quorum.
            let seen = run.midway().await;
            let mut c = run.c.write().await;
            c.nats_cluster.as_mut().unwrap().restart(0).await.unwrap();
            drop(c);
            run.fired("node 0 restarted", seen);
        })
        .await;
        sent_once(name, &counts);
    })
    .await;
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

/// Latency from each message's acceptance to its first callback, per text.
fn latencies(sent: &HashMap<String, Instant>, tenant: &FakeTenant) -> Vec<Duration> {
    let mut first: HashMap<String, Instant> = HashMap::new();
    for r in tenant.received() {
        if let Some(t) = r.json()["message"]["content"]["text"].as_str() {
            first.entry(t.to_owned()).or_insert(r.at);
        }
    }
    first
        .iter()
        .filter_map(|(t, at)| Some(at.saturating_duration_since(*sent.get(t)?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_down_for_the_whole_run() {
    within("one_tenant_down_for_the_whole_run", async {
    let started = Instant::now();
    // Retries that outlast the run: the down tenant's events must still be waiting when it
    // comes back (with the short schedule of the other scenarios they would be dead-lettered).
    let long_schedule = format!("0s,200ms,500ms,1s{}", ",2s".repeat(70));
    let c = Cluster::start_with(None, &[("PATCHBAY_WEBHOOK_RETRY_SCHEDULE", &long_schedule)]).await;
    let down = FakeTenant::start().await;
    down.respond_with(|_| (reqwest::StatusCode::SERVICE_UNAVAILABLE, None));
    let (chats, per_chat) = (10_i64, 15 * scale());
    // Each tenant's conversations are spread over a bot on each platform.
    let platforms = i64::try_from(Platform::ALL.len()).unwrap();
    let down_bots = create_bots(&c, &down.url(), platforms, chats).await;
    let up_bots = create_bots(&c, &c.tenant.url(), platforms, chats).await;
    let mut sent: HashMap<String, Instant> = HashMap::new();
    for n in 0..per_chat {
        for chat in 0..chats {
            let text = format!("{chat}:{n}");
            for bot in down_bots
                .iter()
                .chain(&up_bots)
                .filter(|b| b.chats.contains(&chat))
            {
                let hook = bot.webhook(chat, n, &text);
                let ingress = c.url(bot.platform().ingress());
                let status = bot.post(&c.http, &ingress, &hook).await.unwrap();
                assert!(status.is_success(), "{text}: {status}");
            }
            sent.insert(text, Instant::now());
        }
    }
    let total = usize::try_from(chats * per_chat).unwrap();
    let up = c.tenant.wait_for(total, SETTLE).await;
    let (p50, p99) = percentiles(latencies(&sent, &c.tenant));
    println!(
        "healthy tenant: {} events, p50 {p50:?}, p99 {p99:?}; tenant down: {} attempts answered 503, 0 delivered",
        up.len(),
        down.received().len()
    );
    // The down tenant comes back: its backlog arrives, complete and in order.
    let recovered_at = Instant::now();
    down.respond_with(|_| (reqwest::StatusCode::OK, None));
    let deadline = Instant::now() + SETTLE;
    let backlog = loop {
        let ok: Vec<String> = down
            .received()
            .iter()
            .filter(|r| r.at >= recovered_at)
            .filter_map(|r| {
                r.json()["message"]["content"]["text"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        let unique: HashSet<&String> = ok.iter().collect();
        if unique.len() >= total {
            break ok;
        }
        assert!(
            Instant::now() < deadline,
            "backlog incomplete: {} of {total}",
            unique.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut order: HashMap<String, Vec<i64>> = HashMap::new();
    let mut seen = HashSet::new();
    for t in &backlog {
        if seen.insert(t.clone()) {
            let (chat, n) = t.split_once(':').unwrap();
            order
                .entry(chat.to_owned())
                .or_default()
                .push(n.parse().unwrap());
        }
    }
    for (chat, ns) in &order {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "chat {chat} out of order: {ns:?}"
        );
    }
    println!(
        "tenant that was down: backlog of {total} delivered in {:?} after it came back (whole run {:?})",
        recovered_at.elapsed(),
        started.elapsed()
    );
    })
    .await;
}

/// The stages a broadcast passes through: its API, the router that stores, drives and records
/// it, the sender (`outbound-<platform>`, added by each test), the dispatcher of its events,
/// and auth (whose configuration every stage watches).
const BROADCAST_STAGES: [&str; 4] = ["bot-router", "api", "webhook-dispatcher", "auth"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_each_user_once_through_kill_9_of_each_stage() {
    within(
        "a_broadcast_reaches_each_user_once_through_kill_9_of_each_stage",
        broadcast_through_kills(
            Platform::Telegram,
            &[
                // Slow enough that every kill meets the broadcast going out.
                ("PATCHBAY_TELEGRAM_PER_BOT_PER_SECOND", "10"),
                ("PATCHBAY_BROADCAST_WINDOW", "20"),
            ],
        ),
    )
    .await;
}

/// LINE's multicast (the driver's commands of many users, the router's jobs of many, the
/// sender's one call for them) through the same kills: with LINE's retry key derived from the
/// batch, not even the sender's kill costs a second copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_broadcast_in_multicasts_reaches_each_user_once_through_kill_9_of_each_stage() {
    within(
        "a_line_broadcast_in_multicasts_reaches_each_user_once_through_kill_9_of_each_stage",
        broadcast_through_kills(
            Platform::Line,
            &[
                // Multicasts of five users at most, two calls a second: every kill meets the
                // broadcast going out.
                ("PATCHBAY_LINE_PER_CHANNEL_PER_SECOND", "2"),
                ("PATCHBAY_BROADCAST_WINDOW", "5"),
            ],
        ),
    )
    .await;
}

/// A broadcast to `100 × scale` users of `platform` while each of its stages is killed with
/// `kill -9` and relaunched in turn: each user gets it, and a second copy only where the
/// platform takes no idempotency key and the sender was killed just after the platform
/// accepted it.
async fn broadcast_through_kills(platform: Platform, env: &[(&str, &str)]) {
    let users = 100 * scale();
    let mut c = Cluster::start_with(None, env).await;
    let bot = c.create_bot_for(&c.tenant.url(), platform, 0..users).await;
    let http = c.http.clone();
    for chat in 0..users {
        let hook = bot.webhook(chat, 0, &format!("{chat}:0"));
        let ingress = c.url(platform.ingress());
        let answer = bot.post(&http, &ingress, &hook).await;
        assert!(
            answer.is_ok_and(|s| s.is_success()),
            "user {chat} not taken"
        );
    }
    eventually(SETTLE, "every user known", || async {
        (c.seen() >= usize::try_from(users).unwrap()).then_some(())
    })
    .await;
    let created = http
        .post(format!("{}/v1/broadcasts", c.url("api")))
        .bearer_auth(&bot.api_key)
        .json(&json!({"audience": {"all": true},
                      "messages": [{"type": "text", "text": "broadcast"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let copies = |c: &Cluster| {
        let mut per: HashMap<String, usize> = HashMap::new();
        for r in platform.replies(c) {
            if r.text == "broadcast" {
                *per.entry(r.to).or_default() += 1;
            }
        }
        per
    };
    let total = usize::try_from(users).unwrap();
    let stages: Vec<&str> = std::iter::once(platform.outbound())
        .chain(BROADCAST_STAGES)
        .collect();
    let mut killed: HashMap<&str, Instant> = HashMap::new();
    for (i, stage) in stages.iter().enumerate() {
        let target = (i + 1) * total / (stages.len() + 1);
        eventually(
            SETTLE,
            &format!("{target} sent before killing {stage}"),
            || async { (copies(&c).len() >= target).then_some(()) },
        )
        .await;
        killed.insert(*stage, Instant::now());
        c.kill9(stage);
        c.launch(stage).await;
    }
    let state = eventually(SETTLE, "the broadcast completed", || async {
        let answer = http
            .get(format!("{}/v1/broadcasts/{id}", c.url("api")))
            .bearer_auth(&bot.api_key)
            .send()
            .await
            .ok()?;
        let b: Value = answer.json().await.ok()?;
        (b["state"] == "completed").then_some(b)
    })
    .await;
    let per = copies(&c);
    assert_eq!(per.len(), total, "users without the broadcast: {state}");
    assert_eq!(state["counts"]["sent"], users, "{state}");
    assert_eq!(state["counts"]["failed"], 0, "{state}");
    let twice: Vec<(&String, &usize)> = per.iter().filter(|(_, n)| **n > 1).collect();
    match platform {
        // LINE's retry keys make every resend of a push or a multicast a no-op.
        Platform::Line => assert!(twice.is_empty(), "users sent twice: {twice:?}"),
        // Only the sender's kill can cost a second copy: a message the platform accepted in
        // the instants before the kill, whose acceptance the sender had not yet recorded in
        // the sent-messages bucket (Telegram takes no idempotency key). Every other stage's
        // kill is repaired without a second send.
        _ => {
            let sender_killed = killed[platform.outbound()];
            for (to, n) in &twice {
                let chat: i64 = to.parse().unwrap();
                let at: Vec<Instant> = c
                    .telegram
                    .accepted("sendMessage")
                    .into_iter()
                    .filter(|call| call.body["chat_id"] == chat && call.body["text"] == "broadcast")
                    .map(|call| call.at)
                    .collect();
                assert!(
                    **n == 2
                        && at[0] < sender_killed
                        && sender_killed.duration_since(at[0]) < Duration::from_secs(5)
                        && at[1] > sender_killed,
                    "user {to} got the broadcast {n} times, not only around the sender's \
                     kill: {:?} after the kill",
                    at.iter()
                        .map(|t| t.checked_duration_since(sender_killed))
                        .collect::<Vec<_>>()
                );
            }
        }
    }
    // Multicasts LINE recognised by their retry key as sent before.
    let retried = c
        .line
        .calls()
        .iter()
        .filter(|call| call.path == LINE_MULTICAST_PATH && call.status == 409)
        .count();
    println!(
        "{} broadcast through kill -9 of {stages:?}: {total} users, {} sent twice \
         (accepted just before the sender's kill), {retried} multicasts answered 409",
        platform.name(),
        twice.len()
    );
    drop(c);
}
