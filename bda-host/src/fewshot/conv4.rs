//! The conv4 backbone on the CPU: 4 × [3×3 convolution (padding 1), batch norm, ReLU,
//! 2×2 max-pool with `ceil_mode`], then flatten — the architecture of the PyTorch peer
//! (`fewshot_torch.py`). With 28×28 inputs the maps are 28 → 14 → 7 → 4 → 2, so the
//! backbone gives `64·2·2 = 256` features per image.
//!
//! Convolutions are im2col + GEMM ([`gemm`]: `matrixmultiply`, the GEMM nalgebra uses, with
//! run-time AVX/FMA kernels). Batch norm uses the statistics of the whole forward batch (training
//! mode, also at evaluation: transductive, as MAML-style code does). The convolutions have
//! no bias: batch norm subtracts the per-channel mean right after, so a bias has no effect
//! and a zero gradient (PyTorch's `Conv2d` keeps one; its gradient is zero there too).
//!
//! Layout: images are processed in fixed chunks of [`CHUNK`] images, each chunk stored
//! channel-major (`[c][image·H·W]`), so one GEMM serves a chunk and chunks run in parallel
//! (rayon). Every reduction over images (batch-norm statistics, weight gradients) is made
//! per chunk and then summed in chunk order: results do not depend on the thread count.

use rayon::prelude::*;

/// Images per chunk (one GEMM per chunk and layer). Fixed, so that reductions have the
/// same order whatever the number of threads.
pub const CHUNK: usize = 8;

/// Batch norm's ε (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;

pub use crate::linalg::{Float, gemm};

/// Shape of a conv4-style backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Arch {
    /// Channels of every convolution (64 in the papers and the peer).
    pub channels: usize,
    /// Channels of the input images (1 for Omniglot; 3 for MiniImageNet). Absent from
    /// checkpoints written before MiniImageNet was read: 1.
    #[serde(default = "one")]
    pub in_channels: usize,
    /// Side of the square input images (28 for Omniglot, 84 for MiniImageNet).
    pub side: usize,
    /// Number of conv blocks (4).
    pub blocks: usize,
}

fn one() -> usize {
    1
}

impl Arch {
    /// The peer's conv4 on 28×28 images.
    pub const CONV4: Arch = Arch {
        channels: 64,
        in_channels: 1,
        side: 28,
        blocks: 4,
    };

    /// The same three numbers as the CUDA backbone's shape: the one definition of the
    /// geometry and of the parameter layout, so parameter vectors (checkpoints) move between
    /// `--device cpu` and `--device cuda` as they are.
    pub fn shape(&self) -> bda_gpu::Conv4Shape {
        bda_gpu::Conv4Shape {
            channels: self.channels,
            in_channels: self.in_channels,
            side: self.side,
            blocks: self.blocks,
        }
    }

    /// Side of the maps entering block `l` (block `blocks` = the output).
    pub fn side_at(&self, l: usize) -> usize {
        self.shape().side_at(l)
    }

    /// Input channels of block `l`.
    pub fn c_in(&self, l: usize) -> usize {
        self.shape().c_in(l)
    }

    /// Features per image (`channels · side_out²`).
    pub fn features(&self) -> usize {
        self.shape().features()
    }

    /// Values per input image (`in_channels · side²`).
    pub fn pixels(&self) -> usize {
        self.shape().pixels()
    }

    /// Offsets of block `l`'s weights (`[c_out][c_in·9]`), γ and β in the parameter vector.
    pub fn offsets(&self, l: usize) -> (usize, usize, usize) {
        self.shape().offsets(l)
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.shape().num_params()
    }

    /// Multiply–adds ×2 of the convolutions for `images` images: (forward, backward).
    /// Backward counts the weight gradient of every block and the input gradient of all
    /// blocks but the first (whose input is the images).
    pub fn conv_flops(&self, images: usize) -> (f64, f64) {
        self.shape().conv_flops(images)
    }

