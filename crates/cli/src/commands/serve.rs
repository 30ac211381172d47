//! `serve` (the HTTP API and web page) and `load` (the load bench against a running server).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use trialforge_server::engine::EngineOptions;
use trialforge_server::load::{bodies_from_trials, LoadOptions};
use trialforge_server::{Limits, ServeOptions};
use trialforge_trial::Format;

use super::Ctx;
use crate::args::EncoderArgs;

#[derive(Args)]
pub struct ServeArgs {
    /// A model folder written by `train` [default: tfidf-lr trained on the bundled TOP phase I
    /// train split at first start, then cached].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Real trials the similar trials come from (any input `data import` reads) [default: every
    /// bundled TOP file and the ClinicalTrials.gov samples].
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free one (printed as `listening on http://...`).
    #[arg(long, default_value = "127.0.0.1:8088")]
    pub addr: SocketAddr,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Seconds a request may wait for and take from the engine before a 503.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Requests waiting for the engine at most (more wait to be queued).
    #[arg(long, default_value_t = 256)]
    pub queue: usize,
    /// HTTP worker threads (the model runs on its own thread).
    #[arg(long, default_value_t = 2)]
    pub http_threads: usize,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

pub fn serve(ctx: &Ctx, a: ServeArgs) -> anyhow::Result<()> {
    let opts = ServeOptions {
        addr: a.addr,
        engine: EngineOptions {
            model: a.model,
            corpus: a.corpus,
            encoder: a.encoder.encoder,
            queue: a.queue,
            ..Default::default()
        },
        limits: Limits {
            max_body: a.max_body,
            timeout: std::time::Duration::from_secs(a.timeout),
            ..Default::default()
        },
        http_threads: a.http_threads,
    };
    trialforge_server::serve(ctx.env.clone(), opts)
}

#[derive(Args)]
pub struct LoadArgs {
    /// The running server's root.
    #[arg(long, default_value = "http://127.0.0.1:8088")]
    pub url: String,
    /// Concurrent clients (threads, each with its own connections).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 10_000)]
    pub requests: usize,
    /// Share of malformed requests (bad JSON, wrong types, unknown fields, empty and oversized
    /// bodies, bad parameters, wrong methods and paths).
    #[arg(long, default_value_t = 0.1)]
    pub malformed: f64,
    /// Trials the valid predict requests carry (as records, forms and TOP rows) [default: the
    /// bundled TOP phase I test file].
    #[arg(long)]
    pub trials: Option<PathBuf>,
    /// Seconds before a request counts as a failed connection.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn load(ctx: &Ctx, a: LoadArgs) -> anyhow::Result<()> {
    let path = a
        .trials
        .clone()
        .unwrap_or_else(|| ctx.env.top_dir().join("phase_I_test.csv"));
    let trials = trialforge_core::data::load_trials(&path, Format::Auto)?;
    let queries: Vec<String> = trials
        .iter()
        .filter_map(|t| t.protocol.conditions.first().cloned())
        .take(200)
        .collect();
    let opts = LoadOptions {
        url: a.url,
        clients: a.clients,
        requests: a.requests,
        malformed: a.malformed,
        trials: bodies_from_trials(&trials),
        queries,
        timeout: std::time::Duration::from_secs(a.timeout),
        seed: a.seed,
    };
    let progress = &ctx.progress;
    let r = trialforge_server::load::run(&opts, &|done, total| {
        use trialforge_core::Progress;
        progress.count("requests", done as u64, total as u64);
    })?;
    ctx.emit(&r, || {
        let mut s = format!(
            "{} requests ({} malformed) from {} clients to {} in {:.1}s: {:.1} requests/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n\
             answers: {} 2xx, {} 4xx, {} 5xx; {} failed connections; {} of {} malformed got a 4xx, {} of {} valid a 2xx",
            r.requests, r.malformed_sent, r.clients, r.url, r.seconds, r.requests_per_second,
            r.p50_ms, r.p99_ms, r.max_ms, r.status_2xx, r.status_4xx, r.status_5xx,
            r.failed_connections, r.malformed_answered_4xx, r.malformed_sent,
            r.valid_answered_2xx, r.requests - r.malformed_sent
        );
        for x in &r.surprises {
            s += &format!("\nunexpected: {x}");
        }
        s
    })
}
