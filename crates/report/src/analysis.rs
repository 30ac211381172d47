//! The analysis of a synthetic set against real trials, as data ([`Analysis`], what
//! `analysis.json` holds) and as the report page ([`page`]): every section's tables, figures and
//! cards, rendered by the page template of [`crate::html`].

use serde::Serialize;
use trialforge_predict::augment::AugmentReport;
use trialforge_predict::detection::DetectionReport;
use trialforge_synth::realism::{Calibration, GateThresholds};
use trialforge_synth::run::{Attempt, GateSummary, SyntheticRecord};
use trialforge_trial::render::protocol_text;
use trialforge_trial::{Label, Trial};

use crate::coverage::Coverage;
use crate::html::{Card, CardValue, Page, Section, Table, Written};
use crate::plots::{Figure, Plot};
use crate::privacy::PrivacyReport;
use crate::realism::RealismStats;
use crate::similarity::Summary;

/// The generation gate's rules run on the synthetic set, beside held-out real trials.
#[derive(Clone, Debug, Serialize)]
pub struct Realism {
    /// The gate as built here from the real trials outside the held-out set.
    pub gate: GateThresholds,
    pub heldout_real: Calibration,
    pub synthetic: Calibration,
    pub lexical_share_heldout_real: Summary,
    pub lexical_share_synthetic: Summary,
    pub stats: RealismStats,
    /// The gate the generation run itself used (`NAME.gate.json` beside a trialforge set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation_gate: Option<GateSummary>,
    #[serde(skip)]
    pub heldout_shares: Vec<f32>,
    #[serde(skip)]
    pub synthetic_shares: Vec<f32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Similarity {
    pub real_real: Summary,
    pub synthetic_synthetic: Summary,
    pub real_synthetic: Summary,
}

/// Do the synthetic labels mean anything? A model trained on real trials scores the synthetic ones.
#[derive(Clone, Debug, Serialize)]
pub struct LabelConsistency {
    pub model: String,
    pub trained_on_real_trials: usize,
    /// Mean predicted probability of success of synthetic trials labelled success / failure.
    pub synthetic_success_mean: Option<f64>,
    pub synthetic_failure_mean: Option<f64>,
    /// ROC-AUC of the synthetic labels against the predictions (0.5 = labels carry no signal the
    /// model sees).
    pub synthetic_roc_auc: f64,
    /// The same on the held-out real trials, for scale.
    pub holdout_roc_auc: f64,
    #[serde(skip)]
    pub success_scores: Vec<f32>,
    #[serde(skip)]
    pub failure_scores: Vec<f32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    /// What was judged and how it was sampled.
    pub inputs: AnalysisInputs,
    pub encoder: String,
    pub rendering: &'static str,
    pub real_trials: usize,
    pub synthetic_trials: usize,
    pub similarity: Similarity,
    pub tsne: TsneInfo,
    /// Reference = real trials outside the test split; held-out = the real test split, or, without
    /// one, every fifth real trial.
    pub privacy: PrivacyReport,
    pub coverage_real: Coverage,
    pub coverage_synthetic: Coverage,
    pub label_consistency: Option<LabelConsistency>,
    /// Can classifiers tell synthetic trials from real ones (and real from real, the control)?
    pub detection: DetectionReport,
    pub realism: Realism,
    /// What reading the synthetic set involved (repairs, skipped records, ids).
    pub notes: Vec<String>,
    #[serde(skip)]
    pub gallery: Vec<Card>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment: Option<AugmentReport>,
    pub report: Option<Written>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TsneInfo {
    pub real_points: usize,
    pub synthetic_points: usize,
    pub perplexity: f32,
    pub seed: u64,
}

/// What an analysis read and the sampling settings it ran with.
#[derive(Clone, Debug, Serialize)]
pub struct AnalysisInputs {
    pub real: String,
    pub synthetic: String,
    pub within_pairs: usize,
    pub across_pairs: usize,
    pub seed: u64,
}

fn nct_links(ids: &[String]) -> CardValue {
    CardValue::Links(
        ids.iter()
            .map(|id| {
                let url = if id.len() == 11
                    && id.starts_with("NCT")
                    && id[3..].bytes().all(|b| b.is_ascii_digit())
                {
                    format!("https://clinicaltrials.gov/study/{id}")
                } else {
                    String::new()
                };
                (id.clone(), url)
            })
            .collect(),
    )
}

/// A few accepted trials beside their examples, reasons and scores, and a few rejected attempts
/// with the rule that rejected them (from the attempt log beside a trialforge set).
pub fn gallery_cards(
    records: &[SyntheticRecord],
    attempts: &[Attempt],
    real: &[Trial],
    each: usize,
) -> Vec<Card> {
    let mut cards = Vec::new();
    let by_id: std::collections::HashMap<&str, &Trial> =
        real.iter().map(|t| (t.id.as_str(), t)).collect();
    for r in records.iter().take(each) {
        let p = &r.provenance;
        let g = &r.generated;
        let mut rows = vec![
            (
                "trial".to_string(),
                CardValue::Pre(format!(
                    "{}\nDesign: {}, masking {}, {} participants\nPrimary outcome: {}\nRationale: {}",
                    protocol_text(&r.trial.protocol),
                    g.design.allocation,
                    g.design.masking,
                    g.design.enrollment,
                    g.primary_outcome,
                    g.rationale
                )),
            ),
            ("retrieved examples".to_string(), nct_links(&p.examples)),
        ];
        for id in &p.examples {
            if let Some(t) = by_id.get(id.as_str()) {
                rows.push((
                    format!("example {id}"),
                    CardValue::Pre(trialforge_synth::prompts::render_example(&t.protocol, 900)),
                ));
            }
        }
        rows.push((
            "reasons".to_string(),
            CardValue::Text(
                p.reasons
                    .iter()
                    .enumerate()
                    .map(|(i, r)| format!("{}. {r}", i + 1))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ));
        let v = &r.validation;
        rows.push((
            "validation".to_string(),
            CardValue::Text(format!(
                "nearest real trial {} at cosine {:.3}; {} consecutive words shared with an example at most; cosine {:.3} to the closest accepted synthetic trial{}",
                v.nearest_real,
                v.max_cosine_real,
                v.max_shared_words_with_examples,
                v.max_cosine_synthetic,
                v.lexical_share.map_or(String::new(), |s| format!("; lexical share {s:.3}"))
            )),
        ));
        cards.push(Card {
            heading: format!(
                "Accepted: {} ({}, {}, {})",
                r.trial.id,
                if p.target_label == Label::Success {
                    "success"
                } else {
                    "failure"
                },
                p.phase,
                p.drug
            ),
            rows,
        });
    }
    {
        for at in attempts
            .iter()
            .filter(|x| !x.accepted && x.output.is_some())
            .take(each)
        {
            let Some(reject) = &at.reject else { continue };
            let mut rows = vec![("why".to_string(), CardValue::Text(reject.to_string()))];
            if !at.also.is_empty() {
                rows.push((
                    "also broke".to_string(),
                    CardValue::Text(
                        at.also
                            .iter()
                            .map(|r| r.to_string())
                            .collect::<Vec<_>>()
                            .join("; "),
                    ),
                ));
            }
            if !at.examples.is_empty() {
                rows.push(("retrieved examples".to_string(), nct_links(&at.examples)));
            }
            rows.push((
                "what the model wrote".to_string(),
                CardValue::Pre(at.output.clone().unwrap_or_default()),
            ));
            cards.push(Card {
                heading: format!(
                    "Rejected: cell {} attempt {}, rule `{}`",
                    at.cell, at.attempt, reject.rule
                ),
                rows,
            });
        }
    }
    cards
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1}", x * 100.0)
    } else {
        "-".into()
    }
}

fn f3(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "-".into()
    }
}

