//! `latest.md` and `latency.svg` from the result JSON, and a description of the machine.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// CPU model, cores and memory, from `/proc`.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let mem_gib = mem_kib as f64 / 1024.0 / 1024.0;
    json!({
        "cpu": model,
        "cores": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "memory_gib": (mem_gib * 10.0).round() / 10.0,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        // Other work on the machine skews every number: the load average at the end of the run.
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    })
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The Markdown report.
pub fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let m = &r["machine"];
    let _ = writeln!(
        s,
        "# Patchbay benchmark ({} mode, {} build)\n\n{} · {} · {} cores · {} GiB · {} · load average at the end: {}\n",
        r["mode"].as_str().unwrap_or(""),
        r["build"].as_str().unwrap_or(""),
        r["generated_at"].as_str().unwrap_or(""),
        m["cpu"].as_str().unwrap_or(""),
        m["cores"],
        m["memory_gib"],
        m["kernel"].as_str().unwrap_or(""),
        m["loadavg"].as_str().unwrap_or(""),
    );
    let _ = writeln!(
        s,
        "Latency: from the request leaving the load generator (open loop: its scheduled time) to \
         the message arriving at the fake platform (`sendMessage` at Telegram, `custom/send` at \
         WeChat; inbound only: at the fake tenant). Rejected: refused by Patchbay, or by the fake \
         platform (WeChat: an access token it did not give). Stolen: the \
         share of the machine's CPU time its host gave to others during the scenario (from \
         `/proc/stat`); a run with much of it was slowed by a neighbour, not by Patchbay.\n"
    );
    let _ = writeln!(
        s,
        "| scenario | msgs/s | JetStream ceiling (hops) | fraction | p50 ms | p90 ms | p99 ms | max ms | CPU s / 1000 msgs | lost | duplicated | rejected | stolen % |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let empty = Vec::new();
    let scenarios = r["scenarios"].as_array().unwrap_or(&empty);
    for sc in scenarios {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} ({}) | {:.3} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {} | {} | {} | {:.1} |",
            sc["name"].as_str().unwrap_or(""),
            f(&sc["throughput_per_s"]),
            f(&sc["ceiling_per_s"]),
            sc["hops"],
            f(&sc["fraction_of_ceiling"]),
            f(&sc["p50_ms"]),
            f(&sc["p90_ms"]),
            f(&sc["p99_ms"]),
            f(&sc["max_ms"]),
            f(&sc["cpu_s_per_1000_total"]),
            sc["lost"],
            sc["duplicated"],
            sc["rejected"],
            f(&sc["host_cpu_pct"]["steal"]),
        );
    }
    let _ = writeln!(
        s,
        "\n## CPU seconds per 1,000 messages, by process\n\n(PostgreSQL includes its backends.)\n"
    );
    if let Some(first) = scenarios
        .first()
        .and_then(|x| x["cpu_s_per_1000"].as_object())
    {
        let names: Vec<&String> = first.keys().collect();
        let _ = writeln!(
            s,
            "| scenario | {} |\n|---|{}",
            names
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(" | "),
            "---|".repeat(names.len())
        );
        for sc in scenarios {
            let cells: Vec<String> = names
                .iter()
                .map(|n| format!("{:.2}", f(&sc["cpu_s_per_1000"][n.as_str()])))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} |",
                sc["name"].as_str().unwrap_or(""),
                cells.join(" | ")
            );
        }
    }
    let b = &r["broadcast"];
    if b.is_object() {
        let rt = &b["round_trip"];
        let _ = writeln!(
            s,
            "\n## Broadcast (scenario 7)\n\nOn a stack of its own, Telegram paced at {} messages/s \
             per bot.\n\n| what | value |\n|---|---|\n\
             | stored recipients | {} |\n\
             | accepted (`POST /v1/broadcasts` answered) | {:.1} ms |\n\
             | every recipient's row stored | {:.1} s ({:.0}/s) |\n\
             | bot-router RSS before / at most while queueing | {:.0} / {:.0} MiB |\n\
             | sent to the fake Telegram | {:.1}/s over {:.0} s ({:.3} of the limit) |\n\
             | another bot's round trip at {}/s, p99 without / during | {:.1} / {:.1} ms ({:.2}×) |\n\
             | after cancel: sent, skipped, arrived, sent twice | {}, {}, {}, {} |",
            b["limit_per_s"],
            b["recipients"],
            f(&b["accepted_ms"]),
            f(&b["queued_s"]),
            f(&b["queued_per_s"]),
            f(&b["router_rss_mib"]["before"]),
            f(&b["router_rss_mib"]["max_while_queueing"]),
            f(&b["drain"]["per_s"]),
            f(&b["drain"]["seconds"]),
            f(&b["drain"]["of_limit"]),
            rt["rate_per_s"],
            f(&rt["without"]["p99_ms"]),
            f(&rt["during"]["p99_ms"]),
            f(&rt["p99_ratio"]),
            b["after_cancel"]["sent"],
            b["after_cancel"]["skipped"],
            b["after_cancel"]["arrived_at_platform"],
            b["after_cancel"]["sent_twice"],
        );
    }
    let _ = writeln!(
        s,
        "\n## Peak RSS (VmHWM) per process, MiB, over the whole run\n\n| process | MiB |\n|---|---|"
    );
    if let Some(rss) = r["peak_rss_mib"].as_object() {
        for (n, v) in rss {
            let _ = writeln!(s, "| {n} | {:.1} |", f(v));
        }
    }
    let _ = writeln!(
        s,
        "\n## Per-stage latency from the services' own metrics\n\nMean, p50 and p99 of \
         what each service recorded during the scenario (differences of its histograms: `_sum`, \
         `_count`, and the buckets, interpolated within a bucket as `histogram_quantile` does).\n"
    );
    for sc in scenarios {
        let _ = writeln!(
            s,
            "### {}\n\n| stage | count | mean ms | p50 ms | p99 ms |\n|---|---|---|---|---|",
            sc["name"].as_str().unwrap_or("")
        );
        for st in sc["stages"].as_array().unwrap_or(&empty) {
            let _ = writeln!(
                s,
                "| `{}` | {:.0} | {:.2} | {:.2} | {:.2} |",
                st["stage"].as_str().unwrap_or(""),
                f(&st["count"]),
                f(&st["mean_ms"]),
                f(&st["p50_ms"]),
                f(&st["p99_ms"]),
            );
        }
        let batches = sc["batches"].as_array().unwrap_or(&empty);
        if !batches.is_empty() {
            let _ = writeln!(
                s,
                "\n| group commit | statements | requests per statement (mean) | p99 |\n|---|---|---|---|"
            );
        }
        for b in batches {
            let _ = writeln!(
                s,
                "| `{}` | {:.0} | {:.2} | {:.0} |",
                b["batch"].as_str().unwrap_or(""),
                f(&b["statements"]),
                f(&b["mean_requests"]),
                f(&b["p99_requests"]),
            );
        }
        let db = &sc["database"];
        if db.is_object() {
            let _ = writeln!(
                s,
                "\nPostgreSQL (`pg_stat_statements`): {:.2} statements, {:.3} ms executing and \
                 {:.3} ms planning per message; meanwhile {} checkpoints and {} autovacuum or \
                 autoanalyze runs.\n\n| statement | per message | exec ms per call | \
                 plan ms per call |\n|---|---|---|---|",
                f(&db["statements_per_message"]),
                f(&db["exec_ms_per_message"]),
                f(&db["plan_ms_per_message"]),
                sc["pg_checkpoints"].as_i64().unwrap_or(0),
                sc["pg_autovacuums"].as_i64().unwrap_or(0),
            );
            for q in db["top"].as_array().unwrap_or(&empty) {
                let _ = writeln!(
                    s,
                    "| `{}` | {:.2} | {:.3} | {:.3} |",
                    q["query"].as_str().unwrap_or("").replace('|', "\\|"),
                    f(&q["calls_per_message"]),
                    f(&q["exec_ms_per_call"]),
                    f(&q["plan_ms_per_call"]),
                );
            }
        }
        let disk = &sc["disk"];
        if disk.is_object() {
            let flushed = &disk["flushed_before"];
            let before = if flushed.is_object() {
                format!(
                    "{:.0} MiB of dirty page cache written out before it (in {:.1} s); ",
                    f(&flushed["dirty_mib"]),
                    f(&flushed["seconds"])
                )
            } else {
                "the page cache not flushed before it (`--no-flush`); ".to_owned()
            };
            let _ = writeln!(
                s,
                "\nDisk: {before}{:.0} MiB written to the device during it, {:.0} MiB left dirty \
                 at its end.",
                f(&disk["written_mib"]),
                f(&disk["dirty_after_mib"]),
            );
        }
        let nats = &sc["nats"];
        if nats.is_object() {
            let _ = writeln!(
                s,
                "\nnats-server: {:.2} messages in and {:.2} out, {:.2} JetStream API requests per \
                 message.\n\n| connection | in per message | out per message |\n|---|---|---|",
                f(&nats["in_per_message"]),
                f(&nats["out_per_message"]),
                f(&nats["api_per_message"]),
            );
            for c in nats["connections"].as_array().unwrap_or(&empty) {
                let _ = writeln!(
                    s,
                    "| {} | {:.2} | {:.2} |",
                    c["name"].as_str().unwrap_or(""),
                    f(&c["in_per_message"]),
                    f(&c["out_per_message"]),
                );
            }
        }
        let _ = writeln!(s);
    }
    let c = &r["ceiling"];
    let _ = writeln!(
        s,
        "## JetStream ceiling\n\n{} messages of {} bytes, {} storage, through a chain of \
         work-queue streams: publish with ack, durable pull consumer, explicit ack after the next \
         publish was acked. NATS: a single server with JetStream's default sync unless named \
         (`sync always`: `sync_interval: always`; `R3`: three clustered servers, R3 streams).\n\n\
         The same hops are also driven as the closed loops are (as many messages in the chain \
         as the closed loops have conversations, the next published when one has left the last \
         hop): the column \"closed loop\".\n\n\
         | path | NATS | hops | msgs/s | closed loop, msgs/s | stolen % |\n|---|---|---|---|---|---|",
        c["messages"],
        c["payload_bytes"],
        c["storage"].as_str().unwrap_or("")
    );
    for run in c["runs"].as_array().unwrap_or(&empty) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {} | {:.1} |",
            run["path"].as_str().unwrap_or(""),
            nats_of(run),
            run["hops"],
            f(&run["ceiling_per_s"]),
            run["closed_loop_per_s"]
                .as_f64()
                .map_or_else(|| "–".to_owned(), |c| format!("{c:.0}")),
            f(&run["host_steal_pct"])
        );
    }
    let ceiling_nats = c["nats"].as_array().unwrap_or(&empty);
    if !ceiling_nats.is_empty() {
        let _ = writeln!(
            s,
            "\nWhat nats-server carried for it, per message, and its CPU (a cluster's servers \
             summed), offered all at once, in a closed loop, and (the round trip's hops) at fixed \
             rates: a quiet installation's (where nothing batches them), the rate the round \
             trip's closed loop reached, and its goal's (a third of the ceiling):\n\n| NATS | hops | \
             offered | messages in | messages out | JetStream API requests | nats-server CPU s \
             / 1000 msgs |\n|---|---|---|---|---|---|---|"
        );
        let or_dash = |v: &Value| {
            v.as_f64()
                .map_or_else(|| "–".to_owned(), |x| format!("{x:.2}"))
        };
        for n in ceiling_nats {
            let offered = n["offered_per_s"].as_f64().map_or_else(
                || n["offered_as"].as_str().unwrap_or("all at once").to_owned(),
                |r| match n["offered_as"].as_str() {
                    Some(called) => format!("{r:.0}/s ({called} rate)"),
                    None => format!("{r:.0}/s"),
                },
            );
            let _ = writeln!(
                s,
                "| {} | {} | {offered} | {} | {} | {} | {:.3} |",
                nats_of(n),
                n["hops"],
                or_dash(&n["in_per_message"]),
                or_dash(&n["out_per_message"]),
                or_dash(&n["api_per_message"]),
                f(&n["cpu_s_per_1000"]),
            );
        }
    }
    s
}

