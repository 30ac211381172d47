//! What a set of trials covers: drugs, ICD-10 chapters, phases, labels, as counts.

use std::collections::BTreeMap;

use serde::Serialize;
use trialforge_trial::{Label, Trial};

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Coverage {
    pub trials: usize,
    pub labels: BTreeMap<String, usize>,
    pub phases: BTreeMap<String, usize>,
    /// ICD-10 chapters by the first letter of the code (`C` = neoplasms, ...).
    pub icd_chapters: BTreeMap<String, usize>,
    pub drugs: BTreeMap<String, usize>,
}

pub fn coverage(trials: &[Trial]) -> Coverage {
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
        chapters.sort();
        chapters.dedup();
        for ch in chapters {
            *c.icd_chapters.entry(ch).or_default() += 1;
        }
        for d in &t.protocol.drugs {
            *c.drugs.entry(d.name.trim().to_lowercase()).or_default() += 1;
        }
    }
    c
}
