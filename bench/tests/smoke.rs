//! The short mode as a smoke test: the whole stack as separate processes (this crate's binary
//! runs each service with the same code as `patchbay service <name>`), every scenario (the
//! WeChat round trip included, and the round trip on a server with `sync_interval: always` and
//! on three clustered servers with R3 streams, and a broadcast on a stack of its own) and the
//! ceilings for a few seconds. No timing assertions; nothing
//! may be refused (by Patchbay, or by the fake platform: a wrong WeChat access token), lost or
//! duplicated, and duplicates are counted only once the stack has no work pending.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn short_mode_refuses_loses_and_duplicates_nothing() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_patchbay-bench"))
        .args(["--short", "--self-services", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    let json = std::fs::read_to_string(out.path().join("latest.json"))
        .unwrap_or_else(|e| panic!("no latest.json (exit {status}): {e}"));
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    let scenarios = r["scenarios"].as_array().unwrap();
    assert!(scenarios.len() >= 4, "{json}");
    for (path, mode) in [
        ("round_trip", "closed"),
        ("round_trip", "open"),
        ("wechat_round_trip", "closed"),
        ("wechat_round_trip", "open"),
    ] {
        assert!(
            scenarios
                .iter()
                .any(|s| s["path"] == path && s["mode"] == mode),
            "no {path} {mode} loop: {json}"
        );
    }
    // The round trip on the other NATS installations, each held against its own ceiling.
    for nats in ["sync always", "R3, 3 nats-servers"] {
        for mode in ["closed", "open"] {
            assert!(
                scenarios.iter().any(|s| s["nats_setup"] == nats
                    && s["mode"] == mode
                    && s["path"] == "round_trip"),
                "no {mode} round trip on {nats}: {json}"
            );
        }
        assert!(
            r["ceiling"]["runs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["nats_setup"] == nats && c["hops"] == 6),
            "no ceiling on {nats}: {json}"
        );
    }
    for s in scenarios {
        let name = &s["name"];
        let counts = [
            "sent",
            "rejected",
            "delivered",
            "lost",
            "duplicated",
            "drained",
        ]
        .map(|k| format!("{k} {}", s[k]))
        .join(", ");
        assert!(
            s["delivered"].as_u64().unwrap() > 0,
            "{name}: nothing delivered ({counts})"
        );
        assert_eq!(s["rejected"], 0, "{name}: refused sends ({counts})");
        assert_eq!(
            s["refused_by_platform"], 0,
            "{name}: the fake platform refused Patchbay's calls ({counts})"
        );
        assert_eq!(s["lost"], 0, "{name}: lost ({counts})");
        assert_eq!(
            s["drained"], true,
            "{name}: work still pending when duplicates were counted ({counts})"
        );
        assert_eq!(s["duplicated"], 0, "{name}: duplicated ({counts})");
        for key in [
            "throughput_per_s",
            "p50_ms",
            "p99_ms",
            "ceiling_per_s",
            "hops",
        ] {
            assert!(s.get(key).is_some(), "{key} missing: {s}");
        }
    }
    // The broadcast: stored, every recipient queued, sent at the pace, cancelled with
    // nothing sent twice, the other bot's round trip never lost.
    let b = &r["broadcast"];
    assert_eq!(b["recipients"], 10_000, "{b}");
    assert!(
        b["drain"]["sent"].as_u64().unwrap() > 0,
        "nothing sent: {b}"
    );
    assert_eq!(b["after_cancel"]["state"], "cancelled", "{b}");
    assert_eq!(b["after_cancel"]["sent_twice"], 0, "{b}");
    assert!(b["after_cancel"]["skipped"].as_i64().unwrap() > 0, "{b}");
    for when in ["without", "during"] {
        assert_eq!(b["round_trip"][when]["lost"], 0, "{when}: {b}");
        assert_eq!(b["round_trip"][when]["duplicated"], 0, "{when}: {b}");
    }
    assert!(out.path().join("latest.md").exists());
    assert!(out.path().join("latency.svg").exists());
    assert!(status.success(), "exit {status}");
}
