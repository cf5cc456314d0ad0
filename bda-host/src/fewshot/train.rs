//! Meta-training and evaluation: the conv4 backbone gives features, bda-kernel's
//! [`unrolled`] gives the hypergradient `∂φ_K/∂features` of each task's head problem
//! ([`FeatureHead`]), the backbone's backward pass turns the average over the meta-batch
//! into a parameter gradient, and Adam updates the backbone.

use bda_kernel::backend::{MethodError, tape_len, unrolled};
use bda_kernel::{Beta, LowerDynamics, Method, Schedule};
use rayon::prelude::*;

use super::conv4::{Arch, Conv4, Float};
use super::head::FeatureHead;

/// One N-way K-shot task: images (`side²` floats each, row-major) and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// Classes.
    pub ways: usize,
    /// Support images, `n_s × side²`.
    pub support: Vec<f32>,
    /// Support labels (`< ways`).
    pub support_labels: Vec<u8>,
    /// Query images, `n_q × side²`.
    pub query: Vec<f32>,
    /// Query labels.
    pub query_labels: Vec<u8>,
}

impl Task {
    /// Random images with the peer's labels (`arange(ways).repeat_interleave(shots)`).
    pub fn synthetic(
        ways: usize,
        shots: usize,
        queries: usize,
        pixels: usize,
        rng: &mut impl rand::Rng,
    ) -> Task {
        let labels = |per: usize| -> Vec<u8> {
            (0..ways)
                .flat_map(|c| std::iter::repeat_n(c as u8, per))
                .collect()
        };
        let mut img = |n: usize| -> Vec<f32> { (0..n * pixels).map(|_| rng.random()).collect() };
        let support = img(ways * shots);
        let query = img(ways * queries);
        Task {
            ways,
            support,
            support_labels: labels(shots),
            query,
            query_labels: labels(queries),
        }
    }
}

/// The head procedure: the lower-level dynamics and how the hypergradient is taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadConfig {
    /// `bda`, `rhg` or `trhg`.
    pub method: Method,
    /// Lower-level steps K.
    pub steps: u32,
    /// T of T-RHG (back-propagate through the last T steps).
    pub truncate: Option<u32>,
    /// Step size `s_u = s_l` of the head.
    pub lr: f64,
    /// Aggregation weight μ (BDA).
    pub mu: f64,
    /// α of `α_k = α/k` (BDA).
    pub alpha: f64,
    /// L2 weight of the lower level.
    pub l2: f64,
}

impl HeadConfig {
    /// Eq. (9) weights of this method (the peer's: `y ← y − lr(μ(α/k)∇F + (1−μ)∇f)` for
    /// BDA, `y ← y − lr∇f` otherwise).
    pub fn dynamics<T: Float>(&self) -> LowerDynamics<T> {
        self.method.dynamics(
            T::from_f64(self.mu),
            Schedule::Harmonic(T::from_f64(self.alpha)),
            Beta::Schedule(Schedule::Constant(T::one())),
            T::from_f64(self.lr),
            T::from_f64(self.lr),
        )
    }

    /// The truncation passed to [`unrolled`] (`None` unless T-RHG).
    pub fn truncation(&self) -> Option<u32> {
        if self.method == Method::Trhg {
            self.truncate
        } else {
            None
        }
    }
}

/// `φ_K` of one task at the given features and `∂φ_K/∂x` into `gx`; returns
/// `(φ_K, query accuracy of y_K)`.
pub fn task_hypergradient<T: Float>(
    head: &mut FeatureHead<T>,
    x: &Vec<T>,
    cfg: &HeadConfig,
    gx: &mut Vec<T>,
) -> Result<(T, f64), MethodError<core::convert::Infallible>> {
    use bda_kernel::backend::Backend;
    let dynamics = cfg.dynamics::<T>();
    let truncate = cfg.truncation();
    let n = tape_len(cfg.steps, truncate);
    let y0 = head.new_y()?;
    let mut tape: Vec<Vec<T>> = (0..n).map(|_| y0.clone()).collect();
    let mut adj = y0.clone();
    let mut y = y0.clone();
    let phi = unrolled(
        head, x, &y0, &dynamics, cfg.steps, truncate, &mut tape, &mut adj, gx, &mut y,
    )?;
    let acc = head.accuracy(x, &y);
    Ok((phi, acc))
}

/// Run the head's K steps of plain descent on the support set only (no query labels) and
/// return the query accuracy: the evaluation procedure for every method.
pub fn task_accuracy<T: Float>(head: &mut FeatureHead<T>, x: &Vec<T>, cfg: &HeadConfig) -> f64 {
    use bda_kernel::backend::{Backend, LowerStep};
    let dynamics = LowerDynamics::LowerOnly {
        s_l: T::from_f64(cfg.lr),
    };
    let mut y = head.new_y().expect("infallible");
    let mut next = y.clone();
    for k in 1..=cfg.steps {
        let (wu, wl) = dynamics.weights(k);
        head.lower_step(x, &y, wu, wl, &mut next)
            .expect("infallible");
        std::mem::swap(&mut y, &mut next);
    }
    head.accuracy(x, &y)
}

