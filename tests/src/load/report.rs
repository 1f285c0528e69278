//! The run report: JSON for machines, a table for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::config::Plan;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcReport {
    pub name: String,
    pub role: String,
    pub baseline_mib: f64,
    pub connected_mib: f64,
    pub peak_mib: f64,
    /// CPU during the measured window, % of one core.
    pub cpu_pct: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StormReport {
    pub mode: String,
    pub victim: String,
    /// Clients that were on the victim.
    pub affected: u64,
    /// Victim stop (drain or kill) until it had exited, s.
    pub down_s: f64,
    /// Restart until the replacement was ready, s.
    pub restart_s: f64,
    /// Kill/SIGTERM until the last affected client was re-authenticated, s.
    pub recovery_s: f64,
    /// Longest time one client spent between its session ending and being
    /// re-authenticated (a drain spreads its closes over a window, so
    /// `recovery_s` includes that window), s.
    pub max_gap_s: f64,
    pub reconnects: u64,
    /// Resumes acknowledged with `recovered:false`.
    pub not_recovered: u64,
    pub min_connected: u64,
    pub complete: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetReport {
    pub target: String,
    /// All connected, no unexplained loss or duplicates.
    pub ok: bool,
    pub failure: Option<String>,
    pub plan: Option<Plan>,
    pub connected: u64,
    pub connect_s: f64,
    pub connects_per_s: f64,
    pub connect_failures: u64,
    /// Server tier (edges, or nats-server nodes for nats-ws) RSS growth per
    /// connection, KiB.
    pub server_kib_per_conn: f64,
    pub server_connected_mib: f64,
    pub harness_kib_per_conn: f64,
    /// CPU of the server tier over the measured window, % of one core.
    pub server_cpu_pct: f64,
    pub infra_cpu_pct: f64,
    pub harness_cpu_pct: f64,
    pub window_s: f64,
    pub published: u64,
    pub publish_errors: u64,
    pub expected: u64,
    pub received: u64,
    pub duplicates: u64,
    /// Duplicates that came after the session's ack (live), not in a replay.
    pub duplicates_live: u64,
    pub lost: i64,
    pub loss_pct: f64,
    pub deliveries_per_s: f64,
    pub drain_s: f64,
    pub latency_live: Percentiles,
    pub latency_replay: Percentiles,
    pub churn_per_s: f64,
    pub kicks: u64,
    pub reconnects: u64,
    pub not_recovered: u64,
    pub bad_frames: u64,
    pub storm: Option<StormReport>,
    pub processes: Vec<ProcReport>,
    pub closes: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub server_metrics: BTreeMap<String, Vec<String>>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub mem_gib: f64,
    pub kernel: String,
    pub loadavg_at_start: String,
    pub open_files_limit: String,
}

impl Machine {
    pub fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let mem_kib: f64 = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            mem_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            loadavg_at_start: read("/proc/loadavg").trim().to_owned(),
            open_files_limit: read("/proc/self/limits")
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| {
                    l.split_whitespace()
                        .skip(3)
                        .take(2)
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub harness: String,
    pub started_unix_ms: i64,
    pub command: String,
    pub machine: Machine,
    pub results: Vec<TargetReport>,
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}

fn f2(v: f64) -> String {
    format!("{v:.2}")
}

impl Report {
    pub fn table(&self) -> String {
        type Row = (&'static str, fn(&TargetReport) -> String);
        let rows: Vec<Row> = vec![
            ("ok", |r| r.ok.to_string()),
            ("clients connected", |r| r.connected.to_string()),
            ("connect time s", |r| f1(r.connect_s)),
            ("connects/s", |r| format!("{:.0}", r.connects_per_s)),
            ("connect failures", |r| r.connect_failures.to_string()),
            ("server KiB/conn", |r| f1(r.server_kib_per_conn)),
            ("server RSS MiB (connected)", |r| f1(r.server_connected_mib)),
            ("harness KiB/conn", |r| f1(r.harness_kib_per_conn)),
            ("server CPU % (window)", |r| {
                format!("{:.0}", r.server_cpu_pct)
            }),
            ("nats CPU % (edge target)", |r| {
                format!("{:.0}", r.infra_cpu_pct)
            }),
            ("harness CPU %", |r| format!("{:.0}", r.harness_cpu_pct)),
            ("window s", |r| f1(r.window_s)),
            ("events published", |r| r.published.to_string()),
            ("publish errors", |r| r.publish_errors.to_string()),
            ("deliveries expected", |r| r.expected.to_string()),
            ("deliveries received", |r| r.received.to_string()),
            ("duplicates", |r| r.duplicates.to_string()),
            ("  of which live (after ack)", |r| {
                r.duplicates_live.to_string()
            }),
            ("lost", |r| r.lost.to_string()),
            ("loss %", |r| format!("{:.4}", r.loss_pct)),
            ("deliveries/s", |r| format!("{:.0}", r.deliveries_per_s)),
            ("drain s", |r| f1(r.drain_s)),
            ("latency p50 ms", |r| f2(r.latency_live.p50_ms)),
            ("latency p90 ms", |r| f2(r.latency_live.p90_ms)),
            ("latency p99 ms", |r| f2(r.latency_live.p99_ms)),
            ("latency p99.9 ms", |r| f2(r.latency_live.p999_ms)),
            ("latency max ms", |r| f2(r.latency_live.max_ms)),
            ("replayed on resume", |r| r.latency_replay.count.to_string()),
            ("kicks (churn)", |r| r.kicks.to_string()),
            ("reconnects", |r| r.reconnects.to_string()),
            ("resumes not recovered", |r| r.not_recovered.to_string()),
            ("storm affected", |r| {
                r.storm
                    .as_ref()
                    .map(|s| s.affected.to_string())
                    .unwrap_or_default()
            }),
            ("storm down s", |r| {
                r.storm.as_ref().map(|s| f2(s.down_s)).unwrap_or_default()
            }),
            ("storm restart s", |r| {
                r.storm
                    .as_ref()
                    .map(|s| f2(s.restart_s))
                    .unwrap_or_default()
            }),
            ("storm recovery s", |r| {
                r.storm
                    .as_ref()
                    .map(|s| f2(s.recovery_s))
                    .unwrap_or_default()
            }),
            ("storm longest client gap s", |r| {
                r.storm
                    .as_ref()
                    .map(|s| f2(s.max_gap_s))
                    .unwrap_or_default()
            }),
        ];
        let mut out = String::new();
        let width = 28;
        let col = 16;
        let _ = write!(out, "{:width$}", "");
        for r in &self.results {
            let _ = write!(out, "{:>col$}", r.target);
        }
        out.push('\n');
        for (label, f) in rows {
            let _ = write!(out, "{label:width$}");
            for r in &self.results {
                let _ = write!(out, "{:>col$}", f(r));
            }
            out.push('\n');
        }
        for r in &self.results {
            if let Some(f) = &r.failure {
                let _ = writeln!(out, "{}: FAILED: {f}", r.target);
            }
            for n in &r.notes {
                let _ = writeln!(out, "{}: note: {n}", r.target);
            }
            if !r.closes.is_empty() {
                let _ = writeln!(out, "{}: session ends: {:?}", r.target, r.closes);
            }
            if !r.errors.is_empty() {
                let _ = writeln!(out, "{}: errors: {:?}", r.target, r.errors);
            }
        }
        out
    }
}
