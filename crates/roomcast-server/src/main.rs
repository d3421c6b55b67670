//! The `roomcast` binary: `roomcast serve` runs the server, `roomcast token` mints a token.

mod fatal;

use std::process::ExitCode;

use clap::Parser;
use fatal::Fatal;
use roomcast_server::config::{Cli, Command, TokenArgs};
use roomcast_server::{DirectoryMode, Server, logging};

/// jemalloc, not glibc's malloc: with glibc each runtime thread allocates from its own arena and
/// the connections' small allocations, made on one thread and freed on another, leave memory
/// resident. Idle connections measured 2,637 B each with glibc, 2,202-2,264 B with jemalloc's
/// defaults, 2,048-2,060 B with one arena and smaller thread caches, and 1,982-1,997 B once a
/// background thread also returns freed pages (all set in `.cargo/config.toml`; 10k
/// connections, `docs/PERFORMANCE.md`). Only the binary chooses: the library leaves the
/// allocator to the application.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return fatal::command_line(&err),
    };
    // Only fails when a subscriber is installed already, which nothing here does.
    let _ = logging::init(cli.log_format);
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => fatal.report(),
    }
}

async fn run(command: Command) -> Result<(), Fatal> {
    match command {
        Command::Serve(args) => {
            let config = args.into_config().map_err(|err| Fatal::config(&err))?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|err| Fatal::listen(config.listen, &err))?;
            let url = config.store.url.clone();
            let server = Server::start(config)
                .await
                .map_err(|err| Fatal::store(&url, &err))?;
            server
                .run(listener, shutdown_signal())
                .await
                .map_err(|err| Fatal::runtime(format!("serving failed: {err}")))?;
        }
        Command::Token(args) => println!("{}", mint(args).await?),
    }
    Ok(())
}

/// `roomcast token`: signs an access token and, unless the user directory is `token`, creates
/// the user in the store so the server accepts it.
async fn mint(args: Box<TokenArgs>) -> Result<String, Fatal> {
    let (_, issuer) = args.jwt.keys(None).map_err(|err| Fatal::config(&err))?;
    let issuer = issuer.ok_or_else(|| {
        Fatal::usage(
            "ROOMCAST_JWT_PRIVATE_KEY: required to sign RS256 or ES256 tokens; set it to the \
             PEM file of the private key",
        )
    })?;
    let username = args.username.clone().unwrap_or_else(|| args.sub.clone());
    if args.store.user_directory == DirectoryMode::Store {
        let url = &args.store.database_url;
        let store = roomcast_store::Store::connect(url)
            .await
            .map_err(|err| Fatal::store(url, &err))?;
        let created = store.ensure_user(&args.sub, &username).await;
        store.close().await;
        created.map_err(|err| Fatal::runtime(format!("creating user {:?}: {err}", args.sub)))?;
    }
    let ttl = args.ttl;
    let mut extra = serde_json::Map::new();
    if let Some(role) = args.role {
        extra.insert("role".to_owned(), role.into());
    }
    Ok(issuer.access_with(&args.sub, &username, ttl, extra))
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    let signal = tokio::select! {
        () = ctrl_c => "SIGINT",
        () = terminate => "SIGTERM",
    };
    tracing::info!(signal, "shutting down: draining first");
}
