//! The whole few-shot network — conv4 backbone and linear head — as the lower-level
//! variable on a CUDA device: the products of the MAML family
//! ([`bda_kernel::fewshot::NetworkLoss`]) for one task, the CPU's `bda_cpu::network` on the
//! device. The methods stay in the kernel's engine ([`bda_kernel::fewshot::NetworkTask`]);
//! [`GpuNetworkMeta`] runs a meta-batch's tasks one after another on the device's stream.
//!
//! A Hessian–vector product is the R-operator, exact up to rounding: the forward pass, its
//! tangent along `v` (`network.cu`: batch norm's `x̂̇ = D − mean(x̂·D)·x̂`, the ReLU and
//! pool's routing, the head's tangent logits), then the backward pass and its tangent
//! together, block by block. Weights and directions cross the bus as host vectors (the
//! engine's iterates live on the host); a task's images stay on the device.
//!
//! [`NetworkLoss`] cannot fail, so a device error is kept ([`GpuTask::take_error`]) and the
//! product returns NaN, which the engine reports as non-finite and the meta backend turns
//! back into the device's message.

mod meta;
mod ops;
mod pass;

pub use meta::GpuNetworkMeta;

use bda_kernel::fewshot::{Network, NetworkLoss, TaskSet};
use cudarc::driver::CudaSlice;

use crate::launch::check;
use crate::{GpuDevice, GpuError};
use pass::SetPass;

/// One task's products on the device: the network, its two sets' images and tapes, and
/// the weight-sized buffers.
#[derive(Debug)]
pub struct GpuTask {
    dev: GpuDevice,
    net: Network,
    support: SetPass,
    query: SetPass,
    /// Weights, a direction, and a product's result (`num_params` each).
    y: CudaSlice<f32>,
    v: CudaSlice<f32>,
    out: CudaSlice<f32>,
    /// The weights of the last query forward pass and the query images they classified
    /// right (the accuracy at `y_K` comes with `F(y_K)`'s pass).
    last_query: Option<(Vec<f32>, usize)>,
    /// The first device error of a product, kept for [`GpuTask::take_error`].
    error: Option<GpuError>,
}

/// A task's weights, direction and result on the device.
struct WeightBuffers<'a> {
    y: &'a CudaSlice<f32>,
    v: &'a CudaSlice<f32>,
    out: &'a mut CudaSlice<f32>,
}

impl GpuTask {
    /// The products of `net` on a task: `support` and `query` images (`n ×
    /// in_channels·side²` each, channel-major per image) with their labels.
    pub fn new(
        dev: &GpuDevice,
        net: Network,
        (support, support_labels): (&[f32], &[u8]),
        (query, query_labels): (&[f32], &[u8]),
    ) -> Result<GpuTask, GpuError> {
        net.shape.validate().map_err(GpuError::Data)?;
        let s = dev.stream();
        let n = net.num_params();
        Ok(GpuTask {
            dev: dev.clone(),
            net,
            support: SetPass::new(dev, net, support, support_labels)?,
            query: SetPass::new(dev, net, query, query_labels)?,
            y: s.alloc_zeros(n)?,
            v: s.alloc_zeros(n)?,
            out: s.alloc_zeros(n)?,
            last_query: None,
            error: None,
        })
    }

    /// Another task of the same network in this task's buffers: reallocates only a set
    /// whose number of images differs.
    pub fn load(
        &mut self,
        (support, support_labels): (&[f32], &[u8]),
        (query, query_labels): (&[f32], &[u8]),
    ) -> Result<(), GpuError> {
        self.last_query = None;
        if !self.support.reload(&self.dev, support, support_labels)? {
            self.support = SetPass::new(&self.dev, self.net, support, support_labels)?;
        }
        if !self.query.reload(&self.dev, query, query_labels)? {
            self.query = SetPass::new(&self.dev, self.net, query, query_labels)?;
        }
        Ok(())
    }

    /// The network.
    pub fn network(&self) -> Network {
        self.net
    }

    /// Images in the query set.
    pub fn query_len(&self) -> usize {
        self.query.n
    }

    /// Device bytes held by the task.
    pub fn resident_bytes(&self) -> usize {
        self.support.num_bytes()
            + self.query.num_bytes()
            + self.y.num_bytes()
            + self.v.num_bytes()
            + self.out.num_bytes()
    }

    /// The first device error since the last call, if a product failed (it then returned
    /// NaN).
    pub fn take_error(&mut self) -> Option<GpuError> {
        self.error.take()
    }

