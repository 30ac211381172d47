//! The `trialforge` binary, end to end on the bundled data.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trialforge"))
        .args(args)
        .current_dir(root())
        .env("TRIALFORGE_CACHE", cache)
        .output()
        .expect("run trialforge")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

#[test]
fn data_import_json_prints_the_readme_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        &["data", "import", "--format", "top", "data/top", "--json"],
        tmp.path(),
    );
    let v = json(&out);
    let got: Vec<(String, u64, u64, u64)> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["file"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string();
            (
                name,
                f["rows"].as_u64().unwrap(),
                f["success"].as_u64().unwrap(),
                f["failure"].as_u64().unwrap(),
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
    let want: Vec<(String, u64, u64, u64)> = want
        .iter()
        .map(|(n, r, s, f)| (n.to_string(), *r, *s, *f))
        .collect();
    assert_eq!(got, want);
    assert_eq!(v["total"]["rows"], 3724);
}

#[test]
fn bad_csv_row_fails_by_default_and_is_skipped_only_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(root().join("data/top/phase_I_valid.csv")).unwrap();
    // Corrupt the label of the first data row.
    let bad = src.replacen(",completed,,1,", ",completed,,maybe,", 1);
    assert_ne!(bad, src);
    let p = tmp.path().join("phase_I_valid.csv");
    std::fs::write(&p, bad).unwrap();
    let p = p.to_str().unwrap();

    let out = run(&["data", "import", p], tmp.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("phase_I_valid.csv:")
            && err.contains("field `label`: expected 0 or 1, found `maybe`"),
        "{err}"
    );

    let corpus = tmp.path().join("c.jsonl");
    let out = run(
        &[
            "data",
            "import",
            p,
            "--skip-bad",
            "--json",
            "-o",
            corpus.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let v = json(&out);
    assert_eq!(v["files"][0]["rows"], 116);
    assert_eq!(v["files"][0]["skipped"], 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped:"));
    assert_eq!(
        std::fs::read_to_string(&corpus).unwrap().lines().count(),
        116
    );
}

#[test]
fn missing_file_and_v1_record_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&["data", "import", "no/such.csv"], tmp.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such.csv"));
    let out = run(
        &["data", "import", "data/ctgov-samples/legacy-v1"],
        tmp.path(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("retired ClinicalTrials.gov classic API"));
}

#[test]
fn fetch_ctgov_pages_from_a_local_server_into_importable_jsonl() {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}", server.server_addr().to_ip().unwrap());
    let study: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("data/ctgov-samples/v2/NCT02210780.json")).unwrap(),
    )
    .unwrap();
    std::thread::spawn(move || {
        for (i, req) in server.incoming_requests().enumerate() {
            let mut body = serde_json::json!({"studies": [study.clone(), study.clone()]});
            if i == 0 {
                body["nextPageToken"] = "p2".into();
            }
            let _ = req.respond(tiny_http::Response::from_string(body.to_string()));
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let out_file = tmp.path().join("fetched.jsonl");
    let out = run(
        &[
            "data",
            "fetch",
            "ctgov",
            "--query",
            "dupilumab",
            "--max",
            "3",
            "--page-size",
            "2",
            "--base-url",
            &base,
            "-o",
            out_file.to_str().unwrap(),
            "--json",
        ],
        tmp.path(),
    );
    assert_eq!(json(&out)["studies"], 3);
    let out = run(
        &["data", "import", out_file.to_str().unwrap(), "--json"],
        tmp.path(),
    );
    assert_eq!(json(&out)["total"]["rows"], 3);
}

#[test]
fn search_finds_the_matching_fixture_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "search",
            "--corpus",
            "data/ctgov-samples/v2",
            "dupilumab for atopic dermatitis in adults",
            "-k",
            "3",
            "--json",
        ],
        tmp.path(),
    );
    let v = json(&out);
    let hits = v.as_array().unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0]["id"], "NCT02210780");
    assert!(hits[0]["score"].as_f64().unwrap() > hits[1]["score"].as_f64().unwrap());
    // A second run is served from the embedding cache and gives the same answer.
    let again = json(&run(
        &[
            "search",
            "--corpus",
            "data/ctgov-samples/v2",
            "dupilumab for atopic dermatitis in adults",
            "-k",
            "3",
            "--json",
        ],
        tmp.path(),
    ));
    assert_eq!(again, v);
    let out = run(
        &["embed", "--corpus", "data/ctgov-samples/v2", "--json"],
        tmp.path(),
    );
    assert_eq!(
        json(&out)["encoded"],
        0,
        "everything was cached by the searches"
    );
}

