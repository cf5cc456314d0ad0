//! The ReLU network on the CPU ([`Mlp`], the authors' 784-300-10 classifier): the same
//! products as `linear.rs` for softmax regression, on the same packed sets (sample
//! order, weights, per-sample outputs line up with the linear model's bookkeeping).
//!
//! # Products (rows `U`, `n × d`; `W₁`, `d × H`; `W₂`, `H × c`)
//!
//! * forward: `A = U·W₁ + b₁`, `S = relu(A)·W₂ + b₂`, `P = softmax(S)`; `relu(A)` and `P`
//!   are the per-set cache of a `y` buffer (the Hessian passes of the reverse sweep reuse
//!   them; `relu(A) > 0` exactly where `A > 0`, so the ReLU masks come from it too);
//! * gradient: `G = ω ⊙ (P − E)`, `∇W₂ = relu(A)ᵀG`, `G_a = (G·W₂ᵀ) ⊙ 1[A > 0]`,
//!   `∇W₁ = Uᵀ·G_a`;
//! * Hessian in direction `v` (the R-operator, as [`HypercleanReference`]): tangent
//!   `R_a = U·V₁ + v_{b₁}`, `R_h = R_a ⊙ 1[A > 0]`, `T = R_h·W₂ + relu(A)·V₂ + v_{b₂}`;
//!   `R = ω ⊙ (P ⊙ T − P·⟨P, T⟩)`; `∇W₂ ← relu(A)ᵀR + R_hᵀG`,
//!   `R G_a = (R·W₂ᵀ + G·V₂ᵀ) ⊙ 1[A > 0]`, `∇W₁ ← Uᵀ·R G_a`; per sample `⟨p − e, t⟩`.
//!
//! The two `n × d × H` products of each pass, `U·W₁` (or `U·V₁`) and `Uᵀ·G_a`, skip the
//! all-zero pixel blocks ([`super::sparse`]); the rest is `H·c`-thin products per chunk of
//! [`ROWS`] rows ([`super::thin`]: against `W₂ᵀ`, `V₂ᵀ` transposed once per pass), one
//! partial of the small blocks per chunk, summed in chunk order. Rows are `hp` wide (`H`
//! rounded up to [`sparse::TILE`], padding zero). Results do not depend on the thread
//! count.
//!
//! [`HypercleanReference`]: bda_kernel::hyperclean::HypercleanReference

// Row loops index several arrays in lockstep.
#![allow(clippy::needless_range_loop)]

use std::ops::Range;

use bda_kernel::hyperclean::{Classifier, HypercleanData, Layout};
use rayon::prelude::*;

use super::packed::{LANES, Packed};
use super::pass::{Pass, Scratch};
use super::simd::Kernels;
use super::sparse::{self, GroupPixels};
use super::split::UNIT_ROWS;
use super::thin::{col_dots, row_dots, spread, transpose_padded};
use super::{CpuClassifier, Predictor};
use crate::aligned::AlignedVec;
use crate::linalg::gemm;

/// The ReLU network ([`Classifier::Mlp`]): its sizes and kernels ([`Net`]); the pixels of
/// each set are kept as group blocks for the first layer's sparse products.
#[derive(Clone, Copy, Debug)]
pub struct Mlp {
    net: Net,
    pixels: Kernels,
}

impl Mlp {
    /// The network's sizes.
    pub fn net(&self) -> Net {
        self.net
    }
}

impl CpuClassifier for Mlp {
    type Set = GroupPixels;
    /// `relu(A)` then `P` per row ([`Net::cache_len`]).
    type Forward = AlignedVec;

    fn of(data: &HypercleanData<'_>, kern: Kernels, pixels: Kernels) -> Result<Self, String> {
        match data.classifier {
            Classifier::Mlp { .. } => Ok(Mlp {
                net: Net {
                    kern,
                    ..Net::of(data)
                },
                pixels,
            }),
            other => Err(format!("{other:?} is not the network")),
        }
    }

    fn prepare(&self, set: &Packed) -> GroupPixels {
        GroupPixels::new(set, self.pixels)
    }

