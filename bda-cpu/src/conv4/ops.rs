//! The loops around the backbone's GEMMs: the chunk layout, im2col and its adjoint,
//! fixed-order reductions, and the fused batch-norm / ReLU / max-pool passes.

use super::{CHUNK, Float};

/// Ranges of the chunks of `n` images with `per_image` values each.
pub(super) fn chunks(n: usize) -> Vec<(usize, usize)> {
    (0..n.div_ceil(CHUNK))
        .map(|j| (j * CHUNK, ((j + 1) * CHUNK).min(n) - j * CHUNK))
        .collect()
}

/// Split a chunk-layout buffer into per-chunk mutable slices.
pub(super) fn split_chunks<T>(mut buf: &mut [T], n: usize, per_image: usize) -> Vec<&mut [T]> {
    let mut out = Vec::new();
    for (_, len) in chunks(n) {
        let (a, rest) = buf.split_at_mut(len * per_image);
        out.push(a);
        buf = rest;
    }
    out
}

pub(super) fn split_ref<T>(mut buf: &[T], n: usize, per_image: usize) -> Vec<&[T]> {
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
pub(super) fn to_chunk_layout<T: Float>(images: &[T], n: usize, c: usize, hw: usize) -> Vec<T> {
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

/// im2col of images `i0 .. i0 + g` of a chunk of `len` images (`input`: `[c_in][len·s²]`):
/// `cols[ci·9 + ky·3 + kx][(i − i0)·s² + oy·s + ox]`, rows of `g·s²`.
pub(crate) fn im2col<T: Float>(
    input: &[T],
    c_in: usize,
    len: usize,
    s: usize,
    (i0, g): (usize, usize),
    cols: &mut [T],
) {
    let hw = s * s;
    let n = len * hw;
    for ci in 0..c_in {
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &mut cols[((ci * 3 + ky) * 3 + kx) * g * hw..][..g * hw];
                for i in 0..g {
                    let src = &input[ci * n + (i0 + i) * hw..][..hw];
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

/// Adjoint of [`im2col`] for the same images: `dinput += col2im(dcols)`.
pub(crate) fn col2im<T: Float>(
    dcols: &[T],
    c_in: usize,
    len: usize,
    s: usize,
    (i0, g): (usize, usize),
    dinput: &mut [T],
) {
    let hw = s * s;
    let n = len * hw;
    for ci in 0..c_in {
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &dcols[((ci * 3 + ky) * 3 + kx) * g * hw..][..g * hw];
                for i in 0..g {
                    let src = &row[i * hw..][..hw];
                    let dst = &mut dinput[ci * n + (i0 + i) * hw..][..hw];
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

/// Images per im2col group: as many as keep the group's `kk × g·hw` matrix within
/// [`COLS_BUDGET`] bytes (at least 1, at most a chunk, at most `cap`), so that it is still
/// in cache when the GEMM packs it. Depends on the shape only, never on the thread count.
pub(crate) fn group_size<T>(kk: usize, hw: usize, cap: usize) -> usize {
    (COLS_BUDGET / (kk * hw * std::mem::size_of::<T>()).max(1))
        .clamp(1, CHUNK)
        .min(cap.max(1))
}

/// The `cap` of [`group_size`] and of the Winograd groups that the backbone runs with:
/// none, the cache budgets decide. Tests pass smaller caps (a parameter, not a global, so
/// tests running at the same time cannot change each other's groups) to run the grouped
/// paths on shapes small enough for finite differences.
pub(crate) const UNCAPPED: usize = usize::MAX;

/// Bytes of one im2col group (see [`group_size`]).
pub(crate) const COLS_BUDGET: usize = 1 << 20;

/// The groups `(i0, g)` of a chunk of `len` images.
pub(crate) fn groups(len: usize, g: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..len).step_by(g).map(move |i0| (i0, g.min(len - i0)))
}

/// `Σ v` with 8 independent accumulators (vectorisable; fixed order).
pub(super) fn lane_sum<T: Float>(v: &[T], f: impl Fn(T) -> T) -> T {
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

/// Sum per-chunk vectors in chunk order (deterministic).
pub(super) fn ordered_sum<T: Float>(parts: Vec<Vec<T>>, len: usize) -> Vec<T> {
    let mut acc = vec![T::zero(); len];
    for p in parts {
        for (a, v) in acc.iter_mut().zip(p) {
            *a += v;
        }
    }
    acc
}

/// Per-channel mean and centred sum of squares of one chunk's convolution output
/// (`[c][m]`): `[mean_0 … mean_{ch−1}, M2_0 … M2_{ch−1}]`, for [`merge_moments`].
pub(super) fn chunk_moments<T: Float>(zc: &[T], ch: usize) -> Vec<T> {
    let m = zc.len() / ch;
    let mut r = vec![T::zero(); 2 * ch];
    for c in 0..ch {
        let v = &zc[c * m..][..m];
        let mu = lane_sum(v, |x| x) / T::from_f64(m as f64);
        r[c] = mu;
        r[ch + c] = lane_sum(v, |x| (x - mu).square());
    }
    r
}

/// The batch's per-channel mean and (biased) variance from the chunks' moments, merged in
/// chunk order (Chan et al.'s pairwise update: `M2 = Σ M2_j + Σ n_j (mean_j − mean)²`), so
/// the statistics take one pass over the output instead of two, without the cancellation
/// of `E[z²] − E[z]²`.
pub(super) fn merge_moments<T: Float>(
    parts: &[Vec<T>],
    chunks: &[(usize, usize)],
    hw: usize,
    ch: usize,
) -> (Vec<T>, Vec<T>) {
    let total = T::from_f64((chunks.iter().map(|c| c.1).sum::<usize>() * hw) as f64);
    let weight = |len: usize| T::from_f64((len * hw) as f64);
    let mut mean = vec![T::zero(); ch];
    for (p, &(_, len)) in parts.iter().zip(chunks) {
        for (m, &mu) in mean.iter_mut().zip(&p[..ch]) {
            *m += weight(len) * mu;
        }
    }
    for m in &mut mean {
        *m /= total;
    }
    let mut var = vec![T::zero(); ch];
    for (p, &(_, len)) in parts.iter().zip(chunks) {
        for c in 0..ch {
            var[c] += p[ch + c] + weight(len) * (p[c] - mean[c]).square();
        }
    }
    for v in &mut var {
        *v /= total;
    }
    (mean, var)
}

/// Batch norm (`y = sc·z + sh`), ReLU and 2×2 max-pool with ceil mode of one `s × s` map,
/// in one pass: `out` gets the pooled maps, `arg` the position of each window's maximum
/// (`base` + its index in the map), taken before the ReLU (the first of equal values, as
/// the ReLU commutes with the max).
pub(crate) fn bn_relu_pool<T: Float>(
    z: &[T],
    s: usize,
    (sc, sh): (T, T),
    out: &mut [T],
    arg: &mut [u32],
    base: u32,
) {
    let so = s.div_ceil(2);
    let y = |p: usize| sc * z[p] + sh;
    // The larger of two candidates and its offset, the first on ties; written as selects
    // (no branch on the data: its comparisons are coin flips for the predictor).
    let pick = |(i, a): (usize, T), (j, b): (usize, T)| if b > a { (j, b) } else { (i, a) };
    let full = s / 2; // windows with both columns (and, for oy < full, both rows)
    for oy in 0..so {
        let r = 2 * oy * s;
        let down = 2 * oy + 1 < s;
        let (o, a) = (&mut out[oy * so..][..so], &mut arg[oy * so..][..so]);
        for ox in 0..so {
            let p0 = r + 2 * ox;
            let right = ox < full;
            let top = if right {
                pick((0, y(p0)), (1, y(p0 + 1)))
            } else {
                (0, y(p0))
            };
            let (best, bv) = if down {
                let bottom = if right {
                    pick((s, y(p0 + s)), (s + 1, y(p0 + s + 1)))
                } else {
                    (s, y(p0 + s))
                };
                pick(top, bottom)
            } else {
                top
            };
            o[ox] = if bv > T::zero() { bv } else { T::zero() };
            a[ox] = base + (p0 + best) as u32;
        }
    }
}

/// `(Σ dy, Σ dy·(z − mean))` of one channel of a chunk, `dy` being the pooled gradient
/// `dc` routed to each window's maximum `ac` (positions in the chunk `zc`) where the ReLU
/// passed it (`sc·z + sh > 0`): a pass over the pooled outputs only.
pub(super) fn pooled_sums<T: Float>(
    zc: &[T],
    dc: &[T],
    ac: &[u32],
    (sc, sh): (T, T),
    mean: T,
) -> (T, T) {
    let (mut sd, mut sdx) = (T::zero(), T::zero());
    for (&d, &p) in dc.iter().zip(ac) {
        let z = zc[p as usize];
        let d = if sc * z + sh > T::zero() {
            d
        } else {
            T::zero()
        };
        sd += d;
        sdx += d * (z - mean);
    }
    (sd, sdx)
}

/// The gradient at one channel's convolution output, `dz = ka·dy − kb·z + cst` (batch
/// norm's adjoint with the batch sums folded into `ka`, `kb`, `cst`), `dy` as in
/// [`pooled_sums`]: the affine part over the whole map (vectorised), then the pooled
/// gradients added at the windows' maxima. `off` is the channel's offset in the chunk.
pub(super) fn batch_norm_adjoint<T: Float>(
    zc: &[T],
    dz: &mut [T],
    off: usize,
    dc: &[T],
    ac: &[u32],
    (sc, sh): (T, T),
    (ka, kb, cst): (T, T, T),
) {
    let m = dz.len();
    for (d, &z) in dz.iter_mut().zip(&zc[off..off + m]) {
        *d = cst - kb * z;
    }
    for (&g, &p) in dc.iter().zip(ac) {
        let p = p as usize;
        let g = if sc * zc[p] + sh > T::zero() {
            g
        } else {
            T::zero()
        };
        dz[p - off] += ka * g;
    }
}
