//! The whole few-shot network — conv4 backbone and linear head — as the lower-level
//! variable on the CPU: the products of the MAML family ([`bda_kernel::fewshot::NetworkLoss`])
//! in `f32` (training) or `f64` (checks against the kernel's reference
//! [`bda_kernel::fewshot::Network`]).
//!
//! One task's products are small (5 to 100 images), so a task runs on one thread — im2col +
//! GEMM per block (module `conv`) — and the command runs the tasks of a meta-batch in parallel
//! and adds their meta-gradients in task order: results do not depend on the thread count.
//!
//! The Hessian–vector product is the R-operator: one forward pass, its tangent along `v`
//! (`block::forward_tangent`), the backward pass and its tangent
//! (`block::backward_tangent`), exact up to rounding (no finite differences). The primal
//! passes of recent gradients are kept ([`CpuTask::keeping`], module `state`): an H·v at weights
//! whose gradient was just taken — each step of a reverse pass — runs its tangent passes
//! only, about twice a gradient's convolutions (`6C` against `3C`).
//!
//! ```
//! use bda_cpu::network::{CpuTask, TaskImages};
//! use bda_kernel::fewshot::{Conv4Shape, Network, NetworkLoss, TaskSet};
//!
//! let shape = Conv4Shape { channels: 3, in_channels: 1, side: 6, blocks: 2 };
//! let net = Network { shape, ways: 2 };
//! let images: Vec<f32> = (0..4 * 36).map(|i| (i % 7) as f32 / 7.0).collect();
//! let set = TaskImages::new(&shape, &images, &[0, 1, 0, 1]);
//! let mut task = CpuTask::new(net, &set, &set);
//! let y: Vec<f32> = (0..net.num_params()).map(|i| 0.3 * ((i % 5) as f32 - 2.0)).collect();
//! let mut g = vec![0.0; y.len()];
//! let loss = task.loss_grad(&y, TaskSet::Support, &mut g);
//! let mut hg = vec![0.0; y.len()];
//! task.hvp(&y, &g, TaskSet::Support, &mut hg);
//! // gᵀHg ≥ 0 need not hold (the loss is not convex), but it is finite.
//! assert!(loss > 0.0 && hg.iter().all(|v| v.is_finite()));
//! ```

mod block;
mod conv;
mod head;
mod meta;
mod state;

pub use meta::NetworkMeta;

use bda_kernel::fewshot::{Conv4Shape, Network, NetworkLoss, TaskSet};

use crate::linalg::Float;
use block::{TangentTape, Weights};
use conv::{Conv, Scratch};
use state::{Pass, State, States};

/// One set of a task's images in the backbone's layout (`[channel][image·side²]`) and
/// their labels.
#[derive(Clone, Debug)]
pub struct TaskImages<T> {
    maps: Vec<T>,
    labels: Vec<u8>,
}

impl<T: Float> TaskImages<T> {
    /// From images in the usual layout (`labels.len()` images of `in_channels·side²`
    /// values each, channel-major).
    pub fn new(shape: &Conv4Shape, images: &[T], labels: &[u8]) -> Self {
        let (n, c, hw) = (labels.len(), shape.in_channels, shape.side * shape.side);
        assert_eq!(images.len(), n * c * hw, "images");
        let mut maps = vec![T::zero(); images.len()];
        for (i, img) in images.chunks_exact(c * hw).enumerate() {
            for ci in 0..c {
                maps[(ci * n + i) * hw..][..hw].copy_from_slice(&img[ci * hw..][..hw]);
            }
        }
        TaskImages {
            maps,
            labels: labels.to_vec(),
        }
    }

    /// Images in the set.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set has no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
}

/// One task's products on the CPU: the network and its support and query sets.
pub struct CpuTask<'a, T> {
    /// The network.
    pub net: Network,
    /// The lower objective's images.
    pub support: &'a TaskImages<T>,
    /// The upper objective's images.
    pub query: &'a TaskImages<T>,
    /// The weights of the last query gradient and how many query images they classified
    /// right: the accuracy at `y_K` comes with `F(y_K)`'s forward pass.
    last_query: Option<(Vec<T>, usize)>,
    /// Primal passes the next Hessian–vector products may reuse.
    states: States<T>,
}

