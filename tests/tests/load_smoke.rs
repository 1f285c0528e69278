//! The load harness at smoke size: a few hundred real WebSocket clients in
//! worker processes, signed events through a private nats-server, every
//! delivery counted. Full-size runs are separate commands (BENCHMARKS.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

fn run_smoke(target: &str, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voicewatch-load"));
    cmd.args(["smoke", "--target", target, "--json"])
        .arg(&json)
        .args(extra)
        .args(["--drain-timeout", "10", "--connect-timeout", "20"]);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "voicewatch-load smoke --target {target} failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    report["results"][0].clone()
}

fn check(r: &Value, clients: u64) {
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["connected"].as_u64(), Some(clients), "{r:#}");
    let expected = r["expected"].as_u64().unwrap();
    assert!(expected > 0, "no deliveries expected: {r:#}");
    assert_eq!(r["received"].as_u64(), Some(expected), "{r:#}");
    assert_eq!(r["lost"].as_i64(), Some(0), "{r:#}");
    assert_eq!(r["duplicates"].as_u64(), Some(0), "{r:#}");
    assert!(
        r["latency_live"]["count"].as_u64().unwrap() >= expected,
        "{r:#}"
    );
    assert!(r["server_kib_per_conn"].as_f64().unwrap() > 0.0, "{r:#}");
}

#[test]
fn smoke_against_nats_server_websocket() {
    let start = std::time::Instant::now();
    // Two worker processes and a two-node nats-server cluster: the
    // multi-process paths of the full-size runs, at smoke size.
    let r = run_smoke("nats-ws", &["--workers", "2", "--servers", "2"]);
    check(&r, 300);
    assert!(start.elapsed() < Duration::from_secs(60));
}

/// The `voicewatch` binary: `$VOICEWATCH_BIN` (scripts/test sets it), else
/// the workspace's debug build.
fn voicewatch_bin() -> String {
    if let Ok(p) = std::env::var("VOICEWATCH_BIN") {
        return p;
    }
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/voicewatch");
    assert!(
        p.is_file(),
        "{} not found: run `cargo build --bin voicewatch` or set VOICEWATCH_BIN",
        p.display()
    );
    p.display().to_string()
}

#[test]
fn smoke_against_our_edge() {
    let start = std::time::Instant::now();
    // Two edges behind the harness's round-robin, a private nats-server
    // with JetStream, events signed with the contract's HMAC.
    let bin = voicewatch_bin();
    let r = run_smoke(
        "edge",
        &["--workers", "2", "--servers", "2", "--edge-bin", &bin],
    );
    check(&r, 300);
    assert_eq!(r["bad_frames"].as_u64(), Some(0), "{r:#}");
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn smoke_full_path_simulator_worker_nats_edge() {
    let start = std::time::Instant::now();
    // `voicewatch simulate` in load mode drives voice changes, `voicewatch
    // worker` turns them into signed events on nats-server, an edge delivers
    // them; what each client must receive is what the worker put on the bus.
    let bin = voicewatch_bin();
    let r = run_smoke(
        "edge",
        &["--path", "full", "--edge-bin", &bin, "--sim-users", "200"],
    );
    check(&r, 300);
    assert_eq!(r["bad_frames"].as_u64(), Some(0), "{r:#}");
    // 20 changes/s for 3 s: every one reached the bus as one event.
    let published = r["published"].as_u64().unwrap();
    assert!((40..=80).contains(&published), "{r:#}");
    assert!(start.elapsed() < Duration::from_secs(60));
}
