//! Command-line flags and the plan they resolve to.
//!
//! Each mode has defaults that reproduce a known schedule (the two of the original
//! rust-chat-server load client, an ack-paced saturation run, and clients that only join and
//! hold); every part of a schedule can be overridden on its own.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};

use crate::connect::Sources;

/// Load generator for the chat cluster: simulated clients join rooms, send stamped messages
/// and count every delivery, so a run measures throughput and latency and checks that nothing
/// went missing or arrived twice.
#[derive(Debug, Parser)]
#[command(name = "ws-client", version)]
pub(crate) struct Args {
    /// WebSocket URL of a node or a load balancer; repeat to spread clients round-robin.
    #[arg(
        long = "url",
        value_name = "URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub urls: Vec<String>,

    /// Load schedule.
    #[arg(long, value_enum, default_value_t = Mode::FewClients)]
    pub mode: Mode,

    /// Stop adding clients at N [default: unlimited; 100 in saturation, 10 in http-ingest,
    /// 1000 in idle mode].
    #[arg(long, value_name = "N")]
    pub clients: Option<usize>,

    /// Clients added per second [default: 10 few-clients, 100 many-clients, 100 saturation,
    /// 1000 idle].
    #[arg(long, value_name = "PER_SEC")]
    pub ramp: Option<f64>,

    /// Milliseconds between two messages of one client [default: 30 few-clients, 5000
    /// many-clients]; saturation mode sends as fast as acks allow instead.
    #[arg(long = "interval-ms", value_name = "MS")]
    pub interval_ms: Option<u64>,

    /// Rooms the clients are spread over (client i joins room i mod N).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub rooms: usize,

    /// Size of each message text in bytes (at least the ~40-byte stamp it carries).
    #[arg(long = "message-size", value_name = "BYTES", default_value_t = 90)]
    pub message_size: usize,

    /// Seconds of sending; the run always stops by itself after it and the drain.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub duration: f64,

    /// After sending stopped, wait for deliveries until none arrived for a second, but at most
    /// this long, before counting.
    #[arg(long = "drain-secs", value_name = "SECS", default_value_t = 30.0)]
    pub drain_secs: f64,

    /// Client names are this prefix followed by the client's index.
    #[arg(long = "name-prefix", value_name = "PREFIX", default_value = "load-")]
    pub name_prefix: String,

    /// Rooms are named PREFIX-0, PREFIX-1, ….
    #[arg(long = "room-prefix", value_name = "PREFIX", default_value = "load")]
    pub room_prefix: String,

    /// Unacknowledged messages a client may have in flight [default: 8 in saturation mode,
    /// 64 otherwise]; a scheduled send that finds the window full is skipped and counted.
    #[arg(long = "in-flight", value_name = "N")]
    pub in_flight: Option<usize>,

    /// Loopback source addresses to spread connections over (127.0.0.2, 127.0.0.3, …) when
    /// the target is on loopback, so ephemeral ports do not run out; 0 uses the default.
    #[arg(long = "source-addresses", value_name = "N", default_value_t = 8)]
    pub source_addresses: u8,

    /// The first of the `--source-addresses` loopback source addresses; processes run side by
    /// side each take their own range (e.g. 127.0.0.2, 127.0.0.10, …).
    #[arg(
        long = "first-source-address",
        value_name = "ADDR",
        default_value = "127.0.0.2"
    )]
    pub first_source_address: Ipv4Addr,

    /// Write the summary and the per-interval series as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write the per-interval series and a final summary row as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Key of the nodes' HTTP API, for http-ingest mode.
    #[arg(long, env = "CHAT_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,

    /// Messages per POST /api/publish/batch in http-ingest mode.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub batch: usize,

    /// Idle mode: once every client has joined, this percentage of them leaves the room and
    /// comes back every second, for `--churn-secs` [default: 0, no churn].
    #[arg(long = "churn-percent", value_name = "PERCENT", default_value_t = 0.0)]
    pub churn_percent: f64,

    /// Seconds of churn.
    #[arg(long = "churn-secs", value_name = "SECS", default_value_t = 60.0)]
    pub churn_secs: f64,

    /// Seconds between the last client joining and the churn starting, so that the cluster
    /// is seen holding the room quietly first.
    #[arg(long = "churn-delay-secs", value_name = "SECS", default_value_t = 5.0)]
    pub churn_delay_secs: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    /// A client every 100 ms, each sending a message every 30 ms.
    FewClients,
    /// A client every 10 ms, each sending once on connecting and then every 5 s.
    ManyClients,
    /// 100 clients, each sending as fast as acks allow with a bounded window in flight.
    Saturation,
    /// 10 clients that only read, fed through the first node's HTTP API: batches of `--batch`
    /// messages posted as fast as replies allow, `--in-flight` requests at a time.
    HttpIngest,
    /// 1,000 clients, 1,000 a second, that join and hold without sending; with
    /// `--churn-percent`, some leave and come back every second once all have joined.
    Idle,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::FewClients => "few-clients",
            Mode::ManyClients => "many-clients",
            Mode::Saturation => "saturation",
            Mode::HttpIngest => "http-ingest",
            Mode::Idle => "idle",
        }
    }
}

