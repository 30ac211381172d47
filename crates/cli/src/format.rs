//! The human text of every result (what is printed without --json).

use trialforge_core::analyze::AnalysisOutcome;
use trialforge_core::embed::SearchHit;
use trialforge_llm::Completion;
use trialforge_predict::augment::AugmentReport;
use trialforge_predict::benchmark::{BenchmarkProtocol, BenchmarkReport, ModelRow, SeedSpread};
use trialforge_predict::detection::DetectionReport;
use trialforge_predict::metrics::{BootstrapScores, MeanStd};
use trialforge_synth::run::RunSummary;

fn fmt_row(r: &ModelRow) -> String {
    match &r.scores {
        Some(s) => format!(
            "{:<28} {:.3} ± {:.3}   {:.3} ± {:.3}   {:.3} ± {:.3}   {:.3}   {}",
            r.model,
            s.pr_auc.mean,
            s.pr_auc.std,
            s.roc_auc.mean,
            s.roc_auc.std,
            s.f1.mean,
            s.f1.std,
            s.brier.mean,
            r.train_seconds
                .map_or(String::new(), |t| format!("{t:.1}s"))
        ),
        None => format!("{:<28} {}", r.model, r.status),
    }
}

fn mean_std(m: Option<MeanStd>) -> String {
    m.map_or("-".into(), |m| format!("{:.3} ± {:.3}", m.mean, m.std))
}

fn calibration_row(r: &ModelRow) -> Option<String> {
    let c = r.calibration.as_ref()?;
    Some(format!(
        "{:<28} {:<15} {:<15} {:<15} {:<15} {}",
        r.model,
        mean_std(Some(c.ece)),
        mean_std(c.ece_platt),
        mean_std(c.brier_platt),
        mean_std(c.f1_valid_threshold),
        c.threshold.map_or("-".into(), |t| format!("{t:.3}"))
    ))
}

pub fn benchmark(r: &BenchmarkReport) -> String {
    let protocol = match r.protocol {
        BenchmarkProtocol::Top => String::new(),
        BenchmarkProtocol::AvailableData => format!(
            "NOT the TOP protocol: trained on every non-test file here, phase {:?} valid kept for model selection, \
             because this phase's train split is not here\n",
            r.phase
        ),
    };
    let mut s = format!(
        "{protocol}TOP phase {:?}: {} (mean ± std over {} bootstrap resamples of the test set, seed {})\n",
        r.phase,
        r.splits
            .iter()
            .map(|sp| format!(
                "{} {}",
                sp.file,
                sp.rows
                    .map_or("missing".to_string(), |n| format!("{n} rows"))
            ))
            .collect::<Vec<_>>()
            .join(", "),
        r.resamples,
        r.seed
    );
    if r.train_seeds > 1 {
        s += &format!(
            "each model trained with {} seeds ({}..={}): its figures pool every seed and resample; train is per run\n",
            r.train_seeds,
            r.seed,
            r.seed + r.train_seeds as u64 - 1
        );
    }
    s += &format!(
        "{:<28} {:<15} {:<15} {:<15} {:<7} {}\n",
        "model", "PR-AUC", "ROC-AUC", "F1@0.5", "Brier", "train"
    );
    for row in r.rows.iter().chain(std::iter::once(&r.reference)) {
        s += &fmt_row(row);
        s.push('\n');
    }
    let all_rows = || r.rows.iter().chain(std::iter::once(&r.reference));
    let calibration: Vec<String> = all_rows().filter_map(calibration_row).collect();
    if !calibration.is_empty() {
        s += &format!(
            "\ncalibration on the test set (ECE: 10 equal-width bins; Platt scaling and the F1 threshold fitted on validation only; HINT ships no validation predictions):\n{:<28} {:<15} {:<15} {:<15} {:<15} {}\n",
            "model", "ECE", "ECE Platt", "Brier Platt", "F1@valid-thr", "threshold"
        );
        s += &calibration.join("\n");
        s.push('\n');
    }
    if let Some(n) = r.new_disease_trials {
        let test_rows = r.splits.get(2).and_then(|sp| sp.rows).unwrap_or(0);
        s += &format!(
            "\nnew disease: the {n} of {test_rows} test trials with no condition any training trial has (resampled on their own)\n{:<28} {:<15} {:<15} {:<15}\n",
            "model", "PR-AUC", "ROC-AUC", "F1@0.5"
        );
        for row in all_rows() {
            if let Some(nd) = &row.new_disease {
                s += &format!(
                    "{:<28} {:<15} {:<15} {:<15}\n",
                    row.model,
                    mean_std(Some(nd.pr_auc)),
                    mean_std(Some(nd.roc_auc)),
                    mean_std(Some(nd.f1))
                );
            }
        }
    }
    let per_seed: Vec<(&ModelRow, &SeedSpread)> = r
        .rows
        .iter()
        .filter_map(|row| row.across_seeds.as_ref().map(|spread| (row, spread)))
        .collect();
    if !per_seed.is_empty() {
        s += "\nper training seed (mean over the resamples), then mean ± std across seeds:\n";
    }
    for (row, spread) in per_seed {
        let figures = |f: fn(&BootstrapScores) -> f64| -> String {
            let v: Vec<String> = row
                .seed_runs
                .iter()
                .map(|run| format!("{:.3}", f(&run.scores)))
                .collect();
            v.join(" ")
        };
        s += &format!(
            "{:<28} PR-AUC {} = {:.3} ± {:.3};  ROC-AUC {} = {:.3} ± {:.3}\n",
            row.model,
            figures(|b| b.pr_auc.mean),
            spread.pr_auc.mean,
            spread.pr_auc.std,
            figures(|b| b.roc_auc.mean),
            spread.roc_auc.mean,
            spread.roc_auc.std,
        );
    }
    s.trim_end().to_string()
}

