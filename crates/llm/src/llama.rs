//! A llama-family forward pass over GGUF weights, written for CPU decoding, several sequences at once.
//!
//! candle's `quantized_llama` re-concatenates (copies) every layer's KV cache at each step, copies it
//! again to repeat the key/value heads for grouped-query attention, and materialises the whole
//! attention matrix during prefill; on a long prompt those copies, not the weights, set the speed.
//! Here each sequence (a *slot*) has an append-only KV cache (head-major, grown in place), rotary
//! embeddings come from a precomputed table, and the products take one of two routes:
//!
//! - a prompt (many tokens of one sequence): Q4_1 and Q8_0 weights are unpacked to floats a tile
//!   at a time and multiplied by gemm (AVX-512 or AVX2 kernels, picked at run time), and attention is two
//!   gemm products per head (scores, then the weighted values) over the cache;
//! - a decoding step (one token of each of several sequences): the weights stay 4-bit and each
//!   token's activations are rounded to 8 bits for integer dot products (`q4.rs`), one pass over the
//!   weights for the whole batch; attention per token from its own cache, split into spans.
//!
//! A token's arithmetic never depends on which other sequences share its step, so a sequence
//! decodes to the same bits alone or in a batch of any size. Other GGUF formats use candle's
//! quantised products (`QMatMul`), which are per-row as well.

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use trialforge_kernels::{exp, matmul as gemm_product, softmax, MatMut, MatRef, LANES};

use crate::q4::QuantMatrix;

use crate::{LlmError, Result};

/// Prompt tokens per forward call during prefill: bounds the activations' memory.
const PREFILL_CHUNK: usize = 256;
/// Prompt chunks at least this long take the float route (unpacking a tile of weights costs as
/// much as a few rows' products); shorter ones, the integer route.
const DENSE_MIN_ROWS: usize = 8;
/// Weight rows unpacked to floats at a time: a tile stays in the core's L2 cache for its product.
const DENSE_TILE: usize = 128;
/// Query rows per attention task in a prompt.
const PROMPT_ATTENTION_ROWS: usize = 32;

/// Which route a forward call takes (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Prompt,
    Decode,
    /// Whole texts of several sequences at once (the LLM as an encoder): floats for every product
    /// and attention by spans whatever the batch, so a text's vector does not depend on its batch,
    /// except in a pass of very few tokens: gemm multiplies a handful of rows (up to 4 of them at
    /// 1,536 inputs on this machine) with other kernels, which sum in another order.
    Embed,
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Query, key and value projections as one product: output `[q | k | v]`.
    qkv: Proj,
    wo: Proj,
    ffn_norm: Vec<f32>,
    /// Gate and up projections as one product: output `[gate | up]`.
    gate_up: Proj,
    down: Proj,
}

/// One sequence's state: a KV cache per layer and the tokens it holds.
#[derive(Default)]
struct Sequence {
    caches: Vec<KvCache>,
    cached: usize,
}

/// Keys and values of the cached tokens, head by head, in half precision (as llama.cpp keeps them):
/// a long context's decoding step reads the whole cache, so its size, not the arithmetic, sets the
/// speed there. Values are position-major
/// (`[kv head][position][head dim]`); keys are stored transposed (`[kv head][head dim][position]`), so
/// that one dimension of every position is contiguous: a query's scores over a span of positions are
/// then plain multiply-adds along positions (no horizontal sum per position), and gemm reads Kᵀ in
/// place. Capacity doubles as the context grows (a copy each time, amortised).
#[derive(Default)]
struct KvCache {
    k: Vec<f16>,
    v: Vec<f16>,
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
        let (old, cap) = (
            self.capacity,
            needed.max(2 * self.capacity).max(256).min(max.max(needed)),
        );
        // Values: a head's `used` rows stay one run.
        let mut grown = vec![f16::ZERO; kv_heads * cap * head_dim];
        for h in 0..kv_heads {
            let (from, to) = (h * old * head_dim, h * cap * head_dim);
            grown[to..to + used * head_dim].copy_from_slice(&self.v[from..from + used * head_dim]);
        }
        self.v = grown;
        // Keys: one run of `used` positions per (head, dimension).
        let mut grown = vec![f16::ZERO; kv_heads * head_dim * cap];
        for row in 0..kv_heads * head_dim {
            grown[row * cap..row * cap + used]
                .copy_from_slice(&self.k[row * old..row * old + used]);
        }
        self.k = grown;
        self.capacity = cap;
    }

    /// Head `h`'s keys, `head_dim` rows of `capacity` positions.
    fn keys(&self, h: usize, head_dim: usize) -> &[f16] {
        &self.k[h * head_dim * self.capacity..(h + 1) * head_dim * self.capacity]
    }

    /// Head `h`'s values of positions `start..start + n`, `n` rows of `head_dim`.
    fn values(&self, h: usize, start: usize, n: usize, head_dim: usize) -> &[f16] {
        let from = (h * self.capacity + start) * head_dim;
        &self.v[from..from + n * head_dim]
    }

    /// Stores position `t`'s key (rotated already) and value for head `h`.
    fn store(&mut self, h: usize, t: usize, key: &[f32], value: &[f32]) {
        let head_dim = key.len();
        let cap = self.capacity;
        for (c, &x) in key.iter().enumerate() {
            self.k[(h * head_dim + c) * cap + t] = f16::from_f32(x);
        }
        let from = (h * cap + t) * head_dim;
        self.v[from..from + head_dim].convert_from_f32_slice(value);
    }
}

