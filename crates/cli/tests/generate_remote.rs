//! `generate --backend openai` end to end against a local OpenAI-compatible server: reasons, then
//! trials; one placeholder answer (rejected: content), one good trial (accepted), then the same trial
//! again for the next cell (rejected: duplicate), with token and cost accounting; and a slow server
//! that counts requests in flight, to show `--concurrency` is used and bounded.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use trialforge_trial::top::{self, ImportOptions};
use trialforge_trial::{corpus, Split};

mod support;

use support::root;

fn trial_json(conditions: &str, inclusion: &str) -> String {
    json!({
        "title": "Lenalidomide maintenance after induction in relapsed multiple myeloma",
        "phases": ["PHASE1"],
        "conditions": [conditions],
        "drugs": ["lenalidomide", "dexamethasone"],
        "inclusion_criteria": [inclusion, "ECOG performance status 0 to 2"],
        "exclusion_criteria": ["prior thromboembolic event within 6 months", "creatinine clearance below 30 mL/min"],
        "design": {"allocation": "NON_RANDOMIZED", "masking": "NONE", "enrollment": 36},
        "primary_outcome": "maximum tolerated dose over the first 28-day cycle",
        "rationale": "oral immunomodulator with manageable toxicity at lower doses"
    })
    .to_string()
}

fn lenalidomide_corpus(dir: &std::path::Path) -> PathBuf {
    let mut trials = Vec::new();
    for f in ["phase_I_train.csv", "phase_I_test.csv"] {
        let imp =
            top::read_file(&root().join("data/top").join(f), ImportOptions::default()).unwrap();
        trials.extend(
            imp.trials
                .into_iter()
                .filter(|t| t.protocol.drugs.iter().any(|d| d.name == "lenalidomide")),
        );
    }
    assert!(trials.iter().any(|t| t.split == Split::Test));
    let corpus_path = dir.join("corpus.jsonl");
    corpus::write_jsonl(&corpus_path, &trials).unwrap();
    corpus_path
}

fn generate_remote(corpus: &std::path::Path, out: &std::path::Path, base: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trialforge"));
    c.args(["generate", "--corpus", corpus.to_str().unwrap()])
        .args(["-o", out.to_str().unwrap()])
        .args(["--backend", "openai", "--base-url", base])
        .args([
            "--model-name",
            "served-model",
            "--api-key-env",
            "TF_NO_SUCH_KEY",
        ])
        .args(["--min-per-label", "1", "--json"])
        .current_dir(root())
        .env("TRIALFORGE_CACHE", out.parent().unwrap().join("cache"));
    c
}

#[test]
fn concurrency_is_used_and_bounded_and_output_stays_in_plan_order() {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let base = format!("http://{}/v1", server.server_addr().to_ip().unwrap());
    // (in flight now, most in flight at once, generation answers so far)
    let counts = Arc::new(Mutex::new((0usize, 0usize, 0usize)));
    let (srv, c) = (server.clone(), counts.clone());
    std::thread::spawn(move || {
        for mut req in srv.incoming_requests() {
            let c = c.clone();
            std::thread::spawn(move || {
                let n = {
                    let mut c = c.lock().unwrap();
                    c.0 += 1;
                    c.1 = c.1.max(c.0);
                    c.2 += 1;
                    c.2
                };
                let mut body = String::new();
                req.as_reader().read_to_string(&mut body).unwrap();
                let body: Value = serde_json::from_str(&body).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(300));
                let content = if body.get("response_format").is_some() {
                    trial_json(
                        [
                            "multiple myeloma",
                            "mantle cell lymphoma",
                            "myelodysplastic syndrome",
                            "chronic lymphocytic leukemia",
                            "amyloidosis",
                            "diffuse large B-cell lymphoma",
                            "follicular lymphoma",
                            "Waldenstrom macroglobulinemia",
                        ][n % 8],
                        &format!("adults aged 18 years or older, cohort {n}"),
                    )
                } else {
                    "1. Oral dosing.\n2. Known toxicity.\n3. Clear endpoint.".to_string()
                };
                let answer = json!({
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10}
                });
                c.lock().unwrap().0 -= 1;
                let _ = req.respond(tiny_http::Response::from_string(answer.to_string()));
            });
        }
    });

    let tmp = tempfile::tempdir().unwrap();
    let corpus_path = lenalidomide_corpus(tmp.path());
    let out = tmp.path().join("synth.jsonl");
    let o = generate_remote(&corpus_path, &out, &base)
        .args(["-n", "6", "--concurrency", "3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["cells_done"], 6);
    let most = counts.lock().unwrap().1;
    assert!(
        (2..=3).contains(&most),
        "{most} requests were in flight at once with --concurrency 3"
    );
    // Judged and written in plan order, whichever request finished first.
    let log = std::fs::read_to_string(tmp.path().join("synth.log.jsonl")).unwrap();
    let cells: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["cell"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        cells.windows(2).all(|w| w[0] <= w[1]),
        "log cells {cells:?}"
    );
    assert_eq!(cells.first(), Some(&0));
}

#[test]
fn remote_backend_runs_the_pipeline_with_counted_rejects() {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", server.server_addr().to_ip().unwrap());
    let generations = Arc::new(Mutex::new(0usize));
    let g = generations.clone();
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            let mut body = String::new();
            req.as_reader().read_to_string(&mut body).unwrap();
            let body: Value = serde_json::from_str(&body).unwrap();
            let content = if body.get("response_format").is_some() {
                let mut n = g.lock().unwrap();
                *n += 1;
                match *n {
                    1 => trial_json("CONDITION_NAME", "adults with relapsed myeloma"),
                    _ => trial_json(
                        "multiple myeloma",
                        "adults with relapsed or refractory myeloma after two prior lines",
                    ),
                }
            } else {
                "1. Oral dosing eases adherence.\n2. Known toxicity profile.\n3. Clear dose-limiting toxicity endpoint.".to_string()
            };
            let answer = json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 100}
            });
            let _ = req.respond(tiny_http::Response::from_string(answer.to_string()));
        }
    });

    let tmp = tempfile::tempdir().unwrap();
    let corpus_path = lenalidomide_corpus(tmp.path());
    let out = tmp.path().join("synth.jsonl");
    let o = generate_remote(&corpus_path, &out, &base)
        .args([
            "-n",
            "2",
            "--price-prompt",
            "0.15",
            "--price-completion",
            "0.60",
        ])
        // The server's answers are scripted by arrival order: one request at a time.
        .args(["--concurrency", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["cells"], 2);
    assert_eq!(s["accepted"], 1);
    assert_eq!(s["attempts"], 4);
    assert_eq!(s["rejects_by_rule"]["content"], 1);
    assert_eq!(s["rejects_by_rule"]["duplicate"], 2);
    // 4 attempts x (reasoning + generation) x (1000 prompt, 100 completion tokens).
    assert_eq!(
        (s["prompt_tokens"].as_u64(), s["completion_tokens"].as_u64()),
        (Some(8000), Some(800))
    );
    let cost = s["cost_usd"].as_f64().unwrap();
    assert!((cost - (8000.0 * 0.15 + 800.0 * 0.60) / 1e6).abs() < 1e-9);

    let line = std::fs::read_to_string(&out).unwrap();
    let r: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(r["provenance"]["backend"], "openai");
    assert!(r["provenance"]["model"]
        .as_str()
        .unwrap()
        .contains("served-model"));
    assert_eq!(r["provenance"]["reasons"].as_array().unwrap().len(), 3);
    assert_eq!(r["protocol"]["conditions"][0], "multiple myeloma");
}

