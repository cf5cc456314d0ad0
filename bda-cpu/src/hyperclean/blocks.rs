//! Zero blocks of a byte-pixel set: which `(group of 8 samples × feature)` blocks are all
//! zero, and a sample order that makes many of them so.
//!
//! Every product of the hyper-cleaning backend walks `(group, feature)` blocks of 8 pixel
//! bytes and spends 10 FMAs on each (one per class). Images have a background: half the
//! pixels of Fashion-MNIST are exactly 0, and a block whose 8 bytes are all 0 adds nothing
//! to either product (`S = U·W` or `∇W = Uᵀ·G`), so it can be skipped *exactly* — the
//! skipped terms are `+0`, the sums are bit for bit those of the dense loop.
//!
//! How many blocks are all zero depends on which samples share a group. With the samples
//! in random order 13 % of Fashion-MNIST's blocks are; grouping samples whose zero masks
//! agree raises that. [`zero_mask_order`] does it by recursive spectral bisection: split the
//! samples at the median of their projection on the first principal component of the
//! (centred) zero mask, recurse on both halves down to one group. Measured on 5000
//! Fashion-MNIST training images (see `docs/hyperclean.md`): random 13 %, sorted by the
//! number of non-zeros 21 %, sorted by the first principal component 27 %, recursive
//! bisection 39 % all-zero blocks. A greedy refinement inside the leaves did not help.

use rayon::prelude::*;

/// Power iterations per split: the ordering quality saturates at about 8 (measured: 2
/// iterations 38.3 %, 8 → 38.7 %, 16 → 38.7 % zero blocks).
const POWER_ITERS: usize = 8;

/// An order of the `n` samples of `pixels` (`n × dim` bytes, row-major) that groups
/// samples with similar zero masks into consecutive runs of `group` samples: entry `p` is
/// the original index of the sample placed at position `p`.
///
/// Deterministic: a fixed start vector, a fixed number of iterations, stable sorts, and a
/// parallel recursion whose halves are independent.
pub fn zero_mask_order(pixels: &[u8], n: usize, dim: usize, group: usize) -> Vec<u32> {
    assert_eq!(pixels.len(), n * dim, "pixels are n × dim bytes");
    assert!(group > 0);
    let mut order: Vec<u32> = (0..n as u32).collect();
    if dim > 0 {
        // The masks as 0/1 floats, so that the power iterations are plain dot products
        // and axpys that vectorise (n·dim·4 bytes, freed on return).
        let mask: Vec<f32> = pixels.iter().map(|&p| f32::from(u8::from(p > 0))).collect();
        bisect(&mask, dim, group, &mut order);
    }
    order
}

/// Order `ids` in place: sort by the first principal component of their zero masks, then
/// recurse on the two halves (the first half a multiple of `group` long).
fn bisect(mask: &[f32], dim: usize, group: usize, ids: &mut [u32]) {
    if ids.len() <= group {
        return;
    }
    let score = principal_scores(mask, dim, ids);
    let mut keyed: Vec<(f32, u32)> = score.into_iter().zip(ids.iter().copied()).collect();
    // Stable, total order: ties keep the incoming order.
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (id, (_, k)) in ids.iter_mut().zip(keyed) {
        *id = k;
    }
    let half = (ids.len() / (2 * group)).max(1) * group;
    let (lo, hi) = ids.split_at_mut(half);
    rayon::join(
        || bisect(mask, dim, group, lo),
        || bisect(mask, dim, group, hi),
    );
}

