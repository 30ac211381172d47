//! `analyze --augment` end to end on a slice of the bundled TOP phase I data with stand-in synthetic
//! trials: the JSON, the figures, the HTML page's contents, the page rendered by headless Chromium
//! (when `/usr/bin/chromium` is installed, as `scripts/setup.sh` does; required when
//! TRIALFORGE_REQUIRE_CHROMIUM=1, as in CI), and the leakage refusal of `augment`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use trialforge_trial::top::{self, ImportOptions};
use trialforge_trial::{corpus, Source, Split, Trial};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn split(name: &str) -> Vec<Trial> {
    top::read_file(
        &root().join("data/top").join(name),
        ImportOptions::default(),
    )
    .unwrap()
    .trials
}

/// Stand-in synthetic trials: real train trials under synthetic ids, each line with a provenance
/// naming the prompt examples.
fn write_synthetic(path: &Path, trials: &[Trial], examples: &[&str]) {
    let mut out = String::new();
    for (i, t) in trials.iter().enumerate() {
        let mut s = t.clone();
        s.id = format!("TFS-test-{i:05}");
        s.source = Source::Synthetic {
            generator: "test".into(),
            claimed_id: None,
        };
        s.split = Split::None;
        s.protocol.enrollment = Some(40 + i as u32);
        let mut v = serde_json::to_value(&s).unwrap();
        let p = &s.protocol;
        let params = serde_json::json!({"temperature": 0.7, "top_p": 0.95, "top_k": null,
            "repeat_penalty": 1.1, "repeat_last_n": 64, "max_tokens": 900, "seed": i});
        // What `generate` writes: the generated fields, the provenance and the validation scores.
        v["generated"] = serde_json::json!({
            "title": format!("Stand-in trial {i}"),
            "phases": p.phases,
            "conditions": p.conditions,
            "drugs": p.drugs.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
            "inclusion_criteria": p.criteria.inclusion,
            "exclusion_criteria": p.criteria.exclusion,
            "design": {"allocation": "RANDOMIZED", "masking": "NONE", "enrollment": 40 + i},
            "primary_outcome": "dose-limiting toxicities in the first cycle",
            "rationale": "a stand-in for the report test",
        });
        v["provenance"] = serde_json::json!({
            "cell": i, "attempt": 0, "drug": p.drugs.first().map(|d| d.name.clone()).unwrap_or_default(),
            "target_label": s.label, "phase": p.phases.first().copied().unwrap_or(trialforge_trial::Phase::Phase1),
            "examples": examples, "examples_of_drug": examples.len(),
            "reasons": ["a well-tolerated class", "a clear endpoint"],
            "backend": "local", "model": "stand-in", "reasoning_params": params, "generation_params": params,
            "prompt_hash": "00", "prompt_tokens": 10, "completion_tokens": 10,
        });
        v["validation"] = serde_json::json!({"nearest_real": "NCT00000000", "max_cosine_real": 0.8,
            "max_shared_words_with_examples": 3, "max_cosine_synthetic": 0.5, "lexical_share": 0.97});
        out.push_str(&v.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
    // The attempt log beside it, with one rejected attempt as the model wrote it.
    let log = path.with_file_name(
        path.file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".jsonl", ".log.jsonl"),
    );
    let rejected = serde_json::json!({"cell": 0, "attempt": 0, "accepted": false,
        "reject": {"rule": "condition", "detail": "`SYMBOLS`: matches no real condition"},
        "also": [{"rule": "lexical", "detail": "0.640 of its words are known"}],
        "output": "{\"title\": \"The Success of Sunitinib Malate\", \"conditions\": [\"SYMBOLS\"]}",
        "examples": examples, "prompt_tokens": 10, "completion_tokens": 10, "seconds": 1.0});
    std::fs::write(log, format!("{rejected}\n")).unwrap();
}

/// Headless Chromium with the flags this machine needs (no network, no sandbox as root), a fresh
/// profile under `tmp`, a window of `size`.
fn chromium(tmp: &Path, size: &str, extra: &[String]) -> std::process::Output {
    Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--window-size={size}"))
        .arg(format!(
            "--user-data-dir={}",
            tmp.join("chromium").display()
        ))
        .args(extra)
        .output()
        .unwrap()
}

fn trialforge(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trialforge"));
    c.current_dir(root()).env("TRIALFORGE_CACHE", cache);
    c
}

#[test]
fn analyze_writes_a_report_that_renders_and_augment_refuses_leaks() {
    let tmp = tempfile::tempdir().unwrap();
    let train = split("phase_I_train.csv");
    let mut real: Vec<Trial> = train[..150].to_vec();
    real.extend(split("phase_I_valid.csv").into_iter().take(50));
    let test: Vec<Trial> = split("phase_I_test.csv").into_iter().take(100).collect();
    real.extend(test.iter().cloned());
    let real_path = tmp.path().join("real.jsonl");
    corpus::write_jsonl(&real_path, &real).unwrap();
    let synthetic_path = tmp.path().join("synthetic.jsonl");
    write_synthetic(&synthetic_path, &train[150..180], &[&train[0].id]);

    let out = tmp.path().join("report");
    let o = trialforge(&tmp.path().join("cache"))
        .args(["analyze", "--real", real_path.to_str().unwrap()])
        .args(["--synthetic", synthetic_path.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap(), "--augment"])
        .args(["--model", "tfidf-lr", "--seeds", "1", "--resamples", "100"])
        .args(["--within-pairs", "2000", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(a["real_trials"], 300);
    assert_eq!(a["synthetic_trials"], 30);
    assert_eq!(a["similarity"]["real_real"]["n"], 2000);
    assert_eq!(a["tsne"]["synthetic_points"], 30);
    // The stand-ins are train trials left out of `real`: near real ones, but not copies of them.
    assert!(a["privacy"]["synthetic_dcr"]["median"].as_f64().unwrap() > 0.0);
    let lc = &a["label_consistency"];
    assert_eq!(lc["trained_on_real_trials"], 200);
    let auc = lc["synthetic_roc_auc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auc));
    let aug = &a["augment"];
    assert_eq!(aug["conditions"].as_array().unwrap().len(), 3);
    assert_eq!(aug["sweep"].as_array().unwrap().len(), 6);
    assert_eq!(aug["test_trials"], 100);
    assert_eq!(aug["provenance_checked"], true);

    // The files: JSON beside the page, a PNG per figure, and the page holding every section.
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("analysis.json")).unwrap()).unwrap();
    assert_eq!(json["synthetic_trials"], 30);
    let pngs = json["report"]["png"].as_array().unwrap();
    assert_eq!(pngs.len(), 11, "{pngs:?}");
    for p in pngs {
        let bytes = std::fs::read(p.as_str().unwrap()).unwrap();
        assert_eq!(&bytes[..4], b"\x89PNG");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for id in [
        "fidelity",
        "tsne",
        "coverage",
        "privacy",
        "detection",
        "realism",
        "gallery",
        "labels",
        "utility",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id}"
        );
    }
    assert_eq!(html.matches("<svg").count(), 11);
    assert!(html.contains("<caption>Real, synthetic, hybrid</caption>"));
    assert!(
        !html.contains("src=\"http") && !html.contains("<link"),
        "the page loads nothing from the network"
    );
    // The detection and realism figures, also in the JSON.
    let det = &a["detection"];
    let auc = det["real_vs_synthetic"]["detectors"][0]["roc_auc"]
        .as_f64()
        .unwrap();
    assert!((0.0..=1.0).contains(&auc));
    assert_eq!(det["real_vs_synthetic"]["per_side"], 30);
    assert!(det["real_vs_real"]["detectors"][1]["ci95"][1]
        .as_f64()
        .is_some());
    assert_eq!(a["realism"]["synthetic"]["trials"], 30);
    assert_eq!(a["realism"]["heldout_real"]["trials"], 100);
    // The gallery: accepted trials beside their linked examples, and the rejected attempt.
    assert!(html.contains("Accepted: TFS-test-00000"));
    assert!(html.contains(&format!(
        "<a href=\"https://clinicaltrials.gov/study/{0}\">{0}</a>",
        train[0].id
    )));
    assert!(html.contains("Rejected: cell 0 attempt 0, rule `condition`"));
    assert!(html.contains("The Success of Sunitinib Malate"));
    for link in html.split("href=\"").skip(1) {
        assert!(
            link.starts_with('#') || link.starts_with("https://clinicaltrials.gov/study/NCT"),
            "{}",
            &link[..link.len().min(80)]
        );
    }

    // Rendered by a real browser, when there is one.
    if Path::new("/usr/bin/chromium").is_file() {
        let shot = tmp.path().join("shot.png");
        let s = chromium(
            tmp.path(),
            "1200,3000",
            &[
                format!("--screenshot={}", shot.display()),
                format!("file://{}", out.join("report.html").display()),
            ],
        );
        assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
        let img = image::open(&shot).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (1200, 3000));
        // A page with text, tables and plots, not a blank or an error page: many colours, and
        // plenty of dark (text) pixels.
        let mut colours = std::collections::HashSet::new();
        let mut dark = 0usize;
        for p in img.pixels() {
            colours.insert(p.0);
            if p.0.iter().all(|&c| c < 80) {
                dark += 1;
            }
        }
        assert!(colours.len() > 100, "{} colours", colours.len());
        assert!(dark > 10_000, "{dark} dark pixels");

        // The gallery as the browser lays it out: its cards are in the rendered DOM, and the whole
        // page, shot in one tall window, shows their text blocks (the grey of `pre`, used by the
        // gallery's cards alone).
        let chromium_run = |extra: &[String]| chromium(tmp.path(), "1200,14000", extra);
        let page = format!("file://{}", out.join("report.html").display());
        let dom = chromium_run(&["--dump-dom".into(), page.clone()]);
        assert!(dom.status.success());
        let dom = String::from_utf8_lossy(&dom.stdout);
        assert_eq!(
            dom.matches("<article class=\"card\">").count(),
            4,
            "3 accepted, 1 rejected"
        );
        assert!(dom.contains("Rejected: cell 0 attempt 0"));
        let whole = tmp.path().join("whole.png");
        let s = chromium_run(&[format!("--screenshot={}", whole.display()), page]);
        assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
        let img = image::open(&whole).unwrap().to_rgb8();
        let pre = img.pixels().filter(|p| p.0 == [247, 247, 247]).count();
        assert!(pre > 50_000, "{pre} pixels of the gallery's text blocks");
    } else {
        assert!(
            std::env::var_os("TRIALFORGE_REQUIRE_CHROMIUM").is_none(),
            "TRIALFORGE_REQUIRE_CHROMIUM is set but /usr/bin/chromium is missing (run scripts/setup.sh)"
        );
        eprintln!("/usr/bin/chromium not installed: the report was checked structurally only");
    }

    // A synthetic set made from a test trial is refused, naming both.
    let leaky = tmp.path().join("leaky.jsonl");
    write_synthetic(&leaky, &train[150..155], &[&train[1].id, &test[3].id]);
    let o = trialforge(&tmp.path().join("cache"))
        .args(["augment", "--real", real_path.to_str().unwrap()])
        .args(["--synthetic", leaky.to_str().unwrap()])
        .args(["--out", tmp.path().join("aug").to_str().unwrap()])
        .args(["--model", "tfidf-lr", "--seeds", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&test[3].id) && err.contains("TFS-test-00000"),
        "{err}"
    );
    assert!(!tmp.path().join("aug/augment.json").exists());
}

