//! Text encoders for trialforge: sentence embeddings behind one [`TextEncoder`] trait, a BERT-family
//! backend with its own CPU forward pass (`forward.rs`; mean pooling and L2 normalisation, as
//! sentence-transformers does), and an on-disk [`EmbeddingCache`] keyed by model and text hash so
//! that re-runs do not re-embed.

mod bert;
mod cache;
mod forward;
mod states;

pub use bert::{Activation, BertEncoder, EncoderLayer, LAYER_TENSORS};
pub use cache::{CachedEncoder, EmbeddingCache};
pub use states::StateCache;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Model {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("encoder forward pass: {0}")]
    Candle(#[from] candle_core::Error),
    /// Any other backend's failure (an LLM's forward pass, for instance).
    #[error("encoder: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, EncodeError>;

/// A model that turns texts into fixed-size, unit-length vectors.
pub trait TextEncoder: Send + Sync {
    /// Identifies the model and its weights; part of every cache key.
    fn model_id(&self) -> &str;
    fn dim(&self) -> usize;
    /// Embeds a batch of texts; the output has one unit vector per input, in order.
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// Number of tokens each text has after truncation.
    fn token_counts(&self, _texts: &[&str]) -> Result<Vec<usize>> {
        Err(EncodeError::Backend(format!(
            "{} does not report token counts",
            self.model_id()
        )))
    }
    /// The BERT model behind this encoder, for models that fine-tune its top layer.
    fn as_bert(&self) -> Option<&BertEncoder> {
        None
    }
}

/// Scales `v` to unit length (a zero vector stays zero): what every encoder does to its output.
pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of two unit vectors (their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Writes embeddings as safetensors: one `embeddings` tensor (n x dim, f32) and, in the header
/// metadata, the row ids (`ids`, a JSON array) and the model id (`model`).
pub fn save_safetensors(
    path: &std::path::Path,
    model_id: &str,
    ids: &[String],
    vectors: &[Vec<f32>],
) -> Result<()> {
    let dim = vectors.first().map_or(0, Vec::len);
    let bytes: Vec<u8> = vectors
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![vectors.len(), dim],
        &bytes,
    )
    .map_err(|e| EncodeError::Model {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let meta = std::collections::HashMap::from([
        (
            "ids".to_string(),
            serde_json::to_string(ids).expect("strings serialise"),
        ),
        ("model".to_string(), model_id.to_string()),
    ]);
    safetensors::serialize_to_file([("embeddings", view)], Some(meta), path).map_err(|e| {
        EncodeError::Model {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })
}