/// A weight matrix: Q4_1 or Q8_0 with our kernels, any other format with candle's quantised
/// product.
enum Proj {
    Own(QuantMatrix),
    Candle(QMatMul),
}

impl Proj {
    /// `x (m x k) · Wᵀ`.
    fn forward(&self, x: Vec<f32>, m: usize, k: usize, pass: Pass) -> Result<Vec<f32>> {
        match self {
            // The integer route for decoding, and for prompt chunks too short to pay for unpacking;
            // never for `Embed`, whose texts must not change route with their batch's size.
            Proj::Own(q)
                if pass == Pass::Decode || (pass == Pass::Prompt && m < DENSE_MIN_ROWS) =>
            {
                Ok(q.matmul_rows(&x, m))
            }
            Proj::Own(q) => Ok(dense_product(q, &x, m)),
            Proj::Candle(w) => matmul(w, x, m, k),
        }
    }
}

/// `x (m x cols) · Wᵀ` in floats: tiles of weight rows unpacked and multiplied by gemm, a tile per
/// rayon task.
fn dense_product(w: &QuantMatrix, x: &[f32], m: usize) -> Vec<f32> {
    let (n, k) = (w.rows(), w.cols());
    let tiles: Vec<(usize, Vec<f32>)> = (0..n)
        .step_by(DENSE_TILE)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map_init(Vec::new, |weights, start| {
            let rows = DENSE_TILE.min(n - start);
            w.dequantize_rows(start, rows, weights);
            let mut out = vec![0f32; m * rows];
            gemm_product(
                MatMut::new(&mut out, m, rows, rows),
                MatRef::new(x, m, k, k, 1),
                // The tile's rows are the product's columns: Wᵀ read in place.
                MatRef::new(weights, k, rows, 1, k),
                1.0,
                false,
                gemm::Parallelism::None,
            );
            (start, out)
        })
        .collect();
    let mut out = vec![0f32; m * n];
    for (start, tile) in tiles {
        let rows = tile.len() / m;
        for (dst, src) in out.chunks_exact_mut(n).zip(tile.chunks_exact(rows)) {
            dst[start..start + rows].copy_from_slice(src);
        }
    }
    out
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
    /// The sequences' states, by slot.
    seqs: Vec<Sequence>,
}

fn low_bit(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_0 | GgmlDType::Q5_0 | GgmlDType::Q5_1)
}

