//! The whole few-shot network — the conv4 backbone and a linear N-way head — as one function
//! of all its weights: the lower level of the MAML family (MAML, first-order MAML, Meta-SGD,
//! Reptile, iMAML), whose variable `y` is every weight of the network.
//!
//! [`Network::loss_grad`] is the support (or query) loss of one task and its gradient with
//! respect to every weight, written once over [`Scalar`]: on `f64` it is the reference the
//! device backbones are checked against; on [`Dual`] numbers seeded with a direction `v`
//! the same reverse pass gives the exact Hessian–vector product `∇²f(y)·v`
//! ([`Network::hvp`], forward over reverse, no finite differences). Plain loops, small
//! shapes: a reference, not a fast path.
//!
//! Weights `y`: the backbone's parameters in [`Conv4Shape`]'s layout (per block: weights
//! `[c_out][c_in][3][3]`, γ, β), then the head's `W` (`ways × features`, row-major) and `b`
//! (`ways`). The loss is the mean cross-entropy of the `n` images, with batch norm over these
//! `n` images (the task's batch statistics, as MAML computes them).
//!
//! ```
//! use bda_kernel::fewshot::{Conv4Shape, Network};
//!
//! let shape = Conv4Shape { channels: 2, in_channels: 1, side: 4, blocks: 1 };
//! let net = Network { shape, ways: 2 };
//! let y: Vec<f64> = (0..net.num_params()).map(|i| 0.1 * (i % 7) as f64 - 0.2).collect();
//! let images: Vec<f64> = (0..2 * 16).map(|i| (i % 5) as f64 / 5.0).collect();
//! let mut g = vec![0.0; net.num_params()];
//! let loss = net.loss_grad(&y, &images, &[0, 1], Some(&mut g));
//! assert!(loss > 0.0 && g.iter().any(|&v| v != 0.0));
//! // The Hessian in the direction of the gradient.
//! let hv = net.hvp(&y, &g, &images, &[0, 1]);
//! assert_eq!(hv.len(), net.num_params());
//! ```

use alloc::vec;
use alloc::vec::Vec;

use super::shape::{BN_EPS, Conv4Shape};
use crate::scalar::{Dual, Scalar};

/// A conv4 backbone with a linear `ways`-way head on its features.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Network {
    /// The backbone.
    pub shape: Conv4Shape,
    /// Classes of the head.
    pub ways: usize,
}

/// One block's forward pass, kept for the reverse pass: maps image-major,
/// `[image][channel][row][column]`.
struct Block<T> {
    /// Input, `n × c_in × s × s`.
    input: Vec<T>,
    /// Normalised convolution output `x̂`, `n × ch × s × s`.
    xhat: Vec<T>,
    /// `1/√(var + ε)` per channel.
    invstd: Vec<T>,
    /// For each pooled output, the index in the block's maps of the chosen input (its value
    /// after ReLU; 0 outputs point at a non-positive input).
    argmax: Vec<usize>,
    /// Whether the ReLU let each map entry through.
    on: Vec<bool>,
}

impl Network {
    /// Weights of the whole network: the backbone's, then the head's.
    pub fn num_params(&self) -> usize {
        self.shape.num_params() + self.ways * (self.shape.features() + 1)
    }

    /// Mean cross-entropy of `labels` for the images (`labels.len()` of them, each
    /// `in_channels·side²` values, channel-major) under weights `y`, batch norm over these
    /// images; with `grad`, its gradient with respect to `y` (overwritten).
    pub fn loss_grad<T: Scalar>(
        &self,
        y: &[T],
        images: &[f64],
        labels: &[u8],
        grad: Option<&mut [T]>,
    ) -> T {
        let a = self.shape;
        let n = labels.len();
        assert_eq!(y.len(), self.num_params(), "weights");
        assert_eq!(images.len(), n * a.pixels(), "images");
        assert!(labels.iter().all(|&l| (l as usize) < self.ways), "labels");
        let mut maps: Vec<T> = images.iter().map(|&v| T::from_f64(v)).collect();
        let mut tape = Vec::with_capacity(a.blocks);
        for l in 0..a.blocks {
            let (out, block) = self.block_forward(y, l, maps, n);
            tape.push(block);
            maps = out;
        }
        // maps: n × ch × so × so, which is PyTorch's flatten order per image.
        let nf = a.features();
        let (w, b) = y[a.num_params()..].split_at(self.ways * nf);
        let inv_n = T::from_f64(1.0 / n as f64);
        let mut loss = T::zero();
        let mut dlogits = vec![T::zero(); n * self.ways];
        for (i, &label) in labels.iter().enumerate() {
            let f = &maps[i * nf..(i + 1) * nf];
            let z: Vec<T> = (0..self.ways)
                .map(|k| dot(&w[k * nf..(k + 1) * nf], f) + b[k])
                .collect();
            let top = z
                .iter()
                .copied()
                .fold(z[0], |m, v| if v.to_f64() > m.to_f64() { v } else { m });
            let e: Vec<T> = z.iter().map(|&v| (v - top).exp()).collect();
            let s = e.iter().fold(T::zero(), |acc, &v| acc + v);
            loss += (s.ln() + top - z[label as usize]) * inv_n;
            for k in 0..self.ways {
                let onehot = if k == label as usize {
                    T::one()
                } else {
                    T::zero()
                };
                dlogits[i * self.ways + k] = (e[k] / s - onehot) * inv_n;
            }
        }
        let Some(grad) = grad else { return loss };
        assert_eq!(grad.len(), self.num_params(), "gradient");
        grad.iter_mut().for_each(|g| *g = T::zero());
        // Head: ∇W = Gᵀ·F, ∇b = Σ G, ∇F = G·W.
        let mut dmaps = vec![T::zero(); n * nf];
        {
            let (gw, gb) = grad[a.num_params()..].split_at_mut(self.ways * nf);
            for i in 0..n {
                let f = &maps[i * nf..(i + 1) * nf];
                for k in 0..self.ways {
                    let d = dlogits[i * self.ways + k];
                    gb[k] += d;
                    for j in 0..nf {
                        gw[k * nf + j] += d * f[j];
                        dmaps[i * nf + j] += d * w[k * nf + j];
                    }
                }
            }
        }
        for l in (0..a.blocks).rev() {
            dmaps = self.block_backward(y, l, &tape[l], &dmaps, n, grad);
        }
        loss
    }

