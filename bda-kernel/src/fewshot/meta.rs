//! The few-shot device seam: one meta-batch of tasks in, the meta-gradient or the
//! evaluation accuracies out. Episode sampling, the optimizer on the backbone, reports and
//! checkpoints stay with the command, so they are the same on every device.

use alloc::string::String;
use alloc::vec::Vec;

use alloc::format;

use super::Conv4Shape;
use super::network::Network;
use crate::backend::MethodSpec;
use crate::scalar::Real;

/// One episode: `ways` classes, support and query images (`channels·side²` floats each,
/// channel-major) with their labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Task {
    /// Classes (N).
    pub ways: usize,
    /// Support images, `n_s × channels·side²`.
    pub support: Vec<f32>,
    /// Support labels (`< ways`).
    pub support_labels: Vec<u8>,
    /// Query images, `n_q × channels·side²`.
    pub query: Vec<f32>,
    /// Query labels.
    pub query_labels: Vec<u8>,
}

impl Task {
    /// Images of the task, support and query.
    pub fn rows(&self) -> usize {
        self.support_labels.len() + self.query_labels.len()
    }
}

/// The images of `tasks` as one batch (all supports, then all queries: the peer's order,
/// which fixes the batch-norm batch on every device) and the number of images.
pub fn stack(tasks: &[Task]) -> (Vec<f32>, usize) {
    let mut imgs = Vec::new();
    for t in tasks {
        imgs.extend_from_slice(&t.support);
    }
    for t in tasks {
        imgs.extend_from_slice(&t.query);
    }
    (imgs, tasks.iter().map(Task::rows).sum())
}

/// How each task's lower level is fitted and differentiated: the checked method (RHG,
/// T-RHG, BDA or IHG, K and the Eq. (9) numbers) in the backend's scalar type, the head's L2
/// weight, and whether the lower level is the head (the papers' few-shot experiments) or
/// the whole network (the MAML family). A command builds it once per run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadProcedure<T = f32> {
    /// The method.
    pub spec: MethodSpec<T>,
    /// The L2 weight λ of the head's lower level.
    pub l2: T,
    /// `Some`: the whole network is the lower level ([`NetworkTask`](super::NetworkTask)),
    /// and a batch's parameters are the network's meta-parameters
    /// ([`NetworkProcedure::meta_params`]) rather than the backbone's.
    pub network: Option<NetworkProcedure>,
}

/// How the MAML family turns one task's inner solve into a meta-gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkRule {
    /// The engine's hypergradient from `y₀ = x`: MAML is RHG through the K steps, BDA on
    /// the whole network is BDA, iMAML is IHG with the proximal term.
    Hypergradient,
    /// Meta-SGD: RHG on `x = [initialisation | a step size per weight]`.
    PerWeightSteps,
    /// First-order MAML: the query gradient at `y_K`, the inner steps not differentiated.
    FirstOrder,
    /// Reptile: `x − y_K`, for the optimizer to step along (`x ← x + ε(y_K − x)` with
    /// plain descent).
    Reptile,
}

/// The whole network as the lower level: the rule and iMAML's proximal weight λ
/// (`f = L_support + (λ/2)‖y − x‖²`; 0 for the other methods).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkProcedure {
    /// How the meta-gradient is formed.
    pub rule: NetworkRule,
    /// λ of the proximal term.
    pub prox: f64,
}

impl NetworkProcedure {
    /// Meta-parameters for a network of `weights` weights: the initialisation, and for
    /// Meta-SGD a step size per weight after it.
    pub fn meta_params(&self, weights: usize) -> usize {
        match self.rule {
            NetworkRule::PerWeightSteps => 2 * weights,
            _ => weights,
        }
    }
}

impl<T: Real> HeadProcedure<T> {
    /// The evaluation procedure: the same K and step, plain descent on the support loss (no
    /// query labels), whatever method trained the backbone.
    pub fn evaluation(&self) -> HeadProcedure<T> {
        HeadProcedure {
            spec: self.spec.lower_only(),
            ..*self
        }
    }
}

/// One meta-batch: the backbone (`f32` parameters in training, `f64` in gradient checks) —
/// or, when the whole network is the lower level, the network's meta-parameters — the
/// tasks, and how their lower levels are fitted.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a, T = f32> {
    /// The backbone's shape.
    pub shape: Conv4Shape,
    /// Its parameters ([`Conv4Shape::num_params`]), or the network's meta-parameters
    /// ([`NetworkProcedure::meta_params`]).
    pub params: &'a [T],
    /// The tasks (all of them one batch-norm batch).
    pub tasks: &'a [Task],
    /// How each task's head is fitted and differentiated.
    pub head: &'a HeadProcedure<T>,
}