impl Llama {
    /// Loads the weights. Q4_1 and Q8_0 matrices keep their format (the kernels here read them);
    /// with `requantize_q8`, the 4/5-bit formats without one (Q4_0, Q5_0, Q5_1) become Q8_0.
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
        // Matrices stacked by rows into one (same input width, same format): quantised rows are
        // whole blocks, so their bytes concatenate exactly.
        let fused = |parts: Vec<QTensor>| -> Result<Proj> {
            let ours = |q: &QTensor| matches!(q.dtype(), GgmlDType::Q4_1 | GgmlDType::Q8_0);
            let parts: Vec<QTensor> = if parts.iter().all(ours) {
                parts
            } else {
                parts.into_iter().map(convert).collect::<Result<_>>()?
            };
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
            let own = match dtype {
                GgmlDType::Q4_1 => QuantMatrix::from_bytes(&bytes, rows, cols),
                GgmlDType::Q8_0 => QuantMatrix::from_q8_0_bytes(&bytes, rows, cols),
                _ => None,
            };
            if let Some(m) = own {
                return Ok(Proj::Own(m));
            }
            let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), &cpu, dtype)?;
            Ok(Proj::Candle(QMatMul::from_qtensor(QTensor::new(
                storage,
                (rows, cols),
            )?)?))
        };
        let matrix = |q: QTensor| fused(vec![q]);
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
            seqs: Vec::new(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Makes room for at least `n` sequences (their caches grow only when used).
    pub fn ensure_slots(&mut self, n: usize) {
        while self.seqs.len() < n {
            self.seqs.push(Sequence {
                caches: (0..self.layers.len()).map(|_| KvCache::default()).collect(),
                cached: 0,
            });
        }
    }

    /// Forgets slot `slot`'s tokens (its next token is at position 0); keeps its memory for reuse.
    pub fn reset(&mut self, slot: usize) {
        if let Some(s) = self.seqs.get_mut(slot) {
            s.cached = 0;
        }
    }

    /// Forgets the tokens of slot 0 (the next call starts at position 0).
    pub fn clear(&mut self) {
        self.reset(0);
    }

    /// Slot 0, for one sequence at a time: several tokens are a prompt (see [`Self::prompt`]), one
    /// token a decoding step. Returns the logits of the last token.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.ensure_slots(1);
        match tokens {
            [one] if self.seqs[0].cached > 0 => self.decode(&[(0, *one)]),
            _ => self.prompt(0, tokens),
        }
    }

    /// Feeds a prompt's `tokens` to slot `slot` after the tokens it holds; returns the logits of
    /// the last.
    pub fn prompt(&mut self, slot: usize, tokens: &[u32]) -> Result<Vec<f32>> {
        self.check(slot, tokens.len())?;
        let d = self.dim;
        let mut last = Vec::new();
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            let rows: Vec<(usize, u32)> = chunk.iter().map(|&t| (slot, t)).collect();
            let x = self.layers(&rows, Pass::Prompt)?;
            last = x[(chunk.len() - 1) * d..].to_vec();
        }
        let h = rms_norm_rows(&last, &self.norm, d, self.eps);
        self.output.forward(h, 1, d, Pass::Decode)
    }

    /// One decoding step for several sequences: token `t` appended to slot `s` for each `(s, t)`
    /// (each slot at most once). Returns the logits, `steps.len() x vocab`, in the order given.
    pub fn decode(&mut self, steps: &[(usize, u32)]) -> Result<Vec<f32>> {
        for (i, &(slot, _)) in steps.iter().enumerate() {
            if steps[..i].iter().any(|&(s, _)| s == slot) {
                return Err(LlmError::Unsupported(format!(
                    "slot {slot} given twice in one decoding step"
                )));
            }
            self.check(slot, 1)?;
        }
        let d = self.dim;
        let x = self.layers(steps, Pass::Decode)?;
        let h = rms_norm_rows(&x, &self.norm, d, self.eps);
        self.output.forward(h, steps.len(), d, Pass::Decode)
    }

    fn check(&self, slot: usize, tokens: usize) -> Result<()> {
        if tokens == 0 {
            return Err(LlmError::Unsupported(
                "a forward pass needs at least one token".into(),
            ));
        }
        let Some(seq) = self.seqs.get(slot) else {
            return Err(LlmError::Unsupported(format!(
                "slot {slot} of {} used",
                self.seqs.len()
            )));
        };
        if seq.cached + tokens > self.context {
            return Err(LlmError::ContextOverflow {
                prompt: seq.cached + tokens,
                context: self.context,
            });
        }
        Ok(())
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        self.dim
    }

    /// For each of `texts`, the mean over its tokens of the final (normalised) hidden states, the
    /// input of the output projection: a text embedding from a decoder model. The texts go through
    /// the layers together, one sequence slot each (emptied before and after), and each text's
    /// vector is the same whichever texts share its pass (see [`Pass::Embed`] for the exception).
    pub fn mean_hidden_states(&mut self, texts: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        self.ensure_slots(texts.len());
        for (slot, tokens) in texts.iter().enumerate() {
            self.reset(slot);
            self.check(slot, tokens.len())?;
        }
        let rows: Vec<(usize, u32)> = texts
            .iter()
            .enumerate()
            .flat_map(|(slot, tokens)| tokens.iter().map(move |&t| (slot, t)))
            .collect();
        let d = self.dim;
        let result = self.layers(&rows, Pass::Embed);
        for slot in 0..texts.len() {
            self.reset(slot);
        }
        let normed = rms_norm_rows(&result?, &self.norm, d, self.eps);
        let mut rows = normed.chunks_exact(d);
        Ok(texts
            .iter()
            .map(|tokens| {
                let mut sum = vec![0f32; d];
                for row in rows.by_ref().take(tokens.len()) {
                    sum.iter_mut().zip(row).for_each(|(s, r)| *s += r);
                }
                let n = tokens.len() as f32;
                sum.into_iter().map(|s| s / n).collect()
            })
            .collect())
    }

    /// Runs the layers over `rows` (slot, token): each token goes after its slot's cached ones
    /// and those earlier in `rows`. Returns the residual stream (rows x dim).
    fn layers(&mut self, rows: &[(usize, u32)], pass: Pass) -> Result<Vec<f32>> {
        let (m, d) = (rows.len(), self.dim);
        let kv_dim = self.n_kv_head * self.head_dim;
        let mut x = Vec::with_capacity(m * d);
        // Each row's position: its slot's cached tokens plus the slot's rows before it.
        let mut next: Vec<usize> = self.seqs.iter().map(|s| s.cached).collect();
        let mut positions = Vec::with_capacity(m);
        for &(slot, t) in rows {
            let t = t as usize;
            if t >= self.vocab {
                return Err(LlmError::Tokenizer(format!(
                    "token id {t} outside the model's vocabulary of {}",
                    self.vocab
                )));
            }
            x.extend_from_slice(&self.embeddings[t * d..(t + 1) * d]);
            positions.push(next[slot]);
            next[slot] += 1;
        }
        // One query chunk of one sequence: attention by gemm products.
        let one_sequence = rows.iter().all(|r| r.0 == rows[0].0);
        let by_products = pass == Pass::Prompt && one_sequence && m >= DENSE_MIN_ROWS;
        let (n_head, n_kv_head, head_dim, ff, eps) = (
            self.n_head,
            self.n_kv_head,
            self.head_dim,
            self.ff,
            self.eps,
        );
        let group = n_head / n_kv_head;
        let half = head_dim / 2;
        let shape = AttentionShape {
            dim: d,
            group,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
        };
        for (li, layer) in self.layers.iter().enumerate() {
            // Attention.
            let h = rms_norm_rows(&x, &layer.attn_norm, d, eps);
            let qkv = layer.qkv.forward(h, m, d, pass)?;
            let width = d + 2 * kv_dim;
            let mut q = vec![0f32; m * d];
            let mut key = vec![0f32; head_dim];
            for (i, &(slot, _)) in rows.iter().enumerate() {
                let cache = &mut self.seqs[slot].caches[li];
                let p = positions[i];
                cache.reserve(n_kv_head, head_dim, p, p + 1, self.context);
                let row = &qkv[i * width..(i + 1) * width];
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
                    key.copy_from_slice(&row[d + h * head_dim..d + (h + 1) * head_dim]);
                    rope(&mut key, cos, sin);
                    let v = &row[d + kv_dim + h * head_dim..d + kv_dim + (h + 1) * head_dim];
                    cache.store(h, p, &key, v);
                }
            }
            let att = if by_products {
                let cache = &self.seqs[rows[0].0].caches[li];
                attend_prompt(&q, cache, positions[0], m, n_kv_head, shape)
            } else {
                let caches: Vec<&KvCache> = rows
                    .iter()
                    .map(|&(slot, _)| &self.seqs[slot].caches[li])
                    .collect();
                attend_spans(&q, &caches, &positions, n_kv_head, shape)
            };
            let o = layer.wo.forward(att, m, d, pass)?;
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);

            // Feed-forward (SwiGLU).
            let h = rms_norm_rows(&x, &layer.ffn_norm, d, eps);
            let gu = layer.gate_up.forward(h, m, d, pass)?;
            let mut act = Vec::with_capacity(m * ff);
            for row in gu.chunks_exact(2 * ff) {
                let (g, u) = row.split_at(ff);
                act.extend(g.iter().zip(u).map(|(g, u)| g / (1.0 + exp(-g)) * u));
            }
            let down = layer.down.forward(act, m, ff, pass)?;
            x.iter_mut().zip(&down).for_each(|(x, y)| *x += y);
        }
        for (seq, cached) in self.seqs.iter_mut().zip(next) {
            seq.cached = cached;
        }
        Ok(x)
    }
}

