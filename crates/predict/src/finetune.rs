//! The text classifier in the role BioBERT plays in the retrieval-reasoning paper: the encoder reads
//! the protocol rendering (`trial::render::protocol_text`, the same text `embed-mlp` embeds), its top
//! layer is unfrozen and trained with a classification head on the first token ([CLS]); the layers
//! below stay frozen, and the states they hand to the top layer are computed once and cached.
//!
//! Only the first position of the top layer reaches the head, so the layer is evaluated for that
//! position alone. That is exact, not an approximation: the other positions' outputs of the last
//! layer feed nothing. The one query also lets the key and value projections fold into the query
//! side, q·(W_k s_j + b_k) = (W_kᵀ q)·s_j + q·b_k (the last term is the same for every j and drops
//! out of the softmax) and Σ_j a_j (W_v s_j + b_v) = W_v (Σ_j a_j s_j) + b_v, so no state is ever
//! projected: a step costs two (heads x dim) x (dim x tokens) products per trial instead of
//! projecting all tokens, while the gradients reach W_k and W_v unchanged. Unfreezing a second
//! layer would need every position of the layer below, the full cost of a BERT layer per token.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use trialforge_encode::{Activation, EncoderLayer, LAYER_TENSORS};
use trialforge_trial::Protocol;

use crate::cladmop::layers::{layer_norm, Init, Store};
use crate::model::{
    check_encoder, labels, read_config, save_weights, write_config, Example, Header, ModelKind,
    OutcomeModel,
};
use crate::nn::{bce, ensure_finite, EarlyStopping};
use crate::{PredictError, ProtocolEmbedder, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncoderFtParams {
    /// Learning rate of the unfrozen encoder layer (BERT fine-tuning range).
    pub layer_lr: f64,
    /// Learning rate of the new classification head.
    pub head_lr: f64,
    /// AdamW's decoupled weight decay on every trained tensor.
    pub weight_decay: f64,
    pub max_epochs: usize,
    /// Stop when the validation loss has not improved for this many epochs.
    pub patience: usize,
    pub batch_size: usize,
    pub seed: u64,
}

impl Default for EncoderFtParams {
    fn default() -> Self {
        EncoderFtParams {
            layer_lr: 5e-5,
            head_lr: 1e-3,
            weight_decay: 0.01,
            max_epochs: 20,
            patience: 4,
            batch_size: 16,
            seed: 0,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncoderFtReport {
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_valid_loss: Option<f64>,
    pub final_train_loss: f64,
    /// Seconds spent computing (or reading cached) below-top states, and training.
    pub states_seconds: f64,
    pub train_seconds: f64,
    pub trained_parameters: usize,
}

#[derive(Serialize, Deserialize)]
struct EncoderFtConfig {
    #[serde(flatten)]
    header: Header,
    params: EncoderFtParams,
    encoder: String,
    heads: usize,
    eps: f64,
    activation: String,
    report: Option<EncoderFtReport>,
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::GeluErf => "gelu",
        Activation::GeluTanh => "gelu_approximate",
        Activation::Relu => "relu",
    }
}

/// The encoder's top layer, evaluated at the first position only, with a logistic head on it.
struct TopLayer {
    store: Store,
    heads: usize,
    eps: f64,
    activation: Activation,
}

impl TopLayer {
    /// From the encoder's layer weights (prefix `layer.`) and a fresh head.
    fn new(layer: EncoderLayer, seed: u64) -> Result<TopLayer> {
        let dim = layer
            .tensors
            .get("query.weight")
            .ok_or_else(|| PredictError::Invalid("encoder layer without query.weight".into()))?
            .dim(0)?;
        let tensors = layer
            .tensors
            .into_iter()
            .map(|(k, v)| (format!("layer.{k}"), v))
            .collect();
        let mut store = Store::from_tensors(tensors)?;
        let mut head_init = Store::new(seed);
        let w = head_init.var("head.weight", &[1, dim], Init::FanIn(dim))?;
        let b = head_init.var("head.bias", &[1], Init::Zeros)?;
        store.insert("head.weight", w);
        store.insert("head.bias", b);
        let top = TopLayer {
            store,
            heads: layer.heads,
            eps: layer.eps,
            activation: layer.activation,
        };
        top.check_shapes(dim)?;
        Ok(top)
    }

    fn check_shapes(&self, dim: usize) -> Result<()> {
        if self.heads == 0 || !dim.is_multiple_of(self.heads) {
            return Err(PredictError::Invalid(format!(
                "hidden size {dim} does not split into {} heads",
                self.heads
            )));
        }
        for (short, _) in LAYER_TENSORS {
            self.get(&format!("layer.{short}"))?;
        }
        self.get("head.weight")?;
        Ok(())
    }

    fn get(&self, name: &str) -> Result<Tensor> {
        self.store
            .get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| PredictError::Invalid(format!("missing weights `{name}`")))
    }

    fn linear(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        let w = self.get(&format!("{name}.weight"))?;
        let b = self.get(&format!("{name}.bias"))?;
        Ok(x.matmul(&w.t()?)?.broadcast_add(&b)?)
    }

    fn norm(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        layer_norm(
            x,
            &self.get(&format!("{name}.weight"))?,
            &self.get(&format!("{name}.bias"))?,
            self.eps,
        )
    }

    /// The top layer's output at the first position: `states` (batch, tokens, dim) entering the
    /// layer, `mask` (batch, tokens) 1 for real tokens, 0 for padding. Returns (batch, dim).
    fn first_position(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, _, d) = states.dims3()?;
        let (h, dh) = (self.heads, d / self.heads);
        let first = states.narrow(1, 0, 1)?.squeeze(1)?; // (b, d)
        let q = self.linear(&first, "layer.query")?;
        let q = q.reshape((b, h, dh))?.transpose(0, 1)?.contiguous()?; // (h, b, dh)
        let wk = self.get("layer.key.weight")?.reshape((h, dh, d))?;
        let qk = q.matmul(&wk)?.transpose(0, 1)?.contiguous()?; // (b, h, d): W_kᵀ q per head
        let scores = (qk.matmul(&states.transpose(1, 2)?)? / (dh as f64).sqrt())?; // (b, h, t)
        let bias = ((mask - 1.0)? * 1e9)?.unsqueeze(1)?;
        let att = candle_nn::ops::softmax(&scores.broadcast_add(&bias)?, D::Minus1)?;
        let pooled = att.matmul(states)?.transpose(0, 1)?.contiguous()?; // (h, b, d)
        let wv = self.get("layer.value.weight")?.reshape((h, dh, d))?;
        let context = pooled
            .matmul(&wv.transpose(1, 2)?)? // (h, b, dh)
            .transpose(0, 1)?
            .contiguous()?
            .reshape((b, d))?
            .broadcast_add(&self.get("layer.value.bias")?)?;
        let attended = self.norm(
            &(self.linear(&context, "layer.attn_out")? + &first)?,
            "layer.attn_norm",
        )?;
        let inner = self.linear(&attended, "layer.ffn_in")?;
        let inner = match self.activation {
            Activation::GeluErf => inner.gelu_erf()?,
            Activation::GeluTanh => inner.gelu()?,
            Activation::Relu => inner.relu()?,
        };
        self.norm(
            &(self.linear(&inner, "layer.ffn_out")? + attended)?,
            "layer.ffn_norm",
        )
    }

    fn logits(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        Ok(self
            .linear(&self.first_position(states, mask)?, "head")?
            .squeeze(1)?)
    }
}

fn protocols<'a>(examples: &[Example<'a>]) -> Vec<&'a Protocol> {
    examples.iter().map(|e| e.protocol).collect()
}

