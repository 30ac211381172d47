//! Subcommand implementations.

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

use std::path::PathBuf;

use serde::Serialize;

/// What every command gets from the global flags.
pub struct Ctx {
    pub json: bool,
    pub models_dir: PathBuf,
}

impl Ctx {
    /// Prints `value` as JSON with --json, else the human text.
    pub fn emit<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            println!("{}", human());
        }
        Ok(())
    }
}
