//! [`GpuMeta`]: the kernel's few-shot seam ([`MetaBackend`]) on [`FewshotGpu`] (the conv4
//! backbone and all tasks' heads on the device, the kernel's engine on the batched head).
//! Episodes, the optimizer, reports and checkpoints stay with the command, so a checkpoint
//! moves between devices as is.

use std::sync::Arc;

use bda_kernel::backend::MethodError;
use bda_kernel::collective::Collective;
use bda_kernel::fewshot::{Batch, Conv4Shape, MetaBackend, MetaError, MetaGrad, Task, stack};

use crate::{Episodes, FewshotGpu, GpuDevice, GpuError};

/// Few-shot on one CUDA device.
pub struct GpuMeta {
    gpu: FewshotGpu,
    device: String,
}

impl GpuMeta {
    /// The few-shot backend on the opened device for backbones of shape `shape`, kernels
    /// compiled.
    pub fn new(dev: &GpuDevice, shape: Conv4Shape) -> Result<GpuMeta, GpuError> {
        let mut gpu = FewshotGpu::new(dev, shape)?;
        gpu.warm_up()?;
        let device = format!("cuda ({})", gpu.info().name);
        Ok(GpuMeta { gpu, device })
    }

    /// This backend as one of the ranks of `comm` ([`FewshotGpu::with_ranks`]).
    pub fn with_ranks(self, comm: Arc<dyn Collective>) -> Result<GpuMeta, GpuError> {
        let gpu = self.gpu.with_ranks(comm)?;
        Ok(GpuMeta { gpu, ..self })
    }

    fn check_shape(&self, shape: Conv4Shape) -> Result<(), MetaError> {
        if shape == self.gpu.shape() {
            Ok(())
        } else {
            Err(MetaError::Device(format!(
                "the device was opened for a {:?} backbone, not {shape:?}",
                self.gpu.shape()
            )))
        }
    }
}

/// The tasks of a batch as one block of episodes (all supports, then all queries).
struct Stacked {
    images: Vec<f32>,
    support_labels: Vec<u8>,
    query_labels: Vec<u8>,
    ways: usize,
    support: usize,
    query: usize,
}

impl Stacked {
    fn of(tasks: &[Task]) -> Result<Stacked, MetaError> {
        let first = tasks
            .first()
            .ok_or_else(|| MetaError::Device("an empty meta-batch".into()))?;
        let (ways, support, query) = (
            first.ways,
            first.support_labels.len(),
            first.query_labels.len(),
        );
        if tasks.iter().any(|t| {
            (t.ways, t.support_labels.len(), t.query_labels.len()) != (ways, support, query)
        }) {
            return Err(MetaError::Device(
                "the tasks of a meta-batch must have the same shape on CUDA".into(),
            ));
        }
        let (images, _) = stack(tasks);
        Ok(Stacked {
            images,
            support_labels: tasks
                .iter()
                .flat_map(|t| t.support_labels.clone())
                .collect(),
            query_labels: tasks.iter().flat_map(|t| t.query_labels.clone()).collect(),
            ways,
            support,
            query,
        })
    }

    fn episodes(&self, tasks: usize) -> Episodes<'_> {
        Episodes {
            tasks,
            ways: self.ways,
            support: self.support,
            query: self.query,
            images: &self.images,
            support_labels: &self.support_labels,
            query_labels: &self.query_labels,
        }
    }
}

fn device_error(e: impl std::fmt::Display) -> MetaError {
    MetaError::Device(e.to_string())
}

/// A divergence is the meta-gradient's own error; anything else is the device's.
fn method_error(e: MethodError<GpuError>) -> MetaError {
    match e {
        MethodError::NonFinite { .. } => MetaError::NonFinite,
        e => device_error(e),
    }
}

impl MetaBackend for GpuMeta {
    fn device(&self) -> String {
        self.device.clone()
    }

    fn meta_gradient(&mut self, b: Batch<'_>) -> Result<MetaGrad<f32>, MetaError> {
        b.require_head()?;
        self.check_shape(b.shape)?;
        let st = Stacked::of(b.tasks)?;
        let mut grad = vec![0.0f32; b.shape.num_params()];
        let ep = st.episodes(b.tasks.len());
        let r = self
            .gpu
            .meta_gradient(b.params, &ep, &b.head.spec, b.head.l2, &mut grad)
            .map_err(method_error)?;
        if grad.iter().any(|g| !g.is_finite()) {
            return Err(MetaError::NonFinite);
        }
        let m = b.tasks.len() as f64;
        Ok(MetaGrad {
            loss: r.loss.iter().map(|&l| f64::from(l)).sum::<f64>() / m,
            acc: 100.0 * r.accuracy.iter().sum::<f64>() / m,
            grad,
            cg_stops: 0,
        })
    }

    fn evaluate_tasks(&mut self, b: Batch<'_>) -> Result<Vec<f64>, MetaError> {
        b.require_head()?;
        self.check_shape(b.shape)?;
        let st = Stacked::of(b.tasks)?;
        let ep = st.episodes(b.tasks.len());
        let acc = self
            .gpu
            .evaluate(b.params, &ep, &b.head.spec, b.head.l2)
            .map_err(method_error)?;
        Ok(acc.into_iter().map(|a| 100.0 * a).collect())
    }

    fn backbone_pass(
        &mut self,
        b: Batch<'_>,
        dfeats: &[f32],
    ) -> Result<Option<Vec<(f64, f64)>>, MetaError> {
        self.check_shape(b.shape)?;
        let (images, n) = stack(b.tasks);
        let mut grad = vec![0.0f32; b.shape.num_params()];
        self.gpu
            .backbone_gradient(b.params, &images, n, dfeats, &mut grad)
            .map_err(device_error)?;
        Ok(None)
    }
}
