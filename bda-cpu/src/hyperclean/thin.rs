//! The network's `c`-thin products over a chunk of `m` rows: the second layer (`H × c`,
//! `c = 10`) against the hidden rows (`m × hp`, `hp` a multiple of 16, padding zero).
//!
//! The hidden units run across the SIMD lanes and the classes sit in registers, so the
//! awkward width `c = 10` never meets the SIMD width, and no operand is packed: the weights
//! come transposed (`c × hp`, [`transpose_padded`], built once per pass), the hidden rows
//! as they lie. A general GEMM (`matrixmultiply`, 8 × 8 register tiles) pads `c = 10` to 16
//! columns and packs the `m × H` operand for each of the three products of a gradient pass
//! (six of a Hessian pass).
//!
//! Each product is a list of terms summed in list order (the Hessian pass has two), each
//! sum in a fixed order: results do not depend on threads.
//!
//! * [`row_dots`]: `out[i, k] += Σ_t Σ_h x_t[i, h]·w_t[k, h]` (`relu(A)·W₂`; `R_h·W₂ +
//!   relu(A)·V₂`);
//! * [`col_dots`]: `out[k, h] = Σ_t Σ_i g_t[i, k]·x_t[i, h]` (`∇W₂ᵀ`: `Gᵀ·relu(A)`;
//!   `Rᵀ·relu(A) + Gᵀ·R_h`);
//! * [`spread`]: `out[i, h] = 1[a[i, h] > 0]·Σ_t Σ_k g_t[i, k]·w_t[k, h]` and the column
//!   sums of `out` (`G_a` and `∇b₁`; `R G_a`).

// Lane loops index several arrays in lockstep (the shape of the SIMD code they become).
#![allow(clippy::needless_range_loop)]

use crate::hyperclean::simd::Kernels;

/// A term of a product: (`m × c` or `m × hp` rows, `c × hp` or `m × hp` rows) as the
/// product reads them.
pub type Term<'a> = (&'a [f32], &'a [f32]);

/// `out` (`c × hp`, zero beyond column `h`) = `wᵀ` for `w` (`h × c`, row-major).
pub fn transpose_padded(w: &[f32], h: usize, c: usize, hp: usize, out: &mut Vec<f32>) {
    assert_eq!(w.len(), h * c);
    out.clear();
    out.resize(c * hp, 0.0);
    for (j, row) in w.chunks_exact(c).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            out[k * hp + j] = v;
        }
    }
}

