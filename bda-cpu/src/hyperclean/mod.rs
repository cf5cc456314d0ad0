//! Data hyper-cleaning on the CPU: one backend per classifier ([`LinearCpu`],
//! [`MlpCpu`]), `f32`, pixels stored as bytes ([`packed`]), fused per-block passes, AVX2+FMA
//! kernels selected at run time ([`simd`]), rayon over fixed chunks. A backend computes
//! the products of the kernel's capability traits (`backend.rs`) and nothing else.
//!
//! # One backend per classifier
//!
//! [`HypercleanCpu<C>`] holds what every classifier shares — the packed sets, the sample
//! weights `σ(x_i)`, the per-`y` cache of forward passes, the scratch, the regulariser and
//! the elementwise steps — and a [`CpuClassifier`] `C` computes one pass over one set: the
//! gradient or the Hessian–vector product of `Σ ω_i CE_i`, and predictions.
//! [`Linear`] (softmax regression, `linear.rs`) and [`Mlp`] (the ReLU network, [`mlp`])
//! are the two; a new classifier is one more implementation.
//!
//! # Products of softmax regression
//!
//! * logits `S = U·W + b`: per group of 8 samples, 10 accumulators (one per class), per
//!   feature one widened pixel vector and 10 FMAs with broadcast `W[j, k]`;
//! * scatter `∇_W += Uᵀ·G`: per feature, 10 accumulators over the groups of a chunk,
//!   reduced horizontally once per chunk.
//!
//! # Determinism
//!
//! The samples are cut into chunks of [`CHUNK_GROUPS`](packed::CHUNK_GROUPS) groups (rows
//! for the network), fixed independently of the number of threads; each chunk writes its
//! own partial gradient and the partials are summed in chunk order. Results do not depend
//! on the thread count or on scheduling, nor on the number of ranks the chunks are split
//! over ([`split`], [`HypercleanCpu::with_ranks`]).
//!
//! # Passes
//!
//! Every primitive of the kernel seam is one or two passes over a set (training and, when
//! the upper-level direction takes part, validation): a *gradient pass* (logits, softmax,
//! scatter of `ω_i (p_i − e_i)`) or a *Hessian pass* (logits of `y` and of the direction,
//! scatter of `ω_i r_i`, and the per-sample mixed term `⟨p_i − e_i, t_i⟩` for free). The
//! formulas are those of [`bda_kernel::hyperclean::HypercleanReference`].

// Lane loops index several arrays in lockstep (the shape of the SIMD code they become).
#![allow(clippy::needless_range_loop)]

use std::cell::RefCell;
use std::sync::Arc;

use bda_kernel::hyperclean::HypercleanData;
use rayon::prelude::*;

use bda_kernel::collective::Collective;
use packed::Packed;
use pass::{Pass, Scratch};
use simd::Kernels;
use split::Split;

mod backend;
pub mod blocks;
mod linear;
pub mod mlp;
pub mod packed;
pub mod pass;
pub mod simd;
pub mod sparse;
pub mod split;
pub mod thin;

pub use linear::Linear;
pub use mlp::Mlp;

/// Softmax regression on the CPU.
pub type LinearCpu = HypercleanCpu<Linear>;
/// The ReLU network on the CPU.
pub type MlpCpu = HypercleanCpu<Mlp>;

