//! `embed` and `search`.

use std::path::PathBuf;

use clap::Args;
use trialforge_core::embed::{EmbedRequest, SearchRequest};

use super::Ctx;
use crate::args::{CorpusArgs, EncoderArgs};

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub corpus: CorpusArgs,
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// Also write the embeddings to this safetensors file (tensor `embeddings`, ids in the metadata).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

pub fn embed(ctx: &Ctx, a: EmbedArgs) -> anyhow::Result<()> {
    let req = EmbedRequest {
        corpus: a.corpus.corpus,
        format: a.corpus.format,
        encoder: a.encoder.encoder,
        out: a.out,
    };
    let stats = trialforge_core::embed::embed(&ctx.env, &req, &ctx.progress)?;
    ctx.emit(&stats, || {
        format!(
            "embedded {} trials with {} in {:.1}s ({} new, {} from the cache {}){}",
            stats.trials,
            stats.model,
            stats.seconds,
            stats.encoded,
            stats.trials - stats.encoded.min(stats.trials),
            stats.cache,
            stats
                .out
                .as_ref()
                .map(|o| format!("\nwrote {o}"))
                .unwrap_or_default()
        )
    })
}

#[derive(Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub corpus: CorpusArgs,
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// The text to search for (a condition, a drug, criteria, a whole protocol).
    pub query: String,
    /// Number of results.
    #[arg(short, long, default_value_t = 5)]
    pub k: usize,
}

pub fn search(ctx: &Ctx, a: SearchArgs) -> anyhow::Result<()> {
    let req = SearchRequest {
        corpus: a.corpus.corpus,
        format: a.corpus.format,
        encoder: a.encoder.encoder,
        query: a.query,
        k: a.k,
    };
    let hits = trialforge_core::embed::search(&ctx.env, &req, &ctx.progress)?;
    ctx.emit(&hits, || crate::format::hits(&hits))
}
