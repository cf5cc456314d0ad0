//! Few-shot meta-learning on the CPU ([`CpuMeta`]): the conv4 backbone ([`crate::conv4`])
//! gives each task's features, the kernel's engine ([`Hypergrad`](bda_kernel::backend::Hypergrad), here on each task's
//! [`FeatureHead`]) gives `∂φ_K/∂features`, and the backbone's backward pass turns the
//! average over the meta-batch into a parameter gradient. Tasks run in parallel (rayon),
//! split over ranks when there are several; every sum over them is in task order.

use std::sync::Arc;

use bda_kernel::backend::Methods;
use bda_kernel::collective::{Collective, Solo, owned};
use bda_kernel::fewshot::{
    Batch, FeatureHead, HeadProcedure, MetaBackend, MetaError, MetaGrad, Task, stack,
};
use rayon::prelude::*;

use crate::conv4::{Conv4, Float, Tape};

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

/// One task's rows of the stacked features: its support rows, then its query rows.
fn task_features<T: Float>(feats: &[T], nf: usize, t: &Task, (s, q): (usize, usize)) -> Vec<T> {
    let (ns, nq) = (t.support_labels.len(), t.query_labels.len());
    let mut x = Vec::with_capacity((ns + nq) * nf);
    x.extend_from_slice(&feats[s * nf..(s + ns) * nf]);
    x.extend_from_slice(&feats[q * nf..(q + nq) * nf]);
    x
}

fn to_t<T: Float>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&a| T::from_f64(f64::from(a))).collect()
}

/// The CPU path: [`meta_gradient_on`] and [`evaluate_tasks_on`] on rayon's threads, the
/// backbone split over ranks when given some ([`CpuMeta::with_ranks`]).
#[derive(Clone)]
pub struct CpuMeta {
    comm: Arc<dyn Collective>,
}

impl Default for CpuMeta {
    fn default() -> Self {
        CpuMeta {
            comm: Arc::new(Solo),
        }
    }
}

impl std::fmt::Debug for CpuMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CpuMeta(rank {} of {})",
            self.comm.rank(),
            self.comm.size()
        )
    }
}

impl CpuMeta {
    /// The backbone's passes split over the ranks of `comm` (each passes its chunks of the
    /// meta-batch's images and fits its share of the tasks' heads): the same bits as one
    /// process. Every rank must make the same calls with the same batches.
    pub fn with_ranks(comm: Arc<dyn Collective>) -> Self {
        CpuMeta { comm }
    }
}

impl MetaBackend for CpuMeta {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn meta_gradient(&mut self, b: Batch<'_>) -> Result<MetaGrad<f32>, MetaError> {
        b.require_head()?;
        meta_gradient_on(b, self.comm.as_ref())
    }

    fn evaluate_tasks(&mut self, b: Batch<'_>) -> Result<Vec<f64>, MetaError> {
        b.require_head()?;
        evaluate_tasks_on(b, self.comm.as_ref())
    }

    fn backbone_pass(
        &mut self,
        b: Batch<'_>,
        dfeats: &[f32],
    ) -> Result<Option<Vec<(f64, f64)>>, MetaError> {
        let net = Conv4 {
            arch: b.shape,
            params: b.params,
        };
        let (images, n) = stack(b.tasks);
        let comm = self.comm.as_ref();
        let (_, tape) = net.forward_on(&images, n, comm);
        let (grad, backward) = net.backward_timed(&tape, dfeats, comm);
        std::hint::black_box(grad);
        Ok(Some(tape.seconds().iter().copied().zip(backward).collect()))
    }
}

/// One task's head problem on its rows of the features.
fn head_of<T: Float>(nf: usize, t: &Task, l2: T) -> FeatureHead<T> {
    FeatureHead::new(
        nf,
        t.ways,
        t.support_labels.clone(),
        t.query_labels.clone(),
        l2,
    )
}

/// `(φ_K, query accuracy %, ∂φ_K/∂x)` of one task through the engine.
fn task_hypergradient<T: Float>(
    nf: usize,
    t: &Task,
    x: &Vec<T>,
    procedure: &HeadProcedure<T>,
) -> Result<(T, f64, Vec<T>), MetaError> {
    let mut head = head_of::<T>(nf, t, procedure.l2);
    let mut hg = head
        .hypergrad(procedure.spec)
        .map_err(|e| MetaError::Device(e.to_string()))?;
    let (mut gx, mut y) = (vec![T::zero(); x.len()], vec![T::zero(); head.y_len()]);
    let y0 = vec![T::zero(); head.y_len()];
    let phi = hg
        .hypergradient(&mut head, x, &y0, &mut gx, &mut y)
        .map_err(|_| MetaError::NonFinite)?;
    Ok((phi, 100.0 * head.accuracy(x, &y), gx))
}

