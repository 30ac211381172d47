//! The main job end to end on the bundled data and local models: models, import, embed, search,
//! generate, the TOP benchmark and the report on the synthetic set. Each step's result goes to
//! the caller as it is ready (a [`DemoStep`]) and into `summary.json`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use trialforge_predict::benchmark::{BenchmarkReport, TopPhase};
use trialforge_synth::run::RunSummary;
use trialforge_trial::top::ImportOptions;
use trialforge_trial::{corpus, import, Counts, Format};

use crate::analyze::{analyze, AnalysisOutcome, AnalyzeRequest};
use crate::embed::{embed_trials, EmbedStats, TrialIndex};
use crate::env::{LlmChoice, ModelFetched};
use crate::generate::{generate, Backend, GenerateRequest};
use crate::predict::{benchmark_top, BenchmarkRequest};
use crate::{Environment, Progress};

#[derive(Clone, Debug)]
pub struct DemoRequest {
    /// Bundled data folder (holds top/ and ctgov-samples/) [default: the environment's].
    pub data: Option<PathBuf>,
    /// TOP files to use, as a prefix of their names (`phase_I_`).
    pub top_prefix: String,
    pub out: PathBuf,
    /// Synthetic trials to try for (cells of the plan).
    pub synthetic: usize,
    pub max_attempts: u32,
    /// The search query shown.
    pub query: String,
    pub encoder: Option<PathBuf>,
    pub llm: LlmChoice,
}

impl Default for DemoRequest {
    fn default() -> Self {
        DemoRequest {
            data: None,
            top_prefix: "phase_I_".into(),
            out: PathBuf::from("runs/demo"),
            synthetic: 8,
            max_attempts: 3,
            query: "HER2-positive metastatic breast cancer treated with trastuzumab".into(),
            encoder: None,
            llm: LlmChoice::default(),
        }
    }
}

