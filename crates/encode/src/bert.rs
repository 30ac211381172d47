//! BERT-family sentence encoder (all-MiniLM-L6-v2 by default; any BERT checkpoint with
//! `config.json`, `tokenizer.json` and `model.safetensors` loads the same way).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, HiddenAct};
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::{EncodeError, Result, TextEncoder};

pub struct BertEncoder {
    model: BertModel,
    /// The same model without its top layer, loaded on first use by [`BertEncoder::states_below_top`].
    below_top: OnceLock<BertModel>,
    config: Config,
    weights: PathBuf,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
    max_len: usize,
    batch_size: usize,
    id: String,
}

impl BertEncoder {
    /// Loads a model folder. `max_len` comes from `sentence_bert_config.json` when present
    /// (256 for all-MiniLM-L6-v2), else from the model's position limit.
    pub fn load(dir: &Path) -> Result<Self> {
        let file = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(EncodeError::Model {
                    path: p,
                    message: "missing: a BERT model folder needs config.json, tokenizer.json and model.safetensors".into(),
                })
            }
        };
        let config_path = file("config.json")?;
        let config_text =
            std::fs::read_to_string(&config_path).map_err(|source| EncodeError::Io {
                path: config_path.clone(),
                source,
            })?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| EncodeError::Model {
                path: config_path.clone(),
                message: format!("not a BERT config: {e}"),
            })?;
        let max_positions: usize = serde_json::from_str::<serde_json::Value>(&config_text)
            .ok()
            .and_then(|v| v["max_position_embeddings"].as_u64())
            .unwrap_or(512) as usize;
        let max_len = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["max_seq_length"].as_u64())
            .map_or(max_positions, |n| (n as usize).min(max_positions));
        let dim: usize = serde_json::from_str::<serde_json::Value>(&config_text)
            .ok()
            .and_then(|v| v["hidden_size"].as_u64())
            .ok_or_else(|| EncodeError::Model {
                path: config_path.clone(),
                message: "no `hidden_size`".into(),
            })? as usize;

        let tok_path = file("tokenizer.json")?;
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| EncodeError::Model {
            path: tok_path.clone(),
            message: e.to_string(),
        })?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));

        let weights = file("model.safetensors")?;
        let device = Device::Cpu;
        // SAFETY: the weights file is memory-mapped read-only and not modified while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device)? };
        let model = BertModel::load(vb, &config)?;
        if config.num_hidden_layers == 0 {
            return Err(EncodeError::Model {
                path: config_path,
                message: "`num_hidden_layers` is 0".into(),
            });
        }

        // The id covers the weights and the tokenizer, so a fine-tuned copy never shares cache entries.
        let mut h = Sha256::new();
        for p in [&weights, &tok_path, &config_path] {
            let bytes = std::fs::read(p).map_err(|source| EncodeError::Io {
                path: p.clone(),
                source,
            })?;
            h.update(&bytes);
        }
        h.update(max_len.to_le_bytes());
        let name = dir
            .file_name()
            .map_or("bert".into(), |n| n.to_string_lossy().into_owned());
        let id = format!("{name}-{}", &hex::encode(h.finalize())[..16]);
        Ok(BertEncoder {
            model,
            below_top: OnceLock::new(),
            config,
            weights,
            tokenizer,
            device,
            dim,
            max_len,
            batch_size: 32,
            id,
        })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids, type ids and attention mask of a batch, padded to its longest text: (n, len) each.
    fn tokenise(&self, texts: &[&str]) -> Result<(Tensor, Tensor, Tensor)> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))?;
        let len = enc[0].get_ids().len();
        let n = enc.len();
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        let mut types = Vec::with_capacity(n * len);
        for e in &enc {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
            types.extend_from_slice(e.get_type_ids());
        }
        Ok((
            Tensor::from_vec(ids, (n, len), &self.device)?,
            Tensor::from_vec(types, (n, len), &self.device)?,
            Tensor::from_vec(mask, (n, len), &self.device)?,
        ))
    }

    fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let (ids, types, mask) = self.tokenise(texts)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (n, len, dim)
                                                                     // Mean over real tokens only, then unit length: sentence-transformers' pooling.
        let maskf = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&maskf)?.sum(1)?;
        let counts = maskf.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}

/// The activation of a BERT feed-forward layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (`gelu` in a BERT config).
    GeluErf,
    /// tanh approximation (`gelu_approximate`).
    GeluTanh,
    Relu,
}

/// The weights of one BERT layer under short names (`query.weight`, `key.bias`, `attn_norm.weight`,
/// `ffn_in.weight`, `ffn_out.bias`, `ffn_norm.weight`, ...), for a model that trains a copy of it.
pub struct EncoderLayer {
    pub tensors: HashMap<String, Tensor>,
    pub heads: usize,
    pub eps: f64,
    pub activation: Activation,
}

