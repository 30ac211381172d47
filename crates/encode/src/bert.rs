//! BERT-family sentence encoder (all-MiniLM-L6-v2 by default; any BERT checkpoint with
//! `config.json`, `tokenizer.json` and `model.safetensors` loads the same way).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{Config, HiddenAct};
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationParams};

use crate::forward::{checkpoint_prefixes, BertNet, PackedTokens};
use crate::{EncodeError, Result, TextEncoder};

/// Bumped whenever the forward pass changes its floats (part of the model id, so of every cache key).
const FORWARD_VERSION: &str = "packed-forward-1";

pub struct BertEncoder {
    net: BertNet,
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
        // No padding: the forward pass packs the texts of a batch end to end.
        tokenizer.with_padding(None);

        let weights = file("model.safetensors")?;
        let device = Device::Cpu;
        if config.num_hidden_layers == 0 {
            return Err(EncodeError::Model {
                path: config_path,
                message: "`num_hidden_layers` is 0".into(),
            });
        }
        let net = BertNet::load(&weights, &config)?;

        // The id covers the weights and the tokenizer, so a fine-tuned copy never shares cache
        // entries, and the forward pass's version: vectors cached by an earlier implementation
        // (candle's padded batches, which rounded differently) are not mixed with this one's.
        let mut h = Sha256::new();
        h.update(FORWARD_VERSION.as_bytes());
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
            net,
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

    /// The token ids of a batch, packed end to end (truncated to `max_len`, not padded).
    fn tokenise(&self, texts: &[&str]) -> Result<PackedTokens> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))?;
        let mut packed = PackedTokens {
            ids: Vec::new(),
            type_ids: Vec::new(),
            lengths: Vec::with_capacity(enc.len()),
        };
        for e in &enc {
            packed.ids.extend_from_slice(e.get_ids());
            packed.type_ids.extend_from_slice(e.get_type_ids());
            packed.lengths.push(e.get_ids().len());
        }
        Ok(packed)
    }

    /// The states after `layers` layers of a batch's texts, packed: one (tokens x dim) block per
    /// text, at the text's offset.
    fn hidden_states(&self, texts: &[&str], layers: usize) -> Result<(PackedTokens, Vec<f32>)> {
        let tokens = self.tokenise(texts)?;
        let hidden = self.net.forward(&tokens, layers)?;
        Ok((tokens, hidden))
    }

    fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let (tokens, hidden) = self.hidden_states(texts, self.net.num_layers())?;
        // Mean over the text's tokens, then unit length: sentence-transformers' pooling.
        let d = self.dim;
        Ok(tokens
            .offsets()
            .iter()
            .zip(&tokens.lengths)
            .map(|(&start, &len)| {
                let mut mean = vec![0f32; d];
                for row in hidden[start * d..(start + len) * d].chunks_exact(d) {
                    for (m, x) in mean.iter_mut().zip(row) {
                        *m += x;
                    }
                }
                let count = len.max(1) as f32;
                mean.iter_mut().for_each(|m| *m /= count);
                crate::normalise(&mut mean);
                mean
            })
            .collect())
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

    /// The hidden states that enter the top layer, one (tokens x dim) matrix per text (no padding):
    /// what a model that fine-tunes only the top layer needs to see of the frozen rest.
    pub fn states_below_top(&self, texts: &[&str]) -> Result<Vec<Tensor>> {
        let below = self.net.num_layers() - 1;
        let d = self.dim;
        let mut out = Vec::with_capacity(texts.len());
        // In input order: packed batches need no sorting by length.
        for batch in texts.chunks(self.batch_size) {
            let (tokens, hidden) = self.hidden_states(batch, below)?;
            for (start, &len) in tokens.offsets().into_iter().zip(&tokens.lengths) {
                out.push(Tensor::from_slice(
                    &hidden[start * d..(start + len) * d],
                    (len, d),
                    &self.device,
                )?);
            }
        }
        Ok(out)
    }

    /// The top layer's weights, read from the checkpoint (plain, `bert.`-prefixed or
    /// `<model_type>.`-prefixed names, as candle's loader accepts).
    pub fn top_layer(&self) -> Result<EncoderLayer> {
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(&self.weights)? };
        let top = self.config.num_hidden_layers - 1;
        let prefix = checkpoint_prefixes(&self.config)
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
        let (tokens, hidden) = self.hidden_states(texts, self.net.num_layers())?;
        let d = self.dim;
        let mut first = Vec::with_capacity(texts.len() * d);
        for start in tokens.offsets() {
            first.extend_from_slice(&hidden[start * d..(start + 1) * d]);
        }
        Ok(Tensor::from_vec(first, (texts.len(), d), &self.device)?)
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

    /// Encodes in batches of `batch_size` texts (packed, so lengths may differ freely), in input order.
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch_size) {
            out.extend(self.encode_batch(batch)?);
        }
        Ok(out)
    }
}
