//! [`GpuNetworkMeta`]: the few-shot seam ([`MetaBackend`]) for the MAML family on a CUDA
//! device. Each task's meta-gradient comes from the kernel's engine on a
//! [`NetworkTask`] over [`GpuTask`]'s products, tasks one after another on the device's
//! stream, their results added in task order (as the CPU's `NetworkMeta` does); ranks
//! split the tasks among them.

use std::sync::Arc;

use bda_kernel::collective::{Collective, Solo};
use bda_kernel::fewshot::{
    Batch, MetaBackend, MetaError, MetaGrad, Network, NetworkProcedure, NetworkTask, Task,
    TaskOutcome, gather_over_tasks, mean_over_tasks,
};

use super::GpuTask;
use crate::{GpuDevice, GpuError};

/// The MAML family's meta-gradients and evaluations on one CUDA device (`f32`).
pub struct GpuNetworkMeta {
    dev: GpuDevice,
    device: String,
    comm: Arc<dyn Collective>,
    /// The last task's buffers, reused by the next task of the same shape.
    spare: Option<GpuTask>,
}

impl GpuNetworkMeta {
    /// The whole-network backend on the opened device, kernels compiled.
    pub fn new(dev: &GpuDevice) -> Result<GpuNetworkMeta, GpuError> {
        dev.warm_up()?;
        Ok(GpuNetworkMeta {
            dev: dev.clone(),
            device: format!("cuda ({})", dev.info().name),
            comm: Arc::new(Solo),
            spare: None,
        })
    }

    /// This backend as one of the ranks of `comm`: each rank runs its own tasks of a
    /// meta-batch and the ranks add their outcomes in task order (the same bits on any
    /// number of ranks).
    pub fn with_ranks(self, comm: Arc<dyn Collective>) -> GpuNetworkMeta {
        GpuNetworkMeta { comm, ..self }
    }

    /// Runs `f` on task `t`'s products under `p`, turning a device error kept by the
    /// products back into its message.
    fn with_task<R>(
        &mut self,
        net: Network,
        p: NetworkProcedure,
        t: &Task,
        f: impl FnOnce(&mut NetworkTask<GpuTask>) -> Result<R, MetaError>,
    ) -> Result<R, MetaError> {
        let device = |e: GpuError| MetaError::Device(e.to_string());
        let sets = (
            (t.support.as_slice(), t.support_labels.as_slice()),
            (t.query.as_slice(), t.query_labels.as_slice()),
        );
        let gpu = match self.spare.take().filter(|g| g.network() == net) {
            Some(mut g) => g.load(sets.0, sets.1).map(|()| g),
            None => GpuTask::new(&self.dev, net, sets.0, sets.1),
        };
        let mut task = NetworkTask::of(gpu.map_err(device)?, p);
        let out = f(&mut task);
        let error = task.loss.take_error();
        self.spare = Some(task.loss);
        match error {
            Some(e) => Err(device(e)),
            None => out,
        }
    }
}

/// Query accuracy (%) of `y` on the task.
fn accuracy(task: &mut GpuTask, y: &[f32]) -> Result<f64, MetaError> {
    let n = task.query_len();
    let hits = task
        .query_hits(y)
        .map_err(|e| MetaError::Device(e.to_string()))?;
    Ok(100.0 * hits as f64 / n.max(1) as f64)
}

impl MetaBackend for GpuNetworkMeta {
    fn device(&self) -> String {
        self.device.clone()
    }

    fn meta_gradient(&mut self, b: Batch<'_>) -> Result<MetaGrad<f32>, MetaError> {
        let (net, p) = b.require_network()?;
        let spec = b.head.spec;
        let comm = self.comm.clone();
        mean_over_tasks(&*comm, b.tasks.len(), b.params.len(), |mine| {
            let mut outs = Vec::with_capacity(mine.len());
            for t in &b.tasks[mine] {
                let out = self.with_task(net, p, t, |task| {
                    let a = task.meta_gradient(p.rule, spec, b.params)?;
                    Ok(TaskOutcome {
                        phi: f64::from(a.phi),
                        acc: accuracy(&mut task.loss, &a.y)?,
                        grad: a.grad,
                        cg_stop: a.cg_stop,
                    })
                });
                // The first failure ends this rank's share.
                let failed = out.is_err();
                outs.push(out);
                if failed {
                    break;
                }
            }
            outs
        })
    }

    fn evaluate_tasks(&mut self, b: Batch<'_>) -> Result<Vec<f64>, MetaError> {
        let (net, p) = b.require_network()?;
        let spec = b.head.spec;
        let comm = self.comm.clone();
        gather_over_tasks(&*comm, b.tasks.len(), |mine| {
            b.tasks[mine]
                .iter()
                .map(|t| {
                    self.with_task(net, p, t, |task| {
                        let a = task.adapt(spec, b.params)?;
                        accuracy(&mut task.loss, &a.y)
                    })
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