    /// Query images that weights `y` classify right (the first largest logit is the label).
    pub fn query_hits(&mut self, y: &[f32]) -> Result<usize, GpuError> {
        if let Some((at, hits)) = &self.last_query
            && at.as_slice() == y
        {
            return Ok(*hits);
        }
        self.upload_y(y)?;
        self.query.forward(&self.dev, &self.y)?;
        self.query_stats(y).map(|(_, hits)| hits)
    }

    fn upload_y(&mut self, y: &[f32]) -> Result<(), GpuError> {
        check("weights", y.len(), self.net.num_params())?;
        self.dev.stream().memcpy_htod(y, &mut self.y)?;
        Ok(())
    }

    /// The mean loss of `set`'s last forward pass (per-row losses summed in `f64`).
    fn mean_loss(dev: &GpuDevice, pass: &SetPass) -> Result<f32, GpuError> {
        let mut ce = vec![0.0f32; pass.n];
        dev.stream().memcpy_dtoh(&pass.ce, &mut ce)?;
        dev.synchronize()?;
        Ok((ce.iter().map(|&v| f64::from(v)).sum::<f64>() / pass.n as f64) as f32)
    }

    /// The query pass's mean loss and hits at weights `y` (remembered for
    /// [`GpuTask::query_hits`]).
    fn query_stats(&mut self, y: &[f32]) -> Result<(f32, usize), GpuError> {
        let ways = self.net.ways;
        let mut z2 = vec![0.0f32; self.query.n * 2 * ways];
        self.dev.stream().memcpy_dtoh(&self.query.z2, &mut z2)?;
        let loss = Self::mean_loss(&self.dev, &self.query)?;
        let hits = z2
            .chunks_exact(2 * ways)
            .zip(&self.query.host_labels)
            .filter(|(row, label)| {
                let logits = &row[..ways];
                let best = (1..ways).fold(0, |b, k| if logits[k] > logits[b] { k } else { b });
                best == usize::from(**label)
            })
            .count();
        self.last_query = Some((y.to_vec(), hits));
        Ok((loss, hits))
    }

    /// The device, the weight-sized buffers and `set`'s passes, borrowed apart.
    fn parts(&mut self, set: TaskSet) -> (&GpuDevice, WeightBuffers<'_>, &mut SetPass) {
        let pass = match set {
            TaskSet::Support => &mut self.support,
            TaskSet::Query => &mut self.query,
        };
        let w = WeightBuffers {
            y: &self.y,
            v: &self.v,
            out: &mut self.out,
        };
        (&self.dev, w, pass)
    }

    fn try_loss_grad(
        &mut self,
        y: &[f32],
        set: TaskSet,
        grad: &mut [f32],
    ) -> Result<f32, GpuError> {
        check("gradient", grad.len(), self.net.num_params())?;
        self.upload_y(y)?;
        let (dev, w, pass) = self.parts(set);
        pass.forward(dev, w.y)?;
        pass.backward(dev, w.y, w.out)?;
        dev.stream().memcpy_dtoh(w.out, grad)?;
        match set {
            TaskSet::Support => Self::mean_loss(&self.dev, &self.support),
            TaskSet::Query => self.query_stats(y).map(|(loss, _)| loss),
        }
    }

    fn try_hvp(
        &mut self,
        y: &[f32],
        v: &[f32],
        set: TaskSet,
        out: &mut [f32],
    ) -> Result<(), GpuError> {
        check("direction", v.len(), self.net.num_params())?;
        check("product", out.len(), self.net.num_params())?;
        self.upload_y(y)?;
        self.dev.stream().memcpy_htod(v, &mut self.v)?;
        let (dev, w, pass) = self.parts(set);
        pass.forward(dev, w.y)?;
        pass.tangent(dev, w.y, w.v)?;
        pass.hvp_backward(dev, w.y, w.v, w.out)?;
        dev.stream().memcpy_dtoh(w.out, out)?;
        dev.synchronize()
    }

    /// Keeps the first error and fills `out` with NaN.
    fn fail(&mut self, e: GpuError, out: &mut [f32]) {
        self.error.get_or_insert(e);
        out.fill(f32::NAN);
    }
}

impl NetworkLoss for GpuTask {
    type Scalar = f32;

    fn num_params(&self) -> usize {
        self.net.num_params()
    }

    fn loss_grad(&mut self, y: &[f32], set: TaskSet, grad: &mut [f32]) -> f32 {
        match self.try_loss_grad(y, set, grad) {
            Ok(loss) => loss,
            Err(e) => {
                self.fail(e, grad);
                f32::NAN
            }
        }
    }

    fn hvp(&mut self, y: &[f32], v: &[f32], set: TaskSet, out: &mut [f32]) {
        if let Err(e) = self.try_hvp(y, v, set, out) {
            self.fail(e, out);
        }
    }
}
