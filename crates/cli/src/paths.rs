//! Default locations: bundled data, embedding cache, run outputs.

use std::path::PathBuf;

/// The bundled data folder: `./data` if it holds the TOP files, else the checkout's `data/`.
pub fn bundled_data() -> PathBuf {
    let local = PathBuf::from("data");
    if local.join("top").is_dir() {
        return local;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data"))
}

/// Where embeddings are cached: `$TRIALFORGE_CACHE` or `./.cache/trialforge`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("TRIALFORGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cache/trialforge"))
}