/// Projections of the samples `ids` on the first principal component of their centred
/// zero masks `m_i`, by power iteration on `AᵀA` with `A = M − 1·meanᵀ` (never formed:
/// `A·v = M·v − ⟨mean, v⟩`, `Aᵀ·w = Mᵀ·w − mean·Σw`).
fn principal_scores(mask: &[f32], dim: usize, ids: &[u32]) -> Vec<f32> {
    let row = |i: u32| &mask[i as usize * dim..(i as usize + 1) * dim];
    let n = ids.len() as f32;
    let mut mean = vec![0.0f32; dim];
    for &i in ids {
        axpy(1.0, row(i), &mut mean);
    }
    mean.iter_mut().for_each(|m| *m /= n);
    // Start from the per-feature spread √(m(1−m)): features that are sometimes zero and
    // sometimes not are the ones that separate the samples.
    let mut v: Vec<f32> = mean
        .iter()
        .map(|&m| (m * (1.0 - m)).sqrt() + 1e-3)
        .collect();
    let mut w = vec![0.0f32; ids.len()];
    for _ in 0..POWER_ITERS {
        if !normalise(&mut v) {
            return vec![0.0; ids.len()];
        }
        project(mask, dim, ids, &mean, &v, &mut w);
        let sw: f32 = w.iter().sum();
        v.iter_mut().zip(&mean).for_each(|(v, &m)| *v = -m * sw);
        for (&i, &wi) in ids.iter().zip(&w) {
            axpy(wi, row(i), &mut v);
        }
    }
    if !normalise(&mut v) {
        return vec![0.0; ids.len()];
    }
    project(mask, dim, ids, &mean, &v, &mut w);
    w
}

/// `v += a·x`.
fn axpy(a: f32, x: &[f32], v: &mut [f32]) {
    v.iter_mut().zip(x).for_each(|(v, &x)| *v += a * x);
}

/// `⟨a, b⟩` with 8 partial sums (a fixed order that vectorises).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `w_i = ⟨m_i − mean, v⟩` for the samples `ids`.
fn project(mask: &[f32], dim: usize, ids: &[u32], mean: &[f32], v: &[f32], w: &mut [f32]) {
    let mv = dot(mean, v);
    w.par_iter_mut().zip(ids).for_each(|(w, &i)| {
        *w = dot(&mask[i as usize * dim..(i as usize + 1) * dim], v) - mv;
    });
}

/// Scale `v` to unit length; `false` when it is (numerically) zero: every sample has the
/// same mask and any order is as good as another.
fn normalise(v: &mut [f32]) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm <= 1e-20 {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    true
}

/// Where the non-zero blocks of a packed set are, in the two shapes the products need.
///
/// * `S = U·W` runs group by group: [`BlockIndex::features`] lists, per group, the
///   features whose block is non-zero (CSR, `u16` indices: 2 bytes per block instead of a
///   branch per block).
/// * `∇W += Uᵀ·G` runs feature by feature over the groups of a chunk: [`BlockIndex::groups`]
///   is, per `(chunk, feature)`, a bit mask of the chunk's groups (≤ 32) with a non-zero
///   block.
#[derive(Clone, Debug, Default)]
pub struct BlockIndex {
    starts: Vec<u32>,
    feats: Vec<u16>,
    masks: Vec<u32>,
    dim: usize,
}

impl BlockIndex {
    /// The index of `data` (`groups × dim × lanes` bytes, group-major then feature-major),
    /// chunks of `chunk_groups ≤ 32` groups.
    pub fn new(data: &[u8], groups: usize, dim: usize, lanes: usize, chunk_groups: usize) -> Self {
        assert!(chunk_groups <= 32, "a chunk's groups are one u32 mask");
        assert!(dim <= usize::from(u16::MAX) + 1, "feature indices are u16");
        assert_eq!(data.len(), groups * dim * lanes);
        let chunks = groups.div_ceil(chunk_groups);
        let mut starts = Vec::with_capacity(groups + 1);
        let mut feats = Vec::new();
        let mut masks = vec![0u32; chunks * dim];
        starts.push(0);
        for g in 0..groups {
            let (ch, bit) = (g / chunk_groups, g % chunk_groups);
            for j in 0..dim {
                let b = &data[(g * dim + j) * lanes..][..lanes];
                if b.iter().any(|&p| p != 0) {
                    feats.push(j as u16);
                    masks[ch * dim + j] |= 1 << bit;
                }
            }
            starts.push(feats.len() as u32);
        }
        BlockIndex {
            starts,
            feats,
            masks,
            dim,
        }
    }

    /// Features of group `g` with a non-zero block, increasing.
    #[inline]
    pub fn features(&self, g: usize) -> &[u16] {
        &self.feats[self.starts[g] as usize..self.starts[g + 1] as usize]
    }

