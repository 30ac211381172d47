//! Outcome prediction: the TOP benchmark, training a model, evaluating it, predicting with it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use trialforge_encode::TextEncoder;
use trialforge_predict::benchmark::{
    self, calibration_scores, examples, predict_trials, BenchmarkOptions, BenchmarkReport,
    CalibrationScores, Reliability, TopPhase,
};
use trialforge_predict::calibrate::{best_f1_threshold, Platt};
use trialforge_predict::embedding::CachedProtocolEmbedder;
use trialforge_predict::metrics::{bootstrap, bootstrap_indices, BootstrapScores};
use trialforge_predict::registry::{
    new_model, saved_kind, saved_needs_encoder, BuildOptions, ModelSpec,
};
use trialforge_predict::{load_model, OutcomeModel, ProtocolEmbedder};
use trialforge_trial::{Format, Trial};

use crate::embed::cached_embedder;
use crate::{Environment, Progress};

/// An encoder loaded only when a model needs one, and its cached embedding adapter.
pub struct EncoderSlot {
    encoder: Option<Box<dyn TextEncoder>>,
}

impl EncoderSlot {
    /// Loads the encoder at `path` (default: MiniLM) if `needed`.
    pub fn load(env: &Environment, path: Option<&Path>, needed: bool) -> anyhow::Result<Self> {
        Ok(EncoderSlot {
            encoder: if needed {
                Some(env.load_encoder(path)?)
            } else {
                None
            },
        })
    }

    pub fn encoder(&self) -> Option<&dyn TextEncoder> {
        self.encoder.as_deref()
    }

    pub fn embedder<'a>(
        &'a self,
        env: &Environment,
        progress: &'a dyn Progress,
    ) -> Option<CachedProtocolEmbedder<'a>> {
        self.encoder
            .as_deref()
            .map(|e| cached_embedder(env, e, progress))
    }
}

/// What building a model for training needs: the cache folders come from the environment.
fn build_options<'e>(
    env: &Environment,
    seed: u64,
    embedder: Option<&'e CachedProtocolEmbedder<'e>>,
    admet_dir: PathBuf,
) -> BuildOptions<'e> {
    BuildOptions {
        seed,
        pretrain_seed: 0,
        embedder: embedder.map(|e| e as &dyn ProtocolEmbedder),
        admet_dir,
        checkpoints: Some(env.cache_dir.join("checkpoints")),
    }
}

/// `benchmark top`.
#[derive(Clone, Debug)]
pub struct BenchmarkRequest {
    /// Folder with the TOP files [default: the bundled data/top].
    pub data: Option<PathBuf>,
    pub phase: TopPhase,
    pub models: Vec<ModelSpec>,
    pub resamples: usize,
    pub seed: u64,
    /// Training runs per model (seeds seed, seed+1, ...).
    pub seeds: usize,
    pub encoder: Option<PathBuf>,
    /// Train on every non-test file of the data folder (not TOP's protocol), for phases whose
    /// train split is not there.
    pub available_data: bool,
    /// Write every run's validation and test predictions to this folder.
    pub predictions: Option<PathBuf>,
}

impl Default for BenchmarkRequest {
    fn default() -> Self {
        BenchmarkRequest {
            data: None,
            phase: TopPhase::I,
            models: trialforge_predict::ModelKind::DEFAULT
                .map(ModelSpec::from)
                .to_vec(),
            resamples: 20,
            seed: 0,
            seeds: 1,
            encoder: None,
            available_data: false,
            predictions: None,
        }
    }
}

