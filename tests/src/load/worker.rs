//! A worker process: holds its share of the clients and reports to the
//! coordinator over stdout.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::serialization::{Serializer, V2Serializer};
use rand::Rng;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Notify, Semaphore, watch};

use crate::load::assign::{Assignment, endpoint_of, guild_id_in, source_addr, user_id};
use crate::load::client::{self, Client, Shared, Stats};
use crate::load::config::{Command, Final, Status, WorkerSpec};

/// Entry point of `voicewatch-load worker` (started by the coordinator).
pub fn main() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the worker spec")?;
    let spec: WorkerSpec = serde_json::from_str(&line).context("parsing the worker spec")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(spec.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(spec))
}

fn emit(status: &Status) {
    let mut out = std::io::stdout().lock();
    if let Ok(line) = serde_json::to_string(status) {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

fn hist_hex(h: &hdrhistogram::Histogram<u64>) -> String {
    let mut buf = Vec::new();
    match V2Serializer::new().serialize(h, &mut buf) {
        Ok(_) => hex::encode(buf),
        Err(_) => String::new(),
    }
}

async fn run(spec: WorkerSpec) -> anyhow::Result<()> {
    let worker = spec.worker;
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        jwt_key: jsonwebtoken::EncodingKey::from_secret(spec.jwt_secret.as_bytes()),
        handshakes: Semaphore::new(spec.connect_concurrency.max(1)),
        stats: Stats::default(),
        stop: stop_rx,
        spec: spec.clone(),
    });
    let assignment = Assignment::new(spec.total, spec.guilds, spec.dist, spec.zipf_s);
    let mut kicks = Vec::with_capacity(spec.count);
    let mut tasks = tokio::task::JoinSet::new();
    for i in spec.first..spec.first + spec.count {
        let Some(endpoint) = endpoint_of(i, &spec.endpoints) else {
            anyhow::bail!("no endpoints");
        };
        let kick = Arc::new(Notify::new());
        kicks.push(kick.clone());
        let c = Client {
            index: i,
            guild: guild_id_in(spec.guild_scheme, assignment.guild_of(i)),
            user: user_id(i),
            endpoint,
            source: source_addr(i, spec.per_address),
            kick,
        };
        tasks.spawn(client::run(c, shared.clone()));
    }

    let reporter = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                emit(&shared.stats.status(worker));
            }
        })
    };

    let (churn_tx, mut churn_rx) = watch::channel(0.0f64);
    let churner = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut owed = 0.0f64;
        loop {
            tick.tick().await;
            if churn_rx.has_changed().unwrap_or(false) {
                churn_rx.borrow_and_update();
                owed = 0.0;
            }
            let rate = *churn_rx.borrow();
            if rate <= 0.0 || kicks.is_empty() {
                continue;
            }
            owed += rate / 10.0;
            let mut rng = rand::rng();
            while owed >= 1.0 {
                owed -= 1.0;
                let k = rng.random_range(0..kicks.len());
                // Only a client in a session is kicked: `notify_one` would
                // store a permit for one that is reconnecting and cut its
                // next session at once, before or right after its ack.
                kicks[k].notify_waiters();
            }
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    // Ends on Stop, or when the coordinator is gone (EOF or error).
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<Command>(&line) {
            Ok(Command::Churn { per_sec }) => {
                let _ = churn_tx.send(per_sec);
            }
            Ok(Command::Stop) => break,
            Err(e) => tracing::warn!(worker, "bad command {line:?}: {e}"),
        }
    }
    churner.abort();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    reporter.abort();
    let stats = &shared.stats;
    let mut status = stats.status(worker);
    status.last = Some(Final {
        closes: stats.closes.lock().clone(),
        errors: stats.errors.lock().clone(),
        live_hist: hist_hex(&stats.live.lock()),
        replay_hist: hist_hex(&stats.replay.lock()),
    });
    emit(&status);
    Ok(())
}
