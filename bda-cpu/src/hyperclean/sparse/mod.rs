//! The network's two large products on the zero-skipping layout: `A = U·W` (first layer,
//! forward and tangent) and `∇W = Uᵀ·G` (its gradient), with `U` the pixels of a packed
//! set in groups of 8 samples. A block of pixels that are all zero adds exactly 0 to either
//! product and is skipped ([`crate::hyperclean::blocks`]): with the samples ordered by
//! their zero masks, 39 % of Fashion-MNIST's `(8 samples × pixel)` blocks, 42 % of its
//! `(4 samples × pixel)` blocks.
//!
//! Both work on `hp`-wide rows, `hp` = the hidden width rounded up to [`TILE`] (the padding
//! columns of `W` are zero, so those of the results are too).
//!
//! * `U·W`: `W` packed tile-major (`[tile][pixel][24]`, a row's last tile 8 or 16 wide);
//!   per half group (4 samples) and tile, 3 vectors of accumulators per sample (12 FMAs
//!   per non-zero pixel for 3 loads of `W` and 4 broadcasts). Rows are independent: any
//!   split over threads gives the same bits.
//! * `Uᵀ·G`: per 6 pixels × 16 columns, 12 accumulators summed over the groups whose block
//!   is non-zero for one of the 6 pixels (the chunk masks of the index; the pixels in an
//!   order that makes those 6 blocks agree, see [`GroupPixels`]), chunk by chunk so
//!   that a chunk's rows of `G` stay in L1. Each chunk's product starts from zero and the
//!   chunks are added in order, whichever thread owns the pixels and whichever rank the
//!   chunks (a rank adds its chunks to the running sum of the ranks before it).

// Lane loops index several arrays in lockstep (the shape of the SIMD code they become).
#![allow(clippy::needless_range_loop)]

use std::ops::Range;

use rayon::prelude::*;

use crate::aligned::AlignedVec;
use crate::hyperclean::blocks::{BlockIndex, zero_mask_order};
use crate::hyperclean::packed::{CHUNK_GROUPS, INV255, LANES, Packed};
use crate::hyperclean::simd::Kernels;

/// Column tile of `Uᵀ·G` (2 AVX vectors); `hp` is a multiple of it.
pub const TILE: usize = 16;
/// Column tile of `U·W` (3 AVX vectors); a row's last tile is 8 or 16 wide when `hp` is not
/// a multiple of it.
pub const WIDE_TILE: usize = 24;
/// Tasks of `Uᵀ·G`: pixel ranges of equal estimated time (each task reads all of `G`
/// once; 2, 8 or 16 tasks took more thread time in all).
const PIXEL_TASKS: usize = 4;
/// What a window costs `Uᵀ·G` per chunk it visits (its accumulators loaded and stored,
/// the masks folded), in multiplied blocks: fitted to the times of tasks of equal blocks
/// (in a whole run, the task of the 498 sparser pixels took 7.8 % longer than the one of
/// the 286 denser pixels for 2 % more blocks; 1292 visits against 941).
const VISIT_WORK: usize = 32;
/// Pixels per window of `Uᵀ·G` (12 accumulators); tasks start on a window.
const WINDOW: usize = 6;
/// Groups per task of `U·W` (their pixels, 200 KB at 784 features, stay in L2).
const CHUNK: usize = 8;

/// `h` rounded up to [`TILE`].
pub fn padded_width(h: usize) -> usize {
    h.div_ceil(TILE) * TILE
}

/// The column tiles of [`GroupPixels::times`] on rows of `hp` (a multiple of [`TILE`]):
/// `(first column, width)`, [`WIDE_TILE`] wide but the last, which may be 8 or 16.
fn wide_tiles(hp: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..hp)
        .step_by(WIDE_TILE)
        .map(move |c0| (c0, WIDE_TILE.min(hp - c0)))
}

