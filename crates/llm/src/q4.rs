//! Matrix-vector product for Q4_1 weights (GGUF's 4-bit format with a scale and a minimum per 32
//! weights), used for decoding one token at a time.
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

const BLOCK: usize = 32;
const BLOCK_BYTES: usize = 20;

pub struct Q4_1Matrix {
    rows: usize,
    cols: usize,
    blocks: Vec<BlockQ4_1>,
}

impl Q4_1Matrix {
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
        Some(Q4_1Matrix { rows, cols, blocks })
    }

    /// `W x` for one activation vector of length `cols`.
    pub fn matvec(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len(), self.cols, "activation width");
        let xq = quantize_q8_1(x);
        let per_row = self.cols / BLOCK;
        let mut out = vec![0f32; self.rows];
        let simd = simd_available();
        let dst = RowsOut(out.as_mut_ptr());
        // candle's own barrier pool: its workers spin briefly between products, so the ~150 small
        // products of a decoding step do not each pay a sleeping thread's wake-up, as rayon's do.
        candle_core::utils::barrier_pool().execute_chunked(self.rows, |range| {
            for r in range {
                let row = &self.blocks[r * per_row..(r + 1) * per_row];
                let v = if simd {
                    // SAFETY: the CPU has AVX2, FMA and F16C (checked at run time).
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        dot_avx2(row, &xq)
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    dot_scalar(row, &xq)
                } else {
                    dot_scalar(row, &xq)
                };
                // SAFETY: `r < rows == out.len()`, and each row index is handed to exactly one
                // worker, so no two threads write the same element; `out` outlives the call.
                unsafe { *dst.ptr().add(r) = v };
            }
        });
        out
    }
}

/// The output buffer of [`Q4_1Matrix::matvec`], shared with the pool's workers.
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(row: &[BlockQ4_1], xq: &[BlockQ8_1]) -> f32 {
    use std::arch::x86_64::*;
    let low4 = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    for (b, x) in row.iter().zip(xq) {
        let raw = _mm_loadu_si128(b.qs.as_ptr() as *const __m128i);
        let lo = _mm_and_si128(raw, low4);
        let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low4);
        let q4 = _mm256_set_m128i(hi, lo);
        let q8 = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
        // u8 x i8 products summed in pairs (at most 2 * 15 * 128: no i16 overflow), then to i32.
        let pairs = _mm256_maddubs_epi16(q4, q8);
        let quads = _mm256_madd_epi16(pairs, ones);
        let scale = _mm256_set1_ps(b.d.to_f32() * x.d);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(quads), scale, acc);
        mins += b.m.to_f32() * x.s;
    }
    let hi = _mm256_extractf128_ps(acc, 1);
    let sum4 = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
    let sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
    let sum1 = _mm_add_ss(sum2, _mm_shuffle_ps(sum2, sum2, 1));
    _mm_cvtss_f32(sum1) + mins
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
        let m = Q4_1Matrix::from_bytes(&bytes, rows, cols).unwrap();
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
        for (r, g) in got.iter().enumerate() {
            let row = &m.blocks[r * per_row..(r + 1) * per_row];
            let s = dot_scalar(row, &xq);
            assert!((s - g).abs() <= 1e-3 * (1.0 + s.abs()), "row {r}");
        }
    }

    #[test]
    fn rejects_bytes_of_the_wrong_size() {
        assert!(Q4_1Matrix::from_bytes(&[0u8; 40], 1, 64).is_some());
        assert!(Q4_1Matrix::from_bytes(&[0u8; 39], 1, 64).is_none());
        assert!(Q4_1Matrix::from_bytes(&[0u8; 20], 1, 31).is_none());
    }
}