/// Stack the images of `tasks` (all supports, then all queries: the peer's order) and
/// return them with the number of images.
pub(crate) fn stack(tasks: &[Task]) -> (Vec<f32>, usize) {
    let mut imgs = Vec::new();
    for t in tasks {
        imgs.extend_from_slice(&t.support);
    }
    for t in tasks {
        imgs.extend_from_slice(&t.query);
    }
    let n = tasks
        .iter()
        .map(|t| t.support_labels.len() + t.query_labels.len())
        .sum();
    (imgs, n)
}

/// Row offsets of task `i` in the stacked batch: (first support row, first query row).
fn offsets(tasks: &[Task]) -> Vec<(usize, usize)> {
    let ns: usize = tasks.iter().map(|t| t.support_labels.len()).sum();
    let (mut s, mut q) = (0, ns);
    tasks
        .iter()
        .map(|t| {
            let o = (s, q);
            s += t.support_labels.len();
            q += t.query_labels.len();
            o
        })
        .collect()
}

fn task_features<T: Float>(feats: &[T], nf: usize, t: &Task, (s, q): (usize, usize)) -> Vec<T> {
    let (ns, nq) = (t.support_labels.len(), t.query_labels.len());
    let mut x = Vec::with_capacity((ns + nq) * nf);
    x.extend_from_slice(&feats[s * nf..(s + ns) * nf]);
    x.extend_from_slice(&feats[q * nf..(q + nq) * nf]);
    x
}

fn to_t<T: Float>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&a| T::from_f64(a as f64)).collect()
}

/// `(φ_K, accuracy, ∂φ_K/∂x)` of one task.
type TaskGrad<T> = (T, f64, Vec<T>);

/// Result of one meta-step's gradient.
pub struct MetaGrad<T> {
    /// Mean of `φ_K` over the tasks (the meta-training loss).
    pub loss: f64,
    /// Mean query accuracy of `y_K` over the tasks.
    pub acc: f64,
    /// Gradient of the mean `φ_K` w.r.t. the backbone parameters.
    pub grad: Vec<T>,
}

/// Why a meta-gradient failed.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaError {
    /// The head's lower level or the loss became non-finite.
    NonFinite,
    /// The device failed (a one-line message, e.g. a CUDA driver error).
    Device(String),
}

/// Where the meta-gradients and evaluations of the one training loop are computed: the CPU
/// ([`CpuMeta`]) or a CUDA device (`super::gpu::GpuMeta`). Episode sampling, Adam, reports and
/// checkpoints stay with the caller, so they are the same on every device.
pub trait MetaBackend {
    /// The device, for reports (`cpu`, `cuda (NVIDIA H100 …)`).
    fn device(&self) -> String;

    /// Mean `φ_K`, mean query accuracy and the parameter gradient of the mean `φ_K` over
    /// `tasks` (all tasks as one batch-norm batch), as [`meta_gradient`].
    fn meta_gradient(
        &mut self,
        arch: Arch,
        params: &[f32],
        tasks: &[Task],
        cfg: &HeadConfig,
    ) -> Result<MetaGrad<f32>, MetaError>;

    /// Query accuracy of each task, the head fitted on the support set only, as
    /// [`evaluate_tasks`].
    fn evaluate_tasks(
        &mut self,
        arch: Arch,
        params: &[f32],
        tasks: &[Task],
        cfg: &HeadConfig,
    ) -> Result<Vec<f64>, MetaError>;

    /// One forward and backward pass of the backbone alone on `n` images with the feature
    /// gradient `dfeats` (what `bda fewshot bench` times as "the backbone alone"); the result
    /// is discarded.
    fn backbone_pass(
        &mut self,
        arch: Arch,
        params: &[f32],
        images: &[f32],
        n: usize,
        dfeats: &[f32],
    ) -> Result<(), MetaError>;
}

/// The CPU path: [`meta_gradient`] and [`evaluate_tasks`] on rayon's threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuMeta;

impl MetaBackend for CpuMeta {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn meta_gradient(
        &mut self,
        arch: Arch,
        params: &[f32],
        tasks: &[Task],
        cfg: &HeadConfig,
    ) -> Result<MetaGrad<f32>, MetaError> {
        meta_gradient(arch, params, tasks, cfg)
    }

    fn evaluate_tasks(
        &mut self,
        arch: Arch,
        params: &[f32],
        tasks: &[Task],
        cfg: &HeadConfig,
    ) -> Result<Vec<f64>, MetaError> {
        Ok(evaluate_tasks(arch, params, tasks, cfg))
    }

