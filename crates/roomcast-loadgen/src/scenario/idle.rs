//! `idle`: hold N connections joined to rooms and read the server's RSS from
//! `/proc/<pid>/status` before connecting, after holding them, after one message to every room
//! (which makes each connection's write path allocate whatever it allocates lazily), and after
//! they closed. Bytes per connection = (RSS after − RSS before) ÷ N. With `--early`, also a
//! reading that long after the last client joined, before the one after `--hold`: what the
//! set-up left behind (queued frames, freed memory the allocator has not returned yet) next to
//! what stays.

use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use serde_json::json;

use crate::fleet::{Fleet, FleetPlan};
use crate::procfs::{self, CpuMeter};
use crate::progress::Bar;
use crate::report::{Better, Report};
use crate::target::Target;

/// Time for RSS to settle after a phase (freed memory returned, pending writes done).
const SETTLE: Duration = Duration::from_secs(2);

/// How long the broadcast's publishers have to send their one message.
const BROADCAST_WINDOW: Duration = Duration::from_secs(2);

/// An idle run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IdlePlan {
    /// Connections held.
    pub connections: u32,
    /// Rooms joined, round-robin.
    pub rooms: u32,
    /// Holding time before the reading.
    #[serde(serialize_with = "crate::scenario::as_secs")]
    pub hold: Duration,
    /// An earlier reading this long after the last join (before `hold`'s).
    #[serde(serialize_with = "crate::scenario::as_secs_opt")]
    pub early: Option<Duration>,
    /// Send one message to each room, then read again.
    pub broadcast: bool,
    /// Bytes of that message's content.
    pub payload: u32,
}

/// RSS readings, bytes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Readings {
    /// Before connecting.
    pub before: Option<u64>,
    /// `--early` after the last join.
    pub early: Option<u64>,
    /// With every connection joined and idle.
    pub held: Option<u64>,
    /// After one message to every room.
    pub after_broadcast: Option<u64>,
    /// After every connection closed.
    pub after_close: Option<u64>,
}

