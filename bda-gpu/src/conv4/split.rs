//! The backbone split over ranks ([`bda_kernel::collective`]): each rank passes over its
//! chunks of [`CHUNK_IMAGES`] images of the meta-batch, and what crosses images is put
//! together in chunk order, so that every rank gets the bits one rank would.
//!
//! Rank `r` owns a contiguous range of the batch's chunks; its images are a batch of their
//! own on its device (the plain forward and backward stages run on them), except for what
//! spans the whole batch:
//!
//! * batch norm's statistics: per chunk and channel, `Σ z` (then, about the batch's mean,
//!   `Σ (z − μ)²`) in double (`chunk_moments`), gathered and added in chunk order on the host;
//!   backward, `Σ dy` and `Σ dy·(z − μ)` the same way (they give `∂γ`, `∂β`);
//! * the weight gradients: each chunk's `dZ·colsᵀ` in its own slot on the device, chained
//!   over the ranks in chunk order ([`crate::ranks::Slots`]);
//! * the features: each rank's rows, gathered.
//!
//! Every GEMM has the shape of one chunk whatever the number of ranks. A rank whose share is
//! empty (more ranks than chunks) does no device work but takes part in every collective;
//! a device error on one rank is agreed on at the next collective ([`crate::ranks`]).

use std::sync::Arc;

use bda_kernel::collective::{Collective, chunk_rows, owned};
use bda_kernel::fewshot::BN_EPS;
use cudarc::driver::{CudaSlice, PushKernelArg};

use super::{Conv4Gpu, check_shape};
use crate::kernels::Kernel;
use crate::launch::{check, i32_of, per_channel};
use crate::ranks::{Slots, agree, download};
use crate::{GpuDevice, GpuError};

/// Images per chunk of a meta-batch split over ranks (the CPU backbone's chunk).
pub const CHUNK_IMAGES: usize = 8;

type R<T = ()> = Result<T, GpuError>;

/// Which sums `chunk_moments` forms (see `kernels/conv.cu`).
#[derive(Clone, Copy)]
enum Moment {
    /// `Σ z`.
    Sum = 0,
    /// `Σ (z − μ)²`.
    Squares = 1,
    /// `Σ dy` and `Σ dy·(z − μ)`.
    Backward = 2,
}

/// This rank's share of a batch and what it keeps between the passes.
pub(crate) struct ImageSplit {
    comm: Arc<dyn Collective>,
    /// Images of the batch of the last forward pass.
    n: usize,
    /// This rank's images of it, `[i0, i1)`.
    own: (usize, usize),
    /// Per own chunk and channel, two sums (device).
    moments: CudaSlice<f64>,
    /// The per-channel `μ` the sums are taken about (device).
    mu: CudaSlice<f64>,
    /// One weight-gradient slot per own chunk.
    slots: Option<Slots>,
    /// Per block, the batch's mean and inverse standard deviation of the last forward pass.
    stats: Vec<(Vec<f32>, Vec<f32>)>,
}

impl std::fmt::Debug for ImageSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (r, p) = (self.comm.rank(), self.comm.size());
        write!(f, "ImageSplit(rank {r} of {p}, images {:?})", self.own)
    }
}

impl ImageSplit {
    fn new(dev: &GpuDevice, comm: Arc<dyn Collective>, channels: usize) -> R<Self> {
        let stream = dev.stream();
        Ok(ImageSplit {
            comm,
            n: 0,
            own: (0, 0),
            moments: stream.alloc_zeros(2 * channels)?,
            mu: stream.alloc_zeros(channels)?,
            slots: None,
            stats: Vec::new(),
        })
    }

    /// Device bytes held.
    pub(super) fn num_bytes(&self) -> usize {
        self.moments.num_bytes()
            + self.mu.num_bytes()
            + self.slots.as_ref().map_or(0, Slots::num_bytes)
    }

    /// Rank `r`'s chunks of a batch of `n` images.
    fn chunks_of(&self, n: usize, r: usize) -> std::ops::Range<usize> {
        owned(n.div_ceil(CHUNK_IMAGES), r, self.comm.size())
    }

    /// Takes up a batch of `n` images.
    fn batch(&mut self, n: usize) {
        let r = self.comm.rank();
        let own = chunk_rows(self.chunks_of(n, r), CHUNK_IMAGES, n);
        (self.n, self.own) = (n, (own.start, own.end));
    }