/// How the clients send.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pace {
    /// One message per interval (the first right after joining).
    Every(Duration),
    /// Refill the window whenever a reply arrives.
    AckPaced,
    /// Never: the clients only read (messages come through the HTTP API, or none at all).
    Listen,
}

/// The resolved run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub mode: Mode,
    pub urls: Vec<String>,
    pub clients: Option<usize>,
    pub ramp_every: Duration,
    pub pace: Pace,
    pub in_flight: usize,
    pub rooms: Vec<String>,
    pub message_size: usize,
    pub duration: Duration,
    pub drain: Duration,
    pub name_prefix: String,
    pub sources: Sources,
    /// The HTTP API key and batch size, in http-ingest mode.
    pub ingest: Option<Ingest>,
    /// Members leaving and rejoining, in idle mode.
    pub churn: Option<Churn>,
}

/// Idle mode's churn: every second, `per_sec` clients (taken in turn) leave their room and
/// join it again, for `secs`, starting `delay` after every client joined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Churn {
    pub percent: f64,
    pub per_sec: usize,
    pub secs: Duration,
    pub delay: Duration,
}

/// How http-ingest mode feeds the cluster.
#[derive(Clone)]
pub(crate) struct Ingest {
    pub api_key: String,
    pub batch: usize,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ingest {{ batch: {}, api_key: <redacted> }}", self.batch)
    }
}

impl Args {
    /// The room names, each checked against the protocol's rules.
    fn rooms(&self) -> anyhow::Result<Vec<String>> {
        let rooms: Vec<String> = (0..self.rooms)
            .map(|k| format!("{}-{k}", self.room_prefix))
            .collect();
        for room in &rooms {
            chat_protocol::validate_room(room)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--room-prefix gives the room name `{room}`"))?;
        }
        Ok(rooms)
    }

    fn check_names_and_sources(&self) -> anyhow::Result<()> {
        // Names go into the URL unescaped, so keep them to characters that need no escaping.
        if !self
            .name_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            || self.name_prefix.len() > 20
        {
            bail!("--name-prefix takes up to 20 characters of A-Z, a-z, 0-9, '-', '_', '.'");
        }
        let last = u32::from(self.first_source_address)
            .saturating_add(u32::from(self.source_addresses).saturating_sub(1));
        if self.source_addresses > 0
            && !(self.first_source_address.is_loopback() && Ipv4Addr::from(last).is_loopback())
        {
            bail!(
                "--first-source-address and --source-addresses must give addresses in 127.0.0.0/8"
            );
        }
        Ok(())
    }

    /// The churn asked for, checked against the mode and the number of clients.
    fn churn(&self, clients: Option<usize>) -> anyhow::Result<Option<Churn>> {
        let percent = self.churn_percent;
        if percent == 0.0 {
            return Ok(None);
        }
        if !(percent > 0.0 && percent <= 100.0) {
            bail!("--churn-percent takes a percentage above 0 and at most 100");
        }
        if self.mode != Mode::Idle {
            bail!("--churn-percent is for idle mode");
        }
        let Some(clients) = clients else {
            bail!("--churn-percent needs a number of --clients");
        };
        // Round up, so that a small run still churns someone.
        let per_sec = (clients as f64 * percent / 100.0).ceil() as usize;
        Ok(Some(Churn {
            percent,
            per_sec,
            secs: secs(self.churn_secs, "--churn-secs")?,
            delay: secs(self.churn_delay_secs, "--churn-delay-secs")?,
        }))
    }

    pub(crate) fn plan(&self) -> anyhow::Result<Plan> {
        let (clients, ramp, interval_ms, in_flight) = match self.mode {
            Mode::FewClients => (None, 10.0, Some(30), 64),
            Mode::ManyClients => (None, 100.0, Some(5_000), 64),
            Mode::Saturation => (Some(100), 100.0, None, 8),
            Mode::HttpIngest => (Some(10), 100.0, None, 2),
            Mode::Idle => (Some(1_000), 1_000.0, None, 1),
        };
        let clients = self.clients.or(clients);
        let ramp = self.ramp.unwrap_or(ramp);
        if !(ramp.is_finite() && ramp > 0.0) {
            bail!("--ramp must be a positive number of clients per second");
        }
        let pace = match (self.mode, self.interval_ms.or(interval_ms)) {
            (Mode::Saturation, _) => Pace::AckPaced,
            (Mode::HttpIngest | Mode::Idle, _) => Pace::Listen,
            (_, Some(0)) => bail!("--interval-ms must be at least 1"),
            (_, Some(ms)) => Pace::Every(Duration::from_millis(ms)),
            (_, None) => unreachable!("schedule modes have a default interval"),
        };
        let in_flight = self.in_flight.unwrap_or(in_flight);
        if in_flight == 0 {
            bail!("--in-flight must be at least 1");
        }
        if self.rooms == 0 {
            bail!("--rooms must be at least 1");
        }
        if self.urls.is_empty() {
            bail!("give at least one --url");
        }
        let rooms = self.rooms()?;
        self.check_names_and_sources()?;
        let ingest = match (self.mode, &self.api_key) {
            (Mode::HttpIngest, None) => {
                bail!("http-ingest mode needs the nodes' API key: --api-key or CHAT_API_KEY")
            }
            (Mode::HttpIngest, Some(_)) if self.batch == 0 => bail!("--batch must be at least 1"),
            (Mode::HttpIngest, Some(key)) => Some(Ingest {
                api_key: key.clone(),
                batch: self.batch,
            }),
            _ => None,
        };
        Ok(Plan {
            mode: self.mode,
            urls: self.urls.clone(),
            clients,
            ramp_every: Duration::from_secs_f64(1.0 / ramp),
            pace,
            in_flight,
            rooms,
            message_size: self.message_size,
            duration: secs(self.duration, "--duration")?,
            drain: secs(self.drain_secs, "--drain-secs")?,
            churn: self.churn(clients)?,
            name_prefix: self.name_prefix.clone(),
            sources: Sources {
                first: self.first_source_address,
                spread: self.source_addresses,
            },
            ingest,
        })
    }
}

