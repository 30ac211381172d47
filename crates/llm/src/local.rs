//! In-process GGUF chat models (llama architecture: SmolLM2, Llama, Mistral, Qwen-style BPE),
//! decoded by candle on the CPU.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::Tokenizer;

use crate::llama::Llama;
use crate::sampling::{apply_repeat_penalty, Sampler};
use crate::{ChatMessage, ChatModel, Completion, FinishReason, LlmError, Result, SamplingParams};

/// The longest context served: the rotary table and the KV cache grow with it.
const MAX_CONTEXT: usize = 32_768;

/// End-of-turn markers of common chat templates; whichever the vocabulary has stop decoding.
const END_OF_TURN: [&str; 5] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_turn|>",
    "<end_of_turn>",
    "</s>",
];

#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Re-quantise 4/5-bit weights to Q8_0 at load: candle has SIMD kernels for Q8_0 but not
    /// Q4_1, so decoding is faster at the cost of a second at load and more memory.
    pub requantize_q8: bool,
    /// A `tokenizer.json` to use instead of the tokenizer in the GGUF metadata.
    pub tokenizer_json: Option<PathBuf>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            requantize_q8: true,
            tokenizer_json: None,
        }
    }
}

pub struct LocalGguf {
    model: Llama,
    /// llguidance's view of the vocabulary, built on first constrained request.
    guidance: Option<std::sync::Arc<llguidance::ParserFactory>>,
    vocab_size: usize,
    tokenizer: Tokenizer,
    template: String,
    bos_token: String,
    eos_token: String,
    stop_ids: Vec<u32>,
    context_len: usize,
    id: String,
}

/// A llama-family GGUF file opened: the weights, the tokenizer (SmolLM's digit splitting fixed), and
/// what the metadata says.
pub(crate) struct OpenedGguf {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub content: gguf_file::Content,
    pub context_len: usize,
    /// `<general.name>:<file name>:<size>[:q8]`.
    pub id: String,
}

impl OpenedGguf {
    pub fn open(path: &Path, opts: &LocalOptions) -> Result<Self> {
        let model_err = |message: String| LlmError::Model {
            path: path.to_path_buf(),
            message,
        };
        let mut file = std::fs::File::open(path).map_err(|source| LlmError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let ct = gguf_file::Content::read(&mut file)
            .map_err(|e| model_err(format!("not a readable GGUF file: {e}")))?;
        let meta_str = |k: &str| ct.metadata.get(k).and_then(|v| v.to_string().ok()).cloned();
        let arch = meta_str("general.architecture").unwrap_or_default();
        if arch != "llama" {
            return Err(model_err(format!(
                "architecture `{arch}` is not supported (llama-family GGUF models are)"
            )));
        }
        let context_len = ct
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .unwrap_or(2048)
            .min(MAX_CONTEXT as u32) as usize;

        let mut tokenizer = match &opts.tokenizer_json {
            Some(p) => Tokenizer::from_file(p).map_err(|e| LlmError::Model {
                path: p.clone(),
                message: e.to_string(),
            })?,
            None => Tokenizer::from_gguf(&ct)
                .map_err(|e| model_err(format!("tokenizer from metadata: {e}")))?,
        };
        if opts.tokenizer_json.is_none()
            && meta_str("tokenizer.ggml.pre").as_deref() == Some("smollm")
        {
            // candle does not know SmolLM's pre-tokenizer: it splits digits one by one. With this
            // sequence the token ids equal llama.cpp's.
            tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])));
        }
        let name = meta_str("general.name").unwrap_or_else(|| "gguf".into());
        let model = Llama::from_gguf(&ct, &mut file, opts.requantize_q8, context_len)?;
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let id = format!(
            "{}:{}:{size}{}",
            name.replace(' ', "-"),
            path.file_name()
                .map_or(String::new(), |f| f.to_string_lossy().into_owned()),
            if opts.requantize_q8 { ":q8" } else { "" }
        );
        Ok(OpenedGguf {
            model,
            tokenizer,
            content: ct,
            context_len,
            id,
        })
    }
}

