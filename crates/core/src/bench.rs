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
    /// Measure the local LLM (prefill and decode).
    pub llm_part: bool,
    /// Measure the encoder.
    pub encoder_part: bool,
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
    /// `12 words`, `200 words` or `mixed` (12 to 200 words; packed, so no padding is computed).
    pub set: String,
    pub texts: usize,
    /// Tokens of the set's first text (every text of the fixed-length sets has as many).
    pub tokens_per_text: usize,
    /// Tokens of all the set's texts.
    pub tokens: usize,
    /// Timed passes over the set; `texts_per_second` is the median pass's.
    pub passes: usize,
    pub texts_per_second: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub llm: Option<String>,
    pub load_seconds: f64,
    pub decode: Vec<DecodeRow>,
    pub encoder: Option<String>,
    pub encode: Vec<EncodeRow>,
    /// rayon's worker threads (the encoder's and the LLM's).
    pub threads: usize,
}

const PHRASE: &str = "adults with relapsed myeloma after prior therapy ";

/// The encoder's fixed-length texts; `scripts/bench_encoder.py` builds the same ones.
fn bench_texts(words: usize, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("Trial {i}: {}", PHRASE.repeat(words / 7 + 1)))
        .collect()
}

/// Texts of 12 to 200 words, in a fixed order; the same as `scripts/bench_encoder.py`'s.
fn mixed_texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "Trial {i}: {}",
                PHRASE.repeat((12 + (i * 37) % 189) / 7 + 1)
            )
        })
        .collect()
}

pub fn bench(
    env: &Environment,
    req: &BenchRequest,
    progress: &dyn Progress,
) -> anyhow::Result<BenchReport> {
    let mut report = BenchReport {
        llm: None,
        load_seconds: 0.0,
        decode: Vec::new(),
        encoder: None,
        encode: Vec::new(),
        threads: rayon::current_num_threads(),
    };
    if req.llm_part {
        let t = Instant::now();
        let mut llm = env.load_llm(&req.llm)?;
        report.load_seconds = t.elapsed().as_secs_f64();
        report.llm = Some(llm.model_id().to_string());
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
            report.decode.push(DecodeRow {
                prompt_tokens: c.prompt_tokens,
                completion_tokens: c.completion_tokens,
                prefill_tokens_per_second: c.prompt_tokens as f64 / c.prefill_seconds.max(1e-9),
                decode_tokens_per_second: c.decode_tokens_per_second(),
            });
        }
    }
    if req.encoder_part {
        let encoder = env.load_encoder(req.encoder.as_deref())?;
        report.encoder = Some(encoder.model_id().to_string());
        let sets = [
            ("12 words", bench_texts(12, req.texts)),
            ("200 words", bench_texts(200, req.texts)),
            ("mixed", mixed_texts(req.texts)),
        ];
        for (name, texts) in sets {
            progress.stage(&format!("encoding {name}"));
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let counts = encoder.token_counts(&refs)?;
            // Once to warm up (first-touch of buffers, thread start), then timed passes until
            // at least 3 and 2 seconds; the median pass counts (scripts/bench_encoder.py does the
            // same for sentence-transformers).
            encoder.encode(&refs)?;
            let started = Instant::now();
            let mut rates = Vec::new();
            while rates.len() < 3 || started.elapsed().as_secs_f64() < 2.0 {
                let t = Instant::now();
                encoder.encode(&refs)?;
                rates.push(refs.len() as f64 / t.elapsed().as_secs_f64());
            }
            rates.sort_by(f64::total_cmp);
            report.encode.push(EncodeRow {
                set: name.to_string(),
                texts: refs.len(),
                tokens_per_text: counts.first().copied().unwrap_or(0),
                tokens: counts.iter().sum(),
                passes: rates.len(),
                texts_per_second: rates[rates.len() / 2],
            });
        }
    }
    progress.finish();
    Ok(report)
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
