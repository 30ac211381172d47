//! LLM backends for trialforge behind one [`ChatModel`] trait. This crate holds the in-process
//! backend ([`LocalGguf`]: any llama-family GGUF, run on the CPU by our own forward pass, see
//! [`llama`]; [`LocalGguf::into_batched`] shares one model between worker threads by continuous
//! batching) and any OpenAI-compatible server ([`OpenAiChat`]),
//! plus a response cache ([`CachedChat`]) for either, and [`LlmEncoder`]: a GGUF model's mean final
//! hidden state as a text encoder behind the encode crate's `TextEncoder` trait.

mod embeddings;
mod encoder;
mod engine;
pub mod llama;
mod local;
pub mod openai;
mod q4;
pub mod sampling;

pub mod batch;
pub mod cache;
pub use cache::CachedChat;
pub use embeddings::OpenAiEmbeddings;
pub use encoder::LlmEncoder;
pub use engine::BatchedLocal;
pub use local::{LocalGguf, LocalOptions};
pub use openai::{OpenAiChat, OpenAiOptions, StructuredOutput};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Model {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("chat template: {0}")]
    Template(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("the prompt has {prompt} tokens; the model's context holds {context}")]
    ContextOverflow { prompt: usize, context: usize },
    #[error("model forward pass: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("constrained decoding: {0}")]
    Constraint(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("remote LLM: {0}")]
    Remote(String),
    /// The request was written to a batch file; its answer comes later (see [`batch`]).
    #[error("deferred to a batch file (request {0})")]
    Deferred(String),
}

pub type Result<T> = std::result::Result<T, LlmError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One chat message, in the OpenAI chat-completions shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::User,
            content: content.into(),
        }
    }
}

/// Decoding parameters. `temperature == 0` is greedy decoding (and ignores the seed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    /// Divides the logits of recently generated tokens (1.0 = off). Small models loop without it.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub max_tokens: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: None,
            top_k: None,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            max_tokens: 256,
            seed: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model ended its turn.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

/// A model's answer with its token accounting.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Seconds spent on the prompt (prefill) and on generating (decode).
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// Served from the response cache (no model call was made).
    #[serde(default)]
    pub cached: bool,
}

impl Completion {
    pub fn decode_tokens_per_second(&self) -> f64 {
        if self.decode_seconds > 0.0 {
            self.completion_tokens as f64 / self.decode_seconds
        } else {
            0.0
        }
    }
}

/// A chat model: messages in, one completion out.
pub trait ChatModel {
    /// Names the model (and its weights), for provenance and cache keys.
    fn model_id(&self) -> &str;
    /// Free-text answer.
    fn chat(&mut self, messages: &[ChatMessage], params: &SamplingParams) -> Result<Completion> {
        self.chat_json(messages, params, None)
    }
    /// With `schema`, the answer is a JSON document that satisfies that JSON Schema: decoding is
    /// constrained to it where the backend can, and checked afterwards where it cannot.
    fn chat_json(
        &mut self,
        messages: &[ChatMessage],
        params: &SamplingParams,
        schema: Option<&serde_json::Value>,
    ) -> Result<Completion>;
}

impl<M: ChatModel + ?Sized> ChatModel for Box<M> {
    fn model_id(&self) -> &str {
        (**self).model_id()
    }

    fn chat_json(
        &mut self,
        messages: &[ChatMessage],
        params: &SamplingParams,
        schema: Option<&serde_json::Value>,
    ) -> Result<Completion> {
        (**self).chat_json(messages, params, schema)
    }
}