/// One forward pass of the backbone over all tasks' images (one batch-norm batch), then
/// `f(task, its features)` for this rank's tasks in parallel (every task alone: the heads
/// are independent once the features are known). Returns the results, the first task's
/// index, the pass's tape and every task's row offsets.
#[allow(clippy::type_complexity)]
fn per_task<T: Float, R: Send>(
    net: &Conv4<'_, T>,
    tasks: &[Task],
    comm: &dyn Collective,
    f: impl Fn(&Task, &Vec<T>) -> R + Sync,
) -> (Vec<R>, usize, Tape<T>, Vec<(usize, usize)>) {
    let (imgs, n) = stack(tasks);
    let (feats, tape) = net.forward_on(&to_t::<T>(&imgs), n, comm);
    let nf = net.arch.features();
    let offs = offsets(tasks);
    let own = owned(tasks.len(), comm.rank(), comm.size());
    let results = tasks[own.clone()]
        .par_iter()
        .zip(offs[own.clone()].par_iter())
        .map(|(t, &o)| f(t, &task_features(&feats, nf, t, o)))
        .collect();
    (results, own.start, tape, offs)
}

/// How many tasks of `count` every rank fits, and the values of each task (`per_task`),
/// in rank order: the counts of a gather of per-task results.
fn task_counts(
    count: usize,
    comm: &dyn Collective,
    per_task: impl Fn(usize) -> usize,
) -> Vec<usize> {
    (0..comm.size())
        .map(|r| owned(count, r, comm.size()).map(&per_task).sum())
        .collect()
}

/// This rank's per-task results with every failure settled the same way on every rank: a
/// backend failure on any rank is agreed on and returned; a failed task becomes
/// `failed(its index among this rank's)`, a value the caller's checks reject once all
/// tasks are gathered (a non-finite `φ` or accuracy).
fn settle<R>(
    comm: &dyn Collective,
    mine: Vec<Result<R, MetaError>>,
    failed: impl Fn(usize) -> R,
) -> Result<Vec<R>, MetaError> {
    let mut device = None;
    let out = mine
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|e| {
                if let MetaError::Device(m) = e {
                    device.get_or_insert(m);
                }
                failed(i)
            })
        })
        .collect();
    match comm.agree(device.as_deref()) {
        Some(m) => Err(MetaError::Device(m)),
        None => Ok(out),
    }
}

/// Every task's `(φ, accuracy, ∂φ/∂x)` from this rank's results (those of the tasks from
/// `first` on), in task order; a failed task's `φ` is NaN.
#[allow(clippy::type_complexity)]
fn gather_tasks<T: Float>(
    comm: &dyn Collective,
    tasks: &[Task],
    nf: usize,
    mine: Vec<Result<(T, f64, Vec<T>), MetaError>>,
    first: usize,
) -> Result<(Vec<T>, Vec<f64>, Vec<T>), MetaError> {
    let rows = |i: usize| tasks[i].support_labels.len() + tasks[i].query_labels.len();
    let nan = |i: usize| {
        let zeros = vec![T::zero(); rows(first + i) * nf];
        (T::from_f64(f64::NAN), f64::NAN, zeros)
    };
    let (mut phis, mut accs, mut gxs) = (Vec::new(), Vec::new(), Vec::new());
    for (phi, acc, gx) in settle(comm, mine, nan)? {
        phis.push(phi);
        accs.push(acc);
        gxs.extend(gx);
    }
    if comm.size() == 1 {
        return Ok((phis, accs, gxs));
    }
    let n = tasks.len();
    let ones = task_counts(n, comm, |_| 1);
    let (mut all_phi, mut all_acc) = (vec![T::zero(); n], vec![0.0; n]);
    T::gather(comm, &phis, &ones, &mut all_phi);
    comm.gather_f64(&accs, &ones, &mut all_acc);
    let sizes = task_counts(n, comm, |i| rows(i) * nf);
    let mut all_gx = vec![T::zero(); sizes.iter().sum()];
    T::gather(comm, &gxs, &sizes, &mut all_gx);
    Ok((all_phi, all_acc, all_gx))
}