/// Trains on the phase's train split, selects on valid, scores test over bootstrap resamples
/// beside HINT's shipped predictions.
pub fn benchmark_top(
    env: &Environment,
    req: &BenchmarkRequest,
    progress: &dyn Progress,
) -> anyhow::Result<BenchmarkReport> {
    let slot = EncoderSlot::load(
        env,
        req.encoder.as_deref(),
        req.models.iter().any(|k| k.kind.needs_encoder()),
    )?;
    let emb = slot.embedder(env, progress);
    let data_dir = req.data.clone().unwrap_or_else(|| env.top_dir());
    let admet_dir = crate::env::admet_dir_in(&data_dir);
    let opts = BenchmarkOptions {
        data_dir,
        phase: req.phase,
        models: req.models.clone(),
        resamples: req.resamples,
        seed: req.seed,
        train_seeds: req.seeds.max(1),
        available_data: req.available_data,
        predictions_dir: req.predictions.clone(),
    };
    let report = benchmark::run(
        &opts,
        |spec, seed| {
            let name = spec.name();
            new_model(
                spec,
                &build_options(env, seed, emb.as_ref(), admet_dir.clone()),
                move |s| progress.stage(&format!("{name}: {s}")),
            )
        },
        |m| progress.stage(&format!("training {m}")),
    )?;
    progress.finish();
    Ok(report)
}

/// `train`.
#[derive(Clone, Debug)]
pub struct TrainRequest {
    pub model: ModelSpec,
    pub train: PathBuf,
    pub valid: Option<PathBuf>,
    /// Protocols without labels that cladmop pre-trains on (never test trials).
    pub unlabelled: Option<PathBuf>,
    /// ADMET files for `-admet` models [default: the bundled ones].
    pub admet: Option<PathBuf>,
    pub seed: u64,
    pub encoder: Option<PathBuf>,
    /// Output folder (config.json + weights.safetensors).
    pub out: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    pub model: String,
    pub train: usize,
    pub valid: usize,
    pub out: String,
    pub seconds: f64,
}

pub fn train(
    env: &Environment,
    req: &TrainRequest,
    progress: &dyn Progress,
) -> anyhow::Result<TrainSummary> {
    let read = |p: &Path| crate::data::load_trials(p, Format::Auto);
    let train = read(&req.train)?;
    let valid = req
        .valid
        .as_deref()
        .map(read)
        .transpose()?
        .unwrap_or_default();
    let unlabelled = req
        .unlabelled
        .as_deref()
        .map(read)
        .transpose()?
        .unwrap_or_default();
    anyhow::ensure!(
        train.iter().any(|t| t.label.is_some()),
        "{}: no labelled trials",
        req.train.display()
    );
    train_trials(
        env,
        &TrainSpec {
            model: req.model.clone(),
            seed: req.seed,
            encoder: req.encoder.clone(),
            admet: req.admet.clone(),
        },
        &train,
        &valid,
        &unlabelled,
        (
            &req.train.display().to_string(),
            &req.valid
                .as_ref()
                .map_or("none".to_string(), |p| p.display().to_string()),
        ),
        &req.out,
        progress,
    )
}

/// The model `serve` uses when given none: `tfidf-lr` (as good as any model here on TOP phase I,
/// and trained in seconds) on the bundled TOP phase I train split, validated on phase I valid.
pub const DEFAULT_MODEL: &str = "tfidf-lr";

/// Where the default model is, and whether it was trained just now (else it came from the cache).
#[derive(Clone, Debug, Serialize)]
pub struct DefaultModel {
    pub dir: PathBuf,
    pub trained_now: bool,
    pub trained_on: TrainedOn,
}

