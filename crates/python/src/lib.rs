//! `trialforge._native`: the Python module over `trialforge_core`. It only translates: Python
//! values (rows as JSON, paths, options) into the pipelines' options, results back as JSON text
//! (the pure-Python layer in `python/trialforge` turns them into DataFrames, arrays and dicts).
//! Long work runs on a worker thread with the GIL released, and Ctrl-C gives control back.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use serde_json::{Map, Value};
use trialforge_core::analyze::AnalyzeRequest;
use trialforge_core::env::LlmChoice;
use trialforge_core::generate::{Backend, GenerateRequest, OpenAiBackend};
use trialforge_core::predict::{BenchmarkRequest, TrainSpec};
use trialforge_core::{Environment, Silent};
use trialforge_predict::registry::{parse_model_list, ModelSpec};
use trialforge_trial::{Format, Label, Split, Trial};

create_exception!(
    _native,
    TrialforgeError,
    PyException,
    "An error of a trialforge pipeline: the message names the file, line and field where the input was at fault."
);

fn py_err(e: anyhow::Error) -> PyErr {
    TrialforgeError::new_err(trialforge_core::error_chain(&e))
}

/// Runs `work` on its own thread with the GIL released, checking for Ctrl-C every 100 ms: an
/// interrupt raises KeyboardInterrupt at once (the worker finishes what it was doing in the
/// background and its result is dropped; resumable pipelines such as generation continue on
/// the next call).
fn interruptible<T: Send + 'static>(
    py: Python<'_>,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> PyResult<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("trialforge-work".into())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = tx.send(r);
        })
        .map_err(|e| TrialforgeError::new_err(format!("starting a worker thread: {e}")))?;
    let mut rx = Some(rx);
    loop {
        // The receiver goes into the GIL-free closure and back (it is Send, not Sync).
        let (got, back) = {
            let r = rx.take().expect("put back every round");
            py.detach(move || (r.recv_timeout(Duration::from_millis(100)), r))
        };
        rx = Some(back);
        match got {
            Ok(Ok(result)) => return result.map_err(py_err),
            Ok(Err(_)) => {
                return Err(TrialforgeError::new_err(
                    "trialforge failed inside (a bug: please report it with what you ran)",
                ))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(TrialforgeError::new_err(
                    "the worker thread ended without an answer",
                ))
            }
        }
    }
}

fn env() -> Environment {
    Environment::default()
}

fn to_json<T: serde::Serialize>(v: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string(v)?)
}

/// Rows (TOP columns, lists as arrays, plus `label` and `split`) into trials; errors name the
/// row and the field.
fn rows_to_trials(rows_json: &str) -> anyhow::Result<Vec<Trial>> {
    let rows: Vec<Value> =
        serde_json::from_str(rows_json).context("the rows are not a JSON list")?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let at = |m: String| anyhow::anyhow!("row {i}: {m}");
        let (mut t, _) =
            trialforge_trial::input::trial_from_json(row).map_err(|e| at(e.to_string()))?;
        t.label = match &row["label"] {
            Value::Null => None,
            v => match v.as_f64() {
                Some(1.0) => Some(Label::Success),
                Some(0.0) => Some(Label::Failure),
                Some(x) if x.is_nan() => None,
                _ => {
                    return Err(at(format!(
                        "field `label`: expected 0, 1 or missing, found {v}"
                    )))
                }
            },
        };
        if let Some(s) = row["split"].as_str() {
            t.split = s.parse::<Split>().map_err(at)?;
        }
        out.push(t);
    }
    Ok(out)
}

/// An options dict (as JSON) whose keys must all be in `known`.
fn options(json: &str, known: &[&str]) -> anyhow::Result<Map<String, Value>> {
    let v: Value = serde_json::from_str(json).context("options are not JSON")?;
    let Value::Object(map) = v else {
        anyhow::bail!("options must be keyword arguments");
    };
    if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
        anyhow::bail!(
            "unknown option `{k}` (expected one of: {})",
            known.join(", ")
        );
    }
    Ok(map)
}

