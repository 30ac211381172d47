//! CLaDMoP-style outcome model (Zhang et al., arXiv 2505.18527), sized for a CPU.
//!
//! - Criteria branch: each inclusion / exclusion item embedded by the frozen text encoder (cached),
//!   projected, tagged with its section.
//! - Drug branch: a learned fingerprint: hashed runs of 1-4 SMILES tokens (substructures), their
//!   embeddings averaged per molecule, then a small MLP.
//! - Disease branch: ICD-10 codes as the sum of their hashed prefix embeddings (the hierarchy).
//! - Multi-level fusion: items -> a grouping block (G learned queries cross-attend to the items) ->
//!   one transformer block over groups, molecules and codes together -> pooled trial vector.
//! - Pre-training: pair matching (do these criteria and these drugs come from the same trial?),
//!   negatives from other trials, a quarter of them hard (same ICD category, other drugs), on every
//!   protocol available without labels (never a test trial: the harness keeps them out).
//!   Optionally, before pair matching, the drug branch learns ADMET properties of molecules
//!   (`admet`), as HINT pre-trains its molecule encoder.
//! - Fine-tuning: LoRA adapters on the grouping and fusion blocks plus a new outcome head; the
//!   pre-trained weights stay frozen.
//! - Zero-shot: the pair-matching score of a trial's own criteria and drugs, as its outcome score.
//!
//! Ablations are flags: no pre-training (everything trained from scratch on the outcome), no
//! grouping (the fusion attends to every item), no drug branch.

pub mod admet;
pub mod features;
pub mod layers;
pub mod net;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use trialforge_trial::{Label, Protocol};

use crate::metrics::roc_auc;
use crate::model::{
    check_encoder, read_config, save_weights, write_config, Example, Header, ModelKind,
    OutcomeModel,
};
use crate::nn::{bce, ensure_finite, EarlyStopping, TrainConfig};
use crate::{PredictError, ProtocolEmbedder, Result};
use admet::{AdmetPretrain, AdmetReport};
use features::{batch, featurise, FeatureLimits, TrialInput};
use layers::Store;
use net::{fusion_macs, Net, NetConfig, OUTCOME_HEAD, PRETRAINED};

/// Which protocols pair matching learns from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PretrainSet {
    /// Every protocol given (training, validation and unlabelled ones); labels unused.
    All,
    /// Successful training trials only, as the paper's SCT data set (uses training labels).
    Successful,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ablations {
    pub no_pretrain: bool,
    pub no_grouping: bool,
    pub no_drug: bool,
}

