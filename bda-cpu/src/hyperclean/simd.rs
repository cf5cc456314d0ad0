//! The SIMD kernels of data hyper-cleaning on byte pixels: logits of a group of 8 samples,
//! the scatter `∇_W += Uᵀ·G` over the groups of a chunk, and the lane-wise softmax. AVX2+FMA
//! intrinsics where the machine has them (`c = 10`), plain loops elsewhere; both vectorise
//! across the 8 samples of a group, so the awkward width `c = 10` never meets the SIMD width.
//! The products skip the `(group × feature)` blocks that are all zero (they add exactly 0).

// Lane loops index several arrays in lockstep (the shape of the SIMD code they become).
#![allow(clippy::needless_range_loop)]

use super::packed::{INV255, LANES, Lane};

/// Whether every index of `idx` is below `n`: the up-front bounds check of the kernels that
/// walk a list of non-zero pixels, written as a maximum, which vectorises (16 indices per
/// AVX2 instruction where inlined into an AVX2 kernel). As `all(|j| j < n)` it compiled to
/// a scalar loop of 6 instructions per pixel ahead of the product's 27 in `U·W`: 11.7–12.1
/// ms against 10.3–10.9 ms (best of 40 calls, 2 threads, 3 alternating runs of
/// `--example mlp_kernels`), whole runs 1.16× (median of 8 alternating pairs).
#[inline(always)]
pub(crate) fn indices_below(idx: &[u16], n: usize) -> bool {
    idx.is_empty() || usize::from(idx.iter().fold(0u16, |m, &j| m.max(j))) < n
}
/// Which code the products run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// AVX2 + FMA intrinsics (x86-64 with both features, `c = 10`).
    Avx2,
    /// Plain Rust loops (any machine, any `c`).
    Portable,
}

impl Kernels {
    /// The fastest kernels this machine supports for `c` classes.
    pub fn detect(classes: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if classes == 10
                && std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
            {
                return Kernels::Avx2;
            }
        }
        let _ = classes;
        Kernels::Portable
    }
}

/// `out[k] = (1/255)·Σ_j u_j W[j, k] + b_k` for the 8 samples of a group, the sum over
/// the features `feats` whose block is non-zero (the others add exactly 0).
pub(crate) fn logits(
    kern: Kernels,
    u: &[u8],
    feats: &[u16],
    y: &[f32],
    d: usize,
    c: usize,
    out: &mut [Lane],
) {
    match kern {
        #[cfg(target_arch = "x86_64")]
        Kernels::Avx2 if c == 10 => {
            // SAFETY: `Kernels::Avx2` is only chosen after detecting AVX2 and FMA; the
            // slices have the lengths the kernel reads (checked by the asserts inside).
            unsafe { avx2::logits::<10>(u, feats, y, d, out) }
        }
        _ => logits_portable(u, feats, y, d, c, out),
    }
}

fn logits_portable(u: &[u8], feats: &[u16], y: &[f32], d: usize, c: usize, out: &mut [Lane]) {
    for o in out.iter_mut().take(c) {
        *o = [0.0; LANES];
    }
    for &j in feats {
        let j = usize::from(j);
        let mut uv = [0.0f32; LANES];
        for l in 0..LANES {
            uv[l] = f32::from(u[j * LANES + l]);
        }
        for k in 0..c {
            let w = y[j * c + k];
            let o = &mut out[k];
            for l in 0..LANES {
                o[l] += uv[l] * w;
            }
        }
    }
    for k in 0..c {
        let b = y[d * c + k];
        for l in 0..LANES {
            out[k][l] = out[k][l] * INV255 + b;
        }
    }
}

/// Consecutive groups of byte pixels and which of their blocks are not zero: `ng` groups of
/// `d` features whose bytes are `data` (group-major, 8 samples per feature), and per
/// feature `j` the groups set in `masks[j]` (the others' blocks are zero).
#[derive(Clone, Copy)]
pub(crate) struct Blocks<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) masks: &'a [u32],
    pub(crate) ng: usize,
    pub(crate) d: usize,
}

/// `out[j·c + k] += Σ_{groups g} Σ_l u_{g,j,l} · gs[g·c + k][l]` over the non-zero blocks.
pub(crate) fn scatter(kern: Kernels, b: Blocks<'_>, c: usize, gs: &[Lane], out: &mut [f32]) {
    match kern {
        #[cfg(target_arch = "x86_64")]
        Kernels::Avx2 if c == 10 => {
            // SAFETY: as in `logits`.
            unsafe { avx2::scatter::<10>(b, gs, out) }
        }
        _ => scatter_portable(b, c, gs, out),
    }
}

/// The groups set in `mask`, lowest first, restricted to `g < ng`.
#[inline(always)]
fn set_groups(mask: u32, ng: usize) -> impl Iterator<Item = usize> {
    let mut m = if ng >= 32 {
        mask
    } else {
        mask & ((1u32 << ng) - 1)
    };
    std::iter::from_fn(move || {
        (m != 0).then(|| {
            let g = m.trailing_zeros() as usize;
            m &= m - 1;
            g
        })
    })
}

