//! The worker under the simulator's load mode publishes every event.
//!
//! `load_smoke` runs in the suite (a couple of seconds). `load_full` is the
//! measured run (1,000 guilds, 50,000 users, 2,000 changes/s for 60 s on a
//! private nats-server); see `gateway-worker/README.md` for the command.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use voicewatch_bus::testkit::NatsServer;
use voicewatch_bus::{Bus, MemoryBus, MemoryBusConfig, NatsArgs, NatsBus, Storage};
use voicewatch_gateway_worker::WorkerHandle;
use voicewatch_protocol::{EventKind, Keyring, Snowflake};
use voicewatch_tests::harness::{HMAC_KEYS, start_bus_worker, worker_args};
use voicewatch_tests::sim::load::{self, LoadConfig, LoadReport};
use voicewatch_tests::sim::{SimConfig, Simulator};

fn published(w: &WorkerHandle) -> u64 {
    let m = w.metrics();
    ["voice.joined", "voice.left", "voice.moved"]
        .iter()
        .map(|t| {
            m.published
                .get_or_create(&[("type", (*t).to_owned())])
                .get()
        })
        .sum()
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    tokio::time::timeout(timeout, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

struct Run {
    report: LoadReport,
    worker: WorkerHandle,
    sim: Simulator,
    _dir: tempfile::TempDir,
}

async fn run(
    cfg: &LoadConfig,
    shards: u32,
    bus: Arc<dyn Bus>,
    before_load: impl AsyncFnOnce(&Simulator),
) -> Run {
    let sim = Simulator::start(SimConfig {
        recommended_shards: shards,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    load::populate(&sim, cfg);
    let dir = tempfile::tempdir().unwrap();
    let mut args = worker_args(&sim, dir.path());
    args.identify_interval_ms = 0;
    // Production default: the load run measures what an operator would run.
    args.save_interval_ms = 1000;
    let worker = start_bus_worker(&args, bus).await;
    assert_eq!(
        worker.shard_count(),
        shards,
        "shard count from GET /gateway/bot"
    );
    sim.wait_active(u64::from(shards), Duration::from_secs(30))
        .await
        .unwrap();
    let m = worker.metrics();
    let guilds = u64::from(cfg.guilds);
    wait_until("every GUILD_CREATE", Duration::from_secs(60), || {
        m.gateway_events
            .get_or_create(&[("type", "GUILD_CREATE".to_owned())])
            .get()
            >= guilds
    })
    .await;
    before_load(&sim).await;
    let report = load::run(&sim, cfg).await;
    let expected = report.changes;
    wait_until("every change published", Duration::from_secs(120), || {
        published(&worker) >= expected
    })
    .await;
    Run {
        report,
        worker,
        sim,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_smoke() {
    let cfg = LoadConfig {
        guilds: 20,
        users: 1_000,
        voice_channels: 3,
        initial_in_voice: 0.3,
        rate: 1_000,
        duration_secs: 1.5,
        seed: 11,
    };
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(MemoryBusConfig {
        history_per_guild: 100_000,
        ..Default::default()
    }));
    let keyring = Keyring::parse(HMAC_KEYS).unwrap();
    // Subscribe to every load guild before anything happens.
    let mut streams = Vec::new();
    for i in 0..cfg.guilds {
        streams.push(
            bus.subscribe(Snowflake::new(load::guild_id(i)).unwrap())
                .await
                .unwrap(),
        );
    }
    let r = run(&cfg, 2, bus.clone(), async |_| {}).await;
    assert_eq!(r.report.changes, 1_500);
    assert_eq!(
        published(&r.worker),
        r.report.changes,
        "exactly one event per change"
    );

    // Every event is on the bus, signed, once; kinds match what was done.
    let mut merged = futures::stream::select_all(streams);
    let mut kinds: HashMap<EventKind, u64> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..r.report.changes {
        let d = tokio::time::timeout(Duration::from_secs(10), merged.next())
            .await
            .unwrap()
            .unwrap();
        let ev = d
            .event
            .open(&keyring, None, 300_000)
            .expect("signed with the worker's key");
        assert!(
            ids.insert(ev.id.as_str().to_owned()),
            "duplicate id {}",
            ev.id
        );
        *kinds.entry(ev.kind).or_default() += 1;
    }
    assert_eq!(
        kinds.get(&EventKind::Joined).copied().unwrap_or(0),
        r.report.joins
    );
    assert_eq!(
        kinds.get(&EventKind::Moved).copied().unwrap_or(0),
        r.report.moves
    );
    assert_eq!(
        kinds.get(&EventKind::Left).copied().unwrap_or(0),
        r.report.leaves
    );
    assert_eq!(r.worker.metrics().latency_summary().count, r.report.changes);
    drop(r.sim);
    r.worker.shutdown().await;
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The measured run. `VW_LOAD_GUILDS`, `VW_LOAD_USERS`, `VW_LOAD_RATE`,
/// `VW_LOAD_SECS`, `VW_LOAD_SHARDS` override the size; `VW_LOAD_BUS=memory`
/// uses the in-process bus instead of a private nats-server. CPU and memory
/// are this process's (worker, bus client and simulator; the nats-server is
/// a separate process), so they are an upper bound for the worker.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "takes a minute; run explicitly (see gateway-worker/README.md)"]
async fn load_full() {
    let cfg = LoadConfig {
        guilds: env("VW_LOAD_GUILDS", 1_000),
        users: env("VW_LOAD_USERS", 50_000),
        rate: env("VW_LOAD_RATE", 2_000),
        duration_secs: env("VW_LOAD_SECS", 60.0),
        ..LoadConfig::default()
    };
    let shards = env("VW_LOAD_SHARDS", 4);
    let use_nats = std::env::var("VW_LOAD_BUS")
        .map(|v| v != "memory")
        .unwrap_or(true);
    let (server, bus): (Option<NatsServer>, Arc<dyn Bus>) = if use_nats {
        let server = tokio::task::spawn_blocking(NatsServer::start)
            .await
            .unwrap();
        let mut args = NatsArgs::new([server.url()]);
        args.stream_storage = Storage::File;
        let bus = NatsBus::connect(args).await.unwrap();
        (Some(server), Arc::new(bus))
    } else {
        (None, Arc::new(MemoryBus::default()))
    };
    let head_before = bus.head().await.unwrap();
    let mut cpu_at_start = 0.0;
    let mut t0 = Instant::now();
    let r = run(&cfg, shards, bus.clone(), async |_| {
        cpu_at_start = cpu_seconds();
        t0 = Instant::now();
    })
    .await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_at_start;
    let head_after = bus.head().await.unwrap();
    let stored = head_after.seq - head_before.seq;
    let lat = r.worker.metrics().latency_summary();
    let queued = r.worker.metrics().queued.get();
    println!(
        "LOAD guilds={} users={} rate={}/s secs={} shards={} bus={}\n\
         changes={} (joins={} moves={} leaves={}) generated_in={}ms published={} stored_on_bus={} queued_via_outbox={}\n\
         dispatch->ack latency: n={} p50={:?} p99={:?} max={:?}\n\
         process cpu={:.1}s over {:.1}s wall ({:.0}% of one core) VmHWM={} MiB VmRSS={} MiB",
        cfg.guilds,
        cfg.users,
        cfg.rate,
        cfg.duration_secs,
        shards,
        if use_nats { "nats" } else { "memory" },
        r.report.changes,
        r.report.joins,
        r.report.moves,
        r.report.leaves,
        r.report.elapsed_ms,
        published(&r.worker),
        stored,
        queued,
        lat.count,
        lat.p50,
        lat.p99,
        lat.max,
        cpu,
        wall,
        100.0 * cpu / wall.max(0.001),
        status_kb("VmHWM:") / 1024,
        status_kb("VmRSS:") / 1024,
    );
    assert_eq!(published(&r.worker), r.report.changes);
    assert_eq!(
        stored, r.report.changes,
        "the stream holds exactly one message per change"
    );
    r.worker.shutdown().await;
    drop(server);
}
