//! What flood control costs a send: the per-connection limit, the per-name limit and debounce
//! in memory, and the same check in Redis, one at a time and pipelined.
//!
//! Run with `cargo bench -p chat-server --bench flood`. The Redis figures need `redis-server`
//! on the PATH (a private one is started on a free loopback port); without it they are skipped.

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chat_server::config::RedisTarget;
use chat_server::flood::{
    Check, FloodGuard, FloodPolicy, MemoryLimiter, NameLimiter, Rate, RedisLimiter, Verdict,
};
use chat_server::keyspace::Keyspace;
use chat_server::metrics::Metrics;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Limits no benchmark reaches, so every check takes the path of an allowed send.
fn generous() -> Option<Rate> {
    Rate::new(1e9, 1_000_000)
}

const WINDOW: Option<Duration> = Some(Duration::from_secs(2));

fn memory(c: &mut Criterion) {
    let metrics = Arc::new(Metrics::new());
    let mut group = c.benchmark_group("flood_memory");
    group.throughput(Throughput::Elements(1));

    // The session's own limit: a clock read and GCRA; the name check is off.
    let mut guard = FloodGuard::new(FloodPolicy {
        connection_rate: generous(),
        join_rate: None,
        close_after: 0,
        names: Arc::new(MemoryLimiter::new(None, None, metrics.clone())),
    });
    group.bench_function("connection_limit", |b| {
        b.iter(|| black_box(guard.check(&metrics, "guest-0421", "lobby", "hello")))
    });

    // Per-name GCRA and the debounce in sharded maps, over 1,000 names and fresh texts.
    let limiter = MemoryLimiter::new(generous(), WINDOW, metrics.clone());
    let names: Vec<String> = (0..1000).map(|i| format!("guest-{i:04}")).collect();
    let mut text = String::with_capacity(64);
    let mut n = 0u64;
    group.bench_function("name_limit_and_debounce", |b| {
        b.iter(|| {
            n += 1;
            text.clear();
            let _ = write!(text, "message number {n} of the benchmark");
            let name = &names[(n % 1000) as usize];
            let verdict = limiter.verdict(name, "lobby", &text);
            debug_assert_eq!(verdict, Verdict::Allowed);
            black_box(verdict)
        })
    });
    group.finish();
}

/// A private redis-server, killed on drop.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Option<Redis> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Redis(child, port))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis(c: &mut Criterion) {
    let Some(server) = Redis::start() else {
        eprintln!("redis-server not found: skipping the Redis benchmarks");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let metrics = Arc::new(Metrics::new());
    let url = format!("redis://127.0.0.1:{}/", server.1);
    let limiter = runtime.block_on(async {
        let limiter = RedisLimiter::start(
            &RedisTarget::Single(url),
            Keyspace::new("bench", false),
            generous(),
            WINDOW,
            metrics,
        )
        .expect("valid url");
        // Until it is connected the limiter decides in memory.
        for _ in 0..100 {
            if matches!(limiter.check("probe", "lobby", "probe"), Check::Pending(_)) {
                return limiter;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no connection to the benchmark's redis-server");
    });
    let n = std::cell::Cell::new(0u64);
    let check = |limiter: &RedisLimiter| {
        n.set(n.get() + 1);
        let text = format!("message number {} of the benchmark", n.get());
        match limiter.check("guest-0421", "lobby", &text) {
            Check::Pending(verdict) => verdict,
            Check::Ready(_) => panic!("the limiter lost Redis"),
        }
    };

    let mut group = c.benchmark_group("flood_redis");
    group.throughput(Throughput::Elements(1));
    group.bench_function("check_one_at_a_time", |b| {
        b.iter(|| runtime.block_on(check(&limiter)))
    });
    // Many sessions' checks in flight at once share the connection's pipeline.
    const IN_FLIGHT: usize = 64;
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    group.bench_function("checks_64_in_flight", |b| {
        b.iter(|| {
            let checks: Vec<_> = (0..IN_FLIGHT).map(|_| check(&limiter)).collect();
            runtime.block_on(futures::future::join_all(checks))
        })
    });
    group.finish();
}

criterion_group!(benches, memory, redis);
criterion_main!(benches);
