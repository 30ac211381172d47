//! A llama-family forward pass over GGUF weights, written for CPU decoding.
//!
//! candle's `quantized_llama` re-concatenates (copies) every layer's KV cache at each step, copies it
//! again to repeat the key/value heads for grouped-query attention, and materialises the whole
//! attention matrix during prefill; on a long prompt those copies, not the weights, set the speed.
//! Here the matrix products stay candle's quantised kernels (`QMatMul`, with the query/key/value
//! and the gate/up projections fused into one product each), and the rest is plain Rust over
//! `Vec<f32>`: an append-only KV cache (token-major, grown in place), attention computed per query
//! head straight from the cache, rotary embeddings from a precomputed table.

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};

use crate::q4::Q4_1Matrix;

use crate::{LlmError, Result};

/// Prompt tokens per forward call during prefill: bounds the activations' memory.
const PREFILL_CHUNK: usize = 256;

struct Layer {
    attn_norm: Vec<f32>,
    /// Query, key and value projections as one product: output `[q | k | v]`.
    qkv: Proj,
    wo: Proj,
    ffn_norm: Vec<f32>,
    /// Gate and up projections as one product: output `[gate | up]`.
    gate_up: Proj,
    down: Proj,
    cache: KvCache,
}

/// Keys and values of the cached tokens, head-major (`[kv head][position][head dim]`), so one head's
/// rows are read as one stream. Capacity doubles as the context grows (a copy each time, amortised).
#[derive(Default)]
struct KvCache {
    k: Vec<f32>,
    v: Vec<f32>,
    /// Positions each head's block holds.
    capacity: usize,
}

impl KvCache {
    fn reserve(
        &mut self,
        kv_heads: usize,
        head_dim: usize,
        used: usize,
        needed: usize,
        max: usize,
    ) {
        if needed <= self.capacity {
            return;
        }
        let cap = needed.max(2 * self.capacity).max(256).min(max.max(needed));
        for buf in [&mut self.k, &mut self.v] {
            let mut grown = vec![0f32; kv_heads * cap * head_dim];
            for h in 0..kv_heads {
                let (from, to) = (h * self.capacity * head_dim, h * cap * head_dim);
                grown[to..to + used * head_dim].copy_from_slice(&buf[from..from + used * head_dim]);
            }
            *buf = grown;
        }
        self.capacity = cap;
    }

    fn row(&self, h: usize, t: usize, head_dim: usize) -> (usize, usize) {
        let start = (h * self.capacity + t) * head_dim;
        (start, start + head_dim)
    }
}

/// A weight matrix: candle's quantised product for prompts (many rows at once), and, where the
/// file's weights are Q4_1, our own 4-bit kernel for decoding (one row, bound by memory reads).
struct Proj {
    full: QMatMul,
    decode: Option<Q4_1Matrix>,
}

impl Proj {
    fn forward(&self, x: Vec<f32>, m: usize, k: usize) -> Result<Vec<f32>> {
        match &self.decode {
            Some(q) if m == 1 => Ok(q.matvec(&x)),
            _ => matmul(&self.full, x, m, k),
        }
    }
}

/// Softmax-weighted sum over a range of positions, kept unnormalised (relative to the range's own
/// maximum) so ranges computed apart can be merged: flash-decoding's split of a long context.
struct Partial {
    /// Per query head of the group: the maximum score, the sum of exp(score - max).
    max: Vec<f32>,
    sum: Vec<f32>,
    /// Per query head: sum of exp(score - max) * value.
    acc: Vec<f32>,
}

/// Positions per attention task: small enough that a long context splits over the cores.
const ATTENTION_SPAN: usize = 512;

pub struct Llama {
    dim: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    ff: usize,
    eps: f32,
    vocab: usize,
    context: usize,
    embeddings: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output: Proj,
    /// cos / sin of each position and frequency: `[position][head_dim / 2]`.
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    /// Tokens in the KV cache.
    cached: usize,
}

fn low_bit(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
    )
}

