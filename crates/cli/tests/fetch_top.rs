//! `data fetch top` against a local HTTP server holding TOP-schema split files with the snapshot's
//! row counts (rows of the bundled phase I train split under new trial ids), then the TOP protocol
//! on phase II from the fetched folder; and a server whose file has one row too few.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod support;

/// Writes `rows` TOP rows to `path`, cycling through the bundled phase I train rows, ids from
/// `first_id` on.
fn synthetic_split(path: &Path, rows: usize, first_id: usize) {
    let mut reader =
        csv::Reader::from_path(support::root().join("data/top/phase_I_train.csv")).unwrap();
    let header = reader.headers().unwrap().clone();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(&header).unwrap();
    for i in 0..rows {
        let mut fields: Vec<String> = records[i % records.len()]
            .iter()
            .map(String::from)
            .collect();
        fields[0] = format!("NCT9{:07}", first_id + i);
        w.write_record(&fields).unwrap();
    }
    w.flush().unwrap();
}

/// Serves the files of `dir` at `/data/NAME` (404 for anything else) on a free port.
fn serve(dir: PathBuf) -> String {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}/data", server.server_addr().to_ip().unwrap());
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let name = req.url().trim_start_matches("/data/").to_string();
            let path = dir.join(&name);
            let response = if !name.contains('/') && path.is_file() {
                tiny_http::Response::from_data(std::fs::read(path).unwrap())
            } else {
                tiny_http::Response::from_data(b"not found".to_vec()).with_status_code(404)
            };
            let _ = req.respond(response);
        }
    });
    base
}

fn trialforge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trialforge"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn fetches_checks_and_completes_a_top_folder_that_the_benchmark_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    synthetic_split(&served.join("phase_II_train.csv"), 4005, 0);
    synthetic_split(&served.join("phase_II_test.csv"), 1653, 10_000);
    synthetic_split(&served.join("phase_III_train.csv"), 3094, 20_000);
    let source = serve(served.clone());
    let out = tmp.path().join("top");
    let out_s = out.to_str().unwrap();

    // One row short: refused by name and count; the split before it is kept, nothing half-written.
    let o = trialforge(&["data", "fetch", "top", "--out", out_s, "--source", &source]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("phase_II_test.csv") && err.contains("1653 rows, expected 1654"),
        "{err}"
    );
    assert!(out.join("phase_II_train.csv").is_file());
    assert!(!out.join("phase_II_test.csv").exists());
    assert!(!out.join("phase_II_test.csv.partial").exists());

    // Fixed upstream: the rest is fetched, the first split checked again, not downloaded.
    synthetic_split(&served.join("phase_II_test.csv"), 1654, 10_000);
    let o = trialforge(&[
        "data", "fetch", "top", "--out", out_s, "--source", &source, "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    let splits = s["splits"].as_array().unwrap();
    let fetched: Vec<(&str, u64, bool)> = splits
        .iter()
        .map(|x| {
            (
                x["file"].as_str().unwrap(),
                x["rows"].as_u64().unwrap(),
                x["downloaded"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        fetched,
        vec![
            ("phase_II_train.csv", 4005, false),
            ("phase_II_test.csv", 1654, true),
            ("phase_III_train.csv", 3094, true),
        ]
    );
    let labels = |x: &Value| x["successes"].as_u64().unwrap() + x["failures"].as_u64().unwrap();
    assert!(splits
        .iter()
        .all(|x| labels(x) == x["rows"].as_u64().unwrap()));
    // The licence travels with the data; the folder is a whole TOP copy.
    for f in [
        "LICENSE-upstream.txt",
        "NOTICE.md",
        "phase_II_valid.csv",
        "FETCHED.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert!(out
        .join("aux/hint_predictions_phase_III_test.csv")
        .is_file());

    // TOP's protocol on phase II from the fetched folder.
    let o = trialforge(&[
        "benchmark",
        "top",
        "--phase",
        "II",
        "--data",
        out_s,
        "--models",
        "tfidf-lr",
        "--resamples",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows: Vec<u64> = r["splits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rows"].as_u64().unwrap())
        .collect();
    assert_eq!(rows, vec![4005, 446, 1654]);
    assert_eq!(r["rows"][0]["status"], "ok");
    assert_eq!(r["protocol"], "top");
    // HINT's phase II predictions do not ship upstream either.
    assert!(r["reference"]["status"]
        .as_str()
        .unwrap()
        .starts_with("missing"));
}

#[test]
fn an_unreachable_source_names_the_url() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("top");
    let o = trialforge(&[
        "data",
        "fetch",
        "top",
        "--out",
        out.to_str().unwrap(),
        "--source",
        "http://127.0.0.1:9/nowhere",
        "--timeout",
        "5",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("http://127.0.0.1:9/nowhere/phase_II_train.csv"),
        "{err}"
    );
}
