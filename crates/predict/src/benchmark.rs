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

use crate::calibrate::{
    best_f1_threshold, ece, reliability, Platt, ReliabilityBin, RELIABILITY_BINS,
};
use crate::combine::{Stack, STACK_MEMBERS};
use crate::metrics::{bootstrap, bootstrap_indices, f1_at, BootstrapScores, MeanStd, Scores};
use crate::model::{Example, ModelKind, OutcomeModel};
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
    /// Calibration on the test set, pooled like `scores`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationScores>,
    /// The first training seed's reliability diagram on the whole test set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reliability: Option<Reliability>,
    /// The same figures on the new-disease test trials only, pooled like `scores`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_disease: Option<BootstrapScores>,
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

/// How well a model's probabilities match observed success rates on the test set, before and after
/// Platt scaling fitted on the validation split (see [`crate::calibrate`] for why Platt), and F1 at
/// the threshold that maximises F1 on validation. Each figure is a mean ± std over the resamples.
#[derive(Clone, Debug, Serialize)]
pub struct CalibrationScores {
    /// Expected calibration error of the raw probabilities (10 equal-width bins).
    pub ece: MeanStd,
    pub ece_platt: Option<MeanStd>,
    pub brier_platt: Option<MeanStd>,
    pub f1_valid_threshold: Option<MeanStd>,
    /// The validation-chosen threshold (of the first seed, when pooled).
    pub threshold: Option<f32>,
    /// The Platt scaling fitted on validation (of the first seed, when pooled).
    pub platt: Option<Platt>,
}

/// Reliability bins of the raw and of the Platt-scaled probabilities.
#[derive(Clone, Debug, Serialize)]
pub struct Reliability {
    pub raw: Vec<ReliabilityBin>,
    pub platt: Option<Vec<ReliabilityBin>>,
}

/// One training seed's run of a model.
#[derive(Clone, Debug, Serialize)]
pub struct SeedRun {
    pub seed: u64,
    pub scores: BootstrapScores,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_disease: Option<BootstrapScores>,
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
            calibration: None,
            reliability: None,
            new_disease: None,
            train_seconds: None,
            predict_seconds: None,
            seed_runs: Vec::new(),
            across_seeds: None,
        }
    }

    /// A row from its runs `(seed, figures, train seconds)`: one run as it is, several pooled.
    fn from_runs(
        model: String,
        runs: Vec<(u64, RunScores, f64)>,
        predict_seconds: f64,
    ) -> ModelRow {
        let n = runs.len().max(1) as f64;
        let mut row = ModelRow::without_scores(model, "ok".into());
        row.train_seconds = Some(runs.iter().map(|r| r.2).sum::<f64>() / n);
        row.predict_seconds = Some(predict_seconds / n);
        let calibrations: Vec<&CalibrationScores> = runs.iter().map(|r| &r.1.calibration).collect();
        row.calibration = Some(pool_calibration(&calibrations));
        row.reliability = runs.first().map(|r| r.1.reliability.clone());
        let new_disease: Option<Vec<BootstrapScores>> =
            runs.iter().map(|r| r.1.new_disease).collect();
        if runs.len() == 1 {
            row.scores = Some(runs[0].1.scores);
            row.new_disease = runs[0].1.new_disease;
            return row;
        }
        let bootstraps: Vec<BootstrapScores> = runs.iter().map(|r| r.1.scores).collect();
        let (pooled, spread) = pool_seed_runs(&bootstraps);
        row.scores = Some(pooled);
        row.across_seeds = Some(spread);
        row.new_disease = new_disease.map(|n| pool_seed_runs(&n).0);
        row.seed_runs = runs
            .into_iter()
            .map(|(seed, r, train_seconds)| SeedRun {
                seed,
                scores: r.scores,
                new_disease: r.new_disease,
                train_seconds,
            })
            .collect();
        row
    }
}

/// Mean ± std over every (run, resample) pair from each run's own mean and std (equal resample
/// counts), and the mean ± std of the runs' means alone (how far the runs differ).
fn pool(figures: &[MeanStd]) -> (MeanStd, MeanStd) {
    let means: Vec<f64> = figures.iter().map(|f| f.mean).collect();
    let across = MeanStd::of(&means);
    let within = figures.iter().map(|f| f.std.powi(2)).sum::<f64>() / figures.len().max(1) as f64;
    let pooled = MeanStd {
        mean: across.mean,
        std: (within + across.std.powi(2)).sqrt(),
    };
    (pooled, across)
}

