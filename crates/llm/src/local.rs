//! In-process GGUF chat models (llama architecture: SmolLM2, Llama, Mistral, Qwen-style BPE),
//! decoded by candle on the CPU.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::Tokenizer;

use std::sync::{Arc, Mutex};

use crate::engine::Decoding;
use crate::llama::Llama;
use crate::{ChatMessage, ChatModel, Completion, LlmError, Result, SamplingParams};

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
    /// Re-quantise Q4_0/Q5_0/Q5_1 weights to Q8_0 at load (our kernels read Q4_1 and Q8_0; the
    /// others go through candle's slower products), at the cost of a second at load and memory.
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
    format: Arc<ChatFormat>,
}

/// What turns messages into tokens and tokens into text for one model: the tokenizer, the chat
/// template, the stop tokens, the grammar compiler. Shared by every handle of a batched engine.
pub(crate) struct ChatFormat {
    /// llguidance's view of the vocabulary, built on first constrained request.
    guidance: Mutex<Option<Arc<llguidance::ParserFactory>>>,
    vocab_size: usize,
    tokenizer: Tokenizer,
    template: String,
    bos_token: String,
    eos_token: String,
    pub stop_ids: Vec<u32>,
    context_len: usize,
    pub id: String,
}

/// A chat request made ready for decoding: the prompt's tokens and, for a JSON Schema, the matcher
/// that masks the tokens the schema does not allow.
pub(crate) struct PreparedRequest {
    pub prompt_ids: Vec<u32>,
    pub params: SamplingParams,
    pub matcher: Option<llguidance::Matcher>,
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
            format: Arc::new(ChatFormat {
                guidance: Mutex::new(None),
                vocab_size,
                tokenizer,
                template,
                bos_token,
                eos_token,
                stop_ids,
                context_len,
                id,
            }),
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.format.tokenizer
    }

    /// The prompt text the model's own chat template makes of `messages`.
    pub fn render_prompt(&self, messages: &[ChatMessage]) -> Result<String> {
        self.format.render_prompt(messages)
    }

    /// Moves the model to a decoding thread with `slots` sequence slots and returns a chat handle
    /// on it (clone it for each worker thread): requests made at the same time are decoded
    /// together, one forward pass per token for all of them (continuous batching: a finished
    /// sequence's slot takes the next waiting request). A sequence's tokens do not depend on which
    /// others share its steps.
    pub fn into_batched(self, slots: usize) -> crate::engine::BatchedLocal {
        crate::engine::start(self.model, self.format, slots)
    }
}

impl ChatFormat {
    fn render_prompt(&self, messages: &[ChatMessage]) -> Result<String> {
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
    fn guidance(&self) -> Result<Arc<llguidance::ParserFactory>> {
        let mut built = self.guidance.lock().map_err(|_| {
            LlmError::Constraint("the grammar compiler was poisoned by a panic".into())
        })?;
        if let Some(f) = &*built {
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
        let f = Arc::new(factory);
        *built = Some(f.clone());
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

    /// The prompt's tokens and the schema's matcher, checked against the context length.
    pub fn prepare(
        &self,
        messages: &[ChatMessage],
        params: &SamplingParams,
        schema: Option<&serde_json::Value>,
    ) -> Result<PreparedRequest> {
        let matcher = match schema {
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
        Ok(PreparedRequest {
            prompt_ids,
            params: params.clone(),
            matcher,
        })
    }

    /// The text of generated tokens.
    pub fn decode_text(&self, tokens: &[u32]) -> Result<String> {
        Ok(self
            .tokenizer
            .decode(tokens, true)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?
            .trim()
            .to_string())
    }
}

impl ChatModel for LocalGguf {
    fn model_id(&self) -> &str {
        &self.format.id
    }

    fn chat_json(
        &mut self,
        messages: &[ChatMessage],
        params: &SamplingParams,
        schema: Option<&serde_json::Value>,
    ) -> Result<Completion> {
        let request = self.format.prepare(messages, params, schema)?;
        self.model.ensure_slots(1);
        let mut seq = Decoding::start(&mut self.model, 0, request)?;
        loop {
            if let Some(reason) = seq.advance(&self.format.stop_ids)? {
                return seq.finish(reason, &self.format);
            }
            let logits = self.model.decode(&[(0, seq.last_token())])?;
            seq.set_logits(logits);
        }
    }
}
