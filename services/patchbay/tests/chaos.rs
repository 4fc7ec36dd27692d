//! Chaos tests with real processes: every service runs as its own `patchbay service <name>`
//! process against a real nats-server and PostgreSQL, a stream of numbered messages flows
//! across many conversations, and faults are injected for real (SIGKILL, a NATS restart, a
//! flaky platform). At the end, counted like NATS's own chaos test, at the fake tenant and the
//! fake Telegram API: none lost, no event delivered under two `webhook-id`s, order kept per
//! conversation. Every bot has its own Telegram token, which the fake accepts only for the
//! chats of that bot's users, so a reply sent with the wrong credentials is refused (and
//! counted). The messages go out in waves, one more than there are faults: each fault fires
//! once the tenant has seen half of the wave in flight (on progress, never after a fixed
//! sleep), and the next wave is released as it fires, so every fault meets work in flight and
//! traffic that follows it; the run checks both.
//!
//! Size: `PATCHBAY_CHAOS_SCALE` (default 1: 20 conversations × 15 messages, a few minutes for
//! the whole file); `make chaos` runs with 10.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use patchbay_telegram::fixtures;
use patchbay_testkit::eventually;
use patchbay_testkit::nats::{NatsCluster, NatsServer};
use patchbay_testkit::postgres::PgServer;
use patchbay_testkit::process::{Guarded, spawn};
use patchbay_testkit::telegram::FakeTelegram;
use patchbay_testkit::tenant::FakeTenant;
use serde_json::{Value, json};

