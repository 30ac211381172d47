//! The BERT forward pass on the CPU, hand-written because it is the product's core cost (embedding
//! the corpus, the server's unseen trials, cladmop's criteria, encoder-ft's states). candle's
//! `BertModel` pads a batch to its longest text, runs the dense layers as one small product per text,
//! copies Q, K and V into head-major tensors, and makes a pass (and an allocation) per element-wise
//! op. Here the texts of a batch are packed end to end with no padding; each dense layer is one
//! product over every token of the batch (the `gemm` crate, which picks AVX-512 or AVX2/FMA kernels
//! at run time); attention reads Q, K and V in place, per text and head; and bias, activation,
//! residual and layer norm are fused passes over rows. candle's `BertModel` is the reference the
//! tests hold it to.

use std::path::Path;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use candle_transformers::models::bert::{Config, HiddenAct, PositionEmbeddingType};
use multiversion::multiversion;
use rayon::prelude::*;
use trialforge_kernels::{exp, matmul, softmax, softmax_in_place, sum, MatMut, MatRef, LANES};

use crate::{Activation, EncodeError, Result};

/// Rows handed to one rayon task in the element-wise passes: enough work to pay for the task.
const ROWS_PER_TASK: usize = 32;
/// Tokens per tile of the feed-forward block: the tile's intermediate activations (tokens x 4·hidden)
/// stay in cache between the two products instead of making a round trip to memory.
const FFN_TILE: usize = 512;

/// A token-packed batch: every text's ids end to end, and each text's length.
pub struct PackedTokens {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub lengths: Vec<usize>,
}

impl PackedTokens {
    pub fn total(&self) -> usize {
        self.ids.len()
    }

    /// The first row of each text in the packed matrix.
    pub fn offsets(&self) -> Vec<usize> {
        self.lengths
            .iter()
            .scan(0, |start, &len| {
                let s = *start;
                *start += len;
                Some(s)
            })
            .collect()
    }
}

/// A dense layer stored as its transposed weight (`inputs x outputs`, row-major), which is the
/// layout the product reads fastest, and its bias.
struct Linear {
    weight_t: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    /// Query, key and value as one product: `hidden x 3·hidden`.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: Norm,
}

pub struct BertNet {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    vocab: usize,
    positions: usize,
    types: usize,
    hidden: usize,
    heads: usize,
    eps: f32,
    activation: Activation,
}