/// A packed set's pixels as `f32` in its group layout (`[group][pixel][lane]`), for the
/// broadcasts of the products, with the pixels in an order of their own ([`Self::pack`]
/// and [`Self::unpack`] translate `W₁`'s rows).
///
/// `Uᵀ·G` skips a group for 6 pixels at a time only when all 6 of its blocks are zero:
/// in raster order it multiplies 75.7 % of the blocks where 61.3 % are non-zero
/// (Fashion-MNIST training set, `examples/mlp_kernels.rs`). Pixels ordered by their zero
/// pattern over the groups (recursive spectral bisection, as the samples are:
/// [`zero_mask_order`]) make the 6 blocks agree more often: 68.7 %. `U·W` skips single
/// blocks, whatever the order.
#[derive(Clone, Debug)]
pub struct GroupPixels {
    groups: usize,
    dim: usize,
    u: AlignedVec,
    /// `perm[p]`: the original pixel at position `p`.
    perm: Vec<u16>,
    /// `pos[j]`: the position of original pixel `j` (`perm`'s inverse).
    pos: Vec<u16>,
    /// The zero blocks in the permuted order.
    index: BlockIndex,
    /// `U·W`'s skipping is per 4 samples (half a group): the pixels where those 4 are not
    /// all zero (58.1 % of the blocks of 4 on Fashion-MNIST against 61.3 % of the blocks
    /// of 8), per group and half in order.
    half_feats: Vec<u16>,
    /// Where each group and half starts in `half_feats` (and where the last one ends).
    starts: Vec<u32>,
    /// Pixel ranges of the tasks of `Uᵀ·G` (`PIXEL_TASKS + 1` bounds, on windows) of
    /// equal estimated time ([`VISIT_WORK`]): the pixel order puts the mostly-zero pixels
    /// together, and fixed-size ranges would leave one thread with the dense ones.
    parts: Vec<usize>,
    kern: Kernels,
}

impl GroupPixels {
    /// The pixels of `set`; `kern` chooses AVX2+FMA or the portable loops.
    pub fn new(set: &Packed, kern: Kernels) -> Self {
        Self::with_pixel_order(set, kern, true)
    }

    /// Same, the pixels reordered (`spectral`) or kept in raster order (for measurements:
    /// `examples/mlp_kernels.rs`).
    pub fn with_pixel_order(set: &Packed, kern: Kernels, spectral: bool) -> Self {
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
        let (groups, d) = (set.groups, set.dim);
        // Pixel j's zero pattern over the groups: one byte per group (1 = non-zero block).
        let mut pattern = vec![0u8; d * groups];
        for g in 0..groups {
            for &j in set.index.features(g) {
                pattern[usize::from(j) * groups + g] = 1;
            }
        }
        let order = match spectral {
            true => zero_mask_order(&pattern, d, groups, WINDOW),
            false => (0..d as u32).collect(),
        };
        let perm: Vec<u16> = order
            .into_iter()
            .map(|j| u16::try_from(j).expect("pixel indices are u16"))
            .collect();
        let mut pos = vec![0u16; d];
        for (p, &j) in perm.iter().enumerate() {
            pos[usize::from(j)] = p as u16;
        }
        let mut bytes = vec![0u8; set.data.len()];
        for (dst, src) in bytes
            .chunks_exact_mut(d * LANES)
            .zip(set.data.chunks_exact(d * LANES))
        {
            for (p, &j) in perm.iter().enumerate() {
                let j = usize::from(j);
                dst[p * LANES..][..LANES].copy_from_slice(&src[j * LANES..][..LANES]);
            }
        }
        let index = BlockIndex::new(&bytes, groups, d, LANES, CHUNK_GROUPS);
        // Per group and half (4 samples), its non-zero pixels.
        let (mut half_feats, mut starts) = (Vec::new(), vec![0u32]);
        for block in bytes.chunks_exact(d * LANES) {
            for half in 0..2 {
                for j in 0..d {
                    if block[j * LANES + 4 * half..][..4].iter().any(|&q| q != 0) {
                        half_feats.push(j as u16);
                    }
                }
                starts.push(half_feats.len() as u32);
            }
        }
        let mut u = AlignedVec::zeros(bytes.len());
        u.iter_mut()
            .zip(&bytes)
            .for_each(|(u, &q)| *u = f32::from(q) * INV255);
        let parts = balanced_parts(&window_work(&index, groups, d), d, PIXEL_TASKS);
        GroupPixels {
            parts,
            groups,
            dim: d,
            u,
            perm,
            pos,
            index,
            half_feats,
            starts,
            kern,
        }
    }

