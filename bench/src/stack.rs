//! The real stack as on Kubernetes: nats-server (file storage), PostgreSQL, and every service
//! as its own process (`patchbay service <name>`), started the way `services/patchbay/tests/
//! chaos.rs` does it. Also CPU and memory of those processes, from `/proc`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use patchbay_testkit::nats::{NatsCluster, NatsServer};
use patchbay_testkit::postgres::PgServer;
use patchbay_testkit::process::{Guarded, spawn};
use serde_json::{Value, json};
use sqlx::Row;

use crate::fakes::Fakes;

/// Start order: owners of state first, HTTP edges last.
pub const SERVICES: [&str; 9] = [
    "auth",
    "bot-router",
    "normaliser",
    "webhook-dispatcher",
    "outbound-telegram",
    "outbound-wechat",
    "ingress-telegram",
    "ingress-wechat",
    "api",
];

/// One statement's totals in `pg_stat_statements`.
#[derive(Debug, Clone, Default)]
pub struct Statement {
    pub query: String,
    pub calls: i64,
    pub exec_ms: f64,
    pub plan_ms: f64,
}

/// nats-server's message counters (`/connz`, `/jsz`), by client connection name.
#[derive(Debug, Clone, Default)]
pub struct NatsCounters {
    /// Connection name → (messages the server received from it, messages it sent to it).
    pub by_name: BTreeMap<String, (u64, u64)>,
    /// JetStream API requests served so far.
    pub api: u64,
    /// Messages in and out over all connections, closed ones included (`/varz`).
    pub total: (u64, u64),
}

/// The NATS installation a stack runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsSetup {
    /// One server, JetStream's default sync (written at once, flushed to disk every two
    /// minutes), R1 streams: what every scenario runs on unless it says otherwise.
    Single,
    /// One server with `sync_interval: always` (every write flushed before it is
    /// acknowledged, the Kubernetes values' setting), R1 streams.
    SyncAlways,
    /// Three servers in a cluster on this machine, R3 streams, as the Kubernetes values deploy
    /// (there, on three machines).
    ClusterR3,
}

impl NatsSetup {
    /// Added to scenario names, and the `nats` field of scenarios and ceiling runs.
    pub fn label(self) -> &'static str {
        match self {
            NatsSetup::Single => "",
            NatsSetup::SyncAlways => "sync always",
            NatsSetup::ClusterR3 => "R3, 3 nats-servers",
        }
    }

    /// Prefix of its run tags (the fakes see every stack's message ids).
    pub fn tag(self) -> &'static str {
        match self {
            NatsSetup::Single => "",
            NatsSetup::SyncAlways => "sa",
            NatsSetup::ClusterR3 => "r3",
        }
    }

    /// Stream replicas.
    pub fn replicas(self) -> usize {
        match self {
            NatsSetup::ClusterR3 => 3,
            _ => 1,
        }
    }
}

/// A client of `url`, one server's or a comma-separated list of a cluster's.
pub async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    let servers: Vec<&str> = url.split(',').map(str::trim).collect();
    Ok(async_nats::connect(servers.as_slice()).await?)
}

/// A single server or a cluster.
pub enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    async fn start(setup: NatsSetup) -> anyhow::Result<Self> {
        Ok(match setup {
            NatsSetup::Single => Nats::Single(NatsServer::start_monitored().await?),
            NatsSetup::SyncAlways => Nats::Single(NatsServer::start_monitored_sync_always().await?),
            NatsSetup::ClusterR3 => Nats::Cluster(NatsCluster::start(3).await?),
        })
    }

    /// What `PATCHBAY_NATS_URL` takes (every node of a cluster).
    pub fn url(&self) -> String {
        match self {
            Nats::Single(n) => n.url(),
            Nats::Cluster(c) => c.urls(),
        }
    }

    /// Every server's monitoring URL.
    fn monitor_urls(&self) -> Vec<String> {
        match self {
            Nats::Single(n) => vec![n.monitor_url()],
            Nats::Cluster(c) => c.monitor_urls(),
        }
    }
}

