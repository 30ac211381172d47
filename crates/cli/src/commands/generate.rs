//! `generate`, `ingest-batch`, `export top-csv`.

use std::path::PathBuf;

use clap::Args;
use trialforge_core::generate::{Backend, GenerateRequest, OpenAiBackend};
use trialforge_trial::Split;

use super::Ctx;
use crate::args::{CorpusArgs, EncoderArgs, LocalModelArgs};

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
    /// With --backend local: cells drafted side by side, their tokens decoded together in one
    /// forward pass per step (continuous batching). The trials are the same for every batch size;
    /// only the speed changes.
    #[arg(long, default_value_t = trialforge_core::generate::DEFAULT_LOCAL_BATCH)]
    pub batch: usize,
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

impl GenerateArgs {
    pub fn request(&self) -> anyhow::Result<GenerateRequest> {
        let backend = match self.backend.as_str() {
            "local" => {
                anyhow::ensure!(
                    self.emit_batch.is_none(),
                    "--emit-batch goes with --backend openai"
                );
                Backend::Local {
                    llm: self.model.choice(),
                    batch: self.batch,
                }
            }
            "openai" => Backend::OpenAi(OpenAiBackend {
                base_url: self.base_url.clone(),
                model_name: self.model_name.clone(),
                api_key_env: self.api_key_env.clone(),
                structured_output: self.structured_output.clone(),
                timeout: std::time::Duration::from_secs(self.timeout),
                max_retries: self.max_retries,
                concurrency: self.concurrency,
                emit_batch: self.emit_batch.clone(),
            }),
            other => anyhow::bail!("unknown backend `{other}` (expected local or openai)"),
        };
        Ok(GenerateRequest {
            corpus: self.corpus.corpus.clone(),
            format: self.corpus.format,
            n: self.n,
            out: self.out.clone(),
            backend,
            price_prompt: self.price_prompt,
            price_completion: self.price_completion,
            seed: self.seed,
            temperature: self.temperature,
            k: self.k,
            reasons: self.reasons,
            max_attempts: self.max_attempts,
            exclude_split: self.exclude_split.clone(),
            min_per_label: self.min_per_label,
            plan: self.plan.clone(),
            response_cache: self.response_cache.clone(),
            icd: self.icd.clone(),
            no_gate: self.no_gate,
            conditions_from_examples: self.conditions_from_examples,
            encoder: self.encoder.encoder.clone(),
        })
    }
}

pub fn generate(ctx: &Ctx, a: GenerateArgs) -> anyhow::Result<()> {
    let s = trialforge_core::generate::generate(&ctx.env, &a.request()?, &ctx.progress)?;
    ctx.emit(&s, || crate::format::generation(&s))
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
    let s = trialforge_core::data::export_top_csv(&a.input, &a.out)?;
    ctx.emit(&s, || {
        format!(
            "wrote {} labelled trials to {} (TOP CSV schema)",
            s.rows, s.out
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
    let (s, dir) = trialforge_core::generate::ingest_batch(&ctx.env, &a.results, a.response_cache)?;
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
