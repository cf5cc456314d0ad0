//! Few-shot meta-learning on a CUDA device: the conv4 backbone ([`crate::conv4`]) gives the
//! features of a meta-batch, the kernel's engine ([`Hypergrad`]) runs RHG / T-RHG / BDA on
//! the batched head ([`HeadGpu`]: all tasks at once), and the backbone's backward pass turns
//! the hypergradient w.r.t. the features into the parameter gradient. Adam and episode
//! sampling stay with the caller (`bda-host`), so the same seed draws the same episodes on
//! every device.

use std::sync::Arc;

use bda_kernel::backend::{Backend, Hypergrad, MethodError, MethodSpec, Methods};
use bda_kernel::collective::Collective;
use bda_kernel::fewshot::Conv4Shape;

use crate::conv4::{Conv4Gpu, check_shape};
use crate::head::{HeadDims, HeadGpu};
use crate::launch::{check, scale};
use crate::probe::guard;
use crate::{DeviceInfo, GpuDevice, GpuError, GpuVec};

/// The episodes of one meta-batch, all of the same shape: `tasks` tasks of `ways` classes with
/// `support` support and `query` query images each.
#[derive(Clone, Copy, Debug)]
pub struct Episodes<'a> {
    /// Tasks `m`.
    pub tasks: usize,
    /// Classes per task.
    pub ways: usize,
    /// Support images per task.
    pub support: usize,
    /// Query images per task.
    pub query: usize,
    /// Images (`in_channels·side²` floats each, channel-major): the support images of task 0, 1, …, then the
    /// query images of task 0, 1, … (the CPU path's stacking order, which fixes the
    /// batch-norm batch).
    pub images: &'a [f32],
    /// Support labels, task by task (`tasks·support`, each `< ways`).
    pub support_labels: &'a [u8],
    /// Query labels, task by task (`tasks·query`).
    pub query_labels: &'a [u8],
}

impl Episodes<'_> {
    /// Images in the batch.
    pub fn images_count(&self) -> usize {
        self.tasks * (self.support + self.query)
    }

    fn head_dims(&self, dim: usize) -> HeadDims {
        HeadDims {
            tasks: self.tasks,
            ways: self.ways,
            support: self.support,
            query: self.query,
            dim,
        }
    }
}

/// Per-task results of a meta-gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskResults {
    /// `φ_K` of each task (query cross-entropy of its head after K steps).
    pub loss: Vec<f32>,
    /// Query accuracy of each task's `y_K`.
    pub accuracy: Vec<f64>,
}

/// Why a few-shot computation failed.
pub type FewshotError = MethodError<GpuError>;

/// The head of one episode shape, its buffers and the engines run on it (their own buffers
/// are theirs).
struct HeadState {
    head: HeadGpu,
    x: GpuVec,
    gx: GpuVec,
    y0: GpuVec,
    y_out: GpuVec,
    /// The engine of the spec in use.
    engine: Hypergrad<HeadGpu>,
    /// The one used before it: training alternates with evaluation, so it is kept.
    previous: Option<Hypergrad<HeadGpu>>,
}

impl std::fmt::Debug for HeadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadState")
            .field("head", &self.head)
            .field("spec", self.engine.spec())
            .field("previous", &self.previous.as_ref().map(|e| *e.spec()))
            .finish_non_exhaustive()
    }
}

impl HeadState {
    /// A head of shape `dims` with its buffers and an engine for `spec`.
    fn new(
        dev: &GpuDevice,
        dims: HeadDims,
        spec: &MethodSpec<f32>,
        l2: f32,
    ) -> Result<Self, FewshotError> {
        let mut head = HeadGpu::open(dev, dims, l2)?;
        let engine = head.hypergrad(*spec)?;
        Ok(HeadState {
            x: head.new_x()?,
            gx: head.new_x()?,
            y0: head.new_y()?,
            y_out: head.new_y()?,
            head,
            engine,
            previous: None,
        })
    }