/// A server that answers every reasoning request with reasons and every generation request with
/// the same good trial.
fn serve_good_trials() -> String {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", server.server_addr().to_ip().unwrap());
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            let mut body = String::new();
            req.as_reader().read_to_string(&mut body).unwrap();
            let body: Value = serde_json::from_str(&body).unwrap();
            let content = if body.get("response_format").is_some() {
                trial_json(
                    "multiple myeloma",
                    "adults with relapsed or refractory myeloma after two prior lines",
                )
            } else {
                "1. Oral dosing eases adherence.\n2. Known toxicity profile.".to_string()
            };
            let answer = json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10}
            });
            let _ = req.respond(tiny_http::Response::from_string(answer.to_string()));
        }
    });
    base
}

#[test]
fn a_log_that_outlived_its_output_stops_the_run_with_a_message() {
    let base = serve_good_trials();
    let tmp = tempfile::tempdir().unwrap();
    let corpus_path = lenalidomide_corpus(tmp.path());
    let out = tmp.path().join("gen.jsonl");
    let log = tmp.path().join("gen.log.jsonl");
    let run = || {
        generate_remote(&corpus_path, &out, &base)
            .args(["-n", "1", "--concurrency", "1"])
            .output()
            .unwrap()
    };
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["accepted"], 1);
    // The gate is printed, kept beside the output and in the trial's provenance.
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("realism gate") && stderr.contains("lexical"),
        "{stderr}"
    );
    assert!(tmp.path().join("gen.gate.json").is_file());
    let r: Value = serde_json::from_str(
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        r["provenance"]["gate"]["digest"],
        s["gate"]["thresholds"]["digest"]
    );
    assert!(r["validation"]["lexical_share"].as_f64().unwrap() > 0.5);

    // The output is deleted, its log is not: the same command must not give the cell up silently.
    std::fs::remove_file(&out).unwrap();
    let o = run();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("gen.log.jsonl") && err.contains("gen.jsonl") && err.contains("delete"),
        "{err}"
    );
    assert!(!out.exists() || std::fs::read_to_string(&out).unwrap().is_empty());

    // Deleting the log as well starts the run over.
    std::fs::remove_file(&log).unwrap();
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (s["accepted"].as_u64(), s["resumed_cells"].as_u64()),
        (Some(1), Some(0))
    );
}

#[test]
fn generates_through_a_real_llama_cpp_server() {
    let Some(server) = support::start_llama_cpp_server(&[]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let corpus_path = lenalidomide_corpus(tmp.path());
    let out = tmp.path().join("gen.jsonl");
    let o = generate_remote(&corpus_path, &out, &server.base)
        .args(["-n", "2", "--max-attempts", "1", "--concurrency", "2"])
        .env("TRIALFORGE_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // llama.cpp refuses OpenAI's json_schema with a 500 and takes json_object with a schema.
    assert!(stderr.contains("trying json-object"), "{stderr}");
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (s["cells_done"].as_u64(), s["attempts"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(s["completion_tokens"].as_u64().unwrap() > 50, "{s}");
    // Whatever the small model wrote was judged: accepted, or rejected by a named rule.
    let log: Vec<Value> = std::fs::read_to_string(tmp.path().join("gen.log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(log.len(), 2);
    for a in &log {
        assert!(
            a["accepted"] == true || a["reject"]["rule"].is_string(),
            "{a}"
        );
        assert!(a["completion_tokens"].as_u64().unwrap() > 0);
    }
}
