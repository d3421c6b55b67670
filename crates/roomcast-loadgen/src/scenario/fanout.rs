//! `fanout` (and `rooms`, and each `sweep` step): clients join rooms, publishers send at a
//! fixed total rate for a fixed time, every delivery is counted and timed.
//!
//! ```text
//! connect + join all ─▶ settle ─▶ publish [start, start + duration) ─▶ drain ─▶ close, account
//!                                 └──────── CPU of both processes ────────┘
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use serde_json::json;

use crate::cli::Shape;
use crate::fleet::{Fleet, FleetPlan};
use crate::ledger::{Delivery, LatencySummary, SecondLatency};
use crate::procfs::{CpuMeter, CpuUse};
use crate::progress::Bar;
use crate::report::{Better, Report};
use crate::target::Target;

/// Time for the server's join announcements to reach everyone before publishing starts.
const SETTLE: Duration = Duration::from_secs(1);

/// Time between opening the window and its first message: lets every publisher see it.
const LEAD: Duration = Duration::from_millis(200);

/// How long publishers that fell behind may take to notice the window has closed.
const GRACE: Duration = Duration::from_secs(5);

/// The tallies' memory is bounded: one bit per (message, member of its room).
const MAX_LEDGER_BYTES: u64 = 4 << 30;

/// One fan-out run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FanoutPlan {
    /// Rooms, clients per room, publishers, payload.
    #[serde(flatten)]
    pub shape: Shape,
    /// Messages per second over all publishers.
    pub rate: u32,
    /// How long publishers send.
    #[serde(serialize_with = "crate::scenario::as_secs")]
    pub duration: Duration,
}

impl FanoutPlan {
    /// All clients.
    pub fn clients(&self) -> usize {
        self.shape.rooms as usize * self.shape.clients as usize
    }

    fn limit_per_publisher(&self) -> u64 {
        let per_publisher = f64::from(self.rate) / f64::from(self.shape.publishers);
        (per_publisher * self.duration.as_secs_f64()).ceil() as u64 + 1
    }
}

/// What a fan-out run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutOutcome {
    /// The plan it ran.
    pub plan: FanoutPlan,
    /// Seconds to connect and join every client.
    pub setup_s: f64,
    /// Exact accounting.
    pub delivery: Delivery,
    /// Delivery latency from the scheduled send time.
    pub latency: LatencySummary,
    /// The same by second of sending: when the slow deliveries happened (JSON only).
    pub latency_by_second: Vec<SecondLatency>,
    /// Messages per second actually sent.
    pub achieved_rate: f64,
    /// Distinct deliveries per second of publishing.
    pub deliveries_per_s: f64,
    /// CPU of both processes while publishing and draining.
    pub cpu: CpuUse,
    /// Clients the server closed during the run, by code.
    pub closed: BTreeMap<u16, u64>,
    /// Client errors during the run.
    pub errors: BTreeMap<String, u64>,
}

impl FanoutOutcome {
    /// No loss, no duplicate, nothing misrouted, nobody closed, the rate reached (97%), and
    /// p99 within `p99_limit`.
    pub fn is_clean(&self, p99_limit: Duration) -> bool {
        self.why_not_clean(p99_limit).is_none()
    }

    /// Why the run is not clean, if it is not.
    pub fn why_not_clean(&self, p99_limit: Duration) -> Option<String> {
        let d = &self.delivery;
        if d.lost > 0 {
            return Some(format!("lost {} of {}", d.lost, d.expected));
        }
        if d.duplicates > 0 {
            return Some(format!("{} duplicates", d.duplicates));
        }
        if d.misrouted > 0 {
            return Some(format!("{} misrouted", d.misrouted));
        }
        if !self.closed.is_empty() {
            return Some(format!("closed by the server: {:?}", self.closed));
        }
        if self.achieved_rate < 0.97 * f64::from(self.plan.rate) {
            return Some(format!(
                "sent only {:.0} msg/s of {}",
                self.achieved_rate, self.plan.rate
            ));
        }
        let limit_us = u64::try_from(p99_limit.as_micros()).unwrap_or(u64::MAX);
        if self.latency.p99_us > limit_us {
            return Some(format!(
                "p99 {:.1} ms > {} ms",
                self.latency.p99_us as f64 / 1000.0,
                p99_limit.as_millis()
            ));
        }
        None
    }

