//! `demo`: the main job end to end on the bundled data and local models. Every step's output lands
//! in `--out` (default `runs/demo`) and the figures are printed as each step ends.

use std::path::PathBuf;

use clap::Args;
use trialforge_core::demo::{DemoRequest, DemoStep};

use super::Ctx;
use crate::args::{EncoderArgs, LlmArgs};

#[derive(Args)]
pub struct DemoArgs {
    /// Bundled data folder (holds top/ and ctgov-samples/) [default: the checkout's data/].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// TOP files to use, as a glob-free prefix of their names (`phase_I_` = the phase I benchmark).
    #[arg(long, default_value = "phase_I_")]
    pub top_prefix: String,
    /// Output folder.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Synthetic trials to generate (cells of the plan).
    #[arg(long, default_value_t = 8)]
    pub synthetic: usize,
    /// Attempts per cell before it is given up.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// The search query shown.
    #[arg(
        long,
        default_value = "HER2-positive metastatic breast cancer treated with trastuzumab"
    )]
    pub query: String,
    #[command(flatten)]
    pub encoder: EncoderArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
}

pub fn demo(ctx: &Ctx, a: DemoArgs) -> anyhow::Result<()> {
    let req = DemoRequest {
        data: a.data,
        top_prefix: a.top_prefix,
        out: a.out,
        synthetic: a.synthetic,
        max_attempts: a.max_attempts,
        query: a.query,
        encoder: a.encoder.encoder,
        llm: a.llm.model.choice(),
    };
    let json = ctx.json;
    let progress = &ctx.progress;
    let say = |s: String| {
        if !json {
            use trialforge_core::Progress;
            progress.note(&s);
        }
    };
    let mut on_step = |step: DemoStep| match step {
        DemoStep::Starting(what) => say(format!("== {what}")),
        DemoStep::Models(_) => {}
        DemoStep::Imported { counts, corpus } => say(format!(
            "{} trials ({} success, {} failure, {} unlabelled) -> {corpus}",
            counts.rows, counts.success, counts.failure, counts.unlabelled
        )),
        DemoStep::Embedded { stats, out } => say(format!(
            "{} trials in {:.1}s ({} newly encoded) -> {out}",
            stats.trials, stats.seconds, stats.encoded
        )),
        DemoStep::Searched { query, hits } => {
            say(format!("query: {query:?}"));
            say(crate::format::hits(hits))
        }
        DemoStep::Generated(s) => say(crate::format::generation(s)),
        DemoStep::Benchmarked(r) => say(crate::format::benchmark(r)),
        DemoStep::Analyzed(o) => say(crate::format::analysis(o)),
        DemoStep::NoReport(why) => say(why.to_string()),
    };
    let summary = trialforge_core::demo::demo(&ctx.env, &req, &ctx.progress, &mut on_step)?;
    ctx.emit(&summary, || {
        format!(
            "\ndemo done in {:.1}s; outputs in {} (summary.json, corpus.jsonl, embeddings.safetensors, synthetic.jsonl){}",
            summary.seconds,
            summary.out,
            summary
                .analysis
                .as_ref()
                .map(|o| format!("\nreport: {}", o.html.display()))
                .unwrap_or_default()
        )
    })
}
