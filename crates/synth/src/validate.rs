//! Validation of a generated trial. Every rule has a name, so a run can count its rejects by reason:
//!
//! - `schema`: the output parses and satisfies the published JSON Schema.
//! - `drug`: the requested drug is among the trial's drugs.
//! - `phase`: the requested phase is among the trial's phases.
//! - `criteria`: inclusion and exclusion criteria are non-empty (after trimming).
//! - `content`: no placeholder text (`PURPOSE_RESULTS`-style tokens), no one-word criteria, no
//!   instructions from the prompt echoed back: what small models write when they have nothing to say;
//!   and no title that states the outcome ("Successful Clinical Trial of ..."): the prompt asks for a
//!   trial that will succeed or fail, and a title that says so hands the label to any model trained
//!   on the set (a registered protocol cannot know its outcome).
//! - `personal`: no e-mail addresses, phone numbers, people's names with titles, or registry ids
//!   (the reference outputs fabricate all four).
//! - `near-copy`: the trial's embedding is closer than the threshold to some real trial, or it shares
//!   a long run of words with one of the prompt's examples: a paraphrase, not a new trial.
//! - `duplicate`: too close to a synthetic trial already accepted in this run.

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::plan::Cell;
use crate::schema::GeneratedTrial;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidationConfig {
    /// Reject when the cosine to the nearest real trial is above this.
    pub near_copy_cosine: f32,
    /// Reject when this many consecutive words are shared with a prompt example.
    pub max_shared_words: usize,
    /// Reject when the cosine to an accepted synthetic trial is above this.
    pub duplicate_cosine: f32,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            near_copy_cosine: 0.97,
            max_shared_words: 12,
            duplicate_cosine: 0.98,
        }
    }
}

/// Why an output was rejected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reject {
    pub rule: String,
    pub detail: String,
}

impl Reject {
    pub fn new(rule: &str, detail: impl Into<String>) -> Reject {
        Reject {
            rule: rule.into(),
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)
    }
}

fn personal_patterns() -> &'static [(Regex, &'static str)] {
    static P: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    P.get_or_init(|| {
        [
            (r"[\w.+-]+@[\w-]+\.[\w.-]+", "an e-mail address"),
            (r"\(?\b\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b", "a phone number"),
            (
                r"\+\d{1,3}[\s.-]?\(?\d{1,4}\)?[\s.-]?\d{3,4}[\s.-]?\d{3,4}",
                "a phone number",
            ),
            (
                r"\b(?:Dr|Prof|Mr|Mrs|Ms)\.?\s+[A-Z][a-z]+",
                "a person's name",
            ),
            (r"\bNCT\d{8}\b", "a registry identifier"),
        ]
        .into_iter()
        .map(|(re, what)| (Regex::new(re).expect("static regex"), what))
        .collect()
    })
}

/// All the trial's free text, for the text checks.
pub fn all_text(g: &GeneratedTrial) -> String {
    let mut parts = vec![
        g.title.as_str(),
        g.primary_outcome.as_str(),
        g.rationale.as_str(),
    ];
    parts.extend(g.conditions.iter().map(String::as_str));
    parts.extend(g.drugs.iter().map(String::as_str));
    parts.extend(g.inclusion_criteria.iter().map(String::as_str));
    parts.extend(g.exclusion_criteria.iter().map(String::as_str));
    parts.join("\n")
}

