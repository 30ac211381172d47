//! Probabilities that mean what they say, fitted on validation predictions only: a small logistic
//! regression (Newton's method, L2 on the weights) that serves both as Platt scaling (one feature:
//! a model's logit) and as the stacking combiner (one logit per member model); the expected
//! calibration error and reliability bins; the F1-maximising threshold.
//!
//! Platt rather than isotonic: the validation splits hold 117 (phase I) to a few hundred trials,
//! and isotonic regression fitted on so few makes a step function with as many steps as it likes
//! (ties and flat stretches that break the ranking the AUCs read); two parameters cannot overfit
//! that way and never reorder the predictions.

use serde::{Deserialize, Serialize};

/// Probabilities are kept this far from 0 and 1 before taking logits.
const EDGE: f64 = 1e-6;

pub fn logit(p: f32) -> f64 {
    let p = (p as f64).clamp(EDGE, 1.0 - EDGE);
    (p / (1.0 - p)).ln()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// `p = sigmoid(bias + weights · x)`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Logistic {
    pub weights: Vec<f64>,
    pub bias: f64,
}

impl Logistic {
    /// Fits on rows `x` (all of one width) and 0/1 `labels`, minimising the mean log-loss plus
    /// `l2` times the squared weights (not the bias). Newton steps with a line search: the problem
    /// is convex and has a handful of parameters.
    pub fn fit(x: &[Vec<f64>], labels: &[u8], l2: f64) -> Logistic {
        let d = x.first().map_or(0, Vec::len);
        let n = x.len().max(1) as f64;
        let mut theta = vec![0.0; d + 1]; // bias last
        let loss = |theta: &[f64]| -> f64 {
            let mut total = 0.0;
            for (row, &y) in x.iter().zip(labels) {
                let z = theta[d] + row.iter().zip(theta).map(|(a, w)| a * w).sum::<f64>();
                // log(1 + e^z) - y z, stable for large |z|.
                total += z.max(0.0) + (-z.abs()).exp().ln_1p() - y as f64 * z;
            }
            total / n + l2 * theta[..d].iter().map(|w| w * w).sum::<f64>()
        };
        for _ in 0..50 {
            let mut grad = vec![0.0; d + 1];
            let mut hess = vec![vec![0.0; d + 1]; d + 1];
            for (row, &y) in x.iter().zip(labels) {
                let z = theta[d] + row.iter().zip(&theta).map(|(a, w)| a * w).sum::<f64>();
                let p = sigmoid(z);
                let features = row.iter().copied().chain(std::iter::once(1.0));
                let f: Vec<f64> = features.collect();
                for i in 0..=d {
                    grad[i] += (p - y as f64) * f[i] / n;
                    for j in 0..=d {
                        hess[i][j] += p * (1.0 - p) * f[i] * f[j] / n;
                    }
                }
            }
            for i in 0..d {
                grad[i] += 2.0 * l2 * theta[i];
                hess[i][i] += 2.0 * l2;
            }
            // A tiny ridge keeps the system solvable when a feature is constant.
            for (i, row) in hess.iter_mut().enumerate() {
                row[i] += 1e-9;
            }
            let Some(step) = solve(hess, grad.clone()) else {
                break;
            };
            let before = loss(&theta);
            let mut scale = 1.0;
            let mut moved = false;
            for _ in 0..30 {
                let candidate: Vec<f64> = theta
                    .iter()
                    .zip(&step)
                    .map(|(t, s)| t - scale * s)
                    .collect();
                if loss(&candidate) <= before {
                    theta = candidate;
                    moved = true;
                    break;
                }
                scale /= 2.0;
            }
            let size = step.iter().map(|s| s.abs()).fold(0.0, f64::max) * scale;
            if !moved || size < 1e-10 {
                break;
            }
        }
        Logistic {
            bias: theta[d],
            weights: theta[..d].to_vec(),
        }
    }

    pub fn probability(&self, x: &[f64]) -> f32 {
        let z = self.bias + x.iter().zip(&self.weights).map(|(a, w)| a * w).sum::<f64>();
        sigmoid(z) as f32
    }
}

/// Gaussian elimination with partial pivoting; None when the matrix is singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            let (upper, lower) = a.split_at_mut(row);
            for (x, p) in lower[0][col..].iter_mut().zip(&upper[col][col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// Platt scaling: `p' = sigmoid(a · logit(p) + b)`, fitted on validation predictions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Platt {
    pub a: f64,
    pub b: f64,
}

impl Platt {
    /// Unregularised: two parameters, and shrinking `a` would pull every probability to 0.5.
    pub fn fit(scores: &[f32], labels: &[u8]) -> Platt {
        let x: Vec<Vec<f64>> = scores.iter().map(|&p| vec![logit(p)]).collect();
        let fitted = Logistic::fit(&x, labels, 0.0);
        Platt {
            a: fitted.weights[0],
            b: fitted.bias,
        }
    }

    pub fn apply(&self, scores: &[f32]) -> Vec<f32> {
        scores
            .iter()
            .map(|&p| sigmoid(self.a * logit(p) + self.b) as f32)
            .collect()
    }
}

/// Bins of the reliability diagram (equal width over [0, 1]).
pub const RELIABILITY_BINS: usize = 10;

/// One bin of a reliability diagram: predictions in `[lower, upper)` (the last bin includes 1).
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub trials: usize,
    /// Mean predicted probability of the bin's trials (None when empty).
    pub predicted: Option<f64>,
    /// Share of the bin's trials that succeeded.
    pub observed: Option<f64>,
}

