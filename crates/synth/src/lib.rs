//! Retrieval-reasoning generation of labelled synthetic clinical trials (Xu et al., arXiv
//! 2410.12476), with the reference code's weaknesses fixed: examples by embedding search with
//! diversity and never from a test split, no status or stop reason in prompts, schema-constrained
//! output, validation with counted rejects, deduplication, near-copy checks, provenance on every
//! record, and resumable runs.

pub mod examples;
pub mod export;
pub mod plan;
pub mod prompts;
pub mod realism;
pub mod run;
pub mod schema;
pub mod validate;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Format {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("LLM: {0}")]
    Llm(#[from] trialforge_llm::LlmError),
    #[error("encoder: {0}")]
    Encode(#[from] trialforge_encode::EncodeError),
}

pub type Result<T> = std::result::Result<T, SynthError>;
