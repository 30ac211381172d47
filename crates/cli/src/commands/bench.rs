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
    /// Texts per encoder measurement.
    #[arg(long, default_value_t = 64)]
    pub texts: usize,
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
        llm: a.model.choice(),
        encoder: a.encoder.encoder,
    };
    let report = run_bench(&ctx.env, &req, &ctx.progress)?;
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
