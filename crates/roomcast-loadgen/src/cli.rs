//! The command line: one subcommand per scenario, plus `reference`, the bare server to compare
//! against. Every option has a default and a bound, so every run is bounded in size and time.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::target::{Endpoint, Target};

/// Secret used when none is given: roomcast refuses such tokens (4001), the reference server
/// ignores them.
const PLACEHOLDER_SECRET: &str = "roomcast-loadgen-placeholder-secret-not-for-servers";

/// roomcast-loadgen: load scenarios for roomcast over the wire protocol, on loopback only.
#[derive(Debug, Parser)]
#[command(name = "roomcast-loadgen", version, about, long_about = None)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publishers send to rooms at a fixed total rate; every delivery is counted.
    Fanout(FanoutArgs),
    /// Raise the fan-out rate step by step until p99 > the limit or any loss; report the last
    /// clean rate.
    Sweep(SweepArgs),
    /// Fan-out over many small rooms.
    Rooms(RoomsArgs),
    /// Hold N connections joined to rooms; with --server-pid, server memory per connection.
    Idle(IdleArgs),
    /// Connection set-up rate: TCP + upgrade with a JWT + join, until the user list arrives.
    Connect(ConnectArgs),
    /// Persisted messages per second: publishers keep a window of messages in flight and
    /// count acks (roomcast only: the reference stores nothing).
    History(HistoryArgs),
    /// Run the bare reference server (no auth, no store, one room).
    Reference(ReferenceArgs),
}

/// Where to send the load, and with what.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The server's native endpoint (loopback only: 127.0.0.0/8, ::1, localhost).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws/auth", value_parser = Endpoint::parse)]
    pub url: Endpoint,

    /// HS256 secret to sign tokens with (the server's ROOMCAST_JWT_SECRET).
    #[arg(long, env = "ROOMCAST_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// The server's process id: its CPU time and RSS are read from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Name of the target in the report.
    #[arg(long, default_value = "target")]
    pub label: String,

    /// A second server to run the same scenario against, in the same invocation, for ratios
    /// (e.g. the reference server).
    #[arg(long, value_parser = Endpoint::parse)]
    pub baseline_url: Option<Endpoint>,

    /// The baseline server's process id.
    #[arg(long)]
    pub baseline_pid: Option<u32>,

    /// Name of the baseline in the report.
    #[arg(long, default_value = "baseline")]
    pub baseline_label: String,

    /// Source addresses 127.0.0.1..=127.0.0.N client sockets are spread over (about 28k
    /// connections each).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=200))]
    pub sources: u8,

    /// Connections being set up at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub setup_concurrency: u32,

    /// Longest the set-up of all connections may take.
    #[arg(long, default_value = "120s", value_parser = duration_between(secs(1), secs(900)))]
    pub setup_timeout: Duration,

    /// Longest to wait for deliveries in flight after the last message is sent.
    #[arg(long, default_value = "5s", value_parser = duration_between(Duration::ZERO, secs(60)))]
    pub drain: Duration,

    /// Pause between runs against the target and the baseline (and between sweep steps), so
    /// one run's teardown does not overlap the next.
    #[arg(long, default_value = "2s", value_parser = duration_between(Duration::ZERO, secs(60)))]
    pub pause: Duration,

    /// Rounds of the comparison. With a baseline, the target runs first in odd rounds and the
    /// baseline in even ones, so neither always meets the machine's quieter or busier
    /// minutes; after the rounds a summary gives each figure's ratio per round, the median
    /// ratio and how many rounds the target won. Without one, the target's figures per round
    /// and their median.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
}

impl TargetArgs {
    /// The target, then the baseline if one was given.
    pub fn targets(&self) -> Vec<Target> {
        let secret = self.secret.clone().unwrap_or_else(|| {
            eprintln!(
                "note: no --secret / ROOMCAST_JWT_SECRET: tokens are signed with a placeholder \
                 that roomcast refuses (4001); the reference server ignores tokens"
            );
            PLACEHOLDER_SECRET.to_owned()
        });
        let make = |label: &str, endpoint: &Endpoint, pid: Option<u32>| Target {
            label: label.to_owned(),
            endpoint: endpoint.clone(),
            server_pid: pid,
            secret: secret.clone(),
            sources: self.sources,
            setup_concurrency: self.setup_concurrency as usize,
            setup_timeout: self.setup_timeout,
            drain: self.drain,
        };
        let mut targets = vec![make(&self.label, &self.url, self.server_pid)];
        if let Some(baseline) = &self.baseline_url {
            targets.push(make(&self.baseline_label, baseline, self.baseline_pid));
        }
        targets
    }
}

/// The shape of a fan-out, shared by `fanout`, `rooms` and each `sweep` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shape {
    /// Rooms.
    pub rooms: u32,
    /// Clients in each room.
    pub clients: u32,
    /// Publishers (clients that also send), spread over the rooms round-robin.
    pub publishers: u32,
    /// Bytes of each message's content.
    pub payload: u32,
}

