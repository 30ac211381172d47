//! Models made of models: a seed ensemble (the same model trained with several seeds, its
//! probabilities averaged) and a stack (different models, their logits combined by a logistic
//! regression fitted on the validation split only). Both exist to make one training run's figures
//! less of a draw: a single `cladmop` run moves by several hundredths with its seed.
//!
//! The stack's combiner sees validation predictions of members that also early-stopped (or chose a
//! penalty) on that split, so its weights lean towards whichever member fits validation best; the
//! penalty on the weights and the member count (four) keep that lean small, and the test split
//! never enters.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use trialforge_trial::Protocol;

use crate::calibrate::{logit, Logistic};
use crate::model::{labels, read_config, write_config, Example, Header, ModelKind, OutcomeModel};
use crate::{PredictError, Result};

/// L2 penalty on the stack's weights (per mean log-loss): enough to keep four correlated logits
/// from trading large opposite weights on a hundred validation trials.
pub const STACK_L2: f64 = 0.01;

/// The models a `stack` combines, by name: the default models, each a different view (terms,
/// a sentence embedding, the fused criteria-drug-disease network, its pair-matching score).
pub const STACK_MEMBERS: [&str; 4] = ["tfidf-lr", "embed-mlp", "cladmop", "cladmop-zero-shot"];

#[derive(Serialize, Deserialize)]
struct CombinedConfig {
    #[serde(flatten)]
    header: Header,
    /// Member names, saved in `member-0/`, `member-1/`, ...
    members: Vec<String>,
    /// The stack's combiner over member logits (none for an ensemble: the mean probability).
    #[serde(default)]
    combiner: Option<Logistic>,
}

fn member_dir(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("member-{k}"))
}

/// Member models with their names.
pub type Members<'e> = Vec<(String, Box<dyn OutcomeModel + 'e>)>;

/// Several models trained alike but for their seeds; predicts their mean probability.
pub struct Ensemble<'e> {
    members: Members<'e>,
    unlabelled: Vec<Protocol>,
}

impl<'e> Ensemble<'e> {
    /// `members`: untrained (or, from [`crate::registry::load_model`], trained) models.
    pub fn new(members: Members<'e>) -> Self {
        Ensemble {
            members,
            unlabelled: Vec::new(),
        }
    }
}

/// Different models; predicts `sigmoid(bias + Σ w_k logit(p_k))` with the weights fitted on the
/// validation split.
pub struct Stack<'e> {
    members: Members<'e>,
    combiner: Option<Logistic>,
    unlabelled: Vec<Protocol>,
}

impl<'e> Stack<'e> {
    pub fn new(members: Members<'e>) -> Self {
        Stack {
            members,
            combiner: None,
            unlabelled: Vec::new(),
        }
    }

    /// A stack of members already trained (the benchmark trains them for their own rows): only the
    /// combiner is fitted, on `valid`.
    pub fn from_trained(members: Members<'e>, valid: &[Example]) -> Result<Self> {
        let mut stack = Stack::new(members);
        stack.fit_combiner(valid)?;
        Ok(stack)
    }

    pub(crate) fn loaded(members: Members<'e>, combiner: Option<Logistic>) -> Self {
        Stack {
            members,
            combiner,
            unlabelled: Vec::new(),
        }
    }

    /// The fitted weights, one per member in order, and the bias.
    pub fn combiner(&self) -> Option<&Logistic> {
        self.combiner.as_ref()
    }

    fn fit_combiner(&mut self, valid: &[Example]) -> Result<()> {
        if valid.is_empty() {
            return Err(PredictError::Invalid(
                "stack: its weights are fitted on the validation split, and none was given".into(),
            ));
        }
        let protocols: Vec<&Protocol> = valid.iter().map(|e| e.protocol).collect();
        let features = member_logits(&self.members, &protocols)?;
        self.combiner = Some(Logistic::fit(&features, &labels(valid), STACK_L2));
        Ok(())
    }
}

/// Each protocol's row of member logits.
fn member_logits(members: &Members, protocols: &[&Protocol]) -> Result<Vec<Vec<f64>>> {
    let mut rows = vec![Vec::with_capacity(members.len()); protocols.len()];
    for (_, m) in members {
        for (row, p) in rows.iter_mut().zip(m.predict(protocols)?) {
            row.push(logit(p));
        }
    }
    Ok(rows)
}