fn summary_row(name: &str, s: &Summary) -> Vec<String> {
    let mut row = vec![name.to_string(), s.n.to_string()];
    row.extend(
        [
            s.mean, s.std, s.min, s.q05, s.q25, s.median, s.q75, s.q95, s.max,
        ]
        .map(f3),
    );
    row
}

const SUMMARY_HEADER: [&str; 11] = [
    "", "n", "mean", "std", "min", "5%", "25%", "median", "75%", "95%", "max",
];

/// Shares of trials per category, real beside synthetic, the `top` largest categories.
fn share_table(
    caption: &str,
    real: &std::collections::BTreeMap<String, usize>,
    real_n: usize,
    synthetic: &std::collections::BTreeMap<String, usize>,
    synthetic_n: usize,
    top: usize,
) -> (Table, Vec<String>, Vec<f64>, Vec<f64>) {
    let mut keys: Vec<&String> = real.keys().chain(synthetic.keys()).collect();
    keys.sort();
    keys.dedup();
    let share = |m: &std::collections::BTreeMap<String, usize>, n: usize, k: &str| {
        m.get(k).copied().unwrap_or(0) as f64 / n.max(1) as f64
    };
    keys.sort_by(|a, b| {
        let s = |k: &str| share(real, real_n, k) + share(synthetic, synthetic_n, k);
        s(b).total_cmp(&s(a)).then(a.cmp(b))
    });
    keys.truncate(top);
    let mut t = Table {
        caption: caption.into(),
        header: vec![
            "".into(),
            "real".into(),
            "real %".into(),
            "synthetic".into(),
            "synthetic %".into(),
        ],
        rows: Vec::new(),
    };
    let (mut rs, mut ss) = (Vec::new(), Vec::new());
    for k in &keys {
        let (r, s) = (share(real, real_n, k), share(synthetic, synthetic_n, k));
        t.rows.push(vec![
            k.to_string(),
            real.get(*k).copied().unwrap_or(0).to_string(),
            format!("{:.1}", r * 100.0),
            synthetic.get(*k).copied().unwrap_or(0).to_string(),
            format!("{:.1}", s * 100.0),
        ]);
        rs.push(r * 100.0);
        ss.push(s * 100.0);
    }
    (t, keys.into_iter().cloned().collect(), rs, ss)
}