/// The running installation.
pub struct Stack {
    pub nats: Nats,
    /// Which NATS installation.
    pub setup: NatsSetup,
    _pg: PgServer,
    /// To PostgreSQL's `pg_stat_statements`.
    pub pg: sqlx::PgPool,
    pub dir: tempfile::TempDir,
    pub procs: Vec<(&'static str, Guarded)>,
    ports: HashMap<&'static str, u16>,
    pub admin: String,
    pub http: reqwest::Client,
    /// The services' subject prefix.
    pub prefix: String,
}

/// A bot with its Telegram channel (and its WeChat channel).
pub struct Bot {
    pub id: String,
    pub api_key: String,
    pub channel_id: String,
    pub webhook_url: String,
    pub secret: String,
    pub wechat: WechatChannel,
}

/// The bot's WeChat Official Account channel, in safe mode (every webhook AES-encrypted).
pub struct WechatChannel {
    /// `<ingress-wechat>/webhooks/wechat/<channel>`, without the signed query.
    pub webhook_url: String,
    pub app_id: String,
    /// The server configuration's Token, which signs every webhook.
    pub token: String,
    /// The EncodingAESKey, which encrypts them.
    pub encoding_aes_key: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The program that runs a service: `patchbay` beside this binary (or beside its parent
/// directory, for test executables in `deps/`), else this binary itself, whose hidden
/// `service <name>` subcommand runs the same code as `patchbay service <name>`.
pub fn service_program(force_self: bool) -> anyhow::Result<(PathBuf, &'static str)> {
    let me = std::env::current_exe()?;
    if !force_self && let Some(dir) = me.parent() {
        for d in [Some(dir), dir.parent()].into_iter().flatten() {
            let p = d.join("patchbay");
            if p.is_file() {
                return Ok((p, "patchbay"));
            }
        }
    }
    Ok((me, "patchbay-bench"))
}

impl Stack {
    /// Starts everything on `setup` and waits until every service is ready.
    pub async fn start(fakes: &Fakes, force_self: bool, setup: NatsSetup) -> anyhow::Result<Self> {
        Self::start_with(fakes, force_self, setup, &[]).await
    }

    /// [`Stack::start`] with settings of its own (`extra` overrides the benchmark's).
    pub async fn start_with(
        fakes: &Fakes,
        force_self: bool,
        setup: NatsSetup,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        // Durable, as in production (the tests' PostgreSQL skips fsync): every commit waits
        // for its WAL flush, which is what group commit saves.
        const DURABLE: [&str; 3] = ["fsync=on", "synchronous_commit=on", "full_page_writes=on"];
        const STATS: [&str; 2] = [
            "shared_preload_libraries=pg_stat_statements",
            "pg_stat_statements.track_planning=on",
        ];
        let with_stats: Vec<&str> = DURABLE.iter().chain(&STATS).copied().collect();
        let (pg, nats) = tokio::join!(PgServer::start_with(&with_stats), Nats::start(setup));
        let pg = match pg {
            Ok(pg) => pg,
            Err(e) => {
                eprintln!("PostgreSQL without pg_stat_statements (no statement report): {e}");
                PgServer::start_with(&DURABLE).await.context("PostgreSQL")?
            }
        };
        let stats = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&pg.url())
            .await
            .context("connecting to PostgreSQL")?;
        if let Err(e) = sqlx::query("create extension if not exists pg_stat_statements")
            .execute(&stats)
            .await
        {
            eprintln!("no pg_stat_statements (no statement report): {e}");
        }
        let nats = nats.context("nats-server")?;
        let admin = format!("admin-{}", patchbay_testkit::unique_prefix());
        let master = patchbay_config::MasterKey::generate_base64()
            .map_err(|e| anyhow::anyhow!("master key: {e}"))?;
        let prefix = patchbay_testkit::unique_prefix();
        let env: Vec<(&str, String)> = vec![
            ("PATCHBAY_NATS_URL", nats.url()),
            ("PATCHBAY_NATS_PREFIX", prefix.clone()),
            ("PATCHBAY_NATS_REPLICAS", setup.replicas().to_string()),
            ("PATCHBAY_DATABASE_URL", pg.url()),
            ("PATCHBAY_MASTER_KEY", master),
            ("PATCHBAY_ADMIN_TOKEN", admin.clone()),
            ("PATCHBAY_ALLOW_PRIVATE_CALLBACKS", "true".into()),
            ("PATCHBAY_LOG_FORMAT", "text".into()),
            ("PATCHBAY_LOG_LEVEL", "warn".into()),
            ("PATCHBAY_TELEGRAM_API_BASE_URL", fakes.telegram_url.clone()),
            // The fake platform has no rate limits; Patchbay's pacing would be the bottleneck.
            ("PATCHBAY_TELEGRAM_PER_BOT_PER_SECOND", "1000000".into()),
            ("PATCHBAY_TELEGRAM_PER_CHAT_PER_SECOND", "1000000".into()),
            ("PATCHBAY_TELEGRAM_PER_CHAT_BURST", "1000000".into()),
            ("PATCHBAY_WECHAT_API_BASE_URL", fakes.wechat_url.clone()),
            ("PATCHBAY_WECHAT_PER_ACCOUNT_PER_SECOND", "1000000".into()),
            ("PATCHBAY_WECHAT_PER_USER_PER_SECOND", "1000000".into()),
            ("PATCHBAY_WECHAT_PER_USER_BURST", "1000000".into()),
            // The load generator is one bot: its API request limit must not be what is measured.
            ("PATCHBAY_API_RATE_PER_SECOND", "1000000".into()),
            ("PATCHBAY_API_RATE_BURST", "1000000".into()),
            // Every webhook comes from the load generator's one address.
            ("PATCHBAY_INGRESS_IP_RATE_PER_SECOND", "1000000".into()),
            ("PATCHBAY_INGRESS_IP_RATE_BURST", "1000000".into()),
            // All load is one bot on one channel: the backlog an overloaded run builds up is
            // measured as latency, not refused at that bot's bound.
            ("PATCHBAY_PIPELINE_BACKLOG_PER_KEY", "1000000".into()),
            ("PATCHBAY_SHUTDOWN_GRACE_MS", "2000".into()),
        ];
        let env: Vec<(&str, String)> = env.into_iter().chain(extra.iter().cloned()).collect();
        let (program, how) = service_program(force_self)?;
        eprintln!("services run as `{} service <name>`", program.display());
        let mut stack = Self {
            nats,
            setup,
            _pg: pg,
            pg: stats,
            dir: tempfile::Builder::new().prefix("pb-bench-").tempdir()?,
            procs: Vec::new(),
            ports: HashMap::new(),
            admin,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .build()?,
            prefix,
        };
        let _ = how;
        for s in SERVICES {
            let port = free_port()?;
            stack.ports.insert(s, port);
            let mut cmd = Command::new(&program);
            cmd.args(["service", s])
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .env("PATCHBAY_HTTP_ADDR", format!("127.0.0.1:{port}"));
            let log = stack.dir.path().join(format!("{s}.log"));
            stack.procs.push((s, spawn(cmd, &log, None)?));
            stack.wait_ready(s).await?;
        }
        Ok(stack)
    }

    /// Every statement PostgreSQL ran so far (`pg_stat_statements`), by query id: the query,
    /// calls, execution and planning milliseconds. The benchmark's own queries are left out.
    pub async fn statements(&self) -> BTreeMap<i64, Statement> {
        let rows = sqlx::query(
            "select queryid, query, calls, total_exec_time, total_plan_time
             from pg_stat_statements
             where query not like '%pg_stat_statements%' and queryid is not null",
        )
        .fetch_all(&self.pg)
        .await
        .unwrap_or_default();
        rows.iter()
            .map(|r| {
                (
                    r.get("queryid"),
                    Statement {
                        query: r.get("query"),
                        calls: r.get("calls"),
                        exec_ms: r.get("total_exec_time"),
                        plan_ms: r.get("total_plan_time"),
                    },
                )
            })
            .collect()
    }

    /// PostgreSQL's background work so far: checkpoints (timed and requested) and autovacuum
    /// plus autoanalyze runs over every table, to tell a scenario's latency spikes from its
    /// own work.
    pub async fn background(&self) -> (i64, i64) {
        let checkpoints: i64 = sqlx::query_scalar(
            "select (checkpoints_timed + checkpoints_req)::bigint from pg_stat_bgwriter",
        )
        .fetch_one(&self.pg)
        .await
        .unwrap_or(0);
        let vacuums: i64 = sqlx::query_scalar(
            "select coalesce(sum(autovacuum_count + autoanalyze_count), 0)::bigint
             from pg_stat_all_tables",
        )
        .fetch_one(&self.pg)
        .await
        .unwrap_or(0);
        (checkpoints, vacuums)
    }

    /// Stores `users` users of `bot` on its channel, each with a conversation and a message
    /// (straight into the router's tables, as years of traffic would leave them), then
    /// analyzes the tables, as autovacuum would have.
    pub async fn seed_users(&self, bot: &Bot, users: i64) -> anyhow::Result<()> {
        self.seed_users_tagged(bot, users, "").await
    }

    /// [`Stack::seed_users`] with ids and chats marked `tag`, so several bots can be seeded.
    pub async fn seed_users_tagged(&self, bot: &Bot, users: i64, tag: &str) -> anyhow::Result<()> {
        sqlx::query(
            "insert into router.users (id, bot_id, channel_id, platform, platform_user_id,
                                       address, display_name, subscribed, last_seen_at)
             select 'usr_seed' || $4 || g, $1, $2, 'telegram', 'seed' || $4 || g,
                    'seed' || $4 || g, 'User ' || g, true, now() - make_interval(secs => g)
             from generate_series(1, $3) g",
        )
        .bind(&bot.id)
        .bind(&bot.channel_id)
        .bind(users)
        .bind(tag)
        .execute(&self.pg)
        .await
        .context("seeding users")?;
        for sql in [
            "insert into router.conversations (id, bot_id, user_id, last_inbound_at)
             select 'cnv_seed' || $3 || g, $1, 'usr_seed' || $3 || g,
                    now() - make_interval(secs => g)
             from generate_series(1, $2) g",
            "insert into router.messages (id, conversation_id, bot_id, direction, content,
                                          status, created_at)
             select 'msg_seed' || $3 || g, 'cnv_seed' || $3 || g, $1, 'inbound',
                    '{\"type\": \"text\", \"text\": \"hello\"}', 'received',
                    now() - make_interval(secs => g)
             from generate_series(1, $2) g",
        ] {
            sqlx::query(sql)
                .bind(&bot.id)
                .bind(users)
                .bind(tag)
                .execute(&self.pg)
                .await
                .context("seeding conversations")?;
        }
        // Vacuumed too, as a long-lived installation's tables are: else autovacuum works
        // through the million fresh rows during the first measurement after the seeding (it
        // ran in 23–47 % of the broadcast scenario's samples of its loop without a broadcast).
        sqlx::raw_sql("vacuum analyze router.users, router.conversations, router.messages")
            .execute(&self.pg)
            .await
            .context("vacuum analyze")?;
        Ok(())
    }

