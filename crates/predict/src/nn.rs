//! Small dense networks trained with candle: logistic regression is the one-layer case.
//!
//! Weights are initialised from a seeded RNG (candle's CPU RNG cannot be seeded) and mini-batches
//! are shuffled with it, so training is reproducible from the seed. No dropout for the same reason:
//! regularisation is an L2 penalty plus early stopping on the validation loss.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{PredictError, Result};

struct Dense {
    w: Var, // (out, in)
    b: Var, // (out)
}

/// A multi-layer perceptron with ReLU between layers and one output logit.
pub struct Mlp {
    layers: Vec<Dense>,
}

impl Mlp {
    /// `dims` = [input, hidden..., 1]. PyTorch's default init: U(-1/sqrt(in), 1/sqrt(in)).
    pub fn new(dims: &[usize], seed: u64) -> Result<Mlp> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut layers = Vec::new();
        for pair in dims.windows(2) {
            let (i, o) = (pair[0], pair[1]);
            let bound = 1.0 / (i as f32).sqrt();
            let w: Vec<f32> = (0..i * o)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let b: Vec<f32> = (0..o).map(|_| rng.random_range(-bound..bound)).collect();
            layers.push(Dense {
                w: Var::from_tensor(&Tensor::from_vec(w, (o, i), &Device::Cpu)?)?,
                b: Var::from_tensor(&Tensor::from_vec(b, o, &Device::Cpu)?)?,
            });
        }
        Ok(Mlp { layers })
    }

    /// Logits, one per row of `x` (shape n).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = h
                .matmul(&l.w.as_tensor().t()?)?
                .broadcast_add(l.b.as_tensor())?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        Ok(h.squeeze(D::Minus1)?)
    }

    pub fn predict_proba(&self, x: &Tensor) -> Result<Vec<f32>> {
        Ok(candle_nn::ops::sigmoid(&self.forward(x)?)?.to_vec1::<f32>()?)
    }

    fn vars(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|l| [l.w.clone(), l.b.clone()])
            .collect()
    }

    fn snapshot(&self) -> Result<Vec<Tensor>> {
        Ok(self
            .vars()
            .iter()
            .map(|v| v.as_tensor().copy())
            .collect::<candle_core::Result<_>>()?)
    }

    fn restore(&self, saved: &[Tensor]) -> Result<()> {
        for (v, t) in self.vars().iter().zip(saved) {
            v.set(t)?;
        }
        Ok(())
    }

    /// Sum of squared weights (biases excluded), for the L2 penalty.
    fn weight_norm2(&self) -> Result<Tensor> {
        let mut total = Tensor::zeros((), DType::F32, &Device::Cpu)?;
        for l in &self.layers {
            total = (total + l.w.as_tensor().sqr()?.sum_all()?)?;
        }
        Ok(total)
    }

    pub fn tensors(&self, prefix: &str) -> HashMap<String, Tensor> {
        let mut m = HashMap::new();
        for (i, l) in self.layers.iter().enumerate() {
            m.insert(format!("{prefix}{i}.weight"), l.w.as_tensor().clone());
            m.insert(format!("{prefix}{i}.bias"), l.b.as_tensor().clone());
        }
        m
    }

    pub fn from_tensors(m: &HashMap<String, Tensor>, prefix: &str, path: &Path) -> Result<Mlp> {
        let mut layers = Vec::new();
        while let Some(w) = m.get(&format!("{prefix}{}.weight", layers.len())) {
            let b = m
                .get(&format!("{prefix}{}.bias", layers.len()))
                .ok_or_else(|| PredictError::Format {
                    path: path.to_path_buf(),
                    message: format!("missing {prefix}{}.bias", layers.len()),
                })?;
            layers.push(Dense {
                w: Var::from_tensor(w)?,
                b: Var::from_tensor(b)?,
            });
        }
        if layers.is_empty() {
            return Err(PredictError::Format {
                path: path.to_path_buf(),
                message: format!("no `{prefix}0.weight` tensor"),
            });
        }
        Ok(Mlp { layers })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub learning_rate: f64,
    /// L2 penalty on weights, added to the mean loss as `l2 / 2 * sum(w^2)`.
    pub l2: f64,
    pub max_epochs: usize,
    /// Stop when the validation loss has not improved for this many epochs.
    pub patience: usize,
    /// Rows per step; 0 = the whole training set.
    pub batch_size: usize,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FitReport {
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_valid_loss: Option<f64>,
    pub final_train_loss: f64,
}

/// Early stopping on a validation loss: remembers the best epoch and its weights.
pub(crate) struct EarlyStopping<W> {
    patience: usize,
    best: Option<Best<W>>,
}

pub(crate) struct Best<W> {
    pub loss: f64,
    pub epoch: usize,
    pub weights: W,
}

impl<W> EarlyStopping<W> {
    pub fn new(patience: usize) -> Self {
        EarlyStopping {
            patience,
            best: None,
        }
    }

    /// Records an epoch's validation loss; `weights` is taken only when the loss is the best yet.
    pub fn record(
        &mut self,
        epoch: usize,
        loss: f64,
        weights: impl FnOnce() -> Result<W>,
    ) -> Result<()> {
        if self.best.as_ref().is_none_or(|b| loss < b.loss) {
            self.best = Some(Best {
                loss,
                epoch,
                weights: weights()?,
            });
        }
        Ok(())
    }

    /// Whether `patience` epochs have gone by since the best one.
    pub fn should_stop(&self, epoch: usize) -> bool {
        self.best
            .as_ref()
            .is_some_and(|b| epoch - b.epoch >= self.patience)
    }

    pub fn into_best(self) -> Option<Best<W>> {
        self.best
    }
}

/// An error for a training loss that is no longer finite.
pub(crate) fn ensure_finite(loss: f64, what: &str, epoch: usize) -> Result<()> {
    if loss.is_finite() {
        return Ok(());
    }
    Err(PredictError::Invalid(format!(
        "{what} diverged at epoch {epoch} (loss {loss}); lower the learning rate"
    )))
}

/// Mean binary cross-entropy on logits in the numerically stable form
/// max(z, 0) - z y + ln(1 + e^-|z|). (candle-nn's version takes log(sigmoid(z)), which is -inf once
/// a logit saturates in f32, and training turns to NaN.)
pub(crate) fn bce(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    let softplus_neg_abs = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    let loss = ((logits.relu()? - (logits * y)?)? + softplus_neg_abs)?;
    Ok(loss.mean_all()?)
}

/// Trains `mlp` on (x, y); with `valid`, keeps the weights of the epoch with the lowest validation
/// loss. `on_epoch(epoch, train_loss)` reports progress.
pub fn fit(
    mlp: &Mlp,
    x: &Tensor,
    y: &Tensor,
    valid: Option<(&Tensor, &Tensor)>,
    cfg: &TrainConfig,
    mut on_epoch: impl FnMut(usize, f64),
) -> Result<FitReport> {
    let n = x.dim(0)?;
    let mut opt = AdamW::new(
        mlp.vars(),
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let batch = if cfg.batch_size == 0 {
        n
    } else {
        cfg.batch_size.min(n)
    };
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut stopping = EarlyStopping::new(cfg.patience);
    let mut train_loss = f64::NAN;
    let mut epochs = 0;
    for epoch in 0..cfg.max_epochs {
        epochs = epoch + 1;
        order.shuffle(&mut rng);
        let mut total = 0.0;
        for chunk in order.chunks(batch) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &Device::Cpu)?;
            let (xb, yb) = if chunk.len() == n && batch == n {
                (x.clone(), y.clone())
            } else {
                (x.index_select(&idx, 0)?, y.index_select(&idx, 0)?)
            };
            let loss = bce(&mlp.forward(&xb)?, &yb)?;
            total += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            let loss = if cfg.l2 > 0.0 {
                (loss + (mlp.weight_norm2()? * (cfg.l2 / 2.0))?)?
            } else {
                loss
            };
            opt.backward_step(&loss)?;
        }
        train_loss = total / n as f64;
        ensure_finite(train_loss, "training", epoch)?;
        on_epoch(epoch, train_loss);
        if let Some((xv, yv)) = valid {
            let vloss = bce(&mlp.forward(xv)?, yv)?.to_scalar::<f32>()? as f64;
            stopping.record(epoch, vloss, || mlp.snapshot())?;
            if stopping.should_stop(epoch) {
                break;
            }
        }
    }
    let (best_valid_loss, best_epoch) = match stopping.into_best() {
        Some(b) => {
            mlp.restore(&b.weights)?;
            (Some(b.loss), b.epoch)
        }
        None => (None, epochs.saturating_sub(1)),
    };
    Ok(FitReport {
        epochs,
        best_epoch,
        best_valid_loss,
        final_train_loss: train_loss,
    })
}

