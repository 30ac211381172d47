//! `analyze`: a synthetic set judged against real trials, as one HTML page, PNG figures and JSON.

use std::path::PathBuf;

use clap::Args;
use trialforge_core::analyze::AnalyzeRequest;

use super::Ctx;
use crate::args::{AugmentArgs, EncoderArgs, SyntheticSetArgs};

#[derive(Args)]
pub struct AnalyzeArgs {
    /// Real trials (any input `data import` reads); a test split, if tagged, is the held-out set.
    #[arg(long)]
    pub real: PathBuf,
    /// Synthetic trials: our JSONL, a corpus, or a CSV in the TOP schema (from any tool).
    #[arg(long)]
    pub synthetic: PathBuf,
    /// Output folder: report.html, figures/*.png, analysis.json.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Random pairs within a set.
    #[arg(long, default_value_t = 10_000)]
    pub within_pairs: usize,
    /// Random pairs across the sets.
    #[arg(long, default_value_t = 1_000)]
    pub across_pairs: usize,
    /// Cosine to a real trial above which a synthetic trial counts as a near copy.
    #[arg(long, default_value_t = 0.97)]
    pub near_copy_cosine: f32,
    /// t-SNE perplexity (lowered automatically for small sets).
    #[arg(long, default_value_t = 30.0)]
    pub perplexity: f32,
    /// Real trials drawn into the t-SNE map at most (a seeded sample; all synthetic ones are drawn).
    #[arg(long, default_value_t = 2000)]
    pub tsne_max_real: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also run the utility experiments (`augment`) and put them in the report.
    #[arg(long)]
    pub augment: bool,
    /// Accepted trials and rejected attempts shown in full in the report's gallery (each).
    #[arg(long, default_value_t = 3)]
    pub gallery: usize,
    /// ICD-10 descriptions for the realism rules [default: the bundled file].
    #[arg(long)]
    pub icd: Option<PathBuf>,
    #[command(flatten)]
    pub settings: AugmentArgs,
    #[command(flatten)]
    pub set: SyntheticSetArgs,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

impl AnalyzeArgs {
    pub fn request(&self) -> AnalyzeRequest {
        AnalyzeRequest {
            real: self.real.clone(),
            synthetic: self.synthetic.clone(),
            out: self.out.clone(),
            within_pairs: self.within_pairs,
            across_pairs: self.across_pairs,
            near_copy_cosine: self.near_copy_cosine,
            perplexity: self.perplexity,
            tsne_max_real: self.tsne_max_real,
            seed: self.seed,
            augment: self.augment,
            gallery: self.gallery,
            icd: self.icd.clone(),
            settings: self.settings.settings(),
            set: self.set.options(),
            encoder: self.encoder.encoder.clone(),
        }
    }
}

pub fn analyze(ctx: &Ctx, a: AnalyzeArgs) -> anyhow::Result<()> {
    let outcome = trialforge_core::analyze::analyze(&ctx.env, &a.request(), &ctx.progress)?;
    ctx.emit(&outcome.analysis, || crate::format::analysis(&outcome))
}