    /// Features (`n × features`, PyTorch's flatten order) of `n` images under the
    /// backbone's parameters `params` ([`Conv4Shape`]'s layout), batch norm over the `n`
    /// images: the backbone's `f64` reference.
    pub fn features<T: Scalar>(
        shape: &Conv4Shape,
        params: &[T],
        images: &[f64],
        n: usize,
    ) -> Vec<T> {
        assert_eq!(params.len(), shape.num_params(), "backbone parameters");
        assert_eq!(images.len(), n * shape.pixels(), "images");
        let net = Network {
            shape: *shape,
            ways: 0,
        };
        let mut maps: Vec<T> = images.iter().map(|&v| T::from_f64(v)).collect();
        for l in 0..shape.blocks {
            maps = net.block_forward(params, l, maps, n).0;
        }
        maps
    }

    /// `∇²f(y)·v`, `f` the loss of [`Network::loss_grad`]: its reverse pass on dual numbers
    /// seeded with `v` (exact up to rounding).
    pub fn hvp(&self, y: &[f64], v: &[f64], images: &[f64], labels: &[u8]) -> Vec<f64> {
        assert_eq!(v.len(), y.len(), "direction");
        let yd: Vec<Dual<f64>> = y.iter().zip(v).map(|(&y, &v)| Dual::new(y, v)).collect();
        let mut g = vec![Dual::constant(0.0); y.len()];
        self.loss_grad(&yd, images, labels, Some(&mut g));
        g.into_iter().map(|d| d.eps).collect()
    }

    /// Block `l` forward on `input` (`n` images): its output maps and what the reverse pass
    /// needs.
    fn block_forward<T: Scalar>(
        &self,
        y: &[T],
        l: usize,
        input: Vec<T>,
        n: usize,
    ) -> (Vec<T>, Block<T>) {
        let a = self.shape;
        let (ch, c_in, s, so) = (a.channels, a.c_in(l), a.side_at(l), a.side_at(l + 1));
        let (wo, go, bo) = a.offsets(l);
        let hw = s * s;
        // Convolution, padding 1, no bias.
        let mut z = vec![T::zero(); n * ch * hw];
        for i in 0..n {
            for o in 0..ch {
                for r in 0..s {
                    for q in 0..s {
                        let mut acc = T::zero();
                        for c in 0..c_in {
                            for (dr, dq, at) in taps(s, r, q) {
                                let wv = y[wo + (o * c_in + c) * 9 + dr * 3 + dq];
                                acc += wv * input[(i * c_in + c) * hw + at];
                            }
                        }
                        z[(i * ch + o) * hw + r * s + q] = acc;
                    }
                }
            }
        }
        // Batch norm over the n images, then ReLU.
        let m = T::from_f64((n * hw) as f64);
        let eps = T::from_f64(BN_EPS);
        let mut xhat = vec![T::zero(); z.len()];
        let mut invstd = vec![T::zero(); ch];
        let mut act = vec![T::zero(); z.len()];
        let mut on = vec![false; z.len()];
        for o in 0..ch {
            let idx = |i: usize, p: usize| (i * ch + o) * hw + p;
            let mut mean = T::zero();
            for i in 0..n {
                for p in 0..hw {
                    mean += z[idx(i, p)];
                }
            }
            mean /= m;
            let mut var = T::zero();
            for i in 0..n {
                for p in 0..hw {
                    let d = z[idx(i, p)] - mean;
                    var += d * d;
                }
            }
            let inv = T::one() / (var / m + eps).sqrt();
            invstd[o] = inv;
            let (gamma, beta) = (y[go + o], y[bo + o]);
            for i in 0..n {
                for p in 0..hw {
                    let k = idx(i, p);
                    xhat[k] = (z[k] - mean) * inv;
                    let v = gamma * xhat[k] + beta;
                    on[k] = v.to_f64() > 0.0;
                    act[k] = if on[k] { v } else { T::zero() };
                }
            }
        }
        // 2×2 max-pool with ceil mode: the first maximum of the window (row-major).
        let mut out = vec![T::zero(); n * ch * so * so];
        let mut argmax = vec![0usize; out.len()];
        for i in 0..n {
            for o in 0..ch {
                for r in 0..so {
                    for q in 0..so {
                        let base = (i * ch + o) * hw;
                        let mut best = base + 2 * r * s + 2 * q;
                        for rr in 2 * r..(2 * r + 2).min(s) {
                            for qq in 2 * q..(2 * q + 2).min(s) {
                                let k = base + rr * s + qq;
                                if act[k].to_f64() > act[best].to_f64() {
                                    best = k;
                                }
                            }
                        }
                        let j = (i * ch + o) * so * so + r * so + q;
                        out[j] = act[best];
                        argmax[j] = best;
                    }
                }
            }
        }
        let block = Block {
            input,
            xhat,
            invstd,
            argmax,
            on,
        };
        (out, block)
    }