/// A dense (rows x dim) tensor from rows.
pub fn matrix(rows: &[Vec<f32>], dim: usize) -> Result<Tensor> {
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Ok(Tensor::from_vec(flat, (rows.len(), dim), &Device::Cpu)?)
}

pub fn label_tensor(labels: &[u8]) -> Result<Tensor> {
    let v: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
    Ok(Tensor::from_vec(v, labels.len(), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_loss_matches_the_formula_and_survives_saturation() {
        let z = Tensor::new(&[0.0f32, 2.0, -3.0, 200.0], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1.0f32, 0.0, 0.0, 0.0], &Device::Cpu).unwrap();
        let got = bce(&z, &y).unwrap().to_scalar::<f32>().unwrap() as f64;
        let sp = |x: f64| (1.0 + x.exp()).ln(); // -log(1 - sigmoid(x)) for y = 0, log1p(e^-x) for y = 1
        let want = ((1.0f64 + (-0.0f64).exp()).ln() + sp(2.0) + sp(-3.0) + 200.0) / 4.0;
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }

    #[test]
    fn learns_a_separable_problem_reproducibly() {
        // y = 1 when x0 > x1.
        let mut rng = StdRng::seed_from_u64(1);
        let rows: Vec<Vec<f32>> = (0..200).map(|_| vec![rng.random(), rng.random()]).collect();
        let labels: Vec<u8> = rows.iter().map(|r| (r[0] > r[1]) as u8).collect();
        let x = matrix(&rows, 2).unwrap();
        let y = label_tensor(&labels).unwrap();
        let cfg = TrainConfig {
            learning_rate: 0.05,
            l2: 0.0,
            max_epochs: 200,
            patience: 20,
            batch_size: 32,
            seed: 3,
        };
        let run = || {
            let m = Mlp::new(&[2, 8, 1], 3).unwrap();
            fit(&m, &x, &y, Some((&x, &y)), &cfg, |_, _| {}).unwrap();
            m.predict_proba(&x).unwrap()
        };
        let p = run();
        let acc = p
            .iter()
            .zip(&labels)
            .filter(|(p, &l)| (**p >= 0.5) == (l == 1))
            .count();
        assert!(acc >= 190, "accuracy {acc}/200");
        assert_eq!(p, run(), "same seed, same model");
    }
}
