//! Embedding trials (through the cache) and searching them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use trialforge_encode::{CachedEncoder, TextEncoder};
use trialforge_predict::embedding::CachedProtocolEmbedder;
use trialforge_retrieve::VectorIndex;
use trialforge_trial::render::protocol_text;
use trialforge_trial::{Format, Trial};

use crate::{Environment, Progress};

#[derive(Serialize, Clone, Debug)]
pub struct EmbedStats {
    pub model: String,
    pub trials: usize,
    /// Texts that were not in the cache and went through the model.
    pub encoded: usize,
    pub seconds: f64,
    pub cache: String,
    pub out: Option<String>,
}

/// Embeds each trial's protocol rendering (no status, no stop reason, no label), through the cache.
pub fn embed_trials(
    env: &Environment,
    encoder: &dyn TextEncoder,
    trials: &[Trial],
    progress: &dyn Progress,
) -> anyhow::Result<(Vec<Vec<f32>>, EmbedStats)> {
    let started = Instant::now();
    let texts: Vec<String> = trials.iter().map(|t| protocol_text(&t.protocol)).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut cached = CachedEncoder::new(encoder, &env.cache_dir)?;
    let mut encoded = 0;
    let vectors = cached.embed(&refs, |done, total| {
        progress.count("embedding", done as u64, total as u64);
        encoded = total;
    })?;
    progress.finish();
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

/// The encoder behind the models' protocol-embedding interface, with the cache and progress.
pub fn cached_embedder<'a>(
    env: &Environment,
    encoder: &'a dyn TextEncoder,
    progress: &'a dyn Progress,
) -> CachedProtocolEmbedder<'a> {
    CachedProtocolEmbedder {
        encoder,
        cache_dir: env.cache_dir.clone(),
        progress: Box::new(move |done, total| {
            progress.count("embedding", done as u64, total as u64);
            if done == total {
                progress.finish();
            }
        }),
    }
}

/// `embed`: a corpus in, optionally a safetensors file out.
#[derive(Clone, Debug)]
pub struct EmbedRequest {
    pub corpus: PathBuf,
    pub format: Format,
    /// A BERT-family folder or a `.gguf` [default: the fetched MiniLM].
    pub encoder: Option<PathBuf>,
    /// Write the embeddings here (tensor `embeddings`, ids in the metadata).
    pub out: Option<PathBuf>,
}

pub fn embed(
    env: &Environment,
    req: &EmbedRequest,
    progress: &dyn Progress,
) -> anyhow::Result<EmbedStats> {
    let trials = crate::data::load_trials(&req.corpus, req.format)?;
    let encoder = env.load_encoder(req.encoder.as_deref())?;
    let (vectors, mut stats) = embed_trials(env, encoder.as_ref(), &trials, progress)?;
    if let Some(out) = &req.out {
        let ids: Vec<String> = trials.iter().map(|t| t.id.clone()).collect();
        trialforge_encode::save_safetensors(out, encoder.model_id(), &ids, &vectors)?;
        stats.out = Some(out.display().to_string());
    }
    Ok(stats)
}

/// Embeddings of free texts with the encoder at `encoder` (default MiniLM), through the cache.
pub fn embed_texts(
    env: &Environment,
    encoder: Option<&Path>,
    texts: &[&str],
    progress: &dyn Progress,
) -> anyhow::Result<(Vec<Vec<f32>>, usize)> {
    let encoder = env.load_encoder(encoder)?;
    let mut cached = CachedEncoder::new(encoder.as_ref(), &env.cache_dir)?;
    let vectors = cached.embed(texts, |done, total| {
        progress.count("embedding", done as u64, total as u64)
    })?;
    progress.finish();
    Ok((vectors, encoder.dim()))
}

/// One search result.
#[derive(Serialize, Clone, Debug)]
pub struct SearchHit {
    pub rank: usize,
    pub id: String,
    /// Cosine similarity.
    pub score: f32,
    pub split: String,
    /// The phases, joined with `/` ("phase 1/phase 2").
    pub phase: String,
    /// success, failure, or none when the trial has no label.
    pub outcome: Option<&'static str>,
    pub title: String,
    pub conditions: Vec<String>,
    pub drugs: Vec<String>,
}

/// A corpus with its embeddings, searchable by text or by vector.
pub struct TrialIndex {
    pub trials: Vec<Trial>,
    pub index: VectorIndex,
}

impl TrialIndex {
    pub fn build(
        env: &Environment,
        encoder: &dyn TextEncoder,
        trials: Vec<Trial>,
        progress: &dyn Progress,
    ) -> anyhow::Result<TrialIndex> {
        let (vectors, _) = embed_trials(env, encoder, &trials, progress)?;
        let index = VectorIndex::from_vectors(encoder.dim(), &vectors)?;
        Ok(TrialIndex { trials, index })
    }

    /// The `k` nearest trials to a vector of the index's encoder.
    pub fn nearest(&self, query: &[f32], k: usize) -> anyhow::Result<Vec<SearchHit>> {
        Ok(self
            .index
            .search(query, k)?
            .into_iter()
            .enumerate()
            .map(|(rank, h)| {
                let t = &self.trials[h.index];
                let p = &t.protocol;
                SearchHit {
                    rank: rank + 1,
                    id: t.id.clone(),
                    score: h.score,
                    split: t.split.as_str().to_string(),
                    phase: p
                        .phases
                        .iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join("/"),
                    outcome: t.label.map(|l| match l {
                        trialforge_trial::Label::Success => "success",
                        trialforge_trial::Label::Failure => "failure",
                    }),
                    title: p.title.clone(),
                    conditions: p.conditions.clone(),
                    drugs: p.drugs.iter().map(|d| d.name.clone()).collect(),
                }
            })
            .collect())
    }

    /// The `k` nearest trials to a text.
    pub fn search_text(
        &self,
        encoder: &dyn TextEncoder,
        query: &str,
        k: usize,
    ) -> anyhow::Result<Vec<SearchHit>> {
        let q = encoder.encode(&[query])?.remove(0);
        self.nearest(&q, k)
    }
}

/// `search`: the nearest trials of a corpus to a text.
#[derive(Clone, Debug)]
pub struct SearchRequest {
    pub corpus: PathBuf,
    pub format: Format,
    pub encoder: Option<PathBuf>,
    pub query: String,
    pub k: usize,
}

pub fn search(
    env: &Environment,
    req: &SearchRequest,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<SearchHit>> {
    anyhow::ensure!(req.k > 0, "k must be at least 1");
    let trials = crate::data::load_trials(&req.corpus, req.format)?;
    let encoder = env.load_encoder(req.encoder.as_deref())?;
    search_trials(env, encoder.as_ref(), trials, &req.query, req.k, progress)
}

/// Embeds `trials` (cached) and the query; the `k` nearest.
pub fn search_trials(
    env: &Environment,
    encoder: &dyn TextEncoder,
    trials: Vec<Trial>,
    query: &str,
    k: usize,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<SearchHit>> {
    TrialIndex::build(env, encoder, trials, progress)?.search_text(encoder, query, k)
}
