//! The projections' defining properties on small random matrices, and the exact results on
//! matrices built from known singular vectors.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n)
        .map(|_| (scale * rng.random_range(-1.0..1.0)) as f32)
        .collect()
}

fn dist(a: &[f32], b: &[f32]) -> f64 {
    norm(a.iter().zip(b).map(|(&x, &y)| x as f64 - y as f64))
}

fn bits(w: &[f32]) -> Vec<u32> {
    w.iter().map(|x| x.to_bits()).collect()
}

/// A projection: idempotent, a no-op inside the set, non-expansive on random pairs.
fn check_projection(project: &dyn Fn(&mut [f32]) -> usize, rows: usize, cols: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for trial in 0..50 {
        let scale = [0.1, 0.5, 1.0, 3.0][trial % 4];
        let a = random(&mut rng, rows * cols, scale);
        let b = random(&mut rng, rows * cols, scale * 1.5);
        let (mut pa, mut pb) = (a.clone(), b.clone());
        project(&mut pa);
        project(&mut pb);
        // Non-expansive (f32 rounding aside).
        assert!(
            dist(&pa, &pb) <= dist(&a, &b) * (1.0 + 1e-6) + 1e-6,
            "trial {trial}: {} > {}",
            dist(&pa, &pb),
            dist(&a, &b)
        );
        // Idempotent, and a no-op on a point of the set: bit for bit.
        let once = bits(&pa);
        assert_eq!(project(&mut pa), 0, "trial {trial}: projected twice");
        assert_eq!(bits(&pa), once);
    }
}

#[test]
fn max_norm_is_a_projection() {
    check_projection(&|w| max_norm_rows(w, 6, 1.0), 4, 6);
}

#[test]
fn max_norm_scales_only_long_rows_onto_the_sphere() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let w = random(&mut rng, 8 * 5, 1.0);
    let mut p = w.clone();
    let c = 1.3;
    let scaled = max_norm_rows(&mut p, 5, c);
    let mut expected = 0;
    for (r, q) in w.chunks(5).zip(p.chunks(5)) {
        let n = norm(r.iter().map(|&x| x as f64));
        if n > c {
            expected += 1;
            let s = c / n;
            for (x, y) in r.iter().zip(q) {
                assert!((*x as f64 * s - *y as f64).abs() < 1e-7);
            }
        } else {
            assert_eq!(bits(r), bits(q));
        }
    }
    assert!(expected > 0 && expected < 8, "a mix of rows inside and out");
    assert_eq!(scaled, expected);
}

#[test]
fn spectral_clip_is_a_projection() {
    check_projection(&|w| spectral_clip(w, 4, 6, 1.0).unwrap(), 4, 6);
    check_projection(&|w| spectral_clip(w, 6, 3, 0.7).unwrap(), 6, 3);
}