    /// Makes the engine of `spec` the one in use (the previous one, or a new one).
    fn select(&mut self, spec: &MethodSpec<f32>) -> Result<(), FewshotError> {
        if self.engine.spec() == spec {
            return Ok(());
        }
        // An unmatched previous engine is dropped before a new one allocates its tape.
        let next = match self.previous.take().filter(|e| e.spec() == spec) {
            Some(e) => e,
            None => self.head.hypergrad(*spec)?,
        };
        self.previous = Some(std::mem::replace(&mut self.engine, next));
        Ok(())
    }

    /// Device bytes of the buffers and the engines' buffers.
    fn resident_bytes(&self) -> usize {
        let engines: usize = std::iter::once(&self.engine)
            .chain(&self.previous)
            .map(|e| e.spec().tape_len() + 4)
            .sum();
        (self.x.len() + self.gx.len() + (2 + engines) * self.y0.len()) * 4
    }
}

/// The head state for `ep` in `slot` (kept when its shape fits, else made anew) with the
/// engine of `spec` in use and the labels, `l2` and `y₀ = 0` set; the backbone's features of
/// `ep`'s images under `params` in its `x`.
fn prepare<'a>(
    slot: &'a mut Option<HeadState>,
    conv: &mut Conv4Gpu,
    dev: &GpuDevice,
    params: &[f32],
    ep: &Episodes<'_>,
    spec: &MethodSpec<f32>,
    l2: f32,
) -> Result<&'a mut HeadState, FewshotError> {
    let shape = conv.shape();
    let dims = ep.head_dims(shape.features());
    dims.validate()?;
    check(
        "images",
        ep.images.len(),
        ep.images_count() * shape.pixels(),
    )?;
    let st = head_for(slot, dev, dims, ep, spec, l2);
    let st = st.and_then(|st| Ok((st, conv.upload_params(params)?)));
    let (st, ()) = agreed(conv, st)?;
    conv.forward_all(ep.images, ep.images_count(), &mut st.x.0)?;
    Ok(st)
}

/// The head state for `ep` in `slot` (see [`prepare`]), labels, `l2` and `y₀` set.
fn head_for<'a>(
    slot: &'a mut Option<HeadState>,
    dev: &GpuDevice,
    dims: HeadDims,
    ep: &Episodes<'_>,
    spec: &MethodSpec<f32>,
    l2: f32,
) -> Result<&'a mut HeadState, FewshotError> {
    // A state of another shape is dropped before the new one allocates.
    let st = match slot.take().filter(|s| s.head.dims() == dims) {
        Some(st) => {
            let st = slot.insert(st);
            st.select(spec)?;
            st
        }
        None => slot.insert(HeadState::new(dev, dims, spec, l2)?),
    };
    st.head.set_l2(l2)?;
    st.head.set_labels(ep.support_labels, ep.query_labels)?;
    st.head.zero_y(&mut st.y0)?;
    Ok(st)
}

/// `r`, a device failure of it agreed on by the ranks when the backbone is split (the head's
/// other failures, non-finite values, happen on every rank alike: the ranks compute the
/// same bits).
fn agreed<T>(conv: &Conv4Gpu, r: Result<T, FewshotError>) -> Result<T, FewshotError> {
    let mine = match &r {
        Err(MethodError::Backend(e)) => Some(e.clone()),
        _ => None,
    };
    conv.agree_on(mine)?;
    r
}

/// Meta-training and evaluation of a conv4 backbone with linear per-task heads on one CUDA
/// device (see the module docs).
#[derive(Debug)]
pub struct FewshotGpu {
    dev: GpuDevice,
    conv: Conv4Gpu,
    state: Option<HeadState>,
}

impl FewshotGpu {
    /// The few-shot backend on the opened device for a backbone of shape `shape`.
    /// Kernels are compiled on first use; [`FewshotGpu::warm_up`] does it now.
    pub fn new(dev: &GpuDevice, shape: Conv4Shape) -> Result<Self, GpuError> {
        check_shape(&shape, 1)?;
        guard(|| {
            Ok(FewshotGpu {
                dev: dev.clone(),
                conv: Conv4Gpu::new(dev, shape)?,
                state: None,
            })
        })
    }

