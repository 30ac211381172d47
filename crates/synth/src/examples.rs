//! Choosing the real trials shown to the LLM for a cell. The reference implementation samples 3
//! trials of the drug at random; here:
//!
//! 1. Candidates are real trials of the requested drug with the target label, from splits that are
//!    allowed (never a test split: [`RealCorpus`] refuses to index it for examples at all).
//! 2. The query is the centroid of those candidates' embeddings (the typical trial of this drug);
//!    candidates of the requested phase get a small bonus.
//! 3. Examples are picked by maximal marginal relevance, so they are similar to the query but not to
//!    each other, and a candidate closer than `near_duplicate` to one already picked is skipped.
//! 4. When the drug has fewer than k such trials, the nearest allowed trials of the same label
//!    (similar condition, phase and criteria, by embedding) fill the remaining places.

use trialforge_retrieve::VectorIndex;
use trialforge_trial::{Split, Trial};

use crate::plan::Cell;

pub struct RealCorpus<'a> {
    pub trials: &'a [Trial],
    pub index: VectorIndex,
    /// Which trials may appear in prompts.
    allowed: Vec<bool>,
}

/// A chosen example: its position in the corpus and why it was picked.
#[derive(Clone, Debug, PartialEq)]
pub struct Chosen {
    pub index: usize,
    pub of_drug: bool,
    pub score: f32,
}

impl<'a> RealCorpus<'a> {
    /// `vectors[i]` embeds `trials[i]`. Trials in `exclude` splits are never used as examples.
    pub fn new(trials: &'a [Trial], index: VectorIndex, exclude: &[Split]) -> Self {
        let allowed = trials.iter().map(|t| !exclude.contains(&t.split)).collect();
        RealCorpus {
            trials,
            index,
            allowed,
        }
    }

    pub fn is_allowed(&self, i: usize) -> bool {
        self.allowed[i]
    }

    fn has_drug(t: &Trial, drug: &str) -> bool {
        t.protocol
            .drugs
            .iter()
            .any(|d| d.name.trim().eq_ignore_ascii_case(drug))
    }

    /// Up to `k` examples for `cell` (see the module docs).
    pub fn examples(&self, cell: &Cell, k: usize, near_duplicate: f32) -> Vec<Chosen> {
        let dim = self.index.dim();
        let of_drug: Vec<usize> = (0..self.trials.len())
            .filter(|&i| {
                let t = &self.trials[i];
                self.allowed[i] && t.label == Some(cell.label) && Self::has_drug(t, &cell.drug)
            })
            .collect();
        if of_drug.is_empty() {
            return Vec::new();
        }
        let mut query = vec![0.0f32; dim];
        for &i in &of_drug {
            for (q, x) in query.iter_mut().zip(self.index.vector(i)) {
                *q += x;
            }
        }
        trialforge_encode::normalise(&mut query);

        let relevance = |i: usize| {
            let cos: f32 = self
                .index
                .vector(i)
                .iter()
                .zip(&query)
                .map(|(a, b)| a * b)
                .sum();
            let phase_bonus = if self.trials[i].protocol.phases.contains(&cell.phase) {
                0.05
            } else {
                0.0
            };
            cos + phase_bonus
        };
        let mut chosen = mmr(&of_drug, k, near_duplicate, &relevance, |a, b| {
            self.cos(a, b)
        })
        .into_iter()
        .map(|(index, score)| Chosen {
            index,
            of_drug: true,
            score,
        })
        .collect::<Vec<_>>();
        if chosen.len() < k {
            let taken: Vec<usize> = chosen.iter().map(|c| c.index).collect();
            let fill_pool: Vec<usize> = self
                .index
                .search_filtered(&query, 50, |i| {
                    self.allowed[i]
                        && self.trials[i].label == Some(cell.label)
                        && !of_drug.contains(&i)
                })
                .unwrap_or_default()
                .into_iter()
                .map(|h| h.index)
                .collect();
            let fill = mmr_seeded(
                &fill_pool,
                &taken,
                k - chosen.len(),
                near_duplicate,
                &relevance,
                |a, b| self.cos(a, b),
            );
            chosen.extend(fill.into_iter().map(|(index, score)| Chosen {
                index,
                of_drug: false,
                score,
            }));
        }
        chosen
    }

