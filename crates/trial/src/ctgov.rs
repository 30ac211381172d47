//! ClinicalTrials.gov API v2 study records: import (single study object, list response
//! `{"studies": [...], "nextPageToken": ...}`, a JSON array, JSONL, or a folder of these) and live
//! paging of `/api/v2/studies`.
//!
//! Records of the retired classic API (v1, `FullStudiesResponse` with PascalCase keys) are rejected
//! with a message saying how to get v2 records.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::error::ImportError;
use crate::record::{Criteria, Drug, Phase, PostHoc, Protocol, Source, Split, Trial};

/// Intervention types kept as drugs (the rest: devices, procedures, behaviours, ...).
const DRUG_TYPES: [&str; 4] = ["DRUG", "BIOLOGICAL", "COMBINATION_PRODUCT", "GENETIC"];

/// Where a study object sits, for error messages.
struct Loc<'a> {
    file: &'a Path,
    line: Option<u64>,
    prefix: String,
}

impl Loc<'_> {
    fn err(&self, path: &str, message: impl Into<String>) -> ImportError {
        ImportError::Json {
            file: self.file.to_path_buf(),
            line: self.line,
            path: format!("{}{}", self.prefix, path),
            message: message.into(),
        }
    }
}

/// Reads study records from a file or a folder (`*.json`, `*.jsonl`, sorted by name).
pub fn read_path(path: &Path) -> Result<Vec<Trial>, ImportError> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| ImportError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "jsonl"))
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            out.extend(read_file(&f)?);
        }
        Ok(out)
    } else {
        read_file(path)
    }
}

/// Reads one file: a JSON document, or JSONL (one study or list response per line).
pub fn read_file(path: &Path) -> Result<Vec<Trial>, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ImportError::io(path, e))?;
    let is_jsonl = path.extension().is_some_and(|x| x == "jsonl");
    if !is_jsonl {
        match serde_json::from_str::<Value>(&text) {
            Ok(doc) => return from_document(&doc, path, None),
            Err(e) => {
                // A .json file holding one document per line is JSONL under another name.
                let mut lines = text.lines().filter(|l| !l.trim().is_empty());
                let first_is_doc = lines
                    .next()
                    .is_some_and(|l| serde_json::from_str::<Value>(l).is_ok());
                if !first_is_doc || lines.next().is_none() {
                    return Err(json_syntax(path, None, &e));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let n = i as u64 + 1;
        let doc: Value = serde_json::from_str(line).map_err(|e| json_syntax(path, Some(n), &e))?;
        out.extend(from_document(&doc, path, Some(n))?);
    }
    Ok(out)
}

fn json_syntax(path: &Path, line: Option<u64>, e: &serde_json::Error) -> ImportError {
    ImportError::Json {
        file: path.to_path_buf(),
        line: Some(line.unwrap_or(e.line() as u64)),
        path: "$".into(),
        message: format!("invalid JSON: {e}"),
    }
}

/// Converts one parsed JSON document (study, list response or array) into trials.
pub fn from_document(
    doc: &Value,
    file: &Path,
    line: Option<u64>,
) -> Result<Vec<Trial>, ImportError> {
    let loc = |prefix: &str| Loc {
        file,
        line,
        prefix: prefix.to_string(),
    };
    if let Some(obj) = doc.as_object() {
        if obj.contains_key("FullStudiesResponse")
            || obj.contains_key("StudyFieldsResponse")
            || obj.contains_key("ProtocolSection")
            || obj.contains_key("Study")
        {
            return Err(ImportError::Format {
                file: file.to_path_buf(),
                message: "this is a record of the retired ClinicalTrials.gov classic API (v1, PascalCase \
                          keys such as `FullStudiesResponse`); trialforge reads API v2 records: fetch them \
                          again with `trialforge data fetch ctgov` or from https://clinicaltrials.gov/api/v2/studies"
                    .into(),
            });
        }
        if obj.contains_key("protocolSection") {
            return Ok(vec![study_to_trial(doc, &loc(""))?]);
        }
        if let Some(studies) = obj.get("studies") {
            let arr = studies
                .as_array()
                .ok_or_else(|| loc("").err("studies", "expected an array of study objects"))?;
            return arr
                .iter()
                .enumerate()
                .map(|(i, s)| study_to_trial(s, &loc(&format!("studies[{i}]."))))
                .collect();
        }
        return Err(loc("").err(
            "$",
            "expected an API v2 study (with `protocolSection`) or a list response (with `studies`)",
        ));
    }
    if let Some(arr) = doc.as_array() {
        return arr
            .iter()
            .enumerate()
            .map(|(i, s)| study_to_trial(s, &loc(&format!("[{i}]."))))
            .collect();
    }
    Err(loc("").err("$", "expected a JSON object or array"))
}

/// An optional string at `path` (dot-separated); wrong types are errors.
fn opt_str<'a>(v: &'a Value, path: &str, loc: &Loc) -> Result<Option<&'a str>, ImportError> {
    match v.pointer(&pointer(path)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(loc.err(path, format!("expected a string, found {}", kind(other)))),
    }
}

