//! Importers against the bundled TOP files and ClinicalTrials.gov fixtures.

use std::path::PathBuf;

use trialforge_trial::top::{self, ImportOptions};
use trialforge_trial::{ctgov, import, Counts, Format, Label, Phase, Source, Split};

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

/// The bundled legacy XML record as the JSON form (xmltodict's shape) that foreign sets use.
fn legacy_json() -> serde_json::Value {
    serde_json::json!({"clinical_study": {
        "id_info": {"nct_id": "NCT09999999"},
        "brief_title": "A made-up trial of sertraline",
        "overall_status": "Terminated",
        "why_stopped": "Lack of efficacy",
        "phase": "Phase 2/Phase 3",
        "enrollment": {"@type": "Anticipated", "#text": "120"},
        "condition": "Depression",
        "intervention": [
            {"intervention_type": "Drug", "intervention_name": "Sertraline"},
            {"intervention_type": "Behavioral", "intervention_name": "Counselling"}
        ],
        "eligibility": {"criteria": {"textblock": "Inclusion Criteria:\n- adults with major depression\nExclusion Criteria:\n- psychotic features"}}
    }})
}

#[test]
fn legacy_xml_record_fields() {
    let r = trialforge_trial::legacy::read_file(&data("top/aux/NCT00000378.xml")).unwrap();
    let t = r.trial;
    assert!(r.repairs.is_empty());
    assert_eq!(t.id, "NCT00000378");
    assert_eq!(
        t.protocol.title,
        "Antidepressant Treatment of Melancholia in Late :Ife"
    );
    assert_eq!(t.protocol.phases, vec![Phase::Phase4]);
    assert_eq!(t.protocol.conditions, vec!["Depression", "Melancholia"]);
    let drugs: Vec<&str> = t.protocol.drugs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(drugs, ["Sertraline", "Nortriptyline"]);
    assert_eq!(t.protocol.enrollment, Some(110));
    assert!(!t.protocol.criteria.inclusion.is_empty() && !t.protocol.criteria.exclusion.is_empty());
    assert!(
        t.protocol
            .criteria
            .exclusion
            .iter()
            .any(|i| i.contains("Psychotic or atypical subtype")),
        "{:?}",
        t.protocol.criteria.exclusion
    );
    // Status is post-hoc: kept apart from the protocol.
    assert_eq!(t.post_hoc.status.as_deref(), Some("Completed"));
    // Detected by extension through the one import entry point.
    let all = import::read_all(
        &data("top/aux/NCT00000378.xml"),
        Format::Auto,
        ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(all.len(), 1);
}

#[test]
fn legacy_json_records_are_repaired_counted_and_kept_apart_from_real_ids() {
    use trialforge_trial::legacy::read_foreign_set;
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    std::fs::create_dir(&set).unwrap();
    let good = legacy_json().to_string();
    std::fs::write(set.join("a.json"), &good).unwrap();
    // As LLM output often comes: prose, a fence, a trailing comma, and the end cut off.
    let pretty = serde_json::to_string_pretty(&legacy_json()).unwrap();
    std::fs::write(
        set.join("b.md"),
        format!(
            "Here is the trial:\n```json\n{}\n```\nLet me know!",
            pretty.replacen("\"NCT09999999\"", "\"NCT09999999\",", 1)
        ),
    )
    .unwrap();
    let cut = &good[..good.len() - 3];
    std::fs::write(set.join("c.json"), cut).unwrap();
    std::fs::copy(data("top/aux/NCT00000378.xml"), set.join("d.xml")).unwrap();
    std::fs::write(
        set.join("e.json"),
        "{\"clinical_study\": {\"phase\": nonsense}}",
    )
    .unwrap();
    std::fs::write(
        set.join("labels.csv"),
        "file,label\na.json,1\nb.md,0\nd.xml,1\nz.json,0\n",
    )
    .unwrap();

    // A record that no repair saves stops the import, naming its file; --skip-bad goes on.
    let err = read_foreign_set(&set, Some(&set.join("labels.csv")), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("e.json") && err.contains("invalid JSON"),
        "{err}"
    );
    let s = read_foreign_set(&set, Some(&set.join("labels.csv")), true).unwrap();
    assert_eq!(s.trials.len(), 4);
    assert_eq!(s.skipped.len(), 1);
    assert_eq!(s.repaired_records, 2);
    assert_eq!(s.repaired.get("fence"), Some(&1));
    assert_eq!(s.repaired.get("trailing-comma"), Some(&1));
    assert_eq!(s.repaired.get("unclosed"), Some(&1));
    assert_eq!(s.unlabelled, vec!["c.json"]);
    assert_eq!(s.labels_without_record, vec!["z.json"]);
    let a = &s.trials[0];
    // Made-up NCT ids are never a record's id: no collision with a real trial, no false leak.
    assert_eq!(a.id, "EXT-a.json");
    match &a.source {
        Source::Synthetic { claimed_id, .. } => {
            assert_eq!(claimed_id.as_deref(), Some("NCT09999999"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.label, Some(Label::Success));
    assert_eq!(a.protocol.phases, vec![Phase::Phase2, Phase::Phase3]);
    assert_eq!(a.protocol.enrollment, Some(120));
    assert_eq!(
        a.protocol.drugs.len(),
        1,
        "behavioural interventions are not drugs"
    );
    assert_eq!(a.post_hoc.status.as_deref(), Some("Terminated"));
    assert_eq!(a.post_hoc.why_stopped.as_deref(), Some("Lack of efficacy"));
    let b = &s.trials[1];
    assert_eq!((b.id.as_str(), b.label), ("EXT-b.md", Some(Label::Failure)));
    assert_eq!(b.protocol.conditions, vec!["Depression"]);
    assert_eq!(s.trials[3].id, "EXT-d.xml");

    // Labels files are checked line by line.
    std::fs::write(set.join("bad.csv"), "file,label\na.json,2\n").unwrap();
    let err = read_foreign_set(&set, Some(&set.join("bad.csv")), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.csv:2") && err.contains("0 or 1"), "{err}");
    // The folder is recognised as legacy records by the import entry point.
    assert_eq!(import::detect(&set).unwrap(), Format::Legacy);
}
