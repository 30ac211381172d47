//! The TOP benchmark harness: train on a phase's train split (valid for early stopping and model
//! selection only), predict its test split, score every model and HINT's shipped predictions on the
//! same bootstrap resamples of the test set (HINT's protocol: 20 resamples).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use trialforge_trial::top::{self, ImportOptions};
use trialforge_trial::{Protocol, Trial};

use crate::metrics::{bootstrap, bootstrap_indices, BootstrapScores};
use crate::model::{Example, ModelSpec, OutcomeModel};
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
    pub scores: Option<BootstrapScores>,
    pub train_seconds: Option<f64>,
    pub predict_seconds: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchmarkReport {
    pub phase: TopPhase,
    pub splits: Vec<SplitInfo>,
    pub resamples: usize,
    pub seed: u64,
    pub rows: Vec<ModelRow>,
    /// HINT's shipped test predictions on the same resamples.
    pub reference: ModelRow,
}

pub struct BenchmarkOptions {
    pub data_dir: PathBuf,
    pub phase: TopPhase,
    pub models: Vec<ModelSpec>,
    pub resamples: usize,
    pub seed: u64,
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

/// Runs the benchmark. `make` builds an untrained model; `on_model` reports progress.
pub fn run<'m>(
    opts: &BenchmarkOptions,
    mut make: impl FnMut(&ModelSpec) -> Result<Box<dyn OutcomeModel + 'm>>,
    mut on_model: impl FnMut(&str),
) -> Result<BenchmarkReport> {
    let (train_info, train) = read_split(&opts.data_dir, opts.phase, "train")?;
    let (valid_info, valid) = read_split(&opts.data_dir, opts.phase, "valid")?;
    let (test_info, test) = read_split(&opts.data_dir, opts.phase, "test")?;
    let splits = vec![train_info.clone(), valid_info, test_info.clone()];
    let missing =
        |info: &SplitInfo| format!("missing: {} not in {}", info.file, opts.data_dir.display());

    let Some(test) = test else {
        let row = |model: &str| ModelRow {
            model: model.into(),
            status: missing(&test_info),
            scores: None,
            train_seconds: None,
            predict_seconds: None,
        };
        return Ok(BenchmarkReport {
            phase: opts.phase,
            splits,
            resamples: opts.resamples,
            seed: opts.seed,
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
        on_model(&spec.name());
        let Some(train) = &train else {
            rows.push(ModelRow {
                model: spec.name(),
                status: missing(&train_info),
                scores: None,
                train_seconds: None,
                predict_seconds: None,
            });
            continue;
        };
        let mut model = make(spec)?;
        let started = Instant::now();
        model.add_unlabelled(&unlabelled);
        let valid_examples = valid.as_deref().map(examples).unwrap_or_default();
        model.fit(&examples(train), &valid_examples)?;
        let train_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let scores = predict_trials(model.as_ref(), &test)?;
        rows.push(ModelRow {
            model: spec.name(),
            status: "ok".into(),
            scores: Some(bootstrap(&labels, &scores, &indices)),
            train_seconds: Some(train_seconds),
            predict_seconds: Some(started.elapsed().as_secs_f64()),
        });
    }
    let reference = hint_reference(&opts.data_dir, opts.phase, &test, &labels, &indices)?;
    Ok(BenchmarkReport {
        phase: opts.phase,
        splits,
        resamples: opts.resamples,
        seed: opts.seed,
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
    let mut row = ModelRow {
        model: "HINT (shipped predictions)".into(),
        status: String::new(),
        scores: None,
        train_seconds: None,
        predict_seconds: None,
    };
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
