//! What `/proc` says about this process and the server's: CPU time and resident memory, and
//! the file-descriptor limit this process raises for itself.
//!
//! Both processes share the machine's two cores, so every report puts the load generator's
//! CPU time next to the server's.

use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`): 100 on every Linux architecture
/// that matters here; reading `sysconf(_SC_CLK_TCK)` would need `unsafe` for a constant.
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds of `pid` (this process when `None`).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / USER_HZ)
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")": state is field 3, utime field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of `pid` (this process when `None`), bytes, from `VmRSS`.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let path = pid.map_or_else(
        || "/proc/self/status".to_owned(),
        |p| format!("/proc/{p}/status"),
    );
    let status = std::fs::read_to_string(path).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit; returns the soft limit now
/// in force.
///
/// # Errors
///
/// The system refused to tell or to change it.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// CPU time used over a stretch of wall time, by both processes.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct CpuUse {
    /// Wall-clock seconds measured.
    pub wall_s: f64,
    /// The load generator's CPU seconds.
    pub loadgen_s: f64,
    /// The server's CPU seconds, when its pid is known.
    pub server_s: Option<f64>,
}

impl CpuUse {
    /// The load generator's average cores busy.
    pub fn loadgen_cores(&self) -> f64 {
        ratio(self.loadgen_s, self.wall_s)
    }

    /// The server's average cores busy.
    pub fn server_cores(&self) -> Option<f64> {
        self.server_s.map(|s| ratio(s, self.wall_s))
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Starts measuring CPU use of this process and (optionally) the server.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    started: Instant,
    loadgen: f64,
    server: Option<f64>,
    server_pid: Option<u32>,
}

impl CpuMeter {
    /// Reads both counters now.
    pub fn start(server_pid: Option<u32>) -> Self {
        Self {
            started: Instant::now(),
            loadgen: cpu_seconds(None).unwrap_or(0.0),
            server: server_pid.and_then(|pid| cpu_seconds(Some(pid))),
            server_pid,
        }
    }

    /// CPU used since [`CpuMeter::start`].
    pub fn stop(&self) -> CpuUse {
        let server_s = match (
            self.server,
            self.server_pid.and_then(|p| cpu_seconds(Some(p))),
        ) {
            (Some(before), Some(after)) => Some(after - before),
            _ => None,
        };
        CpuUse {
            wall_s: self.started.elapsed().as_secs_f64(),
            loadgen_s: cpu_seconds(None).unwrap_or(0.0) - self.loadgen,
            server_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line =
            "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 40 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_cpu_ticks(line), Some(290));
    }

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t 10 kB\nVmRSS:\t    2048 kB\nThreads: 1\n";
        assert_eq!(parse_vm_rss(status), Some(2 * 1024 * 1024));
    }

    #[test]
    fn this_process_can_be_read() {
        assert!(cpu_seconds(None).is_some());
        assert!(rss_bytes(None).unwrap() > 0);
    }
}
