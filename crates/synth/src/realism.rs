//! The realism gate: reject rules for generated trials that no reader would believe. Every threshold
//! is derived from the real corpus when a run starts, and the same code is run on held-out real
//! trials, so each rule's real pass rate is known (a rule that rejects more than 1 % of real trials
//! is miscalibrated, and the run says so).
//!
//! - `offensive`: a word that the profanity lists of [`rustrict`] (a maintained filter with typed,
//!   graded word lists) rate profane or offensive at moderate severity or above, as a whole word,
//!   unless real trials or ICD-10 use it themselves (clinical text says "anal", "retarded release").
//! - `lexical`: the share of the trial's words (3+ letters) that are known (used by at least
//!   `min_doc_freq` reference trials, or in an ICD-10 description or a real drug name) is below the
//!   threshold: a low quantile of the same share over real trials, each scored out of fold (its
//!   words counted without its own fold, as a new trial's would be).
//! - `condition`: a condition matches no real condition or ICD-10 description (normalised), and more
//!   than half of its words are unknown (condition words and common medical suffixes count as known).
//! - `drug-name`: a drug holds a run of letters such as `[AACCCAABAAEB`, or is not a real drug name
//!   and reads as a condition (two or more, and over half, of its words are condition words, none
//!   a drug word).
//!   Unseen names alone are no reason: new drugs are an open set of code names and INNs.
//! - `contradiction`: exclusion criteria that repeat inclusion criteria (the same words, case and
//!   punctuation aside; "stage-III melanoma" in one list and "Stage III Melanoma" in the other),
//!   for a larger share of the inclusion items than any reference trial repeats. Real protocols do
//!   repeat a few items (cohort headings such as "Part A", "Additional criteria may apply", a
//!   cohort's own limit), never most of their inclusion list.
//! - `enrollment`: the enrollment lies outside what real trials of the phase show (their min..max,
//!   from trials that carry one); for a phase with too few such trials, a stated, assumed bound.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use regex::Regex;
use rustrict::{Censor, Type};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trialforge_trial::icd::IcdEntry;
use trialforge_trial::{Phase, Protocol, Trial};

use crate::validate::Reject;

/// The gate's rules, in the order they are checked (the first failing one names the reject).
pub const GATE_RULES: [&str; 6] = [
    "offensive",
    "condition",
    "drug-name",
    "contradiction",
    "enrollment",
    "lexical",
];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GateConfig {
    /// Quantile of the real trials' out-of-fold lexical shares used as the lexical threshold.
    pub lexical_quantile: f64,
    /// A word is known when at least this many reference trials use it.
    pub min_doc_freq: u32,
    /// Folds for the out-of-fold lexical shares.
    pub folds: usize,
    /// An unmatched condition resolves when at most this share of its words is unknown.
    pub condition_max_unknown_share: f64,
    /// Real trials of a phase that carry an enrollment, needed to derive that phase's range.
    pub min_enrollment_trials: usize,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            lexical_quantile: 0.002,
            min_doc_freq: 2,
            folds: 5,
            condition_max_unknown_share: 0.5,
            min_enrollment_trials: 20,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoundSource {
    /// min..max of the real trials of the phase.
    Real,
    /// Too few real trials of the phase carry an enrollment (TOP files carry none): a wide bound
    /// stated here, not derived.
    Assumed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentBound {
    pub phase: Phase,
    pub min: u32,
    pub max: u32,
    /// Real trials of the phase with an enrollment.
    pub trials: usize,
    pub source: BoundSource,
}

/// Assumed upper bounds where the corpus has no enrollment figures for a phase. Wide on purpose:
/// they stop absurd values (60,123 participants in a phase 1/2 trial), not unusual ones.
fn assumed_max(phase: Phase) -> u32 {
    match phase {
        Phase::EarlyPhase1 => 500,
        Phase::Phase1 => 1_000,
        Phase::Phase2 => 5_000,
        Phase::Phase3 => 50_000,
        Phase::Phase4 | Phase::NotApplicable => 100_000,
    }
}

const PHASES: [Phase; 5] = [
    Phase::EarlyPhase1,
    Phase::Phase1,
    Phase::Phase2,
    Phase::Phase3,
    Phase::Phase4,
];

/// Everything the gate decided from the real corpus: printed when a run starts, and kept in the
/// provenance of every accepted trial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateThresholds {
    pub reference_trials: usize,
    pub vocabulary_words: usize,
    pub known_conditions: usize,
    pub drug_names: usize,
    pub lexical_min_share: f64,
    pub lexical_quantile: f64,
    pub min_doc_freq: u32,
    pub condition_max_unknown_share: f64,
    /// The largest share of its inclusion items any reference trial repeats as exclusion items.
    #[serde(default)]
    pub contradiction_max_share: f64,
    pub enrollment: Vec<EnrollmentBound>,
    /// sha256 prefix over the settings above and the vocabulary: names this gate.
    pub digest: String,
}

/// A rule's pass rate on held-out real trials.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RulePassRate {
    pub rule: String,
    /// Held-out trials the rule could judge (trials without an enrollment are not judged by
    /// `enrollment`).
    pub trials: usize,
    pub passed: usize,
    pub rate: f64,
}

