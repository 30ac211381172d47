//! `analyze`: fidelity (cosine distributions, t-SNE), coverage, privacy (DCR), label consistency and,
//! with `--augment`, utility, written as one self-contained HTML page, PNG figures and JSON.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use trialforge_predict::augment::AugmentReport;
use trialforge_predict::benchmark::{examples, predict_trials};
use trialforge_predict::metrics::roc_auc;
use trialforge_report::coverage::{condition_chapters, coverage, coverage_with, Coverage};
use trialforge_report::html::{Page, Section, Table, Written};
use trialforge_report::plots::{Figure, Plot};
use trialforge_report::privacy::{privacy, PrivacyReport};
use trialforge_report::similarity::{across_pairs, within_pairs, Summary};
use trialforge_report::tsne::{effective_perplexity, tsne_2d, TsneParams};
use trialforge_trial::{Label, Split, Trial};

use super::augment::{format_augment, load, read_origins, run_augment, AugmentSettings};
use super::embed::{embed_trials, EncoderArgs};
use super::predict::{cached_embedder, default_admet_dir, new_model};
use super::Ctx;

#[derive(Args)]
pub struct AnalyzeArgs {
    /// Real trials (any input `data import` reads); a test split, if tagged, is the held-out set.
    #[arg(long)]
    pub real: PathBuf,
    /// Synthetic trials: our JSONL, a corpus, or a CSV in the TOP schema (from any tool).
    #[arg(long)]
    pub synthetic: PathBuf,
    /// Output folder: report.html, figures/*.png, analysis.json.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Random pairs within a set.
    #[arg(long, default_value_t = 10_000)]
    pub within_pairs: usize,
    /// Random pairs across the sets.
    #[arg(long, default_value_t = 1_000)]
    pub across_pairs: usize,
    /// Cosine to a real trial above which a synthetic trial counts as a near copy.
    #[arg(long, default_value_t = 0.97)]
    pub near_copy_cosine: f32,
    /// t-SNE perplexity (lowered automatically for small sets).
    #[arg(long, default_value_t = 30.0)]
    pub perplexity: f32,
    /// Real trials drawn into the t-SNE map at most (a seeded sample; all synthetic ones are drawn).
    #[arg(long, default_value_t = 2000)]
    pub tsne_max_real: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also run the utility experiments (`augment`) and put them in the report.
    #[arg(long)]
    pub augment: bool,
    #[command(flatten)]
    pub settings: AugmentSettings,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

#[derive(Serialize)]
struct Similarity {
    real_real: Summary,
    synthetic_synthetic: Summary,
    real_synthetic: Summary,
}

/// Do the synthetic labels mean anything? A model trained on real trials scores the synthetic ones.
#[derive(Serialize)]
struct LabelConsistency {
    model: String,
    trained_on_real_trials: usize,
    /// Mean predicted probability of success of synthetic trials labelled success / failure.
    synthetic_success_mean: Option<f64>,
    synthetic_failure_mean: Option<f64>,
    /// ROC-AUC of the synthetic labels against the predictions (0.5 = labels carry no signal the
    /// model sees).
    synthetic_roc_auc: f64,
    /// The same on the held-out real trials, for scale.
    holdout_roc_auc: f64,
    #[serde(skip)]
    success_scores: Vec<f32>,
    #[serde(skip)]
    failure_scores: Vec<f32>,
}

#[derive(Serialize)]
struct Analysis {
    encoder: String,
    rendering: &'static str,
    real_trials: usize,
    synthetic_trials: usize,
    similarity: Similarity,
    tsne: TsneInfo,
    /// Reference = real trials outside the test split; held-out = the real test split, or, without
    /// one, every fifth real trial.
    privacy: PrivacyReport,
    coverage_real: Coverage,
    coverage_synthetic: Coverage,
    label_consistency: Option<LabelConsistency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    augment: Option<AugmentReport>,
    report: Option<Written>,
}

#[derive(Serialize)]
struct TsneInfo {
    real_points: usize,
    synthetic_points: usize,
    perplexity: f32,
    seed: u64,
}

fn mean(xs: &[f32]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64)
}

