//! Judging a synthetic set against real trials: fidelity (cosine distributions, t-SNE), coverage,
//! privacy (DCR), label consistency, detection, realism, a gallery and, optionally, utility. The
//! numbers are [`trialforge_report::analysis::Analysis`]; the page is the report crate's.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use trialforge_predict::benchmark::{examples, predict_trials};
use trialforge_predict::detection::{detect, DetectionOptions, Side};
use trialforge_predict::metrics::roc_auc;
use trialforge_predict::registry::{new_model, BuildOptions};
use trialforge_report::analysis::{
    gallery_cards, page, Analysis, AnalysisInputs, LabelConsistency, Realism, Similarity, TsneInfo,
};
use trialforge_report::coverage::{condition_chapters, coverage, coverage_with};
use trialforge_report::plots::{Figure, Plot};
use trialforge_report::privacy::privacy;
use trialforge_report::realism::realism_stats;
use trialforge_report::similarity::{across_pairs, within_pairs, Summary};
use trialforge_report::tsne::{effective_perplexity, tsne_2d, TsneParams};
use trialforge_synth::realism::{judge_set, GateConfig};
use trialforge_synth::run::{gate_path, log_path, Attempt, SyntheticRecord};
use trialforge_trial::render::protocol_text;
use trialforge_trial::{Format, Label, Split, Trial};

use crate::augment::{run_augment, AugmentSettings};
use crate::data::{load_synthetic, load_trials, SyntheticSetOptions};
use crate::embed::{cached_embedder, embed_trials};
use crate::write_json;
use crate::{Environment, Progress, Silent};

/// `analyze`: what to judge against what, and how.
#[derive(Clone, Debug)]
pub struct AnalyzeRequest {
    /// Real trials; a test split, if tagged, is the held-out set (else every fifth trial).
    pub real: PathBuf,
    /// Synthetic trials: our JSONL, a corpus, a TOP CSV, or legacy records.
    pub synthetic: PathBuf,
    /// Output folder: report.html, figures/*.png, analysis.json.
    pub out: PathBuf,
    /// Random pairs within a set.
    pub within_pairs: usize,
    /// Random pairs across the sets.
    pub across_pairs: usize,
    /// Cosine to a real trial above which a synthetic trial counts as a near copy.
    pub near_copy_cosine: f32,
    /// t-SNE perplexity (lowered automatically for small sets).
    pub perplexity: f32,
    /// Real trials drawn into the t-SNE map at most.
    pub tsne_max_real: usize,
    pub seed: u64,
    /// Also run the utility experiments.
    pub augment: bool,
    /// Accepted trials and rejected attempts shown in full in the gallery (each).
    pub gallery: usize,
    /// ICD-10 descriptions for the realism rules [default: the bundled file].
    pub icd: Option<PathBuf>,
    pub settings: AugmentSettings,
    pub set: SyntheticSetOptions,
    pub encoder: Option<PathBuf>,
}

impl AnalyzeRequest {
    /// The defaults of the command line.
    pub fn new(real: PathBuf, synthetic: PathBuf, out: PathBuf) -> Self {
        AnalyzeRequest {
            real,
            synthetic,
            out,
            within_pairs: 10_000,
            across_pairs: 1_000,
            near_copy_cosine: 0.97,
            perplexity: 30.0,
            tsne_max_real: 2000,
            seed: 0,
            augment: false,
            gallery: 3,
            icd: None,
            settings: AugmentSettings::default(),
            set: SyntheticSetOptions::default(),
            encoder: None,
        }
    }
}

/// An analysis and where it was written.
#[derive(Clone, Debug, Serialize)]
pub struct AnalysisOutcome {
    pub analysis: Analysis,
    pub html: PathBuf,
    pub figures: PathBuf,
    pub json: PathBuf,
    pub seconds: f64,
}

fn mean(xs: &[f32]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64)
}

fn label_consistency(
    env: &Environment,
    req: &AnalyzeRequest,
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
    let embedder = cached_embedder(env, encoder, &Silent);
    let mut model = new_model(
        &req.settings.model.into(),
        &BuildOptions {
            seed: req.seed,
            pretrain_seed: 0,
            embedder: Some(&embedder),
            admet_dir: env.admet_dir(),
            checkpoints: None,
        },
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
        model: req.settings.model.name().into(),
        trained_on_real_trials: train.len(),
        synthetic_success_mean: mean(&success_scores),
        synthetic_failure_mean: mean(&failure_scores),
        synthetic_roc_auc: roc_auc(&y, &p),
        holdout_roc_auc: roc_auc(&yh, &ph),
        success_scores,
        failure_scores,
    }))
}

