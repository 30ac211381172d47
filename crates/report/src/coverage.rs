//! What a set of trials covers: drugs, ICD-10 chapters, phases, labels, as counts.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use trialforge_trial::{Label, Trial};

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Coverage {
    pub trials: usize,
    pub labels: BTreeMap<String, usize>,
    pub phases: BTreeMap<String, usize>,
    /// ICD-10 chapters by the first letter of the code (`C` = neoplasms, ...).
    pub icd_chapters: BTreeMap<String, usize>,
    /// Trials whose chapters came from their condition names (see [`condition_chapters`]).
    pub chapters_from_condition_names: usize,
    pub drugs: BTreeMap<String, usize>,
}

/// The main ICD-10 chapter of each condition name in `real`, learnt where a trial's conditions and
/// code lists line up (one list per condition, or a single condition). Synthetic trials from
/// `generate` name conditions but carry no codes; this gives them chapters.
pub fn condition_chapters(real: &[Trial]) -> HashMap<String, String> {
    let mut votes: HashMap<String, BTreeMap<String, usize>> = HashMap::new();
    for t in real {
        let p = &t.protocol;
        let pairs: Vec<(&String, Vec<&String>)> = if p.conditions.len() == p.icd_codes.len() {
            p.conditions
                .iter()
                .zip(&p.icd_codes)
                .map(|(c, codes)| (c, codes.iter().collect()))
                .collect()
        } else if p.conditions.len() == 1 {
            vec![(&p.conditions[0], p.icd_codes.iter().flatten().collect())]
        } else {
            continue;
        };
        for (condition, codes) in pairs {
            for code in codes {
                if let Some(ch) = code.chars().next() {
                    *votes
                        .entry(condition.trim().to_lowercase())
                        .or_default()
                        .entry(ch.to_ascii_uppercase().to_string())
                        .or_default() += 1;
                }
            }
        }
    }
    votes
        .into_iter()
        .filter_map(|(c, v)| {
            v.into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|(ch, _)| (c, ch))
        })
        .collect()
}

pub fn coverage(trials: &[Trial]) -> Coverage {
    coverage_with(trials, &HashMap::new())
}

/// Like [`coverage`]; a trial without ICD codes gets the chapters of its condition names in `lookup`.
pub fn coverage_with(trials: &[Trial], lookup: &HashMap<String, String>) -> Coverage {
    let mut c = Coverage {
        trials: trials.len(),
        ..Default::default()
    };
    for t in trials {
        let label = match t.label {
            Some(Label::Success) => "success",
            Some(Label::Failure) => "failure",
            None => "unlabelled",
        };
        *c.labels.entry(label.into()).or_default() += 1;
        let phases: Vec<String> = t.protocol.phases.iter().map(ToString::to_string).collect();
        *c.phases
            .entry(if phases.is_empty() {
                "none".into()
            } else {
                phases.join(" / ")
            })
            .or_default() += 1;
        let mut chapters: Vec<String> = t
            .protocol
            .icd_codes
            .iter()
            .flatten()
            .filter_map(|code| code.chars().next())
            .map(|ch| ch.to_ascii_uppercase().to_string())
            .collect();
        if chapters.is_empty() {
            chapters = t
                .protocol
                .conditions
                .iter()
                .filter_map(|c| lookup.get(&c.trim().to_lowercase()).cloned())
                .collect();
            if !chapters.is_empty() {
                c.chapters_from_condition_names += 1;
            }
        }
        chapters.sort();
        chapters.dedup();
        for ch in chapters {
            *c.icd_chapters.entry(ch).or_default() += 1;
        }
        for d in &t.protocol.drugs {
            *c.drugs.entry(d.key()).or_default() += 1;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use trialforge_trial::{Protocol, Source, Split};

    fn trial(conditions: &[&str], codes: &[&[&str]], label: Option<Label>) -> Trial {
        Trial {
            id: "t".into(),
            source: Source::Ctgov,
            protocol: Protocol {
                conditions: conditions.iter().map(|s| s.to_string()).collect(),
                icd_codes: codes
                    .iter()
                    .map(|l| l.iter().map(|s| s.to_string()).collect())
                    .collect(),
                ..Default::default()
            },
            label,
            split: Split::None,
            post_hoc: Default::default(),
        }
    }

    #[test]
    fn synthetic_trials_get_chapters_from_real_condition_names() {
        let real = vec![
            trial(&["Breast Cancer"], &[&["C50.9", "Z85.3"], &["C50.1"]], None),
            trial(&["asthma", "copd"], &[&["J45.9"], &["J44.9"]], None),
            // Three conditions, one code list: not aligned, not learnt from.
            trial(&["a", "b", "c"], &[&["K50.0"]], None),
        ];
        let lookup = condition_chapters(&real);
        assert_eq!(lookup["breast cancer"], "C");
        assert_eq!(
            (lookup["asthma"].as_str(), lookup["copd"].as_str()),
            ("J", "J")
        );
        assert!(!lookup.contains_key("a"));

        let synthetic = vec![
            trial(&["breast cancer "], &[], Some(Label::Success)),
            trial(&["COPD", "unknown disease"], &[], Some(Label::Failure)),
            trial(&["unknown disease"], &[], Some(Label::Failure)),
        ];
        let c = coverage_with(&synthetic, &lookup);
        assert_eq!(c.icd_chapters.get("C"), Some(&1));
        assert_eq!(c.icd_chapters.get("J"), Some(&1));
        assert_eq!(c.chapters_from_condition_names, 2);
        assert_eq!((c.labels["success"], c.labels["failure"]), (1, 2));
        // Without the lookup, no chapters.
        assert!(coverage(&synthetic).icd_chapters.is_empty());
    }
}