/// Runs the idle scenario against `target`.
///
/// # Errors
///
/// Clients that could not all connect and join.
pub async fn run(target: &Target, plan: &IdlePlan, namespace: &str) -> anyhow::Result<Report> {
    let connections = plan.connections as usize;
    crate::scenario::check_fd_budget(connections)?;
    let pid = target.server_pid;
    if pid.is_none() {
        eprintln!(
            "note: no --server-pid for {}: server memory is not read",
            target.label
        );
    }
    let rooms = plan.rooms.min(plan.connections);
    let publishers = if plan.broadcast { rooms as usize } else { 0 };
    let mut server = Readings {
        before: pid.and_then(|p| procfs::rss_bytes(Some(p))),
        ..Readings::default()
    };
    let loadgen_before = procfs::rss_bytes(None);
    let connector = target.connector(namespace);
    let bar = Bar::new(&format!("{} join", target.label), connections as u64);
    let fleet_plan = FleetPlan {
        clients: connections,
        rooms,
        room_prefix: format!("lg-{namespace}-r"),
        publishers,
        // One message per publisher, sent as soon as the window opens.
        rate: publishers.max(1) as f64 * 1000.0,
        payload: plan.payload as usize,
        limit_per_publisher: 1,
        setup_concurrency: target.setup_concurrency,
        setup_timeout: target.setup_timeout,
        lifetime: plan.hold
            + BROADCAST_WINDOW
            + target.drain
            + 3 * SETTLE
            + Duration::from_secs(60),
    };
    let cpu = CpuMeter::start(pid);
    let (fleet, setup) = Fleet::launch(&connector, fleet_plan, &bar).await?;
    bar.finish();
    if setup.ready < connections {
        fleet.finish().await;
        bail!(
            "{}: only {}/{connections} clients joined; failures {:?}; first: {}",
            target.label,
            setup.ready,
            setup.failures,
            setup.first_error.unwrap_or_default()
        );
    }
    let setup_cpu = cpu.stop();
    let joined = tokio::time::Instant::now();
    if let Some(early) = plan.early {
        tokio::time::sleep_until(joined + early).await;
        server.early = pid.and_then(|p| procfs::rss_bytes(Some(p)));
    }
    tokio::time::sleep_until(joined + plan.hold.max(SETTLE)).await;
    server.held = pid.and_then(|p| procfs::rss_bytes(Some(p)));
    let loadgen_held = procfs::rss_bytes(None);
    let mut broadcast = None;
    if plan.broadcast {
        let window = fleet.publish_for(Duration::ZERO, BROADCAST_WINDOW);
        fleet
            .wait_and_drain(window, SETTLE, target.drain, &Bar::hidden())
            .await;
        tokio::time::sleep(SETTLE).await;
        server.after_broadcast = pid.and_then(|p| procfs::rss_bytes(Some(p)));
        broadcast = Some((fleet.expected(), fleet.delivered()));
    }
    let end = fleet.finish().await;
    tokio::time::sleep(SETTLE).await;
    server.after_close = pid.and_then(|p| procfs::rss_bytes(Some(p)));

    let n = connections as f64;
    let per_conn = |after: Option<u64>| match (server.before, after) {
        (Some(before), Some(after)) => Some((after as f64 - before as f64) / n),
        _ => None,
    };
    let mib = |b: Option<u64>| b.map(|b| b as f64 / (1 << 20) as f64);
    let mut r = Report::default();
    r.push(
        "connections",
        "connections held",
        "",
        setup.ready as f64,
        Better::Neither,
    );
    r.push(
        "setup_s",
        "setup (connect + join all)",
        "s",
        setup.elapsed.as_secs_f64(),
        Better::Lower,
    );
    r.push(
        "server_rss_before_mib",
        "server RSS before",
        "MiB",
        mib(server.before),
        Better::Lower,
    );
    r.push(
        "server_rss_held_mib",
        "server RSS, all connected",
        "MiB",
        mib(server.held),
        Better::Lower,
    );
    r.push(
        "bytes_per_conn_early",
        "server RSS per connection, --early",
        "B",
        per_conn(server.early),
        Better::Lower,
    );
    r.push(
        "bytes_per_conn",
        "server RSS per connection",
        "B",
        per_conn(server.held),
        Better::Lower,
    );
    r.push(
        "bytes_per_conn_after_broadcast",
        "… after one message per room",
        "B",
        per_conn(server.after_broadcast),
        Better::Lower,
    );
    r.push(
        "server_rss_after_close_mib",
        "server RSS after all closed",
        "MiB",
        mib(server.after_close),
        Better::Lower,
    );
    r.push(
        "loadgen_bytes_per_conn",
        "load generator RSS per connection",
        "B",
        match (loadgen_before, loadgen_held) {
            (Some(b), Some(a)) => Some((a as f64 - b as f64) / n),
            _ => None,
        },
        Better::Neither,
    );
    r.push(
        "broadcast_lost",
        "broadcast deliveries lost",
        "",
        plan.broadcast.then_some(end.delivery.lost as f64),
        Better::Lower,
    );
    r.push(
        "closed_by_server",
        "clients closed by server",
        "",
        end.closed.values().sum::<u64>() as f64,
        Better::Lower,
    );
    r.push(
        "setup_loadgen_cpu_s",
        "set-up CPU, load generator",
        "s",
        setup_cpu.loadgen_s,
        Better::Lower,
    );
    r.push(
        "setup_server_cpu_s",
        "set-up CPU, server",
        "s",
        setup_cpu.server_s,
        Better::Lower,
    );
    r.details = json!({
        "plan": plan,
        "server_rss": server,
        "broadcast_expected_delivered": broadcast,
        "delivery": end.delivery,
        "closed": end.closed,
        "errors": end.errors,
    });
    Ok(r)
}