impl Ablations {
    /// `-no-pretrain`, `-no-grouping`, `-no-drug` suffixes, in that order.
    pub fn suffix(&self) -> String {
        let mut s = String::new();
        for (on, name) in [
            (self.no_pretrain, "-no-pretrain"),
            (self.no_grouping, "-no-grouping"),
            (self.no_drug, "-no-drug"),
        ] {
            if on {
                s += name;
            }
        }
        s
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CladmopParams {
    pub dim: usize,
    pub heads: usize,
    pub groups: usize,
    pub limits: FeatureLimits,
    pub ablations: Ablations,
    pub pretrain_on: PretrainSet,
    /// Share of pair-matching negatives drawn from trials of the same ICD category.
    pub hard_negatives: f64,
    pub pretrain: TrainConfig,
    pub lora_rank: usize,
    pub finetune: TrainConfig,
    /// Predict with the pair-matching score; no outcome fine-tuning.
    pub zero_shot: bool,
    /// Pre-train the drug branch on ADMET properties first (model-name suffix `-admet`).
    #[serde(default)]
    pub admet: Option<AdmetPretrain>,
}

impl Default for CladmopParams {
    fn default() -> Self {
        CladmopParams {
            dim: 128,
            heads: 4,
            groups: 8,
            limits: FeatureLimits::default(),
            ablations: Ablations::default(),
            pretrain_on: PretrainSet::All,
            hard_negatives: 0.25,
            pretrain: TrainConfig {
                learning_rate: 2e-3,
                l2: 1e-2,
                max_epochs: 30,
                patience: 4,
                batch_size: 64,
                seed: 0,
            },
            lora_rank: 8,
            finetune: TrainConfig {
                learning_rate: 5e-4,
                l2: 1e-2,
                max_epochs: 40,
                patience: 5,
                batch_size: 32,
                seed: 0,
            },
            zero_shot: false,
            admet: None,
        }
    }
}

impl CladmopParams {
    /// The fine-tuning seed: the outcome head's and the LoRA adapters' initial weights and the
    /// batch order (every weight's initial value without pre-training). A run's pre-training
    /// is `with_pretrain_seed`'s, so runs that differ only in this seed share one checkpoint.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.finetune.seed = seed;
        self
    }

    /// The pre-training seed (pair matching and ADMET): its initial weights, pairs and order.
    pub fn with_pretrain_seed(mut self, seed: u64) -> Self {
        self.pretrain.seed = seed;
        if let Some(a) = &mut self.admet {
            a.train.seed = seed;
        }
        self
    }
}

/// What training measured; saved in `config.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CladmopReport {
    /// ADMET pre-training of the drug branch, when asked for.
    #[serde(default)]
    pub admet: Option<AdmetReport>,
    pub pretrain_trials: usize,
    pub pretrain_epochs: usize,
    /// Pair-matching ROC-AUC on the held-out tenth of the pre-training protocols.
    pub pretrain_heldout_match_auc: Option<f64>,
    pub pretrain_seconds: f64,
    /// The pre-trained weights came from an earlier run's checkpoint (same settings, same protocols).
    pub pretrain_from_checkpoint: bool,
    pub finetune_epochs: usize,
    pub finetune_best_epoch: usize,
    pub finetune_best_valid_loss: Option<f64>,
    pub finetune_seconds: f64,
    pub total_parameters: usize,
    pub trained_in_finetune: usize,
    /// Mean multiply-adds per training trial of the criteria-side fusion, with the grouping block
    /// and with every item attended directly.
    pub fusion_macs_grouped: f64,
    pub fusion_macs_ungrouped: f64,
}

#[derive(Serialize, Deserialize)]
struct CladmopConfig {
    #[serde(flatten)]
    header: Header,
    params: CladmopParams,
    net: NetConfig,
    encoder: String,
    report: CladmopReport,
}

struct Trained {
    store: Store,
    net: Net,
}

pub struct Cladmop<'e> {
    pub params: CladmopParams,
    embedder: &'e dyn ProtocolEmbedder,
    unlabelled: Vec<Protocol>,
    trained: Option<Trained>,
    report: CladmopReport,
    progress: Box<dyn Fn(&str) + 'e>,
    checkpoints: Option<PathBuf>,
}

/// A protocol's identity for de-duplicating the pre-training set.
fn protocol_key(p: &Protocol) -> String {
    let drugs: Vec<String> = p.drugs.iter().map(|d| d.key()).collect();
    format!("{}\u{1}{}\u{1}{}", p.title, p.criteria.raw, drugs.join(";"))
}

fn drug_set(p: &Protocol) -> String {
    let mut keys: Vec<String> = p.drugs.iter().map(|d| d.key()).collect();
    keys.sort();
    keys.dedup();
    keys.join(";")
}

fn icd_category(p: &Protocol) -> Option<String> {
    p.icd_codes
        .iter()
        .flatten()
        .find(|c| c.trim().len() >= 3)
        .map(|c| c.trim().to_ascii_uppercase().chars().take(3).collect())
}

fn optimiser(vars: Vec<Var>, cfg: &TrainConfig) -> Result<AdamW> {
    Ok(AdamW::new(
        vars,
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: cfg.l2,
            ..Default::default()
        },
    )?)
}

fn sigmoid(v: Vec<f32>) -> Vec<f32> {
    v.into_iter().map(|z| 1.0 / (1.0 + (-z).exp())).collect()
}

impl<'e> Cladmop<'e> {
    pub fn new(params: CladmopParams, embedder: &'e dyn ProtocolEmbedder) -> Self {
        Cladmop {
            params,
            embedder,
            unlabelled: Vec::new(),
            trained: None,
            report: CladmopReport::default(),
            progress: Box::new(|_| {}),
            checkpoints: None,
        }
    }

