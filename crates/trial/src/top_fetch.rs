//! Downloads the TOP splits this repository does not bundle (phase II train and test, phase III
//! train) from the HINT repository, pinned to the snapshot the bundled files come from, and checks
//! each before it is kept: the TOP schema, its row count (known from LIFTED's per-row derived data,
//! which matches the six bundled files one to one), a 0/1 label on every row, unique trial ids, and
//! no trial shared with another split of its phase. A file is written aside and renamed only once it
//! passes, so a failed or killed fetch never leaves a file that looks fetched.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::top::{read_bytes, read_file, ImportOptions};

/// The HINT repository's `data/` folder at the snapshot the bundled splits were copied from.
pub const TOP_SOURCE: &str = "https://raw.githubusercontent.com/futianfan/clinical-trial-outcome-prediction/8dc0497f23fdb84e2905da7655924a91e6e79798/data";

/// A split the repository lacks, and its row count.
#[derive(Clone, Copy, Debug)]
pub struct MissingSplit {
    pub file: &'static str,
    pub rows: usize,
    /// The splits of the same phase it must share no trial with.
    pub apart_from: &'static [&'static str],
}

pub const MISSING_SPLITS: [MissingSplit; 3] = [
    MissingSplit {
        file: "phase_II_train.csv",
        rows: 4005,
        apart_from: &["phase_II_valid.csv", "phase_II_test.csv"],
    },
    MissingSplit {
        file: "phase_II_test.csv",
        rows: 1654,
        apart_from: &["phase_II_valid.csv"],
    },
    MissingSplit {
        file: "phase_III_train.csv",
        rows: 3094,
        apart_from: &["phase_III_valid.csv", "phase_III_test.csv"],
    },
];

#[derive(Debug, thiserror::Error)]
pub enum TopFetchError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("downloading {url}: {message}")]
    Http { url: String, message: String },
    #[error("{file} from {url} failed its check: {message}; nothing was kept")]
    Check {
        file: String,
        url: String,
        message: String,
    },
}

/// A split that is in the output folder and passed its check.
#[derive(Clone, Debug, Serialize)]
pub struct CheckedSplit {
    pub file: String,
    pub rows: usize,
    pub successes: usize,
    pub failures: usize,
    pub sha256: String,
    /// Downloaded now (false: already there and checked again).
    pub downloaded: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TopFetchError + '_ {
    move |source| TopFetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Ids of a split file, when it is present in `dir` or `other`.
fn split_ids(dirs: &[&Path], file: &str) -> Option<HashSet<String>> {
    let path = dirs.iter().map(|d| d.join(file)).find(|p| p.is_file())?;
    let import = read_file(&path, ImportOptions::default()).ok()?;
    Some(import.trials.into_iter().map(|t| t.id).collect())
}

/// Checks `bytes`, read from (or to be written to) `path`, as `split`; `dirs` are where the splits
/// it must stay apart from may be.
fn check(
    bytes: &[u8],
    path: &Path,
    split: &MissingSplit,
    dirs: &[&Path],
) -> Result<CheckedSplit, String> {
    let import = read_bytes(bytes, path, ImportOptions::default()).map_err(|e| e.to_string())?;
    let trials = import.trials;
    if trials.len() != split.rows {
        return Err(format!(
            "{} rows, expected {} (the snapshot's count)",
            trials.len(),
            split.rows
        ));
    }
    if let Some(t) = trials.iter().find(|t| t.label.is_none()) {
        return Err(format!("trial {} has no 0/1 label", t.id));
    }
    let successes = trials
        .iter()
        .filter(|t| t.label.is_some_and(|l| u8::from(l) == 1))
        .count();
    if successes == 0 || successes == trials.len() {
        return Err(format!(
            "every label is the same ({successes} of {} successes)",
            trials.len()
        ));
    }
    let ids: HashSet<&str> = trials.iter().map(|t| t.id.as_str()).collect();
    if ids.len() != trials.len() {
        return Err(format!(
            "{} trial ids appear more than once",
            trials.len() - ids.len()
        ));
    }
    for other in split.apart_from {
        if let Some(other_ids) = split_ids(dirs, other) {
            let shared = ids.iter().filter(|id| other_ids.contains(**id)).count();
            if shared > 0 {
                return Err(format!("{shared} trials are also in {other}"));
            }
        }
    }
    Ok(CheckedSplit {
        file: split.file.to_string(),
        rows: trials.len(),
        successes,
        failures: trials.len() - successes,
        sha256: hex::encode(Sha256::digest(bytes)),
        downloaded: false,
    })
}

fn download(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>, TopFetchError> {
    let http = |message: String| TopFetchError::Http {
        url: url.to_string(),
        message,
    };
    let mut resp = agent.get(url).call().map_err(|e| http(e.to_string()))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(http(format!("HTTP {status}")));
    }
    let mut bytes = Vec::new();
    resp.body_mut()
        .with_config()
        .limit(256 << 20)
        .reader()
        .read_to_end(&mut bytes)
        .map_err(|e| http(format!("reading the body: {e}")))?;
    Ok(bytes)
}

/// Fetches every missing split from `source` (a URL up to the folder) into `out`, checked as the
/// module says. Splits already in `out` are checked, not downloaded again. `bundled` is where the
/// splits they must stay apart from are found when `out` lacks them. `on_file` hears each file name
/// before its download.
pub fn fetch_missing_splits(
    source: &str,
    out: &Path,
    bundled: &Path,
    timeout: Duration,
    mut on_file: impl FnMut(&str),
) -> Result<Vec<CheckedSplit>, TopFetchError> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let dirs = [out, bundled];
    let mut done = Vec::new();
    for split in &MISSING_SPLITS {
        let path = out.join(split.file);
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(checked) = check(&bytes, &path, split, &dirs) {
                done.push(checked);
                continue;
            }
        }
        on_file(split.file);
        let url = format!("{}/{}", source.trim_end_matches('/'), split.file);
        let bytes = download(&agent, &url)?;
        // Checked in memory, then written aside and renamed: a kill leaves at most a `.partial`.
        let partial = out.join(format!("{}.partial", split.file));
        let mut checked =
            check(&bytes, &partial, split, &dirs).map_err(|message| TopFetchError::Check {
                file: split.file.to_string(),
                url,
                message,
            })?;
        std::fs::write(&partial, &bytes).map_err(io(&partial))?;
        std::fs::rename(&partial, &path).map_err(io(&path))?;
        checked.downloaded = true;
        done.push(checked);
    }
    Ok(done)
}