#[test]
fn analyze_flags_a_copied_set_as_memorised() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a");
    // The "synthetic" set is the real set itself: every trial is its own nearest neighbour.
    let v = json(&run(
        &[
            "analyze",
            "--real",
            "data/ctgov-samples/v2",
            "--synthetic",
            "data/ctgov-samples/v2",
            "-o",
            out.to_str().unwrap(),
            "--json",
        ],
        tmp.path(),
    ));
    assert_eq!(v["real_trials"], 10);
    assert_eq!(v["privacy"]["near_copy_share"], 1.0);
    assert_eq!(v["privacy"]["closer_than_real"], true);
    // 8 of 10 are copies of reference trials (2 are held out): the median distance is zero.
    assert!(v["privacy"]["synthetic_dcr"]["median"].as_f64().unwrap() < 1e-5);
    assert_eq!(v["similarity"]["real_real"]["n"], 10_000);
    assert_eq!(v["similarity"]["real_synthetic"]["n"], 1_000);
    assert_eq!(v["coverage_real"], v["coverage_synthetic"]);
    assert!(out.join("analysis.json").is_file());
}

/// The first `n` records of a TOP file, as a TOP file of its own.
fn top_slice(from: &str, skip: usize, n: usize, to: &std::path::Path) {
    let mut r = csv::Reader::from_path(root().join("data/top").join(from)).unwrap();
    let mut w = csv::Writer::from_path(to).unwrap();
    w.write_record(r.headers().unwrap()).unwrap();
    for rec in r.records().skip(skip).take(n) {
        w.write_record(&rec.unwrap()).unwrap();
    }
    w.flush().unwrap();
}

#[test]
fn cladmop_trains_evaluates_and_predicts_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    top_slice("phase_I_train.csv", 0, 60, &p("phase_I_train.csv"));
    top_slice("phase_I_valid.csv", 0, 30, &p("phase_I_valid.csv"));
    top_slice("phase_I_test.csv", 0, 30, &p("phase_I_test.csv"));
    top_slice("phase_II_valid.csv", 0, 30, &p("unlabelled.csv"));
    let s = |p: PathBuf| p.display().to_string();
    let out = run(
        &[
            "train",
            "--model",
            "cladmop-no-grouping",
            "--train",
            &s(p("phase_I_train.csv")),
            "--valid",
            &s(p("phase_I_valid.csv")),
            "--unlabelled",
            &s(p("unlabelled.csv")),
            "-o",
            &s(p("model")),
            "--json",
        ],
        &p("cache"),
    );
    let v = json(&out);
    assert_eq!(v["model"], "cladmop-no-grouping");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(p("model/config.json")).unwrap()).unwrap();
    assert_eq!(config["kind"], "cladmop");
    assert_eq!(config["params"]["ablations"]["no_grouping"], true);
    // 60 + 30 labelled and 30 unlabelled protocols (duplicates removed) were pre-trained on.
    let pretrained = config["report"]["pretrain_trials"].as_u64().unwrap();
    assert!(pretrained > 90 && pretrained <= 120, "{pretrained}");
    assert!(p("model/weights.safetensors").is_file());

    let v = json(&run(
        &[
            "evaluate",
            "--model",
            &s(p("model")),
            "--corpus",
            &s(p("phase_I_test.csv")),
            "--json",
        ],
        &p("cache"),
    ));
    let auc = v["roc_auc"]["mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auc), "{v}");

    let v = json(&run(
        &[
            "predict",
            "--model",
            &s(p("model")),
            &s(p("phase_I_test.csv")),
            "--json",
        ],
        &p("cache"),
    ));
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 30);
    assert!(rows
        .iter()
        .all(|r| (0.0..=1.0).contains(&r["probability"].as_f64().unwrap())));
}

#[test]
fn an_admet_model_without_its_admet_files_says_which_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    top_slice("phase_I_train.csv", 0, 20, &p("train.csv"));
    let s = |p: PathBuf| p.display().to_string();
    let out = run(
        &[
            "train",
            "--model",
            "cladmop-admet",
            "--train",
            &s(p("train.csv")),
            "--admet",
            &s(p("no-admet-here")),
            "-o",
            &s(p("model")),
        ],
        &p("cache"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ADMET data") && err.contains("no-admet-here"),
        "{err}"
    );
    assert!(!p("model").exists(), "nothing written on failure");
}

