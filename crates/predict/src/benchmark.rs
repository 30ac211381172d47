//! The TOP benchmark harness: train on a phase's train split (valid for early stopping and model
//! selection only), predict its test split, score every model and HINT's shipped predictions on the
//! same bootstrap resamples of the test set (HINT's protocol: 20 resamples). A model can be trained
//! with several seeds: one run's figures hide how much training alone moves them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use trialforge_trial::top::{self, ImportOptions};
use trialforge_trial::{Protocol, Trial};

use crate::metrics::{bootstrap, bootstrap_indices, BootstrapScores, MeanStd, Scores};
use crate::model::{Example, OutcomeModel};
use crate::registry::ModelSpec;
use crate::{PredictError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TopPhase {
    I,
    II,
    III,
}

impl std::str::FromStr for TopPhase {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "I" | "1" => Ok(TopPhase::I),
            "II" | "2" => Ok(TopPhase::II),
            "III" | "3" => Ok(TopPhase::III),
            _ => Err(format!("unknown phase `{s}` (expected I, II or III)")),
        }
    }
}

impl TopPhase {
    pub fn file(self, split: &str) -> String {
        format!("phase_{self:?}_{split}.csv")
    }
}

/// Labelled examples of trials that have a label. Models see protocols only.
pub fn examples(trials: &[Trial]) -> Vec<Example<'_>> {
    trials
        .iter()
        .filter_map(|t| {
            t.label.map(|label| Example {
                protocol: &t.protocol,
                label,
            })
        })
        .collect()
}

/// Predicts every trial (through its protocol only).
pub fn predict_trials(model: &dyn OutcomeModel, trials: &[Trial]) -> Result<Vec<f32>> {
    let ps: Vec<&Protocol> = trials.iter().map(|t| &t.protocol).collect();
    model.predict(&ps)
}

#[derive(Clone, Debug, Serialize)]
pub struct SplitInfo {
    pub file: String,
    /// None when the file is missing.
    pub rows: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelRow {
    pub model: String,
    /// "ok", or why there is no score.
    pub status: String,
    /// Over the bootstrap resamples; with several training seeds, over every (seed, resample)
    /// pair, and `point` is the mean of the seeds' whole-test-set figures.
    pub scores: Option<BootstrapScores>,
    /// Mean per training run.
    pub train_seconds: Option<f64>,
    pub predict_seconds: Option<f64>,
    /// Each training seed's run, when there were several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seed_runs: Vec<SeedRun>,
    /// Mean and std across training seeds of each run's bootstrap mean, when there were several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub across_seeds: Option<SeedSpread>,
}

/// One training seed's run of a model.
#[derive(Clone, Debug, Serialize)]
pub struct SeedRun {
    pub seed: u64,
    pub scores: BootstrapScores,
    pub train_seconds: f64,
}

/// How far training seeds alone move a model's figures (test resamples held fixed).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SeedSpread {
    pub pr_auc: MeanStd,
    pub roc_auc: MeanStd,
    pub f1: MeanStd,
    pub brier: MeanStd,
}

impl ModelRow {
    fn without_scores(model: String, status: String) -> ModelRow {
        ModelRow {
            model,
            status,
            scores: None,
            train_seconds: None,
            predict_seconds: None,
            seed_runs: Vec::new(),
            across_seeds: None,
        }
    }
}