    /// PyTorch's default initialisation of `Conv2d` weights (uniform in ±1/√fan_in), γ = 1,
    /// β = 0, drawn from `rng`.
    pub fn init<T: Float>(&self, rng: &mut impl rand::Rng) -> Vec<T> {
        let mut p = vec![T::zero(); self.num_params()];
        for l in 0..self.blocks {
            let (w, g, b) = self.offsets(l);
            let bound = 1.0 / ((self.c_in(l) * 9) as f64).sqrt();
            for v in &mut p[w..g] {
                *v = T::from_f64(rng.random_range(-bound..bound));
            }
            for v in &mut p[g..b] {
                *v = T::one();
            }
        }
        p
    }
}

/// What the backward pass needs from one block's forward pass.
struct BlockCache<T> {
    /// Block input, chunk layout `[c_in][len·H·W]`.
    input: Vec<T>,
    /// Convolution output before batch norm, chunk layout `[c][len·H·W]`.
    z: Vec<T>,
    mean: Vec<T>,
    invstd: Vec<T>,
    /// For each pooled output, the position (within its chunk block) of the maximum.
    argmax: Vec<u32>,
}

/// The forward pass of a batch, kept for [`Conv4::backward`].
pub struct Tape<T> {
    images: usize,
    blocks: Vec<BlockCache<T>>,
}

/// Ranges of the chunks of `n` images with `per_image` values each.
fn chunks(n: usize) -> Vec<(usize, usize)> {
    (0..n.div_ceil(CHUNK))
        .map(|j| (j * CHUNK, ((j + 1) * CHUNK).min(n) - j * CHUNK))
        .collect()
}

/// Split a chunk-layout buffer into per-chunk mutable slices.
fn split_chunks<T>(mut buf: &mut [T], n: usize, per_image: usize) -> Vec<&mut [T]> {
    let mut out = Vec::new();
    for (_, len) in chunks(n) {
        let (a, rest) = buf.split_at_mut(len * per_image);
        out.push(a);
        buf = rest;
    }
    out
}

fn split_ref<T>(mut buf: &[T], n: usize, per_image: usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    for (_, len) in chunks(n) {
        let (a, rest) = buf.split_at(len * per_image);
        out.push(a);
        buf = rest;
    }
    out
}

/// Images (`n × c·hw`, each channel-major) to the chunk layout (`[c][len·hw]` per chunk).
/// With one channel the two layouts are the same.
fn to_chunk_layout<T: Float>(images: &[T], n: usize, c: usize, hw: usize) -> Vec<T> {
    if c == 1 {
        return images.to_vec();
    }
    let mut out = Vec::with_capacity(images.len());
    for (i0, len) in chunks(n) {
        let chunk = &images[i0 * c * hw..(i0 + len) * c * hw];
        for ci in 0..c {
            for img in chunk.chunks_exact(c * hw) {
                out.extend_from_slice(&img[ci * hw..(ci + 1) * hw]);
            }
        }
    }
    out
}