/// A classifier's products on the CPU: one pass over (a share of) one set, the sum of its
/// partials, and predictions. The bookkeeping around the passes (weights, caches, scratch,
/// the split over ranks) is [`HypercleanCpu`]'s, the same for every classifier.
pub trait CpuClassifier: Clone + std::fmt::Debug + Send + Sync + Sized + 'static {
    /// What a pass needs of a set besides the packed samples (the network: its pixels as
    /// group blocks).
    type Set: Clone + std::fmt::Debug + Send + Sync;
    /// The forward pass of one `y` over one set, kept with the buffer for the Hessian
    /// passes that follow.
    type Forward: Clone + std::fmt::Debug + Default + Send;

    /// The classifier of `data` with the kernels `kern` (already checked against this
    /// machine and `c`; `pixels` is the caller's choice for the pixel products, which
    /// check it themselves); an error when `data` describes another classifier.
    fn of(data: &HypercleanData<'_>, kern: Kernels, pixels: Kernels) -> Result<Self, String>;

    /// What a pass needs of `set`, computed once.
    fn prepare(&self, set: &Packed) -> Self::Set;

    /// Size `fwd` for the forward pass over `set` (values unchanged where they were).
    fn fit(&self, set: &Packed, prepared: &Self::Set, fwd: &mut Self::Forward);

    /// Whether the two sets' passes of a step run side by side (`rayon::join`): worth it
    /// when a pass ends in few coarse tasks.
    fn side_by_side(&self) -> bool;

    /// Packed rows per entry of `scratch.chunk_loss` (divides [`split::UNIT_ROWS`]).
    const LOSS_ROWS: usize;

    /// Run `pass` over the packed rows `rows` of `set` (whole units of
    /// [`split::UNIT_ROWS`]: this rank's share) with per-sample weights `omega` (packed
    /// order, zero on padding): fills `scratch.partial` with the partials of the product
    /// that [`Self::add_partials`] adds (when the pass asks for it), `scratch.chunk_loss`
    /// (one per [`Self::LOSS_ROWS`] rows of `rows`), `scratch.sample` (one per row of
    /// `rows`). A gradient pass writes `fwd`, a Hessian pass reads it (the rows of
    /// `rows`).
    #[allow(clippy::too_many_arguments)]
    fn run_pass(
        &self,
        set: &Packed,
        prepared: &Self::Set,
        omega: &[f32],
        y: &[f32],
        pass: Pass<'_>,
        rows: std::ops::Range<usize>,
        scratch: &mut Scratch,
        fwd: &mut Self::Forward,
    );

    /// Length of the vector the ranks' partials are summed in (the classifier's layout of
    /// a `y`-shaped product).
    fn partial_len(&self) -> usize;

    /// `acc += ` the elements `range` of the partials of the last pass, unit by unit in
    /// order (the ranks' chain: every element is added in unit order, on one rank or many;
    /// `acc.len() == range.len()`).
    fn add_partials(&self, scratch: &Scratch, range: std::ops::Range<usize>, acc: &mut [f32]);

    /// `out ←` the summed partials `sum` in `y`'s layout.
    fn finish(&self, prepared: &Self::Set, sum: &[f32], out: &mut [f32]);

    /// The predictions of any `y` on the samples `x` (`n × d` rows of pixel values `q/255`)
    /// — the validation and test sets of a run, whatever device trained it.
    fn predictor<'a>(&self, x: &'a [f32], labels: &[u8]) -> Result<Predictor<'a>, String>;
}

/// The predicted classes (argmax of the logits, first maximum wins) of a fixed set of
/// samples, for any `y` of one classifier, in the samples' order.
pub struct Predictor<'a> {
    predict: Box<Predict<'a>>,
}

/// The classes predicted for a `y`.
type Predict<'a> = dyn Fn(&[f32]) -> Vec<u8> + Send + Sync + 'a;

impl<'a> Predictor<'a> {
    /// Wrap a prediction function.
    pub fn new(predict: impl Fn(&[f32]) -> Vec<u8> + Send + Sync + 'a) -> Self {
        Predictor {
            predict: Box::new(predict),
        }
    }

    /// The classes `y` predicts.
    pub fn predict(&self, y: &[f32]) -> Vec<u8> {
        (self.predict)(y)
    }
}

/// The predictor of classifier `C` for the problem of `data` on the samples `x` (the one
/// evaluation every device's run uses).
pub fn predictor<'a, C: CpuClassifier>(
    data: &HypercleanData<'_>,
    x: &'a [f32],
    labels: &[u8],
) -> Result<Predictor<'a>, String> {
    let kern = Kernels::detect(data.classes);
    C::of(data, kern, kern)?.predictor(x, labels)
}

/// The forward pass of one `y` over one set, kept with the buffer so that the reverse pass
/// and CG reuse what the forward pass computed.
#[derive(Clone, Debug, Default)]
struct SetCache<F> {
    ok: bool,
    fwd: F,
}

impl<F: Clone> SetCache<F> {
    /// Copy `src` into `self` (only what is valid).
    fn copy_from(&mut self, src: &SetCache<F>) {
        self.ok = src.ok;
        if src.ok {
            self.fwd.clone_from(&src.fwd);
        }
    }
}

/// The forward passes of one `y` on the training and validation sets, indexed by [`Which`].
#[derive(Clone, Debug, Default)]
struct ProbCache<F> {
    sets: [SetCache<F>; 2],
}