impl<T> Batch<'_, T> {
    /// A head backend's guard: an error when the batch asks for the whole network as the
    /// lower level, whose parameters it would misread.
    pub fn require_head(&self) -> Result<(), MetaError> {
        match self.head.network {
            None => Ok(()),
            Some(_) => Err(MetaError::Device(
                "this backend fits heads only: the whole network as the lower level runs on a network backend".into(),
            )),
        }
    }

    /// A network backend's guard: the batch's network (the tasks' common number of
    /// classes) and procedure, or an error naming what does not fit — a head procedure,
    /// no tasks, tasks of different ways, or meta-parameters of the wrong length.
    pub fn require_network(&self) -> Result<(Network, NetworkProcedure), MetaError> {
        let bad = |m: String| Err(MetaError::Device(m));
        let Some(procedure) = self.head.network else {
            return bad("the whole-network backend was given a head procedure".into());
        };
        let Some(ways) = self.tasks.first().map(|t| t.ways) else {
            return bad("a meta-batch without tasks".into());
        };
        if self.tasks.iter().any(|t| t.ways != ways) {
            return bad("the tasks of a meta-batch have different numbers of classes".into());
        }
        let net = Network {
            shape: self.shape,
            ways,
        };
        let want = procedure.meta_params(net.num_params());
        if self.params.len() != want {
            return bad(format!(
                "{} meta-parameters given, the network has {want}",
                self.params.len()
            ));
        }
        Ok((net, procedure))
    }
}

/// Result of one meta-step's gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct MetaGrad<T> {
    /// Mean of `φ_K` over the tasks (the meta-training loss).
    pub loss: f64,
    /// Mean query accuracy of `y_K` over the tasks, %.
    pub acc: f64,
    /// Gradient of the mean `φ_K` w.r.t. the backbone parameters.
    pub grad: Vec<T>,
    /// Tasks of the batch whose conjugate-gradient solve (IHG: iMAML) stopped at a
    /// direction of non-positive curvature, where its implicit meta-gradient is only the
    /// solve's partial answer; 0 for the methods without one.
    pub cg_stops: usize,
}

/// Why a meta-gradient or an evaluation failed.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaError {
    /// A head's lower level, the loss or the gradient became non-finite.
    NonFinite,
    /// The device failed (a one-line message, e.g. a CUDA driver error).
    Device(String),
}

impl core::fmt::Display for MetaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MetaError::NonFinite => {
                f.write_str("a head, the loss or the gradient became non-finite")
            }
            MetaError::Device(m) => f.write_str(m),
        }
    }
}

/// Where the meta-gradients and evaluations of a few-shot command are computed: one
/// implementation per device (`bda_cpu::fewshot::CpuMeta`, `bda_gpu::GpuMeta`), each
/// running the head's methods through the engine ([`crate::backend::Hypergrad`]) on its own
/// head backend.
pub trait MetaBackend {
    /// The device, for reports (`cpu`, `cuda (NVIDIA H100 …)`).
    fn device(&self) -> String;

    /// Mean `φ_K`, mean query accuracy (%) and the parameter gradient of the mean `φ_K` over
    /// the batch's tasks.
    fn meta_gradient(&mut self, batch: Batch<'_>) -> Result<MetaGrad<f32>, MetaError>;

    /// Query accuracy (%) of each task, its head fitted by the batch's lower-level solve
    /// (pass [`HeadProcedure::evaluation`] for the evaluation procedure).
    fn evaluate_tasks(&mut self, batch: Batch<'_>) -> Result<Vec<f64>, MetaError>;

    /// One forward and backward pass of the backbone alone on the batch's images with the
    /// feature gradient `dfeats` (what a benchmark times as "the backbone alone"); the
    /// result is discarded. Returns the seconds of each block's (forward, backward) pass
    /// where the backend measures them (the CPU; `None` on a device, whose launches are
    /// asynchronous).
    fn backbone_pass(
        &mut self,
        batch: Batch<'_>,
        dfeats: &[f32],
    ) -> Result<Option<Vec<(f64, f64)>>, MetaError>;
}