pub fn generation(s: &RunSummary) -> String {
    let real_rate = |rule: &str| {
        s.gate.as_ref().and_then(|g| {
            g.calibration
                .rules
                .iter()
                .find(|r| r.rule == rule)
                .map(|r| (r.rate, r.trials))
        })
    };
    let rules: Vec<String> = s
        .rejects_by_rule
        .iter()
        .map(|(r, n)| match real_rate(r) {
            Some((_, 0)) => format!("{r} {n} (not judged on real trials: none carries the field)"),
            Some((rate, _)) => format!("{r} {n} (real pass {:.1}%)", rate * 100.0),
            None => format!("{r} {n}"),
        })
        .collect();
    let gate = s
        .gate
        .as_ref()
        .map(|g| {
            format!(
                "realism gate {}: built and checked on {} held-out real trials in {:.2}s; {} checks, {:.2} ms each\n",
                g.thresholds.digest,
                g.calibration.trials,
                g.build_seconds,
                g.checks,
                if g.checks > 0 { g.check_seconds * 1e3 / g.checks as f64 } else { 0.0 }
            )
        })
        .unwrap_or_default();
    format!(
        "{} of {} cells done ({} before this run{}); this run: {} accepted of {} attempts ({:.0}%), rejects: {}\n\
         tokens: {} prompt + {} completion ({} cached responses), {:.1} completion tokens/s, {:.2} accepted trials/minute, {:.0}s\n\
         {}{}trials: {}\nattempt log: {}",
        s.cells_done,
        s.cells,
        s.resumed_cells,
        if s.deferred > 0 { format!(", {} waiting for batch answers", s.deferred) } else { String::new() },
        s.accepted,
        s.attempts,
        s.acceptance_rate * 100.0,
        if rules.is_empty() { "none".into() } else { rules.join(", ") },
        s.prompt_tokens,
        s.completion_tokens,
        s.cached_responses,
        s.completion_tokens_per_second,
        s.accepted_per_minute,
        s.seconds,
        s.cost_usd.map(|c| format!("cost: ${c:.4}\n")).unwrap_or_default(),
        gate,
        s.out,
        s.log
    )
}