/// The default model, trained on the bundled data the first time and cached under the
/// environment's cache folder, keyed by the training files' contents and this version (so new
/// data or a new version trains a new one). Trained into a temporary folder and renamed: a kill
/// mid-training leaves no half model behind.
pub fn default_model(env: &Environment, progress: &dyn Progress) -> anyhow::Result<DefaultModel> {
    use sha2::{Digest, Sha256};
    let top = env.top_dir();
    let (train_path, valid_path) = (top.join("phase_I_train.csv"), top.join("phase_I_valid.csv"));
    let mut hash = Sha256::new();
    hash.update(DEFAULT_MODEL.as_bytes());
    hash.update(env!("CARGO_PKG_VERSION").as_bytes());
    for p in [&train_path, &valid_path] {
        hash.update(std::fs::read(p).with_context(|| {
            format!(
                "reading {} (the default model trains on the bundled TOP phase I files; give --model DIR instead)",
                p.display()
            )
        })?);
    }
    let digest = hex::encode(&hash.finalize()[..6]);
    let dir = env
        .cache_dir
        .join("models")
        .join(format!("{DEFAULT_MODEL}-top-phase-I-{digest}"));
    if let Some(trained_on) = trained_on(&dir).filter(|_| dir.join("config.json").is_file()) {
        return Ok(DefaultModel {
            dir,
            trained_now: false,
            trained_on,
        });
    }
    let train = crate::data::load_trials(&train_path, Format::Top)?;
    let valid = crate::data::load_trials(&valid_path, Format::Top)?;
    progress.note(&format!(
        "training the default model ({DEFAULT_MODEL} on {} TOP phase I train trials, {} valid) on first start; it is cached in {}",
        train.len(),
        valid.len(),
        dir.display()
    ));
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    train_trials(
        env,
        &TrainSpec {
            model: DEFAULT_MODEL.parse().map_err(anyhow::Error::msg)?,
            seed: 0,
            encoder: None,
            admet: None,
        },
        &train,
        &valid,
        &[],
        (
            &train_path.display().to_string(),
            &valid_path.display().to_string(),
        ),
        &partial,
        progress,
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir)
        .with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))?;
    let trained_on = trained_on(&dir).context("the default model's trained_on.json")?;
    Ok(DefaultModel {
        dir,
        trained_now: true,
        trained_on,
    })
}

/// What model to train, independent of where the trials come from.
#[derive(Clone, Debug)]
pub struct TrainSpec {
    pub model: ModelSpec,
    pub seed: u64,
    pub encoder: Option<PathBuf>,
    pub admet: Option<PathBuf>,
}

/// What a model was trained on: written beside its weights as `trained_on.json`, so whoever
/// serves or shares the model can say.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct TrainedOn {
    pub model: String,
    pub seed: u64,
    /// Where the training and validation trials came from (files, or what the caller said).
    pub train_source: String,
    pub valid_source: String,
    pub train_trials: usize,
    pub valid_trials: usize,
    pub unlabelled_trials: usize,
    pub trialforge_version: String,
}

/// Fitted on the validation split at training time and kept beside the model: Platt scaling of its
/// probabilities and the threshold that maximised F1 there. `evaluate` reports both; the model's
/// own probabilities stay as they are.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Calibration {
    pub method: String,
    pub platt: Platt,
    pub f1_threshold: f32,
    pub valid_trials: usize,
}

pub const CALIBRATION: &str = "calibration.json";

