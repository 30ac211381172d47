//! The legacy ClinicalTrials.gov record: AllPublicXML `<clinical_study>` XML (the format TOP was
//! built from) and the same record as JSON, `{"clinical_study": {...}}` (xmltodict's shape:
//! elements as keys, repeated elements as arrays, `@attr` and `#text` for attributes and text),
//! also inside a Markdown ```json fence, as LLM output often comes.
//!
//! JSON that does not parse gets a fixed set of repairs, each counted, and is parsed again; a record
//! that still fails is an error naming the file:
//! - `fence`: text outside a Markdown code fence is dropped;
//! - `outer-text`: text before the first `{` and after the object it opens is dropped;
//! - `trailing-comma`: a comma before `}` or `]` is dropped;
//! - `unclosed`: an unterminated string, and objects and arrays left open, are closed at the end.
//!
//! Written by hand rather than with a JSON-repair crate because each repair must be named and
//! counted, and nothing beyond these four may be guessed.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::ImportError;
use crate::record::{Criteria, Drug, Phase, PostHoc, Protocol, Source, Split, Trial};

/// Intervention types kept as drugs, as the legacy record spells them.
const DRUG_TYPES: [&str; 4] = ["drug", "biological", "combination product", "genetic"];

/// One legacy record read from a file, with the repairs its JSON needed.
#[derive(Clone, Debug)]
pub struct LegacyRecord {
    pub trial: Trial,
    pub repairs: Vec<&'static str>,
}

/// Whether `text` looks like a legacy record (XML or JSON).
pub fn looks_legacy(text: &str) -> bool {
    text.contains("<clinical_study") || text.contains("\"clinical_study\"")
}

/// Reads one file: `.xml` as XML, anything else as JSON (repaired where needed).
pub fn read_file(path: &Path) -> Result<LegacyRecord, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ImportError::io(path, e))?;
    let is_xml = path.extension().is_some_and(|x| x == "xml") || text.trim_start().starts_with('<');
    if is_xml {
        let value = xml_to_value(&text).map_err(|message| ImportError::Format {
            file: path.to_path_buf(),
            message,
        })?;
        return Ok(LegacyRecord {
            trial: record_to_trial(&value, path)?,
            repairs: Vec::new(),
        });
    }
    let (doc, repairs) = parse_json_repaired(&text).map_err(|message| ImportError::Format {
        file: path.to_path_buf(),
        message,
    })?;
    let study = doc.get("clinical_study").ok_or_else(|| ImportError::Json {
        file: path.to_path_buf(),
        line: None,
        path: "clinical_study".into(),
        message: "missing: expected {\"clinical_study\": {...}}".into(),
    })?;
    Ok(LegacyRecord {
        trial: record_to_trial(study, path)?,
        repairs,
    })
}

/// The files of a folder that may hold records (`.xml`, `.json`, `.md`, `.txt`), sorted by name.
pub fn record_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, ImportError> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| ImportError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| ["xml", "json", "md", "txt"].iter().any(|e| x == *e))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The records of a file or folder. With `skip_bad`, a file that cannot be read is reported in
/// `skipped` and the others go on; repairs are counted by kind.
pub fn read_path(path: &Path, skip_bad: bool) -> Result<crate::top::FileImport, ImportError> {
    let files = if path.is_dir() {
        record_files(path)?
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = crate::top::FileImport {
        file: path.to_path_buf(),
        ..Default::default()
    };
    for f in files {
        match read_file(&f) {
            Ok(r) => {
                for kind in &r.repairs {
                    *out.repaired.entry(kind.to_string()).or_default() += 1;
                }
                if !r.repairs.is_empty() {
                    out.repaired_records += 1;
                }
                out.trials.push(r.trial);
            }
            Err(e) if skip_bad => out.skipped.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

// ---- XML -> the JSON shape --------------------------------------------------------------------

/// The XML record as the JSON form's value (the `<clinical_study>` element's content).
fn xml_to_value(text: &str) -> Result<Value, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("invalid XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "clinical_study" {
        return Err(format!(
            "expected a <clinical_study> record, found <{}>",
            root.tag_name().name()
        ));
    }
    Ok(element_value(root))
}

fn element_value(node: roxmltree::Node) -> Value {
    let children: Vec<roxmltree::Node> = node.children().filter(|c| c.is_element()).collect();
    let attrs: Vec<(String, Value)> = node
        .attributes()
        .map(|a| {
            (
                format!("@{}", a.name()),
                Value::String(a.value().to_string()),
            )
        })
        .collect();
    if children.is_empty() {
        let text: String = node.text().unwrap_or("").to_string();
        if attrs.is_empty() {
            return Value::String(text);
        }
        let mut m: Map<String, Value> = attrs.into_iter().collect();
        m.insert("#text".into(), Value::String(text));
        return Value::Object(m);
    }
    let mut m: Map<String, Value> = attrs.into_iter().collect();
    for c in children {
        let key = c.tag_name().name().to_string();
        let v = element_value(c);
        match m.get_mut(&key) {
            Some(Value::Array(a)) => a.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, v]);
            }
            None => {
                m.insert(key, v);
            }
        }
    }
    Value::Object(m)
}

