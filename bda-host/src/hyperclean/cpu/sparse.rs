//! The network's two large products on the zero-skipping layout: `A = U·W` (first layer,
//! forward and tangent) and `∇W = Uᵀ·G` (its gradient), with `U` the pixels of a packed
//! set in groups of 8 samples. A `(group × pixel)` block whose 8 pixels are all zero adds
//! exactly 0 to either product and is skipped ([`crate::hyperclean::blocks`]): with the
//! samples ordered by their zero masks, 39 % of Fashion-MNIST's blocks.
//!
//! Both work on `hp`-wide rows, `hp` = the hidden width rounded up to [`TILE`] (the padding
//! columns of `W` are zero, so those of the results are too).
//!
//! * `U·W`: `W` packed tile-major (`[tile][pixel][16]`, read in order); per group and tile,
//!   4 samples × 2 vectors of accumulators (8 FMAs per non-zero pixel for 2 loads of `W`
//!   and 4 broadcasts). Rows are independent: any split over threads gives the same bits.
//! * `Uᵀ·G`: per 4 pixels × 16 columns, 8 accumulators summed over the groups whose block
//!   is non-zero for one of the 4 pixels (the chunk masks of the index), chunk by chunk so
//!   that a chunk's rows of `G` stay in L2. Each output is one sum over the groups in their
//!   fixed order, whichever thread owns its pixels.

// Lane loops index several arrays in lockstep (the shape of the SIMD code they become).
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

use crate::aligned::AlignedVec;
use crate::hyperclean::packed::{CHUNK_GROUPS, INV255, LANES, Packed};
use crate::hyperclean::simd::Kernels;

/// Column tile of both products (2 AVX vectors); `hp` is a multiple of it.
pub const TILE: usize = 16;
/// Pixels per task of `Uᵀ·G` (a multiple of 6; 784 = 3 × 198 + 190).
const PIXEL_BLOCK: usize = 198;
/// Groups per task of `U·W` (their pixels, 200 KB at 784 features, stay in L2).
const CHUNK: usize = 8;
/// Pixels per segment of `U·W` (a segment of a tile of `W`, 16 KB, stays in L1).
const SEGMENT: usize = 256;

/// `h` rounded up to [`TILE`].
pub fn padded_width(h: usize) -> usize {
    h.div_ceil(TILE) * TILE
}

/// `w` (`rows × h`, row-major) packed tile-major for [`GroupPixels::times`]:
/// `[tile][row][TILE]`, zero beyond column `h`.
pub fn pack_tiles(w: &[f32], h: usize, hp: usize, out: &mut AlignedVec) {
    let rows = w.len() / h;
    out.clear();
    out.resize(rows * hp, 0.0);
    for (t, tile) in out.chunks_exact_mut(rows * TILE).enumerate() {
        let c0 = t * TILE;
        let n = h.saturating_sub(c0).min(TILE);
        for (j, dst) in tile.chunks_exact_mut(TILE).enumerate() {
            dst[..n].copy_from_slice(&w[j * h + c0..j * h + c0 + n]);
        }
    }
}

/// A packed set's pixels as `f32` in its group layout (`[group][pixel][lane]`), for the
/// broadcasts of the products.
#[derive(Clone, Debug)]
pub struct GroupPixels {
    groups: usize,
    dim: usize,
    u: AlignedVec,
    kern: Kernels,
}

impl GroupPixels {
    /// The pixels of `set`; `kern` chooses AVX2+FMA or the portable loops.
    pub fn new(set: &Packed, kern: Kernels) -> Self {
        let kern = match kern {
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2
                if std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma") =>
            {
                Kernels::Avx2
            }
            _ => Kernels::Portable,
        };
        GroupPixels {
            groups: set.groups,
            dim: set.dim,
            u: AlignedVec::from(
                set.data
                    .iter()
                    .map(|&q| f32::from(q) * INV255)
                    .collect::<Vec<_>>(),
            ),
            kern,
        }
    }