/// Pads f16 (tokens x dim) matrices into one f32 (batch, tokens, dim) tensor and its 0/1 mask.
fn pad(states: &[&Tensor]) -> Result<(Tensor, Tensor)> {
    let longest = states
        .iter()
        .map(|s| s.dim(0))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let t = longest.iter().copied().max().unwrap_or(0).max(1);
    let mut rows = Vec::with_capacity(states.len());
    let mut mask = Vec::with_capacity(states.len() * t);
    for (s, &n) in states.iter().zip(&longest) {
        let s = s.to_dtype(DType::F32)?;
        rows.push(if n < t {
            s.pad_with_zeros(0, 0, t - n)?
        } else {
            s
        });
        mask.extend((0..t).map(|i| if i < n { 1f32 } else { 0.0 }));
    }
    Ok((
        Tensor::stack(&rows, 0)?,
        Tensor::from_vec(mask, (states.len(), t), &Device::Cpu)?,
    ))
}

pub struct EncoderFt<'e> {
    pub params: EncoderFtParams,
    embedder: &'e dyn ProtocolEmbedder,
    top: Option<TopLayer>,
    report: Option<EncoderFtReport>,
    progress: Box<dyn Fn(&str) + 'e>,
}

impl<'e> EncoderFt<'e> {
    pub fn new(params: EncoderFtParams, embedder: &'e dyn ProtocolEmbedder) -> Self {
        EncoderFt {
            params,
            embedder,
            top: None,
            report: None,
            progress: Box::new(|_| {}),
        }
    }

    /// `f` receives the training stage and each epoch's losses.
    pub fn with_progress(mut self, f: impl Fn(&str) + 'e) -> Self {
        self.progress = Box::new(f);
        self
    }

