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
    /// What to measure: `llm` (prefill and decode), `encoder` (texts/s), or both.
    #[arg(long, value_delimiter = ',', default_value = "llm,encoder", value_parser = ["llm", "encoder"])]
    pub parts: Vec<String>,
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
        s.trim_end().to_string()
    })
}
