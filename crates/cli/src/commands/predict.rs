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
    /// data folder's aux/ADMET_cooked), stack (the four default models' logits weighted on
    /// validation; it reuses members trained in the same run), MODEL-xN (a seed ensemble of N:
    /// their probabilities averaged; member k's cladmop pre-trained with its own seed, so
    /// stack-x3 is three stacks over three pre-trainings). `all` is tfidf-lr, embed-mlp, cladmop, cladmop-zero-shot and stack; encoder-ft (the
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
    /// hundredths with the seed alone. cladmop's seed is its fine-tuning's: the runs share one
    /// pre-training (seed 0), as users of a model share one pre-trained checkpoint.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub seeds: u64,
    /// Train on every non-test file of the data folder (every phase's train and valid files but
    /// this phase's valid split, which stays for model selection; no trial of any test file), for
    /// phases whose train split is not there (phase III here). Not TOP's protocol: labelled so.
    #[arg(long)]
    pub available_data: bool,
    /// Also draw the reliability diagram of every model on the test set (raw probabilities, first
    /// training seed; the Platt-scaled bins are in the --json report) to this file: .svg or .png.
    #[arg(long, value_name = "FILE")]
    pub reliability: Option<PathBuf>,
    /// Write every run's validation and test predictions to this folder, one CSV per model and
    /// seed (MODEL-seedS.csv: nctid,split,label,prediction).
    #[arg(long, value_name = "DIR")]
    pub predictions: Option<PathBuf>,
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
            available_data: self.available_data,
            predictions: self.predictions.clone(),
        })
    }
}

pub fn benchmark_top(ctx: &Ctx, a: BenchmarkTopArgs) -> anyhow::Result<()> {
    let report = trialforge_core::predict::benchmark_top(&ctx.env, &a.request()?, &ctx.progress)?;
    if let Some(path) = &a.reliability {
        write_figure(
            &trialforge_report::plots::benchmark_reliability(&report),
            path,
        )?;
    }
    ctx.emit(&report, || crate::format::benchmark(&report))
}

/// A figure as PNG (`.png`) or SVG (anything else).
fn write_figure(
    figure: &trialforge_report::plots::Figure,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        figure.write_png(path)?;
    } else {
        std::fs::write(path, figure.svg()?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[derive(Args)]
pub struct TrainArgs {
    /// Model: tfidf-lr, embed-mlp, encoder-ft, cladmop, cladmop-zero-shot, or cladmop with ablation suffixes
    /// (cladmop-no-pretrain, cladmop-no-grouping, cladmop-no-drug) or -admet (drug branch
    /// pre-trained on ADMET properties first; see --admet); stack (tfidf-lr, embed-mlp, cladmop
    /// and cladmop-zero-shot, their logits weighted by a logistic regression fitted on --valid);
    /// MODEL-xN (a seed ensemble of N, e.g. cladmop-x5 or stack-x3; member k's cladmop
    /// pre-trained with seed k).
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
    /// Training seed (for cladmop, its fine-tuning's; its pre-training uses seed 0, so models
    /// trained with different seeds share one pre-training checkpoint).
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
    /// Also draw the reliability diagram (raw and Platt-scaled probabilities) to this file: .svg
    /// or .png.
    #[arg(long, value_name = "FILE")]
    pub reliability: Option<PathBuf>,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

pub fn evaluate(ctx: &Ctx, a: EvaluateArgs) -> anyhow::Result<()> {
    let req = EvaluateRequest {
        model: a.model.clone(),
        corpus: a.corpus,
        resamples: a.resamples,
        seed: a.seed,
        encoder: a.encoder.encoder,
    };
    let e = trialforge_core::predict::evaluate(&ctx.env, &req, &ctx.progress)?;
    if let Some(path) = &a.reliability {
        let figure = trialforge_report::plots::reliability_figure(
            &format!("{}: reliability on {} trials", a.model.display(), e.trials),
            &[("model", &e.reliability)],
            true,
        );
        write_figure(&figure, path)?;
    }
    ctx.emit(&e, || {
        let b = &e.scores;
        let c = &e.calibration;
        let mut s = format!(
            "{} trials: PR-AUC {:.3} ± {:.3}, ROC-AUC {:.3} ± {:.3}, F1 {:.3} ± {:.3}, Brier {:.3} (over {} resamples)\nECE {:.3} ± {:.3}",
            e.trials,
            b.pr_auc.mean,
            b.pr_auc.std,
            b.roc_auc.mean,
            b.roc_auc.std,
            b.f1.mean,
            b.f1.std,
            b.brier.mean,
            e.resamples,
            c.ece.mean,
            c.ece.std,
        );
        match (c.ece_platt, c.f1_valid_threshold, c.threshold) {
            (Some(ece), Some(f1), Some(t)) => {
                s += &format!(
                    "; after Platt scaling fitted on the model's validation split {:.3} ± {:.3}; F1 at the validation-chosen threshold {t:.3}: {:.3} ± {:.3}",
                    ece.mean, ece.std, f1.mean, f1.std
                )
            }
            _ => s += " (no calibration.json beside the model: it was trained without a validation split)",
        }
        s
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
    /// Explain each prediction: the 5 nearest training trials (their outcomes and cosine
    /// similarity of the renderings) and the 5 criteria items that move the score most, each with
    /// its signed effect on the logit (the score with the item minus the score without it).
    /// Printed as text, or as JSON with --json.
    #[arg(long)]
    pub explain: bool,
    /// The training trials to find neighbours among [default: the train file the model's
    /// trained_on.json names].
    #[arg(long, value_name = "FILE", requires = "explain")]
    pub neighbours_from: Option<PathBuf>,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

fn explain(ctx: &Ctx, a: &PredictArgs) -> anyhow::Result<()> {
    let trials = trialforge_core::data::load_trials(&a.input, trialforge_trial::Format::Auto)?;
    let explanations = trialforge_core::predict::explain_with(
        &ctx.env,
        &a.model,
        a.encoder.encoder.as_deref(),
        &trials,
        a.neighbours_from.as_deref(),
        &ctx.progress,
    )?;
    ctx.emit(&explanations, || {
        let mut s = String::new();
        for e in &explanations {
            s += &format!("{}: probability of success {:.3}\n", e.id, e.probability);
            if let Some(note) = &e.neighbours_note {
                s += &format!("  nearest training trials: none ({note})\n");
            } else {
                s += "  nearest training trials (outcome, cosine similarity):\n";
                for n in &e.neighbours {
                    let outcome = match n.label {
                        Some(1) => "success",
                        Some(_) => "failure",
                        None => "unlabelled",
                    };
                    s += &format!("    {} {outcome} {:.3}\n", n.id, n.similarity);
                }
            }
            s += "  criteria items that move the score most (effect on the logit):\n";
            for i in &e.items {
                let text: String = i.item.chars().take(100).collect();
                s += &format!("    {:+.3} {}: {text}\n", i.contribution, i.section);
            }
        }
        s.trim_end().to_string()
    })
}

pub fn predict(ctx: &Ctx, a: PredictArgs) -> anyhow::Result<()> {
    if a.explain {
        return explain(ctx, &a);
    }
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
