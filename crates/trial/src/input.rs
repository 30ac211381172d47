//! One trial from a JSON value, in whichever shape a user or another program has it: a
//! ClinicalTrials.gov API v2 study, a TOP CSV row as a JSON object, a trialforge trial record, or
//! the fields of a form (title, conditions, drugs, phase, inclusion and exclusion criteria). Used
//! where trials arrive one at a time (the HTTP API, the Python package), not from files.

use std::path::Path;

use serde_json::{Map, Value};

use crate::ctgov::kind;
use crate::pylit::parse_str_list;
use crate::record::{Criteria, Drug, Phase, Protocol, Source, Trial};

/// The shapes [`trial_from_json`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputShape {
    CtgovStudy,
    TopRow,
    Trial,
    Form,
}

/// What is wrong with an input, naming the field and what was expected, in words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("field `{field}`: {expected}")]
pub struct InputError {
    /// The field, as a JSON path (`protocolSection.designModule.phases`, `phase`, `drugs[1]`).
    pub field: String,
    /// What was expected there, and what was found.
    pub expected: String,
}

fn err(field: impl Into<String>, expected: impl Into<String>) -> InputError {
    InputError {
        field: field.into(),
        expected: expected.into(),
    }
}

/// Which shape `value` has: `protocolSection` is a study, `nctid` or `smiless` a TOP row,
/// `protocol` a trial record; any other object is read as a form.
pub fn shape_of(value: &Value) -> Result<InputShape, InputError> {
    let obj = value.as_object().ok_or_else(|| {
        err(
            "$",
            format!(
                "expected a JSON object (a trial, a ClinicalTrials.gov study or a TOP row), found {}",
                kind(value)
            ),
        )
    })?;
    Ok(if obj.contains_key("protocolSection") {
        InputShape::CtgovStudy
    } else if obj.contains_key("protocol") {
        InputShape::Trial
    } else if obj.contains_key("nctid") || obj.contains_key("smiless") {
        InputShape::TopRow
    } else {
        InputShape::Form
    })
}

/// Reads one trial. Status, stop reason and label, if given, are kept as they are in files (the
/// label and post-hoc fields never reach a model).
pub fn trial_from_json(value: &Value) -> Result<(Trial, InputShape), InputError> {
    let shape = shape_of(value)?;
    let obj = value.as_object().expect("shape_of checked it is an object");
    let trial = match shape {
        InputShape::CtgovStudy => {
            let trials = crate::ctgov::from_document(value, Path::new("request"), None).map_err(
                |e| match e {
                    crate::ImportError::Json { path, message, .. } => err(path, message),
                    other => err("$", other.to_string()),
                },
            )?;
            trials
                .into_iter()
                .next()
                .ok_or_else(|| err("$", "expected one study"))?
        }
        InputShape::Trial => serde_json::from_value::<Trial>(value.clone())
            .map_err(|e| err("$", format!("expected a trialforge trial record: {e}")))?,
        InputShape::TopRow => top_row(obj)?,
        InputShape::Form => form(obj)?,
    };
    if trial.protocol.phases.is_empty() {
        return Err(err(
            "phase",
            "expected a phase such as `phase 1` or `phase 2/phase 3`",
        ));
    }
    Ok((trial, shape))
}

/// A string field, or none when absent or null.
fn opt_string(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, InputError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(err(field, format!("expected a string, found {}", kind(v)))),
    }
}

