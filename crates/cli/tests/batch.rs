//! `generate --emit-batch` → (the batch runs elsewhere) → `ingest-batch` → `generate` again, twice:
//! reasons first, then trials. The batch "runs" here by answering each request line.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use trialforge_trial::corpus;
use trialforge_trial::top::{self, ImportOptions};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn trialforge(args: &[&str], cache: &Path) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_trialforge"))
        .args(args)
        .arg("--json")
        .current_dir(root())
        .env("TRIALFORGE_CACHE", cache)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Answers every request line as a batch service would.
fn run_batch(requests: &Path, results: &Path) -> usize {
    let mut out = String::new();
    let mut n = 0;
    for line in std::fs::read_to_string(requests).unwrap().lines() {
        let req: Value = serde_json::from_str(line).unwrap();
        assert_eq!(req["url"], "/v1/chat/completions");
        assert_eq!(req["body"]["model"], "batch-model");
        let content = if req["body"].get("response_format").is_some() {
            json!({
                "title": "Lenalidomide in relapsed multiple myeloma: a dose-finding study",
                "phases": ["PHASE1"],
                "conditions": ["multiple myeloma"],
                "drugs": ["lenalidomide"],
                "inclusion_criteria": ["adults with relapsed myeloma after one prior line"],
                "exclusion_criteria": ["active infection requiring systemic therapy"],
                "design": {"allocation": "NON_RANDOMIZED", "masking": "NONE", "enrollment": 24},
                "primary_outcome": "dose-limiting toxicities in cycle one",
                "rationale": "oral agent with known toxicity"
            })
            .to_string()
        } else {
            "1. Oral dosing.\n2. Known safety.".to_string()
        };
        let result = json!({
            "id": format!("batch_req_{n}"),
            "custom_id": req["custom_id"],
            "response": {"status_code": 200, "body": {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 900, "completion_tokens": 90}
            }},
            "error": null
        });
        out += &format!("{result}\n");
        n += 1;
    }
    out += "{\"custom_id\": \"not-ours\", \"response\": {\"status_code\": 500}}\n";
    std::fs::write(results, out).unwrap();
    n
}

#[test]
fn batch_round_trips_through_the_response_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let imp = top::read_file(
        &root().join("data/top/phase_I_train.csv"),
        ImportOptions::default(),
    )
    .unwrap();
    let trials: Vec<_> = imp
        .trials
        .into_iter()
        .filter(|t| t.protocol.drugs.iter().any(|d| d.name == "lenalidomide"))
        .collect();
    let corpus_path = tmp.path().join("corpus.jsonl");
    corpus::write_jsonl(&corpus_path, &trials).unwrap();
    let plan = tmp.path().join("plan.jsonl");
    std::fs::write(
        &plan,
        "{\"drug\":\"lenalidomide\",\"label\":1,\"phase\":\"PHASE1\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("synth.jsonl");
    let requests = tmp.path().join("requests.jsonl");
    let results = tmp.path().join("results.jsonl");
    let generate = [
        "generate",
        "--corpus",
        corpus_path.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--backend",
        "openai",
        "--base-url",
        "http://batch.invalid/v1",
        "--model-name",
        "batch-model",
        "--emit-batch",
        requests.to_str().unwrap(),
    ];

    // Round 1: the reasoning request goes to the batch file; nothing is attempted yet.
    let s = trialforge(&generate, &cache);
    assert_eq!(
        (
            s["deferred"].as_u64(),
            s["attempts"].as_u64(),
            s["cells_done"].as_u64()
        ),
        (Some(1), Some(0), Some(0))
    );
    assert_eq!(run_batch(&requests, &results), 1);
    let ing = trialforge(&["ingest-batch", results.to_str().unwrap()], &cache);
    assert_eq!(ing["stored"], 1);
    assert_eq!(
        ing["failed"].as_array().unwrap().len(),
        1,
        "the foreign line is reported"
    );

    // Round 2: reasons come from the cache; the generation request is emitted.
    std::fs::remove_file(&requests).unwrap();
    let s = trialforge(&generate, &cache);
    assert_eq!(s["deferred"], 1);
    assert_eq!(run_batch(&requests, &results), 1);
    trialforge(&["ingest-batch", results.to_str().unwrap()], &cache);

    // Round 3: everything is answered; the trial is validated and written.
    let s = trialforge(&generate, &cache);
    assert_eq!(
        (
            s["accepted"].as_u64(),
            s["deferred"].as_u64(),
            s["cells_done"].as_u64()
        ),
        (Some(1), Some(0), Some(1))
    );
    assert_eq!(s["cached_responses"], 2);
    let rec: Value = serde_json::from_str(
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(rec["provenance"]["backend"], "openai");
    assert_eq!(rec["provenance"]["reasons"].as_array().unwrap().len(), 2);
}
