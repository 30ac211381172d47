//! The CLaDMoP network: three branches (criteria items, drug molecules as learned fingerprints, ICD
//! codes), a grouping block
//! that pools the criteria items into a few learned groups, a fusion block over the groups, molecules
//! and codes together, and two heads on the pooled trial vector: pair matching and outcome.

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::features::{Batch, ICD_LEVELS};
use super::layers::{key_bias, masked_mean, Block, Init, Linear, Store};
use crate::Result;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetConfig {
    /// Width of every branch and of the fusion.
    pub dim: usize,
    pub heads: usize,
    /// Learned groups the criteria items are pooled into (the grouping block's queries).
    pub groups: usize,
    /// Width of the frozen encoder's item embeddings.
    pub item_dim: usize,
    pub smiles_buckets: usize,
    pub icd_buckets: usize,
    /// Ablation: false lets the fusion attend to every item (no grouping block).
    pub grouping: bool,
    /// Ablation: false leaves the molecules out of the fusion and the trial vector.
    pub drugs: bool,
}

/// Multiply-adds of one pre-norm block with `nq` queries over `nk` keys, width `d` (projections,
/// attention scores and weighted sum, feed-forward of width 2d).
pub fn block_macs(nq: usize, nk: usize, d: usize) -> u64 {
    let (nq, nk, d) = (nq as u64, nk as u64, d as u64);
    6 * nq * d * d + 2 * nk * d * d + 2 * nq * nk * d
}

/// Multiply-adds of the criteria-side fusion for one trial, with and without the grouping block.
pub fn fusion_macs(
    cfg: &NetConfig,
    items: usize,
    drugs: usize,
    codes: usize,
    grouped: bool,
) -> u64 {
    let others = if cfg.drugs { drugs } else { 0 } + codes;
    if grouped {
        block_macs(cfg.groups, items, cfg.dim) + {
            let n = cfg.groups + others;
            block_macs(n, n, cfg.dim)
        }
    } else {
        let n = items + others;
        block_macs(n, n, cfg.dim)
    }
}

struct Head {
    hidden: Linear,
    out: Linear,
}