    /// The device in use.
    pub fn info(&self) -> &DeviceInfo {
        self.dev.info()
    }

    /// The backbone's shape.
    pub fn shape(&self) -> Conv4Shape {
        self.conv.shape()
    }

    /// Compiles (once per process) and loads every kernel now ([`GpuDevice::warm_up`]).
    pub fn warm_up(&mut self) -> Result<(), GpuError> {
        self.dev.warm_up()
    }

    /// This backend as one of the ranks of `comm`, every rank calling the same methods with
    /// the same episodes: the backbone's passes split the meta-batch's chunks of
    /// [`CHUNK_IMAGES`](crate::CHUNK_IMAGES) images over the ranks and put batch norm's
    /// statistics, the weight gradients and the features together in chunk order, so that
    /// every rank gets the bits of one rank for any number of ranks; the heads run on every
    /// rank. The im2col budget no longer applies (a chunk per GEMM).
    pub fn with_ranks(mut self, comm: Arc<dyn Collective>) -> Result<Self, GpuError> {
        self.conv.with_ranks(comm)?;
        Ok(self)
    }

    /// Caps the backbone's im2col matrix at `floats` floats (default 2^26): smaller chunks
    /// of images per GEMM, less memory. Results do not depend on it beyond rounding.
    pub fn set_col_budget(&mut self, floats: usize) {
        self.conv.set_col_budget(floats);
    }

    /// Device bytes held by the backbone (parameters, gradient, tape, scratch) and the head.
    pub fn resident_bytes(&self) -> usize {
        let head = self.state.as_ref().map_or(0, HeadState::resident_bytes);
        self.conv.resident_bytes() + head
    }

    /// Features of `n` images (`n × side²`) under `params`: `n × features`, row-major.
    pub fn features(
        &mut self,
        params: &[f32],
        images: &[f32],
        n: usize,
    ) -> Result<Vec<f32>, GpuError> {
        // Bounds n·features (and every size below) before anything is allocated.
        check_shape(&self.shape(), n)?;
        let nf = self.shape().features();
        self.conv.upload_params(params)?;
        let mut feats = self.dev.stream().alloc_zeros(n * nf)?;
        self.conv.forward_all(images, n, &mut feats)?;
        let mut out = vec![0.0f32; n * nf];
        let r = (|| {
            self.dev.stream().memcpy_dtoh(&feats, &mut out)?;
            self.dev.synchronize()
        })();
        self.conv.agree_on(r.err())?;
        Ok(out)
    }

    /// The parameter gradient of `⟨dfeats, features(params, images)⟩` (one forward and one
    /// backward pass of the backbone).
    pub fn backbone_gradient(
        &mut self,
        params: &[f32],
        images: &[f32],
        n: usize,
        dfeats: &[f32],
        grad: &mut [f32],
    ) -> Result<(), GpuError> {
        check_shape(&self.shape(), n)?;
        let nf = self.shape().features();
        check("feature gradient", dfeats.len(), n * nf)?;
        self.conv.upload_params(params)?;
        let mut feats = self.dev.stream().alloc_zeros(n * nf)?;
        self.conv.forward_all(images, n, &mut feats)?;
        let r = self.dev.stream().memcpy_htod(dfeats, &mut feats);
        self.conv.agree_on(r.err().map(GpuError::from))?;
        self.conv.backward_all(&feats)?;
        let r = self.conv.download_grad(grad);
        self.conv.agree_on(r.err())
    }