pub fn hits(hits: &[SearchHit]) -> String {
    hits.iter()
        .map(|h| {
            format!(
                "{:>2}. {}  {:.4}  [{}]  {} | {}",
                h.rank,
                h.id,
                h.score,
                h.split,
                h.conditions.join("; "),
                h.drugs.join("; ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn augment(r: &AugmentReport) -> String {
    let mut out = format!(
        "model {}, {} real test trials, seeds {:?} (PR-AUC / ROC-AUC / F1, mean ± std over seeds)\n",
        r.model, r.test_trials, r.seeds
    );
    for c in r.conditions.iter().chain(&r.sweep) {
        out.push_str(&format!(
            "{:<16} train {:>5} real + {:>5} synthetic   {:.3} ± {:.3}   {:.3} ± {:.3}   {:.3} ± {:.3}\n",
            c.name, c.train_real, c.train_synthetic, c.pr_auc.mean, c.pr_auc.std, c.roc_auc.mean,
            c.roc_auc.std, c.f1.mean, c.f1.std
        ));
    }
    if let Some(t) = &r.hybrid_vs_real {
        out.push_str(&format!(
            "hybrid - real PR-AUC: {:+.3} (95% CI {:+.3} to {:+.3}, p = {:.3}, {})\n",
            t.difference,
            t.ci95[0],
            t.ci95[1],
            t.p_value,
            if t.significant {
                "significant"
            } else {
                "not significant"
            }
        ));
    }
    out.push_str(&format!(
        "generalization: {} test trials of drugs no synthetic trial uses",
        r.generalization.test_trials
    ));
    if let (Some(a), Some(b)) = (&r.generalization.real, &r.generalization.hybrid) {
        out.push_str(&format!(
            "; PR-AUC real {:.3}, hybrid {:.3}",
            a.pr_auc, b.pr_auc
        ));
    }
    for n in &r.notes {
        out.push_str(&format!("\nnote: {n}"));
    }
    out
}

pub fn completion(c: &Completion) -> String {
    format!(
        "{}\n\n[{} prompt + {} completion tokens, {:.1} tokens/s, finish: {:?}]",
        c.text,
        c.prompt_tokens,
        c.completion_tokens,
        c.decode_tokens_per_second(),
        c.finish_reason
    )
}

/// The detection lines `analyze` prints.
pub fn detection(d: &DetectionReport) -> String {
    let scores = |x: &Option<trialforge_predict::detection::Detection>| match x {
        None => "too few trials".to_string(),
        Some(x) => x
            .detectors
            .iter()
            .map(|s| {
                format!(
                    "{} {:.3} [{:.3}, {:.3}]",
                    s.detector, s.roc_auc, s.ci95[0], s.ci95[1]
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut out = format!(
        "detection ROC-AUC (0.5 = indistinguishable; 95% CI), real vs synthetic{}: {}\n  control, real vs real halves{}: {}\n",
        d.real_vs_synthetic.as_ref().map_or(String::new(), |x| format!(" ({} per side, {}-fold)", x.per_side, x.folds)),
        scores(&d.real_vs_synthetic),
        d.real_vs_real.as_ref().map_or(String::new(), |x| format!(" ({} per side)", x.per_side)),
        scores(&d.real_vs_real),
    );
    for n in &d.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    out
}

/// What `analyze` prints.
pub fn analysis(o: &AnalysisOutcome) -> String {
    let analysis = &o.analysis;
    {
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
        out.push_str(&detection(&analysis.detection));
        let r = &analysis.realism;
        out.push_str(&format!(
            "realism gate ({} rules from {} real trials): {:.1}% of {} synthetic trials pass every rule, {:.1}% of {} held-out real ones; lexical share (median) synthetic {:.3}, held-out real {:.3}\n",
            r.synthetic.rules.len(),
            r.gate.reference_trials,
            r.synthetic.all_rules * 100.0,
            r.synthetic.trials,
            r.heldout_real.all_rules * 100.0,
            r.heldout_real.trials,
            r.lexical_share_synthetic.median,
            r.lexical_share_heldout_real.median,
        ));
        for n in &analysis.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        if let Some(r) = &analysis.augment {
            out.push_str(&augment(r));
            out.push('\n');
        }
        out.push_str(&format!(
            "report: {}\nfigures: {}\nnumbers: {}\n({:.0}s)",
            o.html.display(),
            o.figures.display(),
            o.json.display(),
            o.seconds
        ));
        out
    }
}