fn pool_calibration(runs: &[&CalibrationScores]) -> CalibrationScores {
    let pooled = |f: fn(&CalibrationScores) -> Option<MeanStd>| -> Option<MeanStd> {
        let v: Option<Vec<MeanStd>> = runs.iter().map(|r| f(r)).collect();
        v.filter(|v| !v.is_empty()).map(|v| pool(&v).0)
    };
    CalibrationScores {
        ece: pool(&runs.iter().map(|r| r.ece).collect::<Vec<_>>()).0,
        ece_platt: pooled(|c| c.ece_platt),
        brier_platt: pooled(|c| c.brier_platt),
        f1_valid_threshold: pooled(|c| c.f1_valid_threshold),
        threshold: runs.first().and_then(|r| r.threshold),
        platt: runs.first().and_then(|r| r.platt.clone()),
    }
}

/// The runs of several seeds as one row's scores: each metric's mean and (population) std over
/// every (seed, resample) pair, from the runs' own means and stds (equal resample counts).
pub fn pool_seed_runs(runs: &[BootstrapScores]) -> (BootstrapScores, SeedSpread) {
    let spread = |f: fn(&BootstrapScores) -> MeanStd| pool(&runs.iter().map(f).collect::<Vec<_>>());
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

/// Which training data a benchmark used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchmarkProtocol {
    /// TOP's own: the phase's train split, its valid split for selection, its test split.
    Top,
    /// Not TOP's protocol: every train and valid file of every phase here (but this phase's valid
    /// split, kept for model selection, and any test trial), for phases whose train split is not
    /// here.
    AvailableData,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchmarkReport {
    pub phase: TopPhase,
    pub protocol: BenchmarkProtocol,
    pub splits: Vec<SplitInfo>,
    pub resamples: usize,
    pub seed: u64,
    /// Training seeds per model: `seed`, `seed + 1`, ...
    pub train_seeds: usize,
    pub rows: Vec<ModelRow>,
    /// HINT's shipped test predictions on the same resamples.
    pub reference: ModelRow,
    /// How many test trials have no condition any training trial has (their figures are each
    /// row's `new_disease`).
    pub new_disease_trials: Option<usize>,
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
    /// Train on every non-test file here instead of the phase's train split
    /// ([`BenchmarkProtocol::AvailableData`]).
    pub available_data: bool,
    /// Write every run's validation and test predictions here, `MODEL-seedS.csv`
    /// (`nctid,split,label,prediction`), for analyses of one's own.
    pub predictions_dir: Option<PathBuf>,
}

/// One run's predictions as CSV: `nctid,split,label,prediction`.
fn write_predictions(path: &Path, parts: &[(&str, &[&Trial], &[f32])]) -> Result<()> {
    let io = |e: std::io::Error| PredictError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut w = csv::Writer::from_path(path).map_err(|e| io(std::io::Error::other(e)))?;
    let mut row = |fields: [&str; 4]| {
        w.write_record(fields)
            .map_err(|e| io(std::io::Error::other(e)))
    };
    row(["nctid", "split", "label", "prediction"])?;
    for (split, trials, scores) in parts {
        for (t, p) in trials.iter().zip(scores.iter()) {
            let label = t.label.map_or(String::new(), |l| u8::from(l).to_string());
            row([&t.id, split, &label, &p.to_string()])?;
        }
    }
    w.flush().map_err(io)
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

/// Test trials none of whose conditions (case and spacing folded) any training trial has: CLaDMoP's
/// "new disease" view of a test split. (That a trial's exact combination of conditions is new is
/// far weaker: 321 of phase I's 627 test trials, against 147 by this rule and the paper's 138.)
/// Trials without conditions are not counted.
pub fn new_disease_trials(train: &[Trial], test: &[Trial]) -> Vec<usize> {
    let conditions = |t: &Trial| -> Vec<String> {
        t.protocol
            .conditions
            .iter()
            .map(|c| {
                c.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase()
            })
            .filter(|c| !c.is_empty())
            .collect()
    };
    let seen: HashSet<String> = train.iter().flat_map(conditions).collect();
    (0..test.len())
        .filter(|&i| {
            let c = conditions(&test[i]);
            !c.is_empty() && c.iter().all(|c| !seen.contains(c))
        })
        .collect()
}

/// The new-disease test trials (indices into the test set), their labels and their own resamples.
struct Subset {
    trials: Vec<usize>,
    labels: Vec<u8>,
    indices: Vec<Vec<usize>>,
}

/// What the test labels and the resamples look like, shared by every row.
struct TestSet<'a> {
    labels: &'a [u8],
    indices: &'a [Vec<usize>],
    new_disease: Option<Subset>,
}

impl TestSet<'_> {
    fn new_disease_scores(&self, scores: &[f32]) -> Option<BootstrapScores> {
        let subset = self.new_disease.as_ref()?;
        let s: Vec<f32> = subset.trials.iter().map(|&i| scores[i]).collect();
        Some(bootstrap(&subset.labels, &s, &subset.indices))
    }

    /// Every figure of one run: `valid` (labels, predictions) fits the Platt scaling and the F1
    /// threshold.
    fn score(&self, scores: &[f32], valid: Option<(&[u8], &[f32])>) -> RunScores {
        let valid = valid.filter(|(l, _)| !l.is_empty());
        let platt = valid.map(|(l, s)| Platt::fit(s, l));
        let threshold = valid.map(|(l, s)| best_f1_threshold(l, s));
        let (calibration, reliability) =
            calibration_scores(self.labels, scores, self.indices, platt, threshold);
        RunScores {
            scores: bootstrap(self.labels, scores, self.indices),
            calibration,
            reliability,
            new_disease: self.new_disease_scores(scores),
        }
    }
}