/// Short name in [`EncoderLayer`] -> name under `encoder.layer.N.` in a BERT checkpoint.
pub const LAYER_TENSORS: [(&str, &str); 16] = [
    ("query.weight", "attention.self.query.weight"),
    ("query.bias", "attention.self.query.bias"),
    ("key.weight", "attention.self.key.weight"),
    ("key.bias", "attention.self.key.bias"),
    ("value.weight", "attention.self.value.weight"),
    ("value.bias", "attention.self.value.bias"),
    ("attn_out.weight", "attention.output.dense.weight"),
    ("attn_out.bias", "attention.output.dense.bias"),
    ("attn_norm.weight", "attention.output.LayerNorm.weight"),
    ("attn_norm.bias", "attention.output.LayerNorm.bias"),
    ("ffn_in.weight", "intermediate.dense.weight"),
    ("ffn_in.bias", "intermediate.dense.bias"),
    ("ffn_out.weight", "output.dense.weight"),
    ("ffn_out.bias", "output.dense.bias"),
    ("ffn_norm.weight", "output.LayerNorm.weight"),
    ("ffn_norm.bias", "output.LayerNorm.bias"),
];

impl BertEncoder {
    pub fn num_layers(&self) -> usize {
        self.config.num_hidden_layers
    }

    fn weights_err(&self, message: String) -> EncodeError {
        EncodeError::Model {
            path: self.weights.clone(),
            message,
        }
    }

    /// The hidden states that enter the top layer, one (tokens x dim) matrix per text, padding
    /// removed: what a model that fine-tunes only the top layer needs to see of the frozen rest.
    pub fn states_below_top(&self, texts: &[&str]) -> Result<Vec<Tensor>> {
        let below = match self.below_top.get() {
            Some(m) => m,
            None => {
                let mut config = self.config.clone();
                config.num_hidden_layers -= 1;
                // SAFETY: as in `load`: read-only map of a file that is not modified meanwhile.
                let vb = unsafe {
                    VarBuilder::from_mmaped_safetensors(&[&self.weights], DType::F32, &self.device)?
                };
                let m = BertModel::load(vb, &config)?;
                self.below_top.get_or_init(|| m)
            }
        };
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![None; texts.len()];
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let (ids, types, mask) = self.tokenise(&batch)?;
            let hidden = below.forward(&ids, &types, Some(&mask))?;
            let lengths: Vec<u32> = mask.sum(1)?.to_vec1()?;
            for (row, (&i, &len)) in chunk.iter().zip(&lengths).enumerate() {
                out[i] = Some(hidden.get(row)?.narrow(0, 0, len as usize)?.contiguous()?);
            }
        }
        Ok(out
            .into_iter()
            .map(|t| t.expect("every text was encoded"))
            .collect())
    }

    /// The top layer's weights, read from the checkpoint (plain, `bert.`-prefixed or
    /// `<model_type>.`-prefixed names, as candle's loader accepts).
    pub fn top_layer(&self) -> Result<EncoderLayer> {
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(&self.weights)? };
        let top = self.config.num_hidden_layers - 1;
        let mut prefixes = vec![String::new(), "bert.".to_string()];
        if let Some(t) = &self.config.model_type {
            prefixes.push(format!("{t}."));
        }
        let prefix = prefixes
            .into_iter()
            .map(|p| format!("{p}encoder.layer.{top}."))
            .find(|p| st.get(&format!("{p}{}", LAYER_TENSORS[0].1)).is_ok())
            .ok_or_else(|| {
                self.weights_err(format!(
                    "no `encoder.layer.{top}.{}` tensor (under any prefix)",
                    LAYER_TENSORS[0].1
                ))
            })?;
        let mut tensors = HashMap::new();
        for (short, long) in LAYER_TENSORS {
            let name = format!("{prefix}{long}");
            let t = st
                .load(&name, &self.device)
                .map_err(|e| self.weights_err(format!("`{name}`: {e}")))?
                .to_dtype(DType::F32)?;
            tensors.insert(short.to_string(), t);
        }
        let activation = match self.config.hidden_act {
            HiddenAct::Gelu => Activation::GeluErf,
            HiddenAct::GeluApproximate => Activation::GeluTanh,
            HiddenAct::Relu => Activation::Relu,
        };
        Ok(EncoderLayer {
            tensors,
            heads: self.config.num_attention_heads,
            eps: self.config.layer_norm_eps,
            activation,
        })
    }

    /// Last-layer hidden states of the first token ([CLS]) of each text, as the full model computes
    /// them; the reference that a re-implementation of the top layer is checked against.
    pub fn first_token_states(&self, texts: &[&str]) -> Result<Tensor> {
        let (ids, types, mask) = self.tokenise(texts)?;
        Ok(self
            .model
            .forward(&ids, &types, Some(&mask))?
            .narrow(1, 0, 1)?
            .squeeze(1)?)
    }
}

impl TextEncoder for BertEncoder {
    fn as_bert(&self) -> Option<&BertEncoder> {
        Some(self)
    }

    fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))?;
        Ok(enc.iter().map(|e| e.get_ids().len()).collect())
    }

    fn model_id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    /// Sorts by length so each batch pads little, encodes in batches, returns in input order.
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            for (&i, v) in chunk.iter().zip(self.encode_batch(&batch)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}