    /// This rank's images.
    fn mine(&self) -> usize {
        self.own.1 - self.own.0
    }

    /// Every rank's count of `per_chunk` values per own chunk (`per_image`: per own image),
    /// in rank order (the counts of a gather).
    fn counts(&self, per_image: usize, per_chunk: usize) -> Vec<usize> {
        (0..self.comm.size())
            .map(|r| {
                let chunks = self.chunks_of(self.n, r);
                let images = chunk_rows(chunks.clone(), CHUNK_IMAGES, self.n).len();
                images * per_image + chunks.len() * per_chunk
            })
            .collect()
    }

    /// The sums `what` of block `l` over every chunk of the batch, per channel, added in
    /// chunk order: `[first sums (ch), second sums (ch)]`. `mu`: the per-channel `μ` of
    /// `Squares` and `Backward`.
    fn moments(
        &mut self,
        conv: &Conv4Gpu,
        l: usize,
        what: Moment,
        mu: &[f64],
        err: &mut Option<GpuError>,
    ) -> [Vec<f64>; 2] {
        let ch = conv.shape.channels;
        let chunks = self.mine().div_ceil(CHUNK_IMAGES);
        let mut part = vec![0.0f64; chunks * ch * 2];
        if err.is_none() && chunks > 0 {
            if let Err(e) = self.launch_moments(conv, l, what, mu, chunks) {
                *err = Some(e);
            }
            download(&conv.dev, &self.moments.slice(..part.len()), &mut part, err);
        }
        let mut all = vec![0.0f64; self.n.div_ceil(CHUNK_IMAGES) * ch * 2];
        let counts = self.counts(0, ch * 2);
        self.comm.gather_f64(&part, &counts, &mut all);
        // Chunk-major: chunk j, channel c at (j·ch + c)·2; added in chunk order.
        let mut sums = [vec![0.0f64; ch], vec![0.0f64; ch]];
        for chunk in all.chunks_exact(ch * 2) {
            for (c, pair) in chunk.chunks_exact(2).enumerate() {
                sums[0][c] += pair[0];
                sums[1][c] += pair[1];
            }
        }
        sums
    }

    fn launch_moments(
        &mut self,
        conv: &Conv4Gpu,
        l: usize,
        what: Moment,
        mu: &[f64],
        chunks: usize,
    ) -> R {
        let a = conv.shape;
        let (ch, hw) = (a.channels, a.side_at(l).pow(2));
        let dev = &conv.dev;
        let stream = dev.stream();
        if self.moments.len() < chunks * ch * 2 {
            self.moments = stream.alloc_zeros(chunks * ch * 2)?;
        }
        stream.memcpy_htod(mu, &mut self.mu)?;
        let f = dev.kernel(Kernel::ChunkMoments)?;
        let buf = conv.buffers.as_ref().expect("sized by the forward pass");
        let m = buf.n * hw;
        let lt = &buf.layers[l];
        let a_src = match what {
            Moment::Backward => buf.dy.slice(..ch * m),
            _ => lt.z.slice(..ch * m),
        };
        let ints = [ch, m, CHUNK_IMAGES * hw].map(i32_of);
        let mode = what as i32;
        let mut lb = stream.launch_builder(&f);
        lb.arg(&a_src).arg(&lt.z).arg(&self.mu);
        crate::launch::push(&mut lb, &ints);
        lb.arg(&mode).arg(&mut self.moments);
        // SAFETY: matches `chunk_moments`; a and z hold ch·m floats, mu ch doubles, the
        // output 2·ch per chunk of ⌈m / chunk⌉.
        unsafe { lb.launch(per_channel(chunks * ch)?) }?;
        Ok(())
    }

