//! `benchmark top`, `train`, `evaluate` and `predict`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use trialforge_encode::TextEncoder;
use trialforge_predict::benchmark::{
    self, examples, predict_trials, BenchmarkOptions, BenchmarkReport, ModelRow, SeedSpread,
    TopPhase,
};
use trialforge_predict::cladmop::admet::AdmetPretrain;
use trialforge_predict::cladmop::{Cladmop, CladmopParams};
use trialforge_predict::embedding::{CachedProtocolEmbedder, EmbedMlp, EmbedMlpParams};
use trialforge_predict::finetune::{EncoderFt, EncoderFtParams};
use trialforge_predict::metrics::{bootstrap, bootstrap_indices, BootstrapScores};
use trialforge_predict::tfidf::{TfidfLr, TfidfLrParams};
use trialforge_predict::{load_model, ModelKind, ModelSpec, OutcomeModel};

use super::embed::{CorpusArgs, EncoderArgs};
use super::Ctx;

/// Builds the encoder adapter with a progress bar, when any of `kinds` needs one.
fn embedder<'a>(
    ctx: &Ctx,
    args: &EncoderArgs,
    needed: bool,
    encoder: &'a mut Option<Box<dyn TextEncoder>>,
) -> anyhow::Result<Option<CachedProtocolEmbedder<'a>>> {
    if !needed {
        return Ok(None);
    }
    *encoder = Some(args.load(ctx)?);
    Ok(Some(cached_embedder(encoder.as_deref().expect("just set"))))
}

/// The encoder behind the models' protocol-embedding interface, with its cache and a progress bar.
pub(crate) fn cached_embedder(encoder: &dyn TextEncoder) -> CachedProtocolEmbedder<'_> {
    let pb = crate::progress::bar(0, "embedding");
    CachedProtocolEmbedder {
        encoder,
        cache_dir: crate::paths::cache_dir(),
        progress: Box::new(move |done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
            if done == total {
                pb.finish_and_clear();
            }
        }),
    }
}

/// Where a TOP data folder keeps the ADMET files `-admet` models read.
fn admet_dir_in(top_dir: &std::path::Path) -> PathBuf {
    top_dir.join("aux").join("ADMET_cooked")
}

/// The ADMET folder when no other is given: the bundled TOP copy's.
pub(crate) fn default_admet_dir() -> PathBuf {
    admet_dir_in(&crate::paths::bundled_data().join("top"))
}

/// An untrained model. `admet_dir` is read by `-admet` models only. `on_status` receives the
/// training stages of models that report them.
pub(crate) fn new_model<'e>(
    spec: impl Into<ModelSpec>,
    seed: u64,
    embedder: Option<&'e CachedProtocolEmbedder<'e>>,
    admet_dir: &std::path::Path,
    on_status: impl Fn(&str) + 'e,
) -> anyhow::Result<Box<dyn OutcomeModel + 'e>> {
    let spec = spec.into();
    let needs = |what: &str| -> anyhow::Result<&'e CachedProtocolEmbedder<'e>> {
        embedder.with_context(|| format!("{what} needs the encoder"))
    };
    Ok(match spec.kind {
        ModelKind::TfidfLr => {
            let mut p = TfidfLrParams::default();
            p.train.seed = seed;
            Box::new(TfidfLr::new(p))
        }
        ModelKind::EmbedMlp => {
            let mut p = EmbedMlpParams::default();
            p.train.seed = seed;
            Box::new(EmbedMlp::new(p, needs("embed-mlp")?))
        }
        ModelKind::EncoderFt => {
            let params = EncoderFtParams {
                seed,
                ..Default::default()
            };
            Box::new(EncoderFt::new(params, needs("encoder-ft")?).with_progress(on_status))
        }
        ModelKind::Cladmop | ModelKind::CladmopZeroShot => {
            let params = CladmopParams {
                ablations: spec.ablations.clone(),
                zero_shot: spec.kind == ModelKind::CladmopZeroShot,
                admet: spec
                    .admet
                    .then(|| AdmetPretrain::new(admet_dir.to_path_buf())),
                ..Default::default()
            }
            .with_seed(seed);
            Box::new(
                Cladmop::new(params, needs("cladmop")?)
                    .with_progress(on_status)
                    .with_checkpoints(crate::paths::cache_dir().join("checkpoints")),
            )
        }
    })
}

