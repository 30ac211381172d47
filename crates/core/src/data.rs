//! Data in and out: reading trials, importing files into a corpus, fetching from ClinicalTrials.gov,
//! reading synthetic sets from any tool, exporting the TOP CSV schema.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use trialforge_predict::augment::SyntheticOrigin;
use trialforge_trial::ctgov::{self, FetchOptions};
use trialforge_trial::top::ImportOptions;
use trialforge_trial::{corpus, import, Counts, Format, Trial};

use crate::Progress;

/// Every trial of `path` (any input `data import` reads); an error if there is none.
pub fn load_trials(path: &Path, format: Format) -> anyhow::Result<Vec<Trial>> {
    let trials = import::read_all(path, format, ImportOptions::default())?;
    anyhow::ensure!(!trials.is_empty(), "{}: no trials", path.display());
    Ok(trials)
}

/// What `data import` reads and where it writes.
#[derive(Clone, Debug)]
pub struct ImportRequest {
    pub paths: Vec<PathBuf>,
    pub format: Format,
    /// Write every imported trial to this JSONL corpus.
    pub out: Option<PathBuf>,
    /// Report bad CSV rows and go on (else stop at the first).
    pub skip_bad: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct FileCounts {
    pub file: String,
    #[serde(flatten)]
    pub counts: Counts,
    pub skipped: usize,
    /// Legacy JSON records that needed repairs, and the repairs by kind.
    pub repaired_records: usize,
    pub repairs: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ImportSummary {
    pub files: Vec<FileCounts>,
    pub total: Counts,
    pub out: Option<String>,
}

/// Reads every file, counts rows and labels per file, optionally writes one corpus. Skipped rows
/// are reported through `progress` as notes.
pub fn import(req: &ImportRequest, progress: &dyn Progress) -> anyhow::Result<ImportSummary> {
    let opts = ImportOptions {
        skip_bad: req.skip_bad,
    };
    let mut files = Vec::new();
    let mut all = Vec::new();
    for p in &req.paths {
        for f in import::read(p, req.format, opts)? {
            for e in &f.skipped {
                progress.note(&format!("skipped: {e}"));
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
    if let Some(out) = &req.out {
        corpus::write_jsonl(out, &all).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(ImportSummary {
        files,
        total: Counts::of(&all),
        out: req.out.as_ref().map(|p| p.display().to_string()),
    })
}

/// `data fetch ctgov`: what to ask the registry for and where to write it.
#[derive(Clone, Debug)]
pub struct FetchCtgovRequest {
    pub query: String,
    pub max: usize,
    pub page_size: usize,
    pub base_url: String,
    pub out: PathBuf,
    pub timeout: std::time::Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct FetchSummary {
    pub studies: usize,
    pub out: String,
}

/// Pages through ClinicalTrials.gov API v2, writing raw study records as JSONL: to a partial file,
/// renamed when complete, so a killed fetch never looks finished.
pub fn fetch_ctgov(
    req: &FetchCtgovRequest,
    progress: &dyn Progress,
) -> anyhow::Result<FetchSummary> {
    anyhow::ensure!(
        (1..=1000).contains(&req.page_size),
        "the page size must be between 1 and 1000"
    );
    let partial = req.out.with_extension("jsonl.partial");
    if let Some(dir) = req.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?,
    );
    let opts = FetchOptions {
        base_url: req.base_url.clone(),
        query: req.query.clone(),
        max: req.max,
        page_size: req.page_size,
        timeout: req.timeout,
    };
    let n = ctgov::fetch_studies(&opts, &mut w, |done| {
        progress.count("studies", done as u64, req.max as u64)
    })?;
    progress.finish();
    w.flush()
        .with_context(|| format!("writing {}", partial.display()))?;
    drop(w);
    std::fs::rename(&partial, &req.out)
        .with_context(|| format!("renaming {} to {}", partial.display(), req.out.display()))?;
    Ok(FetchSummary {
        studies: n,
        out: req.out.display().to_string(),
    })
}

/// `data fetch top`: where the missing TOP splits come from and where the complete folder goes.
#[derive(Clone, Debug)]
pub struct FetchTopRequest {
    pub out: PathBuf,
    /// Folder URL holding `phase_II_train.csv` etc. [default: the pinned HINT snapshot].
    pub source: String,
    pub timeout: std::time::Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct FetchTopSummary {
    pub out: String,
    pub source: String,
    /// The fetched (or already present and re-checked) splits.
    pub splits: Vec<trialforge_trial::top_fetch::CheckedSplit>,
    /// Bundled files copied beside them (the other splits, aux/, the licence and notice).
    pub copied: Vec<String>,
}

/// What goes beside fetched splits so that the folder is a whole TOP copy with its licence.
const BUNDLED_TOP_FILES: [&str; 9] = [
    "phase_I_train.csv",
    "phase_I_valid.csv",
    "phase_I_test.csv",
    "phase_II_valid.csv",
    "phase_III_valid.csv",
    "phase_III_test.csv",
    "LICENSE-upstream.txt",
    "NOTICE.md",
    "README.md",
];

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if !target.exists() {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Downloads and checks the TOP splits this repository lacks into `req.out`, and copies the bundled
/// splits, `aux/` and the upstream licence beside them, so `benchmark top --phase II|III --data
/// OUT` runs TOP's protocol. Writes `FETCHED.json` (source, rows, labels, sha256 of each split).
pub fn fetch_top(
    env: &crate::Environment,
    req: &FetchTopRequest,
    progress: &dyn Progress,
) -> anyhow::Result<FetchTopSummary> {
    let bundled = env.top_dir();
    let splits = trialforge_trial::top_fetch::fetch_missing_splits(
        &req.source,
        &req.out,
        &bundled,
        req.timeout,
        |file| progress.stage(&format!("downloading {file}")),
    )?;
    progress.finish();
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let mut copied = Vec::new();
    if !same(&bundled, &req.out) {
        for file in BUNDLED_TOP_FILES {
            let (from, to) = (bundled.join(file), req.out.join(file));
            if from.is_file() && !to.exists() {
                std::fs::copy(&from, &to)
                    .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
                copied.push(file.to_string());
            }
        }
        if bundled.join("aux").is_dir() {
            copy_tree(&bundled.join("aux"), &req.out.join("aux"))?;
            copied.push("aux/".into());
        }
    }
    let summary = FetchTopSummary {
        out: req.out.display().to_string(),
        source: req.source.clone(),
        splits,
        copied,
    };
    let manifest = req.out.join("FETCHED.json");
    std::fs::write(&manifest, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", manifest.display()))?;
    Ok(summary)
}

/// How to read a synthetic set (`augment` and `analyze`).
#[derive(Clone, Debug, Default)]
pub struct SyntheticSetOptions {
    /// With a folder of legacy ClinicalTrials.gov records: a CSV `file,label`.
    pub labels: Option<PathBuf>,
    /// Skip records that cannot be read (each is reported) instead of stopping.
    pub skip_bad: bool,
}

/// A synthetic set as read, with what reading it involved.
pub struct SyntheticSet {
    pub trials: Vec<Trial>,
    /// Repairs, skipped or unlabelled records, claimed registry ids.
    pub notes: Vec<String>,
    /// Each trial's id and the real trials its prompts showed (none without provenance).
    pub origins: Vec<SyntheticOrigin>,
}

/// A synthetic set: our JSONL, a corpus, a TOP CSV, or a folder (or file) of legacy records (XML,
/// or JSON repaired where needed; see `trialforge_trial::legacy`).
pub fn load_synthetic(
    path: &Path,
    how: &SyntheticSetOptions,
    real: &[Trial],
    progress: &dyn Progress,
) -> anyhow::Result<SyntheticSet> {
    let format = import::detect(path)?;
    let (trials, notes) = if format != Format::Legacy {
        anyhow::ensure!(
            how.labels.is_none(),
            "labels (--labels) go with a folder of legacy ClinicalTrials.gov records; {} is not one (its labels are in the file)",
            path.display()
        );
        (load_trials(path, Format::Auto)?, Vec::new())
    } else {
        let set =
            trialforge_trial::legacy::read_foreign_set(path, how.labels.as_deref(), how.skip_bad)?;
        for e in &set.skipped {
            progress.note(&format!("skipped: {e}"));
        }
        let notes = set.notes(how.labels.is_some(), real);
        anyhow::ensure!(!set.trials.is_empty(), "{}: no records", path.display());
        (set.trials, notes)
    };
    for n in &notes {
        progress.note(&format!("note: {n}"));
    }
    let origins = read_origins(path, &trials)?;
    Ok(SyntheticSet {
        trials,
        notes,
        origins,
    })
}

/// Each synthetic trial's id and the real trials its prompts showed (`None` for sets without
/// provenance, such as TOP CSV files from other tools).
pub fn read_origins(path: &Path, trials: &[Trial]) -> anyhow::Result<Vec<SyntheticOrigin>> {
    let is_jsonl = path.is_file()
        && path
            .extension()
            .is_some_and(|e| e == "jsonl" || e == "json")
        && import::detect(path)? != Format::Legacy;
    let mut examples: std::collections::HashMap<String, Vec<String>> = Default::default();
    if is_jsonl {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}: line {}: not JSON", path.display(), i + 1))?;
            if let (Some(id), Some(ex)) = (v["id"].as_str(), v["provenance"]["examples"].as_array())
            {
                examples.insert(
                    id.to_string(),
                    ex.iter()
                        .filter_map(|e| e.as_str().map(String::from))
                        .collect(),
                );
            }
        }
    }
    Ok(trials
        .iter()
        .map(|t| SyntheticOrigin {
            id: t.id.clone(),
            examples: examples.get(&t.id).cloned(),
        })
        .collect())
}

#[derive(Clone, Debug, Serialize)]
pub struct ExportSummary {
    pub rows: usize,
    pub out: String,
}

/// Trials in the TOP CSV schema (SMILES from the drug pool). An empty set (every attempt
/// rejected) exports as a header-only file.
pub fn export_top_csv(input: &Path, out: &Path) -> anyhow::Result<ExportSummary> {
    let trials = import::read_all(input, Format::Auto, Default::default())?;
    let rows = trialforge_synth::export::write_top_csv(out, &trials)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(ExportSummary {
        rows,
        out: out.display().to_string(),
    })
}