impl Head {
    fn new(store: &mut Store, name: &str, input: usize, hidden: usize) -> Result<Head> {
        Ok(Head {
            hidden: Linear::new(store, &format!("{name}.hidden"), input, hidden)?,
            out: Linear::new(store, &format!("{name}.out"), hidden, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self
            .out
            .forward(&self.hidden.forward(x)?.gelu()?)?
            .squeeze(1)?)
    }
}

pub struct Net {
    pub cfg: NetConfig,
    item_proj: Linear,
    sections: Var,
    smiles_embedding: Var,
    molecule_hidden: Linear,
    molecule_out: Linear,
    icd_embedding: Var,
    types: Var,
    group_queries: Var,
    grouping: Block,
    fusion: Block,
    match_head: Head,
    outcome_head: Head,
}

/// Variable name prefixes of the parts pre-training learns, and of the outcome head.
pub const PRETRAINED: &[&str] = &[
    "item_proj.",
    "sections",
    "smiles.",
    "molecule_out.",
    "icd.",
    "types",
    "group_queries",
    "grouping.",
    "fusion.",
    "match.",
];
pub const OUTCOME_HEAD: &str = "outcome.";
/// Variable name prefixes of the drug branch (ADMET pre-training trains these alone).
pub const DRUG_BRANCH: &[&str] = &["smiles.", "molecule_out."];

impl Net {
    pub fn new(store: &mut Store, cfg: NetConfig) -> Result<Net> {
        let d = cfg.dim;
        Ok(Net {
            item_proj: Linear::new(store, "item_proj", cfg.item_dim, d)?,
            sections: store.var("sections", &[2, d], Init::Normal(0.02))?,
            smiles_embedding: store.var(
                "smiles.embedding",
                &[cfg.smiles_buckets, d],
                Init::Normal(0.1),
            )?,
            molecule_hidden: Linear::new(store, "smiles.hidden", d, d)?,
            molecule_out: Linear::new(store, "molecule_out", d, d)?,
            icd_embedding: store.var("icd.embedding", &[cfg.icd_buckets, d], Init::Normal(0.1))?,
            types: store.var("types", &[3, d], Init::Normal(0.02))?,
            group_queries: store.var("group_queries", &[cfg.groups, d], Init::Normal(0.1))?,
            grouping: Block::new(store, "grouping", d, cfg.heads)?,
            fusion: Block::new(store, "fusion", d, cfg.heads)?,
            match_head: Head::new(store, "match", 3 * d, d)?,
            outcome_head: Head::new(store, "outcome", 3 * d, d)?,
            cfg,
        })
    }

    /// Draws the outcome head anew from the store's RNG (after `Store::reseed`).
    pub fn new_outcome_head(&mut self, store: &mut Store) -> Result<()> {
        store.remove(OUTCOME_HEAD);
        self.outcome_head = Head::new(store, "outcome", 3 * self.cfg.dim, self.cfg.dim)?;
        Ok(())
    }

    /// LoRA adapters on the grouping and fusion blocks: what fine-tuning trains, with the head.
    pub fn add_lora(&mut self, store: &mut Store, rank: usize) -> Result<()> {
        self.grouping.add_lora(store, "grouping", rank)?;
        self.fusion.add_lora(store, "fusion", rank)
    }

    /// (b, n, d) item tokens.
    fn criteria(&self, b: &Batch) -> Result<Tensor> {
        let x = self.item_proj.forward(&b.items)?;
        let s = self
            .sections
            .as_tensor()
            .index_select(&b.sections.flatten_all()?, 0)?
            .reshape((b.size, b.n_items, self.cfg.dim))?;
        Ok((x + s)?)
    }

    /// (b, n_drugs, d): the mean of a molecule's fingerprint-bucket embeddings through a small MLP,
    /// once per distinct molecule of the batch, then gathered per trial.
    fn molecules(&self, b: &Batch) -> Result<Tensor> {
        Ok(self
            .molecule_vectors(&b.fingerprints)?
            .index_select(&b.drug_index, 0)?
            .reshape((b.size, b.n_drugs, self.cfg.dim))?)
    }

    /// (n, d): the drug branch on (n, buckets) `dense_fingerprints`; what ADMET pre-training trains.
    pub fn molecule_vectors(&self, fingerprints: &Tensor) -> Result<Tensor> {
        let pooled = fingerprints.matmul(self.smiles_embedding.as_tensor())?;
        self.molecule_out
            .forward(&self.molecule_hidden.forward(&pooled)?.gelu()?)
    }

    /// (b, n_codes, d): the sum of a code's prefix embeddings.
    fn diseases(&self, b: &Batch) -> Result<Tensor> {
        Ok(self
            .icd_embedding
            .as_tensor()
            .index_select(&b.codes.flatten_all()?, 0)?
            .reshape((b.size, b.n_codes, ICD_LEVELS, self.cfg.dim))?
            .sum(2)?)
    }

    fn type_embedding(&self, i: usize) -> Result<Tensor> {
        Ok(self.types.as_tensor().get(i)?)
    }

    /// The pooled trial vector (b, 3d): criteria groups, molecules, codes after fusion.
    pub fn trial_vector(&self, b: &Batch) -> Result<Tensor> {
        let d = self.cfg.dim;
        let items = self.criteria(b)?;
        let (criteria, criteria_mask) = if self.cfg.grouping {
            let q = self
                .group_queries
                .as_tensor()
                .unsqueeze(0)?
                .broadcast_as((b.size, self.cfg.groups, d))?
                .contiguous()?;
            let g = self
                .grouping
                .forward(&q, &items, &key_bias(&b.item_mask)?)?;
            let mask = Tensor::ones((b.size, self.cfg.groups), DType::F32, &Device::Cpu)?;
            (g, mask)
        } else {
            (items, b.item_mask.clone())
        };
        let n_criteria = criteria.dim(1)?;
        let criteria = criteria.broadcast_add(&self.type_embedding(0)?)?;
        let codes = self.diseases(b)?.broadcast_add(&self.type_embedding(2)?)?;
        let mut parts = vec![criteria];
        let mut masks = vec![criteria_mask];
        if self.cfg.drugs {
            parts.push(self.molecules(b)?.broadcast_add(&self.type_embedding(1)?)?);
            masks.push(b.drug_mask.clone());
        }
        parts.push(codes);
        masks.push(b.code_mask.clone());
        let joint = Tensor::cat(&parts, 1)?;
        let mask = Tensor::cat(&masks, 1)?;
        let fused = self.fusion.forward(&joint, &joint, &key_bias(&mask)?)?;

        let pool = |start: usize, len: usize| -> Result<Tensor> {
            masked_mean(&fused.narrow(1, start, len)?, &mask.narrow(1, start, len)?)
        };
        let criteria_vec = pool(0, n_criteria)?;
        let (drug_vec, codes_start) = if self.cfg.drugs {
            (pool(n_criteria, b.n_drugs)?, n_criteria + b.n_drugs)
        } else {
            (
                Tensor::zeros((b.size, d), DType::F32, &Device::Cpu)?,
                n_criteria,
            )
        };
        let code_vec = pool(codes_start, b.n_codes)?;
        Ok(Tensor::cat(&[&criteria_vec, &drug_vec, &code_vec], 1)?)
    }

    /// Logit that the criteria and the drugs of each row belong to the same trial.
    pub fn match_logits(&self, b: &Batch) -> Result<Tensor> {
        self.match_head.forward(&self.trial_vector(b)?)
    }

    /// Outcome logit (success) per row.
    pub fn outcome_logits(&self, b: &Batch) -> Result<Tensor> {
        self.outcome_head.forward(&self.trial_vector(b)?)
    }
}