/// The attention geometry every kernel below needs.
#[derive(Clone, Copy)]
struct AttentionShape {
    /// Width of a token's queries (all heads).
    dim: usize,
    /// Query heads per key/value head.
    group: usize,
    head_dim: usize,
    scale: f32,
}

/// Attention of one sequence's `m` consecutive tokens from `pos` on, whose keys and values are in
/// `cache` already: per query head and block of rows, scores = Q·Kᵀ over the positions the block
/// sees, a causal softmax per row, out = P·V (gemm). Returns `m x dim`.
fn attend_prompt(
    q: &[f32],
    cache: &KvCache,
    pos: usize,
    m: usize,
    n_kv_head: usize,
    shape: AttentionShape,
) -> Vec<f32> {
    let AttentionShape {
        dim,
        group,
        head_dim,
        scale,
    } = shape;
    // Each key/value head's cache up to the chunk's last position, in floats for gemm.
    let seen_all = pos + m;
    let heads: Vec<(Vec<f32>, Vec<f32>)> = (0..n_kv_head)
        .map(|h| {
            let mut keys = vec![0f32; head_dim * seen_all];
            let rows = cache.keys(h, head_dim);
            for (c, dst) in keys.chunks_exact_mut(seen_all).enumerate() {
                rows[c * cache.capacity..][..seen_all].convert_to_f32_slice(dst);
            }
            let mut values = vec![0f32; seen_all * head_dim];
            cache
                .values(h, 0, seen_all, head_dim)
                .convert_to_f32_slice(&mut values);
            (keys, values)
        })
        .collect();
    let tasks: Vec<(usize, usize)> = (0..n_kv_head * group)
        .flat_map(|h| (0..m).step_by(PROMPT_ATTENTION_ROWS).map(move |r| (h, r)))
        .collect();
    let blocks: Vec<(usize, usize, Vec<f32>)> = tasks
        .into_par_iter()
        .map_init(Vec::new, |scores: &mut Vec<f32>, (h, r0)| {
            let rows = PROMPT_ATTENTION_ROWS.min(m - r0);
            // The block's last row sees positions 0..pos + r0 + rows.
            let seen = pos + r0 + rows;
            let (keys, values) = &heads[h / group];
            scores.clear();
            scores.resize(rows * seen, 0.0);
            gemm_product(
                MatMut::new(scores, rows, seen, seen),
                MatRef::new(&q[r0 * dim + h * head_dim..], rows, head_dim, dim, 1),
                MatRef::new(keys, head_dim, seen, seen_all, 1),
                scale,
                false,
                gemm::Parallelism::None,
            );
            for (i, row) in scores.chunks_exact_mut(seen).enumerate() {
                let len = pos + r0 + i + 1;
                softmax(&mut row[..len]);
                row[len..].fill(0.0);
            }
            let mut out = vec![0f32; rows * head_dim];
            gemm_product(
                MatMut::new(&mut out, rows, head_dim, head_dim),
                MatRef::new(scores, rows, seen, seen, 1),
                MatRef::new(&values[..seen * head_dim], seen, head_dim, head_dim, 1),
                1.0,
                false,
                gemm::Parallelism::None,
            );
            (h, r0, out)
        })
        .collect();
    let mut att = vec![0f32; m * dim];
    for (h, r0, out) in blocks {
        for (i, o) in out.chunks_exact(head_dim).enumerate() {
            att[(r0 + i) * dim + h * head_dim..][..head_dim].copy_from_slice(o);
        }
    }
    att
}

