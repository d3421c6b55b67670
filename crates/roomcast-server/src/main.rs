//! The `roomcast` binary: `roomcast serve` runs the server, `roomcast token` mints a token.

use anyhow::Context;
use clap::Parser;
use roomcast_server::DirectoryMode;
use roomcast_server::config::{Cli, Command, TokenArgs};
use tracing_subscriber::EnvFilter;

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
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => {
            let config = args.into_config()?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("ROOMCAST_LISTEN: cannot listen on {}", config.listen))?;
            roomcast_server::run(config, listener, shutdown_signal()).await?;
        }
        Command::Token(args) => println!("{}", mint(args).await?),
    }
    Ok(())
}

/// `roomcast token`: signs an access token and, unless the user directory is `token`, creates
/// the user in the store so the server accepts it.
async fn mint(args: Box<TokenArgs>) -> anyhow::Result<String> {
    let (_, issuer) = args.jwt.keys(None)?;
    let issuer =
        issuer.context("ROOMCAST_JWT_PRIVATE_KEY: required to sign RS256 or ES256 tokens")?;
    let username = args.username.clone().unwrap_or_else(|| args.sub.clone());
    if args.store.user_directory == DirectoryMode::Store {
        let store = roomcast_store::Store::connect(&args.store.database_url)
            .await
            .with_context(|| format!("DATABASE_URL: cannot open {}", args.store.database_url))?;
        store
            .ensure_user(&args.sub, &username)
            .await
            .with_context(|| format!("creating user {:?}", args.sub))?;
        store.close().await;
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
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
