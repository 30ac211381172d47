//! Outcome models on small slices of the bundled TOP data: training, save/load, the leak guard,
//! and HINT's shipped predictions scored against values computed independently (Python, by hand).

use std::path::PathBuf;

use trialforge_predict::benchmark::{self, examples, predict_trials, BenchmarkOptions, TopPhase};
use trialforge_predict::cladmop::admet::AdmetPretrain;
use trialforge_predict::cladmop::{Ablations, Cladmop, CladmopParams};
use trialforge_predict::embedding::{CachedProtocolEmbedder, EmbedMlp, EmbedMlpParams};
use trialforge_predict::finetune::{EncoderFt, EncoderFtParams};
use trialforge_predict::metrics::Scores;
use trialforge_predict::tfidf::{TfidfLr, TfidfLrParams};
use trialforge_predict::{load_model, ModelKind, ModelSpec, OutcomeModel, ProtocolEmbedder};
use trialforge_trial::top::{self, ImportOptions};
use trialforge_trial::{PostHoc, Protocol, Trial};

fn top_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/top")
}

fn split(name: &str) -> Vec<Trial> {
    top::read_file(&top_dir().join(name), ImportOptions::default())
        .unwrap()
        .trials
}

/// A deterministic stand-in encoder: hashed word counts, unit length. Fast, so the MLP's training
/// path is tested without the real encoder.
struct HashEmbedder;
impl ProtocolEmbedder for HashEmbedder {
    fn id(&self) -> String {
        "hash-64".into()
    }
    fn dim(&self) -> usize {
        64
    }
    fn embed(&self, ps: &[&Protocol]) -> trialforge_predict::Result<Vec<Vec<f32>>> {
        let texts: Vec<String> = ps
            .iter()
            .map(|p| trialforge_trial::render::protocol_text(p))
            .collect();
        self.embed_texts(&texts.iter().map(String::as_str).collect::<Vec<_>>())
    }
    fn embed_texts(&self, texts: &[&str]) -> trialforge_predict::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0f32; 64];
                for w in t.split_whitespace() {
                    let h = w
                        .bytes()
                        .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
                    v[(h % 64) as usize] += 1.0;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.iter().map(|x| x / n).collect()
            })
            .collect())
    }
}

#[test]
fn hint_shipped_predictions_score_as_computed_independently() {
    // AP 0.6355, ROC-AUC 0.5641, F1 0.6626 (phase I); 0.8679, 0.7209, 0.8485 (phase III), computed
    // with a separate Python implementation of sklearn's definitions.
    for (phase, ap, auc, f1) in [
        (TopPhase::I, 0.6355, 0.5641, 0.6626),
        (TopPhase::III, 0.8679, 0.7209, 0.8485),
    ] {
        let report = benchmark::run(
            &BenchmarkOptions {
                data_dir: top_dir(),
                phase,
                models: vec![],
                resamples: 20,
                seed: 0,
                train_seeds: 1,
                available_data: false,
                predictions_dir: None,
            },
            |_, _| unreachable!(),
            |_| {},
        )
        .unwrap();
        assert_eq!(report.reference.status, "ok");
        let s = report.reference.scores.unwrap();
        assert!(
            (s.point.pr_auc - ap).abs() < 5e-4,
            "{phase:?} {}",
            s.point.pr_auc
        );
        assert!(
            (s.point.roc_auc - auc).abs() < 5e-4,
            "{phase:?} {}",
            s.point.roc_auc
        );
        assert!((s.point.f1 - f1).abs() < 5e-4, "{phase:?} {}", s.point.f1);
        assert!(s.roc_auc.std > 0.0 && s.roc_auc.std < 0.1);
    }
}

fn tfidf_report(phase: TopPhase) -> benchmark::BenchmarkReport {
    benchmark::run(
        &BenchmarkOptions {
            data_dir: top_dir(),
            phase,
            models: vec![ModelKind::TfidfLr.into()],
            resamples: 20,
            seed: 0,
            train_seeds: 1,
            available_data: false,
            predictions_dir: None,
        },
        |_, _| Ok(Box::new(TfidfLr::new(TfidfLrParams::default()))),
        |_| {},
    )
    .unwrap()
}