/// The meta-gradient of the mean `φ_K` over the batch's tasks w.r.t. the backbone's
/// parameters.
pub fn meta_gradient<T: Float>(batch: Batch<'_, T>) -> Result<MetaGrad<T>, MetaError> {
    meta_gradient_on(batch, &Solo)
}

/// [`meta_gradient`] with the backbone split over the ranks of `comm`.
pub fn meta_gradient_on<T: Float>(
    batch: Batch<'_, T>,
    comm: &dyn Collective,
) -> Result<MetaGrad<T>, MetaError> {
    let (arch, tasks, head) = (batch.shape, batch.tasks, batch.head);
    let net = Conv4 {
        arch,
        params: batch.params,
    };
    let nf = arch.features();
    let (mine, first, tape, offs) =
        per_task(&net, tasks, comm, |t, x| task_hypergradient(nf, t, x, head));
    let (phis, accs, gxs) = gather_tasks(comm, tasks, nf, mine, first)?;
    let n: usize = tasks
        .iter()
        .map(|t| t.support_labels.len() + t.query_labels.len())
        .sum();
    let scale = T::one() / T::from_f64(tasks.len() as f64);
    let mut dfeats = vec![T::zero(); n * nf];
    let (mut loss, mut acc) = (0.0, 0.0);
    let mut at = 0;
    for (((&phi, &a), t), &(s, q)) in phis.iter().zip(&accs).zip(tasks).zip(&offs) {
        if !phi.is_finite() {
            return Err(MetaError::NonFinite);
        }
        loss += phi.to_f64();
        acc += a;
        let ns = t.support_labels.len();
        let nq = t.query_labels.len();
        let gx = &gxs[at..at + (ns + nq) * nf];
        at += (ns + nq) * nf;
        for (d, &g) in dfeats[s * nf..(s + ns) * nf].iter_mut().zip(&gx[..ns * nf]) {
            *d = g * scale;
        }
        for (d, &g) in dfeats[q * nf..(q + nq) * nf].iter_mut().zip(&gx[ns * nf..]) {
            *d = g * scale;
        }
    }
    let grad = net.backward_timed(&tape, &dfeats, comm).0;
    if grad.iter().any(|g| !g.is_finite()) {
        return Err(MetaError::NonFinite);
    }
    let m = tasks.len() as f64;
    Ok(MetaGrad {
        loss: loss / m,
        acc: acc / m,
        grad,
        cg_stops: 0,
    })
}

/// Query accuracy (%) of each task, its head fitted by the batch's lower-level solve; batch
/// norm uses the statistics of the tasks together.
pub fn evaluate_tasks(batch: Batch<'_>) -> Result<Vec<f64>, MetaError> {
    evaluate_tasks_on(batch, &Solo)
}

/// [`evaluate_tasks`] with the backbone split over the ranks of `comm`.
pub fn evaluate_tasks_on(batch: Batch<'_>, comm: &dyn Collective) -> Result<Vec<f64>, MetaError> {
    let (nf, head) = (batch.shape.features(), batch.head);
    let net = Conv4 {
        arch: batch.shape,
        params: batch.params,
    };
    let (mine, _, _, _) = per_task(&net, batch.tasks, comm, |t, x| {
        let mut h = head_of::<f32>(nf, t, head.l2);
        let mut hg = h
            .hypergrad(head.spec)
            .map_err(|e| MetaError::Device(e.to_string()))?;
        let (y0, mut y) = (vec![0.0; h.y_len()], vec![0.0; h.y_len()]);
        hg.solve_lower(&mut h, x, &y0, &mut y)
            .map_err(|_| MetaError::NonFinite)?;
        Ok(100.0 * h.accuracy(x, &y))
    });
    // Every task's accuracy in task order; a failed task is NaN until all are gathered.
    let accs = settle(comm, mine, |_| f64::NAN)?;
    let n = batch.tasks.len();
    let all = match comm.size() {
        1 => accs,
        _ => {
            let mut all = vec![0.0; n];
            comm.gather_f64(&accs, &task_counts(n, comm, |_| 1), &mut all);
            all
        }
    };
    match all.iter().any(|a| a.is_nan()) {
        true => Err(MetaError::NonFinite),
        false => Ok(all),
    }
}
