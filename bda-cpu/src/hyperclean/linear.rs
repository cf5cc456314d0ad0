//! Softmax regression on the CPU ([`Linear`]): one pass over a set is its chunks of
//! [`CHUNK_GROUPS`] groups in parallel, each writing its own partial gradient (summed
//! afterwards in chunk order by the backend).

// Lane loops index several arrays in lockstep (the shape of the SIMD code they become).
#![allow(clippy::needless_range_loop)]

use std::ops::Range;

use bda_kernel::hyperclean::{Classifier, HypercleanData};
use rayon::prelude::*;

use super::packed::{CHUNK_GROUPS, INV255, LANES, Lane, Packed, predict};
use super::pass::{Pass, Scratch};
use super::simd::{Blocks, Kernels, hsum, logits, scatter, softmax};
use super::{CpuClassifier, Predictor};

/// Softmax regression `s = Wᵀu + b` ([`Classifier::Linear`]): products on the byte
/// pixels of the packed sets, 8 samples per SIMD lane group.
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    kern: Kernels,
    d: usize,
    c: usize,
}

impl CpuClassifier for Linear {
    type Set = ();
    /// The softmax outputs `p_i` in lanes (`groups × c`).
    type Forward = Vec<Lane>;

    fn of(data: &HypercleanData<'_>, kern: Kernels, _: Kernels) -> Result<Self, String> {
        match data.classifier {
            Classifier::Linear => Ok(Linear {
                kern,
                d: data.dim,
                c: data.classes,
            }),
            other => Err(format!("{other:?} is not softmax regression")),
        }
    }

    fn prepare(&self, _: &Packed) {}

    fn fit(&self, set: &Packed, _: &(), probs: &mut Vec<Lane>) {
        probs.resize(set.groups * self.c, [0.0; LANES]);
    }

    /// No: the passes are fine grained already; side by side they measured 0.94–0.98×
    /// (15 rounds).
    fn side_by_side(&self) -> bool {
        false
    }

    const LOSS_ROWS: usize = CHUNK_GROUPS * LANES;

    /// Run `pass` over the chunks of `rows` of `set` with per-sample weights `omega` (zero
    /// on padding); fills `scratch.partial[chunk·ylen..]`, `scratch.chunk_loss[chunk]`,
    /// `scratch.sample[i]` (chunks and rows counted from the first of `rows`).
    ///
    /// `probs` (`groups × c` lanes) holds the softmax outputs `p_i` of `y`: a gradient pass
    /// writes them, a Hessian pass reads them instead of recomputing the logits of `y`.
    fn run_pass(
        &self,
        set: &Packed,
        _: &(),
        omega: &[f32],
        y: &[f32],
        pass: Pass<'_>,
        rows: Range<usize>,
        scratch: &mut Scratch,
        probs: &mut Vec<Lane>,
    ) {
        let (kern, c) = (self.kern, self.c);
        assert_eq!(probs.len(), set.groups * c);
        let per_chunk = CHUNK_GROUPS * LANES;
        // A rank's rows start at a chunk, or are none (at the end of the set).
        debug_assert!(rows.is_empty() || rows.start % per_chunk == 0, "{rows:?}");
        let first = rows.start / per_chunk;
        let nch = rows.len().div_ceil(per_chunk);
        let ylen = self.partial_len();
        scratch.partial.resize(nch * ylen, 0.0);
        scratch.chunk_loss.resize(nch, 0.0);
        scratch.sample.resize(rows.len(), 0.0);
        let probs = &mut probs[first * CHUNK_GROUPS * c..];
        scratch
            .partial
            .par_chunks_mut(ylen)
            .zip(scratch.chunk_loss.par_iter_mut())
            .zip(scratch.sample.par_chunks_mut(per_chunk))
            .zip(probs.par_chunks_mut(CHUNK_GROUPS * c))
            .enumerate()
            .for_each(|(i, (((part, loss), sample), probs))| {
                let job = Chunk {
                    kern,
                    set,
                    c,
                    omega,
                    y,
                    pass,
                    ch: first + i,
                };
                match kern {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `Kernels::Avx2` is only chosen after detecting AVX2 and FMA.
                    Kernels::Avx2 => unsafe { chunk_avx2(&job, part, loss, sample, probs) },
                    _ => chunk_work(&job, part, loss, sample, probs),
                }
            });
    }

    fn partial_len(&self) -> usize {
        (self.d + 1) * self.c
    }

    /// The chunks' partials, in `y`'s layout already.
    fn add_partials(&self, scratch: &Scratch, range: Range<usize>, acc: &mut [f32]) {
        for p in scratch.partial.chunks_exact(self.partial_len()) {
            acc.iter_mut()
                .zip(&p[range.clone()])
                .for_each(|(a, q)| *a += q);
        }
    }

