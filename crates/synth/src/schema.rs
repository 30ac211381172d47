//! The published JSON Schema of a synthetic trial (`schemas/synthetic-trial.schema.json`) and the
//! typed record it describes.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use trialforge_trial::{Criteria, Drug, Phase, Protocol};

/// The schema text, as published in the repository.
pub const SCHEMA_JSON: &str = include_str!("../../../schemas/synthetic-trial.schema.json");

pub fn schema() -> &'static serde_json::Value {
    static S: OnceLock<serde_json::Value> = OnceLock::new();
    S.get_or_init(|| serde_json::from_str(SCHEMA_JSON).expect("the bundled schema is valid JSON"))
}

/// Narrowings of one request's schema beyond the drug and the phase.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestConstraints {
    /// Enrollment range (min, max): the realism gate's bound for the phase.
    pub enrollment: Option<(u32, u32)>,
    /// The only condition names allowed (`--conditions-from-examples`).
    pub conditions: Option<Vec<String>>,
}

/// The schema of one request: the published schema, narrowed so that the drugs start with the
/// requested drug and the phases with the requested phase, and by `constraints`. Every document it
/// accepts, the published schema accepts too; constrained decoding then cannot miss the drug, the
/// phase or the enrollment range.
pub fn request_schema(
    drug: &str,
    phase: Phase,
    constraints: &RequestConstraints,
) -> serde_json::Value {
    let mut s = schema().clone();
    let phase = serde_json::to_value(phase).expect("phases serialise");
    s["properties"]["drugs"]["prefixItems"] = serde_json::json!([{ "const": drug }]);
    s["properties"]["phases"]["prefixItems"] = serde_json::json!([{ "const": phase }]);
    if let Some((min, max)) = constraints.enrollment {
        let e = &mut s["properties"]["design"]["properties"]["enrollment"];
        let (lo, hi) = (
            e["minimum"].as_u64().unwrap_or(1),
            e["maximum"].as_u64().unwrap_or(u64::MAX),
        );
        e["minimum"] = (min as u64).clamp(lo, hi).into();
        e["maximum"] = (max as u64).clamp(lo, hi).into();
    }
    if let Some(names) = constraints.conditions.as_ref().filter(|n| !n.is_empty()) {
        // Within the published bounds on a condition's length.
        let names: Vec<&String> = names
            .iter()
            .filter(|n| (2..=100).contains(&n.chars().count()))
            .collect();
        if !names.is_empty() {
            s["properties"]["conditions"]["items"] = serde_json::json!({ "enum": names });
            s["properties"]["conditions"]["uniqueItems"] = true.into();
        }
    }
    s
}

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| jsonschema::validator_for(schema()).expect("the bundled schema compiles"))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Design {
    pub allocation: String,
    pub masking: String,
    pub enrollment: u32,
}

/// What the LLM writes (see the schema).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedTrial {
    pub title: String,
    pub phases: Vec<Phase>,
    pub conditions: Vec<String>,
    pub drugs: Vec<String>,
    pub inclusion_criteria: Vec<String>,
    pub exclusion_criteria: Vec<String>,
    pub design: Design,
    pub primary_outcome: String,
    pub rationale: String,
}

impl GeneratedTrial {
    /// Parses model output and checks it against the published schema. Errors list every violation
    /// with its JSON path.
    pub fn parse(text: &str) -> Result<GeneratedTrial, String> {
        let value: serde_json::Value =
            serde_json::from_str(text.trim()).map_err(|e| format!("not JSON: {e}"))?;
        let errors: Vec<String> = validator()
            .iter_errors(&value)
            .map(|e| format!("{}: {}", e.instance_path(), e))
            .collect();
        if !errors.is_empty() {
            return Err(format!("schema: {}", errors.join("; ")));
        }
        serde_json::from_value(value).map_err(|e| format!("schema: {e}"))
    }

