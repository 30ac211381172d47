//! The model interface (linfa-style fit / predict) and the helpers every model uses for its files on
//! disk. Nothing here knows a concrete model: [`crate::registry`] maps names to models.

use std::path::Path;

use serde::{Deserialize, Serialize};
use trialforge_trial::{Label, Protocol};

use crate::{PredictError, ProtocolEmbedder, Result};

/// A training example: the protocol and its outcome. No status, no stop reason.
#[derive(Clone, Copy, Debug)]
pub struct Example<'a> {
    pub protocol: &'a Protocol,
    pub label: Label,
}

/// The models trialforge can train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// TF-IDF over criteria, conditions, drugs and ICD codes + L2 logistic regression.
    TfidfLr,
    /// MLP on sentence-encoder embeddings of the protocol rendering.
    EmbedMlp,
    /// CLaDMoP-style model: criteria items, molecules and ICD codes fused, pre-trained on pair
    /// matching, fine-tuned with LoRA.
    Cladmop,
    /// The pre-trained pair-matching score of a trial's own criteria and drugs, as outcome score.
    CladmopZeroShot,
    /// The encoder reading the protocol rendering, its top layer fine-tuned with a classification
    /// head (the text classifier).
    EncoderFt,
    /// `tfidf-lr`, `embed-mlp`, `cladmop` and `cladmop-zero-shot`, their logits combined by a
    /// logistic regression fitted on the validation split.
    Stack,
    /// One model trained with several seeds, its probabilities averaged (named `MODEL-xN`).
    Ensemble,
}

impl ModelKind {
    /// The kinds named on their own (an ensemble is named by its member: `cladmop-x5`).
    pub const ALL: [ModelKind; 6] = [
        ModelKind::TfidfLr,
        ModelKind::EmbedMlp,
        ModelKind::EncoderFt,
        ModelKind::Cladmop,
        ModelKind::CladmopZeroShot,
        ModelKind::Stack,
    ];

    /// What `--models all` trains: every kind except `encoder-ft`, which is opt-in because its
    /// frozen layers' states of every rendering cost about 2.5 minutes on phase I when not cached.
    /// The stack comes last: in the benchmark it combines the four trained before it, at no cost.
    pub const DEFAULT: [ModelKind; 5] = [
        ModelKind::TfidfLr,
        ModelKind::EmbedMlp,
        ModelKind::Cladmop,
        ModelKind::CladmopZeroShot,
        ModelKind::Stack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::TfidfLr => "tfidf-lr",
            ModelKind::EmbedMlp => "embed-mlp",
            ModelKind::Cladmop => "cladmop",
            ModelKind::CladmopZeroShot => "cladmop-zero-shot",
            ModelKind::EncoderFt => "encoder-ft",
            ModelKind::Stack => "stack",
            ModelKind::Ensemble => "ensemble",
        }
    }

    pub fn needs_encoder(self) -> bool {
        !matches!(self, ModelKind::TfidfLr)
    }
}

impl std::str::FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        ModelKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ModelKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown model `{s}` (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// An outcome model: fit on labelled protocols, predict the probability of success.
pub trait OutcomeModel {
    fn kind(&self) -> ModelKind;
    /// Trains on `train`; `valid` is used for early stopping and model selection only.
    fn fit(&mut self, train: &[Example], valid: &[Example]) -> Result<()>;
    /// Protocols without labels that a model may learn from before `fit` (pre-training); models
    /// that have no use for them ignore them. Never give it test protocols.
    fn add_unlabelled(&mut self, _protocols: &[&Protocol]) {}
    /// Probability of success for each protocol.
    fn predict(&self, protocols: &[&Protocol]) -> Result<Vec<f32>>;
    /// Writes `config.json` and `weights.safetensors` into `dir`.
    fn save(&self, dir: &Path) -> Result<()>;
}

/// What every model's `config.json` starts with.
#[derive(Serialize, Deserialize)]
pub(crate) struct Header {
    pub kind: ModelKind,
    pub trialforge_version: String,
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PredictError + '_ {
    move |source| PredictError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn write_config<T: Serialize>(dir: &Path, config: &T) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let p = dir.join("config.json");
    let text =
        serde_json::to_string_pretty(config).map_err(|e| PredictError::Invalid(e.to_string()))?;
    std::fs::write(&p, text).map_err(io_err(&p))
}

pub(crate) fn read_config<T: for<'de> Deserialize<'de>>(dir: &Path) -> Result<T> {
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
    serde_json::from_str(&text).map_err(|e| PredictError::Format {
        path: p,
        message: format!("not a trialforge model config: {e}"),
    })
}

/// Writes a model's tensors to `dir/weights.safetensors`.
pub(crate) fn save_weights(
    dir: &Path,
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
) -> Result<()> {
    let wpath = dir.join("weights.safetensors");
    candle_core::safetensors::save(tensors, &wpath).map_err(|e| PredictError::Io {
        path: wpath.clone(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// A model that reads embeddings must be loaded with the encoder it was trained with.
pub(crate) fn check_encoder(
    dir: &Path,
    trained_with: &str,
    given: &dyn ProtocolEmbedder,
) -> Result<()> {
    if trained_with != given.id() {
        return Err(PredictError::Invalid(format!(
            "{}: trained with encoder `{trained_with}`, but `{}` was given",
            dir.display(),
            given.id()
        )));
    }
    Ok(())
}

/// Labels as 0/1 bytes.
pub(crate) fn labels(examples: &[Example]) -> Vec<u8> {
    examples.iter().map(|e| u8::from(e.label)).collect()
}