fn scatter_portable(b: Blocks<'_>, c: usize, gs: &[Lane], out: &mut [f32]) {
    let Blocks { data, masks, ng, d } = b;
    let mut acc = vec![[0.0f32; LANES]; c];
    for j in 0..d {
        if masks[j] == 0 {
            continue;
        }
        for a in acc.iter_mut() {
            *a = [0.0; LANES];
        }
        for g in set_groups(masks[j], ng) {
            let u = &data[g * d * LANES + j * LANES..][..LANES];
            let mut uv = [0.0f32; LANES];
            for l in 0..LANES {
                uv[l] = f32::from(u[l]);
            }
            for k in 0..c {
                let gk = &gs[g * c + k];
                let a = &mut acc[k];
                for l in 0..LANES {
                    a[l] += uv[l] * gk[l];
                }
            }
        }
        for k in 0..c {
            out[j * c + k] += hsum(&acc[k]);
        }
    }
}

#[inline(always)]
pub(crate) fn hsum(a: &Lane) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{LANES, Lane, indices_below};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 8 readable bytes at `p`.
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))) }
    }

    /// See `super::logits`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn logits<const C: usize>(
        u: &[u8],
        feats: &[u16],
        y: &[f32],
        d: usize,
        out: &mut [Lane],
    ) {
        assert!(u.len() >= d * LANES && y.len() >= (d + 1) * C && out.len() >= C);
        // One check up front: a bounds check inside the loop makes LLVM spill
        // accumulators to the stack.
        assert!(indices_below(feats, d));
        let mut acc = [_mm256_setzero_ps(); C];
        let (up, yp) = (u.as_ptr(), y.as_ptr());
        for &j in feats {
            let j = usize::from(j);
            // SAFETY: j < d, bounds asserted above.
            unsafe {
                let uv = load_u8(up.add(j * LANES));
                let w = yp.add(j * C);
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(uv, _mm256_broadcast_ss(&*w.add(k)), *a);
                }
            }
        }
        let s = _mm256_set1_ps(super::INV255);
        for k in 0..C {
            let b = _mm256_set1_ps(y[d * C + k]);
            // SAFETY: out[k] is 8 floats.
            unsafe { _mm256_storeu_ps(out[k].as_mut_ptr(), _mm256_fmadd_ps(acc[k], s, b)) };
        }
    }

    /// The sums of the lanes of 8 vectors, as one vector.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hsum8(a: &[__m256]) -> __m256 {
        let t0 = _mm256_hadd_ps(a[0], a[1]);
        let t1 = _mm256_hadd_ps(a[2], a[3]);
        let t2 = _mm256_hadd_ps(a[4], a[5]);
        let t3 = _mm256_hadd_ps(a[6], a[7]);
        let u0 = _mm256_hadd_ps(t0, t1);
        let u1 = _mm256_hadd_ps(t2, t3);
        _mm256_add_ps(
            _mm256_permute2f128_ps(u0, u1, 0x20),
            _mm256_permute2f128_ps(u0, u1, 0x31),
        )
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hsum1(a: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// See `super::scatter`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scatter<const C: usize>(
        b: super::Blocks<'_>,
        gs: &[Lane],
        out: &mut [f32],
    ) {
        let super::Blocks { data, masks, ng, d } = b;
        assert!(
            data.len() >= ng * d * LANES
                && masks.len() >= d
                && gs.len() >= ng * C
                && out.len() >= d * C
        );
        let (dp, gp) = (data.as_ptr(), gs.as_ptr() as *const f32);
        for j in 0..d {
            if masks[j] == 0 {
                continue;
            }
            let mut acc = [_mm256_setzero_ps(); C];
            for g in super::set_groups(masks[j], ng) {
                // SAFETY: g < ng (set_groups), j < d, bounds asserted above.
                unsafe {
                    let uv = load_u8(dp.add(g * d * LANES + j * LANES));
                    let gg = gp.add(g * C * LANES);
                    for (k, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(uv, _mm256_loadu_ps(gg.add(k * LANES)), *a);
                    }
                }
            }
            let o = &mut out[j * C..(j + 1) * C];
            let mut k0 = 0;
            if C >= 8 {
                let s = hsum8(&acc[..8]);
                // SAFETY: o has C ≥ 8 floats.
                unsafe {
                    let op = o.as_mut_ptr();
                    _mm256_storeu_ps(op, _mm256_add_ps(_mm256_loadu_ps(op), s));
                }
                k0 = 8;
            }
            for k in k0..C {
                o[k] += hsum1(acc[k]);
            }
        }
    }
}

/// `e^x` for `x ≤ 0` (softmax arguments), max relative error ≈ 2e-7; `x < −87` gives a
/// value ≤ e^{−87} (≈ 0 at f32 resolution for softmax purposes).
#[inline(always)]
fn exp_lane(x: &mut Lane) {
    for v in x.iter_mut() {
        let x = v.clamp(-87.0, 88.0);
        const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
        let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
        let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
        let mut p = 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;
        let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
        *v = p * scale;
    }
}

/// Softmax of the `c` logits of each lane in place; returns `(max, Σ e^{s−max})` per lane.
#[inline(always)]
pub(crate) fn softmax(s: &mut [Lane], c: usize) -> (Lane, Lane) {
    let mut m = s[0];
    for sk in &s[1..c] {
        for l in 0..LANES {
            m[l] = m[l].max(sk[l]);
        }
    }
    let mut z = [0.0f32; LANES];
    for sk in s.iter_mut().take(c) {
        for l in 0..LANES {
            sk[l] -= m[l];
        }
        exp_lane(sk);
        for l in 0..LANES {
            z[l] += sk[l];
        }
    }
    let mut inv = [0.0f32; LANES];
    for l in 0..LANES {
        inv[l] = 1.0 / z[l];
    }
    for sk in s.iter_mut().take(c) {
        for l in 0..LANES {
            sk[l] *= inv[l];
        }
    }
    (m, z)
}
