//! The conv4 backbone on the CPU: 4 × [3×3 convolution (padding 1), batch norm, ReLU,
//! 2×2 max-pool with `ceil_mode`], then flatten — the architecture of the PyTorch peer
//! (`fewshot_torch.py`). With 28×28 inputs the maps are 28 → 14 → 7 → 4 → 2, so the
//! backbone gives `64·2·2 = 256` features per image.
//!
//! Convolutions with at least `WINOGRAD_MIN_C_IN` (4) input channels run forward as
//! Winograd F(2×2, 3×3) (`winograd.rs`: 2.25× fewer multiplications, as 16 GEMMs), and
//! backward too on maps at least `WINOGRAD_BACKWARD_MIN_SIDE` (10) wide; the rest are
//! im2col + GEMM ([`gemm`]: `matrixmultiply`, the GEMM nalgebra uses, with run-time AVX/FMA
//! kernels). Batch norm uses the statistics of the whole forward batch (training
//! mode, also at evaluation: transductive, as MAML-style code does). The convolutions have
//! no bias: batch norm subtracts the per-channel mean right after, so a bias has no effect
//! and a zero gradient (PyTorch's `Conv2d` keeps one; its gradient is zero there too).
//!
//! Layout: images are processed in fixed chunks of [`CHUNK`] images, each chunk stored
//! channel-major (`[c][image·H·W]`), so one GEMM serves a chunk and chunks run in parallel
//! (rayon). Every reduction over images (batch-norm statistics, weight gradients) is made
//! per chunk and then summed in chunk order: results do not depend on the thread count.

use rayon::prelude::*;

pub(crate) mod ops;
mod split;
pub(crate) mod winograd;

use std::time::Instant;

use bda_kernel::collective::{Collective, Solo};

use winograd::WinogradConv;

use ops::{
    UNCAPPED, batch_norm_adjoint, bn_relu_pool, chunk_moments, chunks, col2im, group_size, groups,
    im2col, merge_moments, ordered_sum, pooled_sums, split_chunks, split_ref, to_chunk_layout,
};

/// Images per chunk (one GEMM per chunk and layer). Fixed, so that reductions have the
/// same order whatever the number of threads.
pub const CHUNK: usize = 8;

pub use crate::linalg::{Float, gemm};
pub use bda_kernel::fewshot::{BN_EPS, Conv4Shape};

/// PyTorch's default initialisation of the backbone's `Conv2d` weights (uniform in
/// ±1/√fan_in), γ = 1, β = 0, drawn from `rng` in parameter order.
pub fn init_params<T: Float>(shape: &Conv4Shape, rng: &mut impl rand::Rng) -> Vec<T> {
    let mut p = vec![T::zero(); shape.num_params()];
    for l in 0..shape.blocks {
        let (w, g, b) = shape.offsets(l);
        let bound = 1.0 / ((shape.c_in(l) * 9) as f64).sqrt();
        for v in &mut p[w..g] {
            *v = T::from_f64(rng.random_range(-bound..bound));
        }
        for v in &mut p[g..b] {
            *v = T::one();
        }
    }
    p
}

/// Convolutions with at most this many multiply-adds per output (`c_in · 9`) are
/// recomputed rather than stored: grey images' first block. Measured (2 threads,
/// `bda fewshot bench`): storing Omniglot's block 0 (257 MB of maps for 1280 images) made
/// its forward and backward passes 0.34 s, recomputing it 0.26 s; for MiniImageNet's RGB
/// block 0 (27 per output) storing wins, 0.36–0.39 s against 0.41–0.51 s.
const RECOMPUTE_MAX_K: usize = 9;

/// Convolutions with at least this many input channels run forward in the Winograd
/// domain ([`winograd`]); thinner ones (grey and RGB images' first block) by im2col, where
/// one GEMM with `K = c_in·9` beats 16 GEMMs with `K = c_in`.
pub(crate) const WINOGRAD_MIN_C_IN: usize = 4;

/// Their backward passes also run in the Winograd domain on maps at least this wide;
/// smaller maps (7×7 and 4×4 at the default shapes, where a quarter to half of the tiles'
/// outputs are padding and the weight-gradient GEMM is only `g·t²` deep) go by im2col —
/// the same gradient, as both are adjoints of the same convolution. Measured at the default
/// shapes (`bda fewshot bench`, 2 threads): block 1 (14×14) backward 0.32–0.35 s Winograd
/// against 0.37–0.41 s im2col; block 2 (7×7) 0.146–0.150 s against 0.118–0.127 s.
pub(crate) const WINOGRAD_BACKWARD_MIN_SIDE: usize = 10;