/// Option `k`, if given (and not None), as `T`; `expected` says what it should be, in words.
fn opt<T: serde::de::DeserializeOwned>(
    o: &Map<String, Value>,
    k: &str,
    expected: &str,
) -> anyhow::Result<Option<T>> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .with_context(|| format!("option `{k}`: expected {expected}, found {v}")),
    }
}

fn opt_str(o: &Map<String, Value>, k: &str) -> anyhow::Result<Option<String>> {
    opt(o, k, "a string")
}

fn opt_u64(o: &Map<String, Value>, k: &str) -> anyhow::Result<Option<u64>> {
    opt(o, k, "a whole number")
}

fn opt_f64(o: &Map<String, Value>, k: &str) -> anyhow::Result<Option<f64>> {
    opt(o, k, "a number")
}

fn opt_bool(o: &Map<String, Value>, k: &str) -> anyhow::Result<Option<bool>> {
    opt(o, k, "True or False")
}

/// Every trial of a file or folder as TOP rows (JSON list).
#[pyfunction]
fn read_trials(py: Python<'_>, path: String, format: String) -> PyResult<String> {
    interruptible(py, move || {
        let format: Format = format.parse().map_err(anyhow::Error::msg)?;
        let trials = trialforge_core::data::load_trials(&PathBuf::from(&path), format)?;
        let rows: Vec<Value> = trials
            .iter()
            .map(trialforge_trial::top::row_value)
            .collect();
        to_json(&rows)
    })
}

/// The canonical name of a model (an error for an unknown one).
#[pyfunction]
fn model_name(name: &str) -> PyResult<String> {
    let spec: ModelSpec = name.parse().map_err(TrialforgeError::new_err)?;
    Ok(spec.name())
}

/// The model kind saved in a model folder.
#[pyfunction]
fn saved_model_name(dir: String) -> PyResult<String> {
    let kind = trialforge_predict::registry::saved_kind(&PathBuf::from(&dir))
        .map_err(|e| TrialforgeError::new_err(e.to_string()))?;
    Ok(kind.name().to_string())
}

/// Trains `name` on rows (JSON) and writes the model folder `out`; returns the summary (JSON).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn train(
    py: Python<'_>,
    name: String,
    params_json: String,
    train_rows: String,
    valid_rows: String,
    unlabelled_rows: String,
    out: String,
) -> PyResult<String> {
    interruptible(py, move || {
        let o = options(&params_json, &["seed", "encoder", "admet"])?;
        let spec = TrainSpec {
            model: name.parse().map_err(anyhow::Error::msg)?,
            seed: opt_u64(&o, "seed")?.unwrap_or(0),
            encoder: opt_str(&o, "encoder")?.map(PathBuf::from),
            admet: opt_str(&o, "admet")?.map(PathBuf::from),
        };
        let (train, valid, unlabelled) = (
            rows_to_trials(&train_rows).context("train_df")?,
            rows_to_trials(&valid_rows).context("valid_df")?,
            rows_to_trials(&unlabelled_rows).context("unlabelled_df")?,
        );
        let s = trialforge_core::predict::train_trials(
            &env(),
            &spec,
            &train,
            &valid,
            &unlabelled,
            (
                &format!("a DataFrame of {} rows", train.len()),
                &format!("a DataFrame of {} rows", valid.len()),
            ),
            &PathBuf::from(&out),
            &Silent,
        )?;
        to_json(&s)
    })
}

/// Probabilities of success of rows (JSON) with the model in `dir`.
#[pyfunction]
#[pyo3(signature = (dir, rows, encoder=None))]
fn predict(
    py: Python<'_>,
    dir: String,
    rows: String,
    encoder: Option<String>,
) -> PyResult<Vec<f32>> {
    interruptible(py, move || {
        let trials = rows_to_trials(&rows)?;
        let p = trialforge_core::predict::predict_with(
            &env(),
            &PathBuf::from(&dir),
            encoder.as_deref().map(std::path::Path::new),
            &trials,
            &Silent,
        )?;
        Ok(p.into_iter().map(|x| x.probability).collect())
    })
}