    /// The protocol of this trial, in trialforge's record shape (SMILES filled from the drug pool).
    pub fn to_protocol(&self, smiles: impl Fn(&str) -> Option<String>) -> Protocol {
        Protocol {
            title: self.title.clone(),
            phases: self.phases.clone(),
            conditions: self.conditions.clone(),
            icd_codes: Vec::new(),
            drugs: self
                .drugs
                .iter()
                .map(|d| Drug {
                    name: d.clone(),
                    smiles: smiles(d),
                })
                .collect(),
            criteria: Criteria {
                raw: format!(
                    "Inclusion Criteria:\n{}\nExclusion Criteria:\n{}",
                    self.inclusion_criteria
                        .iter()
                        .map(|i| format!("- {i}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    self.exclusion_criteria
                        .iter()
                        .map(|i| format!("- {i}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
                inclusion: self.inclusion_criteria.clone(),
                exclusion: self.exclusion_criteria.clone(),
            },
            enrollment: Some(self.design.enrollment),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn good() -> serde_json::Value {
        serde_json::json!({
            "title": "A phase 2 study of metformin in prediabetes",
            "phases": ["PHASE2"],
            "conditions": ["prediabetes"],
            "drugs": ["metformin", "placebo"],
            "inclusion_criteria": ["adults aged 18 to 65"],
            "exclusion_criteria": ["type 1 diabetes"],
            "design": {"allocation": "RANDOMIZED", "masking": "DOUBLE", "enrollment": 120},
            "primary_outcome": "change in HbA1c at 24 weeks",
            "rationale": "metformin lowers glucose"
        })
    }

    #[test]
    fn the_published_schema_accepts_a_good_trial_and_rejects_violations() {
        let t = GeneratedTrial::parse(&good().to_string()).unwrap();
        assert_eq!(t.phases, vec![Phase::Phase2]);
        let p = t.to_protocol(|d| (d == "metformin").then(|| "CN(C)C(=N)N=C(N)N".to_string()));
        assert_eq!(p.criteria.exclusion, vec!["type 1 diabetes"]);
        assert!(p.drugs[0].smiles.is_some() && p.drugs[1].smiles.is_none());

        let mut extra = good();
        extra["investigator"] = "Dr. Smith".into();
        assert!(GeneratedTrial::parse(&extra.to_string())
            .unwrap_err()
            .contains("investigator"));
        let mut empty = good();
        empty["inclusion_criteria"] = serde_json::json!([]);
        assert!(GeneratedTrial::parse(&empty.to_string())
            .unwrap_err()
            .contains("/inclusion_criteria"));
        let mut phase = good();
        phase["phases"] = serde_json::json!(["PHASE9"]);
        assert!(GeneratedTrial::parse(&phase.to_string()).is_err());
        assert!(GeneratedTrial::parse("{\"title\": ")
            .unwrap_err()
            .starts_with("not JSON"));
    }

    #[test]
    fn request_schema_narrows_the_published_one() {
        let narrow = jsonschema::validator_for(&request_schema(
            "metformin",
            Phase::Phase2,
            &Default::default(),
        ))
        .unwrap();
        assert!(narrow.is_valid(&good()));
        let mut other = good();
        other["drugs"] = serde_json::json!(["placebo", "metformin"]);
        assert!(
            !narrow.is_valid(&other),
            "the requested drug must come first"
        );
        assert!(
            validator().is_valid(&other),
            "the published schema allows any order"
        );
        let mut phase = good();
        phase["phases"] = serde_json::json!(["PHASE3"]);
        assert!(!narrow.is_valid(&phase));

        let tight = RequestConstraints {
            enrollment: Some((10, 500)),
            conditions: Some(vec!["prediabetes".into(), "obesity".into()]),
        };
        let narrow =
            jsonschema::validator_for(&request_schema("metformin", Phase::Phase2, &tight)).unwrap();
        assert!(narrow.is_valid(&good()));
        let mut big = good();
        big["design"]["enrollment"] = 60_123.into();
        assert!(!narrow.is_valid(&big) && validator().is_valid(&big));
        let mut made_up = good();
        made_up["conditions"] = serde_json::json!(["SYMBOLS"]);
        assert!(!narrow.is_valid(&made_up) && validator().is_valid(&made_up));
    }
}
