//! A safe strided GEMM over `matrixmultiply` for `f32` and `f64`: the products of the CPU
//! backends that are dense (the conv4 backbone's im2col GEMMs, the `l2_penalty` example's
//! logits and gradients).

use bda_kernel::Real;
use bda_kernel::collective::{Add, Collective};

/// The type of `matrixmultiply::{s,d}gemm`.
pub type RawGemm<T> = unsafe fn(
    usize,
    usize,
    usize,
    T,
    *const T,
    isize,
    isize,
    *const T,
    isize,
    isize,
    T,
    *mut T,
    isize,
    isize,
);

/// A float type with a GEMM: `f32` (training) and `f64` (gradient checks).
pub trait Float: Real + Send + Sync + Default + core::fmt::Debug + 'static {
    /// `matrixmultiply`'s GEMM for this type (use it through [`gemm`]).
    const RAW_GEMM: RawGemm<Self>;

    /// [`Collective::chain_f32`] or `chain_f64`, for a backend generic over its scalar.
    fn chain(comm: &dyn Collective, acc: &mut [Self], add: &mut Add<'_, Self>);

    /// [`Collective::gather_f32`] or `gather_f64`.
    fn gather(comm: &dyn Collective, mine: &[Self], counts: &[usize], out: &mut [Self]);
}

impl Float for f32 {
    const RAW_GEMM: RawGemm<f32> = matrixmultiply::sgemm;
    fn chain(comm: &dyn Collective, acc: &mut [f32], add: &mut Add<'_, f32>) {
        comm.chain_f32(acc, add);
    }
    fn gather(comm: &dyn Collective, mine: &[f32], counts: &[usize], out: &mut [f32]) {
        comm.gather_f32(mine, counts, out);
    }
}

impl Float for f64 {
    const RAW_GEMM: RawGemm<f64> = matrixmultiply::dgemm;
    fn chain(comm: &dyn Collective, acc: &mut [f64], add: &mut Add<'_, f64>) {
        comm.chain_f64(acc, add);
    }
    fn gather(comm: &dyn Collective, mine: &[f64], counts: &[usize], out: &mut [f64]) {
        comm.gather_f64(mine, counts, out);
    }
}

fn check_extent(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    if rows > 0 && cols > 0 {
        assert!(
            (rows - 1) * rs + (cols - 1) * cs < len,
            "gemm operand out of bounds"
        );
    }
}

/// `C ← alpha·A·B + beta·C` with `A` m×k, `B` k×n, `C` m×n, each given by its slice and its row and
/// column strides (element `(i, j)` of `A` is `a[i·rsa + j·csa]`). Panics if an operand does
/// not fit its slice (a bug in the caller, never an input error).
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Float>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    rsa: usize,
    csa: usize,
    b: &[T],
    rsb: usize,
    csb: usize,
    beta: T,
    c: &mut [T],
    rsc: usize,
    csc: usize,
) {
    check_extent(a.len(), m, k, rsa, csa);
    check_extent(b.len(), k, n, rsb, csb);
    check_extent(c.len(), m, n, rsc, csc);
    let s = |v: usize| v as isize;
    // SAFETY: the three operands were checked to lie inside their slices, and `c` is
    // borrowed mutably, so it does not alias `a` or `b`.
    unsafe {
        (T::RAW_GEMM)(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            s(rsa),
            s(csa),
            b.as_ptr(),
            s(rsb),
            s(csb),
            beta,
            c.as_mut_ptr(),
            s(rsc),
            s(csc),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::gemm;

    #[test]
    fn strided_gemm_is_the_plain_product() {
        // A = [[1, 2], [3, 4]] row-major, B = Aᵀ read from A's storage with swapped strides.
        let a = [1.0f64, 2.0, 3.0, 4.0];
        let mut c = [1.0f64; 4];
        gemm(2, 2, 2, 1.0, &a, 2, 1, &a, 1, 2, 0.5, &mut c, 2, 1);
        // A·Aᵀ = [[5, 11], [11, 25]], plus ½·1.
        assert_eq!(c, [5.5, 11.5, 11.5, 25.5]);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn an_operand_outside_its_slice_is_caught() {
        let mut c = [0.0f32; 4];
        gemm(
            2, 2, 2, 1.0, &[1.0; 3], 2, 1, &[1.0; 4], 2, 1, 0.0, &mut c, 2, 1,
        );
    }
}
