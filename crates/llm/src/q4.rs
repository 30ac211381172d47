//! Matrix products for Q4_1 weights (GGUF's 4-bit format with a scale and a minimum per 32
//! weights) and Q8_0 (8 bits and a scale per 32), used for decoding: one or a few tokens at a time.
//!
//! Decoding a small model is bound by reading its weights: Q8_0 reads 34 bytes per 32 weights,
//! Q4_1 20. candle has no SIMD kernel for Q4_1 (hence the re-quantisation to Q8_0), so this is
//! one: the AVX2 path of ggml's `q4_1 x q8_1` dot product, written from its arithmetic, with a
//! portable fallback. The activation is quantised once per product to 8 bits per 32 values.

use half::f16;

/// One GGUF Q4_1 block: `w[j] = d * q[j] + m`; low nibbles hold weights 0..16, high 16..32.
#[derive(Clone, Copy)]
#[repr(C)]
struct BlockQ4_1 {
    d: f16,
    m: f16,
    qs: [u8; 16],
}

/// 32 activations quantised: `x[j] ~ d * q[j]`, with `s = d * sum(q)`.
#[derive(Clone, Copy)]
struct BlockQ8_1 {
    d: f32,
    s: f32,
    qs: [i8; 32],
}

/// One GGUF Q8_0 block: `w[j] = d * q[j]`.
#[derive(Clone, Copy)]
#[repr(C)]
struct BlockQ8_0 {
    d: f16,
    qs: [i8; 32],
}

const BLOCK: usize = 32;
const BLOCK_BYTES: usize = 20;
const BLOCK_Q8_0_BYTES: usize = 34;

enum Blocks {
    Q4_1(Vec<BlockQ4_1>),
    Q8_0(Vec<BlockQ8_0>),
}

/// A quantised weight matrix, row-major, in one of the formats with kernels here.
pub struct QuantMatrix {
    rows: usize,
    cols: usize,
    blocks: Blocks,
}

impl QuantMatrix {
    /// From GGUF Q4_1 bytes of a `rows x cols` matrix (row-major, whole blocks per row).
    pub fn from_bytes(bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(BLOCK) || bytes.len() != rows * cols / BLOCK * BLOCK_BYTES {
            return None;
        }
        let blocks = bytes
            .chunks_exact(BLOCK_BYTES)
            .map(|b| BlockQ4_1 {
                d: f16::from_le_bytes([b[0], b[1]]),
                m: f16::from_le_bytes([b[2], b[3]]),
                qs: b[4..20].try_into().expect("16 bytes"),
            })
            .collect();
        Some(QuantMatrix {
            rows,
            cols,
            blocks: Blocks::Q4_1(blocks),
        })
    }

    /// From GGUF Q8_0 bytes of a `rows x cols` matrix.
    pub fn from_q8_0_bytes(bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(BLOCK) || bytes.len() != rows * cols / BLOCK * BLOCK_Q8_0_BYTES {
            return None;
        }
        let blocks = bytes
            .chunks_exact(BLOCK_Q8_0_BYTES)
            .map(|b| BlockQ8_0 {
                d: f16::from_le_bytes([b[0], b[1]]),
                qs: std::array::from_fn(|j| b[2 + j] as i8),
            })
            .collect();
        Some(QuantMatrix {
            rows,
            cols,
            blocks: Blocks::Q8_0(blocks),
        })
    }

    /// `W x` for one activation vector of length `cols`.
    #[cfg(test)]
    pub fn matvec(&self, x: &[f32]) -> Vec<f32> {
        self.matmul_rows(x, 1)
    }