/// The SVD of `w` (`rows × cols`) by one-sided Jacobi (Hestenes), a different algorithm
/// from the Gram-matrix eigendecomposition the projection uses: `(σ_i, u_i, v_i)` with
/// `W = Σ σ_i u_i v_iᵀ`.
fn svd_here(w: &[f32], rows: usize, cols: usize) -> Vec<(f64, Vec<f64>, Vec<f64>)> {
    // Orthogonalise the columns of A (W, or Wᵀ when W is wide), rotating V alongside.
    let wide = cols > rows;
    let (m, n) = if wide { (cols, rows) } else { (rows, cols) };
    let at = |i: usize, j: usize| {
        if wide {
            w[j * cols + i] as f64
        } else {
            w[i * cols + j] as f64
        }
    };
    let mut a: Vec<Vec<f64>> = (0..n).map(|j| (0..m).map(|i| at(i, j)).collect()).collect();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|j| (0..n).map(|i| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    for _ in 0..100 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let (al, be, ga) = (dot(&a[p], &a[p]), dot(&a[q], &a[q]), dot(&a[p], &a[q]));
                if ga.abs() <= 1e-15 * (al * be).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (be - al) / (2.0 * ga);
                let t = zeta.signum() / (zeta.abs() + zeta.hypot(1.0));
                let c = 1.0 / t.hypot(1.0);
                let s = c * t;
                for cols in [&mut a, &mut v] {
                    for k in 0..cols[p].len() {
                        let (x, y) = (cols[p][k], cols[q][k]);
                        (cols[p][k], cols[q][k]) = (c * x - s * y, s * x + c * y);
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    a.into_iter()
        .zip(v)
        .map(|(col, vj)| {
            let sigma = dot(&col, &col).sqrt();
            let u: Vec<f64> = col
                .iter()
                .map(|x| x / sigma.max(f64::MIN_POSITIVE))
                .collect();
            if wide { (sigma, vj, u) } else { (sigma, u, vj) }
        })
        .collect()
}

#[test]
fn spectral_clip_matches_an_svd_computed_here() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // Random tall and wide matrices, and one whose two largest singular values coincide
    // after a first projection (the case nalgebra's SVD got wrong).
    let mut cases: Vec<(Vec<f32>, usize, usize, f64)> = vec![
        (random(&mut rng, 5 * 7, 1.0), 5, 7, 0.8),
        (random(&mut rng, 7 * 3, 1.0), 7, 3, 0.6),
        (random(&mut rng, 8 * 8, 2.0), 8, 8, 1.0),
    ];
    let mut twice = random(&mut rng, 6 * 3, 1.0);
    spectral_clip(&mut twice, 6, 3, 0.5).unwrap();
    cases.push((twice, 6, 3, 0.45));
    for (w, rows, cols, c) in cases {
        let mut want = vec![0.0f64; rows * cols];
        for (sigma, u, v) in svd_here(&w, rows, cols) {
            for i in 0..rows {
                for j in 0..cols {
                    want[i * cols + j] += sigma.min(c) * u[i] * v[j];
                }
            }
        }
        let mut p = w.clone();
        assert!(spectral_clip(&mut p, rows, cols, c).unwrap() > 0);
        let err = p
            .iter()
            .zip(&want)
            .map(|(&x, y)| (x as f64 - y).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-6, "{rows}×{cols}: max error {err:e}");
    }
}

/// `R(a)·diag(s)·R(b)ᵀ` for 2×2 rotations: a matrix with known singular vectors.
fn rotated(a: f64, s: [f64; 2], b: f64) -> Vec<f32> {
    let r = |t: f64| [[t.cos(), -t.sin()], [t.sin(), t.cos()]];
    let (ra, rb) = (r(a), r(b));
    let mut w = vec![0.0f32; 4];
    for i in 0..2 {
        for j in 0..2 {
            w[i * 2 + j] = (0..2).map(|k| ra[i][k] * s[k] * rb[j][k]).sum::<f64>() as f32;
        }
    }
    w
}

#[test]
fn spectral_clip_keeps_the_singular_vectors_and_clips_the_values() {
    let mut w = rotated(0.4, [3.0, 0.5], -1.1);
    assert_eq!(spectral_clip(&mut w, 2, 2, 1.0).unwrap(), 1);
    let want = rotated(0.4, [1.0, 0.5], -1.1);
    assert!(dist(&w, &want) < 1e-6, "{w:?} vs {want:?}");
    // Both above: the projection is c times the orthogonal factor.
    let mut w = rotated(2.0, [4.0, 2.0], 0.3);
    assert_eq!(spectral_clip(&mut w, 2, 2, 1.5).unwrap(), 2);
    assert!(dist(&w, &rotated(2.0, [1.5, 1.5], 0.3)) < 1e-6);
}

#[test]
fn spectral_clip_is_the_nearest_point_of_the_ball() {
    // For a convex set, P(W) is the projection iff ⟨W − P, V − P⟩ ≤ 0 for every V in the
    // set; and its singular values are min(σ_i, c).
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (rows, cols, c) = (5, 7, 0.8);
    for _ in 0..20 {
        let w = random(&mut rng, rows * cols, 1.0);
        let mut p = w.clone();
        spectral_clip(&mut p, rows, cols, c).unwrap();
        let s_w = singular_values(&w, rows, cols).unwrap();
        let s_p = singular_values(&p, rows, cols).unwrap();
        for (a, b) in s_w.iter().zip(&s_p) {
            assert!((a.min(c) - b).abs() < 1e-6, "{s_w:?} → {s_p:?}");
        }
        for _ in 0..20 {
            let mut v = random(&mut rng, rows * cols, 1.0);
            spectral_clip(&mut v, rows, cols, c).unwrap();
            let inner: f64 = w
                .iter()
                .zip(&p)
                .zip(&v)
                .map(|((&w, &p), &v)| (w as f64 - p as f64) * (v as f64 - p as f64))
                .sum();
            assert!(inner <= 1e-6, "⟨W − P, V − P⟩ = {inner}");
        }
    }
}

#[test]
fn power_iteration_finds_the_largest_singular_value() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (rows, cols) = (6, 9);
    let w = random(&mut rng, rows * cols, 1.0);
    let top = singular_values(&w, rows, cols).unwrap()[0];
    let mut u = vec![1.0 / (rows as f64).sqrt(); rows];
    // One step per call from the kept vector, as during training: the estimate rises to σ_max.
    let mut last = 0.0;
    for _ in 0..200 {
        let s = power_iteration(&w, rows, cols, &mut u, 1);
        assert!(s <= top * (1.0 + 1e-9) && s >= last * (1.0 - 1e-12));
        last = s;
    }
    assert!((last - top).abs() < 1e-9 * top, "{last} vs {top}");
    assert_eq!(power_iteration(&[0.0; 6], 2, 3, &mut [1.0, 0.0], 3), 0.0);
}

#[test]
fn spectral_normalisation_reaches_the_bound_and_leaves_the_inside() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (rows, cols, c) = (4, 6, 0.5);
    let mut w = random(&mut rng, rows * cols, 1.0);
    let mut u = vec![0.5; rows];
    let before = singular_values(&w, rows, cols).unwrap()[0];
    assert!(before > c);
    let s = spectral_normalise(&mut w, rows, cols, &mut u, c, 100);
    assert!((s - before).abs() < 1e-9 * before);
    assert!((singular_values(&w, rows, cols).unwrap()[0] - c).abs() < 1e-6);
    // Inside (σ̂ ≤ σ_max ≤ c): no change.
    let once = bits(&w);
    spectral_normalise(&mut w, rows, cols, &mut u, c, 1);
    assert_eq!(bits(&w), once);
}