    /// `http://127.0.0.1:<port>` of a service.
    pub fn url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[service])
    }

    async fn wait_ready(&self, service: &str) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.url(service));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join(format!("{service}.log")))
                    .unwrap_or_default();
                bail!("{service} not ready after 60 s:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a bot whose callback is the fake tenant, its Telegram channel and its WeChat
    /// channel (safe mode, on the fake WeChat API).
    pub async fn create_bot(&self, fakes: &Fakes) -> anyhow::Result<Bot> {
        self.create_bot_with_token(fakes, "42:bench").await
    }

    /// [`Stack::create_bot`] whose Telegram channel has `token`.
    pub async fn create_bot_with_token(&self, fakes: &Fakes, token: &str) -> anyhow::Result<Bot> {
        let api = self.url("api");
        let bot: Value = self
            .http
            .post(format!("{api}/admin/v1/bots"))
            .bearer_auth(&self.admin)
            .json(&json!({"name": "bench", "webhook": {"url": fakes.tenant_url}}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let bot_id = bot["id"].as_str().context("bot id")?.to_owned();
        let api_key = bot["api_key"].as_str().context("api key")?.to_owned();
        let secret = "bench_secret".to_owned();
        let ch: Value = self
            .http
            .post(format!("{api}/admin/v1/bots/{bot_id}/channels"))
            .bearer_auth(&self.admin)
            .json(&json!({"platform": "telegram",
                          "credentials": {"bot_token": token, "secret_token": secret},
                          "api_base_url": fakes.telegram_url}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let (wx_token, wx_key) = (
            patchbay_wechat::fixtures::TOKEN,
            patchbay_wechat::fixtures::AES_KEY,
        );
        let wx: Value = self
            .http
            .post(format!("{api}/admin/v1/bots/{bot_id}/channels"))
            .bearer_auth(&self.admin)
            .json(&json!({"platform": "wechat",
                          "credentials": {"app_id": crate::fakes::WECHAT_APP_ID,
                                          "app_secret": crate::fakes::WECHAT_APP_SECRET,
                                          "token": wx_token,
                                          "encoding_aes_key": wx_key},
                          "api_base_url": fakes.wechat_url}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let wechat = WechatChannel {
            webhook_url: format!(
                "{}{}",
                self.url("ingress-wechat"),
                wx["webhook_path"].as_str().context("wechat webhook path")?
            ),
            app_id: crate::fakes::WECHAT_APP_ID.to_owned(),
            token: wx_token.to_owned(),
            encoding_aes_key: wx_key.to_owned(),
        };
        Ok(Bot {
            id: bot_id.clone(),
            api_key,
            channel_id: ch["id"].as_str().context("channel id")?.to_owned(),
            webhook_url: format!(
                "{}{}",
                self.url("ingress-telegram"),
                ch["webhook_path"].as_str().context("webhook path")?
            ),
            secret,
            wechat,
        })
    }

    /// Every process to account for: the services, nats-server and PostgreSQL (with its
    /// backends), and this process (load generator and fakes).
    pub fn accounts(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .procs
            .iter()
            .map(|(n, g)| ((*n).to_owned(), g.0.id()))
            .collect();
        let me = std::process::id();
        for (pid, comm) in children(me) {
            if comm == "nats-server" || comm == "postgres" {
                v.push((comm, pid));
            }
        }
        v.push(("bench (load + fakes)".into(), me));
        v
    }

    /// nats-server's counters now: what each open connection sent and received, summed by
    /// connection name, and JetStream API requests (over every server of a cluster, route
    /// traffic included in the totals).
    pub async fn nats_counters(&self) -> NatsCounters {
        let mut counters = NatsCounters::default();
        for base in self.nats.monitor_urls() {
            let get = |path: &str| {
                let url = format!("{base}{path}");
                let http = self.http.clone();
                async move {
                    match http.get(url).send().await {
                        Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default(),
                        Err(_) => serde_json::Value::Null,
                    }
                }
            };
            let (connz, jsz, varz) =
                tokio::join!(get("/connz?limit=100000"), get("/jsz"), get("/varz"));
            for c in connz["connections"].as_array().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or("(unnamed)").to_owned();
                let e = counters.by_name.entry(name).or_default();
                e.0 += c["in_msgs"].as_u64().unwrap_or(0);
                e.1 += c["out_msgs"].as_u64().unwrap_or(0);
            }
            counters.api += jsz["api"]["total"].as_u64().unwrap_or(0);
            counters.total.0 += varz["in_msgs"].as_u64().unwrap_or(0);
            counters.total.1 += varz["out_msgs"].as_u64().unwrap_or(0);
        }
        counters
    }

    /// The `/metrics` text of every service.
    pub async fn scrape(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for s in SERVICES {
            let text = match self
                .http
                .get(format!("{}/metrics", self.url(s)))
                .send()
                .await
            {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            out.push((s, text));
        }
        out
    }
}

/// Direct children of `pid`: (pid, comm).
fn children(pid: u32) -> Vec<(u32, String)> {
    all_procs()
        .into_iter()
        .filter(|(_, ppid, _)| *ppid == pid)
        .map(|(p, _, c)| (p, c))
        .collect()
}

/// Every process: (pid, ppid, comm).
fn all_procs() -> Vec<(u32, u32, String)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let st = stat(pid)?;
            Some((pid, st.ppid, st.comm))
        })
        .collect()
}

struct Stat {
    comm: String,
    ppid: u32,
    /// utime + stime, and cutime + cstime, in clock ticks.
    own: u64,
    reaped: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let f: Vec<&str> = text[close + 2..].split(' ').collect();
    // After the comm: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some(Stat {
        comm,
        ppid: u32::try_from(n(1)).ok()?,
        own: n(11) + n(12),
        reaped: n(13) + n(14),
    })
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds used so far by `pid` (with `tree`: and every descendant, live or reaped).
pub fn cpu_seconds(pid: u32, tck: f64, tree: bool) -> f64 {
    let procs = if tree { all_procs() } else { Vec::new() };
    let mut todo = vec![pid];
    let mut ticks = 0u64;
    while let Some(p) = todo.pop() {
        if let Some(st) = stat(p) {
            ticks += st.own + st.reaped;
        }
        todo.extend(
            procs
                .iter()
                .filter(|(_, ppid, _)| *ppid == p)
                .map(|(c, _, _)| *c),
        );
    }
    #[allow(clippy::cast_precision_loss)]
    let t = ticks as f64;
    t / tck
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM:`, `VmRSS:`); 0 when it cannot be read.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// Resident set (VmRSS) of `pid` now, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let k = status_kib(pid, "VmRSS:") as f64;
    k / 1024.0
}

/// Peak resident set (VmHWM) of `pid` (with `tree`: plus its descendants'), in MiB.
pub fn peak_rss_mib(pid: u32, tree: bool) -> f64 {
    let procs = if tree { all_procs() } else { Vec::new() };
    let mut todo = vec![pid];
    let mut kib = 0u64;
    while let Some(p) = todo.pop() {
        kib += status_kib(p, "VmHWM:");
        todo.extend(
            procs
                .iter()
                .filter(|(_, ppid, _)| *ppid == p)
                .map(|(c, _, _)| *c),
        );
    }
    #[allow(clippy::cast_precision_loss)]
    let k = kib as f64;
    k / 1024.0
}

/// The machine's CPU time by kind, from the first line of `/proc/stat` (in ticks): what the
/// host took (`steal`), waiting for the disk (`iowait`), idle, and all of it.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCpu {
    pub steal: u64,
    pub iowait: u64,
    pub idle: u64,
    pub total: u64,
}

impl HostCpu {
    /// Now (zeros where `/proc/stat` cannot be read).
    pub fn now() -> Self {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| Self::parse(s.lines().next()?))
            .unwrap_or_default()
    }

    /// Parses the `cpu  user nice system idle iowait irq softirq steal ...` line.
    pub fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let v: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
        // guest and guest_nice (9th and 10th) are already counted in user and nice.
        let total = v.iter().take(8).sum();
        Some(Self {
            idle: *v.get(3)?,
            iowait: *v.get(4)?,
            steal: v.get(7).copied().unwrap_or(0),
            total,
        })
    }

    /// Percentages of the time between `before` and `self`: steal, iowait, idle.
    pub fn since(&self, before: &Self) -> (f64, f64, f64) {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return (0.0, 0.0, 0.0);
        }
        #[allow(clippy::cast_precision_loss)]
        let pct = |a: u64, b: u64| a.saturating_sub(b) as f64 / total as f64 * 100.0;
        (
            pct(self.steal, before.steal),
            pct(self.iowait, before.iowait),
            pct(self.idle, before.idle),
        )
    }
}

/// The page cache's dirty data: `Dirty` plus `Writeback` of `/proc/meminfo`, in bytes (0
/// where it cannot be read).
pub fn dirty_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo").map_or(0, |m| dirty_in_meminfo(&m))
}

/// `Dirty` plus `Writeback` of a `/proc/meminfo` text, in bytes.
fn dirty_in_meminfo(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .filter_map(|l| {
            let (key, rest) = l.split_once(':')?;
            (key == "Dirty" || key == "Writeback").then_some(rest)
        })
        .filter_map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .sum::<u64>()
        * 1024
}

/// Writes the page cache's dirty data to disk (`sync`) and answers how much there was and how
/// long it took. Between scenarios, so that what one left for the kernel to write back (a
/// saturated run leaves 100 MB and more; the kernel writes data back once it is 30 s old) is
/// written before the next starts rather than in the middle of it, where it queues
/// PostgreSQL's WAL flushes behind it on a disk the two share.
pub fn flush_page_cache() -> (u64, Duration) {
    let dirty = dirty_bytes();
    let started = std::time::Instant::now();
    let _ = Command::new("sync").status();
    (dirty, started.elapsed())
}

/// Bytes written to the block device that holds `path`, so far (`/proc/diskstats`; 0 where
/// that cannot be read, as for a file system that is not on a block device).
pub fn disk_written_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(dev) = std::fs::metadata(path).map(|m| m.dev()) else {
        return 0;
    };
    // The kernel's encoding of a device number (glibc's major() and minor()).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    std::fs::read_to_string("/proc/diskstats")
        .ok()
        .and_then(|s| written_in_diskstats(&s, major, minor))
        .unwrap_or(0)
}

/// Bytes written to device `major`:`minor` according to a `/proc/diskstats` text: its tenth
/// field counts sectors of 512 bytes, whatever the device's own sector size.
fn written_in_diskstats(diskstats: &str, major: u64, minor: u64) -> Option<u64> {
    diskstats.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let here =
            f.first()?.parse::<u64>().ok()? == major && f.get(1)?.parse::<u64>().ok()? == minor;
        here.then(|| f.get(9)?.parse::<u64>().ok().map(|s| s * 512))?
    })
}

#[cfg(test)]
mod tests {
    use super::{HostCpu, dirty_in_meminfo, written_in_diskstats};

    #[test]
    fn steal_iowait_and_idle_are_shares_of_all_the_time_between_two_readings() {
        let a = HostCpu::parse("cpu  100 0 50 800 20 0 10 20 0 0").unwrap();
        let b = HostCpu::parse("cpu  200 0 100 1000 70 0 10 120 5 0").unwrap();
        assert_eq!(a.total, 1000);
        // 100 user + 50 system + 200 idle + 50 iowait + 100 steal = 500; guest is inside user.
        let (steal, iowait, idle) = b.since(&a);
        assert!((steal - 20.0).abs() < 1e-9, "{steal}");
        assert!((iowait - 10.0).abs() < 1e-9, "{iowait}");
        assert!((idle - 40.0).abs() < 1e-9, "{idle}");
        assert!(HostCpu::parse("cpu0 1 2 3 4 5 6 7 8").is_none());
        assert_eq!(b.since(&b), (0.0, 0.0, 0.0));
    }

    #[test]
    fn dirty_data_is_what_waits_for_writeback_and_what_is_being_written() {
        let meminfo = "MemTotal:       24000000 kB\nDirty:             1500 kB\n\
                       Writeback:          12 kB\nWritebackTmp:      999 kB\n";
        assert_eq!(dirty_in_meminfo(meminfo), (1500 + 12) * 1024);
        assert_eq!(dirty_in_meminfo(""), 0);
    }

    #[test]
    fn bytes_written_are_the_devices_sectors_written_times_512() {
        let diskstats = " 254       0 vda 1000 0 2000 300 4000 0 8192 500 0 600 800 0 0 0 0\n\
                         254       1 vda1 10 0 20 3 40 0 64 5 0 6 8 0 0 0 0\n";
        assert_eq!(written_in_diskstats(diskstats, 254, 0), Some(8192 * 512));
        assert_eq!(written_in_diskstats(diskstats, 254, 1), Some(64 * 512));
        assert_eq!(written_in_diskstats(diskstats, 8, 0), None);
    }
}
