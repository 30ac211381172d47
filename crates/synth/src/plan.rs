//! The drug and label plan: which (drug, target label, phase) cells to generate.
//!
//! The drug pool is built from the real corpus, test splits excluded: a drug (by lower-cased name)
//! is eligible when it has a SMILES string and at least `min_per_label` real trials of each label.
//! Default balance: labels alternate (half successes, half failures); drugs are taken round-robin in
//! a seeded random order, so every eligible drug is used about equally; the phase of a cell is the
//! drug's most frequent phase among its real trials of that label. `--plan FILE` replaces all this
//! with the user's own cells (JSONL, one `{"drug", "label", "phase"}` object per line).

use std::collections::BTreeMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use trialforge_trial::{Label, Phase, Split, Trial};

/// One thing to generate: a trial of `drug` with outcome `label` in `phase`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// Position in the plan; identifies the cell across restarts.
    #[serde(default)]
    pub index: usize,
    pub drug: String,
    pub label: Label,
    pub phase: Phase,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DrugStats {
    pub name: String,
    pub smiles: Option<String>,
    pub success: usize,
    pub failure: usize,
    /// Phase counts per label (index 0 = failure, 1 = success).
    #[serde(skip)]
    phases: [BTreeMap<Phase, usize>; 2],
}

/// Drug statistics over the trials a plan may draw on (labelled, split not excluded).
pub fn drug_pool(corpus: &[Trial], exclude: &[Split]) -> BTreeMap<String, DrugStats> {
    let mut pool: BTreeMap<String, DrugStats> = BTreeMap::new();
    for t in corpus.iter().filter(|t| !exclude.contains(&t.split)) {
        let Some(label) = t.label else { continue };
        for d in &t.protocol.drugs {
            let key = d.key();
            if key.is_empty() || key == "placebo" {
                continue;
            }
            let s = pool.entry(key.clone()).or_insert_with(|| DrugStats {
                name: key,
                ..Default::default()
            });
            match label {
                Label::Success => s.success += 1,
                Label::Failure => s.failure += 1,
            }
            if let Some(&ph) = t.protocol.phases.first() {
                *s.phases[u8::from(label) as usize].entry(ph).or_default() += 1;
            }
        }
    }
    let owners = smiles_owners(corpus.iter().filter(|t| !exclude.contains(&t.split)));
    for (drug, smiles) in owners {
        if let Some(s) = pool.get_mut(&drug) {
            s.smiles = Some(smiles);
        }
    }
    pool
}

/// Each drug's SMILES, voted over the trials. TOP pairs drugs and SMILES by list position, but its
/// SMILES lists skip drugs without one and repeat others (in phase I train, 180 of 1,044 rows have
/// lists of different lengths, and equal lengths can still be shifted: `bez235, prednisone,
/// abiraterone acetate` comes with abiraterone's SMILES twice). So a SMILES string belongs to the
/// drug it is most often paired with (pairings in one-drug trials, which cannot be shifted, count
/// three times), and each drug takes the most frequent SMILES it owns; a drug that owns none has none.
fn smiles_owners<'a>(trials: impl Iterator<Item = &'a Trial>) -> BTreeMap<String, String> {
    let mut votes: BTreeMap<(String, String), usize> = BTreeMap::new();
    for t in trials {
        let drugs: Vec<_> = t
            .protocol
            .drugs
            .iter()
            .filter(|d| d.key() != "placebo")
            .collect();
        let weight = if drugs.len() == 1 { 3 } else { 1 };
        for d in drugs {
            if let Some(sm) = d.smiles.as_ref().filter(|s| !s.trim().is_empty()) {
                *votes.entry((d.key(), sm.clone())).or_default() += weight;
            }
        }
    }
    // SMILES -> (votes, drug) of its most frequent drug; ties go to the first name.
    let mut owner: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for ((drug, sm), &n) in &votes {
        let e = owner.entry(sm.as_str()).or_insert((0, drug.as_str()));
        if n > e.0 {
            *e = (n, drug.as_str());
        }
    }
    let mut best: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for ((drug, sm), &n) in &votes {
        if owner.get(sm.as_str()).map(|o| o.1) != Some(drug.as_str()) {
            continue;
        }
        let e = best.entry(drug.clone()).or_insert((0, String::new()));
        if n > e.0 {
            *e = (n, sm.clone());
        }
    }
    best.into_iter().map(|(d, (_, sm))| (d, sm)).collect()
}

impl DrugStats {
    fn eligible(&self, min_per_label: usize) -> bool {
        self.smiles.is_some() && self.success >= min_per_label && self.failure >= min_per_label
    }

    fn main_phase(&self, label: Label) -> Phase {
        self.phases[u8::from(label) as usize]
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map_or(Phase::Phase1, |(&p, _)| p)
    }
}