    /// The table and JSON figures.
    pub fn report(&self) -> Report {
        let mut r = Report::default();
        let d = &self.delivery;
        let ms = |us: u64| us as f64 / 1000.0;
        r.push(
            "setup_s",
            "setup (connect + join all)",
            "s",
            self.setup_s,
            Better::Lower,
        );
        r.push(
            "messages_sent",
            "messages sent",
            "",
            d.messages_sent as f64,
            Better::Neither,
        );
        r.push(
            "publish_rate",
            "publish rate",
            "msg/s",
            self.achieved_rate,
            Better::Higher,
        );
        r.push(
            "expected",
            "deliveries expected",
            "",
            d.expected as f64,
            Better::Neither,
        );
        r.push(
            "received",
            "deliveries received",
            "",
            d.received as f64,
            Better::Higher,
        );
        r.push("lost", "lost", "", d.lost as f64, Better::Lower);
        r.push(
            "duplicates",
            "duplicates",
            "",
            d.duplicates as f64,
            Better::Lower,
        );
        r.push(
            "misrouted",
            "misrouted",
            "",
            d.misrouted as f64,
            Better::Lower,
        );
        r.push(
            "incomplete_messages",
            "messages not delivered to all",
            "",
            d.incomplete_messages as f64,
            Better::Lower,
        );
        r.push(
            "deliveries_per_s",
            "deliveries",
            "/s",
            self.deliveries_per_s,
            Better::Higher,
        );
        r.push(
            "p50_ms",
            "latency p50",
            "ms",
            ms(self.latency.p50_us),
            Better::Lower,
        );
        r.push(
            "p90_ms",
            "latency p90",
            "ms",
            ms(self.latency.p90_us),
            Better::Lower,
        );
        r.push(
            "p99_ms",
            "latency p99",
            "ms",
            ms(self.latency.p99_us),
            Better::Lower,
        );
        r.push(
            "p999_ms",
            "latency p99.9",
            "ms",
            ms(self.latency.p999_us),
            Better::Lower,
        );
        r.push(
            "max_ms",
            "latency max",
            "ms",
            ms(self.latency.max_us),
            Better::Lower,
        );
        push_cpu(
            &mut r,
            &self.cpu,
            d.received,
            "server_us_per_delivery",
            "server CPU per delivery",
        );
        r.push(
            "closed_by_server",
            "clients closed by server",
            "",
            self.closed.values().sum::<u64>() as f64,
            Better::Lower,
        );
        r.push(
            "client_errors",
            "client errors",
            "",
            self.errors.values().sum::<u64>() as f64,
            Better::Lower,
        );
        for (error, n) in &self.errors {
            r.notes.push(format!("{n} × {error}"));
        }
        r.details = json!({ "outcome": self });
        r
    }
}

/// CPU figures, and server CPU per unit of work (`per_key`), for any scenario.
pub(crate) fn push_cpu(
    r: &mut Report,
    cpu: &CpuUse,
    units: u64,
    per_key: &'static str,
    per_label: &'static str,
) {
    r.push(
        "loadgen_cpu_s",
        "load generator CPU",
        "s",
        cpu.loadgen_s,
        Better::Lower,
    );
    r.push(
        "loadgen_cores",
        "load generator cores busy",
        "",
        cpu.loadgen_cores(),
        Better::Lower,
    );
    r.push(
        "server_cpu_s",
        "server CPU",
        "s",
        cpu.server_s,
        Better::Lower,
    );
    r.push(
        "server_cores",
        "server cores busy",
        "",
        cpu.server_cores(),
        Better::Lower,
    );
    let per_unit = cpu
        .server_s
        .filter(|_| units > 0)
        .map(|s| s * 1e6 / units as f64);
    r.push(per_key, per_label, "µs", per_unit, Better::Lower);
}

/// Runs one fan-out against `target`; users are named after `namespace`.
///
/// # Errors
///
/// A plan that does not fit, or clients that could not all connect and join.
pub async fn run(
    target: &Target,
    plan: &FanoutPlan,
    namespace: &str,
) -> anyhow::Result<FanoutOutcome> {
    let clients = plan.clients();
    if plan.shape.publishers as usize > clients {
        bail!(
            "--publishers {} is more than the {clients} clients",
            plan.shape.publishers
        );
    }
    let ledger_bytes =
        u64::from(plan.shape.clients) * u64::from(plan.rate) * plan.duration.as_secs().max(1)
            / 8
            / u64::from(plan.shape.rooms).max(1);
    if ledger_bytes > MAX_LEDGER_BYTES {
        bail!(
            "this run would need {} MiB to account for every delivery; shorten --duration or lower --rate",
            ledger_bytes >> 20
        );
    }
    crate::scenario::check_fd_budget(clients)?;
    let connector = target.connector(namespace);
    let bar = Bar::new(&format!("{} join", target.label), clients as u64);
    let fleet_plan = FleetPlan {
        clients,
        rooms: plan.shape.rooms,
        room_prefix: format!("lg-{namespace}-r"),
        publishers: plan.shape.publishers as usize,
        rate: f64::from(plan.rate),
        payload: plan.shape.payload as usize,
        limit_per_publisher: plan.limit_per_publisher(),
        setup_concurrency: target.setup_concurrency,
        setup_timeout: target.setup_timeout,
        lifetime: SETTLE + LEAD + plan.duration + GRACE + target.drain + Duration::from_secs(30),
    };
    let (fleet, setup) = Fleet::launch(&connector, fleet_plan, &bar).await?;
    bar.finish();
    if setup.ready < clients {
        fleet.finish().await;
        bail!(
            "{}: only {}/{clients} clients joined; failures {:?}; first: {}",
            target.label,
            setup.ready,
            setup.failures,
            setup.first_error.unwrap_or_default()
        );
    }
    tokio::time::sleep(SETTLE).await;
    let bar = Bar::new(
        &format!("{} send", target.label),
        plan.duration.as_millis() as u64,
    );
    let cpu = CpuMeter::start(target.server_pid);
    let window = fleet.publish_for(LEAD, plan.duration);
    fleet
        .wait_and_drain(window, GRACE, target.drain, &bar)
        .await;
    let cpu = cpu.stop();
    bar.finish();
    let end = fleet.finish().await;
    let secs = plan.duration.as_secs_f64();
    Ok(FanoutOutcome {
        plan: *plan,
        setup_s: setup.elapsed.as_secs_f64(),
        achieved_rate: end.delivery.messages_sent as f64 / secs,
        deliveries_per_s: end.delivery.received as f64 / secs,
        delivery: end.delivery,
        latency: end.latency,
        latency_by_second: end.latency_by_second,
        cpu,
        closed: end.closed,
        errors: end.errors,
    })
}