/// One block's convolution of one chunk: im2col then `Z = W · cols`, or Winograd
/// F(2×2, 3×3) with the block's transformed weights.
struct ConvChunk<'w, T> {
    w: &'w [T],
    c_in: usize,
    s: usize,
    ch: usize,
    /// The weights in the Winograd domain, for a block that takes that path.
    u: Option<Vec<T>>,
    /// At most this many images per im2col or Winograd group ([`UNCAPPED`] in production).
    cap: usize,
}

/// One worker's scratch for [`ConvChunk`]: im2col's columns or the Winograd transforms.
#[derive(Default)]
struct ConvScratch<T> {
    cols: Vec<T>,
    wino: winograd::Scratch<T>,
}

impl<'w, T: Float> ConvChunk<'w, T> {
    /// A block's convolution with weights `w` (`[ch][c_in·9]`) on `s × s` maps, taking the
    /// Winograd path when it has at least [`WINOGRAD_MIN_C_IN`] input channels, in groups
    /// of at most `cap` images.
    fn new(w: &'w [T], c_in: usize, s: usize, ch: usize, cap: usize) -> Self {
        let u = (c_in >= WINOGRAD_MIN_C_IN).then(|| winograd::transform_weights(w, ch, c_in));
        ConvChunk {
            w,
            c_in,
            s,
            ch,
            u,
            cap,
        }
    }

    fn winograd(&self) -> Option<WinogradConv<'_, T>> {
        self.u.as_deref().map(|u| WinogradConv {
            u,
            c_in: self.c_in,
            s: self.s,
            ch: self.ch,
            cap: self.cap,
        })
    }

    /// The Winograd form of the backward pass, where it is used.
    fn winograd_backward(&self) -> Option<WinogradConv<'_, T>> {
        self.winograd()
            .filter(|_| self.s >= WINOGRAD_BACKWARD_MIN_SIDE)
    }

    /// The chunk `xc` (`[c_in][len·s²]`) convolved into `z`, whose size is set here.
    fn run(&self, xc: &[T], sc: &mut ConvScratch<T>, z: &mut Vec<T>) {
        z.resize(self.ch * xc.len() / self.c_in, T::zero());
        self.run_into(xc, sc, z);
    }

    /// Chunk `j`'s convolution output: `stored[j]`, or, when nothing is stored (a
    /// recomputed block), chunk `xc` convolved into `local`.
    fn output<'a>(
        &self,
        stored: &[&'a [T]],
        j: usize,
        xc: &[T],
        sc: &mut ConvScratch<T>,
        local: &'a mut Vec<T>,
    ) -> &'a [T] {
        if stored.is_empty() {
            self.run(xc, sc, local);
            local
        } else {
            stored[j]
        }
    }

    /// The chunk `xc` convolved into `z` (`ch × len·s²`); by im2col, group by group:
    /// `Z[:, group] = W · cols(group)`.
    fn run_into(&self, xc: &[T], sc: &mut ConvScratch<T>, z: &mut [T]) {
        if let Some(wc) = self.winograd() {
            return wc.run_into(xc, &mut sc.wino, z);
        }
        let (hw, kk) = (self.s * self.s, self.c_in * 9);
        let len = xc.len() / (self.c_in * hw);
        let m = len * hw;
        let cols = &mut sc.cols;
        for (i0, g) in groups(len, group_size::<T>(kk, hw, self.cap)) {
            cols.resize(kk * g * hw, T::zero());
            im2col(xc, self.c_in, len, self.s, (i0, g), cols);
            gemm(
                self.ch,
                kk,
                g * hw,
                T::one(),
                self.w,
                kk,
                1,
                cols,
                g * hw,
                1,
                T::zero(),
                &mut z[i0 * hw..],
                m,
                1,
            );
        }
    }

    /// Length of a chunk's weight-gradient part ([`backward`](Self::backward)).
    fn weight_grad_len(&self) -> usize {
        let per = self.ch * self.c_in;
        if self.winograd_backward().is_some() {
            16 * per
        } else {
            9 * per
        }
    }

    /// The chunk's part of the backward pass given `dz` (`[ch][len·s²]`): its part of the
    /// weight gradient (in the Winograd domain for a Winograd block: sum the chunks', then
    /// [`weight_grad`](Self::weight_grad)), and, when `din` is given, the input gradient.
    fn backward(
        &self,
        xc: &[T],
        dz: &[T],
        sc: &mut ConvScratch<T>,
        din: Option<&mut [T]>,
    ) -> Vec<T> {
        let mut gw = vec![T::zero(); self.weight_grad_len()];
        if let Some(wc) = self.winograd_backward() {
            wc.backward(xc, dz, &mut sc.wino, Some(&mut gw), din);
            return gw;
        }
        let (c_in, s, ch) = (self.c_in, self.s, self.ch);
        let (hw, kk) = (s * s, c_in * 9);
        let len = xc.len() / (c_in * hw);
        let m = len * hw;
        let cols = &mut sc.cols;
        let mut din = din;
        for (i0, g) in groups(len, group_size::<T>(kk, hw, self.cap)) {
            let gm = g * hw;
            cols.resize(kk * gm, T::zero());
            im2col(xc, c_in, len, s, (i0, g), cols);
            // gw[c][r] += Σ_p dz[c][p] cols[r][p] over the group's p
            gemm(
                ch,
                gm,
                kk,
                T::one(),
                &dz[i0 * hw..],
                m,
                1,
                cols,
                1,
                gm,
                T::one(),
                &mut gw,
                kk,
                1,
            );
            if let Some(dinc) = din.as_deref_mut() {
                // dcols[r][p] = Σ_c w[c][r] dz[c][p]
                gemm(
                    kk,
                    ch,
                    gm,
                    T::one(),
                    self.w,
                    1,
                    kk,
                    &dz[i0 * hw..],
                    m,
                    1,
                    T::zero(),
                    cols,
                    gm,
                    1,
                );
                col2im(cols, c_in, len, s, (i0, g), dinc);
            }
        }
        gw
    }

    /// The weight gradient (`[ch][c_in·9]`) from the sum of the chunks' parts.
    fn weight_grad(&self, sum: Vec<T>) -> Vec<T> {
        if self.winograd_backward().is_some() {
            winograd::transform_weights_adjoint(&sum, self.ch, self.c_in)
        } else {
            sum
        }
    }
}

