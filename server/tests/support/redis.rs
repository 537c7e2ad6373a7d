//! A private `redis-server` per test, on a loopback port, plus TLS certificates for it and a raw
//! subscriber that shows what the nodes publish.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::STEP;
use super::ports::{Started, candidate_port, on_candidate_ports, says_address_in_use};
use super::process::{Process, TempDir, log_file, signal};

/// A private `redis-server` on an ephemeral loopback port, without persistence.
pub(crate) struct RedisServer {
    process: Process,
    port: u16,
    /// Extra command-line arguments, kept for restarts.
    extra: Vec<String>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts Redis on a free port, trying other ports if one is taken meanwhile.
    pub(crate) async fn start() -> RedisServer {
        RedisServer::start_with(|_| Vec::new()).await.0
    }

    /// Starts Redis with its plain port plus a TLS port serving `certificates`; the harness
    /// keeps using the plain port. Returns the server and the TLS port.
    pub(crate) async fn start_tls(certificates: &TestCertificates) -> (RedisServer, u16) {
        let path = |file: &str| certificates.dir.path().join(file).display().to_string();
        RedisServer::start_with(|tls_port| {
            vec![
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
            ]
        })
        .await
    }

    /// Starts Redis with the extra arguments `extra` makes of a second candidate port (for
    /// TLS); returns the server and that port. Redis 7.0 cannot bind port 0, so both ports
    /// are candidates, tried again while Redis finds one taken.
    async fn start_with(extra: impl Fn(u16) -> Vec<String>) -> (RedisServer, u16) {
        let dir = TempDir::new("redis");
        let (process, port, second, extra) = on_candidate_ports("redis-server", async || {
            let (port, second) = (candidate_port(), candidate_port());
            let extra = extra(second);
            spawn_redis(port, &extra, dir.path())
                .await
                .map(|process| (process, port, second, extra))
        })
        .await;
        let redis = RedisServer {
            process,
            port,
            extra,
            dir,
        };
        (redis, second)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub(crate) fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("valid redis url")
    }

    /// Freezes Redis (SIGSTOP) with its connections open: commands wait for an answer, as
    /// with a Redis that hangs. The guard's SIGKILL still ends it.
    pub(crate) fn pause(&self) {
        signal(self.process.pid().expect("redis is running"), libc::SIGSTOP);
    }

    /// Lets a paused Redis go on (SIGCONT).
    pub(crate) fn resume(&self) {
        signal(self.process.pid().expect("redis is running"), libc::SIGCONT);
    }

    /// Kills Redis with SIGKILL (no goodbye to its clients) and reaps it.
    pub(crate) fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts Redis again on the same port, as after an outage (empty, like a crashed Redis
    /// without persistence).
    pub(crate) async fn restart(&mut self) {
        assert!(self.process.child.is_none(), "redis is still running");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match spawn_redis(self.port, &self.extra, self.dir.path()).await {
                Started::Up(process) => {
                    self.process = process;
                    return;
                }
                Started::PortTaken(err) | Started::Failed(err) if Instant::now() < deadline => {
                    eprintln!("restarting redis on port {}: {err}; retrying", self.port);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Started::PortTaken(err) | Started::Failed(err) => {
                    panic!("redis did not restart on port {}: {err}", self.port)
                }
            }
        }
    }

    /// A plain command connection.
    pub(crate) async fn connection(&self) -> redis::aio::MultiplexedConnection {
        tokio::time::timeout(STEP, self.client().get_multiplexed_async_connection())
            .await
            .expect("redis connect timed out")
            .expect("redis connect")
    }

    /// `PUBLISH channel payload` from a plain client; returns how many subscribers got it.
    pub(crate) async fn publish(&self, channel: &str, payload: &[u8]) -> i64 {
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
    pub(crate) async fn subscribers(&self, channel: &str) -> i64 {
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
    pub(crate) async fn psubscribe(&self, pattern: &str) -> RawSubscriber {
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

/// Starts `redis-server` on `port` and waits until it is ready. Its log (appended to, across
/// restarts) tells a port taken meanwhile from other failures, and tells that the server
/// answering on `port` is this one.
async fn spawn_redis(port: u16, extra: &[String], dir: &Path) -> Started<Process> {
    let log = dir.join("redis.log");
    // Only what this start writes counts.
    let log_start = fs::metadata(&log).map_or(0, |meta| meta.len() as usize);
    let program = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
    let spawned = Command::new(&program)
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
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return Started::Failed(format!(
                "spawn {program}: {e} (is the redis-server package installed?)"
            ));
        }
    };
    let mut process = Process {
        label: format!("redis-server :{port}"),
        child: Some(child),
        log,
    };
    let this_start = |process: &Process| {
        process
            .log_text()
            .get(log_start..)
            .unwrap_or_default()
            .to_owned()
    };
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(status) = process.try_wait() {
            let said = this_start(&process);
            if says_address_in_use(&said) {
                return Started::PortTaken(format!("port {port} or {extra:?}: {said}"));
            }
            process.print_log_tail();
            return Started::Failed(format!("exited with {status}"));
        }
        // Another test's Redis may answer on a port this one failed to bind: only this one's
        // own "ready" line says the answer comes from it.
        if this_start(&process).contains("Ready to accept connections")
            && redis_answers_ping(port).await
        {
            return Started::Up(process);
        }
        if Instant::now() >= deadline {
            process.print_log_tail();
            return Started::Failed("not ready within 5 s".to_owned());
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
pub(crate) struct TestCertificates {
    pub dir: TempDir,
}

impl TestCertificates {
    pub(crate) fn generate() -> TestCertificates {
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

    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// What a raw Redis subscriber saw: the channel and the payload bytes.
pub(crate) struct RawSubscriber {
    stream: redis::aio::PubSubStream,
}

impl RawSubscriber {
    /// Everything published within `window`.
    pub(crate) async fn collect_for(&mut self, window: Duration) -> Vec<(String, Vec<u8>)> {
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
