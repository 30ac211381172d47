//! ADMET pre-training of CLaDMoP's drug branch, as HINT pre-trains its molecule encoder: before pair
//! matching, the learned fingerprint and its MLP learn five binary molecular properties
//! (absorption, distribution, metabolism, excretion, toxicity) from TOP's
//! `aux/ADMET_cooked/<task>_{train,valid}.txt` (`SMILES<TAB>0|1` per line). One logit per task sits
//! on the molecule vector; each molecule's loss is its own task's. The labels are molecular
//! properties, not trial outcomes, so no outcome label of any split is used.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::optim::Optimizer;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::features::{dense_fingerprints, smiles_fingerprint, FeatureLimits};
use super::layers::{Linear, Store};
use super::net::{Net, DRUG_BRANCH};
use super::optimiser;
use crate::metrics::roc_auc;
use crate::nn::{bce, ensure_finite, EarlyStopping, TrainConfig};
use crate::{PredictError, Result};

/// The ADMET properties, in the order of the head's outputs; each has a train and a valid file.
pub const ADMET_TASKS: [&str; 5] = [
    "absorption",
    "distribution",
    "metabolism",
    "excretion",
    "toxicity",
];

/// Where the ADMET files are and how the drug branch trains on them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdmetPretrain {
    /// Folder with `<task>_train.txt` and `<task>_valid.txt` for every task of `ADMET_TASKS`.
    pub dir: PathBuf,
    pub train: TrainConfig,
}

impl AdmetPretrain {
    pub fn new(dir: PathBuf) -> Self {
        AdmetPretrain {
            dir,
            train: TrainConfig {
                learning_rate: 2e-3,
                l2: 1e-2,
                max_epochs: 20,
                patience: 3,
                batch_size: 256,
                seed: 0,
            },
        }
    }
}

/// One labelled molecule: its task, its fingerprint buckets, its 0/1 label.
#[derive(Clone, Debug)]
pub struct AdmetMolecule {
    pub task: usize,
    pub buckets: Vec<u32>,
    pub label: f32,
}

pub struct AdmetData {
    pub train: Vec<AdmetMolecule>,
    /// Validation molecules whose SMILES is not in the same task's training file.
    pub valid: Vec<AdmetMolecule>,
    /// Validation lines dropped because their SMILES is also a training line of the task.
    pub valid_in_train: usize,
    /// SHA-256 of every file read, in task order: what a pre-training checkpoint is keyed by.
    pub digest: String,
}

/// Reads every task's train and valid file from `dir`, fingerprinted with `limits`' settings.
pub fn read_admet(dir: &Path, limits: &FeatureLimits) -> Result<AdmetData> {
    if !dir.is_dir() {
        return Err(PredictError::Invalid(format!(
            "ADMET data: {} is not a folder (expected {} with <task>_train.txt and <task>_valid.txt)",
            dir.display(),
            ADMET_TASKS.join(", ")
        )));
    }
    let mut hasher = Sha256::new();
    let mut data = AdmetData {
        train: Vec::new(),
        valid: Vec::new(),
        valid_in_train: 0,
        digest: String::new(),
    };
    for (task, name) in ADMET_TASKS.iter().enumerate() {
        let mut read = |split: &str| -> Result<Vec<(String, AdmetMolecule)>> {
            let path = dir.join(format!("{name}_{split}.txt"));
            let text = std::fs::read_to_string(&path).map_err(|source| PredictError::Io {
                path: path.clone(),
                source,
            })?;
            hasher.update(text.as_bytes());
            parse_admet(&text, task, limits).map_err(|message| PredictError::Format {
                path: path.clone(),
                message,
            })
        };
        let train = read("train")?;
        let valid = read("valid")?;
        // A few percent of the upstream validation SMILES are also training lines; scored, they
        // would flatter the validation AUC and early stopping.
        let seen: HashSet<&str> = train.iter().map(|(s, _)| s.as_str()).collect();
        for (smiles, m) in valid {
            if seen.contains(smiles.as_str()) {
                data.valid_in_train += 1;
            } else {
                data.valid.push(m);
            }
        }
        data.train.extend(train.into_iter().map(|(_, m)| m));
    }
    data.digest = hex::encode(&hasher.finalize()[..12]);
    Ok(data)
}

/// `SMILES<TAB>0|1` lines (blank lines skipped) as (SMILES, molecule); the error names the line
/// and what was expected.
pub fn parse_admet(
    text: &str,
    task: usize,
    limits: &FeatureLimits,
) -> std::result::Result<Vec<(String, AdmetMolecule)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let shown: String = line.chars().take(60).collect();
        let Some((smiles, label)) = line.rsplit_once(['\t', ' ']) else {
            return Err(format!(
                "line {}: expected `SMILES<TAB>0` or `SMILES<TAB>1`, found `{shown}`",
                i + 1
            ));
        };
        let label = match label.trim() {
            "0" => 0.0,
            "1" => 1.0,
            other => {
                return Err(format!(
                    "line {}: label `{other}` is not 0 or 1 (in `{shown}`)",
                    i + 1
                ))
            }
        };
        let smiles = smiles.trim();
        let buckets = smiles_fingerprint(smiles, limits.smiles_ngram, limits.smiles_buckets);
        if buckets.is_empty() {
            return Err(format!(
                "line {}: no SMILES before the label in `{shown}`",
                i + 1
            ));
        }
        out.push((
            smiles.to_string(),
            AdmetMolecule {
                task,
                buckets,
                label,
            },
        ));
    }
    Ok(out)
}

