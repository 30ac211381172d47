//! Retrieval-reasoning generation of labelled synthetic trials, and the batch round trip.

use std::path::PathBuf;

use anyhow::Context;
use trialforge_llm::batch::{ingest, BatchRecorder, IngestSummary};
use trialforge_llm::{CachedChat, ChatModel, OpenAiChat, OpenAiOptions, StructuredOutput};
use trialforge_retrieve::VectorIndex;
use trialforge_synth::examples::RealCorpus;
use trialforge_synth::plan::{default_plan, drug_pool, read_plan};
use trialforge_synth::realism::{describe, gate_for_corpus, GateConfig};
use trialforge_synth::run::{GenerateConfig, Generator, RunSummary};
use trialforge_trial::{Format, Split, Trial};

use crate::embed::embed_trials;
use crate::env::LlmChoice;
use crate::{Environment, Progress};

/// Sequences the local model decodes together unless told otherwise (`trialforge bench` measures
/// generation throughput at 1 and at this size).
pub const DEFAULT_LOCAL_BATCH: usize = 4;

/// The LLM a run talks to.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A GGUF run in-process; `batch` sequences are decoded together (continuous batching: a
    /// cell's calls run in order, `batch` cells side by side). The output is the same for every
    /// batch size.
    Local { llm: LlmChoice, batch: usize },
    /// Any OpenAI-compatible server.
    OpenAi(OpenAiBackend),
}

#[derive(Clone, Debug)]
pub struct OpenAiBackend {
    /// The API root up to the version (`http://localhost:8000/v1`).
    pub base_url: String,
    pub model_name: Option<String>,
    /// The environment variable that holds the API key (never logged).
    pub api_key_env: String,
    /// How to ask for schema-constrained output: auto, json-schema, json-object, guided-json, none.
    pub structured_output: String,
    pub timeout: std::time::Duration,
    pub max_retries: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Instead of calling the server, write its requests as OpenAI batch-API JSONL here.
    pub emit_batch: Option<PathBuf>,
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Local { .. } => "local",
            Backend::OpenAi(_) => "openai",
        }
    }
}

/// `generate`.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub corpus: PathBuf,
    pub format: Format,
    /// Cells of the plan to try for.
    pub n: usize,
    /// Output JSONL; the attempt log and the gate go beside it. Re-running resumes.
    pub out: PathBuf,
    pub backend: Backend,
    /// Prices, USD per million prompt / completion tokens, for the cost line.
    pub price_prompt: Option<f64>,
    pub price_completion: Option<f64>,
    pub seed: u64,
    pub temperature: f64,
    /// Real examples per prompt.
    pub k: usize,
    /// Reasons asked for.
    pub reasons: usize,
    pub max_attempts: u32,
    /// Splits never used as prompt examples or drug statistics.
    pub exclude_split: Vec<Split>,
    /// A drug needs this many real trials of each label to be planned.
    pub min_per_label: usize,
    /// Your own cells instead of the default plan.
    pub plan: Option<PathBuf>,
    /// Response cache folder [default: the environment's]; `Some("none")` turns it off.
    pub response_cache: Option<String>,
    pub icd: Option<PathBuf>,
    pub no_gate: bool,
    pub conditions_from_examples: bool,
    pub encoder: Option<PathBuf>,
}

impl GenerateRequest {
    /// The defaults of the command line, with the local model.
    pub fn new(corpus: PathBuf, n: usize, out: PathBuf) -> Self {
        GenerateRequest {
            corpus,
            format: Format::Auto,
            n,
            out,
            backend: Backend::Local {
                llm: LlmChoice::default(),
                batch: DEFAULT_LOCAL_BATCH,
            },
            price_prompt: None,
            price_completion: None,
            seed: 0,
            temperature: 0.7,
            k: 3,
            reasons: 5,
            max_attempts: 2,
            exclude_split: vec![Split::Test],
            min_per_label: 2,
            plan: None,
            response_cache: None,
            icd: None,
            no_gate: false,
            conditions_from_examples: false,
            encoder: None,
        }
    }
}

