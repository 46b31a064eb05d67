//! `holdfast`: operator and developer commands.

mod email_cmd;
mod flags_cmd;
mod gateway;
mod holds_bench;
mod holds_cmd;
mod init_bench;
mod local;
mod metrics_cmd;
mod rush;

use clap::{Parser, Subcommand};
use holdfast_adapters::config::Config;

#[derive(Parser)]
#[command(name = "holdfast", about = "holdfast operator and developer commands")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Apply pending database migrations (idempotent).
    Migrate,
    /// Create or update the demo restaurant and its booking policy.
    SeedDemo,
    /// Run the whole system locally against PostgreSQL and the emulator.
    Local {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Measure a Lambda binary's init time under a loopback Runtime API.
    InitBench {
        binary: std::path::PathBuf,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Holds tooling: metadata backfill, synthetic rush, benchmarks.
    Holds {
        #[command(subcommand)]
        cmd: holds_cmd::HoldsCmd,
    },
    /// Feature-flag tooling: registry doc, audit trail, effective matrix, benchmarks.
    Flags {
        #[command(subcommand)]
        cmd: flags_cmd::FlagsCmd,
    },
    /// Email tooling: DLQ inspect/redrive, benchmarks.
    Email {
        #[command(subcommand)]
        cmd: email_cmd::EmailCmd,
    },
    /// Metrics tooling: alert backtest, benchmarks.
    Metrics {
        #[command(subcommand)]
        cmd: metrics_cmd::MetricsCmd,
    },
}

type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Res {
    holdfast_adapters::telemetry::init_pretty_logs();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Migrate => {
            let cfg = Config::from_env()?;
            let pool = local::pool(&cfg).await?;
            let n = holdfast_adapters::db::migrate(&pool).await?;
            println!("migrations applied: {n} (known: {})", holdfast_adapters::db::known_migrations().join(", "));
            Ok(())
        }
        Cmd::SeedDemo => {
            let cfg = Config::from_env()?;
            let pool = local::pool(&cfg).await?;
            local::seed_demo(&pool).await?;
            println!("demo restaurant {} seeded", local::DEMO_RESTAURANT);
            Ok(())
        }
        Cmd::Local { listen } => local::run(listen).await,
        Cmd::InitBench { binary, runs } => init_bench::run(init_bench::InitArgs { binary, runs }).await,
        Cmd::Holds { cmd } => holds_cmd::run(cmd).await,
        Cmd::Flags { cmd } => flags_cmd::run(cmd).await,
        Cmd::Email { cmd } => email_cmd::run(cmd).await,
        Cmd::Metrics { cmd } => metrics_cmd::run(cmd).await,
    }
}