/// The gate run on held-out real trials.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Calibration {
    /// Which real trials: the excluded splits, or, without any, every fifth reference trial judged
    /// by a gate built from the other four fifths.
    pub heldout: String,
    pub trials: usize,
    pub rules: Vec<RulePassRate>,
    /// Share of held-out trials that pass every rule.
    pub all_rules: f64,
    /// Rules that reject more than 1 % of held-out real trials.
    pub miscalibrated: Vec<String>,
}

/// What the gate says of one trial.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GateVerdict {
    /// Every rule that failed, in [`GATE_RULES`] order.
    pub rejects: Vec<Reject>,
    pub lexical_share: f64,
}

pub struct RealismGate {
    doc_freq: HashMap<String, u32>,
    /// Words known whatever their document frequency: ICD-10 descriptions, real drug names.
    always_known: HashSet<String>,
    /// Words of real conditions and ICD-10 descriptions.
    condition_words: HashSet<String>,
    known_conditions: HashSet<String>,
    drug_names: HashSet<String>,
    /// Words of real drug names.
    drug_words: HashSet<String>,
    bounds: BTreeMap<Phase, EnrollmentBound>,
    cfg: GateConfig,
    pub thresholds: GateThresholds,
}

fn word_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new("[a-z]{3,}").expect("static regex"))
}