/// Block `l`'s slices of a weight vector (or a direction, or a gradient).
fn weights<'y, T>(shape: &Conv4Shape, y: &'y [T], l: usize) -> Weights<'y, T> {
    let (wo, go, bo) = shape.offsets(l);
    Weights {
        w: &y[wo..go],
        gamma: &y[go..bo],
        beta: &y[bo..bo + shape.channels],
    }
}

/// Block `l`'s slices of a gradient.
fn grads<'g, T>(
    shape: &Conv4Shape,
    g: &'g mut [T],
    l: usize,
) -> (&'g mut [T], &'g mut [T], &'g mut [T]) {
    let (wo, go, bo) = shape.offsets(l);
    let (w, rest) = g[wo..bo + shape.channels].split_at_mut(go - wo);
    let (gamma, beta) = rest.split_at_mut(bo - go);
    (w, gamma, beta)
}

/// The head's `W` and `b`.
fn head_params<'y, T>(net: &Network, y: &'y [T]) -> (&'y [T], &'y [T]) {
    y[net.shape.num_params()..].split_at(net.ways * net.shape.features())
}

fn conv(shape: &Conv4Shape, l: usize, n: usize) -> Conv {
    Conv {
        c_in: shape.c_in(l),
        ch: shape.channels,
        s: shape.side_at(l),
        n,
    }
}

/// Pooled maps `[ch][n·q]` as rows of features (`n × ch·q`, PyTorch's flatten order), or
/// back with `back`.
fn rows<T: Float>(v: &[T], ch: usize, n: usize, back: bool) -> Vec<T> {
    let q = v.len() / (ch * n).max(1);
    let mut out = vec![T::zero(); v.len()];
    for o in 0..ch {
        for i in 0..n {
            let (maps, row) = ((o * n + i) * q, (i * ch + o) * q);
            let (src, dst) = if back { (row, maps) } else { (maps, row) };
            out[dst..dst + q].copy_from_slice(&v[src..src + q]);
        }
    }
    out
}

impl<'a, T: Float> CpuTask<'a, T> {
    /// The products of `net` on a task's two sets, keeping no primal pass.
    pub fn new(net: Network, support: &'a TaskImages<T>, query: &'a TaskImages<T>) -> Self {
        CpuTask {
            net,
            support,
            query,
            last_query: None,
            states: States::new(0),
        }
    }

    /// Keep the last `passes` primal passes (forward and backward at some weights, on one
    /// set), so that a Hessian–vector product at the same weights runs only its tangent
    /// passes. A K-step method's reverse pass meets its iterates again after K steps: keep
    /// as many as the engine keeps iterates (twice for BDA, whose steps take both sets).
    /// Memory: about twice the set's activations per pass. The products are the same,
    /// bit for bit, with or without.
    pub fn keeping(mut self, passes: usize) -> Self {
        self.states = States::new(passes);
        self
    }

    /// Query images that weights `y` classify right (from the last query gradient's
    /// forward pass when it was taken at `y`).
    pub fn query_hits(&self, y: &[T]) -> usize {
        if let Some((at, hits)) = &self.last_query
            && at.as_slice() == y
        {
            return *hits;
        }
        hits(&self.probabilities(y, TaskSet::Query), self.query.labels())
    }

