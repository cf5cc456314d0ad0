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

/// The forward pass of one `y` over one set, kept with the buffer so that the reverse pass
/// and CG reuse what the forward pass computed.
#[derive(Clone, Debug, Default)]
struct SetCache {
    ok: bool,
    /// Softmax regression: `p_i` in lanes.
    probs: Vec<Lane>,
    /// The network: `relu(A)` then `P` per row ([`mlp::Net::cache_len`]).
    dense: AlignedVec,
}

impl SetCache {
    /// Sized for the forward pass over `set` (`c` classes; the network and the set's pixels
    /// when there is a hidden layer); values unchanged where they were.
    fn fit(&mut self, set: &Packed, c: usize, px: Option<(mlp::Net, &sparse::GroupPixels)>) {
        match px {
            Some((net, px)) => self.dense.resize(net.cache_len(px.rows()), 0.0),
            None => self.probs.resize(set.groups * c, [0.0; LANES]),
        }
    }

    /// Copy `src` into `self` (only what is valid).
    fn copy_from(&mut self, src: &SetCache) {
        self.ok = src.ok;
        if src.ok {
            self.probs.clone_from(&src.probs);
            if !src.dense.is_empty() {
                self.dense.clone_from(&src.dense);
            }
        }
    }
}

/// Softmax outputs of one `y` on the training and validation sets (and, for the network,
/// its hidden activations), indexed by [`Which`].
#[derive(Clone, Debug, Default)]
struct ProbCache {
    sets: [SetCache; 2],
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
        self.cache
            .get_mut()
            .sets
            .iter_mut()
            .for_each(|s| s.ok = false);
    }
}

/// Which set a pass runs over (the index of its cache and scratch).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Train = 0,
    Val = 1,
}

/// The scratch of the training set's passes.
const TR: usize = Which::Train as usize;
/// The scratch of the validation set's passes.
const VAL: usize = Which::Val as usize;

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
    /// One per set ([`Which`]): the two sets' passes of a step run side by side.
    scratch: [Scratch; 2],
    gu: Vec<f32>,
    gf: Vec<f32>,
    cache_probs: bool,
    /// Each set's forward pass when the cache is off.
    uncached: [SetCache; 2],
    /// The `x` that `omega_tr` and `dsig_tr` were computed for.
    omega_x: Vec<f32>,
    /// `σ'(x_i)/n_tr` in packed order.
    dsig_tr: Vec<f32>,
    /// The network, when `hidden > 0`.
    mlp: Option<MlpSets>,
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
            scratch: Default::default(),
            gu: vec![0.0; ylen],
            gf: vec![0.0; ylen],
            cache_probs: true,
            uncached: Default::default(),
            omega_x: Vec::new(),
            dsig_tr: Vec::new(),
            mlp,
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

    /// `train` over the training set and `val` over the validation set (either may be
    /// absent); for the network, side by side when both are given. Each writes only its own
    /// scratch and cache slot, so the results are those of running them one after the
    /// other. A Hessian pass first fills the set's slot of `y`'s cache if it is not valid.
    fn passes(&mut self, y: &CpuY, train: Option<Pass<'_>>, val: Option<Pass<'_>>) {
        let keep = self.cache_probs;
        let mut cache = y.cache.borrow_mut();
        let [c_tr, c_val] = match keep {
            true => &mut cache.sets,
            false => &mut self.uncached,
        };
        let [s_tr, s_val] = &mut self.scratch;
        let mlp = self.mlp.as_ref();
        let mut tr = SetPass {
            kern: self.kern,
            c: self.c,
            set: &self.train,
            px: mlp.map(|m| (m.net, &m.train)),
            omega: &self.omega_tr,
            keep,
            slot: c_tr,
            scratch: s_tr,
        };
        let mut va = SetPass {
            kern: self.kern,
            c: self.c,
            set: &self.val,
            px: mlp.map(|m| (m.net, &m.val)),
            omega: &self.omega_val,
            keep,
            slot: c_val,
            scratch: s_val,
        };
        let v = &y.v[..];
        match (train, val) {
            // The network's passes end in four coarse `Uᵀ·G` tasks and several barriers:
            // side by side, a thread that runs out of work in one set's pass takes work
            // from the other's (whole runs 1.13×). Softmax regression's passes are fine
            // grained already; side by side they measured 0.94–0.98× (15 rounds).
            (Some(a), Some(b)) if mlp.is_some() => {
                rayon::join(|| tr.run(v, a), || va.run(v, b));
            }
            (Some(a), Some(b)) => {
                tr.run(v, a);
                va.run(v, b);
            }
            (Some(a), None) => tr.run(v, a),
            (None, Some(b)) => va.run(v, b),
            (None, None) => {}
        }
    }

    /// `slot` sized for the forward pass of set `which` (values unchanged where it was).
    fn size_cache(&self, which: Which, slot: &mut SetCache) {
        let m = self.mlp.as_ref();
        match which {
            Which::Train => slot.fit(&self.train, self.c, m.map(|m| (m.net, &m.train))),
            Which::Val => slot.fit(&self.val, self.c, m.map(|m| (m.net, &m.val))),
        }
    }

    /// Keep the softmax outputs of every `y` a pass has seen (default: on). Off, the
    /// reverse pass recomputes the logits of `y` (one more product per set and step) and
    /// a tape of K buffers holds only `(d+1)·c` floats each.
    pub fn set_prob_cache(&mut self, on: bool) {
        self.cache_probs = on;
    }

    /// `gf ←` the training set's product of the last pass.
    fn take_gf(&mut self) {
        reduce_into(&self.scratch[TR].partial, self.ylen, &mut self.gf);
    }

    /// `gu ←` the validation set's product of the last pass, plus `2λ·v` on the weights;
    /// returns its loss plus `λ‖v‖²` (meaningful after a gradient pass with the loss).
    fn take_gu(&mut self, v: &[f32]) -> f32 {
        reduce_into(&self.scratch[VAL].partial, self.ylen, &mut self.gu);
        let mut loss: f64 = self.scratch[VAL].chunk_loss.iter().sum();
        let mut gu = std::mem::take(&mut self.gu);
        let reg = self.add_regulariser(v, &mut gu);
        self.gu = gu;
        loss += f64::from(self.lambda) * reg;
        loss as f32
    }

    /// `gu ← ∇_y F`; returns `F`.
    fn upper_into_gu(&mut self, y: &CpuY) -> f32 {
        self.passes(y, None, Some(GRAD_LOSS));
        self.take_gu(&y.v)
    }

    /// Hessian pass on the training set in direction `v`: `gf ← H_f·v` (when `grad`),
    /// `scratch[TR].sample[i] = ⟨p_i − e_i, t_i⟩`.
    fn train_hess(&mut self, x: &[f32], y: &CpuY, v: &[f32], grad: bool) {
        self.set_omega_tr(x);
        self.passes(y, Some(Pass::Hess { v, grad }), None);
        if grad {
            self.take_gf();
        }
    }

    /// `gx_i += scale·σ'(x_i)/n_tr·scratch[TR].sample[p]` for sample `i` at packed position `p`.
    fn add_mixed(&mut self, x: &[f32], scale: f32, gx: &mut [f32]) {
        self.set_omega_tr(x);
        for ((&i, &ds), &m) in self
            .train
            .order
            .iter()
            .zip(&self.dsig_tr)
            .zip(&self.scratch[TR].sample)
        {
            gx[i as usize] += scale * ds * m;
        }
    }
}

