//! Speed on this machine: local LLM prefill and decode at short and long prompts, encoder
//! throughput; and one answer from the local LLM (`chat`). Figures are measured, never asserted.

use std::time::Instant;

use serde::Serialize;
use trialforge_llm::{ChatMessage, ChatModel, Completion, SamplingParams};

use crate::env::LlmChoice;
use crate::{Environment, Progress};

#[derive(Clone, Debug)]
pub struct BenchRequest {
    /// Tokens to generate per decode measurement.
    pub tokens: usize,
    /// Approximate prompt lengths (in words) to measure at.
    pub prompt_words: Vec<usize>,
    /// Texts per encoder measurement.
    pub texts: usize,
    pub llm: LlmChoice,
    pub encoder: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DecodeRow {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EncodeRow {
    pub texts: usize,
    pub tokens_per_text: usize,
    pub texts_per_second: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub llm: String,
    pub load_seconds: f64,
    pub decode: Vec<DecodeRow>,
    pub encoder: String,
    pub encode: Vec<EncodeRow>,
}

pub fn bench(
    env: &Environment,
    req: &BenchRequest,
    progress: &dyn Progress,
) -> anyhow::Result<BenchReport> {
    let t = Instant::now();
    let mut llm = env.load_llm(&req.llm)?;
    let load_seconds = t.elapsed().as_secs_f64();
    let mut decode = Vec::new();
    for &words in &req.prompt_words {
        progress.stage(&format!("decoding after {words} words"));
        let filler =
            "The patients were followed for safety and tolerability. ".repeat(words / 8 + 1);
        let msgs = [ChatMessage::user(format!(
            "{filler}\nWrite a long essay about clinical trial design."
        ))];
        // Greedy without a repetition penalty and without stopping early: a fixed amount of work.
        let params = SamplingParams {
            max_tokens: req.tokens,
            repeat_penalty: 1.0,
            ..Default::default()
        };
        let c = llm.chat(&msgs, &params)?;
        decode.push(DecodeRow {
            prompt_tokens: c.prompt_tokens,
            completion_tokens: c.completion_tokens,
            prefill_tokens_per_second: c.prompt_tokens as f64 / c.prefill_seconds.max(1e-9),
            decode_tokens_per_second: c.decode_tokens_per_second(),
        });
    }
    let encoder = env.load_encoder(req.encoder.as_deref())?;
    let mut encode = Vec::new();
    for words in [12usize, 200] {
        progress.stage(&format!("encoding {words}-word texts"));
        let texts: Vec<String> = (0..req.texts)
            .map(|i| {
                format!(
                    "Trial {i}: {}",
                    "adults with relapsed myeloma after prior therapy ".repeat(words / 7 + 1)
                )
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let tokens = encoder.token_counts(&refs[..1])?[0];
        let t = Instant::now();
        encoder.encode(&refs)?;
        encode.push(EncodeRow {
            texts: refs.len(),
            tokens_per_text: tokens,
            texts_per_second: refs.len() as f64 / t.elapsed().as_secs_f64(),
        });
    }
    progress.finish();
    Ok(BenchReport {
        llm: llm.model_id().to_string(),
        load_seconds,
        decode,
        encoder: encoder.model_id().to_string(),
        encode,
    })
}

/// One question to the local LLM.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub prompt: String,
    pub system: Option<String>,
    pub llm: LlmChoice,
    pub sampling: SamplingParams,
}

pub fn chat(
    env: &Environment,
    req: &ChatRequest,
    progress: &dyn Progress,
) -> anyhow::Result<Completion> {
    let mut model = env.load_llm(&req.llm)?;
    let mut messages = Vec::new();
    if let Some(s) = &req.system {
        messages.push(ChatMessage::system(s.clone()));
    }
    messages.push(ChatMessage::user(req.prompt.clone()));
    progress.stage("generating");
    let c = model.chat(&messages, &req.sampling)?;
    progress.finish();
    Ok(c)
}
