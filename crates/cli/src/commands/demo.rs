//! `demo`: the main job end to end on the bundled data and local models. Every step's output lands
//! in `--out` (default `runs/demo`) and the figures are printed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use trialforge_trial::top::ImportOptions;
use trialforge_trial::{corpus, import, Counts, Format, Split};

use super::analyze::{run_analyze, AnalyzeArgs};
use super::augment::AugmentSettings;
use super::chat::LlmArgs;
use super::embed::CorpusArgs;
use super::embed::{embed_trials, format_hits, search_corpus, EmbedStats, EncoderArgs, SearchHit};
use super::generate::{format_summary, run_generate, GenerateArgs};
use super::predict::{format_report, run_benchmark, BenchmarkTopArgs};
use super::Ctx;
use trialforge_predict::benchmark::{BenchmarkReport, TopPhase};
use trialforge_synth::run::RunSummary;

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
    #[arg(long, default_value_t = 4)]
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

#[derive(Serialize)]
struct DemoSummary {
    corpus: String,
    counts: Counts,
    embed: EmbedStats,
    query: String,
    hits: Vec<SearchHit>,
    generation: RunSummary,
    benchmark: BenchmarkReport,
    analysis: serde_json::Value,
    seconds: f64,
}

pub fn demo(ctx: &Ctx, a: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let say = |s: String| {
        if !ctx.json {
            eprintln!("{s}");
        }
    };

    say("== 1. models".into());
    super::models::ensure(ctx)?;

    say("== 2. import".into());
    let data = a.data.clone().unwrap_or_else(crate::paths::bundled_data);
    let mut trials = Vec::new();
    for f in import::read(&data.join("top"), Format::Top, ImportOptions::default())? {
        let name = f
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with(&a.top_prefix) {
            trials.extend(f.trials);
        }
    }
    anyhow::ensure!(
        !trials.is_empty(),
        "no TOP files named {}* in {}",
        a.top_prefix,
        data.display()
    );
    trials.extend(import::read_all(
        &data.join("ctgov-samples/v2"),
        Format::Ctgov,
        ImportOptions::default(),
    )?);
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let corpus_path = a.out.join("corpus.jsonl");
    corpus::write_jsonl(&corpus_path, &trials)?;
    let counts = Counts::of(&trials);
    say(format!(
        "{} trials ({} success, {} failure, {} unlabelled) -> {}",
        counts.rows,
        counts.success,
        counts.failure,
        counts.unlabelled,
        corpus_path.display()
    ));

    say("== 3. embed".into());
    let encoder = a.encoder.load(ctx)?;
    let (vectors, embed) = embed_trials(encoder.as_ref(), &trials)?;
    let ids: Vec<String> = trials.iter().map(|t| t.id.clone()).collect();
    trialforge_encode::save_safetensors(
        &a.out.join("embeddings.safetensors"),
        &embed.model,
        &ids,
        &vectors,
    )?;
    say(format!(
        "{} trials in {:.1}s ({} newly encoded) -> {}",
        embed.trials,
        embed.seconds,
        embed.encoded,
        a.out.join("embeddings.safetensors").display()
    ));

    say(format!("== 4. search: {:?}", a.query));
    let hits = search_corpus(encoder.as_ref(), &trials, &a.query, 5)?;
    say(format_hits(&hits));

    say(format!(
        "== 5. synthetic trials: retrieval-reasoning generation with the local LLM ({} cells)",
        a.synthetic
    ));
    let gen_args = GenerateArgs {
        corpus: CorpusArgs {
            corpus: corpus_path.clone(),
            format: Format::Corpus,
        },
        n: a.synthetic,
        out: a.out.join("synthetic.jsonl"),
        backend: "local".into(),
        base_url: String::new(),
        model_name: None,
        api_key_env: "OPENAI_API_KEY".into(),
        structured_output: "auto".into(),
        timeout: 120,
        max_retries: 6,
        concurrency: 1,
        price_prompt: None,
        price_completion: None,
        seed: 0,
        temperature: 0.7,
        k: 3,
        reasons: 5,
        // The realism gate rejects most of what a 135M model writes: a third try per cell lets the
        // demo show the gate at work and still keep a few trials.
        max_attempts: a.max_attempts,
        exclude_split: vec![Split::Test],
        min_per_label: 2,
        plan: None,
        response_cache: None,
        emit_batch: None,
        icd: None,
        no_gate: false,
        conditions_from_examples: false,
        model: a.llm.model.clone(),
        encoder: a.encoder.clone(),
    };
    let generation = run_generate(ctx, &gen_args)?;
    say(format_summary(&generation));

    say("== 6. outcome prediction: TOP phase I benchmark".into());
    let bench_args = BenchmarkTopArgs {
        data: Some(data.join("top")),
        phase: TopPhase::I,
        models: "all".into(),
        resamples: 20,
        seed: 0,
        seeds: 1,
        encoder: a.encoder.clone(),
    };
    let benchmark = run_benchmark(ctx, &bench_args)?;
    say(format_report(&benchmark));

    say(
        "== 7. the synthetic set judged: fidelity, coverage, privacy, label consistency, utility"
            .into(),
    );
    let report_dir = a.out.join("report");
    // Nothing passed the gate: the report needs at least one synthetic trial.
    let nothing_accepted = generation.accepted + generation.resumed_cells == 0
        && !gen_args.out.metadata().is_ok_and(|m| m.len() > 0);
    let analysis = if nothing_accepted {
        say(format!(
            "no synthetic trial passed the gate ({} attempts, rejects: {:?}); the report needs at least one. \
             The bundled 135M model is a smoke test: point --llm at a bigger GGUF, or run `generate --backend openai`.",
            generation.attempts, generation.rejects_by_rule
        ));
        serde_json::Value::Null
    } else {
        let analyze_args = AnalyzeArgs {
            real: corpus_path.clone(),
            synthetic: gen_args.out.clone(),
            out: report_dir.clone(),
            within_pairs: 10_000,
            across_pairs: 1_000,
            near_copy_cosine: 0.97,
            perplexity: 30.0,
            tsne_max_real: 2000,
            seed: 0,
            augment: true,
            gallery: 3,
            icd: None,
            set: Default::default(),
            settings: AugmentSettings::default(),
            encoder: a.encoder.clone(),
        };
        let (analysis, analysis_text) = run_analyze(ctx, &analyze_args)?;
        say(analysis_text);
        analysis
    };

    let summary = DemoSummary {
        corpus: corpus_path.display().to_string(),
        counts,
        embed,
        query: a.query,
        hits,
        generation,
        benchmark,
        analysis,
        seconds: started.elapsed().as_secs_f64(),
    };
    let summary_path = a.out.join("summary.json");
    std::fs::write(&summary_path, serde_json::to_string_pretty(&summary)?)?;
    ctx.emit(&summary, || {
        format!(
            "\ndemo done in {:.1}s; outputs in {} (summary.json, corpus.jsonl, embeddings.safetensors, synthetic.jsonl){}",
            summary.seconds,
            a.out.display(),
            if nothing_accepted {
                String::new()
            } else {
                format!("\nreport: {}", report_dir.join("report.html").display())
            }
        )
    })
}
