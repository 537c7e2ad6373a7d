//! Harness for the integration tests: real `redis-server` and `chat-server` processes on
//! loopback ports, WebSocket clients that speak protocol v1, and small HTTP and metrics helpers.
//!
//! Every process is owned by a guard whose `Drop` kills it by PID and waits for it, so nothing
//! outlives a test, also when it fails; a failing test prints the tail of each process's log.
//! Every wait has a deadline, so a test fails instead of hanging.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod api;
pub mod balancer;
pub mod browser;
pub mod dns;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use chat_protocol::{ClientFrame, ErrorCode, PresenceEvent, ServerFrame};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod raw;

/// Longest wait for one protocol step (a reply, a delivery, a process start).
pub const STEP: Duration = Duration::from_secs(5);
/// How long a client must stay quiet to show that nothing more (no duplicate) is coming.
pub const QUIET: Duration = Duration::from_millis(300);

/// A base64 AES-256 key of 32 bytes derived from `seed`; different seeds give different keys.
pub fn key(seed: u8) -> String {
    let bytes: Vec<u8> = (0..32u8)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i))
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A string no other test or run uses, for refs, room names and markers.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A `--auth-secret` of the shortest length a node accepts, 32 bytes.
pub const AUTH_SECRET: &str = "correct horse battery staple 32b";

/// An HS256 token signed with `secret` that says `claims`.
pub fn jwt(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode a token")
}

/// Opens `url` and expects the token refusal: an `unauthorized` error, then close 1008.
pub async fn expect_unauthorized(url: &str) {
    let mut client = Client::open(url).await;
    match client.recv().await {
        ServerFrame::Error {
            code: ErrorCode::Unauthorized,
            ..
        } => {}
        other => panic!("{url}: expected unauthorized, got {other:?}"),
    }
    assert_eq!(
        client.expect_close().await,
        chat_protocol::close::POLICY_VIOLATION,
        "{url}"
    );
}

