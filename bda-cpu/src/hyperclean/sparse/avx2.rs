//! The AVX2+FMA kernels of [`super`]'s products.

use std::arch::x86_64::*;

use super::{TILE, Tile};
use crate::hyperclean::packed::{CHUNK_GROUPS, LANES};
use crate::hyperclean::simd::indices_below;

/// [`super::times_tile`] for a tile of `NV` vectors (`8·NV` columns, 16 or 8: the last
/// tile of a row) with `4·NV` accumulators in registers.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn times_tile<const NV: usize>(tile: Tile<'_>, out: &mut [f32]) {
    let (u, feats, wt, hp) = (tile.u, tile.feats, tile.wt, tile.hp);
    let (t, half) = tile.at;
    let dim = u.len() / LANES;
    let tw = 8 * NV;
    assert!(t + tw <= hp && wt.len() >= dim * tw);
    assert!(out.len() >= LANES * hp && half < 2);
    assert!(indices_below(feats, dim));
    let mut acc = [[_mm256_setzero_ps(); NV]; 4];
    for &j in feats {
        let j = usize::from(j);
        // SAFETY: j < dim (asserted): the tile's row j (8·NV floats) lies in `wt`, the group's
        // pixel j (8 floats) in `u`.
        unsafe {
            let wp = wt.as_ptr().add(j * tw);
            let up = u.as_ptr().add(j * LANES + 4 * half);
            for (l, acc) in acc.iter_mut().enumerate() {
                let s = _mm256_broadcast_ss(&*up.add(l));
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(s, _mm256_loadu_ps(wp.add(8 * v)), *a);
                }
            }
        }
    }
    let op = out.as_mut_ptr();
    for (l, a) in acc.iter().enumerate() {
        for (v, &a) in a.iter().enumerate() {
            // SAFETY: row 4·half + l < 8 of `out`, columns t + 8v + 8 ≤ t + tw ≤ hp
            // (asserted).
            unsafe { _mm256_storeu_ps(op.add((4 * half + l) * hp + t + 8 * v), a) };
        }
    }
}

/// [`times_tile`] for 24-column tiles: 12 accumulators (4 samples × 3 vectors), 12
/// FMAs per pixel for 3 loads of `W` and 4 broadcasts, where the 16-column tile has 8
/// FMAs for 2 loads and 4 broadcasts (its 8 chains also just cover two FMA units of
/// latency 4). The accumulators, `W`'s row and the broadcast fill all 16 registers,
/// which LLVM's allocator does not manage (written with intrinsics it spilled two
/// accumulators and copied others every iteration: 19.2 against 10.3 ms for the
/// 16-column kernel), so the loop is written out.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn times_tile24(tile: Tile<'_>, out: &mut [f32]) {
    let (u, feats, wt, hp) = (tile.u, tile.feats, tile.wt, tile.hp);
    let (t, half) = tile.at;
    use std::arch::asm;
    const TW: usize = 24;
    let dim = u.len() / LANES;
    assert!(t + TW <= hp && wt.len() >= dim * TW);
    assert!(out.len() >= LANES * hp && half < 2);
    // Every pixel's row of `W` (24 floats at 24·j) and lanes (8 floats at 8·j) in bounds.
    assert!(indices_below(feats, dim));
    let z = _mm256_setzero_ps();
    let [mut a0, mut a1, mut a2, mut a3, mut a4, mut a5] = [z; 6];
    let [mut a6, mut a7, mut a8, mut a9, mut a10, mut a11] = [z; 6];
    if !feats.is_empty() {
        // SAFETY: reads `feats` (its length, non-zero), rows `j` of `wt` (bytes 96j..96j
        // + 96) and lanes 4·half..4·half + 4 of pixel `j` of `u` (bytes 32j + 16·half
        // ..+16) for j < dim (asserted); writes registers only.
        unsafe {
            asm!(
                "2:",
                "movzx {j:e}, word ptr [{fp}]",
                "add {fp}, 2",
                "lea {k}, [{j} + {j}*2]",
                "shl {k}, 5",
                "shl {j}, 5",
                "vmovups ymm12, ymmword ptr [{wp} + {k}]",
                "vmovups ymm13, ymmword ptr [{wp} + {k} + 32]",
                "vmovups ymm14, ymmword ptr [{wp} + {k} + 64]",
                "vbroadcastss ymm15, dword ptr [{up} + {j}]",
                "vfmadd231ps ymm0, ymm15, ymm12",
                "vfmadd231ps ymm1, ymm15, ymm13",
                "vfmadd231ps ymm2, ymm15, ymm14",
                "vbroadcastss ymm15, dword ptr [{up} + {j} + 4]",
                "vfmadd231ps ymm3, ymm15, ymm12",
                "vfmadd231ps ymm4, ymm15, ymm13",
                "vfmadd231ps ymm5, ymm15, ymm14",
                "vbroadcastss ymm15, dword ptr [{up} + {j} + 8]",
                "vfmadd231ps ymm6, ymm15, ymm12",
                "vfmadd231ps ymm7, ymm15, ymm13",
                "vfmadd231ps ymm8, ymm15, ymm14",
                "vbroadcastss ymm15, dword ptr [{up} + {j} + 12]",
                "vfmadd231ps ymm9, ymm15, ymm12",
                "vfmadd231ps ymm10, ymm15, ymm13",
                "vfmadd231ps ymm11, ymm15, ymm14",
                "dec {n}",
                "jnz 2b",
                fp = inout(reg) feats.as_ptr() => _,
                n = inout(reg) feats.len() => _,
                j = out(reg) _,
                k = out(reg) _,
                wp = in(reg) wt.as_ptr(),
                up = in(reg) u.as_ptr().add(4 * half),
                inout("ymm0") a0, inout("ymm1") a1, inout("ymm2") a2,
                inout("ymm3") a3, inout("ymm4") a4, inout("ymm5") a5,
                inout("ymm6") a6, inout("ymm7") a7, inout("ymm8") a8,
                inout("ymm9") a9, inout("ymm10") a10, inout("ymm11") a11,
                out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
                options(nostack, readonly),
            );
        }
    }
    let op = out.as_mut_ptr();
    for (i, a) in [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11]
        .into_iter()
        .enumerate()
    {
        // SAFETY: row 4·half + i/3 < 8 of `out`, columns < t + 24 ≤ hp (asserted).
        unsafe { _mm256_storeu_ps(op.add((4 * half + i / 3) * hp + t + 8 * (i % 3)), a) };
    }
}