/// The rules that need only the output and the request: drug, phase, criteria, personal data.
pub fn check_content(g: &GeneratedTrial, cell: &Cell) -> Result<(), Reject> {
    let want = cell.drug.to_lowercase();
    let has_drug = g.drugs.iter().any(|d| {
        let d = d.to_lowercase();
        d == want || d.contains(&want) || (d.len() >= 4 && want.contains(&d))
    });
    if !has_drug {
        return Err(Reject::new(
            "drug",
            format!("requested `{}`, got {:?}", cell.drug, g.drugs),
        ));
    }
    if !g.phases.contains(&cell.phase) {
        return Err(Reject::new(
            "phase",
            format!("requested {}, got {:?}", cell.phase, g.phases),
        ));
    }
    let blank = |items: &[String]| items.iter().all(|i| i.trim().is_empty());
    if blank(&g.inclusion_criteria) || blank(&g.exclusion_criteria) {
        return Err(Reject::new(
            "criteria",
            "inclusion or exclusion criteria are empty",
        ));
    }
    let placeholder = |s: &str| {
        let t = s.trim();
        t.contains('_')
            && t.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    };
    let fields = [
        g.title.as_str(),
        g.primary_outcome.as_str(),
        g.rationale.as_str(),
    ];
    let lists = [&g.conditions, &g.inclusion_criteria, &g.exclusion_criteria];
    if let Some(p) = fields
        .into_iter()
        .chain(lists.iter().flat_map(|l| l.iter().map(String::as_str)))
        .find(|s| placeholder(s))
    {
        return Err(Reject::new("content", format!("placeholder text `{p}`")));
    }
    if let Some(i) = g
        .inclusion_criteria
        .iter()
        .chain(&g.exclusion_criteria)
        .find(|i| i.split_whitespace().count() < 2)
    {
        return Err(Reject::new(
            "content",
            format!("a one-word criterion `{i}`"),
        ));
    }
    let echo = [
        "do not copy",
        "answer with one json",
        "use no names of people",
    ];
    let lower = all_text(g).to_lowercase();
    if let Some(e) = echo.iter().find(|e| lower.contains(*e)) {
        return Err(Reject::new(
            "content",
            format!("the prompt's instruction echoed back (`{e}`)"),
        ));
    }
    static OUTCOME_TITLE: OnceLock<Regex> = OnceLock::new();
    let outcome_title = OUTCOME_TITLE.get_or_init(|| {
        // "Successful Phase 1 Clinical Trial of", "A Failed Study of"; not "patients who failed
        // prior therapy: a phase 2 study".
        Regex::new(
            r"(?i)\b(un)?successful\s+(\S+\s+){0,3}(trial|study)\b|(^|\ba\s+)failed\s+(\S+\s+){0,2}(trial|study)\b",
        )
        .expect("static regex")
    });
    if let Some(m) = outcome_title.find(&g.title) {
        return Err(Reject::new(
            "content",
            format!("the title states the outcome (`{}`)", m.as_str()),
        ));
    }
    let text = all_text(g);
    for (re, what) in personal_patterns() {
        if let Some(m) = re.find(&text) {
            return Err(Reject::new("personal", format!("{what}: `{}`", m.as_str())));
        }
    }
    Ok(())
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Length of the longest run of consecutive words that `a` and `b` share.
pub fn longest_shared_run(a: &str, b: &str) -> usize {
    let (a, b) = (words(a), words(b));
    let mut prev = vec![0usize; b.len() + 1];
    let mut best = 0;
    for x in &a {
        let mut cur = vec![0usize; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            if x == y {
                cur[j + 1] = prev[j] + 1;
                best = best.max(cur[j + 1]);
            }
        }
        prev = cur;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use trialforge_trial::{Label, Phase};

    fn cell() -> Cell {
        Cell {
            index: 0,
            drug: "metformin".into(),
            label: Label::Success,
            phase: Phase::Phase2,
        }
    }

    fn trial() -> GeneratedTrial {
        GeneratedTrial::parse(&crate::schema::tests::good().to_string()).unwrap()
    }

    #[test]
    fn each_content_rule_rejects_with_its_name() {
        assert!(check_content(&trial(), &cell()).is_ok());
        let rule = |g: GeneratedTrial| check_content(&g, &cell()).unwrap_err().rule;

        let mut g = trial();
        g.drugs = vec!["insulin".into()];
        assert_eq!(rule(g), "drug");
        let mut g = trial();
        g.phases = vec![Phase::Phase3];
        assert_eq!(rule(g), "phase");
        let mut g = trial();
        g.exclusion_criteria = vec!["   ".into()];
        assert_eq!(rule(g), "criteria");
        let mut g = trial();
        g.conditions = vec!["SYMBOLS_AND_CONDITIONS".into()];
        assert_eq!(rule(g), "content");
        let mut g = trial();
        g.inclusion_criteria = vec!["adults".into()];
        assert_eq!(rule(g), "content");
        let mut g = trial();
        g.rationale = "DO NOT copy the examples.".into();
        assert_eq!(rule(g), "content");
        for title in [
            "Successful Clinical Trial of Sunitinib Malate",
            "Successful Phase 1 Clinical Trial of Sunitinib Malate for Lung Cancer",
            "A failed study of metformin",
        ] {
            let mut g = trial();
            g.title = title.into();
            assert_eq!(rule(g), "content", "{title}");
        }
        // Real titles say "failed" of patients, not of the trial.
        let mut g = trial();
        g.title = "Metformin in patients who failed prior therapy: a phase 2 study".into();
        assert!(check_content(&g, &cell()).is_ok());
        for pii in [
            "contact trials@example.org",
            "call (617) 555-0100",
            "call +44 20 7946 0958",
            "led by Dr. Smith",
            "see NCT01234567",
        ] {
            let mut g = trial();
            g.rationale = pii.into();
            assert_eq!(rule(g), "personal", "{pii}");
        }
        // Lab values and ranges are not phone numbers.
        let mut g = trial();
        g.inclusion_criteria =
            vec!["platelets >= 100,000/mm3 and age 18-65, HbA1c 7.0-10.0%".into()];
        assert!(check_content(&g, &cell()).is_ok());
        // The drug may be named with a dose or brand suffix.
        let mut g = trial();
        g.drugs = vec!["Metformin XR 500 mg".into()];
        assert!(check_content(&g, &cell()).is_ok());
    }

    #[test]
    fn shared_runs_of_words() {
        assert_eq!(longest_shared_run("a b c d e", "x b c d y"), 3);
        assert_eq!(
            longest_shared_run("Adults, aged 18-65!", "adults aged 18 65"),
            4
        );
        assert_eq!(longest_shared_run("a b", "c d"), 0);
    }
}