    fn set(&self, set: TaskSet) -> &'a TaskImages<T> {
        match set {
            TaskSet::Support => self.support,
            TaskSet::Query => self.query,
        }
    }

    fn forward(&self, y: &[T], set: &TaskImages<T>, cols: &mut Scratch<T>) -> Pass<T> {
        let (a, n) = (&self.net.shape, set.len());
        assert_eq!(y.len(), self.net.num_params(), "weights");
        assert!(
            set.labels.iter().all(|&l| (l as usize) < self.net.ways),
            "labels"
        );
        let mut inputs: Vec<Vec<T>> = Vec::with_capacity(a.blocks);
        let mut tapes = Vec::with_capacity(a.blocks);
        for l in 0..a.blocks {
            let x = if l == 0 { &set.maps } else { &inputs[l - 1] };
            let (out, tape) = block::forward(conv(a, l, n), weights(a, y, l), x, cols);
            tapes.push(tape);
            inputs.push(out);
        }
        let last = inputs.pop().unwrap_or_else(|| set.maps.clone());
        Pass {
            inputs,
            tapes,
            feats: rows(&last, a.channels, n, false),
        }
    }

    /// Block `l`'s input in a pass.
    fn input<'p>(pass: &'p Pass<T>, set: &'p TaskImages<T>, l: usize) -> &'p [T] {
        if l == 0 {
            &set.maps
        } else {
            &pass.inputs[l - 1]
        }
    }

    /// Predicted classes of a set's images under weights `y` (batch norm over the set).
    pub fn predict(&self, y: &[T], set: TaskSet) -> Vec<u8> {
        predictions(&self.probabilities(y, set), self.net.ways)
    }

    /// The head's class probabilities of a set's images (a forward pass).
    fn probabilities(&self, y: &[T], set: TaskSet) -> Vec<T> {
        let set = self.set(set);
        let pass = self.forward(y, set, &mut Scratch::default());
        head::forward(head_params(&self.net, y), &pass.feats, &set.labels).1
    }
}

/// The most probable class of each row of probabilities (the first on ties).
fn predictions<T: Float>(p: &[T], ways: usize) -> Vec<u8> {
    p.chunks_exact(ways.max(1))
        .map(|row| {
            (0..row.len()).fold(0, |best, k| if row[k] > row[best] { k } else { best }) as u8
        })
        .collect()
}

/// How many rows of probabilities put their label first.
fn hits<T: Float>(p: &[T], labels: &[u8]) -> usize {
    let ways = p.len() / labels.len().max(1);
    predictions(p, ways)
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count()
}

impl<T: Float> NetworkLoss for CpuTask<'_, T> {
    type Scalar = T;

    fn num_params(&self) -> usize {
        self.net.num_params()
    }

    fn loss_grad(&mut self, y: &[T], which: TaskSet, grad: &mut [T]) -> T {
        if let Some(st) = self.states.take(which, y) {
            if let Some(g) = &st.grad {
                grad.copy_from_slice(g);
                let loss = st.loss;
                self.states.put(st);
                return loss;
            }
        }
        let (loss, state) = self.primal(y, which, Some(grad));
        if which == TaskSet::Query {
            let hits = hits(&state.probs, &self.set(which).labels);
            self.last_query = Some((y.to_vec(), hits));
        }
        self.states.put(state);
        loss
    }

    fn hvp(&mut self, y: &[T], v: &[T], which: TaskSet, out: &mut [T]) {
        assert_eq!(v.len(), y.len(), "direction");
        let state = match self.states.take(which, y) {
            Some(s) => s,
            None => self.primal(y, which, None).1,
        };
        self.tangent(&state, v, out);
        self.states.put(state);
    }
}

