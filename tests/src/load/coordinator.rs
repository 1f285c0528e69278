//! Runs one scenario against one or both targets.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::serialization::Deserializer;
use parking_lot::Mutex;
use rustix::process::Signal;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};

use crate::load::assign::{Assignment, guild_id};
use crate::load::client::new_histogram;
use crate::load::clock::{mono_ns, unix_ms};
use crate::load::config::{
    Cli, Command, EventPath, GuildScheme, Plan, Scenario, Status, StormMode, Target, Targets,
    WorkerSpec,
};
use crate::load::publisher::{self, PublishStats, Publisher};
use crate::load::report::{Machine, Percentiles, ProcReport, Report, StormReport, TargetReport};
use crate::load::sut::{self, EdgeOpts, Proc, ProcSample};

/// Runs what the command line asks; returns the report (already printed
/// and written).
pub async fn main(cli: Cli) -> anyhow::Result<Report> {
    let plan = cli.plan();
    let mut report = Report {
        harness: format!("voicewatch-load {}", env!("CARGO_PKG_VERSION")),
        started_unix_ms: unix_ms(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::probe(),
        results: vec![],
    };
    let targets: &[Target] = match cli.target {
        Targets::Edge => &[Target::Edge],
        Targets::NatsWs => &[Target::NatsWs],
        Targets::Both => &[Target::NatsWs, Target::Edge],
    };
    for (i, &target) in targets.iter().enumerate() {
        if i > 0 && cli.settle > 0.0 {
            eprintln!("  settling {:.0} s before the next target", cli.settle);
            tokio::time::sleep(Duration::from_secs_f64(cli.settle)).await;
        }
        eprintln!(
            "== {:?} against {} ({} clients, {} guilds)",
            plan.scenario,
            target.name(),
            plan.clients,
            plan.guilds
        );
        let dir = tempfile::Builder::new().prefix("vw-load-").tempdir()?;
        let mut r = match run_target(&cli, &plan, target, dir.path()).await {
            Ok(r) => r,
            Err(e) => TargetReport {
                target: target.name().into(),
                failure: Some(format!("{e:#}")),
                plan: Some(plan.clone()),
                ..Default::default()
            },
        };
        if cli.keep_logs || !r.ok {
            let kept = dir.keep();
            r.notes.push(format!(
                "server configs and logs kept in {}",
                kept.display()
            ));
        }
        report.results.push(r);
    }
    println!("{}", report.table());
    let path = match &cli.json {
        Some(p) => p.clone(),
        None => {
            let dir = Path::new("target/load");
            std::fs::create_dir_all(dir)?;
            dir.join(format!("{:?}-{}.json", plan.scenario, report.started_unix_ms).to_lowercase())
        }
    };
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    eprintln!("JSON report: {}", path.display());
    Ok(report)
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    count: usize,
}

struct Workers {
    list: Vec<Worker>,
    status: Arc<Mutex<Vec<Status>>>,
    finals: Arc<Mutex<Vec<Option<Status>>>>,
}

impl Workers {
    async fn spawn(specs: Vec<WorkerSpec>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let status = Arc::new(Mutex::new(vec![Status::default(); specs.len()]));
        let finals = Arc::new(Mutex::new(vec![None; specs.len()]));
        let mut list = Vec::new();
        for spec in specs {
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker")?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let line = serde_json::to_string(&spec)? + "\n";
            stdin.write_all(line.as_bytes()).await?;
            let (status, finals) = (status.clone(), finals.clone());
            let w = spec.worker;
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(s) = serde_json::from_str::<Status>(&line) {
                        if s.last.is_some() {
                            finals.lock()[w] = Some(s);
                        } else {
                            status.lock()[w] = s;
                        }
                    }
                }
            });
            list.push(Worker {
                child,
                stdin,
                count: spec.count,
            });
        }
        Ok(Self {
            list,
            status,
            finals,
        })
    }

    fn total(&self) -> Status {
        let all = self.status.lock();
        let mut t = Status::default();
        for s in all.iter() {
            t.connected += s.connected;
            t.ever += s.ever;
            t.received += s.received;
            t.duplicates += s.duplicates;
            t.duplicates_live += s.duplicates_live;
            t.reconnects += s.reconnects;
            t.disconnects += s.disconnects;
            t.failures += s.failures;
            t.not_recovered += s.not_recovered;
            t.bad_frames += s.bad_frames;
            t.kicks += s.kicks;
            t.last_auth_ns = t.last_auth_ns.max(s.last_auth_ns);
            t.max_gap_ns = t.max_gap_ns.max(s.max_gap_ns);
        }
        t
    }

    async fn send(&mut self, f: impl Fn(&Worker) -> Command) {
        for w in &mut self.list {
            let cmd = f(w);
            if let Ok(line) = serde_json::to_string(&cmd) {
                let _ = w.stdin.write_all(format!("{line}\n").as_bytes()).await;
                let _ = w.stdin.flush().await;
            }
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.list.iter().filter_map(|w| w.child.id()).collect()
    }

    async fn stop(&mut self) -> Vec<Status> {
        self.send(|_| Command::Stop).await;
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end && self.finals.lock().iter().any(Option::is_none) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for w in &mut self.list {
            let _ = tokio::time::timeout(Duration::from_secs(5), w.child.wait()).await;
        }
        self.finals.lock().iter().flatten().cloned().collect()
    }
}

