//! `bench`: speed figures on this machine, printed (and as JSON with --json), never asserted.

use std::time::Instant;

use clap::Args;
use serde::Serialize;
use trialforge_llm::{ChatMessage, ChatModel, SamplingParams};

use super::chat::LocalModelArgs;
use super::embed::EncoderArgs;
use super::Ctx;

#[derive(Args)]
pub struct BenchArgs {
    /// Tokens to generate per decode measurement.
    #[arg(long, default_value_t = 128)]
    pub tokens: usize,
    /// Approximate prompt lengths (in words) to measure decode speed at.
    #[arg(long, value_delimiter = ',', default_value = "20,1500")]
    pub prompt_words: Vec<usize>,
    /// Texts per encoder measurement.
    #[arg(long, default_value_t = 64)]
    pub texts: usize,
    #[command(flatten)]
    pub model: LocalModelArgs,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

#[derive(Serialize)]
struct DecodeRow {
    prompt_tokens: usize,
    completion_tokens: usize,
    prefill_tokens_per_second: f64,
    decode_tokens_per_second: f64,
}

#[derive(Serialize)]
struct EncodeRow {
    texts: usize,
    tokens_per_text: usize,
    texts_per_second: f64,
}

#[derive(Serialize)]
struct BenchReport {
    llm: String,
    load_seconds: f64,
    decode: Vec<DecodeRow>,
    encoder: String,
    encode: Vec<EncodeRow>,
}

pub fn bench(ctx: &Ctx, a: BenchArgs) -> anyhow::Result<()> {
    let t = Instant::now();
    let mut llm = a.model.load(ctx)?;
    let load_seconds = t.elapsed().as_secs_f64();
    let mut decode = Vec::new();
    for &words in &a.prompt_words {
        let filler =
            "The patients were followed for safety and tolerability. ".repeat(words / 8 + 1);
        let msgs = [ChatMessage::user(format!(
            "{filler}\nWrite a long essay about clinical trial design."
        ))];
        // Greedy without a repetition penalty and without stopping early: a fixed amount of work.
        let params = SamplingParams {
            max_tokens: a.tokens,
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
    let encoder = a.encoder.load(ctx)?;
    let mut encode = Vec::new();
    for words in [12usize, 200] {
        let texts: Vec<String> = (0..a.texts)
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
    let report = BenchReport {
        llm: llm.model_id().to_string(),
        load_seconds,
        decode,
        encoder: encoder.model_id().to_string(),
        encode,
    };
    ctx.emit(&report, || {
        let mut s = format!(
            "LLM {} (loaded in {:.1}s)\n",
            report.llm, report.load_seconds
        );
        for d in &report.decode {
            s += &format!(
                "  prompt {:>5} tokens: prefill {:>7.1} tok/s, decode {:>6.1} tok/s ({} tokens)\n",
                d.prompt_tokens,
                d.prefill_tokens_per_second,
                d.decode_tokens_per_second,
                d.completion_tokens
            );
        }
        s += &format!("encoder {}\n", report.encoder);
        for e in &report.encode {
            s += &format!(
                "  {:>3} tokens per text: {:>6.1} texts/s ({} texts)\n",
                e.tokens_per_text, e.texts_per_second, e.texts
            );
        }
        s.trim_end().to_string()
    })
}