fn opt_array<'a>(v: &'a Value, path: &str, loc: &Loc) -> Result<&'a [Value], ImportError> {
    match v.pointer(&pointer(path)) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(loc.err(path, format!("expected an array, found {}", kind(other)))),
    }
}

fn str_list(v: &Value, path: &str, loc: &Loc) -> Result<Vec<String>, ImportError> {
    opt_array(v, path, loc)?
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_str().map(str::to_string).ok_or_else(|| {
                loc.err(
                    &format!("{path}[{i}]"),
                    format!("expected a string, found {}", kind(x)),
                )
            })
        })
        .collect()
}

fn pointer(path: &str) -> String {
    format!("/{}", path.replace('.', "/"))
}

/// What a JSON value is, in words (for error messages).
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn study_to_trial(study: &Value, loc: &Loc) -> Result<Trial, ImportError> {
    const ID: &str = "protocolSection.identificationModule.nctId";
    let id = opt_str(study, ID, loc)?
        .ok_or_else(|| loc.err(ID, "missing: every study needs an NCT id"))?
        .to_string();
    if !is_nct_id(&id) {
        return Err(loc.err(
            ID,
            format!("expected an NCT id like NCT01234567, found `{id}`"),
        ));
    }
    let ident = "protocolSection.identificationModule";
    let title = opt_str(study, &format!("{ident}.officialTitle"), loc)?
        .or(opt_str(study, &format!("{ident}.briefTitle"), loc)?)
        .unwrap_or_default()
        .to_string();

    const PHASES: &str = "protocolSection.designModule.phases";
    let phases = str_list(study, PHASES, loc)?
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Phase::parse(p).ok_or_else(|| {
                loc.err(
                    &format!("{PHASES}[{i}]"),
                    format!("expected EARLY_PHASE1, PHASE1..PHASE4 or NA, found `{p}`"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let conditions = str_list(study, "protocolSection.conditionsModule.conditions", loc)?;

    const INTERVENTIONS: &str = "protocolSection.armsInterventionsModule.interventions";
    let mut drugs = Vec::new();
    for (i, iv) in opt_array(study, INTERVENTIONS, loc)?.iter().enumerate() {
        let at = format!("{INTERVENTIONS}[{i}]");
        let ty = opt_str(iv, "type", loc)?.unwrap_or("");
        let name = opt_str(iv, "name", loc)?
            .ok_or_else(|| loc.err(&format!("{at}.name"), "missing intervention name"))?;
        if DRUG_TYPES.contains(&ty) {
            drugs.push(Drug {
                name: name.to_string(),
                smiles: None,
            });
        }
    }
    let criteria = opt_str(
        study,
        "protocolSection.eligibilityModule.eligibilityCriteria",
        loc,
    )?
    .map(Criteria::from_raw)
    .unwrap_or_default();
    const ENROLLMENT: &str = "protocolSection.designModule.enrollmentInfo.count";
    let enrollment = match study.pointer(&pointer(ENROLLMENT)) {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    loc.err(
                        ENROLLMENT,
                        format!("expected a count of participants, found {v}"),
                    )
                })?,
        ),
    };
    let status =
        opt_str(study, "protocolSection.statusModule.overallStatus", loc)?.map(str::to_string);
    let why_stopped =
        opt_str(study, "protocolSection.statusModule.whyStopped", loc)?.map(str::to_string);

    Ok(Trial {
        id,
        source: Source::Ctgov,
        protocol: Protocol {
            title,
            phases,
            conditions,
            icd_codes: Vec::new(),
            drugs,
            criteria,
            enrollment,
        },
        label: None,
        split: Split::None,
        post_hoc: PostHoc {
            status,
            why_stopped,
        },
    })
}

fn is_nct_id(s: &str) -> bool {
    s.len() == 11 && s.starts_with("NCT") && s[3..].bytes().all(|b| b.is_ascii_digit())
}

/// Options of a live fetch from the API v2 list endpoint.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Server root; `https://clinicaltrials.gov` in production, a local server in tests.
    pub base_url: String,
    /// Full-text query (`query.term`).
    pub query: String,
    /// Stop after this many studies.
    pub max: usize,
    /// Studies per page (the API allows up to 1,000).
    pub page_size: usize,
    pub timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            base_url: "https://clinicaltrials.gov".into(),
            query: String::new(),
            max: 100,
            page_size: 100,
            timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request to {url} failed: {message}")]
    Http { url: String, message: String },
    #[error("page {page} from {url}: {message}")]
    Body {
        url: String,
        page: usize,
        message: String,
    },
    #[error("writing fetched studies: {0}")]
    Write(#[from] std::io::Error),
}

/// Pages through `/api/v2/studies`, writing each raw study object as one JSONL line to `out`
/// (flushed after each page, so a kill loses at most the page in flight). Returns the number written.
pub fn fetch_studies(
    opts: &FetchOptions,
    out: &mut dyn Write,
    mut on_page: impl FnMut(usize),
) -> Result<usize, FetchError> {
    let url = format!("{}/api/v2/studies", opts.base_url.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(opts.timeout))
        .build()
        .into();
    let mut written = 0;
    let mut token: Option<String> = None;
    let mut page = 0;
    while written < opts.max {
        page += 1;
        let size = opts.page_size.min(opts.max - written).max(1);
        let mut req = agent
            .get(&url)
            .query("format", "json")
            .query("pageSize", size.to_string());
        if !opts.query.is_empty() {
            req = req.query("query.term", &opts.query);
        }
        if let Some(t) = &token {
            req = req.query("pageToken", t);
        }
        let body: Value = req
            .call()
            .map_err(|e| FetchError::Http {
                url: url.clone(),
                message: e.to_string(),
            })?
            .body_mut()
            .read_json()
            .map_err(|e| FetchError::Body {
                url: url.clone(),
                page,
                message: format!("not JSON: {e}"),
            })?;
        let studies = body
            .get("studies")
            .and_then(Value::as_array)
            .ok_or_else(|| FetchError::Body {
                url: url.clone(),
                page,
                message: "expected an object with a `studies` array".into(),
            })?;
        for s in studies.iter().take(opts.max - written) {
            serde_json::to_writer(&mut *out, s).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            written += 1;
        }
        out.flush()?;
        on_page(written);
        token = body
            .get("nextPageToken")
            .and_then(Value::as_str)
            .map(str::to_string);
        if token.is_none() || studies.is_empty() {
            break;
        }
    }
    Ok(written)
}

/// Number of non-empty lines already in a JSONL file (to report what a fetch appended to).
pub fn count_lines(path: &Path) -> std::io::Result<usize> {
    let f = std::fs::File::open(path)?;
    Ok(std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .count())
}
