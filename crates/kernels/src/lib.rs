//! CPU numeric kernels shared by the encoder's and the LLM's forward passes: bounds-checked strided
//! matrix views over the `gemm` crate (AVX-512 or AVX2/FMA kernels picked at run time), and
//! element-wise math written so the compiler vectorises it (a libm call per element does not):
//! exp, sums and maxima over independent lanes, softmax. `emulation` finds the emulator the
//! encoder's and the LLM's tests run the AVX2 path under.

pub mod emulation;

use multiversion::multiversion;

/// A read-only strided matrix view, bounds-checked when made.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        assert!(
            rows == 0
                || cols == 0
                || (rows - 1) * row_stride + (cols - 1) * col_stride < data.len(),
            "matrix view outside its buffer"
        );
        MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }
}

/// A row-major writable matrix view, bounds-checked when made.
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
}

impl<'a> MatMut<'a> {
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * row_stride + cols <= data.len(),
            "matrix view outside its buffer"
        );
        MatMut {
            data,
            rows,
            cols,
            row_stride,
        }
    }
}

/// `dst = scale · a · b` (or `dst += scale · a · b` with `accumulate`).
pub fn matmul(
    dst: MatMut,
    a: MatRef,
    b: MatRef,
    scale: f32,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    assert!(
        a.rows == dst.rows && b.cols == dst.cols && a.cols == b.rows,
        "matrix shapes do not chain"
    );
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    // SAFETY: the views were bounds-checked against their buffers when made, the shapes chain
    // (checked above), and `dst` is a unique borrow that aliases neither input.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            a.cols,
            dst.data.as_mut_ptr(),
            1,
            dst.row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl"))]
pub fn softmax(row: &mut [f32]) {
    softmax_in_place(row);
}

#[inline(always)]
pub fn softmax_in_place(row: &mut [f32]) {
    let mut top = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for c in chunks {
        for (m, &x) in top.iter_mut().zip(c) {
            *m = m.max(x);
        }
    }
    let max = top.iter().fold(tail, |m, &x| m.max(x));
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    let inv = 1.0 / sum(row);
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// Independent accumulators for sums and maxima: a float reduction in one accumulator is not
/// vectorised (its order is fixed), 16 lanes are.
pub const LANES: usize = 16;

#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// e^x to a few ulp over the f32 range, in straight-line arithmetic that the compiler vectorises
/// (libm's `expf` is a call per element): x = n·ln 2 + f with n an integer (ln 2 in two parts, so f
/// keeps its precision when n is large), 2^n set in the exponent bits, e^f for |f| <= ln2/2 by its
/// Taylor polynomial to degree 7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer.
    const LN2_HI: f32 = 0.693_359_4; // ln 2 with its low bits cleared: n · LN2_HI is exact.
    const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 - LN2_HI
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let f = x - n * LN2_HI - n * LN2_LO;
    // e^f = Σ f^k / k! for k <= 7, Horner form.
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0
                    + f * (1.0 / 24.0
                        + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f * (1.0 / 5040.0)))))));
    let power = ((shifted.to_bits() as i32 - ROUND.to_bits() as i32 + 127) as u32) << 23;
    p * f32::from_bits(power)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm() {
        let mut worst = 0f32;
        for i in -8700..8800 {
            let x = i as f32 / 100.0 + 0.003;
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert!((exp(-1000.0) / (-87f32).exp() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn strided_products() {
        // (2x3) · (3x2) with the right-hand side read transposed from a (2x3) buffer.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, -1.0, 2.0, 1.0, 0.0];
        let mut out = [0f32; 4];
        matmul(
            MatMut::new(&mut out, 2, 2, 2),
            MatRef::new(&a, 2, 3, 3, 1),
            MatRef::new(&b, 3, 2, 1, 3),
            0.5,
            false,
            gemm::Parallelism::None,
        );
        // rows of a · columns (b's rows): [1,2,3]·[1,0,-1] = -2, [1,2,3]·[2,1,0] = 4, ...
        assert_eq!(out, [-1.0, 2.0, -1.0, 6.5]);
    }
}