    /// The meta-gradient of the mean `φ_K` over the tasks of `ep` w.r.t. the backbone
    /// parameters, into `grad` (the CPU layout); returns each task's `φ_K` and query accuracy.
    ///
    /// As on the CPU: features of all images together (batch norm over the meta-batch), the
    /// head from `y₀ = 0` through the K steps of `spec` and the reverse pass (the kernel's
    /// engine, all tasks at once), the features' gradient scaled by `1/m`, the backbone's
    /// backward pass. `l2` is the head's L2 weight λ.
    pub fn meta_gradient(
        &mut self,
        params: &[f32],
        ep: &Episodes<'_>,
        spec: &MethodSpec<f32>,
        l2: f32,
        grad: &mut [f32],
    ) -> Result<TaskResults, FewshotError> {
        check("gradient", grad.len(), self.shape().num_params())?;
        let (conv, dev) = (&mut self.conv, &self.dev);
        let st = prepare(&mut self.state, conv, dev, params, ep, spec, l2)?;
        let r = (|| {
            (st.engine).hypergradient(&mut st.head, &st.x, &st.y0, &mut st.gx, &mut st.y_out)?;
            // dfeats = ∂(mean φ)/∂x = gx / m, in place.
            scale(dev, 1.0 / ep.tasks as f32, &mut st.gx.0.as_view_mut())?;
            Ok(())
        })();
        agreed(conv, r)?;
        let loss = st.head.task_losses().to_vec();
        if loss.iter().any(|l| !l.is_finite()) {
            return Err(MethodError::NonFinite { ll_iter: 0 });
        }
        let accuracy = hits_to_accuracy(st.head.task_hits(), ep.query);
        conv.backward_all(&st.gx.0)?;
        let r = conv.download_grad(grad);
        conv.agree_on(r.err())?;
        Ok(TaskResults { loss, accuracy })
    }

    /// Query accuracy (a fraction) of each task of `ep`, its head fitted by the lower-level
    /// solve of `spec` from 0 (pass `spec.lower_only()` for the evaluation procedure of every
    /// method: plain steps on the support set), with batch norm over the tasks of `ep`
    /// together.
    pub fn evaluate(
        &mut self,
        params: &[f32],
        ep: &Episodes<'_>,
        spec: &MethodSpec<f32>,
        l2: f32,
    ) -> Result<Vec<f64>, FewshotError> {
        let st = prepare(
            &mut self.state,
            &mut self.conv,
            &self.dev,
            params,
            ep,
            spec,
            l2,
        )?;
        let r = (|| {
            (st.engine).solve_lower(&mut st.head, &st.x, &st.y0, &mut st.y_out)?;
            Ok(st.head.query_hits(&st.x, &st.y_out)?.to_vec())
        })();
        let hits = agreed(&self.conv, r)?;
        Ok(hits_to_accuracy(&hits, ep.query))
    }

    /// Waits until all queued work is done (for timing).
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.dev.synchronize()
    }
}

fn hits_to_accuracy(hits: &[f32], query: usize) -> Vec<f64> {
    hits.iter()
        .map(|&h| f64::from(h) / query.max(1) as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_types_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<FewshotGpu>();
        send_sync::<HeadGpu>();
        send_sync::<Conv4Shape>();
        send_sync::<Episodes<'static>>();
        send_sync::<TaskResults>();
    }

    #[test]
    fn shapes_are_checked_against_32_bit_indices() {
        let a = Conv4Shape::CONV4;
        assert!(check_shape(&a, 1280).is_ok());
        assert!(matches!(
            check_shape(&a, usize::MAX / 2),
            Err(GpuError::TooLarge(_))
        ));
        let empty = Conv4Shape { channels: 0, ..a };
        assert!(matches!(check_shape(&empty, 1), Err(GpuError::Data(_))));
    }

    #[test]
    fn new_without_cuda_is_an_error_not_a_panic() {
        let shape = Conv4Shape {
            channels: 4,
            in_channels: 1,
            side: 12,
            blocks: 3,
        };
        match GpuDevice::open(0) {
            Ok(dev) => {
                let gpu = FewshotGpu::new(&dev, shape).unwrap();
                eprintln!("CUDA present: {}", gpu.info());
                // A degenerate shape is reported before the device is touched.
                let bad = Conv4Shape {
                    channels: 0,
                    ..shape
                };
                assert!(matches!(FewshotGpu::new(&dev, bad), Err(GpuError::Data(_))));
            }
            Err(e) => assert!(!e.to_string().contains('\n')),
        }
    }
}