    /// Rows (`groups × 8`).
    pub fn rows(&self) -> usize {
        self.groups * LANES
    }

    fn group(&self, g: usize) -> &[f32] {
        &self.u[g * self.dim * LANES..(g + 1) * self.dim * LANES]
    }

    /// `out = U·W` (`rows × hp`, row-major, packed row order) for `w` packed by
    /// [`pack_tiles`] (`dim` rows).
    pub fn times(&self, set: &Packed, w: &[f32], hp: usize, out: &mut [f32]) {
        assert_eq!(hp % TILE, 0);
        assert_eq!(w.len(), self.dim * hp);
        assert_eq!(out.len(), self.rows() * hp);
        let d = self.dim;
        // Chunks of groups with the tiles outer: a tile of `W` (d × 16 floats) stays in L2
        // over the chunk's groups, whose pixels stay there too.
        out.par_chunks_mut(CHUNK * LANES * hp)
            .enumerate()
            .for_each(|(ch, rows)| {
                for (t, wt) in w.chunks_exact(d * TILE).enumerate() {
                    // Pixel segments of SEGMENT × 16 floats of W: in L1 over the groups.
                    for seg in (0..d).step_by(SEGMENT) {
                        let end = (seg + SEGMENT).min(d);
                        for (gi, rows) in rows.chunks_exact_mut(LANES * hp).enumerate() {
                            let g = ch * CHUNK + gi;
                            let (u, feats) = (self.group(g), set.index.features(g));
                            let lo = feats.partition_point(|&j| usize::from(j) < seg);
                            let hi = feats.partition_point(|&j| usize::from(j) < end);
                            let (feats, first) = (&feats[lo..hi], seg == 0);
                            for half in 0..2 {
                                let tile = (t * TILE, half, first);
                                match self.kern {
                                    #[cfg(target_arch = "x86_64")]
                                    // SAFETY: AVX2 and FMA were detected in `new`; the
                                    // kernel checks its slices.
                                    Kernels::Avx2 => unsafe {
                                        avx2::times_tile(u, feats, wt, hp, tile, rows)
                                    },
                                    _ => times_tile(u, feats, wt, hp, tile, rows),
                                }
                            }
                        }
                    }
                }
            });
    }

    /// `out = Uᵀ·G` (`dim × hp`, row-major) for `g` (`rows × hp`, packed row order).
    pub fn transpose_times(&self, set: &Packed, g: &[f32], hp: usize, out: &mut [f32]) {
        let d = self.dim;
        assert_eq!(hp % TILE, 0);
        assert_eq!(g.len(), self.rows() * hp);
        assert_eq!(out.len(), d * hp);
        out.par_chunks_mut(PIXEL_BLOCK * hp)
            .enumerate()
            .for_each(|(blk, out)| {
                out.fill(0.0);
                let j0 = blk * PIXEL_BLOCK;
                let np = out.len() / hp;
                // Per chunk and tile, the chunk's rows of `G` (32 groups × 8 rows × 16
                // columns, 16 KB) stay in L1 over the task's pixels.
                for ch in 0..self.groups.div_ceil(CHUNK_GROUPS) {
                    let masks = set.index.groups(ch);
                    for t in (0..hp).step_by(TILE) {
                        let mut q = 0;
                        while q < np {
                            // 6 pixels at a time (12 accumulators), then 4, then the rest.
                            let nq = match np - q {
                                r if r >= 6 => 6,
                                r if r >= 4 => 4,
                                r => r,
                            };
                            let j = j0 + q;
                            let mask = masks[j..j + nq].iter().fold(0u32, |m, &b| m | b);
                            let acc = &mut out[q * hp..(q + nq) * hp];
                            q += nq;
                            if mask == 0 {
                                continue;
                            }
                            let at = (ch, mask, j, t);
                            match self.kern {
                                #[cfg(target_arch = "x86_64")]
                                // SAFETY: as in `times`.
                                Kernels::Avx2 if nq == 6 => unsafe {
                                    avx2::scatter_pixels::<6>(&self.u, d, g, hp, at, acc)
                                },
                                #[cfg(target_arch = "x86_64")]
                                // SAFETY: as in `times`.
                                Kernels::Avx2 if nq == 4 => unsafe {
                                    avx2::scatter_pixels::<4>(&self.u, d, g, hp, at, acc)
                                },
                                _ => scatter_quad(&self.u, d, g, hp, ch, mask, j, nq, t, acc),
                            }
                        }
                    }
                }
            });
    }
}