/// [`super::scatter_quad`] for `N` pixels (4 or 6) with `2N` accumulators in registers;
/// `at` = (chunk, mask of its groups, first pixel, first column); `ADD`: added to `acc`,
/// or stored over it.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn scatter_pixels<const N: usize, const ADD: bool>(
    u: &[f32],
    d: usize,
    g: &[f32],
    hp: usize,
    (ch, mut mask, j, t): (usize, u32, usize, usize),
    acc: &mut [f32],
) {
    let groups = u.len() / (d * LANES);
    assert!(j + N <= d && t + TILE <= hp && acc.len() >= N * hp);
    assert!(g.len() >= groups * LANES * hp);
    let ap = acc.as_mut_ptr();
    // The chunk's sum from zero, added to `acc` (or stored over it) at the end.
    let mut a = [_mm256_setzero_ps(); N];
    let mut b = [_mm256_setzero_ps(); N];
    while mask != 0 {
        let gr = ch * CHUNK_GROUPS + mask.trailing_zeros() as usize;
        mask &= mask - 1;
        assert!(gr < groups);
        // SAFETY: gr < groups: its 8 rows of `g` (columns t..t + 16) and its pixels
        // j..j + N (8 lanes each) lie in the slices.
        unsafe {
            let gp = g.as_ptr().add(gr * LANES * hp + t);
            let up = u.as_ptr().add((gr * d + j) * LANES);
            for l in 0..LANES {
                let g0 = _mm256_loadu_ps(gp.add(l * hp));
                let g1 = _mm256_loadu_ps(gp.add(l * hp + 8));
                for p in 0..N {
                    let s = _mm256_broadcast_ss(&*up.add(p * LANES + l));
                    a[p] = _mm256_fmadd_ps(s, g0, a[p]);
                    b[p] = _mm256_fmadd_ps(s, g1, b[p]);
                }
            }
        }
    }
    for p in 0..N {
        // SAFETY: row p < N of `acc`, columns t..t + 16 (asserted).
        unsafe {
            let (pa, pb) = (ap.add(p * hp + t), ap.add(p * hp + t + 8));
            if ADD {
                _mm256_storeu_ps(pa, _mm256_add_ps(_mm256_loadu_ps(pa), a[p]));
                _mm256_storeu_ps(pb, _mm256_add_ps(_mm256_loadu_ps(pb), b[p]));
            } else {
                _mm256_storeu_ps(pa, a[p]);
                _mm256_storeu_ps(pb, b[p]);
            }
        }
    }
}