    fn fit(&self, _: &Packed, px: &GroupPixels, fwd: &mut AlignedVec) {
        fwd.resize(self.net.cache_len(px.rows()), 0.0);
    }

    /// Yes: the passes end in four coarse `Uᵀ·G` tasks and several barriers; side by side,
    /// a thread that runs out of work in one set's pass takes work from the other's (whole
    /// runs 1.13×).
    fn side_by_side(&self) -> bool {
        true
    }

    const LOSS_ROWS: usize = ROWS;

    /// Run `pass` over the rows `own` of `set` (its pixels `px`) with per-row weights
    /// `omega` (zero on padding). Fills `scratch.thin_part` (per chunk of [`ROWS`]) and
    /// `scratch.w1grad` (`Uᵀ·G_a` per unit of [`UNIT_ROWS`], or their sum in unit order when
    /// `own` starts at row 0) when the pass asks for the
    /// product, `scratch.chunk_loss[chunk]`, `scratch.sample[row]`.
    ///
    /// `cache` (`Net::cache_len(rows)` floats: `relu(A)` then `P`) holds the forward pass of `y`: a
    /// gradient pass writes it, a Hessian pass reads it.
    fn run_pass(
        &self,
        set: &Packed,
        px: &GroupPixels,
        omega: &[f32],
        y: &[f32],
        pass: Pass<'_>,
        own: Range<usize>,
        scratch: &mut Scratch,
        fwd: &mut AlignedVec,
    ) {
        let (net, cache) = (self.net, &mut fwd[..]);
        let (h, hp, c, d) = (net.h, net.hp, net.c, net.d);
        let rows = px.rows();
        assert_eq!(cache.len(), net.cache_len(rows));
        // A rank's rows start at a unit, or are none (at the end of the set).
        debug_assert!(own.is_empty() || own.start % UNIT_ROWS == 0, "{own:?}");
        let nch = own.len().div_ceil(ROWS);
        let thin = net.thin_len();
        let want_grad = match pass {
            Pass::Grad { grad, .. } | Pass::Hess { grad, .. } => grad,
        };
        scratch.chunk_loss.resize(nch, 0.0);
        scratch.sample.resize(own.len(), 0.0);
        // Padding columns of G_a are never written: zero from the first resize on.
        scratch.ga.resize(rows * hp, 0.0);
        scratch.ra.resize(rows * hp, 0.0);
        scratch.thin_part.resize(nch * thin, 0.0);
        // The second layer's weights (and direction) transposed for the thin products.
        transpose_padded(net.w2(y), h, c, hp, &mut scratch.w2t);
        if let Pass::Hess { v, .. } = pass {
            transpose_padded(net.w2(v), h, c, hp, &mut scratch.v2t);
        }
        let (w2t, v2t) = (&scratch.w2t[..], &scratch.v2t[..]);
        let (act, probs) = cache.split_at_mut(rows * hp);
        let (act, probs) = (
            &mut act[own.start * hp..own.end * hp],
            &mut probs[own.start * c..own.end * c],
        );
        let (ga, ra) = (
            &mut scratch.ga[own.start * hp..own.end * hp],
            &mut scratch.ra[own.start * hp..own.end * hp],
        );
        // The first layer's product, this share's rows at once: A = U·W₁ (forward) or
        // U·V₁ (tangent).
        let (w1, dst) = match pass {
            Pass::Grad { .. } => (net.w1(y), &mut *act),
            Pass::Hess { v, .. } => (net.w1(v), &mut *ra),
        };
        px.pack(w1, h, hp, &mut scratch.wpad);
        px.times(&scratch.wpad, hp, own.start / LANES, dst);
        let labels = &set.packed_labels;
        act.par_chunks_mut(ROWS * hp)
            .zip(probs.par_chunks_mut(ROWS * c))
            .zip(ga.par_chunks_mut(ROWS * hp))
            .zip(ra.par_chunks_mut(ROWS * hp))
            .zip(scratch.sample.par_chunks_mut(ROWS))
            .zip(scratch.thin_part.par_chunks_mut(thin))
            .zip(scratch.chunk_loss.par_iter_mut())
            .enumerate()
            .for_each(|(ch, ((((((a, p), ga), ra), sample), part), loss))| {
                let r0 = own.start + ch * ROWS;
                let m = a.len() / hp;
                let rows = Rows {
                    net,
                    labels: &labels[r0..r0 + m],
                    omega: &omega[r0..r0 + m],
                    m,
                    w2t,
                    v2t,
                };
                let bufs = ChunkBufs {
                    a,
                    p,
                    ga,
                    ra,
                    sample,
                    part,
                };
                match net.kern {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `Kernels::Avx2` is only chosen after detecting AVX2 and FMA.
                    Kernels::Avx2 => *loss = unsafe { chunk_avx2(&rows, y, pass, bufs) },
                    _ => *loss = chunk(&rows, y, pass, bufs),
                }
            });
        if !want_grad {
            return;
        }
        // ∇W₁ = Uᵀ·G_a, rows of hp: per unit, or all units summed in order where the
        // ranks' running sum arrives as zeros (the share starts at row 0), so that the
        // units can be added as they are computed.
        let units = own.start / UNIT_ROWS..own.end.div_ceil(UNIT_ROWS);
        let per_unit = own.start != 0;
        let n = if per_unit { units.len() } else { 1 };
        scratch.w1grad.resize(n * d * hp, 0.0);
        px.transpose_times(&scratch.ga, hp, units, per_unit, &mut scratch.w1grad);
    }

