//! One entry point for every input format, with format detection.

use std::path::{Path, PathBuf};

use crate::error::ImportError;
use crate::record::Trial;
use crate::top::{self, FileImport, ImportOptions};
use crate::{corpus, ctgov};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Decide from the path: `.csv` (or a folder of them) is TOP; `.json` / `.jsonl` holding API v2
    /// studies (`protocolSection`, `studies`) is ClinicalTrials.gov; other `.json` / `.jsonl` is a
    /// trialforge corpus (or a single trial record).
    #[default]
    Auto,
    Top,
    Ctgov,
    Corpus,
    /// Legacy ClinicalTrials.gov records: `<clinical_study>` XML, or `{"clinical_study": ...}` JSON
    /// (repaired where it does not parse; see [`crate::legacy`]).
    Legacy,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Format::Auto),
            "top" => Ok(Format::Top),
            "ctgov" => Ok(Format::Ctgov),
            "corpus" | "jsonl" => Ok(Format::Corpus),
            "legacy" | "xml" => Ok(Format::Legacy),
            _ => Err(format!(
                "unknown format `{s}` (expected auto, top, ctgov, corpus or legacy)"
            )),
        }
    }
}

/// Detects the format of `path` (see [`Format::Auto`]).
pub fn detect(path: &Path) -> Result<Format, ImportError> {
    let ext = |p: &Path, e: &str| p.extension().is_some_and(|x| x == e);
    if path.is_dir() {
        let entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| ImportError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        // Legacy records first: a foreign set's folder may hold its labels CSV too.
        let legacy = entries.iter().any(|p| {
            ext(p, "xml")
                || ((ext(p, "json") || ext(p, "md") || ext(p, "txt"))
                    && std::fs::read_to_string(p).is_ok_and(|t| crate::legacy::looks_legacy(&t)))
        });
        if legacy {
            return Ok(Format::Legacy);
        }
        return Ok(if entries.iter().any(|p| ext(p, "csv")) {
            Format::Top
        } else {
            Format::Ctgov
        });
    }
    if ext(path, "xml") {
        return Ok(Format::Legacy);
    }
    if ext(path, "csv") {
        return Ok(Format::Top);
    }
    if ext(path, "json") || ext(path, "jsonl") {
        use std::io::BufRead;
        let f = std::fs::File::open(path).map_err(|e| ImportError::io(path, e))?;
        let first = std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        // A pretty-printed study has `"protocolSection"` on a later line: look a little further.
        let head: String = std::io::BufReader::new(
            std::fs::File::open(path).map_err(|e| ImportError::io(path, e))?,
        )
        .lines()
        .map_while(Result::ok)
        .take(50)
        .collect::<Vec<_>>()
        .join("\n");
        let looks_ctgov = |s: &str| {
            [
                "\"protocolSection\"",
                "\"studies\"",
                "\"FullStudiesResponse\"",
                "\"ProtocolSection\"",
            ]
            .iter()
            .any(|k| s.contains(k))
        };
        return Ok(if looks_ctgov(&first) || looks_ctgov(&head) {
            Format::Ctgov
        } else if crate::legacy::looks_legacy(&head) {
            Format::Legacy
        } else {
            Format::Corpus
        });
    }
    Err(ImportError::Format {
        file: path.to_path_buf(),
        message: "cannot tell the format from the name: expected .csv (TOP), .json / .jsonl, .xml (legacy record), or a folder; pass --format".into(),
    })
}

/// Reads `path` in `format`, per file (TOP folders give one entry per CSV file).
pub fn read(
    path: &Path,
    format: Format,
    opts: ImportOptions,
) -> Result<Vec<FileImport>, ImportError> {
    let format = match format {
        Format::Auto => detect(path)?,
        f => f,
    };
    let whole = |trials: Vec<Trial>| {
        vec![FileImport {
            file: path.to_path_buf(),
            trials,
            ..Default::default()
        }]
    };
    match format {
        Format::Top => top::read_path(path, opts),
        Format::Ctgov => Ok(whole(ctgov::read_path(path)?)),
        Format::Corpus => Ok(whole(corpus::read(path)?)),
        Format::Legacy => Ok(vec![crate::legacy::read_path(path, opts.skip_bad)?]),
        Format::Auto => unreachable!("resolved above"),
    }
}

/// Reads every trial of `path`, whatever its format.
pub fn read_all(
    path: &Path,
    format: Format,
    opts: ImportOptions,
) -> Result<Vec<Trial>, ImportError> {
    Ok(read(path, format, opts)?
        .into_iter()
        .flat_map(|f| f.trials)
        .collect())
}