// ---- the record -> Trial ----------------------------------------------------------------------

/// Text of a value: a string, a number, or an object's `#text` / `textblock`.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(m) => ["#text", "textblock", "$", "value", "text"]
            .iter()
            .find_map(|k| m.get(*k).and_then(text_of)),
        _ => None,
    }
}

/// A field that may be one value or an array of them.
fn many(v: Option<&Value>) -> Vec<&Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(x) => vec![x],
    }
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(*k))
}

fn record_to_trial(study: &Value, file: &Path) -> Result<Trial, ImportError> {
    let err = |path: &str, message: String| ImportError::Json {
        file: file.to_path_buf(),
        line: None,
        path: format!("clinical_study.{path}"),
        message,
    };
    if !study.is_object() {
        return Err(err("", "expected an object".into()));
    }
    let id = field(study, &["id_info", "nct_id"])
        .and_then(text_of)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    let title = field(study, &["official_title"])
        .or_else(|| field(study, &["brief_title"]))
        .and_then(text_of)
        .unwrap_or_default()
        .trim()
        .to_string();
    let phases = match field(study, &["phase"]).and_then(text_of) {
        None => Vec::new(),
        Some(p) if p.trim().eq_ignore_ascii_case("n/a") => vec![Phase::NotApplicable],
        Some(p) => Phase::parse_list(&p).ok_or_else(|| {
            err(
                "phase",
                format!("expected a phase such as `Phase 2` or `Phase 1/Phase 2`, found `{p}`"),
            )
        })?,
    };
    let conditions: Vec<String> = many(study.get("condition"))
        .into_iter()
        .filter_map(text_of)
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    let mut drugs = Vec::new();
    for (i, iv) in many(study.get("intervention")).into_iter().enumerate() {
        let ty = iv
            .get("intervention_type")
            .and_then(text_of)
            .unwrap_or_default()
            .to_lowercase();
        let name = iv
            .get("intervention_name")
            .and_then(text_of)
            .ok_or_else(|| {
                err(
                    &format!("intervention[{i}].intervention_name"),
                    "missing intervention name".into(),
                )
            })?;
        if DRUG_TYPES.contains(&ty.trim()) {
            drugs.push(Drug {
                name: name.trim().to_string(),
                smiles: None,
            });
        }
    }
    let criteria = field(study, &["eligibility", "criteria"])
        .and_then(text_of)
        .map(|t| Criteria::from_raw(&t.replace("\r\n", "\n").replace('\r', "\n")))
        .unwrap_or_default();
    let enrollment = match field(study, &["enrollment"]).and_then(text_of) {
        None => None,
        Some(e) if e.trim().is_empty() => None,
        Some(e) => Some(e.trim().parse::<u32>().map_err(|_| {
            err(
                "enrollment",
                format!("expected a count of participants, found `{e}`"),
            )
        })?),
    };
    let text = |k: &str| {
        study
            .get(k)
            .and_then(text_of)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
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
            status: text("overall_status"),
            why_stopped: text("why_stopped"),
        },
    })
}