fn label_consistency(
    a: &AnalyzeArgs,
    encoder: &dyn trialforge_encode::TextEncoder,
    real: &[Trial],
    is_holdout: &dyn Fn(usize) -> bool,
    synthetic: &[Trial],
) -> anyhow::Result<Option<LabelConsistency>> {
    let train: Vec<Trial> = (0..real.len())
        .filter(|&i| !is_holdout(i) && real[i].label.is_some())
        .map(|i| real[i].clone())
        .collect();
    let holdout: Vec<Trial> = (0..real.len())
        .filter(|&i| is_holdout(i) && real[i].label.is_some())
        .map(|i| real[i].clone())
        .collect();
    let labelled: Vec<Trial> = synthetic
        .iter()
        .filter(|t| t.label.is_some())
        .cloned()
        .collect();
    if train.len() < 20 || labelled.is_empty() {
        return Ok(None);
    }
    let embedder = cached_embedder(encoder);
    let mut model = new_model(
        a.settings.model,
        a.seed,
        Some(&embedder),
        &default_admet_dir(),
        |_| {},
    )?;
    model.fit(&examples(&train), &[])?;
    let p = predict_trials(model.as_ref(), &labelled)?;
    let y: Vec<u8> = labelled
        .iter()
        .map(|t| t.label.map_or(0, u8::from))
        .collect();
    let ph = predict_trials(model.as_ref(), &holdout)?;
    let yh: Vec<u8> = holdout
        .iter()
        .map(|t| t.label.map_or(0, u8::from))
        .collect();
    let pick = |want: u8| -> Vec<f32> {
        p.iter()
            .zip(&y)
            .filter(|(_, &l)| l == want)
            .map(|(s, _)| *s)
            .collect()
    };
    let (success_scores, failure_scores) = (pick(1), pick(0));
    Ok(Some(LabelConsistency {
        model: a.settings.model.name().into(),
        trained_on_real_trials: train.len(),
        synthetic_success_mean: mean(&success_scores),
        synthetic_failure_mean: mean(&failure_scores),
        synthetic_roc_auc: roc_auc(&y, &p),
        holdout_roc_auc: roc_auc(&yh, &ph),
        success_scores,
        failure_scores,
    }))
}

