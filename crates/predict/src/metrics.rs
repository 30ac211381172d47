//! Binary-outcome metrics as the TOP benchmark reports them, and HINT's bootstrap protocol.
//!
//! - PR-AUC: average precision on the scores (sklearn `average_precision_score`: the sum over distinct
//!   score thresholds, highest first, of (recall gain) x precision; tied scores form one step).
//!   HINT's own `evaluation()` thresholds the scores at 0.5 *before* calling it, which gives a
//!   different, lower number; the figures published for TOP (and in `data/top/README.md`) are AP on
//!   the scores, as here.
//! - ROC-AUC: the probability that a random success outscores a random failure, ties counting half.
//! - F1 at 0.5: a score >= 0.5 predicts success (HINT: `0 if x < threshold else 1`).
//! - Brier score: mean squared error of the scores as probabilities.
//! - Bootstrap: 20 resamples of the test set with replacement, each as large as the test set; mean and
//!   population standard deviation (numpy's default) of each metric (HINT's `bootstrap_test`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Average precision of `scores` for binary `labels` (1 = positive). NaN without positives.
pub fn average_precision(labels: &[u8], scores: &[f32]) -> f64 {
    let positives = labels.iter().filter(|&&l| l == 1).count();
    if positives == 0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut prev_recall, mut ap) = (0usize, 0usize, 0.0f64, 0.0f64);
    let mut i = 0;
    while i < order.len() {
        let threshold = scores[order[i]];
        while i < order.len() && scores[order[i]] == threshold {
            if labels[order[i]] == 1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let recall = tp as f64 / positives as f64;
        ap += (recall - prev_recall) * tp as f64 / (tp + fp) as f64;
        prev_recall = recall;
    }
    ap
}

/// ROC-AUC by the rank-sum statistic with average ranks for ties. NaN with a single class.
pub fn roc_auc(labels: &[u8], scores: &[f32]) -> f64 {
    let n = scores.len();
    let positives = labels.iter().filter(|&&l| l == 1).count();
    let negatives = n - positives;
    if positives == 0 || negatives == 0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j < n && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0; // ranks i+1 ..= j
        rank_sum_pos += avg_rank * order[i..j].iter().filter(|&&k| labels[k] == 1).count() as f64;
        i = j;
    }
    let p = positives as f64;
    (rank_sum_pos - p * (p + 1.0) / 2.0) / (p * negatives as f64)
}

/// F1 of the positive class with `score >= threshold` predicting positive. 0 when undefined.
pub fn f1_at(labels: &[u8], scores: &[f32], threshold: f32) -> f64 {
    let (mut tp, mut predicted, mut actual) = (0usize, 0usize, 0usize);
    for (&l, &s) in labels.iter().zip(scores) {
        let p = s >= threshold;
        predicted += p as usize;
        actual += (l == 1) as usize;
        tp += (p && l == 1) as usize;
    }
    if predicted + actual == 0 {
        0.0
    } else {
        2.0 * tp as f64 / (predicted + actual) as f64
    }
}

pub fn brier(labels: &[u8], scores: &[f32]) -> f64 {
    let sum: f64 = labels
        .iter()
        .zip(scores)
        .map(|(&l, &s)| (s as f64 - l as f64).powi(2))
        .sum();
    sum / labels.len().max(1) as f64
}

/// The four figures on one set of predictions.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Scores {
    pub pr_auc: f64,
    pub roc_auc: f64,
    pub f1: f64,
    pub brier: f64,
}

