//! Plain f64 references for the few-shot tests, straight from the definitions (bda-gpu cannot
//! depend on bda-host, whose CPU code they mirror):
//!
//! * [`conv4_forward`]: direct 3×3 convolutions (padding 1, no bias), batch norm with the
//!   batch's biased variance and ε = 1e-5, ReLU, 2×2 max-pool with ceil mode, PyTorch's
//!   flatten order;
//! * [`TaskHead`]: one task's linear head (`f` = mean support cross-entropy + (λ/2)‖y‖²,
//!   `F` = mean query cross-entropy) implementing the kernel's backend traits, so that the
//!   kernel's `unrolled` runs on it exactly as on the GPU.
#![allow(dead_code, clippy::needless_range_loop, clippy::too_many_arguments)]

use std::convert::Infallible;

use bda_gpu::Conv4Shape;
use bda_kernel::backend::{HostBuffers, LowerStep, StepAdjoint, UpperGradient};

/// Parameter offsets (weights, γ, β) of block `l`, the CPU layout.
fn offsets(a: &Conv4Shape, l: usize) -> (usize, usize, usize) {
    a.offsets(l)
}

/// Features (`n × features`) of `n` images under `params`.
pub fn conv4_forward(a: &Conv4Shape, params: &[f64], images: &[f64], n: usize) -> Vec<f64> {
    let ch = a.channels;
    // maps[i][c][y][x]
    let mut maps: Vec<f64> = images.to_vec();
    let mut c_in = 1;
    for l in 0..a.blocks {
        let (s, so) = (a.side_at(l), a.side_at(l + 1));
        let (wo, go, bo) = offsets(a, l);
        let mut z = vec![0.0; n * ch * s * s];
        for i in 0..n {
            for co in 0..ch {
                for y in 0..s {
                    for x in 0..s {
                        let mut acc = 0.0;
                        for ci in 0..c_in {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (y as isize + ky - 1, x as isize + kx - 1);
                                    if iy < 0 || ix < 0 || iy >= s as isize || ix >= s as isize {
                                        continue;
                                    }
                                    let w = params
                                        [wo + co * c_in * 9 + ci * 9 + (ky * 3 + kx) as usize];
                                    acc += w * maps
                                        [((i * c_in + ci) * s + iy as usize) * s + ix as usize];
                                }
                            }
                        }
                        z[((i * ch + co) * s + y) * s + x] = acc;
                    }
                }
            }
        }
        let cnt = (n * s * s) as f64;
        let mut out = vec![0.0; n * ch * so * so];
        for c in 0..ch {
            let vals = |i: usize| &z[(i * ch + c) * s * s..][..s * s];
            let mean = (0..n).map(|i| vals(i).iter().sum::<f64>()).sum::<f64>() / cnt;
            let var = (0..n)
                .map(|i| vals(i).iter().map(|v| (v - mean).powi(2)).sum::<f64>())
                .sum::<f64>()
                / cnt;
            let (g, b) = (params[go + c], params[bo + c]);
            let inv = 1.0 / (var + 1e-5).sqrt();
            for i in 0..n {
                let act = |y: usize, x: usize| (g * (vals(i)[y * s + x] - mean) * inv + b).max(0.0);
                for oy in 0..so {
                    for ox in 0..so {
                        let mut m = f64::NEG_INFINITY;
                        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            let (y, x) = (2 * oy + dy, 2 * ox + dx);
                            if y < s && x < s {
                                m = m.max(act(y, x));
                            }
                        }
                        out[((i * ch + c) * so + oy) * so + ox] = m;
                    }
                }
            }
        }
        maps = out;
        c_in = ch;
    }
    maps // [i][c][y][x] is PyTorch's flatten order already
}

/// One task's head problem in f64; `x` = the task's support rows then query rows.
#[derive(Clone, Debug)]
pub struct TaskHead {
    pub dim: usize,
    pub ways: usize,
    pub support_labels: Vec<u8>,
    pub query_labels: Vec<u8>,
    pub l2: f64,
}

#[derive(Clone, Copy)]
enum Set {
    Support,
    Query,
}

impl TaskHead {
    fn set(&self, s: Set) -> (usize, &[u8]) {
        match s {
            Set::Support => (0, &self.support_labels),
            Set::Query => (self.support_labels.len(), &self.query_labels),
        }
    }

    fn logits(&self, x: &[f64], y: &[f64], r: usize) -> Vec<f64> {
        let (d, nw) = (self.dim, self.ways);
        (0..nw)
            .map(|k| y[d * nw + k] + (0..d).map(|j| x[r * d + j] * y[j * nw + k]).sum::<f64>())
            .collect()
    }

    fn softmax(z: &[f64]) -> (Vec<f64>, f64) {
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        (e.iter().map(|v| v / s).collect(), m + s.ln())
    }

