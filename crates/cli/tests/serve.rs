//! `trialforge serve` over a real socket: the API's answers and errors, the default model trained
//! at first start and cached, predictions equal to `trialforge predict`'s, the web page driven by
//! headless Chromium (typing into the form with the keyboard), and a small run of the load bench.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running `trialforge serve`, killed on drop.
struct Server {
    child: Child,
    url: String,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(cache: &Path, extra: &[&str]) -> Server {
        let corpus = cache.parent().unwrap().join("corpus.jsonl");
        if !corpus.is_file() {
            // A small corpus keeps the first start's embedding short: phase I valid and the
            // ClinicalTrials.gov samples.
            let o = Command::new(env!("CARGO_BIN_EXE_trialforge"))
                .args([
                    "data",
                    "import",
                    "data/top/phase_I_valid.csv",
                    "data/ctgov-samples/v2",
                    "-o",
                ])
                .arg(&corpus)
                .current_dir(root())
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_trialforge"))
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--max-body",
                "400000",
                "--corpus",
            ])
            .arg(&corpus)
            .args(extra)
            .current_dir(root())
            .env("TRIALFORGE_CACHE", cache)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start trialforge serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(url) => url,
            Err(_) => panic!(
                "the server did not start; stderr:\n{}",
                stderr.lock().unwrap()
            ),
        };
        Server { child, url, stderr }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// (status, JSON body) of a request.
fn call(method: &str, url: &str, body: Option<(&str, &str)>) -> (u16, Value) {
    let a = agent();
    let resp = match (method, body) {
        ("POST", Some((ct, b))) => a.post(url).header("Content-Type", ct).send(b),
        ("POST", None) => a.post(url).send_empty(),
        _ => a.get(url).call(),
    };
    let mut resp = resp.expect("an HTTP answer");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {url}: {status} answered non-JSON `{text}`: {e}"));
    (status, v)
}

fn post(url: &str, body: &str) -> (u16, Value) {
    call("POST", url, Some(("application/json", body)))
}

fn form_trial() -> Value {
    json!({
        "title": "Trastuzumab with docetaxel in HER2-positive metastatic breast cancer",
        "phase": "phase 1",
        "conditions": ["breast cancer"],
        "drugs": ["trastuzumab", "docetaxel"],
        "inclusion": ["histologically confirmed HER2-positive breast cancer", "ECOG 0-1"],
        "exclusion": ["prior anthracycline cardiotoxicity"]
    })
}