/// Lower-cased words of 3+ letters: the unit of every lexical rule.
pub fn words(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    word_re()
        .find_iter(&lower)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// Lower-cased letters and digits, one space between runs: how names are matched.
pub fn normalise(text: &str) -> String {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The exclusion items that, normalised, are also inclusion items, and the inclusion item count.
/// Items with no word of 3+ letters are not judged.
fn repeated_items(p: &Protocol) -> (Vec<&str>, usize) {
    let inclusion: HashSet<String> = p.criteria.inclusion.iter().map(|i| normalise(i)).collect();
    let repeated = p
        .criteria
        .exclusion
        .iter()
        .filter(|e| !words(e).is_empty() && inclusion.contains(&normalise(e)))
        .map(String::as_str)
        .collect();
    (repeated, inclusion.len())
}

/// The share of the inclusion items that `repeated_items` finds again among the exclusion items.
fn repeated_share(repeated: &[&str], inclusion_items: usize) -> f64 {
    repeated.len() as f64 / inclusion_items.max(1) as f64
}

/// Endings of medical terms that a corpus of a few thousand trials may not have seen (liposarcoma,
/// cholestasis, desmoid): an unmatched condition word with one of them counts as a condition word.
const MEDICAL_SUFFIXES: [&str; 30] = [
    "oma", "omas", "itis", "osis", "oses", "emia", "aemia", "pathy", "pathies", "plasia", "trophy",
    "algia", "oid", "ectomy", "uria", "cele", "philia", "penia", "megaly", "rrhea", "rrhoea",
    "cytosis", "iasis", "ism", "plegia", "spasm", "ectasia", "lysis", "genesis", "phobia",
];

fn medical_looking(w: &str) -> bool {
    w.len() >= 7 && MEDICAL_SUFFIXES.iter().any(|s| w.ends_with(s))
}

/// The text the lexical rule reads: title, conditions, drugs, criteria items, and any extra text
/// (a generated trial's primary outcome and rationale).
fn lexical_text(p: &Protocol, extra: &[&str]) -> String {
    let mut parts: Vec<&str> = vec![p.title.as_str()];
    parts.extend(p.conditions.iter().map(String::as_str));
    parts.extend(p.drugs.iter().map(|d| d.name.as_str()));
    if p.criteria.inclusion.is_empty() && p.criteria.exclusion.is_empty() {
        parts.push(p.criteria.raw.as_str());
    } else {
        parts.extend(p.criteria.inclusion.iter().map(String::as_str));
        parts.extend(p.criteria.exclusion.iter().map(String::as_str));
    }
    parts.extend(extra);
    parts.join("\n")
}

/// Phase that decides a multi-phase trial's bound: the latest (a phase 1/2 trial may be as big as
/// a phase 2 one).
fn bound_phase(p: &Protocol) -> Option<Phase> {
    p.phases
        .iter()
        .copied()
        .filter(|ph| *ph != Phase::NotApplicable)
        .max()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = (q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64).floor() as usize;
    sorted[pos]
}

/// Endings a profanity may carry and still be that profanity (`bitch` + `ing`).
const INFLECTIONS: [&str; 14] = [
    "", "s", "es", "ed", "er", "ers", "ing", "ings", "y", "ty", "ey", "ies", "ier", "iest",
];

/// Whether rustrict rates `w` profane or offensive (moderate or worse) as a whole word: its
/// censored run starts the word and what follows is at most an inflection. rustrict matches
/// fuzzily, as chat filters must; clinical words it half-matches (`d**lofenac`, `r*****ation`,
/// `c***craft`) are not profanity. Words under 4 letters are abbreviations in trials (DIC, ASS).
fn offensive_word(w: &str) -> bool {
    if w.chars().count() < 4 {
        return false;
    }
    let (censored, t) = Censor::from_str(w).censor_and_analyze();
    if !t.is((Type::PROFANE | Type::OFFENSIVE) & Type::MODERATE_OR_HIGHER) {
        return false;
    }
    let chars: Vec<char> = censored.chars().collect();
    let (Some(first), Some(last)) = (
        chars.iter().position(|&c| c == '*'),
        chars.iter().rposition(|&c| c == '*'),
    ) else {
        return false;
    };
    // rustrict keeps the first letter of a censored word.
    let rest: String = chars[last + 1..].iter().collect();
    first <= 1 && INFLECTIONS.contains(&rest.as_str())
}

fn letter_run(name: &str) -> Option<String> {
    static UNCLOSED: OnceLock<Regex> = OnceLock::new();
    let re = UNCLOSED.get_or_init(|| Regex::new(r"\[[^\]]*$").expect("static regex"));
    if let Some(m) = re.find(name) {
        return Some(m.as_str().to_string());
    }
    // A long "word" made of a handful of letters: `AACCCAABAAEBCCAABCDABA`.
    name.split(|c: char| !c.is_alphabetic())
        .find(|w| {
            let distinct: HashSet<char> = w.to_lowercase().chars().collect();
            w.chars().count() >= 10 && distinct.len() <= 5
        })
        .map(str::to_string)
}

impl RealismGate {
    /// Builds the gate from `reference` (the real trials a run may draw on: excluded splits left
    /// out), the ICD-10 descriptions and extra drug names (the drug pool's).
    pub fn build(
        reference: &[&Trial],
        icd: &[IcdEntry],
        extra_drugs: &[String],
        cfg: GateConfig,
    ) -> RealismGate {
        let folds = cfg.folds.max(2);
        let mut doc_freq: HashMap<String, u32> = HashMap::new();
        let mut fold_freq: Vec<HashMap<String, u32>> = vec![HashMap::new(); folds];
        let mut trial_words: Vec<Vec<String>> = Vec::with_capacity(reference.len());
        for (i, t) in reference.iter().enumerate() {
            let ws = words(&lexical_text(&t.protocol, &[]));
            let distinct: HashSet<&String> = ws.iter().collect();
            for w in distinct {
                *doc_freq.entry(w.clone()).or_default() += 1;
                *fold_freq[i % folds].entry(w.clone()).or_default() += 1;
            }
            trial_words.push(ws);
        }
        let mut always_known: HashSet<String> = HashSet::new();
        let mut condition_words: HashSet<String> = HashSet::new();
        let mut known_conditions: HashSet<String> = HashSet::new();
        for e in icd {
            for w in words(&e.description) {
                always_known.insert(w.clone());
                condition_words.insert(w);
            }
            known_conditions.insert(normalise(&e.description));
        }
        let mut drug_names: HashSet<String> = HashSet::new();
        let mut drug_words: HashSet<String> = HashSet::new();
        let real_drugs = reference
            .iter()
            .flat_map(|t| t.protocol.drugs.iter().map(|d| d.name.as_str()));
        for name in real_drugs.chain(extra_drugs.iter().map(String::as_str)) {
            let n = normalise(name);
            if !n.is_empty() {
                drug_names.insert(n);
            }
            drug_words.extend(words(name));
        }
        always_known.extend(drug_words.iter().cloned());
        for t in reference {
            for c in &t.protocol.conditions {
                known_conditions.insert(normalise(c));
                condition_words.extend(words(c));
            }
        }

        // Out-of-fold shares: trial i's words counted without its fold.
        let min_df = cfg.min_doc_freq;
        let mut shares: Vec<f64> = trial_words
            .iter()
            .enumerate()
            .filter(|(_, ws)| !ws.is_empty())
            .map(|(i, ws)| {
                let own = &fold_freq[i % folds];
                let known = ws
                    .iter()
                    .filter(|w| {
                        always_known.contains(*w)
                            || doc_freq.get(*w).copied().unwrap_or(0)
                                - own.get(*w).copied().unwrap_or(0)
                                >= min_df
                    })
                    .count();
                known as f64 / ws.len() as f64
            })
            .collect();
        shares.sort_by(f64::total_cmp);
        let lexical_min_share = quantile(&shares, cfg.lexical_quantile);

        let mut by_phase: BTreeMap<Phase, Vec<u32>> = BTreeMap::new();
        for t in reference {
            if let (Some(e), Some(ph)) = (t.protocol.enrollment, bound_phase(&t.protocol)) {
                by_phase.entry(ph).or_default().push(e);
            }
        }
        let bounds: BTreeMap<Phase, EnrollmentBound> = PHASES
            .iter()
            .map(|&phase| {
                let seen = by_phase.get(&phase).map_or(&[][..], Vec::as_slice);
                let b = if seen.len() >= cfg.min_enrollment_trials {
                    EnrollmentBound {
                        phase,
                        min: seen.iter().copied().min().unwrap_or(1).max(1),
                        max: seen.iter().copied().max().unwrap_or(1).max(1),
                        trials: seen.len(),
                        source: BoundSource::Real,
                    }
                } else {
                    EnrollmentBound {
                        phase,
                        min: 1,
                        max: assumed_max(phase),
                        trials: seen.len(),
                        source: BoundSource::Assumed,
                    }
                };
                (phase, b)
            })
            .collect();

        let contradiction_max_share = reference
            .iter()
            .map(|t| {
                let (repeated, inclusion_items) = repeated_items(&t.protocol);
                repeated_share(&repeated, inclusion_items)
            })
            .fold(0.0, f64::max);

        let vocabulary_words = doc_freq.values().filter(|&&c| c >= min_df).count();
        let mut thresholds = GateThresholds {
            reference_trials: reference.len(),
            vocabulary_words,
            known_conditions: known_conditions.len(),
            drug_names: drug_names.len(),
            lexical_min_share,
            lexical_quantile: cfg.lexical_quantile,
            min_doc_freq: min_df,
            condition_max_unknown_share: cfg.condition_max_unknown_share,
            contradiction_max_share,
            enrollment: bounds.values().cloned().collect(),
            digest: String::new(),
        };
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&thresholds).expect("thresholds serialise"));
        let mut vocab: Vec<(&String, &u32)> = doc_freq.iter().collect();
        vocab.sort();
        for (w, c) in vocab {
            h.update(format!("{w}:{c}\n"));
        }
        let mut extra: Vec<&String> = always_known.iter().collect();
        extra.sort();
        for w in extra {
            h.update(format!("+{w}\n"));
        }
        thresholds.digest = hex::encode(&h.finalize()[..6]);
        RealismGate {
            doc_freq,
            always_known,
            condition_words,
            known_conditions,
            drug_names,
            drug_words,
            bounds,
            cfg,
            thresholds,
        }
    }

    fn known(&self, w: &str) -> bool {
        self.always_known.contains(w)
            || self.doc_freq.get(w).copied().unwrap_or(0) >= self.cfg.min_doc_freq
    }

    /// The enrollment bound of a phase.
    pub fn enrollment_bound(&self, phase: Phase) -> Option<&EnrollmentBound> {
        let key = if phase == Phase::NotApplicable {
            Phase::Phase4
        } else {
            phase
        };
        self.bounds.get(&key)
    }

    /// Share of the words of `p` (and `extra`) that are known; 1 for a text without words.
    pub fn lexical_share(&self, p: &Protocol, extra: &[&str]) -> f64 {
        self.share_of(&words(&lexical_text(p, extra)))
    }

    fn share_of(&self, ws: &[String]) -> f64 {
        if ws.is_empty() {
            return 1.0;
        }
        ws.iter().filter(|w| self.known(w)).count() as f64 / ws.len() as f64
    }

    /// Whether a condition name resolves (see the module docs); `Err` says why not.
    pub fn resolve_condition(&self, condition: &str) -> Result<(), String> {
        if self.known_conditions.contains(&normalise(condition)) {
            return Ok(());
        }
        let ws = words(condition);
        if ws.is_empty() {
            return Err("no word of 3+ letters, and it matches no real condition".into());
        }
        let unknown: Vec<&String> = ws
            .iter()
            .filter(|w| !(self.known(w) || self.condition_words.contains(*w) || medical_looking(w)))
            .collect();
        let allowed = (self.cfg.condition_max_unknown_share * ws.len() as f64).floor() as usize;
        if unknown.len() > allowed {
            return Err(format!(
                "matches no real condition or ICD-10 description, and {} of its {} words are unknown ({})",
                unknown.len(),
                ws.len(),
                unknown.iter().map(|w| w.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(())
    }

    /// Whether a drug name is real (see the module docs); `Err` says why not.
    pub fn check_drug_name(&self, name: &str) -> Result<(), String> {
        if let Some(run) = letter_run(name) {
            return Err(format!("a run of letters `{run}`"));
        }
        if self.drug_names.contains(&normalise(name)) {
            return Ok(());
        }
        // New drug names are an open set (code names, new INNs, brands): what a small model writes
        // instead is a condition in the drug slot.
        let ws = words(name);
        let condition_only: Vec<&String> = ws
            .iter()
            .filter(|w| self.condition_words.contains(*w) && !self.drug_words.contains(*w))
            .collect();
        let any_drug_word = ws.iter().any(|w| self.drug_words.contains(w));
        if condition_only.len() >= 2 && !any_drug_word && 2 * condition_only.len() > ws.len() {
            return Err(format!(
                "reads as a condition, not a drug ({} of its {} words are condition words, none a drug word)",
                condition_only.len(),
                ws.len()
            ));
        }
        Ok(())
    }

    /// Runs every rule on a protocol; `extra` is free text that is not part of a protocol (a
    /// generated trial's primary outcome and rationale).
    pub fn check(&self, p: &Protocol, extra: &[&str]) -> GateVerdict {
        let mut rejects = Vec::new();
        let all_words = words(&lexical_text(p, extra));
        let mut seen = HashSet::new();
        if let Some(w) = all_words
            .iter()
            .filter(|w| seen.insert(w.as_str()))
            .find(|w| {
                !self.doc_freq.contains_key(w.as_str()) && !self.known(w) && offensive_word(w)
            })
        {
            rejects.push(Reject::new(
                "offensive",
                format!("`{w}` is profane or offensive"),
            ));
        }
        if let Some((c, why)) = p
            .conditions
            .iter()
            .find_map(|c| self.resolve_condition(c).err().map(|e| (c, e)))
        {
            rejects.push(Reject::new("condition", format!("`{c}`: {why}")));
        }
        if let Some((d, why)) = p
            .drugs
            .iter()
            .find_map(|d| self.check_drug_name(&d.name).err().map(|e| (&d.name, e)))
        {
            rejects.push(Reject::new("drug-name", format!("`{d}`: {why}")));
        }
        let (repeated, inclusion_items) = repeated_items(p);
        if !repeated.is_empty()
            && repeated_share(&repeated, inclusion_items) > self.thresholds.contradiction_max_share
        {
            rejects.push(Reject::new(
                "contradiction",
                format!(
                    "`{}` is both an inclusion and an exclusion criterion ({} of {} inclusion items repeated; real trials repeat at most {:.0}%)",
                    repeated[0],
                    repeated.len(),
                    inclusion_items,
                    self.thresholds.contradiction_max_share * 100.0
                ),
            ));
        }
        if let (Some(e), Some(phase)) = (p.enrollment, bound_phase(p)) {
            if let Some(b) = self.enrollment_bound(phase) {
                if e < b.min || e > b.max {
                    rejects.push(Reject::new(
                        "enrollment",
                        format!(
                            "{e} participants; {phase} trials take {}..{} ({})",
                            b.min,
                            b.max,
                            match b.source {
                                BoundSource::Real => format!("{} real trials", b.trials),
                                BoundSource::Assumed => "assumed bound".into(),
                            }
                        ),
                    ));
                }
            }
        }
        let lexical_share = self.share_of(&all_words);
        if lexical_share < self.thresholds.lexical_min_share {
            rejects.push(Reject::new(
                "lexical",
                format!(
                    "{:.3} of its words are known to the real corpus; real trials reach {:.3}",
                    lexical_share, self.thresholds.lexical_min_share
                ),
            ));
        }
        GateVerdict {
            rejects,
            lexical_share,
        }
    }

    /// Each rule's pass rate on `heldout` real trials.
    pub fn pass_rates(&self, heldout: &[&Trial], what: &str) -> Calibration {
        let mut judged: BTreeMap<&str, (usize, usize)> =
            GATE_RULES.iter().map(|r| (*r, (0, 0))).collect();
        let mut all = 0;
        for t in heldout {
            let v = self.check(&t.protocol, &[]);
            for rule in GATE_RULES {
                let can_judge = rule != "enrollment" || t.protocol.enrollment.is_some();
                if !can_judge {
                    continue;
                }
                let e = judged.get_mut(rule).expect("every rule is listed");
                e.0 += 1;
                if !v.rejects.iter().any(|r| r.rule == rule) {
                    e.1 += 1;
                }
            }
            all += v.rejects.is_empty() as usize;
        }
        let rules: Vec<RulePassRate> = GATE_RULES
            .iter()
            .map(|&rule| {
                let (trials, passed) = judged[rule];
                RulePassRate {
                    rule: rule.into(),
                    trials,
                    passed,
                    rate: if trials > 0 {
                        passed as f64 / trials as f64
                    } else {
                        1.0
                    },
                }
            })
            .collect();
        let miscalibrated = rules
            .iter()
            .filter(|r| r.trials > 0 && r.rate < 0.99)
            .map(|r| r.rule.clone())
            .collect();
        Calibration {
            heldout: what.into(),
            trials: heldout.len(),
            rules,
            all_rules: if heldout.is_empty() {
                1.0
            } else {
                all as f64 / heldout.len() as f64
            },
            miscalibrated,
        }
    }
}

/// A gate with its pass rates on held-out real trials.
pub struct CalibratedGate {
    pub gate: RealismGate,
    pub calibration: Calibration,
    /// Seconds spent building and calibrating it.
    pub build_seconds: f64,
}

/// Builds the gate from `reference` and checks it on `heldout`; without held-out trials, every
/// fifth reference trial is judged by a gate built from the other four fifths.
pub fn build_and_calibrate(
    reference: &[&Trial],
    heldout: &[&Trial],
    icd: &[IcdEntry],
    extra_drugs: &[String],
    cfg: GateConfig,
) -> CalibratedGate {
    let started = std::time::Instant::now();
    let gate = RealismGate::build(reference, icd, extra_drugs, cfg.clone());
    let calibration = if !heldout.is_empty() {
        gate.pass_rates(heldout, "the excluded splits")
    } else {
        let (mut part, mut rest) = (Vec::new(), Vec::new());
        for (i, t) in reference.iter().enumerate() {
            if i % 5 == 4 {
                rest.push(*t)
            } else {
                part.push(*t)
            }
        }
        RealismGate::build(&part, icd, extra_drugs, cfg).pass_rates(
            &rest,
            "every fifth reference trial, against a gate built from the other four fifths",
        )
    };
    CalibratedGate {
        gate,
        calibration,
        build_seconds: started.elapsed().as_secs_f64(),
    }
}

/// The gate of a generation run over `corpus`: built from the trials outside the `exclude` splits
/// (those a run may draw on) and checked on the trials inside them (the held-out real trials).
pub fn gate_for_corpus(
    corpus: &[Trial],
    exclude: &[trialforge_trial::Split],
    icd: &[IcdEntry],
    cfg: GateConfig,
) -> CalibratedGate {
    let (mut reference, mut heldout) = (Vec::new(), Vec::new());
    for t in corpus {
        if exclude.contains(&t.split) {
            heldout.push(t)
        } else {
            reference.push(t)
        }
    }
    build_and_calibrate(&reference, &heldout, icd, &[], cfg)
}

/// A synthetic set judged by the gate, beside held-out real trials.
#[derive(Clone, Debug, Serialize)]
pub struct SetRealism {
    /// The gate, as built from the reference real trials.
    pub gate: GateThresholds,
    pub heldout_real: Calibration,
    pub synthetic: Calibration,
    /// Each trial's lexical share.
    pub heldout_shares: Vec<f64>,
    pub synthetic_shares: Vec<f64>,
}

/// Builds the gate from `reference` and runs it on `heldout` real trials and on `synthetic` ones
/// alike (the protocol only: outcome texts are not part of a trial record).
pub fn judge_set(
    reference: &[&Trial],
    heldout: &[&Trial],
    synthetic: &[&Trial],
    icd: &[IcdEntry],
    cfg: GateConfig,
) -> SetRealism {
    let g = build_and_calibrate(reference, heldout, icd, &[], cfg);
    let shares = |ts: &[&Trial]| -> Vec<f64> {
        ts.iter()
            .map(|t| g.gate.lexical_share(&t.protocol, &[]))
            .collect()
    };
    SetRealism {
        gate: g.gate.thresholds.clone(),
        synthetic: g.gate.pass_rates(synthetic, "the synthetic set"),
        heldout_shares: shares(heldout),
        synthetic_shares: shares(synthetic),
        heldout_real: g.calibration,
    }
}

/// One line per threshold and rule, as `generate` prints them when a run starts.
pub fn describe(t: &GateThresholds, c: &Calibration) -> String {
    let rate = |rule: &str| {
        c.rules
            .iter()
            .find(|r| r.rule == rule)
            .map_or("-".into(), |r| {
                if r.trials == 0 {
                    return "not judged: no held-out real trial carries the field".to_string();
                }
                format!(
                    "{:.1}% of {} held-out real trials pass{}",
                    r.rate * 100.0,
                    r.trials,
                    if r.trials > 0 && r.rate < 0.99 {
                        " (MISCALIBRATED: above 1% rejected)"
                    } else {
                        ""
                    }
                )
            })
    };
    let enrollment: Vec<String> = t
        .enrollment
        .iter()
        .map(|b| {
            format!(
                "{} {}..{} ({})",
                b.phase,
                b.min,
                b.max,
                match b.source {
                    BoundSource::Real => format!("{} real trials", b.trials),
                    BoundSource::Assumed => format!("assumed: {} real trials carry one", b.trials),
                }
            )
        })
        .collect();
    format!(
        "realism gate {} from {} real trials ({} known words, {} conditions, {} drug names); held-out: {} ({} trials)\n\
         - offensive: whole words rustrict rates profane or offensive (moderate+) that real trials do not use; {}\n\
         - condition: matches a real condition or ICD-10 description, or at most {:.0}% unknown words; {}\n\
         - drug-name: no letter runs, and no condition in the drug slot unless a real drug name; {}\n\
         - contradiction: at most {:.0}% of the inclusion items repeated as exclusion items (the most a real trial repeats); {}\n\
         - enrollment: {}; {}\n\
         - lexical: known-word share >= {:.3} (the {:.1}% quantile of real trials, out of fold; a word is known in {}+ real trials, ICD-10 or drug names); {}",
        t.digest,
        t.reference_trials,
        t.vocabulary_words,
        t.known_conditions,
        t.drug_names,
        c.heldout,
        c.trials,
        rate("offensive"),
        t.condition_max_unknown_share * 100.0,
        rate("condition"),
        rate("drug-name"),
        t.contradiction_max_share * 100.0,
        rate("contradiction"),
        enrollment.join(", "),
        rate("enrollment"),
        t.lexical_min_share,
        t.lexical_quantile * 100.0,
        t.min_doc_freq,
        rate("lexical"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use trialforge_trial::{Criteria, Drug, Label, Source, Split};

    fn trial(i: usize, conditions: &[&str], drug: &str, criteria: &str) -> Trial {
        Trial {
            id: format!("NCT{i:08}"),
            source: Source::Ctgov,
            protocol: Protocol {
                phases: vec![Phase::Phase2],
                conditions: conditions.iter().map(|c| c.to_string()).collect(),
                drugs: vec![Drug {
                    name: drug.into(),
                    smiles: None,
                }],
                criteria: Criteria::from_raw(criteria),
                ..Default::default()
            },
            label: Some(Label::Success),
            split: Split::Train,
            post_hoc: Default::default(),
        }
    }

    fn corpus() -> Vec<Trial> {
        (0..40)
            .map(|i| {
                trial(
                    i,
                    &["type 2 diabetes"],
                    if i % 2 == 0 { "metformin" } else { "insulin glargine" },
                    "Inclusion Criteria:\n- adults aged 18 to 65 years with type 2 diabetes\n- HbA1c between 7 and 10 percent\nExclusion Criteria:\n- pregnancy or breastfeeding\n- severe renal impairment",
                )
            })
            .collect()
    }

    fn icd() -> Vec<IcdEntry> {
        vec![IcdEntry {
            code: "E11".into(),
            description: "Type 2 diabetes mellitus".into(),
        }]
    }

    #[test]
    fn each_rule_rejects_what_it_names_and_real_trials_pass() {
        let real = corpus();
        let refs: Vec<&Trial> = real.iter().collect();
        let gate = RealismGate::build(&refs, &icd(), &[], GateConfig::default());
        assert!((gate.thresholds.lexical_min_share - 1.0).abs() < 1e-9);
        assert!(gate.check(&real[0].protocol, &[]).rejects.is_empty());
        let rules = |p: &Protocol, extra: &[&str]| -> Vec<String> {
            gate.check(p, extra)
                .rejects
                .into_iter()
                .map(|r| r.rule)
                .collect()
        };
        let mut p = real[0].protocol.clone();
        p.conditions = vec!["SYMBOLS".into()];
        assert_eq!(rules(&p, &[])[0], "condition");
        p.conditions = vec!["Diabetes Mellitus, Type 2".into()];
        assert!(
            rules(&p, &[]).is_empty(),
            "word order and case do not matter"
        );
        assert!(
            gate.resolve_condition("diabetic nephropathy").is_ok(),
            "half known, and medical suffixes count as known"
        );
        assert!(gate
            .resolve_condition("PARTICLE-DONOTH LYMPHOBLASOPHER KINARYAN")
            .is_err());
        let mut p = real[0].protocol.clone();
        p.drugs[0].name = "metformin [AACCCAABAAEBCCAABCDABA".into();
        assert_eq!(rules(&p, &[])[0], "drug-name");
        p.drugs[0].name = "Diabetes Mellitus".into();
        assert_eq!(
            rules(&p, &[])[0],
            "drug-name",
            "a condition in the drug slot"
        );
        p.drugs[0].name = "insulin".into();
        assert!(rules(&p, &[]).is_empty(), "made of known words");
        assert!(
            gate.check_drug_name("zorbexal-123").is_ok(),
            "new names are an open set"
        );
        let mut p = real[0].protocol.clone();
        p.enrollment = Some(60_123);
        assert_eq!(rules(&p, &[]), ["enrollment"]);
        let mut q = real[0].protocol.clone();
        q.criteria
            .exclusion
            .push("Type-2 Diabetes, adults aged 18 to 65 years with".into());
        assert!(rules(&q, &[]).is_empty(), "word order counts");
        q.criteria
            .exclusion
            .push("Adults aged 18 to 65 years, with type-2 diabetes.".into());
        assert_eq!(rules(&q, &[]), ["contradiction"]);
        p.enrollment = Some(120);
        assert!(rules(&p, &[]).is_empty());
        assert!(rules(&real[0].protocol, &["primary outcome bitching"])
            .contains(&"offensive".to_string()));
        assert!(rules(
            &real[0].protocol,
            &["lymphoblasopher kinaryan donoth dissealed faculls maleurginine neglible"]
        )
        .contains(&"lexical".to_string()));
        let c = gate.pass_rates(&refs, "the corpus itself");
        assert_eq!(c.all_rules, 1.0);
        assert!(c.miscalibrated.is_empty());
        assert_eq!(
            c.rules
                .iter()
                .find(|r| r.rule == "enrollment")
                .unwrap()
                .trials,
            0
        );
    }

    #[test]
    fn enrollment_bounds_come_from_real_trials_when_there_are_enough() {
        let mut real = corpus();
        for (i, t) in real.iter_mut().enumerate() {
            t.protocol.enrollment = Some(20 + i as u32 * 5);
        }
        let refs: Vec<&Trial> = real.iter().collect();
        let gate = RealismGate::build(&refs, &icd(), &[], GateConfig::default());
        let b = gate.enrollment_bound(Phase::Phase2).unwrap();
        assert_eq!((b.min, b.max, b.source), (20, 215, BoundSource::Real));
        let b1 = gate.enrollment_bound(Phase::Phase1).unwrap();
        assert_eq!((b1.max, b1.source), (1_000, BoundSource::Assumed));
        let mut p = real[0].protocol.clone();
        p.enrollment = Some(400);
        assert_eq!(gate.check(&p, &[]).rejects[0].rule, "enrollment");
    }

    #[test]
    fn lexical_threshold_is_out_of_fold() {
        // One trial's private word is unknown once its own fold is left out.
        let mut real = corpus();
        real[3].protocol.criteria = Criteria::from_raw(
            "Inclusion Criteria:\n- adults aged 18 to 65 years with zyxquorbic type 2 diabetes",
        );
        let refs: Vec<&Trial> = real.iter().collect();
        let cfg = GateConfig {
            lexical_quantile: 0.0,
            ..Default::default()
        };
        let gate = RealismGate::build(&refs, &icd(), &[], cfg);
        assert!(gate.thresholds.lexical_min_share < 1.0);
        assert!(gate.thresholds.lexical_min_share > 0.85);
    }
}
