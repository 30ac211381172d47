//! `bench`: speed figures on this machine, printed (and as JSON with --json), never asserted.

use clap::Args;
use trialforge_core::bench::{bench as run_bench, BenchRequest};

use super::Ctx;
use crate::args::{EncoderArgs, LocalModelArgs};

#[derive(Args)]
pub struct BenchArgs {
    /// Tokens to generate per decode measurement.
    #[arg(long, default_value_t = 128)]
    pub tokens: usize,
    /// Approximate prompt lengths (in words) to measure decode speed at.
    #[arg(long, value_delimiter = ',', default_value = "20,1500")]
    pub prompt_words: Vec<usize>,
    /// Texts per encoder measurement (each set is encoded once to warm up, then timed).
    #[arg(long, default_value_t = 64)]
    pub texts: usize,
    /// What to measure: `llm` (prefill and decode), `encoder` (texts/s), `generation` (completion
    /// tokens/s of a fixed job of --requests requests at each --batch size).
    #[arg(long, value_delimiter = ',', default_value = "llm,encoder,generation", value_parser = ["llm", "encoder", "generation"])]
    pub parts: Vec<String>,
    /// Batch sizes of the generation job [default: 1 and the size `generate` uses].
    #[arg(long, value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Requests in the generation job (each up to --tokens tokens, greedy).
    #[arg(long, default_value_t = 8)]
    pub requests: usize,
    #[command(flatten)]
    pub model: LocalModelArgs,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

pub fn bench(ctx: &Ctx, a: BenchArgs) -> anyhow::Result<()> {
    let req = BenchRequest {
        tokens: a.tokens,
        prompt_words: a.prompt_words,
        texts: a.texts,
        llm_part: a.parts.iter().any(|p| p == "llm"),
        encoder_part: a.parts.iter().any(|p| p == "encoder"),
        llm: a.model.choice(),
        encoder: a.encoder.encoder,
        generation_batches: if !a.parts.iter().any(|p| p == "generation") {
            Vec::new()
        } else if a.batch.is_empty() {
            vec![1, trialforge_core::generate::DEFAULT_LOCAL_BATCH]
        } else {
            a.batch
        },
        generation_requests: a.requests,
    };
    let report = run_bench(&ctx.env, &req, &ctx.progress)?;
    ctx.emit(&report, || {
        let mut s = String::new();
        if let Some(llm) = &report.llm {
            s += &format!("LLM {llm} (loaded in {:.1}s)\n", report.load_seconds);
        }
        for d in &report.decode {
            s += &format!(
                "  prompt {:>5} tokens: prefill {:>7.1} tok/s, decode {:>6.1} tok/s ({} tokens)\n",
                d.prompt_tokens,
                d.prefill_tokens_per_second,
                d.decode_tokens_per_second,
                d.completion_tokens
            );
        }
        if let Some(encoder) = &report.encoder {
            s += &format!("encoder {encoder} ({} threads)\n", report.threads);
        }
        for e in &report.encode {
            s += &format!(
                "  {:>9} ({:>3} tokens first text, {:>6} in all): {:>6.1} texts/s ({} texts, median of {} passes)\n",
                e.set, e.tokens_per_text, e.tokens, e.texts_per_second, e.texts, e.passes
            );
        }
        let base = report.generation.iter().find(|g| g.batch == 1);
        for g in &report.generation {
            s += &format!(
                "generation at batch {:>2}: {:>6.1} completion tok/s ({} requests, {} prompt + {} completion tokens in {:.1}s){}\n",
                g.batch,
                g.completion_tokens_per_second,
                g.requests,
                g.prompt_tokens,
                g.completion_tokens,
                g.seconds,
                match base {
                    Some(b) if g.batch > 1 => format!(
                        ", {:.2}x batch 1",
                        g.completion_tokens_per_second / b.completion_tokens_per_second
                    ),
                    _ => String::new(),
                }
            );
        }
        s.trim_end().to_string()
    })
}