/// A step of the demo as it starts (`Starting`) or with its result.
pub enum DemoStep<'a> {
    Starting(&'a str),
    Models(&'a [ModelFetched]),
    Imported {
        counts: &'a Counts,
        corpus: &'a str,
    },
    Embedded {
        stats: &'a EmbedStats,
        out: &'a str,
    },
    Searched {
        query: &'a str,
        hits: &'a [crate::embed::SearchHit],
    },
    Generated(&'a RunSummary),
    Benchmarked(&'a BenchmarkReport),
    Analyzed(&'a AnalysisOutcome),
    /// No synthetic trial passed the gate, so there is no report (the reason, in words).
    NoReport(&'a str),
}

#[derive(Serialize)]
pub struct DemoSummary {
    pub corpus: String,
    pub counts: Counts,
    pub embed: EmbedStats,
    pub query: String,
    pub hits: Vec<crate::embed::SearchHit>,
    pub generation: RunSummary,
    pub benchmark: BenchmarkReport,
    pub analysis: Option<AnalysisOutcome>,
    pub out: String,
    pub seconds: f64,
}

pub fn demo(
    env: &Environment,
    req: &DemoRequest,
    progress: &dyn Progress,
    on_step: &mut dyn FnMut(DemoStep),
) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    let env = &Environment {
        data_dir: req.data.clone().unwrap_or_else(|| env.data_dir.clone()),
        ..env.clone()
    };
    on_step(DemoStep::Starting("1. models"));
    let models = env.ensure_models(progress)?;
    on_step(DemoStep::Models(&models));

    on_step(DemoStep::Starting("2. import"));
    let data = env.data_dir.clone();
    let mut trials = Vec::new();
    for f in import::read(&data.join("top"), Format::Top, ImportOptions::default())? {
        let name = f
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with(&req.top_prefix) {
            trials.extend(f.trials);
        }
    }
    anyhow::ensure!(
        !trials.is_empty(),
        "no TOP files named {}* in {}",
        req.top_prefix,
        data.join("top").display()
    );
    trials.extend(import::read_all(
        &data.join("ctgov-samples/v2"),
        Format::Ctgov,
        ImportOptions::default(),
    )?);
    std::fs::create_dir_all(&req.out).with_context(|| format!("creating {}", req.out.display()))?;
    let corpus_path = req.out.join("corpus.jsonl");
    corpus::write_jsonl(&corpus_path, &trials)
        .with_context(|| format!("writing {}", corpus_path.display()))?;
    let counts = Counts::of(&trials);
    let corpus_name = corpus_path.display().to_string();
    on_step(DemoStep::Imported {
        counts: &counts,
        corpus: &corpus_name,
    });

    on_step(DemoStep::Starting("3. embed"));
    let encoder = env.load_encoder(req.encoder.as_deref())?;
    let (vectors, embed) = embed_trials(env, encoder.as_ref(), &trials, progress)?;
    let ids: Vec<String> = trials.iter().map(|t| t.id.clone()).collect();
    let vectors_path = req.out.join("embeddings.safetensors");
    trialforge_encode::save_safetensors(&vectors_path, &embed.model, &ids, &vectors)?;
    on_step(DemoStep::Embedded {
        stats: &embed,
        out: &vectors_path.display().to_string(),
    });

    on_step(DemoStep::Starting("4. search"));
    let index = TrialIndex {
        index: trialforge_retrieve::VectorIndex::from_vectors(encoder.dim(), &vectors)?,
        trials,
    };
    let hits = index.search_text(encoder.as_ref(), &req.query, 5)?;
    on_step(DemoStep::Searched {
        query: &req.query,
        hits: &hits,
    });
    drop(index);

    on_step(DemoStep::Starting(
        "5. synthetic trials: retrieval-reasoning generation with the local LLM",
    ));
    let synthetic_path = req.out.join("synthetic.jsonl");
    let mut gen = GenerateRequest::new(corpus_path.clone(), req.synthetic, synthetic_path.clone());
    gen.format = Format::Corpus;
    gen.backend = Backend::Local {
        llm: req.llm.clone(),
        batch: crate::generate::DEFAULT_LOCAL_BATCH,
    };
    // The realism gate rejects most of what a 135M model writes: a third try per cell lets the
    // demo show the gate at work and still keep a few trials.
    gen.max_attempts = req.max_attempts;
    gen.encoder = req.encoder.clone();
    let generation = generate(env, &gen, progress)?;
    on_step(DemoStep::Generated(&generation));

    on_step(DemoStep::Starting(
        "6. outcome prediction: TOP phase I benchmark",
    ));
    let benchmark = benchmark_top(
        env,
        &BenchmarkRequest {
            data: Some(data.join("top")),
            phase: TopPhase::I,
            encoder: req.encoder.clone(),
            ..Default::default()
        },
        progress,
    )?;
    on_step(DemoStep::Benchmarked(&benchmark));

    on_step(DemoStep::Starting(
        "7. the synthetic set judged: fidelity, coverage, privacy, label consistency, utility",
    ));
    // Nothing passed the gate: the report needs at least one synthetic trial.
    let nothing_accepted = generation.accepted + generation.resumed_cells == 0
        && !synthetic_path.metadata().is_ok_and(|m| m.len() > 0);
    let analysis = if nothing_accepted {
        let why = format!(
            "no synthetic trial passed the gate ({} attempts, rejects: {:?}); the report needs at least one. \
             The bundled 135M model is a smoke test: point --llm at a bigger GGUF, or run `generate --backend openai`.",
            generation.attempts, generation.rejects_by_rule
        );
        on_step(DemoStep::NoReport(&why));
        None
    } else {
        let mut a =
            AnalyzeRequest::new(corpus_path.clone(), synthetic_path, req.out.join("report"));
        a.augment = true;
        a.encoder = req.encoder.clone();
        let outcome = analyze(env, &a, progress)?;
        on_step(DemoStep::Analyzed(&outcome));
        Some(outcome)
    };

    let summary = DemoSummary {
        corpus: corpus_name,
        counts,
        embed,
        query: req.query.clone(),
        hits,
        generation,
        benchmark,
        analysis,
        out: req.out.display().to_string(),
        seconds: started.elapsed().as_secs_f64(),
    };
    crate::write_json(&req.out, "summary.json", &summary)?;
    Ok(summary)
}