impl Llama {
    /// Loads the weights. With `requantize_q8`, 4/5-bit matrices become Q8_0 (candle has SIMD
    /// kernels for Q8_0, not for Q4_1).
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        requantize_q8: bool,
        context: usize,
    ) -> Result<Self> {
        let cpu = Device::Cpu;
        let meta = |k: &str| -> Result<u32> {
            ct.metadata
                .get(k)
                .and_then(|v| v.to_u32().ok())
                .ok_or_else(|| LlmError::Unsupported(format!("GGUF metadata `{k}` missing")))
        };
        let n_head = meta("llama.attention.head_count")? as usize;
        let n_kv_head = meta("llama.attention.head_count_kv")? as usize;
        let n_layer = meta("llama.block_count")? as usize;
        let dim = meta("llama.embedding_length")? as usize;
        let eps = ct
            .metadata
            .get("llama.attention.layer_norm_rms_epsilon")
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(1e-5);
        let rope_base = ct
            .metadata
            .get("llama.rope.freq_base")
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(10_000.0);
        if n_head == 0
            || n_kv_head == 0
            || !dim.is_multiple_of(n_head)
            || !n_head.is_multiple_of(n_kv_head)
        {
            return Err(LlmError::Unsupported(format!(
                "unsupported attention shape: {n_head} heads, {n_kv_head} key/value heads, width {dim}"
            )));
        }
        if meta("llama.expert_count").unwrap_or(0) > 1 {
            return Err(LlmError::Unsupported(
                "mixture-of-experts GGUF models are not supported (dense llama-family models are)"
                    .into(),
            ));
        }
        let head_dim = dim / n_head;
        let tensor = |reader: &mut R, name: &str| ct.tensor(reader, name, &cpu);
        let target = |q: &QTensor| {
            if requantize_q8 && low_bit(q.dtype()) {
                GgmlDType::Q8_0
            } else {
                q.dtype()
            }
        };
        let convert = |q: QTensor| -> Result<QTensor> {
            let t = target(&q);
            Ok(if t != q.dtype() {
                QTensor::quantize(&q.dequantize(&cpu)?, t)?
            } else {
                q
            })
        };
        // Q4_1 bytes of matrices stacked by rows, for the decoding kernel.
        let q4_1 = |parts: &[QTensor]| -> Result<Option<Q4_1Matrix>> {
            if parts.iter().any(|q| q.dtype() != GgmlDType::Q4_1) {
                return Ok(None);
            }
            let cols = parts[0].shape().dims()[1];
            let mut rows = 0;
            let mut bytes = Vec::new();
            for q in parts {
                rows += q.shape().dims()[0];
                bytes.extend_from_slice(&q.data()?);
            }
            Ok(Q4_1Matrix::from_bytes(&bytes, rows, cols))
        };
        let matrix = |q: QTensor| -> Result<Proj> {
            let decode = q4_1(std::slice::from_ref(&q))?;
            Ok(Proj {
                full: QMatMul::from_qtensor(convert(q)?)?,
                decode,
            })
        };
        // Rows of several matrices (same input width, same format) stacked into one: quantised rows
        // are whole blocks, so their bytes concatenate exactly.
        let fused = |parts: Vec<QTensor>| -> Result<Proj> {
            let decode = q4_1(&parts)?;
            let parts: Vec<QTensor> = parts.into_iter().map(convert).collect::<Result<_>>()?;
            let dtype = parts[0].dtype();
            let cols = parts[0].shape().dims()[1];
            let mut rows = 0;
            let mut bytes = Vec::new();
            for q in &parts {
                let dims = q.shape().dims();
                if q.dtype() != dtype || dims[1] != cols {
                    return Err(LlmError::Unsupported(
                        "projections of one layer differ in format or width".into(),
                    ));
                }
                rows += dims[0];
                bytes.extend_from_slice(&q.data()?);
            }
            let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), &cpu, dtype)?;
            Ok(Proj {
                full: QMatMul::from_qtensor(QTensor::new(storage, (rows, cols))?)?,
                decode,
            })
        };
        let vector = |q: &QTensor| -> Result<Vec<f32>> {
            Ok(q.dequantize(&cpu)?.flatten_all()?.to_vec1::<f32>()?)
        };

        let embed_q = tensor(reader, "token_embd.weight")?;
        let vocab = embed_q.shape().dims()[0];
        let embeddings = vector(&embed_q)?;
        let output = match tensor(reader, "output.weight") {
            Ok(q) => matrix(q)?,
            // Tied input and output embeddings (SmolLM2).
            Err(_) => matrix(embed_q)?,
        };
        let mut layers = Vec::with_capacity(n_layer);
        let mut ff = 0;
        for i in 0..n_layer {
            let name = |s: &str| format!("blk.{i}.{s}.weight");
            let gate = tensor(reader, &name("ffn_gate"))?;
            ff = gate.shape().dims()[0];
            layers.push(Layer {
                attn_norm: vector(&tensor(reader, &name("attn_norm"))?)?,
                qkv: fused(vec![
                    tensor(reader, &name("attn_q"))?,
                    tensor(reader, &name("attn_k"))?,
                    tensor(reader, &name("attn_v"))?,
                ])?,
                wo: matrix(tensor(reader, &name("attn_output"))?)?,
                ffn_norm: vector(&tensor(reader, &name("ffn_norm"))?)?,
                gate_up: fused(vec![gate, tensor(reader, &name("ffn_up"))?])?,
                down: matrix(tensor(reader, &name("ffn_down"))?)?,
                cache: KvCache::default(),
            });
        }
        let norm = vector(&tensor(reader, "output_norm.weight")?)?;

        // Llama's GGUF weights pair dimensions (2i, 2i + 1) for the rotation.
        let half = head_dim / 2;
        let mut rope_cos = Vec::with_capacity(context * half);
        let mut rope_sin = Vec::with_capacity(context * half);
        for p in 0..context {
            for i in 0..half {
                let theta = p as f32 * rope_base.powf(-((2 * i) as f32) / head_dim as f32);
                rope_cos.push(theta.cos());
                rope_sin.push(theta.sin());
            }
        }
        Ok(Llama {
            dim,
            n_head,
            n_kv_head,
            head_dim,
            ff,
            eps,
            vocab,
            context,
            embeddings,
            layers,
            norm,
            output,
            rope_cos,
            rope_sin,
            cached: 0,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Forgets the cached tokens (the next call starts at position 0).
    pub fn clear(&mut self) {
        self.cached = 0;
    }

    /// Feeds `tokens` after the cached ones and returns the logits of the last.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(LlmError::Unsupported(
                "a forward pass needs at least one token".into(),
            ));
        }
        if self.cached + tokens.len() > self.context {
            return Err(LlmError::ContextOverflow {
                prompt: self.cached + tokens.len(),
                context: self.context,
            });
        }
        let mut logits = Vec::new();
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            logits = self.forward_chunk(chunk)?;
        }
        Ok(logits)
    }

    fn forward_chunk(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let (m, d) = (tokens.len(), self.dim);
        let x = self.layers_chunk(tokens)?;
        let last = rms_norm_rows(&x[(m - 1) * d..], &self.norm, d, self.eps);
        self.output.forward(last, 1, d)
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        self.dim
    }

    /// The mean over `tokens` of the final (normalised) hidden states, the input of the output
    /// projection: a text embedding from a decoder model. Starts from an empty cache and leaves it
    /// empty.
    pub fn mean_hidden_state(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(LlmError::Unsupported(
                "a forward pass needs at least one token".into(),
            ));
        }
        if tokens.len() > self.context {
            return Err(LlmError::ContextOverflow {
                prompt: tokens.len(),
                context: self.context,
            });
        }
        self.clear();
        let d = self.dim;
        let mut sum = vec![0f32; d];
        let result = tokens.chunks(PREFILL_CHUNK).try_for_each(|chunk| {
            let x = self.layers_chunk(chunk)?;
            for row in rms_norm_rows(&x, &self.norm, d, self.eps).chunks_exact(d) {
                sum.iter_mut().zip(row).for_each(|(s, r)| *s += r);
            }
            Ok::<_, LlmError>(())
        });
        self.clear();
        result?;
        let n = tokens.len() as f32;
        Ok(sum.into_iter().map(|s| s / n).collect())
    }

    /// Runs the layers over `tokens` after the cached ones; returns the residual stream (m x dim).
    fn layers_chunk(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let (m, d) = (tokens.len(), self.dim);
        let kv_dim = self.n_kv_head * self.head_dim;
        let pos = self.cached;
        let mut x = Vec::with_capacity(m * d);
        for &t in tokens {
            let t = t as usize;
            if t >= self.vocab {
                return Err(LlmError::Tokenizer(format!(
                    "token id {t} outside the model's vocabulary of {}",
                    self.vocab
                )));
            }
            x.extend_from_slice(&self.embeddings[t * d..(t + 1) * d]);
        }
        let (n_head, n_kv_head, head_dim, ff, eps) = (
            self.n_head,
            self.n_kv_head,
            self.head_dim,
            self.ff,
            self.eps,
        );
        let group = n_head / n_kv_head;
        let half = head_dim / 2;
        let scale = 1.0 / (head_dim as f32).sqrt();
        for layer in &mut self.layers {
            // Attention.
            let h = rms_norm_rows(&x, &layer.attn_norm, d, eps);
            let qkv = layer.qkv.forward(h, m, d)?;
            let width = d + 2 * kv_dim;
            let mut q = vec![0f32; m * d];
            layer
                .cache
                .reserve(n_kv_head, head_dim, pos, pos + m, self.context);
            for i in 0..m {
                let row = &qkv[i * width..(i + 1) * width];
                let p = pos + i;
                let (cos, sin) = (
                    &self.rope_cos[p * half..(p + 1) * half],
                    &self.rope_sin[p * half..(p + 1) * half],
                );
                let qi = &mut q[i * d..(i + 1) * d];
                qi.copy_from_slice(&row[..d]);
                for head in qi.chunks_exact_mut(head_dim) {
                    rope(head, cos, sin);
                }
                for h in 0..n_kv_head {
                    let (a, b) = layer.cache.row(h, p, head_dim);
                    let k = &row[d + h * head_dim..d + (h + 1) * head_dim];
                    layer.cache.k[a..b].copy_from_slice(k);
                    rope(&mut layer.cache.k[a..b], cos, sin);
                    let v = &row[d + kv_dim + h * head_dim..d + kv_dim + (h + 1) * head_dim];
                    layer.cache.v[a..b].copy_from_slice(v);
                }
            }
            let cache = &layer.cache;
            // Tasks: (query token, key/value head, span of positions). The query heads sharing a
            // key/value head (grouped-query attention) are scored together, so each cached row is
            // read once per token; a long context is split into spans so both cores work on it.
            let mut tasks = Vec::new();
            for i in 0..m {
                let len = pos + i + 1;
                for kvh in 0..n_kv_head {
                    for start in (0..len).step_by(ATTENTION_SPAN) {
                        tasks.push((i, kvh, start, (start + ATTENTION_SPAN).min(len)));
                    }
                }
            }
            let slots: Vec<std::sync::OnceLock<Partial>> =
                tasks.iter().map(|_| std::sync::OnceLock::new()).collect();
            let attend = |&(i, kvh, start, end): &(usize, usize, usize, usize)| {
                let qs = &q[i * d + kvh * group * head_dim..][..group * head_dim];
                let n = end - start;
                let mut scores = vec![0f32; group * n];
                let (k0, _) = cache.row(kvh, start, head_dim);
                let keys = &cache.k[k0..k0 + n * head_dim];
                for (t, k) in keys.chunks_exact(head_dim).enumerate() {
                    for (g, qh) in qs.chunks_exact(head_dim).enumerate() {
                        scores[g * n + t] = dot(qh, k) * scale;
                    }
                }
                let mut part = Partial {
                    max: vec![0f32; group],
                    sum: vec![0f32; group],
                    acc: vec![0f32; group * head_dim],
                };
                for (g, row) in scores.chunks_exact_mut(n).enumerate() {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut total = 0.0;
                    for s in row.iter_mut() {
                        *s = (*s - max).exp();
                        total += *s;
                    }
                    part.max[g] = max;
                    part.sum[g] = total;
                }
                let values = &cache.v[k0..k0 + n * head_dim];
                for (t, v) in values.chunks_exact(head_dim).enumerate() {
                    for (g, acc) in part.acc.chunks_exact_mut(head_dim).enumerate() {
                        axpy(acc, scores[g * n + t], v);
                    }
                }
                part
            };
            // On candle's barrier pool, like the matrix products: its workers are already awake.
            candle_core::utils::barrier_pool().execute_chunked(tasks.len(), |range| {
                for t in range {
                    let _ = slots[t].set(attend(&tasks[t]));
                }
            });
            let partials: Vec<Partial> = slots
                .into_iter()
                .map(|s| s.into_inner().expect("every attention task ran"))
                .collect();
            // Merge the spans of each (token, key/value head), in order.
            let mut att = vec![0f32; m * d];
            let mut task = 0;
            while task < tasks.len() {
                let (i, kvh, _, _) = tasks[task];
                let mut end = task;
                while end < tasks.len() && tasks[end].0 == i && tasks[end].1 == kvh {
                    end += 1;
                }
                for g in 0..group {
                    let max = partials[task..end]
                        .iter()
                        .map(|p| p.max[g])
                        .fold(f32::NEG_INFINITY, f32::max);
                    let out = &mut att[i * d + (kvh * group + g) * head_dim..][..head_dim];
                    let mut total = 0.0;
                    for p in &partials[task..end] {
                        let w = (p.max[g] - max).exp();
                        total += w * p.sum[g];
                        axpy(out, w, &p.acc[g * head_dim..(g + 1) * head_dim]);
                    }
                    let inv = 1.0 / total;
                    out.iter_mut().for_each(|o| *o *= inv);
                }
                task = end;
            }
            let o = layer.wo.forward(att, m, d)?;
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);

            // Feed-forward (SwiGLU).
            let h = rms_norm_rows(&x, &layer.ffn_norm, d, eps);
            let gu = layer.gate_up.forward(h, m, d)?;
            let mut act = Vec::with_capacity(m * ff);
            for row in gu.chunks_exact(2 * ff) {
                let (g, u) = row.split_at(ff);
                act.extend(g.iter().zip(u).map(|(g, u)| g / (1.0 + (-g).exp()) * u));
            }
            let down = layer.down.forward(act, m, ff)?;
            x.iter_mut().zip(&down).for_each(|(x, y)| *x += y);
        }
        self.cached = pos + m;
        Ok(x)
    }
}