    /// `X Wᵀ` for `m` activation rows (`x` is `m x cols`, row-major; the result `m x rows`), each
    /// row quantised to 8 bits as [`Self::matvec`] does. A weight block is unpacked once for up to
    /// [`ROW_TILE`] activation rows, and every (row, weight row) pair is summed in the same order
    /// whatever `m` is: a row's result is bit-for-bit the one `matvec` gives it alone, so a
    /// sequence decodes the same in a batch of any size.
    pub fn matmul_rows(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "activation shape");
        let xq: Vec<Vec<BlockQ8_1>> = x.chunks_exact(self.cols).map(quantize_q8_1).collect();
        let per_row = self.cols / BLOCK;
        let rows = self.rows;
        let mut out = vec![0f32; m * rows];
        let simd = simd_available();
        let dst = RowsOut(out.as_mut_ptr());
        // candle's own barrier pool: its workers spin briefly between products, so the ~150 small
        // products of a decoding step do not each pay a sleeping thread's wake-up, as rayon's do.
        candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
            for r in range {
                let row = match &self.blocks {
                    Blocks::Q4_1(b) => Row::Q4_1(&b[r * per_row..(r + 1) * per_row]),
                    Blocks::Q8_0(b) => Row::Q8_0(&b[r * per_row..(r + 1) * per_row]),
                };
                if let [x] = xq.as_slice() {
                    // One row (a single sequence decoding): no tiling, nothing between dot products.
                    let v = dot(row, x, simd);
                    // SAFETY: `r < rows == out.len()`, and each row index is handed to exactly
                    // one worker, so no two threads write the same element; `out` outlives the
                    // call.
                    unsafe { *dst.ptr().add(r) = v };
                    continue;
                }
                for (tile, acts) in xq.chunks(ROW_TILE).enumerate() {
                    let mut sums = [0f32; ROW_TILE];
                    dots(row, acts, &mut sums[..acts.len()], simd);
                    for (i, v) in sums[..acts.len()].iter().enumerate() {
                        let b = tile * ROW_TILE + i;
                        // SAFETY: `b < m` and `r < rows`, so the index is inside `out`; each
                        // weight row is handed to exactly one worker, so no two threads write the
                        // same element; `out` outlives the call.
                        unsafe { *dst.ptr().add(b * rows + r) = *v };
                    }
                }
            }
        });
        out
    }

    /// The weights of rows `start..start + n` as floats, row-major (`n x cols`), into `out`.
    pub fn dequantize_rows(&self, start: usize, n: usize, out: &mut Vec<f32>) {
        let per_row = self.cols / BLOCK;
        out.clear();
        out.resize(n * self.cols, 0.0);
        let blocks = start * per_row..(start + n) * per_row;
        match &self.blocks {
            Blocks::Q4_1(b) => dequantize(&b[blocks], out),
            Blocks::Q8_0(b) => dequantize_q8_0(&b[blocks], out),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Activation rows that share one unpacked weight block in [`QuantMatrix::matmul_rows`].
pub const ROW_TILE: usize = 4;

/// One weight row's blocks.
#[derive(Clone, Copy)]
enum Row<'a> {
    Q4_1(&'a [BlockQ4_1]),
    Q8_0(&'a [BlockQ8_0]),
}

/// One weight row against one quantised activation row.
#[inline(always)]
fn dot(row: Row, x: &[BlockQ8_1], simd: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked at run time by `simd_available`).
        return unsafe {
            match row {
                Row::Q4_1(w) => dots_avx2::<1>(w, &[x])[0],
                Row::Q8_0(w) => dots_q8_0_avx2::<1>(w, &[x])[0],
            }
        };
    }
    let _ = simd;
    match row {
        Row::Q4_1(w) => dot_scalar(w, x),
        Row::Q8_0(w) => dot_q8_0_scalar(w, x),
    }
}

/// One weight row against up to [`ROW_TILE`] quantised activation rows.
fn dots(row: Row, acts: &[Vec<BlockQ8_1>], sums: &mut [f32], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked at run time by `simd_available`).
        unsafe {
            match (row, acts.len()) {
                (Row::Q4_1(w), 4) => sums.copy_from_slice(&dots_avx2::<4>(w, acts)),
                (Row::Q4_1(w), 3) => sums.copy_from_slice(&dots_avx2::<3>(w, acts)),
                (Row::Q4_1(w), 2) => sums.copy_from_slice(&dots_avx2::<2>(w, acts)),
                (Row::Q4_1(w), _) => sums.copy_from_slice(&dots_avx2::<1>(w, acts)),
                (Row::Q8_0(w), 4) => sums.copy_from_slice(&dots_q8_0_avx2::<4>(w, acts)),
                (Row::Q8_0(w), 3) => sums.copy_from_slice(&dots_q8_0_avx2::<3>(w, acts)),
                (Row::Q8_0(w), 2) => sums.copy_from_slice(&dots_q8_0_avx2::<2>(w, acts)),
                (Row::Q8_0(w), _) => sums.copy_from_slice(&dots_q8_0_avx2::<1>(w, acts)),
            }
        }
        return;
    }
    let _ = simd;
    for (s, x) in sums.iter_mut().zip(acts) {
        *s = match row {
            Row::Q4_1(w) => dot_scalar(w, x),
            Row::Q8_0(w) => dot_q8_0_scalar(w, x),
        };
    }
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl"))]
fn dequantize_q8_0(blocks: &[BlockQ8_0], out: &mut [f32]) {
    for (b, w) in blocks.iter().zip(out.chunks_exact_mut(BLOCK)) {
        let d = b.d.to_f32();
        for (w, q) in w.iter_mut().zip(&b.qs) {
            *w = d * *q as f32;
        }
    }
}