    /// `[thin blocks | ∇W₁]` in the products' layouts (`W₂` transposed, rows of `hp`,
    /// pixels in the set's order).
    fn partial_len(&self) -> usize {
        self.net.thin_len() + self.net.d * self.net.hp
    }

    fn add_partials(&self, scratch: &Scratch, range: Range<usize>, acc: &mut [f32]) {
        // `[thin | ∇W₁]`: each block's partials added where `range` meets it.
        let thin = self.net.thin_len();
        let w1 = self.net.d * self.net.hp;
        for (start, len, parts) in [
            (0, thin, &scratch.thin_part[..]),
            (thin, w1, &scratch.w1grad[..]),
        ] {
            let (lo, hi) = (range.start.max(start), range.end.min(start + len));
            if lo >= hi {
                continue;
            }
            let acc = &mut acc[lo - range.start..hi - range.start];
            for p in parts.chunks_exact(len) {
                acc.iter_mut()
                    .zip(&p[lo - start..hi - start])
                    .for_each(|(o, v)| *o += v);
            }
        }
    }

    fn finish(&self, px: &GroupPixels, sum: &[f32], out: &mut [f32]) {
        let net = self.net;
        let (h, hp, c) = (net.h, net.hp, net.c);
        let (thin, w1) = sum.split_at(net.thin_len());
        let (sb1, rest) = thin.split_at(hp);
        let (sw2t, sb2) = rest.split_at(c * hp);
        out[net.layout.b1..net.layout.w2].copy_from_slice(&sb1[..h]);
        for (j, row) in out[net.layout.w2..net.layout.b2]
            .chunks_exact_mut(c)
            .enumerate()
        {
            row.iter_mut()
                .enumerate()
                .for_each(|(k, o)| *o = sw2t[k * hp + j]);
        }
        out[net.layout.b2..].copy_from_slice(sb2);
        px.unpack(w1, h, hp, &mut out[net.layout.w1..net.layout.b1]);
    }

    fn predictor<'a>(&self, x: &'a [f32], _: &[u8]) -> Result<Predictor<'a>, String> {
        let net = self.net;
        if x.len() % net.d != 0 {
            return Err("features do not match n × dim".into());
        }
        Ok(Predictor::new(move |y| predict(net, x, y)))
    }
}

/// Rows per chunk of the thin products (a multiple of the 8 rows of a group).
pub const ROWS: usize = 128;