/// Polls `check` every 100 ms until it returns true; panics after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "chat-it-{}-{}",
            std::process::id(),
            unique(&format!("{label}-"))
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process that is killed (SIGKILL) and reaped on drop; its output goes to `log`,
/// whose tail is printed when the test is failing.
struct Process {
    label: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Spawns `command` with stdout and stderr appended to `log`; `label` and the pid name it.
    fn spawn(command: &mut Command, label: &str, log: &Path) -> std::io::Result<Process> {
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file(log))
            .stderr(log_file(log))
            .spawn()?;
        Ok(Process {
            label: format!("{label} pid {}", child.id()),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has ended (and is reaped), without blocking.
    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child
            .try_wait()
            .unwrap_or_else(|e| panic!("{}: try_wait: {e}", self.label))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` does not signal a child that has already been reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    fn print_log_tail(&self) {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(80)..];
        eprintln!(
            "----- last {} lines of {} ({}) -----\n{}\n----- end of {} -----",
            tail.len(),
            self.label,
            self.log.display(),
            tail.join("\n"),
            self.label
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            self.print_log_tail();
        }
    }
}

fn log_file(path: &Path) -> File {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// A port that was free a moment ago (bound to 127.0.0.1:0 and released).
fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Sends SIGTERM to `pid`.
fn sigterm(pid: u32) {
    signal(pid, libc::SIGTERM);
}

/// Sends `signal` to `pid`, a process this harness started.
fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill -{signal} {pid}: {}",
        std::io::Error::last_os_error()
    );
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A private `redis-server` on an ephemeral loopback port, without persistence.
pub struct RedisServer {
    process: Process,
    port: u16,
    /// Extra command-line arguments, kept for restarts.
    extra: Vec<String>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts Redis on a free port, trying other ports if one is taken meanwhile.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(Vec::new()).await
    }

    /// Starts Redis with its plain port plus a TLS port serving `certificates`; the harness
    /// keeps using the plain port. Returns the server and the TLS port.
    pub async fn start_tls(certificates: &TestCertificates) -> (RedisServer, u16) {
        let tls_port = free_port();
        let path = |file: &str| certificates.dir.path().join(file).display().to_string();
        let extra = vec![
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            path("server.pem"),
            "--tls-key-file".to_owned(),
            path("server.key"),
            "--tls-ca-cert-file".to_owned(),
            path("ca.pem"),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        (RedisServer::start_with(extra).await, tls_port)
    }

    async fn start_with(extra: Vec<String>) -> RedisServer {
        let dir = TempDir::new("redis");
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn_redis(port, &extra, dir.path()).await {
                Ok(process) => {
                    return RedisServer {
                        process,
                        port,
                        extra,
                        dir,
                    };
                }
                Err(err) => failures.push(format!("port {port}: {err}")),
            }
        }
        panic!("redis-server did not start: {failures:#?}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("valid redis url")
    }

    /// Freezes Redis (SIGSTOP) with its connections open: commands wait for an answer, as
    /// with a Redis that hangs. The guard's SIGKILL still ends it.
    pub fn pause(&self) {
        signal(self.process.pid().expect("redis is running"), libc::SIGSTOP);
    }

    /// Lets a paused Redis go on (SIGCONT).
    pub fn resume(&self) {
        signal(self.process.pid().expect("redis is running"), libc::SIGCONT);
    }

    /// Kills Redis with SIGKILL (no goodbye to its clients) and reaps it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts Redis again on the same port, as after an outage (empty, like a crashed Redis
    /// without persistence).
    pub async fn restart(&mut self) {
        assert!(self.process.child.is_none(), "redis is still running");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match spawn_redis(self.port, &self.extra, self.dir.path()).await {
                Ok(process) => {
                    self.process = process;
                    return;
                }
                Err(err) if Instant::now() < deadline => {
                    eprintln!("restarting redis on port {}: {err}; retrying", self.port);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(err) => panic!("redis did not restart on port {}: {err}", self.port),
            }
        }
    }

    /// A plain command connection.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        tokio::time::timeout(STEP, self.client().get_multiplexed_async_connection())
            .await
            .expect("redis connect timed out")
            .expect("redis connect")
    }

    /// `PUBLISH channel payload` from a plain client; returns how many subscribers got it.
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> i64 {
        let mut conn = self.connection().await;
        tokio::time::timeout(
            STEP,
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut conn),
        )
        .await
        .expect("PUBLISH timed out")
        .expect("PUBLISH")
    }

    /// How many subscribers Redis counts on `channel` (`PUBSUB NUMSUB`): one per node that is
    /// subscribed to it.
    pub async fn subscribers(&self, channel: &str) -> i64 {
        let mut conn = self.connection().await;
        let (_, count): (String, i64) = tokio::time::timeout(
            STEP,
            redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(channel)
                .query_async::<Vec<(String, i64)>>(&mut conn),
        )
        .await
        .expect("PUBSUB NUMSUB timed out")
        .expect("PUBSUB NUMSUB")
        .pop()
        .expect("one channel asked, one answered");
        count
    }

    /// A raw subscriber to every channel matching `pattern`.
    pub async fn psubscribe(&self, pattern: &str) -> RawSubscriber {
        let mut pubsub = tokio::time::timeout(STEP, self.client().get_async_pubsub())
            .await
            .expect("redis connect timed out")
            .expect("redis connect");
        tokio::time::timeout(STEP, pubsub.psubscribe(pattern))
            .await
            .expect("PSUBSCRIBE timed out")
            .expect("PSUBSCRIBE");
        RawSubscriber {
            stream: pubsub.into_on_message(),
        }
    }
}

async fn spawn_redis(port: u16, extra: &[String], dir: &Path) -> Result<Process, String> {
    let log = dir.join("redis.log");
    let program = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
    let child = Command::new(&program)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log_file(&log))
        .stderr(log_file(&log))
        .spawn()
        .map_err(|e| format!("spawn {program}: {e} (is the redis-server package installed?)"))?;
    let mut process = Process {
        label: format!("redis-server :{port}"),
        child: Some(child),
        log,
    };
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(status) = process.try_wait() {
            return Err(format!("exited with {status}"));
        }
        if redis_answers_ping(port).await {
            return Ok(process);
        }
        if Instant::now() >= deadline {
            return Err("no PONG within 5 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn redis_answers_ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Some(true))
    )
}

/// A private certificate authority and a certificate for `localhost` and 127.0.0.1 signed by
/// it, made with the `openssl` command: `ca.pem`, `server.pem` and `server.key` in `dir`.
pub struct TestCertificates {
    pub dir: TempDir,
}

impl TestCertificates {
    pub fn generate() -> TestCertificates {
        let dir = TempDir::new("tls");
        let openssl = |command: &str| {
            let args: Vec<&str> = command.split_whitespace().collect();
            let output = Command::new("openssl")
                .args(&args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl (is the openssl package installed?)");
            assert!(
                output.status.success(),
                "openssl {command}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("write server.ext");
        openssl(
            "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=chat-test-ca \
             -keyout ca.key -out ca.pem",
        );
        openssl(
            "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr",
        );
        openssl(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
             -extfile server.ext -out server.pem",
        );
        TestCertificates { dir }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// What a raw Redis subscriber saw: the channel and the payload bytes.
pub struct RawSubscriber {
    stream: redis::aio::PubSubStream,
}

impl RawSubscriber {
    /// Everything published within `window`.
    pub async fn collect_for(&mut self, window: Duration) -> Vec<(String, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + window;
        let mut seen = Vec::new();
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, self.stream.next()).await {
            seen.push((
                msg.get_channel_name().to_owned(),
                msg.get_payload_bytes().to_vec(),
            ));
        }
        seen
    }
}

// ---------------------------------------------------------------------------------------------
// chat-server nodes
// ---------------------------------------------------------------------------------------------

/// A running `chat-server` process.
pub struct Node {
    process: Process,
    addr: SocketAddr,
    dir: TempDir,
    /// How it was started, for [`Node::restart`].
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// The command line of a node that uses `redis` with node id `id` and `keys` (first encrypts).
pub fn redis_node_args(redis: &RedisServer, id: &str, keys: &[&str]) -> Vec<String> {
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
    pub async fn memory() -> Node {
        Node::spawn(&["--listen", "127.0.0.1:0"], &[]).await
    }

    /// A node on `redis` with node id `id` and `keys`, once it reports ready (connected to
    /// Redis; it listens before that).
    pub async fn redis(redis: &RedisServer, id: &str, keys: &[&str]) -> Node {
        Node::redis_with(redis, id, keys, &[]).await
    }

    /// [`Node::redis`] with `extra` command-line arguments.
    pub async fn redis_with(redis: &RedisServer, id: &str, keys: &[&str], extra: &[&str]) -> Node {
        let mut args = redis_node_args(redis, id, keys);
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        Node::spawn_ready(&args).await
    }

    /// [`Node::redis`] listening on `listen`.
    pub async fn redis_at(redis: &RedisServer, id: &str, keys: &[&str], listen: &str) -> Node {
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
    pub async fn wait_ready(&self) {
        wait_until("the node is connected to Redis", STEP, async || {
            self.status_of("/readyz").await == 200
        })
        .await;
    }

    /// Starts `chat-server` with `args` and extra environment `env` (no other `CHAT_*`
    /// variables are passed on) and waits for its `listening on ADDR` line.
    pub async fn spawn(args: &[impl AsRef<str>], env: &[(&str, &str)]) -> Node {
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

        // A thread reads stdout until the listening line, hands it over, and keeps draining.
        let (tx, rx) = tokio::sync::oneshot::channel();
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
            addr,
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
    pub async fn restart(&mut self) {
        self.sigterm();
        self.wait_exit(Duration::from_secs(15)).await;
        let mut args = self.args.clone();
        match args.iter().position(|a| a == "--listen") {
            Some(i) => args[i + 1] = self.addr.to_string(),
            None => args.extend(["--listen".to_owned(), self.addr.to_string()]),
        }
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let restarted = Node::spawn(&args, &env).await;
        assert_eq!(restarted.addr, self.addr, "restarted on another address");
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
    pub async fn from_env(env: &[(&str, &str)]) -> Node {
        let no_args: [&str; 0] = [];
        Node::spawn(&no_args, env).await
    }

    /// Runs `chat-server` with `args` and `env` expecting it to exit by itself within
    /// `timeout`; returns its status and everything it wrote to stdout and stderr.
    pub async fn run_to_exit(
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

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything the node has logged so far.
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// Resident memory of the node process, from `/proc`.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    pub fn pid(&self) -> u32 {
        self.process.pid().expect("node is running")
    }

    /// `ws://ADDR/ws`, with `?name=` (percent-encoded) when a name is given.
    pub fn ws_url(&self, name: Option<&str>) -> String {
        match name {
            Some(name) => format!("ws://{}/ws?name={}", self.addr, percent_encode(name)),
            None => format!("ws://{}/ws", self.addr),
        }
    }

    /// Connects a client named `name` and reads its welcome.
    pub async fn client(&self, name: &str) -> Client {
        let client = Client::connect(&self.ws_url(Some(name))).await;
        assert_eq!(client.name(), name, "welcome name");
        client
    }

    /// A plain HTTP/1.1 GET of `path`.
    pub async fn http_get(&self, path: &str) -> HttpResponse {
        http_get(self.addr, path).await
    }

    /// A plain HTTP/1.1 request with `headers` and `body`, bounded by `timeout`.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> HttpResponse {
        http_request(self.addr, method, path, headers, body, timeout).await
    }

    pub async fn status_of(&self, path: &str) -> u16 {
        self.http_get(path).await.status
    }

    pub async fn metrics(&self) -> Metrics {
        let response = self.http_get("/metrics").await;
        assert_eq!(response.status, 200, "GET /metrics: {}", response.body);
        Metrics(response.body)
    }

    /// The value of one series, e.g. `chat_errors_total{code="bad_request"}`; panics if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let metrics = self.metrics().await;
        metrics
            .value(series)
            .unwrap_or_else(|| panic!("no series `{series}` in /metrics:\n{}", metrics.0))
    }

