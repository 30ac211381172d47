//! Import errors that say where (file, line or JSON path, field) and what was expected.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A bad value in a line-oriented file (CSV row, JSONL line).
    #[error("{}:{line}: field `{field}`: {message}", file.display())]
    Field {
        file: PathBuf,
        line: u64,
        field: String,
        message: String,
    },
    /// A bad value inside a JSON document, located by its path (`protocolSection.designModule.phases[0]`).
    #[error("{}{}: at `{path}`: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Json {
        file: PathBuf,
        line: Option<u64>,
        path: String,
        message: String,
    },
    /// The whole file is of the wrong kind.
    #[error("{}: {message}", file.display())]
    Format { file: PathBuf, message: String },
}

impl ImportError {
    pub(crate) fn io(file: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImportError::Io {
            file: file.into(),
            source,
        }
    }
}