// ---- JSON repairs -----------------------------------------------------------------------------

/// Parses `text` as JSON, applying the module's repairs (in order) only when it does not parse.
pub fn parse_json_repaired(text: &str) -> Result<(Value, Vec<&'static str>), String> {
    if let Ok(v) = serde_json::from_str::<Value>(text.trim()) {
        return Ok((v, Vec::new()));
    }
    let mut repairs = Vec::new();
    let mut s = text.to_string();
    if let Some(inner) = fenced(&s) {
        s = inner;
        repairs.push("fence");
        if let Ok(v) = serde_json::from_str::<Value>(s.trim()) {
            return Ok((v, repairs));
        }
    }
    let (object, outer) = outer_object(&s).ok_or("no JSON object in the file")?;
    if outer {
        repairs.push("outer-text");
    }
    s = object;
    if let Ok(v) = serde_json::from_str::<Value>(&s) {
        return Ok((v, repairs));
    }
    let (no_commas, changed) = drop_trailing_commas(&s);
    if changed {
        repairs.push("trailing-comma");
        s = no_commas;
        if let Ok(v) = serde_json::from_str::<Value>(&s) {
            return Ok((v, repairs));
        }
    }
    let (closed, changed) = close_open(&s);
    if changed {
        repairs.push("unclosed");
        if let Ok(v) = serde_json::from_str::<Value>(&closed) {
            return Ok((v, repairs));
        }
        s = closed;
    }
    let e = serde_json::from_str::<Value>(&s).expect_err("it did not parse above");
    Err(format!(
        "invalid JSON even after the repairs tried ({}): {e}",
        if repairs.is_empty() {
            "none applied".to_string()
        } else {
            repairs.join(", ")
        }
    ))
}

/// The content of the first Markdown code fence (```json or ```), if there is one.
fn fenced(s: &str) -> Option<String> {
    let start = s.find("```")?;
    let after = &s[start + 3..];
    let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
    let body = &after[body_start..];
    let end = body.find("```").unwrap_or(body.len());
    Some(body[..end].to_string())
}

/// Walks JSON text, calling `f(index, byte, in_string)` for each byte until `f` returns false;
/// returns whether the walk ended inside a string.
fn scan(s: &str, mut f: impl FnMut(usize, u8, bool) -> bool) -> bool {
    let (mut in_string, mut escaped) = (false, false);
    for (i, b) in s.bytes().enumerate() {
        let was_in = in_string;
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        }
        if !f(i, b, was_in) {
            break;
        }
    }
    in_string
}

/// The text from the first `{` to the brace that closes it (or to the end when it never closes);
/// `true` when something outside was dropped.
fn outer_object(s: &str) -> Option<(String, bool)> {
    let start = s.find('{')?;
    let body = &s[start..];
    let mut depth = 0i32;
    let mut end = None;
    scan(body, |i, b, in_string| {
        if !in_string {
            match b {
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i + 1);
                        return false;
                    }
                }
                _ => {}
            }
        }
        true
    });
    let end = end.unwrap_or(body.len());
    let dropped = !s[..start].trim().is_empty() || !body[end..].trim().is_empty();
    Some((body[..end].to_string(), dropped))
}

fn drop_trailing_commas(s: &str) -> (String, bool) {
    let bytes = s.as_bytes();
    let mut drop = vec![false; bytes.len()];
    let mut changed = false;
    scan(s, |i, b, in_string| {
        if !in_string && b == b',' {
            let next = bytes[i + 1..].iter().find(|c| !c.is_ascii_whitespace());
            if matches!(next, Some(b'}') | Some(b']')) {
                drop[i] = true;
                changed = true;
            }
        }
        true
    });
    let out: Vec<u8> = bytes
        .iter()
        .zip(&drop)
        .filter(|(_, &d)| !d)
        .map(|(&b, _)| b)
        .collect();
    (
        String::from_utf8(out).expect("only ASCII commas were dropped"),
        changed,
    )
}

