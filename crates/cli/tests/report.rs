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
        let mut v = serde_json::to_value(&s).unwrap();
        v["provenance"] = serde_json::json!({ "examples": examples });
        out.push_str(&v.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
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
    assert_eq!(pngs.len(), 10, "{pngs:?}");
    for p in pngs {
        let bytes = std::fs::read(p.as_str().unwrap()).unwrap();
        assert_eq!(&bytes[..4], b"\x89PNG");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for id in [
        "fidelity", "tsne", "coverage", "privacy", "labels", "utility",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id}"
        );
    }
    assert_eq!(html.matches("<svg").count(), 10);
    assert!(html.contains("<caption>Real, synthetic, hybrid</caption>"));
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "the page loads nothing from the network"
    );

    // Rendered by a real browser, when there is one.
    let chromium = Path::new("/usr/bin/chromium");
    if chromium.is_file() {
        let shot = tmp.path().join("shot.png");
        let s = Command::new(chromium)
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
                "--window-size=1200,3000",
            ])
            .arg(format!(
                "--user-data-dir={}",
                tmp.path().join("chromium").display()
            ))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("file://{}", out.join("report.html").display()))
            .output()
            .unwrap();
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
