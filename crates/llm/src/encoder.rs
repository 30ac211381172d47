//! A llama-family GGUF model as a sentence encoder: the mean of its final (normalised) hidden states
//! over a text's tokens, scaled to unit length, behind the same [`TextEncoder`] trait as the BERT
//! encoders, so any model or cache that takes an encoder takes an LLM too (CLaDMoP's criteria
//! branch reads an LLM this way). Texts go through the model several at a time (one sequence slot
//! each, up to [`BATCH_TOKENS`] tokens per pass); still far slower than a BERT encoder.

use std::path::Path;
use std::sync::Mutex;

use tokenizers::Tokenizer;
use trialforge_encode::{EncodeError, TextEncoder};

use crate::llama::Llama;
use crate::local::OpenedGguf;
use crate::{LocalOptions, Result};

/// Tokens per forward pass of a batch of texts: bounds the activations' memory.
const BATCH_TOKENS: usize = 2048;

/// Changes when the forward pass changes the vectors (cached vectors of another version are not
/// mixed in: the version is part of the model id).
const ENCODER_VERSION: &str = "batched-1";

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
            id: format!("{}:mean-hidden:{max_tokens}:{ENCODER_VERSION}", g.id),
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

    /// A text's tokens; an empty text still gets a vector: the model's reading of a single space.
    fn tokens_or_space(&self, text: &str) -> std::result::Result<Vec<u32>, EncodeError> {
        let ids = self.tokens(text)?;
        if !ids.is_empty() {
            return Ok(ids);
        }
        Ok(self
            .tokenizer
            .encode(" ", false)
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
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
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.tokens_or_space(t))
            .collect::<std::result::Result<_, _>>()?;
        let mut model = self
            .model
            .lock()
            .map_err(|_| EncodeError::Backend("the LLM encoder was poisoned by a panic".into()))?;
        let mut out = Vec::with_capacity(texts.len());
        let mut start = 0;
        while start < ids.len() {
            // As many texts as fit in one pass (at least one).
            let mut end = start + 1;
            let mut tokens = ids[start].len();
            while end < ids.len() && tokens + ids[end].len() <= BATCH_TOKENS {
                tokens += ids[end].len();
                end += 1;
            }
            let batch: Vec<&[u32]> = ids[start..end].iter().map(Vec::as_slice).collect();
            let vectors = model
                .mean_hidden_states(&batch)
                .map_err(|e| EncodeError::Backend(e.to_string()))?;
            for mut v in vectors {
                trialforge_encode::normalise(&mut v);
                out.push(v);
            }
            start = end;
        }
        Ok(out)
    }

    fn token_counts(&self, texts: &[&str]) -> trialforge_encode::Result<Vec<usize>> {
        texts.iter().map(|t| Ok(self.tokens(t)?.len())).collect()
    }
}
