//! The broadcast scenario (`--only broadcast`, issue 17), on a stack of its own whose Telegram
//! pace is a real limit ([`LIMIT`] messages a second per bot; the other scenarios lift it):
//!
//! 1. a bot with `users` stored recipients (a million in the full mode) and another bot whose
//!    conversations are the round trip;
//! 2. the other bot's round trip, open loop, without a broadcast: its p99;
//! 3. `POST /v1/broadcasts` to every user of the first bot: how long until it is accepted
//!    (stored), and until every recipient's row is stored (the state leaves `queueing`), with
//!    `bot-router`'s resident memory sampled meanwhile;
//! 4. the broadcast going out: its rate at the fake Telegram against the limit, while the other
//!    bot's round trip runs again at the same rate: its p99 against step 2's, with what the
//!    machine did in each loop (stages, statements, autovacuum, CPU per process);
//! 5. cancel: what was not sent stays unsent, and no recipient got it twice (the fake's count of
//!    the broadcast's text against the recipients the router counts as sent).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fakes::Fakes;
use crate::load::{self, Ctx, Target};
use crate::round3;
use crate::stack::{self, NatsSetup, Stack};

/// The broadcast bot's pace at Telegram, messages a second (`PATCHBAY_TELEGRAM_PER_BOT_PER_SECOND`
/// on this stack; the round-trip bot has the same limit and uses a fraction of it).
pub const LIMIT: u32 = 200;

/// The broadcast's text (the fake Telegram counts arrivals by text).
const TEXT: &str = "brd-bench";

/// The sizes of a run.
pub struct Sizes {
    pub users: i64,
    /// The round trip's open loop: rate and seconds, each time.
    pub loop_rate: f64,
    pub loop_secs: u64,
    /// How long the drain rate is measured (from half a second into the round trip's second
    /// loop, within it; the broadcast is cancelled right after).
    pub drain_secs: u64,
    pub settle: Duration,
}

impl Sizes {
    pub fn new(short: bool) -> Self {
        if short {
            Self {
                // Enough that the broadcast is still sending when it is cancelled, after the
                // loop and its window: at LIMIT a second it lasts 50 s.
                users: 10_000,
                loop_rate: 50.0,
                loop_secs: 3,
                drain_secs: 2,
                settle: Duration::from_secs(10),
            }
        } else {
            Self {
                users: 1_000_000,
                loop_rate: 100.0,
                loop_secs: 20,
                drain_secs: 19,
                settle: Duration::from_secs(10),
            }
        }
    }
}

