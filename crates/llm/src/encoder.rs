//! A llama-family GGUF model as a sentence encoder: the mean of its final (normalised) hidden states
//! over a text's tokens, scaled to unit length, behind the same [`TextEncoder`] trait as the BERT
//! encoders, so any model or cache that takes an encoder takes an LLM too (CLaDMoP's criteria
//! branch reads an LLM this way). Texts are encoded one at a time (the forward pass keeps one KV
//! cache), which makes it far slower than a BERT encoder: small sets only, on this machine.

use std::path::Path;
use std::sync::Mutex;

use tokenizers::Tokenizer;
use trialforge_encode::{EncodeError, TextEncoder};

use crate::llama::Llama;
use crate::local::OpenedGguf;
use crate::{LocalOptions, Result};

pub struct LlmEncoder {
    model: Mutex<Llama>,
    tokenizer: Tokenizer,
    dim: usize,
    max_tokens: usize,
    id: String,
}

impl LlmEncoder {
    /// Loads the GGUF at `path`; texts are cut to their first `max_tokens` tokens.
    pub fn load(path: &Path, opts: &LocalOptions, max_tokens: usize) -> Result<Self> {
        let g = OpenedGguf::open(path, opts)?;
        let dim = g.model.hidden_size();
        let max_tokens = max_tokens.clamp(1, g.context_len);
        Ok(LlmEncoder {
            id: format!("{}:mean-hidden:{max_tokens}", g.id),
            model: Mutex::new(g.model),
            tokenizer: g.tokenizer,
            dim,
            max_tokens,
        })
    }

    fn tokens(&self, text: &str) -> std::result::Result<Vec<u32>, EncodeError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        ids.truncate(self.max_tokens);
        Ok(ids)
    }

    fn encode_one(&self, text: &str) -> std::result::Result<Vec<f32>, EncodeError> {
        let mut ids = self.tokens(text)?;
        if ids.is_empty() {
            // An empty text still gets a vector: the model's reading of a single space.
            ids = self
                .tokenizer
                .encode(" ", false)
                .map_err(|e| EncodeError::Tokenizer(e.to_string()))?
                .get_ids()
                .to_vec();
        }
        let mut model = self.model.lock().map_err(|_| {
            EncodeError::Tokenizer("the LLM encoder was poisoned by a panic".into())
        })?;
        let mut v = model
            .mean_hidden_state(&ids)
            .map_err(|e| EncodeError::Backend(e.to_string()))?;
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
        Ok(v)
    }
}

impl TextEncoder for LlmEncoder {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn encode(&self, texts: &[&str]) -> trialforge_encode::Result<Vec<Vec<f32>>> {
        texts.iter().map(|t| self.encode_one(t)).collect()
    }

    fn token_counts(&self, texts: &[&str]) -> trialforge_encode::Result<Vec<usize>> {
        texts.iter().map(|t| Ok(self.tokens(t)?.len())).collect()
    }
}