    /// Ends the node with SIGKILL: no goodbye to its clients or to Redis.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub fn sigterm(&self) {
        sigterm(self.pid());
    }

    /// Waits for the node to exit by itself; panics (and the guard kills it) after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
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

async fn wait_for_exit(process: &mut Process, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.try_wait() {
            return status;
        }
        if Instant::now() >= deadline {
            panic!("{} did not exit within {timeout:?}", process.label);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HTTP and metrics
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 GET with `Connection: close`, bounded by `STEP`.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_request(addr, "GET", path, &[], &[], STEP).await
}

/// A minimal HTTP/1.1 request with `Connection: close`, bounded by `timeout`. A body, if any,
/// is sent with its `Content-Length`.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> HttpResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        // A test may name another host; otherwise the address connected to, as curl does.
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            head.push_str(&format!("Host: {addr}\r\n"));
        }
        head.push_str("Connection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        // A server may answer (413) and close before it read the whole body: keep the answer.
        let _ = stream.write_all(body).await;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} on {addr} timed out"))
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"));
    parse_http_response(&raw).unwrap_or_else(|| {
        panic!(
            "{method} {path}: malformed response {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

fn parse_http_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Some(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// The text of a `/metrics` scrape.
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the series written exactly as `series` (name plus `{labels}` if any).
    pub fn value(&self, series: &str) -> Option<f64> {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let rest = line.strip_prefix(series)?;
                rest.starts_with(' ')
                    .then(|| rest.split_whitespace().next().and_then(|v| v.parse().ok()))?
            })
    }

    /// Whether any sample line belongs to metric family `name`.
    pub fn has_family(&self, name: &str) -> bool {
        self.0.lines().any(|line| {
            !line.starts_with('#')
                && line
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']) || rest.starts_with("_bucket"))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket clients
// ---------------------------------------------------------------------------------------------

/// A chat message as delivered to one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    pub room: String,
    pub id: String,
    pub from: String,
    pub text: String,
    pub ts: u64,
}

impl Chat {
    fn from_frame(frame: &ServerFrame<'_>) -> Option<Chat> {
        match frame {
            ServerFrame::Message {
                room,
                id,
                from,
                text,
                ts,
            } => Some(Chat {
                room: room.to_string(),
                id: id.to_string(),
                from: from.to_string(),
                text: text.to_string(),
                ts: *ts,
            }),
            _ => None,
        }
    }
}

/// What the server sent in its welcome frame.
#[derive(Debug, Clone)]
pub struct Welcome {
    pub node: String,
    pub session: String,
    pub name: String,
}

/// What a read from the socket gave.
enum Event {
    Frame(ServerFrame<'static>),
    Closed(Option<u16>),
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol v1 WebSocket client. Frames read while waiting for another one are kept in
/// order and handed out by later reads, so no helper loses a frame.
pub struct Client {
    ws: Ws,
    welcome: Option<Welcome>,
    pending: VecDeque<ServerFrame<'static>>,
    /// `presence` frames, set aside as they arrive so that they never interleave with what a
    /// test waits for: (event, name).
    presence: Vec<(PresenceEvent, String)>,
    closed: Option<Option<u16>>,
}

/// What a `joined` reply carried.
#[derive(Debug, Clone)]
pub struct JoinedReply {
    pub members: Vec<String>,
    pub history: Vec<Chat>,
    pub recovered: Option<bool>,
}

impl Client {
    /// Completes the WebSocket handshake without reading anything.
    pub async fn open(url: &str) -> Client {
        let (ws, response) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("WebSocket handshake with {url} timed out"))
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url}: {e}"));
        assert_eq!(response.status(), 101, "handshake status");
        Client {
            ws,
            welcome: None,
            pending: VecDeque::new(),
            presence: Vec::new(),
            closed: None,
        }
    }

    /// Connects and reads the welcome frame, which must come first.
    pub async fn connect(url: &str) -> Client {
        let mut client = Client::open(url).await;
        match client.recv().await {
            ServerFrame::Welcome {
                node,
                session,
                name,
            } => {
                assert!(!node.is_empty(), "welcome without node");
                assert!(!session.is_empty(), "welcome without session");
                client.welcome = Some(Welcome {
                    node: node.into_owned(),
                    session: session.into_owned(),
                    name: name.into_owned(),
                });
            }
            other => panic!("first frame from {url} is not a welcome: {other:?}"),
        }
        client
    }

    pub fn welcome(&self) -> &Welcome {
        self.welcome
            .as_ref()
            .expect("client connected with a welcome")
    }

    pub fn name(&self) -> &str {
        &self.welcome().name
    }

    pub async fn send_message(&mut self, message: Message) {
        tokio::time::timeout(STEP, self.ws.send(message))
            .await
            .expect("WebSocket send timed out")
            .expect("WebSocket send");
    }

    pub async fn send_frame(&mut self, frame: &ClientFrame<'_>) {
        let json = serde_json::to_string(frame).expect("client frames serialize");
        self.send_raw_text(&json).await;
    }

    pub async fn send_raw_text(&mut self, text: &str) {
        self.send_message(Message::text(text)).await;
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.send_message(Message::Binary(Bytes::copy_from_slice(bytes)))
            .await;
    }

    /// A single final text frame with arbitrary (possibly invalid UTF-8) payload bytes.
    pub async fn send_raw_text_frame(&mut self, payload: &[u8]) {
        let frame = Frame::message(payload.to_vec(), OpCode::Data(Data::Text), true);
        self.send_message(Message::Frame(frame)).await;
    }

    /// Sends `text` to `room` with a fresh ref and returns the ref.
    pub async fn send_chat(&mut self, room: &str, text: &str) -> String {
        let reference = unique("ref-");
        self.send_frame(&ClientFrame::Send {
            room: room.into(),
            text: text.into(),
            reference: Some(reference.as_str().into()),
        })
        .await;
        reference
    }

    async fn read_event(&mut self, deadline: tokio::time::Instant) -> Option<Event> {
        if let Some(code) = self.closed {
            return Some(Event::Closed(code));
        }
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(next) => next,
            };
            let event = match next {
                Some(Ok(Message::Text(text))) => {
                    let frame: ServerFrame<'static> = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("server sent a bad frame {text:?}: {e}"));
                    if let ServerFrame::Presence { event, name, .. } = frame {
                        self.presence.push((event, name.into_owned()));
                        continue;
                    }
                    Event::Frame(frame)
                }
                Some(Ok(Message::Close(frame))) => Event::Closed(frame.map(|f| f.code.into())),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("server sent an unexpected message: {other:?}"),
                Some(Err(e)) => panic!("WebSocket failed without a close frame: {e}"),
                None => panic!("WebSocket ended without a close frame"),
            };
            if let Event::Closed(code) = event {
                self.closed = Some(code);
            }
            return Some(event);
        }
    }

    /// The next frame within `timeout`, or None; panics if the server closes.
    pub async fn recv_within(&mut self, timeout: Duration) -> Option<ServerFrame<'static>> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        match self
            .read_event(tokio::time::Instant::now() + timeout)
            .await?
        {
            Event::Frame(frame) => Some(frame),
            Event::Closed(code) => panic!("server closed the connection (code {code:?})"),
        }
    }

    /// The next frame; panics if none comes within `STEP`.
    pub async fn recv(&mut self) -> ServerFrame<'static> {
        self.recv_within(STEP)
            .await
            .unwrap_or_else(|| panic!("no frame within {STEP:?}"))
    }

    /// The first frame matching `pred` within `timeout`, or None. Frames that do not match
    /// are kept for later reads, in order.
    pub async fn recv_until_within(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&ServerFrame<'static>) -> bool,
    ) -> Option<ServerFrame<'static>> {
        if let Some(i) = self.pending.iter().position(&mut pred) {
            return self.pending.remove(i);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.read_event(deadline).await? {
                Event::Frame(frame) if pred(&frame) => return Some(frame),
                Event::Frame(frame) => self.pending.push_back(frame),
                Event::Closed(code) => panic!(
                    "server closed the connection (code {code:?}); unread frames: {:?}",
                    self.pending
                ),
            }
        }
    }

    /// The first frame matching `pred` (described by `what`); panics after `STEP`.
    pub async fn recv_until(
        &mut self,
        what: &str,
        pred: impl FnMut(&ServerFrame<'static>) -> bool,
    ) -> ServerFrame<'static> {
        match self.recv_until_within(STEP, pred).await {
            Some(frame) => frame,
            None => panic!(
                "no {what} within {STEP:?}; other frames: {:?}",
                self.pending
            ),
        }
    }

    /// The ack or error answering the request with `reference`.
    pub async fn reply_to(&mut self, reference: Option<&str>) -> ServerFrame<'static> {
        self.recv_until(
            &format!("reply to ref {reference:?}"),
            |frame| match frame {
                ServerFrame::Ack { reference: r, .. } | ServerFrame::Error { reference: r, .. } => {
                    r.as_deref() == reference
                }
                _ => false,
            },
        )
        .await
    }

    /// Waits for the ack of `reference` and returns the message id in it.
    pub async fn ack(&mut self, reference: &str) -> String {
        match self.reply_to(Some(reference)).await {
            ServerFrame::Ack { id, .. } => {
                assert!(!id.is_empty(), "ack with an empty id");
                id.into_owned()
            }
            other => panic!("expected an ack for {reference}, got {other:?}"),
        }
    }

    /// Waits for an error frame with `reference` and checks its code.
    pub async fn expect_error(&mut self, code: ErrorCode, reference: Option<&str>) {
        match self.reply_to(reference).await {
            ServerFrame::Error { code: got, .. } if got == code => {}
            other => panic!("expected error {code} with ref {reference:?}, got {other:?}"),
        }
    }

    /// Joins `room` and waits for `joined`.
    pub async fn join(&mut self, room: &str) -> JoinedReply {
        self.join_since(room, None).await
    }

    /// Joins `room`, saying which message was seen last, and waits for `joined`.
    pub async fn join_since(&mut self, room: &str, since: Option<&str>) -> JoinedReply {
        let reference = unique("join-");
        self.send_frame(&ClientFrame::Join {
            room: room.into(),
            since: since.map(Into::into),
            reference: Some(reference.as_str().into()),
        })
        .await;
        let frame = self
            .recv_until(&format!("joined {room}"), |frame| match frame {
                ServerFrame::Joined { room: r, .. } => r == room,
                ServerFrame::Error { reference: r, .. } => r.as_deref() == Some(&reference),
                _ => false,
            })
            .await;
        match frame {
            ServerFrame::Joined {
                members,
                history,
                recovered,
                ..
            } => JoinedReply {
                members: members.into_iter().map(Cow::into_owned).collect(),
                history: history
                    .iter()
                    .map(|embedded| {
                        let frame: ServerFrame<'_> =
                            serde_json::from_str(embedded.json()).expect("a history frame");
                        Chat::from_frame(&frame).expect("history holds message frames")
                    })
                    .collect(),
                recovered,
            },
            other => panic!("join {room}: {other:?}"),
        }
    }

    /// The `presence` frames received so far, oldest first, and forgets them.
    pub fn take_presence(&mut self) -> Vec<(PresenceEvent, String)> {
        std::mem::take(&mut self.presence)
    }

    /// Waits until a `presence` frame for `name` with `event` has arrived.
    pub async fn wait_presence(&mut self, event: PresenceEvent, name: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(at) = self
                .presence
                .iter()
                .position(|(e, n)| *e == event && n == name)
            {
                self.presence.drain(..=at);
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "no presence {event:?} of {name} within {timeout:?}: {:?}",
                    self.presence
                );
            }
            // Reading moves presence frames aside; other frames stay pending for later.
            let wait = tokio::time::Instant::now() + Duration::from_millis(100);
            match self.read_event(wait).await {
                Some(Event::Frame(frame)) => self.pending.push_back(frame),
                Some(Event::Closed(code)) => panic!("server closed the connection ({code:?})"),
                None => {}
            }
        }
    }

    /// Leaves `room` and waits for `left`.
    pub async fn leave(&mut self, room: &str) {
        self.send_frame(&ClientFrame::Leave {
            room: room.into(),
            reference: None,
        })
        .await;
        self.recv_until(
            &format!("left {room}"),
            |frame| matches!(frame, ServerFrame::Left { room: r } if r == room),
        )
        .await;
    }

    /// The next chat message with id `id`.
    pub async fn message_with_id(&mut self, id: &str) -> Chat {
        let frame = self
            .recv_until(
                &format!("message {id}"),
                |frame| matches!(frame, ServerFrame::Message { id: i, .. } if i == id),
            )
            .await;
        Chat::from_frame(&frame).expect("a message frame")
    }

    /// The next chat message whose text is `text`, if one comes within `timeout`.
    pub async fn message_with_text_within(
        &mut self,
        text: &str,
        timeout: Duration,
    ) -> Option<Chat> {
        let frame = self
            .recv_until_within(
                timeout,
                |frame| matches!(frame, ServerFrame::Message { text: t, .. } if t == text),
            )
            .await?;
        Chat::from_frame(&frame)
    }

    /// The next `count` chat messages, in arrival order (other frames are kept).
    pub async fn messages(&mut self, count: usize) -> Vec<Chat> {
        let mut chats = Vec::with_capacity(count);
        while chats.len() < count {
            let frame = self
                .recv_until(
                    &format!("message {} of {count} (got {chats:?})", chats.len() + 1),
                    |frame| matches!(frame, ServerFrame::Message { .. }),
                )
                .await;
            chats.extend(Chat::from_frame(&frame));
        }
        chats
    }

    /// Sends `text` to `room`, checks the ack and the sender's own copy, and returns the id.
    pub async fn say(&mut self, room: &str, text: &str) -> String {
        let reference = self.send_chat(room, text).await;
        let id = self.ack(&reference).await;
        let own = self.message_with_id(&id).await;
        let name = self.name().to_owned();
        assert_eq!(
            (own.room.as_str(), own.from.as_str(), own.text.as_str()),
            (room, name.as_str(), text),
            "the sender's own copy of {id}"
        );
        id
    }

    /// Asserts that nothing arrives for `window` and nothing unread is kept.
    pub async fn expect_silence(&mut self, window: Duration) {
        assert!(
            self.pending.is_empty(),
            "{}: expected silence, but unread frames: {:?}",
            self.label(),
            self.pending
        );
        let deadline = tokio::time::Instant::now() + window;
        if let Some(event) = self.read_event(deadline).await {
            match event {
                Event::Frame(frame) => panic!("{}: expected silence, got {frame:?}", self.label()),
                Event::Closed(code) => {
                    panic!("{}: expected silence, got a close ({code:?})", self.label())
                }
            }
        }
    }

    /// Every frame unread so far plus whatever arrives within `window`.
    pub async fn drain(&mut self, window: Duration) -> Vec<ServerFrame<'static>> {
        let mut frames: Vec<_> = self.pending.drain(..).collect();
        let deadline = tokio::time::Instant::now() + window;
        while let Some(event) = self.read_event(deadline).await {
            match event {
                Event::Frame(frame) => frames.push(frame),
                Event::Closed(code) => panic!("{}: closed ({code:?}) while draining", self.label()),
            }
        }
        frames
    }

    /// Every frame read but not handed out yet, e.g. those [`Client::expect_close`] kept.
    pub fn take_unread(&mut self) -> Vec<ServerFrame<'static>> {
        self.pending.drain(..).collect()
    }

    /// Reads until the server's close frame (skipping data frames) and returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match self.read_event(deadline).await {
                None => panic!("{}: no close frame within {STEP:?}", self.label()),
                Some(Event::Frame(frame)) => self.pending.push_back(frame),
                Some(Event::Closed(None)) => panic!("{}: close frame without a code", self.label()),
                Some(Event::Closed(Some(code))) => {
                    self.finish_close().await;
                    return code;
                }
            }
        }
    }

    /// Keeps reading after the server's close frame, as a real client does: the read sends
    /// tungstenite's queued close reply, and the server then ends the connection.
    async fn finish_close(&mut self) {
        let deadline = tokio::time::Instant::now() + STEP;
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, self.ws.next()).await {}
    }

    fn label(&self) -> String {
        match &self.welcome {
            Some(welcome) => format!("client {:?} on {}", welcome.name, welcome.node),
            None => "client".to_owned(),
        }
    }
}