#[test]
fn missing_splits_are_reported_not_skipped() {
    let report = tfidf_report(TopPhase::II);
    let status = &report.rows[0].status;
    assert!(status.starts_with("missing: phase_II_test.csv"), "{status}");
    assert!(report.reference.scores.is_none());
    let report = tfidf_report(TopPhase::III);
    let status = &report.rows[0].status;
    assert!(
        status.starts_with("missing: phase_III_train.csv"),
        "{status}"
    );
    assert_eq!(
        report.reference.status, "ok",
        "HINT's row needs only the test split"
    );
}

fn check_model(model: Box<dyn OutcomeModel + '_>, embedder: Option<&dyn ProtocolEmbedder>) {
    check_model_on(model, embedder, 300, 117, 100)
}

/// Trains on the first `n_train` phase I train trials (`n_valid` valid ones for early stopping)
/// and checks predictions on the first `n_test` test trials.
fn check_model_on(
    mut model: Box<dyn OutcomeModel + '_>,
    embedder: Option<&dyn ProtocolEmbedder>,
    n_train: usize,
    n_valid: usize,
    n_test: usize,
) {
    let train = split("phase_I_train.csv");
    let valid = split("phase_I_valid.csv");
    let mut test = split("phase_I_test.csv");
    let (train, test_slice) = (&train[..n_train], &mut test[..n_test]);
    model
        .fit(&examples(train), &examples(&valid[..n_valid]))
        .unwrap();
    let before = predict_trials(model.as_ref(), test_slice).unwrap();
    assert_eq!(before.len(), n_test);
    assert!(before.iter().all(|p| (0.0..=1.0).contains(p)));
    assert!(
        before.iter().any(|p| (p - before[0]).abs() > 1e-4),
        "not a constant predictor"
    );

    // The leak guard: rewriting every test trial's status and stop reason changes nothing.
    for (i, t) in test_slice.iter_mut().enumerate() {
        t.post_hoc = PostHoc {
            status: Some(
                if i % 2 == 0 {
                    "terminated"
                } else {
                    "completed"
                }
                .into(),
            ),
            why_stopped: Some("lack of efficacy".into()),
        };
    }
    assert_eq!(predict_trials(model.as_ref(), test_slice).unwrap(), before);

    // Save / load round trip: the same predictions, bit for bit.
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let loaded = load_model(dir.path(), embedder).unwrap();
    assert_eq!(loaded.kind(), model.kind());
    assert_eq!(predict_trials(loaded.as_ref(), test_slice).unwrap(), before);

    // Scores on the slice are better than chance for the weakest bar: finite metrics.
    let labels: Vec<u8> = test_slice
        .iter()
        .map(|t| u8::from(t.label.unwrap()))
        .collect();
    let s = Scores::compute(&labels, &before);
    assert!(s.roc_auc.is_finite() && s.pr_auc.is_finite());
}

#[test]
fn tfidf_lr_trains_predicts_and_round_trips() {
    check_model(Box::new(TfidfLr::new(TfidfLrParams::default())), None);
}

#[test]
fn embed_mlp_trains_predicts_and_round_trips() {
    let e = HashEmbedder;
    let params = EmbedMlpParams {
        hidden: 16,
        ..Default::default()
    };
    check_model(Box::new(EmbedMlp::new(params, &e)), Some(&e));
}

/// The fetched MiniLM behind the models' embedding interface, its caches in `cache`.
fn minilm(cache: &std::path::Path) -> (trialforge_encode::BertEncoder, PathBuf) {
    let dir = trialforge_models::require(
        &trialforge_models::default_dir(),
        &trialforge_models::MINILM,
    )
    .expect("the MiniLM model; run `trialforge models fetch` first");
    (
        trialforge_encode::BertEncoder::load(&dir).unwrap(),
        cache.to_path_buf(),
    )
}

