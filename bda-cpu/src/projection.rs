//! `Proj_X` at dataset scale: the upper-level step of the journal's Algorithm 1,
//! `x ← Proj_X(x − λ∇φ_K(x))`, for weight matrices (row-major, one row per output unit),
//! and the orthogonality measure of the journal's Fig. 8.
//!
//! - [`max_norm_rows`]: each row into the ball of radius `c` (max-norm regularisation). The
//!   set is a product of balls, so scaling each row is the Euclidean projection.
//! - [`spectral_clip`]: the Euclidean projection onto `{W : σ_max(W) ≤ c}`. It clips every
//!   singular value above `c` to `c` and keeps the singular vectors. Scaling the whole
//!   matrix would not be the projection (see [`spectral_normalise`]).
//! - [`spectral_normalise`]: spectral normalisation (Miyato et al. 2018, the journal's "SN").
//!   It scales `W` by `c/σ̂` when the power-iteration estimate `σ̂` exceeds `c`, with the
//!   iteration vector kept between calls. It is cheaper than the projection but is not a
//!   projection: it can increase distances (a test shows a pair).
//!
//! Weights are `f32` (a backbone's parameters); the algebra is done in `f64`. A matrix whose
//! norm exceeds `c` by at most the relative slack [`SLACK`] counts as inside. A projected
//! matrix rounded back to `f32` can land a few ulps above `c`, and treating it as inside is
//! what makes every projection here idempotent on `f32` data.

use crate::linalg::gemm;

mod jacobi;

pub use jacobi::{EigenError, MAX_SWEEPS, symmetric_eigen};

/// Relative slack under which a norm counts as `≤ c` (a few `f32` ulps).
pub const SLACK: f64 = 1e-6;

fn norm(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|x| x * x).sum::<f64>().sqrt()
}

fn outside(value: f64, c: f64) -> bool {
    value > c * (1.0 + SLACK)
}

/// Scale each row of `w` (`cols` entries per row) whose Euclidean norm exceeds `c` down to
/// norm `c`; rows inside are left bit for bit. Returns the number of rows scaled.
///
/// ```
/// let mut w = [3.0f32, 4.0, 0.3, 0.4];
/// assert_eq!(bda_cpu::projection::max_norm_rows(&mut w, 2, 1.0), 1);
/// assert_eq!(w, [0.6, 0.8, 0.3, 0.4]);
/// ```
pub fn max_norm_rows(w: &mut [f32], cols: usize, c: f64) -> usize {
    let mut scaled = 0;
    for row in w.chunks_exact_mut(cols) {
        let n = norm(row.iter().map(|&x| x as f64));
        if outside(n, c) {
            let s = c / n;
            row.iter_mut().for_each(|x| *x = (*x as f64 * s) as f32);
            scaled += 1;
        }
    }
    scaled
}

/// The Gram matrix of `w` (`rows × cols`, row-major) on its smaller side: `WWᵀ` when
/// `rows ≤ cols` (`left`), else `WᵀW`; its eigenvalues are the squared singular values.
struct Gram {
    w: Vec<f64>,
    g: Vec<f64>,
    n: usize,
    left: bool,
}

impl Gram {
    fn of(w: &[f32], rows: usize, cols: usize) -> Gram {
        let w: Vec<f64> = w.iter().map(|&x| x as f64).collect();
        let left = rows <= cols;
        let n = rows.min(cols);
        let mut g = vec![0.0; n * n];
        // WWᵀ: rows·cols strides (cols, 1) times its transpose; WᵀW: the transpose first.
        let (rs, cs, k) = if left {
            (cols, 1, cols)
        } else {
            (1, cols, rows)
        };
        gemm(n, k, n, 1.0, &w, rs, cs, &w, cs, rs, 0.0, &mut g, n, 1);
        Gram { w, g, n, left }
    }
}

/// The singular values of `w` (`rows × cols`, row-major), largest first (`min(rows, cols)`
/// of them); an error when the eigendecomposition of the Gram matrix fails.
pub fn singular_values(w: &[f32], rows: usize, cols: usize) -> Result<Vec<f64>, EigenError> {
    let Gram { mut g, n, .. } = Gram::of(w, rows, cols);
    let (l, _) = symmetric_eigen(&mut g, n)?;
    let mut s: Vec<f64> = l.iter().map(|x| x.max(0.0).sqrt()).collect();
    s.sort_by(|a, b| b.total_cmp(a));
    Ok(s)
}

/// The Euclidean (Frobenius) projection of `w` (`rows × cols`, row-major) onto the
/// spectral-norm ball of radius `c`: `W = Σ σ_i u_i v_iᵀ ↦ Σ min(σ_i, c) u_i v_iᵀ`. Left bit
/// for bit when `σ_max ≤ c` (with [`SLACK`]). Returns the number of singular values clipped,
/// or, leaving `w` as it was, the error of an eigendecomposition that failed (a non-finite
/// weight, or no convergence in [`MAX_SWEEPS`] sweeps).
///
/// With `u_i` the eigenvectors of `WWᵀ` (eigenvalues `σ_i²`), the projection is
/// `(I − Σ_{σ_i > c} (1 − c/σ_i) u_i u_iᵀ)·W`; on the other side (more rows than columns)
/// `W·(I − Σ (1 − c/σ_i) v_i v_iᵀ)`. The Gram matrix is `min(rows, cols)` square (64 for a
/// conv4 layer), so this costs two small GEMMs and a Jacobi decomposition.
pub fn spectral_clip(w: &mut [f32], rows: usize, cols: usize, c: f64) -> Result<usize, EigenError> {
    let (p, clipped) = clipped_f64(w, rows, cols, c)?;
    if let Some(p) = p {
        for (x, &y) in w.iter_mut().zip(&p) {
            *x = y as f32;
        }
    }
    Ok(clipped)
}

