//! [`HypercleanCpu`], the fast CPU backend of data hyper-cleaning: `f32`, pixels stored as
//! bytes ([`crate::hyperclean::packed`]), fused per-block passes ([`pass`]), AVX2+FMA kernels
//! selected at run time ([`crate::hyperclean::simd`]), rayon over fixed chunks. It computes
//! the products of the kernel's capability traits ([`backend`]) and nothing else.
//!
//! # Products
//!
//! * logits `S = U·W + b`: per group of 8 samples, 10 accumulators (one per class), per
//!   feature one widened pixel vector and 10 FMAs with broadcast `W[j, k]`;
//! * scatter `∇_W += Uᵀ·G`: per feature, 10 accumulators over the groups of a chunk,
//!   reduced horizontally once per chunk.
//!
//! # Determinism
//!
//! The samples are cut into chunks of [`CHUNK_GROUPS`](crate::hyperclean::packed::CHUNK_GROUPS) groups, fixed independently of the
//! number of threads; each chunk writes its own partial gradient and the partials are
//! summed in chunk order. Results do not depend on the thread count or on scheduling.
//!
//! # Passes
//!
//! Every primitive of the kernel seam is one or two passes over a set (training and, when
//! the upper-level direction takes part, validation): a *gradient pass* (logits, softmax,
//! scatter of `ω_i (p_i − e_i)`) or a *Hessian pass* (logits of `y` and of the direction,
//! scatter of `ω_i r_i`, and the per-sample mixed term `⟨p_i − e_i, t_i⟩` for free). The
//! formulas are those of [`bda_kernel::hyperclean::HypercleanReference`].
//!
//! With a hidden layer ([`HypercleanData::hidden`] > 0) the passes are those of [`mlp`]:
//! the same bookkeeping (packed order, weights, per-sample outputs), products on dense rows.

// Lane loops index several arrays in lockstep (the shape of the SIMD code they become).
#![allow(clippy::needless_range_loop)]

use std::cell::RefCell;

use bda_kernel::hyperclean::HypercleanData;
use rayon::prelude::*;

use super::packed::{LANES, Lane, Packed};
use super::simd::Kernels;
use crate::aligned::AlignedVec;
use pass::{Pass, Scratch, reduce_into, run_pass};

mod backend;
pub mod mlp;
pub mod pass;
pub mod sparse;
pub mod thin;

/// Softmax outputs of one `y` on the training and validation sets (and, for the network,
/// its hidden pre-activations), kept with the buffer so that the reverse pass and CG reuse
/// what the forward pass computed.
#[derive(Clone, Debug, Default)]
struct ProbCache {
    train_ok: bool,
    val_ok: bool,
    /// Softmax regression: `p_i` in lanes.
    train: Vec<Lane>,
    val: Vec<Lane>,
    /// The network: `A` then `P` per row ([`mlp::Net::cache_len`]).
    train_dense: AlignedVec,
    val_dense: AlignedVec,
}

impl ProbCache {
    /// The softmax outputs of one set and whether they are valid.
    fn slot(&mut self, which: Which) -> (&mut Vec<Lane>, &mut bool) {
        match which {
            Which::Train => (&mut self.train, &mut self.train_ok),
            Which::Val => (&mut self.val, &mut self.val_ok),
        }
    }
    /// The network's cache of one set and whether it is valid.
    fn dense_slot(&mut self, which: Which) -> (&mut AlignedVec, &mut bool) {
        match which {
            Which::Train => (&mut self.train_dense, &mut self.train_ok),
            Which::Val => (&mut self.val_dense, &mut self.val_ok),
        }
    }
}

/// The network's sets as dense rows, and its sizes.
#[derive(Clone, Debug)]
struct MlpSets {
    net: mlp::Net,
    train: sparse::GroupPixels,
    val: sparse::GroupPixels,
}

/// A `y` buffer of the CPU backend: the values `(W, b)` and the softmax outputs `p_i(y)`
/// of both sets once a pass has computed them.
///
/// The cache depends on `y` only (not on `x`: the weights `σ(x_i)` enter after the
/// softmax), is filled through `&self` by the passes that compute it and cleared by every
/// `&mut` write. It costs `(n_tr + n_val)·c` floats per buffer that a pass has seen
/// (400 KB at Fashion-MNIST sizes).
#[derive(Clone, Debug, Default)]
pub struct CpuY {
    v: Vec<f32>,
    cache: RefCell<ProbCache>,
}