fn dot_q8_0_scalar(row: &[BlockQ8_0], xq: &[BlockQ8_1]) -> f32 {
    let mut total = 0f32;
    for (b, x) in row.iter().zip(xq) {
        let sumi: i32 =
            b.qs.iter()
                .zip(&x.qs)
                .map(|(&w, &a)| w as i32 * a as i32)
                .sum();
        total += sumi as f32 * b.d.to_f32() * x.d;
    }
    total
}

/// As [`dots_avx2`] for Q8_0 weights: signed bytes, so the product takes ggml's sign trick
/// (|w| as unsigned times x carrying w's sign) for `maddubs`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots_q8_0_avx2<const N: usize>(
    row: &[BlockQ8_0],
    acts: &[impl AsRef<[BlockQ8_1]>],
) -> [f32; N] {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    let acts: [&[BlockQ8_1]; N] = std::array::from_fn(|n| &acts[n].as_ref()[..row.len()]);
    for (j, b) in row.iter().enumerate() {
        let w = _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i);
        let w_abs = _mm256_sign_epi8(w, w);
        let d = b.d.to_f32();
        for n in 0..N {
            // SAFETY: every `acts[n]` was cut to `row.len()` blocks above, and `j < row.len()`.
            let x = unsafe { acts[n].get_unchecked(j) };
            let q8 = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
            // |w| * (x with w's sign) = w * x, summed in pairs: at most 2 * 127 * 127, no i16
            // overflow (x = -128 never occurs: activations round into -127..=127).
            let pairs = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(q8, w));
            let quads = _mm256_madd_epi16(pairs, ones);
            let scale = _mm256_set1_ps(d * x.d);
            acc[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(quads), scale, acc[n]);
        }
    }
    std::array::from_fn(|n| hsum_avx2(acc[n]))
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl"))]
fn dequantize(blocks: &[BlockQ4_1], out: &mut [f32]) {
    for (b, w) in blocks.iter().zip(out.chunks_exact_mut(BLOCK)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        let (lo, hi) = w.split_at_mut(16);
        for j in 0..16 {
            lo[j] = d * (b.qs[j] & 0x0F) as f32 + m;
            hi[j] = d * (b.qs[j] >> 4) as f32 + m;
        }
    }
}

/// The output buffer of [`QuantMatrix::matvec`], shared with the pool's workers.
struct RowsOut(*mut f32);
// SAFETY: workers write disjoint elements (see the use above).
unsafe impl Sync for RowsOut {}