    /// `w` (`dim × h`, row-major, pixels in the original order) packed tile-major for
    /// [`Self::times`]: tile by tile (`wide_tiles`), each `[pixel][width]` in this set's
    /// pixel order, zero beyond column `h`; `hp` = `h` rounded up to [`TILE`].
    pub fn pack(&self, w: &[f32], h: usize, hp: usize, out: &mut AlignedVec) {
        assert_eq!(w.len(), self.dim * h);
        assert_eq!(hp % TILE, 0);
        out.resize(self.dim * hp, 0.0);
        let d = self.dim;
        // One task per tile (1 MB in all at the network's sizes: serial, it left the
        // other thread idle).
        let mut tiles = Vec::with_capacity(hp.div_ceil(WIDE_TILE));
        let mut rest = &mut out[..];
        for (c0, tw) in wide_tiles(hp) {
            let (tile, tail) = rest.split_at_mut(d * tw);
            tiles.push((c0, tw, tile));
            rest = tail;
        }
        tiles.into_par_iter().for_each(|(c0, tw, tile)| {
            let n = h.saturating_sub(c0).min(tw);
            for (&j, dst) in self.perm.iter().zip(tile.chunks_exact_mut(tw)) {
                let j = usize::from(j);
                let (cols, pad) = dst.split_at_mut(n);
                cols.copy_from_slice(&w[j * h..(j + 1) * h][c0.min(h)..][..n]);
                pad.fill(0.0);
            }
        });
    }

    /// The first `h` columns of `g` (`dim × hp`, this set's pixel order, as
    /// [`Self::transpose_times`] leaves it) into `out` (`dim × h`, the original order).
    pub fn unpack(&self, g: &[f32], h: usize, hp: usize, out: &mut [f32]) {
        assert_eq!(g.len(), self.dim * hp);
        assert_eq!(out.len(), self.dim * h);
        out.par_chunks_mut(h)
            .zip(&self.pos)
            .with_min_len(64)
            .for_each(|(row, &p)| {
                let p = usize::from(p);
                row.copy_from_slice(&g[p * hp..p * hp + h]);
            });
    }

    /// Fraction of the `(group × pixel)` blocks that [`Self::transpose_times`] multiplies
    /// (a group is skipped for a window of pixels only when all its blocks there are zero).
    pub fn transpose_density(&self) -> f64 {
        let work = window_work(&self.index, self.groups, self.dim);
        let done: usize = work.iter().map(|w| w.blocks).sum();
        done as f64 / (self.groups * self.dim) as f64
    }

    /// Fraction of the `(4 samples × pixel)` blocks that [`Self::times`] multiplies (the
    /// non-zero ones).
    pub fn times_density(&self) -> f64 {
        self.half_feats.len() as f64 / (2 * self.groups * self.dim).max(1) as f64
    }

    /// Rows (`groups × 8`).
    pub fn rows(&self) -> usize {
        self.groups * LANES
    }

    fn group(&self, g: usize) -> &[f32] {
        &self.u[g * self.dim * LANES..(g + 1) * self.dim * LANES]
    }