/// Plans, retrieves, reasons, generates and validates; resumable. The realism gate's thresholds
/// and real pass rates are reported through `progress` as a note before the first cell.
pub fn generate(
    env: &Environment,
    req: &GenerateRequest,
    progress: &dyn Progress,
) -> anyhow::Result<RunSummary> {
    let a = req;
    let trials: Vec<Trial> = crate::data::load_trials(&a.corpus, a.format)?;
    let encoder = env.load_encoder(a.encoder.as_deref())?;
    let (vectors, _) = embed_trials(env, encoder.as_ref(), &trials, progress)?;
    let index = VectorIndex::from_vectors(encoder.dim(), &vectors)?;
    let corpus = RealCorpus::new(&trials, index, &a.exclude_split);

    let pool = drug_pool(&trials, &a.exclude_split);
    let plan = match &a.plan {
        Some(p) => read_plan(p).map_err(anyhow::Error::msg)?,
        None => default_plan(&pool, a.n, a.min_per_label, a.seed),
    };
    anyhow::ensure!(
        !plan.is_empty(),
        "no drug has a SMILES string and {} real trials of each label outside the excluded splits; lower --min-per-label or give --plan",
        a.min_per_label
    );
    let gate = if a.no_gate {
        None
    } else {
        let icd = env.load_icd(a.icd.as_deref())?;
        let g = gate_for_corpus(&trials, &a.exclude_split, &icd, GateConfig::default());
        progress.note(&describe(&g.gate.thresholds, &g.calibration));
        Some(g)
    };
    let smiles = |name: &str| {
        pool.get(&trialforge_trial::drug_key(name))
            .and_then(|d| d.smiles.clone())
    };

    let models = chat_models(env, a)?;
    let mut config = GenerateConfig {
        k: a.k,
        n_reasons: a.reasons,
        max_attempts: a.max_attempts,
        backend: a.backend.name().into(),
        seed: a.seed,
        conditions_from_examples: a.conditions_from_examples,
        ..Default::default()
    };
    config.reasoning.temperature = a.temperature;
    config.generation.temperature = a.temperature;
    let mut generator = Generator {
        models,
        encoder: encoder.as_ref(),
        cache_dir: env.cache_dir.clone(),
        corpus: &corpus,
        smiles: &smiles,
        gate: gate.as_ref(),
        config,
    };
    let cells = plan.len() as u64;
    let mut summary = generator.run(&plan, &a.out, |p| {
        progress.count(
            &format!(
                "cells: {} ok {} rej {:.0} tok/s",
                p.accepted, p.rejected, p.tokens_per_second
            ),
            p.cells_done as u64,
            cells,
        );
    })?;
    progress.finish();
    if a.price_prompt.is_some() || a.price_completion.is_some() {
        summary.cost_usd = Some(
            (summary.prompt_tokens as f64 * a.price_prompt.unwrap_or(0.0)
                + summary.completion_tokens as f64 * a.price_completion.unwrap_or(0.0))
                / 1e6,
        );
    }
    Ok(summary)
}

/// One chat model per worker, each behind the response cache unless it is off.
fn chat_models(
    env: &Environment,
    a: &GenerateRequest,
) -> anyhow::Result<Vec<Box<dyn ChatModel + Send>>> {
    let response_cache = match a.response_cache.as_deref() {
        Some("none") => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(env.response_cache()),
    };
    let workers = match &a.backend {
        Backend::OpenAi(o) => {
            anyhow::ensure!(o.concurrency >= 1, "the concurrency must be at least 1");
            anyhow::ensure!(
                o.emit_batch.is_none() || response_cache.is_some(),
                "--emit-batch needs the response cache (the batch's answers are read from it)"
            );
            if o.emit_batch.is_some() {
                1
            } else {
                o.concurrency
            }
        }
        Backend::Local { batch, .. } => {
            anyhow::ensure!(*batch >= 1, "the batch size must be at least 1");
            *batch
        }
    };
    // One model for every worker: the local one is loaded once and shared by batching.
    let mut batched = match &a.backend {
        Backend::Local { llm, batch } if *batch > 1 => {
            Some(env.load_llm(llm)?.into_batched(*batch))
        }
        _ => None,
    };
    let mut models: Vec<Box<dyn ChatModel + Send>> = Vec::with_capacity(workers);
    for _ in 0..workers {
        let backend: Box<dyn ChatModel + Send> = match &a.backend {
            Backend::Local { llm, .. } => match &mut batched {
                Some(shared) => Box::new(shared.clone()),
                None => Box::new(env.load_llm(llm)?),
            },
            Backend::OpenAi(o) => match &o.emit_batch {
                Some(file) => Box::new(BatchRecorder::open(
                    file,
                    o.model_name
                        .as_deref()
                        .context("--emit-batch needs --model-name")?,
                    &o.base_url,
                )?),
                None => Box::new(OpenAiChat::new(OpenAiOptions {
                    base_url: o.base_url.clone(),
                    model: o
                        .model_name
                        .clone()
                        .context("--backend openai needs --model-name")?,
                    api_key_env: Some(o.api_key_env.clone()),
                    timeout: o.timeout,
                    max_retries: o.max_retries,
                    structured: match o.structured_output.as_str() {
                        "auto" => None,
                        d => Some(d.parse::<StructuredOutput>().map_err(anyhow::Error::msg)?),
                    },
                    ..Default::default()
                })?),
            },
        };
        models.push(match &response_cache {
            None => backend,
            Some(dir) => Box::new(CachedChat::new(backend, dir, a.backend.name())),
        });
    }
    Ok(models)
}

/// Puts the results of a batch written with `emit_batch` into the response cache (`None`: the
/// environment's), so the same generate request goes on from them.
pub fn ingest_batch(
    env: &Environment,
    results: &std::path::Path,
    response_cache: Option<PathBuf>,
) -> anyhow::Result<(IngestSummary, PathBuf)> {
    let dir = response_cache.unwrap_or_else(|| env.response_cache());
    Ok((ingest(results, &dir)?, dir))
}