    /// Keeps pre-trained weights in `dir`, keyed by every setting that shapes them and by the
    /// pre-training protocols, so the fine-tuned and zero-shot models (and later runs) pre-train once.
    pub fn with_checkpoints(mut self, dir: PathBuf) -> Self {
        self.checkpoints = Some(dir);
        self
    }

    /// Called with a short status line as training goes (stage, epoch, loss).
    pub fn with_progress(mut self, f: impl Fn(&str) + 'e) -> Self {
        self.progress = Box::new(f);
        self
    }

    pub fn report(&self) -> &CladmopReport {
        &self.report
    }

    pub fn load(dir: &Path, embedder: &'e dyn ProtocolEmbedder) -> Result<Self> {
        let cfg: CladmopConfig = read_config(dir)?;
        check_encoder(dir, &cfg.encoder, embedder)?;
        let wpath = dir.join("weights.safetensors");
        let tensors = candle_core::safetensors::load(&wpath, &Device::Cpu)?;
        let mut store = Store::from_tensors(tensors)?;
        let mut net = Net::new(&mut store, cfg.net.clone()).map_err(|e| PredictError::Format {
            path: wpath.clone(),
            message: e.to_string(),
        })?;
        if cfg.params.uses_lora() {
            net.add_lora(&mut store, cfg.params.lora_rank)?;
        }
        Ok(Cladmop {
            params: cfg.params,
            embedder,
            unlabelled: Vec::new(),
            trained: Some(Trained { store, net }),
            report: cfg.report,
            progress: Box::new(|_| {}),
            checkpoints: None,
        })
    }

    fn net_config(&self) -> NetConfig {
        NetConfig {
            dim: self.params.dim,
            heads: self.params.heads,
            groups: self.params.groups,
            item_dim: self.embedder.dim(),
            smiles_buckets: self.params.limits.smiles_buckets,
            icd_buckets: self.params.limits.icd_buckets,
            grouping: !self.params.ablations.no_grouping,
            drugs: !self.params.ablations.no_drug,
        }
    }

    /// Pair matching on `protocols`; keeps the weights of the epoch with the lowest held-out loss.
    fn pretrain(
        &mut self,
        net: &Net,
        store: &Store,
        protocols: &[&Protocol],
        inputs: &[TrialInput],
    ) -> Result<()> {
        let cfg = &self.params.pretrain;
        let started = Instant::now();
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x9a1c);
        let drug_sets: Vec<String> = protocols.iter().map(|p| drug_set(p)).collect();
        let mut by_category: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in protocols.iter().enumerate() {
            if let Some(c) = icd_category(p) {
                by_category.entry(c).or_default().push(i);
            }
        }
        let mut order: Vec<usize> = (0..protocols.len()).collect();
        order.shuffle(&mut rng);
        let held = (protocols.len() / 10)
            .max(1)
            .min(protocols.len().saturating_sub(1));
        let (heldout, train) = order.split_at(held);
        let (heldout, train) = (heldout.to_vec(), train.to_vec());

