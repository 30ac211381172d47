//! `embed` and `search`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use trialforge_encode::{BertEncoder, CachedEncoder, TextEncoder};
use trialforge_llm::{LlmEncoder, LocalOptions};
use trialforge_retrieve::VectorIndex;
use trialforge_trial::render::protocol_text;
use trialforge_trial::top::ImportOptions;
use trialforge_trial::{import, Format, Trial};

use super::Ctx;

#[derive(Args, Clone)]
pub struct EncoderArgs {
    /// Text encoder: a BERT-family model folder (config.json, tokenizer.json, model.safetensors),
    /// or a llama-family .gguf file, whose final hidden states, averaged over a text's first 256
    /// tokens, become the embedding (one text at a time: far slower than a BERT encoder)
    /// [default: the fetched all-MiniLM-L6-v2].
    #[arg(long, value_name = "DIR|FILE.gguf")]
    pub encoder: Option<PathBuf>,
}

/// Tokens of a text that a GGUF LLM encoder reads (MiniLM's limit too).
const LLM_ENCODER_TOKENS: usize = 256;

impl EncoderArgs {
    pub fn load(&self, ctx: &Ctx) -> anyhow::Result<Box<dyn TextEncoder>> {
        let path = match &self.encoder {
            Some(d) => d.clone(),
            None => trialforge_models::require(&ctx.models_dir, &trialforge_models::MINILM)?,
        };
        let context = || format!("loading the encoder from {}", path.display());
        if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            let enc = LlmEncoder::load(&path, &LocalOptions::default(), LLM_ENCODER_TOKENS)
                .with_context(context)?;
            return Ok(Box::new(enc));
        }
        Ok(Box::new(BertEncoder::load(&path).with_context(context)?))
    }
}

#[derive(Args)]
pub struct CorpusArgs {
    /// Trials to read: a trialforge JSONL corpus, TOP CSV file(s) or ClinicalTrials.gov records.
    #[arg(long)]
    pub corpus: PathBuf,
    /// Format of --corpus: auto, top, ctgov, corpus or legacy.
    #[arg(long, default_value = "auto")]
    pub format: Format,
}

impl CorpusArgs {
    pub fn load(&self) -> anyhow::Result<Vec<Trial>> {
        let trials = import::read_all(&self.corpus, self.format, ImportOptions::default())?;
        anyhow::ensure!(!trials.is_empty(), "{}: no trials", self.corpus.display());
        Ok(trials)
    }
}

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

#[derive(Serialize, Clone)]
pub struct EmbedStats {
    pub model: String,
    pub trials: usize,
    /// Texts that were not in the cache and went through the model.
    pub encoded: usize,
    pub seconds: f64,
    pub cache: String,
    pub out: Option<String>,
}

/// Embeds each trial's protocol rendering, through the cache, with a progress bar.
pub fn embed_trials(
    encoder: &dyn TextEncoder,
    trials: &[Trial],
) -> anyhow::Result<(Vec<Vec<f32>>, EmbedStats)> {
    let started = Instant::now();
    let texts: Vec<String> = trials.iter().map(|t| protocol_text(&t.protocol)).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut cached = CachedEncoder::new(encoder, &crate::paths::cache_dir())?;
    let pb = crate::progress::bar(0, "embedding");
    let mut encoded = 0;
    let vectors = cached.embed(&refs, |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
        encoded = total;
    })?;
    pb.finish_and_clear();
    Ok((
        vectors,
        EmbedStats {
            model: encoder.model_id().to_string(),
            trials: trials.len(),
            encoded,
            seconds: started.elapsed().as_secs_f64(),
            cache: cached.cache().path().display().to_string(),
            out: None,
        },
    ))
}

pub fn embed(ctx: &Ctx, a: EmbedArgs) -> anyhow::Result<()> {
    let trials = a.corpus.load()?;
    let encoder = a.encoder.load(ctx)?;
    let (vectors, mut stats) = embed_trials(encoder.as_ref(), &trials)?;
    if let Some(out) = &a.out {
        let ids: Vec<String> = trials.iter().map(|t| t.id.clone()).collect();
        trialforge_encode::save_safetensors(out, encoder.model_id(), &ids, &vectors)?;
        stats.out = Some(out.display().to_string());
    }
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

#[derive(Serialize)]
pub struct SearchHit {
    pub rank: usize,
    pub id: String,
    pub score: f32,
    pub split: String,
    pub conditions: Vec<String>,
    pub drugs: Vec<String>,
}

/// Embeds the corpus and the query, returns the k nearest trials.
pub fn search_corpus(
    encoder: &dyn TextEncoder,
    trials: &[Trial],
    query: &str,
    k: usize,
) -> anyhow::Result<Vec<SearchHit>> {
    let (vectors, _) = embed_trials(encoder, trials)?;
    let index = VectorIndex::from_vectors(encoder.dim(), &vectors)?;
    let q = encoder.encode(&[query])?.remove(0);
    Ok(index
        .search(&q, k)?
        .into_iter()
        .enumerate()
        .map(|(rank, h)| {
            let p = &trials[h.index].protocol;
            SearchHit {
                rank: rank + 1,
                id: trials[h.index].id.clone(),
                score: h.score,
                split: trials[h.index].split.as_str().to_string(),
                conditions: p.conditions.clone(),
                drugs: p.drugs.iter().map(|d| d.name.clone()).collect(),
            }
        })
        .collect())
}

pub fn format_hits(hits: &[SearchHit]) -> String {
    hits.iter()
        .map(|h| {
            format!(
                "{:>2}. {}  {:.4}  [{}]  {} | {}",
                h.rank,
                h.id,
                h.score,
                h.split,
                h.conditions.join("; "),
                h.drugs.join("; ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn search(ctx: &Ctx, a: SearchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.k > 0, "-k must be at least 1");
    let trials = a.corpus.load()?;
    let encoder = a.encoder.load(ctx)?;
    let hits = search_corpus(encoder.as_ref(), &trials, &a.query, a.k)?;
    ctx.emit(&hits, || format_hits(&hits))
}