    /// `out = U·W` (`rows × hp`, row-major, packed row order) for `w` packed by
    /// [`Self::pack`], on the rows of the groups from `g0` on that `out` has room for.
    pub fn times(&self, w: &[f32], hp: usize, g0: usize, out: &mut [f32]) {
        assert_eq!(hp % TILE, 0);
        assert_eq!(w.len(), self.dim * hp);
        assert_eq!(out.len() % (LANES * hp), 0);
        assert!(g0 + out.len() / (LANES * hp) <= self.groups);
        let d = self.dim;
        // Chunks of groups with the tiles outer: a tile of `W` (d × 24 floats, 75 KB) stays
        // in L2 over the chunk's groups, whose pixels stay there too. (Segments of 256
        // pixels, so that a tile's slice stays in L1, measured slower: `U·W` 15.2–16.2 ms
        // against 14.4–15.2 ms whole, interleaved, 2 threads.)
        out.par_chunks_mut(CHUNK * LANES * hp)
            .enumerate()
            .for_each(|(ch, rows)| {
                for (c0, tw) in wide_tiles(hp) {
                    let wt = &w[d * c0..d * (c0 + tw)];
                    for (gi, rows) in rows.chunks_exact_mut(LANES * hp).enumerate() {
                        let g = g0 + ch * CHUNK + gi;
                        let u = self.group(g);
                        for half in 0..2 {
                            let (a, b) = (self.starts[2 * g + half], self.starts[2 * g + half + 1]);
                            let feats = &self.half_feats[a as usize..b as usize];
                            let tile = Tile {
                                u,
                                feats,
                                wt,
                                hp,
                                at: (c0, half),
                            };
                            match (self.kern, tw) {
                                #[cfg(target_arch = "x86_64")]
                                // SAFETY: AVX2 and FMA were detected in `new`; the kernels
                                // check their slices.
                                (Kernels::Avx2, WIDE_TILE) => unsafe {
                                    avx2::times_tile24(tile, rows)
                                },
                                #[cfg(target_arch = "x86_64")]
                                // SAFETY: as above.
                                (Kernels::Avx2, 16) => unsafe { avx2::times_tile::<2>(tile, rows) },
                                #[cfg(target_arch = "x86_64")]
                                // SAFETY: as above.
                                (Kernels::Avx2, 8) => unsafe { avx2::times_tile::<1>(tile, rows) },
                                _ => times_tile(tile, tw, rows),
                            }
                        }
                    }
                }
            });
    }

    /// `Uᵀ·G` (`dim × hp`, row-major, this set's pixel order: see [`Self::unpack`]) over
    /// the rows of the chunks `chunks` of `g` (`rows × hp`, packed row order): each chunk's
    /// product from zero, added in chunk order into `out` (`dim × hp`), or one per chunk
    /// (`per_chunk`, `out` holds `chunks.len()` of them) for a caller that adds them in
    /// that order itself. Either way every output is the same sum of the same terms.
    pub fn transpose_times(
        &self,
        g: &[f32],
        hp: usize,
        chunks: Range<usize>,
        per_chunk: bool,
        out: &mut [f32],
    ) {
        let d = self.dim;
        assert_eq!(hp % TILE, 0);
        assert_eq!(g.len(), self.rows() * hp);
        assert!(chunks.end <= self.groups.div_ceil(CHUNK_GROUPS));
        let outs = if per_chunk { chunks.len() } else { 1 };
        assert_eq!(out.len(), outs * d * hp);
        if per_chunk {
            // One task per chunk, its pixels in the tasks' windows, stored (no fill first).
            out.par_chunks_mut(d * hp)
                .zip(chunks)
                .for_each(|(out, ch)| {
                    for w in self.parts.windows(2) {
                        let acc = &mut out[w[0] * hp..w[1] * hp];
                        self.chunk_into::<false>(g, hp, ch, w[0], acc);
                    }
                });
            return;
        }
        let mut tasks = Vec::with_capacity(PIXEL_TASKS);
        let mut rest = out;
        for w in self.parts.windows(2) {
            let (mine, tail) = rest.split_at_mut((w[1] - w[0]) * hp);
            tasks.push((w[0], mine));
            rest = tail;
        }
        tasks.into_par_iter().for_each(|(j0, out)| {
            out.fill(0.0);
            for ch in chunks.clone() {
                self.chunk_into::<true>(g, hp, ch, j0, out);
            }
        });
    }