        // A negative partner for row i: another trial with a different drug set.
        let hard_share = self.params.hard_negatives;
        let partner = |i: usize, pool: &[usize], rng: &mut StdRng| -> Option<usize> {
            let hard = rng.random_bool(hard_share.clamp(0.0, 1.0));
            if hard {
                if let Some(same) = icd_category(protocols[i]).and_then(|c| by_category.get(&c)) {
                    for _ in 0..8 {
                        let &j = same.choose(rng)?;
                        if drug_sets[j] != drug_sets[i] {
                            return Some(j);
                        }
                    }
                }
            }
            for _ in 0..16 {
                let &j = pool.choose(rng)?;
                if drug_sets[j] != drug_sets[i] {
                    return Some(j);
                }
            }
            None
        };
        // Rows: (criteria of, drugs of, label).
        let pairs = |rows: &[usize], pool: &[usize], rng: &mut StdRng| {
            let mut out = Vec::with_capacity(rows.len() * 2);
            for &i in rows {
                out.push((i, i, 1.0f32));
                if let Some(j) = partner(i, pool, rng) {
                    out.push((i, j, 0.0));
                }
            }
            out
        };
        let mut eval_rng = StdRng::seed_from_u64(cfg.seed ^ 0xe7a1);
        let heldout_pairs = pairs(&heldout, &order, &mut eval_rng);
        let loss_and_logits = |rows: &[(usize, usize, f32)]| -> Result<(Tensor, Tensor)> {
            let crit: Vec<usize> = rows.iter().map(|r| r.0).collect();
            let drugs: Vec<usize> = rows.iter().map(|r| r.1).collect();
            let y: Vec<f32> = rows.iter().map(|r| r.2).collect();
            let b = batch(inputs, &crit, &drugs, self.params.limits.smiles_buckets)?;
            let logits = net.match_logits(&b)?;
            let y = Tensor::from_vec(y, rows.len(), &Device::Cpu)?;
            Ok((bce(&logits, &y)?, logits))
        };
        let evaluate = |pairs: &[(usize, usize, f32)]| -> Result<(f64, f64)> {
            let mut total = 0.0;
            let mut scores = Vec::new();
            for chunk in pairs.chunks(128) {
                let (loss, logits) = loss_and_logits(chunk)?;
                total += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
                scores.extend(logits.to_vec1::<f32>()?);
            }
            let labels: Vec<u8> = pairs.iter().map(|p| p.2 as u8).collect();
            Ok((total / pairs.len().max(1) as f64, roc_auc(&labels, &scores)))
        };

        let mut opt = optimiser(store.select(PRETRAINED), cfg)?;
        let mut stopping = EarlyStopping::new(cfg.patience);
        let mut epochs = 0;
        let mut train = train;
        for epoch in 0..cfg.max_epochs {
            epochs = epoch + 1;
            train.shuffle(&mut rng);
            let mut total = 0.0;
            let mut count = 0;
            for chunk in train.chunks(cfg.batch_size.max(1)) {
                let rows = pairs(chunk, &train, &mut rng);
                let (loss, _) = loss_and_logits(&rows)?;
                total += loss.to_scalar::<f32>()? as f64 * rows.len() as f64;
                count += rows.len();
                opt.backward_step(&loss)?;
            }
            let train_loss = total / count.max(1) as f64;
            ensure_finite(train_loss, "cladmop pre-training", epoch)?;
            let (vloss, vauc) = evaluate(&heldout_pairs)?;
            let status = format!(
                "pair matching: epoch {epochs}, loss {train_loss:.3}, held-out loss {vloss:.3}, AUC {vauc:.3}"
            );
            tracing::debug!("{status}");
            (self.progress)(&status);
            stopping.record(epoch, vloss, || Ok((vauc, store.snapshot()?)))?;
            if stopping.should_stop(epoch) {
                break;
            }
        }
        if let Some(best) = stopping.into_best() {
            let (auc, weights) = best.weights;
            store.restore(&weights)?;
            self.report.pretrain_heldout_match_auc = Some(auc);
        }
        self.report.pretrain_trials = protocols.len();
        self.report.pretrain_epochs = epochs;
        self.report.pretrain_seconds = started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Outcome training: LoRA + head after pre-training, every weight without it.
    fn finetune(
        &mut self,
        net: &Net,
        store: &Store,
        train: (&[TrialInput], &[f32]),
        valid: (&[TrialInput], &[f32]),
    ) -> Result<()> {
        let cfg = &self.params.finetune;
        let started = Instant::now();
        let vars = if self.params.uses_lora() {
            store.select(&["lora.", OUTCOME_HEAD])
        } else {
            store.select(&[])
        };
        self.report.trained_in_finetune = vars.iter().map(|v| v.elem_count()).sum();
        let mut opt = optimiser(vars, cfg)?;
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0xf17e);
        let loss_of = |inputs: &[TrialInput], y: &[f32], rows: &[usize]| -> Result<Tensor> {
            let b = batch(inputs, rows, rows, self.params.limits.smiles_buckets)?;
            let yt: Vec<f32> = rows.iter().map(|&r| y[r]).collect();
            let yt = Tensor::from_vec(yt, rows.len(), &Device::Cpu)?;
            bce(&net.outcome_logits(&b)?, &yt)
        };
        let mut order: Vec<usize> = (0..train.0.len()).collect();
        let mut stopping = EarlyStopping::new(cfg.patience);
        let mut epochs = 0;
        for epoch in 0..cfg.max_epochs {
            epochs = epoch + 1;
            order.shuffle(&mut rng);
            let mut total = 0.0;
            for chunk in order.chunks(cfg.batch_size.max(1)) {
                let loss = loss_of(train.0, train.1, chunk)?;
                total += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
                opt.backward_step(&loss)?;
            }
            let train_loss = total / order.len().max(1) as f64;
            ensure_finite(train_loss, "cladmop fine-tuning", epoch)?;
            let mut status = format!("outcome: epoch {epochs}, loss {train_loss:.3}");
            if !valid.0.is_empty() {
                let rows: Vec<usize> = (0..valid.0.len()).collect();
                let mut vloss = 0.0;
                for chunk in rows.chunks(128) {
                    vloss += loss_of(valid.0, valid.1, chunk)?.to_scalar::<f32>()? as f64
                        * chunk.len() as f64;
                }
                let vloss = vloss / rows.len() as f64;
                status += &format!(", valid loss {vloss:.3}");
                stopping.record(epoch, vloss, || store.snapshot())?;
            }
            tracing::debug!("{status}");
            (self.progress)(&status);
            if stopping.should_stop(epoch) {
                break;
            }
        }
        if let Some(best) = stopping.into_best() {
            store.restore(&best.weights)?;
            self.report.finetune_best_valid_loss = Some(best.loss);
            self.report.finetune_best_epoch = best.epoch;
        } else {
            self.report.finetune_best_epoch = epochs.saturating_sub(1);
        }
        self.report.finetune_epochs = epochs;
        self.report.finetune_seconds = started.elapsed().as_secs_f64();
        Ok(())
    }

    fn trained(&self) -> Result<&Trained> {
        self.trained.as_ref().ok_or_else(|| {
            PredictError::Invalid(format!("{}: used before fit", self.kind().name()))
        })
    }
}