/// Calibration figures of `scores` over the resamples `indices`, with `platt` and `threshold`
/// fitted on validation (none: raw figures only), and the reliability bins on the whole set.
pub fn calibration_scores(
    labels: &[u8],
    scores: &[f32],
    indices: &[Vec<usize>],
    platt: Option<Platt>,
    threshold: Option<f32>,
) -> (CalibrationScores, Reliability) {
    let resampled = |scores: &[f32], f: &dyn Fn(&[u8], &[f32]) -> f64| -> MeanStd {
        let per: Vec<f64> = indices
            .iter()
            .map(|idx| {
                let l: Vec<u8> = idx.iter().map(|&i| labels[i]).collect();
                let s: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
                f(&l, &s)
            })
            .collect();
        MeanStd::of(&per)
    };
    // Platt scaling maps each probability on its own: applied once, then resampled.
    let calibrated = platt.as_ref().map(|p| p.apply(scores));
    let ece_of = |l: &[u8], s: &[f32]| ece(l, s, RELIABILITY_BINS);
    let calibration = CalibrationScores {
        ece: resampled(scores, &ece_of),
        ece_platt: calibrated.as_deref().map(|c| resampled(c, &ece_of)),
        brier_platt: calibrated
            .as_deref()
            .map(|c| resampled(c, &crate::metrics::brier)),
        f1_valid_threshold: threshold.map(|t| resampled(scores, &|l, s| f1_at(l, s, t))),
        threshold,
        platt,
    };
    let reliability = Reliability {
        raw: reliability(labels, scores, RELIABILITY_BINS),
        platt: calibrated.map(|c| reliability(labels, &c, RELIABILITY_BINS)),
    };
    (calibration, reliability)
}

/// One run's figures.
struct RunScores {
    scores: BootstrapScores,
    calibration: CalibrationScores,
    reliability: Reliability,
    new_disease: Option<BootstrapScores>,
}

/// The training, validation and test trials of a benchmark, wherever they came from.
struct Splits {
    infos: Vec<SplitInfo>,
    train: Option<Vec<Trial>>,
    valid: Option<Vec<Trial>>,
    test: Option<Vec<Trial>>,
    /// Why train is missing, when it is.
    train_missing: String,
}