impl CpuY {
    /// A buffer holding `v`.
    pub fn from_vec(v: Vec<f32>) -> Self {
        CpuY {
            v,
            cache: RefCell::default(),
        }
    }
    /// The values `(W, b)`.
    pub fn as_slice(&self) -> &[f32] {
        &self.v
    }
    /// Mutable values; clears the cache.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        self.invalidate();
        &mut self.v
    }
    fn invalidate(&mut self) {
        let c = self.cache.get_mut();
        c.train_ok = false;
        c.val_ok = false;
    }
}

/// Which set a pass runs over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Train,
    Val,
}

/// The fast CPU backend (`T = f32`, `X = Vec<f32>`, `Y = `[`CpuY`]).
#[derive(Clone, Debug)]
pub struct HypercleanCpu {
    c: usize,
    lambda: f32,
    kern: Kernels,
    train: Packed,
    val: Packed,
    /// `1/n_val` on real validation samples, 0 on padding.
    omega_val: Vec<f32>,
    /// `σ(x_i)/n_tr` in packed order (`train.order`), recomputed when `x` changes.
    omega_tr: Vec<f32>,
    scratch: Scratch,
    gu: Vec<f32>,
    gf: Vec<f32>,
    cache_probs: bool,
    tmp_probs: Vec<Lane>,
    /// The `x` that `omega_tr` and `dsig_tr` were computed for.
    omega_x: Vec<f32>,
    /// `σ'(x_i)/n_tr` in packed order.
    dsig_tr: Vec<f32>,
    /// The network, when `hidden > 0`.
    mlp: Option<MlpSets>,
    /// The network's cache when the cache is off.
    tmp_dense: AlignedVec,
    /// Length of a `y` buffer.
    ylen: usize,
    /// The ranges of `y` that `λ‖·‖²` regularises.
    weights: [std::ops::Range<usize>; 2],
}

impl HypercleanCpu {
    /// Pack the data of `data` (features must be pixel values `q/255`), with the fastest
    /// kernels of this machine.
    pub fn new(data: &HypercleanData<'_>) -> Result<Self, String> {
        Self::with_kernels(data, Kernels::detect(data.classes))
    }

    /// Same with a given kernel choice (tests compare both); `Avx2` falls back to
    /// `Portable` where this machine or `c` does not allow it.
    pub fn with_kernels(data: &HypercleanData<'_>, kern: Kernels) -> Result<Self, String> {
        data.validate().map_err(str::to_string)?;
        let train = Packed::ordered(data.train_x, data.train_labels, data.dim)?;
        let val = Packed::ordered(data.val_x, data.val_labels, data.dim)?;
        // AVX2 where asked for and this machine has it; the pixel products check it
        // themselves (any `c`), the rest needs `c = 10` too.
        let pixels_kern = kern;
        let kern = if kern == Kernels::Avx2 && Kernels::detect(data.classes) != Kernels::Avx2 {
            Kernels::Portable
        } else {
            kern
        };
        let mlp = (data.hidden > 0).then(|| MlpSets {
            net: mlp::Net {
                kern,
                ..mlp::Net::of(data)
            },
            train: sparse::GroupPixels::new(&train, pixels_kern),
            val: sparse::GroupPixels::new(&val, pixels_kern),
        });
        let mut omega_val = vec![0.0f32; val.padded()];
        let m = val.n as f32;
        omega_val[..val.n].iter_mut().for_each(|o| *o = 1.0 / m);
        let ylen = data.y_len();
        Ok(HypercleanCpu {
            c: data.classes,
            lambda: data.lambda,
            kern,
            omega_tr: vec![0.0; train.padded()],
            train,
            val,
            omega_val,
            scratch: Scratch::default(),
            gu: vec![0.0; ylen],
            gf: vec![0.0; ylen],
            cache_probs: true,
            tmp_probs: Vec::new(),
            omega_x: Vec::new(),
            dsig_tr: Vec::new(),
            mlp,
            tmp_dense: AlignedVec::default(),
            ylen,
            weights: data.layout().weights(),
        })
    }

