//! `tertulia`: the command line. `tertulia serve` (the default) runs the server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tertulia::cli::{BackupCommand, EraseCommand, KeyCommand, TenantCommand, WebhookCommand};
use tertulia::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "tertulia",
    version,
    about = "Real-time chat runtime for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Manage tenants on a running server (admin API).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage a tenant's keys on a running server (admin API).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage a tenant's webhook endpoints on a running server (admin API).
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Erase what a tenant holds about a person, on a running server (admin API).
    Erase(EraseCommand),
    /// Save a consistent backup of a running server's database (admin API).
    Backup(BackupCommand),
    /// Restore a backup into a new data directory (no server may use it).
    Restore(RestoreArgs),
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// The backup, as `tertulia backup --to` wrote it.
    #[arg(long)]
    from: PathBuf,
    /// A new (or empty) directory; start the server on it afterwards.
    #[arg(long)]
    data_dir: PathBuf,
    /// The server's settings file, for its storage namespace and database.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl RestoreArgs {
    async fn run(self) -> Result<serde_json::Value, String> {
        let config = Config::load(self.config.as_deref()).map_err(|error| error.to_string())?;
        tertulia_actors::runtime::restore(&self.from, &self.data_dir, &config.storage)
            .await
            .map_err(|error| error.to_string())?;
        Ok(serde_json::json!({
            "restored": self.from.display().to_string(),
            "data_dir": self.data_dir.display().to_string(),
        }))
    }
}

#[derive(clap::Args, Clone, Default)]
struct ServeArgs {
    /// A TOML file with settings (see config/default.toml for every key).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:2000.
    #[arg(long)]
    bind: Option<String>,
    /// Directory for the embedded database.
    #[arg(long)]
    data_dir: Option<String>,
}

/// Third-party crates whose debug and trace lines carry payloads.
const PAYLOAD_LOGGERS: [&str; 7] = [
    "tungstenite=info",
    "tokio_tungstenite=info",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
    "reqwest=info",
    "async_openai=info",
];

/// Log lines on stderr, filtered by `RUST_LOG`, as text or JSON.
fn init_logging(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,surrealdb=warn,surrealkv=warn,surrealdb_core=warn")
    });
    // These print whole frames, headers or bodies at debug and trace (a
    // visitor's message, an API key); RUST_LOG may not raise them.
    for quiet in PAYLOAD_LOGGERS {
        filter = filter.add_directive(quiet.parse().expect("a valid directive"));
    }
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logger.init(),
        LogFormat::Json => logger.json().with_current_span(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs as its configuration says (read in `serve`); the
    // admin commands as text.
    if !matches!(cli.command, None | Some(Command::Serve(_))) {
        init_logging(LogFormat::Text);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let admin = match cli.command {
        Some(Command::Serve(args)) => return runtime.block_on(serve(args)),
        None => return runtime.block_on(serve(cli.serve)),
        Some(Command::Tenant(command)) => runtime.block_on(command.run()),
        Some(Command::Key(command)) => runtime.block_on(command.run()),
        Some(Command::Webhook(command)) => runtime.block_on(command.run()),
        Some(Command::Erase(command)) => runtime.block_on(command.run()),
        Some(Command::Backup(command)) => runtime.block_on(command.run()),
        Some(Command::Restore(command)) => runtime.block_on(command.run()),
    };
    match admin {
        Ok(answer) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&answer).expect("JSON prints")
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tertulia: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let (mut config, ignored) = match Config::load_noting(args.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("tertulia: bad configuration: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log.format);
    for variable in ignored {
        tracing::warn!(%variable, "ignoring an environment variable that names no setting");
    }
    if let Some(bind) = args.bind {
        config.server.bind = bind;
    }
    if let Some(data_dir) = args.data_dir {
        config.storage.data_dir = data_dir;
    }
    let dev_key_in_use = config.tenants.values().any(|tenant| {
        tenant
            .api_keys
            .iter()
            .any(|key| key == tertulia::api::pages::DEVELOPMENT_KEY)
    });
    let server = match tertulia::start(config.clone(), Default::default()).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("tertulia: {error}");
            return ExitCode::FAILURE;
        }
    };
    let scheme = if server.serves_tls() { "https" } else { "http" };
    println!("tertulia is listening on {scheme}://{}", server.addr);
    println!("  storage: {}", server.runtime.durability());
    for (id, tenant) in &config.tenants {
        println!(
            "  tenant `{id}` ({}): agent `{}`",
            tenant.name, tenant.agent
        );
    }
    if dev_key_in_use {
        use tertulia::api::pages::{DEVELOPMENT_KEY, DEVELOPMENT_STAFF_KEY};
        // Only the shipped development tenant, alone, gets a staff key.
        if config.tenants.len() == 1 && config.tenants.contains_key("default") {
            server.runtime.allow_development_staff_key(
                &tertulia_actors::model::TenantId("default".into()),
                DEVELOPMENT_STAFF_KEY,
                "Developer",
            );
            println!(
                "  development staff key: {DEVELOPMENT_STAFF_KEY} (for /console; gone once tenants are configured)"
            );
        }
        println!(
            "  development API key: {DEVELOPMENT_KEY} (set your own in a config file before going live)"
        );
    }
    wait_for_signal(&server).await;
    tracing::info!("shutting down: closing sockets, storing answers in progress, draining writes");
    server.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Waits for SIGINT or SIGTERM; a SIGHUP meanwhile reloads the TLS certificate.
async fn wait_for_signal(server: &tertulia::RunningServer) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        let mut hangup = signal(SignalKind::hangup()).expect("SIGHUP handler installs");
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return,
                _ = terminate.recv() => return,
                _ = hangup.recv() => match server.reload_tls() {
                    Ok(true) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Ok(false) => tracing::info!("SIGHUP: no TLS certificate to reload"),
                    Err(error) => tracing::error!(%error, "SIGHUP: TLS certificate not reloaded; the old one stays"),
                },
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = server;
        let _ = ctrl_c.await;
    }
}