    pub fn report(&self) -> Option<&EncoderFtReport> {
        self.report.as_ref()
    }

    pub fn load(dir: &Path, embedder: &'e dyn ProtocolEmbedder) -> Result<Self> {
        let cfg: EncoderFtConfig = read_config(dir)?;
        check_encoder(dir, &cfg.encoder, embedder)?;
        let wpath = dir.join("weights.safetensors");
        let tensors = candle_core::safetensors::load(&wpath, &Device::Cpu)?;
        let activation = [Activation::GeluErf, Activation::GeluTanh, Activation::Relu]
            .into_iter()
            .find(|a| activation_name(*a) == cfg.activation)
            .ok_or_else(|| PredictError::Format {
                path: dir.join("config.json"),
                message: format!("unknown activation `{}`", cfg.activation),
            })?;
        let top = TopLayer {
            store: Store::from_tensors(tensors)?,
            heads: cfg.heads,
            eps: cfg.eps,
            activation,
        };
        let dim = top.get("layer.query.weight")?.dim(0)?;
        top.check_shapes(dim).map_err(|e| PredictError::Format {
            path: wpath,
            message: e.to_string(),
        })?;
        Ok(EncoderFt {
            params: cfg.params,
            embedder,
            top: Some(top),
            report: cfg.report,
            progress: Box::new(|_| {}),
        })
    }

    fn loss(&self, top: &TopLayer, states: &[Tensor], y: &[u8]) -> Result<f64> {
        let mut total = 0.0;
        for (chunk, yc) in states.chunks(64).zip(y.chunks(64)) {
            let (x, m) = pad(&chunk.iter().collect::<Vec<_>>())?;
            let yt = crate::nn::label_tensor(yc)?;
            total += bce(&top.logits(&x, &m)?, &yt)?.to_scalar::<f32>()? as f64 * yc.len() as f64;
        }
        Ok(total / y.len().max(1) as f64)
    }
}