fn read_splits(opts: &BenchmarkOptions) -> Result<Splits> {
    let dir = &opts.data_dir;
    let missing = |info: &SplitInfo| format!("missing: {} not in {}", info.file, dir.display());
    let (valid_info, valid) = read_split(dir, opts.phase, "valid")?;
    let (test_info, test) = read_split(dir, opts.phase, "test")?;
    if !opts.available_data {
        let (train_info, train) = read_split(dir, opts.phase, "train")?;
        return Ok(Splits {
            train_missing: missing(&train_info),
            infos: vec![train_info, valid_info, test_info],
            train,
            valid,
            test,
        });
    }
    // Every train and valid file of every phase but this phase's valid split (model selection)
    // and any trial of any test file.
    let mut test_ids: HashSet<String> = HashSet::new();
    for phase in [TopPhase::I, TopPhase::II, TopPhase::III] {
        if let (_, Some(t)) = read_split(dir, phase, "test")? {
            test_ids.extend(t.into_iter().map(|t| t.id));
        }
    }
    let held: HashSet<&str> = valid.iter().flatten().map(|t| t.id.as_str()).collect();
    let mut train = Vec::new();
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    for phase in [TopPhase::I, TopPhase::II, TopPhase::III] {
        for split in ["train", "valid"] {
            if phase == opts.phase && split == "valid" {
                continue;
            }
            if let (info, Some(trials)) = read_split(dir, phase, split)? {
                files.push(format!("{} {}", info.file, info.rows.unwrap_or(0)));
                train.extend(trials.into_iter().filter(|t| {
                    t.label.is_some()
                        && !test_ids.contains(&t.id)
                        && !held.contains(t.id.as_str())
                        && seen.insert(t.id.clone())
                }));
            }
        }
    }
    let info = SplitInfo {
        file: format!("available data ({})", files.join(", ")),
        rows: Some(train.len()),
    };
    Ok(Splits {
        train_missing: format!("missing: no train or valid file in {}", dir.display()),
        train: (!train.is_empty()).then_some(train),
        infos: vec![info, valid_info, test_info],
        valid,
        test,
    })
}