/// A list of strings: a JSON array of strings, a Python list literal as TOP writes it
/// (`"['a', 'b']"`), or, with `split`, text split on that separator.
fn string_list(
    obj: &Map<String, Value>,
    field: &str,
    split: Option<char>,
) -> Result<Vec<String>, InputError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.trim().to_string()),
                other => Err(err(
                    format!("{field}[{i}]"),
                    format!("expected a string, found {}", kind(other)),
                )),
            })
            .filter(|r| r.as_ref().map_or(true, |s| !s.is_empty()))
            .collect(),
        Some(Value::String(s)) if s.trim_start().starts_with('[') => {
            parse_str_list(s).map_err(|m| err(field, format!("expected a list of strings: {m}")))
        }
        Some(Value::String(s)) => Ok(match split {
            Some(sep) => s
                .split(sep)
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect(),
            None if s.trim().is_empty() => Vec::new(),
            None => vec![s.trim().to_string()],
        }),
        Some(v) => Err(err(
            field,
            format!("expected a list of strings, found {}", kind(v)),
        )),
    }
}

fn phases(obj: &Map<String, Value>, field: &str) -> Result<Vec<Phase>, InputError> {
    let Some(text) = opt_string(obj, field)? else {
        return Err(err(
            field,
            "missing: expected a phase such as `phase 1` or `phase 2/phase 3`",
        ));
    };
    Phase::parse_list(&text).ok_or_else(|| {
        err(
            field,
            format!("expected a phase such as `phase 1`, `phase 2/phase 3` or `Phase II`, found `{text}`"),
        )
    })
}

fn id_of(obj: &Map<String, Value>, field: &str) -> Result<String, InputError> {
    Ok(opt_string(obj, field)?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "input".to_string()))
}