/// A real trial as a legacy `{"clinical_study": ...}` record claiming `claimed` as its NCT id.
fn legacy_record(t: &Trial, claimed: &str) -> Value {
    serde_json::json!({"clinical_study": {
        "id_info": {"nct_id": claimed},
        "brief_title": format!("A trial of {}", t.protocol.drugs.first().map_or("a drug", |d| d.name.as_str())),
        "phase": "Phase 1",
        "condition": t.protocol.conditions,
        "intervention": t.protocol.drugs.iter().map(|d| serde_json::json!({"intervention_type": "Drug", "intervention_name": d.name})).collect::<Vec<_>>(),
        "eligibility": {"criteria": {"textblock": t.protocol.criteria.raw}},
        "overall_status": "Completed",
    }})
}

#[test]
fn analyze_and_augment_take_a_folder_of_legacy_records_with_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let train = split("phase_I_train.csv");
    let mut real: Vec<Trial> = train[..150].to_vec();
    real.extend(split("phase_I_valid.csv").into_iter().take(50));
    let test: Vec<Trial> = split("phase_I_test.csv").into_iter().take(100).collect();
    real.extend(test.iter().cloned());
    let real_path = tmp.path().join("real.jsonl");
    corpus::write_jsonl(&real_path, &real).unwrap();

    let set = tmp.path().join("foreign");
    std::fs::create_dir(&set).unwrap();
    let mut labels = String::from("file,label\n");
    for (i, t) in train[150..170].iter().enumerate() {
        // One record claims the id of a real test trial: a made-up id is no leak.
        let claimed = if i == 0 {
            test[0].id.clone()
        } else {
            format!("NCT9{i:07}")
        };
        let text = serde_json::to_string_pretty(&legacy_record(t, &claimed)).unwrap();
        let (name, body) = match i % 3 {
            0 => (format!("r{i:02}.json"), text),
            1 => (
                format!("r{i:02}.md"),
                format!("Sure! Here it is:\n```json\n{text}\n```"),
            ),
            _ => (format!("r{i:02}.json"), text[..text.len() - 2].to_string()),
        };
        labels.push_str(&format!("{name},{}\n", u8::from(t.label.unwrap())));
        std::fs::write(set.join(name), body).unwrap();
    }
    std::fs::copy(
        root().join("data/top/aux/NCT00000378.xml"),
        set.join("x.xml"),
    )
    .unwrap();
    labels.push_str("x.xml,1\n");
    let labels_path = tmp.path().join("labels.csv");
    std::fs::write(&labels_path, labels).unwrap();

    let out = tmp.path().join("report");
    let o = trialforge(&tmp.path().join("cache"))
        .args(["analyze", "--real", real_path.to_str().unwrap()])
        .args(["--synthetic", set.to_str().unwrap()])
        .args(["--labels", labels_path.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap(), "--model", "tfidf-lr"])
        .args(["--within-pairs", "2000", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(a["synthetic_trials"], 21);
    let notes = a["notes"].to_string();
    assert!(
        notes.contains("13 of 21 records were not valid JSON and were repaired"),
        "{notes}"
    );
    assert!(
        notes.contains("fence 7") && notes.contains("unclosed 6"),
        "{notes}"
    );
    assert!(
        notes
            .contains("1 claim the id of a real trial of this corpus, 1 of them in the test split"),
        "{notes}"
    );
    assert!(a["label_consistency"]["synthetic_roc_auc"]
        .as_f64()
        .is_some());
    assert!(
        a["detection"]["real_vs_synthetic"]["detectors"][0]["roc_auc"]
            .as_f64()
            .is_some()
    );

    // augment takes the folder too; the record claiming a test trial's id is not a leak.
    let o = trialforge(&tmp.path().join("cache"))
        .args(["augment", "--real", real_path.to_str().unwrap()])
        .args(["--synthetic", set.to_str().unwrap()])
        .args(["--labels", labels_path.to_str().unwrap()])
        .args(["--out", tmp.path().join("aug").to_str().unwrap()])
        .args([
            "--model",
            "tfidf-lr",
            "--seeds",
            "1",
            "--resamples",
            "50",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["conditions"][1]["train_synthetic"], 21);
    assert_eq!(r["provenance_checked"], false);
}