/// What a checkpoint keeps besides the weights.
#[derive(Serialize, Deserialize)]
struct PretrainRecord {
    trials: usize,
    epochs: usize,
    heldout_match_auc: Option<f64>,
    #[serde(default)]
    admet: Option<AdmetReport>,
}

impl Cladmop<'_> {
    /// Hash of the settings that shape pre-training and of the pre-training protocols.
    /// `admet_digest` is the ADMET files' digest when the drug branch learns them first.
    fn pretrain_key(
        &self,
        net: &NetConfig,
        protocols: &[&Protocol],
        admet_digest: Option<&str>,
    ) -> String {
        use sha2::{Digest, Sha256};
        let p = &self.params;
        let mut settings = serde_json::json!({
            "net": net, "limits": p.limits, "pretrain_on": p.pretrain_on,
            "hard_negatives": p.hard_negatives, "train": p.pretrain, "encoder": self.embedder.id(),
        });
        // Added only when used, so checkpoints without ADMET keep their keys.
        if let (Some(a), Some(digest)) = (&p.admet, admet_digest) {
            settings["admet"] = serde_json::json!({ "train": a.train, "data": digest });
        }
        let mut h = Sha256::new();
        h.update(settings.to_string().as_bytes());
        for p in protocols {
            h.update(protocol_key(p).as_bytes());
            h.update([0u8]);
        }
        hex::encode(&h.finalize()[..12])
    }

    fn save_pretrained(&self, store: &Store, path: &Path) -> Result<()> {
        let io = |source| PredictError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tensors: HashMap<String, Tensor> = store
            .tensors()
            .into_iter()
            .filter(|(k, _)| PRETRAINED.iter().any(|p| k.starts_with(p)))
            .collect();
        let record = PretrainRecord {
            trials: self.report.pretrain_trials,
            epochs: self.report.pretrain_epochs,
            heldout_match_auc: self.report.pretrain_heldout_match_auc,
            admet: self.report.admet.clone(),
        };
        // Written aside and renamed, so a killed run never leaves half a checkpoint.
        let tmp = path.with_extension("partial");
        candle_core::safetensors::save(&tensors, &tmp)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let json =
            serde_json::to_string(&record).map_err(|e| PredictError::Invalid(e.to_string()))?;
        std::fs::write(path.with_extension("json"), json).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    fn load_pretrained(&mut self, store: &Store, path: &Path) -> Result<()> {
        let started = Instant::now();
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let saved: Vec<(String, Tensor)> = tensors.into_iter().collect();
        store.restore(&saved)?;
        if let Ok(text) = std::fs::read_to_string(path.with_extension("json")) {
            if let Ok(r) = serde_json::from_str::<PretrainRecord>(&text) {
                self.report.pretrain_trials = r.trials;
                self.report.pretrain_epochs = r.epochs;
                self.report.pretrain_heldout_match_auc = r.heldout_match_auc;
                self.report.admet = r.admet;
            }
        }
        self.report.pretrain_from_checkpoint = true;
        self.report.pretrain_seconds = started.elapsed().as_secs_f64();
        (self.progress)("pre-trained weights from checkpoint");
        Ok(())
    }
}

