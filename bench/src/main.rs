//! `patchbay-bench`: starts the real stack (nats-server with file storage, PostgreSQL, every
//! service as its own process), lean fakes of a tenant and the Telegram and WeChat APIs, and a
//! load generator; runs the scenarios, measures the JetStream ceiling in the same run, and writes
//! `latest.json`, `latest.md` and `latency.svg` into the output directory.
//!
//! Usage: `patchbay-bench [--short] [--out DIR] [--rates 100,250,…] [--only closed,open,wechat,sync,r3,…]
//! [--self-services]`; `patchbay-bench service
//! <name>` runs one service (the same code as `patchbay service <name>`). See
//! `docs/benchmarks.md`.

mod broadcast;
mod ceiling;
mod fakes;
mod load;
mod report;
mod stack;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use load::{Ctx, Target};
use serde_json::{Value, json};

/// The plan of a run.
struct Plan {
    short: bool,
    closed_workers: usize,
    closed_secs: u64,
    open_rates: Vec<f64>,
    open_secs: u64,
    open_users: i64,
    settle: Duration,
    ceiling_n: usize,
    /// Scenario 4: (rate, seconds, conversation counts).
    many: Option<(f64, u64, Vec<i64>)>,
    /// Users stored (with a conversation and a message each) before scenario 4.
    stored_users: i64,
    /// The kinds of scenario to run (`None`: all), from [`SCENARIO_KINDS`].
    only: Option<Vec<String>>,
    /// Write the page cache's dirty data to disk before each scenario (`--no-flush`: not).
    flush: bool,
}

/// The kinds of scenario `--only` selects (`wechat`: the WeChat round trip, closed and open
/// loops; `sync` and `r3`: the Telegram round trip's closed loop and open loops at 100/s and
/// 500/s on a server with `sync_interval: always`, and on three clustered servers with R3
/// streams, each on its own stack, after the others).
const SCENARIO_KINDS: [&str; 9] = [
    "closed",
    "open",
    "wechat",
    "inbound",
    "outbound",
    "many",
    "sync",
    "r3",
    "broadcast",
];

impl Plan {
    fn runs(&self, kind: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|k| k == kind))
    }

    /// The NATS installations to measure on, in order, each with a stack of its own.
    fn setups(&self) -> Vec<stack::NatsSetup> {
        let mut v = Vec::new();
        if SCENARIO_KINDS[..6].iter().any(|k| self.runs(k)) {
            v.push(stack::NatsSetup::Single);
        }
        if self.runs("sync") {
            v.push(stack::NatsSetup::SyncAlways);
        }
        if self.runs("r3") {
            v.push(stack::NatsSetup::ClusterR3);
        }
        v
    }
}