impl OutcomeModel for EncoderFt<'_> {
    fn kind(&self) -> ModelKind {
        ModelKind::EncoderFt
    }

    fn fit(&mut self, train: &[Example], valid: &[Example]) -> Result<()> {
        if train.is_empty() {
            return Err(PredictError::Invalid(
                "encoder-ft: no training examples".into(),
            ));
        }
        let p = self.params.clone();
        let started = std::time::Instant::now();
        (self.progress)("encoding renderings below the top layer");
        let xs = self.embedder.states_below_top(&protocols(train))?;
        let vs = self.embedder.states_below_top(&protocols(valid))?;
        let (ys, yv) = (labels(train), labels(valid));
        let states_seconds = started.elapsed().as_secs_f64();

        let started = std::time::Instant::now();
        let top = TopLayer::new(self.embedder.top_layer()?, p.seed)?;
        let optimiser = |vars: Vec<Var>, lr: f64| {
            AdamW::new(
                vars,
                ParamsAdamW {
                    lr,
                    weight_decay: p.weight_decay,
                    ..Default::default()
                },
            )
        };
        let mut layer_opt = optimiser(top.store.select(&["layer."]), p.layer_lr)?;
        let mut head_opt = optimiser(top.store.select(&["head."]), p.head_lr)?;
        let mut rng = StdRng::seed_from_u64(p.seed ^ 0xf1e7);
        // Padded once: per-batch padding and f16 conversion cost more than the layer itself.
        let (x_all, m_all) = pad(&xs.iter().collect::<Vec<_>>())?;
        let y_all = crate::nn::label_tensor(&ys)?;
        let mut order: Vec<u32> = (0..xs.len() as u32).collect();
        let mut stopping = EarlyStopping::new(p.patience);
        let (mut epochs, mut train_loss) = (0, f64::NAN);
        for epoch in 0..p.max_epochs {
            epochs = epoch + 1;
            order.shuffle(&mut rng);
            let mut total = 0.0;
            for chunk in order.chunks(p.batch_size.max(1)) {
                let idx = Tensor::from_vec(chunk.to_vec(), chunk.len(), &Device::Cpu)?;
                let (x, m) = (x_all.index_select(&idx, 0)?, m_all.index_select(&idx, 0)?);
                let loss = bce(&top.logits(&x, &m)?, &y_all.index_select(&idx, 0)?)?;
                total += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
                let grads = loss.backward()?;
                layer_opt.step(&grads)?;
                head_opt.step(&grads)?;
            }
            train_loss = total / xs.len() as f64;
            ensure_finite(train_loss, "encoder-ft training", epoch)?;
            let status = if vs.is_empty() {
                format!(
                    "epoch {epochs}/{}: train loss {train_loss:.4}",
                    p.max_epochs
                )
            } else {
                let vloss = self.loss(&top, &vs, &yv)?;
                stopping.record(epoch, vloss, || top.store.snapshot())?;
                format!(
                    "epoch {epochs}/{}: train loss {train_loss:.4}, valid loss {vloss:.4}",
                    p.max_epochs
                )
            };
            tracing::debug!("encoder-ft {status}");
            (self.progress)(&status);
            if stopping.should_stop(epoch) {
                break;
            }
        }
        let (best_valid_loss, best_epoch) = match stopping.into_best() {
            Some(b) => {
                top.store.restore(&b.weights)?;
                (Some(b.loss), b.epoch)
            }
            None => (None, epochs.saturating_sub(1)),
        };
        let report = EncoderFtReport {
            epochs,
            best_epoch,
            best_valid_loss,
            final_train_loss: train_loss,
            states_seconds,
            train_seconds: started.elapsed().as_secs_f64(),
            trained_parameters: top.store.parameter_count(&[]),
        };
        tracing::info!("encoder-ft: {report:?}");
        self.top = Some(top);
        self.report = Some(report);
        Ok(())
    }

    fn predict(&self, protocols: &[&Protocol]) -> Result<Vec<f32>> {
        let top = self
            .top
            .as_ref()
            .ok_or_else(|| PredictError::Invalid("encoder-ft: predict called before fit".into()))?;
        let states = self.embedder.states_below_top(protocols)?;
        let mut out = Vec::with_capacity(protocols.len());
        for chunk in states.chunks(64) {
            let (x, m) = pad(&chunk.iter().collect::<Vec<_>>())?;
            out.extend(candle_nn::ops::sigmoid(&top.logits(&x, &m)?)?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let top = self
            .top
            .as_ref()
            .ok_or_else(|| PredictError::Invalid("encoder-ft: save called before fit".into()))?;
        write_config(
            dir,
            &EncoderFtConfig {
                header: Header {
                    kind: ModelKind::EncoderFt,
                    trialforge_version: env!("CARGO_PKG_VERSION").into(),
                },
                params: self.params.clone(),
                encoder: self.embedder.id(),
                heads: top.heads,
                eps: top.eps,
                activation: activation_name(top.activation).into(),
                report: self.report.clone(),
            },
        )?;
        save_weights(dir, &top.store.tensors())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trialforge_encode::BertEncoder;

    /// The first-position shortcut with the checkpoint's weights must give what the full encoder
    /// gives at [CLS], padding included. Needs the fetched MiniLM (`trialforge models fetch`).
    #[test]
    fn shortcut_top_layer_reproduces_the_encoder() {
        let dir = trialforge_models::require(
            &trialforge_models::default_dir(),
            &trialforge_models::MINILM,
        )
        .expect("the MiniLM model; run `trialforge models fetch` first");
        let bert = BertEncoder::load(&dir).unwrap();
        let texts = [
            "Inclusion: adults with type 2 diabetes on metformin. Exclusion: pregnancy.",
            "Healthy volunteers.",
            "Phase I dose escalation of an oral kinase inhibitor in solid tumours after two prior lines.",
        ];
        let want = bert.first_token_states(&texts).unwrap();
        let states = bert.states_below_top(&texts).unwrap();
        assert_eq!(
            states[1].dim(0).unwrap(),
            5,
            "[CLS] healthy volunteers . [SEP]"
        );
        let top = TopLayer::new(bert.top_layer().unwrap(), 0).unwrap();
        // Through the f16 cache's rounding, as training sees them.
        let f16: Vec<Tensor> = states
            .iter()
            .map(|s| s.to_dtype(DType::F16).unwrap())
            .collect();
        for (inputs, tol) in [(&states, 1e-4f32), (&f16, 5e-3)] {
            let (x, m) = pad(&inputs.iter().collect::<Vec<_>>()).unwrap();
            let got = top.first_position(&x, &m).unwrap();
            let diff: f32 = (got - &want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(diff < tol, "max difference {diff}");
        }
    }

    #[test]
    fn padding_masks_the_added_rows() {
        let a = Tensor::ones((2, 3), DType::F16, &Device::Cpu).unwrap();
        let b = Tensor::ones((4, 3), DType::F16, &Device::Cpu).unwrap();
        let (x, m) = pad(&[&a, &b]).unwrap();
        assert_eq!(x.dims(), &[2, 4, 3]);
        assert_eq!(
            m.to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 1.0, 0.0, 0.0], vec![1.0; 4]]
        );
        let summed: Vec<f32> = x.sum((1, 2)).unwrap().to_vec1().unwrap();
        assert_eq!(summed, vec![6.0, 12.0]);
    }
}