impl CladmopParams {
    fn uses_lora(&self) -> bool {
        !self.ablations.no_pretrain && !self.zero_shot
    }
}

impl OutcomeModel for Cladmop<'_> {
    fn kind(&self) -> ModelKind {
        if self.params.zero_shot {
            ModelKind::CladmopZeroShot
        } else {
            ModelKind::Cladmop
        }
    }

    fn add_unlabelled(&mut self, protocols: &[&Protocol]) {
        self.unlabelled
            .extend(protocols.iter().map(|p| (*p).clone()));
    }

    fn fit(&mut self, train: &[Example], valid: &[Example]) -> Result<()> {
        if train.is_empty() {
            return Err(PredictError::Invalid(
                "cladmop: no training examples".into(),
            ));
        }
        if self.params.zero_shot && self.params.ablations.no_pretrain {
            return Err(PredictError::Invalid(
                "cladmop: the zero-shot score comes from pre-training; it cannot be switched off"
                    .into(),
            ));
        }
        if self.params.admet.is_some() && self.params.ablations.no_drug {
            return Err(PredictError::Invalid(
                "cladmop: ADMET pre-training trains the drug branch; -no-drug removes it".into(),
            ));
        }
        self.report = CladmopReport::default();
        // Held apart so the pre-training set can borrow it while training borrows `self`.
        let unlabelled = std::mem::take(&mut self.unlabelled);
        let result = self.fit_with(train, valid, &unlabelled);
        self.unlabelled = unlabelled;
        result
    }

    fn predict(&self, protocols: &[&Protocol]) -> Result<Vec<f32>> {
        let t = self.trained()?;
        if protocols.is_empty() {
            return Ok(Vec::new());
        }
        let inputs = featurise(protocols, self.embedder, &self.params.limits)?;
        let rows: Vec<usize> = (0..inputs.len()).collect();
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in rows.chunks(128) {
            let b = batch(&inputs, chunk, chunk, self.params.limits.smiles_buckets)?;
            let logits = if self.params.zero_shot {
                t.net.match_logits(&b)?
            } else {
                t.net.outcome_logits(&b)?
            };
            out.extend(sigmoid(logits.to_vec1::<f32>()?));
        }
        Ok(out)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let t = self.trained()?;
        write_config(
            dir,
            &CladmopConfig {
                header: Header {
                    kind: self.kind(),
                    trialforge_version: env!("CARGO_PKG_VERSION").into(),
                },
                params: self.params.clone(),
                net: t.net.cfg.clone(),
                encoder: self.embedder.id(),
                report: self.report.clone(),
            },
        )?;
        save_weights(dir, &t.store.tensors())
    }
}