#[test]
fn spectral_normalisation_is_not_a_projection() {
    // diag(1, 1) is on the ball of radius 1; diag(1.1, 0.9) is scaled to diag(1, 0.818…):
    // the two move apart (0.141 → 0.182), which no projection onto a convex set does.
    let mut a = [1.0f32, 0.0, 0.0, 1.0];
    let mut b = [1.1f32, 0.0, 0.0, 0.9];
    let d0 = dist(&a, &b);
    spectral_normalise(&mut a, 2, 2, &mut [1.0, 0.0], 1.0, 50);
    spectral_normalise(&mut b, 2, 2, &mut [1.0, 0.0], 1.0, 50);
    assert!(dist(&a, &b) > 1.2 * d0);
    // The projection moves b to diag(1, 0.9): distance 0.1, closer.
    let mut b = [1.1f32, 0.0, 0.0, 0.9];
    spectral_clip(&mut b, 2, 2, 1.0).unwrap();
    assert!(dist(&a, &b) <= d0);
}

#[test]
fn orthogonality_ignores_row_scale_and_vanishes_on_orthogonal_rows() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let (rows, cols) = (3, 5);
    let w = random(&mut rng, rows * cols, 1.0);
    let mut scaled = w.clone();
    for (i, row) in scaled.chunks_mut(cols).enumerate() {
        row.iter_mut().for_each(|x| *x *= (i + 2) as f32);
    }
    let o = orthogonality(&w, rows, cols);
    assert!(o > 0.0);
    assert!((orthogonality(&scaled, rows, cols) - o).abs() < 1e-6);
    // The right singular vectors are orthonormal.
    let q: Vec<f32> = svd_here(&w, rows, cols)
        .iter()
        .flat_map(|(_, _, v)| v.iter().map(|&x| x as f32))
        .collect();
    assert!(orthogonality(&q, rows, cols) < 1e-6);
}

/// `Σ min(σ_i, c) u_i v_iᵀ` from [`svd_here`]'s factors: the projection, computed
/// independently of the Gram-matrix route.
fn clipped_here(w: &[f32], rows: usize, cols: usize, c: f64) -> Vec<f64> {
    let mut want = vec![0.0f64; rows * cols];
    for (sigma, u, v) in svd_here(w, rows, cols) {
        for i in 0..rows {
            for j in 0..cols {
                want[i * cols + j] += sigma.min(c) * u[i] * v[j];
            }
        }
    }
    want
}