impl RowsOut {
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn quantize_q8_1(x: &[f32]) -> Vec<BlockQ8_1> {
    x.chunks_exact(BLOCK)
        .map(|v| {
            let amax = v.iter().fold(0f32, |a, x| a.max(x.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut qs = [0i8; 32];
            let mut sum = 0i32;
            for (q, x) in qs.iter_mut().zip(v) {
                *q = (x * inv).round() as i8;
                sum += *q as i32;
            }
            BlockQ8_1 {
                d,
                s: d * sum as f32,
                qs,
            }
        })
        .collect()
}

fn dot_scalar(row: &[BlockQ4_1], xq: &[BlockQ8_1]) -> f32 {
    let mut total = 0f32;
    for (b, x) in row.iter().zip(xq) {
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += (b.qs[j] & 0x0F) as i32 * x.qs[j] as i32;
            sumi += (b.qs[j] >> 4) as i32 * x.qs[j + 16] as i32;
        }
        total += sumi as f32 * b.d.to_f32() * x.d + b.m.to_f32() * x.s;
    }
    total
}

/// `N` dot products of one Q4_1 row, each summed exactly as for `N = 1`: per block, the integer
/// sum to float, times the two scales, added to that pair's own accumulator; the minimum term apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots_avx2<const N: usize>(
    row: &[BlockQ4_1],
    acts: &[impl AsRef<[BlockQ8_1]>],
) -> [f32; N] {
    use std::arch::x86_64::*;
    let low4 = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut mins = [0f32; N];
    let acts: [&[BlockQ8_1]; N] = std::array::from_fn(|n| &acts[n].as_ref()[..row.len()]);
    for (j, b) in row.iter().enumerate() {
        let raw = _mm_loadu_si128(b.qs.as_ptr() as *const __m128i);
        let lo = _mm_and_si128(raw, low4);
        let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low4);
        let q4 = _mm256_set_m128i(hi, lo);
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for n in 0..N {
            // SAFETY: every `acts[n]` was cut to `row.len()` blocks above, and `j < row.len()`.
            let x = unsafe { acts[n].get_unchecked(j) };
            let q8 = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
            // u8 x i8 products summed in pairs (at most 2 * 15 * 128: no i16 overflow), then to i32.
            let pairs = _mm256_maddubs_epi16(q4, q8);
            let quads = _mm256_madd_epi16(pairs, ones);
            let scale = _mm256_set1_ps(d * x.d);
            acc[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(quads), scale, acc[n]);
            mins[n] += m * x.s;
        }
    }
    std::array::from_fn(|n| hsum_avx2(acc[n]) + mins[n])
}