/// The runs of several seeds as one row's scores: each metric's mean and (population) std over
/// every (seed, resample) pair, from the runs' own means and stds (equal resample counts).
pub fn pool_seed_runs(runs: &[BootstrapScores]) -> (BootstrapScores, SeedSpread) {
    let spread = |f: fn(&BootstrapScores) -> MeanStd| -> (MeanStd, MeanStd) {
        let means: Vec<f64> = runs.iter().map(|r| f(r).mean).collect();
        let across = MeanStd::of(&means);
        let within = runs.iter().map(|r| f(r).std.powi(2)).sum::<f64>() / runs.len().max(1) as f64;
        let pooled = MeanStd {
            mean: across.mean,
            std: (within + across.std.powi(2)).sqrt(),
        };
        (pooled, across)
    };
    let (pr_auc, pr_across) = spread(|r| r.pr_auc);
    let (roc_auc, roc_across) = spread(|r| r.roc_auc);
    let (f1, f1_across) = spread(|r| r.f1);
    let (brier, brier_across) = spread(|r| r.brier);
    let n = runs.len().max(1) as f64;
    let point = |f: fn(&Scores) -> f64| runs.iter().map(|r| f(&r.point)).sum::<f64>() / n;
    (
        BootstrapScores {
            pr_auc,
            roc_auc,
            f1,
            brier,
            point: Scores {
                pr_auc: point(|s| s.pr_auc),
                roc_auc: point(|s| s.roc_auc),
                f1: point(|s| s.f1),
                brier: point(|s| s.brier),
            },
        },
        SeedSpread {
            pr_auc: pr_across,
            roc_auc: roc_across,
            f1: f1_across,
            brier: brier_across,
        },
    )
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchmarkReport {
    pub phase: TopPhase,
    pub splits: Vec<SplitInfo>,
    pub resamples: usize,
    pub seed: u64,
    /// Training seeds per model: `seed`, `seed + 1`, ...
    pub train_seeds: usize,
    pub rows: Vec<ModelRow>,
    /// HINT's shipped test predictions on the same resamples.
    pub reference: ModelRow,
}

pub struct BenchmarkOptions {
    pub data_dir: PathBuf,
    pub phase: TopPhase,
    pub models: Vec<ModelSpec>,
    pub resamples: usize,
    /// Seeds the bootstrap resamples, and the first training seed.
    pub seed: u64,
    /// How many times each model trains, with seeds `seed`, `seed + 1`, ... (at least 1).
    pub train_seeds: usize,
}

fn read_split(dir: &Path, phase: TopPhase, split: &str) -> Result<(SplitInfo, Option<Vec<Trial>>)> {
    let file = phase.file(split);
    let path = dir.join(&file);
    if !path.is_file() {
        return Ok((SplitInfo { file, rows: None }, None));
    }
    let trials = top::read_file(&path, ImportOptions::default())
        .map_err(|e| PredictError::Invalid(e.to_string()))?
        .trials;
    Ok((
        SplitInfo {
            file,
            rows: Some(trials.len()),
        },
        Some(trials),
    ))
}

/// Protocols a model may pre-train on without labels: the train and valid files of every phase in
/// `dir`, minus any trial whose id is in the test set (or that is a test trial under another
/// phase's file name). Test files are never read for this.
pub fn unlabelled_protocols(dir: &Path, test_ids: &HashSet<&str>) -> Result<Vec<Trial>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for phase in [TopPhase::I, TopPhase::II, TopPhase::III] {
        for split in ["train", "valid"] {
            if let (_, Some(trials)) = read_split(dir, phase, split)? {
                out.extend(
                    trials
                        .into_iter()
                        .filter(|t| !test_ids.contains(t.id.as_str()) && seen.insert(t.id.clone())),
                );
            }
        }
    }
    Ok(out)
}

/// Runs the benchmark. `make` builds an untrained model for a training seed; `on_model` reports
/// progress.
pub fn run<'m>(
    opts: &BenchmarkOptions,
    mut make: impl FnMut(&ModelSpec, u64) -> Result<Box<dyn OutcomeModel + 'm>>,
    mut on_model: impl FnMut(&str),
) -> Result<BenchmarkReport> {
    let (train_info, train) = read_split(&opts.data_dir, opts.phase, "train")?;
    let (valid_info, valid) = read_split(&opts.data_dir, opts.phase, "valid")?;
    let (test_info, test) = read_split(&opts.data_dir, opts.phase, "test")?;
    let splits = vec![train_info.clone(), valid_info, test_info.clone()];
    let missing =
        |info: &SplitInfo| format!("missing: {} not in {}", info.file, opts.data_dir.display());
    let seeds: Vec<u64> = (0..opts.train_seeds.max(1) as u64)
        .map(|k| opts.seed.wrapping_add(k))
        .collect();

    let Some(test) = test else {
        let row = |model: &str| ModelRow::without_scores(model.into(), missing(&test_info));
        return Ok(BenchmarkReport {
            phase: opts.phase,
            splits,
            resamples: opts.resamples,
            seed: opts.seed,
            train_seeds: seeds.len(),
            rows: opts.models.iter().map(|k| row(&k.name())).collect(),
            reference: row("HINT (shipped predictions)"),
        });
    };
    let labels: Vec<u8> = test
        .iter()
        .map(|t| t.label.map(u8::from))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            PredictError::Invalid(format!("{}: a test trial has no label", test_info.file))
        })?;
    let indices = bootstrap_indices(test.len(), opts.resamples, opts.seed);

    let test_ids: HashSet<&str> = test.iter().map(|t| t.id.as_str()).collect();
    let unlabelled = unlabelled_protocols(&opts.data_dir, &test_ids)?;
    let unlabelled: Vec<&Protocol> = unlabelled.iter().map(|t| &t.protocol).collect();

    let mut rows = Vec::new();
    for spec in &opts.models {
        let Some(train) = &train else {
            rows.push(ModelRow::without_scores(spec.name(), missing(&train_info)));
            continue;
        };
        let valid_examples = valid.as_deref().map(examples).unwrap_or_default();
        let mut runs = Vec::new();
        let mut predict_seconds = 0.0;
        for &seed in &seeds {
            on_model(&if seeds.len() > 1 {
                format!("{} (seed {seed})", spec.name())
            } else {
                spec.name()
            });
            let mut model = make(spec, seed)?;
            let started = Instant::now();
            model.add_unlabelled(&unlabelled);
            model.fit(&examples(train), &valid_examples)?;
            let train_seconds = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let scores = predict_trials(model.as_ref(), &test)?;
            predict_seconds += started.elapsed().as_secs_f64();
            runs.push(SeedRun {
                seed,
                scores: bootstrap(&labels, &scores, &indices),
                train_seconds,
            });
        }
        let n = runs.len() as f64;
        let train_seconds = runs.iter().map(|r| r.train_seconds).sum::<f64>() / n;
        let mut row = ModelRow::without_scores(spec.name(), "ok".into());
        row.train_seconds = Some(train_seconds);
        row.predict_seconds = Some(predict_seconds / n);
        if runs.len() == 1 {
            row.scores = Some(runs[0].scores);
        } else {
            let bootstraps: Vec<BootstrapScores> = runs.iter().map(|r| r.scores).collect();
            let (pooled, spread) = pool_seed_runs(&bootstraps);
            row.scores = Some(pooled);
            row.across_seeds = Some(spread);
            row.seed_runs = runs;
        }
        rows.push(row);
    }
    let reference = hint_reference(&opts.data_dir, opts.phase, &test, &labels, &indices)?;
    Ok(BenchmarkReport {
        phase: opts.phase,
        splits,
        resamples: opts.resamples,
        seed: opts.seed,
        train_seeds: seeds.len(),
        rows,
        reference,
    })
}