/// `all` (the default models), `ablations`, or a comma-separated list of model names with ablation suffixes.
fn parse_models(list: &str) -> anyhow::Result<Vec<ModelSpec>> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim) {
        match name {
            "all" => out.extend(ModelKind::DEFAULT.map(ModelSpec::from)),
            "ablations" => out.extend(
                [
                    "cladmop-no-pretrain",
                    "cladmop-no-grouping",
                    "cladmop-no-drug",
                ]
                .map(|n| n.parse::<ModelSpec>().expect("known ablation names")),
            ),
            _ => out.push(name.parse().map_err(anyhow::Error::msg)?),
        }
    }
    Ok(out)
}

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

pub fn run_benchmark(ctx: &Ctx, a: &BenchmarkTopArgs) -> anyhow::Result<BenchmarkReport> {
    let kinds = parse_models(&a.models)?;
    let mut encoder = None;
    let emb = embedder(
        ctx,
        &a.encoder,
        kinds.iter().any(|k| k.kind.needs_encoder()),
        &mut encoder,
    )?;
    let data_dir = a
        .data
        .clone()
        .unwrap_or_else(|| crate::paths::bundled_data().join("top"));
    let admet_dir = admet_dir_in(&data_dir);
    let opts = BenchmarkOptions {
        data_dir,
        phase: a.phase,
        models: kinds,
        resamples: a.resamples,
        seed: a.seed,
        train_seeds: a.seeds as usize,
    };
    let spinner = crate::progress::spinner("training");
    let report = benchmark::run(
        &opts,
        |spec, seed| {
            let (sp, name) = (spinner.clone(), spec.name());
            new_model(spec.clone(), seed, emb.as_ref(), &admet_dir, move |s| {
                sp.set_message(format!("{name}: {s}"))
            })
            .map_err(|e| trialforge_predict::PredictError::Invalid(format!("{e:#}")))
        },
        |m| spinner.set_message(format!("training {m}")),
    )?;
    spinner.finish_and_clear();
    Ok(report)
}

fn fmt_row(r: &ModelRow) -> String {
    match &r.scores {
        Some(s) => format!(
            "{:<28} {:.3} ± {:.3}   {:.3} ± {:.3}   {:.3} ± {:.3}   {:.3}   {}",
            r.model,
            s.pr_auc.mean,
            s.pr_auc.std,
            s.roc_auc.mean,
            s.roc_auc.std,
            s.f1.mean,
            s.f1.std,
            s.brier.mean,
            r.train_seconds
                .map_or(String::new(), |t| format!("{t:.1}s"))
        ),
        None => format!("{:<28} {}", r.model, r.status),
    }
}

pub fn format_report(r: &BenchmarkReport) -> String {
    let mut s = format!(
        "TOP phase {:?}: {} (mean ± std over {} bootstrap resamples of the test set, seed {})\n",
        r.phase,
        r.splits
            .iter()
            .map(|sp| format!(
                "{} {}",
                sp.file,
                sp.rows
                    .map_or("missing".to_string(), |n| format!("{n} rows"))
            ))
            .collect::<Vec<_>>()
            .join(", "),
        r.resamples,
        r.seed
    );
    if r.train_seeds > 1 {
        s += &format!(
            "each model trained with {} seeds ({}..={}): its figures pool every seed and resample; train is per run\n",
            r.train_seeds,
            r.seed,
            r.seed + r.train_seeds as u64 - 1
        );
    }
    s += &format!(
        "{:<28} {:<15} {:<15} {:<15} {:<7} {}\n",
        "model", "PR-AUC", "ROC-AUC", "F1@0.5", "Brier", "train"
    );
    for row in r.rows.iter().chain(std::iter::once(&r.reference)) {
        s += &fmt_row(row);
        s.push('\n');
    }
    let per_seed: Vec<(&ModelRow, &SeedSpread)> = r
        .rows
        .iter()
        .filter_map(|row| row.across_seeds.as_ref().map(|spread| (row, spread)))
        .collect();
    if !per_seed.is_empty() {
        s += "\nper training seed (mean over the resamples), then mean ± std across seeds:\n";
    }
    for (row, spread) in per_seed {
        let figures = |f: fn(&BootstrapScores) -> f64| -> String {
            let v: Vec<String> = row
                .seed_runs
                .iter()
                .map(|run| format!("{:.3}", f(&run.scores)))
                .collect();
            v.join(" ")
        };
        s += &format!(
            "{:<28} PR-AUC {} = {:.3} ± {:.3};  ROC-AUC {} = {:.3} ± {:.3}\n",
            row.model,
            figures(|b| b.pr_auc.mean),
            spread.pr_auc.mean,
            spread.pr_auc.std,
            figures(|b| b.roc_auc.mean),
            spread.roc_auc.mean,
            spread.roc_auc.std,
        );
    }
    s.trim_end().to_string()
}

