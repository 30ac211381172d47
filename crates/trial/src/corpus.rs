//! The corpus format: JSONL, one [`Trial`] per line, readable by any tool.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

use crate::error::ImportError;
use crate::record::Trial;

/// Reads a corpus; a bad line is an error naming the file and line.
pub fn read_jsonl(path: &Path) -> Result<Vec<Trial>, ImportError> {
    let f = std::fs::File::open(path).map_err(|e| ImportError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| ImportError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let trial: Trial = serde_json::from_str(&line).map_err(|e| ImportError::Json {
            file: path.to_path_buf(),
            line: Some(i as u64 + 1),
            path: "$".into(),
            message: format!("not a trialforge trial record: {e}"),
        })?;
        out.push(trial);
    }
    Ok(out)
}

/// Reads a corpus, or a `.json` file holding one trial record or an array of them.
pub fn read(path: &Path) -> Result<Vec<Trial>, ImportError> {
    if path.extension().is_some_and(|x| x == "json") {
        let text = std::fs::read_to_string(path).map_err(|e| ImportError::io(path, e))?;
        let err = |e: serde_json::Error| ImportError::Json {
            file: path.to_path_buf(),
            line: Some(e.line() as u64),
            path: "$".into(),
            message: format!("not a trialforge trial record (or an array of them): {e}"),
        };
        return if text.trim_start().starts_with('[') {
            serde_json::from_str(&text).map_err(err)
        } else {
            serde_json::from_str::<Trial>(&text)
                .map(|t| vec![t])
                .map_err(err)
        };
    }
    read_jsonl(path)
}

/// Writes a corpus atomically: to a temporary file beside `path`, then renamed over it, so a crash
/// never leaves a half-written corpus behind.
pub fn write_jsonl(path: &Path, trials: &[Trial]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("jsonl.partial");
    {
        let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
        for t in trials {
            serde_json::to_writer(&mut w, t)?;
            w.write_all(b"\n")?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::*;

    #[test]
    fn round_trip_and_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        let t = Trial {
            id: "NCT00000001".into(),
            source: Source::Ctgov,
            protocol: Protocol {
                title: "T".into(),
                phases: vec![Phase::Phase2],
                criteria: Criteria::from_raw("Inclusion Criteria:\n- a"),
                ..Default::default()
            },
            label: Some(Label::Failure),
            split: Split::Valid,
            post_hoc: PostHoc::default(),
        };
        write_jsonl(&p, std::slice::from_ref(&t)).unwrap();
        assert_eq!(read_jsonl(&p).unwrap(), vec![t]);
        std::fs::write(&p, "{\"id\": 3}\n").unwrap();
        let err = read_jsonl(&p).unwrap_err().to_string();
        assert!(err.contains("c.jsonl:1"), "{err}");
    }
}
