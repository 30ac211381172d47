//! ICD-10 code descriptions (`data/top/aux/icd_10_direct_mapping.csv`: `code,"description"`, codes
//! without the dot, e.g. `A010,"Typhoid fever"`), as HINT ships them.

use std::path::Path;

use crate::error::ImportError;

/// One ICD-10 code and its description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcdEntry {
    pub code: String,
    pub description: String,
}

/// Reads the mapping file; a row without two fields is an error naming its line.
pub fn read_descriptions(path: &Path) -> Result<Vec<IcdEntry>, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(|e| ImportError::Format {
            file: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let line = i as u64 + 1;
        let row = row.map_err(|e| ImportError::Field {
            file: path.to_path_buf(),
            line,
            field: "row".into(),
            message: e.to_string(),
        })?;
        match (row.get(0), row.get(1)) {
            (Some(code), Some(description)) if !code.trim().is_empty() => out.push(IcdEntry {
                code: code.trim().to_string(),
                description: description.trim().to_string(),
            }),
            _ => {
                return Err(ImportError::Field {
                    file: path.to_path_buf(),
                    line,
                    field: "code,description".into(),
                    message: "expected two fields: an ICD-10 code and its description".into(),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_codes_and_descriptions_and_names_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("icd.csv");
        std::fs::write(&p, "A00,\"Cholera\"\nA010,\"Typhoid fever\"\n").unwrap();
        let e = read_descriptions(&p).unwrap();
        assert_eq!(e[1].code, "A010");
        assert_eq!(e[1].description, "Typhoid fever");
        std::fs::write(&p, "A00,\"Cholera\"\nA01\n").unwrap();
        let err = read_descriptions(&p).unwrap_err().to_string();
        assert!(err.contains("icd.csv:2"), "{err}");
    }
}