/// The network's sizes and where its blocks lie in a `y` buffer.
#[derive(Clone, Copy, Debug)]
pub struct Net {
    /// Features `d`.
    pub d: usize,
    /// Hidden units `H`.
    pub h: usize,
    /// Row width of the hidden layer's buffers: `H` rounded up to [`sparse::TILE`].
    pub hp: usize,
    /// Classes `c`.
    pub c: usize,
    /// Blocks of `y`.
    pub layout: Layout,
    /// The kernels of the thin products ([`super::thin`]).
    pub kern: Kernels,
}

impl Net {
    /// The network of `data` (no hidden unit for softmax regression).
    pub fn of(data: &HypercleanData<'_>) -> Self {
        let h = data.classifier.hidden();
        Net {
            d: data.dim,
            h,
            hp: sparse::padded_width(h),
            c: data.classes,
            layout: data.layout(),
            kern: Kernels::detect(data.classes),
        }
    }
    /// Length of a `y` buffer.
    pub fn y_len(&self) -> usize {
        self.layout.b2 + self.c
    }
    /// Floats of a set's cache (`relu(A)` with rows of `hp`, then `P`) for `rows` rows.
    pub fn cache_len(&self, rows: usize) -> usize {
        rows * (self.hp + self.c)
    }
    /// Length of a chunk's partial of the thin blocks: `b₁` (`hp`), `W₂ᵀ` (`c × hp`), `b₂`
    /// (the blocks of `y` after `W₁`, `W₂` transposed and rows padded as [`super::thin`] leaves
    /// them).
    fn thin_len(&self) -> usize {
        self.hp * (1 + self.c) + self.c
    }
    fn w1<'a>(&self, y: &'a [f32]) -> &'a [f32] {
        &y[self.layout.w1..self.layout.b1]
    }
    fn b1<'a>(&self, y: &'a [f32]) -> &'a [f32] {
        &y[self.layout.b1..self.layout.w2]
    }
    fn w2<'a>(&self, y: &'a [f32]) -> &'a [f32] {
        &y[self.layout.w2..self.layout.b2]
    }
    fn b2<'a>(&self, y: &'a [f32]) -> &'a [f32] {
        &y[self.layout.b2..]
    }
}

/// One chunk's slices of the pass's buffers (see [`Rows`]).
struct ChunkBufs<'a> {
    a: &'a mut [f32],
    p: &'a mut [f32],
    ga: &'a mut [f32],
    ra: &'a mut [f32],
    sample: &'a mut [f32],
    part: &'a mut [f32],
}

/// [`chunk`] compiled with AVX2+FMA, so that its element loops (bias, ReLU, masks, softmax,
/// column sums) run 8 wide; the same operations in the same order, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chunk_avx2(rows: &Rows<'_>, y: &[f32], pass: Pass<'_>, b: ChunkBufs<'_>) -> f64 {
    chunk(rows, y, pass, b)
}

/// One chunk of a pass; returns its loss term (0 unless a gradient pass asks for it).
#[inline(always)]
fn chunk(rows: &Rows<'_>, y: &[f32], pass: Pass<'_>, b: ChunkBufs<'_>) -> f64 {
    let ChunkBufs {
        a,
        p,
        ga,
        ra,
        sample,
        part,
    } = b;
    match pass {
        Pass::Grad { grad, loss } => {
            let l = rows.forward(y, a, p, loss.then_some(sample));
            if grad {
                rows.backward(a, p, ga, part);
            }
            l
        }
        Pass::Hess { v, grad } => {
            rows.hessian(v, a, p, ra, grad, ga, sample, part);
            0.0
        }
    }
}

/// The rows of one chunk and what they need.
struct Rows<'a> {
    net: Net,
    labels: &'a [u8],
    omega: &'a [f32],
    m: usize,
    /// `W₂ᵀ` and (Hessian passes) `V₂ᵀ`, `c × hp`.
    w2t: &'a [f32],
    v2t: &'a [f32],
}