/// PR-AUC, ROC-AUC, F1 and Brier over bootstrap resamples, as `trialforge evaluate` computes them.
#[pyfunction]
fn score(labels: Vec<u8>, scores: Vec<f32>, resamples: usize, seed: u64) -> PyResult<String> {
    if labels.len() != scores.len() || labels.iter().any(|&l| l > 1) {
        return Err(TrialforgeError::new_err(
            "labels must be 0 or 1, one per score",
        ));
    }
    use trialforge_predict::metrics::{bootstrap, bootstrap_indices};
    let b = bootstrap(
        &labels,
        &scores,
        &bootstrap_indices(labels.len(), resamples, seed),
    );
    to_json(&b).map_err(py_err)
}

/// The TOP benchmark; returns the report (JSON).
#[pyfunction]
#[pyo3(signature = (phase, models, resamples, seeds, seed, data=None, encoder=None, available_data=false))]
#[allow(clippy::too_many_arguments)]
fn benchmark_top(
    py: Python<'_>,
    phase: String,
    models: String,
    resamples: usize,
    seeds: usize,
    seed: u64,
    data: Option<String>,
    encoder: Option<String>,
    available_data: bool,
) -> PyResult<String> {
    interruptible(py, move || {
        let req = BenchmarkRequest {
            data: data.map(PathBuf::from),
            phase: phase.parse().map_err(|e: String| anyhow::anyhow!(e))?,
            models: parse_model_list(&models)?,
            resamples,
            seed,
            seeds: seeds.max(1),
            encoder: encoder.map(PathBuf::from),
            available_data,
            predictions: None,
        };
        to_json(&trialforge_core::predict::benchmark_top(
            &env(),
            &req,
            &Silent,
        )?)
    })
}

/// Embeddings of texts: (little-endian f32 bytes, rows, dim), through the embedding cache.
#[pyfunction]
#[pyo3(signature = (texts, encoder=None))]
fn embed(
    py: Python<'_>,
    texts: Vec<String>,
    encoder: Option<String>,
) -> PyResult<(Vec<u8>, usize, usize)> {
    interruptible(py, move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (vectors, dim) = trialforge_core::embed::embed_texts(
            &env(),
            encoder.as_deref().map(std::path::Path::new),
            &refs,
            &Silent,
        )?;
        let mut bytes = Vec::with_capacity(vectors.len() * dim * 4);
        for v in &vectors {
            for x in v {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
        }
        Ok((bytes, vectors.len(), dim))
    })
}