/// The sum of a vector's eight lanes, in a fixed order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_avx2(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let hi = _mm256_extractf128_ps(v, 1);
    let sum4 = _mm_add_ps(_mm256_castps256_ps128(v), hi);
    let sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
    let sum1 = _mm_add_ss(sum2, _mm_shuffle_ps(sum2, sum2, 1));
    _mm_cvtss_f32(sum1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Random Q4_1 bytes, and the weights they stand for.
    fn random_matrix(rows: usize, cols: usize, rng: &mut StdRng) -> (Vec<u8>, Vec<f32>) {
        let mut bytes = Vec::new();
        let mut dense = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            let d = f16::from_f32(rng.random_range(0.001..0.05));
            let m = f16::from_f32(rng.random_range(-0.4..0.0));
            bytes.extend_from_slice(&d.to_le_bytes());
            bytes.extend_from_slice(&m.to_le_bytes());
            let qs: Vec<u8> = (0..16).map(|_| rng.random::<u8>()).collect();
            let mut w = [0f32; 32];
            for j in 0..16 {
                w[j] = d.to_f32() * (qs[j] & 0x0F) as f32 + m.to_f32();
                w[j + 16] = d.to_f32() * (qs[j] >> 4) as f32 + m.to_f32();
            }
            bytes.extend_from_slice(&qs);
            dense.extend_from_slice(&w);
        }
        (bytes, dense)
    }

    #[test]
    fn matches_the_dense_product_within_activation_rounding() {
        let mut rng = StdRng::seed_from_u64(1);
        let (rows, cols) = (150, 576);
        let (bytes, dense) = random_matrix(rows, cols, &mut rng);
        let m = QuantMatrix::from_bytes(&bytes, rows, cols).unwrap();
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let got = m.matvec(&x);
        for r in 0..rows {
            let want: f32 = dense[r * cols..(r + 1) * cols]
                .iter()
                .zip(&x)
                .map(|(w, x)| w * x)
                .sum();
            let norm: f32 = dense[r * cols..(r + 1) * cols]
                .iter()
                .map(|w| w.abs())
                .sum::<f32>()
                / 127.0;
            assert!(
                (got[r] - want).abs() < norm,
                "row {r}: {} vs {want}",
                got[r]
            );
        }
        // The SIMD and portable paths agree.
        let xq = quantize_q8_1(&x);
        let per_row = cols / BLOCK;
        let Blocks::Q4_1(blocks) = &m.blocks else {
            unreachable!()
        };
        for (r, g) in got.iter().enumerate() {
            let row = &blocks[r * per_row..(r + 1) * per_row];
            let s = dot_scalar(row, &xq);
            assert!((s - g).abs() <= 1e-3 * (1.0 + s.abs()), "row {r}");
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_alone_and_in_a_batch() {
        let mut rng = StdRng::seed_from_u64(2);
        let (rows, cols) = (70, 256);
        let (bytes, dense) = random_matrix(rows, cols, &mut rng);
        let m = QuantMatrix::from_bytes(&bytes, rows, cols).unwrap();
        let batch = 7;
        let x: Vec<f32> = (0..batch * cols)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let together = m.matmul_rows(&x, batch);
        for b in 0..batch {
            let alone = m.matvec(&x[b * cols..(b + 1) * cols]);
            assert_eq!(alone, together[b * rows..(b + 1) * rows], "row {b}");
        }
        let mut w = Vec::new();
        m.dequantize_rows(3, 5, &mut w);
        assert_eq!(w, dense[3 * cols..8 * cols]);
    }

    #[test]
    fn q8_0_rows_match_the_dense_product_and_batch_alike() {
        let mut rng = StdRng::seed_from_u64(3);
        let (rows, cols, batch) = (45, 128, 6);
        let mut bytes = Vec::new();
        let mut dense = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            let d = f16::from_f32(rng.random_range(0.001..0.01));
            bytes.extend_from_slice(&d.to_le_bytes());
            for _ in 0..BLOCK {
                let q = rng.random_range(-127i8..=127);
                bytes.push(q as u8);
                dense.push(d.to_f32() * q as f32);
            }
        }
        let m = QuantMatrix::from_q8_0_bytes(&bytes, rows, cols).unwrap();
        let x: Vec<f32> = (0..batch * cols)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let together = m.matmul_rows(&x, batch);
        for b in 0..batch {
            let xb = &x[b * cols..(b + 1) * cols];
            assert_eq!(m.matvec(xb), together[b * rows..(b + 1) * rows], "row {b}");
            for r in 0..rows {
                let w = &dense[r * cols..(r + 1) * cols];
                let want: f32 = w.iter().zip(xb).map(|(w, x)| w * x).sum();
                let bound: f32 = w.iter().map(|w| w.abs()).sum::<f32>() / 127.0;
                assert!((together[b * rows + r] - want).abs() < bound, "({b}, {r})");
            }
        }
        let mut w = Vec::new();
        m.dequantize_rows(2, 3, &mut w);
        assert_eq!(w, dense[2 * cols..5 * cols]);
    }

    #[test]
    fn rejects_bytes_of_the_wrong_size() {
        assert!(QuantMatrix::from_bytes(&[0u8; 40], 1, 64).is_some());
        assert!(QuantMatrix::from_bytes(&[0u8; 39], 1, 64).is_none());
        assert!(QuantMatrix::from_bytes(&[0u8; 20], 1, 31).is_none());
    }
}