#[test]
fn encoder_ft_fine_tunes_the_top_layer_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let (bert, cache_dir) = minilm(tmp.path());
    let e = CachedProtocolEmbedder {
        encoder: &bert,
        cache_dir,
        progress: Box::new(|_, _| {}),
    };
    let params = EncoderFtParams {
        max_epochs: 3,
        ..Default::default()
    };
    check_model_on(Box::new(EncoderFt::new(params, &e)), Some(&e), 60, 30, 30);
    // The frozen states were cached: one file per distinct rendering.
    let files = std::fs::read_dir(tmp.path().join("states"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .count();
    assert!((100..=120).contains(&files), "{files} state files");

    // The layer itself moved, not only the head.
    let train = split("phase_I_train.csv");
    let mut m = EncoderFt::new(
        EncoderFtParams {
            max_epochs: 1,
            ..Default::default()
        },
        &e,
    );
    m.fit(&examples(&train[..40]), &[]).unwrap();
    let out = tempfile::tempdir().unwrap();
    m.save(out.path()).unwrap();
    let saved = candle_core::safetensors::load(
        out.path().join("weights.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let original = bert.top_layer().unwrap();
    let moved = |short: &str| -> f32 {
        (&saved[&format!("layer.{short}")] - &original.tensors[short])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    assert!(moved("ffn_in.weight") > 0.0 && moved("value.weight") > 0.0);
}

#[test]
fn encoder_ft_needs_an_encoder_with_a_top_layer() {
    let train = split("phase_I_valid.csv");
    let mut m = EncoderFt::new(EncoderFtParams::default(), &HashEmbedder);
    let err = m.fit(&examples(&train[..20]), &[]).unwrap_err().to_string();
    assert!(err.contains("has no top layer to fine-tune"), "{err}");
}

#[test]
fn training_is_reproducible_from_the_seed() {
    let train = split("phase_I_valid.csv");
    let run = |seed| {
        let mut p = TfidfLrParams::default();
        p.train.seed = seed;
        let mut m = TfidfLr::new(p);
        m.fit(&examples(&train[..80]), &examples(&train[80..]))
            .unwrap();
        predict_trials(&m, &train[80..]).unwrap()
    };
    assert_eq!(run(1), run(1));
}

#[test]
fn loading_needs_the_same_encoder() {
    struct Other;
    impl ProtocolEmbedder for Other {
        fn id(&self) -> String {
            "other".into()
        }
        fn dim(&self) -> usize {
            64
        }
        fn embed(&self, ps: &[&Protocol]) -> trialforge_predict::Result<Vec<Vec<f32>>> {
            HashEmbedder.embed(ps)
        }
        fn embed_texts(&self, ts: &[&str]) -> trialforge_predict::Result<Vec<Vec<f32>>> {
            HashEmbedder.embed_texts(ts)
        }
    }
    let train = split("phase_I_valid.csv");
    let e = HashEmbedder;
    let mut m = EmbedMlp::new(
        EmbedMlpParams {
            hidden: 8,
            ..Default::default()
        },
        &e,
    );
    m.fit(&examples(&train[..80]), &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path()).unwrap();
    let err = load_model(dir.path(), Some(&Other))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("trained with encoder `hash-64`"), "{err}");
    assert!(load_model(dir.path(), None).is_err());
}

/// A CLaDMoP small enough to train in seconds on the hashed stand-in encoder.
fn small_cladmop(ablations: Ablations, zero_shot: bool, seed: u64) -> CladmopParams {
    let mut p = CladmopParams {
        dim: 16,
        heads: 2,
        groups: 4,
        ablations,
        zero_shot,
        lora_rank: 2,
        ..Default::default()
    }
    .with_seed(seed);
    p.pretrain.max_epochs = 3;
    p.finetune.max_epochs = 4;
    p
}

#[test]
fn cladmop_trains_predicts_and_round_trips_with_each_ablation() {
    let e = HashEmbedder;
    for (ablations, zero_shot) in [
        (Ablations::default(), false),
        (Ablations::default(), true),
        (
            Ablations {
                no_pretrain: true,
                ..Default::default()
            },
            false,
        ),
        (
            Ablations {
                no_grouping: true,
                no_drug: true,
                ..Default::default()
            },
            false,
        ),
    ] {
        let params = small_cladmop(ablations, zero_shot, 0);
        check_model(Box::new(Cladmop::new(params, &e)), Some(&e));
    }
}

#[test]
fn cladmop_with_admet_pretraining_trains_reports_it_and_round_trips() {
    let e = HashEmbedder;
    // The bundled ADMET files, cut to their first lines.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(top_dir().join("aux/ADMET_cooked")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let head: String = text.lines().take(60).map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.path().join(path.file_name().unwrap()), head).unwrap();
    }
    let mut params = small_cladmop(Ablations::default(), false, 0);
    params.admet = Some(AdmetPretrain::new(dir.path().to_path_buf()));
    if let Some(a) = &mut params.admet {
        a.train.max_epochs = 2;
    }
    let mut m = Cladmop::new(params.clone(), &e);
    let train = split("phase_I_valid.csv");
    m.fit(&examples(&train[..60]), &examples(&train[60..]))
        .unwrap();
    let admet = m.report().admet.clone().expect("ADMET pre-training ran");
    assert_eq!(admet.train_molecules, 5 * 60);
    assert_eq!(admet.valid_auc.len(), 5);
    check_model(Box::new(Cladmop::new(params, &e)), Some(&e));
}

#[test]
fn cladmop_pretrains_on_unlabelled_protocols_fine_tunes_only_adapters_and_is_seeded() {
    let e = HashEmbedder;
    let train = split("phase_I_valid.csv");
    let extra = split("phase_II_valid.csv");
    let extra: Vec<&Protocol> = extra.iter().take(150).map(|t| &t.protocol).collect();
    let checkpoints = tempfile::tempdir().unwrap();
    let run = |seed, pretrain_seed| {
        let params =
            small_cladmop(Ablations::default(), false, seed).with_pretrain_seed(pretrain_seed);
        let mut m = Cladmop::new(params, &e).with_checkpoints(checkpoints.path().to_path_buf());
        m.add_unlabelled(&extra);
        m.fit(&examples(&train[..80]), &examples(&train[80..]))
            .unwrap();
        (
            predict_trials(&m, &train[80..]).unwrap(),
            m.report().clone(),
        )
    };
    let (p1, r) = run(3, 0);
    assert!(!r.pretrain_from_checkpoint);
    assert_eq!(p1, run(3, 0).0, "same seeds, same model");
    // Training seeds share the pre-training, yet fine-tune apart (head, adapters, order).
    let (p2, r2) = run(4, 0);
    assert!(
        r2.pretrain_from_checkpoint,
        "seed 4 reads seed 3's pre-training"
    );
    assert_ne!(p1, p2, "another seed, another model");
    let (p3, r3) = run(3, 1);
    assert!(
        !r3.pretrain_from_checkpoint,
        "another pre-training seed pre-trains anew"
    );
    assert_ne!(p1, p3);
    // The pre-training set: 117 labelled + up to 150 unlabelled protocols, duplicates removed.
    assert!(r.pretrain_trials > 117 && r.pretrain_trials <= 267, "{r:?}");
    assert!(r.pretrain_heldout_match_auc.is_some());
    // PEFT: fine-tuning moves a small share of the weights.
    assert!(
        r.trained_in_finetune > 0 && r.trained_in_finetune * 4 < r.total_parameters,
        "{r:?}"
    );
    assert!(r.fusion_macs_grouped > 0.0 && r.fusion_macs_ungrouped > 0.0);
}

#[test]
fn pair_matching_learns_which_drugs_go_with_which_criteria() {
    // Each drug appears with its own kind of criteria: pre-training must tell matched pairs from
    // swapped ones on held-out protocols far above chance.
    let e = HashEmbedder;
    let template = split("phase_I_valid.csv").remove(0);
    let kinds = [
        ("CCO", "alcohol use disorder with liver disease"),
        ("c1ccccc1N", "metastatic melanoma after immunotherapy"),
        (
            "CC(=O)Oc1ccccc1C(=O)O",
            "stable angina and prior myocardial infarction",
        ),
        (
            "CN1CCC[C@H]1c1cccnc1",
            "smokers wishing to quit within a month",
        ),
    ];
    let mut trials = Vec::new();
    for i in 0..240 {
        let (smiles, topic) = kinds[i % kinds.len()];
        let mut t = template.clone();
        t.id = format!("NCT9{i:07}");
        t.protocol.title = format!("Study {i}");
        t.protocol.criteria.inclusion =
            vec![format!("patients with {topic}"), format!("cohort {i}")];
        t.protocol.criteria.exclusion = vec![format!("no {topic} treatment before")];
        t.protocol.drugs = vec![trialforge_trial::Drug {
            name: format!("drug {}", i % kinds.len()),
            smiles: Some(smiles.into()),
        }];
        trials.push(t);
    }
    let mut p = small_cladmop(Ablations::default(), true, 1);
    p.pretrain.max_epochs = 30;
    p.pretrain.patience = 30;
    p.pretrain.learning_rate = 3e-3;
    p.hard_negatives = 0.0;
    let mut m = Cladmop::new(p, &e);
    m.fit(&examples(&trials), &[]).unwrap();
    let auc = m.report().pretrain_heldout_match_auc.unwrap();
    assert!(auc > 0.9, "held-out pair-matching AUC {auc}");
}

#[test]
fn model_names_carry_ablations() {
    let s: ModelSpec = "cladmop-no-grouping-no-drug".parse().unwrap();
    assert_eq!(s.kind, ModelKind::Cladmop);
    assert!(s.ablations.no_grouping && s.ablations.no_drug && !s.ablations.no_pretrain);
    assert_eq!(s.name(), "cladmop-no-grouping-no-drug");
    assert_eq!(
        "cladmop-zero-shot".parse::<ModelSpec>().unwrap().kind,
        ModelKind::CladmopZeroShot
    );
    assert!("cladmop-zero-shot-no-pretrain"
        .parse::<ModelSpec>()
        .is_err());
    assert!("cladmop-no-such".parse::<ModelSpec>().is_err());
    let s: ModelSpec = "cladmop-zero-shot-no-grouping-admet".parse().unwrap();
    assert!(s.admet && s.ablations.no_grouping && s.kind == ModelKind::CladmopZeroShot);
    assert_eq!(s.name(), "cladmop-zero-shot-no-grouping-admet");
    assert!("cladmop-no-drug-admet".parse::<ModelSpec>().is_err());
    assert!("tfidf-lr-no-drug".parse::<ModelSpec>().is_err());
    let s: ModelSpec = "cladmop-no-grouping-x5".parse().unwrap();
    assert!(s.seeds == 5 && s.ablations.no_grouping && s.kind == ModelKind::Cladmop);
    assert_eq!(s.name(), "cladmop-no-grouping-x5");
    assert_eq!(s.member().name(), "cladmop-no-grouping");
    assert_eq!("stack".parse::<ModelSpec>().unwrap().kind, ModelKind::Stack);
    let s: ModelSpec = "stack-x3".parse().unwrap();
    assert!(s.seeds == 3 && s.kind == ModelKind::Stack);
    assert_eq!(
        (s.name().as_str(), s.member().name().as_str()),
        ("stack-x3", "stack")
    );
    for bad in ["stack-x1", "cladmop-x1", "cladmop-x0", "cladmop-x99"] {
        assert!(bad.parse::<ModelSpec>().is_err(), "{bad}");
    }
    let list = trialforge_predict::parse_model_list("all,stack,tfidf-lr").unwrap();
    let names: Vec<String> = list.iter().map(ModelSpec::name).collect();
    assert_eq!(
        names,
        [
            "tfidf-lr",
            "embed-mlp",
            "cladmop",
            "cladmop-zero-shot",
            "stack"
        ],
        "each model once"
    );
    // Member 0 is the single model of the seed; no two benchmark seeds share another member.
    assert_eq!(ModelSpec::member_seed(3, 0), 3);
    let members: std::collections::HashSet<u64> = (0..100u64)
        .flat_map(|seed| (0..5).map(move |k| ModelSpec::member_seed(seed, k)))
        .collect();
    assert_eq!(members.len(), 500);
}

#[test]
fn a_seed_ensemble_and_a_stack_train_predict_and_round_trip() {
    use trialforge_predict::combine::{Ensemble, Stack};
    let e = HashEmbedder;
    let cladmop = |seed| -> Box<dyn OutcomeModel + '_> {
        Box::new(Cladmop::new(
            small_cladmop(Ablations::default(), false, seed),
            &e,
        ))
    };
    let ensemble = Ensemble::new(vec![
        ("cladmop".into(), cladmop(1)),
        ("cladmop".into(), cladmop(2)),
    ]);
    check_model(Box::new(ensemble), Some(&e));
    let stack = Stack::new(vec![
        (
            "tfidf-lr".into(),
            Box::new(TfidfLr::new(TfidfLrParams::default())) as Box<dyn OutcomeModel>,
        ),
        (
            "embed-mlp".into(),
            Box::new(EmbedMlp::new(EmbedMlpParams::default(), &e)),
        ),
        ("cladmop".into(), cladmop(1)),
    ]);
    check_model(Box::new(stack), Some(&e));
}

#[test]
fn a_combined_model_needs_the_encoder_only_when_a_member_does() {
    use trialforge_predict::combine::{Ensemble, Stack};
    use trialforge_predict::registry::saved_needs_encoder;
    let e = HashEmbedder;
    let train = split("phase_I_valid.csv");
    let (train, valid) = (examples(&train[..80]), examples(&train[80..]));
    let tfidf = || Box::new(TfidfLr::new(TfidfLrParams::default())) as Box<dyn OutcomeModel>;
    let dir = tempfile::tempdir().unwrap();
    let mut ensemble = Ensemble::new(vec![
        ("tfidf-lr".into(), tfidf()),
        ("tfidf-lr".into(), tfidf()),
    ]);
    ensemble.fit(&train, &valid).unwrap();
    ensemble.save(&dir.path().join("ensemble")).unwrap();
    assert!(!saved_needs_encoder(&dir.path().join("ensemble")).unwrap());
    assert!(load_model(&dir.path().join("ensemble"), None).is_ok());
    let mut stack = Stack::new(vec![
        ("tfidf-lr".into(), tfidf()),
        (
            "embed-mlp".into(),
            Box::new(EmbedMlp::new(EmbedMlpParams::default(), &e)),
        ),
    ]);
    stack.fit(&train, &valid).unwrap();
    stack.save(&dir.path().join("stack")).unwrap();
    assert!(saved_needs_encoder(&dir.path().join("stack")).unwrap());
}

#[test]
fn the_stack_weights_come_from_validation_and_an_ensemble_averages_its_members() {
    use trialforge_predict::combine::{Ensemble, Stack};
    let train = split("phase_I_train.csv");
    let valid = split("phase_I_valid.csv");
    let test = split("phase_I_test.csv");
    let (train, test) = (&train[..300], &test[..100]);
    let fitted = |l2| {
        let mut m = TfidfLr::new(TfidfLrParams {
            l2_grid: vec![l2],
            ..Default::default()
        });
        m.fit(&examples(train), &examples(&valid)).unwrap();
        m
    };
    let (a, b) = (fitted(1e-4), fitted(1e-1));
    let (pa, pb) = (
        predict_trials(&a, test).unwrap(),
        predict_trials(&b, test).unwrap(),
    );
    let ensemble_members: Vec<(String, Box<dyn OutcomeModel>)> = vec![
        ("a".into(), Box::new(fitted(1e-4)) as Box<dyn OutcomeModel>),
        ("b".into(), Box::new(fitted(1e-1))),
    ];
    let mean = predict_trials(&Ensemble::new(ensemble_members), test).unwrap();
    for ((m, x), y) in mean.iter().zip(&pa).zip(&pb) {
        assert!((m - (x + y) / 2.0).abs() < 1e-6);
    }
    let stack = Stack::from_trained(
        vec![
            ("a".into(), Box::new(a) as Box<dyn OutcomeModel>),
            ("b".into(), Box::new(b)),
        ],
        &examples(&valid),
    )
    .unwrap();
    let w = stack.combiner().unwrap();
    assert_eq!(w.weights.len(), 2);
    assert!(w.weights.iter().all(|w| w.is_finite()));
    assert!(
        Stack::from_trained(
            vec![("a".into(), Box::new(fitted(1e-2)) as Box<dyn OutcomeModel>)],
            &[]
        )
        .is_err(),
        "no validation split, no weights"
    );
}

#[test]
fn phase_three_on_the_available_data_keeps_test_trials_and_its_valid_split_out() {
    let report = benchmark::run(
        &BenchmarkOptions {
            data_dir: top_dir(),
            phase: TopPhase::III,
            models: vec![ModelKind::TfidfLr.into()],
            resamples: 5,
            seed: 0,
            train_seeds: 1,
            available_data: true,
            predictions_dir: None,
        },
        |_, _| Ok(Box::new(TfidfLr::new(TfidfLrParams::default()))),
        |_| {},
    )
    .unwrap();
    assert_eq!(report.protocol, benchmark::BenchmarkProtocol::AvailableData);
    assert_eq!(report.rows[0].status, "ok");
    assert_eq!(report.reference.status, "ok");
    // Phase I train + valid and phase II valid, minus any test trial of any phase; the phase III
    // valid split stays apart for model selection.
    let test_ids: std::collections::HashSet<String> = ["phase_I_test.csv", "phase_III_test.csv"]
        .iter()
        .flat_map(|f| split(f).into_iter().map(|t| t.id))
        .collect();
    let iii_valid: std::collections::HashSet<String> = split("phase_III_valid.csv")
        .into_iter()
        .map(|t| t.id)
        .collect();
    let mut expected = std::collections::HashSet::new();
    for f in [
        "phase_I_train.csv",
        "phase_I_valid.csv",
        "phase_II_valid.csv",
    ] {
        for t in split(f) {
            if t.label.is_some() && !test_ids.contains(&t.id) && !iii_valid.contains(&t.id) {
                expected.insert(t.id);
            }
        }
    }
    assert_eq!(report.splits[0].rows, Some(expected.len()));
    assert!(report.splits[0].file.starts_with("available data"));
    let calibration = report.rows[0].calibration.as_ref().unwrap();
    assert!(calibration.ece_platt.is_some() && calibration.threshold.is_some());
    assert!(report.new_disease_trials.is_some_and(|n| n > 0));
    assert!(report.rows[0].new_disease.is_some());
}

/// What moved `cladmop`'s seed-0 figures between two runs of the same command (0.664 and 0.677
/// PR-AUC) was the candle-era encoder: its vectors depended on the padding of the batch a text was
/// cached in, so the embedding cache's history changed the inputs, and training amplified that.
/// Here the same seed must give the same predictions, to the bit, whether the cache starts empty or
/// was filled in other batches and order, and whether other models (an MLP, the zero-shot score,
/// which leaves the pre-training checkpoint behind) trained first in the same process.
#[test]
fn a_seeds_cladmop_does_not_depend_on_the_caches_or_on_the_models_trained_before_it() {
    use trialforge_predict::cladmop::features::{featurise, FeatureLimits};
    let tmp = tempfile::tempdir().unwrap();
    let (bert, _) = minilm(tmp.path());
    let labelled = split("phase_I_valid.csv");
    let (train, valid) = labelled.split_at(90);
    let test = split("phase_II_valid.csv");
    let test = &test[..60];
    let params = |zero_shot| {
        let mut p = small_cladmop(Ablations::default(), zero_shot, 7);
        p.pretrain.max_epochs = 2;
        p.finetune.max_epochs = 3;
        p
    };
    let run = |cache: &std::path::Path, others_first: bool| {
        let e = CachedProtocolEmbedder {
            encoder: &bert,
            cache_dir: cache.to_path_buf(),
            progress: Box::new(|_, _| {}),
        };
        let checkpoints = cache.join("checkpoints");
        if others_first {
            // The test trials' items first, three trials a batch, last trial first.
            let ps: Vec<&Protocol> = test.iter().rev().map(|t| &t.protocol).collect();
            for chunk in ps.chunks(3) {
                featurise(chunk, &e, &FeatureLimits::default()).unwrap();
            }
            let mut mlp = EmbedMlp::new(EmbedMlpParams::default(), &e);
            mlp.fit(&examples(train), &examples(valid)).unwrap();
            let mut zero_shot =
                Cladmop::new(params(true), &e).with_checkpoints(checkpoints.clone());
            zero_shot.fit(&examples(train), &examples(valid)).unwrap();
        }
        let mut m = Cladmop::new(params(false), &e).with_checkpoints(checkpoints);
        m.fit(&examples(train), &examples(valid)).unwrap();
        (
            predict_trials(&m, test).unwrap(),
            m.report().pretrain_from_checkpoint,
        )
    };
    let (cold, from_checkpoint) = run(&tmp.path().join("a"), false);
    assert!(!from_checkpoint);
    let (warm, from_checkpoint) = run(&tmp.path().join("a"), false);
    assert!(
        from_checkpoint,
        "the second run reads the first one's checkpoint"
    );
    assert_eq!(cold, warm, "a warm cache and a checkpoint change nothing");
    let (after_others, from_checkpoint) = run(&tmp.path().join("b"), true);
    assert!(from_checkpoint, "the zero-shot model left the checkpoint");
    assert_eq!(cold, after_others, "nor do other models trained first");
}