/// Rows `4·half..4·half + 4` of a group, columns `t..t + TILE`: `out = Σ_j u_j·W[j, ·]`
/// over `feats` (`wt`: the tile of `W`, `[pixel][TILE]`), added to `out` unless `first`.
fn times_tile(
    u: &[f32],
    feats: &[u16],
    wt: &[f32],
    hp: usize,
    (t, half, first): (usize, usize, bool),
    out: &mut [f32],
) {
    let mut acc = [[0.0f32; TILE]; 4];
    if !first {
        for l in 0..4 {
            let r = (4 * half + l) * hp + t;
            acc[l].copy_from_slice(&out[r..r + TILE]);
        }
    }
    for &j in feats {
        let j = usize::from(j);
        let wr = &wt[j * TILE..(j + 1) * TILE];
        for l in 0..4 {
            let b = u[j * LANES + 4 * half + l];
            for k in 0..TILE {
                acc[l][k] += b * wr[k];
            }
        }
    }
    for l in 0..4 {
        let r = (4 * half + l) * hp + t;
        out[r..r + TILE].copy_from_slice(&acc[l]);
    }
}

/// Pixels `j..j + nq` (`acc`: their output rows), columns `t..t + TILE`, the groups of
/// chunk `ch` in `mask`: `acc[p] += Σ_g Σ_l u_{g,l,j+p}·G[8g + l, ·]`.
#[allow(clippy::too_many_arguments)]
fn scatter_quad(
    u: &[f32],
    d: usize,
    g: &[f32],
    hp: usize,
    ch: usize,
    mut mask: u32,
    j: usize,
    nq: usize,
    t: usize,
    acc: &mut [f32],
) {
    while mask != 0 {
        let gr = ch * CHUNK_GROUPS + mask.trailing_zeros() as usize;
        mask &= mask - 1;
        for l in 0..LANES {
            let row = &g[(gr * LANES + l) * hp + t..][..TILE];
            for p in 0..nq {
                let b = u[(gr * d + j + p) * LANES + l];
                let a = &mut acc[p * hp + t..][..TILE];
                for k in 0..TILE {
                    a[k] += b * row[k];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::TILE;
    use crate::hyperclean::packed::{CHUNK_GROUPS, LANES};

    /// [`super::times_tile`] with 8 accumulators in registers.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn times_tile(
        u: &[f32],
        feats: &[u16],
        wt: &[f32],
        hp: usize,
        (t, half, first): (usize, usize, bool),
        out: &mut [f32],
    ) {
        let dim = u.len() / LANES;
        assert!(t + TILE <= hp && wt.len() >= dim * TILE);
        assert!(out.len() >= LANES * hp && half < 2);
        let op = out.as_mut_ptr();
        let row = |l: usize| (4 * half + l) * hp + t;
        let load = |i: usize| {
            if first {
                _mm256_setzero_ps()
            } else {
                // SAFETY: i + 8 ≤ LANES·hp (rows < 8, t + 16 ≤ hp, asserted).
                unsafe { _mm256_loadu_ps(op.add(i)) }
            }
        };
        let (mut a0, mut a1, mut a2, mut a3) =
            (load(row(0)), load(row(1)), load(row(2)), load(row(3)));
        let (mut b0, mut b1, mut b2, mut b3) = (
            load(row(0) + 8),
            load(row(1) + 8),
            load(row(2) + 8),
            load(row(3) + 8),
        );
        for &j in feats {
            let j = usize::from(j);
            assert!(j < dim);
            // SAFETY: j < dim: the tile's row j (16 floats) lies in `wt`, the group's
            // pixel j (8 floats) in `u`.
            unsafe {
                let wp = wt.as_ptr().add(j * TILE);
                let w0 = _mm256_loadu_ps(wp);
                let w1 = _mm256_loadu_ps(wp.add(8));
                let up = u.as_ptr().add(j * LANES + 4 * half);
                let s = _mm256_broadcast_ss(&*up);
                a0 = _mm256_fmadd_ps(s, w0, a0);
                b0 = _mm256_fmadd_ps(s, w1, b0);
                let s = _mm256_broadcast_ss(&*up.add(1));
                a1 = _mm256_fmadd_ps(s, w0, a1);
                b1 = _mm256_fmadd_ps(s, w1, b1);
                let s = _mm256_broadcast_ss(&*up.add(2));
                a2 = _mm256_fmadd_ps(s, w0, a2);
                b2 = _mm256_fmadd_ps(s, w1, b2);
                let s = _mm256_broadcast_ss(&*up.add(3));
                a3 = _mm256_fmadd_ps(s, w0, a3);
                b3 = _mm256_fmadd_ps(s, w1, b3);
            }
        }
        for (l, (a, b)) in [(a0, b0), (a1, b1), (a2, b2), (a3, b3)]
            .into_iter()
            .enumerate()
        {
            let r = (4 * half + l) * hp + t;
            let o = &mut out[r..r + TILE];
            // SAFETY: `o` holds 16 floats.
            unsafe {
                _mm256_storeu_ps(o.as_mut_ptr(), a);
                _mm256_storeu_ps(o.as_mut_ptr().add(8), b);
            }
        }
    }

    /// [`super::scatter_quad`] for `N` pixels (4 or 6) with `2N` accumulators in registers;
    /// `at` = (chunk, mask of its groups, first pixel, first column).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scatter_pixels<const N: usize>(
        u: &[f32],
        d: usize,
        g: &[f32],
        hp: usize,
        (ch, mut mask, j, t): (usize, u32, usize, usize),
        acc: &mut [f32],
    ) {
        let groups = u.len() / (d * LANES);
        assert!(j + N <= d && t + TILE <= hp && acc.len() >= N * hp);
        assert!(g.len() >= groups * LANES * hp);
        let ap = acc.as_mut_ptr();
        let mut a = [_mm256_setzero_ps(); N];
        let mut b = [_mm256_setzero_ps(); N];
        for p in 0..N {
            // SAFETY: row p < N of `acc`, columns t..t + 16 (asserted).
            unsafe {
                a[p] = _mm256_loadu_ps(ap.add(p * hp + t));
                b[p] = _mm256_loadu_ps(ap.add(p * hp + t + 8));
            }
        }
        while mask != 0 {
            let gr = ch * CHUNK_GROUPS + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            assert!(gr < groups);
            // SAFETY: gr < groups: its 8 rows of `g` (columns t..t + 16) and its pixels
            // j..j + N (8 lanes each) lie in the slices.
            unsafe {
                let gp = g.as_ptr().add(gr * LANES * hp + t);
                let up = u.as_ptr().add((gr * d + j) * LANES);
                for l in 0..LANES {
                    let g0 = _mm256_loadu_ps(gp.add(l * hp));
                    let g1 = _mm256_loadu_ps(gp.add(l * hp + 8));
                    for p in 0..N {
                        let s = _mm256_broadcast_ss(&*up.add(p * LANES + l));
                        a[p] = _mm256_fmadd_ps(s, g0, a[p]);
                        b[p] = _mm256_fmadd_ps(s, g1, b[p]);
                    }
                }
            }
        }
        for p in 0..N {
            // SAFETY: as the loads above.
            unsafe {
                _mm256_storeu_ps(ap.add(p * hp + t), a[p]);
                _mm256_storeu_ps(ap.add(p * hp + t + 8), b[p]);
            }
        }
    }
}