/// Judges the synthetic set against the real trials; writes `report.html`, `figures/*.png` and
/// `analysis.json` into `req.out`.
pub fn analyze(
    env: &Environment,
    req: &AnalyzeRequest,
    progress: &dyn Progress,
) -> anyhow::Result<AnalysisOutcome> {
    let started = std::time::Instant::now();
    let a = req;
    let real = load_trials(&a.real, Format::Auto)?;
    let set = load_synthetic(&a.synthetic, &a.set, &real, progress)?;
    let (synthetic, notes, origins) = (set.trials, set.notes, set.origins);
    let encoder = env.load_encoder(a.encoder.as_deref())?;
    let (rv, _) = embed_trials(env, encoder.as_ref(), &real, progress)?;
    let (sv, _) = embed_trials(env, encoder.as_ref(), &synthetic, progress)?;

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
    progress.stage("t-SNE");
    let points = tsne_2d(&points_in, &tsne_params);
    progress.stage("label consistency");
    let labels = label_consistency(env, a, encoder.as_ref(), &real, &is_holdout, &synthetic)?;
    progress.stage("detection");
    let real_texts: Vec<String> = real.iter().map(|t| protocol_text(&t.protocol)).collect();
    let synthetic_texts: Vec<String> = synthetic
        .iter()
        .map(|t| protocol_text(&t.protocol))
        .collect();
    fn side<'a>(texts: &'a [String], vectors: &'a [Vec<f32>]) -> Side<'a> {
        Side {
            texts: texts.iter().map(String::as_str).collect(),
            vectors: vectors.iter().map(Vec::as_slice).collect(),
        }
    }
    let detection = detect(
        &side(&real_texts, &rv),
        &side(&synthetic_texts, &sv),
        &DetectionOptions {
            seed: a.seed,
            ..Default::default()
        },
    )?;
    progress.stage("realism");
    let realism = realism(env, a, &real, &is_holdout, &synthetic)?;
    progress.finish();
    let gallery = gallery(a, &real)?;

    let augment = if a.augment {
        Some(run_augment(
            env,
            &real,
            &synthetic,
            &origins,
            &a.settings,
            Some(encoder.as_ref()),
            progress,
        )?)
    } else {
        None
    };

    let mut analysis = Analysis {
        inputs: AnalysisInputs {
            real: a.real.display().to_string(),
            synthetic: a.synthetic.display().to_string(),
            within_pairs: a.within_pairs,
            across_pairs: a.across_pairs,
            seed: a.seed,
        },
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
        detection,
        realism,
        notes,
        gallery,
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
    progress.stage("writing the report");
    let page = page(&analysis, [rr, ss, rs], figures_by_source);
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let written = page.write(&a.out)?;
    analysis.report = Some(written);
    let json = write_json(&a.out, "analysis.json", &analysis)?;
    progress.finish();
    Ok(AnalysisOutcome {
        html: a.out.join("report.html"),
        figures: a.out.join("figures"),
        json,
        seconds: started.elapsed().as_secs_f64(),
        analysis,
    })
}
/// The gate of a generation run over the real corpus, run on the synthetic set and on held-out
/// real trials alike.
fn realism(
    env: &Environment,
    req: &AnalyzeRequest,
    real: &[Trial],
    is_holdout: &dyn Fn(usize) -> bool,
    synthetic: &[Trial],
) -> anyhow::Result<Realism> {
    let icd = env.load_icd(req.icd.as_deref())?;
    let (mut reference, mut heldout) = (Vec::new(), Vec::new());
    for (i, t) in real.iter().enumerate() {
        if is_holdout(i) {
            heldout.push(t)
        } else {
            reference.push(t)
        }
    }
    let synth_refs: Vec<&Trial> = synthetic.iter().collect();
    let judged = judge_set(
        &reference,
        &heldout,
        &synth_refs,
        &icd,
        GateConfig::default(),
    );
    let as_f32 = |xs: &[f64]| -> Vec<f32> { xs.iter().map(|&x| x as f32).collect() };
    let (heldout_shares, synthetic_shares) = (
        as_f32(&judged.heldout_shares),
        as_f32(&judged.synthetic_shares),
    );
    let generation_gate = {
        let p = gate_path(&req.synthetic);
        if req.synthetic.is_file() && p.is_file() {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a gate file", p.display()))?,
            )
        } else {
            None
        }
    };
    let real_protocols: Vec<&trialforge_trial::Protocol> =
        real.iter().map(|t| &t.protocol).collect();
    let synthetic_protocols: Vec<&trialforge_trial::Protocol> =
        synthetic.iter().map(|t| &t.protocol).collect();
    Ok(Realism {
        gate: judged.gate,
        heldout_real: judged.heldout_real,
        synthetic: judged.synthetic,
        lexical_share_heldout_real: Summary::of(&heldout_shares),
        lexical_share_synthetic: Summary::of(&synthetic_shares),
        stats: realism_stats(&real_protocols, &synthetic_protocols, req.seed),
        generation_gate,
        heldout_shares,
        synthetic_shares,
    })
}

/// The gallery: the first accepted trials of a trialforge set and the first rejected attempts of
/// the attempt log beside it (nothing for sets of other tools).
fn gallery(
    a: &AnalyzeRequest,
    real: &[Trial],
) -> anyhow::Result<Vec<trialforge_report::html::Card>> {
    let is_set = a.synthetic.is_file() && a.synthetic.extension().is_some_and(|e| e == "jsonl");
    let records: Vec<SyntheticRecord> = if is_set {
        read_lines(&a.synthetic)?
    } else {
        Vec::new()
    };
    let log = log_path(&a.synthetic);
    let attempts: Vec<Attempt> = if a.synthetic.is_file() && log.is_file() {
        read_lines(&log)?
    } else {
        Vec::new()
    };
    Ok(gallery_cards(&records, &attempts, real, a.gallery))
}

/// The lines of a JSONL file that parse as `T` (others, such as a corpus line among records, are
/// not gallery material).
fn read_lines<T: for<'de> serde::Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}