/// Closes an unterminated string and the objects and arrays left open, innermost first.
fn close_open(s: &str) -> (String, bool) {
    let mut stack = Vec::new();
    let ends_in_string = scan(s, |_, b, in_string| {
        if !in_string {
            match b {
                b'{' => stack.push('}'),
                b'[' => stack.push(']'),
                b'}' | b']' => {
                    stack.pop();
                }
                _ => {}
            }
        }
        true
    });
    if stack.is_empty() && !ends_in_string {
        return (s.to_string(), false);
    }
    let mut out = s.trim_end().to_string();
    if ends_in_string {
        out.push('"');
    }
    // A dangling comma or colon before the closers cannot be completed: drop it.
    while out.ends_with(',') {
        out.pop();
    }
    for c in stack.iter().rev() {
        out.push(*c);
    }
    (out, true)
}

/// A synthetic set written by another tool as legacy records.
#[derive(Debug, Default)]
pub struct ForeignSet {
    pub trials: Vec<Trial>,
    /// Files that could not be read (only with `skip_bad`).
    pub skipped: Vec<ImportError>,
    /// JSON repairs applied, by kind, and the records that needed any.
    pub repaired: BTreeMap<String, usize>,
    pub repaired_records: usize,
    /// Records without an entry in the labels file.
    pub unlabelled: Vec<String>,
    /// Label entries that name no record of the set.
    pub labels_without_record: Vec<String>,
}

impl ForeignSet {
    /// What reading the set involved, in words: skipped files, repairs by kind, labels missing or
    /// naming no record, and the registry ids the records claim that belong to trials of `real`.
    pub fn notes(&self, labelled: bool, real: &[Trial]) -> Vec<String> {
        let first = |names: &[String]| names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        let mut notes = Vec::new();
        if !self.skipped.is_empty() {
            notes.push(format!(
                "{} records could not be read and were skipped",
                self.skipped.len()
            ));
        }
        if self.repaired_records > 0 {
            let kinds: Vec<String> = self
                .repaired
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            notes.push(format!(
                "{} of {} records were not valid JSON and were repaired ({})",
                self.repaired_records,
                self.trials.len() + self.skipped.len(),
                kinds.join(", ")
            ));
        }
        if !labelled {
            notes.push("no --labels given: the records are unlabelled".into());
        }
        if !self.unlabelled.is_empty() {
            notes.push(format!(
                "{} records have no entry in the labels file (left unlabelled): {}",
                self.unlabelled.len(),
                first(&self.unlabelled)
            ));
        }
        if !self.labels_without_record.is_empty() {
            notes.push(format!(
                "{} entries of the labels file name no record: {}",
                self.labels_without_record.len(),
                first(&self.labels_without_record)
            ));
        }
        let real_ids: std::collections::HashMap<&str, Split> =
            real.iter().map(|t| (t.id.as_str(), t.split)).collect();
        let claims: Vec<Split> = self
            .trials
            .iter()
            .filter_map(|t| match &t.source {
                Source::Synthetic {
                    claimed_id: Some(c),
                    ..
                } => real_ids.get(c.as_str()).copied(),
                _ => None,
            })
            .collect();
        notes.push(format!(
            "records are named EXT-<file name>; the registry ids they claim are kept as claimed_id only{}",
            if claims.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} claim the id of a real trial of this corpus, {} of them in the test split: made-up ids are no evidence of origin, so they are judged by content, as near copies)",
                    claims.len(),
                    claims.iter().filter(|s| **s == Split::Test).count()
                )
            }
        ));
        notes
    }
}

