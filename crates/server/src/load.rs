//! The load bench: `clients` threads, each with its own connection pool, send `requests` in all to
//! a running server over real sockets, a share of them malformed on purpose (bad JSON, wrong
//! types, unknown fields, empty or oversized bodies, bad parameters, wrong methods and paths).
//! It counts answers by status class and failed connections and measures latency per request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What to send.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The server root, `http://127.0.0.1:8088`.
    pub url: String,
    pub clients: usize,
    pub requests: usize,
    /// Share of requests that are malformed on purpose (0..=1).
    pub malformed: f64,
    /// Valid predict bodies to draw from (JSON texts).
    pub trials: Vec<String>,
    /// Search texts to draw from.
    pub queries: Vec<String>,
    pub timeout: Duration,
    pub seed: u64,
}

/// What came back.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    pub url: String,
    pub clients: usize,
    pub requests: usize,
    pub malformed_sent: usize,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub status_2xx: usize,
    pub status_4xx: usize,
    pub status_5xx: usize,
    /// Requests that got no HTTP answer (refused, reset, timed out).
    pub failed_connections: usize,
    /// Malformed requests answered with a 4xx, and valid ones answered with a 2xx.
    pub malformed_answered_4xx: usize,
    pub valid_answered_2xx: usize,
    /// The first few unexpected answers (a 5xx, a 2xx to a malformed request, a 4xx to a valid one).
    pub surprises: Vec<String>,
}

/// One request of the mix.
struct Planned {
    method: &'static str,
    path: String,
    body: Option<String>,
    malformed: bool,
}