impl<T: Float> CpuTask<'_, T> {
    /// The forward pass, the head and the backward pass through the blocks at `y` on one
    /// set: the loss and the pass kept for H·v; with `grad`, the gradient written there.
    fn primal(&self, y: &[T], which: TaskSet, grad: Option<&mut [T]>) -> (T, State<T>) {
        let (a, set) = (self.net.shape, self.set(which));
        let mut sc = Scratch::default();
        let pass = self.forward(y, set, &mut sc);
        let (wh, bh) = head_params(&self.net, y);
        let (loss, probs, dlogits) = head::forward((wh, bh), &pass.feats, &set.labels);
        let mut scratch_grad;
        let (grad, weights_too) = match grad {
            Some(g) => (g, true),
            None => {
                scratch_grad = vec![T::zero(); y.len()];
                (scratch_grad.as_mut_slice(), false)
            }
        };
        grad.fill(T::zero());
        let (gb, gh) = grad.split_at_mut(a.num_params());
        let (gw, gbias) = gh.split_at_mut(wh.len());
        let df = head::backward(wh, &pass.feats, &dlogits, gw, gbias);
        let mut dps = vec![Vec::new(); a.blocks];
        let mut dp = rows(&df, a.channels, set.len(), true);
        for l in (0..a.blocks).rev() {
            let x = Self::input(&pass, set, l);
            let g = weights_too.then(|| grads(&a, gb, l));
            let c = conv(&a, l, set.len());
            let dx = block::backward(
                c,
                weights(&a, y, l),
                (x, &pass.tapes[l]),
                &dp,
                g,
                l > 0,
                &mut sc,
            );
            dps[l] = std::mem::replace(&mut dp, dx.unwrap_or_default());
        }
        let kept_grad = (weights_too && self.states.keeps()).then(|| grad.to_vec());
        let state = State {
            which,
            y: y.to_vec(),
            pass,
            probs,
            dlogits,
            dps,
            loss,
            grad: kept_grad,
        };
        (loss, state)
    }

    /// `∇²L·v` into `out` from a primal pass: the tangent forward pass, the head's tangent,
    /// the tangent backward pass.
    fn tangent(&self, st: &State<T>, v: &[T], out: &mut [T]) {
        let (a, set, y) = (self.net.shape, self.set(st.which), st.y.as_slice());
        let (n, pass) = (set.len(), &st.pass);
        let mut sc = Scratch::default();
        let mut x_dots: Vec<Vec<T>> = Vec::with_capacity(a.blocks);
        let mut tts: Vec<TangentTape<T>> = Vec::with_capacity(a.blocks);
        for l in 0..a.blocks {
            let x = Self::input(pass, set, l);
            let x_dot = (l > 0).then(|| x_dots[l - 1].as_slice());
            let pv = (weights(&a, y, l), weights(&a, v, l));
            let c = conv(&a, l, n);
            let (o, tt) = block::forward_tangent(c, pv, x, x_dot, &pass.tapes[l], &mut sc);
            x_dots.push(o);
            tts.push(tt);
        }
        let f_dot = rows(&x_dots.pop().unwrap_or_default(), a.channels, n, false);
        // Head: ḋ, the head's part of H·v, and the tangent of the features' gradient
        // (ḋ·W + d·v_W).
        let ((wh, _), (vw, vb)) = (head_params(&self.net, y), head_params(&self.net, v));
        let d_dot = head::d_tangent((wh, vw, vb), (&pass.feats, &f_dot), &st.probs);
        out.fill(T::zero());
        let (ob, oh) = out.split_at_mut(a.num_params());
        let (ow, obias) = oh.split_at_mut(wh.len());
        let mut df_dot = head::backward(wh, &pass.feats, &d_dot, ow, obias);
        let df_v = head::backward(vw, &f_dot, &st.dlogits, ow, &mut vec![T::zero(); vb.len()]);
        df_dot.iter_mut().zip(&df_v).for_each(|(a, &b)| *a += b);
        let mut dp_dot = rows(&df_dot, a.channels, n, true);
        for l in (0..a.blocks).rev() {
            let x = Self::input(pass, set, l);
            let x_dot = (l > 0).then(|| x_dots[l - 1].as_slice());
            let pv = (weights(&a, y, l), weights(&a, v, l));
            let g = grads(&a, ob, l);
            let tapes = (&pass.tapes[l], &tts[l]);
            let c = conv(&a, l, n);
            let dps = (st.dps[l].as_slice(), dp_dot.as_slice());
            match block::backward_tangent(c, pv, (x, x_dot), tapes, dps, g, &mut sc) {
                Some(dx_dot) => dp_dot = dx_dot,
                None => break,
            }
        }
    }
}
