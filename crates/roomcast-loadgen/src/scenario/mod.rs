//! The scenarios. Each runs against one [`Target`] and returns figures; [`compare`] runs one
//! against the target and the baseline, in the same invocation, and prints both with their
//! ratios, in as many rounds as asked (alternating which goes first) with a summary after.
//!
//! - [`fanout`]: rooms × clients, publishers at a total rate (also `rooms`).
//! - [`sweep`]: fan-out steps at rising rates until p99 or loss fails.
//! - [`idle`]: connections held; server RSS per connection.
//! - [`connect`]: set-ups per second (TCP + upgrade + JWT + join).
//! - [`history`]: persisted messages per second (acks), exact per-room seq accounting.

pub mod connect;
pub mod fanout;
pub mod history;
pub mod idle;
pub mod sweep;

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use serde_json::Value;

use crate::report::{self, Report, Round, Run};
use crate::target::Target;

/// File descriptors kept free for everything that is not a client socket.
const FD_MARGIN: usize = 64;

/// Serializes a duration as seconds (for the JSON line).
pub(crate) fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// An optional duration as seconds (`null` when absent).
pub(crate) fn as_secs_opt<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// This process's file-descriptor limit, raised once to the hard limit.
pub fn nofile_limit() -> u64 {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| match crate::procfs::raise_nofile_limit() {
        Ok(limit) => limit,
        Err(err) => {
            eprintln!("note: cannot raise RLIMIT_NOFILE: {err}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    })
}

/// Fails early when `connections` sockets would not fit under the descriptor limit.
///
/// # Errors
///
/// The limit is too low, with what to do about it.
pub fn check_fd_budget(connections: usize) -> anyhow::Result<()> {
    let limit = nofile_limit();
    if (connections + FD_MARGIN) as u64 > limit {
        bail!(
            "{connections} connections need more file descriptors than this process may open \
             ({limit}, already raised to the hard limit): raise the hard limit (ulimit -Hn, \
             or prlimit as root) for both this process and the server"
        );
    }
    Ok(())
}

/// A short id for this invocation, so user and room names of runs never collide.
pub fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
    format!("{:06x}", nanos & 0xff_ffff)
}

/// Runs `scenario` against every target in turn (pausing `pause` between runs), `rounds`
/// times, printing each round's table and JSON line to stdout as it ends; after more than one
/// round, a summary of every figure across them ([`report::summarize`]).
///
/// Round `k` (from 1) runs the targets in order when `k` is odd and in reverse when it is
/// even (see [`round_order`]), so with a baseline neither always runs first; each round's runs
/// are reported in the targets' order.
///
/// # Errors
///
/// The first run that failed.
pub async fn compare(
    name: &str,
    params: Value,
    targets: &[Target],
    pause: Duration,
    rounds: u32,
    mut scenario: impl AsyncFnMut(&Target, String) -> anyhow::Result<Report>,
) -> anyhow::Result<Vec<Round>> {
    let id = run_id();
    let mut done: Vec<Round> = Vec::with_capacity(rounds as usize);
    for round in 1..=rounds {
        let order = round_order(round, targets.len());
        let mut runs: Vec<Option<Run>> = vec![None; targets.len()];
        for (n, &i) in order.iter().enumerate() {
            if round > 1 || n > 0 {
                tokio::time::sleep(pause).await;
            }
            let target = &targets[i];
            // Every run gets names of its own: a round's users and rooms are new.
            let namespace = format!("{id}{}", (round as usize - 1) * targets.len() + i);
            let report = scenario(target, namespace).await?;
            runs[i] = Some(Run {
                label: target.label.clone(),
                url: target.endpoint.url().to_owned(),
                report,
            });
        }
        let runs: Vec<Run> = runs.into_iter().flatten().collect();
        let first = order
            .first()
            .map_or_else(String::new, |&i| targets[i].label.clone());
        if rounds > 1 {
            println!("round {round} of {rounds} (first: {first})");
        }
        print!("{}", report::table(name, &params, &runs));
        let mut line = report::json_value(name, &params, &runs);
        if rounds > 1 {
            line["round"] = round.into();
            line["first"] = first.clone().into();
        }
        println!("{line}");
        done.push(Round { first, runs });
    }
    if rounds > 1 {
        print!("{}", report::summary_table(name, &done));
        println!("{}", report::summary_json_line(name, &params, &done));
    }
    Ok(done)
}

/// The order in which round `round` (from 1) runs `targets` targets: as given in odd rounds,
/// reversed in even ones.
///
/// ```
/// use roomcast_loadgen::scenario::round_order;
/// assert_eq!(round_order(1, 2), [0, 1]);
/// assert_eq!(round_order(2, 2), [1, 0]);
/// assert_eq!(round_order(3, 1), [0]);
/// ```
pub fn round_order(round: u32, targets: usize) -> Vec<usize> {
    if round % 2 == 1 {
        (0..targets).collect()
    } else {
        (0..targets).rev().collect()
    }
}
