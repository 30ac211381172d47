//! `generate`, `export top-csv`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use trialforge_llm::batch::{ingest, BatchRecorder};
use trialforge_llm::{CachedChat, ChatModel, OpenAiChat, OpenAiOptions, StructuredOutput};
use trialforge_retrieve::VectorIndex;
use trialforge_synth::examples::RealCorpus;
use trialforge_synth::plan::{default_plan, drug_pool, read_plan};
use trialforge_synth::realism::{describe, gate_for_corpus, GateConfig};
use trialforge_synth::run::{GenerateConfig, Generator, RunSummary};
use trialforge_trial::icd::{read_descriptions, IcdEntry};
use trialforge_trial::{Split, Trial};

use super::chat::LocalModelArgs;
use super::embed::{embed_trials, CorpusArgs, EncoderArgs};
use super::Ctx;

#[derive(Args)]
pub struct GenerateArgs {
    /// Real trials to retrieve examples from and draw drugs from.
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// Number of synthetic trials to try for (cells of the plan).
    #[arg(long, short, default_value_t = 10)]
    pub n: usize,
    /// Output JSONL; the attempt log goes beside it (`NAME.log.jsonl`). Re-running the same command
    /// resumes an interrupted run.
    #[arg(long, short)]
    pub out: PathBuf,
    /// LLM backend: `local` (a GGUF run in-process) or `openai` (any OpenAI-compatible server).
    #[arg(long, default_value = "local")]
    pub backend: String,
    /// With --backend openai: the API root up to the version, e.g. https://api.openai.com/v1 or
    /// http://localhost:8000/v1 (vLLM, llama.cpp server, Ollama, TGI).
    #[arg(long, default_value = "https://api.openai.com/v1")]
    pub base_url: String,
    /// With --backend openai: the served model's name.
    #[arg(long)]
    pub model_name: Option<String>,
    /// With --backend openai: the environment variable that holds the API key (never logged).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// With --backend openai: how to ask for schema-constrained output: auto (try json-schema, then
    /// json-object, guided-json and none, keeping the first the server takes), json-schema (OpenAI),
    /// json-object (llama.cpp's server), guided-json (vLLM) or none (validate the text only).
    #[arg(long, default_value = "auto")]
    pub structured_output: String,
    /// With --backend openai: seconds per request before it is retried.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// With --backend openai: retries of a request (429, 5xx, timeouts) before the run stops.
    #[arg(long, default_value_t = 6)]
    pub max_retries: u32,
    /// With --backend openai: requests in flight at once (each cell's reasoning and generation calls
    /// run in order; cells run side by side). Results are still judged and written in plan order.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Price of prompt tokens, USD per million (for the cost line).
    #[arg(long)]
    pub price_prompt: Option<f64>,
    /// Price of completion tokens, USD per million.
    #[arg(long)]
    pub price_completion: Option<f64>,
    /// Seed of the plan and of sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    /// Real examples per prompt.
    #[arg(long, default_value_t = 3)]
    pub k: usize,
    /// Reasons asked for.
    #[arg(long, default_value_t = 5)]
    pub reasons: usize,
    /// Attempts per cell before it is given up.
    #[arg(long, default_value_t = 2)]
    pub max_attempts: u32,
    /// Splits never used as prompt examples or drug statistics (repeatable).
    #[arg(long = "exclude-split", default_value = "test")]
    pub exclude_split: Vec<Split>,
    /// A drug needs this many real trials of each label to be planned.
    #[arg(long, default_value_t = 2)]
    pub min_per_label: usize,
    /// Your own cells instead of the default plan (JSONL of {"drug", "label", "phase"}).
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Instead of calling the server, write its requests as OpenAI batch-API JSONL to this file (also
    /// what vLLM's run_batch reads). Run the batch, `trialforge ingest-batch` its results, and run the
    /// same command again: it goes on from the answers (reasons first, then trials).
    #[arg(long, requires = "model_name")]
    pub emit_batch: Option<PathBuf>,
    /// Response cache folder [default: .cache/trialforge/responses]; `none` to turn it off.
    #[arg(long)]
    pub response_cache: Option<String>,
    /// ICD-10 descriptions (`code,"description"` CSV) that conditions may resolve to
    /// [default: the bundled data/top/aux/icd_10_direct_mapping.csv].
    #[arg(long)]
    pub icd: Option<PathBuf>,
    /// Turn the realism gate off (offensive, condition, drug-name, enrollment and lexical rules):
    /// only the schema, content, personal-data and copy rules judge the output.
    #[arg(long)]
    pub no_gate: bool,
    /// Let the model choose conditions only among those of the drug's real trials and the
    /// examples (a JSON Schema enum): no invented conditions, but no new ones either.
    #[arg(long)]
    pub conditions_from_examples: bool,
    #[command(flatten)]
    pub model: LocalModelArgs,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

pub fn run_generate(ctx: &Ctx, a: &GenerateArgs) -> anyhow::Result<RunSummary> {
    let trials: Vec<Trial> = a.corpus.load()?;
    let encoder = a.encoder.load(ctx)?;
    let (vectors, _) = embed_trials(encoder.as_ref(), &trials)?;
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
        let icd = load_icd(a.icd.as_deref())?;
        let g = gate_for_corpus(&trials, &a.exclude_split, &icd, GateConfig::default());
        // On stderr also with --json: the thresholds a run judges by are always shown at its start.
        eprintln!("{}", describe(&g.gate.thresholds, &g.calibration));
        Some(g)
    };
    let smiles = |name: &str| {
        pool.get(&trialforge_trial::drug_key(name))
            .and_then(|d| d.smiles.clone())
    };

    anyhow::ensure!(
        a.emit_batch.is_none() || a.response_cache.as_deref() != Some("none"),
        "--emit-batch needs the response cache (the batch's answers are read from it)"
    );
    anyhow::ensure!(a.concurrency >= 1, "--concurrency must be at least 1");
    let workers = match (a.backend.as_str(), &a.emit_batch) {
        ("openai", None) => a.concurrency,
        _ => {
            if a.concurrency > 1 {
                tracing::warn!(
                    "--concurrency {} ignored: the local model already uses every core, and a batch file is written by one writer",
                    a.concurrency
                );
            }
            1
        }
    };
    let mut models: Vec<Box<dyn ChatModel + Send>> = Vec::with_capacity(workers);
    for _ in 0..workers {
        let backend: Box<dyn ChatModel + Send> = match (a.backend.as_str(), &a.emit_batch) {
            ("openai", Some(file)) => Box::new(BatchRecorder::open(
                file,
                a.model_name
                    .as_deref()
                    .context("--emit-batch needs --model-name")?,
                &a.base_url,
            )?),
            (_, Some(_)) => anyhow::bail!("--emit-batch goes with --backend openai"),
            ("local", None) => Box::new(a.model.load(ctx)?),
            ("openai", None) => Box::new(OpenAiChat::new(OpenAiOptions {
                base_url: a.base_url.clone(),
                model: a
                    .model_name
                    .clone()
                    .context("--backend openai needs --model-name")?,
                api_key_env: Some(a.api_key_env.clone()),
                timeout: std::time::Duration::from_secs(a.timeout),
                max_retries: a.max_retries,
                structured: match a.structured_output.as_str() {
                    "auto" => None,
                    d => Some(d.parse::<StructuredOutput>().map_err(anyhow::Error::msg)?),
                },
                ..Default::default()
            })?),
            (other, None) => {
                anyhow::bail!("unknown backend `{other}` (expected local or openai)")
            }
        };
        models.push(match a.response_cache.as_deref() {
            Some("none") => backend,
            dir => {
                let dir = dir
                    .map(PathBuf::from)
                    .unwrap_or_else(|| crate::paths::cache_dir().join("responses"));
                Box::new(CachedChat::new(backend, &dir, &a.backend))
            }
        });
    }
    let mut config = GenerateConfig {
        k: a.k,
        n_reasons: a.reasons,
        max_attempts: a.max_attempts,
        backend: a.backend.clone(),
        seed: a.seed,
        conditions_from_examples: a.conditions_from_examples,
        ..Default::default()
    };
    config.reasoning.temperature = a.temperature;
    config.generation.temperature = a.temperature;
    let mut generator = Generator {
        models,
        encoder: encoder.as_ref(),
        cache_dir: crate::paths::cache_dir(),
        corpus: &corpus,
        smiles: &smiles,
        gate: gate.as_ref(),
        config,
    };
    let pb = crate::progress::bar(plan.len() as u64, "cells");
    let summary = generator.run(&plan, &a.out, |p| {
        pb.set_position(p.cells_done as u64);
        pb.set_message(format!(
            "{} ok {} rej {:.0} tok/s",
            p.accepted, p.rejected, p.tokens_per_second
        ));
    })?;
    pb.finish_and_clear();
    let mut summary = summary;
    if a.price_prompt.is_some() || a.price_completion.is_some() {
        summary.cost_usd = Some(
            (summary.prompt_tokens as f64 * a.price_prompt.unwrap_or(0.0)
                + summary.completion_tokens as f64 * a.price_completion.unwrap_or(0.0))
                / 1e6,
        );
    }
    Ok(summary)
}

/// The ICD-10 descriptions: `path`, or the bundled file (a warning, not an error, when the bundled
/// file is absent: conditions then resolve against the corpus alone).
pub fn load_icd(path: Option<&Path>) -> anyhow::Result<Vec<IcdEntry>> {
    match path {
        Some(p) => Ok(read_descriptions(p)?),
        None => {
            let p = crate::paths::bundled_data().join("top/aux/icd_10_direct_mapping.csv");
            if p.is_file() {
                Ok(read_descriptions(&p)?)
            } else {
                tracing::warn!(
                    "{} not found: conditions resolve against the corpus alone (pass --icd)",
                    p.display()
                );
                Ok(Vec::new())
            }
        }
    }
}

pub fn format_summary(s: &RunSummary) -> String {
    let real_rate = |rule: &str| {
        s.gate.as_ref().and_then(|g| {
            g.calibration
                .rules
                .iter()
                .find(|r| r.rule == rule)
                .map(|r| (r.rate, r.trials))
        })
    };
    let rules: Vec<String> = s
        .rejects_by_rule
        .iter()
        .map(|(r, n)| match real_rate(r) {
            Some((_, 0)) => format!("{r} {n} (not judged on real trials: none carries the field)"),
            Some((rate, _)) => format!("{r} {n} (real pass {:.1}%)", rate * 100.0),
            None => format!("{r} {n}"),
        })
        .collect();
    let gate = s
        .gate
        .as_ref()
        .map(|g| {
            format!(
                "realism gate {}: built and checked on {} held-out real trials in {:.2}s; {} checks, {:.2} ms each\n",
                g.thresholds.digest,
                g.calibration.trials,
                g.build_seconds,
                g.checks,
                if g.checks > 0 { g.check_seconds * 1e3 / g.checks as f64 } else { 0.0 }
            )
        })
        .unwrap_or_default();
    format!(
        "{} of {} cells done ({} before this run{}); this run: {} accepted of {} attempts ({:.0}%), rejects: {}\n\
         tokens: {} prompt + {} completion ({} cached responses), {:.1} completion tokens/s, {:.2} accepted trials/minute, {:.0}s\n\
         {}{}trials: {}\nattempt log: {}",
        s.cells_done,
        s.cells,
        s.resumed_cells,
        if s.deferred > 0 { format!(", {} waiting for batch answers", s.deferred) } else { String::new() },
        s.accepted,
        s.attempts,
        s.acceptance_rate * 100.0,
        if rules.is_empty() { "none".into() } else { rules.join(", ") },
        s.prompt_tokens,
        s.completion_tokens,
        s.cached_responses,
        s.completion_tokens_per_second,
        s.accepted_per_minute,
        s.seconds,
        s.cost_usd.map(|c| format!("cost: ${c:.4}\n")).unwrap_or_default(),
        gate,
        s.out,
        s.log
    )
}

pub fn generate(ctx: &Ctx, a: GenerateArgs) -> anyhow::Result<()> {
    let s = run_generate(ctx, &a)?;
    ctx.emit(&s, || format_summary(&s))
}

#[derive(Args)]
pub struct ExportTopCsvArgs {
    /// Trials to export (synthetic JSONL from `generate`, or any corpus).
    pub input: PathBuf,
    /// Output CSV in the TOP schema.
    #[arg(long, short)]
    pub out: PathBuf,
}

pub fn export_top_csv(ctx: &Ctx, a: ExportTopCsvArgs) -> anyhow::Result<()> {
    // An empty set (every attempt rejected) exports as a header-only file.
    let trials = trialforge_trial::import::read_all(
        &a.input,
        trialforge_trial::Format::Auto,
        Default::default(),
    )?;
    let n = trialforge_synth::export::write_top_csv(&a.out, &trials)
        .with_context(|| format!("writing {}", a.out.display()))?;
    let v = serde_json::json!({"rows": n, "out": a.out.display().to_string()});
    ctx.emit(&v, || {
        format!(
            "wrote {n} labelled trials to {} (TOP CSV schema)",
            a.out.display()
        )
    })
}

#[derive(Args)]
pub struct IngestBatchArgs {
    /// Batch results JSONL (OpenAI batch output or vLLM run_batch output).
    pub results: PathBuf,
    /// Response cache folder [default: .cache/trialforge/responses]; must be the one `generate` uses.
    #[arg(long)]
    pub response_cache: Option<PathBuf>,
}

pub fn ingest_batch(ctx: &Ctx, a: IngestBatchArgs) -> anyhow::Result<()> {
    let dir = a
        .response_cache
        .unwrap_or_else(|| crate::paths::cache_dir().join("responses"));
    let s = ingest(&a.results, &dir)?;
    for (id, why) in &s.failed {
        eprintln!("no answer for {id}: {why}");
    }
    ctx.emit(&s, || {
        format!(
            "stored {} answers in {} ({} results without an answer); run the same generate command again to go on",
            s.stored,
            dir.display(),
            s.failed.len()
        )
    })
}