pub fn reliability(labels: &[u8], scores: &[f32], bins: usize) -> Vec<ReliabilityBin> {
    let bins = bins.max(1);
    let mut sums = vec![(0usize, 0.0f64, 0usize); bins];
    for (&l, &s) in labels.iter().zip(scores) {
        let k = ((s as f64 * bins as f64) as usize).min(bins - 1);
        sums[k].0 += 1;
        sums[k].1 += s as f64;
        sums[k].2 += l as usize;
    }
    sums.into_iter()
        .enumerate()
        .map(|(k, (n, p, y))| ReliabilityBin {
            lower: k as f64 / bins as f64,
            upper: (k + 1) as f64 / bins as f64,
            trials: n,
            predicted: (n > 0).then(|| p / n as f64),
            observed: (n > 0).then(|| y as f64 / n as f64),
        })
        .collect()
}

/// Expected calibration error: the trial-weighted mean gap between predicted and observed success
/// over equal-width bins.
pub fn ece(labels: &[u8], scores: &[f32], bins: usize) -> f64 {
    let total = labels.len().max(1) as f64;
    reliability(labels, scores, bins)
        .iter()
        .filter_map(|b| Some(b.trials as f64 * (b.predicted? - b.observed?).abs()))
        .sum::<f64>()
        / total
}

/// The threshold that maximises F1 on (validation) predictions: one of the scores themselves.
/// Ties go to the higher threshold, the more conservative call.
pub fn best_f1_threshold(labels: &[u8], scores: &[f32]) -> f32 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]));
    let positives = labels.iter().filter(|&&l| l == 1).count();
    let (mut best, mut best_f1) = (0.5f32, -1.0f64);
    let mut tp = 0usize;
    let mut k = 0;
    // Predict positive for every score >= the k-th highest, a block of equal scores at a time.
    while k < order.len() {
        let s = scores[order[k]];
        while k < order.len() && scores[order[k]] == s {
            tp += labels[order[k]] as usize;
            k += 1;
        }
        let f1 = 2.0 * tp as f64 / (k + positives) as f64;
        if f1 > best_f1 {
            (best, best_f1) = (s, f1);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::f1_at;

    #[test]
    fn logistic_regression_recovers_known_coefficients() {
        // Labels drawn from p = sigmoid(1.5 x - 0.5) on a grid, deterministically: the fraction
        // of successes at each x is the true probability.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..41 {
            let v = -2.0 + i as f64 * 0.1;
            let p = sigmoid(1.5 * v - 0.5);
            let ones = (p * 200.0).round() as usize;
            for k in 0..200 {
                x.push(vec![v]);
                y.push(u8::from(k < ones));
            }
        }
        let m = Logistic::fit(&x, &y, 0.0);
        assert!((m.weights[0] - 1.5).abs() < 0.02, "{m:?}");
        assert!((m.bias + 0.5).abs() < 0.02, "{m:?}");
        // A strong penalty shrinks the weight, not the bias towards zero.
        let shrunk = Logistic::fit(&x, &y, 10.0);
        assert!(shrunk.weights[0].abs() < 0.2, "{shrunk:?}");
    }

    #[test]
    fn platt_scaling_fixes_overconfidence_without_reordering() {
        // A model whose logits are three times too large.
        let true_p: Vec<f64> = (1..100).map(|i| i as f64 / 100.0).collect();
        let mut scores = Vec::new();
        let mut labels = Vec::new();
        for &p in &true_p {
            let z = (p / (1.0 - p)).ln();
            let overconfident = sigmoid(3.0 * z) as f32;
            for k in 0..100 {
                scores.push(overconfident);
                labels.push(u8::from((k as f64) < p * 100.0));
            }
        }
        let platt = Platt::fit(&scores, &labels);
        assert!((platt.a - 1.0 / 3.0).abs() < 0.02, "{platt:?}");
        let calibrated = platt.apply(&scores);
        assert!(ece(&labels, &calibrated, 10) < 0.2 * ece(&labels, &scores, 10));
        for w in calibrated.windows(2) {
            assert!(w[0] <= w[1]);
        }
    }

    #[test]
    fn ece_and_bins_by_hand() {
        let labels = [1, 0, 1, 1];
        let scores = [0.95, 0.85, 0.15, 0.05];
        let bins = reliability(&labels, &scores, 10);
        assert_eq!(bins[9].trials, 1);
        assert_eq!(bins[8].observed, Some(0.0));
        assert_eq!(bins[3].predicted, None);
        // Bin 0: predicted 0.05, observed 1; bin 1: 0.15 vs 1; bin 8: 0.85 vs 0; bin 9: 0.95 vs 1.
        let expected = (0.95 + 0.85 + 0.85 + 0.05) / 4.0;
        assert!((ece(&labels, &scores, 10) - expected).abs() < 1e-6);
    }

    #[test]
    fn the_chosen_threshold_maximises_f1() {
        let labels = [1, 1, 0, 1, 0, 0, 1, 0];
        let scores = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1];
        let t = best_f1_threshold(&labels, &scores);
        let best = scores
            .iter()
            .map(|&s| f1_at(&labels, &scores, s))
            .fold(0.0, f64::max);
        assert_eq!(f1_at(&labels, &scores, t), best);
        assert_eq!(t, 0.6);
    }
}