    fn backbone_pass(
        &mut self,
        arch: Arch,
        params: &[f32],
        images: &[f32],
        n: usize,
        dfeats: &[f32],
    ) -> Result<(), MetaError> {
        let net = Conv4 { arch, params };
        let (_, tape) = net.forward(images, n);
        std::hint::black_box(net.backward(&tape, dfeats));
        Ok(())
    }
}

/// The meta-gradient of the mean `φ_K` over `tasks` w.r.t. the backbone parameters.
pub fn meta_gradient<T: Float>(
    arch: Arch,
    params: &[T],
    tasks: &[Task],
    cfg: &HeadConfig,
) -> Result<MetaGrad<T>, MetaError> {
    let net = Conv4 { arch, params };
    let (imgs, n) = stack(tasks);
    let (feats, tape) = net.forward(&to_t::<T>(&imgs), n);
    let nf = arch.features();
    let offs = offsets(tasks);
    let l2 = T::from_f64(cfg.l2);
    let per_task: Vec<Result<TaskGrad<T>, MetaError>> = tasks
        .par_iter()
        .zip(offs.par_iter())
        .map(|(t, &o)| {
            let x = task_features(&feats, nf, t, o);
            let mut head = FeatureHead::new(
                nf,
                t.ways,
                t.support_labels.clone(),
                t.query_labels.clone(),
                l2,
            );
            let mut gx = vec![T::zero(); x.len()];
            let (phi, acc) = task_hypergradient(&mut head, &x, cfg, &mut gx)
                .map_err(|_| MetaError::NonFinite)?;
            Ok((phi, acc, gx))
        })
        .collect();
    let scale = T::one() / T::from_f64(tasks.len() as f64);
    let mut dfeats = vec![T::zero(); n * nf];
    let (mut loss, mut acc) = (0.0, 0.0);
    for ((r, t), &(s, q)) in per_task.into_iter().zip(tasks).zip(&offs) {
        let (phi, a, gx) = r?;
        if !phi.is_finite() {
            return Err(MetaError::NonFinite);
        }
        loss += phi.to_f64();
        acc += a;
        let ns = t.support_labels.len();
        let nq = t.query_labels.len();
        for (d, &g) in dfeats[s * nf..(s + ns) * nf].iter_mut().zip(&gx[..ns * nf]) {
            *d = g * scale;
        }
        for (d, &g) in dfeats[q * nf..(q + nq) * nf].iter_mut().zip(&gx[ns * nf..]) {
            *d = g * scale;
        }
    }
    let grad = net.backward(&tape, &dfeats);
    if grad.iter().any(|g| !g.is_finite()) {
        return Err(MetaError::NonFinite);
    }
    let m = tasks.len() as f64;
    Ok(MetaGrad {
        loss: loss / m,
        acc: acc / m,
        grad,
    })
}

/// Query accuracy of each task, the head fitted on the support set only
/// ([`task_accuracy`]); batch norm uses the statistics of `tasks` together.
pub fn evaluate_tasks(arch: Arch, params: &[f32], tasks: &[Task], cfg: &HeadConfig) -> Vec<f64> {
    let net = Conv4 { arch, params };
    let (imgs, n) = stack(tasks);
    let (feats, _) = net.forward(&imgs, n);
    let nf = arch.features();
    let offs = offsets(tasks);
    tasks
        .par_iter()
        .zip(offs.par_iter())
        .map(|(t, &o)| {
            let x = task_features(&feats, nf, t, o);
            let mut head = FeatureHead::new(
                nf,
                t.ways,
                t.support_labels.clone(),
                t.query_labels.clone(),
                cfg.l2 as f32,
            );
            task_accuracy(&mut head, &x, cfg)
        })
        .collect()
}

/// Adam (Kingma & Ba; PyTorch's defaults β = (0.9, 0.999), ε = 1e-8).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Adam {
    /// Learning rate.
    pub lr: f64,
    /// Steps taken.
    pub t: u64,
    /// First moments.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
}

impl Adam {
    /// Fresh state for `n` parameters.
    pub fn new(lr: f64, n: usize) -> Adam {
        Adam {
            lr,
            t: 0,
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// One update of `params` with gradient `g`.
    pub fn step(&mut self, params: &mut [f32], g: &[f32]) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        self.t += 1;
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        let step = (self.lr / bc1) as f32;
        let bc2s = bc2.sqrt() as f32;
        for (((p, &gi), m), v) in params.iter_mut().zip(g).zip(&mut self.m).zip(&mut self.v) {
            *m = b1 as f32 * *m + (1.0 - b1 as f32) * gi;
            *v = b2 as f32 * *v + (1.0 - b2 as f32) * gi * gi;
            *p -= step * *m / (v.sqrt() / bc2s + eps as f32);
        }
    }
}