impl Rows<'_> {
    /// `a ← relu(a + b₁)` (`a` holds `U·W₁`), `P = softmax(a·W₂ + b₂)` into `p`; with
    /// `ce`, the per-row `CE_i` into it and `Σ ω_i CE_i` returned (else 0).
    #[inline(always)]
    fn forward(&self, y: &[f32], a: &mut [f32], p: &mut [f32], ce: Option<&mut [f32]>) -> f64 {
        let Net { hp, c, kern, .. } = self.net;
        add_bias(a, hp, self.net.b1(y));
        a.iter_mut().for_each(|v| *v = v.max(0.0));
        bias_rows(p, self.net.b2(y));
        row_dots(kern, &[(a, self.w2t)], hp, c, p);
        let mut sum = 0.0f64;
        match ce {
            Some(ce) => {
                for (i, row) in p.chunks_exact_mut(c).enumerate() {
                    // CE = log Σ_k e^{s_k} − s_label = m + ln z − s_label.
                    let s_label = row[self.labels[i] as usize];
                    let (mx, z) = softmax(row);
                    ce[i] = mx + z.ln() - s_label;
                    sum += f64::from(self.omega[i]) * f64::from(ce[i]);
                }
            }
            None => p.chunks_exact_mut(c).for_each(|row| {
                softmax(row);
            }),
        }
        sum
    }

    /// `G = ω(P − E)`.
    #[inline(always)]
    fn residual(&self, p: &[f32]) -> Vec<f32> {
        let c = self.net.c;
        let mut g = p.to_vec();
        for (i, row) in g.chunks_exact_mut(c).enumerate() {
            row[self.labels[i] as usize] -= 1.0;
            row.iter_mut().for_each(|v| *v *= self.omega[i]);
        }
        g
    }

    /// The gradient's thin blocks into `part` (`b₁`, `W₂ᵀ`, `b₂`) and `G_a` into `ga`.
    #[inline(always)]
    fn backward(&self, a: &[f32], p: &[f32], ga: &mut [f32], part: &mut [f32]) {
        let Net { hp, c, kern, .. } = self.net;
        let g = self.residual(p);
        let (pb1, rest) = part.split_at_mut(hp);
        let (pw2t, pb2) = rest.split_at_mut(c * hp);
        // ∇W₂ᵀ = Gᵀ·relu(A), ∇b₂ = Σ G.
        col_dots(kern, &[(&g, a)], hp, c, pw2t);
        col_sums(&g, c, pb2);
        // G_a = (G·W₂ᵀ) ⊙ 1[A > 0], ∇b₁ = Σ G_a.
        spread(kern, &[(&g, self.w2t)], a, hp, c, ga, pb1);
    }

    /// A Hessian pass of the chunk in direction `v` (see the module docs); `ra` holds
    /// `U·V₁` and becomes `R_h`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn hessian(
        &self,
        v: &[f32],
        a: &[f32],
        p: &[f32],
        ra: &mut [f32],
        grad: bool,
        ga: &mut [f32],
        sample: &mut [f32],
        part: &mut [f32],
    ) {
        let Net { hp, c, kern, .. } = self.net;
        let m = self.m;
        let net = self.net;
        // R_h = (U·V₁ + v_b₁) ⊙ 1[A > 0].
        let rh = ra;
        add_bias(rh, hp, net.b1(v));
        mask(rh, a);
        // T = R_h·W₂ + relu(A)·V₂ + v_b₂.
        let hid = a;
        let mut t = vec![0.0f32; m * c];
        bias_rows(&mut t, net.b2(v));
        row_dots(kern, &[(rh, self.w2t), (hid, self.v2t)], hp, c, &mut t);
        // ⟨p − e, t⟩ per row, and R = ω(P ⊙ T − P⟨P, T⟩) in place of T.
        for i in 0..m {
            let (pi, ti) = (&p[i * c..(i + 1) * c], &mut t[i * c..(i + 1) * c]);
            let pt: f32 = pi.iter().zip(ti.iter()).map(|(p, t)| p * t).sum();
            sample[i] = pt - ti[self.labels[i] as usize];
            let w = self.omega[i];
            ti.iter_mut()
                .zip(pi)
                .for_each(|(t, p)| *t = w * p * (*t - pt));
        }
        if !grad {
            return;
        }
        let r = t;
        let g = self.residual(p);
        let (pb1, rest) = part.split_at_mut(hp);
        let (pw2t, pb2) = rest.split_at_mut(c * hp);
        // ∇W₂ᵀ ← Rᵀ·relu(A) + Gᵀ·R_h, ∇b₂ ← Σ R.
        col_dots(kern, &[(&r, hid), (&g, rh)], hp, c, pw2t);
        col_sums(&r, c, pb2);
        // R G_a = (R·W₂ᵀ + G·V₂ᵀ) ⊙ 1[A > 0], ∇b₁ ← Σ R G_a.
        spread(kern, &[(&r, self.w2t), (&g, self.v2t)], a, hp, c, ga, pb1);
    }
}

