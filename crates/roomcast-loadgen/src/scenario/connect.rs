//! `connect`: how fast connections are set up. Each one is TCP connect, the upgrade carrying a
//! freshly minted JWT (which the server validates), a `join`, and the wait for the server's
//! `user_list`; `concurrency` are in flight at once and every connection is held until all
//! are done, so the server's connection count only grows during the measurement.

use serde::Serialize;
use serde_json::json;

use crate::fleet::{Fleet, FleetPlan};
use crate::procfs::CpuMeter;
use crate::progress::Bar;
use crate::report::{Better, Report};
use crate::scenario::fanout::push_cpu;
use crate::target::Target;

/// A connect run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ConnectPlan {
    /// Connections opened.
    pub connections: u32,
    /// In flight at once.
    pub concurrency: u32,
    /// Rooms joined, round-robin.
    pub rooms: u32,
}

/// Runs the connect scenario against `target`.
///
/// # Errors
///
/// Only a plan that does not fit; failed connections are counted in the report.
pub async fn run(target: &Target, plan: &ConnectPlan, namespace: &str) -> anyhow::Result<Report> {
    let connections = plan.connections as usize;
    crate::scenario::check_fd_budget(connections)?;
    let connector = target.connector(namespace);
    let bar = Bar::new(&format!("{} connect", target.label), connections as u64);
    let fleet_plan = FleetPlan {
        clients: connections,
        rooms: plan.rooms.min(plan.connections),
        room_prefix: format!("lg-{namespace}-r"),
        publishers: 0,
        rate: 1.0,
        payload: 0,
        limit_per_publisher: 0,
        setup_concurrency: plan.concurrency as usize,
        setup_timeout: target.setup_timeout,
        lifetime: std::time::Duration::from_secs(30),
    };
    let cpu = CpuMeter::start(target.server_pid);
    let (fleet, setup) = Fleet::launch(&connector, fleet_plan, &bar).await?;
    let cpu = cpu.stop();
    bar.finish();
    let end = fleet.finish().await;
    let secs = setup.elapsed.as_secs_f64();
    let ms = |us: u64| us as f64 / 1000.0;
    let mut r = Report::default();
    r.push(
        "ready",
        "connections joined",
        "",
        setup.ready as f64,
        Better::Higher,
    );
    r.push(
        "failed",
        "connections failed",
        "",
        setup.failures.values().sum::<u64>() as f64,
        Better::Lower,
    );
    r.push("elapsed_s", "time for all", "s", secs, Better::Lower);
    r.push(
        "handshakes_per_s",
        "set-ups (connect + JWT + join)",
        "/s",
        (secs > 0.0).then(|| setup.ready as f64 / secs),
        Better::Higher,
    );
    r.push(
        "p50_ms",
        "set-up latency p50",
        "ms",
        ms(setup.handshake.p50_us),
        Better::Lower,
    );
    r.push(
        "p99_ms",
        "set-up latency p99",
        "ms",
        ms(setup.handshake.p99_us),
        Better::Lower,
    );
    r.push(
        "max_ms",
        "set-up latency max",
        "ms",
        ms(setup.handshake.max_us),
        Better::Lower,
    );
    push_cpu(
        &mut r,
        &cpu,
        setup.ready as u64,
        "server_us_per_handshake",
        "server CPU per set-up",
    );
    for (kind, n) in &setup.failures {
        r.notes.push(format!("{n} × {kind}"));
    }
    if let Some(first) = &setup.first_error {
        r.notes.push(format!("first failure: {first}"));
    }
    r.details = json!({
        "plan": plan,
        "handshake_latency": setup.handshake,
        "failures": setup.failures,
        "closed_after_join": end.closed,
    });
    Ok(r)
}