/// The NATS installation a row ran on: `single` when it names none.
fn nats_of(v: &Value) -> &str {
    v["nats_setup"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or("single")
}

/// An SVG chart of p50 and p99 round-trip latency against offered load (open-loop runs):
/// Telegram's (scenario 1) in solid lines, WeChat's (scenario 5) dashed.
pub fn svg(r: &Value) -> String {
    let empty = Vec::new();
    let points_of = |scenario: u64| -> Vec<(f64, f64, f64, f64)> {
        r["scenarios"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            // The single server's runs: the other NATS installations have their own rows.
            .filter(|s| {
                s["mode"] == "open"
                    && s["scenario"] == scenario
                    && s["nats_setup"].as_str().is_none_or(str::is_empty)
            })
            .map(|s| {
                (
                    f(&s["offered_per_s"]),
                    f(&s["p50_ms"]),
                    f(&s["p99_ms"]),
                    f(&s["throughput_per_s"]),
                )
            })
            .collect()
    };
    // (label, points, stroke-dasharray)
    let series = [
        ("Telegram", points_of(1), ""),
        ("WeChat", points_of(5), "6 4"),
    ];
    let all = || series.iter().flat_map(|(_, p, _)| p.iter());
    let (w, h, left, right, top, bottom) = (640.0, 400.0, 70.0, 20.0, 40.0, 50.0);
    let max_x = all().map(|p| p.0).fold(1.0, f64::max) * 1.1;
    let max_y = all().map(|p| p.2).fold(1.0, f64::max) * 1.1;
    let x = |v: f64| left + v / max_x * (w - left - right);
    let y = |v: f64| h - bottom - v / max_y * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{w}" height="{h}" fill="white"/><text x="{}" y="20" text-anchor="middle" font-size="14">Round-trip latency against offered load (open loop)</text>"#,
        w / 2.0
    );
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"#,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for i in 0..=5 {
        let fx = max_x * f64::from(i) / 5.0;
        let fy = max_y * f64::from(i) / 5.0;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{}" text-anchor="middle">{fx:.0}</text><text x="{}" y="{:.1}" text-anchor="end">{fy:.0}</text><line x1="{left}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#ddd"/>"##,
            x(fx),
            h - bottom + 16.0,
            left - 6.0,
            y(fy) + 4.0,
            y(fy),
            w - right,
            y(fy)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">offered load (messages/s)</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">latency (ms)</text>"#,
        (left + w - right) / 2.0,
        h - 12.0,
        h / 2.0,
        h / 2.0
    );
    let mut legend = 0.0;
    for (platform, points, dash) in series.iter().filter(|(_, p, _)| !p.is_empty()) {
        for (label, idx, color) in [("p50", 1usize, "#1f77b4"), ("p99", 2, "#d62728")] {
            let pts: Vec<String> = points
                .iter()
                .map(|p| {
                    let v = if idx == 1 { p.1 } else { p.2 };
                    format!("{:.1},{:.1}", x(p.0), y(v))
                })
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}" points="{}"/>"#,
                pts.join(" ")
            );
            for pt in &pts {
                let (px, py) = pt.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(s, r#"<circle cx="{px}" cy="{py}" r="3" fill="{color}"/>"#);
            }
            let ly = 50.0 + legend * 16.0;
            legend += 1.0;
            let _ = writeln!(
                s,
                r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="{}">{label} {platform}</text>"#,
                left + 10.0,
                left + 30.0,
                left + 36.0,
                ly + 4.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