impl Cladmop<'_> {
    fn fit_with(
        &mut self,
        train: &[Example],
        valid: &[Example],
        unlabelled: &[Protocol],
    ) -> Result<()> {
        // Pre-training protocols, de-duplicated.
        let mut seen = HashSet::new();
        let pretrain_set: Vec<&Protocol> = match self.params.pretrain_on {
            PretrainSet::All => train
                .iter()
                .chain(valid)
                .map(|e| e.protocol)
                .chain(unlabelled.iter())
                .collect::<Vec<_>>(),
            PretrainSet::Successful => train
                .iter()
                .filter(|e| e.label == Label::Success)
                .map(|e| e.protocol)
                .collect::<Vec<_>>(),
        }
        .into_iter()
        .filter(|p| seen.insert(protocol_key(p)))
        .collect();

        let limits = self.params.limits.clone();
        // Read first, so a bad ADMET folder fails before minutes of embedding.
        let admet = match &self.params.admet {
            Some(a) => Some((admet::read_admet(&a.dir, &limits)?, a.train.clone())),
            None => None,
        };
        (self.progress)("embedding criteria items");
        let train_protocols: Vec<&Protocol> = train.iter().map(|e| e.protocol).collect();
        let valid_protocols: Vec<&Protocol> = valid.iter().map(|e| e.protocol).collect();
        let train_inputs = featurise(&train_protocols, self.embedder, &limits)?;
        let valid_inputs = featurise(&valid_protocols, self.embedder, &limits)?;

        // Without pre-training every weight is fine-tuning's, so its seed draws them.
        let mut store = Store::new(if self.params.ablations.no_pretrain {
            self.params.finetune.seed
        } else {
            self.params.pretrain.seed
        });
        let mut net = Net::new(&mut store, self.net_config())?;
        let ungrouped = NetConfig {
            grouping: false,
            ..net.cfg.clone()
        };
        let n = train_inputs.len().max(1) as f64;
        for (grouped, out) in [
            (true, &mut self.report.fusion_macs_grouped),
            (false, &mut self.report.fusion_macs_ungrouped),
        ] {
            let cfg = if grouped { &net.cfg } else { &ungrouped };
            *out = train_inputs
                .iter()
                .map(|t| {
                    fusion_macs(
                        cfg,
                        t.items.len(),
                        t.molecules.len(),
                        t.codes.len(),
                        grouped,
                    ) as f64
                })
                .sum::<f64>()
                / n;
        }

        let admet_pretrain = |this: &mut Self| -> Result<()> {
            if let Some((data, cfg)) = &admet {
                (this.progress)("ADMET pre-training of the drug branch");
                let report = admet::pretrain_drug_branch(&net, &store, data, cfg, &*this.progress)?;
                tracing::info!("ADMET pre-training: {report:?}");
                this.report.admet = Some(report);
            }
            Ok(())
        };
        if self.params.ablations.no_pretrain {
            admet_pretrain(self)?;
        } else {
            let digest = admet.as_ref().map(|(d, _)| d.digest.as_str());
            let checkpoint = self.checkpoints.as_ref().map(|dir| {
                dir.join(format!(
                    "cladmop-pretrained-{}.safetensors",
                    self.pretrain_key(&net.cfg, &pretrain_set, digest)
                ))
            });
            match checkpoint.as_deref().filter(|p| p.is_file()) {
                Some(path) => self.load_pretrained(&store, path)?,
                None => {
                    admet_pretrain(self)?;
                    let inputs = featurise(&pretrain_set, self.embedder, &limits)?;
                    self.pretrain(&net, &store, &pretrain_set, &inputs)?;
                    if let Some(path) = &checkpoint {
                        self.save_pretrained(&store, path)?;
                    }
                }
            }
        }
        if !self.params.zero_shot {
            // The head and adapters fine-tuning trains are drawn from its own seed: seeds that
            // share a pre-training still start fine-tuning apart.
            store.reseed(self.params.finetune.seed ^ 0x0c7e);
            net.new_outcome_head(&mut store)?;
            if self.params.uses_lora() {
                net.add_lora(&mut store, self.params.lora_rank)?;
            }
            let y = |ex: &[Example]| -> Vec<f32> { ex.iter().map(|e| e.label.as_f32()).collect() };
            let (ty, vy) = (y(train), y(valid));
            self.finetune(&net, &store, (&train_inputs, &ty), (&valid_inputs, &vy))?;
        }
        self.report.total_parameters = store.parameter_count(&[]);
        tracing::info!("{}: {:?}", self.kind().name(), self.report);
        self.trained = Some(Trained { store, net });
        Ok(())
    }
}
