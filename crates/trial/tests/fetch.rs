//! Live API v2 paging, against a local HTTP server that serves the fixture records as pages.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use trialforge_trial::ctgov::{self, FetchOptions};

fn fixture_studies() -> Vec<Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/ctgov-samples/v2");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect()
}

/// Serves `studies` as API v2 pages: `pageToken` is the offset, `pageSize` the page length.
/// Records every query string it saw.
fn serve(studies: Vec<Value>) -> (String, Arc<Mutex<Vec<String>>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", server.server_addr().to_ip().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let url = req.url().to_string();
            log.lock().unwrap().push(url.clone());
            let (path, query) = url.split_once('?').unwrap_or((&url, ""));
            if path != "/api/v2/studies" {
                let _ = req.respond(tiny_http::Response::from_string("no").with_status_code(404));
                continue;
            }
            let param = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .map(str::to_string)
            };
            let offset: usize =
                param("pageToken").map_or(0, |t| t.trim_start_matches("tok").parse().unwrap());
            let size: usize = param("pageSize").unwrap().parse().unwrap();
            let end = (offset + size).min(studies.len());
            let mut body = json!({"studies": studies[offset..end]});
            if end < studies.len() {
                body["nextPageToken"] = json!(format!("tok{end}"));
            }
            let _ = req.respond(tiny_http::Response::from_string(body.to_string()));
        }
    });
    (addr, seen)
}

#[test]
fn pages_until_the_last_token() {
    let studies = fixture_studies();
    let (base_url, seen) = serve(studies.clone());
    let mut out = Vec::new();
    let mut pages = Vec::new();
    let n = ctgov::fetch_studies(
        &FetchOptions {
            base_url,
            query: "atopic dermatitis".into(),
            max: 100,
            page_size: 3,
            ..Default::default()
        },
        &mut out,
        |done| pages.push(done),
    )
    .unwrap();
    assert_eq!(n, 10);
    assert_eq!(pages, vec![3, 6, 9, 10]);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    assert!(
        seen[0].contains("query.term=atopic%20dermatitis")
            || seen[0].contains("query.term=atopic+dermatitis"),
        "{}",
        seen[0]
    );
    assert!(!seen[0].contains("pageToken") && seen[1].contains("pageToken=tok3"));

    // What was written imports as the same trials as the fixture folder.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fetched.jsonl");
    std::fs::write(&p, &out).unwrap();
    let trials = ctgov::read_path(&p).unwrap();
    let ids: Vec<&str> = trials.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), 10);
    assert!(ids.contains(&"NCT02210780"));
}

#[test]
fn max_stops_early_and_shrinks_the_last_page() {
    let (base_url, seen) = serve(fixture_studies());
    let mut out = Vec::new();
    let n = ctgov::fetch_studies(
        &FetchOptions {
            base_url,
            max: 5,
            page_size: 4,
            ..Default::default()
        },
        &mut out,
        |_| {},
    )
    .unwrap();
    assert_eq!(n, 5);
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 5);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].contains("pageSize=1"), "{}", seen[1]);
}

#[test]
fn server_errors_are_reported() {
    let (base_url, _) = serve(Vec::new());
    let mut out = Vec::new();
    let err = ctgov::fetch_studies(
        &FetchOptions {
            base_url: format!("{base_url}/wrong"),
            ..Default::default()
        },
        &mut out,
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/wrong/api/v2/studies") && err.contains("404"),
        "{err}"
    );
}