    /// Per feature, the mask of chunk `ch`'s groups whose block is non-zero.
    #[inline]
    pub fn groups(&self, ch: usize) -> &[u32] {
        &self.masks[ch * self.dim..(ch + 1) * self.dim]
    }

    /// Fraction of all blocks that are non-zero (what the products still compute).
    pub fn density(&self) -> f64 {
        let groups = self.starts.len() - 1;
        if groups == 0 || self.dim == 0 {
            return 0.0;
        }
        self.feats.len() as f64 / (groups * self.dim) as f64
    }

    /// Bytes of the index.
    pub fn bytes(&self) -> usize {
        self.starts.len() * 4 + self.feats.len() * 2 + self.masks.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Images with a class-dependent background: each of `k` shapes is non-zero on its own
    /// random half of the features.
    fn shapes(n: usize, dim: usize, k: usize, seed: u64) -> Vec<u8> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let support: Vec<Vec<bool>> = (0..k)
            .map(|_| (0..dim).map(|_| rng.random::<bool>()).collect())
            .collect();
        let mut px = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let s = &support[rng.random_range(0..k)];
            for &on in s {
                px.push(if on { rng.random_range(1..=255) } else { 0 });
            }
        }
        px
    }

    fn zero_fraction(px: &[u8], dim: usize, order: &[u32], lanes: usize) -> f64 {
        let groups = order.len() / lanes;
        let mut zero = 0;
        for g in 0..groups {
            for j in 0..dim {
                let all = (0..lanes).all(|l| px[order[g * lanes + l] as usize * dim + j] == 0);
                zero += usize::from(all);
            }
        }
        zero as f64 / (groups * dim) as f64
    }

    #[test]
    fn order_is_a_permutation_and_groups_equal_masks() {
        let (n, dim) = (803, 40);
        let px = shapes(n, dim, 5, 1);
        let order = zero_mask_order(&px, n, dim, 8);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n as u32).collect::<Vec<_>>());
        let identity: Vec<u32> = (0..n as u32).collect();
        let (before, after) = (
            zero_fraction(&px, dim, &identity, 8),
            zero_fraction(&px, dim, &order, 8),
        );
        // Random order: a block is zero only when 8 random samples all have a shape
        // without that feature; grouped by shape, nearly every group is one shape and
        // half its blocks are zero.
        assert!(before < 0.15, "random order {before}");
        assert!(after > 0.45, "ordered {after} (random order {before})");
        // Same input, same order.
        assert_eq!(zero_mask_order(&px, n, dim, 8), order);
    }

    #[test]
    fn degenerate_sets_keep_their_order() {
        let (n, dim) = (20, 6);
        let same = vec![7u8; n * dim];
        assert_eq!(
            zero_mask_order(&same, n, dim, 8),
            (0..n as u32).collect::<Vec<_>>()
        );
        assert_eq!(zero_mask_order(&[], 0, 5, 8), Vec::<u32>::new());
        assert_eq!(zero_mask_order(&[], 3, 0, 8), vec![0, 1, 2]);
    }

    #[test]
    fn index_lists_exactly_the_non_zero_blocks() {
        let (groups, dim, lanes, cg) = (37, 23, 8, 4);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let data: Vec<u8> = (0..groups * dim * lanes)
            .map(|_| if rng.random::<f32>() < 0.8 { 0 } else { 9 })
            .collect();
        let ix = BlockIndex::new(&data, groups, dim, lanes, cg);
        let mut nonzero = 0;
        for g in 0..groups {
            let want: Vec<u16> = (0..dim)
                .filter(|&j| {
                    data[(g * dim + j) * lanes..][..lanes]
                        .iter()
                        .any(|&p| p > 0)
                })
                .map(|j| j as u16)
                .collect();
            nonzero += want.len();
            assert_eq!(ix.features(g), &want[..], "group {g}");
            let (ch, bit) = (g / cg, g % cg);
            for j in 0..dim {
                let set = ix.groups(ch)[j] >> bit & 1 == 1;
                assert_eq!(set, want.contains(&(j as u16)), "group {g} feature {j}");
            }
        }
        assert!(nonzero > 0 && nonzero < groups * dim);
        assert!((ix.density() - nonzero as f64 / (groups * dim) as f64).abs() < 1e-12);
    }
}
