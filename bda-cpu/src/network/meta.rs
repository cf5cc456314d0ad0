//! [`NetworkMeta`]: the few-shot seam ([`MetaBackend`]) for the MAML family on the CPU.
//! Each task's meta-gradient comes from the kernel's engine on a [`NetworkTask`] over this
//! module's products ([`CpuTask`]); the tasks of a batch run in parallel, one per thread, and
//! their results are added in task order, so the meta-gradient does not depend on the
//! number of threads.

use bda_kernel::backend::{Hypergrad, MethodSpec};
use bda_kernel::fewshot::{
    Batch, MetaBackend, MetaError, MetaGrad, Network, NetworkLoss, NetworkProcedure, NetworkRule,
    NetworkTask, Task,
};
use rayon::prelude::*;

use super::{CpuTask, TaskImages};

/// The MAML family's meta-gradients and evaluations on the CPU (`f32`).
#[derive(Clone, Copy, Debug, Default)]
pub struct NetworkMeta;

/// One task's outcome: `φ` (the query loss at `y_K`), query accuracy (%), meta-gradient.
type TaskOut = (f64, f64, Vec<f32>);

/// The batch's network, its procedure and the initialisation's length; an error names
/// what does not fit.
fn setup(b: &Batch<'_>) -> Result<(Network, NetworkProcedure), MetaError> {
    let bad = |m: String| Err(MetaError::Device(m));
    let Some(procedure) = b.head.network else {
        return bad("the whole-network backend was given a head procedure".into());
    };
    let Some(ways) = b.tasks.first().map(|t| t.ways) else {
        return bad("a meta-batch without tasks".into());
    };
    if b.tasks.iter().any(|t| t.ways != ways) {
        return bad("the tasks of a meta-batch have different numbers of classes".into());
    }
    let net = Network {
        shape: b.shape,
        ways,
    };
    let want = procedure.meta_params(net.num_params());
    if b.params.len() != want {
        return bad(format!(
            "{} meta-parameters given, the network has {want}",
            b.params.len()
        ));
    }
    Ok((net, procedure))
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

/// The lower-level solve of `spec` from `y₀ = x`'s initialisation: `F(y_K)`, `y_K` and
/// `∇F(y_K)`.
fn solve(
    t: &mut NetworkTask<CpuTask<'_, f32>>,
    spec: MethodSpec<f32>,
    x: &[f32],
) -> Result<(f32, Vec<f32>, Vec<f32>), MetaError> {
    let n = t.loss.num_params();
    let mut hg =
        Hypergrad::new(t, spec.lower_only()).map_err(|e| MetaError::Device(e.to_string()))?;
    let mut y = vec![0.0; n];
    let x = x.to_vec();
    let f = hg
        .solve_lower(t, &x, &x[..n].to_vec(), &mut y)
        .map_err(|_| MetaError::NonFinite)?;
    Ok((f, y, hg.solved_upper_grad().clone()))
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
) -> Result<TaskOut, MetaError> {
    let (s, q) = sets(&net, t);
    let cpu = CpuTask::new(net, &s, &q).keeping(passes(&spec));
    let mut task = NetworkTask {
        loss: cpu,
        prox: p.prox,
        per_weight_steps: p.rule == NetworkRule::PerWeightSteps,
    };
    let n = net.num_params();
    let (phi, y, gx) = match p.rule {
        NetworkRule::Hypergradient | NetworkRule::PerWeightSteps => {
            let mut hg =
                Hypergrad::new(&mut task, spec).map_err(|e| MetaError::Device(e.to_string()))?;
            let (mut gx, mut y) = (vec![0.0; x.len()], vec![0.0; n]);
            let xv = x.to_vec();
            let phi = hg
                .hypergradient(&mut task, &xv, &xv[..n].to_vec(), &mut gx, &mut y)
                .map_err(|_| MetaError::NonFinite)?;
            (phi, y, gx)
        }
        NetworkRule::FirstOrder => solve(&mut task, spec, x)?,
        NetworkRule::Reptile => {
            let (phi, y, _) = solve(&mut task, spec, x)?;
            let g = x.iter().zip(&y).map(|(x, y)| x - y).collect();
            (phi, y, g)
        }
    };
    if !phi.is_finite() || gx.iter().any(|v| !v.is_finite()) {
        return Err(MetaError::NonFinite);
    }
    Ok((f64::from(phi), accuracy(&task.loss, &y), gx))
}

impl MetaBackend for NetworkMeta {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn meta_gradient(&mut self, b: Batch<'_>) -> Result<MetaGrad<f32>, MetaError> {
        let (net, p) = setup(&b)?;
        let spec = b.head.spec;
        let outs: Vec<Result<TaskOut, MetaError>> = b
            .tasks
            .par_iter()
            .map(|t| task_meta(net, p, spec, b.params, t))
            .collect();
        let m = b.tasks.len() as f64;
        let (mut loss, mut acc, mut grad) = (0.0, 0.0, vec![0.0f32; b.params.len()]);
        for o in outs {
            let (phi, a, g) = o?;
            loss += phi / m;
            acc += a / m;
            grad.iter_mut()
                .zip(&g)
                .for_each(|(s, v)| *s += v / m as f32);
        }
        Ok(MetaGrad { loss, acc, grad })
    }

    fn evaluate_tasks(&mut self, b: Batch<'_>) -> Result<Vec<f64>, MetaError> {
        let (net, p) = setup(&b)?;
        let spec = b.head.spec;
        b.tasks
            .par_iter()
            .map(|t| {
                let (s, q) = sets(&net, t);
                let mut task = NetworkTask {
                    loss: CpuTask::new(net, &s, &q),
                    prox: p.prox,
                    per_weight_steps: p.rule == NetworkRule::PerWeightSteps,
                };
                let (_, y, _) = solve(&mut task, spec, b.params)?;
                Ok(accuracy(&task.loss, &y))
            })
            .collect()
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
