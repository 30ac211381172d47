//! `data import` and `data fetch ctgov`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use trialforge_trial::ctgov::{self, FetchOptions};
use trialforge_trial::top::ImportOptions;
use trialforge_trial::{corpus, import, Counts, Format};

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

#[derive(Serialize)]
struct FileCounts {
    file: String,
    #[serde(flatten)]
    counts: Counts,
    skipped: usize,
    /// Legacy JSON records that needed repairs, and the repairs by kind.
    repaired_records: usize,
    repairs: std::collections::BTreeMap<String, usize>,
}

#[derive(Serialize)]
struct ImportSummary {
    files: Vec<FileCounts>,
    total: Counts,
    out: Option<String>,
}

pub fn import(ctx: &Ctx, a: ImportArgs) -> anyhow::Result<()> {
    let opts = ImportOptions {
        skip_bad: a.skip_bad,
    };
    let mut files = Vec::new();
    let mut all = Vec::new();
    for p in &a.paths {
        for f in import::read(p, a.format, opts)? {
            for e in &f.skipped {
                eprintln!("skipped: {e}");
            }
            files.push(FileCounts {
                file: f.file.display().to_string(),
                counts: Counts::of(&f.trials),
                skipped: f.skipped.len(),
                repaired_records: f.repaired_records,
                repairs: f.repaired.clone(),
            });
            all.extend(f.trials);
        }
    }
    if let Some(out) = &a.out {
        corpus::write_jsonl(out, &all).with_context(|| format!("writing {}", out.display()))?;
    }
    let summary = ImportSummary {
        files,
        total: Counts::of(&all),
        out: a.out.as_ref().map(|p| p.display().to_string()),
    };
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

#[derive(Serialize)]
struct FetchSummary {
    studies: usize,
    out: String,
}

pub fn fetch_ctgov(ctx: &Ctx, a: FetchCtgovArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=1000).contains(&a.page_size),
        "--page-size must be between 1 and 1000"
    );
    // Written to a partial file, renamed when complete: a killed fetch never looks finished.
    let partial = a.out.with_extension("jsonl.partial");
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?,
    );
    let pb = crate::progress::bar(a.max as u64, "studies");
    let opts = FetchOptions {
        base_url: a.base_url,
        query: a.query,
        max: a.max,
        page_size: a.page_size,
        timeout: std::time::Duration::from_secs(a.timeout),
    };
    let n = ctgov::fetch_studies(&opts, &mut w, |done| pb.set_position(done as u64))?;
    pb.finish_and_clear();
    w.flush()?;
    drop(w);
    std::fs::rename(&partial, &a.out)?;
    let summary = FetchSummary {
        studies: n,
        out: a.out.display().to_string(),
    };
    ctx.emit(&summary, || {
        format!("fetched {} studies into {}", summary.studies, summary.out)
    })
}