impl Plan {
    fn new(short: bool) -> Self {
        if short {
            Self {
                short,
                closed_workers: 8,
                closed_secs: 2,
                open_rates: vec![50.0, 100.0],
                open_secs: 1,
                open_users: 50,
                settle: Duration::from_secs(30),
                ceiling_n: 2_000,
                many: None,
                stored_users: 0,
                only: None,
                flush: true,
            }
        } else {
            Self {
                short,
                closed_workers: 256,
                closed_secs: 15,
                open_rates: vec![100.0, 250.0, 500.0, 1000.0],
                open_secs: 10,
                open_users: 1000,
                settle: Duration::from_secs(30),
                ceiling_n: 50_000,
                many: Some((200.0, 10, vec![10, 1_000, 100_000])),
                stored_users: 1_000_000,
                only: None,
                flush: true,
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("service") {
        let name = args.get(1).map(String::as_str).unwrap_or_default();
        let Some((process, start)) = patchbay::SERVICES.iter().find(|(n, _)| *n == name) else {
            eprintln!("unknown service {name:?}");
            return ExitCode::from(2);
        };
        return patchbay_runtime::lifecycle::main(process, &[*start]);
    }
    const USAGE: &str = "usage: patchbay-bench [--short] [--out DIR] [--rates 100,250,...] \
                         [--only closed,open,wechat,inbound,outbound,many,sync,r3,broadcast] [--workers N] \
                         [--self-services] [--no-flush]\n       \
                         patchbay-bench service <name>\n\
                         See docs/benchmarks.md.";
    const KNOWN: [&str; 8] = [
        "--short",
        "--workers",
        "--self-services",
        "--no-flush",
        "--out",
        "--rates",
        "--only",
        "--help",
    ];
    // Those of them followed by a value.
    const WITH_VALUE: [&str; 4] = ["--out", "--rates", "--only", "--workers"];
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let mut expect_value = false;
    for a in &args {
        if std::mem::take(&mut expect_value) {
            continue;
        }
        if !KNOWN.contains(&a.as_str()) {
            eprintln!("unknown argument {a:?}\n{USAGE}");
            return ExitCode::from(2);
        }
        expect_value = WITH_VALUE.contains(&a.as_str());
    }
    // The word after `flag`.
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let short = args.iter().any(|a| a == "--short");
    let force_self = args.iter().any(|a| a == "--self-services");
    let out = value("--out").map_or_else(|| std::path::PathBuf::from("bench/results"), Into::into);
    let mut plan = Plan::new(short);
    plan.flush = !args.iter().any(|a| a == "--no-flush");
    if let Some(rates) = value("--rates") {
        plan.open_rates = rates.split(',').filter_map(|r| r.parse().ok()).collect();
    }
    if let Some(w) = value("--workers") {
        match w.parse() {
            Ok(w) if w > 0 => plan.closed_workers = w,
            _ => {
                eprintln!("--workers takes a positive number, not {w:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(only) = value("--only") {
        let kinds: Vec<&str> = only.split(',').map(str::trim).collect();
        if let Some(bad) = kinds.iter().find(|k| !SCENARIO_KINDS.contains(k)) {
            eprintln!("unknown scenario {bad:?} in --only\n{USAGE}");
            return ExitCode::from(2);
        }
        plan.only = Some(kinds.into_iter().map(str::to_owned).collect());
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(plan, force_self, &out)) {
        Ok(clean) if clean => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("messages were lost or duplicated: see {}", out.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("patchbay-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What PostgreSQL did for a scenario, from `pg_stat_statements`: statements per delivered
/// message, execution and planning time per message, and the statements that took most.
fn database(
    before: &std::collections::BTreeMap<i64, stack::Statement>,
    after: &std::collections::BTreeMap<i64, stack::Statement>,
    delivered: usize,
) -> Value {
    if after.is_empty() {
        return Value::Null; // no pg_stat_statements
    }
    let per = |x: f64| {
        if delivered == 0 {
            0.0
        } else {
            x / load::f64_of(delivered)
        }
    };
    let mut rows: Vec<(String, f64, f64, f64)> = after
        .iter()
        .filter_map(|(id, a)| {
            let b = before.get(id).cloned().unwrap_or_default();
            #[allow(clippy::cast_precision_loss)]
            let calls = (a.calls - b.calls) as f64;
            (calls > 0.0).then(|| {
                (
                    a.query.split_whitespace().collect::<Vec<_>>().join(" "),
                    calls,
                    a.exec_ms - b.exec_ms,
                    a.plan_ms - b.plan_ms,
                )
            })
        })
        .collect();
    rows.sort_by(|x, y| (y.2 + y.3).total_cmp(&(x.2 + x.3)));
    let calls: f64 = rows.iter().map(|r| r.1).sum();
    let exec: f64 = rows.iter().map(|r| r.2).sum();
    let plan: f64 = rows.iter().map(|r| r.3).sum();
    let top: Vec<Value> = rows
        .iter()
        .take(8)
        .map(|(q, c, e, p)| {
            let mut q = q.clone();
            if q.len() > 120 {
                let mut cut = 120;
                while !q.is_char_boundary(cut) {
                    cut -= 1;
                }
                q.truncate(cut);
                q.push('…');
            }
            json!({
                "query": q,
                "calls_per_message": round3(per(*c)),
                "exec_ms_per_call": round3(e / c),
                "plan_ms_per_call": round3(p / c),
            })
        })
        .collect();
    json!({
        "statements_per_message": round3(per(calls)),
        "exec_ms_per_message": round3(per(exec)),
        "plan_ms_per_message": round3(per(plan)),
        "top": top,
    })
}

/// What nats-server carried for a scenario: messages in (published by clients: publishes,
/// acks, pull requests, KV requests) and out (deliveries, publish acks, replies) per delivered
/// message, JetStream API requests per message, and the split by client connection.
fn messaging(before: &stack::NatsCounters, after: &stack::NatsCounters, delivered: usize) -> Value {
    if after.by_name.is_empty() || delivered == 0 {
        return Value::Null; // monitoring unreachable
    }
    let per = |x: u64| {
        round3(load::f64_of(usize::try_from(x).unwrap_or(usize::MAX)) / load::f64_of(delivered))
    };
    let mut rows: Vec<(String, u64, u64)> = after
        .by_name
        .iter()
        .map(|(name, (i, o))| {
            let (bi, bo) = before.by_name.get(name).copied().unwrap_or_default();
            (name.clone(), i.saturating_sub(bi), o.saturating_sub(bo))
        })
        .filter(|(_, i, o)| i + o > 0)
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 + r.2));
    let (sum_in, sum_out) = rows.iter().fold((0, 0), |(a, b), r| (a + r.1, b + r.2));
    json!({
        "in_per_message": per(sum_in),
        "out_per_message": per(sum_out),
        "api_per_message": per(after.api.saturating_sub(before.api)),
        "connections": rows.iter().map(|(n, i, o)| json!({
            "name": n,
            "in_per_message": per(*i),
            "out_per_message": per(*o),
        })).collect::<Vec<_>>(),
    })
}

async fn run(plan: Plan, force_self: bool, out: &std::path::Path) -> anyhow::Result<bool> {
    let load_at_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fakes = fakes::Fakes::start().await?;
    let tck = stack::clk_tck();
    let mut scenarios: Vec<Value> = Vec::new();
    let mut clean = true;
    let mut ceiling_runs: Vec<Value> = Vec::new();
    let mut ceiling_nats: Vec<Value> = Vec::new();
    let mut rss = serde_json::Map::new();
    for (i, setup) in plan.setups().into_iter().enumerate() {
        let stack = stack::Stack::start(&fakes, force_self, setup).await?;
        // Run tags are per stack: the fakes have seen the earlier stacks' message ids.
        let warm_tag = format!("warm{i}");
        let bot = stack.create_bot(&fakes).await?;
        let ctx = Arc::new(Ctx::new(&stack, &fakes, bot).await?);
        let first = setup == stack::NatsSetup::Single;
        let (runs, paths): (Vec<Run>, &[(&'static str, usize)]) = if first {
            (
                runs_of(&plan),
                &[
                    ("round_trip", 6),
                    ("wechat_round_trip", 6),
                    ("inbound", 3),
                    ("outbound", 3),
                ],
            )
        } else {
            (runs_on(&plan, setup), &[("round_trip", 6)])
        };
        // Warm up: config views, connections, the first conversation rows.
        let warm = load::closed(
            ctx.clone(),
            Target::RoundTrip,
            &warm_tag,
            4,
            Duration::from_secs(1),
            plan.settle,
        )
        .await;
        eprintln!("warm-up: {} round trips", warm.delivered);
        if first && plan.runs("wechat") {
            // WeChat's own: the access token fetched, its channel's config views, its users.
            let warm = load::closed(
                ctx.clone(),
                Target::WechatRoundTrip,
                &warm_tag,
                4,
                Duration::from_secs(1),
                plan.settle,
            )
            .await;
            eprintln!("warm-up: {} WeChat round trips", warm.delivered);
        }

        let (mut measured, ok) = measure(&plan, &stack, &ctx, runs, tck).await?;
        clean &= ok;
        let (runs, nats) = ceilings_of(&plan, &stack, tck, paths, &mut measured).await?;
        scenarios.extend(measured);
        ceiling_runs.extend(runs);
        ceiling_nats.extend(nats);
        if first {
            for (n, pid) in stack.accounts() {
                let e = rss.entry(n.clone()).or_insert(json!(0.0));
                *e = json!(round3(
                    e.as_f64().unwrap_or(0.0) + stack::peak_rss_mib(pid, !n.starts_with("bench"))
                ));
            }
        }
        drop(ctx);
        drop(stack);
    }
    // Scenario 7: a broadcast to every stored user, on a stack of its own (a real pace).
    let broadcast = if plan.runs("broadcast") {
        let b = broadcast::run(&fakes, force_self, &broadcast::Sizes::new(plan.short)).await?;
        clean &= b["after_cancel"]["sent_twice"] == 0
            && b["round_trip"]["without"]["lost"] == 0
            && b["round_trip"]["during"]["lost"] == 0
            && b["round_trip"]["during"]["duplicated"] == 0;
        b
    } else {
        Value::Null
    };
    let result = json!({
        "generated_at": chrono::Utc::now().to_rfc3339(),
        "mode": if plan.short { "short" } else { "full" },
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "machine": report::machine(),
        "loadavg_at_start": load_at_start.trim(),
        "services_program": stack::service_program(force_self)?.1,
        "scenarios": scenarios,
        "ceiling": {
            "payload_bytes": PAYLOAD,
            "messages": plan.ceiling_n,
            "storage": "file",
            "runs": ceiling_runs,
            "nats": ceiling_nats,
        },
        "peak_rss_mib": rss,
        "broadcast": broadcast,
        "clean": clean,
    });
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join("latest.json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    std::fs::write(out.join("latest.md"), report::markdown(&result))?;
    std::fs::write(out.join("latency.svg"), report::svg(&result))?;
    eprintln!(
        "wrote {}/latest.json, latest.md, latency.svg",
        out.display()
    );
    Ok(clean)
}

/// One scenario: its name, path (which ceiling it is held against), scenario number, and how
/// to run it.
type Run = (String, &'static str, u8, RunFn);

/// The scenarios measured on the single server with JetStream's default sync.
fn runs_of(plan: &Plan) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let (w, cs, settle) = (
        plan.closed_workers,
        Duration::from_secs(plan.closed_secs),
        plan.settle,
    );
    let rates = if plan.runs("open") {
        plan.open_rates.clone()
    } else {
        Vec::new()
    };
    runs.extend(loops(
        plan,
        &Loops {
            target: Target::RoundTrip,
            what: "round trip",
            path: "round_trip",
            scenario: 1,
            tag: "",
            suffix: String::new(),
        },
        plan.runs("closed"),
        &rates,
    ));
    // Scenario 5: the same round trip on WeChat (XML, signatures and AES on the hot path),
    // right after Telegram's so the two sit side by side.
    if plan.runs("wechat") {
        runs.extend(loops(
            plan,
            &Loops {
                target: Target::WechatRoundTrip,
                what: "wechat round trip",
                path: "wechat_round_trip",
                scenario: 5,
                tag: "",
                suffix: String::new(),
            },
            true,
            &plan.open_rates,
        ));
    }
    if plan.runs("inbound") {
        runs.push((
            format!("inbound only, closed loop ({w} conversations)"),
            "inbound",
            2,
            Box::new(move |c| Box::pin(load::closed(c, Target::Inbound, "c", w, cs, settle))),
        ));
    }
    if plan.runs("outbound") {
        runs.push((
            format!("outbound only, closed loop ({w} conversations)"),
            "outbound",
            3,
            Box::new(move |c| Box::pin(load::closed(c, Target::Outbound, "c", w, cs, settle))),
        ));
    }

    if let Some((rate, secs, counts)) = plan.many.clone().filter(|_| plan.runs("many")) {
        // Scenario 4: the same offered load over few or many conversations, with many users
        // stored. Every run uses fresh chat ids, so with 100,000 conversations nearly every
        // message creates a user.
        let stored = plan.stored_users;
        let with = if stored > 0 {
            format!(" ({stored} users stored)")
        } else {
            String::new()
        };
        for (i, users) in counts.into_iter().enumerate() {
            let run = format!("m{i}");
            #[allow(clippy::cast_possible_wrap)]
            let base = 10_000_000 * (i as i64 + 1);
            runs.push((
                format!("round trip, open loop {rate}/s, {users} conversations{with}"),
                "round_trip",
                4,
                Box::new(move |c| {
                    let run = run.clone();
                    Box::pin(async move {
                        load::open(
                            c,
                            Target::RoundTrip,
                            &run,
                            rate,
                            users,
                            base,
                            Duration::from_secs(secs),
                            settle,
                        )
                        .await
                    })
                }),
            ));
        }
    }
    runs
}

/// The Telegram round trip on another NATS installation (`setup`): the closed loop and the
/// open loops at 100/s and 500/s (in the short mode, at the short mode's rates), named with
/// the installation. Run tags carry it too, so their message ids never meet the first
/// installation's at the fakes.
fn runs_on(plan: &Plan, setup: stack::NatsSetup) -> Vec<Run> {
    let rates: Vec<f64> = if plan.short {
        plan.open_rates.clone()
    } else {
        vec![100.0, 500.0]
    };
    loops(
        plan,
        &Loops {
            target: Target::RoundTrip,
            what: "round trip",
            path: "round_trip",
            scenario: 1,
            tag: setup.tag(),
            suffix: format!(", {}", setup.label()),
        },
        true,
        &rates,
    )
}

/// What [`loops`] measures and how its runs are named.
struct Loops {
    target: Target,
    /// Names begin with it: "round trip", "wechat round trip".
    what: &'static str,
    path: &'static str,
    scenario: u8,
    /// Prefix of the run tags (`<tag>c`, `<tag>o<i>`), so message ids differ from the other
    /// stacks' at the fakes.
    tag: &'static str,
    /// Appended to the names (the NATS installation).
    suffix: String,
}

/// A path's closed loop (when `closed`) and its open loops at `rates`, with the plan's
/// conversations, durations and settle time.
fn loops(plan: &Plan, l: &Loops, closed: bool, rates: &[f64]) -> Vec<Run> {
    let (w, cs, os, users, settle) = (
        plan.closed_workers,
        Duration::from_secs(plan.closed_secs),
        Duration::from_secs(plan.open_secs),
        plan.open_users,
        plan.settle,
    );
    let (target, what, suffix) = (l.target, l.what, &l.suffix);
    let mut runs: Vec<Run> = Vec::new();
    if closed {
        let run = format!("{}c", l.tag);
        runs.push((
            format!("{what}, closed loop ({w} conversations){suffix}"),
            l.path,
            l.scenario,
            Box::new(move |c| {
                let run = run.clone();
                Box::pin(async move { load::closed(c, target, &run, w, cs, settle).await })
            }),
        ));
    }
    for (i, &rate) in rates.iter().enumerate() {
        let run = format!("{}o{i}", l.tag);
        runs.push((
            format!("{what}, open loop {rate}/s ({users} conversations){suffix}"),
            l.path,
            l.scenario,
            Box::new(move |c| {
                let run = run.clone();
                Box::pin(async move {
                    load::open(c, target, &run, rate, users, 1_000_000, os, settle).await
                })
            }),
        ));
    }
    runs
}

/// Runs `runs` on `stack`: each scenario's outcome with the CPU, stage latencies, statements
/// and NATS traffic it cost, and whether nothing was lost or duplicated.
async fn measure(
    plan: &Plan,
    stack: &stack::Stack,
    ctx: &Arc<Ctx>,
    runs: Vec<Run>,
    tck: f64,
) -> anyhow::Result<(Vec<Value>, bool)> {
    let mut scenarios: Vec<Value> = Vec::new();
    let mut clean = true;
    let mut seeded = false;
    for (name, path, scenario, f) in runs {
        if scenario == 4 && !seeded && plan.stored_users > 0 {
            seeded = true;
            let started = std::time::Instant::now();
            stack.seed_users(&ctx.bot, plan.stored_users).await?;
            eprintln!(
                "stored {} users with a conversation and a message each in {:.0} s",
                plan.stored_users,
                started.elapsed().as_secs_f64()
            );
        }
        eprintln!("running: {name}");
        let flushed = plan.flush.then(|| {
            let (dirty, took) = stack::flush_page_cache();
            eprintln!(
                "  flushed {:.0} MiB of dirty page cache first, in {:.1} s",
                mib(dirty),
                took.as_secs_f64()
            );
            json!({"dirty_mib": round3(mib(dirty)), "seconds": round3(took.as_secs_f64())})
        });
        let disk0 = stack::disk_written_bytes(stack.dir.path());
        let accounts = stack.accounts();
        let cpu0: Vec<f64> = accounts
            .iter()
            .map(|(n, pid)| stack::cpu_seconds(*pid, tck, !n.starts_with("bench")))
            .collect();
        let m0 = load::parse_histograms(&stack.scrape().await);
        let q0 = stack.statements().await;
        let bg0 = stack.background().await;
        let n0 = stack.nats_counters().await;
        let host0 = stack::HostCpu::now();
        let o = f(ctx.clone()).await;
        let (steal, iowait, idle) = stack::HostCpu::now().since(&host0);
        let n1 = stack.nats_counters().await;
        let m1 = load::parse_histograms(&stack.scrape().await);
        let q1 = stack.statements().await;
        let bg1 = stack.background().await;
        let written = stack::disk_written_bytes(stack.dir.path()).saturating_sub(disk0);
        let dirty_after = stack::dirty_bytes();
        let mut cpu = serde_json::Map::new();
        let mut total = 0.0;
        for ((n, pid), before) in accounts.iter().zip(cpu0) {
            let used = stack::cpu_seconds(*pid, tck, !n.starts_with("bench")) - before;
            total += used;
            let per_k = if o.delivered > 0 {
                used / load::f64_of(o.delivered) * 1000.0
            } else {
                0.0
            };
            // A cluster's three nats-servers are one column.
            let e = cpu.entry(n.clone()).or_insert(json!(0.0));
            *e = json!(round3(e.as_f64().unwrap_or(0.0) + per_k));
        }
        let total_per_k = if o.delivered > 0 {
            total / load::f64_of(o.delivered) * 1000.0
        } else {
            0.0
        };
        clean &= o.lost == 0 && o.duplicated == 0 && o.drained;
        eprintln!(
            "  {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, delivered {}, lost {}, duplicated {}, errors {}, \
             refused by the platform {}; machine: {steal:.1} % stolen, {iowait:.1} % iowait, \
             {idle:.1} % idle",
            o.throughput(),
            o.quantile(0.5),
            o.quantile(0.99),
            o.delivered,
            o.lost,
            o.duplicated,
            o.errors,
            o.refused
        );
        let (mode, offered, conc) = match o.mode {
            load::Mode::Closed { workers } => ("closed", Value::Null, json!(workers)),
            load::Mode::Open { rate, users } => ("open", json!(rate), json!(users)),
        };
        scenarios.push(json!({
            "name": name,
            "nats_setup": stack.setup.label(),
            "scenario": scenario,
            "path": path,
            "mode": mode,
            "offered_per_s": offered,
            "conversations": conc,
            "sent": o.sent,
            "rejected": u64::try_from(o.errors).unwrap_or(u64::MAX).saturating_add(o.refused),
            "refused_by_platform": o.refused,
            "delivered": o.delivered,
            "lost": o.lost,
            "duplicated": o.duplicated,
            "drained": o.drained,
            "throughput_per_s": round3(o.throughput()),
            "host_cpu_pct": {"steal": round3(steal), "iowait": round3(iowait), "idle": round3(idle)},
            "p50_ms": round3(o.quantile(0.5)),
            "p90_ms": round3(o.quantile(0.9)),
            "p99_ms": round3(o.quantile(0.99)),
            "max_ms": round3(o.quantile(1.0)),
            "cpu_s_per_1000": cpu,
            "cpu_s_per_1000_total": round3(total_per_k),
            "stages": load::stage_rows(&m0, &m1),
            "batches": load::batch_rows(&m0, &m1),
            "database": database(&q0, &q1, o.delivered),
            "pg_checkpoints": bg1.0 - bg0.0,
            "pg_autovacuums": bg1.1 - bg0.1,
            "disk": {
                "flushed_before": flushed,
                "written_mib": round3(mib(written)),
                "dirty_after_mib": round3(mib(dirty_after)),
            },
            "nats": messaging(&n0, &n1, o.delivered),
        }));
    }

    Ok((scenarios, clean))
}

/// Payload of the ceiling's messages, about a round trip's envelope.
const PAYLOAD: usize = 1024;

/// The rate the round trip's bare hops are also offered at (the open loop's lowest).
const PACED_RATE: f64 = 100.0;

/// The round trip's closed-loop goal, as a fraction of the ceiling (issue 19): its bare hops
/// are also offered at that rate.
const GOAL_FRACTION: f64 = 0.33;

/// The JetStream ceiling on `stack`'s NATS for each of `paths` (path, hops), measured once per
/// number of hops; each of `scenarios` gets its path's ceiling and its fraction of it. Returns
/// the ceiling runs and what nats-server carried for them.
async fn ceilings_of(
    plan: &Plan,
    stack: &stack::Stack,
    tck: f64,
    paths: &[(&'static str, usize)],
    scenarios: &mut [Value],
) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
    eprintln!("running: JetStream ceiling {}", stack.setup.label());
    // (path, hops, messages per second, % of the machine's CPU stolen meanwhile)
    let mut ceilings: Vec<(&str, usize, f64, f64)> = Vec::new();
    // (hops, messages per second, how they were offered): the bare hops in a closed loop.
    let mut closed_ceilings: Vec<(usize, f64, String)> = Vec::new();
    let mut ceiling_nats = Vec::new();
    let nats_pids: Vec<u32> = stack
        .accounts()
        .into_iter()
        .filter(|(n, _)| n == "nats-server")
        .map(|(_, pid)| pid)
        .collect();
    let nats_cpu = || {
        nats_pids
            .iter()
            .map(|pid| stack::cpu_seconds(*pid, tck, false))
            .sum::<f64>()
    };
    for &(path, hops) in paths {
        if let Some(&(_, _, r, steal)) = ceilings.iter().find(|(_, h, _, _)| *h == hops) {
            ceilings.push((path, hops, r, steal));
            continue;
        }
        let n0 = stack.nats_counters().await;
        let c0 = nats_cpu();
        let host0 = stack::HostCpu::now();
        let r = ceiling::run(
            &stack.nats.url(),
            hops,
            plan.ceiling_n,
            PAYLOAD,
            stack.setup.replicas(),
            ceiling::Offer::AllAtOnce,
        )
        .await?;
        let (steal, _, _) = stack::HostCpu::now().since(&host0);
        let c1 = nats_cpu();
        let n1 = stack.nats_counters().await;
        // nats-server's CPU per 1,000 messages through all the hops: what the bare hops cost
        // the server, to hold against its column in the scenarios.
        let nats_cpu_per_k = round3((c1 - c0) / load::f64_of(plan.ceiling_n) * 1000.0);
        let per = |a: u64, b: u64| {
            round3(
                load::f64_of(usize::try_from(a.saturating_sub(b)).unwrap_or(0))
                    / load::f64_of(plan.ceiling_n),
            )
        };
        eprintln!(
            "  {hops} hops: {r:.0}/s; nats-server: {} in, {} out per message, {nats_cpu_per_k} CPU-s per 1,000; {steal:.1} % stolen",
            per(n1.total.0, n0.total.0),
            per(n1.total.1, n0.total.1)
        );
        ceiling_nats.push(json!({
            "nats_setup": stack.setup.label(),
            "hops": hops,
            "cpu_s_per_1000": nats_cpu_per_k,
            "in_per_message": per(n1.total.0, n0.total.0),
            "out_per_message": per(n1.total.1, n0.total.1),
            "api_per_message": per(n1.api, n0.api),
        }));
        ceilings.push((path, hops, r, round3(steal)));
        // The same hops driven as the closed loops are, `closed_workers` messages in the chain
        // at a time: what the bare hops reach in the shape of the bench's closed loops.
        let n = (plan.ceiling_n / 2).max(100);
        let c0 = nats_cpu();
        let closed = ceiling::run(
            &stack.nats.url(),
            hops,
            n,
            PAYLOAD,
            stack.setup.replicas(),
            ceiling::Offer::Window(plan.closed_workers),
        )
        .await?;
        let cpu = round3((nats_cpu() - c0) / load::f64_of(n) * 1000.0);
        let called = format!("closed loop, {} in the chain", plan.closed_workers);
        eprintln!("  {hops} hops, {called}: {closed:.0}/s; nats-server {cpu} CPU-s per 1,000");
        closed_ceilings.push((hops, closed, called.clone()));
        ceiling_nats.push(json!({
            "nats_setup": stack.setup.label(),
            "hops": hops,
            "offered_as": called,
            "closed_loop_per_s": round3(closed),
            "cpu_s_per_1000": cpu,
        }));
        if path == "round_trip" {
            // The same bare hops offered at fixed rates, for what they cost the server per
            // message there: a quiet installation's (nothing batches them), the rate the
            // round trip's closed loop reached (so its nats-server column can be held against
            // the bare hops at the same rate), and the closed-loop goal's.
            let closed = scenarios
                .iter()
                .find(|s| s["path"] == "round_trip" && s["mode"] == "closed")
                .and_then(|s| s["throughput_per_s"].as_f64());
            let mut paces = vec![(PACED_RATE, "quiet")];
            paces.extend(closed.map(|c| (c.round(), "the closed loop's")));
            paces.push(((r * GOAL_FRACTION).round(), "the goal's"));
            // As long as the quiet run, whatever the rate.
            let secs = load::f64_of((plan.ceiling_n / 50).max(100)) / PACED_RATE;
            for (rate, called) in paces {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let n = ((rate * secs) as usize).max(100);
                let c0 = nats_cpu();
                ceiling::run(
                    &stack.nats.url(),
                    hops,
                    n,
                    PAYLOAD,
                    stack.setup.replicas(),
                    ceiling::Offer::Rate(rate),
                )
                .await?;
                let cpu = round3((nats_cpu() - c0) / load::f64_of(n) * 1000.0);
                eprintln!(
                    "  {hops} hops at {rate}/s ({called} rate): nats-server {cpu} CPU-s per 1,000"
                );
                ceiling_nats.push(json!({
                    "nats_setup": stack.setup.label(),
                    "hops": hops,
                    "offered_per_s": rate,
                    "offered_as": called,
                    "cpu_s_per_1000": cpu,
                }));
            }
        }
    }
    for s in scenarios.iter_mut() {
        if let Some((_, hops, r, _)) = ceilings.iter().find(|(p, _, _, _)| s["path"] == *p) {
            let t = s["throughput_per_s"].as_f64().unwrap_or(0.0);
            s["ceiling_per_s"] = json!(round3(*r));
            s["hops"] = json!(hops);
            s["fraction_of_ceiling"] = json!(round3(t / r));
            let closed = closed_ceilings.iter().find(|(h, _, _)| h == hops);
            if let (Some((_, c, _)), "closed") = (closed, s["mode"].as_str().unwrap_or("")) {
                s["closed_loop_ceiling_per_s"] = json!(round3(*c));
                s["fraction_of_closed_loop_ceiling"] = json!(round3(t / c));
            }
        }
    }
    let runs = ceilings
        .iter()
        .map(|(p, h, r, steal)| {
            let closed = closed_ceilings.iter().find(|(ch, _, _)| ch == h);
            json!({
                "path": p,
                "nats_setup": stack.setup.label(),
                "hops": h,
                "ceiling_per_s": round3(*r),
                "closed_loop_per_s": closed.map(|(_, c, _)| round3(*c)),
                "host_steal_pct": steal,
            })
        })
        .collect();
    Ok((runs, ceiling_nats))
}

type RunFut = std::pin::Pin<Box<dyn std::future::Future<Output = load::Outcome> + Send>>;
type RunFn = Box<dyn Fn(Arc<Ctx>) -> RunFut>;

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// `bytes` in MiB.
#[allow(clippy::cast_precision_loss)]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
