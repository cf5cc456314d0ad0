//! The eigendecomposition of a small symmetric matrix by the cyclic Jacobi method. The
//! spectral projection uses it on a weight matrix's Gram matrix.
//!
//! It is hand-written. nalgebra 0.35's `svd(true, true)` returned factors that reconstruct
//! a near-degenerate 6×3 matrix (σ₁ ≈ σ₂) only to 2.2e-3 (its issues #983 and #1172; #1109
//! is the same kind of failure in `symmetric_eigen`). `faer` decomposes accurately but
//! brings 98 crates. Jacobi rotations are slow only for large matrices. Here `n ≤ 64` (the
//! smaller side of a convolution's weight matrix), so a decomposition takes a few
//! milliseconds. Jacobi is accurate for every spectrum, repeated eigenvalues included, and
//! its eigenvectors are orthonormal to rounding.

use std::fmt;

/// Sweeps after which [`symmetric_eigen`] gives up. Cyclic Jacobi converges quadratically
/// once the off-diagonal part is small: a 64 × 64 Gram matrix of a random weight matrix
/// takes about 10 sweeps, so reaching this many means something is wrong with the input.
pub const MAX_SWEEPS: usize = 64;

/// Why [`symmetric_eigen`] returned no decomposition. A projection that stopped at an
/// unconverged rotation would move the weights by an unknown amount, so this is an error
/// rather than a result.
#[derive(Clone, Debug, PartialEq)]
pub enum EigenError {
    /// The matrix holds an infinite or NaN entry.
    NonFinite {
        /// Side of the matrix.
        n: usize,
    },
    /// The off-diagonal part was still above rounding after `sweeps` sweeps.
    NoConvergence {
        /// Side of the matrix.
        n: usize,
        /// Sweeps done.
        sweeps: usize,
        /// `‖offdiag(A)‖_F / ‖A‖_F` when it stopped.
        residual: f64,
    },
}

impl fmt::Display for EigenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EigenError::NonFinite { n } => write!(
                f,
                "the {n}×{n} Gram matrix is not finite (no eigendecomposition)"
            ),
            EigenError::NoConvergence {
                n,
                sweeps,
                residual,
            } => write!(
                f,
                "the Jacobi eigendecomposition of the {n}×{n} Gram matrix did not converge in {sweeps} sweeps (off-diagonal part {residual:.1e} of the whole)"
            ),
        }
    }
}

impl std::error::Error for EigenError {}

/// Eigenvalues and orthonormal eigenvectors of the symmetric `n × n` matrix `a` (row-major;
/// overwritten). Returns `(λ, V)` with `V` row-major and column `i` of `V` the eigenvector
/// of `λ[i]`, in no particular order; an error when `a` is not finite or the off-diagonal
/// part is not down to rounding (`‖offdiag‖_F ≤ ε‖A‖_F`) within [`MAX_SWEEPS`] sweeps.
pub fn symmetric_eigen(a: &mut [f64], n: usize) -> Result<(Vec<f64>, Vec<f64>), EigenError> {
    eigen_in_sweeps(a, n, MAX_SWEEPS)
}

