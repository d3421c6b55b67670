//! # roomcast-loadgen
//!
//! Load scenarios for roomcast, over the wire protocol only, like any client: it mints its own
//! HS256 tokens, connects over loopback, joins rooms with native envelopes, publishes messages
//! that carry their own id and send time, and counts every delivery. It also ships a bare
//! reference server ([`reference`](mod@reference)) so that each figure can be read as a ratio
//! to a plain broadcast server measured in the same invocation (`--baseline-url`).
//!
//! It targets loopback only (127.0.0.0/8, `::1`, `localhost`); every run is bounded in size and
//! time and stops by itself.
//!
//! ## Layout
//!
//! - [`cli`]: subcommands and options, each with a default and a bound.
//! - [`scenario`]: `fanout` / `rooms`, `sweep`, `idle`, `connect`, `history`, and
//!   [`scenario::compare`], which runs one against the target and the baseline and prints both
//!   (`--rounds N`: N times, alternating which runs first, then the median ratios).
//! - [`fleet`]: a run's clients: set-up with bounded concurrency, the publishing window, drain,
//!   stop, accounting.
//! - [`client`]: one connection's task (reads and counts; a publisher also sends on schedule).
//! - [`committer`]: one `history` publisher's task (a closed loop of messages and acks).
//! - [`acks`]: exact ack accounting for `history` (each message once; seqs gap-free per room).
//! - [`readback`]: what the server persisted, read back through its HTTP API.
//! - [`target`]: loopback-only endpoints, source-address spreading, connect + join.
//! - [`wire`]: the envelopes written and read, the message id format, the clock.
//! - [`ledger`]: exact delivery accounting and latency (HdrHistogram).
//! - [`token`]: HS256 access tokens.
//! - [`procfs`]: CPU time and RSS from `/proc`, the file-descriptor limit.
//! - [`report`]: the table and the JSON line; the summary of several rounds.
//! - [`progress`]: progress bars, hidden when stdout is not a terminal.
//! - [`reference`](mod@reference): the bare reference server.
//!
//! `docs/PERFORMANCE.md` at the repository root has the method, the commands and the results.

pub mod acks;
pub mod cli;
pub mod client;
pub mod committer;
pub mod fleet;
pub mod ledger;
pub mod procfs;
pub mod progress;
pub mod readback;
pub mod reference;
pub mod report;
pub mod scenario;
pub mod target;
pub mod token;
pub mod wire;
pub mod ws;

use anyhow::bail;
use serde_json::json;

use cli::{Cli, Command};
use scenario::{compare, connect, fanout, history, idle, sweep};

/// Runs the command line's scenario and prints its report.
///
/// # Errors
///
/// A scenario that could not run (server unreachable, clients refused, limits too low).
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Raise RLIMIT_NOFILE before anything opens sockets.
    scenario::nofile_limit();
    match cli.command {
        Command::Reference(args) => reference::run_cli(args).await,
        Command::Fanout(args) => run_fanout("fanout", args).await,
        Command::Rooms(args) => run_fanout("rooms", args.into_fanout()).await,
        Command::Sweep(args) => {
            let plan = sweep::SweepPlan {
                shape: args.shape(),
                start_rate: args.start_rate,
                factor: args.factor,
                max_rate: args.max_rate,
                step_duration: args.step_duration,
                max_steps: args.max_steps,
                refine: args.refine,
                p99_limit: args.p99_limit,
                pause: args.target.pause,
            };
            let targets = args.target.targets();
            compare(
                "sweep",
                json!(plan),
                &targets,
                args.target.pause,
                args.target.rounds,
                async |t, ns| Ok(sweep::report(&sweep::run(t, &plan, &ns).await?)),
            )
            .await?;
            Ok(())
        }
        Command::Idle(args) => {
            if args.target.rounds > 1 {
                bail!(
                    "idle takes one round: it reads the growth of each server's RSS, which a \
                     second round on the same processes would measure against memory the first \
                     left behind; restart the servers and run it again instead"
                );
            }
            if let Some(early) = args.early
                && early >= args.hold
            {
                bail!(
                    "--early ({early:?}) must come before --hold ({:?})",
                    args.hold
                );
            }
            let plan = idle::IdlePlan {
                connections: args.connections,
                rooms: args.rooms,
                hold: args.hold,
                early: args.early,
                broadcast: args.broadcast,
                payload: args.payload,
            };
            let targets = args.target.targets();
            compare(
                "idle",
                json!(plan),
                &targets,
                args.target.pause,
                args.target.rounds,
                async |t, ns| idle::run(t, &plan, &ns).await,
            )
            .await?;
            Ok(())
        }
        Command::Connect(args) => {
            let plan = connect::ConnectPlan {
                connections: args.connections,
                concurrency: args.concurrency,
                rooms: args.rooms,
            };
            let targets = args.target.targets();
            compare(
                "connect",
                json!(plan),
                &targets,
                args.target.pause,
                args.target.rounds,
                async |t, ns| connect::run(t, &plan, &ns).await,
            )
            .await?;
            Ok(())
        }
        Command::History(args) => {
            if args.target.baseline_url.is_some() {
                bail!(
                    "history has no baseline: the reference server stores nothing and sends no \
                     ack; run history against roomcast alone and compare roomcast builds \
                     (drop --baseline-url)"
                );
            }
            let plan = history::HistoryPlan {
                publishers: args.publishers,
                rooms: args.rooms,
                window: args.window,
                duration: args.duration,
                payload: args.payload,
                max_messages: args.max_messages,
                verify_history: args.verify_history,
                verify_messages: args.verify_messages,
            };
            let targets = args.target.targets();
            compare(
                "history",
                json!(plan),
                &targets,
                args.target.pause,
                args.target.rounds,
                async |t, ns| Ok(history::run(t, &plan, &ns).await?.report()),
            )
            .await?;
            Ok(())
        }
    }
}

async fn run_fanout(name: &str, args: cli::FanoutArgs) -> anyhow::Result<()> {
    let plan = fanout::FanoutPlan {
        shape: args.shape(),
        rate: args.rate,
        duration: args.duration,
    };
    let targets = args.target.targets();
    compare(
        name,
        json!(plan),
        &targets,
        args.target.pause,
        args.target.rounds,
        async |t, ns| Ok(fanout::run(t, &plan, &ns).await?.report()),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// Refusals that come before any connection: the message names what to do instead.
    async fn refused(args: &[&str]) -> String {
        let mut argv = vec!["roomcast-loadgen"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).expect("parses");
        let err = run(cli).await.expect_err("refused before connecting");
        format!("{err:#}")
    }

    #[tokio::test]
    async fn idle_refuses_more_than_one_round_and_history_a_baseline() {
        let idle = refused(&["idle", "--rounds", "2"]).await;
        assert!(idle.contains("idle takes one round"), "{idle}");
        let history = refused(&["history", "--baseline-url", "ws://127.0.0.1:9/ws/auth"]).await;
        assert!(history.contains("history has no baseline"), "{history}");
    }
}
