//! Judging synthetic trial sets against real ones, on embeddings of the same documented rendering:
//! cosine-similarity distributions of random pairs (within real, within synthetic, across), distance
//! to the closest real record (DCR) against a held-out real baseline, and coverage tables.

pub mod coverage;
pub mod privacy;
pub mod similarity;

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
