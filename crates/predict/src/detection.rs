//! Detection: can a classifier tell synthetic trials from real ones? The detection metrics of
//! synthetic-data tools (SDMetrics' `LogisticDetection`, synthcity's detection scores), on trials.
//!
//! - Equal numbers of each side: all synthetic trials (at most `max_per_side`) and a seeded sample
//!   of as many real trials.
//! - Two detectors, each an L2 logistic regression: TF-IDF of the words and word pairs of the
//!   protocol rendering (`render::protocol_text`: fields synthetic trials lack by construction, such
//!   as ICD codes and SMILES, are not in it), and the encoder's embeddings of the same rendering.
//! - Stratified k-fold cross-validation (vocabulary and weights fitted on the training folds only);
//!   ROC-AUC of the out-of-fold scores, with a 95 % percentile-bootstrap interval over the scored
//!   trials (it leaves out the variation of training, so it is narrower than the run-to-run spread).
//!   0.5 = indistinguishable, 1.0 = every trial told apart.
//! - Control: the same detectors on two random halves of the real trials (disjoint, each as large
//!   as a side above), which should score about 0.5; a synthetic score well above the control's
//!   means the synthetic trials are recognisable.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::metrics::roc_auc;
use crate::nn::{fit, label_tensor, matrix, Mlp, TrainConfig};
use crate::tfidf::{text_terms, Tfidf};
use crate::Result;

#[derive(Clone, Debug)]
pub struct DetectionOptions {
    pub folds: usize,
    /// Trials per side at most (the synthetic set and the real sample are cut to this).
    pub max_per_side: usize,
    /// Below this many trials per side, the result is flagged as too small to judge.
    pub min_per_side: usize,
    /// Trials per half of the real-vs-real control at least (its own scores vary by about +-0.1 at
    /// 30 per side, even on pure noise).
    pub control_min: usize,
    pub bootstrap: usize,
    pub seed: u64,
}

impl Default for DetectionOptions {
    fn default() -> Self {
        DetectionOptions {
            folds: 5,
            max_per_side: 1000,
            min_per_side: 30,
            control_min: 100,
            bootstrap: 1000,
            seed: 0,
        }
    }
}

/// One detector's cross-validated score.
#[derive(Clone, Debug, Serialize)]
pub struct DetectorScore {
    pub detector: String,
    pub roc_auc: f64,
    /// 95 % percentile-bootstrap interval of the ROC-AUC.
    pub ci95: [f64; 2],
}

/// Both detectors on one pair of sets.
#[derive(Clone, Debug, Serialize)]
pub struct Detection {
    /// Trials per side.
    pub per_side: usize,
    pub folds: usize,
    pub detectors: Vec<DetectorScore>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DetectionReport {
    /// Real against synthetic; `None` when there are too few trials to fold.
    pub real_vs_synthetic: Option<Detection>,
    /// Real against real (two random halves).
    pub real_vs_real: Option<Detection>,
    /// Fewer than `min_per_side` trials per side: the intervals are too wide to conclude much.
    pub too_small: bool,
    pub notes: Vec<String>,
}

/// One side of a detection task: rendered texts and embeddings.
pub struct Side<'a> {
    pub texts: Vec<&'a str>,
    pub vectors: Vec<&'a [f32]>,
}