/// What the backward pass needs from one block's forward pass.
struct BlockCache<T> {
    /// Block input, chunk layout `[c_in][len·H·W]`.
    input: Vec<T>,
    /// Convolution output before batch norm, chunk layout `[c][len·H·W]` (empty when
    /// `recompute`).
    z: Vec<T>,
    /// The convolution is recomputed from `input` instead of kept in `z`.
    recompute: bool,
    mean: Vec<T>,
    invstd: Vec<T>,
    /// For each pooled output, the position (within its chunk block) of the maximum.
    argmax: Vec<u32>,
}

/// The forward pass of a batch, kept for [`Conv4::backward`].
pub struct Tape<T> {
    /// The images this rank passed (all of them alone).
    images: usize,
    /// The first of them, and the whole batch's count.
    first: usize,
    total: usize,
    /// The forward pass's cap on images per group; the backward pass uses the same.
    cap: usize,
    blocks: Vec<BlockCache<T>>,
    /// Seconds each block's forward pass took.
    seconds: Vec<f64>,
}

impl<T> Tape<T> {
    /// Seconds each block's forward pass took (the profile of `bda fewshot bench`).
    pub fn seconds(&self) -> &[f64] {
        &self.seconds
    }
}

/// The conv4 backbone: an architecture and a borrowed parameter vector.
pub struct Conv4<'p, T> {
    /// Shape.
    pub arch: Conv4Shape,
    /// Parameters, laid out by [`Conv4Shape`] (weights `[c_out][c_in·9]`, γ, β per block).
    pub params: &'p [T],
}

