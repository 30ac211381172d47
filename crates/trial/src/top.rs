//! Importer for TOP benchmark CSV files (HINT, Fu et al. 2022):
//! `nctid,status,why_stop,label,phase,diseases,icdcodes,drugs,smiless,criteria`.
//!
//! List cells are Python literals; `icdcodes` is a list of stringified lists (two levels). The split
//! tag comes from the file name (`phase_I_train.csv` is train).

use std::path::{Path, PathBuf};

use crate::error::ImportError;
use crate::pylit::parse_str_list;
use crate::record::{Criteria, Drug, Label, Phase, PostHoc, Protocol, Source, Split, Trial};

pub const HEADER: [&str; 10] = [
    "nctid", "status", "why_stop", "label", "phase", "diseases", "icdcodes", "drugs", "smiless",
    "criteria",
];

/// Phases as TOP writes them: `phase 1/phase 2`, `early phase 1`, `n/a`.
pub fn phase_text(phases: &[Phase]) -> String {
    phases
        .iter()
        .map(|p| match p {
            Phase::EarlyPhase1 => "early phase 1".to_string(),
            Phase::NotApplicable => "n/a".to_string(),
            other => other.to_string().to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A trial as a TOP row in JSON, list cells as arrays (`icdcodes` an array of arrays), `smiless`
/// aligned with `drugs` (empty where a drug has none), plus `title` and `split`. The post-hoc
/// facts are named as such (`post_hoc_status`, `post_hoc_why_stop`): whoever reads the row back
/// as input ([`crate::input`]) never takes them.
pub fn row_value(t: &Trial) -> serde_json::Value {
    let p = &t.protocol;
    serde_json::json!({
        "nctid": t.id,
        "label": t.label.map(u8::from),
        "phase": phase_text(&p.phases),
        "diseases": p.conditions,
        "icdcodes": p.icd_codes,
        "drugs": p.drugs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        "smiless": p.drugs.iter().map(|d| d.smiles.as_deref().unwrap_or("")).collect::<Vec<_>>(),
        "criteria": p.criteria.raw,
        "title": p.title,
        "split": t.split.as_str(),
        "post_hoc_status": t.post_hoc.status,
        "post_hoc_why_stop": t.post_hoc.why_stopped,
    })
}

/// How to treat a bad row.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImportOptions {
    /// Report bad rows and go on, instead of failing on the first.
    pub skip_bad: bool,
}

/// The trials read from one file, and the rows skipped (only with `skip_bad`).
#[derive(Debug, Default)]
pub struct FileImport {
    pub file: PathBuf,
    pub trials: Vec<Trial>,
    pub skipped: Vec<ImportError>,
    /// JSON repairs applied, by kind (legacy records only; see [`crate::legacy`]).
    pub repaired: std::collections::BTreeMap<String, usize>,
    /// Records that needed at least one repair.
    pub repaired_records: usize,
}

/// Reads one TOP CSV file.
pub fn read_file(path: &Path, opts: ImportOptions) -> Result<FileImport, ImportError> {
    let reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| csv_error(path, 1, "header", e))?;
    read_records(reader, path, opts)
}

/// Reads TOP CSV text already in memory (a download); `path` names it in errors and, by its file
/// name, gives the split.
pub fn read_bytes(
    bytes: &[u8],
    path: &Path,
    opts: ImportOptions,
) -> Result<FileImport, ImportError> {
    let reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    read_records(reader, path, opts)
}

fn read_records<R: std::io::Read>(
    mut reader: csv::Reader<R>,
    path: &Path,
    opts: ImportOptions,
) -> Result<FileImport, ImportError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let split = Split::from_file_name(&file_name);
    let header = reader
        .headers()
        .map_err(|e| csv_error(path, 1, "header", e))?
        .clone();
    let got: Vec<&str> = header.iter().collect();
    if got != HEADER {
        return Err(ImportError::Field {
            file: path.to_path_buf(),
            line: 1,
            field: "header".into(),
            message: format!("expected `{}`, found `{}`", HEADER.join(","), got.join(",")),
        });
    }
    let mut out = FileImport {
        file: path.to_path_buf(),
        ..Default::default()
    };
    for record in reader.records() {
        let result = record
            .map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                csv_error(path, line, "row", e)
            })
            .and_then(|rec| {
                let line = rec.position().map_or(0, |p| p.line());
                parse_row(&rec, path, line, &file_name, split)
            });
        match result {
            Ok(trial) => out.trials.push(trial),
            Err(e) if opts.skip_bad => {
                tracing::warn!("skipped: {e}");
                out.skipped.push(e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Reads every `*.csv` file of a folder (sorted by name), or one file.
pub fn read_path(path: &Path, opts: ImportOptions) -> Result<Vec<FileImport>, ImportError> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| ImportError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ImportError::Format {
                file: path.to_path_buf(),
                message:
                    "no .csv files in this folder (expected TOP files such as phase_I_train.csv)"
                        .into(),
            });
        }
        files.iter().map(|f| read_file(f, opts)).collect()
    } else {
        Ok(vec![read_file(path, opts)?])
    }
}

fn csv_error(path: &Path, line: u64, field: &str, e: csv::Error) -> ImportError {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => ImportError::io(path, io),
        kind => ImportError::Field {
            file: path.to_path_buf(),
            line,
            field: field.into(),
            message: format!("malformed CSV: {kind:?}"),
        },
    }
}

