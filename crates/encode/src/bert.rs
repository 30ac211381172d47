//! BERT-family sentence encoder (all-MiniLM-L6-v2 by default; any BERT checkpoint with
//! `config.json`, `tokenizer.json` and `model.safetensors` loads the same way).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::{EncodeError, Result, TextEncoder};

pub struct BertEncoder {
    model: BertModel,
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

    /// Number of tokens each text has after truncation (for sorting work by length).
    pub fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))?;
        Ok(enc.iter().map(|e| e.get_ids().len()).collect())
    }

    fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
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
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let types = Tensor::from_vec(types, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
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

impl TextEncoder for BertEncoder {
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