/// Runs both detectors on `real` against `synthetic`, and on two halves of `real` (the control).
/// `texts[i]` and `vectors[i]` describe the same trial.
pub fn detect(real: &Side, synthetic: &Side, opts: &DetectionOptions) -> Result<DetectionReport> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut notes = Vec::new();
    let mut synthetic_pick: Vec<usize> = (0..synthetic.texts.len()).collect();
    synthetic_pick.shuffle(&mut rng);
    synthetic_pick.truncate(opts.max_per_side);
    let mut real_order: Vec<usize> = (0..real.texts.len()).collect();
    real_order.shuffle(&mut rng);

    let per_side = synthetic_pick.len().min(real_order.len());
    let real_vs_synthetic = if per_side >= 2 * 2 {
        let a: Vec<usize> = real_order[..per_side].to_vec();
        Some(run_pair(
            (real, &a),
            (synthetic, &synthetic_pick[..per_side]),
            opts,
        )?)
    } else {
        notes.push(format!(
            "{} synthetic and {} real trials: too few to cross-validate a detector",
            synthetic.texts.len(),
            real.texts.len()
        ));
        None
    };
    // The control: two disjoint halves, each as large as a side above, and at least
    // `control_min` trials (a control on a handful of trials says little), where the real set allows.
    let half = per_side.max(opts.control_min).min(real_order.len() / 2);
    let real_vs_real = if half >= 4 {
        let (a, b) = real_order[..2 * half].split_at(half);
        Some(run_pair((real, a), (real, b), opts)?)
    } else {
        None
    };
    let too_small = per_side < opts.min_per_side;
    if too_small {
        notes.push(format!(
            "{per_side} trials per side (fewer than {}): the detection scores have wide intervals; generate more trials to judge",
            opts.min_per_side
        ));
    }
    Ok(DetectionReport {
        real_vs_synthetic,
        real_vs_real,
        too_small,
        notes,
    })
}

/// Detectors on side A (label 0) against side B (label 1).
fn run_pair(
    (a, ai): (&Side, &[usize]),
    (b, bi): (&Side, &[usize]),
    opts: &DetectionOptions,
) -> Result<Detection> {
    let n = ai.len().min(bi.len());
    let texts: Vec<&str> = ai[..n]
        .iter()
        .map(|&i| a.texts[i])
        .chain(bi[..n].iter().map(|&i| b.texts[i]))
        .collect();
    let vectors: Vec<&[f32]> = ai[..n]
        .iter()
        .map(|&i| a.vectors[i])
        .chain(bi[..n].iter().map(|&i| b.vectors[i]))
        .collect();
    let labels: Vec<u8> = (0..2 * n).map(|i| (i >= n) as u8).collect();
    let folds = opts.folds.min(n).max(2);
    // Stratified: each side's trials dealt round the folds.
    let fold_of: Vec<usize> = (0..2 * n).map(|i| (i % n) % folds).collect();

    let terms: Vec<Vec<String>> = texts.iter().map(|t| text_terms(t)).collect();
    let mut tfidf_scores = vec![0.0f32; 2 * n];
    let mut embed_scores = vec![0.0f32; 2 * n];
    for f in 0..folds {
        let train: Vec<usize> = (0..2 * n).filter(|&i| fold_of[i] != f).collect();
        let test: Vec<usize> = (0..2 * n).filter(|&i| fold_of[i] == f).collect();
        let y = label_tensor(&train.iter().map(|&i| labels[i]).collect::<Vec<_>>())?;

        let docs: Vec<Vec<String>> = train.iter().map(|&i| terms[i].clone()).collect();
        let vocab = Tfidf::fit(&docs, 2, 20_000);
        if vocab.dim() > 0 {
            let rows = |idx: &[usize]| -> Vec<Vec<f32>> {
                idx.iter().map(|&i| vocab.transform(&terms[i])).collect()
            };
            let p = logistic(
                &rows(&train),
                &y,
                &rows(&test),
                vocab.dim(),
                opts.seed + f as u64,
            )?;
            for (&i, s) in test.iter().zip(p) {
                tfidf_scores[i] = s;
            }
        } else {
            for &i in &test {
                tfidf_scores[i] = 0.5;
            }
        }
        let dim = vectors[0].len();
        let rows =
            |idx: &[usize]| -> Vec<Vec<f32>> { idx.iter().map(|&i| vectors[i].to_vec()).collect() };
        let p = logistic(&rows(&train), &y, &rows(&test), dim, opts.seed + f as u64)?;
        for (&i, s) in test.iter().zip(p) {
            embed_scores[i] = s;
        }
    }
    let score = |name: &str, scores: &[f32], seed: u64| DetectorScore {
        detector: name.into(),
        roc_auc: roc_auc(&labels, scores),
        ci95: bootstrap_ci(&labels, scores, opts.bootstrap, seed),
    };
    Ok(Detection {
        per_side: n,
        folds,
        detectors: vec![
            score("tfidf-lr", &tfidf_scores, opts.seed),
            score("embedding-lr", &embed_scores, opts.seed + 1),
        ],
    })
}