    /// The kernels in use.
    pub fn kernels(&self) -> Kernels {
        self.kern
    }

    /// Fraction of the `(group × feature)` pixel blocks of the training and validation
    /// sets that are not all zero (the share of dense arithmetic the products do).
    pub fn block_density(&self) -> (f64, f64) {
        (self.train.density(), self.val.density())
    }

    /// A `y` buffer holding `v` (tests).
    pub fn y_from(&self, v: &[f32]) -> CpuY {
        CpuY::from_vec(v.to_vec())
    }

    fn ylen(&self) -> usize {
        self.ylen
    }

    /// `g += 2λ·v` on the weight matrices; returns `‖W‖²` of `v` (in `f64`, summed per
    /// [`PAR_LANES`] in order: the same bits at any thread count).
    fn add_regulariser(&self, v: &[f32], g: &mut [f32]) -> f64 {
        let mut reg = 0.0f64;
        let lambda = self.lambda;
        for r in self.weights.clone() {
            let (v, g) = (&v[r.clone()], &mut g[r]);
            let parts: Vec<f64> = g
                .par_chunks_mut(PAR_LANES)
                .zip(v.par_chunks(PAR_LANES))
                .map(|(g, v)| {
                    let mut s = 0.0f64;
                    for (g, &v) in g.iter_mut().zip(v) {
                        s += f64::from(v) * f64::from(v);
                        *g += 2.0 * lambda * v;
                    }
                    s
                })
                .collect();
            reg += parts.iter().sum::<f64>();
        }
        reg
    }

    /// `ω_p = σ(x_i)/n_tr` and `σ'(x_i)/n_tr` at packed position `p` of sample `i`,
    /// recomputed only when `x` changed.
    fn set_omega_tr(&mut self, x: &[f32]) {
        if self.omega_x.as_slice() == x {
            return;
        }
        let n = self.train.n as f32;
        self.dsig_tr.resize(self.train.n, 0.0);
        for ((o, ds), &i) in self
            .omega_tr
            .iter_mut()
            .zip(&mut self.dsig_tr)
            .zip(&self.train.order)
        {
            let s = sigmoid(x[i as usize]);
            *o = s / n;
            *ds = s * (1.0 - s) / n;
        }
        self.omega_x.clear();
        self.omega_x.extend_from_slice(x);
    }

    /// A gradient pass of `y` over one set; stores the softmax outputs in `y`'s cache
    /// (or, with the cache off, in a scratch buffer).
    /// `grad`: partial gradients into the scratch; `loss`: per-sample CE and chunk losses.
    fn grad_pass(&mut self, which: Which, y: &CpuY, grad: bool, loss: bool) {
        self.pass_over(which, y, Pass::Grad { grad, loss });
    }

    /// A Hessian pass in direction `v` at `y` over one set (the softmax outputs of `y`
    /// come from its cache, filled first if needed; with the cache off they are
    /// recomputed).
    fn hess_pass(&mut self, which: Which, y: &CpuY, v: &[f32], grad: bool) {
        let ok = self.cache_probs && *y.cache.borrow_mut().slot(which).1;
        if !ok {
            self.grad_pass(which, y, false, false);
        }
        self.pass_over(which, y, Pass::Hess { v, grad });
    }

