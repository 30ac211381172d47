//! The seed's utility experiments (real / synthetic / hybrid training, the synthetic-share sweep,
//! the paired bootstrap, the generalization view), leakage-checked against the test split.

use std::path::PathBuf;

use trialforge_encode::TextEncoder;
use trialforge_predict::augment::{
    self, AugmentData, AugmentOptions, AugmentReport, SyntheticOrigin,
};
use trialforge_predict::registry::{new_model, BuildOptions};
use trialforge_predict::{ModelKind, ProtocolEmbedder};
use trialforge_trial::{Format, Split, Trial};

use crate::data::{load_synthetic, SyntheticSetOptions};
use crate::embed::cached_embedder;
use crate::{Environment, Progress};

/// Settings of the utility experiments (shared by `augment` and `analyze --augment`).
#[derive(Clone, Debug)]
pub struct AugmentSettings {
    /// embed-mlp (the local encoder with a trained classification head) or tfidf-lr.
    pub model: ModelKind,
    /// Training seeds (each condition trains once per seed).
    pub seeds: u64,
    /// Synthetic shares of the sweep, in percent.
    pub shares: Vec<f64>,
    /// Training size of the sweep [default: the smaller of the real train and synthetic sets].
    pub train_size: Option<usize>,
    /// Paired-bootstrap resamples of the test set.
    pub resamples: usize,
}

impl Default for AugmentSettings {
    fn default() -> Self {
        AugmentSettings {
            model: ModelKind::EmbedMlp,
            seeds: 3,
            shares: vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0],
            train_size: None,
            resamples: 1000,
        }
    }
}

/// Runs the experiments on trials in memory: real train / valid / test by split tag.
pub fn run_augment(
    env: &Environment,
    real: &[Trial],
    synthetic: &[Trial],
    origins: &[SyntheticOrigin],
    settings: &AugmentSettings,
    encoder: Option<&dyn TextEncoder>,
    progress: &dyn Progress,
) -> anyhow::Result<AugmentReport> {
    let of = |s: Split| -> Vec<Trial> {
        real.iter()
            .filter(|t| t.split == s && t.label.is_some())
            .cloned()
            .collect()
    };
    let (train, valid, test) = (of(Split::Train), of(Split::Valid), of(Split::Test));
    anyhow::ensure!(
        !train.is_empty() && !test.is_empty(),
        "augment needs real trials tagged train and test (have {} and {}); import TOP split files",
        train.len(),
        test.len()
    );
    let synthetic: Vec<Trial> = synthetic
        .iter()
        .filter(|t| t.label.is_some())
        .cloned()
        .collect();
    let embedder = match (settings.model.needs_encoder(), encoder) {
        (true, Some(e)) => Some(cached_embedder(env, e, &crate::Silent)),
        (true, None) => anyhow::bail!("{} needs the encoder", settings.model.name()),
        (false, _) => None,
    };
    let opts = AugmentOptions {
        seeds: (0..settings.seeds.max(1)).collect(),
        shares: settings.shares.iter().map(|s| s / 100.0).collect(),
        train_size: settings.train_size,
        resamples: settings.resamples,
        bootstrap_seed: 0,
    };
    let steps = (opts.seeds.len() * (3 + opts.shares.len())) as u64;
    let data = AugmentData {
        train: &train,
        valid: &valid,
        test: &test,
        synthetic: &synthetic,
        origins,
    };
    let mut done = 0;
    let report = augment::run(
        settings.model.name(),
        &data,
        &opts,
        |seed| {
            new_model(
                &settings.model.into(),
                &BuildOptions {
                    seed,
                    pretrain_seed: 0,
                    embedder: embedder.as_ref().map(|e| e as &dyn ProtocolEmbedder),
                    admet_dir: env.admet_dir(),
                    checkpoints: None,
                },
                |_| {},
            )
        },
        |step| {
            done += 1;
            progress.count(&format!("training: {step}"), done, steps);
        },
    )?;
    progress.finish();
    Ok(report)
}

/// `augment`: files in, `augment.json` out.
#[derive(Clone, Debug)]
pub struct AugmentRequest {
    pub real: PathBuf,
    pub synthetic: PathBuf,
    pub out: PathBuf,
    pub settings: AugmentSettings,
    pub set: SyntheticSetOptions,
    pub encoder: Option<PathBuf>,
}

/// The report and where it was written.
pub fn augment(
    env: &Environment,
    req: &AugmentRequest,
    progress: &dyn Progress,
) -> anyhow::Result<(AugmentReport, PathBuf)> {
    let real = crate::data::load_trials(&req.real, Format::Auto)?;
    let set = load_synthetic(&req.synthetic, &req.set, &real, progress)?;
    let encoder = if req.settings.model.needs_encoder() {
        Some(env.load_encoder(req.encoder.as_deref())?)
    } else {
        None
    };
    let report = run_augment(
        env,
        &real,
        &set.trials,
        &set.origins,
        &req.settings,
        encoder.as_deref(),
        progress,
    )?;
    let path = crate::write_json(&req.out, "augment.json", &report)?;
    Ok((report, path))
}