impl BertNet {
    /// Reads every tensor of a BERT checkpoint (plain, `bert.`- or `<model_type>.`-prefixed names, any
    /// float dtype) into f32 buffers in the layouts the forward pass uses.
    pub fn load(weights: &Path, config: &Config) -> Result<Self> {
        let err = |message: String| EncodeError::Model {
            path: weights.to_path_buf(),
            message,
        };
        if config.position_embedding_type != PositionEmbeddingType::Absolute {
            return Err(err("only absolute position embeddings are supported".into()));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        // SAFETY: the weights file is memory-mapped read-only and not modified while mapped.
        let st = unsafe { MmapedSafetensors::new(weights)? };
        let probe = "embeddings.word_embeddings.weight";
        let prefix = checkpoint_prefixes(config)
            .into_iter()
            .find(|p| st.get(&format!("{p}{probe}")).is_ok())
            .ok_or_else(|| err(format!("no `{probe}` tensor (under any prefix)")))?;
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let full = format!("{prefix}{name}");
            let t = st
                .load(&full, &Device::Cpu)
                .map_err(|e| err(format!("`{full}`: {e}")))?;
            if t.dims() != shape {
                return Err(err(format!(
                    "`{full}` has shape {:?}, the config implies {shape:?}",
                    t.dims()
                )));
            }
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let h = config.hidden_size;
        let ffn = config.intermediate_size;
        let norm = |name: &str| -> Result<Norm> {
            Ok(Norm {
                gamma: read(&format!("{name}.weight"), &[h])?,
                beta: read(&format!("{name}.bias"), &[h])?,
            })
        };
        let linear = |names: &[&str], inputs: usize, outputs: usize| -> Result<Linear> {
            let mut weight_t = vec![0f32; inputs * outputs * names.len()];
            let mut bias = Vec::with_capacity(outputs * names.len());
            let width = outputs * names.len();
            for (part, name) in names.iter().enumerate() {
                let w = read(&format!("{name}.weight"), &[outputs, inputs])?;
                for o in 0..outputs {
                    for i in 0..inputs {
                        weight_t[i * width + part * outputs + o] = w[o * inputs + i];
                    }
                }
                bias.extend(read(&format!("{name}.bias"), &[outputs])?);
            }
            Ok(Linear {
                weight_t,
                bias,
                inputs,
                outputs: width,
            })
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            layers.push(Layer {
                qkv: linear(
                    &[
                        &format!("{p}.attention.self.query"),
                        &format!("{p}.attention.self.key"),
                        &format!("{p}.attention.self.value"),
                    ],
                    h,
                    h,
                )?,
                attn_out: linear(&[&format!("{p}.attention.output.dense")], h, h)?,
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                ffn_in: linear(&[&format!("{p}.intermediate.dense")], h, ffn)?,
                ffn_out: linear(&[&format!("{p}.output.dense")], ffn, h)?,
                ffn_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let activation = match config.hidden_act {
            HiddenAct::Gelu => Activation::GeluErf,
            HiddenAct::GeluApproximate => Activation::GeluTanh,
            HiddenAct::Relu => Activation::Relu,
        };
        Ok(BertNet {
            word: read("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: read(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type: read(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?,
            embed_norm: norm("embeddings.LayerNorm")?,
            layers,
            vocab: config.vocab_size,
            positions: config.max_position_embeddings,
            types: config.type_vocab_size,
            hidden: h,
            heads: config.num_attention_heads,
            eps: config.layer_norm_eps as f32,
            activation,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The hidden states after the first `layers` layers, one row of `hidden` per token, in the
    /// packed order of `tokens`.
    pub fn forward(&self, tokens: &PackedTokens, layers: usize) -> Result<Vec<f32>> {
        let h = self.hidden;
        let total = tokens.total();
        let mut x = self.embed(tokens)?;
        let offsets = tokens.offsets();
        let mut qkv = vec![0f32; total * 3 * h];
        let mut context = vec![0f32; total * h];
        let mut attended = vec![0f32; total * h];
        for layer in &self.layers[..layers.min(self.layers.len())] {
            // Attention: Q, K, V for every token in one product, then each text's heads.
            dense(&mut qkv, &x, &layer.qkv, total);
            add_bias(&mut qkv, &layer.qkv.bias);
            self.attention(&qkv, &offsets, &tokens.lengths, &mut context);
            dense(&mut attended, &context, &layer.attn_out, total);
            residual_norm(
                &mut attended,
                &layer.attn_out.bias,
                &x,
                &layer.attn_norm,
                self.eps,
            );
            // Feed-forward, a tile of tokens at a time, written back into `x`.
            self.feed_forward(layer, &attended, &mut x);
        }
        Ok(x)
    }

    fn embed(&self, tokens: &PackedTokens) -> Result<Vec<f32>> {
        let h = self.hidden;
        let mut rows = Vec::with_capacity(tokens.total());
        for (&len, start) in tokens.lengths.iter().zip(tokens.offsets()) {
            if len > self.positions {
                return Err(EncodeError::Backend(format!(
                    "a text of {len} tokens is longer than the model's {} positions",
                    self.positions
                )));
            }
            for p in 0..len {
                let (id, ty) = (
                    tokens.ids[start + p] as usize,
                    tokens.type_ids[start + p] as usize,
                );
                if id >= self.vocab || ty >= self.types {
                    return Err(EncodeError::Backend(format!(
                        "token id {id} (type {ty}) is outside the model's vocabulary of {} ({} types): the tokenizer does not match the weights",
                        self.vocab, self.types
                    )));
                }
                rows.push((id, p, ty));
            }
        }
        let mut x = vec![0f32; rows.len() * h];
        x.par_chunks_mut(h)
            .zip(rows.par_iter())
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(out, &(id, p, ty))| {
                let (w, pos, t) = (
                    &self.word[id * h..][..h],
                    &self.position[p * h..][..h],
                    &self.token_type[ty * h..][..h],
                );
                for i in 0..h {
                    out[i] = w[i] + pos[i] + t[i];
                }
                layer_norm(out, &self.embed_norm, self.eps);
            });
        Ok(x)
    }

    /// Scaled dot-product attention of every text (no text sees another's tokens, and there is no
    /// padding to mask), one (text, head) pair per rayon task.
    fn attention(&self, qkv: &[f32], offsets: &[usize], lengths: &[usize], context: &mut [f32]) {
        let h = self.hidden;
        let d = h / self.heads;
        let stride = 3 * h;
        let scale = 1.0 / (d as f32).sqrt();
        let jobs: Vec<(usize, usize)> = (0..lengths.len())
            .flat_map(|text| (0..self.heads).map(move |head| (text, head)))
            .collect();
        let blocks: Vec<Vec<f32>> = jobs
            .par_iter()
            .map_init(Vec::new, |scratch: &mut Vec<f32>, &(text, head)| {
                let (start, len) = (offsets[text], lengths[text]);
                let mut out = vec![0f32; len * d];
                let view = Head {
                    rows: &qkv[start * stride..(start + len) * stride],
                    len,
                    col: head * d,
                    hidden: h,
                    dim: d,
                    scale,
                };
                if len <= DIRECT_ATTENTION_MAX {
                    attend_direct(view, scratch, &mut out);
                } else {
                    attend_gemm(view, scratch, &mut out);
                }
                out
            })
            .collect();
        for (&(text, head), block) in jobs.iter().zip(&blocks) {
            let start = offsets[text];
            for (r, row) in block.chunks_exact(d).enumerate() {
                context[(start + r) * h + head * d..][..d].copy_from_slice(row);
            }
        }
    }

    fn feed_forward(&self, layer: &Layer, attended: &[f32], x: &mut [f32]) {
        let h = self.hidden;
        let inner = layer.ffn_in.outputs;
        let total = attended.len() / h;
        let mut intermediate = vec![0f32; FFN_TILE.min(total) * inner];
        for tile in (0..total).step_by(FFN_TILE) {
            let rows = FFN_TILE.min(total - tile);
            let input = &attended[tile * h..(tile + rows) * h];
            let mid = &mut intermediate[..rows * inner];
            dense(mid, input, &layer.ffn_in, rows);
            bias_activation(mid, &layer.ffn_in.bias, self.activation);
            let out = &mut x[tile * h..(tile + rows) * h];
            dense(out, mid, &layer.ffn_out, rows);
            residual_norm(out, &layer.ffn_out.bias, input, &layer.ffn_norm, self.eps);
        }
    }
}

/// One attention head of one text: the text's `len` rows of the packed Q|K|V matrix (`3 · hidden`
/// wide), the head's first column in each of Q, K and V, its width and the score scale.
#[derive(Clone, Copy)]
struct Head<'a> {
    rows: &'a [f32],
    len: usize,
    col: usize,
    hidden: usize,
    dim: usize,
    scale: f32,
}

impl Head<'_> {
    const QUERY: usize = 0;
    const KEY: usize = 1;
    const VALUE: usize = 2;

    fn stride(&self) -> usize {
        3 * self.hidden
    }

    /// Token `i`'s query, key or value for this head.
    fn vector(&self, part: usize, i: usize) -> &[f32] {
        &self.rows[i * self.stride() + part * self.hidden + self.col..][..self.dim]
    }

    /// The head's queries, keys or values as a (len x dim) view; transposed, (dim x len).
    fn matrix(&self, part: usize, transposed: bool) -> MatRef<'_> {
        let data = &self.rows[part * self.hidden + self.col..];
        if transposed {
            MatRef::new(data, self.dim, self.len, 1, self.stride())
        } else {
            MatRef::new(data, self.len, self.dim, self.stride(), 1)
        }
    }
}

/// One head by two products (gemm): scores = Q·Kᵀ, softmax by rows, out = P·V.
fn attend_gemm(head: Head, scores: &mut Vec<f32>, out: &mut [f32]) {
    let (len, d) = (head.len, head.dim);
    scores.clear();
    scores.resize(len * len, 0.0);
    matmul(
        MatMut::new(scores, len, len, len),
        head.matrix(Head::QUERY, false),
        head.matrix(Head::KEY, true),
        head.scale,
        false,
        gemm::Parallelism::None,
    );
    for row in scores.chunks_exact_mut(len) {
        softmax(row);
    }
    matmul(
        MatMut::new(out, len, d, d),
        MatRef::new(scores, len, len, len, 1),
        head.matrix(Head::VALUE, false),
        1.0,
        false,
        gemm::Parallelism::None,
    );
}

/// Texts up to this many tokens take [`attend_direct`]: for a short text a head's two products are
/// a few thousand multiply-adds, less than gemm's set-up per call.
const DIRECT_ATTENTION_MAX: usize = 64;

/// The same as [`attend_gemm`] in plain loops the compiler vectorises: Kᵀ copied once, then per
/// query a row of scores built column by column, its softmax, and the weighted sum of V's rows.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl"))]
fn attend_direct(head: Head, scratch: &mut Vec<f32>, out: &mut [f32]) {
    let (len, d) = (head.len, head.dim);
    scratch.clear();
    scratch.resize(d * len + len, 0.0);
    let (k_t, scores) = scratch.split_at_mut(d * len);
    for j in 0..len {
        for (c, &k) in head.vector(Head::KEY, j).iter().enumerate() {
            k_t[c * len + j] = k;
        }
    }
    for i in 0..len {
        scores.fill(0.0);
        for (c, &q) in head.vector(Head::QUERY, i).iter().enumerate() {
            let q = q * head.scale;
            for (s, k) in scores.iter_mut().zip(&k_t[c * len..][..len]) {
                *s += q * k;
            }
        }
        softmax_in_place(scores);
        let o = &mut out[i * d..][..d];
        for (j, &p) in scores.iter().enumerate() {
            for (x, v) in o.iter_mut().zip(head.vector(Head::VALUE, j)) {
                *x += p * v;
            }
        }
    }
}

/// The prefixes a BERT checkpoint's tensor names may carry, as candle's loader accepts them: none,
/// `bert.`, or `<model_type>.`.
pub(crate) fn checkpoint_prefixes(config: &Config) -> Vec<String> {
    let mut prefixes = vec![String::new(), "bert.".to_string()];
    if let Some(t) = &config.model_type {
        prefixes.push(format!("{t}."));
    }
    prefixes
}

/// `out (rows x outputs) = input (rows x inputs) · weightᵀ`, bias not added.
fn dense(out: &mut [f32], input: &[f32], linear: &Linear, rows: usize) {
    matmul(
        MatMut::new(out, rows, linear.outputs, linear.outputs),
        MatRef::new(input, rows, linear.inputs, linear.inputs, 1),
        MatRef::new(
            &linear.weight_t,
            linear.inputs,
            linear.outputs,
            linear.outputs,
            1,
        ),
        1.0,
        false,
        gemm::Parallelism::Rayon(0),
    );
}

fn add_bias(rows: &mut [f32], bias: &[f32]) {
    let n = bias.len();
    rows.par_chunks_mut(n)
        .with_min_len(ROWS_PER_TASK)
        .for_each(|row| add_row(row, bias));
}

fn bias_activation(rows: &mut [f32], bias: &[f32], activation: Activation) {
    let n = bias.len();
    rows.par_chunks_mut(n)
        .with_min_len(ROWS_PER_TASK)
        .for_each(|row| match activation {
            Activation::GeluErf => bias_gelu_erf(row, bias),
            Activation::GeluTanh => bias_gelu_tanh(row, bias),
            Activation::Relu => {
                for (x, b) in row.iter_mut().zip(bias) {
                    *x = (*x + b).max(0.0);
                }
            }
        });
}

/// `row = LayerNorm(row + bias + residual)`, row by row.
fn residual_norm(rows: &mut [f32], bias: &[f32], residual: &[f32], norm: &Norm, eps: f32) {
    let n = bias.len();
    rows.par_chunks_mut(n)
        .zip(residual.par_chunks(n))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(row, res)| {
            add_two_rows(row, bias, res);
            layer_norm(row, norm, eps);
        });
}

// The element-wise kernels below are compiled twice, for AVX-512 and for AVX2/FMA (the build's
// baseline), and the first call picks the one the CPU runs (`multiversion`): the same code, twice
// the lanes where the CPU has them.

#[multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl"))]
fn add_row(row: &mut [f32], bias: &[f32]) {
    for (x, b) in row.iter_mut().zip(bias) {
        *x += b;
    }
}

#[multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl"))]
fn add_two_rows(row: &mut [f32], a: &[f32], b: &[f32]) {
    for ((x, a), b) in row.iter_mut().zip(a).zip(b) {
        *x += a + b;
    }
}

#[multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl"))]
fn bias_gelu_erf(row: &mut [f32], bias: &[f32]) {
    for (x, b) in row.iter_mut().zip(bias) {
        *x = gelu_erf(*x + b);
    }
}

#[multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl"))]
fn bias_gelu_tanh(row: &mut [f32], bias: &[f32]) {
    for (x, b) in row.iter_mut().zip(bias) {
        *x = gelu_tanh(*x + b);
    }
}

#[multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl"))]
fn layer_norm(row: &mut [f32], norm: &Norm, eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let mut squares = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum();
    for c in chunks {
        for (s, x) in squares.iter_mut().zip(c) {
            *s += (x - mean) * (x - mean);
        }
    }
    let var = (squares.iter().sum::<f32>() + tail) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((x, g), b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
        *x = (*x - mean) * inv * g + b;
    }
}

/// erf(x) by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7; the formula PyTorch's
/// vectorised erf uses), vectorisable.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    let y = C * (x + 0.044_715 * x * x * x);
    // tanh(y) = 1 - 2 / (e^(2y) + 1)
    let tanh = 1.0 - 2.0 / (exp(2.0 * y) + 1.0);
    0.5 * x * (1.0 + tanh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_and_gelu_match_their_definitions() {
        for i in -600..=600 {
            let x = i as f32 / 100.0;
            let want = libm_erf(x as f64);
            assert!((erf(x) as f64 - want).abs() < 4e-7, "erf({x})");
            let g = 0.5 * x as f64 * (1.0 + libm_erf(x as f64 / std::f64::consts::SQRT_2));
            assert!(
                (gelu_erf(x) as f64 - g).abs() < 1e-6 * (1.0 + g.abs()),
                "gelu({x})"
            );
            let y =
                (2.0f64 / std::f64::consts::PI).sqrt() * (x as f64 + 0.044715 * (x as f64).powi(3));
            let gt = 0.5 * x as f64 * (1.0 + y.tanh());
            assert!(
                (gelu_tanh(x) as f64 - gt).abs() < 1e-6 * (1.0 + gt.abs()),
                "gelu_tanh({x})"
            );
        }
    }

    /// erf by its Taylor series (converges everywhere; exact enough in f64 for |x| <= 6 with
    /// enough terms), so the test needs no libm binding.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 5.0 {
            return x.signum();
        }
        let mut term = x;
        let mut total = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            total += term / (2 * n + 1) as f64;
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn softmax_and_layer_norm() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let m = row.iter().cloned().fold(f32::MIN, f32::max);
        let z: f32 = row.iter().map(|x| (x - m).exp()).sum();
        let want: Vec<f32> = row.iter().map(|x| (x - m).exp() / z).collect();
        softmax(&mut row);
        for (a, b) in row.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6);
        }
        let mut x: Vec<f32> = (0..40).map(|i| i as f32 * 0.5 - 3.0).collect();
        let norm = Norm {
            gamma: vec![2.0; 40],
            beta: vec![1.0; 40],
        };
        layer_norm(&mut x, &norm, 1e-12);
        let mean: f32 = x.iter().sum::<f32>() / 40.0;
        let var: f32 = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 40.0;
        assert!(
            (mean - 1.0).abs() < 1e-5 && (var - 4.0).abs() < 1e-4,
            "{mean} {var}"
        );
    }

    #[test]
    fn both_attention_paths_agree() {
        let (len, h, d) = (40, 64, 16);
        let rows: Vec<f32> = (0..len * 3 * h)
            .map(|i| (i * 7919 % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let (mut by_gemm, mut direct) = (vec![0f32; len * d], vec![0f32; len * d]);
        let head = Head {
            rows: &rows,
            len,
            col: d,
            hidden: h,
            dim: d,
            scale: 0.25,
        };
        attend_gemm(head, &mut Vec::new(), &mut by_gemm);
        attend_direct(head, &mut Vec::new(), &mut direct);
        let worst = by_gemm
            .iter()
            .zip(&direct)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{worst}");
        assert!(by_gemm.iter().any(|x| x.abs() > 0.1));
    }
}