pub fn benchmark_top(ctx: &Ctx, a: BenchmarkTopArgs) -> anyhow::Result<()> {
    let report = run_benchmark(ctx, &a)?;
    ctx.emit(&report, || format_report(&report))
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

#[derive(Serialize)]
struct TrainSummary {
    model: String,
    train: usize,
    valid: usize,
    out: String,
}

fn load_trials(path: &std::path::Path) -> anyhow::Result<Vec<trialforge_trial::Trial>> {
    CorpusArgs {
        corpus: path.to_path_buf(),
        format: trialforge_trial::Format::Auto,
    }
    .load()
}

pub fn train(ctx: &Ctx, a: TrainArgs) -> anyhow::Result<()> {
    let train = load_trials(&a.train)?;
    let valid = a
        .valid
        .as_deref()
        .map(load_trials)
        .transpose()?
        .unwrap_or_default();
    let (tr, va) = (examples(&train), examples(&valid));
    anyhow::ensure!(!tr.is_empty(), "{}: no labelled trials", a.train.display());
    let mut encoder = None;
    let emb = embedder(ctx, &a.encoder, a.model.kind.needs_encoder(), &mut encoder)?;
    let spinner = crate::progress::spinner(&format!("training {}", a.model.name()));
    let sp = spinner.clone();
    let admet_dir = a.admet.clone().unwrap_or_else(default_admet_dir);
    let mut model = new_model(
        a.model.clone(),
        a.seed,
        emb.as_ref(),
        &admet_dir,
        move |s| sp.set_message(s.to_string()),
    )?;
    let unlabelled = a
        .unlabelled
        .as_deref()
        .map(load_trials)
        .transpose()?
        .unwrap_or_default();
    model.add_unlabelled(&unlabelled.iter().map(|t| &t.protocol).collect::<Vec<_>>());
    model.fit(&tr, &va)?;
    spinner.finish_and_clear();
    model.save(&a.out)?;
    let s = TrainSummary {
        model: a.model.name(),
        train: tr.len(),
        valid: va.len(),
        out: a.out.display().to_string(),
    };
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

fn needs_encoder(model_dir: &std::path::Path) -> anyhow::Result<bool> {
    let p = model_dir.join("config.json");
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
    )?;
    Ok(v["kind"]
        .as_str()
        .and_then(|k| k.parse::<ModelKind>().ok())
        .is_some_and(|k| k.needs_encoder()))
}

pub fn evaluate(ctx: &Ctx, a: EvaluateArgs) -> anyhow::Result<()> {
    let trials: Vec<_> = load_trials(&a.corpus)?
        .into_iter()
        .filter(|t| t.label.is_some())
        .collect();
    anyhow::ensure!(
        !trials.is_empty(),
        "{}: no labelled trials",
        a.corpus.display()
    );
    let mut encoder = None;
    let emb = embedder(ctx, &a.encoder, needs_encoder(&a.model)?, &mut encoder)?;
    let model = load_model(&a.model, emb.as_ref().map(|e| e as _))?;
    let scores = predict_trials(model.as_ref(), &trials)?;
    let labels: Vec<u8> = trials
        .iter()
        .filter_map(|t| t.label.map(u8::from))
        .collect();
    let b: BootstrapScores = bootstrap(
        &labels,
        &scores,
        &bootstrap_indices(trials.len(), a.resamples, a.seed),
    );
    ctx.emit(&b, || {
        format!(
            "{} trials: PR-AUC {:.3} ± {:.3}, ROC-AUC {:.3} ± {:.3}, F1 {:.3} ± {:.3}, Brier {:.3} (over {} resamples)",
            trials.len(),
            b.pr_auc.mean,
            b.pr_auc.std,
            b.roc_auc.mean,
            b.roc_auc.std,
            b.f1.mean,
            b.f1.std,
            b.brier.mean,
            a.resamples
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

#[derive(Serialize)]
struct Prediction {
    id: String,
    probability: f32,
}

pub fn predict(ctx: &Ctx, a: PredictArgs) -> anyhow::Result<()> {
    let trials = load_trials(&a.input)?;
    let mut encoder = None;
    let emb = embedder(ctx, &a.encoder, needs_encoder(&a.model)?, &mut encoder)?;
    let model = load_model(&a.model, emb.as_ref().map(|e| e as _))?;
    let scores = predict_trials(model.as_ref(), &trials)?;
    let rows: Vec<Prediction> = trials
        .iter()
        .zip(scores)
        .map(|(t, p)| Prediction {
            id: t.id.clone(),
            probability: p,
        })
        .collect();
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