fn secs(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("{flag} must be a non-negative number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        Args::try_parse_from(std::iter::once("ws-client").chain(args.iter().copied()))?.plan()
    }

    #[test]
    fn modes_reproduce_their_schedules() {
        let few = plan(&[]).unwrap();
        assert_eq!(few.ramp_every, Duration::from_millis(100));
        assert!(matches!(few.pace, Pace::Every(d) if d == Duration::from_millis(30)));
        assert_eq!(few.clients, None);
        assert_eq!(few.duration, Duration::from_secs(60));

        let many = plan(&["--mode", "many-clients"]).unwrap();
        assert_eq!(many.ramp_every, Duration::from_millis(10));
        assert!(matches!(many.pace, Pace::Every(d) if d == Duration::from_secs(5)));

        let sat = plan(&["--mode", "saturation", "--in-flight", "4"]).unwrap();
        assert!(matches!(sat.pace, Pace::AckPaced));
        assert_eq!((sat.clients, sat.in_flight), (Some(100), 4));

        let ingest = plan(&["--mode", "http-ingest", "--api-key", "k"]).unwrap();
        assert!(matches!(ingest.pace, Pace::Listen));
        assert_eq!((ingest.clients, ingest.in_flight), (Some(10), 2));
        assert_eq!(ingest.ingest.map(|i| i.batch), Some(20_000));
    }

    #[test]
    fn idle_mode_joins_and_holds_and_churns_on_request() {
        let idle = plan(&["--mode", "idle"]).unwrap();
        assert!(matches!(idle.pace, Pace::Listen));
        assert_eq!(
            (idle.clients, idle.ramp_every),
            (Some(1_000), Duration::from_millis(1))
        );
        assert_eq!((idle.rooms.len(), idle.churn), (1, None));

        let big = plan(&[
            "--mode",
            "idle",
            "--clients",
            "10001",
            "--ramp",
            "500",
            "--churn-percent",
            "5",
            "--churn-secs",
            "30",
            "--churn-delay-secs",
            "0",
        ])
        .unwrap();
        assert_eq!(
            (big.clients, big.ramp_every),
            (Some(10_001), Duration::from_millis(2))
        );
        assert_eq!(
            big.churn,
            Some(Churn {
                percent: 5.0,
                per_sec: 501,
                secs: Duration::from_secs(30),
                delay: Duration::ZERO,
            })
        );
        let tiny = plan(&["--mode", "idle", "--clients", "3", "--churn-percent", "1"]).unwrap();
        assert_eq!(
            tiny.churn.map(|c| (c.per_sec, c.secs, c.delay)),
            Some((1, Duration::from_secs(60), Duration::from_secs(5)))
        );
    }

    #[test]
    fn refuses_nonsense() {
        for args in [
            &["--ramp", "0"][..],
            &["--rooms", "0"],
            &["--in-flight", "0"],
            &["--interval-ms", "0"],
            &["--duration", "-1"],
            &["--room-prefix", "no spaces"],
            &["--name-prefix", "a&b"],
            &["--first-source-address", "10.0.0.1"],
            &[
                "--first-source-address",
                "127.255.255.250",
                "--source-addresses",
                "8",
            ],
            &["--mode", "http-ingest"],
            &["--mode", "http-ingest", "--api-key", "k", "--batch", "0"],
            &["--churn-percent", "5"],
            &["--mode", "idle", "--churn-percent", "101"],
            &["--mode", "idle", "--churn-percent", "-1"],
            &["--mode", "idle", "--churn-percent", "NaN"],
            &[
                "--mode",
                "idle",
                "--churn-percent",
                "5",
                "--churn-secs",
                "-1",
            ],
            &[
                "--mode",
                "idle",
                "--churn-percent",
                "5",
                "--churn-delay-secs",
                "inf",
            ],
        ] {
            assert!(plan(args).is_err(), "{args:?}");
        }
    }
}