    /// Mean cross-entropy of a set; `gy += scale·∇_y`, `gx += gx_scale·∇_x`.
    fn ce(
        &self,
        s: Set,
        x: &[f64],
        y: &[f64],
        scale: f64,
        gy: &mut [f64],
        gx: &mut [f64],
        gx_scale: f64,
    ) -> f64 {
        let (d, nw) = (self.dim, self.ways);
        let (first, labels) = self.set(s);
        let n = labels.len() as f64;
        let mut loss = 0.0;
        for (i, &v) in labels.iter().enumerate() {
            let r = first + i;
            let z = self.logits(x, y, r);
            let (mut p, lse) = Self::softmax(&z);
            loss += (lse - z[v as usize]) / n;
            p[v as usize] -= 1.0;
            p.iter_mut().for_each(|g| *g /= n);
            for j in 0..=d {
                let xv = if j < d { x[r * d + j] } else { 1.0 };
                for k in 0..nw {
                    gy[j * nw + k] += scale * xv * p[k];
                }
            }
            for j in 0..d {
                gx[r * d + j] += gx_scale * (0..nw).map(|k| y[j * nw + k] * p[k]).sum::<f64>();
            }
        }
        loss
    }

    /// `a_out += scale·H a`, `gx += gx_scale·(∂²_{xy})ᵀ a` for a set.
    fn second(
        &self,
        s: Set,
        x: &[f64],
        y: &[f64],
        a: &[f64],
        scale: f64,
        a_out: &mut [f64],
        gx: &mut [f64],
        gx_scale: f64,
    ) {
        let (d, nw) = (self.dim, self.ways);
        let (first, labels) = self.set(s);
        let n = labels.len() as f64;
        for (i, &v) in labels.iter().enumerate() {
            let r = first + i;
            let (mut p, _) = Self::softmax(&self.logits(x, y, r));
            let u = self.logits(x, a, r);
            let pu: f64 = p.iter().zip(&u).map(|(p, u)| p * u).sum();
            let dd: Vec<f64> = (0..nw).map(|k| p[k] * (u[k] - pu) / n).collect();
            p[v as usize] -= 1.0;
            p.iter_mut().for_each(|g| *g /= n);
            for j in 0..=d {
                let xv = if j < d { x[r * d + j] } else { 1.0 };
                for k in 0..nw {
                    a_out[j * nw + k] += scale * xv * dd[k];
                }
            }
            for j in 0..d {
                gx[r * d + j] += gx_scale
                    * (0..nw)
                        .map(|k| p[k] * a[j * nw + k] + dd[k] * y[j * nw + k])
                        .sum::<f64>();
            }
        }
    }

    /// Query accuracy (first largest logit).
    pub fn hits(&self, x: &[f64], y: &[f64]) -> usize {
        let (first, labels) = self.set(Set::Query);
        labels
            .iter()
            .enumerate()
            .filter(|&(i, &v)| {
                let z = self.logits(x, y, first + i);
                let best = (0..self.ways).fold(0, |b, k| if z[k] > z[b] { k } else { b });
                best == v as usize
            })
            .count()
    }
}

impl HostBuffers for TaskHead {
    type Scalar = f64;
    fn x_len(&self) -> usize {
        (self.support_labels.len() + self.query_labels.len()) * self.dim
    }
    fn y_len(&self) -> usize {
        (self.dim + 1) * self.ways
    }
}

impl LowerStep for TaskHead {
    fn lower_step(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        w_u: f64,
        w_l: f64,
        y_out: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        for (o, &v) in y_out.iter_mut().zip(y) {
            *o = v - w_l * self.l2 * v;
        }
        let mut sink = vec![0.0; x.len()];
        self.ce(Set::Query, x, y, -w_u, y_out, &mut sink, 0.0);
        self.ce(Set::Support, x, y, -w_l, y_out, &mut sink, 0.0);
        Ok(())
    }
}

impl UpperGradient for TaskHead {
    fn upper_grad(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        gy: &mut Vec<f64>,
        gx: &mut Vec<f64>,
        gx_scale: f64,
    ) -> Result<f64, Infallible> {
        gy.fill(0.0);
        Ok(self.ce(Set::Query, x, y, 1.0, gy, gx, gx_scale))
    }
}

impl StepAdjoint for TaskHead {
    fn step_adjoint(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        w_u: f64,
        w_l: f64,
        a: &mut Vec<f64>,
        gx: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        let mut out: Vec<f64> = a.iter().map(|&v| v - w_l * self.l2 * v).collect();
        self.second(Set::Query, x, y, a, -w_u, &mut out, gx, -w_u);
        self.second(Set::Support, x, y, a, -w_l, &mut out, gx, -w_l);
        *a = out;
        Ok(())
    }
}

/// Deterministic generator (xorshift64*), values rounded to f32 so both sides see the same
/// inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi), rounded to f32.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (lo + (hi - lo) * u) as f32 as f64
    }
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.range(lo, hi)).collect()
    }
}

/// Max absolute error over max absolute reference value.
pub fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()))
        / scale
}