fn sum_samples(pids: &[u32]) -> ProcSample {
    pids.iter()
        .map(|&p| sut::sample(p))
        .fold(ProcSample::default(), |a, b| ProcSample {
            rss_kib: a.rss_kib + b.rss_kib,
            cpu_ticks: a.cpu_ticks + b.cpu_ticks,
        })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Per-process bookkeeping of RSS and CPU over the run.
struct Tracked {
    name: String,
    role: &'static str,
    baseline: u64,
    connected: u64,
    peak: u64,
    cpu_start: u64,
    cpu_end: u64,
    /// CPU ticks of earlier incarnations (storm restarts).
    cpu_carry: u64,
    pid: u32,
}

impl Tracked {
    fn new(name: &str, role: &'static str, pid: u32) -> Self {
        let s = sut::sample(pid);
        Self {
            name: name.into(),
            role,
            baseline: s.rss_kib,
            connected: 0,
            peak: s.rss_kib,
            cpu_start: 0,
            cpu_end: 0,
            cpu_carry: 0,
            pid,
        }
    }

    fn ticks(&self) -> u64 {
        self.cpu_carry + sut::sample(self.pid).cpu_ticks
    }

    fn repid(&mut self, pid: u32, last_ticks: u64) {
        if pid != self.pid {
            self.cpu_carry = last_ticks;
            self.pid = pid;
        }
    }

    fn peak(&mut self) {
        self.peak = self.peak.max(sut::sample(self.pid).rss_kib);
    }
}

async fn run_target(
    cli: &Cli,
    plan: &Plan,
    target: Target,
    dir: &Path,
) -> anyhow::Result<TargetReport> {
    let mut notes = Vec::new();
    let nats_bin = sut::find_nats_server(cli.nats_server.as_deref())?;

    // The server tier takes the clients; infra is what it needs behind it.
    let mut tier: Vec<Proc> = Vec::new();
    let mut infra: Vec<Proc> = Vec::new();
    let mut endpoints = Vec::new();
    let ready_path;
    let pub_url;
    match target {
        Target::NatsWs => {
            let full = plan.path == EventPath::Full;
            if full && plan.servers > 1 {
                bail!(
                    "the full path against nats-ws runs one nats-server (JetStream for the worker): pass --servers 1"
                );
            }
            let nodes = sut::start_nats(&nats_bin, dir, plan.servers, full)?;
            pub_url = format!("nats://{}", nodes[0].client);
            for n in nodes {
                endpoints.push(n.ws);
                tier.push(n.proc);
            }
            ready_path = "/healthz";
        }
        Target::Edge => {
            if !cli.edge_bin.is_file() {
                bail!(
                    "edge binary {} not found (build it or pass --edge-bin)",
                    cli.edge_bin.display()
                );
            }
            let mut nodes = sut::start_nats(&nats_bin, dir, 1, true)?;
            let node = nodes.remove(0);
            pub_url = format!("nats://{}", node.client);
            sut::wait_ok(node.proc.http, "/healthz", Duration::from_secs(20)).await?;
            infra.push(node.proc);
            let opts = EdgeOpts {
                bin: &cli.edge_bin,
                nats_url: pub_url.clone(),
                jwt_secret: &cli.jwt_secret,
                hmac_keys: &cli.hmac_keys,
                prefix: &cli.subject_prefix,
                stream: &cli.stream,
                extra_env: &cli.edge_env,
            };
            for i in 0..plan.servers {
                let p = sut::start_edge(&opts, dir, i)?;
                endpoints.push(p.http);
                tier.push(p);
            }
            ready_path = "/readyz";
        }
    }
    for p in tier.iter_mut() {
        sut::wait_ready(p, ready_path, Duration::from_secs(30)).await?;
    }
    for p in infra.iter_mut() {
        sut::wait_ready(p, "/healthz", Duration::from_secs(30)).await?;
    }
    let mut sim_addr = None;
    if plan.path == EventPath::Full {
        if plan.scenario == Scenario::Idle {
            bail!("idle has no events: use --path bus");
        }
        if !cli.edge_bin.is_file() {
            bail!(
                "voicewatch binary {} not found (pass --edge-bin)",
                cli.edge_bin.display()
            );
        }
        let bin = cli.edge_bin.display().to_string();
        let sim: std::net::SocketAddr = ([127, 0, 0, 1], sut::free_port()?).into();
        let users = cli
            .sim_users
            .unwrap_or((plan.guilds as u32).saturating_mul(10));
        let p = Proc::spawn(
            "simulator",
            vec![
                bin.clone(),
                "simulate".into(),
                "--listen".into(),
                sim.to_string(),
                "--load-guilds".into(),
                plan.guilds.to_string(),
                "--load-users".into(),
                users.to_string(),
            ],
            vec![("RUST_LOG".into(), "warn".into())],
            sim,
            dir.join("simulator.log"),
        )?;
        let mut p = p;
        sut::wait_ready(&mut p, "/control/stats", Duration::from_secs(30)).await?;
        infra.push(p);
        let listen: std::net::SocketAddr = ([127, 0, 0, 1], sut::free_port()?).into();
        let env = vec![
            (
                "VOICEWATCH_DISCORD_TOKEN".to_owned(),
                "sim-token".to_owned(),
            ),
            (
                "VOICEWATCH_DISCORD_GATEWAY_URL".to_owned(),
                format!("ws://{sim}"),
            ),
            (
                "VOICEWATCH_DISCORD_API_URL".to_owned(),
                format!("http://{sim}"),
            ),
            ("VOICEWATCH_NATS_URL".to_owned(), pub_url.clone()),
            ("VOICEWATCH_HMAC_KEYS".to_owned(), cli.hmac_keys.clone()),
            (
                "VOICEWATCH_SUBJECT_PREFIX".to_owned(),
                cli.subject_prefix.clone(),
            ),
            ("VOICEWATCH_STREAM".to_owned(), cli.stream.clone()),
            ("VOICEWATCH_WORKER_LISTEN".to_owned(), listen.to_string()),
            (
                "VOICEWATCH_WORKER_STATE_DIR".to_owned(),
                dir.join("worker-state").display().to_string(),
            ),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ];
        let mut p = Proc::spawn(
            "worker",
            vec![bin, "worker".into()],
            env,
            listen,
            dir.join("worker.log"),
        )?;
        sut::wait_ready(&mut p, "/readyz", Duration::from_secs(60)).await?;
        infra.push(p);
        sim_addr = Some((sim, users));
    }
    let mut publisher = Publisher::connect(
        &pub_url,
        target == Target::Edge,
        &cli.hmac_keys,
        &cli.subject_prefix,
    )
    .await?;
    publisher.ensure_stream(&cli.stream).await?;

    let mut tracked: Vec<Tracked> = tier
        .iter()
        .map(|p| Tracked::new(&p.name, "server", p.pid()))
        .chain(
            infra
                .iter()
                .map(|p| Tracked::new(&p.name, "infra", p.pid())),
        )
        .collect();

    // Workers.
    let assignment = Assignment::new(plan.clients, plan.guilds, plan.dist, cli.zipf_s);
    let counts = assignment.counts();
    let guild_scheme = if plan.path == EventPath::Full {
        GuildScheme::Sim
    } else {
        GuildScheme::Harness
    };
    let guild_ids: Vec<u64> = (0..plan.guilds).map(guild_id).collect();
    let per_worker = plan.clients.div_ceil(plan.workers);
    let mut specs = Vec::new();
    let mut first = 0;
    for w in 0..plan.workers {
        let count = per_worker.min(plan.clients - first);
        if count == 0 {
            break;
        }
        specs.push(WorkerSpec {
            worker: w,
            target,
            endpoints: endpoints.clone(),
            first,
            count,
            total: plan.clients,
            guilds: plan.guilds,
            dist: plan.dist,
            zipf_s: cli.zipf_s,
            per_address: cli.per_address,
            jwt_secret: cli.jwt_secret.clone(),
            subject_prefix: cli.subject_prefix.clone(),
            connect_concurrency: cli.connect_concurrency,
            reconnect_jitter_ms: cli.reconnect_jitter_ms,
            threads: cli.worker_threads,
            guild_scheme,
        });
        first += count;
    }
    let connect_start = Instant::now();
    let mut workers = Workers::spawn(specs).await?;
    let worker_pids = workers.pids();
    let harness_base = sum_samples(&worker_pids);
    let n = plan.clients as u64;
    let connect_timeout = Duration::from_secs_f64(
        cli.connect_timeout
            .unwrap_or((plan.clients as f64 / 300.0).max(60.0)),
    );
    let mut last_print = Instant::now();
    loop {
        let t = workers.total();
        if t.connected >= n {
            break;
        }
        if connect_start.elapsed() > connect_timeout {
            notes.push(format!(
                "connect timeout: {} of {n} connected after {connect_timeout:?}",
                t.connected
            ));
            break;
        }
        if last_print.elapsed() > Duration::from_secs(2) {
            eprintln!("  connected {}/{n} ({} failures)", t.connected, t.failures);
            last_print = Instant::now();
        }
        for tr in &mut tracked {
            tr.peak();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_s = connect_start.elapsed().as_secs_f64();
    let after_connect = workers.total();
    eprintln!(
        "  connected {}/{n} in {connect_s:.1}s",
        after_connect.connected
    );
    // Let allocators and buffers settle before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for tr in &mut tracked {
        let s = sut::sample(tr.pid);
        tr.connected = s.rss_kib;
        tr.peak = tr.peak.max(s.rss_kib);
    }
    let harness_connected = sum_samples(&worker_pids);

    // Measured window: the idle hold, or the event phase.
    let kicks_before = workers.total().kicks;
    let reconnects_before = workers.total().reconnects;
    let not_recovered_before = workers.total().not_recovered;
    for tr in &mut tracked {
        tr.cpu_start = tr.ticks();
    }
    let harness_cpu_start = sum_samples(&worker_pids).cpu_ticks;
    let window_start = Instant::now();
    let mut storm = None;
    let pstats: PublishStats;
    if plan.scenario == Scenario::Idle {
        let hold_end = Instant::now() + Duration::from_secs_f64(plan.hold_s);
        while Instant::now() < hold_end {
            for tr in &mut tracked {
                tr.peak();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for tr in &mut tracked {
            tr.cpu_end = tr.ticks();
        }
        // One probe event per guild: every connection must get exactly one.
        pstats = publisher
            .run(
                &guild_ids,
                5_000.0,
                Duration::ZERO,
                Some(plan.guilds as u64),
            )
            .await;
    } else {
        if plan.churn_per_s > 0.0 {
            let rate = plan.churn_per_s;
            let total = plan.clients as f64;
            workers
                .send(|w| Command::Churn {
                    per_sec: rate * w.count as f64 / total,
                })
                .await;
        }
        let (rate, duration) = (plan.rate, Duration::from_secs_f64(plan.duration_s));
        let gids = guild_ids.clone();
        let (prefix, guilds) = (cli.subject_prefix.clone(), plan.guilds);
        let mut task = tokio::spawn(async move {
            let s = match sim_addr {
                None => publisher.run(&gids, rate, duration, None).await,
                Some((sim, users)) => {
                    let client = publisher.client();
                    match publisher::run_full_path(
                        client, &prefix, sim, guilds, users, rate, duration,
                    )
                    .await
                    {
                        Ok(s) => s,
                        Err(e) => {
                            eprintln!("  full path: {e:#}");
                            PublishStats {
                                errors: 1,
                                per_guild: vec![0; guilds],
                                ..Default::default()
                            }
                        }
                    }
                }
            };
            (publisher, s)
        });
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let storm_at = Duration::from_secs_f64(plan.duration_s / 3.0);
        let (p, s) = loop {
            tokio::select! {
                r = &mut task => break r?,
                _ = tick.tick() => {
                    for tr in &mut tracked {
                        tr.peak();
                    }
                    if let (Some(mode), None) = (plan.storm, &storm)
                        && window_start.elapsed() >= storm_at
                    {
                        let victim = if target == Target::NatsWs && tier.len() > 1 { 1 } else { 0 };
                        let r = run_storm(mode, &mut tier, victim, ready_path, &workers, plan, reconnects_before, &mut tracked).await;
                        storm = Some(r);
                    }
                }
            }
        };
        publisher = p;
        pstats = s;
        if plan.churn_per_s > 0.0 {
            workers.send(|_| Command::Churn { per_sec: 0.0 }).await;
        }
        for tr in &mut tracked {
            tr.cpu_end = tr.ticks();
        }
    }
    drop(publisher);
    let window_s = window_start.elapsed().as_secs_f64();
    let harness_cpu_end = sum_samples(&worker_pids).cpu_ticks;

    // Drain: wait for the deliveries still in flight.
    let expected: u64 = pstats
        .per_guild
        .iter()
        .zip(&counts)
        .map(|(e, c)| e * c)
        .sum();
    let drain_start = Instant::now();
    let mut last = workers.total().received;
    let mut last_change = Instant::now();
    let mut drain_cut = false;
    loop {
        let t = workers.total();
        if t.received >= expected {
            break;
        }
        if t.received != last {
            last = t.received;
            last_change = Instant::now();
        }
        if last_change.elapsed() > Duration::from_secs(5) {
            break;
        }
        if drain_start.elapsed() > Duration::from_secs_f64(cli.drain_timeout) {
            drain_cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_s = drain_start.elapsed().as_secs_f64();

    // What the servers say about themselves.
    let mut server_metrics = BTreeMap::new();
    for p in tier.iter().chain(infra.iter()) {
        let is_nats = p.name.starts_with("nats");
        let path = if is_nats { "/varz" } else { "/metrics" };
        if let Ok((_, body)) = sut::http_get(p.http, path).await {
            let lines: Vec<String> = if is_nats {
                serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .map(|v| {
                        [
                            "connections",
                            "total_connections",
                            "slow_consumers",
                            "in_msgs",
                            "out_msgs",
                            "mem",
                            "cpu",
                        ]
                        .iter()
                        .map(|k| format!("{k} {}", v.get(*k).cloned().unwrap_or_default()))
                        .collect()
                    })
                    .unwrap_or_default()
            } else {
                body.lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                    .take(400)
                    .map(str::to_owned)
                    .collect()
            };
            server_metrics.insert(p.name.clone(), lines);
        }
    }

    let finals = workers.stop().await;
    let mut live = new_histogram();
    let mut replay = new_histogram();
    let mut closes: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut fin = Status::default();
    for s in &finals {
        fin.received += s.received;
        fin.duplicates += s.duplicates;
        fin.duplicates_live += s.duplicates_live;
        fin.failures += s.failures;
        fin.bad_frames += s.bad_frames;
        fin.kicks += s.kicks;
        fin.reconnects += s.reconnects;
        fin.not_recovered += s.not_recovered;
        if let Some(f) = &s.last {
            for (k, v) in &f.closes {
                *closes.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &f.errors {
                *errors.entry(k.clone()).or_default() += v;
            }
            for (hex, h) in [(&f.live_hist, &mut live), (&f.replay_hist, &mut replay)] {
                if let Ok(bytes) = hex::decode(hex)
                    && let Ok(part) = Deserializer::new().deserialize::<u64, _>(&mut &bytes[..])
                {
                    let _ = h.add(part);
                }
            }
        }
    }
    if finals.len() != workers.list.len() {
        notes.push(format!(
            "{} of {} workers sent no final report",
            workers.list.len() - finals.len(),
            workers.list.len()
        ));
    }
    // Counters at stop include the drain; the final lines are authoritative.
    let received = fin.received.max(workers.total().received);
    let lost = expected as i64 - received as i64;

    let ticks = sut::ticks_per_second() as f64;
    let cpu_pct = |start: u64, end: u64, secs: f64| {
        if secs <= 0.0 {
            0.0
        } else {
            (end.saturating_sub(start)) as f64 / ticks / secs * 100.0
        }
    };
    let window_cpu = if plan.scenario == Scenario::Idle {
        plan.hold_s
    } else {
        window_s
    };
    let mut processes = Vec::new();
    let (mut server_cpu, mut infra_cpu, mut server_base, mut server_conn) = (0.0, 0.0, 0u64, 0u64);
    for tr in &tracked {
        let c = cpu_pct(tr.cpu_start, tr.cpu_end, window_cpu);
        if tr.role == "server" {
            server_cpu += c;
            server_base += tr.baseline;
            server_conn += tr.connected;
        } else {
            infra_cpu += c;
        }
        processes.push(ProcReport {
            name: tr.name.clone(),
            role: tr.role.into(),
            baseline_mib: mib(tr.baseline),
            connected_mib: mib(tr.connected),
            peak_mib: mib(tr.peak),
            cpu_pct: c,
        });
    }
    let connected = after_connect.connected;
    let per_conn = |base: u64, conn: u64| {
        if connected == 0 {
            0.0
        } else {
            conn.saturating_sub(base) as f64 / connected as f64
        }
    };

    let explained_loss =
        matches!(plan.scenario, Scenario::Churn | Scenario::Storm) && target == Target::NatsWs;
    if lost > 0 && explained_loss {
        notes.push("core NATS over WebSocket has no resume: events published while a client was disconnected never reach it (at-most-once); this loss is the comparison's point".into());
    }
    if pstats.repeated > 0 {
        notes.push(format!(
            "the worker published {} events more than once (same id; counted once)",
            pstats.repeated
        ));
    }
    if pstats.errors > 0 {
        notes.push(format!(
            "{} publishes were not acknowledged by the bus: their deliveries count as expected",
            pstats.errors
        ));
    }
    for (name, lines) in &server_metrics {
        if let Some(sc) = lines.iter().find(|l| l.starts_with("slow_consumers "))
            && sc != "slow_consumers 0"
        {
            notes.push(format!(
                "{name}: {sc} (nats-server cut clients that fell behind)"
            ));
        }
    }
    if let Some(c) = closes.get("4008") {
        notes.push(format!("the edge closed {c} slow consumers (4008)"));
    }
    if plan.scenario != Scenario::Idle
        && plan.rate > 0.0
        && pstats.seconds > 0.0
        && (pstats.published as f64) < plan.rate * plan.duration_s * 0.95
    {
        notes.push(format!(
            "the publisher fell behind: {} of {:.0} events",
            pstats.published,
            plan.rate * plan.duration_s
        ));
    }
    let ok = connected >= n
        && (lost == 0 || explained_loss || drain_cut)
        && (fin.duplicates == 0 || explained_loss)
        && pstats.errors == 0
        && storm.as_ref().is_none_or(|s: &StormReport| s.complete);
    if lost > 0 && !explained_loss && !drain_cut {
        notes.push(format!("UNEXPLAINED LOSS: {lost} deliveries missing"));
    }
    if drain_cut && lost > 0 {
        notes.push(format!(
            "saturated: deliveries were still arriving {:.0} s after the last event (backlog); the {lost} missing at the cut-off count as lost, and deliveries/s is over the window plus the drain",
            cli.drain_timeout
        ));
    }
    let deliveries_window = if plan.scenario == Scenario::Idle {
        pstats.seconds + drain_s
    } else {
        window_s + drain_s
    };
    Ok(TargetReport {
        target: target.name().into(),
        ok,
        failure: None,
        plan: Some(plan.clone()),
        connected,
        connect_s,
        connects_per_s: connected as f64 / connect_s.max(1e-9),
        connect_failures: fin.failures,
        server_kib_per_conn: per_conn(server_base, server_conn),
        server_connected_mib: mib(server_conn),
        harness_kib_per_conn: per_conn(harness_base.rss_kib, harness_connected.rss_kib),
        server_cpu_pct: server_cpu,
        infra_cpu_pct: infra_cpu,
        harness_cpu_pct: cpu_pct(harness_cpu_start, harness_cpu_end, window_s),
        window_s: window_cpu,
        published: pstats.published,
        publish_errors: pstats.errors,
        expected,
        received,
        duplicates: fin.duplicates,
        duplicates_live: fin.duplicates_live,
        lost,
        loss_pct: if expected == 0 {
            0.0
        } else {
            lost as f64 / expected as f64 * 100.0
        },
        deliveries_per_s: received as f64 / deliveries_window.max(1e-9),
        drain_s,
        latency_live: Percentiles::of(&live),
        latency_replay: Percentiles::of(&replay),
        churn_per_s: plan.churn_per_s,
        kicks: fin.kicks.saturating_sub(kicks_before),
        reconnects: fin.reconnects.saturating_sub(reconnects_before),
        not_recovered: fin.not_recovered.saturating_sub(not_recovered_before),
        bad_frames: fin.bad_frames,
        storm,
        processes,
        closes,
        errors,
        server_metrics,
        notes,
    })
}

#[allow(clippy::too_many_arguments)]
async fn run_storm(
    mode: StormMode,
    tier: &mut [Proc],
    victim: usize,
    ready_path: &str,
    workers: &Workers,
    plan: &Plan,
    _reconnects_before: u64,
    tracked: &mut [Tracked],
) -> StormReport {
    let servers = tier.len();
    let affected = (0..plan.clients).filter(|i| i % servers == victim).count() as u64;
    let before = workers.total();
    let n = plan.clients as u64;
    let p = &mut tier[victim];
    eprintln!("  storm: {mode:?} {} with {affected} clients", p.name);
    let last_ticks = tracked[victim].ticks();
    let t0 = mono_ns();
    let t0i = Instant::now();
    match mode {
        StormMode::Kill => p.stop(Signal::KILL, Duration::from_secs(5)),
        StormMode::Term => p.stop(Signal::TERM, Duration::from_secs(60)),
    }
    let down_s = t0i.elapsed().as_secs_f64();
    let restart_at = Instant::now();
    let mut report = StormReport {
        mode: format!("{mode:?}").to_lowercase(),
        victim: p.name.clone(),
        affected,
        down_s,
        ..Default::default()
    };
    if let Err(e) = p.restart() {
        eprintln!("  storm: restart failed: {e:#}");
        return report;
    }
    tracked[victim].repid(p.pid(), last_ticks);
    if let Err(e) = sut::wait_ok(p.http, ready_path, Duration::from_secs(60)).await {
        eprintln!("  storm: {e:#}");
        return report;
    }
    report.restart_s = restart_at.elapsed().as_secs_f64();
    let mut min_connected = n;
    let end = Instant::now() + Duration::from_secs(180);
    loop {
        let t = workers.total();
        min_connected = min_connected.min(t.connected);
        let reconnects = t.reconnects - before.reconnects;
        if t.connected >= n && reconnects >= affected {
            report.complete = true;
            report.recovery_s = t.last_auth_ns.saturating_sub(t0) as f64 / 1e9;
            report.max_gap_s = t.max_gap_ns as f64 / 1e9;
            report.reconnects = reconnects;
            report.not_recovered = t.not_recovered - before.not_recovered;
            break;
        }
        if Instant::now() > end {
            report.reconnects = reconnects;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.min_connected = min_connected;
    eprintln!(
        "  storm: recovered={} in {:.2}s",
        report.complete, report.recovery_s
    );
    report
}