/// Attention of single tokens, each from its own sequence's cache (`caches[i]`, `positions[i]`).
/// Tasks: (token, key/value head, span of positions); the query heads sharing a key/value head
/// (grouped-query attention) are scored together, so each cached row is read once per token; a
/// long context is split into spans so both cores work on it, merged flash-decoding style.
fn attend_spans(
    q: &[f32],
    caches: &[&KvCache],
    positions: &[usize],
    n_kv_head: usize,
    shape: AttentionShape,
) -> Vec<f32> {
    let AttentionShape {
        dim,
        group,
        head_dim,
        ..
    } = shape;
    let m = positions.len();
    let mut tasks = Vec::new();
    for (i, &p) in positions.iter().enumerate() {
        let len = p + 1;
        for kvh in 0..n_kv_head {
            for start in (0..len).step_by(ATTENTION_SPAN) {
                tasks.push((i, kvh, start, (start + ATTENTION_SPAN).min(len)));
            }
        }
    }
    let slots: Vec<std::sync::OnceLock<Partial>> =
        tasks.iter().map(|_| std::sync::OnceLock::new()).collect();
    let attend = |&(i, kvh, start, end): &(usize, usize, usize, usize)| {
        let cache = caches[i];
        let n = end - start;
        let mut part = Partial {
            max: vec![0f32; group],
            sum: vec![0f32; group],
            acc: vec![0f32; group * head_dim],
        };
        attend_span(
            &q[i * dim + kvh * group * head_dim..][..group * head_dim],
            Keys {
                rows: cache.keys(kvh, head_dim),
                stride: cache.capacity,
                start,
                n,
            },
            cache.values(kvh, start, n, head_dim),
            shape,
            &mut part,
        );
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
    let mut att = vec![0f32; m * dim];
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
            let out = &mut att[i * dim + (kvh * group + g) * head_dim..][..head_dim];
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
    att
}

/// A span of one head's transposed keys: positions `start..start + n` of each of its rows.
#[derive(Clone, Copy)]
struct Keys<'a> {
    rows: &'a [f16],
    stride: usize,
    start: usize,
    n: usize,
}