/// A `y` buffer of the CPU backend: the values, and the forward passes of both sets once
/// a pass has computed them (softmax regression: the softmax outputs `p_i(y)`; the network:
/// also its hidden activations).
///
/// The cache depends on `y` only (not on `x`: the weights `σ(x_i)` enter after the
/// softmax), is filled through `&self` by the passes that compute it and cleared by every
/// `&mut` write. It costs `(n_tr + n_val)·c` floats per buffer that a pass has seen
/// (400 KB at Fashion-MNIST sizes) for softmax regression, `(n_tr + n_val)·(H + c)` for the
/// network.
#[derive(Clone, Debug, Default)]
pub struct CpuY<F = Vec<packed::Lane>> {
    v: Vec<f32>,
    cache: RefCell<ProbCache<F>>,
}

impl<F: Default> CpuY<F> {
    /// A buffer holding `v`.
    pub fn from_vec(v: Vec<f32>) -> Self {
        CpuY {
            v,
            cache: RefCell::default(),
        }
    }
    /// The values.
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

/// The fast CPU backend of classifier `C` (`T = f32`, `X = Vec<f32>`, `Y = `[`CpuY`]).
#[derive(Clone, Debug)]
pub struct HypercleanCpu<C: CpuClassifier> {
    classifier: C,
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
    uncached: [SetCache<C::Forward>; 2],
    /// The `x` that `omega_tr` and `dsig_tr` were computed for.
    omega_x: Vec<f32>,
    /// `σ'(x_i)/n_tr` in packed order.
    dsig_tr: Vec<f32>,
    /// What the classifier's passes need of each set ([`Which`]).
    prepared: [C::Set; 2],
    /// Length of a `y` buffer.
    ylen: usize,
    /// The ranges of `y` that `λ‖·‖²` regularises.
    weights: [std::ops::Range<usize>; 2],
    /// This rank's share of the rows of every set.
    split: Split,
    /// The partials of a pass summed over the ranks ([`CpuClassifier::partial_len`]).
    reduced: Vec<f32>,
}

impl<C: CpuClassifier> HypercleanCpu<C> {
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
        let classifier = C::of(data, kern, pixels_kern)?;
        let prepared = [classifier.prepare(&train), classifier.prepare(&val)];
        let mut omega_val = vec![0.0f32; val.padded()];
        let m = val.n as f32;
        omega_val[..val.n].iter_mut().for_each(|o| *o = 1.0 / m);
        let ylen = data.y_len();
        let split = Split::alone_on(&train, &val);
        Ok(HypercleanCpu {
            classifier,
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
            prepared,
            ylen,
            weights: data.layout().weights(),
            split,
            reduced: Vec::new(),
        })
    }