fn assert_error(status: u16, v: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{v}");
    assert_eq!(v["error"]["status"], want_status, "{v}");
    assert_eq!(v["error"]["code"], want_code, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

#[test]
fn the_api_answers_over_a_socket_and_refuses_bad_input_with_json() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let server = Server::start(&cache, &[]);
    let base = server.url.clone();
    assert!(
        server.log().contains("training the default model"),
        "first start trains the default model and says so:\n{}",
        server.log()
    );

    let (s, health) = call("GET", &format!("{base}/v1/health"), None);
    assert_eq!(s, 200);
    assert_eq!(health["status"], "ok");
    let model = &health["engine"]["model"];
    assert_eq!(model["name"], "tfidf-lr");
    assert!(model["trained_on"]["train_trials"].as_u64().unwrap() > 1000);
    assert_eq!(model["trained_now"], true);
    let model_dir = model["dir"].as_str().unwrap().to_string();

    // A form.
    let (s, v) = post(&format!("{base}/v1/predict?k=4"), &form_trial().to_string());
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["input"], "form");
    let p = v["probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    assert_eq!(v["model"]["name"], "tfidf-lr");
    assert!(v["model"]["trained_on"]["train_source"]
        .as_str()
        .unwrap()
        .contains("phase_I_train.csv"));
    let similar = v["similar"].as_array().unwrap();
    assert_eq!(similar.len(), 4);
    for h in similar {
        assert!(h["similarity"].as_f64().unwrap() <= 1.0 + 1e-6);
        assert!(h["phase"].as_str().is_some());
        if h["id"].as_str().unwrap().starts_with("NCT") {
            assert_eq!(
                h["url"],
                format!(
                    "https://clinicaltrials.gov/study/{}",
                    h["id"].as_str().unwrap()
                )
            );
        }
    }
    assert!(similar
        .iter()
        .any(|h| h["outcome"] == "success" || h["outcome"] == "failure"));
    // Nearest first.
    let sims: Vec<f64> = similar
        .iter()
        .map(|h| h["similarity"].as_f64().unwrap())
        .collect();
    assert!(sims.windows(2).all(|w| w[0] >= w[1] - 1e-6), "{sims:?}");

    // A ClinicalTrials.gov v2 study, as the registry serves it.
    let study =
        std::fs::read_to_string(root().join("data/ctgov-samples/v2/NCT02210780.json")).unwrap();
    let (s, v) = post(&format!("{base}/v1/predict"), &study);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["input"], "ctgov-study");
    assert_eq!(v["id"], "NCT02210780");
    assert_eq!(v["similar"].as_array().unwrap().len(), 5);
    // The study is in the corpus: it is its own nearest trial.
    assert_eq!(v["similar"][0]["id"], "NCT02210780");

    // A TOP row as JSON, and the same answer as `trialforge predict` with the served model.
    let top_row = json!({
        "nctid": "NCT99999999", "phase": "phase 1", "diseases": "['breast cancer']",
        "icdcodes": "[\"['C50.911']\"]", "drugs": "['trastuzumab']", "smiless": "['']",
        "criteria": "Inclusion Criteria:\n- HER2-positive breast cancer\nExclusion Criteria:\n- pregnancy"
    });
    let (s, v) = post(&format!("{base}/v1/predict"), &top_row.to_string());
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["input"], "top-row");
    let served = v["probability"].as_f64().unwrap();
    let csv = tmp.path().join("row.csv");
    std::fs::write(
        &csv,
        "nctid,status,why_stop,label,phase,diseases,icdcodes,drugs,smiless,criteria\n\
         NCT99999999,,,1,phase 1,['breast cancer'],\"[\"\"['C50.911']\"\"]\",['trastuzumab'],[''],\"Inclusion Criteria:\n- HER2-positive breast cancer\nExclusion Criteria:\n- pregnancy\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_trialforge"))
        .args(["predict", "--json", "--model", &model_dir])
        .arg(&csv)
        .current_dir(root())
        .env("TRIALFORGE_CACHE", &cache)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cli: Value = serde_json::from_slice(&o.stdout).unwrap();
    let cli_p = cli[0]["probability"].as_f64().unwrap();
    assert!(
        (served - cli_p).abs() < 1e-6,
        "served {served}, CLI {cli_p}"
    );

    // Several at once.
    let both = json!([form_trial(), top_row]).to_string();
    let (s, v) = post(&format!("{base}/v1/predict?k=2"), &both);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["predictions"].as_array().unwrap().len(), 2);
    assert!((v["predictions"][1]["probability"].as_f64().unwrap() - served).abs() < 1e-6);

    // Search.
    let (s, v) = call(
        "GET",
        &format!("{base}/v1/search?q=breast%20cancer&k=3"),
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["hits"].as_array().unwrap().len(), 3);

    // Bad input: a JSON error naming the field and what was expected, never a 5xx.
    let url = format!("{base}/v1/predict");
    let (s, v) = post(&url, "{\"phase\": \"phase 1\", \"drugs\": [");
    assert_error(s, &v, 400, "invalid_json");
    let (s, v) = post(&url, "{\"phase\": \"phase 9\", \"drugs\": [\"x\"]}");
    assert_error(s, &v, 422, "invalid_field");
    assert_eq!(v["error"]["field"], "phase");
    assert!(v["error"]["expected"].as_str().unwrap().contains("phase 9"));
    let (s, v) = post(&url, "{\"phase\": \"phase 1\", \"drugs\": [1]}");
    assert_error(s, &v, 422, "invalid_field");
    assert_eq!(v["error"]["field"], "drugs[0]");
    let (s, v) = post(&url, "{\"phase\": \"phase 1\", \"drug\": \"x\"}");
    assert_eq!(v["error"]["field"], "drug", "{v}");
    assert_eq!(s, 422);
    let (s, v) = post(
        &url,
        "[{\"phase\": \"phase 1\", \"drugs\": [\"x\"]}, {\"drugs\": [\"x\"]}]",
    );
    assert_error(s, &v, 422, "invalid_field");
    assert_eq!(v["error"]["field"], "[1].phase");
    let (s, v) = post(&url, "[1, 2]");
    assert_error(s, &v, 422, "invalid_field");
    let (s, v) = post(&url, "");
    assert_error(s, &v, 400, "empty_body");
    let (s, v) = post(&url, "[]");
    assert_error(s, &v, 400, "invalid_batch");
    let (s, v) = post(&format!("{url}?k=0"), &form_trial().to_string());
    assert_error(s, &v, 400, "invalid_parameter");
    assert_eq!(v["error"]["field"], "k");
    let big = format!("{{\"title\": \"{}\"}}", "x".repeat(400_000));
    let (s, v) = post(&url, &big);
    assert_error(s, &v, 413, "body_too_large");
    let (s, v) = call("POST", &url, Some(("application/xml", "<trial/>")));
    assert_error(s, &v, 415, "unsupported_media_type");
    let (s, v) = call("GET", &url, None);
    assert_error(s, &v, 405, "method_not_allowed");
    let (s, v) = call("GET", &format!("{base}/v1/nothing"), None);
    assert_error(s, &v, 404, "not_found");
    let (s, v) = call("GET", &format!("{base}/v1/search?k=3"), None);
    assert_error(s, &v, 400, "invalid_parameter");
    assert_eq!(v["error"]["field"], "q");

    // The document describes every route.
    let (s, doc) = call("GET", &format!("{base}/v1/openapi.json"), None);
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/health",
        "/v1/predict",
        "/v1/search",
        "/v1/openapi.json",
        "/",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not described");
    }
    // The page and its assets come from the binary.
    let mut page = agent().get(&format!("{base}/")).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.body_mut().read_to_string().unwrap();
    assert!(html.contains("id=\"trial-form\"") && html.contains("src=\"/app.js\""));
    assert!(
        !html.contains("http://") && !html.contains("cdn"),
        "nothing from the network"
    );
    let js = agent().get(&format!("{base}/app.js")).call().unwrap();
    assert_eq!(js.status().as_u16(), 200);

    // The load bench: every malformed request a 4xx, every valid one a 2xx, nothing else.
    let o = Command::new(env!("CARGO_BIN_EXE_trialforge"))
        .args([
            "load",
            "--json",
            "--url",
            &base,
            "--clients",
            "8",
            "--requests",
            "300",
            "--malformed",
            "0.2",
        ])
        .args(["--trials", "data/top/phase_I_valid.csv"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["status_5xx"], 0, "{r}");
    assert_eq!(r["failed_connections"], 0, "{r}");
    assert!(r["malformed_sent"].as_u64().unwrap() > 20, "{r}");
    assert_eq!(r["malformed_answered_4xx"], r["malformed_sent"], "{r}");
    assert_eq!(
        r["valid_answered_2xx"].as_u64().unwrap() + r["malformed_sent"].as_u64().unwrap(),
        300,
        "{r}"
    );
    drop(server);

    // A second start finds the default model in the cache.
    let again = Server::start(&cache, &[]);
    assert!(
        again.log().contains("using the cached default model"),
        "{}",
        again.log()
    );
    let (_, health) = call("GET", &format!("{}/v1/health", again.url), None);
    assert_eq!(health["engine"]["model"]["trained_now"], false);
    assert_eq!(health["engine"]["model"]["dir"], model_dir);
}