/// im2col of one chunk: `cols[ci·9 + ky·3 + kx][i·s² + oy·s + ox]`.
fn im2col<T: Float>(input: &[T], c_in: usize, len: usize, s: usize, cols: &mut [T]) {
    let hw = s * s;
    let n = len * hw;
    for ci in 0..c_in {
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &mut cols[((ci * 3 + ky) * 3 + kx) * n..][..n];
                for i in 0..len {
                    let src = &input[ci * n + i * hw..][..hw];
                    let dst = &mut row[i * hw..][..hw];
                    for oy in 0..s {
                        let iy = oy as isize + ky as isize - 1;
                        let d = &mut dst[oy * s..][..s];
                        if iy < 0 || iy >= s as isize {
                            d.fill(T::zero());
                            continue;
                        }
                        let srow = &src[iy as usize * s..][..s];
                        match kx {
                            0 => {
                                d[0] = T::zero();
                                d[1..].copy_from_slice(&srow[..s - 1]);
                            }
                            1 => d.copy_from_slice(srow),
                            _ => {
                                d[..s - 1].copy_from_slice(&srow[1..]);
                                d[s - 1] = T::zero();
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adjoint of [`im2col`]: `dinput += col2im(dcols)` (dinput must start at zero).
fn col2im<T: Float>(dcols: &[T], c_in: usize, len: usize, s: usize, dinput: &mut [T]) {
    let hw = s * s;
    let n = len * hw;
    for ci in 0..c_in {
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &dcols[((ci * 3 + ky) * 3 + kx) * n..][..n];
                for i in 0..len {
                    let src = &row[i * hw..][..hw];
                    let dst = &mut dinput[ci * n + i * hw..][..hw];
                    for oy in 0..s {
                        let iy = oy as isize + ky as isize - 1;
                        if iy < 0 || iy >= s as isize {
                            continue;
                        }
                        let d = &mut dst[iy as usize * s..][..s];
                        let srow = &src[oy * s..][..s];
                        let (dd, ss) = match kx {
                            0 => (&mut d[..s - 1], &srow[1..]),
                            1 => (&mut d[..], srow),
                            _ => (&mut d[1..], &srow[..s - 1]),
                        };
                        for (o, &v) in dd.iter_mut().zip(ss) {
                            *o += v;
                        }
                    }
                }
            }
        }
    }
}

/// `Σ v` with 8 independent accumulators (vectorisable; fixed order).
fn lane_sum<T: Float>(v: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::zero(); 8];
    let mut it = v.chunks_exact(8);
    for c in &mut it {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    let mut s = it.remainder().iter().fold(T::zero(), |s, &x| s + f(x));
    for a in acc {
        s += a;
    }
    s
}

/// `Σ a_i·b_i` with 8 independent accumulators.
fn lane_dot<T: Float>(a: &[T], b: &[T], shift: T) -> T {
    let mut acc = [T::zero(); 8];
    let (ia, ib) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ia.remainder(), ib.remainder());
    for (ca, cb) in ia.zip(ib) {
        for ((s, &x), &y) in acc.iter_mut().zip(ca).zip(cb) {
            *s += x * (y - shift);
        }
    }
    let mut s = ra
        .iter()
        .zip(rb)
        .fold(T::zero(), |s, (&x, &y)| s + x * (y - shift));
    for v in acc {
        s += v;
    }
    s
}

/// Sum per-chunk vectors in chunk order (deterministic).
fn ordered_sum<T: Float>(parts: Vec<Vec<T>>, len: usize) -> Vec<T> {
    let mut acc = vec![T::zero(); len];
    for p in parts {
        for (a, v) in acc.iter_mut().zip(p) {
            *a += v;
        }
    }
    acc
}

/// The conv4 backbone: an architecture and a borrowed parameter vector.
pub struct Conv4<'p, T> {
    /// Shape.
    pub arch: Arch,
    /// Parameters, laid out by [`Arch`] (weights `[c_out][c_in·9]`, γ, β per block).
    pub params: &'p [T],
}

impl<T: Float> Conv4<'_, T> {
    /// Features of `n` images (`images`: `n × in_channels·side²`, each image channel-major)
    /// → `n × features`, plus the tape for [`backward`](Self::backward).
    pub fn forward(&self, images: &[T], n: usize) -> (Vec<T>, Tape<T>) {
        let a = self.arch;
        assert_eq!(images.len(), n * a.pixels(), "image buffer size");
        let ch = a.channels;
        let mut input = to_chunk_layout(images, n, a.in_channels, a.side * a.side);
        let mut blocks = Vec::with_capacity(a.blocks);
        for l in 0..a.blocks {
            let (c_in, s) = (a.c_in(l), a.side_at(l));
            let (hw, so) = (s * s, a.side_at(l + 1));
            let (wo, go, bo) = a.offsets(l);
            let w = &self.params[wo..go];
            // Convolution, chunk by chunk.
            let mut z = vec![T::zero(); n * ch * hw];
            split_chunks(&mut z, n, ch * hw)
                .into_par_iter()
                .zip(split_ref(&input, n, c_in * hw))
                .for_each_init(Vec::new, |cols, (zc, xc)| {
                    let len = xc.len() / (c_in * hw);
                    cols.resize(c_in * 9 * len * hw, T::zero());
                    im2col(xc, c_in, len, s, cols);
                    let m = len * hw;
                    gemm(
                        ch,
                        c_in * 9,
                        m,
                        T::one(),
                        w,
                        c_in * 9,
                        1,
                        cols,
                        m,
                        1,
                        T::zero(),
                        zc,
                        m,
                        1,
                    );
                });
            // Batch statistics: per-chunk partial sums, summed in chunk order.
            let count = T::from_f64((n * hw) as f64);
            let zs = split_ref(&z, n, ch * hw);
            let sums: Vec<Vec<T>> = zs
                .par_iter()
                .map(|zc| {
                    let m = zc.len() / ch;
                    (0..ch)
                        .map(|c| zc[c * m..][..m].iter().fold(T::zero(), |s, &v| s + v))
                        .collect()
                })
                .collect();
            let mean: Vec<T> = ordered_sum(sums, ch)
                .into_iter()
                .map(|v| v / count)
                .collect();
            let sq: Vec<Vec<T>> = zs
                .par_iter()
                .map(|zc| {
                    let m = zc.len() / ch;
                    (0..ch)
                        .map(|c| {
                            zc[c * m..][..m]
                                .iter()
                                .fold(T::zero(), |s, &v| s + (v - mean[c]).square())
                        })
                        .collect()
                })
                .collect();
            let invstd: Vec<T> = ordered_sum(sq, ch)
                .into_iter()
                .map(|v| T::one() / (v / count + T::from_f64(BN_EPS)).sqrt())
                .collect();
            let gamma = &self.params[go..bo];
            let beta = &self.params[bo..bo + ch];
            // Normalise, ReLU, max-pool (ceil mode).
            let hwo = so * so;
            let mut out = vec![T::zero(); n * ch * hwo];
            let mut argmax = vec![0u32; n * ch * hwo];
            split_chunks(&mut out, n, ch * hwo)
                .into_par_iter()
                .zip(split_chunks(&mut argmax, n, ch * hwo))
                .zip(zs.par_iter())
                .for_each_init(Vec::new, |act, ((oc, ac), zc)| {
                    let len = zc.len() / (ch * hw);
                    act.resize(hw, T::zero());
                    for c in 0..ch {
                        let sc = gamma[c] * invstd[c];
                        let sh = beta[c] - sc * mean[c];
                        for i in 0..len {
                            let base = c * len * hw + i * hw;
                            for (a, &v) in act.iter_mut().zip(&zc[base..base + hw]) {
                                let y = sc * v + sh;
                                *a = if y > T::zero() { y } else { T::zero() };
                            }
                            let ob = c * len * hwo + i * hwo;
                            for oy in 0..so {
                                for ox in 0..so {
                                    let p0 = 2 * oy * s + 2 * ox;
                                    let (mut best, mut bv) = (p0, act[p0]);
                                    let right = 2 * ox + 1 < s;
                                    let down = 2 * oy + 1 < s;
                                    if right && act[p0 + 1] > bv {
                                        best = p0 + 1;
                                        bv = act[p0 + 1];
                                    }
                                    if down && act[p0 + s] > bv {
                                        best = p0 + s;
                                        bv = act[p0 + s];
                                    }
                                    if right && down && act[p0 + s + 1] > bv {
                                        best = p0 + s + 1;
                                        bv = act[p0 + s + 1];
                                    }
                                    oc[ob + oy * so + ox] = bv;
                                    ac[ob + oy * so + ox] = (base + best) as u32;
                                }
                            }
                        }
                    }
                });
            blocks.push(BlockCache {
                input: std::mem::replace(&mut input, out),
                z,
                mean,
                invstd,
                argmax,
            });
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
        (feats, Tape { images: n, blocks })
    }

    /// Gradient of the parameters given `dfeats = ∂L/∂features` (`n × features`).
    pub fn backward(&self, tape: &Tape<T>, dfeats: &[T]) -> Vec<T> {
        let a = self.arch;
        let n = tape.images;
        let ch = a.channels;
        let so = a.side_at(a.blocks);
        let hwo = so * so;
        let nf = a.features();
        assert_eq!(dfeats.len(), n * nf, "feature gradient size");
        let mut grad = vec![T::zero(); a.num_params()];
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
            let bc = &tape.blocks[l];
            let (c_in, s) = (a.c_in(l), a.side_at(l));
            let hw = s * s;
            let so = a.side_at(l + 1);
            let hwo = so * so;
            let (wo, go, bo) = a.offsets(l);
            let w = &self.params[wo..go];
            let gamma = &self.params[go..bo];
            let beta = &self.params[bo..bo + ch];
            let (mean, invstd) = (&bc.mean, &bc.invstd);
            let zs = split_ref(&bc.z, n, ch * hw);
            let douts = split_ref(&dout, n, ch * hwo);
            let args = split_ref(&bc.argmax, n, ch * hwo);
            // dy (gradient at the batch-norm output, ReLU applied) of one chunk.
            let dy_of = |zc: &[T], dc: &[T], ac: &[u32], dy: &mut Vec<T>| {
                dy.clear();
                dy.resize(zc.len(), T::zero());
                let len = zc.len() / (ch * hw);
                for c in 0..ch {
                    let sc = gamma[c] * invstd[c];
                    let sh = beta[c] - sc * mean[c];
                    for q in c * len * hwo..(c + 1) * len * hwo {
                        let p = ac[q] as usize;
                        let y = sc * zc[p] + sh;
                        if y > T::zero() {
                            dy[p] += dc[q];
                        }
                    }
                }
            };
            // Pass 1: Σ dy and Σ dy·x̂ per channel.
            let parts: Vec<Vec<T>> = (0..zs.len())
                .into_par_iter()
                .map_init(Vec::new, |dy, j| {
                    dy_of(zs[j], douts[j], args[j], dy);
                    let m = zs[j].len() / ch;
                    let mut r = vec![T::zero(); 2 * ch];
                    for c in 0..ch {
                        let (d, z) = (&dy[c * m..][..m], &zs[j][c * m..][..m]);
                        r[c] = lane_sum(d, |v| v);
                        r[ch + c] = lane_dot(d, z, mean[c]) * invstd[c];
                    }
                    r
                })
                .collect();
            let sums = ordered_sum(parts, 2 * ch);
            grad[bo..bo + ch].copy_from_slice(&sums[..ch]);
            grad[go..bo].copy_from_slice(&sums[ch..]);
            let count = T::from_f64((n * hw) as f64);
            // Pass 2: dz, the weight gradient, the input gradient.
            let xs = split_ref(&bc.input, n, c_in * hw);
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
                (0..zs.len()).map(|_| None).collect::<Vec<_>>()
            };
            let wparts: Vec<Vec<T>> = din_chunks
                .par_iter_mut()
                .enumerate()
                .map_init(
                    || (Vec::new(), Vec::new()),
                    |(dy, cols), (j, dinc)| {
                        dy_of(zs[j], douts[j], args[j], dy);
                        let len = zs[j].len() / (ch * hw);
                        let m = len * hw;
                        for c in 0..ch {
                            // dz = k (M dy − Σdy − x̂ Σdy·x̂), x̂ = (z − μ)·invstd
                            let k = gamma[c] * invstd[c] / count;
                            let (sd, sdx) = (sums[c], sums[ch + c]);
                            let (a, b) = (k * count, k * sdx * invstd[c]);
                            let cst = -k * sd + b * mean[c];
                            for (d, &z) in dy[c * m..][..m].iter_mut().zip(&zs[j][c * m..][..m]) {
                                *d = a * *d - b * z + cst;
                            }
                        }
                        let kk = c_in * 9;
                        cols.resize(kk * m, T::zero());
                        im2col(xs[j], c_in, len, s, cols);
                        let mut gw = vec![T::zero(); ch * kk];
                        // gw[c][r] = Σ_p dz[c][p] cols[r][p]
                        gemm(
                            ch,
                            m,
                            kk,
                            T::one(),
                            dy,
                            m,
                            1,
                            cols,
                            1,
                            m,
                            T::zero(),
                            &mut gw,
                            kk,
                            1,
                        );
                        if let Some(dinc) = dinc {
                            // dcols[r][p] = Σ_c w[c][r] dz[c][p]
                            gemm(
                                kk,
                                ch,
                                m,
                                T::one(),
                                w,
                                1,
                                kk,
                                dy,
                                m,
                                1,
                                T::zero(),
                                cols,
                                m,
                                1,
                            );
                            col2im(cols, c_in, len, s, dinc);
                        }
                        gw
                    },
                )
                .collect();
            drop(din_chunks);
            let gw = ordered_sum(wparts, ch * c_in * 9);
            grad[wo..go].copy_from_slice(&gw);
            dout = din;
        }
        grad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batch norm's ε is defined on both sides (f64 here, f32 in the CUDA kernels).
    #[test]
    fn batch_norm_epsilon_is_the_cuda_backbones() {
        assert_eq!(BN_EPS as f32, bda_gpu::BN_EPS);
    }
}