/// `row[..b.len()] += b` for every row of `out` (rows of `width`).
#[inline(always)]
fn add_bias(out: &mut [f32], width: usize, b: &[f32]) {
    for row in out.chunks_exact_mut(width) {
        row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
    }
}

/// Every row of `out` (row length `b.len()`) set to `b`.
#[inline(always)]
fn bias_rows(out: &mut [f32], b: &[f32]) {
    for row in out.chunks_exact_mut(b.len()) {
        row.copy_from_slice(b);
    }
}

/// `relu(a)` in a new buffer.
fn relu(a: &[f32]) -> Vec<f32> {
    a.iter().map(|&v| v.max(0.0)).collect()
}

/// `g ← g ⊙ 1[a > 0]` (ReLU's derivative, 0 at the kink as PyTorch takes it).
///
/// A select that always stores: written as a conditional store (`if a <= 0 { *g = 0 }`)
/// it compiled to a compare per element and a branch around each store (the per-chunk
/// passes fell from 8.3 % to 2.3 % of a run's profile with the select).
#[inline(always)]
fn mask(g: &mut [f32], a: &[f32]) {
    g.iter_mut()
        .zip(a)
        .for_each(|(g, &a)| *g = if a <= 0.0 { 0.0 } else { *g });
}

/// Sums of the first `out.len()` columns of `g` (rows of `width`) into `out` (row order).
#[inline(always)]
fn col_sums(g: &[f32], width: usize, out: &mut [f32]) {
    out.fill(0.0);
    for row in g.chunks_exact(width) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
}

/// `row ← softmax(row)` with the max shift; returns the shift and the normaliser.
#[inline(always)]
fn softmax(row: &mut [f32]) -> (f32, f32) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut z = 0.0f32;
    row.iter_mut().for_each(|v| {
        *v = (*v - m).exp();
        z += *v;
    });
    row.iter_mut().for_each(|v| *v /= z);
    (m, z)
}

/// Predicted classes of the `n × d` rows `x` by the network `y` (evaluation; dense, chunked).
pub fn predict(net: Net, x: &[f32], y: &[f32]) -> Vec<u8> {
    let Net { d, h, c, .. } = net;
    let n = x.len() / d;
    let mut out = vec![0u8; n];
    out.par_chunks_mut(ROWS)
        .enumerate()
        .for_each(|(ch, labels)| {
            let m = labels.len();
            let u = &x[ch * ROWS * d..(ch * ROWS + m) * d];
            let mut a = vec![0.0f32; m * h];
            bias_rows(&mut a, net.b1(y));
            gemm(m, d, h, 1.0, u, d, 1, net.w1(y), h, 1, 1.0, &mut a, h, 1);
            let hid = relu(&a);
            let mut s = vec![0.0f32; m * c];
            bias_rows(&mut s, net.b2(y));
            gemm(m, h, c, 1.0, &hid, h, 1, net.w2(y), c, 1, 1.0, &mut s, c, 1);
            for (l, row) in labels.iter_mut().zip(s.chunks_exact(c)) {
                let mut best = 0;
                for k in 1..c {
                    if row[k] > row[best] {
                        best = k;
                    }
                }
                *l = best as u8;
            }
        });
    out
}