/// `fanout`.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Rooms.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rooms: u32,
    /// Clients per room (every one receives every message of its room, its own included).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub clients: u32,
    /// Publishers in total, spread over the rooms round-robin (at most rooms × clients).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub publishers: u32,
    /// Messages per second, all publishers together.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// How long publishers send.
    #[arg(long, default_value = "10s", value_parser = duration_between(secs(1), secs(600)))]
    pub duration: Duration,
    /// Bytes of each message's content (at least the id, ~20-56 bytes).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(32..=65_536))]
    pub payload: u32,
    /// Target and baseline.
    #[command(flatten)]
    pub target: TargetArgs,
}

impl FanoutArgs {
    /// Rooms, clients, publishers and payload.
    pub fn shape(&self) -> Shape {
        Shape {
            rooms: self.rooms,
            clients: self.clients,
            publishers: self.publishers,
            payload: self.payload,
        }
    }
}

/// `rooms`: a fan-out over many small rooms, one publisher each.
#[derive(Debug, Clone, Args)]
pub struct RoomsArgs {
    /// Rooms.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rooms: u32,
    /// Clients per room.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub clients: u32,
    /// Publishers in total, spread over the rooms round-robin (default: one per room).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub publishers: u32,
    /// Messages per second, all publishers together.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// How long publishers send.
    #[arg(long, default_value = "10s", value_parser = duration_between(secs(1), secs(600)))]
    pub duration: Duration,
    /// Bytes of each message's content.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(32..=65_536))]
    pub payload: u32,
    /// Target and baseline.
    #[command(flatten)]
    pub target: TargetArgs,
}

impl RoomsArgs {
    /// The same as a `fanout` with these numbers.
    pub fn into_fanout(self) -> FanoutArgs {
        FanoutArgs {
            rooms: self.rooms,
            clients: self.clients,
            publishers: self.publishers,
            rate: self.rate,
            duration: self.duration,
            payload: self.payload,
            target: self.target,
        }
    }
}

/// `sweep`.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// Rooms.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rooms: u32,
    /// Clients per room.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub clients: u32,
    /// Publishers in total.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub publishers: u32,
    /// Bytes of each message's content.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(32..=65_536))]
    pub payload: u32,
    /// The first step's rate, messages per second.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub start_rate: u32,
    /// Each step's rate is the last clean one times this.
    #[arg(long, default_value_t = 1.5, value_parser = f64_between(1.05, 4.0))]
    pub factor: f64,
    /// Never go above this rate.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_rate: u32,
    /// How long each step publishes.
    #[arg(long, default_value = "10s", value_parser = duration_between(secs(1), secs(120)))]
    pub step_duration: Duration,
    /// Most steps in all (raising and refining).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub max_steps: u32,
    /// Bisection steps between the last clean and the first failing rate.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=8))]
    pub refine: u32,
    /// A step is clean when its p99 is at most this (and nothing was lost or duplicated).
    #[arg(long, default_value = "100ms", value_parser = duration_between(Duration::from_millis(1), secs(10)))]
    pub p99_limit: Duration,
    /// Target and baseline.
    #[command(flatten)]
    pub target: TargetArgs,
}

impl SweepArgs {
    /// Rooms, clients, publishers and payload.
    pub fn shape(&self) -> Shape {
        Shape {
            rooms: self.rooms,
            clients: self.clients,
            publishers: self.publishers,
            payload: self.payload,
        }
    }
}

