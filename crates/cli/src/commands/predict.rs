//! `benchmark top`, `train`, `evaluate` and `predict`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use trialforge_core::predict::{BenchmarkRequest, EvaluateRequest, PredictRequest, TrainRequest};
use trialforge_predict::benchmark::TopPhase;
use trialforge_predict::{parse_model_list, ModelSpec};

use super::Ctx;
use crate::args::EncoderArgs;

#[derive(Args)]
pub struct BenchmarkTopArgs {
    /// Folder with the TOP files (phase_I_train.csv, ..., aux/hint_predictions_*) [default: the bundled data/top].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Phase: I, II or III.
    #[arg(long, default_value = "I")]
    pub phase: TopPhase,
    /// Comma-separated models: tfidf-lr, embed-mlp, encoder-ft, cladmop, cladmop-zero-shot, cladmop
    /// with ablation suffixes (cladmop-no-pretrain, cladmop-no-grouping, cladmop-no-drug,
    /// combinable) or with -admet (its drug branch first pre-trained on the ADMET files in the
    /// data folder's aux/ADMET_cooked). `all` is tfidf-lr, embed-mlp, cladmop and cladmop-zero-shot; encoder-ft (the
    /// encoder's top layer fine-tuned on the rendering) is opt-in, `all,encoder-ft`, since its
    /// frozen states take minutes to compute when not cached. `ablations` is the three ablations.
    #[arg(long, default_value = "all")]
    pub models: String,
    /// Bootstrap resamples of the test set (HINT uses 20).
    #[arg(long, default_value_t = 20)]
    pub resamples: usize,
    /// Seed for training and the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train each model this many times, with seeds seed, seed+1, ...: its row then pools the runs
    /// (mean ± std over every seed and resample, the same resamples as with one seed), and each
    /// seed's figures are printed below the table. One run's figures can move by several
    /// hundredths with the seed alone.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub seeds: u64,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

impl BenchmarkTopArgs {
    pub fn request(&self) -> anyhow::Result<BenchmarkRequest> {
        Ok(BenchmarkRequest {
            data: self.data.clone(),
            phase: self.phase,
            models: parse_model_list(&self.models)?,
            resamples: self.resamples,
            seed: self.seed,
            seeds: self.seeds as usize,
            encoder: self.encoder.encoder.clone(),
        })
    }
}

pub fn benchmark_top(ctx: &Ctx, a: BenchmarkTopArgs) -> anyhow::Result<()> {
    let report = trialforge_core::predict::benchmark_top(&ctx.env, &a.request()?, &ctx.progress)?;
    ctx.emit(&report, || crate::format::benchmark(&report))
}

#[derive(Args)]
pub struct TrainArgs {
    /// Model: tfidf-lr, embed-mlp, encoder-ft, cladmop, cladmop-zero-shot, or cladmop with ablation suffixes
    /// (cladmop-no-pretrain, cladmop-no-grouping, cladmop-no-drug) or -admet (drug branch
    /// pre-trained on ADMET properties first; see --admet).
    #[arg(long)]
    pub model: ModelSpec,
    /// Labelled training trials (any input `data import` reads).
    #[arg(long)]
    pub train: PathBuf,
    /// Labelled validation trials, for early stopping and model selection.
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Output folder (config.json + weights.safetensors).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Trials without labels that cladmop pre-trains on besides the training and validation
    /// trials (pair matching uses no labels). Never give it test trials.
    #[arg(long)]
    pub unlabelled: Option<PathBuf>,
    /// ADMET files for a `-admet` model (`<task>_train.txt` / `<task>_valid.txt` for absorption,
    /// distribution, metabolism, excretion, toxicity; `SMILES<TAB>0|1`) [default: the bundled
    /// data/top/aux/ADMET_cooked].
    #[arg(long)]
    pub admet: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

pub fn train(ctx: &Ctx, a: TrainArgs) -> anyhow::Result<()> {
    let req = TrainRequest {
        model: a.model,
        train: a.train,
        valid: a.valid,
        unlabelled: a.unlabelled,
        admet: a.admet,
        seed: a.seed,
        encoder: a.encoder.encoder,
        out: a.out,
    };
    let s = trialforge_core::predict::train(&ctx.env, &req, &ctx.progress)?;
    ctx.emit(&s, || {
        format!(
            "trained {} on {} trials ({} for validation) -> {}",
            s.model, s.train, s.valid, s.out
        )
    })
}

#[derive(Args)]
pub struct EvaluateArgs {
    /// A model folder written by `train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled trials to evaluate on.
    #[arg(long)]
    pub corpus: PathBuf,
    #[arg(long, default_value_t = 20)]
    pub resamples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

pub fn evaluate(ctx: &Ctx, a: EvaluateArgs) -> anyhow::Result<()> {
    let req = EvaluateRequest {
        model: a.model,
        corpus: a.corpus,
        resamples: a.resamples,
        seed: a.seed,
        encoder: a.encoder.encoder,
    };
    let e = trialforge_core::predict::evaluate(&ctx.env, &req, &ctx.progress)?;
    ctx.emit(&e, || {
        let b = &e.scores;
        format!(
            "{} trials: PR-AUC {:.3} ± {:.3}, ROC-AUC {:.3} ± {:.3}, F1 {:.3} ± {:.3}, Brier {:.3} (over {} resamples)",
            e.trials,
            b.pr_auc.mean,
            b.pr_auc.std,
            b.roc_auc.mean,
            b.roc_auc.std,
            b.f1.mean,
            b.f1.std,
            b.brier.mean,
            e.resamples
        )
    })
}

#[derive(Args)]
pub struct PredictArgs {
    /// A model folder written by `train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Trials to score: one trial JSON, a ClinicalTrials.gov study, a corpus, TOP CSV...
    pub input: PathBuf,
    /// Write `id,probability` CSV here (default: stdout).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

pub fn predict(ctx: &Ctx, a: PredictArgs) -> anyhow::Result<()> {
    let req = PredictRequest {
        model: a.model,
        input: a.input,
        encoder: a.encoder.encoder,
    };
    let rows = trialforge_core::predict::predict(&ctx.env, &req, &ctx.progress)?;
    if ctx.json {
        return ctx.emit(&rows, String::new);
    }
    let mut w = csv::Writer::from_writer(match &a.out {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
                as Box<dyn Write>
        }
        None => Box::new(std::io::stdout()),
    });
    for r in &rows {
        w.serialize(r)?;
    }
    w.flush()?;
    Ok(())
}
