//! `sweep`: fan-out steps at rising rates (×`factor`) until one is not clean (p99 above the
//! limit, or any loss, duplicate or closed client), then a few bisection steps between the
//! last clean and the first failing rate. Reports the last clean rate. Each step is a fresh
//! fan-out (its own connections and users), so one step's backlog never leaks into the next.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::cli::Shape;
use crate::report::{Better, Report};
use crate::scenario::fanout::{self, FanoutOutcome, FanoutPlan};
use crate::target::Target;

/// A sweep's settings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SweepPlan {
    /// Rooms, clients per room, publishers, payload.
    #[serde(flatten)]
    pub shape: Shape,
    /// First rate.
    pub start_rate: u32,
    /// Growth per clean step.
    pub factor: f64,
    /// Highest rate tried.
    pub max_rate: u32,
    /// Publishing time of each step.
    #[serde(serialize_with = "crate::scenario::as_secs")]
    pub step_duration: Duration,
    /// Most steps in all.
    pub max_steps: u32,
    /// Bisection steps after the first failure.
    pub refine: u32,
    /// Clean means p99 at most this.
    #[serde(serialize_with = "crate::scenario::as_secs")]
    pub p99_limit: Duration,
    /// Pause between steps.
    #[serde(serialize_with = "crate::scenario::as_secs")]
    pub pause: Duration,
}

/// One step, summarized.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Requested rate.
    pub rate: u32,
    /// Whether it was clean.
    pub clean: bool,
    /// Why not, when not.
    pub why: Option<String>,
    /// What it measured.
    pub outcome: FanoutOutcome,
}

/// Runs the sweep against `target`.
///
/// # Errors
///
/// A step whose clients could not all connect.
pub async fn run(target: &Target, plan: &SweepPlan, namespace: &str) -> anyhow::Result<Vec<Step>> {
    let mut steps: Vec<Step> = Vec::new();
    let mut clean: Option<u32> = None;
    let mut failed: Option<u32> = None;
    let mut rate = plan.start_rate.min(plan.max_rate);
    let step = async |rate: u32, steps: &mut Vec<Step>| -> anyhow::Result<bool> {
        if !steps.is_empty() {
            tokio::time::sleep(plan.pause).await;
        }
        let fanout_plan = FanoutPlan {
            shape: plan.shape,
            rate,
            duration: plan.step_duration,
        };
        let ns = format!("{namespace}s{}", steps.len());
        let outcome = fanout::run(target, &fanout_plan, &ns).await?;
        let why = outcome.why_not_clean(plan.p99_limit);
        eprintln!(
            "[{}] step {}: {rate} msg/s → {:.0} deliveries/s, p99 {:.1} ms: {}",
            target.label,
            steps.len() + 1,
            outcome.deliveries_per_s,
            outcome.latency.p99_us as f64 / 1000.0,
            why.as_deref().unwrap_or("clean")
        );
        steps.push(Step {
            rate,
            clean: why.is_none(),
            why,
            outcome,
        });
        Ok(steps.last().is_some_and(|s| s.clean))
    };
    // Raise.
    while (steps.len() as u32) < plan.max_steps {
        if step(rate, &mut steps).await? {
            clean = Some(rate);
            if rate >= plan.max_rate {
                break;
            }
            let next = (f64::from(rate) * plan.factor).ceil() as u32;
            rate = next.clamp(rate + 1, plan.max_rate);
        } else {
            failed = Some(rate);
            break;
        }
    }
    // Refine between the last clean and the first failing rate.
    if let Some(mut high) = failed {
        let mut low = clean.unwrap_or(0);
        for _ in 0..plan.refine {
            if steps.len() as u32 >= plan.max_steps {
                break;
            }
            let mid = low + (high - low) / 2;
            if mid <= low || mid >= high {
                break;
            }
            if step(mid, &mut steps).await? {
                low = mid;
            } else {
                high = mid;
            }
        }
    }
    Ok(steps)
}

