//! `augment` on slices of the bundled TOP phase I data, with real trials standing in for synthetic
//! ones: the leakage refusal, the shape of every experiment, and that the numbers respond to the
//! data (a "synthetic" set with flipped labels trains a worse model than the real one).

use std::path::PathBuf;

use trialforge_predict::augment::{self, AugmentData, AugmentOptions, SyntheticOrigin};
use trialforge_predict::tfidf::{TfidfLr, TfidfLrParams};
use trialforge_predict::OutcomeModel;
use trialforge_trial::top::{self, ImportOptions};
use trialforge_trial::{Label, Source, Split, Trial};

fn split(name: &str) -> Vec<Trial> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/top");
    top::read_file(&dir.join(name), ImportOptions::default())
        .unwrap()
        .trials
}

fn as_synthetic(trials: &[Trial], flip: bool) -> Vec<Trial> {
    trials
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut s = t.clone();
            s.id = format!("TFS-test-{i:05}");
            s.source = Source::Synthetic {
                generator: "test".into(),
                claimed_id: None,
            };
            s.split = Split::None;
            if flip {
                s.label = t.label.map(|l| match l {
                    Label::Success => Label::Failure,
                    Label::Failure => Label::Success,
                });
            }
            s
        })
        .collect()
}

fn tfidf(seed: u64) -> trialforge_predict::Result<Box<dyn OutcomeModel>> {
    let mut p = TfidfLrParams::default();
    p.train.seed = seed;
    Ok(Box::new(TfidfLr::new(p)))
}

#[test]
fn refuses_a_synthetic_set_made_from_test_trials_and_names_them() {
    let test = split("phase_I_test.csv");
    let train = split("phase_I_train.csv");
    let synthetic = as_synthetic(&train[..20], false);
    let mut origins: Vec<SyntheticOrigin> = synthetic
        .iter()
        .map(|s| SyntheticOrigin {
            id: s.id.clone(),
            examples: Some(vec![train[0].id.clone()]),
        })
        .collect();
    assert!(augment::check_leakage(&origins, &test).is_ok());
    origins[3].examples = Some(vec![train[1].id.clone(), test[7].id.clone()]);
    let err = augment::check_leakage(&origins, &test)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&origins[3].id) && err.contains(&test[7].id),
        "{err}"
    );

    let data = AugmentData {
        train: &train[..50],
        valid: &[],
        test: &test,
        synthetic: &synthetic,
        origins: &origins,
    };
    let refused = augment::run("tfidf-lr", &data, &AugmentOptions::default(), tfidf, |_| {});
    assert!(refused.unwrap_err().to_string().contains(&test[7].id));

    // A synthetic trial that carries a test trial's id is refused too.
    let origins = vec![SyntheticOrigin {
        id: test[0].id.clone(),
        examples: None,
    }];
    assert!(augment::check_leakage(&origins, &test).is_err());
}

#[test]
fn every_experiment_runs_and_responds_to_the_labels() {
    let train = split("phase_I_train.csv");
    let valid = split("phase_I_valid.csv");
    let test = split("phase_I_test.csv");
    let real = &train[..400];
    let flipped = as_synthetic(&train[400..550], true);
    let origins: Vec<SyntheticOrigin> = flipped
        .iter()
        .map(|s| SyntheticOrigin {
            id: s.id.clone(),
            examples: Some(vec![train[0].id.clone()]),
        })
        .collect();
    let data = AugmentData {
        train: real,
        valid: &valid[..100],
        test: &test,
        synthetic: &flipped,
        origins: &origins,
    };
    let opts = AugmentOptions {
        seeds: vec![0, 1],
        resamples: 200,
        ..Default::default()
    };
    let mut steps = 0;
    let r = augment::run("tfidf-lr", &data, &opts, tfidf, |_| steps += 1).unwrap();
    assert_eq!(steps, 2 * (3 + 6));
    assert!(r.provenance_checked);
    let names: Vec<&str> = r.conditions.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["real", "synthetic", "hybrid"]);
    assert_eq!(
        (r.conditions[2].train_real, r.conditions[2].train_synthetic),
        (400, 150)
    );
    // Sweep at the smaller set's size, 150: 0, 30, 60, 90, 120, 150 synthetic.
    assert_eq!(r.sweep_train_size, 150);
    let counts: Vec<(usize, usize)> = r
        .sweep
        .iter()
        .map(|c| (c.train_real, c.train_synthetic))
        .collect();
    assert_eq!(
        counts,
        [(150, 0), (120, 30), (90, 60), (60, 90), (30, 120), (0, 150)]
    );
    assert!(r.conditions.iter().all(|c| c.per_seed.len() == 2));
    // Flipped labels teach the opposite: worse than chance, and worse than real.
    let (real_auc, syn_auc) = (r.conditions[0].roc_auc.mean, r.conditions[1].roc_auc.mean);
    assert!(
        syn_auc < 0.5 && syn_auc < real_auc,
        "real {real_auc}, flipped synthetic {syn_auc}"
    );
    let t = r.hybrid_vs_real.as_ref().unwrap();
    assert!(t.ci95[0] <= t.difference && t.difference <= t.ci95[1]);
    assert!((0.0..=1.0).contains(&t.p_value));

    // Generalization: test trials none of whose drugs the synthetic set uses, counted by hand.
    let drugs: std::collections::HashSet<String> = flipped
        .iter()
        .flat_map(|t| {
            t.protocol
                .drugs
                .iter()
                .map(|d| d.name.trim().to_lowercase())
        })
        .collect();
    let unseen = test
        .iter()
        .filter(|t| {
            !t.protocol
                .drugs
                .iter()
                .any(|d| drugs.contains(&d.name.trim().to_lowercase()))
        })
        .count();
    assert_eq!(r.generalization.test_trials, unseen);
    assert!(unseen > 0 && unseen < test.len());
}
