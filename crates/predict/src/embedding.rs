//! An MLP on sentence-encoder embeddings of the protocol rendering, and the adapter that lets a
//! cached text encoder embed protocols.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use trialforge_encode::{CachedEncoder, EncoderLayer, StateCache, TextEncoder};
use trialforge_trial::render::protocol_text;
use trialforge_trial::Protocol;

use crate::model::{
    check_encoder, labels, read_config, save_weights, write_config, Example, Header, ModelKind,
    OutcomeModel,
};
use crate::nn::{fit, label_tensor, matrix, FitReport, Mlp, TrainConfig};
use crate::{PredictError, ProtocolEmbedder, Result};

/// Embeds each protocol's documented text rendering with a text encoder, through the on-disk cache.
pub struct CachedProtocolEmbedder<'a> {
    pub encoder: &'a dyn TextEncoder,
    pub cache_dir: PathBuf,
    /// Called with (done, to_encode) as cache misses are encoded.
    pub progress: Box<dyn Fn(usize, usize) + 'a>,
}

impl ProtocolEmbedder for CachedProtocolEmbedder<'_> {
    fn id(&self) -> String {
        self.encoder.model_id().to_string()
    }

    fn dim(&self) -> usize {
        self.encoder.dim()
    }

    fn embed(&self, protocols: &[&Protocol]) -> Result<Vec<Vec<f32>>> {
        let texts: Vec<String> = protocols.iter().map(|p| protocol_text(p)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        self.embed_texts(&refs)
    }

    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut cached = CachedEncoder::new(self.encoder, &self.cache_dir)?;
        Ok(cached.embed(texts, |d, t| (self.progress)(d, t))?)
    }

    fn states_below_top(&self, protocols: &[&Protocol]) -> Result<Vec<Tensor>> {
        let bert = self.encoder.as_bert().ok_or_else(|| self.no_top_layer())?;
        let texts: Vec<String> = protocols.iter().map(|p| protocol_text(p)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let cache = StateCache::open(&self.cache_dir.join("states"), bert)?;
        Ok(cache.states(bert, &refs, |d, t| (self.progress)(d, t))?)
    }

    fn top_layer(&self) -> Result<EncoderLayer> {
        let bert = self.encoder.as_bert().ok_or_else(|| self.no_top_layer())?;
        Ok(bert.top_layer()?)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmbedMlpParams {
    pub hidden: usize,
    pub train: TrainConfig,
}

impl Default for EmbedMlpParams {
    fn default() -> Self {
        EmbedMlpParams {
            hidden: 128,
            train: TrainConfig {
                learning_rate: 1e-3,
                l2: 1e-3,
                max_epochs: 300,
                patience: 25,
                batch_size: 64,
                seed: 0,
            },
        }
    }
}

#[derive(Serialize, Deserialize)]
struct EmbedMlpConfig {
    #[serde(flatten)]
    header: Header,
    params: EmbedMlpParams,
    encoder: String,
    dim: usize,
    fit: Option<FitReport>,
}

pub struct EmbedMlp<'e> {
    pub params: EmbedMlpParams,
    embedder: &'e dyn ProtocolEmbedder,
    model: Option<Mlp>,
    report: Option<FitReport>,
}

impl<'e> EmbedMlp<'e> {
    pub fn new(params: EmbedMlpParams, embedder: &'e dyn ProtocolEmbedder) -> Self {
        EmbedMlp {
            params,
            embedder,
            model: None,
            report: None,
        }
    }

    pub fn load(dir: &Path, embedder: &'e dyn ProtocolEmbedder) -> Result<Self> {
        let cfg: EmbedMlpConfig = read_config(dir)?;
        check_encoder(dir, &cfg.encoder, embedder)?;
        let wpath = dir.join("weights.safetensors");
        let tensors = candle_core::safetensors::load(&wpath, &Device::Cpu)?;
        Ok(EmbedMlp {
            params: cfg.params,
            embedder,
            model: Some(Mlp::from_tensors(&tensors, "mlp", &wpath)?),
            report: cfg.fit,
        })
    }

    fn features(&self, protocols: &[&Protocol]) -> Result<candle_core::Tensor> {
        matrix(&self.embedder.embed(protocols)?, self.embedder.dim())
    }
}

impl OutcomeModel for EmbedMlp<'_> {
    fn kind(&self) -> ModelKind {
        ModelKind::EmbedMlp
    }

    fn fit(&mut self, train: &[Example], valid: &[Example]) -> Result<()> {
        if train.is_empty() {
            return Err(PredictError::Invalid(
                "embed-mlp: no training examples".into(),
            ));
        }
        let ps: Vec<&Protocol> = train.iter().map(|e| e.protocol).collect();
        let x = self.features(&ps)?;
        let y = label_tensor(&labels(train))?;
        let v = if valid.is_empty() {
            None
        } else {
            let vp: Vec<&Protocol> = valid.iter().map(|e| e.protocol).collect();
            Some((self.features(&vp)?, label_tensor(&labels(valid))?))
        };
        let m = Mlp::new(
            &[self.embedder.dim(), self.params.hidden, 1],
            self.params.train.seed,
        )?;
        let report = fit(
            &m,
            &x,
            &y,
            v.as_ref().map(|(a, b)| (a, b)),
            &self.params.train,
            |_, _| {},
        )?;
        tracing::info!("embed-mlp: {report:?}");
        self.model = Some(m);
        self.report = Some(report);
        Ok(())
    }

    fn predict(&self, protocols: &[&Protocol]) -> Result<Vec<f32>> {
        let m = self
            .model
            .as_ref()
            .ok_or_else(|| PredictError::Invalid("embed-mlp: predict called before fit".into()))?;
        if protocols.is_empty() {
            return Ok(Vec::new());
        }
        m.predict_proba(&self.features(protocols)?)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let m = self
            .model
            .as_ref()
            .ok_or_else(|| PredictError::Invalid("embed-mlp: save called before fit".into()))?;
        write_config(
            dir,
            &EmbedMlpConfig {
                header: Header {
                    kind: ModelKind::EmbedMlp,
                    trialforge_version: env!("CARGO_PKG_VERSION").into(),
                },
                params: self.params.clone(),
                encoder: self.embedder.id(),
                dim: self.embedder.dim(),
                fit: self.report.clone(),
            },
        )?;
        save_weights(dir, &m.tensors("mlp"))
    }
}