/// Runs the benchmark. `make` builds an untrained model for a training seed; `on_model` reports
/// progress.
pub fn run<'m>(
    opts: &BenchmarkOptions,
    mut make: impl FnMut(&ModelSpec, u64) -> Result<Box<dyn OutcomeModel + 'm>>,
    mut on_model: impl FnMut(&str),
) -> Result<BenchmarkReport> {
    let Splits {
        infos: splits,
        train,
        valid,
        test,
        train_missing,
    } = read_splits(opts)?;
    let test_info = splits[2].clone();
    let seeds: Vec<u64> = (0..opts.train_seeds.max(1) as u64)
        .map(|k| opts.seed.wrapping_add(k))
        .collect();
    let mut report = BenchmarkReport {
        phase: opts.phase,
        protocol: if opts.available_data {
            BenchmarkProtocol::AvailableData
        } else {
            BenchmarkProtocol::Top
        },
        splits,
        resamples: opts.resamples,
        seed: opts.seed,
        train_seeds: seeds.len(),
        rows: Vec::new(),
        reference: ModelRow::without_scores("HINT (shipped predictions)".into(), String::new()),
        new_disease_trials: None,
    };

    let Some(test) = test else {
        let why = format!(
            "missing: {} not in {}",
            test_info.file,
            opts.data_dir.display()
        );
        let row = |model: &str| ModelRow::without_scores(model.into(), why.clone());
        report.rows = opts.models.iter().map(|k| row(&k.name())).collect();
        report.reference = row("HINT (shipped predictions)");
        return Ok(report);
    };
    let labels: Vec<u8> = test
        .iter()
        .map(|t| t.label.map(u8::from))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            PredictError::Invalid(format!("{}: a test trial has no label", test_info.file))
        })?;
    let indices = bootstrap_indices(test.len(), opts.resamples, opts.seed);
    let new_disease = train.as_ref().map(|train| {
        let trials = new_disease_trials(train, &test);
        Subset {
            labels: trials.iter().map(|&i| labels[i]).collect(),
            indices: bootstrap_indices(trials.len(), opts.resamples, opts.seed),
            trials,
        }
    });
    report.new_disease_trials = new_disease.as_ref().map(|s| s.trials.len());
    let test_set = TestSet {
        labels: &labels,
        indices: &indices,
        new_disease,
    };

    let test_ids: HashSet<&str> = test.iter().map(|t| t.id.as_str()).collect();
    let unlabelled = unlabelled_protocols(&opts.data_dir, &test_ids)?;
    let unlabelled: Vec<&Protocol> = unlabelled.iter().map(|t| &t.protocol).collect();
    let valid_examples = valid.as_deref().map(examples).unwrap_or_default();
    let valid_labels = crate::model::labels(&valid_examples);
    let valid_protocols: Vec<&Protocol> = valid_examples.iter().map(|e| e.protocol).collect();
    // The labelled validation trials, in `valid_examples` order, and the test trials (for
    // `--predictions`).
    let labelled_valid: Vec<&Trial> = valid
        .iter()
        .flatten()
        .filter(|t| t.label.is_some())
        .collect();
    let test_refs: Vec<&Trial> = test.iter().collect();

    // Trained members a later stack row reuses (the same model and seed train to the same bits).
    let single_stack = |m: &ModelSpec| m.kind == ModelKind::Stack && m.seeds == 1;
    let stacked = opts.models.iter().any(single_stack);
    let mut kept: HashMap<(String, u64), Box<dyn OutcomeModel + 'm>> = HashMap::new();

    for spec in &opts.models {
        let Some(train) = &train else {
            report
                .rows
                .push(ModelRow::without_scores(spec.name(), train_missing.clone()));
            continue;
        };
        let train_examples = examples(train);
        let mut fit = |spec: &ModelSpec, seed: u64| -> Result<(Box<dyn OutcomeModel + 'm>, f64)> {
            let mut model = make(spec, seed)?;
            let started = Instant::now();
            model.add_unlabelled(&unlabelled);
            model.fit(&train_examples, &valid_examples)?;
            Ok((model, started.elapsed().as_secs_f64()))
        };
        let mut runs = Vec::new();
        let mut predict_seconds = 0.0;
        for &seed in &seeds {
            on_model(&if seeds.len() > 1 {
                format!("{} (seed {seed})", spec.name())
            } else {
                spec.name()
            });
            let (model, train_seconds) = if single_stack(spec) {
                let started = Instant::now();
                let mut members = Vec::new();
                for name in STACK_MEMBERS {
                    let member = match kept.remove(&(name.to_string(), seed)) {
                        Some(m) => m,
                        None => fit(&name.parse().map_err(PredictError::Invalid)?, seed)?.0,
                    };
                    members.push((name.to_string(), member));
                }
                let stack: Box<dyn OutcomeModel + 'm> =
                    Box::new(Stack::from_trained(members, &valid_examples)?);
                (stack, started.elapsed().as_secs_f64())
            } else {
                fit(spec, seed)?
            };
            let started = Instant::now();
            let scores = predict_trials(model.as_ref(), &test)?;
            predict_seconds += started.elapsed().as_secs_f64();
            let valid_scores = model.predict(&valid_protocols)?;
            if let Some(dir) = &opts.predictions_dir {
                write_predictions(
                    &dir.join(format!("{}-seed{seed}.csv", spec.name())),
                    &[
                        ("valid", &labelled_valid, &valid_scores),
                        ("test", &test_refs, &scores),
                    ],
                )?;
            }
            let run = test_set.score(&scores, Some((&valid_labels, &valid_scores)));
            runs.push((seed, run, train_seconds));
            if stacked && STACK_MEMBERS.contains(&spec.name().as_str()) {
                kept.insert((spec.name(), seed), model);
            }
        }
        report
            .rows
            .push(ModelRow::from_runs(spec.name(), runs, predict_seconds));
    }
    report.reference = hint_reference(&opts.data_dir, opts.phase, &test, &test_set)?;
    Ok(report)
}

/// Scores `aux/hint_predictions_phase_X_test.csv` (columns `nctid,prediction`) on the same resamples.
fn hint_reference(
    dir: &Path,
    phase: TopPhase,
    test: &[Trial],
    test_set: &TestSet,
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
            // No validation predictions ship with HINT: raw calibration only.
            let run = test_set.score(&s, None);
            row.status = "ok".into();
            row.scores = Some(run.scores);
            row.calibration = Some(run.calibration);
            row.reliability = Some(run.reliability);
            row.new_disease = run.new_disease;
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
