//! `augment`: the seed's utility experiments (real / synthetic / hybrid training, the synthetic-share
//! sweep, the paired bootstrap, the generalization view), leakage-checked against the test split.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use trialforge_encode::TextEncoder;
use trialforge_predict::augment::{
    self, AugmentData, AugmentOptions, AugmentReport, SyntheticOrigin,
};
use trialforge_predict::ModelKind;
use trialforge_trial::{Split, Trial};

use super::embed::EncoderArgs;
use super::predict::{cached_embedder, default_admet_dir, new_model};
use super::Ctx;

impl Default for AugmentSettings {
    fn default() -> Self {
        AugmentSettings {
            model: ModelKind::EmbedMlp,
            seeds: 3,
            shares: vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0],
            train_size: None,
            resamples: 1000,
        }
    }
}

/// Settings of the utility experiments (shared by `augment` and `analyze --augment`).
#[derive(Args, Clone)]
pub struct AugmentSettings {
    /// Model trained in every condition: embed-mlp (the local encoder with a trained classification
    /// head: the text classifier) or tfidf-lr.
    #[arg(long, default_value = "embed-mlp")]
    pub model: ModelKind,
    /// Training seeds (each condition is trained once per seed).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Synthetic shares of the sweep, comma-separated percentages.
    #[arg(long, default_value = "0,20,40,60,80,100", value_delimiter = ',')]
    pub shares: Vec<f64>,
    /// Training size of the sweep [default: the smaller of the real train and synthetic sets].
    #[arg(long)]
    pub train_size: Option<usize>,
    /// Paired-bootstrap resamples of the test set.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
}

#[derive(Args)]
pub struct AugmentArgs {
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
    pub settings: AugmentSettings,
    #[command(flatten)]
    pub set: SyntheticSetArgs,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

/// Each synthetic trial's id and the real trials its prompts showed (`None` for sets without
/// provenance, such as TOP CSV files from other tools).
pub fn read_origins(path: &Path, trials: &[Trial]) -> anyhow::Result<Vec<SyntheticOrigin>> {
    let is_jsonl = path.is_file()
        && path
            .extension()
            .is_some_and(|e| e == "jsonl" || e == "json")
        && trialforge_trial::import::detect(path)? != trialforge_trial::Format::Legacy;
    let mut examples: std::collections::HashMap<String, Vec<String>> = Default::default();
    if is_jsonl {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}: line {}: not JSON", path.display(), i + 1))?;
            if let (Some(id), Some(ex)) = (v["id"].as_str(), v["provenance"]["examples"].as_array())
            {
                examples.insert(
                    id.to_string(),
                    ex.iter()
                        .filter_map(|e| e.as_str().map(String::from))
                        .collect(),
                );
            }
        }
    }
    Ok(trials
        .iter()
        .map(|t| SyntheticOrigin {
            id: t.id.clone(),
            examples: examples.get(&t.id).cloned(),
        })
        .collect())
}

/// Runs the experiments: real train / valid / test by split tag.
pub fn run_augment(
    real: &[Trial],
    synthetic: &[Trial],
    origins: &[SyntheticOrigin],
    settings: &AugmentSettings,
    encoder: Option<&dyn TextEncoder>,
) -> anyhow::Result<AugmentReport> {
    let of = |s: Split| -> Vec<Trial> {
        real.iter()
            .filter(|t| t.split == s && t.label.is_some())
            .cloned()
            .collect()
    };
    let (train, valid, test) = (of(Split::Train), of(Split::Valid), of(Split::Test));
    anyhow::ensure!(
        !train.is_empty() && !test.is_empty(),
        "augment needs real trials tagged train and test (have {} and {}); import TOP split files",
        train.len(),
        test.len()
    );
    let synthetic: Vec<Trial> = synthetic
        .iter()
        .filter(|t| t.label.is_some())
        .cloned()
        .collect();
    let embedder = match (settings.model.needs_encoder(), encoder) {
        (true, Some(e)) => Some(cached_embedder(e)),
        (true, None) => anyhow::bail!("{} needs the encoder", settings.model.name()),
        (false, _) => None,
    };
    let opts = AugmentOptions {
        seeds: (0..settings.seeds.max(1)).collect(),
        shares: settings.shares.iter().map(|s| s / 100.0).collect(),
        train_size: settings.train_size,
        resamples: settings.resamples,
        bootstrap_seed: 0,
    };
    let steps = (opts.seeds.len() * (3 + opts.shares.len())) as u64;
    let pb = crate::progress::bar(steps, "training");
    let data = AugmentData {
        train: &train,
        valid: &valid,
        test: &test,
        synthetic: &synthetic,
        origins,
    };
    let report = augment::run(
        settings.model.name(),
        &data,
        &opts,
        |seed| {
            new_model(
                settings.model,
                seed,
                embedder.as_ref(),
                &default_admet_dir(),
                |_| {},
            )
            .map_err(|e| trialforge_predict::PredictError::Invalid(e.to_string()))
        },
        |step| {
            pb.inc(1);
            pb.set_message(step.to_string());
        },
    )?;
    pb.finish_and_clear();
    Ok(report)
}

