//! `holdfast metrics …`

use crate::Res;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum MetricsCmd {}

pub async fn run(cmd: MetricsCmd) -> Res {
    match cmd {}
}