fn fit_members(
    members: &mut Members,
    unlabelled: &[&Protocol],
    train: &[Example],
    valid: &[Example],
) -> Result<()> {
    for (_, m) in members.iter_mut() {
        m.add_unlabelled(unlabelled);
        m.fit(train, valid)?;
    }
    Ok(())
}

fn save_combined(
    dir: &Path,
    kind: ModelKind,
    members: &Members,
    combiner: Option<&Logistic>,
) -> Result<()> {
    write_config(
        dir,
        &CombinedConfig {
            header: Header {
                kind,
                trialforge_version: env!("CARGO_PKG_VERSION").into(),
            },
            members: members.iter().map(|(n, _)| n.clone()).collect(),
            combiner: combiner.cloned(),
        },
    )?;
    for (k, (_, m)) in members.iter().enumerate() {
        m.save(&member_dir(dir, k))?;
    }
    Ok(())
}

/// The saved members of a combined model, loaded by `load` (the registry's loader), and its
/// combiner.
pub(crate) fn load_combined<'e>(
    dir: &Path,
    mut load: impl FnMut(&Path) -> Result<Box<dyn OutcomeModel + 'e>>,
) -> Result<(Members<'e>, Option<Logistic>)> {
    let cfg: CombinedConfig = read_config(dir)?;
    let mut members = Vec::new();
    for (k, name) in cfg.members.into_iter().enumerate() {
        members.push((name, load(&member_dir(dir, k))?));
    }
    Ok((members, cfg.combiner))
}

/// The folders of a saved combined model's members.
pub(crate) fn member_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let cfg: CombinedConfig = read_config(dir)?;
    Ok((0..cfg.members.len()).map(|k| member_dir(dir, k)).collect())
}

impl OutcomeModel for Ensemble<'_> {
    fn kind(&self) -> ModelKind {
        ModelKind::Ensemble
    }
    fn add_unlabelled(&mut self, protocols: &[&Protocol]) {
        self.unlabelled
            .extend(protocols.iter().map(|p| (*p).clone()));
    }
    fn fit(&mut self, train: &[Example], valid: &[Example]) -> Result<()> {
        let unlabelled: Vec<&Protocol> = self.unlabelled.iter().collect();
        fit_members(&mut self.members, &unlabelled, train, valid)
    }
    fn predict(&self, protocols: &[&Protocol]) -> Result<Vec<f32>> {
        let mut sum = vec![0f32; protocols.len()];
        for (_, m) in &self.members {
            for (s, p) in sum.iter_mut().zip(m.predict(protocols)?) {
                *s += p;
            }
        }
        let n = self.members.len().max(1) as f32;
        Ok(sum.into_iter().map(|s| s / n).collect())
    }
    fn save(&self, dir: &Path) -> Result<()> {
        save_combined(dir, ModelKind::Ensemble, &self.members, None)
    }
}

impl OutcomeModel for Stack<'_> {
    fn kind(&self) -> ModelKind {
        ModelKind::Stack
    }
    fn add_unlabelled(&mut self, protocols: &[&Protocol]) {
        self.unlabelled
            .extend(protocols.iter().map(|p| (*p).clone()));
    }
    fn fit(&mut self, train: &[Example], valid: &[Example]) -> Result<()> {
        let unlabelled: Vec<&Protocol> = self.unlabelled.iter().collect();
        fit_members(&mut self.members, &unlabelled, train, valid)?;
        self.fit_combiner(valid)
    }
    fn predict(&self, protocols: &[&Protocol]) -> Result<Vec<f32>> {
        let combiner = self
            .combiner
            .as_ref()
            .ok_or_else(|| PredictError::Invalid("stack: used before fit".into()))?;
        Ok(member_logits(&self.members, protocols)?
            .iter()
            .map(|row| combiner.probability(row))
            .collect())
    }
    fn save(&self, dir: &Path) -> Result<()> {
        save_combined(dir, ModelKind::Stack, &self.members, self.combiner.as_ref())
    }
}
