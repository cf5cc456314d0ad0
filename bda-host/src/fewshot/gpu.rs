//! `--device cuda`: the [`MetaBackend`] of `bda_gpu::FewshotGpu` (conv4 backbone and all
//! tasks' heads on the device, the kernel's engine on the batched head). Episodes, Adam,
//! reports and checkpoints are the CPU path's, so a checkpoint moves between devices as is.

use bda_gpu::{Episodes, FewshotGpu, GpuDevice};
use bda_kernel::backend::MethodError;

use super::conv4::Arch;
use super::meta::{HeadProcedure, MetaBackend, MetaError, MetaGrad, Task, stack};

/// Few-shot on one CUDA device.
pub struct GpuMeta {
    gpu: FewshotGpu,
    device: String,
}

impl GpuMeta {
    /// The few-shot backend on the opened device for backbones of shape `arch`, kernels
    /// compiled.
    pub fn new(dev: &GpuDevice, arch: Arch) -> Result<GpuMeta, String> {
        let mut gpu = FewshotGpu::new(dev, arch.shape()).map_err(|e| e.to_string())?;
        gpu.warm_up().map_err(|e| e.to_string())?;
        let device = format!("cuda ({})", gpu.info().name);
        Ok(GpuMeta { gpu, device })
    }

    fn check_arch(&self, arch: Arch) -> Result<(), MetaError> {
        if arch.shape() == self.gpu.shape() {
            Ok(())
        } else {
            Err(MetaError::Device(format!(
                "the device was opened for a {:?} backbone, not {arch:?}",
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

impl MetaBackend for GpuMeta {
    fn device(&self) -> String {
        self.device.clone()
    }

    fn meta_gradient(
        &mut self,
        arch: Arch,
        params: &[f32],
        tasks: &[Task],
        head: &HeadProcedure,
    ) -> Result<MetaGrad<f32>, MetaError> {
        self.check_arch(arch)?;
        let st = Stacked::of(tasks)?;
        let spec = head.spec_in::<f32>()?;
        let mut grad = vec![0.0f32; arch.num_params()];
        let r = self
            .gpu
            .meta_gradient(
                params,
                &st.episodes(tasks.len()),
                &spec,
                head.l2 as f32,
                &mut grad,
            )
            .map_err(|e| match e {
                MethodError::NonFinite { .. } => MetaError::NonFinite,
                e => device_error(e),
            })?;
        if grad.iter().any(|g| !g.is_finite()) {
            return Err(MetaError::NonFinite);
        }
        let m = tasks.len() as f64;
        Ok(MetaGrad {
            loss: r.loss.iter().map(|&l| f64::from(l)).sum::<f64>() / m,
            acc: 100.0 * r.accuracy.iter().sum::<f64>() / m,
            grad,
        })
    }

    fn evaluate_tasks(
        &mut self,
        arch: Arch,
        params: &[f32],
        tasks: &[Task],
        head: &HeadProcedure,
    ) -> Result<Vec<f64>, MetaError> {
        self.check_arch(arch)?;
        let st = Stacked::of(tasks)?;
        let spec = head.spec_in::<f32>()?;
        let acc = self
            .gpu
            .evaluate(params, &st.episodes(tasks.len()), &spec, head.l2 as f32)
            .map_err(|e| match e {
                MethodError::NonFinite { .. } => MetaError::NonFinite,
                e => device_error(e),
            })?;
        Ok(acc.into_iter().map(|a| 100.0 * a).collect())
    }

    fn backbone_pass(
        &mut self,
        arch: Arch,
        params: &[f32],
        images: &[f32],
        n: usize,
        dfeats: &[f32],
    ) -> Result<(), MetaError> {
        self.check_arch(arch)?;
        let mut grad = vec![0.0f32; arch.num_params()];
        self.gpu
            .backbone_gradient(params, images, n, dfeats, &mut grad)
            .map_err(device_error)
    }
}
