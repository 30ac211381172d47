//! Clinical trial records for trialforge: the [`Trial`] type (with the leak guard that keeps status
//! and stop reason away from model inputs), importers for TOP benchmark CSV and ClinicalTrials.gov API
//! v2 records, live API paging, and the JSONL corpus format.

pub mod corpus;
pub mod criteria;
pub mod ctgov;
pub mod error;
pub mod icd;
pub mod import;
pub mod input;
pub mod legacy;
pub mod pylit;
pub mod record;
pub mod render;
pub mod top;
pub mod top_fetch;

pub use error::ImportError;
pub use import::Format;
pub use record::{drug_key, Criteria, Drug, Label, Phase, PostHoc, Protocol, Source, Split, Trial};

/// Row and label counts of a set of trials, as reported by `data import`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub rows: usize,
    pub success: usize,
    pub failure: usize,
    pub unlabelled: usize,
}

impl Counts {
    pub fn of(trials: &[Trial]) -> Counts {
        let mut c = Counts {
            rows: trials.len(),
            ..Default::default()
        };
        for t in trials {
            match t.label {
                Some(Label::Success) => c.success += 1,
                Some(Label::Failure) => c.failure += 1,
                None => c.unlabelled += 1,
            }
        }
        c
    }
}