    fn finish(&self, _: &(), sum: &[f32], out: &mut [f32]) {
        out.copy_from_slice(sum);
    }

    fn predictor<'a>(&self, x: &'a [f32], labels: &[u8]) -> Result<Predictor<'a>, String> {
        let set = Packed::new(x, labels, self.d)?;
        let (kern, c) = (self.kern, self.c);
        Ok(Predictor::new(move |y| predict(kern, &set, c, y)))
    }
}

/// One chunk of a pass: its parameters.
struct Chunk<'a> {
    kern: Kernels,
    set: &'a Packed,
    c: usize,
    omega: &'a [f32],
    y: &'a [f32],
    pass: Pass<'a>,
    ch: usize,
}

/// The chunk compiled with AVX2+FMA enabled, so that the softmax and the elementwise
/// work around the products vectorise 8-wide too.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chunk_avx2(
    job: &Chunk<'_>,
    part: &mut [f32],
    loss: &mut f64,
    sample: &mut [f32],
    probs: &mut [Lane],
) {
    chunk_work(job, part, loss, sample, probs)
}

#[inline(always)]
fn chunk_work(
    job: &Chunk<'_>,
    part: &mut [f32],
    loss: &mut f64,
    sample: &mut [f32],
    probs: &mut [Lane],
) {
    let Chunk {
        kern,
        set,
        c,
        omega,
        y,
        pass,
        ch,
    } = *job;
    let d = set.dim;
    let g0 = ch * CHUNK_GROUPS;
    let ng = (set.groups - g0).min(CHUNK_GROUPS);
    let mut gs = vec![[0.0f32; LANES]; ng * c];
    let mut s = vec![[0.0f32; LANES]; c];
    let mut t = vec![[0.0f32; LANES]; c];
    let mut gb = vec![0.0f64; c];
    let mut lsum = 0.0f64;
    let want_grad = match pass {
        Pass::Grad { grad, .. } | Pass::Hess { grad, .. } => grad,
    };
    for gi in 0..ng {
        let g = g0 + gi;
        let u = set.group(g);
        let feats = set.index.features(g);
        let lab = &set.packed_labels[g * LANES..(g + 1) * LANES];
        let om = &omega[g * LANES..(g + 1) * LANES];
        let out = &mut sample[gi * LANES..(gi + 1) * LANES];
        let pg = &mut probs[gi * c..(gi + 1) * c];
        match pass {
            Pass::Grad { loss, .. } => {
                logits(kern, u, feats, y, d, c, &mut s);
                let mut sl = [0.0f32; LANES];
                for l in 0..LANES {
                    sl[l] = s[lab[l] as usize][l];
                }
                let (m, z) = softmax(&mut s, c);
                pg.copy_from_slice(&s[..c]);
                if loss {
                    // CE = log Σ_k e^{s_k} − s_label = m + ln z − s_label.
                    for l in 0..LANES {
                        let ce = m[l] + z[l].ln() - sl[l];
                        out[l] = ce;
                        lsum += f64::from(om[l]) * f64::from(ce);
                    }
                }
                if want_grad {
                    for k in 0..c {
                        let mut gk = s[k];
                        for l in 0..LANES {
                            let e = if lab[l] as usize == k { 1.0 } else { 0.0 };
                            gk[l] = om[l] * (gk[l] - e);
                        }
                        gb[k] += f64::from(hsum(&gk));
                        for l in 0..LANES {
                            gk[l] *= INV255;
                        }
                        gs[gi * c + k] = gk;
                    }
                }
            }
            Pass::Hess { v, .. } => {
                s[..c].copy_from_slice(pg);
                logits(kern, u, feats, v, d, c, &mut t);
                let mut pt = [0.0f32; LANES];
                for k in 0..c {
                    for l in 0..LANES {
                        pt[l] += s[k][l] * t[k][l];
                    }
                }
                for l in 0..LANES {
                    out[l] = pt[l] - t[lab[l] as usize][l];
                }
                if want_grad {
                    for k in 0..c {
                        let mut rk = [0.0f32; LANES];
                        for l in 0..LANES {
                            rk[l] = om[l] * s[k][l] * (t[k][l] - pt[l]);
                        }
                        gb[k] += f64::from(hsum(&rk));
                        for l in 0..LANES {
                            rk[l] *= INV255;
                        }
                        gs[gi * c + k] = rk;
                    }
                }
            }
        }
    }
    part.iter_mut().for_each(|p| *p = 0.0);
    if want_grad {
        let data = &set.data[g0 * d * LANES..(g0 + ng) * d * LANES];
        let masks = set.index.groups(ch);
        let blocks = Blocks { data, masks, ng, d };
        scatter(kern, blocks, c, &gs, &mut part[..d * c]);
        for k in 0..c {
            part[d * c + k] = gb[k] as f32;
        }
    }
    *loss = lsum;
}
