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

/// Eigenvalues and orthonormal eigenvectors of the symmetric `n × n` matrix `a` (row-major;
/// overwritten). Returns `(λ, V)` with `V` row-major and column `i` of `V` the eigenvector
/// of `λ[i]`, in no particular order.
pub fn symmetric_eigen(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    debug_assert_eq!(a.len(), n * n);
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..64 {
        let off: f64 = (0..n)
            .flat_map(|p| (p + 1..n).map(move |q| (p, q)))
            .map(|(p, q)| 2.0 * a[p * n + q] * a[p * n + q])
            .sum();
        if off <= f64::EPSILON * f64::EPSILON * total || off == 0.0 {
            break;
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
    ((0..n).map(|i| a[i * n + i]).collect(), v)
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
            let (l, v) = symmetric_eigen(&mut a.clone(), n);
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
}
