//! The few trainable layers CLaDMoP needs, on candle `Var`s held in one named store, so that a model
//! saves to and loads from safetensors by name, and training can pick which variables move (all of
//! them, or only the LoRA adapters and the head).
//!
//! Built from differentiable candle primitives only: candle-nn's fused softmax and layer norm have
//! no backward pass on the CPU.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{PredictError, Result};

/// Named variables, created from a seeded RNG (candle's CPU RNG cannot be seeded) or loaded.
pub struct Store {
    vars: BTreeMap<String, Var>,
    rng: StdRng,
}

pub enum Init {
    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for linear layers.
    FanIn(usize),
    Normal(f32),
    Zeros,
    Ones,
}

impl Store {
    pub fn new(seed: u64) -> Store {
        Store {
            vars: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A store whose variables come from saved tensors; `var` then returns those.
    pub fn from_tensors(tensors: std::collections::HashMap<String, Tensor>) -> Result<Store> {
        let mut vars = BTreeMap::new();
        for (k, t) in tensors {
            vars.insert(k, Var::from_tensor(&t.to_dtype(DType::F32)?)?);
        }
        Ok(Store {
            vars,
            rng: StdRng::seed_from_u64(0),
        })
    }

    /// The variable `name`: the loaded one when present (its shape checked), else a new one.
    pub fn var(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Var> {
        if let Some(v) = self.vars.get(name) {
            if v.dims() != shape {
                return Err(PredictError::Invalid(format!(
                    "weights `{name}` have shape {:?}, the model expects {shape:?}",
                    v.dims()
                )));
            }
            return Ok(v.clone());
        }
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match init {
            Init::FanIn(fan_in) => {
                let b = 1.0 / (fan_in.max(1) as f32).sqrt();
                (0..n).map(|_| self.rng.random_range(-b..b)).collect()
            }
            Init::Normal(std) => (0..n)
                .map(|_| {
                    // Box-Muller: rand 0.9 has no normal distribution without rand_distr.
                    let u1: f32 = self.rng.random_range(f32::EPSILON..1.0);
                    let u2: f32 = self.rng.random();
                    std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
                })
                .collect(),
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
        };
        let v = Var::from_tensor(&Tensor::from_vec(data, shape, &Device::Cpu)?)?;
        self.vars.insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// Restarts the RNG that draws new variables: fine-tuning's own variables then depend on its
    /// seed, not on the pre-training's.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    /// Drops the variables whose names start with `prefix`, so that `var` draws them anew.
    pub fn remove(&mut self, prefix: &str) {
        self.vars.retain(|k, _| !k.starts_with(prefix));
    }

    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    pub fn insert(&mut self, name: &str, var: Var) {
        self.vars.insert(name.to_string(), var);
    }

    /// Variables whose names start with any of `prefixes` (all of them for an empty list).
    pub fn select(&self, prefixes: &[&str]) -> Vec<Var> {
        self.vars
            .iter()
            .filter(|(k, _)| prefixes.is_empty() || prefixes.iter().any(|p| k.starts_with(p)))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn tensors(&self) -> std::collections::HashMap<String, Tensor> {
        self.vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }

    pub fn parameter_count(&self, prefixes: &[&str]) -> usize {
        self.select(prefixes).iter().map(|v| v.elem_count()).sum()
    }

    pub fn snapshot(&self) -> Result<Snapshot> {
        self.vars
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
            .collect()
    }

    pub fn restore(&self, saved: &[(String, Tensor)]) -> Result<()> {
        for (k, t) in saved {
            if let Some(v) = self.vars.get(k) {
                v.set(t)?;
            }
        }
        Ok(())
    }
}

/// Copies of every variable, by name: the weights of the best epoch so far.
pub type Snapshot = Vec<(String, Tensor)>;

/// A linear layer, optionally with a low-rank adapter: y = x W^T + b + s (x A^T) B^T.
pub struct Linear {
    w: Var,
    b: Var,
    lora: Option<(Var, Var, f64)>,
}

impl Linear {
    pub fn new(store: &mut Store, name: &str, input: usize, output: usize) -> Result<Linear> {
        Ok(Linear {
            w: store.var(
                &format!("{name}.weight"),
                &[output, input],
                Init::FanIn(input),
            )?,
            b: store.var(&format!("{name}.bias"), &[output], Init::FanIn(input))?,
            lora: None,
        })
    }

    /// Adds a rank-`rank` adapter named `lora.<name>`: A random, B zero, so the layer starts out
    /// computing exactly what the pre-trained one did. Scale alpha / rank with alpha = rank.
    pub fn add_lora(&mut self, store: &mut Store, name: &str, rank: usize) -> Result<()> {
        let (out, input) = self.w.dims2()?;
        let a = store.var(
            &format!("lora.{name}.a"),
            &[rank, input],
            Init::FanIn(input),
        )?;
        let b = store.var(&format!("lora.{name}.b"), &[out, rank], Init::Zeros)?;
        self.lora = Some((a, b, 1.0));
        Ok(())
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x
            .broadcast_matmul(&self.w.as_tensor().t()?)?
            .broadcast_add(self.b.as_tensor())?;
        if let Some((a, b, scale)) = &self.lora {
            let delta = x
                .broadcast_matmul(&a.as_tensor().t()?)?
                .broadcast_matmul(&b.as_tensor().t()?)?;
            y = (y + (delta * *scale)?)?;
        }
        Ok(y)
    }

    pub fn input_dim(&self) -> usize {
        self.w.dims()[1]
    }

    pub fn output_dim(&self) -> usize {
        self.w.dims()[0]
    }
}

pub struct LayerNorm {
    gamma: Var,
    beta: Var,
}

impl LayerNorm {
    pub fn new(store: &mut Store, name: &str, dim: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: store.var(&format!("{name}.weight"), &[dim], Init::Ones)?,
            beta: store.var(&format!("{name}.bias"), &[dim], Init::Zeros)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, self.gamma.as_tensor(), self.beta.as_tensor(), 1e-5)
    }
}

/// Layer normalisation over the last dimension, from differentiable primitives.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(normed.broadcast_mul(gamma)?.broadcast_add(beta)?)
}

/// Additive attention bias from a (batch, keys) 0/1 mask: 0 where present, -1e4 where padding.
pub fn key_bias(mask: &Tensor) -> Result<Tensor> {
    let (b, n) = mask.dims2()?;
    Ok(((mask - 1.0)? * 1e4)?.reshape((b, 1, 1, n))?)
}

/// Multi-head attention: queries (b, nq, d) attend to keys/values (b, nk, d).
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
}

impl Attention {
    pub fn new(store: &mut Store, name: &str, dim: usize, heads: usize) -> Result<Attention> {
        if !dim.is_multiple_of(heads) {
            return Err(PredictError::Invalid(format!(
                "model width {dim} is not a multiple of {heads} heads"
            )));
        }
        Ok(Attention {
            q: Linear::new(store, &format!("{name}.q"), dim, dim)?,
            k: Linear::new(store, &format!("{name}.k"), dim, dim)?,
            v: Linear::new(store, &format!("{name}.v"), dim, dim)?,
            o: Linear::new(store, &format!("{name}.o"), dim, dim)?,
            heads,
        })
    }

    pub fn add_lora(&mut self, store: &mut Store, name: &str, rank: usize) -> Result<()> {
        for (l, part) in [
            (&mut self.q, "q"),
            (&mut self.k, "k"),
            (&mut self.v, "v"),
            (&mut self.o, "o"),
        ] {
            l.add_lora(store, &format!("{name}.{part}"), rank)?;
        }
        Ok(())
    }

    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        Ok(x.reshape((b, n, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// `bias`: (b, 1, 1, nk) from [`key_bias`].
    pub fn forward(&self, queries: &Tensor, keys: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (b, nq, d) = queries.dims3()?;
        let q = self.split_heads(&self.q.forward(queries)?)?;
        let k = self.split_heads(&self.k.forward(keys)?)?;
        let v = self.split_heads(&self.v.forward(keys)?)?;
        let scale = 1.0 / ((d / self.heads) as f64).sqrt();
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(bias)?;
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, nq, d))?;
        self.o.forward(&out)
    }
}

/// Two linear layers with a GELU between.
pub struct FeedForward {
    up: Linear,
    down: Linear,
}

impl FeedForward {
    pub fn new(store: &mut Store, name: &str, dim: usize, hidden: usize) -> Result<FeedForward> {
        Ok(FeedForward {
            up: Linear::new(store, &format!("{name}.up"), dim, hidden)?,
            down: Linear::new(store, &format!("{name}.down"), hidden, dim)?,
        })
    }

    pub fn add_lora(&mut self, store: &mut Store, name: &str, rank: usize) -> Result<()> {
        self.up.add_lora(store, &format!("{name}.up"), rank)?;
        self.down.add_lora(store, &format!("{name}.down"), rank)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.down.forward(&self.up.forward(x)?.gelu()?)
    }
}

/// A pre-norm transformer block whose queries attend to a (possibly different) key sequence:
/// self-attention when `keys` is `queries`, cross-attention otherwise.
pub struct Block {
    norm_q: LayerNorm,
    norm_kv: LayerNorm,
    attention: Attention,
    norm_ff: LayerNorm,
    ff: FeedForward,
}

impl Block {
    pub fn new(store: &mut Store, name: &str, dim: usize, heads: usize) -> Result<Block> {
        Ok(Block {
            norm_q: LayerNorm::new(store, &format!("{name}.norm_q"), dim)?,
            norm_kv: LayerNorm::new(store, &format!("{name}.norm_kv"), dim)?,
            attention: Attention::new(store, &format!("{name}.attn"), dim, heads)?,
            norm_ff: LayerNorm::new(store, &format!("{name}.norm_ff"), dim)?,
            ff: FeedForward::new(store, &format!("{name}.ff"), dim, 2 * dim)?,
        })
    }

    pub fn add_lora(&mut self, store: &mut Store, name: &str, rank: usize) -> Result<()> {
        self.attention
            .add_lora(store, &format!("{name}.attn"), rank)?;
        self.ff.add_lora(store, &format!("{name}.ff"), rank)
    }

    pub fn forward(&self, queries: &Tensor, keys: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let kv = self.norm_kv.forward(keys)?;
        let x = (queries
            + self
                .attention
                .forward(&self.norm_q.forward(queries)?, &kv, bias)?)?;
        Ok((&x + self.ff.forward(&self.norm_ff.forward(&x)?)?)?)
    }
}

/// Mean over the rows a (b, n) 0/1 mask keeps, of a (b, n, d) tensor.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.unsqueeze(2)?;
    let sum = x.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1.0, f64::MAX)?;
    Ok(sum.broadcast_div(&count)?)
}

/// Max over the rows a (b, n) 0/1 mask keeps, of a (b, n, d) tensor.
pub fn masked_max(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let penalty = ((mask - 1.0)? * 1e4)?.unsqueeze(2)?;
    Ok(x.broadcast_add(&penalty)?.max(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_starts_as_the_identity_change_and_the_layer_norm_normalises() {
        let mut s = Store::new(1);
        let mut l = Linear::new(&mut s, "l", 4, 3).unwrap();
        let x = Tensor::new(&[[1f32, 2., 3., 4.], [0., -1., 0.5, 2.]], &Device::Cpu).unwrap();
        let before = l.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        l.add_lora(&mut s, "l", 2).unwrap();
        assert_eq!(l.forward(&x).unwrap().to_vec2::<f32>().unwrap(), before);
        assert_eq!(s.select(&["lora."]).len(), 2);

        let n = LayerNorm::new(&mut s, "n", 4).unwrap();
        let y = n.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        for row in y {
            let mean: f32 = row.iter().sum::<f32>() / 4.0;
            let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
                "{mean} {var}"
            );
        }
    }

    #[test]
    fn attention_ignores_masked_keys() {
        let mut s = Store::new(2);
        let a = Attention::new(&mut s, "a", 8, 2).unwrap();
        let q = Tensor::ones((1, 2, 8), DType::F32, &Device::Cpu).unwrap();
        let k1 = Tensor::new(&[[[0.5f32; 8], [1.0; 8], [9.0; 8]]], &Device::Cpu).unwrap();
        let k2 = Tensor::new(&[[[0.5f32; 8], [1.0; 8], [-3.0; 8]]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1f32, 1., 0.]], &Device::Cpu).unwrap();
        let bias = key_bias(&mask).unwrap();
        let y1 = a.forward(&q, &k1, &bias).unwrap().to_vec3::<f32>().unwrap();
        let y2 = a.forward(&q, &k2, &bias).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(y1, y2, "the padded key must not change the output");
    }
}
