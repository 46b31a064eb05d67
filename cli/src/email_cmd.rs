//! `holdfast email …`

use crate::Res;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum EmailCmd {}

pub async fn run(cmd: EmailCmd) -> Res {
    match cmd {}
}