    /// `acc += ` chunk `ch`'s product (formed from zero in the kernels' registers) for the
    /// pixels `j0..j0 + acc.len()/hp` (a task's range: its windows are the task's). Per
    /// tile, the chunk's rows of `G` (32 groups × 8 rows × 16 columns, 16 KB) stay in L1
    /// over the pixels.
    ///
    /// `ADD` false: `acc ←` the product instead (every entry written: the windows the chunk
    /// has no pixel in get zeros).
    fn chunk_into<const ADD: bool>(
        &self,
        g: &[f32],
        hp: usize,
        ch: usize,
        j0: usize,
        acc: &mut [f32],
    ) {
        let d = self.dim;
        let np = acc.len() / hp;
        let masks = self.index.groups(ch);
        for t in (0..hp).step_by(TILE) {
            let mut q = 0;
            while q < np {
                let nq = window(np - q);
                let j = j0 + q;
                let mask = masks[j..j + nq].iter().fold(0u32, |m, &b| m | b);
                let acc = &mut acc[q * hp..(q + nq) * hp];
                q += nq;
                if mask == 0 {
                    if !ADD {
                        for row in acc.chunks_exact_mut(hp) {
                            row[t..t + TILE].fill(0.0);
                        }
                    }
                    continue;
                }
                let at = (ch, mask, j, t);
                match self.kern {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as in `times`.
                    Kernels::Avx2 if nq == 6 => unsafe {
                        avx2::scatter_pixels::<6, ADD>(&self.u, d, g, hp, at, acc)
                    },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as in `times`.
                    Kernels::Avx2 if nq == 4 => unsafe {
                        avx2::scatter_pixels::<4, ADD>(&self.u, d, g, hp, at, acc)
                    },
                    _ => scatter_quad(&self.u, d, g, hp, (ch, mask, j, nq, t, ADD), acc),
                }
            }
        }
    }
}

/// Pixels of the window that starts `left` pixels before the end of a task: 6 (12
/// accumulators), then 4, then the rest.
fn window(left: usize) -> usize {
    match left {
        r if r >= WINDOW => WINDOW,
        r if r >= 4 => 4,
        r => r,
    }
}

/// What a window of `Uᵀ·G` costs.
#[derive(Clone, Copy, Debug)]
struct WindowWork {
    /// The pixel after the window.
    end: usize,
    /// Blocks it multiplies.
    blocks: usize,
    /// Chunks whose groups it visits (a non-zero mask).
    visits: usize,
}

impl WindowWork {
    /// Estimated time, in multiplied blocks.
    fn cost(&self) -> usize {
        self.blocks + VISIT_WORK * self.visits
    }
}

/// Per window of `Uᵀ·G` (stepped by [`window`] from pixel 0, as a task steps from its
/// start), what it costs.
fn window_work(index: &BlockIndex, groups: usize, d: usize) -> Vec<WindowWork> {
    let mut widths = Vec::new();
    let mut j = 0;
    while j < d {
        widths.push(window(d - j));
        j += widths[widths.len() - 1];
    }
    let mut end = 0;
    let mut work: Vec<WindowWork> = widths
        .iter()
        .map(|&n| {
            end += n;
            WindowWork {
                end,
                blocks: 0,
                visits: 0,
            }
        })
        .collect();
    for ch in 0..groups.div_ceil(CHUNK_GROUPS) {
        let masks = index.groups(ch);
        let mut j = 0;
        for (w, &n) in work.iter_mut().zip(&widths) {
            let m = masks[j..j + n].iter().fold(0u32, |a, &b| a | b);
            w.blocks += m.count_ones() as usize * n;
            w.visits += usize::from(m != 0);
            j += n;
        }
    }
    work
}

/// `tasks + 1` pixel bounds on window boundaries (0 first, `d` last) that split the
/// windows into contiguous runs of about equal estimated time.
fn balanced_parts(work: &[WindowWork], d: usize, tasks: usize) -> Vec<usize> {
    let total: usize = work.iter().map(WindowWork::cost).sum();
    let mut bounds = vec![0];
    let mut acc = 0;
    for w in work {
        acc += w.cost();
        let next = bounds.len();
        if next < tasks && acc * tasks >= next * total {
            bounds.push(w.end);
        }
    }
    while bounds.len() <= tasks {
        bounds.push(d);
    }
    bounds
}