impl LocalGguf {
    pub fn load(path: &Path, opts: &LocalOptions) -> Result<Self> {
        let OpenedGguf {
            model,
            tokenizer,
            content: ct,
            context_len,
            id,
        } = OpenedGguf::open(path, opts)?;
        let meta_str = |k: &str| ct.metadata.get(k).and_then(|v| v.to_string().ok()).cloned();
        let template = meta_str("tokenizer.chat_template").ok_or_else(|| LlmError::Model {
            path: path.to_path_buf(),
            message: "no `tokenizer.chat_template` in the metadata: not a chat model".into(),
        })?;
        let token_text = |key: &str| {
            ct.metadata
                .get(key)
                .and_then(|v| v.to_u32().ok())
                .and_then(|id| tokenizer.id_to_token(id))
                .unwrap_or_default()
        };
        let bos_token = token_text("tokenizer.ggml.bos_token_id");
        let eos_token = token_text("tokenizer.ggml.eos_token_id");
        let mut stop_ids: Vec<u32> = END_OF_TURN
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        if let Some(eos) = tokenizer.token_to_id(&eos_token) {
            stop_ids.push(eos);
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let vocab_size = ct
            .metadata
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map_or(tokenizer.get_vocab_size(true), Vec::len);
        Ok(LocalGguf {
            model,
            guidance: None,
            vocab_size,
            tokenizer,
            template,
            bos_token,
            eos_token,
            stop_ids,
            context_len,
            id,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The prompt text the model's own chat template makes of `messages`.
    pub fn render_prompt(&self, messages: &[ChatMessage]) -> Result<String> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", &self.template)
            .map_err(|e| LlmError::Template(e.to_string()))?;
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => &self.bos_token,
                    eos_token => &self.eos_token,
                })
            })
            .map_err(|e| LlmError::Template(e.to_string()))
    }

    /// The llguidance parser factory over this model's vocabulary (built once).
    fn guidance(&mut self) -> Result<std::sync::Arc<llguidance::ParserFactory>> {
        if let Some(f) = &self.guidance {
            return Ok(f.clone());
        }
        let err = |e: String| LlmError::Constraint(e);
        // toktrie pins an older `tokenizers`: hand it our tokenizer as JSON rather than as a value.
        let json = self
            .tokenizer
            .to_string(false)
            .map_err(|e| err(e.to_string()))?;
        let mut bt = toktrie_hf_tokenizers::ByteTokenizer::from_json_bytes(json.as_bytes())
            .map_err(|e| err(e.to_string()))?;
        bt.set_eos_tokens(&self.stop_ids);
        let env = bt
            .into_tok_env(Some(self.vocab_size))
            .map_err(|e| err(e.to_string()))?;
        let mut factory =
            llguidance::ParserFactory::new_simple(&env).map_err(|e| err(e.to_string()))?;
        factory.quiet();
        let f = std::sync::Arc::new(factory);
        self.guidance = Some(f.clone());
        Ok(f)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }
}

impl ChatModel for LocalGguf {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn chat_json(
        &mut self,
        messages: &[ChatMessage],
        params: &SamplingParams,
        schema: Option<&serde_json::Value>,
    ) -> Result<Completion> {
        let mut matcher = match schema {
            Some(schema) => {
                let factory = self.guidance()?;
                let grammar = llguidance::api::TopLevelGrammar::from_json_schema(schema.clone());
                let m = llguidance::Matcher::new(factory.create_parser(grammar));
                if let Some(e) = m.get_error() {
                    return Err(LlmError::Constraint(format!(
                        "the JSON Schema was not accepted: {e}"
                    )));
                }
                Some(m)
            }
            None => None,
        };
        let prompt = self.render_prompt(messages)?;
        let prompt_ids = self.encode(&prompt)?;
        if prompt_ids.len() + params.max_tokens > self.context_len {
            return Err(LlmError::ContextOverflow {
                prompt: prompt_ids.len() + params.max_tokens,
                context: self.context_len,
            });
        }
        let mut sampler = Sampler::new(params);

        self.model.clear();
        let started = Instant::now();
        let mut logits = self.model.forward(&prompt_ids)?;
        let prefill_seconds = started.elapsed().as_secs_f64();

        let decode_started = Instant::now();
        let mut generated: Vec<u32> = Vec::new();
        let mut finish_reason = FinishReason::Length;
        while generated.len() < params.max_tokens {
            if params.repeat_penalty != 1.0 && !generated.is_empty() {
                let start = generated.len().saturating_sub(params.repeat_last_n);
                apply_repeat_penalty(&mut logits, params.repeat_penalty, &generated[start..]);
            }
            if let Some(m) = matcher.as_mut() {
                // Only tokens that keep the output a valid prefix of a schema-conforming document.
                let mask = m
                    .compute_mask()
                    .map_err(|e| LlmError::Constraint(e.to_string()))?;
                for (i, x) in logits.iter_mut().enumerate() {
                    if !mask.is_allowed(i as u32) {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            let next = sampler.sample(&logits);
            if self.stop_ids.contains(&next) {
                finish_reason = FinishReason::Stop;
                break;
            }
            generated.push(next);
            if let Some(m) = matcher.as_mut() {
                m.consume_token(next)
                    .map_err(|e| LlmError::Constraint(e.to_string()))?;
                // The matcher stops right after the document's last token: keep that token, stop.
                if m.is_stopped() {
                    finish_reason = FinishReason::Stop;
                    break;
                }
            }
            if generated.len() == params.max_tokens {
                break;
            }
            logits = self.model.forward(&[next])?;
        }
        let text = self
            .tokenizer
            .decode(&generated, true)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        Ok(Completion {
            text: text.trim().to_string(),
            finish_reason,
            prompt_tokens: prompt_ids.len(),
            completion_tokens: generated.len(),
            prefill_seconds,
            decode_seconds: decode_started.elapsed().as_secs_f64(),
            cached: false,
        })
    }
}
