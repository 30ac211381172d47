//! Importers against the bundled TOP files and ClinicalTrials.gov fixtures.

use std::path::PathBuf;

use trialforge_trial::top::{self, ImportOptions};
use trialforge_trial::{ctgov, Counts, Phase, Split};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data")
        .join(rel)
}

#[test]
fn top_files_import_with_readme_counts() {
    let files = top::read_path(&data("top"), ImportOptions::default()).unwrap();
    let got: Vec<(String, Counts)> = files
        .iter()
        .map(|f| {
            (
                f.file.file_name().unwrap().to_string_lossy().into_owned(),
                Counts::of(&f.trials),
            )
        })
        .collect();
    let want = [
        ("phase_III_test.csv", 1146, 859, 287),
        ("phase_III_valid.csv", 344, 229, 115),
        ("phase_II_valid.csv", 446, 208, 238),
        ("phase_I_test.csv", 627, 347, 280),
        ("phase_I_train.csv", 1044, 592, 452),
        ("phase_I_valid.csv", 117, 67, 50),
    ];
    assert_eq!(got.len(), want.len());
    for ((name, c), (wname, rows, s, f)) in got.iter().zip(want) {
        assert_eq!(name, wname);
        assert_eq!((c.rows, c.success, c.failure), (rows, s, f), "{name}");
        assert!(files.iter().all(|f| f.skipped.is_empty()));
    }
    let train = &files[4].trials;
    assert!(train.iter().all(|t| t.split == Split::Train));
    // Every row gets inclusion items, and every row whose text has an exclusion heading gets
    // exclusion items when text follows the heading (about 11% of phase I rows have no exclusion
    // section at all).
    let mut missing = Vec::new();
    for t in files.iter().flat_map(|f| &f.trials) {
        let c = &t.protocol.criteria;
        // Text after an "Exclusion Criteria:" heading (some trials leave the section empty).
        let lower = c.raw.to_lowercase();
        let has_exclusions = lower
            .rfind("exclusion criteria:")
            .is_some_and(|i| !lower[i + "exclusion criteria:".len()..].trim().is_empty());
        if c.inclusion.is_empty() || (has_exclusions && c.exclusion.is_empty()) {
            missing.push(t.id.clone());
        }
    }
    assert!(missing.is_empty(), "criteria not split: {missing:?}");
    // The ICD layout (a list of stringified lists) parses to codes.
    assert!(train.iter().any(|t| t
        .protocol
        .icd_codes
        .iter()
        .any(|c| c.iter().any(|x| x.contains('.')))));
}

#[test]
fn ctgov_v2_fixture_fields() {
    let trials = ctgov::read_path(&data("ctgov-samples/v2")).unwrap();
    assert_eq!(trials.len(), 10);
    let t = trials.iter().find(|t| t.id == "NCT02210780").unwrap();
    assert_eq!(t.protocol.phases, vec![Phase::Phase2]);
    let drugs: Vec<String> = t
        .protocol
        .drugs
        .iter()
        .map(|d| d.name.to_lowercase())
        .collect();
    assert_eq!(drugs, vec!["dupilumab", "placebo"]);
    assert_eq!(t.protocol.conditions, vec!["Atopic Dermatitis"]);
    assert!(!t.protocol.criteria.inclusion.is_empty());
    assert!(!t.protocol.criteria.exclusion.is_empty());
    assert_eq!(t.post_hoc.status.as_deref(), Some("COMPLETED"));
    assert_eq!(t.label, None);
    // Observational studies have no phases; non-drug interventions are not drugs.
    let obs = trials.iter().find(|t| t.id == "NCT03475563").unwrap();
    assert!(obs.protocol.phases.is_empty());
    assert!(obs.protocol.drugs.is_empty());
}

#[test]
fn ctgov_edge_records_with_missing_modules_import() {
    let trials = ctgov::read_path(&data("ctgov-samples/v2-edge")).unwrap();
    assert_eq!(trials.len(), 2);
    let t = trials.iter().find(|t| t.id == "NCT03453554").unwrap();
    assert!(t.protocol.phases.is_empty() && t.protocol.criteria.raw.is_empty());
}

#[test]
fn ctgov_v1_record_is_rejected_clearly() {
    let err = ctgov::read_path(&data("ctgov-samples/legacy-v1/NCT04780763.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("NCT04780763.json"), "{err}");
    assert!(
        err.contains("retired ClinicalTrials.gov classic API (v1"),
        "{err}"
    );
}

#[test]
fn ctgov_list_response_jsonl_and_bad_paths() {
    let dir = tempfile::tempdir().unwrap();
    let study: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data("ctgov-samples/v2/NCT02210780.json")).unwrap(),
    )
    .unwrap();
    let list = serde_json::json!({"studies": [study.clone(), study.clone()], "nextPageToken": "x"});
    let p = dir.path().join("page.json");
    std::fs::write(&p, list.to_string()).unwrap();
    assert_eq!(ctgov::read_path(&p).unwrap().len(), 2);

    let p = dir.path().join("s.jsonl");
    std::fs::write(&p, format!("{study}\n\n{study}\n")).unwrap();
    assert_eq!(ctgov::read_path(&p).unwrap().len(), 2);

    // A wrong type deep inside names the line and the JSON path.
    let mut bad = study.clone();
    bad["protocolSection"]["designModule"]["phases"] = serde_json::json!(["PHASE2", 7]);
    std::fs::write(&p, format!("{study}\n{bad}\n")).unwrap();
    let err = ctgov::read_path(&p).unwrap_err().to_string();
    assert!(
        err.contains("s.jsonl:2: at `protocolSection.designModule.phases[1]`: expected a string, found a number"),
        "{err}"
    );
    let mut bad = study;
    bad["protocolSection"]["identificationModule"]
        .as_object_mut()
        .unwrap()
        .remove("nctId");
    std::fs::write(&p, format!("{bad}\n")).unwrap();
    let err = ctgov::read_path(&p).unwrap_err().to_string();
    assert!(
        err.contains("protocolSection.identificationModule.nctId`: missing"),
        "{err}"
    );

    std::fs::write(&p, "{not json\n").unwrap();
    let err = ctgov::read_path(&p).unwrap_err().to_string();
    assert!(
        err.contains("s.jsonl:1") && err.contains("invalid JSON"),
        "{err}"
    );
}
