//! The training, validation and test sets packed for the SIMD kernels of [`super::simd`],
//! shared by softmax regression's passes and its predictions (the evaluation of a run on any
//! device).
//!
//! MNIST-format pixels are `q/255` with `q ∈ 0..=255`, so a set is stored exactly as the
//! bytes `q` (3.9 MB for 5000 × 784 instead of 15.7 MB of `f32`: both sets stay in the
//! L3 cache) and `1/255` is folded into the products. Samples are packed in *groups* of
//! [`LANES`] = 8, one group being `d × 8` bytes, feature-major: feature `j` of the 8
//! samples is one 8-byte load that widens to one AVX2 vector. The number of samples is
//! padded to a multiple of 8 with zero pixels and zero weight.

use rayon::prelude::*;

use super::blocks::{BlockIndex, zero_mask_order};
use super::simd::{Kernels, logits};

/// Samples per SIMD group.
pub const LANES: usize = 8;
/// Groups per chunk (the unit of parallel work and of the fixed-order reduction).
pub const CHUNK_GROUPS: usize = 32;

pub(crate) const INV255: f32 = 1.0 / 255.0;

pub(crate) type Lane = [f32; LANES];

/// A set of samples packed for the kernels: pixels as bytes in groups of 8, and where
/// the non-zero `(group × feature)` blocks are ([`BlockIndex`]).
///
/// The samples may be stored in another order than they were given (see
/// [`Packed::ordered`]); everything public speaks of the original order.
#[derive(Clone, Debug)]
pub struct Packed {
    /// Real samples.
    pub n: usize,
    /// Features per sample.
    pub dim: usize,
    pub(crate) groups: usize,
    /// `groups × dim × 8` bytes.
    pub(crate) data: Vec<u8>,
    /// Labels in packed order, padded with 0 to `groups × 8`.
    pub(crate) packed_labels: Vec<u8>,
    /// Labels in the original order.
    labels: Vec<u8>,
    /// `order[p]`: the original index of the sample at packed position `p`.
    pub(crate) order: Vec<u32>,
    pub(crate) index: BlockIndex,
}

impl Packed {
    /// Pack `n × dim` row-major features that are all of the form `q/255`, `q ∈ 0..=255`
    /// (MNIST-format pixels), in the order given. Errors when a value is not.
    pub fn new(x: &[f32], labels: &[u8], dim: usize) -> Result<Self, String> {
        let q = quantise(x, labels.len(), dim)?;
        Ok(Self::with_order(
            &q,
            labels,
            dim,
            (0..labels.len() as u32).collect(),
        ))
    }

    /// Same, the samples reordered so that samples with similar zero masks share a group
    /// ([`zero_mask_order`]): more all-zero blocks for the products to skip (39 % instead
    /// of 13 % on Fashion-MNIST).
    pub fn ordered(x: &[f32], labels: &[u8], dim: usize) -> Result<Self, String> {
        let q = quantise(x, labels.len(), dim)?;
        let order = zero_mask_order(&q, labels.len(), dim, LANES);
        Ok(Self::with_order(&q, labels, dim, order))
    }

    fn with_order(q: &[u8], labels: &[u8], dim: usize, order: Vec<u32>) -> Self {
        let n = labels.len();
        let groups = n.div_ceil(LANES);
        let mut data = vec![0u8; groups * dim * LANES];
        let mut lab = vec![0u8; groups * LANES];
        for (p, &i) in order.iter().enumerate() {
            let (g, l) = (p / LANES, p % LANES);
            let base = g * dim * LANES + l;
            for (j, &b) in q[i as usize * dim..(i as usize + 1) * dim]
                .iter()
                .enumerate()
            {
                data[base + j * LANES] = b;
            }
            lab[p] = labels[i as usize];
        }
        let index = BlockIndex::new(&data, groups, dim, LANES, CHUNK_GROUPS);
        Packed {
            n,
            dim,
            groups,
            data,
            packed_labels: lab,
            labels: labels.to_vec(),
            order,
            index,
        }
    }

    pub(crate) fn padded(&self) -> usize {
        self.groups * LANES
    }

    /// Bytes of group `g`.
    pub(crate) fn group(&self, g: usize) -> &[u8] {
        &self.data[g * self.dim * LANES..(g + 1) * self.dim * LANES]
    }

    /// The labels of the real samples (original order).
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Bytes of the packed pixels.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Fraction of the `(group × feature)` blocks that are not all zero: the share of the
    /// dense arithmetic the products do.
    pub fn density(&self) -> f64 {
        self.index.density()
    }
}

/// The bytes `q` of features `q/255`; an error names the first feature that is not one.
fn quantise(x: &[f32], n: usize, dim: usize) -> Result<Vec<u8>, String> {
    if dim == 0 || x.len() != n * dim {
        return Err("features do not match n × dim".into());
    }
    if dim > usize::from(u16::MAX) + 1 {
        return Err(format!(
            "{dim} features per sample: the CPU backend handles at most 65536"
        ));
    }
    x.iter()
        .enumerate()
        .map(|(k, &v)| {
            let q = (v * 255.0).round();
            if !(0.0..=255.0).contains(&q) || (q as u8 as f32) / 255.0 != v {
                let (i, j) = (k / dim, k % dim);
                return Err(format!(
                    "feature {j} of sample {i} is {v}, not a pixel value q/255 (the CPU backend stores pixels as bytes)"
                ));
            }
            Ok(q as u8)
        })
        .collect()
}

/// Predicted classes of a packed set at `y` (argmax of the logits; first maximum wins),
/// in the set's original sample order.
pub fn predict(kern: Kernels, set: &Packed, c: usize, y: &[f32]) -> Vec<u8> {
    let d = set.dim;
    let mut out = vec![0u8; set.padded()];
    out.par_chunks_mut(CHUNK_GROUPS * LANES)
        .enumerate()
        .for_each(|(ch, oc)| {
            let mut s = vec![[0.0f32; LANES]; c];
            for (gi, o) in oc.chunks_mut(LANES).enumerate() {
                let g = ch * CHUNK_GROUPS + gi;
                logits(kern, set.group(g), set.index.features(g), y, d, c, &mut s);
                for l in 0..LANES {
                    let mut best = 0;
                    for k in 1..c {
                        if s[k][l] > s[best][l] {
                            best = k;
                        }
                    }
                    o[l] = best as u8;
                }
            }
        });
    let mut given = vec![0u8; set.n];
    for (&i, &p) in set.order.iter().zip(&out) {
        given[i as usize] = p;
    }
    given
}