/// What the machine did over one round-trip loop, to tell what a broadcast adds: each stage's
/// time, the database's statements, PostgreSQL's background work, the CPU per process, and
/// how often an autovacuum worker was running (sampled every 100 ms, with its tables).
struct Window {
    m: std::collections::BTreeMap<String, load::Histogram>,
    q: std::collections::BTreeMap<i64, stack::Statement>,
    bg: (i64, i64),
    host: stack::HostCpu,
    cpu: Vec<(String, u32, f64)>,
    vacuum: tokio::task::JoinHandle<(u32, u32, std::collections::BTreeMap<String, u32>)>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Window {
    async fn open(stack: &Stack, tck: f64) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (pg, halt) = (stack.pg.clone(), stop.clone());
        let vacuum = tokio::spawn(async move {
            let (mut samples, mut busy) = (0, 0);
            let mut tables = std::collections::BTreeMap::new();
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                let running: Vec<String> = sqlx::query_scalar(
                    "select coalesce(query, '') from pg_stat_activity \
                     where backend_type = 'autovacuum worker'",
                )
                .fetch_all(&pg)
                .await
                .unwrap_or_default();
                samples += 1;
                if !running.is_empty() {
                    busy += 1;
                }
                for q in running {
                    *tables.entry(q).or_insert(0) += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (samples, busy, tables)
        });
        Self {
            m: load::parse_histograms(&stack.scrape().await),
            q: stack.statements().await,
            bg: stack.background().await,
            host: stack::HostCpu::now(),
            cpu: stack
                .accounts()
                .into_iter()
                .map(|(n, pid)| {
                    let used = stack::cpu_seconds(pid, tck, !n.starts_with("bench"));
                    (n, pid, used)
                })
                .collect(),
            vacuum,
            stop,
        }
    }

    async fn close(self, stack: &Stack, tck: f64, o: &load::Outcome) -> Value {
        let (steal, iowait, idle) = stack::HostCpu::now().since(&self.host);
        let m1 = load::parse_histograms(&stack.scrape().await);
        let q1 = stack.statements().await;
        let bg1 = stack.background().await;
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (samples, busy, tables) = self.vacuum.await.unwrap_or_default();
        let mut cpu = serde_json::Map::new();
        for (n, pid, before) in &self.cpu {
            let used = stack::cpu_seconds(*pid, tck, !n.starts_with("bench")) - before;
            let e = cpu.entry(n.clone()).or_insert(json!(0.0));
            *e = json!(round3(e.as_f64().unwrap_or(0.0) + used));
        }
        json!({
            "host_cpu_pct": {"steal": round3(steal), "iowait": round3(iowait), "idle": round3(idle)},
            "cpu_s": cpu,
            "stages": load::stage_rows(&self.m, &m1),
            "database": crate::database(&self.q, &q1, o.delivered),
            "pg_checkpoints": bg1.0 - self.bg.0,
            "pg_autovacuums": bg1.1 - self.bg.1,
            "autovacuum_running_pct": round3(f64::from(busy) * 100.0 / f64::from(samples.max(1))),
            "autovacuum_samples": tables,
        })
    }
}

async fn get(stack: &Stack, key: &str, id: &str) -> anyhow::Result<Value> {
    Ok(stack
        .http
        .get(format!("{}/v1/broadcasts/{id}", stack.url("api")))
        .bearer_auth(key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Runs the scenario on a stack of its own; its report.
pub async fn run(fakes: &Fakes, force_self: bool, sizes: &Sizes) -> anyhow::Result<Value> {
    let stack = Stack::start_with(
        fakes,
        force_self,
        NatsSetup::Single,
        &[("PATCHBAY_TELEGRAM_PER_BOT_PER_SECOND", LIMIT.to_string())],
    )
    .await?;
    let talker = stack.create_bot_with_token(fakes, "42:bench").await?;
    let broadcaster = stack.create_bot_with_token(fakes, "43:broadcast").await?;
    let started = Instant::now();
    stack
        .seed_users_tagged(&broadcaster, sizes.users, "b")
        .await?;
    eprintln!(
        "broadcast: stored {} users in {:.0} s",
        sizes.users,
        started.elapsed().as_secs_f64()
    );
    let ctx = Arc::new(Ctx::new(&stack, fakes, talker).await?);
    let warm = load::closed(
        ctx.clone(),
        Target::RoundTrip,
        "bwarm",
        4,
        Duration::from_secs(1),
        sizes.settle,
    )
    .await;
    eprintln!("broadcast: warm-up, {} round trips", warm.delivered);
    let round_trip = |run: &'static str, base: i64| {
        load::open(
            ctx.clone(),
            Target::RoundTrip,
            run,
            sizes.loop_rate,
            1000,
            base,
            Duration::from_secs(sizes.loop_secs),
            sizes.settle,
        )
    };
    // As before every scenario: the seeding's dirty pages written out first, so the disk's
    // writeback does not land in one loop and not the other (docs/benchmarks.md).
    let (dirty, took) = stack::flush_page_cache();
    eprintln!(
        "broadcast: flushed {:.0} MiB of dirty page cache in {:.1} s",
        crate::mib(dirty),
        took.as_secs_f64()
    );
    let tck = stack::clk_tck();
    let w = Window::open(&stack, tck).await;
    let without = round_trip("bq", 20_000_000).await;
    let without_window = w.close(&stack, tck, &without).await;
    eprintln!(
        "broadcast: round trip without a broadcast, p50 {:.1} ms, p99 {:.1} ms",
        without.quantile(0.5),
        without.quantile(0.99)
    );

    let router = stack
        .accounts()
        .into_iter()
        .find(|(n, _)| n == "bot-router")
        .map(|(_, pid)| pid)
        .ok_or_else(|| anyhow::anyhow!("no bot-router process"))?;
    let rss_before = stack::rss_mib(router);
    let asked = Instant::now();
    let created: Value = stack
        .http
        .post(format!("{}/v1/broadcasts", stack.url("api")))
        .bearer_auth(&broadcaster.api_key)
        .json(&json!({"audience": {"all": true},
                      "messages": [{"type": "text", "text": TEXT}]}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let accepted = asked.elapsed();
    let id = created["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no broadcast id: {created}"))?
        .to_owned();
    let mut rss_max = rss_before;
    let deadline = Instant::now() + Duration::from_secs(600);
    let queued = loop {
        rss_max = rss_max.max(stack::rss_mib(router));
        let b = get(&stack, &broadcaster.api_key, &id).await?;
        if b["state"] != "queueing" {
            break b;
        }
        anyhow::ensure!(Instant::now() < deadline, "still queueing after 600 s: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let queued_in = asked.elapsed();
    eprintln!(
        "broadcast: accepted in {:.1} ms, {} recipients stored in {:.1} s; bot-router {:.0} MiB \
         before, {:.0} MiB at most while queueing",
        accepted.as_secs_f64() * 1000.0,
        queued["counts"]["recipients"],
        queued_in.as_secs_f64(),
        rss_before,
        rss_max
    );

    // The drain, measured while the other bot's round trip runs again (the queueing's dirty
    // pages written out first, as before the first loop).
    let (queue_dirty, _) = stack::flush_page_cache();
    let w = Window::open(&stack, tck).await;
    let during = tokio::spawn(round_trip("bd", 30_000_000));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let count = || fakes.telegram.get(TEXT).map_or(0, |(_, n)| n);
    let (n0, t0) = (count(), Instant::now());
    tokio::time::sleep(Duration::from_secs(sizes.drain_secs)).await;
    let (n1, t1) = (count(), Instant::now());
    // The loop ends (and its window closes) before the cancel: skipping a million queued
    // recipients is work of its own, which is not the drain's.
    let during = during.await?;
    let during_window = w.close(&stack, tck, &during).await;
    // Cancel: the rest stays unsent; nobody got it twice.
    let cancelled: Value = stack
        .http
        .post(format!("{}/v1/broadcasts/{id}/cancel", stack.url("api")))
        .bearer_auth(&broadcaster.api_key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let end = loop {
        let b = get(&stack, &broadcaster.api_key, &id).await?;
        if b["counts"]["sending"] == 0 && b["counts"]["queued"] == 0 {
            break b;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "still sending after a cancel: {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rate = f64::from(n1 - n0) / (t1 - t0).as_secs_f64();
    eprintln!(
        "broadcast: {rate:.1} sends/s against a limit of {LIMIT}/s; round trip during it: p50 \
         {:.1} ms, p99 {:.1} ms",
        during.quantile(0.5),
        during.quantile(0.99)
    );
    let sent = end["counts"]["sent"].as_i64().unwrap_or(0);
    let arrivals = i64::from(count());
    eprintln!(
        "broadcast: cancelled ({}); {sent} sent, {} skipped, {arrivals} arrived at Telegram",
        cancelled["state"], end["counts"]["skipped"]
    );
    let p99 = |o: &load::Outcome| round3(o.quantile(0.99));
    Ok(json!({
        "recipients": sizes.users,
        "limit_per_s": LIMIT,
        "accepted_ms": round3(accepted.as_secs_f64() * 1000.0),
        "queued_s": round3(queued_in.as_secs_f64()),
        "queued_per_s": round3(load::f64_of(usize::try_from(sizes.users).unwrap_or(0)) / queued_in.as_secs_f64()),
        "dirty_mib_flushed": {"after_seeding": round3(crate::mib(dirty)),
                              "after_queueing": round3(crate::mib(queue_dirty))},
        "router_rss_mib": {"before": round3(rss_before), "max_while_queueing": round3(rss_max),
                           "peak": round3(stack::peak_rss_mib(router, false))},
        "drain": {"seconds": round3((t1 - t0).as_secs_f64()), "sent": n1 - n0,
                  "per_s": round3(rate), "of_limit": round3(rate / f64::from(LIMIT))},
        "round_trip": {
            "rate_per_s": sizes.loop_rate,
            "without": {"p50_ms": round3(without.quantile(0.5)), "p99_ms": p99(&without),
                        "lost": without.lost, "duplicated": without.duplicated},
            "during": {"p50_ms": round3(during.quantile(0.5)), "p99_ms": p99(&during),
                       "lost": during.lost, "duplicated": during.duplicated},
            "p99_ratio": round3(p99(&during) / p99(&without).max(0.001)),
            "machine": {"without": without_window, "during": during_window},
        },
        "after_cancel": {"state": end["state"], "sent": sent, "skipped": end["counts"]["skipped"],
                         "arrived_at_platform": arrivals,
                         "sent_twice": arrivals - sent},
    }))
}