fn parse_row(
    rec: &csv::StringRecord,
    path: &Path,
    line: u64,
    file_name: &str,
    split: Split,
) -> Result<Trial, ImportError> {
    let field_err = |field: &str, message: String| ImportError::Field {
        file: path.to_path_buf(),
        line,
        field: field.into(),
        message,
    };
    if rec.len() != HEADER.len() {
        return Err(field_err(
            "row",
            format!("expected {} columns, found {}", HEADER.len(), rec.len()),
        ));
    }
    let cell = |i: usize| rec.get(i).unwrap_or("");
    let list = |i: usize| {
        parse_str_list(cell(i))
            .map_err(|m| field_err(HEADER[i], format!("expected a Python list of strings: {m}")))
    };

    // Any id without whitespace: synthetic sets in this schema carry their own id schemes.
    let id = cell(0).trim().to_string();
    if id.is_empty() || id.contains(char::is_whitespace) {
        return Err(field_err(
            "nctid",
            format!("expected a trial id such as NCT01234567, found `{id}`"),
        ));
    }
    let label = match cell(3).trim() {
        "0" => Label::Failure,
        "1" => Label::Success,
        other => {
            return Err(field_err(
                "label",
                format!("expected 0 or 1, found `{other}`"),
            ))
        }
    };
    let phases = Phase::parse_list(cell(4)).ok_or_else(|| {
        field_err(
            "phase",
            format!(
                "expected e.g. `phase 1` or `phase 1/phase 2`, found `{}`",
                cell(4)
            ),
        )
    })?;
    let conditions = list(5)?;
    let icd_codes = list(6)?
        .iter()
        .map(|inner| parse_str_list(inner))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| {
            field_err(
                "icdcodes",
                format!("expected a list of stringified lists: {m}"),
            )
        })?;
    // TOP aligns SMILES with drugs by position; some rows have fewer SMILES than drugs.
    let drugs = Drug::by_position(list(7)?, &list(8)?);
    let non_empty = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());

    Ok(Trial {
        id,
        source: Source::Top {
            file: file_name.to_string(),
        },
        protocol: Protocol {
            title: String::new(), // TOP has no title column
            phases,
            conditions,
            icd_codes,
            drugs,
            criteria: Criteria::from_raw(cell(9)),
            enrollment: None,
        },
        label: Some(label),
        split,
        post_hoc: PostHoc {
            status: non_empty(cell(1)),
            why_stopped: non_empty(cell(2)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const HEADER_LINE: &str =
        "nctid,status,why_stop,label,phase,diseases,icdcodes,drugs,smiless,criteria\n";

    fn write(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
        let p = dir.path().join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(HEADER_LINE.as_bytes()).unwrap();
        f.write_all(body.as_bytes()).unwrap();
        p
    }

    const GOOD: &str = "NCT00000001,completed,,1,phase 1/phase 2,['lung cancer'],\"[\"\"['C34.1', 'C34.2']\"\"]\",\"['drug a', 'placebo']\",['CCO'],\"Inclusion Criteria:\n - adults\nExclusion Criteria:\n - pregnancy\"\n";

    #[test]
    fn reads_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "phase_I_train.csv", GOOD);
        let imp = read_file(&p, ImportOptions::default()).unwrap();
        let t = &imp.trials[0];
        assert!(read_file(
            &write(
                &dir,
                "bad_id.csv",
                &GOOD.replacen("NCT00000001", "NCT 1", 1)
            ),
            ImportOptions::default()
        )
        .unwrap_err()
        .to_string()
        .contains("field `nctid`"));
        assert_eq!(t.id, "NCT00000001");
        assert_eq!(t.split, Split::Train);
        assert_eq!(t.label, Some(Label::Success));
        assert_eq!(t.protocol.phases, vec![Phase::Phase1, Phase::Phase2]);
        assert_eq!(t.protocol.icd_codes, vec![vec!["C34.1", "C34.2"]]);
        assert_eq!(t.protocol.drugs[0].smiles.as_deref(), Some("CCO"));
        assert_eq!(t.protocol.drugs[1].smiles, None);
        assert_eq!(t.protocol.criteria.inclusion, vec!["adults"]);
        assert_eq!(t.protocol.criteria.exclusion, vec!["pregnancy"]);
        assert_eq!(t.post_hoc.status.as_deref(), Some("completed"));
    }

    #[test]
    fn bad_label_names_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let bad = GOOD.replacen(",1,phase", ",yes,phase", 1);
        let p = write(&dir, "x.csv", &format!("{GOOD}{bad}"));
        let err = read_file(&p, ImportOptions::default())
            .unwrap_err()
            .to_string();
        // The good row's quoted criteria span lines 2-5, so the bad row starts on physical line 6.
        assert!(
            err.contains("x.csv:6: field `label`: expected 0 or 1, found `yes`"),
            "{err}"
        );
    }

    #[test]
    fn skip_bad_reports_and_continues() {
        let dir = tempfile::tempdir().unwrap();
        let bad = GOOD.replacen("['lung cancer']", "[lung", 1);
        let p = write(&dir, "x.csv", &format!("{bad}{GOOD}"));
        let imp = read_file(&p, ImportOptions { skip_bad: true }).unwrap();
        assert_eq!(imp.trials.len(), 1);
        assert_eq!(imp.skipped.len(), 1);
        assert!(imp.skipped[0].to_string().contains("field `diseases`"));
    }

    #[test]
    fn wrong_header_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.csv");
        std::fs::write(&p, "id,label\nNCT1,1\n").unwrap();
        let err = read_file(&p, ImportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("h.csv:1: field `header`: expected `nctid,status"),
            "{err}"
        );
    }
}