/// `idle`.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Connections to hold.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=500_000))]
    pub connections: u32,
    /// Rooms they join (round-robin).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=500_000))]
    pub rooms: u32,
    /// How long to hold them before reading the server's RSS.
    #[arg(long, default_value = "5s", value_parser = duration_between(Duration::ZERO, secs(600)))]
    pub hold: Duration,
    /// Also read the server's RSS this long after the last client joined, before the `--hold`
    /// reading (which must come later): memory while the join storm's garbage is still being
    /// returned, next to the settled figure, from one set of connections.
    #[arg(long, value_parser = duration_between(Duration::ZERO, secs(600)))]
    pub early: Option<Duration>,
    /// Then send one message to every room and read the RSS again.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub broadcast: bool,
    /// Bytes of that message's content.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(32..=65_536))]
    pub payload: u32,
    /// Target and baseline.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `connect`.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Connections to open (each held until the end).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=500_000))]
    pub connections: u32,
    /// Set-ups in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Rooms joined (round-robin); the server announces each join to the room.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=500_000))]
    pub rooms: u32,
    /// Target and baseline (--setup-timeout bounds the run).
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Publishers (connections that send; each is also a member of its room).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub publishers: u32,
    /// Rooms, publishers spread over them round-robin (at most --publishers are used). Every
    /// message reaches every member of its room, so publishers ÷ rooms is the fan-out.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rooms: u32,
    /// Messages each publisher keeps in flight: it sends the next when an ack comes back.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub window: u32,
    /// How long publishers send.
    #[arg(long, default_value = "10s", value_parser = duration_between(secs(1), secs(600)))]
    pub duration: Duration,
    /// Bytes of each message's content.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(32..=65_536))]
    pub payload: u32,
    /// Most messages in the whole run; the load generator keeps ~24 bytes per message for
    /// the exact checks, so this bounds its memory (10M ≈ 240 MB).
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_messages: u64,
    /// After the run, read back every room's last_seq and its latest stored messages through
    /// the HTTP API (`GET /rooms/{room}`, `GET /rooms/{room}/messages`) and compare them with
    /// the acks.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub verify_history: bool,
    /// Most stored messages read back per room (pages of 200).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub verify_messages: u32,
    /// Target (--baseline-url is refused: the reference server stores nothing and acks
    /// nothing).
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `reference`.
#[derive(Debug, Clone, Args)]
pub struct ReferenceArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:9090", value_parser = loopback_addr)]
    pub listen: SocketAddr,
    /// Stop by itself after this long.
    #[arg(long, default_value = "1h", value_parser = duration_between(secs(1), secs(24 * 3600)))]
    pub max_duration: Duration,
    /// Set TCP_NODELAY on accepted sockets (a diagnostic; the reference is untuned by default).
    #[arg(long, default_value_t = false)]
    pub nodelay: bool,
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Durations like `10s`, `250ms`, `1m30s` (`0` is zero), within `[min, max]`.
fn duration_between(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |value| {
        let value = value.trim();
        let duration = if value == "0" {
            Duration::ZERO
        } else {
            humantime::parse_duration(value)
                .map_err(|_| format!("expected a duration like 10s or 250ms, got {value:?}"))?
        };
        if duration < min || duration > max {
            return Err(format!(
                "must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ));
        }
        Ok(duration)
    }
}

fn f64_between(
    min: f64,
    max: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |value| {
        let x: f64 = value
            .trim()
            .parse()
            .map_err(|_| format!("expected a number, got {value:?}"))?;
        if !(min..=max).contains(&x) {
            return Err(format!("must be between {min} and {max}"));
        }
        Ok(x)
    }
}

fn loopback_addr(value: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = value
        .trim()
        .parse()
        .map_err(|_| format!("expected an address like 127.0.0.1:9090, got {value:?}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr}: the reference server listens on loopback only"
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut argv = vec!["roomcast-loadgen"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
    }

    #[test]
    fn every_scenario_runs_on_its_defaults() {
        for scenario in [
            "fanout",
            "sweep",
            "rooms",
            "idle",
            "connect",
            "history",
            "reference",
        ] {
            parse(&[scenario]).unwrap_or_else(|err| panic!("{scenario}: {err}"));
        }
    }

    #[test]
    fn out_of_bounds_values_are_refused() {
        assert!(parse(&["fanout", "--rate", "0"]).is_err());
        assert!(parse(&["fanout", "--duration", "2h"]).is_err());
        assert!(parse(&["sweep", "--factor", "1.0"]).is_err());
        assert!(parse(&["sweep", "--max-steps", "51"]).is_err());
        assert!(parse(&["idle", "--connections", "600000"]).is_err());
        assert!(parse(&["fanout", "--url", "ws://10.1.2.3:8080/ws"]).is_err());
        assert!(parse(&["reference", "--listen", "0.0.0.0:9090"]).is_err());
        assert!(parse(&["history", "--window", "0"]).is_err());
        assert!(parse(&["history", "--window", "1025"]).is_err());
        assert!(parse(&["history", "--publishers", "100001"]).is_err());
        assert!(parse(&["history", "--max-messages", "0"]).is_err());
        assert!(parse(&["history", "--verify-history", "maybe"]).is_err());
        assert!(parse(&["sweep", "--rounds", "0"]).is_err());
        assert!(parse(&["sweep", "--rounds", "21"]).is_err());
        assert!(parse(&["sweep", "--rounds", "20"]).is_ok());
    }

    #[test]
    fn a_baseline_makes_two_targets() {
        let cli = parse(&[
            "fanout",
            "--secret",
            "s3cr3t-s3cr3t-s3cr3t",
            "--baseline-url",
            "ws://127.0.0.1:9090/ws/auth",
            "--label",
            "roomcast",
            "--baseline-label",
            "reference",
        ])
        .unwrap();
        let Command::Fanout(args) = cli.command else {
            panic!("parsed fanout")
        };
        let targets = args.target.targets();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].label, "roomcast");
        assert_eq!(targets[1].endpoint.addr().port(), 9090);
    }
}