    /// Split the passes over the ranks of `comm`: this process passes over its share of
    /// the rows of each set and the shares' results are put together in chunk order, so
    /// every product has the bits of one process on any number of ranks. Every rank must
    /// make the same calls on the same `x` and `y` (the engine on identical inputs does).
    pub fn with_ranks(mut self, comm: Arc<dyn Collective>) -> Self {
        self.split = Split::new(comm, &self.train, &self.val);
        self
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
    pub fn y_from(&self, v: &[f32]) -> CpuY<C::Forward> {
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
    /// absent); side by side when both are given and the classifier asks for it. Each
    /// writes only its own scratch and cache slot, so the results are those of running
    /// them one after the other. A Hessian pass first fills the set's slot of `y`'s cache
    /// if it is not valid.
    fn passes(&mut self, y: &CpuY<C::Forward>, train: Option<Pass<'_>>, val: Option<Pass<'_>>) {
        let keep = self.cache_probs;
        let mut cache = y.cache.borrow_mut();
        let [c_tr, c_val] = match keep {
            true => &mut cache.sets,
            false => &mut self.uncached,
        };
        let [s_tr, s_val] = &mut self.scratch;
        let [p_tr, p_val] = &self.prepared;
        let cl = &self.classifier;
        let mut tr = SetPass {
            classifier: cl,
            set: &self.train,
            prepared: p_tr,
            omega: &self.omega_tr,
            keep,
            slot: c_tr,
            scratch: &mut *s_tr,
            rows: 0..0,
        };
        let mut va = SetPass {
            classifier: cl,
            set: &self.val,
            prepared: p_val,
            omega: &self.omega_val,
            keep,
            slot: c_val,
            scratch: &mut *s_val,
            rows: 0..0,
        };
        let v = &y.v[..];
        let split = &self.split;
        let (rows_tr, rows_val) = (self.train.padded(), self.val.padded());
        tr.rows = split.own_rows(TR, rows_tr);
        va.rows = split.own_rows(VAL, rows_val);
        match (train, val) {
            (Some(a), Some(b)) if cl.side_by_side() => {
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
        // What is read of the whole set after a pass: the training set's per-sample terms
        // (the mixed products) and the validation set's losses (`F`).
        if train.is_some() {
            split.gather_rows(TR, rows_tr, &mut s_tr.sample);
        }
        if matches!(val, Some(Pass::Grad { loss: true, .. })) {
            split.gather_chunks(VAL, rows_val, C::LOSS_ROWS, &mut s_val.chunk_loss);
        }
    }

    /// `slot` sized for the forward pass of set `which` (values unchanged where it was).
    fn size_cache(&self, which: Which, slot: &mut SetCache<C::Forward>) {
        let set = match which {
            Which::Train => &self.train,
            Which::Val => &self.val,
        };
        let prepared = &self.prepared[which as usize];
        self.classifier.fit(set, prepared, &mut slot.fwd);
    }

    /// Keep the softmax outputs of every `y` a pass has seen (default: on). Off, the
    /// reverse pass recomputes the logits of `y` (one more product per set and step) and
    /// a tape of K buffers holds only `(d+1)·c` floats each.
    pub fn set_prob_cache(&mut self, on: bool) {
        self.cache_probs = on;
    }

    /// `gf` (when `train`) and `gu` (when `upper` gives the `v` of its regulariser) ← the
    /// products of the last passes: their partials summed in chunk order over the ranks
    /// (one chain for both sets), in `y`'s layout, `2λ·v` added to `gu` on the weights.
    /// Returns the validation loss plus `λ‖v‖²` (meaningful after a gradient pass with the
    /// loss; 0 without `upper`).
    fn take(&mut self, train: bool, upper: Option<&[f32]>) -> f32 {
        let cl = &self.classifier;
        let n = cl.partial_len();
        let sets: Vec<Which> = [
            train.then_some(Which::Train),
            upper.is_some().then_some(Which::Val),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.reduced.resize(sets.len() * n, 0.0);
        let scratch = &self.scratch;
        self.split.chain(&mut self.reduced, &mut |range, acc| {
            // The sets' vectors lie one after the other: each adds to its part of `range`.
            for (k, &w) in sets.iter().enumerate() {
                let (lo, hi) = (range.start.max(k * n), range.end.min((k + 1) * n));
                if lo < hi {
                    let part = &mut acc[lo - range.start..hi - range.start];
                    cl.add_partials(&scratch[w as usize], lo - k * n..hi - k * n, part);
                }
            }
        });
        for (k, &w) in sets.iter().enumerate() {
            let out = match w {
                Which::Train => &mut self.gf,
                Which::Val => &mut self.gu,
            };
            cl.finish(
                &self.prepared[w as usize],
                &self.reduced[k * n..(k + 1) * n],
                out,
            );
        }
        let Some(v) = upper else { return 0.0 };
        let mut loss: f64 = self.scratch[VAL].chunk_loss.iter().sum();
        let mut gu = std::mem::take(&mut self.gu);
        let reg = self.add_regulariser(v, &mut gu);
        self.gu = gu;
        loss += f64::from(self.lambda) * reg;
        loss as f32
    }

    /// `gu ← ∇_y F`; returns `F`.
    fn upper_into_gu(&mut self, y: &CpuY<C::Forward>) -> f32 {
        self.passes(y, None, Some(GRAD_LOSS));
        self.take(false, Some(&y.v))
    }

    /// Hessian pass on the training set in direction `v`: `gf ← H_f·v` (when `grad`),
    /// `scratch[TR].sample[i] = ⟨p_i − e_i, t_i⟩`.
    fn train_hess(&mut self, x: &[f32], y: &CpuY<C::Forward>, v: &[f32], grad: bool) {
        self.set_omega_tr(x);
        self.passes(y, Some(Pass::Hess { v, grad }), None);
        if grad {
            self.take(true, None);
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
struct SetPass<'a, C: CpuClassifier> {
    classifier: &'a C,
    set: &'a Packed,
    prepared: &'a C::Set,
    omega: &'a [f32],
    keep: bool,
    slot: &'a mut SetCache<C::Forward>,
    scratch: &'a mut Scratch,
    /// The packed rows this rank passes over.
    rows: std::ops::Range<usize>,
}

impl<C: CpuClassifier> SetPass<'_, C> {
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
        let (cl, set, prepared) = (self.classifier, self.set, self.prepared);
        if writes {
            cl.fit(set, prepared, &mut self.slot.fwd);
        }
        let fwd = &mut self.slot.fwd;
        let rows = self.rows.clone();
        cl.run_pass(set, prepared, self.omega, y, pass, rows, self.scratch, fwd);
        if writes {
            self.slot.ok = true;
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
