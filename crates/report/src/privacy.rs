//! Distance to the closest record (DCR): for each synthetic trial, 1 - (cosine to its nearest real
//! trial). Compared with the same distance for held-out real trials to the real reference set: a
//! synthetic set that sits closer to the real data than real data does to itself is memorising.

use serde::Serialize;

use crate::cosine;
use crate::similarity::Summary;

/// For each query, 1 - max cosine to any reference vector (and which one it was).
pub fn closest(queries: &[Vec<f32>], reference: &[Vec<f32>]) -> Vec<(f32, usize)> {
    queries
        .iter()
        .map(|q| {
            reference
                .iter()
                .enumerate()
                .map(|(i, r)| (1.0 - cosine(q, r), i))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap_or((f32::NAN, usize::MAX))
        })
        .collect()
}

#[derive(Clone, Debug, Serialize)]
pub struct PrivacyReport {
    /// DCR of the synthetic trials to the reference (training) real trials.
    pub synthetic_dcr: Summary,
    /// DCR of held-out real trials to the same reference: the baseline.
    pub holdout_dcr: Summary,
    /// Share of synthetic trials whose cosine to some real trial (reference or held-out) is above the
    /// near-copy threshold.
    pub near_copy_share: f64,
    pub near_copy_cosine: f32,
    /// Median synthetic DCR below the median held-out DCR: a sign of memorisation.
    pub closer_than_real: bool,
    /// The distances themselves (for the histogram).
    #[serde(skip)]
    pub synthetic_distances: Vec<f32>,
    #[serde(skip)]
    pub holdout_distances: Vec<f32>,
}

pub fn privacy(
    synthetic: &[Vec<f32>],
    reference: &[Vec<f32>],
    holdout: &[Vec<f32>],
    near_copy_cosine: f32,
) -> PrivacyReport {
    let syn: Vec<f32> = closest(synthetic, reference)
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let hold: Vec<f32> = closest(holdout, reference)
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let all_real: Vec<Vec<f32>> = reference.iter().chain(holdout).cloned().collect();
    let near = closest(synthetic, &all_real)
        .into_iter()
        .filter(|&(d, _)| 1.0 - d > near_copy_cosine)
        .count();
    let synthetic_dcr = Summary::of(&syn);
    let holdout_dcr = Summary::of(&hold);
    PrivacyReport {
        closer_than_real: synthetic_dcr.median < holdout_dcr.median,
        near_copy_share: near as f64 / syn.len().max(1) as f64,
        near_copy_cosine,
        synthetic_dcr,
        holdout_dcr,
        synthetic_distances: syn,
        holdout_distances: hold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn copies_have_zero_distance_and_are_flagged() {
        let reference = vec![unit(&[1.0, 0.0, 0.0]), unit(&[0.0, 1.0, 0.0])];
        // One exact copy, one at 45 degrees to the first reference vector.
        let synthetic = vec![reference[0].clone(), unit(&[1.0, 0.0, 1.0])];
        let c = closest(&synthetic, &reference);
        assert_eq!(c[0].1, 0);
        assert!(c[0].0.abs() < 1e-6);
        assert!((c[1].0 - (1.0 - std::f32::consts::FRAC_1_SQRT_2)).abs() < 1e-6);
        let holdout = vec![unit(&[0.0, 0.0, 1.0]), unit(&[0.0, 1.0, 1.0])];
        let r = privacy(&synthetic, &reference, &holdout, 0.97);
        assert!((r.near_copy_share - 0.5).abs() < 1e-12);
        // Holdout DCRs are 1.0 and 1 - 1/sqrt(2); synthetic 0 and 1 - 1/sqrt(2): closer than real.
        assert!(r.closer_than_real);
        let far = privacy(&holdout, &reference, &synthetic, 0.97);
        assert!(!far.closer_than_real);
        assert_eq!(
            far.near_copy_share, 0.0,
            "nothing within 0.97 of a real trial"
        );
        // A copy of a held-out trial is a near copy too (it is still real data).
        let copy_of_holdout = privacy(&[holdout[0].clone()], &reference, &holdout, 0.97);
        assert_eq!(copy_of_holdout.near_copy_share, 1.0);
    }
}
