//! Cosine similarities of random pairs, as the retrieval-reasoning paper draws them (10,000 pairs
//! within a set, 1,000 across, fixed seed), and their summary statistics.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::cosine;

/// Cosines of `n` random pairs of distinct items within `set` (empty with fewer than two items).
pub fn within_pairs(set: &[Vec<f32>], n: usize, seed: u64) -> Vec<f32> {
    if set.len() < 2 {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let i = rng.random_range(0..set.len());
            let mut j = rng.random_range(0..set.len() - 1);
            if j >= i {
                j += 1;
            }
            cosine(&set[i], &set[j])
        })
        .collect()
}

/// Cosines of `n` random (a, b) pairs across two sets.
pub fn across_pairs(a: &[Vec<f32>], b: &[Vec<f32>], n: usize, seed: u64) -> Vec<f32> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            cosine(
                &a[rng.random_range(0..a.len())],
                &b[rng.random_range(0..b.len())],
            )
        })
        .collect()
}

/// Mean, population standard deviation and quantiles (linear interpolation, as numpy's default).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub q05: f64,
    pub q25: f64,
    pub median: f64,
    pub q75: f64,
    pub q95: f64,
    pub max: f64,
}

pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Summary {
    pub fn of(values: &[f32]) -> Summary {
        let mut v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n.max(1) as f64;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n.max(1) as f64).sqrt();
        Summary {
            n,
            mean: if n == 0 { f64::NAN } else { mean },
            std: if n == 0 { f64::NAN } else { std },
            min: quantile(&v, 0.0),
            q05: quantile(&v, 0.05),
            q25: quantile(&v, 0.25),
            median: quantile(&v, 0.5),
            q75: quantile(&v, 0.75),
            q95: quantile(&v, 0.95),
            max: quantile(&v, 1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basis(n: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|i| (0..n).map(|j| (i == j) as u8 as f32).collect())
            .collect()
    }

    #[test]
    fn known_answers_on_constructed_vectors() {
        // Orthonormal vectors: every distinct pair has cosine 0.
        let b = basis(5);
        assert!(within_pairs(&b, 1000, 1).iter().all(|&c| c == 0.0));
        // Identical vectors: every pair has cosine 1.
        let same = vec![vec![0.6f32, 0.8]; 4];
        assert!(within_pairs(&same, 100, 1)
            .iter()
            .all(|&c| (c - 1.0).abs() < 1e-6));
        // Across: a is e0, b is half e0 and half e1; expected cosine is the share of e0 in b.
        let a = vec![vec![1.0f32, 0.0]];
        let bset = vec![vec![1.0f32, 0.0], vec![0.0, 1.0]];
        let c = across_pairs(&a, &bset, 10_000, 7);
        let m = Summary::of(&c).mean;
        assert!((m - 0.5).abs() < 0.02, "{m}");
        assert_eq!(c, across_pairs(&a, &bset, 10_000, 7), "seeded");
        assert!(within_pairs(&a, 10, 1).is_empty());
    }

    #[test]
    fn summary_matches_hand_computation() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.n, 4);
        assert!((s.mean - 2.5).abs() < 1e-12);
        assert!((s.std - 1.25f64.sqrt()).abs() < 1e-12);
        assert!((s.median - 2.5).abs() < 1e-12);
        assert!((s.q25 - 1.75).abs() < 1e-12); // numpy: np.quantile([1,2,3,4], .25) == 1.75
        assert!((s.q95 - 3.85).abs() < 1e-12);
        assert_eq!((s.min, s.max), (1.0, 4.0));
    }
}