    /// `pass` over the set `which`: the one place that picks the packed set, its weights `ω`
    /// and where the softmax outputs live — the slot of `y`'s cache for that set, or the
    /// scratch buffer with the cache off. A gradient pass sizes that buffer, writes the
    /// softmax outputs and marks the slot valid; a Hessian pass reads them (its caller has
    /// made them valid).
    fn pass_over(&mut self, which: Which, y: &CpuY, pass: Pass<'_>) {
        let (set, omega) = match which {
            Which::Train => (&self.train, &self.omega_tr),
            Which::Val => (&self.val, &self.omega_val),
        };
        let writes = matches!(pass, Pass::Grad { .. });
        let mut cache = self.cache_probs.then(|| y.cache.borrow_mut());
        if let Some(m) = &self.mlp {
            let (packed, px) = match which {
                Which::Train => (&self.train, &m.train),
                Which::Val => (&self.val, &m.val),
            };
            let (buf, ok) = match cache.as_deref_mut() {
                Some(cache) => {
                    let (buf, ok) = cache.dense_slot(which);
                    (buf, Some(ok))
                }
                None => (&mut self.tmp_dense, None),
            };
            if writes {
                buf.resize(m.net.cache_len(px.rows()), 0.0);
            }
            mlp::run_pass(m.net, packed, px, omega, &y.v, pass, &mut self.scratch, buf);
            if let (true, Some(ok)) = (writes, ok) {
                *ok = true;
            }
            return;
        }
        let (probs, ok) = match cache.as_deref_mut() {
            Some(cache) => {
                let (probs, ok) = cache.slot(which);
                (probs, Some(ok))
            }
            None => (&mut self.tmp_probs, None),
        };
        if writes {
            probs.resize(set.groups * self.c, [0.0; LANES]);
        }
        run_pass(
            self.kern,
            set,
            self.c,
            omega,
            &y.v,
            pass,
            &mut self.scratch,
            probs,
        );
        if let (true, Some(ok)) = (writes, ok) {
            *ok = true;
        }
    }

    /// Keep the softmax outputs of every `y` a pass has seen (default: on). Off, the
    /// reverse pass recomputes the logits of `y` (one more product per set and step) and
    /// a tape of K buffers holds only `(d+1)·c` floats each.
    pub fn set_prob_cache(&mut self, on: bool) {
        self.cache_probs = on;
    }

    /// `gf ← ∇_y f`.
    fn lower_grad(&mut self, x: &[f32], y: &CpuY) {
        self.set_omega_tr(x);
        self.grad_pass(Which::Train, y, true, false);
        let ylen = self.ylen();
        reduce_into(&self.scratch.partial, ylen, &mut self.gf);
    }

    /// `gu ← ∇_y F`; returns `F`.
    fn upper_into_gu(&mut self, y: &CpuY) -> f32 {
        self.grad_pass(Which::Val, y, true, true);
        let ylen = self.ylen();
        reduce_into(&self.scratch.partial, ylen, &mut self.gu);
        let mut loss: f64 = self.scratch.chunk_loss.iter().sum();
        let mut gu = std::mem::take(&mut self.gu);
        let reg = self.add_regulariser(&y.v, &mut gu);
        self.gu = gu;
        loss += f64::from(self.lambda) * reg;
        loss as f32
    }

    /// Hessian pass on the training set in direction `v`: `gf ← H_f·v` (when `grad`),
    /// `scratch.sample[i] = ⟨p_i − e_i, t_i⟩`.
    fn train_hess(&mut self, x: &[f32], y: &CpuY, v: &[f32], grad: bool) {
        self.set_omega_tr(x);
        self.hess_pass(Which::Train, y, v, grad);
        if grad {
            let ylen = self.ylen();
            reduce_into(&self.scratch.partial, ylen, &mut self.gf);
        }
    }

    /// `gx_i += scale·σ'(x_i)/n_tr·scratch.sample[p]` for sample `i` at packed position `p`.
    fn add_mixed(&mut self, x: &[f32], scale: f32, gx: &mut [f32]) {
        self.set_omega_tr(x);
        for ((&i, &ds), &m) in self
            .train
            .order
            .iter()
            .zip(&self.dsig_tr)
            .zip(&self.scratch.sample)
        {
            gx[i as usize] += scale * ds * m;
        }
    }
}

/// Elements per task of the elementwise loops over `y` buffers ([`par_lanes`]).
const PAR_LANES: usize = 1 << 15;

/// `f(first index, piece)` over pieces of [`PAR_LANES`] of `out`, in parallel: the
/// network's `y` (238,510 floats) takes ≈ 0.1 ms per loop, which left the other thread
/// idle between the passes. Elementwise, so the split does not change results.
fn par_lanes(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    out.par_chunks_mut(PAR_LANES)
        .enumerate()
        .for_each(|(k, piece)| f(k * PAR_LANES, piece));
}

/// `σ(x)` in `f32`; exact 0 and 1 for large `|x|`.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