#[test]
fn cladmop_reads_criteria_through_the_gguf_llm_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    top_slice("phase_I_train.csv", 0, 16, &p("train.csv"));
    top_slice("phase_I_test.csv", 0, 4, &p("test.csv"));
    let s = |p: PathBuf| p.display().to_string();
    let gguf = s(root().join("models/smollm2-135m-instruct/model.gguf"));
    let out = run(
        &[
            "train",
            "--model",
            "cladmop-no-pretrain",
            "--train",
            &s(p("train.csv")),
            "--encoder",
            &gguf,
            "-o",
            &s(p("model")),
            "--json",
        ],
        &p("cache"),
    );
    assert_eq!(json(&out)["model"], "cladmop-no-pretrain");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(p("model/config.json")).unwrap()).unwrap();
    let encoder = config["encoder"].as_str().unwrap();
    assert!(encoder.ends_with(":mean-hidden:256:batched-1"), "{encoder}");
    // 576-d item embeddings, cached under the LLM's id.
    let caches: Vec<String> = std::fs::read_dir(p("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        caches
            .iter()
            .any(|f| f.ends_with(":mean-hidden:256:batched-1.d576.emb")),
        "{caches:?}"
    );

    let v = json(&run(
        &[
            "predict",
            "--model",
            &s(p("model")),
            &s(p("test.csv")),
            "--encoder",
            &gguf,
            "--json",
        ],
        &p("cache"),
    ));
    assert_eq!(v.as_array().unwrap().len(), 4);
    // Without --encoder the default MiniLM is loaded, and the model refuses it.
    let out = run(
        &["predict", "--model", &s(p("model")), &s(p("test.csv"))],
        &p("cache"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trained with encoder"), "{err}");
}

#[test]
fn evaluate_reports_calibration_and_predict_explains_a_registry_record_and_a_top_row() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let top = root().join("data/top");
    json(&run(
        &[
            "train",
            "--model",
            "tfidf-lr",
            "--train",
            &s(top.join("phase_I_train.csv")),
            "--valid",
            &s(top.join("phase_I_valid.csv")),
            "-o",
            &s(p("model")),
            "--json",
        ],
        &p("cache"),
    ));
    // One TOP row that is itself a training trial.
    let train_csv = std::fs::read_to_string(top.join("phase_I_train.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(train_csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let first = reader.records().next().unwrap().unwrap();
    let mut w = csv::Writer::from_path(p("row.csv")).unwrap();
    w.write_record(&header).unwrap();
    w.write_record(&first).unwrap();
    w.flush().unwrap();
    let record = root().join("data/ctgov-samples/v2/NCT00763412.json");

    // Training with a validation split leaves the Platt scaling and F1 threshold beside the model;
    // evaluate reports both and draws the reliability diagram.
    assert!(p("model/calibration.json").is_file());
    let e = json(&run(
        &[
            "evaluate",
            "--model",
            &s(p("model")),
            "--corpus",
            &s(top.join("phase_I_test.csv")),
            "--resamples",
            "5",
            "--reliability",
            &s(p("reliability.svg")),
            "--json",
        ],
        &p("cache"),
    ));
    let c = &e["calibration"];
    assert!(c["ece"]["mean"].as_f64().unwrap() > 0.0, "{e}");
    assert!(
        c["ece_platt"]["mean"].is_f64() && c["f1_valid_threshold"]["mean"].is_f64(),
        "{e}"
    );
    assert_eq!(e["reliability"]["raw"].as_array().unwrap().len(), 10);
    let svg = std::fs::read_to_string(p("reliability.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("observed success rate"));

    for (input, own_id) in [
        (s(record), None),
        (s(p("row.csv")), Some(first[0].to_string())),
    ] {
        let v = json(&run(
            &[
                "predict",
                "--model",
                &s(p("model")),
                "--explain",
                &input,
                "--json",
            ],
            &p("cache"),
        ));
        let e = &v.as_array().unwrap()[0];
        let neighbours = e["neighbours"].as_array().unwrap();
        assert_eq!(neighbours.len(), 5, "{e}");
        let sims: Vec<f64> = neighbours
            .iter()
            .map(|n| n["similarity"].as_f64().unwrap())
            .collect();
        assert!(sims.windows(2).all(|w| w[0] >= w[1]), "{sims:?}");
        assert!(sims.iter().all(|&x| x > 0.0 && x <= 1.0001), "{sims:?}");
        assert!(neighbours.iter().all(|n| n["label"].is_u64()));
        if let Some(id) = &own_id {
            assert!(
                neighbours.iter().all(|n| n["id"] != id.as_str()),
                "not its own neighbour"
            );
        }
        let effects: Vec<f64> = e["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["contribution"].as_f64().unwrap())
            .collect();
        assert!(!effects.is_empty() && effects.len() <= 5);
        assert!(effects.windows(2).all(|w| w[0].abs() >= w[1].abs()));
        assert!(
            effects[0].abs() > 1e-4,
            "leaving an item out moves a tf-idf model's score"
        );
    }
    let out = run(
        &[
            "predict",
            "--model",
            &s(p("model")),
            "--explain",
            &s(p("row.csv")),
        ],
        &p("cache"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("probability of success") && text.contains("nearest training trials"),
        "{text}"
    );
}