/// `icdcodes`: one list per condition, as an array of arrays, or as TOP's stringified lists.
fn icd_codes(obj: &Map<String, Value>) -> Result<Vec<Vec<String>>, InputError> {
    if let Some(Value::Array(items)) = obj.get("icdcodes") {
        if items.iter().any(Value::is_array) {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let mut one = Map::new();
                one.insert("codes".into(), item.clone());
                out.push(
                    string_list(&one, "codes", None)
                        .map_err(|e| err(format!("icdcodes[{i}]"), e.expected))?,
                );
            }
            return Ok(out);
        }
    }
    string_list(obj, "icdcodes", None)?
        .iter()
        .map(|inner| {
            if inner.trim_start().starts_with('[') {
                parse_str_list(inner)
            } else {
                Ok(vec![inner.clone()])
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| {
            err(
                "icdcodes",
                format!("expected a list of stringified lists: {m}"),
            )
        })
}

fn top_row(obj: &Map<String, Value>) -> Result<Trial, InputError> {
    let icd_codes = icd_codes(obj)?;
    let drugs = Drug::by_position(
        string_list(obj, "drugs", None)?,
        &string_list(obj, "smiless", None)?,
    );
    Ok(input_trial(
        id_of(obj, "nctid")?,
        Protocol {
            title: opt_string(obj, "title")?.unwrap_or_default(),
            phases: phases(obj, "phase")?,
            conditions: string_list(obj, "diseases", None)?,
            icd_codes,
            drugs,
            criteria: Criteria::from_raw(&opt_string(obj, "criteria")?.unwrap_or_default()),
            enrollment: None,
        },
    ))
}

/// A trial that arrived as input: no label, no split, no post-hoc facts; its source says so.
fn input_trial(id: String, protocol: Protocol) -> Trial {
    Trial {
        id,
        source: Source::Synthetic {
            generator: "input".into(),
            claimed_id: None,
        },
        protocol,
        label: None,
        split: Default::default(),
        post_hoc: Default::default(),
    }
}

/// Criteria as the form gives them: inclusion and exclusion as lists or as text (one item per
/// line), or the raw text under `criteria`.
fn form_criteria(obj: &Map<String, Value>) -> Result<Criteria, InputError> {
    let inclusion = string_list(obj, "inclusion", Some('\n'))?;
    let exclusion = string_list(obj, "exclusion", Some('\n'))?;
    if inclusion.is_empty() && exclusion.is_empty() {
        return Ok(Criteria::from_raw(
            &opt_string(obj, "criteria")?.unwrap_or_default(),
        ));
    }
    let strip = |items: Vec<String>| -> Vec<String> {
        items
            .into_iter()
            .map(|s| {
                s.trim_start_matches(['-', '*', '•', ' '])
                    .trim()
                    .to_string()
            })
            .filter(|s| !s.is_empty())
            .collect()
    };
    let (inclusion, exclusion) = (strip(inclusion), strip(exclusion));
    let raw = format!(
        "Inclusion Criteria:\n{}\nExclusion Criteria:\n{}",
        inclusion
            .iter()
            .map(|s| format!("- {s}"))
            .collect::<Vec<_>>()
            .join("\n"),
        exclusion
            .iter()
            .map(|s| format!("- {s}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(Criteria {
        raw,
        inclusion,
        exclusion,
    })
}

fn form(obj: &Map<String, Value>) -> Result<Trial, InputError> {
    const KNOWN: [&str; 9] = [
        "id",
        "title",
        "phase",
        "conditions",
        "drugs",
        "smiles",
        "inclusion",
        "exclusion",
        "criteria",
    ];
    if let Some(unknown) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(err(
            unknown.as_str(),
            format!(
                "unknown field; a form has {}, a ClinicalTrials.gov study has `protocolSection`, a TOP row has `nctid`",
                KNOWN.map(|k| format!("`{k}`")).join(", ")
            ),
        ));
    }
    let drugs = Drug::by_position(
        string_list(obj, "drugs", Some(';'))?,
        &string_list(obj, "smiles", Some(';'))?,
    );
    let conditions = string_list(obj, "conditions", Some(';'))?;
    let criteria = form_criteria(obj)?;
    if drugs.is_empty() && conditions.is_empty() && criteria.raw.trim().is_empty() {
        return Err(err(
            "$",
            "expected at least one of `drugs`, `conditions` or criteria (`inclusion`, `exclusion` or `criteria`)",
        ));
    }
    Ok(input_trial(
        id_of(obj, "id")?,
        Protocol {
            title: opt_string(obj, "title")?.unwrap_or_default(),
            phases: phases(obj, "phase")?,
            conditions,
            icd_codes: Vec::new(),
            drugs,
            criteria,
            enrollment: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_form_a_top_row_and_names_bad_fields() {
        let (t, shape) = trial_from_json(&json!({
            "title": "Drug X in adults",
            "phase": "phase 2",
            "conditions": "asthma; copd",
            "drugs": ["drug x"],
            "inclusion": "- adults\n- FEV1 < 80%",
            "exclusion": "pregnancy"
        }))
        .unwrap();
        assert_eq!(shape, InputShape::Form);
        assert_eq!(t.protocol.conditions, ["asthma", "copd"]);
        assert_eq!(t.protocol.criteria.inclusion, ["adults", "FEV1 < 80%"]);
        assert_eq!(t.protocol.criteria.exclusion, ["pregnancy"]);

        let (t, shape) = trial_from_json(&json!({
            "nctid": "NCT00000001", "phase": "phase 1", "diseases": "['asthma']",
            "icdcodes": "[\"['J45']\"]", "drugs": "['drug x']", "smiless": "['CCO']",
            "criteria": "Inclusion Criteria:\n- adults"
        }))
        .unwrap();
        assert_eq!(shape, InputShape::TopRow);
        assert_eq!(t.protocol.icd_codes, vec![vec!["J45".to_string()]]);
        assert_eq!(t.protocol.drugs[0].smiles.as_deref(), Some("CCO"));

        let e = trial_from_json(&json!({"phase": "phase 9", "drugs": ["x"]})).unwrap_err();
        assert_eq!(e.field, "phase");
        let e = trial_from_json(&json!({"phase": "phase 1", "drugs": [1]})).unwrap_err();
        assert_eq!(e.field, "drugs[0]");
        let e = trial_from_json(&json!({"phase": "phase 1", "drug": "x"})).unwrap_err();
        assert_eq!(e.field, "drug");
        let e = trial_from_json(&json!([1])).unwrap_err();
        assert_eq!(e.field, "$");
    }
}
