//! `holdfast`: operator and developer commands.

mod bench_seed;
mod drop_bench;
mod email_cmd;
mod flags_cmd;
mod gateway;
mod holds_bench;
mod holds_cmd;
mod init_bench;
mod local;
mod maintenance_cmd;
mod metrics_cmd;
mod rush;
// Also compiled into cli/tests/runbook_read_only.rs, which runs the read-only blocks.
#[allow(dead_code)]
mod runbook_commands;

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
    /// Apply pending database migrations (idempotent), as the schema owner
    /// (HOLDFAST_OWNER_DATABASE_URL).
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
    /// Retention: run the hourly maintenance by hand, its status, the growth benchmark.
    Maintenance {
        #[command(subcommand)]
        cmd: maintenance_cmd::MaintenanceCmd,
    },
}

type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Res {
    holdfast_adapters::telemetry::init_pretty_logs();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Migrate => {
            let n = local::migrate().await?;
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
        Cmd::Maintenance { cmd } => maintenance_cmd::run(cmd).await,
    }
}

#[cfg(test)]
mod runbook_command_tests {
    use super::Cli;
    use crate::runbook_commands::{quoted_commands, words, DOCUMENTS};
    use clap::error::ErrorKind;
    use clap::Parser;

    fn root() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_path_buf()
    }

    /// `None` when the CLI accepts the command's shape; otherwise why not.
    fn problem(text: &str) -> Option<String> {
        let (args, has_placeholder) = words(text);
        let argv = std::iter::once("holdfast".to_owned()).chain(args);
        match Cli::try_parse_from(argv) {
            Ok(_) => None,
            Err(e) => match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => None,
                // A quoted command may leave out what the reader fills in.
                ErrorKind::MissingRequiredArgument | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => None,
                ErrorKind::InvalidValue | ErrorKind::ValueValidation if has_placeholder => None,
                _ => Some(e.to_string().lines().next().unwrap_or_default().to_owned()),
            },
        }
    }

    #[test]
    fn every_documented_command_exists_in_the_cli() {
        let mut problems = Vec::new();
        let mut found = 0;
        for doc in DOCUMENTS {
            let text = std::fs::read_to_string(root().join(doc)).unwrap_or_else(|e| panic!("{doc}: {e}"));
            for q in quoted_commands(&text) {
                found += 1;
                if let Some(p) = problem(&q.text) {
                    problems.push(format!("{doc}:{}: `holdfast {}`: {p}", q.line, q.text));
                }
            }
        }
        assert!(found >= 10, "only {found} commands found: the extractor lost track of the documents");
        assert!(problems.is_empty(), "runbook commands the CLI does not have:\n{}", problems.join("\n"));
    }

    #[test]
    fn a_missing_command_or_flag_is_caught() {
        // The command an old runbook named (it is `holds backfill-metadata`).
        assert!(problem("holds backfill-hold-metadata --dry-run").is_some());
        assert!(problem("email dlq inspect --dlq-url $EMAIL_DLQ_URL --maximum 20").is_some());
        assert!(problem("email dlq redrive --mode teleport").is_some(), "a wrong literal value is a finding");
        assert_eq!(problem("email dlq inspect --dlq-url $EMAIL_DLQ_URL --max 20"), None);
        assert_eq!(problem("flags audit [--flag F] [--environment E] [--limit N] [--json]"), None);
    }
}
