//! The realism gate on the bundled TOP data: every rule passes at least 99 % of held-out real
//! trials, and the junk the local model wrote (quoted in the issue that asked for the gate, and the
//! self-contradictory trial a demo accepted before the contradiction rule) is rejected by the rule
//! named for it.

use std::path::PathBuf;

use trialforge_synth::realism::{build_and_calibrate, GateConfig, RealismGate};
use trialforge_synth::schema::GeneratedTrial;
use trialforge_trial::icd::read_descriptions;
use trialforge_trial::top::ImportOptions;
use trialforge_trial::{import, Format, Split, Trial};

fn data() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/top"))
}

fn top(files: &[&str]) -> Vec<Trial> {
    files
        .iter()
        .flat_map(|f| {
            import::read_all(&data().join(f), Format::Top, ImportOptions::default()).unwrap()
        })
        .collect()
}

#[test]
fn every_rule_passes_99_percent_of_held_out_real_trials() {
    let icd = read_descriptions(&data().join("aux/icd_10_direct_mapping.csv")).unwrap();
    for (reference, heldout) in [
        (
            vec!["phase_I_train.csv", "phase_I_valid.csv"],
            vec!["phase_I_test.csv"],
        ),
        (
            vec![
                "phase_I_train.csv",
                "phase_I_valid.csv",
                "phase_II_valid.csv",
                "phase_III_valid.csv",
            ],
            vec!["phase_I_test.csv", "phase_III_test.csv"],
        ),
    ] {
        let (r, h) = (top(&reference), top(&heldout));
        assert!(h.iter().all(|t| t.split == Split::Test));
        let rr: Vec<&Trial> = r.iter().collect();
        let hh: Vec<&Trial> = h.iter().collect();
        let g = build_and_calibrate(&rr, &hh, &icd, &[], GateConfig::default());
        for t in &hh {
            let v = g.gate.check(&t.protocol, &[]);
            for rej in &v.rejects {
                eprintln!("{} {}: {}", t.id, rej.rule, rej.detail);
            }
        }
        eprintln!("{reference:?} -> {heldout:?}: {:#?}", g.calibration.rules);
        for rule in &g.calibration.rules {
            assert!(
                rule.rate >= 0.99,
                "{}: {:.4} of {} held-out trials pass",
                rule.rule,
                rule.rate,
                rule.trials
            );
        }
        assert!(g.calibration.miscalibrated.is_empty());
    }
}

#[test]
fn the_quoted_smollm2_outputs_are_each_rejected_by_the_rule_named() {
    let icd = read_descriptions(&data().join("aux/icd_10_direct_mapping.csv")).unwrap();
    let reference = top(&["phase_I_train.csv", "phase_I_valid.csv"]);
    let refs: Vec<&Trial> = reference.iter().collect();
    let gate = RealismGate::build(&refs, &icd, &[], GateConfig::default());
    let fixtures = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/smollm2-outputs.jsonl"
    ))
    .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for line in fixtures.lines() {
        let f: serde_json::Value = serde_json::from_str(line).unwrap();
        let rule = f["rule"].as_str().unwrap();
        let g = GeneratedTrial::parse(f["output"].as_str().unwrap()).unwrap();
        let p = g.to_protocol(|_| None);
        let v = gate.check(&p, &[&g.primary_outcome, &g.rationale]);
        let rules: Vec<&str> = v.rejects.iter().map(|r| r.rule.as_str()).collect();
        assert!(
            rules.contains(&rule),
            "{} should be rejected by `{rule}`, got {:?}",
            f["quoted"],
            v.rejects
        );
        seen.insert(rule.to_string());
    }
    assert_eq!(
        seen.len(),
        trialforge_synth::realism::GATE_RULES.len(),
        "every gate rule has a fixture: {seen:?}"
    );
}
