//! The engine: one worker thread that owns the encoder, the model and the corpus index (loaded
//! once), and answers jobs from a bounded queue. The HTTP handlers only send jobs and await the
//! answers, so no request thread ever computes, and the queue's capacity bounds the work waiting.
//! Jobs waiting together are answered together (one model call and one encoder call for all of
//! them), which is what keeps throughput up under many clients.

use std::path::PathBuf;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use trialforge_core::embed::{cached_embedder, SearchHit, TrialIndex};
use trialforge_core::predict::{default_model, load, needs_encoder, trained_on, TrainedOn};
use trialforge_core::{Environment, Progress};
use trialforge_trial::render::protocol_text;
use trialforge_trial::{Format, Trial};

/// What the engine loads.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// A model folder written by `train` (none: the default model, trained on first start).
    pub model: Option<PathBuf>,
    /// Real trials the similar trials come from (none: every bundled TOP file and the
    /// ClinicalTrials.gov samples).
    pub corpus: Option<PathBuf>,
    /// The encoder of the corpus index (and of the model, if it reads embeddings).
    pub encoder: Option<PathBuf>,
    /// Jobs waiting at most; a full queue makes new requests wait.
    pub queue: usize,
    /// Jobs answered together at most.
    pub batch: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            model: None,
            corpus: None,
            encoder: None,
            queue: 256,
            batch: 32,
        }
    }
}

/// The model being served and what it was trained on.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub dir: String,
    /// `None` for a model folder without `trained_on.json` (trained by an older version).
    pub trained_on: Option<TrainedOn>,
    /// Trained at this start (the default model's first start), else loaded.
    pub trained_now: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct CorpusInfo {
    pub source: String,
    pub trials: usize,
}

/// What the engine serves, fixed at start.
#[derive(Clone, Debug, Serialize)]
pub struct EngineInfo {
    pub model: ModelInfo,
    pub encoder: String,
    pub corpus: CorpusInfo,
    pub version: &'static str,
}

/// One trial's answer.
#[derive(Clone, Debug, Serialize)]
pub struct Scored {
    pub probability: f32,
    pub similar: Vec<SearchHit>,
}

enum Job {
    Predict {
        trials: Vec<Trial>,
        k: usize,
        reply: oneshot::Sender<anyhow::Result<Vec<Scored>>>,
    },
    Search {
        query: String,
        k: usize,
        reply: oneshot::Sender<anyhow::Result<Vec<SearchHit>>>,
    },
}

/// The handlers' side of the engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    pub info: std::sync::Arc<EngineInfo>,
}

/// Why a job got no answer.
#[derive(Debug)]
pub enum JobError {
    /// The engine is gone (its thread ended).
    Gone,
    /// The pipeline failed on this input.
    Failed(anyhow::Error),
}