/// `out[i, k] += Σ_t Σ_h x_t[i, h]·w_t[k, h]` for the terms `(x_t, w_t)` (`x_t`: `m × hp`,
/// `w_t`: `c × hp`); `out` is `m × c`.
pub fn row_dots(kern: Kernels, terms: &[Term<'_>], hp: usize, c: usize, out: &mut [f32]) {
    let m = out.len() / c;
    check(terms, m * hp, c * hp);
    match kern {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Kernels::Avx2` is only chosen after detecting AVX2 and FMA (and with
        // c = 10); the kernel checks its slices.
        Kernels::Avx2 if c == 10 && m % 2 == 0 && hp % 8 == 0 => unsafe {
            avx2::row_dots(terms, hp, out)
        },
        _ => {
            for i in 0..m {
                for k in 0..c {
                    let mut s = 0.0f32;
                    for &(x, w) in terms {
                        let (x, w) = (&x[i * hp..][..hp], &w[k * hp..][..hp]);
                        s += x.iter().zip(w).map(|(x, w)| x * w).sum::<f32>();
                    }
                    out[i * c + k] += s;
                }
            }
        }
    }
}

/// `out[k, h] = Σ_t Σ_i g_t[i, k]·x_t[i, h]` for the terms `(g_t, x_t)` (`g_t`: `m × c`,
/// `x_t`: `m × hp`); `out` is `c × hp`.
pub fn col_dots(kern: Kernels, terms: &[Term<'_>], hp: usize, c: usize, out: &mut [f32]) {
    assert_eq!(out.len(), c * hp);
    let m = terms.first().map_or(0, |t| t.0.len() / c);
    check(terms, m * c, m * hp);
    match kern {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `row_dots`.
        Kernels::Avx2 if c == 10 && hp % 16 == 0 => unsafe { avx2::col_dots(terms, m, hp, out) },
        _ => {
            out.fill(0.0);
            for &(g, x) in terms {
                for i in 0..m {
                    for k in 0..c {
                        let gik = g[i * c + k];
                        let o = &mut out[k * hp..][..hp];
                        o.iter_mut()
                            .zip(&x[i * hp..][..hp])
                            .for_each(|(o, x)| *o += gik * x);
                    }
                }
            }
        }
    }
}

/// `out[i, h] = 1[a[i, h] > 0]·Σ_t Σ_k g_t[i, k]·w_t[k, h]` for the terms `(g_t, w_t)`
/// (`g_t`: `m × c`, `w_t`: `c × hp`; `a`, `out`: `m × hp`), and the column sums
/// `sums[h] = Σ_i out[i, h]` (`hp`).
pub fn spread(
    kern: Kernels,
    terms: &[Term<'_>],
    a: &[f32],
    hp: usize,
    c: usize,
    out: &mut [f32],
    sums: &mut [f32],
) {
    let m = out.len() / hp;
    assert_eq!(a.len(), m * hp);
    assert_eq!(sums.len(), hp);
    check(terms, m * c, c * hp);
    match kern {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `row_dots`.
        Kernels::Avx2 if c == 10 && m % 4 == 0 && hp % 16 == 0 => unsafe {
            avx2::spread(terms, a, hp, out, sums)
        },
        _ => {
            out.fill(0.0);
            for &(g, w) in terms {
                for i in 0..m {
                    let o = &mut out[i * hp..][..hp];
                    for k in 0..c {
                        let gik = g[i * c + k];
                        o.iter_mut()
                            .zip(&w[k * hp..][..hp])
                            .for_each(|(o, w)| *o += gik * w);
                    }
                }
            }
            out.iter_mut()
                .zip(a)
                .for_each(|(o, &a)| *o = if a > 0.0 { *o } else { 0.0 });
            sums.fill(0.0);
            for row in out.chunks_exact(hp) {
                sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
        }
    }
}

/// Every term's operands have the lengths the products read.
fn check(terms: &[Term<'_>], first: usize, second: usize) {
    for t in terms {
        assert_eq!(
            (t.0.len(), t.1.len()),
            (first, second),
            "thin operand sizes"
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Term;

    const C: usize = 10;
    /// Classes per register block (two blocks of 5 make `c = 10`).
    const CB: usize = 5;

    /// Lane `k` of the result: the sum of the 8 lanes of `v[k]`.
    #[target_feature(enable = "avx2,fma")]
    fn hsum8(v: [__m256; 8]) -> __m256 {
        let t0 = _mm256_hadd_ps(v[0], v[1]);
        let t1 = _mm256_hadd_ps(v[2], v[3]);
        let t2 = _mm256_hadd_ps(v[4], v[5]);
        let t3 = _mm256_hadd_ps(v[6], v[7]);
        let u0 = _mm256_hadd_ps(t0, t1);
        let u1 = _mm256_hadd_ps(t2, t3);
        let lo = _mm256_permute2f128_ps::<0x20>(u0, u1);
        let hi = _mm256_permute2f128_ps::<0x31>(u0, u1);
        _mm256_add_ps(lo, hi)
    }

    /// [`super::row_dots`] for `c = 10`: 2 rows × 5 classes of accumulators (10 FMAs for
    /// 2 loads of `x` and 5 of `w` per 8 hidden units).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_dots(terms: &[Term<'_>], hp: usize, out: &mut [f32]) {
        let m = out.len() / C;
        let nv = hp / 8;
        // Rows come in pairs and lanes in whole vectors.
        assert!(m % 2 == 0 && hp % 8 == 0);
        for t in terms {
            assert!(t.0.len() >= m * hp && t.1.len() >= C * hp);
        }
        let z = _mm256_setzero_ps();
        for i in (0..m).step_by(2) {
            let mut sums = [z; 4];
            for cb in 0..2 {
                let mut acc = [[z; CB]; 2];
                for &(x, w) in terms {
                    let (x0, x1) = (x[i * hp..].as_ptr(), x[(i + 1) * hp..].as_ptr());
                    let wp = w[cb * CB * hp..].as_ptr();
                    for v in 0..nv {
                        // SAFETY: rows i, i + 1 < m of `x` and rows 5cb + k < 10 of `w`
                        // (hp floats each, asserted), lanes 8v..8v + 8 ≤ hp.
                        unsafe {
                            let a0 = _mm256_loadu_ps(x0.add(8 * v));
                            let a1 = _mm256_loadu_ps(x1.add(8 * v));
                            for k in 0..CB {
                                let wk = _mm256_loadu_ps(wp.add(k * hp + 8 * v));
                                acc[0][k] = _mm256_fmadd_ps(a0, wk, acc[0][k]);
                                acc[1][k] = _mm256_fmadd_ps(a1, wk, acc[1][k]);
                            }
                        }
                    }
                }
                // Rows i, i + 1 of classes 5cb..5cb + 5 into lanes of `sums`.
                let r = hsum8([
                    acc[0][0], acc[0][1], acc[0][2], acc[0][3], acc[0][4], acc[1][0], acc[1][1],
                    acc[1][2],
                ]);
                let q = hsum8([acc[1][3], acc[1][4], z, z, z, z, z, z]);
                sums[2 * cb] = r;
                sums[2 * cb + 1] = q;
            }
            let mut s = [[0.0f32; 8]; 4];
            for (s, v) in s.iter_mut().zip(sums) {
                // SAFETY: 8 floats.
                unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) };
            }
            for cb in 0..2 {
                let (r, q) = (s[2 * cb], s[2 * cb + 1]);
                let row1 = [r[5], r[6], r[7], q[0], q[1]];
                for k in 0..CB {
                    out[i * C + cb * CB + k] += r[k];
                    out[(i + 1) * C + cb * CB + k] += row1[k];
                }
            }
        }
    }

    /// [`super::col_dots`] for `c = 10`: 16 hidden units × 5 classes of accumulators (10
    /// FMAs for 2 loads of `x` and 5 broadcasts of `g` per row).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn col_dots(terms: &[Term<'_>], m: usize, hp: usize, out: &mut [f32]) {
        for t in terms {
            assert!(t.0.len() >= m * C && t.1.len() >= m * hp);
        }
        assert!(out.len() >= C * hp && hp % 16 == 0);
        let z = _mm256_setzero_ps();
        for v in (0..hp).step_by(16) {
            for cb in 0..2 {
                let mut acc = [[z; CB]; 2];
                for &(g, x) in terms {
                    let (gp, xp) = (g[cb * CB..].as_ptr(), x[v..].as_ptr());
                    for i in 0..m {
                        // SAFETY: row i < m of `x` (columns v..v + 16 ≤ hp) and of `g`
                        // (classes 5cb..5cb + 5 ≤ 10), asserted.
                        unsafe {
                            let x0 = _mm256_loadu_ps(xp.add(i * hp));
                            let x1 = _mm256_loadu_ps(xp.add(i * hp + 8));
                            for k in 0..CB {
                                let s = _mm256_broadcast_ss(&*gp.add(i * C + k));
                                acc[0][k] = _mm256_fmadd_ps(s, x0, acc[0][k]);
                                acc[1][k] = _mm256_fmadd_ps(s, x1, acc[1][k]);
                            }
                        }
                    }
                }
                for k in 0..CB {
                    let o = &mut out[(cb * CB + k) * hp + v..][..16];
                    // SAFETY: `o` holds 16 floats.
                    unsafe {
                        _mm256_storeu_ps(o.as_mut_ptr(), acc[0][k]);
                        _mm256_storeu_ps(o.as_mut_ptr().add(8), acc[1][k]);
                    }
                }
            }
        }
    }

    /// [`super::spread`] for `c = 10`: 4 rows × 16 hidden units of accumulators (8 FMAs for
    /// 4 broadcasts of `g` and 2 loads of `w` per class); the column sums per block of 4
    /// rows, added in row order.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn spread(
        terms: &[Term<'_>],
        a: &[f32],
        hp: usize,
        out: &mut [f32],
        sums: &mut [f32],
    ) {
        let m = out.len() / hp;
        for t in terms {
            assert!(t.0.len() >= m * C && t.1.len() >= C * hp);
        }
        assert!(a.len() >= m * hp && m % 4 == 0 && hp % 16 == 0 && sums.len() >= hp);
        sums.fill(0.0);
        let z = _mm256_setzero_ps();
        for i in (0..m).step_by(4) {
            for v in (0..hp).step_by(16) {
                let mut acc = [[z; 2]; 4];
                for &(g, w) in terms {
                    let (gp, wp) = (g[i * C..].as_ptr(), w[v..].as_ptr());
                    for k in 0..C {
                        // SAFETY: rows i..i + 4 ≤ m of `g`, row k < 10 of `w` (columns
                        // v..v + 16 ≤ hp), asserted.
                        unsafe {
                            let w0 = _mm256_loadu_ps(wp.add(k * hp));
                            let w1 = _mm256_loadu_ps(wp.add(k * hp + 8));
                            for (r, acc) in acc.iter_mut().enumerate() {
                                let s = _mm256_broadcast_ss(&*gp.add(r * C + k));
                                acc[0] = _mm256_fmadd_ps(s, w0, acc[0]);
                                acc[1] = _mm256_fmadd_ps(s, w1, acc[1]);
                            }
                        }
                    }
                }
                let mut col = [z; 2];
                for (r, acc) in acc.iter().enumerate() {
                    let at = (i + r) * hp + v;
                    for (h, &sum) in acc.iter().enumerate() {
                        // SAFETY: row i + r < m, columns v + 8h..v + 8h + 8 ≤ hp, of `a`
                        // and `out` (asserted).
                        unsafe {
                            let act = _mm256_loadu_ps(a.as_ptr().add(at + 8 * h));
                            let on = _mm256_cmp_ps::<_CMP_GT_OQ>(act, z);
                            let o = _mm256_and_ps(sum, on);
                            _mm256_storeu_ps(out.as_mut_ptr().add(at + 8 * h), o);
                            col[h] = if r == 0 { o } else { _mm256_add_ps(col[h], o) };
                        }
                    }
                }
                for (h, &col) in col.iter().enumerate() {
                    let s = &mut sums[v + 8 * h..][..8];
                    // SAFETY: `s` holds 8 floats.
                    unsafe {
                        let t = _mm256_add_ps(_mm256_loadu_ps(s.as_ptr()), col);
                        _mm256_storeu_ps(s.as_mut_ptr(), t);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, rng: &mut impl Rng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// Each product, both kernels, one and two terms, against the sums in `f64`.
    #[test]
    fn thin_products_match_the_dense_sums() {
        let (m, h, hp, c) = (24, 30, 32, 10);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Hidden rows zero beyond h, as the passes keep them.
        let hidden = |rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
            let mut x = random(m * hp, rng);
            x.chunks_exact_mut(hp).for_each(|r| r[h..].fill(0.0));
            x
        };
        let (x1, x2, a) = (hidden(&mut rng), hidden(&mut rng), hidden(&mut rng));
        let (g1, g2) = (random(m * c, &mut rng), random(m * c, &mut rng));
        let mut w1 = Vec::new();
        let mut w2 = Vec::new();
        transpose_padded(&random(h * c, &mut rng), h, c, hp, &mut w1);
        transpose_padded(&random(h * c, &mut rng), h, c, hp, &mut w2);
        let close = |got: f32, want: f64, what: &str| {
            assert!(
                (f64::from(got) - want).abs() < 1e-4,
                "{what}: {got} vs {want}"
            );
        };
        for kern in [Kernels::Avx2, Kernels::Portable] {
            let kern = if kern == Kernels::Avx2 {
                Kernels::detect(c)
            } else {
                kern
            };
            for n in 1..=2 {
                let xs = [&x1, &x2][..n].to_vec();
                let gs = [&g1, &g2][..n].to_vec();
                let ws = [&w1, &w2][..n].to_vec();
                // row_dots accumulates onto `out`.
                let mut out = vec![0.5f32; m * c];
                let terms: Vec<Term<'_>> =
                    xs.iter().zip(&ws).map(|(x, w)| (&x[..], &w[..])).collect();
                row_dots(kern, &terms, hp, c, &mut out);
                for i in 0..m {
                    for k in 0..c {
                        let want: f64 = 0.5
                            + (0..n)
                                .map(|t| {
                                    (0..hp)
                                        .map(|j| {
                                            f64::from(xs[t][i * hp + j])
                                                * f64::from(ws[t][k * hp + j])
                                        })
                                        .sum::<f64>()
                                })
                                .sum::<f64>();
                        close(
                            out[i * c + k],
                            want,
                            &format!("{kern:?} row_dots {n} [{i}, {k}]"),
                        );
                    }
                }
                let mut out = vec![f32::NAN; c * hp];
                let terms: Vec<Term<'_>> =
                    gs.iter().zip(&xs).map(|(g, x)| (&g[..], &x[..])).collect();
                col_dots(kern, &terms, hp, c, &mut out);
                for k in 0..c {
                    for j in 0..hp {
                        let want: f64 = (0..n)
                            .map(|t| {
                                (0..m)
                                    .map(|i| {
                                        f64::from(gs[t][i * c + k]) * f64::from(xs[t][i * hp + j])
                                    })
                                    .sum::<f64>()
                            })
                            .sum();
                        close(
                            out[k * hp + j],
                            want,
                            &format!("{kern:?} col_dots {n} [{k}, {j}]"),
                        );
                    }
                }
                let mut out = vec![f32::NAN; m * hp];
                let mut sums = vec![f32::NAN; hp];
                let terms: Vec<Term<'_>> =
                    gs.iter().zip(&ws).map(|(g, w)| (&g[..], &w[..])).collect();
                spread(kern, &terms, &a, hp, c, &mut out, &mut sums);
                let mut col = vec![0.0f64; hp];
                for i in 0..m {
                    for j in 0..hp {
                        let s: f64 = (0..n)
                            .map(|t| {
                                (0..c)
                                    .map(|k| {
                                        f64::from(gs[t][i * c + k]) * f64::from(ws[t][k * hp + j])
                                    })
                                    .sum::<f64>()
                            })
                            .sum();
                        let want = if a[i * hp + j] > 0.0 { s } else { 0.0 };
                        col[j] += want;
                        close(
                            out[i * hp + j],
                            want,
                            &format!("{kern:?} spread {n} [{i}, {j}]"),
                        );
                    }
                }
                for j in 0..h {
                    close(sums[j], col[j], &format!("{kern:?} spread sums {n} [{j}]"));
                }
            }
        }
    }
}