/// The report page of an analysis: `cosines` are the real-real, synthetic-synthetic and
/// real-synthetic pair similarities behind the fidelity histogram.
pub fn page(an: &Analysis, [rr, ss, rs]: [Vec<f32>; 3], tsne_figures: Vec<Figure>) -> Page {
    let mut sections = Vec::new();
    let s = &an.similarity;
    sections.push(Section {
        id: "fidelity".into(),
        cards: Vec::new(),
        heading: "Fidelity: cosine similarity of random pairs".into(),
        paragraphs: vec![format!(
            "Cosine similarity of embeddings ({}) of random pairs: {} within each set, {} across (seed {}). \
             Synthetic trials that look like real ones give a real-synthetic distribution close to real-real; \
             a synthetic-synthetic distribution far to the right of real-real means the synthetic trials look alike.",
            an.encoder, an.inputs.within_pairs, an.inputs.across_pairs, an.inputs.seed
        )],
        tables: vec![Table {
            caption: "Cosine similarity of random pairs".into(),
            header: SUMMARY_HEADER.map(String::from).to_vec(),
            rows: vec![
                summary_row("real-real", &s.real_real),
                summary_row("synthetic-synthetic", &s.synthetic_synthetic),
                summary_row("real-synthetic", &s.real_synthetic),
            ],
        }],
        figures: vec![Figure {
            name: "cosine".into(),
            title: "Cosine similarity of random pairs".into(),
            plot: Plot::Histogram {
                x_label: "cosine similarity".into(),
                series: vec![
                    ("real-real".into(), rr),
                    ("synthetic-synthetic".into(), ss),
                    ("real-synthetic".into(), rs),
                ],
                bins: 40,
            },
        }],
    });
    sections.push(Section {
        id: "tsne".into(),
        cards: Vec::new(),
        heading: "Fidelity: t-SNE map".into(),
        paragraphs: vec![if tsne_figures.is_empty() {
            "Too few trials for a t-SNE map.".into()
        } else {
            format!(
                "Barnes-Hut t-SNE (2-D, perplexity {}, seed {}) of {} real trials (a seeded sample) and {} synthetic ones. \
                 Synthetic trials should fall among real trials of their drugs and conditions, not in a cluster of their own.",
                an.tsne.perplexity, an.tsne.seed, an.tsne.real_points, an.tsne.synthetic_points
            )
        }],
        tables: vec![],
        figures: tsne_figures,
    });

    let (cr, cs) = (&an.coverage_real, &an.coverage_synthetic);
    let (labels_t, label_keys, lr, ls) =
        share_table("Labels", &cr.labels, cr.trials, &cs.labels, cs.trials, 10);
    let (phases_t, phase_keys, pr, ps) =
        share_table("Phases", &cr.phases, cr.trials, &cs.phases, cs.trials, 10);
    let (icd_t, icd_keys, ir, is) = share_table(
        &format!(
            "ICD-10 chapters (first letter of the code; {} synthetic trials without codes got the chapter real trials give their condition names)",
            cs.chapters_from_condition_names
        ),
        &cr.icd_chapters,
        cr.trials,
        &cs.icd_chapters,
        cs.trials,
        26,
    );
    let (drugs_t, drug_keys, dr, ds) = share_table(
        "Drugs (the 25 most frequent)",
        &cr.drugs,
        cr.trials,
        &cs.drugs,
        cs.trials,
        25,
    );
    let bars = |name: &str, title: &str, keys: Vec<String>, r: Vec<f64>, s: Vec<f64>| Figure {
        name: name.into(),
        title: title.into(),
        plot: Plot::Bars {
            y_label: "% of trials".into(),
            categories: keys,
            series: vec![("real".into(), r), ("synthetic".into(), s)],
        },
    };
    sections.push(Section {
        id: "coverage".into(),
        cards: Vec::new(),
        heading: "Coverage".into(),
        paragraphs: vec![format!(
            "{} real and {} synthetic trials: what each set covers, as shares of its own trials.",
            cr.trials, cs.trials
        )],
        tables: vec![labels_t, phases_t, icd_t, drugs_t],
        figures: vec![
            bars("coverage_labels", "Labels", label_keys, lr, ls),
            bars("coverage_phases", "Phases", phase_keys, pr, ps),
            bars("coverage_icd", "ICD-10 chapters", icd_keys, ir, is),
            bars(
                "coverage_drugs",
                "Drugs (the 12 most frequent)",
                drug_keys.into_iter().take(12).collect(),
                dr.into_iter().take(12).collect(),
                ds.into_iter().take(12).collect(),
            ),
        ],
    });

    let p = &an.privacy;
    sections.push(Section {
        id: "privacy".into(),
        cards: Vec::new(),
        heading: "Privacy: distance to the closest real record".into(),
        paragraphs: vec![
            "DCR = 1 - cosine to the nearest real trial outside the held-out set. Held-out real trials give the baseline: \
             a synthetic set that sits closer to the real data than real data does to itself is memorising.".into(),
            format!(
                "Median DCR: synthetic {:.3}, held-out real {:.3}: {}. Near copies (cosine above {:.2} to any real trial): {:.1}% of synthetic trials.",
                p.synthetic_dcr.median,
                p.holdout_dcr.median,
                if p.closer_than_real { "synthetic trials sit closer than real ones (memorisation warning)" } else { "no sign of memorisation" },
                p.near_copy_cosine,
                p.near_copy_share * 100.0
            ),
        ],
        tables: vec![Table {
            caption: "Distance to the closest real record".into(),
            header: SUMMARY_HEADER.map(String::from).to_vec(),
            rows: vec![
                summary_row("synthetic", &p.synthetic_dcr),
                summary_row("held-out real", &p.holdout_dcr),
            ],
        }],
        figures: vec![Figure {
            name: "dcr".into(),
            title: "Distance to the closest real record".into(),
            plot: Plot::Histogram {
                x_label: "1 - cosine to the nearest real trial".into(),
                series: vec![
                    ("synthetic".into(), p.synthetic_distances.clone()),
                    ("held-out real".into(), p.holdout_distances.clone()),
                ],
                bins: 30,
            },
        }],
    });

    let d = &an.detection;
    let auc = |x: &Option<trialforge_predict::detection::Detection>, k: usize| -> String {
        x.as_ref()
            .and_then(|x| x.detectors.get(k))
            .map_or("-".into(), |s| {
                format!("{} [{}, {}]", f3(s.roc_auc), f3(s.ci95[0]), f3(s.ci95[1]))
            })
    };
    let mut detection_rows = Vec::new();
    for (k, name) in [
        "TF-IDF logistic regression",
        "embedding logistic regression",
    ]
    .iter()
    .enumerate()
    {
        detection_rows.push(vec![
            name.to_string(),
            auc(&d.real_vs_synthetic, k),
            auc(&d.real_vs_real, k),
        ]);
    }
    let mut detection_paragraphs = vec![format!(
        "Classifiers trained to tell synthetic trials from real ones, with stratified cross-validation ({} per side, {}-fold; vocabulary and weights fitted on the training folds only), on the protocol rendering: \
         ROC-AUC of the out-of-fold scores with a 95% bootstrap interval. 0.5 means indistinguishable. The control runs the same classifiers on two random halves of the real trials ({} per side) and should be near 0.5.",
        d.real_vs_synthetic.as_ref().map_or(0, |x| x.per_side),
        d.real_vs_synthetic.as_ref().map_or(0, |x| x.folds),
        d.real_vs_real.as_ref().map_or(0, |x| x.per_side),
    )];
    detection_paragraphs.extend(d.notes.iter().map(|n| format!("Note: {n}")));
    sections.push(Section {
        id: "detection".into(),
        cards: Vec::new(),
        heading: "Detection: can a classifier tell synthetic from real?".into(),
        paragraphs: detection_paragraphs,
        tables: vec![Table {
            caption: "Detection ROC-AUC [95% CI]".into(),
            header: vec![
                "detector".into(),
                "real vs synthetic".into(),
                "real vs real (control)".into(),
            ],
            rows: detection_rows,
        }],
        figures: vec![],
    });

    let r = &an.realism;
    let mut gate_rows = Vec::new();
    for rule in &r.heldout_real.rules {
        let syn = r.synthetic.rules.iter().find(|x| x.rule == rule.rule);
        gate_rows.push(vec![
            rule.rule.clone(),
            format!("{} ({} trials)", pct(rule.rate), rule.trials),
            syn.map_or("-".into(), |x| {
                format!("{} ({} trials)", pct(x.rate), x.trials)
            }),
        ]);
    }
    gate_rows.push(vec![
        "all rules".into(),
        pct(r.heldout_real.all_rules),
        pct(r.synthetic.all_rules),
    ]);
    let st = &r.stats;
    let mut stats_rows = vec![
        summary_row("inclusion items, real", &st.real.inclusion_items),
        summary_row("inclusion items, synthetic", &st.synthetic.inclusion_items),
        summary_row("exclusion items, real", &st.real.exclusion_items),
        summary_row("exclusion items, synthetic", &st.synthetic.exclusion_items),
        summary_row(
            "lexical share, held-out real",
            &r.lexical_share_heldout_real,
        ),
        summary_row("lexical share, synthetic", &r.lexical_share_synthetic),
    ];
    let phases: std::collections::BTreeSet<&String> = st
        .real
        .enrollment_by_phase
        .keys()
        .chain(st.synthetic.enrollment_by_phase.keys())
        .collect();
    for ph in phases {
        for (side, m) in [
            ("real", &st.real.enrollment_by_phase),
            ("synthetic", &st.synthetic.enrollment_by_phase),
        ] {
            if let Some(sm) = m.get(ph) {
                stats_rows.push(summary_row(&format!("enrollment {ph}, {side}"), sm));
            }
        }
    }
    let mut realism_paragraphs = vec![format!(
        "The generation gate's rules (gate {}), built here from the {} real trials outside the held-out set, run on every synthetic trial and on the {} held-out real trials. \
         A rule that rejects more than 1% of held-out real trials is miscalibrated{}. Lexical share: the share of a trial's words (3+ letters) that real trials, ICD-10 or real drug names know; the gate requires {:.3}.",
        r.gate.digest,
        r.gate.reference_trials,
        r.heldout_real.trials,
        if r.heldout_real.miscalibrated.is_empty() { " (none is)".to_string() } else { format!(": {}", r.heldout_real.miscalibrated.join(", ")) },
        r.gate.lexical_min_share
    )];
    if let Some(g) = &r.generation_gate {
        realism_paragraphs.push(format!(
            "The generation run used gate {} (from {} real trials; {:.1}% of its {} held-out real trials passed every rule; {} checks at {:.2} ms each).",
            g.thresholds.digest,
            g.thresholds.reference_trials,
            g.calibration.all_rules * 100.0,
            g.calibration.trials,
            g.checks,
            if g.checks > 0 { g.check_seconds * 1e3 / g.checks as f64 } else { 0.0 }
        ));
    }
    realism_paragraphs.push(format!(
        "Diversity of the criteria over {} trials per side: distinct words / words {} real, {} synthetic; distinct word pairs / pairs {} real, {} synthetic.",
        st.synthetic.diversity.trials,
        f3(st.real.diversity.distinct_1),
        f3(st.synthetic.diversity.distinct_1),
        f3(st.real.diversity.distinct_2),
        f3(st.synthetic.diversity.distinct_2),
    ));
    sections.push(Section {
        id: "realism".into(),
        cards: Vec::new(),
        heading: "Realism: the gate's rules, item counts, enrollment, diversity".into(),
        paragraphs: realism_paragraphs,
        tables: vec![
            Table {
                caption: "Share of trials that pass each realism rule (%)".into(),
                header: vec!["rule".into(), "held-out real".into(), "synthetic".into()],
                rows: gate_rows,
            },
            Table {
                caption: "Criteria items, lexical share and enrollment, real beside synthetic"
                    .into(),
                header: SUMMARY_HEADER.map(String::from).to_vec(),
                rows: stats_rows,
            },
        ],
        figures: vec![Figure {
            name: "lexical_share".into(),
            title: "Share of a trial's words known to the real corpus".into(),
            plot: Plot::Histogram {
                x_label: "known-word share".into(),
                series: vec![
                    ("held-out real".into(), r.heldout_shares.clone()),
                    ("synthetic".into(), r.synthetic_shares.clone()),
                ],
                bins: 30,
            },
        }],
    });
    sections.push(Section {
        id: "gallery".into(),
        heading: "Gallery: trials and attempts to read".into(),
        paragraphs: vec![if an.gallery.is_empty() {
            "Nothing to show: the gallery reads a trialforge set (its provenance and the attempt log beside it).".into()
        } else {
            "Accepted synthetic trials in full, beside the real examples their prompts showed (linked to ClinicalTrials.gov), the reasons and the validation scores; then rejected attempts as the model wrote them, with the rule that rejected them.".into()
        }],
        tables: vec![],
        figures: vec![],
        cards: an.gallery.clone(),
    });

    let mut labels_section = Section {
        id: "labels".into(),
        cards: Vec::new(),
        heading: "Label consistency".into(),
        ..Default::default()
    };
    match &an.label_consistency {
        None => labels_section.paragraphs.push(
            "Not computed: too few labelled real trials, or no labelled synthetic ones.".into(),
        ),
        Some(l) => {
            labels_section.paragraphs.push(format!(
                "A {} model trained on {} real trials (the held-out ones excluded) scores every synthetic trial. \
                 If the synthetic labels mean something, synthetic successes get higher probabilities than synthetic failures \
                 (ROC-AUC above 0.5); the same model on held-out real trials gives the scale.",
                l.model, l.trained_on_real_trials
            ));
            let opt = |m: Option<f64>| m.map_or("-".into(), f3);
            labels_section.tables.push(Table {
                caption: "Predicted probability of success".into(),
                header: vec!["".into(), "value".into()],
                rows: vec![
                    vec![
                        "synthetic labelled success: mean P(success)".into(),
                        opt(l.synthetic_success_mean),
                    ],
                    vec![
                        "synthetic labelled failure: mean P(success)".into(),
                        opt(l.synthetic_failure_mean),
                    ],
                    vec![
                        "ROC-AUC of the synthetic labels".into(),
                        f3(l.synthetic_roc_auc),
                    ],
                    vec![
                        "ROC-AUC on held-out real trials".into(),
                        f3(l.holdout_roc_auc),
                    ],
                ],
            });
            labels_section.figures.push(Figure {
                name: "label_consistency".into(),
                title: "P(success) of synthetic trials, by their label".into(),
                plot: Plot::Histogram {
                    x_label: "predicted probability of success".into(),
                    series: vec![
                        ("labelled success".into(), l.success_scores.clone()),
                        ("labelled failure".into(), l.failure_scores.clone()),
                    ],
                    bins: 20,
                },
            });
        }
    }
    sections.push(labels_section);

    let mut utility = Section {
        id: "utility".into(),
        cards: Vec::new(),
        heading: "Utility: training on synthetic data".into(),
        ..Default::default()
    };
    match &an.augment {
        None => utility.paragraphs.push(
            "Not run: add --augment (or run `trialforge augment`) for the real / synthetic / hybrid experiments.".into(),
        ),
        Some(r) => {
            utility.paragraphs.push(format!(
                "{} trained on real, synthetic and hybrid (real + all synthetic) data, and on a sweep of the synthetic share at {} trials; \
                 tested on {} real test trials; mean ± std over seeds {:?}. Real validation trials are used for model selection only.",
                r.model, r.sweep_train_size, r.test_trials, r.seeds
            ));
            if let Some(t) = &r.hybrid_vs_real {
                utility.paragraphs.push(format!(
                    "Hybrid minus real, PR-AUC with seed-averaged predictions: {:+.3} (95% CI {:+.3} to {:+.3}, one-sided p = {:.3}, {} paired bootstrap resamples): {}.",
                    t.difference, t.ci95[0], t.ci95[1], t.p_value, t.resamples,
                    if t.significant { "significant" } else { "not significant" }
                ));
            }
            utility.paragraphs.push(format!(
                "Generalization: {} real test trials use no drug of any synthetic trial.{}",
                r.generalization.test_trials,
                match (&r.generalization.real, &r.generalization.hybrid) {
                    (Some(x), Some(y)) => format!(
                        " On them, PR-AUC real {:.3}, hybrid {:.3}; ROC-AUC real {:.3}, hybrid {:.3}.",
                        x.pr_auc, y.pr_auc, x.roc_auc, y.roc_auc
                    ),
                    _ => " Too few of each label there to score.".into(),
                }
            ));
            utility.paragraphs.extend(r.notes.iter().map(|n| format!("Note: {n}")));
            let ms = |m: &trialforge_predict::metrics::MeanStd| format!("{:.3} ± {:.3}", m.mean, m.std);
            let rows = |cs: &[trialforge_predict::augment::ConditionResult]| {
                cs.iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            c.train_real.to_string(),
                            c.train_synthetic.to_string(),
                            ms(&c.pr_auc),
                            ms(&c.roc_auc),
                            ms(&c.f1),
                            ms(&c.brier),
                        ]
                    })
                    .collect()
            };
            let header: Vec<String> = ["training data", "real", "synthetic", "PR-AUC", "ROC-AUC", "F1", "Brier"]
                .map(String::from)
                .to_vec();
            utility.tables.push(Table {
                caption: "Real, synthetic, hybrid".into(),
                header: header.clone(),
                rows: rows(&r.conditions),
            });
            utility.tables.push(Table {
                caption: format!("Synthetic share at {} training trials", r.sweep_train_size),
                header,
                rows: rows(&r.sweep),
            });
            let cats: Vec<String> = r.conditions.iter().chain(&r.sweep).map(|c| c.name.clone()).collect();
            utility.figures.push(Figure {
                name: "utility".into(),
                title: "Test PR-AUC and ROC-AUC by training data".into(),
                plot: Plot::Bars {
                    y_label: "score (mean over seeds)".into(),
                    categories: cats,
                    series: vec![
                        ("PR-AUC".into(), r.conditions.iter().chain(&r.sweep).map(|c| c.pr_auc.mean).collect()),
                        ("ROC-AUC".into(), r.conditions.iter().chain(&r.sweep).map(|c| c.roc_auc.mean).collect()),
                    ],
                },
            });
        }
    }
    sections.push(utility);

    Page {
        title: "trialforge: synthetic trials judged against real ones".into(),
        intro: vec![
            format!(
                "Real: {} ({} trials). Synthetic: {} ({} trials). Encoder: {}. Rendering: {}.",
                an.inputs.real,
                an.real_trials,
                an.inputs.synthetic,
                an.synthetic_trials,
                an.encoder,
                an.rendering
            ),
            "Every number below is also in analysis.json beside this page; every figure is also a PNG in figures/.".into(),
        ],
        sections,
    }
}
