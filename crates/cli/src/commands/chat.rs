//! `chat`: one question to the local LLM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use trialforge_llm::{ChatMessage, ChatModel, Completion, LocalGguf, LocalOptions, SamplingParams};

use super::Ctx;

/// Which local model to load.
#[derive(Args, Clone)]
pub struct LocalModelArgs {
    /// A llama-family GGUF chat model [default: the fetched SmolLM2-135M-Instruct].
    #[arg(long, value_name = "FILE")]
    pub llm: Option<PathBuf>,
    /// Keep the GGUF's own quantisation instead of re-quantising 4/5-bit weights to Q8_0 (slower).
    #[arg(long)]
    pub no_requantize: bool,
}

impl LocalModelArgs {
    pub fn load(&self, ctx: &Ctx) -> anyhow::Result<LocalGguf> {
        let path = match &self.llm {
            Some(p) => p.clone(),
            None => trialforge_models::require(&ctx.models_dir, &trialforge_models::SMOLLM2)?
                .join("model.gguf"),
        };
        let opts = LocalOptions {
            requantize_q8: !self.no_requantize,
            ..Default::default()
        };
        LocalGguf::load(&path, &opts)
            .with_context(|| format!("loading the LLM from {}", path.display()))
    }
}

#[derive(Args, Clone)]
pub struct LlmArgs {
    #[command(flatten)]
    pub model: LocalModelArgs,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 200)]
    pub max_tokens: usize,
    /// Repetition penalty (1.0 = off).
    #[arg(long, default_value_t = 1.1)]
    pub repeat_penalty: f32,
}

impl LlmArgs {
    pub fn load(&self, ctx: &Ctx) -> anyhow::Result<LocalGguf> {
        self.model.load(ctx)
    }

    pub fn sampling(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            max_tokens: self.max_tokens,
            repeat_penalty: self.repeat_penalty,
            ..Default::default()
        }
    }
}

#[derive(Args)]
pub struct ChatArgs {
    /// The question.
    pub prompt: String,
    /// An optional system message.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub llm: LlmArgs,
}

pub fn format_completion(c: &Completion) -> String {
    format!(
        "{}\n\n[{} prompt + {} completion tokens, {:.1} tokens/s, finish: {:?}]",
        c.text,
        c.prompt_tokens,
        c.completion_tokens,
        c.decode_tokens_per_second(),
        c.finish_reason
    )
}

pub fn chat(ctx: &Ctx, a: ChatArgs) -> anyhow::Result<()> {
    let mut model = a.llm.load(ctx)?;
    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(ChatMessage::system(s.clone()));
    }
    messages.push(ChatMessage::user(a.prompt.clone()));
    let pb = crate::progress::spinner("generating");
    let c = model.chat(&messages, &a.llm.sampling())?;
    pb.finish_and_clear();
    ctx.emit(&c, || format_completion(&c))
}
