//! `augment`: the utility experiments alone.

use std::path::PathBuf;

use clap::Args;
use trialforge_core::augment::AugmentRequest;

use super::Ctx;
use crate::args::{AugmentArgs, EncoderArgs, SyntheticSetArgs};

#[derive(Args)]
pub struct AugmentCommandArgs {
    /// Real trials with train / valid / test splits (a corpus made by `data import` of TOP files).
    #[arg(long)]
    pub real: PathBuf,
    /// Synthetic trials: our JSONL (its provenance is checked for test trials) or a TOP CSV.
    #[arg(long)]
    pub synthetic: PathBuf,
    /// Output folder (augment.json).
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub settings: AugmentArgs,
    #[command(flatten)]
    pub set: SyntheticSetArgs,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

pub fn augment(ctx: &Ctx, a: AugmentCommandArgs) -> anyhow::Result<()> {
    let req = AugmentRequest {
        real: a.real,
        synthetic: a.synthetic,
        out: a.out,
        settings: a.settings.settings(),
        set: a.set.options(),
        encoder: a.encoder.encoder,
    };
    let (report, path) = trialforge_core::augment::augment(&ctx.env, &req, &ctx.progress)?;
    ctx.emit(&report, || {
        format!(
            "{}\nwrote {}",
            crate::format::augment(&report),
            path.display()
        )
    })
}