impl Scores {
    pub fn compute(labels: &[u8], scores: &[f32]) -> Scores {
        Scores {
            pr_auc: average_precision(labels, scores),
            roc_auc: roc_auc(labels, scores),
            f1: f1_at(labels, scores, 0.5),
            brier: brier(labels, scores),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

impl MeanStd {
    pub fn of(xs: &[f64]) -> MeanStd {
        let n = xs.len().max(1) as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        MeanStd {
            mean,
            std: var.sqrt(),
        }
    }
}

/// Mean and std of each metric over bootstrap resamples.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct BootstrapScores {
    pub pr_auc: MeanStd,
    pub roc_auc: MeanStd,
    pub f1: MeanStd,
    pub brier: MeanStd,
    /// The metrics on the whole test set, without resampling.
    pub point: Scores,
}

/// Resample index sets, drawn once so that every model is scored on the same resamples.
pub fn bootstrap_indices(n: usize, resamples: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..resamples)
        .map(|_| (0..n).map(|_| rng.random_range(0..n)).collect())
        .collect()
}

pub fn bootstrap(labels: &[u8], scores: &[f32], indices: &[Vec<usize>]) -> BootstrapScores {
    let mut per: Vec<Scores> = Vec::with_capacity(indices.len());
    for idx in indices {
        let l: Vec<u8> = idx.iter().map(|&i| labels[i]).collect();
        let s: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
        per.push(Scores::compute(&l, &s));
    }
    let col = |f: fn(&Scores) -> f64| MeanStd::of(&per.iter().map(f).collect::<Vec<_>>());
    BootstrapScores {
        pr_auc: col(|s| s.pr_auc),
        roc_auc: col(|s| s.roc_auc),
        f1: col(|s| s.f1),
        brier: col(|s| s.brier),
        point: Scores::compute(labels, scores),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn hand_computed_without_ties() {
        // Sorted by score: 0.9(1) 0.8(0) 0.7(1) 0.6(1) 0.3(0)
        let y = [1, 0, 1, 1, 0];
        let s = [0.9, 0.8, 0.7, 0.6, 0.3];
        // AP = 1/3*1 + 1/3*(2/3) + 1/3*(3/4)
        close(average_precision(&y, &s), 1.0 / 3.0 + 2.0 / 9.0 + 0.25);
        // Pairs (pos > neg): 0.9>0.8,0.9>0.3, 0.7>0.3, 0.6>0.3 = 4 of 6
        close(roc_auc(&y, &s), 4.0 / 6.0);
        // Predicted positive: 0.9, 0.8, 0.7, 0.6 -> tp 3, predicted 4, actual 3
        close(f1_at(&y, &s, 0.5), 6.0 / 7.0);
        // Scores are f32, so the Brier score is exact to f32 precision only.
        assert!((brier(&y, &s) - (0.01 + 0.64 + 0.09 + 0.16 + 0.09) / 5.0).abs() < 1e-6);
    }

    #[test]
    fn hand_computed_with_ties() {
        // Two tied at 0.5 (one pos, one neg), then 0.2 pos.
        let y = [1, 0, 1];
        let s = [0.5, 0.5, 0.2];
        // One threshold step at 0.5: recall 1/2, precision 1/2; then recall 1, precision 2/3.
        close(average_precision(&y, &s), 0.5 * 0.5 + 0.5 * (2.0 / 3.0));
        // Pairs: (0.5 vs 0.5) = 0.5, (0.2 vs 0.5) = 0 -> 0.5 / 2
        close(roc_auc(&y, &s), 0.25);
        // 0.5 counts as positive: predicted 2, tp 1, actual 2
        close(f1_at(&y, &s, 0.5), 0.5);
        // Constant scores: AP is the positive rate, AUC one half.
        close(average_precision(&[1, 0, 0, 1], &[0.3; 4]), 0.5);
        close(roc_auc(&[1, 0, 0, 1], &[0.3; 4]), 0.5);
    }

    #[test]
    fn degenerate_cases() {
        assert!(average_precision(&[0, 0], &[0.1, 0.2]).is_nan());
        assert!(roc_auc(&[1, 1], &[0.1, 0.2]).is_nan());
        close(f1_at(&[0, 0], &[0.1, 0.2], 0.5), 0.0);
    }

    #[test]
    fn bootstrap_is_seeded_and_resamples_with_replacement() {
        let a = bootstrap_indices(50, 20, 7);
        assert_eq!(a, bootstrap_indices(50, 20, 7));
        assert_ne!(a, bootstrap_indices(50, 20, 8));
        assert_eq!(a.len(), 20);
        assert!(a.iter().all(|r| r.len() == 50));
        assert!(a.iter().any(|r| {
            let mut s = r.clone();
            s.sort_unstable();
            s.dedup();
            s.len() < 50
        }));
        let y: Vec<u8> = (0..50).map(|i| (i % 2) as u8).collect();
        let s: Vec<f32> = (0..50).map(|i| i as f32 / 50.0).collect();
        let b = bootstrap(&y, &s, &a);
        assert!(b.roc_auc.std > 0.0);
        close(b.point.roc_auc, roc_auc(&y, &s));
    }
}
