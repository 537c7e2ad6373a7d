//! `chat-server` processes: started with a command line (and `CHAT_*` environment), found by
//! the `listening on ADDR` line they print, restarted, signalled and killed like in production.
//! Tests of several nodes, Redis, faults and signals need a real process; single-node tests can
//! run a node in this process instead ([`super::TestServer`]).

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::Deref;
use std::process::{ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::process::{Process, TempDir, log_file, sigterm, wait_for_exit};
use super::{Endpoint, RedisServer, STEP, wait_until};

/// A running `chat-server` process.
pub(crate) struct Node {
    process: Process,
    endpoint: Endpoint,
    dir: TempDir,
    /// How it was started, for [`Node::restart`].
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// The command line of a node that uses `redis` with node id `id` and `keys` (first encrypts).
pub(crate) fn redis_node_args(redis: &RedisServer, id: &str, keys: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--redis-url".to_owned(),
        redis.url(),
        "--node-id".to_owned(),
        id.to_owned(),
    ];
    for key in keys {
        args.push("--key".to_owned());
        args.push((*key).to_owned());
    }
    args
}

impl Node {
    /// A single node with the in-memory broker.
    pub(crate) async fn memory() -> Node {
        Node::spawn(&["--listen", "127.0.0.1:0"], &[]).await
    }

    /// A node on `redis` with node id `id` and `keys`, once it reports ready (connected to
    /// Redis; it listens before that).
    pub(crate) async fn redis(redis: &RedisServer, id: &str, keys: &[&str]) -> Node {
        Node::redis_with(redis, id, keys, &[]).await
    }

    /// [`Node::redis`] with `extra` command-line arguments.
    pub(crate) async fn redis_with(
        redis: &RedisServer,
        id: &str,
        keys: &[&str],
        extra: &[&str],
    ) -> Node {
        let mut args = redis_node_args(redis, id, keys);
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        Node::spawn_ready(&args).await
    }

    /// [`Node::redis`] listening on `listen`.
    pub(crate) async fn redis_at(
        redis: &RedisServer,
        id: &str,
        keys: &[&str],
        listen: &str,
    ) -> Node {
        let mut args = redis_node_args(redis, id, keys);
        // The arguments begin with `--listen 127.0.0.1:0`.
        args[1] = listen.to_owned();
        Node::spawn_ready(&args).await
    }

    /// Starts a node with `args` and waits until it reports ready.
    async fn spawn_ready(args: &[String]) -> Node {
        let node = Node::spawn(args, &[]).await;
        node.wait_ready().await;
        node
    }

    /// Waits until the node reports ready (connected to Redis; it listens before that).
    pub(crate) async fn wait_ready(&self) {
        wait_until("the node is connected to Redis", STEP, async || {
            self.status_of("/readyz").await == 200
        })
        .await;
    }

    /// Starts `chat-server` with `args` and extra environment `env` (no other `CHAT_*`
    /// variables are passed on) and waits for its `listening on ADDR` line.
    pub(crate) async fn spawn(args: &[impl AsRef<str>], env: &[(&str, &str)]) -> Node {
        let dir = TempDir::new("node");
        let log = dir.path().join("node.log");
        let mut child = node_command(args, env)
            .stdout(Stdio::piped())
            .stderr(log_file(&log))
            .spawn()
            .expect("spawn chat-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut process = Process {
            label: format!("chat-server pid {}", child.id()),
            child: Some(child),
            log,
        };

        let rx = listening_line(stdout);
        let addr = match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => {
                let status = process.try_wait();
                process.print_log_tail();
                panic!(
                    "chat-server closed stdout without a `listening on` line (exit: {status:?})"
                );
            }
            Err(_) => {
                process.print_log_tail();
                panic!("chat-server printed no `listening on` line within 10 s");
            }
        };
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("bad address in `listening on {addr}`: {e}"));
        assert!(addr.ip().is_loopback(), "node listens on {addr}");
        assert_ne!(addr.port(), 0, "node printed port 0");
        Node {
            process,
            endpoint: Endpoint::new(addr),
            dir,
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// Stops the node gracefully (SIGTERM, so clients get 1001) and starts it again with the
    /// same configuration on the same address, as an operator's restart does.
    pub(crate) async fn restart(&mut self) {
        self.sigterm();
        self.wait_exit(Duration::from_secs(15)).await;
        let mut args = self.args.clone();
        match args.iter().position(|a| a == "--listen") {
            Some(i) => args[i + 1] = self.addr().to_string(),
            None => args.extend(["--listen".to_owned(), self.addr().to_string()]),
        }
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let restarted = Node::spawn(&args, &env).await;
        assert_eq!(
            restarted.addr(),
            self.addr(),
            "restarted on another address"
        );
        // The old arguments are kept: with port 0 a later restart still reuses this address.
        let Node { process, dir, .. } = restarted;
        self.process = process;
        self.dir = dir;
        wait_until("the restarted node is ready", STEP, async || {
            self.status_of("/readyz").await == 200
        })
        .await;
    }

    /// A node configured only through `CHAT_*` environment variables.
    pub(crate) async fn from_env(env: &[(&str, &str)]) -> Node {
        let no_args: [&str; 0] = [];
        Node::spawn(&no_args, env).await
    }

    /// Runs `chat-server` with `args` and `env` expecting it to exit by itself within
    /// `timeout`; returns its status and everything it wrote to stdout and stderr.
    pub(crate) async fn run_to_exit(
        args: &[impl AsRef<str>],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> (ExitStatus, String) {
        let dir = TempDir::new("node-exit");
        let log = dir.path().join("node.log");
        let mut process = Process::spawn(&mut node_command(args, env), "chat-server", &log)
            .expect("spawn chat-server");
        let status = wait_for_exit(&mut process, timeout).await;
        (status, process.log_text())
    }

    /// Where it listens; also reachable through [`Endpoint`], but usable as `Node::addr`.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.endpoint.addr()
    }

    /// Everything the node has logged so far.
    pub(crate) fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// Resident memory of the node process, from `/proc`.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid().expect("node is running")
    }

    /// Ends the node with SIGKILL: no goodbye to its clients or to Redis.
    pub(crate) fn kill(&mut self) {
        self.process.kill();
    }

    pub(crate) fn sigterm(&self) {
        sigterm(self.pid());
    }

    /// Waits for the node to exit by itself; panics (and the guard kills it) after `timeout`.
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        wait_for_exit(&mut self.process, timeout).await
    }
}

fn node_command(args: &[impl AsRef<str>], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
    command.args(args.iter().map(AsRef::as_ref));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CHAT_") {
            command.env_remove(name);
        }
    }
    command.env(
        "RUST_LOG",
        std::env::var("CHAT_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
    );
    command.envs(env.iter().copied());
    command.stdin(Stdio::null());
    command
}

impl Deref for Node {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// The address in the `listening on ADDR` line a `chat-server` prints on `stdout`, once it
/// does. A thread reads the lines and keeps draining after that one, so the node never blocks
/// on a full pipe.
pub(crate) fn listening_line(stdout: ChildStdout) -> oneshot::Receiver<String> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("listening on ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    rx
}