/// Scores `aux/hint_predictions_phase_X_test.csv` (columns `nctid,prediction`) on the same resamples.
fn hint_reference(
    dir: &Path,
    phase: TopPhase,
    test: &[Trial],
    labels: &[u8],
    indices: &[Vec<usize>],
) -> Result<ModelRow> {
    let name = format!("hint_predictions_phase_{phase:?}_test.csv");
    let path = dir.join("aux").join(&name);
    let mut row = ModelRow::without_scores("HINT (shipped predictions)".into(), String::new());
    if !path.is_file() {
        row.status = format!("missing: {name} not in {}", dir.join("aux").display());
        return Ok(row);
    }
    let mut by_id: HashMap<String, f32> = HashMap::new();
    let format_err = |line: u64, message: String| PredictError::Format {
        path: path.clone(),
        message: format!("line {line}: {message}"),
    };
    let mut rdr = csv::Reader::from_path(&path).map_err(|e| format_err(1, e.to_string()))?;
    for rec in rdr.records() {
        let rec =
            rec.map_err(|e| format_err(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let p: f32 = rec
            .get(1)
            .unwrap_or("")
            .trim()
            .parse()
            .map_err(|_| format_err(line, "field `prediction`: expected a number".into()))?;
        by_id.insert(rec.get(0).unwrap_or("").to_string(), p);
    }
    let scores: Option<Vec<f32>> = test.iter().map(|t| by_id.get(&t.id).copied()).collect();
    match scores {
        Some(s) => {
            row.status = "ok".into();
            row.scores = Some(bootstrap(labels, &s, indices));
        }
        None => {
            let have = test.iter().filter(|t| by_id.contains_key(&t.id)).count();
            row.status = format!(
                "incomplete: {name} covers {have} of {} test trials",
                test.len()
            );
        }
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(pr: &[f64]) -> BootstrapScores {
        let m = MeanStd::of(pr);
        let point = Scores {
            pr_auc: pr[0],
            roc_auc: 0.5,
            f1: 0.5,
            brier: 0.25,
        };
        BootstrapScores {
            pr_auc: m,
            roc_auc: m,
            f1: m,
            brier: m,
            point,
        }
    }

    #[test]
    fn pooled_seed_runs_equal_the_statistics_of_every_seed_and_resample_together() {
        let (a, b) = ([0.5, 0.7], [0.4, 1.0]);
        let (pooled, spread) = pool_seed_runs(&[run_of(&a), run_of(&b)]);
        let all = MeanStd::of(&[a[0], a[1], b[0], b[1]]);
        assert!((pooled.pr_auc.mean - all.mean).abs() < 1e-12);
        assert!((pooled.pr_auc.std - all.std).abs() < 1e-12, "{pooled:?}");
        // Across seeds: the runs' means 0.6 and 0.7.
        assert!((spread.pr_auc.mean - 0.65).abs() < 1e-12);
        assert!((spread.pr_auc.std - 0.05).abs() < 1e-12);
        assert!((pooled.point.pr_auc - 0.45).abs() < 1e-12);
    }
}