/// A gradient pass with the loss (the upper level's).
const GRAD_LOSS: Pass<'static> = Pass::Grad {
    grad: true,
    loss: true,
};

/// One set's side of [`HypercleanCpu::passes`]: the set, its weights, its scratch, and where
/// its forward pass lives: its slot of `y`'s cache, or with the cache off (`keep` false)
/// the backend's buffer for the set, never valid for a later pass.
struct SetPass<'a> {
    kern: Kernels,
    c: usize,
    set: &'a Packed,
    /// The network and this set's pixels, when there is a hidden layer.
    px: Option<(mlp::Net, &'a sparse::GroupPixels)>,
    omega: &'a [f32],
    keep: bool,
    slot: &'a mut SetCache,
    scratch: &'a mut Scratch,
}

impl SetPass<'_> {
    /// `pass` at `y`; a Hessian pass first runs the gradient pass that fills the cache
    /// when it is not valid (always, with the cache off).
    fn run(&mut self, y: &[f32], pass: Pass<'_>) {
        let valid = self.keep && self.slot.ok;
        if matches!(pass, Pass::Hess { .. }) && !valid {
            self.once(
                y,
                Pass::Grad {
                    grad: false,
                    loss: false,
                },
            );
        }
        self.once(y, pass);
    }

    /// One pass: a gradient pass sizes the forward buffer, writes it and marks the slot
    /// valid; a Hessian pass reads it.
    fn once(&mut self, y: &[f32], pass: Pass<'_>) {
        let writes = matches!(pass, Pass::Grad { .. });
        let (scratch, buf) = (&mut *self.scratch, &mut *self.slot);
        if writes {
            buf.fit(self.set, self.c, self.px);
        }
        match self.px {
            Some((net, px)) => {
                mlp::run_pass(
                    net,
                    self.set,
                    px,
                    self.omega,
                    y,
                    pass,
                    scratch,
                    &mut buf.dense,
                );
            }
            None => {
                run_pass(
                    self.kern,
                    self.set,
                    self.c,
                    self.omega,
                    y,
                    pass,
                    scratch,
                    &mut buf.probs,
                );
            }
        }
        if writes {
            buf.ok = true;
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