    /// Block `l` reverse: from the gradient of its output maps, adds its weights' gradient
    /// into `grad` and returns the gradient of its input (empty for block 0).
    fn block_backward<T: Scalar>(
        &self,
        y: &[T],
        l: usize,
        b: &Block<T>,
        dout: &[T],
        n: usize,
        grad: &mut [T],
    ) -> Vec<T> {
        let a = self.shape;
        let (ch, c_in, s) = (a.channels, a.c_in(l), a.side_at(l));
        let (wo, go, bo) = a.offsets(l);
        let hw = s * s;
        // Through the pool and the ReLU.
        let mut dy = vec![T::zero(); n * ch * hw];
        for (j, &k) in b.argmax.iter().enumerate() {
            if b.on[k] {
                dy[k] += dout[j];
            }
        }
        // Batch norm: ∂γ = Σ dy·x̂, ∂β = Σ dy, dz = γ·invstd/m·(m·dy − Σdy − x̂·Σ dy·x̂).
        let m = T::from_f64((n * hw) as f64);
        let mut dz = vec![T::zero(); dy.len()];
        for o in 0..ch {
            let idx = |i: usize, p: usize| (i * ch + o) * hw + p;
            let (mut sd, mut sdx) = (T::zero(), T::zero());
            for i in 0..n {
                for p in 0..hw {
                    let k = idx(i, p);
                    sd += dy[k];
                    sdx += dy[k] * b.xhat[k];
                }
            }
            grad[go + o] += sdx;
            grad[bo + o] += sd;
            let scale = y[go + o] * b.invstd[o] / m;
            for i in 0..n {
                for p in 0..hw {
                    let k = idx(i, p);
                    dz[k] = scale * (m * dy[k] - sd - b.xhat[k] * sdx);
                }
            }
        }
        // Convolution: ∂W = Σ dZ·X (shifted), ∂X = Σ W·dZ.
        let mut din = vec![T::zero(); if l > 0 { n * c_in * hw } else { 0 }];
        for i in 0..n {
            for o in 0..ch {
                for r in 0..s {
                    for q in 0..s {
                        let d = dz[(i * ch + o) * hw + r * s + q];
                        for c in 0..c_in {
                            for (dr, dq, at) in taps(s, r, q) {
                                let wk = wo + (o * c_in + c) * 9 + dr * 3 + dq;
                                let xk = (i * c_in + c) * hw + at;
                                grad[wk] += d * b.input[xk];
                                if l > 0 {
                                    din[xk] += y[wk] * d;
                                }
                            }
                        }
                    }
                }
            }
        }
        din
    }
}

/// The taps of a 3×3 convolution with padding 1 at output `(r, q)` of an `s × s` map:
/// `(kernel row, kernel column, input index)` of every tap inside the map.
fn taps(s: usize, r: usize, q: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..3).flat_map(move |dr| {
        (0..3).filter_map(move |dq| {
            let (rr, qq) = ((r + dr).checked_sub(1)?, (q + dq).checked_sub(1)?);
            (rr < s && qq < s).then_some((dr, dq, rr * s + qq))
        })
    })
}

fn dot<T: Scalar>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::zero(), |acc, (&x, &y)| acc + x * y)
}