/// `n` cells, balanced as the module docs say. Empty when no drug is eligible.
pub fn default_plan(
    pool: &BTreeMap<String, DrugStats>,
    n: usize,
    min_per_label: usize,
    seed: u64,
) -> Vec<Cell> {
    let mut drugs: Vec<&DrugStats> = pool
        .values()
        .filter(|d| d.eligible(min_per_label))
        .collect();
    if drugs.is_empty() {
        return Vec::new();
    }
    drugs.shuffle(&mut StdRng::seed_from_u64(seed));
    (0..n)
        .map(|i| {
            let d = drugs[(i / 2) % drugs.len()];
            let label = if i % 2 == 0 {
                Label::Success
            } else {
                Label::Failure
            };
            Cell {
                index: i,
                drug: d.name.clone(),
                label,
                phase: d.main_phase(label),
            }
        })
        .collect()
}

/// Reads a plan file: JSONL of `{"drug": "...", "label": 0|1, "phase": "PHASE2"}`.
pub fn read_plan(path: &Path) -> Result<Vec<Cell>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .enumerate()
        .map(|(index, (line, l))| {
            let mut c: Cell = serde_json::from_str(l).map_err(|e| {
                format!(
                    "{}:{}: expected {{\"drug\": NAME, \"label\": 0|1, \"phase\": \"PHASE1\"..}}: {e}",
                    path.display(),
                    line + 1
                )
            })?;
            c.index = index;
            Ok(c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use trialforge_trial::{Drug, Protocol, Source};

    fn trial(drug: &str, label: Label, split: Split, phase: Phase) -> Trial {
        Trial {
            id: "NCT00000000".into(),
            source: Source::Ctgov,
            protocol: Protocol {
                phases: vec![phase],
                drugs: vec![
                    Drug {
                        name: drug.into(),
                        smiles: Some("C".into()),
                    },
                    Drug {
                        name: "Placebo".into(),
                        smiles: None,
                    },
                ],
                ..Default::default()
            },
            label: Some(label),
            split,
            post_hoc: Default::default(),
        }
    }

    #[test]
    fn pool_skips_test_splits_and_placebo_and_plan_balances() {
        use Label::*;
        let corpus = vec![
            trial("A", Success, Split::Train, Phase::Phase1),
            trial("a", Failure, Split::Train, Phase::Phase2),
            trial("A", Failure, Split::Valid, Phase::Phase2),
            trial("B", Success, Split::Train, Phase::Phase1),
            trial("B", Failure, Split::Test, Phase::Phase1), // test: not counted
        ];
        let pool = drug_pool(&corpus, &[Split::Test]);
        assert!(!pool.contains_key("placebo"));
        assert_eq!((pool["a"].success, pool["a"].failure), (1, 2));
        assert_eq!((pool["b"].success, pool["b"].failure), (1, 0));
        let plan = default_plan(&pool, 4, 1, 0);
        assert_eq!(plan.len(), 4);
        assert!(
            plan.iter().all(|c| c.drug == "a"),
            "b has no non-test failure"
        );
        assert_eq!(plan.iter().filter(|c| c.label == Success).count(), 2);
        assert_eq!(plan[1].phase, Phase::Phase2, "failures of a are phase 2");
        assert_eq!(plan[0].phase, Phase::Phase1);
        assert!(default_plan(&pool, 4, 5, 0).is_empty());
    }

    #[test]
    fn smiles_go_to_the_drug_they_are_most_often_paired_with() {
        let with = |pairs: &[(&str, Option<&str>)]| Trial {
            protocol: Protocol {
                drugs: pairs
                    .iter()
                    .map(|(n, s)| Drug {
                        name: n.to_string(),
                        smiles: s.map(String::from),
                    })
                    .collect(),
                ..Default::default()
            },
            ..trial("x", Label::Success, Split::Train, Phase::Phase1)
        };
        let corpus = vec![
            with(&[("Abiraterone", Some("ABI"))]),
            // TOP-style shift: prednisone paired with abiraterone's SMILES.
            with(&[("prednisone", Some("ABI")), ("abiraterone", Some("ABI"))]),
            with(&[("prednisone", Some("ABI")), ("abiraterone", Some("ABI"))]),
            with(&[("prednisone", Some("PRED"))]),
            // Only ever seen shifted onto another drug's SMILES: none.
            with(&[("bez235", Some("ABI")), ("abiraterone", Some("ABI"))]),
        ];
        let owners = smiles_owners(corpus.iter());
        assert_eq!(owners["abiraterone"], "ABI");
        assert_eq!(owners["prednisone"], "PRED");
        assert!(!owners.contains_key("bez235"));
        let pool = drug_pool(&corpus, &[]);
        assert_eq!(pool["prednisone"].smiles.as_deref(), Some("PRED"));
        assert_eq!(pool["bez235"].smiles, None);
    }

    #[test]
    fn plan_file_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.jsonl");
        std::fs::write(
            &p,
            "{\"drug\":\"x\",\"label\":1,\"phase\":\"PHASE2\"}\n{\"drug\":\"y\"}\n",
        )
        .unwrap();
        let err = read_plan(&p).unwrap_err();
        assert!(err.contains("plan.jsonl:2"), "{err}");
        std::fs::write(&p, "{\"drug\":\"x\",\"label\":1,\"phase\":\"PHASE2\"}\n").unwrap();
        assert_eq!(read_plan(&p).unwrap()[0].drug, "x");
    }
}