/// One tile of `U·W`: rows `4·half..4·half + 4` of a group (`u`, its pixels), columns
/// `t..t + tw` of rows `hp` wide, over the pixels `feats` (`wt`: the tile of `W`,
/// `[pixel][tw]`).
#[derive(Clone, Copy)]
struct Tile<'a> {
    u: &'a [f32],
    feats: &'a [u16],
    wt: &'a [f32],
    hp: usize,
    /// `(t, half)`.
    at: (usize, usize),
}

/// `out = Σ_j u_j·W[j, ·]` over the tile (`tw` columns).
fn times_tile(tile: Tile<'_>, tw: usize, out: &mut [f32]) {
    let (u, feats, wt, hp) = (tile.u, tile.feats, tile.wt, tile.hp);
    let (t, half) = tile.at;
    let mut acc = [[0.0f32; WIDE_TILE]; 4];
    for &j in feats {
        let j = usize::from(j);
        let wr = &wt[j * tw..(j + 1) * tw];
        for l in 0..4 {
            let b = u[j * LANES + 4 * half + l];
            for k in 0..tw {
                acc[l][k] += b * wr[k];
            }
        }
    }
    for l in 0..4 {
        let r = (4 * half + l) * hp + t;
        out[r..r + tw].copy_from_slice(&acc[l][..tw]);
    }
}