/// An L2 logistic regression fitted on (x, y), scoring `test`.
fn logistic(
    train: &[Vec<f32>],
    y: &candle_core::Tensor,
    test: &[Vec<f32>],
    dim: usize,
    seed: u64,
) -> Result<Vec<f32>> {
    let x = matrix(train, dim)?;
    let cfg = TrainConfig {
        learning_rate: 0.05,
        l2: 1e-3,
        max_epochs: 200,
        patience: usize::MAX,
        batch_size: 0,
        seed,
    };
    let m = Mlp::new(&[dim, 1], seed)?;
    fit(&m, &x, y, None, &cfg, |_, _| {})?;
    m.predict_proba(&matrix(test, dim)?)
}

/// 95 % percentile interval of the ROC-AUC over `resamples` bootstrap resamples of the trials.
fn bootstrap_ci(labels: &[u8], scores: &[f32], resamples: usize, seed: u64) -> [f64; 2] {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xd37ec7);
    let n = labels.len();
    let mut aucs: Vec<f64> = (0..resamples)
        .filter_map(|_| {
            let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            let l: Vec<u8> = idx.iter().map(|&i| labels[i]).collect();
            let s: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
            let a = roc_auc(&l, &s);
            a.is_finite().then_some(a)
        })
        .collect();
    if aucs.is_empty() {
        return [f64::NAN, f64::NAN];
    }
    aucs.sort_by(f64::total_cmp);
    let at = |q: f64| aucs[((aucs.len() - 1) as f64 * q).round() as usize];
    [at(0.025), at(0.975)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side<'a>(texts: &'a [String], vectors: &'a [Vec<f32>]) -> Side<'a> {
        Side {
            texts: texts.iter().map(String::as_str).collect(),
            vectors: vectors.iter().map(Vec::as_slice).collect(),
        }
    }

    #[test]
    fn tells_different_sets_apart_and_not_halves_of_one() {
        let mut rng = StdRng::seed_from_u64(1);
        let vocab = [
            "adults", "aged", "cancer", "renal", "hepatic", "pregnant", "therapy", "prior",
        ];
        // What a small model writes: some words real trials never use.
        let odd = ["symbols", "donoth", "faculls", "neglible"];
        let make = |rng: &mut StdRng, synthetic: bool, shift: f32| {
            let mut words: Vec<&str> = (0..12)
                .map(|_| vocab[rng.random_range(0..vocab.len())])
                .collect();
            if synthetic {
                words.extend((0..4).map(|_| odd[rng.random_range(0..odd.len())]));
            }
            let v: Vec<f32> = (0..8)
                .map(|_| rng.random_range(-1.0..1.0f32) + shift)
                .collect();
            (words.join(" "), v)
        };
        let (mut rt, mut rv, mut st, mut sv) = (vec![], vec![], vec![], vec![]);
        for _ in 0..120 {
            let (t, v) = make(&mut rng, false, 0.0);
            rt.push(t);
            rv.push(v);
        }
        for _ in 0..40 {
            let (t, v) = make(&mut rng, true, 0.8);
            st.push(t);
            sv.push(v);
        }
        let r = detect(
            &side(&rt, &rv),
            &side(&st, &sv),
            &DetectionOptions::default(),
        )
        .unwrap();
        let d = r.real_vs_synthetic.unwrap();
        assert_eq!(d.per_side, 40);
        for s in &d.detectors {
            assert!(s.roc_auc > 0.9, "{s:?}");
            assert!(s.ci95[0] <= s.roc_auc && s.roc_auc <= s.ci95[1]);
        }
        let c = r.real_vs_real.unwrap();
        for s in &c.detectors {
            assert!((s.roc_auc - 0.5).abs() < 0.2, "control {s:?}");
        }
        assert!(!r.too_small);

        let tiny = detect(
            &side(&rt, &rv),
            &side(&st[..3], &sv[..3]),
            &DetectionOptions::default(),
        )
        .unwrap();
        assert!(tiny.real_vs_synthetic.is_none() && tiny.too_small);
    }
}
