//! [`NetworkMeta`]: the few-shot seam ([`MetaBackend`]) for the MAML family on the CPU.
//! Each task's meta-gradient comes from the kernel's engine on a [`NetworkTask`] over this
//! module's products ([`CpuTask`]); the tasks of a batch run in parallel, one per thread, and
//! their results are added in task order, so the meta-gradient does not depend on the
//! number of threads — nor of ranks, which split the tasks among them.

use bda_kernel::backend::MethodSpec;
use std::sync::Arc;

use bda_kernel::collective::{Collective, Solo};
use bda_kernel::fewshot::{
    Batch, MetaBackend, MetaError, MetaGrad, Network, NetworkProcedure, NetworkTask, Task,
    TaskOutcome, gather_over_tasks, mean_over_tasks,
};
use rayon::prelude::*;

use super::{CpuTask, TaskImages};

/// The MAML family's meta-gradients and evaluations on the CPU (`f32`), the tasks of a
/// meta-batch split over ranks when given some ([`NetworkMeta::with_ranks`]).
#[derive(Clone)]
pub struct NetworkMeta {
    comm: Arc<dyn Collective>,
}

impl Default for NetworkMeta {
    fn default() -> Self {
        NetworkMeta::with_ranks(Arc::new(Solo))
    }
}

impl NetworkMeta {
    /// This backend as one of the ranks of `comm`: each rank runs its own tasks of a
    /// meta-batch (`bda_kernel::collective::owned`) and the ranks add their outcomes in
    /// task order, so the meta-gradient has the same bits on any number of ranks.
    pub fn with_ranks(comm: Arc<dyn Collective>) -> Self {
        NetworkMeta { comm }
    }
}

/// A task's two sets in the products' layout.
fn sets(net: &Network, t: &Task) -> (TaskImages<f32>, TaskImages<f32>) {
    (
        TaskImages::new(&net.shape, &t.support, &t.support_labels),
        TaskImages::new(&net.shape, &t.query, &t.query_labels),
    )
}

/// Query accuracy (%) of weights `y`.
fn accuracy(task: &CpuTask<'_, f32>, y: &[f32]) -> f64 {
    100.0 * task.query_hits(y) as f64 / task.query.len().max(1) as f64
}

/// Primal passes a task keeps for the reverse pass: the iterates the engine revisits
/// within one segment (all K, or one checkpoint interval) and `y_K`; both sets' for BDA,
/// whose steps take both.
fn passes(spec: &MethodSpec<f32>) -> usize {
    let k = spec.steps();
    let window = spec.checkpoint_every().map_or(k, |c| c.min(k)) as usize + 1;
    match spec.method() {
        bda_kernel::Method::Bda => 2 * window,
        _ => window,
    }
}

fn task_meta(
    net: Network,
    p: NetworkProcedure,
    spec: MethodSpec<f32>,
    x: &[f32],
    t: &Task,
) -> Result<TaskOutcome, MetaError> {
    let (s, q) = sets(&net, t);
    let mut task = NetworkTask::of(CpuTask::new(net, &s, &q).keeping(passes(&spec)), p);
    let a = task.meta_gradient(p.rule, spec, x)?;
    Ok(TaskOutcome {
        phi: f64::from(a.phi),
        acc: accuracy(&task.loss, &a.y),
        grad: a.grad,
        cg_stop: a.cg_stop,
    })
}

impl MetaBackend for NetworkMeta {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn meta_gradient(&mut self, b: Batch<'_>) -> Result<MetaGrad<f32>, MetaError> {
        let (net, p) = b.require_network()?;
        let spec = b.head.spec;
        mean_over_tasks(&*self.comm, b.tasks.len(), b.params.len(), |mine| {
            b.tasks[mine]
                .par_iter()
                .map(|t| task_meta(net, p, spec, b.params, t))
                .collect()
        })
    }

    fn evaluate_tasks(&mut self, b: Batch<'_>) -> Result<Vec<f64>, MetaError> {
        let (net, p) = b.require_network()?;
        let spec = b.head.spec;
        gather_over_tasks(&*self.comm, b.tasks.len(), |mine| {
            b.tasks[mine]
                .par_iter()
                .map(|t| {
                    let (s, q) = sets(&net, t);
                    let mut task = NetworkTask::of(CpuTask::new(net, &s, &q), p);
                    let a = task.adapt(spec, b.params)?;
                    Ok(accuracy(&task.loss, &a.y))
                })
                .collect()
        })
    }

    /// Not defined here: the whole network has no separate backbone pass.
    fn backbone_pass(
        &mut self,
        _: Batch<'_>,
        _: &[f32],
    ) -> Result<Option<Vec<(f64, f64)>>, MetaError> {
        Ok(None)
    }
}