/// Reads a folder (or one file) of legacy records as a synthetic set. Each record gets the id
/// `EXT-<file name>`: the registry id it claims (often a made-up NCT id) is kept as `claimed_id`
/// only, so it can neither collide with a real trial in a corpus nor be taken for one in the
/// leakage check. Labels come from `labels` (see [`read_labels`]), by file name.
pub fn read_foreign_set(
    path: &Path,
    labels: Option<&Path>,
    skip_bad: bool,
) -> Result<ForeignSet, ImportError> {
    let labels = labels.map(read_labels).transpose()?;
    let files = if path.is_dir() {
        record_files(path)?
    } else {
        vec![path.to_path_buf()]
    };
    let set_name = path
        .file_name()
        .map_or("foreign set".into(), |n| n.to_string_lossy().into_owned());
    let mut out = ForeignSet::default();
    let mut used = std::collections::BTreeSet::new();
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let r = match read_file(&f) {
            Ok(r) => r,
            Err(e) if skip_bad => {
                out.skipped.push(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        for kind in &r.repairs {
            *out.repaired.entry(kind.to_string()).or_default() += 1;
        }
        out.repaired_records += !r.repairs.is_empty() as usize;
        let mut t = r.trial;
        let claimed = std::mem::replace(&mut t.id, format!("EXT-{name}"));
        t.source = Source::Synthetic {
            generator: format!("foreign set {set_name}"),
            claimed_id: Some(claimed).filter(|c| !c.is_empty()),
        };
        match labels.as_ref().map(|l| l.get(&name)) {
            Some(Some(&label)) => {
                t.label = Some(label);
                used.insert(name);
            }
            Some(None) => out.unlabelled.push(name),
            None => {}
        }
        out.trials.push(t);
    }
    if let Some(l) = &labels {
        out.labels_without_record = l.keys().filter(|k| !used.contains(*k)).cloned().collect();
    }
    Ok(out)
}

/// Labels of a foreign set: a CSV with columns `file,label` (file name without folder, label 0/1).
pub fn read_labels(path: &Path) -> Result<BTreeMap<String, crate::Label>, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| ImportError::Format {
            file: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| ImportError::Format {
            file: path.to_path_buf(),
            message: e.to_string(),
        })?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if header != ["file", "label"] {
        return Err(ImportError::Field {
            file: path.to_path_buf(),
            line: 1,
            field: "header".into(),
            message: format!("expected `file,label`, found `{}`", header.join(",")),
        });
    }
    let mut out = BTreeMap::new();
    for (i, row) in reader.records().enumerate() {
        let line = i as u64 + 2;
        let bad = |field: &str, message: String| ImportError::Field {
            file: path.to_path_buf(),
            line,
            field: field.into(),
            message,
        };
        let row = row.map_err(|e| bad("row", e.to_string()))?;
        let file = row.get(0).unwrap_or("").trim();
        if file.is_empty() || file.contains('/') {
            return Err(bad(
                "file",
                format!("expected a file name without folder, found `{file}`"),
            ));
        }
        let label = match row.get(1).map(str::trim) {
            Some("0") => crate::Label::Failure,
            Some("1") => crate::Label::Success,
            other => {
                return Err(bad(
                    "label",
                    format!("expected 0 or 1, found `{}`", other.unwrap_or("")),
                ))
            }
        };
        if out.insert(file.to_string(), label).is_some() {
            return Err(bad("file", format!("`{file}` is listed twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_are_applied_only_when_needed_and_named() {
        let (v, r) = parse_json_repaired(r#"{"a": 1}"#).unwrap();
        assert_eq!((v["a"].as_i64(), r.len()), (Some(1), 0));
        let (v, r) =
            parse_json_repaired("Here it is:\n```json\n{\"a\": [1, 2,],}\n```\nHope this helps")
                .unwrap();
        assert_eq!(v["a"][1], 2);
        assert_eq!(r, ["fence", "trailing-comma"]);
        let (v, r) = parse_json_repaired("{\"a\": {\"b\": \"text with } brace").unwrap();
        assert_eq!(v["a"]["b"], "text with } brace");
        assert_eq!(r, ["unclosed"]);
        let (v, r) = parse_json_repaired("{\"a\": 1} and then some words {").unwrap();
        assert_eq!((v["a"].as_i64(), r), (Some(1), vec!["outer-text"]));
        let err = parse_json_repaired("{\"a\": nope}").unwrap_err();
        assert!(err.contains("invalid JSON"), "{err}");
        assert!(parse_json_repaired("no json here").is_err());
    }
}
