//! `data import`, `data fetch ctgov` and `data fetch top`.

use std::path::PathBuf;

use clap::Args;
use trialforge_core::data::{FetchCtgovRequest, FetchTopRequest, ImportRequest};
use trialforge_trial::Format;

use super::Ctx;

#[derive(Args)]
pub struct ImportArgs {
    /// Files or folders to read (TOP .csv, ClinicalTrials.gov .json/.jsonl, trialforge corpus .jsonl).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Input format: auto, top, ctgov, corpus or legacy (ClinicalTrials.gov `<clinical_study>` XML or
    /// `{"clinical_study": ...}` JSON, repaired where it does not parse).
    #[arg(long, default_value = "auto")]
    pub format: Format,
    /// Write all imported trials to this JSONL corpus.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Report bad CSV rows and go on (default: stop at the first bad row).
    #[arg(long)]
    pub skip_bad: bool,
}

pub fn import(ctx: &Ctx, a: ImportArgs) -> anyhow::Result<()> {
    let req = ImportRequest {
        paths: a.paths,
        format: a.format,
        out: a.out,
        skip_bad: a.skip_bad,
    };
    let summary = trialforge_core::data::import(&req, &ctx.progress)?;
    ctx.emit(&summary, || {
        let mut s = format!(
            "{:<48} {:>6} {:>8} {:>8} {:>10}\n",
            "file", "rows", "success", "failure", "unlabelled"
        );
        for f in &summary.files {
            s += &format!(
                "{:<48} {:>6} {:>8} {:>8} {:>10}{}\n",
                f.file,
                f.counts.rows,
                f.counts.success,
                f.counts.failure,
                f.counts.unlabelled,
                if f.skipped > 0 {
                    format!("  ({} bad rows skipped)", f.skipped)
                } else {
                    String::new()
                }
            );
            if f.repaired_records > 0 {
                let kinds: Vec<String> =
                    f.repairs.iter().map(|(k, n)| format!("{k} {n}")).collect();
                s += &format!(
                    "  {} records were not valid JSON and were repaired: {}\n",
                    f.repaired_records,
                    kinds.join(", ")
                );
            }
        }
        let t = &summary.total;
        s += &format!(
            "{:<48} {:>6} {:>8} {:>8} {:>10}",
            "total", t.rows, t.success, t.failure, t.unlabelled
        );
        if let Some(o) = &summary.out {
            s += &format!("\nwrote {o}");
        }
        s
    })
}

#[derive(Args)]
pub struct FetchCtgovArgs {
    /// Full-text search terms (the API's `query.term`).
    #[arg(long)]
    pub query: String,
    /// Stop after this many studies.
    #[arg(long, default_value_t = 100)]
    pub max: usize,
    /// Studies per request (at most 1000).
    #[arg(long, default_value_t = 100)]
    pub page_size: usize,
    /// API server root (change it to use a mirror or a test server).
    #[arg(long, default_value = "https://clinicaltrials.gov")]
    pub base_url: String,
    /// Output JSONL file of raw API v2 study records (import it with `data import`).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Request timeout in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

pub fn fetch_ctgov(ctx: &Ctx, a: FetchCtgovArgs) -> anyhow::Result<()> {
    let req = FetchCtgovRequest {
        query: a.query,
        max: a.max,
        page_size: a.page_size,
        base_url: a.base_url,
        out: a.out,
        timeout: std::time::Duration::from_secs(a.timeout),
    };
    let summary = trialforge_core::data::fetch_ctgov(&req, &ctx.progress)?;
    ctx.emit(&summary, || {
        format!("fetched {} studies into {}", summary.studies, summary.out)
    })
}

#[derive(Args)]
pub struct FetchTopArgs {
    /// Output folder: the fetched splits, the bundled ones, aux/ and the licence (then
    /// `benchmark top --phase II --data DIR`).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Folder URL the split files are read from (a mirror, or a test server).
    #[arg(long, default_value = trialforge_trial::top_fetch::TOP_SOURCE)]
    pub source: String,
    /// Request timeout in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

pub fn fetch_top(ctx: &Ctx, a: FetchTopArgs) -> anyhow::Result<()> {
    let req = FetchTopRequest {
        out: a.out,
        source: a.source,
        timeout: std::time::Duration::from_secs(a.timeout),
    };
    let summary = trialforge_core::data::fetch_top(&ctx.env, &req, &ctx.progress)?;
    ctx.emit(&summary, || {
        let lines: Vec<String> = summary
            .splits
            .iter()
            .map(|s| {
                format!(
                    "{} {} rows ({} successes, {} failures), sha256 {}{}",
                    s.file,
                    s.rows,
                    s.successes,
                    s.failures,
                    &s.sha256[..12],
                    if s.downloaded { "" } else { " (already there)" }
                )
            })
            .collect();
        format!(
            "{}\ninto {} (with {}); non-commercial research data, see LICENSE-upstream.txt there",
            lines.join("\n"),
            summary.out,
            if summary.copied.is_empty() {
                "nothing copied".to_string()
            } else {
                summary.copied.join(", ")
            }
        )
    })
}
