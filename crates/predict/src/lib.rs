//! Trial outcome prediction for trialforge: models behind one [`OutcomeModel`] fit / predict /
//! save / load interface, the binary-outcome metrics of the TOP benchmark with HINT's bootstrap
//! protocol, and the benchmark harness.
//!
//! Models only ever see [`Protocol`]s (never a `Trial`), so status and stop reason, which give the
//! label away, cannot reach them.

pub mod augment;
pub mod benchmark;
pub mod calibrate;
pub mod cladmop;
pub mod combine;
pub mod detection;
pub mod embedding;
pub mod finetune;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod registry;
pub mod tfidf;

pub use model::{Example, ModelKind, OutcomeModel};
pub use registry::{load_model, new_model, parse_model_list, BuildOptions, ModelSpec};

use trialforge_trial::Protocol;

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("tensor computation: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("encoder: {0}")]
    Encode(#[from] trialforge_encode::EncodeError),
    #[error("{}: {message}", path.display())]
    Format {
        path: std::path::PathBuf,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, PredictError>;

/// Turns protocols into dense vectors (an encoder with its cache, in practice).
pub trait ProtocolEmbedder {
    /// Identifies the encoder; saved with a model and checked when it is loaded.
    fn id(&self) -> String;
    fn dim(&self) -> usize;
    fn embed(&self, protocols: &[&Protocol]) -> Result<Vec<Vec<f32>>>;
    /// Embeds free texts (criteria items, for instance) with the same encoder.
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// For a model that fine-tunes the encoder's top layer: the states entering that layer for
    /// each protocol's rendering, (tokens x dim) each. Only BERT-family encoders split this way.
    fn states_below_top(&self, _protocols: &[&Protocol]) -> Result<Vec<candle_core::Tensor>> {
        Err(self.no_top_layer())
    }
    /// The weights of the encoder's top layer (see [`ProtocolEmbedder::states_below_top`]).
    fn top_layer(&self) -> Result<trialforge_encode::EncoderLayer> {
        Err(self.no_top_layer())
    }
    #[doc(hidden)]
    fn no_top_layer(&self) -> PredictError {
        PredictError::Invalid(format!(
            "encoder `{}` has no top layer to fine-tune (BERT-family encoders have)",
            self.id()
        ))
    }
}