impl Engine {
    /// Loads everything on a new thread and returns once it is ready to answer (or failed).
    pub fn start(env: Environment, opts: EngineOptions) -> anyhow::Result<Engine> {
        let (jobs, mut queue) = mpsc::channel::<Job>(opts.queue.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<EngineInfo>>();
        std::thread::Builder::new()
            .name("trialforge-engine".into())
            .spawn(move || {
                let progress = LogProgress;
                let setup = (|| -> anyhow::Result<_> {
                    let (model_dir, trained_now, trained) = match &opts.model {
                        Some(dir) => (dir.clone(), false, trained_on(dir)),
                        None => {
                            let d = default_model(&env, &progress)?;
                            if !d.trained_now {
                                progress.note(&format!(
                                    "using the cached default model {}",
                                    d.dir.display()
                                ));
                            }
                            (d.dir, d.trained_now, Some(d.trained_on))
                        }
                    };
                    let encoder = env.load_encoder(opts.encoder.as_deref())?;
                    let (trials, source) = match &opts.corpus {
                        Some(p) => (
                            trialforge_core::data::load_trials(p, Format::Auto)?,
                            p.display().to_string(),
                        ),
                        None => bundled_corpus(&env)?,
                    };
                    progress.note(&format!(
                        "indexing {} real trials of {source} (embeddings cached in {})",
                        trials.len(),
                        env.cache_dir.display()
                    ));
                    let index = TrialIndex::build(&env, encoder.as_ref(), trials, &progress)?;
                    Ok((model_dir, trained_now, trained, encoder, index, source))
                })();
                let (model_dir, trained_now, trained, encoder, index, source) = match setup {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let embedder = cached_embedder(&env, encoder.as_ref(), &trialforge_core::Silent);
                let loaded = match needs_encoder(&model_dir)
                    .and_then(|needs| load(&model_dir, needs.then_some(&embedder)))
                {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let info = EngineInfo {
                    model: ModelInfo {
                        name: loaded.name.clone(),
                        dir: model_dir.display().to_string(),
                        trained_on: trained,
                        trained_now,
                    },
                    encoder: encoder.model_id().to_string(),
                    corpus: CorpusInfo {
                        source,
                        trials: index.trials.len(),
                    },
                    version: env!("CARGO_PKG_VERSION"),
                };
                // Input trials' embeddings go through the cache: a trial asked about again (or
                // one of the corpus) costs no encoder call.
                let mut cached =
                    match trialforge_encode::CachedEncoder::new(encoder.as_ref(), &env.cache_dir) {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                if ready_tx.send(Ok(info)).is_err() {
                    return;
                }
                let mut batch = Vec::new();
                while let Some(first) = queue.blocking_recv() {
                    batch.push(first);
                    while batch.len() < opts.batch.max(1) {
                        match queue.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    answer(
                        std::mem::take(&mut batch),
                        loaded.model.as_ref(),
                        &mut cached,
                        encoder.as_ref(),
                        &index,
                    );
                }
            })?;
        let info = ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the engine thread ended while loading"))??;
        Ok(Engine {
            jobs,
            info: std::sync::Arc::new(info),
        })
    }

    /// The probability of success of each trial and its `k` most similar real trials.
    pub async fn predict(&self, trials: Vec<Trial>, k: usize) -> Result<Vec<Scored>, JobError> {
        self.ask(|reply| Job::Predict { trials, k, reply }).await
    }

    /// The `k` real trials nearest to a text.
    pub async fn search(&self, query: String, k: usize) -> Result<Vec<SearchHit>, JobError> {
        self.ask(|reply| Job::Search { query, k, reply }).await
    }

    /// Queues a job (waiting while the queue is full) and awaits its answer.
    async fn ask<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<anyhow::Result<T>>) -> Job,
    ) -> Result<T, JobError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(job(reply))
            .await
            .map_err(|_| JobError::Gone)?;
        answer
            .await
            .map_err(|_| JobError::Gone)?
            .map_err(JobError::Failed)
    }
}

/// Every bundled TOP file and the ClinicalTrials.gov samples.
fn bundled_corpus(env: &Environment) -> anyhow::Result<(Vec<Trial>, String)> {
    let mut trials = trialforge_core::data::load_trials(&env.top_dir(), Format::Top)?;
    let samples = env.data_dir.join("ctgov-samples/v2");
    if samples.is_dir() {
        trials.extend(trialforge_core::data::load_trials(&samples, Format::Ctgov)?);
    }
    Ok((
        trials,
        format!(
            "{} (every TOP file) and {}",
            env.top_dir().display(),
            samples.display()
        ),
    ))
}

/// Answers a batch of jobs: all predictions in one model call and one encoder call, searches
/// in one encoder call. A failure fails the jobs of its call only.
fn answer(
    jobs: Vec<Job>,
    model: &dyn trialforge_predict::OutcomeModel,
    cached: &mut trialforge_encode::CachedEncoder,
    encoder: &dyn trialforge_encode::TextEncoder,
    index: &TrialIndex,
) {
    let mut predicts = Vec::new();
    let mut searches = Vec::new();
    for job in jobs {
        match job {
            Job::Predict { trials, k, reply } => predicts.push((trials, k, reply)),
            Job::Search { query, k, reply } => searches.push((query, k, reply)),
        }
    }
    if !predicts.is_empty() {
        let protocols: Vec<&trialforge_trial::Protocol> = predicts
            .iter()
            .flat_map(|(trials, _, _)| trials.iter().map(|t| &t.protocol))
            .collect();
        let texts: Vec<String> = protocols.iter().map(|p| protocol_text(p)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let scored = model
            .predict(&protocols)
            .map_err(anyhow::Error::from)
            .and_then(|p| Ok((p, cached.embed(&refs, |_, _| {})?)));
        match scored {
            Err(e) => {
                let message = format!("{e:#}");
                for (_, _, reply) in predicts {
                    let _ = reply.send(Err(anyhow::anyhow!("{message}")));
                }
            }
            Ok((probabilities, vectors)) => {
                let mut at = 0;
                for (trials, k, reply) in predicts {
                    let result = (at..at + trials.len())
                        .map(|i| {
                            Ok(Scored {
                                probability: probabilities[i],
                                similar: index.nearest(&vectors[i], k)?,
                            })
                        })
                        .collect();
                    at += trials.len();
                    let _ = reply.send(result);
                }
            }
        }
    }
    if !searches.is_empty() {
        let refs: Vec<&str> = searches.iter().map(|(q, _, _)| q.as_str()).collect();
        match encoder.encode(&refs) {
            Err(e) => {
                let message = format!("{e:#}");
                for (_, _, reply) in searches {
                    let _ = reply.send(Err(anyhow::anyhow!("{message}")));
                }
            }
            Ok(vectors) => {
                for ((_, k, reply), v) in searches.into_iter().zip(vectors) {
                    let _ = reply.send(index.nearest(&v, k));
                }
            }
        }
    }
}

/// Progress of the engine's start, as log lines on stderr (the engine thread has no terminal
/// bars to draw).
struct LogProgress;

impl Progress for LogProgress {
    fn count(&self, what: &str, done: u64, total: u64) {
        // About every tenth of the work (the encoder reports per chunk of 256 texts).
        let step = (total / 10).max(1);
        if done == total || done / step != done.saturating_sub(256) / step {
            eprintln!("{what}: {done} of {total}");
        }
    }

    fn stage(&self, what: &str) {
        tracing::info!("{what}");
    }

    fn note(&self, line: &str) {
        eprintln!("{line}");
    }
}
