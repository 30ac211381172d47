//! Judging synthetic trial sets against real ones, on embeddings of the same documented rendering:
//! cosine-similarity distributions of random pairs (within real, within synthetic, across), distance
//! to the closest real record (DCR) against a held-out real baseline, coverage tables, t-SNE maps,
//! and the figures and self-contained HTML page that show them.

pub mod analysis;
pub mod coverage;
pub mod html;
pub mod plots;
pub mod privacy;
pub mod realism;
pub mod similarity;
pub mod tsne;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("drawing a figure: {0}")]
    Plot(String),
    #[error("rendering the page template: {0}")]
    Template(String),
}

pub type Result<T> = std::result::Result<T, ReportError>;

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