/// [`svd_here`]'s singular values, largest first.
fn sorted_singular_values(w: &[f32], rows: usize, cols: usize) -> Vec<f64> {
    let mut s: Vec<f64> = svd_here(w, rows, cols).iter().map(|x| x.0).collect();
    s.sort_by(|a, b| b.total_cmp(a));
    s
}

/// Half the spacing of the `f32` values around `y`: the most that rounding `y` moves it.
fn half_ulp(y: f64) -> f64 {
    let a = (y as f32).abs();
    (f32::from_bits(a.to_bits() + 1) - a) as f64 / 2.0
}

/// At the sizes of the conv4 layers: 64 filters × 64·9 inputs (blocks 1–3 at 64 channels),
/// 32 × 288 (32 channels) and its transpose (the `WᵀW` side), clipped at the median
/// singular value, and a 64 × 576 matrix whose top 33 singular values already coincide
/// (clipped once, then at the 48th: the repeated singular value that nalgebra got wrong at
/// 6 × 3, here 33 times over).
///
/// Measured (seeds as below): the `f64` projection differs from the one-sided Jacobi SVD
/// by at most 7.7e-15 (64 × 576, both matrices), 5.4e-15 (32 × 288) and 5.6e-15
/// (288 × 32) for entries of magnitude about 1; the bound is 2e-14 of the largest entry. The `f32` result is then
/// the reference rounded: within half an ulp of it plus that bound (the largest entry of
/// |P − ref| − ulp/2 was −6.5e-15). A second projection clips nothing and changes no bit.
#[test]
fn spectral_clip_matches_an_svd_computed_here_at_layer_sizes() {
    let mut cases = Vec::new();
    for (rows, cols, seed) in [(64, 576, 10), (32, 288, 11), (288, 32, 12)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        cases.push((random(&mut rng, rows * cols, 1.0), rows, cols, 0.5));
    }
    let mut twice = cases[0].0.clone();
    let c0 = sorted_singular_values(&twice, 64, 576)[32];
    spectral_clip(&mut twice, 64, 576, c0).unwrap();
    cases.push((twice, 64, 576, 0.75));
    for (w, rows, cols, quantile) in cases {
        let s = sorted_singular_values(&w, rows, cols);
        let c = s[(quantile * s.len() as f64) as usize];
        let want = clipped_here(&w, rows, cols, c);
        let scale = want.iter().fold(0.0f64, |a, b| a.max(b.abs()));
        let tol = 2e-14 * scale;
        let (p64, k64) = clipped_f64(&w, rows, cols, c).unwrap();
        let expected = s.iter().filter(|&&x| x > c * (1.0 + SLACK)).count();
        assert_eq!(k64, expected, "{rows}×{cols}: singular values clipped");
        let err64 = p64
            .unwrap()
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err64 <= tol, "{rows}×{cols}: f64 error {err64:e} > {tol:e}");
        let mut p = w.clone();
        assert_eq!(spectral_clip(&mut p, rows, cols, c).unwrap(), expected);
        for (i, (&x, &y)) in p.iter().zip(&want).enumerate() {
            let e = (x as f64 - y).abs();
            assert!(
                e <= half_ulp(y) + tol,
                "{rows}×{cols}: entry {i} is {x} for {y} ({e:e} off)"
            );
        }
        let once = bits(&p);
        assert_eq!(spectral_clip(&mut p, rows, cols, c).unwrap(), 0);
        assert_eq!(bits(&p), once, "{rows}×{cols}: not idempotent");
    }
}

/// A failed decomposition is an error and leaves the weights as they were.
#[test]
fn a_non_finite_layer_is_an_error_not_a_projection() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let mut w = random(&mut rng, 4 * 6, 2.0);
    w[7] = f32::INFINITY;
    let before = bits(&w);
    let e = spectral_clip(&mut w, 4, 6, 1.0).unwrap_err();
    assert_eq!(e, EigenError::NonFinite { n: 4 });
    assert_eq!(bits(&w), before);
    w[7] = f32::NAN;
    assert!(singular_values(&w, 4, 6).is_err());
}
