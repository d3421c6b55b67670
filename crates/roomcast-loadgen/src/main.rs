//! The `roomcast-loadgen` binary: parse the command line, run the scenario (see the library).

use std::process::ExitCode;

use clap::Parser;
use roomcast_loadgen::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match roomcast_loadgen::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("roomcast-loadgen: {err:#}");
            ExitCode::FAILURE
        }
    }
}
