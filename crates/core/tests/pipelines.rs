//! The pipelines called as library functions, without the binary: import, train, evaluate,
//! predict and the TOP benchmark with `tfidf-lr` on the bundled phase I files.

use std::path::PathBuf;

use trialforge_core::data::{import, ImportRequest};
use trialforge_core::predict::{
    benchmark_top, evaluate, predict, train, trained_on, BenchmarkRequest, EvaluateRequest,
    PredictRequest, TrainRequest,
};
use trialforge_core::{Environment, Progress};
use trialforge_predict::benchmark::TopPhase;
use trialforge_trial::Format;

fn top(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/top")
        .join(name)
}

/// Counts what the pipelines report, to check progress goes through the trait.
#[derive(Default)]
struct Recorder(std::cell::RefCell<Vec<String>>);

impl Progress for Recorder {
    fn stage(&self, what: &str) {
        self.0.borrow_mut().push(what.to_string());
    }
}

#[test]
fn train_evaluate_predict_and_benchmark_as_functions() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment {
        cache_dir: tmp.path().join("cache"),
        ..Environment::default()
    };
    let corpus = tmp.path().join("test.jsonl");
    let imported = import(
        &ImportRequest {
            paths: vec![top("phase_I_test.csv")],
            format: Format::Top,
            out: Some(corpus.clone()),
            skip_bad: false,
        },
        &trialforge_core::Silent,
    )
    .unwrap();
    assert_eq!(imported.total.rows, 627);

    let model_dir = tmp.path().join("model");
    let progress = Recorder::default();
    let summary = train(
        &env,
        &TrainRequest {
            model: "tfidf-lr".parse().unwrap(),
            train: top("phase_I_train.csv"),
            valid: Some(top("phase_I_valid.csv")),
            unlabelled: None,
            admet: None,
            seed: 0,
            encoder: None,
            out: model_dir.clone(),
        },
        &progress,
    )
    .unwrap();
    assert_eq!(summary.model, "tfidf-lr");
    assert!(progress
        .0
        .borrow()
        .iter()
        .any(|s| s.starts_with("training tfidf-lr")));
    let card = trained_on(&model_dir).expect("trained_on.json beside the weights");
    assert_eq!(card.train_trials, summary.train);
    assert!(card.train_source.ends_with("phase_I_train.csv"));

    let predictions = predict(
        &env,
        &PredictRequest {
            model: model_dir.clone(),
            input: corpus.clone(),
            encoder: None,
        },
        &trialforge_core::Silent,
    )
    .unwrap();
    assert_eq!(predictions.len(), 627);
    assert!(predictions
        .iter()
        .all(|p| (0.0..=1.0).contains(&p.probability)));

    let e = evaluate(
        &env,
        &EvaluateRequest {
            model: model_dir,
            corpus,
            resamples: 5,
            seed: 0,
            encoder: None,
        },
        &trialforge_core::Silent,
    )
    .unwrap();
    assert_eq!(e.trials, 627);
    assert!(
        e.scores.pr_auc.mean > 0.55 && e.scores.pr_auc.mean < 0.9,
        "{e:?}"
    );

    let report = benchmark_top(
        &env,
        &BenchmarkRequest {
            phase: TopPhase::I,
            models: vec!["tfidf-lr".parse().unwrap()],
            resamples: 5,
            ..Default::default()
        },
        &trialforge_core::Silent,
    )
    .unwrap();
    let row = &report.rows[0];
    let scores = row.scores.as_ref().expect("tfidf-lr is scored");
    // The same model, data and seed: the benchmark's test PR-AUC equals evaluate's on the same
    // resamples.
    assert!((scores.pr_auc.mean - e.scores.pr_auc.mean).abs() < 1e-9);
    assert!(
        report.reference.scores.is_some(),
        "HINT's row is scored too"
    );
}