/// Retrieval-reasoning generation; returns the run summary (JSON).
#[pyfunction]
fn generate(
    py: Python<'_>,
    corpus: String,
    n: usize,
    out: String,
    backend: String,
    options_json: String,
) -> PyResult<String> {
    interruptible(py, move || {
        let o = options(
            &options_json,
            &[
                "seed",
                "temperature",
                "k",
                "reasons",
                "max_attempts",
                "min_per_label",
                "plan",
                "llm",
                "encoder",
                "icd",
                "no_gate",
                "conditions_from_examples",
                "response_cache",
                "base_url",
                "model_name",
                "api_key_env",
                "structured_output",
                "timeout",
                "max_retries",
                "concurrency",
                "batch",
                "exclude_split",
            ],
        )?;
        let mut req = GenerateRequest::new(PathBuf::from(&corpus), n, PathBuf::from(&out));
        req.backend = match backend.as_str() {
            "local" => Backend::Local {
                llm: LlmChoice {
                    path: opt_str(&o, "llm")?.map(PathBuf::from),
                    no_requantize: false,
                },
                batch: opt_u64(&o, "batch")?
                    .map_or(trialforge_core::generate::DEFAULT_LOCAL_BATCH, |b| {
                        b as usize
                    }),
            },
            "openai" => Backend::OpenAi(OpenAiBackend {
                base_url: opt_str(&o, "base_url")?
                    .unwrap_or_else(|| "https://api.openai.com/v1".into()),
                model_name: opt_str(&o, "model_name")?,
                api_key_env: opt_str(&o, "api_key_env")?.unwrap_or_else(|| "OPENAI_API_KEY".into()),
                structured_output: opt_str(&o, "structured_output")?
                    .unwrap_or_else(|| "auto".into()),
                timeout: Duration::from_secs(opt_u64(&o, "timeout")?.unwrap_or(120)),
                max_retries: opt_u64(&o, "max_retries")?.unwrap_or(6) as u32,
                concurrency: opt_u64(&o, "concurrency")?.unwrap_or(4) as usize,
                emit_batch: None,
            }),
            other => anyhow::bail!("unknown backend `{other}` (expected local or openai)"),
        };
        if let Some(x) = opt_u64(&o, "seed")? {
            req.seed = x;
        }
        if let Some(x) = opt_f64(&o, "temperature")? {
            req.temperature = x;
        }
        if let Some(x) = opt_u64(&o, "k")? {
            req.k = x as usize;
        }
        if let Some(x) = opt_u64(&o, "reasons")? {
            req.reasons = x as usize;
        }
        if let Some(x) = opt_u64(&o, "max_attempts")? {
            req.max_attempts = x as u32;
        }
        if let Some(x) = opt_u64(&o, "min_per_label")? {
            req.min_per_label = x as usize;
        }
        req.plan = opt_str(&o, "plan")?.map(PathBuf::from);
        req.encoder = opt_str(&o, "encoder")?.map(PathBuf::from);
        req.icd = opt_str(&o, "icd")?.map(PathBuf::from);
        req.response_cache = opt_str(&o, "response_cache")?;
        req.no_gate = opt_bool(&o, "no_gate")?.unwrap_or(false);
        req.conditions_from_examples = opt_bool(&o, "conditions_from_examples")?.unwrap_or(false);
        if let Some(v) = o.get("exclude_split") {
            let names: Vec<String> = serde_json::from_value(v.clone())
                .context("option `exclude_split`: expected a list of split names")?;
            req.exclude_split = names
                .iter()
                .map(|s| s.parse::<Split>().map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<_>>()?;
        }
        to_json(&trialforge_core::generate::generate(&env(), &req, &Silent)?)
    })
}

/// Judges a synthetic set; returns the `analysis.json` content (JSON).
#[pyfunction]
fn analyze(
    py: Python<'_>,
    real: String,
    synthetic: String,
    out: String,
    augment: bool,
    options_json: String,
) -> PyResult<String> {
    interruptible(py, move || {
        let o = options(
            &options_json,
            &["seed", "gallery", "encoder", "icd", "labels", "skip_bad"],
        )?;
        let mut req = AnalyzeRequest::new(
            PathBuf::from(&real),
            PathBuf::from(&synthetic),
            PathBuf::from(&out),
        );
        req.augment = augment;
        if let Some(x) = opt_u64(&o, "seed")? {
            req.seed = x;
        }
        if let Some(x) = opt_u64(&o, "gallery")? {
            req.gallery = x as usize;
        }
        req.encoder = opt_str(&o, "encoder")?.map(PathBuf::from);
        req.icd = opt_str(&o, "icd")?.map(PathBuf::from);
        req.set.labels = opt_str(&o, "labels")?.map(PathBuf::from);
        req.set.skip_bad = opt_bool(&o, "skip_bad")?.unwrap_or(false);
        let outcome = trialforge_core::analyze::analyze(&env(), &req, &Silent)?;
        to_json(&outcome.analysis)
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("TrialforgeError", m.py().get_type::<TrialforgeError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(read_trials, m)?)?;
    m.add_function(wrap_pyfunction!(model_name, m)?)?;
    m.add_function(wrap_pyfunction!(saved_model_name, m)?)?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(predict, m)?)?;
    m.add_function(wrap_pyfunction!(score, m)?)?;
    m.add_function(wrap_pyfunction!(benchmark_top, m)?)?;
    m.add_function(wrap_pyfunction!(embed, m)?)?;
    m.add_function(wrap_pyfunction!(generate, m)?)?;
    m.add_function(wrap_pyfunction!(analyze, m)?)?;
    Ok(())
}
