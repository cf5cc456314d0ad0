//! Row-major matrix products on cuBLAS.
//!
//! cuBLAS is column-major. A row-major `r×s` matrix with row stride `ld` is, read column-major,
//! its transpose (`s×r`, leading dimension `ld`). So the row-major product
//! `C = α·op(A)·op(B) + β·C` is the column-major product `Cᵀ = α·op(B)ᵀ·op(A)ᵀ + β·Cᵀ` on the
//! very same buffers: swap the operands, keep each operand's transpose flag, swap `m` and `n`.
//! [`RowMajor::col_major`] is that mapping, the one place where it is written down.

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{Gemm, GemmConfig};
use cudarc::driver::{DevicePtr, DevicePtrMut};

use crate::{GpuDevice, GpuError};

/// A row-major product `C = α·op(A)·op(B) + β·C` with `C` `m×n`, `op(A)` `m×k`, `op(B)` `k×n`.
///
/// `lda`, `ldb`, `ldc` are the row strides of the matrices *as stored*: `A` is stored `m×k`
/// (or `k×m` when `trans_a`), `B` `k×n` (or `n×k` when `trans_b`), `C` `m×n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowMajor {
    /// Rows of `C`.
    pub m: usize,
    /// Columns of `C`.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Use `Aᵀ`.
    pub trans_a: bool,
    /// Use `Bᵀ`.
    pub trans_b: bool,
    /// Row stride of `A` as stored.
    pub lda: usize,
    /// Row stride of `B` as stored.
    pub ldb: usize,
    /// Row stride of `C`.
    pub ldc: usize,
}

/// The column-major (BLAS) call computing a [`RowMajor`] product: `first` is the row-major `B`
/// buffer, `second` the row-major `A` buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColMajor {
    /// `transa` of the BLAS call (applies to `first`).
    pub trans_first: bool,
    /// `transb` of the BLAS call (applies to `second`).
    pub trans_second: bool,
    /// BLAS `m`.
    pub m: usize,
    /// BLAS `n`.
    pub n: usize,
    /// BLAS `k`.
    pub k: usize,
    /// BLAS `lda` (of `first`).
    pub ld_first: usize,
    /// BLAS `ldb` (of `second`).
    pub ld_second: usize,
    /// BLAS `ldc`.
    pub ldc: usize,
}

impl RowMajor {
    /// `C = A·B` with tightly packed `A` (`m×k`), `B` (`k×n`), `C` (`m×n`).
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        RowMajor {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            lda: k,
            ldb: n,
            ldc: n,
        }
    }

    /// The column-major call: `Cᵀ = op(B)ᵀ·op(A)ᵀ`.
    pub fn col_major(&self) -> ColMajor {
        ColMajor {
            trans_first: self.trans_b,
            trans_second: self.trans_a,
            m: self.n,
            n: self.m,
            k: self.k,
            ld_first: self.ldb,
            ld_second: self.lda,
            ldc: self.ldc,
        }
    }

    /// Smallest buffer lengths (elements) of `A`, `B`, `C` that the product reads or writes,
    /// or `None` when a row stride is shorter than its row.
    pub fn min_lens(&self) -> Option<(usize, usize, usize)> {
        fn stored(rows: usize, cols: usize, ld: usize) -> Option<usize> {
            if ld < cols.max(1) {
                return None;
            }
            if rows == 0 || cols == 0 {
                return Some(0);
            }
            (rows - 1).checked_mul(ld)?.checked_add(cols)
        }
        let (ar, ac) = if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        let (br, bc) = if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        Some((
            stored(ar, ac, self.lda)?,
            stored(br, bc, self.ldb)?,
            stored(self.m, self.n, self.ldc)?,
        ))
    }
}