/// [`symmetric_eigen`] with at most `max_sweeps` sweeps (tests force non-convergence with
/// a small limit).
fn eigen_in_sweeps(
    a: &mut [f64],
    n: usize,
    max_sweeps: usize,
) -> Result<(Vec<f64>, Vec<f64>), EigenError> {
    debug_assert_eq!(a.len(), n * n);
    let total: f64 = a.iter().map(|x| x * x).sum();
    if !total.is_finite() {
        return Err(EigenError::NonFinite { n });
    }
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for sweep in 0.. {
        let off: f64 = (0..n)
            .flat_map(|p| (p + 1..n).map(move |q| (p, q)))
            .map(|(p, q)| 2.0 * a[p * n + q] * a[p * n + q])
            .sum();
        if off <= f64::EPSILON * f64::EPSILON * total || off == 0.0 {
            break;
        }
        if sweep == max_sweeps {
            return Err(EigenError::NoConvergence {
                n,
                sweeps: sweep,
                residual: (off / total).sqrt(),
            });
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Rutishauser's formulas; |t| ≤ 1).
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + theta.hypot(1.0));
                let c = 1.0 / t.hypot(1.0);
                let s = t * c;
                let rotate = |x: f64, y: f64| (c * x - s * y, s * x + c * y);
                for k in 0..n {
                    (a[k * n + p], a[k * n + q]) = rotate(a[k * n + p], a[k * n + q]);
                }
                for k in 0..n {
                    (a[p * n + k], a[q * n + k]) = rotate(a[p * n + k], a[q * n + k]);
                }
                for k in 0..n {
                    (v[k * n + p], v[k * n + q]) = rotate(v[k * n + p], v[k * n + q]);
                }
            }
        }
    }
    Ok(((0..n).map(|i| a[i * n + i]).collect(), v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `V diag(λ) Vᵀ` reproduces `A` and `VᵀV = I`, for a random matrix and for one with a
    /// repeated eigenvalue.
    #[test]
    fn decomposes_and_reconstructs() {
        let n = 6;
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let b: Vec<f64> = (0..n * n).map(|_| next()).collect();
        // A = BBᵀ (positive semi-definite); and A₂ = I + uuᵀ (eigenvalue 1, five times).
        let bbt: Vec<f64> = (0..n * n)
            .map(|ij| (0..n).map(|k| b[ij / n * n + k] * b[ij % n * n + k]).sum())
            .collect();
        let u: Vec<f64> = (0..n).map(|_| next()).collect();
        let rep: Vec<f64> = (0..n * n)
            .map(|ij| u[ij / n] * u[ij % n] + if ij / n == ij % n { 1.0 } else { 0.0 })
            .collect();
        for a in [bbt, rep] {
            let (l, v) = symmetric_eigen(&mut a.clone(), n).unwrap();
            for i in 0..n {
                for j in 0..n {
                    let rec: f64 = (0..n).map(|k| v[i * n + k] * l[k] * v[j * n + k]).sum();
                    assert!((rec - a[i * n + j]).abs() < 1e-14, "A[{i}][{j}]");
                    let vtv: f64 = (0..n).map(|k| v[k * n + i] * v[k * n + j]).sum();
                    let id = if i == j { 1.0 } else { 0.0 };
                    assert!((vtv - id).abs() < 1e-14, "VᵀV[{i}][{j}]");
                }
            }
        }
    }

    /// `BBᵀ` for a random `n × k` matrix `B` (entries in ±1/2).
    fn gram(n: usize, k: usize, mut seed: u64) -> Vec<f64> {
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let b: Vec<f64> = (0..n * k).map(|_| next()).collect();
        (0..n * n)
            .map(|ij| (0..k).map(|t| b[ij / n * k + t] * b[ij % n * k + t]).sum())
            .collect()
    }

    /// The Gram matrix of a 64 × 576 layer converges in a few sweeps (8 here), far below
    /// the limit;
    /// one sweep fewer than it needs is an error naming the sweeps and the residual, not a
    /// silently inaccurate decomposition.
    #[test]
    fn too_few_sweeps_is_an_error() {
        let n = 64;
        let a = gram(n, 576, 11);
        let needed = (0..=MAX_SWEEPS)
            .find(|&s| eigen_in_sweeps(&mut a.clone(), n, s).is_ok())
            .expect("converges within MAX_SWEEPS");
        assert!(
            (2..=MAX_SWEEPS / 4).contains(&needed),
            "{needed} sweeps for a 64 × 64 Gram matrix"
        );
        let e = eigen_in_sweeps(&mut a.clone(), n, needed - 1).unwrap_err();
        let EigenError::NoConvergence {
            n: 64,
            sweeps,
            residual,
        } = e
        else {
            panic!("{e:?}");
        };
        assert_eq!(sweeps, needed - 1);
        assert!(residual > f64::EPSILON && residual < 1.0, "{residual:e}");
        let m = e.to_string();
        assert!(
            !m.contains('\n') && m.contains(&format!("in {sweeps} sweeps")),
            "{m}"
        );
        // No sweep at all for a matrix that is already diagonal; a non-finite one is refused.
        let mut diag: Vec<f64> = (0..9)
            .map(|i| if i % 4 == 0 { i as f64 } else { 0.0 })
            .collect();
        assert_eq!(eigen_in_sweeps(&mut diag, 3, 0).unwrap().0, [0.0, 4.0, 8.0]);
        let mut nan = gram(3, 5, 1);
        nan[4] = f64::NAN;
        assert_eq!(
            symmetric_eigen(&mut nan, 3).unwrap_err(),
            EigenError::NonFinite { n: 3 }
        );
    }
}
