//! The retrieval-reasoning seed's utility experiments: train an outcome model on real, synthetic
//! and hybrid data, and on a sweep of the synthetic share at a fixed training size; test each on
//! real test trials over several seeds, and ask whether hybrid beats real by more than chance (a
//! paired bootstrap over the test set). A "generalization" view scores the same predictions on the
//! real test trials of drugs that no synthetic trial uses.
//!
//! Leakage-safe by construction: [`check_leakage`] refuses a synthetic set whose provenance names a
//! test trial (as a prompt example, or as its own id), and [`run`] calls it first.

use std::collections::{BTreeSet, HashSet};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use trialforge_trial::{Drug, Split, Trial};

use crate::benchmark::{examples, predict_trials};
use crate::metrics::{average_precision, bootstrap_indices, MeanStd, Scores};
use crate::{Example, OutcomeModel, PredictError, Result};

/// Where a synthetic trial came from, as far as leakage goes: the real trials its prompts showed.
#[derive(Clone, Debug)]
pub struct SyntheticOrigin {
    pub id: String,
    /// `None`: the set carries no provenance (a TOP CSV from another tool, say).
    pub examples: Option<Vec<String>>,
}

/// Synthetic trials whose prompts showed a test trial, or which carry a test trial's id.
#[derive(Clone, Debug, Serialize)]
pub struct Leak {
    pub synthetic_id: String,
    pub test_ids: Vec<String>,
}

pub fn find_leaks(origins: &[SyntheticOrigin], test_ids: &HashSet<&str>) -> Vec<Leak> {
    origins
        .iter()
        .filter_map(|o| {
            let mut hit: BTreeSet<String> = o
                .examples
                .iter()
                .flatten()
                .filter(|e| test_ids.contains(e.as_str()))
                .cloned()
                .collect();
            if test_ids.contains(o.id.as_str()) {
                hit.insert(o.id.clone());
            }
            (!hit.is_empty()).then(|| Leak {
                synthetic_id: o.id.clone(),
                test_ids: hit.into_iter().collect(),
            })
        })
        .collect()
}

/// Errors out, naming the synthetic and test trials, when any synthetic trial leaks the test split.
pub fn check_leakage(origins: &[SyntheticOrigin], test: &[Trial]) -> Result<()> {
    let test_ids: HashSet<&str> = test.iter().map(|t| t.id.as_str()).collect();
    let leaks = find_leaks(origins, &test_ids);
    if leaks.is_empty() {
        return Ok(());
    }
    let mut named: BTreeSet<&str> = BTreeSet::new();
    for l in &leaks {
        named.extend(l.test_ids.iter().map(String::as_str));
    }
    let listed: Vec<String> = leaks
        .iter()
        .take(10)
        .map(|l| format!("{} <- {}", l.synthetic_id, l.test_ids.join(", ")))
        .collect();
    Err(PredictError::Invalid(format!(
        "refusing: {} synthetic trials were made from {} test trials ({}{}); generate again with --exclude-split test",
        leaks.len(),
        named.len(),
        listed.join("; "),
        if leaks.len() > 10 { "; ..." } else { "" }
    )))
}

#[derive(Clone, Debug)]
pub struct AugmentOptions {
    /// Training seeds: each condition is trained once per seed.
    pub seeds: Vec<u64>,
    /// Synthetic shares of the sweep, in [0, 1].
    pub shares: Vec<f64>,
    /// Training-set size of the sweep [default: the smaller of the real train and synthetic sets].
    pub train_size: Option<usize>,
    /// Paired-bootstrap resamples of the test set.
    pub resamples: usize,
    pub bootstrap_seed: u64,
}

impl Default for AugmentOptions {
    fn default() -> Self {
        AugmentOptions {
            seeds: vec![0, 1, 2],
            shares: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            train_size: None,
            resamples: 1000,
            bootstrap_seed: 0,
        }
    }
}

/// One training condition over all seeds.
#[derive(Clone, Debug, Serialize)]
pub struct ConditionResult {
    pub name: String,
    pub train_real: usize,
    pub train_synthetic: usize,
    pub per_seed: Vec<Scores>,
    pub pr_auc: MeanStd,
    pub roc_auc: MeanStd,
    pub f1: MeanStd,
    pub brier: MeanStd,
    /// Test predictions averaged over the seeds (for the paired tests).
    #[serde(skip)]
    pub mean_predictions: Vec<f32>,
}