/// Pixels `j..j + nq` (`acc`: their output rows), columns `t..t + TILE`, the groups of
/// chunk `ch` in `mask`: `acc[p] += Σ_g Σ_l u_{g,l,j+p}·G[8g + l, ·]`, the sum formed from
/// zero and then added (a chunk's product on its own, as per-chunk partials need), or
/// stored over `acc` (`add` false).
fn scatter_quad(
    u: &[f32],
    d: usize,
    g: &[f32],
    hp: usize,
    (ch, mut mask, j, nq, t, add): (usize, u32, usize, usize, usize, bool),
    acc: &mut [f32],
) {
    let mut sum = [[0.0f32; TILE]; WINDOW];
    while mask != 0 {
        let gr = ch * CHUNK_GROUPS + mask.trailing_zeros() as usize;
        mask &= mask - 1;
        for l in 0..LANES {
            let row = &g[(gr * LANES + l) * hp + t..][..TILE];
            for p in 0..nq {
                let b = u[(gr * d + j + p) * LANES + l];
                for k in 0..TILE {
                    sum[p][k] += b * row[k];
                }
            }
        }
    }
    for p in 0..nq {
        let a = &mut acc[p * hp + t..][..TILE];
        match add {
            true => a.iter_mut().zip(&sum[p]).for_each(|(a, s)| *a += s),
            false => a.copy_from_slice(&sum[p]),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `n` images of `dim` pixels, each zero outside one of 3 random supports (so that
    /// both the sample and the pixel orders have zero blocks to find).
    fn images(n: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<u8>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let support: Vec<Vec<bool>> = (0..3)
            .map(|_| (0..dim).map(|_| rng.random_bool(0.4)).collect())
            .collect();
        let mut x = Vec::with_capacity(n * dim);
        for _ in 0..n {
            for &on in &support[rng.random_range(0..3)] {
                let q: u8 = if on { rng.random_range(1..=255) } else { 0 };
                x.push(f32::from(q) / 255.0);
            }
        }
        let labels = (0..n).map(|i| (i % 10) as u8).collect();
        (x, labels)
    }

    /// Task bounds weigh the windows' visits: the dense first window alone has more
    /// blocks than half of all, but not more than half of the estimated time.
    #[test]
    fn tasks_balance_blocks_and_visits() {
        let w = |end, blocks, visits| WindowWork {
            end,
            blocks,
            visits,
        };
        let work = [w(6, 164, 0), w(12, 36, 2), w(18, 36, 2), w(24, 36, 2)];
        assert_eq!(VISIT_WORK, 32, "the figures below assume it");
        assert_eq!(balanced_parts(&work, 24, 2), vec![0, 12, 24]);
        assert_eq!(balanced_parts(&work, 24, 4), vec![0, 6, 12, 18, 24]);
    }

    /// Both products, packed and unpacked through the set's pixel order, against the
    /// dense sums in `f64`: several pixel tasks, three chunks (the last one short), a
    /// padded group, padded columns, and rows whose `U·W` tiles are 24 + 8, 24 + 24 and
    /// 16 wide; `U·W` on a run of groups and `Uᵀ·G` per chunk give the same bits.
    #[test]
    fn products_in_the_pixel_order_match_the_dense_sums() {
        for h in [20, 40, 10] {
            products_match(h);
        }
    }

    fn products_match(h: usize) {
        let (n, d) = (600, 300);
        let (x, labels) = images(n, d, 3);
        let set = Packed::ordered(&x, &labels, d).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let w: Vec<f32> = (0..d * h).map(|_| rng.random_range(-1.0..1.0)).collect();
        let hp = padded_width(h);
        let rows = set.groups * LANES;
        let g: Vec<f32> = (0..rows * hp)
            .map(|i| {
                if i % hp < h {
                    rng.random_range(-1.0..1.0)
                } else {
                    0.0
                }
            })
            .collect();
        // Row r of the packed order is sample order[r] (or padding).
        let pixel = |r: usize, j: usize| match set.order.get(r) {
            Some(&i) => f64::from(x[i as usize * d + j]),
            None => 0.0,
        };
        for kern in [Kernels::Avx2, Kernels::Portable] {
            let px = GroupPixels::new(&set, kern);
            assert_ne!(px.perm, (0..d as u16).collect::<Vec<_>>(), "a pixel order");
            let mut wt = AlignedVec::default();
            px.pack(&w, h, hp, &mut wt);
            let mut a = vec![f32::NAN; rows * hp];
            px.times(&wt, hp, 0, &mut a);
            // Any run of groups gives those rows' bits.
            let g0 = px.groups / 2;
            let mut part = vec![f32::NAN; (px.groups - g0) * LANES * hp];
            px.times(&wt, hp, g0, &mut part);
            assert!(
                part == a[g0 * LANES * hp..],
                "{kern:?} U·W on groups {g0}.."
            );
            for r in 0..rows {
                for k in 0..hp {
                    let want: f64 = if k < h {
                        (0..d).map(|j| pixel(r, j) * f64::from(w[j * h + k])).sum()
                    } else {
                        0.0
                    };
                    let got = f64::from(a[r * hp + k]);
                    assert!(
                        (got - want).abs() < 1e-4,
                        "{kern:?} U·W [{r}, {k}]: {got} vs {want}"
                    );
                }
            }
            let mut gw = vec![f32::NAN; d * hp];
            let chunks = px.groups.div_ceil(CHUNK_GROUPS);
            px.transpose_times(&g, hp, 0..chunks, false, &mut gw);
            // Per chunk, then added in chunk order: the same bits.
            let mut per = vec![f32::NAN; chunks * d * hp];
            px.transpose_times(&g, hp, 0..chunks, true, &mut per);
            let mut sum = vec![0.0f32; d * hp];
            for p in per.chunks_exact(d * hp) {
                sum.iter_mut().zip(p).for_each(|(s, p)| *s += p);
            }
            assert!(sum == gw, "{kern:?} Uᵀ·G per chunk");
            let mut out = vec![f32::NAN; d * h];
            px.unpack(&gw, h, hp, &mut out);
            for j in 0..d {
                for k in 0..h {
                    let want: f64 = (0..rows)
                        .map(|r| pixel(r, j) * f64::from(g[r * hp + k]))
                        .sum();
                    let got = f64::from(out[j * h + k]);
                    assert!(
                        (got - want).abs() < 1e-4,
                        "{kern:?} Uᵀ·G [{j}, {k}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}