impl<T: Float> Conv4<'_, T> {
    /// Features of `n` images (`images`: `n × in_channels·side²`, each image channel-major)
    /// → `n × features`, plus the tape for [`backward`](Self::backward).
    pub fn forward(&self, images: &[T], n: usize) -> (Vec<T>, Tape<T>) {
        self.forward_in_groups(images, n, UNCAPPED, &Solo)
    }

    /// [`forward`](Self::forward) split over the ranks of `comm`: this rank passes its
    /// chunks of the `n` images (every rank gives all of them); the features of all `n`
    /// come back, with the bits of one process.
    pub fn forward_on(&self, images: &[T], n: usize, comm: &dyn Collective) -> (Vec<T>, Tape<T>) {
        self.forward_in_groups(images, n, UNCAPPED, comm)
    }

    /// [`forward`](Self::forward) with at most `cap` images per im2col or Winograd group;
    /// the tape keeps `cap` for the backward pass.
    fn forward_in_groups(
        &self,
        images: &[T],
        total: usize,
        cap: usize,
        comm: &dyn Collective,
    ) -> (Vec<T>, Tape<T>) {
        let a = self.arch;
        assert_eq!(images.len(), total * a.pixels(), "image buffer size");
        let ch = a.channels;
        // This rank's chunks (all of them alone): `n` images from `first`.
        let own = split::own_images(total, comm);
        let (first, n) = (own.start, own.len());
        let images = &images[own.start * a.pixels()..own.end * a.pixels()];
        let mut input = to_chunk_layout(images, n, a.in_channels, a.side * a.side);
        let mut blocks = Vec::with_capacity(a.blocks);
        let mut seconds = Vec::with_capacity(a.blocks);
        for l in 0..a.blocks {
            let t0 = Instant::now();
            let (c_in, s) = (a.c_in(l), a.side_at(l));
            let (hw, so) = (s * s, a.side_at(l + 1));
            let (wo, go, bo) = a.offsets(l);
            let w = &self.params[wo..go];
            // Convolution chunk by chunk, and each chunk's per-channel mean and centred sum
            // of squares while its output is in cache. A thin convolution (grey images'
            // block: 9 multiply-adds per output) is kept nowhere: it is recomputed where
            // needed, cheaper than writing and reading its large maps.
            let recompute = c_in * 9 <= RECOMPUTE_MAX_K;
            let conv = ConvChunk::new(w, c_in, s, ch, cap);
            let mut z = if recompute {
                Vec::new()
            } else {
                vec![T::zero(); n * ch * hw]
            };
            let xs = split_ref(&input, n, c_in * hw);
            let parts: Vec<Vec<T>> = if recompute {
                xs.par_iter()
                    .map_init(
                        || (ConvScratch::default(), Vec::new()),
                        |(sc, zc), xc| {
                            conv.run(xc, sc, zc);
                            chunk_moments(zc, ch)
                        },
                    )
                    .collect()
            } else {
                split_chunks(&mut z, n, ch * hw)
                    .into_par_iter()
                    .zip(xs.par_iter())
                    .map_init(ConvScratch::default, |sc, (zc, xc)| {
                        conv.run_into(xc, sc, zc);
                        chunk_moments(zc, ch)
                    })
                    .collect()
            };
            let parts = split::gather_parts(comm, total, parts, 2 * ch);
            let (mean, var) = merge_moments(&parts, &chunks(total), hw, ch);
            let invstd: Vec<T> = var
                .into_iter()
                .map(|v| T::one() / (v + T::from_f64(BN_EPS)).sqrt())
                .collect();
            let gamma = &self.params[go..bo];
            let beta = &self.params[bo..bo + ch];
            // Normalise, ReLU, max-pool (ceil mode), in one pass.
            let hwo = so * so;
            let mut out = vec![T::zero(); n * ch * hwo];
            let mut argmax = vec![0u32; n * ch * hwo];
            let zs = if recompute {
                Vec::new()
            } else {
                split_ref(&z, n, ch * hw)
            };
            split_chunks(&mut out, n, ch * hwo)
                .into_par_iter()
                .zip(split_chunks(&mut argmax, n, ch * hwo))
                .enumerate()
                .for_each_init(
                    || (ConvScratch::default(), Vec::new()),
                    |(sc, local), (j, (oc, ac))| {
                        let zc = conv.output(&zs, j, xs[j], sc, local);
                        let len = zc.len() / (ch * hw);
                        for c in 0..ch {
                            let sc = gamma[c] * invstd[c];
                            let sh = beta[c] - sc * mean[c];
                            for i in 0..len {
                                let base = c * len * hw + i * hw;
                                let ob = c * len * hwo + i * hwo;
                                bn_relu_pool(
                                    &zc[base..base + hw],
                                    s,
                                    (sc, sh),
                                    &mut oc[ob..ob + hwo],
                                    &mut ac[ob..ob + hwo],
                                    base as u32,
                                );
                            }
                        }
                    },
                );
            drop(xs);
            blocks.push(BlockCache {
                input: std::mem::replace(&mut input, out),
                z,
                recompute,
                mean,
                invstd,
                argmax,
            });
            seconds.push(t0.elapsed().as_secs_f64());
        }
        // Chunk layout [c][i·hw] → row-major features [i][c·hw] (PyTorch's flatten order).
        let so = a.side_at(a.blocks);
        let hwo = so * so;
        let nf = a.features();
        let mut feats = vec![T::zero(); n * nf];
        for ((start, len), xc) in chunks(n).into_iter().zip(split_ref(&input, n, ch * hwo)) {
            for i in 0..len {
                for c in 0..ch {
                    feats[(start + i) * nf + c * hwo..][..hwo]
                        .copy_from_slice(&xc[c * len * hwo + i * hwo..][..hwo]);
                }
            }
        }
        let feats = split::gather_rows(comm, total, feats, nf);
        let tape = Tape {
            images: n,
            first,
            total,
            cap,
            blocks,
            seconds,
        };
        (feats, tape)
    }

    /// Gradient of the parameters given `dfeats = ∂L/∂features` (`n × features`).
    pub fn backward(&self, tape: &Tape<T>, dfeats: &[T]) -> Vec<T> {
        self.backward_timed(tape, dfeats, &Solo).0
    }

    /// [`backward`](Self::backward) of a [`forward_on`](Self::forward_on) over the ranks
    /// of `comm` (`dfeats`: all images'), and the seconds each block took (the profile of
    /// `bda fewshot bench`).
    pub fn backward_timed(
        &self,
        tape: &Tape<T>,
        dfeats: &[T],
        comm: &dyn Collective,
    ) -> (Vec<T>, Vec<f64>) {
        let a = self.arch;
        let (n, cap, total) = (tape.images, tape.cap, tape.total);
        let ch = a.channels;
        let so = a.side_at(a.blocks);
        let hwo = so * so;
        let nf = a.features();
        assert_eq!(dfeats.len(), total * nf, "feature gradient size");
        let dfeats = &dfeats[tape.first * nf..(tape.first + n) * nf];
        let mut grad = vec![T::zero(); a.num_params()];
        let mut seconds = vec![0.0; a.blocks];
        // Features → chunk layout.
        let mut dout = vec![T::zero(); n * ch * hwo];
        for ((start, len), dc) in chunks(n)
            .into_iter()
            .zip(split_chunks(&mut dout, n, ch * hwo))
        {
            for i in 0..len {
                for c in 0..ch {
                    dc[c * len * hwo + i * hwo..][..hwo]
                        .copy_from_slice(&dfeats[(start + i) * nf + c * hwo..][..hwo]);
                }
            }
        }
        for l in (0..a.blocks).rev() {
            let t0 = Instant::now();
            let bc = &tape.blocks[l];
            let (c_in, s) = (a.c_in(l), a.side_at(l));
            let hw = s * s;
            let (wo, go, bo) = a.offsets(l);
            let w = &self.params[wo..go];
            let gamma = &self.params[go..bo];
            let beta = &self.params[bo..bo + ch];
            let (mean, invstd) = (&bc.mean, &bc.invstd);
            let conv = ConvChunk::new(w, c_in, s, ch, cap);
            let xs = split_ref(&bc.input, n, c_in * hw);
            let zs = if bc.recompute {
                Vec::new()
            } else {
                split_ref(&bc.z, n, ch * hw)
            };
            let hwo = a.side_at(l + 1).pow(2);
            let douts = split_ref(&dout, n, ch * hwo);
            let args = split_ref(&bc.argmax, n, ch * hwo);
            let affine = |c: usize| {
                let sc = gamma[c] * invstd[c];
                (sc, beta[c] - sc * mean[c])
            };
            // Pass 1: Σ dy and Σ dy·x̂ per channel, dy being the gradient at the batch-norm
            // output: the pooled gradient at each window's maximum where the ReLU passed it.
            let parts: Vec<Vec<T>> = (0..xs.len())
                .into_par_iter()
                .map_init(
                    || (ConvScratch::default(), Vec::new()),
                    |(sc, local), j| {
                        let zc = conv.output(&zs, j, xs[j], sc, local);
                        let q = args[j].len() / ch;
                        let mut r = vec![T::zero(); 2 * ch];
                        for c in 0..ch {
                            let (sd, sdx) = pooled_sums(
                                zc,
                                &douts[j][c * q..][..q],
                                &args[j][c * q..][..q],
                                affine(c),
                                mean[c],
                            );
                            r[c] = sd;
                            r[ch + c] = sdx * invstd[c];
                        }
                        r
                    },
                )
                .collect();
            let sums = ordered_sum(split::gather_parts(comm, total, parts, 2 * ch), 2 * ch);
            grad[bo..bo + ch].copy_from_slice(&sums[..ch]);
            grad[go..bo].copy_from_slice(&sums[ch..]);
            let count = T::from_f64((total * hw) as f64);
            // Pass 2: dz, the weight gradient, the input gradient.
            let mut din = if l > 0 {
                vec![T::zero(); n * c_in * hw]
            } else {
                Vec::new()
            };
            let mut din_chunks = if l > 0 {
                split_chunks(&mut din, n, c_in * hw)
                    .into_iter()
                    .map(Some)
                    .collect()
            } else {
                (0..xs.len()).map(|_| None).collect::<Vec<_>>()
            };
            let wparts: Vec<Vec<T>> = din_chunks
                .par_iter_mut()
                .enumerate()
                .map_init(
                    || (Vec::new(), ConvScratch::default(), Vec::new()),
                    |(dz, sc, local), (j, dinc)| {
                        let len = xs[j].len() / (c_in * hw);
                        let m = len * hw;
                        let zc = conv.output(&zs, j, xs[j], sc, local);
                        let q = args[j].len() / ch;
                        dz.resize(ch * m, T::zero());
                        for c in 0..ch {
                            // dz = k (M dy − Σdy − x̂ Σdy·x̂), x̂ = (z − μ)·invstd
                            let k = gamma[c] * invstd[c] / count;
                            let (sd, sdx) = (sums[c], sums[ch + c]);
                            let (ka, kb) = (k * count, k * sdx * invstd[c]);
                            let cst = -k * sd + kb * mean[c];
                            batch_norm_adjoint(
                                zc,
                                &mut dz[c * m..][..m],
                                c * m,
                                &douts[j][c * q..][..q],
                                &args[j][c * q..][..q],
                                affine(c),
                                (ka, kb, cst),
                            );
                        }
                        conv.backward(xs[j], dz, sc, dinc.as_deref_mut())
                    },
                )
                .collect();
            drop(din_chunks);
            let gw = conv.weight_grad(split::chain_sum(comm, &wparts, conv.weight_grad_len()));
            grad[wo..go].copy_from_slice(&gw);
            dout = din;
            seconds[l] = t0.elapsed().as_secs_f64();
        }
        (grad, seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// im2col in groups of 1 and 3 images (what large maps get) computes what whole chunks
    /// compute: the same features, the same gradient up to summation order.
    #[test]
    fn grouped_im2col_is_the_whole_chunk() {
        use rand::{Rng, SeedableRng};
        // Block 0 (9 per output) is recomputed, blocks 1–2 (36) are stored.
        let arch = Conv4Shape {
            channels: 4,
            in_channels: 1,
            side: 9,
            blocks: 3,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let params: Vec<f64> = init_params(&arch, &mut rng);
        let n = 11;
        let imgs: Vec<f64> = (0..n * arch.pixels()).map(|_| rng.random()).collect();
        let r: Vec<f64> = (0..n * arch.features()).map(|_| rng.random()).collect();
        let net = Conv4 {
            arch,
            params: &params,
        };
        let run = |cap: usize| {
            let (f, tape) = net.forward_in_groups(&imgs, n, cap, &Solo);
            (f, net.backward(&tape, &r))
        };
        let (f, g) = run(UNCAPPED);
        for cap in [1, 3] {
            let (fc, gc) = run(cap);
            let df = f
                .iter()
                .zip(&fc)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            let dg = g
                .iter()
                .zip(&gc)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                df < 1e-12 && dg < 1e-10,
                "cap {cap}: features {df:e}, gradient {dg:e}"
            );
        }
    }
}