pub fn format_augment(r: &AugmentReport) -> String {
    let mut out = format!(
        "model {}, {} real test trials, seeds {:?} (PR-AUC / ROC-AUC / F1, mean ± std over seeds)\n",
        r.model, r.test_trials, r.seeds
    );
    for c in r.conditions.iter().chain(&r.sweep) {
        out.push_str(&format!(
            "{:<16} train {:>5} real + {:>5} synthetic   {:.3} ± {:.3}   {:.3} ± {:.3}   {:.3} ± {:.3}\n",
            c.name, c.train_real, c.train_synthetic, c.pr_auc.mean, c.pr_auc.std, c.roc_auc.mean,
            c.roc_auc.std, c.f1.mean, c.f1.std
        ));
    }
    if let Some(t) = &r.hybrid_vs_real {
        out.push_str(&format!(
            "hybrid - real PR-AUC: {:+.3} (95% CI {:+.3} to {:+.3}, p = {:.3}, {})\n",
            t.difference,
            t.ci95[0],
            t.ci95[1],
            t.p_value,
            if t.significant {
                "significant"
            } else {
                "not significant"
            }
        ));
    }
    out.push_str(&format!(
        "generalization: {} test trials of drugs no synthetic trial uses",
        r.generalization.test_trials
    ));
    if let (Some(a), Some(b)) = (&r.generalization.real, &r.generalization.hybrid) {
        out.push_str(&format!(
            "; PR-AUC real {:.3}, hybrid {:.3}",
            a.pr_auc, b.pr_auc
        ));
    }
    for n in &r.notes {
        out.push_str(&format!("\nnote: {n}"));
    }
    out
}

/// How to read a synthetic set (shared by `augment` and `analyze`).
#[derive(Args, Clone, Default)]
pub struct SyntheticSetArgs {
    /// With a folder of legacy ClinicalTrials.gov records as --synthetic: a CSV with columns
    /// `file,label` (file name without folder; label 0 or 1).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Skip synthetic records that cannot be read (each is reported) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
}

/// A synthetic set: our JSONL, a corpus, a TOP CSV, or a folder (or file) of legacy records (XML,
/// or JSON repaired where needed; see `trialforge_trial::legacy`). Notes say what was repaired,
/// skipped or left unlabelled, and how claimed registry ids were handled.
pub fn load_synthetic(
    path: &Path,
    how: &SyntheticSetArgs,
    real: &[Trial],
) -> anyhow::Result<(Vec<Trial>, Vec<String>)> {
    let format = trialforge_trial::import::detect(path)?;
    if format != trialforge_trial::Format::Legacy {
        anyhow::ensure!(
            how.labels.is_none(),
            "--labels goes with a folder of legacy ClinicalTrials.gov records; {} is not one (its labels are in the file)",
            path.display()
        );
        return Ok((load(path)?, Vec::new()));
    }
    let set =
        trialforge_trial::legacy::read_foreign_set(path, how.labels.as_deref(), how.skip_bad)?;
    for e in &set.skipped {
        eprintln!("skipped: {e}");
    }
    let notes = set.notes(how.labels.is_some(), real);
    anyhow::ensure!(!set.trials.is_empty(), "{}: no records", path.display());
    Ok((set.trials, notes))
}

pub fn load(path: &Path) -> anyhow::Result<Vec<Trial>> {
    super::embed::CorpusArgs {
        corpus: path.to_path_buf(),
        format: trialforge_trial::Format::Auto,
    }
    .load()
}

pub fn augment_command(ctx: &Ctx, a: AugmentArgs) -> anyhow::Result<()> {
    let real = load(&a.real)?;
    let (synthetic, notes) = load_synthetic(&a.synthetic, &a.set, &real)?;
    for n in &notes {
        eprintln!("note: {n}");
    }
    let origins = read_origins(&a.synthetic, &synthetic)?;
    let encoder = if a.settings.model.needs_encoder() {
        Some(a.encoder.load(ctx)?)
    } else {
        None
    };
    let report = run_augment(&real, &synthetic, &origins, &a.settings, encoder.as_deref())?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let path = a.out.join("augment.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    ctx.emit(&report, || {
        format!("{}\nwrote {}", format_augment(&report), path.display())
    })
}