/// Paired bootstrap of PR-AUC(b) - PR-AUC(a) on the same resamples of the test set.
#[derive(Clone, Debug, Serialize)]
pub struct PairedTest {
    pub a: String,
    pub b: String,
    pub metric: &'static str,
    /// On the whole test set, with seed-averaged predictions.
    pub difference: f64,
    pub ci95: [f64; 2],
    /// Share of resamples where b does not beat a (one-sided).
    pub p_value: f64,
    /// The 95% interval excludes zero.
    pub significant: bool,
    pub resamples: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Generalization {
    /// Real test trials none of whose drugs any synthetic trial uses.
    pub test_trials: usize,
    pub real: Option<Scores>,
    pub hybrid: Option<Scores>,
    pub hybrid_vs_real: Option<PairedTest>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AugmentReport {
    pub model: String,
    pub test_trials: usize,
    pub seeds: Vec<u64>,
    /// Real only, synthetic only, hybrid (real + all synthetic).
    pub conditions: Vec<ConditionResult>,
    pub sweep_train_size: usize,
    pub sweep: Vec<ConditionResult>,
    pub hybrid_vs_real: Option<PairedTest>,
    pub generalization: Generalization,
    /// False when the synthetic set carried no provenance to check for test-split leakage.
    pub provenance_checked: bool,
    pub notes: Vec<String>,
}

/// What the experiments train and test on. `valid` is real and used only for early stopping /
/// model selection, in every condition alike.
pub struct AugmentData<'a> {
    pub train: &'a [Trial],
    pub valid: &'a [Trial],
    pub test: &'a [Trial],
    pub synthetic: &'a [Trial],
    pub origins: &'a [SyntheticOrigin],
}

fn labels_of(trials: &[Trial]) -> Result<Vec<u8>> {
    trials
        .iter()
        .map(|t| {
            t.label
                .map(u8::from)
                .ok_or_else(|| PredictError::Invalid(format!("trial {} has no label", t.id)))
        })
        .collect()
}

fn paired(
    a: &ConditionResult,
    b: &ConditionResult,
    labels: &[u8],
    subset: &[usize],
    opts: &AugmentOptions,
) -> Option<PairedTest> {
    let pick = |p: &[f32], idx: &[usize]| -> (Vec<u8>, Vec<f32>) {
        idx.iter()
            .map(|&i| (labels[subset[i]], p[subset[i]]))
            .unzip()
    };
    let all: Vec<usize> = (0..subset.len()).collect();
    let diff_on = |idx: &[usize]| {
        let (l, pa) = pick(&a.mean_predictions, idx);
        let (_, pb) = pick(&b.mean_predictions, idx);
        average_precision(&l, &pb) - average_precision(&l, &pa)
    };
    let difference = diff_on(&all);
    if !difference.is_finite() {
        return None;
    }
    let mut diffs: Vec<f64> = bootstrap_indices(subset.len(), opts.resamples, opts.bootstrap_seed)
        .iter()
        .map(|idx| diff_on(idx))
        .filter(|d| d.is_finite())
        .collect();
    if diffs.is_empty() {
        return None;
    }
    diffs.sort_by(f64::total_cmp);
    let q = |p: f64| diffs[((diffs.len() - 1) as f64 * p).round() as usize];
    let ci95 = [q(0.025), q(0.975)];
    Some(PairedTest {
        a: a.name.clone(),
        b: b.name.clone(),
        metric: "pr_auc",
        difference,
        ci95,
        p_value: diffs.iter().filter(|&&d| d <= 0.0).count() as f64 / diffs.len() as f64,
        significant: ci95[0] > 0.0 || ci95[1] < 0.0,
        resamples: diffs.len(),
    })
}

/// Runs every experiment. `make(seed)` builds an untrained model; `on_step` names each training.
pub fn run<'m>(
    model_name: &str,
    data: &AugmentData,
    opts: &AugmentOptions,
    mut make: impl FnMut(u64) -> Result<Box<dyn OutcomeModel + 'm>>,
    mut on_step: impl FnMut(&str),
) -> Result<AugmentReport> {
    check_leakage(data.origins, data.test)?;
    let provenance_checked = data.origins.iter().all(|o| o.examples.is_some());
    let test_labels = labels_of(data.test)?;
    labels_of(data.train)?;
    labels_of(data.synthetic)?;
    if data.test.is_empty() || data.train.is_empty() || data.synthetic.is_empty() {
        return Err(PredictError::Invalid(format!(
            "augment needs real train, real test and synthetic trials (have {}, {}, {})",
            data.train.len(),
            data.test.len(),
            data.synthetic.len()
        )));
    }
    let valid = examples(data.valid);
    let mut notes = Vec::new();
    if !provenance_checked {
        notes.push("some synthetic trials carry no provenance: their prompts could not be checked for test trials (ids were)".into());
    }
    if data.test.iter().any(|t| t.split != Split::Test) {
        notes.push("the test set holds trials not tagged as the test split".into());
    }

    let mut train_on =
        |name: String, train: Vec<Example>, n_real: usize| -> Result<ConditionResult> {
            let mut per_seed = Vec::new();
            let mut sum = vec![0f32; data.test.len()];
            for &seed in &opts.seeds {
                on_step(&format!("{name} (seed {seed})"));
                let mut model = make(seed)?;
                model.fit(&train, &valid)?;
                let p = predict_trials(model.as_ref(), data.test)?;
                per_seed.push(Scores::compute(&test_labels, &p));
                sum.iter_mut().zip(&p).for_each(|(s, x)| *s += x);
            }
            let k = opts.seeds.len().max(1) as f32;
            let col =
                |f: fn(&Scores) -> f64| MeanStd::of(&per_seed.iter().map(f).collect::<Vec<_>>());
            Ok(ConditionResult {
                name,
                train_real: n_real,
                train_synthetic: train.len() - n_real,
                pr_auc: col(|s| s.pr_auc),
                roc_auc: col(|s| s.roc_auc),
                f1: col(|s| s.f1),
                brier: col(|s| s.brier),
                per_seed,
                mean_predictions: sum.iter().map(|s| s / k).collect(),
            })
        };

    let real_ex = examples(data.train);
    let syn_ex = examples(data.synthetic);
    let real = train_on("real".into(), real_ex.clone(), real_ex.len())?;
    let synthetic = train_on("synthetic".into(), syn_ex.clone(), 0)?;
    let hybrid = train_on(
        "hybrid".into(),
        real_ex.iter().chain(&syn_ex).copied().collect(),
        real_ex.len(),
    )?;

    // The sweep: a fixed size, the synthetic share varied; the draw is seeded and nested (a larger
    // share keeps the smaller share's synthetic trials).
    let size = opts
        .train_size
        .unwrap_or(real_ex.len().min(syn_ex.len()))
        .min(real_ex.len())
        .min(syn_ex.len());
    let mut rng = StdRng::seed_from_u64(opts.bootstrap_seed);
    let mut real_order: Vec<usize> = (0..real_ex.len()).collect();
    let mut syn_order: Vec<usize> = (0..syn_ex.len()).collect();
    real_order.shuffle(&mut rng);
    syn_order.shuffle(&mut rng);
    let mut sweep = Vec::new();
    for &share in &opts.shares {
        let n_syn = ((size as f64) * share.clamp(0.0, 1.0)).round() as usize;
        let n_real = size - n_syn;
        let train: Vec<Example> = real_order[..n_real]
            .iter()
            .map(|&i| real_ex[i])
            .chain(syn_order[..n_syn].iter().map(|&i| syn_ex[i]))
            .collect();
        if train.is_empty() {
            continue;
        }
        sweep.push(train_on(
            format!("syn {:.0}%", share * 100.0),
            train,
            n_real,
        )?);
    }
    if size < 50 {
        notes.push(format!(
            "the sweep trains on only {size} trials (the smaller of the real and synthetic sets): read it as a smoke test, not evidence"
        ));
    }

    let all: Vec<usize> = (0..data.test.len()).collect();
    let hybrid_vs_real = paired(&real, &hybrid, &test_labels, &all, opts);

    let synthetic_drugs: HashSet<String> = data
        .synthetic
        .iter()
        .flat_map(|t| t.protocol.drugs.iter().map(Drug::key))
        .collect();
    let unseen: Vec<usize> = (0..data.test.len())
        .filter(|&i| {
            !data.test[i]
                .protocol
                .drugs
                .iter()
                .any(|d| synthetic_drugs.contains(&d.key()))
        })
        .collect();
    let on_subset = |c: &ConditionResult| {
        let l: Vec<u8> = unseen.iter().map(|&i| test_labels[i]).collect();
        let p: Vec<f32> = unseen.iter().map(|&i| c.mean_predictions[i]).collect();
        (l.contains(&0) && l.contains(&1)).then(|| Scores::compute(&l, &p))
    };
    let generalization = Generalization {
        test_trials: unseen.len(),
        real: on_subset(&real),
        hybrid: on_subset(&hybrid),
        hybrid_vs_real: paired(&real, &hybrid, &test_labels, &unseen, opts),
    };

    Ok(AugmentReport {
        model: model_name.to_string(),
        test_trials: data.test.len(),
        seeds: opts.seeds.clone(),
        conditions: vec![real, synthetic, hybrid],
        sweep_train_size: size,
        sweep,
        hybrid_vs_real,
        generalization,
        provenance_checked,
        notes,
    })
}
