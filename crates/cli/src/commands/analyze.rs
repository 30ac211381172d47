//! `analyze`: fidelity, privacy and coverage of a synthetic set against real trials, as JSON.
//! (Plots and the HTML report are still to come.)

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use trialforge_report::coverage::{coverage, Coverage};
use trialforge_report::privacy::{privacy, PrivacyReport};
use trialforge_report::similarity::{across_pairs, within_pairs, Summary};
use trialforge_trial::{Split, Trial};

use super::embed::{embed_trials, CorpusArgs, EncoderArgs};
use super::Ctx;

#[derive(Args)]
pub struct AnalyzeArgs {
    /// Real trials (any input `data import` reads).
    #[arg(long)]
    pub real: PathBuf,
    /// Synthetic trials: our JSONL, a corpus, or a CSV in the TOP schema (from any tool).
    #[arg(long)]
    pub synthetic: PathBuf,
    /// Output folder (analysis.json).
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
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

#[derive(Serialize)]
struct Similarity {
    real_real: Summary,
    synthetic_synthetic: Summary,
    real_synthetic: Summary,
}

#[derive(Serialize)]
struct Analysis {
    encoder: String,
    rendering: &'static str,
    real_trials: usize,
    synthetic_trials: usize,
    similarity: Similarity,
    /// Reference = real trials outside the test split; held-out = the real test split, or, without
    /// one, every fifth real trial.
    privacy: PrivacyReport,
    coverage_real: Coverage,
    coverage_synthetic: Coverage,
}

fn load(path: &std::path::Path) -> anyhow::Result<Vec<Trial>> {
    CorpusArgs {
        corpus: path.to_path_buf(),
        format: trialforge_trial::Format::Auto,
    }
    .load()
}

pub fn analyze(ctx: &Ctx, a: AnalyzeArgs) -> anyhow::Result<()> {
    let real = load(&a.real)?;
    let synthetic = load(&a.synthetic)?;
    let encoder = a.encoder.load(ctx)?;
    let (rv, _) = embed_trials(&encoder, &real)?;
    let (sv, _) = embed_trials(&encoder, &synthetic)?;

    let has_test = real.iter().any(|t| t.split == Split::Test);
    let is_holdout = |i: usize| {
        if has_test {
            real[i].split == Split::Test
        } else {
            i % 5 == 4
        }
    };
    let (mut reference, mut holdout) = (Vec::new(), Vec::new());
    for (i, v) in rv.iter().enumerate() {
        if is_holdout(i) {
            holdout.push(v.clone())
        } else {
            reference.push(v.clone())
        }
    }
    let analysis = Analysis {
        encoder: trialforge_encode::TextEncoder::model_id(&encoder).to_string(),
        rendering: "trialforge_trial::render::protocol_text (no status, no stop reason, no label)",
        real_trials: real.len(),
        synthetic_trials: synthetic.len(),
        similarity: Similarity {
            real_real: Summary::of(&within_pairs(&rv, a.within_pairs, a.seed)),
            synthetic_synthetic: Summary::of(&within_pairs(&sv, a.within_pairs, a.seed + 1)),
            real_synthetic: Summary::of(&across_pairs(&rv, &sv, a.across_pairs, a.seed + 2)),
        },
        privacy: privacy(&sv, &reference, &holdout, a.near_copy_cosine),
        coverage_real: coverage(&real),
        coverage_synthetic: coverage(&synthetic),
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let path = a.out.join("analysis.json");
    std::fs::write(&path, serde_json::to_string_pretty(&analysis)?)?;
    ctx.emit(&analysis, || {
        let s = &analysis.similarity;
        let p = &analysis.privacy;
        format!(
            "cosine of random pairs (mean ± std): real-real {:.3} ± {:.3}, synthetic-synthetic {:.3} ± {:.3}, real-synthetic {:.3} ± {:.3}\n\
             distance to closest real record (median): synthetic {:.3}, held-out real {:.3}{}; near copies {:.1}%\n\
             wrote {}",
            s.real_real.mean, s.real_real.std, s.synthetic_synthetic.mean, s.synthetic_synthetic.std,
            s.real_synthetic.mean, s.real_synthetic.std, p.synthetic_dcr.median, p.holdout_dcr.median,
            if p.closer_than_real { " (closer than real data to itself: memorising?)" } else { "" },
            p.near_copy_share * 100.0,
            path.display()
        )
    })
}
