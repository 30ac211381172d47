//! `export top-csv`: synthetic (or any) trials in the TOP benchmark's CSV schema, so HINT-style tools
//! read them. Status and stop reason are left empty; list cells are Python literals as in TOP;
//! `smiless` is aligned with `drugs`, with an empty string where a drug has no SMILES.

use std::path::Path;

use trialforge_trial::pylit::to_str_list;
use trialforge_trial::top::{phase_text, HEADER};
use trialforge_trial::Trial;

use crate::{Result, SynthError};

pub fn write_top_csv(path: &Path, trials: &[Trial]) -> Result<usize> {
    let err = |e: csv::Error| SynthError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    w.write_record(HEADER).map_err(err)?;
    let mut n = 0;
    for t in trials {
        let Some(label) = t.label else { continue };
        let p = &t.protocol;
        let icd: Vec<String> = p.icd_codes.iter().map(|codes| to_str_list(codes)).collect();
        let drugs: Vec<&str> = p.drugs.iter().map(|d| d.name.as_str()).collect();
        let smiles: Vec<&str> = p
            .drugs
            .iter()
            .map(|d| d.smiles.as_deref().unwrap_or(""))
            .collect();
        w.write_record([
            t.id.as_str(),
            "",
            "",
            &u8::from(label).to_string(),
            &phase_text(&p.phases),
            &to_str_list(&p.conditions),
            &to_str_list(&icd),
            &to_str_list(&drugs),
            &to_str_list(&smiles),
            &p.criteria.raw,
        ])
        .map_err(err)?;
        n += 1;
    }
    w.flush().map_err(|source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(n)
}