/// `analyze` without printing: its JSON value and its human summary.
pub fn run_analyze(ctx: &Ctx, a: &AnalyzeArgs) -> anyhow::Result<(serde_json::Value, String)> {
    let started = std::time::Instant::now();
    let real = load(&a.real)?;
    let synthetic = load(&a.synthetic)?;
    let origins = read_origins(&a.synthetic, &synthetic)?;
    let encoder = a.encoder.load(ctx)?;
    let (rv, _) = embed_trials(encoder.as_ref(), &real)?;
    let (sv, _) = embed_trials(encoder.as_ref(), &synthetic)?;

    let has_test = real.iter().any(|t| t.split == Split::Test);
    let is_holdout = |i: usize| {
        if has_test {
            real[i].split == Split::Test
        } else {
            i % 5 == 4
        }
    };
    let (mut reference, mut holdout) = (Vec::new(), Vec::new());
    for (i, v) in rv.iter().enumerate() {
        if is_holdout(i) {
            holdout.push(v.clone())
        } else {
            reference.push(v.clone())
        }
    }
    let rr = within_pairs(&rv, a.within_pairs, a.seed);
    let ss = within_pairs(&sv, a.within_pairs, a.seed + 1);
    let rs = across_pairs(&rv, &sv, a.across_pairs, a.seed + 2);

    // t-SNE of a seeded sample of the real trials and every synthetic one.
    let mut real_pick: Vec<usize> = (0..real.len()).collect();
    if real_pick.len() > a.tsne_max_real {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        real_pick.shuffle(&mut rand::rngs::StdRng::seed_from_u64(a.seed));
        real_pick.truncate(a.tsne_max_real);
        real_pick.sort_unstable();
    }
    let mut points_in: Vec<Vec<f32>> = real_pick.iter().map(|&i| rv[i].clone()).collect();
    points_in.extend(sv.iter().cloned());
    let tsne_params = TsneParams {
        perplexity: a.perplexity,
        seed: a.seed,
        ..Default::default()
    };
    let spinner = crate::progress::spinner("t-SNE");
    let points = tsne_2d(&points_in, &tsne_params);
    spinner.finish_and_clear();

    let spinner = crate::progress::spinner("label consistency");
    let labels = label_consistency(a, encoder.as_ref(), &real, &is_holdout, &synthetic)?;
    spinner.finish_and_clear();
    let augment = if a.augment {
        Some(run_augment(
            &real,
            &synthetic,
            &origins,
            &a.settings,
            Some(encoder.as_ref()),
        )?)
    } else {
        None
    };

    let mut analysis = Analysis {
        encoder: encoder.model_id().to_string(),
        rendering: "trialforge_trial::render::protocol_text (no status, no stop reason, no label)",
        real_trials: real.len(),
        synthetic_trials: synthetic.len(),
        similarity: Similarity {
            real_real: Summary::of(&rr),
            synthetic_synthetic: Summary::of(&ss),
            real_synthetic: Summary::of(&rs),
        },
        tsne: TsneInfo {
            real_points: real_pick.len(),
            synthetic_points: sv.len(),
            perplexity: effective_perplexity(points_in.len(), a.perplexity),
            seed: a.seed,
        },
        privacy: privacy(&sv, &reference, &holdout, a.near_copy_cosine),
        coverage_real: coverage(&real),
        coverage_synthetic: coverage_with(&synthetic, &condition_chapters(&real)),
        label_consistency: labels,
        augment,
        report: None,
    };

    let mut figures_by_source = Vec::new();
    if let Some(points) = &points {
        let n_real = real_pick.len();
        let synthetic_idx: Vec<usize> = (n_real..points.len()).collect();
        figures_by_source.push(Figure {
            name: "tsne_source".into(),
            title: "t-SNE of trial embeddings, by source".into(),
            plot: Plot::Scatter {
                points: points.clone(),
                groups: vec![
                    ("real".into(), (0..n_real).collect()),
                    ("synthetic".into(), synthetic_idx),
                ],
            },
        });
        let label_of = |k: usize| {
            if k < n_real {
                real[real_pick[k]].label
            } else {
                synthetic[k - n_real].label
            }
        };
        let group = |synthetic_side: bool, l: Label| -> Vec<usize> {
            (0..points.len())
                .filter(|&k| (k >= n_real) == synthetic_side && label_of(k) == Some(l))
                .collect()
        };
        figures_by_source.push(Figure {
            name: "tsne_label".into(),
            title: "t-SNE of trial embeddings, by source and label".into(),
            plot: Plot::Scatter {
                points: points.clone(),
                groups: vec![
                    ("real success".into(), group(false, Label::Success)),
                    ("real failure".into(), group(false, Label::Failure)),
                    ("synthetic success".into(), group(true, Label::Success)),
                    ("synthetic failure".into(), group(true, Label::Failure)),
                ],
            },
        });
    }
    let page = build_page(a, &analysis, [rr, ss, rs], figures_by_source);
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let written = page.write(&a.out)?;
    analysis.report = Some(written);
    let path = a.out.join("analysis.json");
    std::fs::write(&path, serde_json::to_string_pretty(&analysis)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let text = {
        let s = &analysis.similarity;
        let p = &analysis.privacy;
        let mut out = format!(
            "cosine of random pairs (mean ± std): real-real {:.3} ± {:.3}, synthetic-synthetic {:.3} ± {:.3}, real-synthetic {:.3} ± {:.3}\n\
             distance to closest real record (median): synthetic {:.3}, held-out real {:.3}{}; near copies {:.1}%\n",
            s.real_real.mean, s.real_real.std, s.synthetic_synthetic.mean, s.synthetic_synthetic.std,
            s.real_synthetic.mean, s.real_synthetic.std, p.synthetic_dcr.median, p.holdout_dcr.median,
            if p.closer_than_real { " (closer than real data to itself: memorising?)" } else { "" },
            p.near_copy_share * 100.0,
        );
        if let Some(l) = &analysis.label_consistency {
            out.push_str(&format!(
                "label consistency ({}): P(success) of synthetic successes {}, failures {}; ROC-AUC of synthetic labels {:.3} (held-out real {:.3})\n",
                l.model,
                l.synthetic_success_mean.map_or("-".into(), |m| format!("{m:.3}")),
                l.synthetic_failure_mean.map_or("-".into(), |m| format!("{m:.3}")),
                l.synthetic_roc_auc,
                l.holdout_roc_auc
            ));
        }
        if let Some(r) = &analysis.augment {
            out.push_str(&format_augment(r));
            out.push('\n');
        }
        out.push_str(&format!(
            "report: {}\nfigures: {}\nnumbers: {}\n({seconds:.0}s)",
            a.out.join("report.html").display(),
            a.out.join("figures").display(),
            path.display()
        ));
        out
    };
    Ok((serde_json::to_value(&analysis)?, text))
}

pub fn analyze(ctx: &Ctx, a: AnalyzeArgs) -> anyhow::Result<()> {
    let (value, text) = run_analyze(ctx, &a)?;
    ctx.emit(&value, || text)
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

fn build_page(
    a: &AnalyzeArgs,
    an: &Analysis,
    [rr, ss, rs]: [Vec<f32>; 3],
    tsne_figures: Vec<Figure>,
) -> Page {
    let mut sections = Vec::new();
    let s = &an.similarity;
    sections.push(Section {
        id: "fidelity".into(),
        heading: "Fidelity: cosine similarity of random pairs".into(),
        paragraphs: vec![format!(
            "Cosine similarity of embeddings ({}) of random pairs: {} within each set, {} across (seed {}). \
             Synthetic trials that look like real ones give a real-synthetic distribution close to real-real; \
             a synthetic-synthetic distribution far to the right of real-real means the synthetic trials look alike.",
            an.encoder, a.within_pairs, a.across_pairs, a.seed
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

    let mut labels_section = Section {
        id: "labels".into(),
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
                a.real.display(),
                an.real_trials,
                a.synthetic.display(),
                an.synthetic_trials,
                an.encoder,
                an.rendering
            ),
            "Every number below is also in analysis.json beside this page; every figure is also a PNG in figures/.".into(),
        ],
        sections,
    }
}