    /// Block `l`'s batch statistics over every rank's images into this rank's tape (and
    /// kept for the backward pass).
    fn stats(&mut self, conv: &mut Conv4Gpu, l: usize, err: &mut Option<GpuError>) -> R {
        let ch = conv.shape.channels;
        let count = (self.n * conv.shape.side_at(l).pow(2)) as f64;
        let [sums, _] = self.moments(conv, l, Moment::Sum, &vec![0.0; ch], err);
        let mu: Vec<f64> = sums.iter().map(|s| s / count).collect();
        let [squares, _] = self.moments(conv, l, Moment::Squares, &mu, err);
        let eps = f64::from(BN_EPS as f32);
        let mean: Vec<f32> = mu.iter().map(|&m| m as f32).collect();
        let inv: Vec<f32> = squares
            .iter()
            .map(|&q| (1.0 / (q / count + eps).sqrt()) as f32)
            .collect();
        if err.is_none() && self.mine() > 0 {
            let buf = conv.buffers.as_mut().expect("sized by the forward pass");
            let lt = &mut buf.layers[l];
            let stream = conv.dev.stream();
            let r = stream
                .memcpy_htod(&mean, &mut lt.mean)
                .and_then(|()| stream.memcpy_htod(&inv, &mut lt.invstd));
            *err = r.err().map(GpuError::from);
        }
        self.stats
            .resize(conv.shape.blocks, (Vec::new(), Vec::new()));
        self.stats[l] = (mean, inv);
        agree(&*self.comm, err.take())
    }

    /// Block `l`'s `∂γ, ∂β` over every rank's images into the gradient buffer.
    fn bn_sums(&mut self, conv: &mut Conv4Gpu, l: usize, err: &mut Option<GpuError>) -> R {
        let ch = conv.shape.channels;
        let (mean, inv) = self.stats[l].clone();
        let mu: Vec<f64> = mean.iter().map(|&m| f64::from(m)).collect();
        let [sd, sdx] = self.moments(conv, l, Moment::Backward, &mu, err);
        let mut dgb: Vec<f32> = sdx
            .iter()
            .zip(&inv)
            .map(|(&s, &i)| (s * f64::from(i)) as f32)
            .collect();
        dgb.extend(sd.iter().map(|&s| s as f32));
        if err.is_none() {
            let (_, go, _) = conv.shape.offsets(l);
            let mut g = conv.grad.slice_mut(go..go + 2 * ch);
            *err = conv
                .dev
                .stream()
                .memcpy_htod(&dgb, &mut g)
                .err()
                .map(GpuError::from);
        }
        agree(&*self.comm, err.take())
    }
}

impl Conv4Gpu {
    /// This backbone as one of the ranks of `comm`: [`Conv4Gpu::forward_all`] and
    /// [`Conv4Gpu::backward_all`] split the batch's chunks of [`CHUNK_IMAGES`] images over
    /// the ranks.
    pub(crate) fn with_ranks(&mut self, comm: Arc<dyn Collective>) -> R {
        self.split = Some(ImageSplit::new(&self.dev, comm, self.shape.channels)?);
        self.im2col.fixed = Some(CHUNK_IMAGES);
        Ok(())
    }

    /// Features of all `n` images into `feats` (`n × features`): [`Conv4Gpu::forward`], or
    /// split over the ranks (every rank gets every row).
    pub(crate) fn forward_all(
        &mut self,
        images: &[f32],
        n: usize,
        feats: &mut CudaSlice<f32>,
    ) -> R {
        let Some(mut s) = self.split.take() else {
            return self.forward(images, n, feats);
        };
        let r = self.forward_split(&mut s, images, n, feats);
        self.split = Some(s);
        r
    }

    /// The parameter gradient of `⟨dfeats, features⟩` (all `n` rows of the last
    /// [`Conv4Gpu::forward_all`]): [`Conv4Gpu::backward`], or split over the ranks (every
    /// rank gets the whole gradient).
    pub(crate) fn backward_all(&mut self, dfeats: &CudaSlice<f32>) -> R {
        let Some(mut s) = self.split.take() else {
            return self.backward(dfeats);
        };
        let r = self.backward_split(&mut s, dfeats);
        self.split = Some(s);
        r
    }

    /// This rank's failure (`None`: none) agreed on by the ranks when split: the lowest-
    /// ranked failure on every rank; one process returns its own.
    pub(crate) fn agree_on(&self, mine: Option<GpuError>) -> R {
        match &self.split {
            Some(s) => agree(&*s.comm, mine),
            None => mine.map_or(Ok(()), Err),
        }
    }