/// The calibration saved beside a model, if it was trained with a validation split.
pub fn calibration(dir: &Path) -> Option<Calibration> {
    let text = std::fs::read_to_string(dir.join(CALIBRATION)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The file beside a model's weights that says what it was trained on.
pub const TRAINED_ON: &str = "trained_on.json";

/// `DIR/trained_on.json`, if the model was trained by this version or a later one.
pub fn trained_on(dir: &Path) -> Option<TrainedOn> {
    let text = std::fs::read_to_string(dir.join(TRAINED_ON)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Trains on trials in memory and saves the model to `out`, with `trained_on.json` beside it
/// naming `sources` (train, valid).
#[allow(clippy::too_many_arguments)]
pub fn train_trials(
    env: &Environment,
    spec: &TrainSpec,
    train: &[Trial],
    valid: &[Trial],
    unlabelled: &[Trial],
    sources: (&str, &str),
    out: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<TrainSummary> {
    let started = std::time::Instant::now();
    let (tr, va) = (examples(train), examples(valid));
    anyhow::ensure!(!tr.is_empty(), "no labelled training trials");
    let slot = EncoderSlot::load(
        env,
        spec.encoder.as_deref(),
        spec.model.kind.needs_encoder(),
    )?;
    let emb = slot.embedder(env, progress);
    let admet_dir = spec.admet.clone().unwrap_or_else(|| env.admet_dir());
    let name = spec.model.name();
    progress.stage(&format!("training {name}"));
    let label = name.clone();
    let mut model = new_model(
        &spec.model,
        &build_options(env, spec.seed, emb.as_ref(), admet_dir),
        move |s| progress.stage(&format!("training {label}: {s}")),
    )?;
    model.add_unlabelled(&unlabelled.iter().map(|t| &t.protocol).collect::<Vec<_>>());
    model.fit(&tr, &va)?;
    progress.finish();
    model.save(out)?;
    if !va.is_empty() {
        let protocols: Vec<&trialforge_trial::Protocol> = va.iter().map(|e| e.protocol).collect();
        let scores = model.predict(&protocols)?;
        let labels: Vec<u8> = va.iter().map(|e| u8::from(e.label)).collect();
        crate::write_json(
            out,
            CALIBRATION,
            &Calibration {
                method: "platt".into(),
                platt: Platt::fit(&scores, &labels),
                f1_threshold: best_f1_threshold(&labels, &scores),
                valid_trials: labels.len(),
            },
        )?;
    }
    crate::write_json(
        out,
        TRAINED_ON,
        &TrainedOn {
            model: name.clone(),
            seed: spec.seed,
            train_source: sources.0.to_string(),
            valid_source: sources.1.to_string(),
            train_trials: tr.len(),
            valid_trials: va.len(),
            unlabelled_trials: unlabelled.len(),
            trialforge_version: env!("CARGO_PKG_VERSION").to_string(),
        },
    )?;
    Ok(TrainSummary {
        model: name,
        train: tr.len(),
        valid: va.len(),
        out: out.display().to_string(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A trained model with the encoder it reads, loaded once and used for many predictions.
pub struct LoadedModel<'e> {
    pub model: Box<dyn OutcomeModel + 'e>,
    pub name: String,
}

/// Does the model saved in `dir` read embeddings?
pub fn needs_encoder(dir: &Path) -> anyhow::Result<bool> {
    Ok(saved_needs_encoder(dir)?)
}

/// Loads a model folder written by `train`, with `embedder` when it reads embeddings.
pub fn load<'e>(
    dir: &Path,
    embedder: Option<&'e CachedProtocolEmbedder<'e>>,
) -> anyhow::Result<LoadedModel<'e>> {
    let kind = saved_kind(dir)?;
    let model = load_model(dir, embedder.map(|e| e as &dyn ProtocolEmbedder))?;
    Ok(LoadedModel {
        model,
        name: kind.name().to_string(),
    })
}

/// `evaluate`.
#[derive(Clone, Debug)]
pub struct EvaluateRequest {
    pub model: PathBuf,
    pub corpus: PathBuf,
    pub resamples: usize,
    pub seed: u64,
    pub encoder: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub trials: usize,
    pub resamples: usize,
    #[serde(flatten)]
    pub scores: BootstrapScores,
    /// ECE of the raw probabilities; with the model's `calibration.json` (from its validation
    /// split), ECE and Brier after Platt scaling and F1 at the validation-chosen threshold.
    pub calibration: CalibrationScores,
    pub reliability: Reliability,
}

pub fn evaluate(
    env: &Environment,
    req: &EvaluateRequest,
    progress: &dyn Progress,
) -> anyhow::Result<Evaluation> {
    let trials: Vec<Trial> = crate::data::load_trials(&req.corpus, Format::Auto)?
        .into_iter()
        .filter(|t| t.label.is_some())
        .collect();
    anyhow::ensure!(
        !trials.is_empty(),
        "{}: no labelled trials",
        req.corpus.display()
    );
    let slot = EncoderSlot::load(env, req.encoder.as_deref(), needs_encoder(&req.model)?)?;
    let emb = slot.embedder(env, progress);
    let loaded = load(&req.model, emb.as_ref())?;
    let scores = predict_trials(loaded.model.as_ref(), &trials)?;
    let labels: Vec<u8> = trials
        .iter()
        .filter_map(|t| t.label.map(u8::from))
        .collect();
    let indices = bootstrap_indices(trials.len(), req.resamples, req.seed);
    let fitted = calibration(&req.model);
    let (calibration, reliability) = calibration_scores(
        &labels,
        &scores,
        &indices,
        fitted.as_ref().map(|c| c.platt.clone()),
        fitted.as_ref().map(|c| c.f1_threshold),
    );
    Ok(Evaluation {
        trials: trials.len(),
        resamples: req.resamples,
        scores: bootstrap(&labels, &scores, &indices),
        calibration,
        reliability,
    })
}

/// `predict`.
#[derive(Clone, Debug)]
pub struct PredictRequest {
    pub model: PathBuf,
    /// One trial JSON, a study record, a corpus, a TOP CSV...
    pub input: PathBuf,
    pub encoder: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Prediction {
    pub id: String,
    pub probability: f32,
}

pub fn predict(
    env: &Environment,
    req: &PredictRequest,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<Prediction>> {
    let trials = crate::data::load_trials(&req.input, Format::Auto)?;
    predict_with(env, &req.model, req.encoder.as_deref(), &trials, progress)
}

/// The saved model in `model_dir` on trials in memory (`encoder`: the one it was trained with,
/// for models that read embeddings; default MiniLM).
pub fn predict_with(
    env: &Environment,
    model_dir: &Path,
    encoder: Option<&Path>,
    trials: &[Trial],
    progress: &dyn Progress,
) -> anyhow::Result<Vec<Prediction>> {
    let slot = EncoderSlot::load(env, encoder, needs_encoder(model_dir)?)?;
    let emb = slot.embedder(env, progress);
    let loaded = load(model_dir, emb.as_ref())?;
    let scores = predict_trials(loaded.model.as_ref(), trials)?;
    Ok(trials
        .iter()
        .zip(scores)
        .map(|(t, p)| Prediction {
            id: t.id.clone(),
            probability: p,
        })
        .collect())
}

/// A real training trial near the one explained.
#[derive(Clone, Debug, Serialize)]
pub struct Neighbour {
    pub id: String,
    /// 1 success, 0 failure (None: unlabelled).
    pub label: Option<u8>,
    /// Cosine similarity of the two protocols' renderings (MiniLM).
    pub similarity: f32,
}

/// What one criteria item does to the score: the model's logit with the item minus without it
/// (positive: the item raises the predicted chance of success).
#[derive(Clone, Debug, Serialize)]
pub struct ItemEffect {
    /// "inclusion" or "exclusion".
    pub section: &'static str,
    pub item: String,
    pub contribution: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub id: String,
    pub probability: f32,
    /// The nearest training trials, most similar first (empty when the training data could not
    /// be read; `neighbours_note` says why).
    pub neighbours: Vec<Neighbour>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neighbours_note: Option<String>,
    /// The criteria items that move the score most, largest effect first.
    pub items: Vec<ItemEffect>,
}

/// How many neighbours and items an explanation lists.
pub const EXPLAIN_NEIGHBOURS: usize = 5;
pub const EXPLAIN_ITEMS: usize = 5;

/// `predict --explain`: each trial's probability with the nearest training trials (their outcomes
/// and similarity) and the criteria items that move its score most, measured by leaving each item
/// out and predicting again (any model; for the linear `tfidf-lr` it is close to the item's terms'
/// share of the logit, the rest coming from the renormalised tf-idf vector and from terms other
/// items share, whose sublinear counts change). The training trials come
/// from `neighbours_from`, or
/// else the train file named in the model's `trained_on.json`.
pub fn explain_with(
    env: &Environment,
    model_dir: &Path,
    encoder: Option<&Path>,
    trials: &[Trial],
    neighbours_from: Option<&Path>,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<Explanation>> {
    use trialforge_predict::calibrate::logit;
    let slot = EncoderSlot::load(env, encoder, needs_encoder(model_dir)?)?;
    let emb = slot.embedder(env, progress);
    let loaded = load(model_dir, emb.as_ref())?;
    let model = loaded.model.as_ref();
    let scores = predict_trials(model, trials)?;

    // Item effects: every item-less variant of a trial in one batch.
    let mut explanations = Vec::with_capacity(trials.len());
    for (t, &p) in trials.iter().zip(&scores) {
        let mut variants = Vec::new();
        let mut which = Vec::new();
        for (section, items) in [
            ("inclusion", &t.protocol.criteria.inclusion),
            ("exclusion", &t.protocol.criteria.exclusion),
        ] {
            for (k, item) in items.iter().enumerate() {
                let mut v = t.protocol.clone();
                let list = if section == "inclusion" {
                    &mut v.criteria.inclusion
                } else {
                    &mut v.criteria.exclusion
                };
                list.remove(k);
                variants.push(v);
                which.push((section, item.clone()));
            }
        }
        let refs: Vec<&trialforge_trial::Protocol> = variants.iter().collect();
        let without = model.predict(&refs)?;
        let mut items: Vec<ItemEffect> = which
            .into_iter()
            .zip(without)
            .map(|((section, item), q)| ItemEffect {
                section,
                item,
                contribution: logit(p) - logit(q),
            })
            .collect();
        items.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
        items.truncate(EXPLAIN_ITEMS);
        explanations.push(Explanation {
            id: t.id.clone(),
            probability: p,
            neighbours: Vec::new(),
            neighbours_note: None,
            items,
        });
    }

    // Neighbours among the training trials, by the default encoder's rendering embeddings.
    let source = neighbours_from.map(Path::to_path_buf).or_else(|| {
        trained_on(model_dir)
            .map(|t| PathBuf::from(t.train_source))
            .filter(|p| p.is_file())
    });
    let Some(source) = source else {
        for e in &mut explanations {
            e.neighbours_note = Some(
                "the training data is not known: give it with --neighbours-from (trained_on.json names no readable file)".into(),
            );
        }
        return Ok(explanations);
    };
    let train = crate::data::load_trials(&source, Format::Auto).with_context(|| {
        format!(
            "reading the training trials for neighbours from {}",
            source.display()
        )
    })?;
    let minilm = env.load_encoder(None)?;
    let embedder = crate::embed::cached_embedder(env, minilm.as_ref(), progress);
    fn protocols(ts: &[Trial]) -> Vec<&trialforge_trial::Protocol> {
        ts.iter().map(|t| &t.protocol).collect()
    }
    let index = trialforge_retrieve::VectorIndex::from_vectors(
        embedder.dim(),
        &embedder.embed(&protocols(&train))?,
    )?;
    let queries = embedder.embed(&protocols(trials))?;
    for (e, q) in explanations.iter_mut().zip(&queries) {
        let hits = index.search(q, EXPLAIN_NEIGHBOURS + 1)?;
        e.neighbours = hits
            .into_iter()
            // A trial is not its own neighbour (explaining a training trial).
            .filter(|h| train[h.index].id != e.id)
            .take(EXPLAIN_NEIGHBOURS)
            .map(|h| Neighbour {
                id: train[h.index].id.clone(),
                label: train[h.index].label.map(u8::from),
                similarity: h.score,
            })
            .collect();
    }
    progress.finish();
    Ok(explanations)
}