#[test]
fn the_web_page_works_from_the_keyboard_in_chromium() {
    if !Path::new("/usr/bin/chromium").is_file() {
        assert!(
            std::env::var_os("TRIALFORGE_REQUIRE_CHROMIUM").is_none(),
            "TRIALFORGE_REQUIRE_CHROMIUM is set but /usr/bin/chromium is missing (run scripts/setup.sh)"
        );
        eprintln!("/usr/bin/chromium not installed: the web page test did not run");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("cache"), &[]);
    let browser = headless_chrome::Browser::new(
        headless_chrome::LaunchOptions::default_builder()
            .path(Some(PathBuf::from("/usr/bin/chromium")))
            .sandbox(false)
            .headless(true)
            .args(vec![std::ffi::OsStr::new("--disable-gpu")])
            .build()
            .unwrap(),
    )
    .expect("launch chromium");
    let tab = browser.new_tab().unwrap();
    tab.navigate_to(&format!("{}/", server.url)).unwrap();
    tab.wait_until_navigated().unwrap();

    // Keyboard only: focus the first field of the form, type, Tab to the next, Enter submits.
    tab.wait_for_element("#title").unwrap().focus().unwrap();
    tab.type_str("Trastuzumab with docetaxel in metastatic breast cancer")
        .unwrap();
    tab.press_key("Tab").unwrap(); // the phase select
    tab.press_key("Tab").unwrap();
    tab.type_str("breast cancer").unwrap();
    tab.press_key("Tab").unwrap();
    tab.type_str("trastuzumab; docetaxel").unwrap();
    tab.press_key("Enter").unwrap();

    let probability = wait_text(&tab, "#probability", Duration::from_secs(60));
    assert!(
        probability.ends_with('%') && probability.trim_end_matches('%').parse::<f64>().is_ok(),
        "probability shown as `{probability}`"
    );
    let rows = tab.find_elements("#similar tbody tr").unwrap();
    assert_eq!(rows.len(), 5);
    let links = tab.find_elements("#similar tbody a").unwrap();
    assert!(!links.is_empty(), "NCT trials are linked");
    let href = links[0].get_attribute_value("href").unwrap().unwrap();
    assert!(
        href.starts_with("https://clinicaltrials.gov/study/NCT"),
        "{href}"
    );
    // The result took the focus, so a screen-reader or keyboard user lands on it.
    let focused = tab
        .evaluate("document.activeElement.id", false)
        .unwrap()
        .value
        .unwrap();
    assert_eq!(focused, "result-heading");

    // A pasted record that is not JSON: the error is shown, in words.
    tab.find_element("#record").unwrap().focus().unwrap();
    tab.type_str("{\"protocolSection\": ").unwrap();
    tab.find_element("#submit").unwrap().focus().unwrap();
    tab.press_key("Enter").unwrap();
    let error = wait_text(&tab, "#error", Duration::from_secs(30));
    assert!(error.contains("not valid JSON"), "error shown: `{error}`");
}

/// The text of the first element matching `selector` once it is visible and non-empty.
fn wait_text(tab: &headless_chrome::Tab, selector: &str, timeout: Duration) -> String {
    let started = Instant::now();
    loop {
        let text = tab
            .evaluate(
                &format!(
                    "(() => {{ const e = document.querySelector({selector:?}); \
                     if (!e || e.closest('[hidden]')) return ''; return e.textContent; }})()"
                ),
                false,
            )
            .ok()
            .and_then(|r| r.value)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if !text.trim().is_empty() {
            return text.trim().to_string();
        }
        assert!(
            started.elapsed() < timeout,
            "`{selector}` never showed text"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