    fn forward_split(
        &mut self,
        s: &mut ImageSplit,
        images: &[f32],
        n: usize,
        feats: &mut CudaSlice<f32>,
    ) -> R {
        let a = self.shape;
        if n == 0 {
            return Err(GpuError::Data("a batch needs at least one image"));
        }
        check("images", images.len(), n * a.pixels())?;
        check("features", feats.len(), n * a.features())?;
        check_shape(&a, n)?;
        s.batch(n);
        let ((i0, i1), mine) = (s.own, s.mine());
        let mut err = None;
        let live = |err: &Option<GpuError>| err.is_none() && mine > 0;
        if live(&err) {
            let px = a.pixels();
            err = self.upload_images(&images[i0 * px..i1 * px], mine).err();
        }
        for l in 0..a.blocks {
            if live(&err) {
                err = self.conv_layer(l).err();
            }
            s.stats(self, l, &mut err)?;
            if live(&err) {
                err = self.pool_layer(l).err();
            }
        }
        let nf = a.features();
        let mut rows = vec![0.0f32; mine * nf];
        if live(&err) {
            match self.own_rows(mine * nf) {
                Ok(own) => download(&self.dev, &own.as_view(), &mut rows, &mut err),
                Err(e) => err = Some(e),
            }
        }
        let mut all = vec![0.0f32; n * nf];
        s.comm.gather_f32(&rows, &s.counts(nf, 0), &mut all);
        agree(&*s.comm, err)?;
        let done = self.dev.stream().memcpy_htod(&all, feats);
        agree(&*s.comm, done.err().map(GpuError::from))?;
        self.taped = true;
        Ok(())
    }

    /// This rank's feature rows (`len` floats) in a new buffer.
    fn own_rows(&mut self, len: usize) -> R<CudaSlice<f32>> {
        let mut own = self.dev.stream().alloc_zeros(len)?;
        self.features_out(&mut own.as_view_mut())?;
        Ok(own)
    }

    fn backward_split(&mut self, s: &mut ImageSplit, dfeats: &CudaSlice<f32>) -> R {
        let a = self.shape;
        if !self.taped {
            return Err(GpuError::Data(
                "backward needs a forward pass of the current parameters",
            ));
        }
        let nf = a.features();
        check("feature gradient", dfeats.len(), s.n * nf)?;
        let ((i0, i1), mine) = (s.own, s.mine());
        let chunks = mine.div_ceil(CHUNK_IMAGES);
        let mut err = None;
        let live = |err: &Option<GpuError>| err.is_none() && mine > 0;
        // One slot per own chunk, as long as the largest block's weights.
        let wmax = (0..a.blocks)
            .map(|l| a.channels * a.c_in(l) * 9)
            .max()
            .unwrap_or(1);
        let fits = |sl: &Slots| sl.len() == wmax && sl.count() >= chunks;
        if !s.slots.as_ref().is_some_and(fits) {
            s.slots = None; // free the old slots first
            match Slots::new(&self.dev, chunks, wmax) {
                Ok(sl) => s.slots = Some(sl),
                Err(e) => err = Some(e),
            }
        }
        if live(&err) {
            err = self.features_in(&dfeats.slice(i0 * nf..i1 * nf)).err();
        }
        let mut cur = 0;
        for l in (0..a.blocks).rev() {
            if live(&err) {
                err = self.unpool_layer(l, cur).err();
            }
            s.bn_sums(self, l, &mut err)?;
            if live(&err) {
                err = self.bn_dz_layer(l, s.n).err();
            }
            if live(&err) {
                err = self.conv_back_layer(l, cur, s.slots.as_mut()).err();
            }
            // The weight gradient: every rank's chunks in chunk order.
            let (wo, go, _) = a.offsets(l);
            let sum = match s.slots.as_mut() {
                Some(sl) => sl.chain(&self.dev, &*s.comm, &[(0, chunks)], &mut err),
                None => {
                    // No slots (their allocation failed): zeros through the chain.
                    let mut acc = vec![0.0f32; wmax];
                    s.comm.chain_f32(&mut acc, &mut |_, _| {});
                    acc
                }
            };
            agree(&*s.comm, err.take())?;
            let mut gw = self.grad.slice_mut(wo..go);
            let done = self.dev.stream().memcpy_htod(&sum[..go - wo], &mut gw);
            agree(&*s.comm, done.err().map(GpuError::from))?;
            cur = 1 - cur;
        }
        Ok(())
    }
}