/// What ADMET pre-training measured; part of the model's report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AdmetReport {
    pub train_molecules: usize,
    pub valid_molecules: usize,
    /// Validation lines left out because their SMILES is a training line of the same task.
    #[serde(default)]
    pub valid_in_train_dropped: usize,
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_valid_loss: Option<f64>,
    /// ROC-AUC per task on its validation file, with the weights kept.
    pub valid_auc: BTreeMap<String, f64>,
    pub seconds: f64,
}

/// Trains the drug branch of `net` (and a throw-away head of one logit per task) on `data`; keeps
/// the branch's weights of the epoch with the lowest validation loss.
pub fn pretrain_drug_branch(
    net: &Net,
    store: &Store,
    data: &AdmetData,
    cfg: &TrainConfig,
    progress: &dyn Fn(&str),
) -> Result<AdmetReport> {
    if data.train.is_empty() {
        return Err(PredictError::Invalid(
            "ADMET data: no training molecules".into(),
        ));
    }
    let started = Instant::now();
    let buckets = net.cfg.smiles_buckets;
    let tasks = ADMET_TASKS.len();
    let mut head_store = Store::new(cfg.seed ^ 0xad3e);
    let head = Linear::new(&mut head_store, "admet", net.cfg.dim, tasks)?;
    let mut vars = store.select(DRUG_BRANCH);
    vars.extend(head_store.select(&[]));
    let mut opt = optimiser(vars, cfg)?;

    // Each row's logit for its own task: the head's outputs times a one-hot task mask, summed.
    let logits_of = |rows: &[&AdmetMolecule]| -> Result<Tensor> {
        let fingerprints: Vec<&[u32]> = rows.iter().map(|m| m.buckets.as_slice()).collect();
        let x = net.molecule_vectors(&dense_fingerprints(&fingerprints, buckets)?)?;
        let mut onehot = vec![0f32; rows.len() * tasks];
        for (i, m) in rows.iter().enumerate() {
            onehot[i * tasks + m.task] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (rows.len(), tasks), &Device::Cpu)?;
        Ok((head.forward(&x)? * onehot)?.sum(1)?)
    };
    let labels_of = |rows: &[&AdmetMolecule]| -> Result<Tensor> {
        let y: Vec<f32> = rows.iter().map(|m| m.label).collect();
        Ok(Tensor::from_vec(y, rows.len(), &Device::Cpu)?)
    };
    let evaluate = || -> Result<(f64, BTreeMap<String, f64>)> {
        let mut total = 0.0;
        let mut scores = Vec::with_capacity(data.valid.len());
        for chunk in data.valid.chunks(1024) {
            let rows: Vec<&AdmetMolecule> = chunk.iter().collect();
            let logits = logits_of(&rows)?;
            total +=
                bce(&logits, &labels_of(&rows)?)?.to_scalar::<f32>()? as f64 * rows.len() as f64;
            scores.extend(logits.to_vec1::<f32>()?);
        }
        let mut auc = BTreeMap::new();
        for (t, name) in ADMET_TASKS.iter().enumerate() {
            let (labels, s): (Vec<u8>, Vec<f32>) = data
                .valid
                .iter()
                .zip(&scores)
                .filter(|(m, _)| m.task == t)
                .map(|(m, &s)| (m.label as u8, s))
                .unzip();
            if !labels.is_empty() {
                auc.insert(name.to_string(), roc_auc(&labels, &s));
            }
        }
        Ok((total / data.valid.len().max(1) as f64, auc))
    };

    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0xad3e);
    let mut order: Vec<&AdmetMolecule> = data.train.iter().collect();
    let mut stopping = EarlyStopping::new(cfg.patience);
    let mut report = AdmetReport {
        train_molecules: data.train.len(),
        valid_molecules: data.valid.len(),
        valid_in_train_dropped: data.valid_in_train,
        ..Default::default()
    };
    for epoch in 0..cfg.max_epochs {
        report.epochs = epoch + 1;
        order.shuffle(&mut rng);
        let mut total = 0.0;
        for chunk in order.chunks(cfg.batch_size.max(1)) {
            let loss = bce(&logits_of(chunk)?, &labels_of(chunk)?)?;
            total += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            opt.backward_step(&loss)?;
        }
        let train_loss = total / order.len() as f64;
        ensure_finite(train_loss, "ADMET pre-training", epoch)?;
        let mut status = format!("ADMET: epoch {}, loss {train_loss:.3}", epoch + 1);
        if !data.valid.is_empty() {
            let (vloss, auc) = evaluate()?;
            let mean_auc = auc.values().sum::<f64>() / auc.len().max(1) as f64;
            status += &format!(", valid loss {vloss:.3}, mean AUC {mean_auc:.3}");
            stopping.record(epoch, vloss, || Ok((auc, store.snapshot()?)))?;
        }
        tracing::debug!("{status}");
        progress(&status);
        if stopping.should_stop(epoch) {
            break;
        }
    }
    match stopping.into_best() {
        Some(best) => {
            let (auc, weights) = best.weights;
            store.restore(&weights)?;
            report.best_epoch = best.epoch;
            report.best_valid_loss = Some(best.loss);
            report.valid_auc = auc;
        }
        None => report.best_epoch = report.epochs.saturating_sub(1),
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cladmop::net::NetConfig;

    /// Every task's files, where a molecule is positive exactly when it carries a chlorine; the
    /// first training line of each task is repeated in its validation file.
    fn planted(dir: &Path) {
        let line = |i: usize| {
            let positive = (i / 5 + i).is_multiple_of(3);
            let core = ["c1ccccc1", "C1CCCCC1", "CCN", "CCOC", "CC(=O)O"][i % 5];
            let tail = if positive { "Cl" } else { "F" };
            format!(
                "{}{core}{tail}\t{}\n",
                "C".repeat(1 + i / 5),
                positive as u8
            )
        };
        for task in ADMET_TASKS {
            let train: String = (0..200).map(line).collect();
            let valid: String = (200..260).chain([0]).map(line).collect();
            std::fs::write(dir.join(format!("{task}_train.txt")), train).unwrap();
            std::fs::write(dir.join(format!("{task}_valid.txt")), valid).unwrap();
        }
    }

    #[test]
    fn admet_pretraining_learns_a_planted_property_and_moves_only_the_drug_branch() {
        let dir = tempfile::tempdir().unwrap();
        planted(dir.path());
        let limits = FeatureLimits::default();
        let data = read_admet(dir.path(), &limits).unwrap();
        assert_eq!((data.train.len(), data.valid.len()), (1000, 300));
        assert_eq!(
            data.valid_in_train, 5,
            "the repeated training line, once per task"
        );
        let mut store = Store::new(0);
        let net = Net::new(
            &mut store,
            NetConfig {
                dim: 16,
                heads: 2,
                groups: 4,
                item_dim: 8,
                smiles_buckets: limits.smiles_buckets,
                icd_buckets: limits.icd_buckets,
                grouping: true,
                drugs: true,
            },
        )
        .unwrap();
        let before = store.snapshot().unwrap();
        let mut cfg = AdmetPretrain::new(dir.path().into()).train;
        cfg.batch_size = 32;
        let report = pretrain_drug_branch(&net, &store, &data, &cfg, &|_| {}).unwrap();
        assert_eq!(report.valid_auc.len(), ADMET_TASKS.len());
        for (task, auc) in &report.valid_auc {
            assert!(*auc > 0.95, "{task}: validation AUC {auc}");
        }
        for ((name, old), (_, new)) in before.iter().zip(&store.snapshot().unwrap()) {
            let moved = (old - new)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0;
            let in_branch = DRUG_BRANCH.iter().any(|p| name.starts_with(p));
            assert_eq!(moved, in_branch, "{name}");
        }
    }

    #[test]
    fn admet_files_that_are_missing_or_malformed_are_named() {
        let limits = FeatureLimits::default();
        let dir = tempfile::tempdir().unwrap();
        let err = read_admet(&dir.path().join("nowhere"), &limits)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("nowhere") && err.contains("absorption"),
            "{err}"
        );
        planted(dir.path());
        let bad = dir.path().join("metabolism_valid.txt");
        std::fs::write(&bad, "CCO\t1\nCCN\tyes\n").unwrap();
        let err = read_admet(dir.path(), &limits).err().unwrap().to_string();
        assert!(
            err.contains("metabolism_valid.txt") && err.contains("line 2: label `yes`"),
            "{err}"
        );
    }

    #[test]
    fn admet_lines_parse_and_bad_ones_name_their_line() {
        let limits = FeatureLimits::default();
        let ok = parse_admet("CCO\t1\n\nc1ccccc1\t0\n", 3, &limits).expect("valid lines");
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].0, "c1ccccc1");
        assert_eq!((ok[0].1.task, ok[0].1.label, ok[1].1.label), (3, 1.0, 0.0));
        let err = parse_admet("CCO\t1\nCCN\t2\n", 0, &limits).unwrap_err();
        assert!(err.starts_with("line 2: label `2`"), "{err}");
        let err = parse_admet("CCO\n", 0, &limits).unwrap_err();
        assert!(err.starts_with("line 1: expected"), "{err}");
    }
}