const SERVICES: [&str; 7] = [
    "auth",
    "bot-router",
    "normaliser",
    "webhook-dispatcher",
    "outbound-telegram",
    "ingress-telegram",
    "api",
];
const SETTLE: Duration = Duration::from_secs(120);

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
    nats: Option<NatsServer>,
    nats_cluster: Option<NatsCluster>,
    _pg: PgServer,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    procs: HashMap<String, Guarded>,
    ports: HashMap<String, u16>,
    tenant: FakeTenant,
    telegram: FakeTelegram,
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
        let (pg, tenant, telegram) = tokio::join!(
            PgServer::start(),
            FakeTenant::start(),
            FakeTelegram::start()
        );
        let pg = pg.unwrap();
        let (nats, nats_cluster, url, replicas) = match cluster_size {
            None => {
                let n = NatsServer::start().await.unwrap();
                let url = n.url();
                (Some(n), None, url, 1)
            }
            Some(size) => {
                let c = NatsCluster::start(size).await.unwrap();
                let url = c.urls();
                (None, Some(c), url, size)
            }
        };
        let admin = format!("admin-{}", patchbay_testkit::unique_prefix());
        let env = vec![
            ("PATCHBAY_NATS_URL", url),
            ("PATCHBAY_NATS_REPLICAS", replicas.to_string()),
            ("PATCHBAY_NATS_PREFIX", patchbay_testkit::unique_prefix()),
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
            ("PATCHBAY_TELEGRAM_API_BASE_URL", telegram.base_url()),
            ("PATCHBAY_TELEGRAM_PER_BOT_PER_SECOND", "10000".into()),
            ("PATCHBAY_TELEGRAM_PER_CHAT_PER_SECOND", "10000".into()),
            ("PATCHBAY_TELEGRAM_PER_CHAT_BURST", "10000".into()),
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
            nats,
            nats_cluster,
            _pg: pg,
            dir: tempfile::tempdir().unwrap(),
            env,
            procs: HashMap::new(),
            ports: HashMap::new(),
            tenant,
            telegram,
            http: reqwest::Client::new(),
        };
        for s in SERVICES {
            c.launch(s).await;
        }
        c
    }

    fn url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[service])
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
        self.procs.remove(service).unwrap().terminate().unwrap()
    }

    async fn create_bot(&self, chats: std::ops::Range<i64>) -> ChaosBot {
        self.create_bot_for(&self.tenant.url(), chats).await
    }

    /// A bot calling `callback`, with a Telegram channel of its own token, whose users are the
    /// chats `chat_id(chats)`: the fake Telegram accepts the token for those chats only.
    async fn create_bot_for(&self, callback: &str, chats: std::ops::Range<i64>) -> ChaosBot {
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
        let token = format!(
            "{}:chaos{}",
            chats.start + 1,
            patchbay_testkit::unique_prefix()
        );
        let secret = format!("sec_{}", patchbay_testkit::unique_prefix());
        self.telegram.add_bot(&token);
        for chat in chats.clone() {
            self.telegram.open_chat(&token, chat_id(chat));
        }
        let ch: Value = self
            .http
            .post(format!("{api}/admin/v1/bots/{bot_id}/channels"))
            .bearer_auth(&admin)
            .json(&json!({"platform": "telegram",
                          "credentials": {"bot_token": token, "secret_token": secret}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ChaosBot {
            path: ch["webhook_path"].as_str().unwrap().to_owned(),
            secret,
            chats,
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

/// A bot of the run: where its updates go and which conversations are its own.
struct ChaosBot {
    path: String,
    secret: String,
    chats: std::ops::Range<i64>,
}

/// The Telegram chat (and user) id of conversation `chat`.
fn chat_id(chat: i64) -> i64 {
    1000 + chat
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
        self.faults.lock().unwrap().push(Fault {
            what: what.into(),
            seen_before,
            released_before: self.before(wave + 1),
        });
        self.phase.send_replace((wave + 1).min(self.waves));
    }
}

/// Posts every update like Telegram does: one chat's updates in order, each once its wave is
/// released, retried until 200 for at most [`SETTLE`] (an ingress that never takes an update
/// fails the test).
async fn send_all(
    c: Shared,
    bot: ChaosBot,
    per_chat: i64,
    waves: usize,
    phase: tokio::sync::watch::Receiver<usize>,
) {
    let http = c.read().await.http.clone();
    let sends = bot.chats.clone().map(|chat| {
        let (c, http, path, secret) = (c.clone(), http.clone(), bot.path.clone(), bot.secret.clone());
        let mut phase = phase.clone();
        async move {
            for n in 0..per_chat {
                let wave = Run::wave_of(per_chat, waves, n);
                phase.wait_for(|p| *p >= wave).await.unwrap();
                let text = format!("{chat}:{n}");
                let update = fixtures::text_update(1 + chat * 100_000 + n, chat_id(chat), &text);
                let deadline = Instant::now() + SETTLE;
                loop {
                    let url = format!("{}{path}", c.read().await.url("ingress-telegram"));
                    let answer = http
                        .post(url)
                        .header("X-Telegram-Bot-Api-Secret-Token", &secret)
                        .json(&update)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await
                        .map(|r| r.status());
                    if answer.as_ref().is_ok_and(|s| s.is_success()) {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the ingress did not take update {text} in {SETTLE:?}; last answer: {answer:?}"
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
    reply_duplicates: usize,
    replies_out_of_order: usize,
    /// Telegram calls refused for their credentials (401, or 403 for a chat of another bot).
    refused_credentials: usize,
    /// The first few reorderings, for the report.
    reorders: Vec<String>,
}

/// Waits until every message reached the tenant and every reply reached Telegram, then counts.
async fn settle(c: &Cluster, chats: i64, per_chat: i64) -> Counts {
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
        let replies: HashSet<String> = c
            .telegram
            .accepted("sendMessage")
            .iter()
            .filter_map(|call| call.body["text"].as_str().map(str::to_owned))
            .collect();
        if events.len() >= total && replies.len() >= total {
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
            panic!(
                "not settled after {SETTLE:?}: {} of {total} events, {} of {total} replies",
                events.len(),
                replies.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut counts = Counts {
        sent: total,
        ..Counts::default()
    };
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    let mut order: HashMap<String, Vec<i64>> = HashMap::new();
    let mut seen = HashSet::new();
    for r in c.tenant.received() {
        let text = r.json()["message"]["content"]["text"]
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
        let (chat, n) = text.split_once(':').unwrap();
        order
            .entry(chat.to_owned())
            .or_default()
            .push(n.parse().unwrap());
    }
    counts.delivered = seen.len();
    counts.split_ids = ids.values().filter(|s| s.len() > 1).count();
    counts.out_of_order = inversions("event", &order, &mut counts.reorders);
    let mut reply_order: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut seen = HashSet::new();
    for call in c.telegram.accepted("sendMessage") {
        let text = call.body["text"].as_str().unwrap_or_default().to_owned();
        if !seen.insert(text.clone()) {
            counts.reply_duplicates += 1;
            continue;
        }
        let n: i64 = text.rsplit(':').next().unwrap().parse().unwrap();
        reply_order
            .entry(call.body["chat_id"].as_i64().unwrap())
            .or_default()
            .push(n);
    }
    counts.replies = seen.len();
    counts.replies_out_of_order = inversions("reply", &reply_order, &mut counts.reorders);
    counts.refused_credentials = c
        .telegram
        .calls()
        .iter()
        .filter(|call| call.status == 401 || call.status == 403)
        .count();
    counts
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
        "{name}: a reply went out with another bot's token"
    );
}

/// The tenant echoes every message, so each one also produces a reply at Telegram.
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

/// Streams 20 conversations × `per_chat` numbered messages through `c` (the tenant echoing
/// each) in `faults + 1` waves while `fault` injects the faults (see [`Run`]), waits until
/// everything settled and checks the invariants, and that every fault met messages not yet
/// seen and messages not yet sent. Returns the cluster and the counts for scenario-specific
/// checks.
async fn stream_through_fault(
    name: &str,
    c: Cluster,
    per_chat: i64,
    faults: usize,
    fault: impl AsyncFnOnce(&Run),
) -> (Shared, Counts) {
    stream_through_fault_on(name, c, 1, per_chat, faults, fault).await
}

/// [`stream_through_fault`] with the 20 conversations spread over `bots` bots (so over the
/// streams' partitions).
async fn stream_through_fault_on(
    name: &str,
    c: Cluster,
    bots: i64,
    per_chat: i64,
    faults: usize,
    fault: impl AsyncFnOnce(&Run),
) -> (Shared, Counts) {
    let started = Instant::now();
    echo(&c.tenant);
    let chats = 20;
    let per_bot = chats / bots;
    let mut created = Vec::new();
    for b in 0..bots {
        created.push(c.create_bot(b * per_bot..(b + 1) * per_bot).await);
    }
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
    let counts = settle(&*c.read().await, chats, per_chat).await;
    if counts.out_of_order + counts.replies_out_of_order + counts.split_ids > 0 {
        keep_logs(&*c.read().await, name);
    }
    check(name, &counts, started);
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

/// No sender process died in this scenario, so nothing excuses sending a reply twice: the
/// platform's acceptance is recorded (and remembered) before the status is reported.
fn sent_once(name: &str, counts: &Counts) {
    assert_eq!(
        counts.reply_duplicates, 0,
        "{name}: a reply was sent to the platform twice"
    );
}

/// Copies the processes' logs somewhere that outlives the test, and says where.
fn keep_logs(c: &Cluster, name: &str) {
    let dest = std::env::temp_dir().join(format!(
        "patchbay-chaos-{}-{}",
        name.replace(|ch: char| !ch.is_ascii_alphanumeric(), "-"),
        std::process::id()
    ));
    let _ = std::fs::create_dir_all(&dest);
    for entry in std::fs::read_dir(c.dir.path()).unwrap().flatten() {
        let _ = std::fs::copy(entry.path(), dest.join(entry.file_name()));
    }
    eprintln!("chaos {name}: logs kept in {}", dest.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_each_service_in_turn_mid_stream() {
    let c = Cluster::start().await;
    stream_through_fault(
        "kill -9 each service",
        c,
        15 * scale(),
        SERVICES.len(),
        async |run: &Run| {
            for service in SERVICES {
                let seen = run.midway().await;
                run.c.write().await.kill9(service);
                run.fired(format!("kill -9 {service}"), seen);
                run.c.write().await.launch(service).await;
            }
        },
    )
    .await;
}

/// The JetStream workers: the services that may run as several replicas.
const WORKERS: [&str; 4] = [
    "normaliser",
    "bot-router",
    "webhook-dispatcher",
    "outbound-telegram",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_each_worker_one_of_each_killed_mid_stream() {
    let mut c = Cluster::start().await;
    for w in WORKERS {
        c.launch_as(&format!("{w}#2"), w).await;
    }
    stream_through_fault_on(
        "two replicas of each worker, one of each killed",
        c,
        10,
        15 * scale(),
        WORKERS.len(),
        async |run: &Run| {
            for w in WORKERS {
                let seen = run.midway().await;
                run.c.write().await.kill9(w);
                run.fired(format!("kill -9 {w}"), seen);
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_mid_stream() {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_platform_with_429_and_5xx() {
    let c = Cluster::start().await;
    // 10 % of sends answered 429 (retry_after 1 s), 10 % answered 500.
    c.telegram.fail_randomly(100, 100);
    let (c, counts) =
        stream_through_fault("flaky platform", c, 10 * scale(), 0, async |_: &Run| {}).await;
    sent_once("flaky platform", &counts);
    let all = c.read().await.telegram.calls_of("sendMessage");
    let refused = all.iter().filter(|call| call.status != 200).count();
    println!(
        "flaky platform: {refused} of {} calls answered 429/500, all retried",
        all.len()
    );
    assert!(refused > 0, "the platform did fail some calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let c = Cluster::start().await;
    let name = "SIGTERM each service in turn";
    let (_, counts) =
        stream_through_fault(name, c, 15 * scale(), SERVICES.len(), async |run: &Run| {
            for service in SERVICES {
                let seen = run.midway().await;
                let status = run.c.write().await.terminate(service);
                assert!(
                    status.success(),
                    "{service} exited with {status} on SIGTERM"
                );
                run.fired(format!("SIGTERM {service}"), seen);
                run.c.write().await.launch(service).await;
            }
        })
        .await;
    // A drained sender finished its calls and recorded them before it exited.
    sent_once(name, &counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_loses_a_node_mid_stream() {
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
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

/// Latency from each update's acceptance to its first callback, per text.
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
    let started = Instant::now();
    // Retries that outlast the run: the down tenant's events must still be waiting when it
    // comes back (with the short schedule of the other scenarios they would be dead-lettered).
    let long_schedule = format!("0s,200ms,500ms,1s{}", ",2s".repeat(70));
    let c = Cluster::start_with(None, &[("PATCHBAY_WEBHOOK_RETRY_SCHEDULE", &long_schedule)]).await;
    let down = FakeTenant::start().await;
    down.respond_with(|_| (reqwest::StatusCode::SERVICE_UNAVAILABLE, None));
    let (chats, per_chat) = (10_i64, 15 * scale());
    let down_bot = c.create_bot_for(&down.url(), 0..chats).await;
    let up_bot = c.create_bot(0..chats).await;
    let mut sent: HashMap<String, Instant> = HashMap::new();
    for n in 0..per_chat {
        for chat in 0..chats {
            let text = format!("{chat}:{n}");
            for bot in [&down_bot, &up_bot] {
                let update = fixtures::text_update(1 + chat * 100_000 + n, chat_id(chat), &text);
                let r = c
                    .http
                    .post(format!("{}{}", c.url("ingress-telegram"), bot.path))
                    .header("X-Telegram-Bot-Api-Secret-Token", &bot.secret)
                    .json(&update)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
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
}
