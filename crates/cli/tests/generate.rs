//! `trialforge generate` with the local model: a real kill (SIGKILL) mid-run, then the same command
//! again. Nothing lost, nothing duplicated, no test-split trial in any prompt, and the output exports
//! to the TOP CSV schema.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use trialforge_trial::top::{self, ImportOptions};
use trialforge_trial::{corpus, Split};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn killed_run_resumes_without_loss_or_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    // A small corpus: every phase I trial of one drug, from all three splits.
    let mut trials = Vec::new();
    for f in ["phase_I_train.csv", "phase_I_valid.csv", "phase_I_test.csv"] {
        let imp =
            top::read_file(&root().join("data/top").join(f), ImportOptions::default()).unwrap();
        trials.extend(imp.trials.into_iter().filter(|t| {
            t.protocol
                .drugs
                .iter()
                .any(|d| d.name.eq_ignore_ascii_case("lenalidomide"))
        }));
    }
    let test_ids: HashSet<String> = trials
        .iter()
        .filter(|t| t.split == Split::Test)
        .map(|t| t.id.clone())
        .collect();
    assert!(test_ids.len() >= 5);
    let corpus_path = tmp.path().join("corpus.jsonl");
    corpus::write_jsonl(&corpus_path, &trials).unwrap();
    let plan = tmp.path().join("plan.jsonl");
    std::fs::write(
        &plan,
        "{\"drug\":\"lenalidomide\",\"label\":1,\"phase\":\"PHASE1\"}\n{\"drug\":\"lenalidomide\",\"label\":0,\"phase\":\"PHASE1\"}",
    )
    .unwrap();
    let out = tmp.path().join("synth.jsonl");
    let log = tmp.path().join("synth.log.jsonl");
    let cmd = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_trialforge"));
        c.args([
            "generate",
            "--corpus",
            corpus_path.to_str().unwrap(),
            "--plan",
            plan.to_str().unwrap(),
        ])
        .args(["-o", out.to_str().unwrap(), "--max-attempts", "2", "--json"])
        .current_dir(root())
        .env("TRIALFORGE_CACHE", tmp.path().join("cache"));
        c
    };

    // First run: kill it as soon as one attempt is on record.
    let mut child = cmd()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while lines(&log).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no attempt within 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let before = lines(&log).len();
    assert!(before >= 1);

    // Second run: the same command finishes the plan.
    let o = cmd().output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["cells"], 2);

    let attempts = lines(&log);
    let records = lines(&out);
    // Every (cell, attempt) logged once; every cell finished; accepted cells have one trial each.
    let mut seen = HashSet::new();
    for a in &attempts {
        assert!(
            seen.insert((a["cell"].as_u64().unwrap(), a["attempt"].as_u64().unwrap())),
            "attempt logged twice: {a}"
        );
    }
    let mut per_cell: HashMap<u64, Vec<&Value>> = HashMap::new();
    for a in &attempts {
        per_cell
            .entry(a["cell"].as_u64().unwrap())
            .or_default()
            .push(a);
    }
    for cell in 0..2u64 {
        let tries = per_cell.get(&cell).map_or(0, Vec::len);
        let accepted = per_cell
            .get(&cell)
            .is_some_and(|v| v.iter().any(|a| a["accepted"] == true));
        assert!(
            accepted || tries == 2,
            "cell {cell} unfinished: {tries} attempts"
        );
    }
    let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids.len(),
        ids.iter().collect::<HashSet<_>>().len(),
        "duplicate trials: {ids:?}"
    );
    assert_eq!(
        ids.len(),
        attempts
            .iter()
            .filter(|a| a["accepted"] == true)
            .count()
            .max(ids.len())
    );
    let accepted_cells: Vec<u64> = records
        .iter()
        .map(|r| r["provenance"]["cell"].as_u64().unwrap())
        .collect();
    assert_eq!(
        accepted_cells.len(),
        accepted_cells.iter().collect::<HashSet<_>>().len()
    );

    for r in &records {
        let id = r["id"].as_str().unwrap();
        assert!(id.starts_with("TFS-") && !id.contains("NCT"));
        assert_eq!(r["label"], r["provenance"]["target_label"]);
        assert_eq!(r["protocol"]["drugs"][0]["name"], "lenalidomide");
        for e in r["provenance"]["examples"].as_array().unwrap() {
            assert!(
                !test_ids.contains(e.as_str().unwrap()),
                "test trial {e} used as an example"
            );
        }
        assert!(!r["provenance"]["prompt_hash"].as_str().unwrap().is_empty());
        assert!(r["provenance"]["completion_tokens"].as_u64().unwrap() > 0);
        assert!(r["validation"]["max_cosine_real"].as_f64().unwrap() <= 0.97);
    }

    // The output exports to the TOP schema and imports back.
    let csv = tmp.path().join("synth.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_trialforge"))
        .args([
            "export",
            "top-csv",
            out.to_str().unwrap(),
            "-o",
            csv.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    if !records.is_empty() {
        let back = top::read_file(&csv, ImportOptions::default())
            .unwrap()
            .trials;
        assert_eq!(back.len(), records.len());
        assert_eq!(back[0].protocol.drugs[0].name, "lenalidomide");
        assert!(
            back[0].protocol.drugs[0].smiles.is_some(),
            "SMILES filled from the drug pool"
        );
    }
}

/// `--batch` changes only the speed: the same plan generated one cell at a time and three cells
/// decoded together (continuous batching) gives the same trials and the same attempt log.
#[test]
fn batch_size_changes_nothing_but_speed() {
    let tmp = tempfile::tempdir().unwrap();
    let imp = top::read_file(
        &root().join("data/top/phase_I_train.csv"),
        ImportOptions::default(),
    )
    .unwrap();
    let trials: Vec<_> = imp
        .trials
        .into_iter()
        .filter(|t| {
            t.protocol
                .drugs
                .iter()
                .any(|d| d.name.eq_ignore_ascii_case("lenalidomide"))
        })
        .collect();
    let corpus_path = tmp.path().join("corpus.jsonl");
    corpus::write_jsonl(&corpus_path, &trials).unwrap();
    let plan = tmp.path().join("plan.jsonl");
    std::fs::write(
        &plan,
        "{\"drug\":\"lenalidomide\",\"label\":1,\"phase\":\"PHASE1\"}\n\
         {\"drug\":\"lenalidomide\",\"label\":0,\"phase\":\"PHASE1\"}\n\
         {\"drug\":\"lenalidomide\",\"label\":1,\"phase\":\"PHASE2\"}",
    )
    .unwrap();
    let run = |batch: &str| {
        let out = tmp.path().join(format!("synth-{batch}.jsonl"));
        let o = Command::new(env!("CARGO_BIN_EXE_trialforge"))
            .args([
                "generate",
                "--corpus",
                corpus_path.to_str().unwrap(),
                "--plan",
                plan.to_str().unwrap(),
            ])
            .args(["-o", out.to_str().unwrap(), "--max-attempts", "1"])
            .args(["--batch", batch, "--response-cache", "none", "--json"])
            .current_dir(root())
            .env("TRIALFORGE_CACHE", tmp.path().join("cache"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let trials: Vec<(Value, Value)> = lines(&out)
            .into_iter()
            .map(|r| (r["id"].clone(), r["protocol"].clone()))
            .collect();
        let log = tmp.path().join(format!("synth-{batch}.log.jsonl"));
        let attempts: Vec<(Value, Value, Value, Value)> = lines(&log)
            .into_iter()
            .map(|a| {
                (
                    a["cell"].clone(),
                    a["accepted"].clone(),
                    a["reject"]["rule"].clone(),
                    a["completion_tokens"].clone(),
                )
            })
            .collect();
        (trials, attempts)
    };
    let (one, one_log) = run("1");
    let (three, three_log) = run("3");
    assert_eq!(one_log.len(), 3, "{one_log:?}");
    assert_eq!(one_log, three_log);
    assert_eq!(one, three);
}
