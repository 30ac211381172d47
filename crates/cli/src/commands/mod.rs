//! Subcommands: each turns its flags into a pipeline's options, calls the pipeline in
//! `trialforge_core` (or the server in `trialforge_server`), and prints the result.

pub mod analyze;
pub mod augment;
pub mod bench;
pub mod chat;
pub mod data;
pub mod demo;
pub mod embed;
pub mod generate;
pub mod models;
pub mod predict;
pub mod serve;

use serde::Serialize;
use trialforge_core::Environment;

use crate::progress::Bars;

/// What every command gets from the global flags.
pub struct Ctx {
    pub json: bool,
    pub env: Environment,
    pub progress: Bars,
}

impl Ctx {
    /// Prints `value` as JSON with --json, else the human text.
    pub fn emit<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        use trialforge_core::Progress;
        self.progress.finish();
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            println!("{}", human());
        }
        Ok(())
    }
}