/// [`spectral_clip`] before rounding to `f32`: the projected matrix in `f64` (`None` when
/// nothing is clipped) and the number of singular values clipped. Tests compare it with an
/// independent SVD to separate the algorithm's error from the final rounding.
fn clipped_f64(
    w: &[f32],
    rows: usize,
    cols: usize,
    c: f64,
) -> Result<(Option<Vec<f64>>, usize), EigenError> {
    let Gram {
        w: w64,
        mut g,
        n,
        left,
    } = Gram::of(w, rows, cols);
    let (l, v) = symmetric_eigen(&mut g, n)?;
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        m[i * n + i] = 1.0;
    }
    let mut clipped = 0;
    for (i, &li) in l.iter().enumerate() {
        let s = li.max(0.0).sqrt();
        if outside(s, c) {
            let f = 1.0 - c / s;
            for a in 0..n {
                for b in 0..n {
                    m[a * n + b] -= f * v[a * n + i] * v[b * n + i];
                }
            }
            clipped += 1;
        }
    }
    if clipped == 0 {
        return Ok((None, 0));
    }
    let mut p = vec![0.0; rows * cols];
    if left {
        gemm(
            rows, rows, cols, 1.0, &m, n, 1, &w64, cols, 1, 0.0, &mut p, cols, 1,
        );
    } else {
        gemm(
            rows, cols, cols, 1.0, &w64, cols, 1, &m, n, 1, 0.0, &mut p, cols, 1,
        );
    }
    Ok((Some(p), clipped))
}

/// `iters` steps of the power iteration on `WᵀW` from the left vector `u` (length `rows`,
/// updated in place to the new estimate of the top left singular vector): `v ← Wᵀu/‖Wᵀu‖`,
/// `u ← Wv/‖Wv‖`. Returns `σ̂ = ‖Wv‖`, a lower bound on `σ_max` that improves with every step
/// (0 when `Wᵀu` vanishes, e.g. for a zero matrix; `u` is then left as it was).
pub fn power_iteration(w: &[f32], rows: usize, cols: usize, u: &mut [f64], iters: usize) -> f64 {
    debug_assert_eq!(u.len(), rows);
    let mut v = vec![0.0f64; cols];
    let mut wv = vec![0.0f64; rows];
    let mut sigma = 0.0;
    for _ in 0..iters {
        v.iter_mut().for_each(|x| *x = 0.0);
        for (row, &ui) in w.chunks_exact(cols).zip(u.iter()) {
            for (vj, &wij) in v.iter_mut().zip(row) {
                *vj += wij as f64 * ui;
            }
        }
        let nv = norm(v.iter().copied());
        if nv == 0.0 || !nv.is_finite() {
            return 0.0;
        }
        v.iter_mut().for_each(|x| *x /= nv);
        for (out, row) in wv.iter_mut().zip(w.chunks_exact(cols)) {
            *out = row.iter().zip(&v).map(|(&a, &b)| a as f64 * b).sum();
        }
        sigma = norm(wv.iter().copied());
        if sigma == 0.0 {
            return 0.0;
        }
        for (ui, &x) in u.iter_mut().zip(&wv) {
            *ui = x / sigma;
        }
    }
    sigma
}

/// Spectral normalisation: `iters` power-iteration steps from `u` (kept by the caller
/// between calls), then `W ← W·c/σ̂` if `σ̂ > c` (with [`SLACK`]). Returns `σ̂`.
///
/// Not the Euclidean projection onto the spectral-norm ball ([`spectral_clip`] is): the
/// radial scaling onto a non-Euclidean ball can move two matrices apart.
pub fn spectral_normalise(
    w: &mut [f32],
    rows: usize,
    cols: usize,
    u: &mut [f64],
    c: f64,
    iters: usize,
) -> f64 {
    let sigma = power_iteration(w, rows, cols, u, iters);
    if outside(sigma, c) {
        let s = c / sigma;
        w.iter_mut().for_each(|x| *x = (*x as f64 * s) as f32);
    }
    sigma
}

/// The orthogonality of the rows of `w` (`rows × cols`): `‖ŴŴᵀ − I‖_F`, with `Ŵ` the rows
/// scaled to unit norm (a zero row stays zero). 0 exactly when the rows are orthogonal; it
/// cannot be 0 when `rows > cols`.
///
/// ```
/// let orthogonal = [1.0f32, 0.0, 0.0, 2.0];
/// assert_eq!(bda_cpu::projection::orthogonality(&orthogonal, 2, 2), 0.0);
/// let parallel = [1.0f32, 0.0, 3.0, 0.0];
/// // Off-diagonal entries 1 and 1: ‖·‖_F = √2.
/// assert!((bda_cpu::projection::orthogonality(&parallel, 2, 2) - 2f64.sqrt()).abs() < 1e-12);
/// ```
pub fn orthogonality(w: &[f32], rows: usize, cols: usize) -> f64 {
    let unit: Vec<Vec<f64>> = w
        .chunks_exact(cols)
        .map(|row| {
            let n = norm(row.iter().map(|&x| x as f64));
            let s = if n > 0.0 { 1.0 / n } else { 0.0 };
            row.iter().map(|&x| x as f64 * s).collect()
        })
        .collect();
    let mut sum = 0.0;
    for i in 0..rows {
        for j in i..rows {
            let g: f64 = unit[i].iter().zip(&unit[j]).map(|(a, b)| a * b).sum();
            let d = if i == j { g - 1.0 } else { g };
            sum += if i == j { d * d } else { 2.0 * d * d };
        }
    }
    sum.sqrt()
}

#[cfg(test)]
mod tests;