fn matmul(w: &QMatMul, x: Vec<f32>, m: usize, k: usize) -> Result<Vec<f32>> {
    let t = Tensor::from_vec(x, (m, k), &Device::Cpu)?;
    Ok(w.forward(&t)?.flatten_all()?.to_vec1::<f32>()?)
}

fn rms_norm_rows(x: &[f32], weight: &[f32], d: usize, eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(d) {
        let ms = dot(row, row) / d as f32;
        let r = 1.0 / (ms + eps).sqrt();
        out.extend(row.iter().zip(weight).map(|(x, w)| x * r * w));
    }
    out
}

/// Rotates pairs (2i, 2i + 1) of one head by the position's angles.
fn rope(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    for (pair, (c, s)) in head.chunks_exact_mut(2).zip(cos.iter().zip(sin)) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * c - b * s;
        pair[1] = a * s + b * c;
    }
}

/// Dot product with eight running sums over fixed-size chunks, so the compiler keeps them in one
/// vector register (a single running sum must be added in order and does not vectorise).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let whole = n / 8 * 8;
    for c in (0..whole).step_by(8) {
        let x: &[f32; 8] = a[c..c + 8].try_into().expect("8 floats");
        let y: &[f32; 8] = b[c..c + 8].try_into().expect("8 floats");
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `out += w * v`.
fn axpy(out: &mut [f32], w: f32, v: &[f32]) {
    for (o, v) in out.iter_mut().zip(v) {
        *o += w * v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..67).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..67).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_keeps_norms() {
        let mut h = vec![1.0, 2.0, 3.0, 4.0];
        rope(&mut h, &[1.0, 1.0], &[0.0, 0.0]);
        assert_eq!(h, [1.0, 2.0, 3.0, 4.0]);
        let (c, s) = (0.3f32.cos(), 0.3f32.sin());
        rope(&mut h, &[c, c], &[s, s]);
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>();
        assert!((n(&h[..2]) - 5.0).abs() < 1e-5 && (n(&h[2..]) - 25.0).abs() < 1e-5);
    }
}
