//! `holdfast holds …`

use crate::Res;
use clap::Subcommand;
use holdfast_adapters::config::Config;

#[derive(Subcommand)]
pub enum HoldsCmd {
    /// Repair live holds written before metadata was required (policy hash, tables, snapshot).
    BackfillMetadata {
        /// Report what would change without writing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(cmd: HoldsCmd) -> Res {
    match cmd {
        HoldsCmd::BackfillMetadata { dry_run } => {
            let cfg = Config::from_env()?;
            let pool = crate::local::pool(&cfg).await?;
            let c = pool.get().await?;
            let r = holds_api::backfill::backfill_hold_metadata(&c, dry_run).await?;
            println!(
                "{}candidates: {}, repaired: {}, unrepairable (no claims or no policy): {}",
                if dry_run { "[dry run] " } else { "" },
                r.candidates,
                r.repaired,
                r.unrepairable
            );
            Ok(())
        }
    }
}