    /// The condition names a cell may use under `--conditions-from-examples`: those of the allowed
    /// real trials of the drug (either label) and of the chosen examples, first spelling of each
    /// normalised name, in corpus order.
    pub fn conditions_for(&self, cell: &Cell, chosen: &[Chosen]) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let of_drug = (0..self.trials.len())
            .filter(|&i| self.allowed[i] && Self::has_drug(&self.trials[i], &cell.drug));
        let mut out = Vec::new();
        for i in chosen.iter().map(|c| c.index).chain(of_drug) {
            for c in &self.trials[i].protocol.conditions {
                let key = crate::realism::normalise(c);
                if !key.is_empty() && seen.insert(key) {
                    out.push(c.trim().to_string());
                }
            }
        }
        out
    }

    fn cos(&self, a: usize, b: usize) -> f32 {
        self.index
            .vector(a)
            .iter()
            .zip(self.index.vector(b))
            .map(|(x, y)| x * y)
            .sum()
    }
}

fn mmr(
    pool: &[usize],
    k: usize,
    dup: f32,
    rel: &dyn Fn(usize) -> f32,
    cos: impl Fn(usize, usize) -> f32,
) -> Vec<(usize, f32)> {
    mmr_seeded(pool, &[], k, dup, rel, cos)
}

/// Maximal marginal relevance (lambda 0.7) over `pool`, given items already `taken`.
fn mmr_seeded(
    pool: &[usize],
    taken: &[usize],
    k: usize,
    dup: f32,
    rel: &dyn Fn(usize) -> f32,
    cos: impl Fn(usize, usize) -> f32,
) -> Vec<(usize, f32)> {
    const LAMBDA: f32 = 0.7;
    let mut selected: Vec<usize> = taken.to_vec();
    let mut out = Vec::new();
    while out.len() < k {
        let best = pool
            .iter()
            .filter(|i| !selected.contains(i))
            .filter(|&&i| selected.iter().all(|&s| cos(i, s) <= dup))
            .map(|&i| {
                let redundancy = selected.iter().map(|&s| cos(i, s)).fold(0.0f32, f32::max);
                (i, LAMBDA * rel(i) - (1.0 - LAMBDA) * redundancy)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        match best {
            Some((i, score)) => {
                selected.push(i);
                out.push((i, score));
            }
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use trialforge_trial::{Drug, Label, Phase, Protocol, Source};

    fn t(drug: &str, label: Label, split: Split) -> Trial {
        Trial {
            id: "NCT00000000".into(),
            source: Source::Ctgov,
            protocol: Protocol {
                phases: vec![Phase::Phase1],
                drugs: vec![Drug {
                    name: drug.into(),
                    smiles: None,
                }],
                ..Default::default()
            },
            label: Some(label),
            split,
            post_hoc: Default::default(),
        }
    }

    fn unit(v: [f32; 3]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn never_a_test_trial_no_near_duplicates_and_fill_from_neighbours() {
        use Label::*;
        let trials = vec![
            t("x", Success, Split::Train), // 0
            t("x", Success, Split::Train), // 1: same vector as 0
            t("x", Success, Split::Test),  // 2: test, must never appear
            t("x", Failure, Split::Train), // 3: wrong label
            t("y", Success, Split::Train), // 4: neighbour for filling
            t("x", Success, Split::Valid), // 5
        ];
        let vecs = vec![
            unit([1.0, 0.0, 0.0]),
            unit([1.0, 0.0, 0.0]),
            unit([1.0, 0.01, 0.0]),
            unit([1.0, 0.0, 0.0]),
            unit([0.8, 0.6, 0.0]),
            unit([0.6, 0.0, 0.8]),
        ];
        let corpus = RealCorpus::new(
            &trials,
            VectorIndex::from_vectors(3, &vecs).unwrap(),
            &[Split::Test],
        );
        let cell = Cell {
            index: 0,
            drug: "X".into(),
            label: Success,
            phase: Phase::Phase1,
        };
        let ex = corpus.examples(&cell, 3, 0.95);
        let idx: Vec<usize> = ex.iter().map(|c| c.index).collect();
        assert!(!idx.contains(&2), "test trial used: {idx:?}");
        assert!(!idx.contains(&3), "wrong label used: {idx:?}");
        assert!(
            !(idx.contains(&0) && idx.contains(&1)),
            "near-duplicates both used: {idx:?}"
        );
        assert_eq!(idx.len(), 3);
        assert!(
            ex.iter().any(|c| c.index == 4 && !c.of_drug),
            "filled from a neighbour: {ex:?}"
        );
        assert!(ex.iter().filter(|c| c.of_drug).count() == 2);
        // Without a test exclusion the test trial becomes eligible: the filter is what keeps it out.
        let open = RealCorpus::new(&trials, VectorIndex::from_vectors(3, &vecs).unwrap(), &[]);
        assert!(open.is_allowed(2) && !corpus.is_allowed(2));
    }
}