fn op(t: bool) -> cublasOperation_t {
    if t {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

fn int(v: usize) -> Result<i32, GpuError> {
    i32::try_from(v).map_err(|_| GpuError::TooLarge("matrix dimension"))
}

impl GpuDevice {
    /// Runs the row-major product `p` on the device's cuBLAS handle, on its stream (`alpha`,
    /// `beta` are host scalars: no synchronisation). Checks the buffer lengths first, so a
    /// wrong shape is an error, never an out-of-bounds access.
    pub(crate) fn gemm<A, B, C>(
        &self,
        p: RowMajor,
        alpha: f32,
        a: &A,
        b: &B,
        beta: f32,
        c: &mut C,
    ) -> Result<(), GpuError>
    where
        A: DevicePtr<f32>,
        B: DevicePtr<f32>,
        C: DevicePtrMut<f32>,
    {
        let (la, lb, lc) = p.min_lens().ok_or(GpuError::TooLarge("row stride"))?;
        for (what, need, got) in [
            ("gemm A", la, a.len()),
            ("gemm B", lb, b.len()),
            ("gemm C", lc, c.len()),
        ] {
            if got < need {
                return Err(GpuError::Shape {
                    what,
                    expected: need,
                    got,
                });
            }
        }
        if p.m == 0 || p.n == 0 {
            return Ok(());
        }
        let q = p.col_major();
        let cfg = GemmConfig {
            transa: op(q.trans_first),
            transb: op(q.trans_second),
            m: int(q.m)?,
            n: int(q.n)?,
            k: int(q.k)?,
            alpha,
            lda: int(q.ld_first.max(1))?,
            ldb: int(q.ld_second.max(1))?,
            beta,
            ldc: int(q.ldc.max(1))?,
        };
        // SAFETY: the lengths checked above cover every element the BLAS call addresses (the
        // column-major call addresses exactly the elements of the row-major product), and all
        // buffers live on the handle's stream.
        unsafe { self.blas().gemm(cfg, b, a, c) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference column-major SGEMM with BLAS semantics:
    /// `C = α·op(A)·op(B) + β·C`, `op(A)` `m×k`, element `(i, j)` of a matrix at `i + j·ld`.
    #[allow(clippy::too_many_arguments)]
    fn blas_sgemm(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f64,
        a: &[f64],
        lda: usize,
        b: &[f64],
        ldb: usize,
        beta: f64,
        c: &mut [f64],
        ldc: usize,
    ) {
        assert!(lda >= if ta { k } else { m }.max(1));
        assert!(ldb >= if tb { n } else { k }.max(1));
        assert!(ldc >= m.max(1));
        for j in 0..n {
            for i in 0..m {
                let mut s = 0.0;
                for l in 0..k {
                    let aij = if ta { a[l + i * lda] } else { a[i + l * lda] };
                    let blj = if tb { b[j + l * ldb] } else { b[l + j * ldb] };
                    s += aij * blj;
                }
                c[i + j * ldc] = alpha * s + beta * c[i + j * ldc];
            }
        }
    }

    fn fill(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f64 / (1u64 << 31) as f64) - 0.5
            })
            .collect()
    }

    #[test]
    fn row_major_products_through_column_major_blas() {
        let (m, n, k) = (5, 3, 4);
        let (alpha, beta) = (0.7, -1.3);
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                // Padded row strides, to check that strides and extents are not confused.
                let lda = if trans_a { m } else { k } + 2;
                let ldb = if trans_b { k } else { n } + 1;
                let ldc = n + 3;
                let p = RowMajor {
                    m,
                    n,
                    k,
                    trans_a,
                    trans_b,
                    lda,
                    ldb,
                    ldc,
                };
                let (la, lb, lc) = p.min_lens().unwrap();
                let a = fill(la, 1);
                let b = fill(lb, 2);
                let c0 = fill(lc, 3);
                // Row-major reference: element (i, j) of a stored matrix at i·ld + j.
                let a_at = |i: usize, l: usize| {
                    if trans_a {
                        a[l * lda + i]
                    } else {
                        a[i * lda + l]
                    }
                };
                let b_at = |l: usize, j: usize| {
                    if trans_b {
                        b[j * ldb + l]
                    } else {
                        b[l * ldb + j]
                    }
                };
                let mut want = c0.clone();
                for i in 0..m {
                    for j in 0..n {
                        let s: f64 = (0..k).map(|l| a_at(i, l) * b_at(l, j)).sum();
                        want[i * ldc + j] = alpha * s + beta * c0[i * ldc + j];
                    }
                }
                let q = p.col_major();
                let mut got = c0.clone();
                blas_sgemm(
                    q.trans_first,
                    q.trans_second,
                    q.m,
                    q.n,
                    q.k,
                    alpha,
                    &b,
                    q.ld_first,
                    &a,
                    q.ld_second,
                    beta,
                    &mut got,
                    q.ldc,
                );
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() < 1e-12,
                        "trans_a={trans_a} trans_b={trans_b}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn products_of_the_backend() {
        // Logits Z (n×c) = X̃ (n×(d+1), row stride ld) · Y ((d+1)×c).
        let (n, d1, c, ld) = (7, 5, 3, 8);
        let fwd = RowMajor {
            lda: ld,
            ..RowMajor::new(n, c, d1)
        };
        assert_eq!(
            fwd.col_major(),
            ColMajor {
                trans_first: false,
                trans_second: false,
                m: c,
                n,
                k: d1,
                ld_first: c,
                ld_second: ld,
                ldc: c
            }
        );
        assert_eq!(fwd.min_lens(), Some(((n - 1) * ld + d1, d1 * c, n * c)));
        // Gradient (d+1)×c = X̃ᵀ · G (n×c).
        let bwd = RowMajor {
            m: d1,
            n: c,
            k: n,
            trans_a: true,
            trans_b: false,
            lda: ld,
            ldb: c,
            ldc: c,
        };
        assert_eq!(
            bwd.col_major(),
            ColMajor {
                trans_first: false,
                trans_second: true,
                m: c,
                n: d1,
                k: n,
                ld_first: c,
                ld_second: ld,
                ldc: c
            }
        );
        assert_eq!(bwd.min_lens(), Some(((n - 1) * ld + d1, n * c, d1 * c)));
        // A row stride shorter than the row is rejected.
        assert_eq!(
            RowMajor {
                lda: 2,
                ..RowMajor::new(2, 2, 3)
            }
            .min_lens(),
            None
        );
    }
}