/// The report of a sweep: the last clean step's figures, and every step as a note.
pub fn report(steps: &[Step]) -> Report {
    let best = steps.iter().filter(|s| s.clean).max_by_key(|s| s.rate);
    let first_fail = steps.iter().filter(|s| !s.clean).map(|s| s.rate).min();
    let mut r = Report::default();
    r.push(
        "clean_rate",
        "last clean rate",
        "msg/s",
        best.map(|s| f64::from(s.rate)),
        Better::Higher,
    );
    r.push(
        "clean_deliveries_per_s",
        "deliveries at that rate",
        "/s",
        best.map(|s| s.outcome.deliveries_per_s),
        Better::Higher,
    );
    let ms = |us: u64| us as f64 / 1000.0;
    r.push(
        "clean_p50_ms",
        "p50 at that rate",
        "ms",
        best.map(|s| ms(s.outcome.latency.p50_us)),
        Better::Lower,
    );
    r.push(
        "clean_p99_ms",
        "p99 at that rate",
        "ms",
        best.map(|s| ms(s.outcome.latency.p99_us)),
        Better::Lower,
    );
    r.push(
        "clean_server_cores",
        "server cores busy at that rate",
        "",
        best.and_then(|s| s.outcome.cpu.server_cores()),
        Better::Lower,
    );
    r.push(
        "clean_loadgen_cores",
        "load generator cores at that rate",
        "",
        best.map(|s| s.outcome.cpu.loadgen_cores()),
        Better::Lower,
    );
    r.push(
        "clean_server_us_per_delivery",
        "server CPU per delivery",
        "µs",
        best.and_then(|s| {
            let received = s.outcome.delivery.received;
            s.outcome
                .cpu
                .server_s
                .filter(|_| received > 0)
                .map(|cpu| cpu * 1e6 / received as f64)
        }),
        Better::Lower,
    );
    r.push(
        "first_failing_rate",
        "first failing rate",
        "msg/s",
        first_fail.map(f64::from),
        Better::Higher,
    );
    r.push("steps", "steps", "", steps.len() as f64, Better::Neither);
    for s in steps {
        r.notes.push(format!(
            "{:>7} msg/s: {:>10.0} deliveries/s  p99 {:>8.1} ms  lost {:>8}  server cores {}  {}",
            s.rate,
            s.outcome.deliveries_per_s,
            ms(s.outcome.latency.p99_us),
            s.outcome.delivery.lost,
            s.outcome
                .cpu
                .server_cores()
                .map_or("-".to_owned(), |c| format!("{c:.2}")),
            s.why.as_deref().unwrap_or("clean"),
        ));
    }
    if let (Some(best), None) = (best, first_fail) {
        // Nothing failed: the sweep ran out of steps (or reached --max-rate), so the clean
        // rate is a floor, and a ratio against another target's measured rate is capped.
        r.notes.push(format!(
            "no step failed: the clean rate is at least {} msg/s, not measured \
             (raise --max-steps or --max-rate)",
            best.rate
        ));
    }
    r.details = json!({ "steps": steps });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: u32, clean: bool) -> Step {
        let plan = FanoutPlan {
            shape: Shape {
                rooms: 1,
                clients: 10,
                publishers: 1,
                payload: 64,
            },
            rate,
            duration: Duration::from_secs(1),
        };
        Step {
            rate,
            clean,
            why: (!clean).then(|| "p99 too high".to_owned()),
            outcome: FanoutOutcome {
                plan,
                setup_s: 0.0,
                delivery: Default::default(),
                latency: Default::default(),
                latency_by_second: Vec::new(),
                achieved_rate: f64::from(rate),
                deliveries_per_s: f64::from(rate) * 10.0,
                cpu: Default::default(),
                closed: Default::default(),
                errors: Default::default(),
            },
        }
    }

    fn says_not_measured(report: &Report) -> bool {
        report
            .notes
            .iter()
            .any(|note| note.starts_with("no step failed"))
    }

    #[test]
    fn a_sweep_that_never_failed_says_its_clean_rate_is_only_a_floor() {
        let capped = report(&[step(600, true), step(720, true)]);
        assert!(says_not_measured(&capped), "{:?}", capped.notes);
        assert!(
            capped
                .notes
                .iter()
                .any(|note| note.contains("at least 720 msg/s")),
            "{:?}",
            capped.notes
        );

        let measured = report(&[step(600, true), step(720, false), step(660, true)]);
        assert!(!says_not_measured(&measured), "{:?}", measured.notes);
    }
}
