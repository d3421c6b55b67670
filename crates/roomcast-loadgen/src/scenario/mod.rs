//! The scenarios. Each runs against one [`Target`] and returns figures; [`compare`] runs one
//! against the target and then the baseline, in the same invocation, and prints both with
//! their ratios.
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

use crate::report::{self, Report, Run};
use crate::target::Target;

/// File descriptors kept free for everything that is not a client socket.
const FD_MARGIN: usize = 64;

/// Serializes a duration as seconds (for the JSON line).
pub(crate) fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
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

/// Runs `scenario` against every target in turn (pausing `pause` between them), then prints
/// the table and the JSON line to stdout.
///
/// # Errors
///
/// The first target whose run failed.
pub async fn compare(
    name: &str,
    params: Value,
    targets: &[Target],
    pause: Duration,
    mut scenario: impl AsyncFnMut(&Target, String) -> anyhow::Result<Report>,
) -> anyhow::Result<Vec<Run>> {
    let id = run_id();
    let mut runs = Vec::with_capacity(targets.len());
    for (i, target) in targets.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        let report = scenario(target, format!("{id}{i}")).await?;
        runs.push(Run {
            label: target.label.clone(),
            url: target.endpoint.url().to_owned(),
            report,
        });
    }
    print!("{}", report::table(name, &params, &runs));
    println!("{}", report::json_line(name, &params, &runs));
    Ok(runs)
}