/// `sender` says `text` in `room`; every client in `receivers` gets it exactly once, with the
/// sender's name and the acked id. Returns the id.
pub async fn exchange(
    sender: &mut Client,
    room: &str,
    text: &str,
    receivers: &mut [&mut Client],
) -> String {
    let id = sender.say(room, text).await;
    let from = sender.name().to_owned();
    for receiver in receivers.iter_mut() {
        let chat = receiver.message_with_id(&id).await;
        assert_eq!(
            (chat.room.as_str(), chat.from.as_str(), chat.text.as_str()),
            (room, from.as_str(), text),
            "message {id} as {} got it",
            receiver.label()
        );
    }
    sender.expect_silence(QUIET).await;
    expect_silence_all(receivers, QUIET).await;
    id
}

/// Asserts silence on every client at once.
pub async fn expect_silence_all(clients: &mut [&mut Client], window: Duration) {
    futures::future::join_all(clients.iter_mut().map(|c| c.expect_silence(window))).await;
}

/// Flags that switch flood control off, for tests that send (or join) faster than people type.
pub const NO_FLOOD_LIMITS: [&str; 8] = [
    "--send-rate",
    "0",
    "--name-send-rate",
    "0",
    "--duplicate-window-ms",
    "0",
    "--join-rate",
    "0",
];

/// The key seed every node of a [`cluster`] shares.
pub const KEY_A: u8 = 0xA1;

/// One Redis and several nodes `node-0`, `node-1`, … sharing key A. Nodes are dropped (killed)
/// before Redis.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub redis: RedisServer,
}

pub async fn cluster(n: usize) -> Cluster {
    cluster_with(n, &[]).await
}

/// [`cluster`] with `extra` command-line arguments for every node.
pub async fn cluster_with(n: usize, extra: &[&str]) -> Cluster {
    let redis = RedisServer::start().await;
    let key_a = key(KEY_A);
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        nodes.push(Node::redis_with(&redis, &format!("node-{i}"), &[&key_a], extra).await);
    }
    Cluster { nodes, redis }
}

/// Connects `name` to `node`, checks the welcome names the node, and joins `room`.
pub async fn member(node: &Node, node_id: &str, name: &str, room: &str) -> Client {
    let mut client = node.client(name).await;
    assert_eq!(client.welcome().node, node_id, "welcome node of {name}");
    client.join(room).await;
    client
}