/// A small deterministic generator (splitmix64): the mix depends on the seed alone.
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed
        .wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn plan(opts: &LoadOptions, i: usize) -> Planned {
    let r = mix(opts.seed, i as u64);
    let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
    let pick = (r % 1_000_003) as usize;
    if unit < opts.malformed {
        let bad: [(&'static str, &str, Option<String>); 10] = [
            (
                "POST",
                "/v1/predict",
                Some("{\"phase\": \"phase 1\", \"drugs\": [".into()),
            ),
            (
                "POST",
                "/v1/predict",
                Some("{\"phase\": 1, \"drugs\": [\"x\"]}".into()),
            ),
            (
                "POST",
                "/v1/predict",
                Some("{\"phase\": \"phase 1\", \"drug\": \"x\"}".into()),
            ),
            (
                "POST",
                "/v1/predict",
                Some("{\"phase\": \"phase 7\", \"drugs\": [\"x\"]}".into()),
            ),
            ("POST", "/v1/predict", Some(String::new())),
            ("POST", "/v1/predict", Some("[]".into())),
            (
                "POST",
                "/v1/predict?k=0",
                Some("{\"phase\": \"phase 1\", \"drugs\": [\"x\"]}".into()),
            ),
            ("GET", "/v1/search?k=3", None),
            ("GET", "/v1/predict", None),
            ("POST", "/v1/no-such-path", Some("{}".into())),
        ];
        // One in 50 malformed requests is an oversized body (2 MiB of JSON string).
        if pick.is_multiple_of(50) {
            return Planned {
                method: "POST",
                path: "/v1/predict".into(),
                body: Some(format!("{{\"title\": \"{}\"}}", "x".repeat(2 << 20))),
                malformed: true,
            };
        }
        let (method, path, body) = bad[pick % bad.len()].clone();
        return Planned {
            method,
            path: path.into(),
            body,
            malformed: true,
        };
    }
    match pick % 10 {
        0 => Planned {
            method: "GET",
            path: "/v1/health".into(),
            body: None,
            malformed: false,
        },
        1 | 2 if !opts.queries.is_empty() => Planned {
            method: "GET",
            path: format!(
                "/v1/search?k=5&q={}",
                encode_query(&opts.queries[pick / 10 % opts.queries.len()])
            ),
            body: None,
            malformed: false,
        },
        _ => Planned {
            method: "POST",
            path: "/v1/predict?k=5".into(),
            body: Some(opts.trials[pick / 10 % opts.trials.len().max(1)].clone()),
            malformed: false,
        },
    }
}

fn encode_query(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Runs the bench; `on_progress(done, total)` is called on this thread as requests finish.
pub fn run(opts: &LoadOptions, on_progress: &dyn Fn(usize, usize)) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(opts.clients >= 1, "at least one client");
    anyhow::ensure!(
        !opts.trials.is_empty(),
        "the bench needs valid trials to send"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&opts.malformed),
        "the malformed share must be between 0 and 1"
    );
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let report = Mutex::new(LoadReport {
        url: opts.url.clone(),
        clients: opts.clients,
        requests: opts.requests,
        ..Default::default()
    });
    let latencies = Mutex::new(Vec::with_capacity(opts.requests));
    let base = opts.url.trim_end_matches('/').to_string();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..opts.clients {
            scope.spawn(|| {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(opts.timeout))
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= opts.requests {
                        break;
                    }
                    let p = plan(opts, i);
                    let url = format!("{base}{}", p.path);
                    let t = Instant::now();
                    let result = match (p.method, &p.body) {
                        ("POST", Some(b)) => agent
                            .post(&url)
                            .header("Content-Type", "application/json")
                            .send(b.as_str()),
                        ("POST", None) => agent.post(&url).send_empty(),
                        _ => agent.get(&url).call(),
                    };
                    let status = result.map(|mut r| {
                        // Read the whole answer: latency includes it, and the connection is reused.
                        let _ = r.body_mut().read_to_string();
                        r.status().as_u16()
                    });
                    mine.push(t.elapsed().as_secs_f64() * 1e3);
                    let mut rep = report.lock().expect("no panics while held");
                    if p.malformed {
                        rep.malformed_sent += 1;
                    }
                    match status {
                        Ok(s) => {
                            match s {
                                200..=299 => rep.status_2xx += 1,
                                400..=499 => rep.status_4xx += 1,
                                500..=599 => rep.status_5xx += 1,
                                _ => {}
                            }
                            let expected = if p.malformed {
                                (400..500).contains(&s)
                            } else {
                                (200..300).contains(&s)
                            };
                            if expected && p.malformed {
                                rep.malformed_answered_4xx += 1;
                            } else if expected {
                                rep.valid_answered_2xx += 1;
                            } else if rep.surprises.len() < 10 {
                                rep.surprises
                                    .push(format!("{} {} -> {s}", p.method, p.path));
                            }
                        }
                        Err(e) => {
                            rep.failed_connections += 1;
                            if rep.surprises.len() < 10 {
                                rep.surprises
                                    .push(format!("{} {} -> {e}", p.method, p.path));
                            }
                        }
                    }
                    drop(rep);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                latencies.lock().expect("no panics while held").extend(mine);
            });
        }
        loop {
            let n = done.load(Ordering::Relaxed);
            on_progress(n, opts.requests);
            if n >= opts.requests {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut lat = latencies.into_inner().expect("threads joined");
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| -> f64 {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() - 1) as f64 * p).round() as usize]
        }
    };
    let mut r = report.into_inner().expect("threads joined");
    r.seconds = seconds;
    r.requests_per_second = opts.requests as f64 / seconds.max(1e-9);
    r.p50_ms = q(0.5);
    r.p99_ms = q(0.99);
    r.max_ms = lat.last().copied().unwrap_or(0.0);
    Ok(r)
}

/// Predict bodies from real trials, in three of the shapes the API reads: the trialforge record,
/// a form (title, phase, conditions, drugs, inclusion, exclusion) and a TOP row.
pub fn bodies_from_trials(trials: &[trialforge_trial::Trial]) -> Vec<String> {
    trials
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let p = &t.protocol;
            let phase = trialforge_trial::top::phase_text(&p.phases);
            let drugs: Vec<&str> = p.drugs.iter().map(|d| d.name.as_str()).collect();
            match i % 3 {
                0 => serde_json::to_string(t).unwrap_or_default(),
                1 => serde_json::json!({
                    "title": p.title,
                    "phase": phase,
                    "conditions": p.conditions,
                    "drugs": drugs,
                    "inclusion": p.criteria.inclusion,
                    "exclusion": p.criteria.exclusion,
                })
                .to_string(),
                _ => serde_json::json!({
                    "nctid": t.id,
                    "phase": phase,
                    "diseases": p.conditions,
                    "icdcodes": p.icd_codes.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>(),
                    "drugs": drugs,
                    "smiless": p.drugs.iter().map(|d| d.smiles.clone().unwrap_or_default()).collect::<Vec<_>>(),
                    "criteria": p.criteria.raw,
                })
                .to_string(),
            }
        })
        .collect()
}