/// One span of a token's attention for a group of query heads (`queries`: group x head_dim) over
/// `keys` and `values` (n x head_dim), kept unnormalised in `part`.
fn attend_span(
    queries: &[f32],
    keys: Keys,
    values: &[f16],
    shape: AttentionShape,
    part: &mut Partial,
) {
    let (group, head_dim, n) = (shape.group, shape.head_dim, keys.n);
    let mut scores = vec![0f32; group * n];
    let mut k = vec![0f32; n];
    for c in 0..head_dim {
        keys.rows[c * keys.stride + keys.start..][..n].convert_to_f32_slice(&mut k);
        for (g, row) in scores.chunks_exact_mut(n).enumerate() {
            axpy(row, queries[g * head_dim + c] * shape.scale, &k);
        }
    }
    let mut v = vec![0f32; n * head_dim];
    values.convert_to_f32_slice(&mut v);
    let values = &v;
    for (g, row) in scores.chunks_exact_mut(n).enumerate() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for s in row.iter_mut() {
            *s = exp(*s - max);
        }
        part.max[g] = max;
        part.sum[g] = trialforge_kernels::sum(row);
    }
    for (g, acc) in part.acc.chunks_exact_mut(head_dim).enumerate() {
        for (&p, v) in scores[g * n..(g + 1) * n]
            .iter()
            .zip(values.chunks_exact(head_dim))
        {
            axpy(acc, p, v);
        }
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

/// Dot product with a running sum per lane over fixed-size chunks, so the compiler keeps them in one
/// vector register (a single running sum must be added in order and does not vectorise).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let whole = n / LANES * LANES;
    for c in (0..whole).step_by(LANES) {
        let x: &[f32; LANES] = a[c..c + LANES].try_into().expect("a lane's floats");
        let y: &[f32; LANES] = b[c..c + LANES].try_into().expect("a lane's floats");
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `out += w * v`.
#[inline(always)]
fn axpy(out: &mut [f32], w: f32, v: &[f32]) {
    // `mul_add` is one fused instruction on the x86-64-v3 target (a multiply and an add otherwise:
    // Rust does not contract them by itself).
    for (o, v) in out.iter_mut().zip(v) {
        *o = w.mul_add(*v, *o);
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
    fn the_kv_cache_keeps_every_position_across_growth() {
        let (heads, dim) = (3, 4);
        let mut cache = KvCache::default();
        let value = |h: usize, t: usize, c: usize| (((h * 601 + t) * 4 + c) % 2000) as f32;
        for t in 0..600 {
            cache.reserve(heads, dim, t, t + 1, 4096);
            for h in 0..heads {
                let k: Vec<f32> = (0..dim).map(|c| -value(h, t, c)).collect();
                let v: Vec<f32> = (0..dim).map(|c| value(h, t, c)).collect();
                cache.store(h, t, &k, &v);
            }
        }
        assert!(cache.capacity >= 600);
        for h in 0..heads {
            let keys = cache.keys(h, dim);
            let values = cache.values(h, 0, 600, dim);
            for t in 0..600 {
                for c in 0..dim {
                    // Exact in half precision: integers below 2048.
                    assert_eq!(keys[c * cache.capacity + t].to_f32(), -value(h, t, c));
                    assert_eq!(values[t * dim + c].to_f32(), value(h, t, c));
                }
            }
        }
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
