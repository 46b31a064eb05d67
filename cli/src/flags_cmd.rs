//! `holdfast flags …`

use crate::Res;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum FlagsCmd {
    /// Regenerate docs/feature-flags/registry.md from the registry.
    Doc {
        #[arg(long, default_value = "docs/feature-flags/registry.md")]
        out: std::path::PathBuf,
    },
}

pub async fn run(cmd: FlagsCmd) -> Res {
    match cmd {
        FlagsCmd::Doc { out } => {
            std::fs::write(&out, holdfast_shared::flags::render_registry_markdown())?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}
