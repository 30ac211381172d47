//! Realism of a synthetic set beside real trials, field by field: criteria item counts, enrollment
//! by phase, and lexical diversity (distinct word n-grams over equal-sized samples, so the larger
//! set is not favoured). Lexical realism shares come from the caller (the generation gate's
//! vocabulary) and are summarised here.

use std::collections::{BTreeMap, HashSet};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use trialforge_trial::{Phase, Protocol};

use crate::similarity::Summary;

/// Distinct n-grams over a set's criteria.
#[derive(Clone, Debug, Serialize)]
pub struct Diversity {
    /// Trials the figures are over.
    pub trials: usize,
    pub words: usize,
    /// Distinct words / words, distinct word pairs / word pairs.
    pub distinct_1: f64,
    pub distinct_2: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SideStats {
    pub trials: usize,
    pub inclusion_items: Summary,
    pub exclusion_items: Summary,
    /// Enrollment by phase (the latest phase of a multi-phase trial), over trials that carry one.
    pub enrollment_by_phase: BTreeMap<String, Summary>,
    pub diversity: Diversity,
}

#[derive(Clone, Debug, Serialize)]
pub struct RealismStats {
    pub real: SideStats,
    pub synthetic: SideStats,
}

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

/// Distinct-1 and distinct-2 of the criteria items of `protocols`.
pub fn diversity(protocols: &[&Protocol]) -> Diversity {
    let (mut total1, mut total2) = (0usize, 0usize);
    let (mut seen1, mut seen2) = (HashSet::new(), HashSet::new());
    for p in protocols {
        for item in p.criteria.inclusion.iter().chain(&p.criteria.exclusion) {
            let ws = words(item);
            total1 += ws.len();
            total2 += ws.len().saturating_sub(1);
            for pair in ws.windows(2) {
                seen2.insert(format!("{} {}", pair[0], pair[1]));
            }
            seen1.extend(ws);
        }
    }
    let ratio = |a: usize, b: usize| if b > 0 { a as f64 / b as f64 } else { f64::NAN };
    Diversity {
        trials: protocols.len(),
        words: total1,
        distinct_1: ratio(seen1.len(), total1),
        distinct_2: ratio(seen2.len(), total2),
    }
}

fn side(protocols: &[&Protocol], diversity_sample: &[&Protocol]) -> SideStats {
    let counts =
        |f: fn(&Protocol) -> usize| -> Vec<f32> { protocols.iter().map(|p| f(p) as f32).collect() };
    let mut enrollment: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for p in protocols {
        let phase = p
            .phases
            .iter()
            .copied()
            .filter(|ph| *ph != Phase::NotApplicable)
            .max();
        if let (Some(e), Some(ph)) = (p.enrollment, phase) {
            enrollment.entry(ph.to_string()).or_default().push(e as f32);
        }
    }
    SideStats {
        trials: protocols.len(),
        inclusion_items: Summary::of(&counts(|p| p.criteria.inclusion.len())),
        exclusion_items: Summary::of(&counts(|p| p.criteria.exclusion.len())),
        enrollment_by_phase: enrollment
            .into_iter()
            .map(|(k, v)| (k, Summary::of(&v)))
            .collect(),
        diversity: diversity(diversity_sample),
    }
}

/// Real beside synthetic. Diversity is computed over equal numbers of trials: all synthetic ones
/// (at most the real count) and a seeded sample of as many real ones.
pub fn realism_stats(real: &[&Protocol], synthetic: &[&Protocol], seed: u64) -> RealismStats {
    let n = synthetic.len().min(real.len());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut real_sample: Vec<&Protocol> = real.to_vec();
    real_sample.shuffle(&mut rng);
    real_sample.truncate(n);
    let mut synthetic_sample: Vec<&Protocol> = synthetic.to_vec();
    synthetic_sample.shuffle(&mut rng);
    synthetic_sample.truncate(n);
    RealismStats {
        real: side(real, &real_sample),
        synthetic: side(synthetic, &synthetic_sample),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trialforge_trial::Criteria;

    #[test]
    fn repetitive_text_has_low_diversity_and_counts_are_per_trial() {
        let varied = Protocol {
            criteria: Criteria::from_raw(
                "Inclusion Criteria:\n- adults aged 18 to 65\n- measurable disease by RECIST\nExclusion Criteria:\n- pregnancy",
            ),
            enrollment: Some(40),
            phases: vec![Phase::Phase1, Phase::Phase2],
            ..Default::default()
        };
        let repeated = Protocol {
            criteria: Criteria::from_raw(
                "Inclusion Criteria:\n- multiple myeloma\n- multiple myeloma\nExclusion Criteria:\n- multiple myeloma",
            ),
            ..Default::default()
        };
        let s = realism_stats(&[&varied], &[&repeated], 0);
        assert!(s.real.diversity.distinct_1 > s.synthetic.diversity.distinct_1);
        assert!((s.synthetic.diversity.distinct_2 - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.real.inclusion_items.mean, 2.0);
        assert_eq!(s.real.enrollment_by_phase["Phase 2"].median, 40.0);
        assert!(s.synthetic.enrollment_by_phase.is_empty());
    }
}
