//! Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, *Fast Algorithms for
//! Convolutional Neural Networks*, 2016) for the backbone's wide 3×3 convolutions.
//!
//! Each 2×2 block of outputs ("tile") is computed from the 4×4 input patch around it as
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`: 16 multiplications per tile and channel pair instead of
//! the 36 of the direct 3×3 convolution, 2.25× fewer. Summed over input channels, the
//! element-wise products become 16 GEMMs, one per position ξ of the 4×4 transform:
//! `M[ξ] = U[ξ] · V[ξ]` with `U[ξ]` (`c_out × c_in`) the transformed weights and `V[ξ]`
//! (`c_in × tiles`) the transformed input.
//!
//! The backward pass is the exact adjoint of that computation (the same linear map as the
//! direct convolution, so the same gradient up to rounding): the output gradient through
//! `Aᵀ · A`'s adjoint gives `dM`, then `dU[ξ] = dM[ξ]·V[ξ]ᵀ` (the weight gradient, mapped back
//! by `Gᵀ · G`) and `dV[ξ] = U[ξ]ᵀ·dM[ξ]` (the input gradient, mapped back by `B · Bᵀ` and
//! summed where tiles overlap). All three GEMMs get the 2.25× saving.
//!
//! Maps with an odd side (7 → 4 tiles) are padded with zeros on the input side and their
//! extra outputs dropped.

use super::ops::groups;
use super::{Float, gemm};

/// Positions of the 4×4 transform (one GEMM each).
const XI: usize = 16;

/// Bytes of the larger of a group's transformed input and product (see
/// [`WinogradConv::group`]).
const GROUP_BUDGET: usize = 2 << 20;

/// `G·g` for one column or row of a 3×3 kernel.
#[inline(always)]
fn g_op<T: Float>([g0, g1, g2]: [T; 3]) -> [T; 4] {
    let h = T::from_f64(0.5);
    [g0, h * (g0 + g1 + g2), h * (g0 - g1 + g2), g2]
}

/// Adjoint of [`g_op`].
#[inline(always)]
fn g_adj<T: Float>([u0, u1, u2, u3]: [T; 4]) -> [T; 3] {
    let h = T::from_f64(0.5);
    [u0 + h * (u1 + u2), h * (u1 - u2), h * (u1 + u2) + u3]
}

/// `op` applied to the columns of `x` (`R × C`, row-major), then to the rows of the result.
#[inline(always)]
fn sandwich<T: Float, const R: usize, const C: usize, const R2: usize, const C2: usize>(
    x: [[T; C]; R],
    col: impl Fn([T; R]) -> [T; R2],
    row: impl Fn([T; C]) -> [T; C2],
) -> [[T; C2]; R2] {
    let mut t = [[T::zero(); C]; R2];
    for j in 0..C {
        let c = col(core::array::from_fn(|i| x[i][j]));
        for i in 0..R2 {
            t[i][j] = c[i];
        }
    }
    t.map(row)
}

/// The weights `w` (`[c_out][c_in·9]`) in the Winograd domain: `u[ξ][c_out][c_in]`.
pub(crate) fn transform_weights<T: Float>(w: &[T], ch: usize, c_in: usize) -> Vec<T> {
    let mut u = vec![T::zero(); XI * ch * c_in];
    for (k, g) in w.chunks_exact(9).enumerate() {
        let g = core::array::from_fn(|a| [g[3 * a], g[3 * a + 1], g[3 * a + 2]]);
        let t = sandwich::<T, 3, 3, 4, 4>(g, g_op, g_op);
        for (xi, &v) in t.iter().flatten().enumerate() {
            u[xi * ch * c_in + k] = v;
        }
    }
    u
}

/// Adjoint of [`transform_weights`]: the gradient of `w` (`[c_out][c_in·9]`) from that of
/// `u` (`[ξ][c_out][c_in]`).
pub(crate) fn transform_weights_adjoint<T: Float>(du: &[T], ch: usize, c_in: usize) -> Vec<T> {
    let per = ch * c_in;
    let mut dw = vec![T::zero(); per * 9];
    for (k, out) in dw.chunks_exact_mut(9).enumerate() {
        let d: [[T; 4]; 4] =
            core::array::from_fn(|i| core::array::from_fn(|j| du[(4 * i + j) * per + k]));
        let g = sandwich::<T, 4, 4, 3, 3>(d, g_adj, g_adj);
        for (o, &v) in out.iter_mut().zip(g.iter().flatten()) {
            *o = v;
        }
    }
    dw
}

/// One block's convolution in the Winograd domain (weights already transformed).
pub(crate) struct WinogradConv<'u, T> {
    /// `U[ξ][c_out][c_in]` ([`transform_weights`]).
    pub u: &'u [T],
    pub c_in: usize,
    /// Side of the (square) maps.
    pub s: usize,
    /// Output channels.
    pub ch: usize,
    /// At most this many images per group ([`super::ops::UNCAPPED`] in the backbone).
    pub cap: usize,
}

/// Scratch of one worker: the transformed input (or its gradient), the product (or its
/// gradient), the zero-padded input split into even and odd columns, and rows of partial
/// transforms.
#[derive(Default)]
pub(crate) struct Scratch<T> {
    v: Vec<T>,
    m: Vec<T>,
    grid: Vec<T>,
    rows: Vec<T>,
}

// Layout. A group's tiles are numbered `p = (ty·t + tx)·g + i` (image `i` innermost), and
// every intermediate keeps the group's images innermost too, so the transforms run as
// vector operations over a whole row of tiles of all the group's images at once (56
// lanes for the default block 1). The padded input is split into its even and odd
// columns: the four columns of tile `tx` are `E[tx], O[tx], E[tx+1], O[tx+1]`, each a
// contiguous run of `g` values. `Bᵀ d B` is `Bᵀ` over a patch's rows (`bt_rows`), then over
// its columns (`bt_cols`); `Aᵀ M A` likewise. Each adjoint is the same steps transposed,
// in reverse order.

/// `Bᵀ` over four rows `r` of `w` values: `[r0 − r2, r1 + r2, r2 − r1, r1 − r3]`.
fn bt_rows<T: Float>(r: &[T], w: usize, out: &mut [T]) {
    let (r0, r1, r2, r3) = (&r[..w], &r[w..2 * w], &r[2 * w..3 * w], &r[3 * w..4 * w]);
    let (o0, rest) = out[..4 * w].split_at_mut(w);
    let (o1, rest) = rest.split_at_mut(w);
    let (o2, o3) = rest.split_at_mut(w);
    for k in 0..w {
        o0[k] = r0[k] - r2[k];
        o1[k] = r1[k] + r2[k];
        o2[k] = r2[k] - r1[k];
        o3[k] = r1[k] - r3[k];
    }
}

/// Adjoint of [`bt_rows`]: the four rows `r` accumulate it from `d` (four rows of `w`).
fn bt_rows_adjoint<T: Float>(d: &[T], w: usize, r: &mut [T]) {
    let (d0, d1, d2, d3) = (&d[..w], &d[w..2 * w], &d[2 * w..3 * w], &d[3 * w..4 * w]);
    let (r0, rest) = r[..4 * w].split_at_mut(w);
    let (r1, rest) = rest.split_at_mut(w);
    let (r2, r3) = rest.split_at_mut(w);
    for k in 0..w {
        r0[k] += d0[k];
        r1[k] += d1[k] - d2[k] + d3[k];
        r2[k] += d1[k] + d2[k] - d0[k];
        r3[k] -= d3[k];
    }
}

/// `Bᵀ` over the columns of a row of tiles: output `b` (0‥3) of every tile, from the
/// even and odd columns `e`, `o` (runs of `g` values per column; `out.len() + g` each).
fn bt_cols<T: Float>(e: &[T], o: &[T], g: usize, b: usize, out: &mut [T]) {
    let n = out.len();
    let (e0, e1, o0, o1) = (&e[..n], &e[g..g + n], &o[..n], &o[g..g + n]);
    let (x, y) = match b {
        0 => (e0, e1),
        1 => (o0, e1),
        2 => (e1, o0),
        _ => (o0, o1),
    };
    if b == 1 {
        out.iter_mut()
            .zip(x.iter().zip(y))
            .for_each(|(d, (&a, &c))| *d = a + c);
    } else {
        out.iter_mut()
            .zip(x.iter().zip(y))
            .for_each(|(d, (&a, &c))| *d = a - c);
    }
}

/// Adjoint of [`bt_cols`] over its four outputs `v0‥v3`: `e` and `o` accumulate it.
fn bt_cols_adjoint<T: Float>(v: [&[T]; 4], g: usize, e: &mut [T], o: &mut [T]) {
    let n = v[0].len();
    let [v0, v1, v2, v3] = v.map(|x| &x[..n]);
    // A tile's columns 0, 1 are `e[x]`, `o[x]`; its columns 2, 3 are `e[x + g]`, `o[x + g]`.
    let (e_lo, o_lo) = (&mut e[..n], &mut o[..n]);
    for x in 0..n {
        e_lo[x] += v0[x];
        o_lo[x] += v1[x] - v2[x] + v3[x];
    }
    let (e_hi, o_hi) = (&mut e[g..g + n], &mut o[g..g + n]);
    for x in 0..n {
        e_hi[x] += v1[x] + v2[x] - v0[x];
        o_hi[x] -= v3[x];
    }
}

/// `Aᵀ` over four runs `m` (a column of the 4×4 product): `(m0 + m1 + m2, m1 − m2 − m3)`.
fn at_pair<T: Float>(m: [&[T]; 4], c0: &mut [T], c1: &mut [T]) {
    let n = c0.len();
    let [m0, m1, m2, m3] = m.map(|x| &x[..n]);
    let c1 = &mut c1[..n];
    for x in 0..n {
        c0[x] = m0[x] + m1[x] + m2[x];
        c1[x] = m1[x] - m2[x] - m3[x];
    }
}

/// Adjoint of [`at_pair`]: output `a` (0‥3) from the gradients `c0`, `c1`.
fn at_pair_adjoint<T: Float>(c0: &[T], c1: &[T], a: usize, out: &mut [T]) {
    let n = out.len();
    let (c0, c1) = (&c0[..n], &c1[..n]);
    match a {
        0 => out.copy_from_slice(c0),
        1 => out
            .iter_mut()
            .zip(c0.iter().zip(c1))
            .for_each(|(d, (&u, &v))| *d = u + v),
        2 => out
            .iter_mut()
            .zip(c0.iter().zip(c1))
            .for_each(|(d, (&u, &v))| *d = u - v),
        _ => out.iter_mut().zip(c1).for_each(|(d, &v)| *d = -v),
    }
}

/// Images `i0..i0 + g` of a chunk of `len` images: the group the transforms work on.
#[derive(Clone, Copy)]
struct Group {
    len: usize,
    i0: usize,
    g: usize,
}

impl<T: Float> WinogradConv<'_, T> {
    /// Tiles per side.
    fn t(&self) -> usize {
        self.s.div_ceil(2)
    }

    /// `(s, t, s², t²·g)`: side, tiles per side, values per map and tiles of a group of
    /// `g` images.
    fn dims(&self, g: usize) -> (usize, usize, usize, usize) {
        let t = self.t();
        (self.s, t, self.s * self.s, g * t * t)
    }

    /// Images per group: as many as keep the larger of `V` and `M` within
    /// [`GROUP_BUDGET`] (at least 1, at most the chunk and `cap`). Depends on the shape
    /// only.
    fn group(&self) -> usize {
        let per_image = XI * self.c_in.max(self.ch) * self.t() * self.t();
        (GROUP_BUDGET / (per_image * size_of::<T>()).max(1)).clamp(1, self.cap.max(1))
    }

    /// `V[ξ][ci][(ty·t + tx)·g + i − i0]` of images `i0 .. i0 + g` of the chunk `xc`
    /// (`[c_in][len·s²]`).
    fn transform_input(&self, xc: &[T], at: Group, sc: &mut Scratch<T>) {
        let Group { len, i0, g } = at;
        let (s, t, hw, p) = self.dims(g);
        let (w, ps) = ((t + 1) * g, 2 * t + 2);
        let cp = self.c_in * p;
        let Scratch { v, grid, rows, .. } = sc;
        v.resize(XI * cp, T::zero());
        grid.clear();
        grid.resize(2 * ps * w, T::zero());
        rows.resize(8 * w, T::zero());
        for ci in 0..self.c_in {
            // Input column x is padded column x + 1: odd x in `e`, even x in `o`; the
            // padding stays zero from image to image and channel to channel.
            let (e, o) = grid.split_at_mut(ps * w);
            for i in 0..g {
                let src = &xc[ci * len * hw + (i0 + i) * hw..][..hw];
                for (y, row) in src.chunks_exact(s).enumerate() {
                    let (er, or) = (&mut e[(y + 1) * w..][..w], &mut o[(y + 1) * w..][..w]);
                    for (x, &val) in row.iter().enumerate() {
                        if x % 2 == 0 {
                            or[x / 2 * g + i] = val;
                        } else {
                            er[x.div_ceil(2) * g + i] = val;
                        }
                    }
                }
            }
            for ty in 0..t {
                let (re, ro) = rows.split_at_mut(4 * w);
                bt_rows(&e[2 * ty * w..], w, re);
                bt_rows(&o[2 * ty * w..], w, ro);
                let base = ci * p + ty * t * g;
                for a in 0..4 {
                    let (te, to) = (&re[a * w..][..w], &ro[a * w..][..w]);
                    for b in 0..4 {
                        bt_cols(te, to, g, b, &mut v[(4 * a + b) * cp + base..][..t * g]);
                    }
                }
            }
        }
    }

    /// Adjoint of [`transform_input`](Self::transform_input): `din` accumulates it,
    /// applied to `dV` (in `sc.v`), for the group's images.
    fn transform_input_adjoint(&self, din: &mut [T], at: Group, sc: &mut Scratch<T>) {
        let Group { len, i0, g } = at;
        let (s, t, hw, p) = self.dims(g);
        let (w, ps) = ((t + 1) * g, 2 * t + 2);
        let cp = self.c_in * p;
        let Scratch { v, grid, rows, .. } = sc;
        grid.resize(2 * ps * w, T::zero());
        rows.resize(8 * w, T::zero());
        for ci in 0..self.c_in {
            grid.fill(T::zero());
            let (e, o) = grid.split_at_mut(ps * w);
            for ty in 0..t {
                let (re, ro) = rows.split_at_mut(4 * w);
                re.fill(T::zero());
                ro.fill(T::zero());
                let base = ci * p + ty * t * g;
                for a in 0..4 {
                    let dv: [&[T]; 4] =
                        core::array::from_fn(|b| &v[(4 * a + b) * cp + base..][..t * g]);
                    bt_cols_adjoint(dv, g, &mut re[a * w..][..w], &mut ro[a * w..][..w]);
                }
                bt_rows_adjoint(re, w, &mut e[2 * ty * w..]);
                bt_rows_adjoint(ro, w, &mut o[2 * ty * w..]);
            }
            for i in 0..g {
                let dst = &mut din[ci * len * hw + (i0 + i) * hw..][..hw];
                for (y, row) in dst.chunks_exact_mut(s).enumerate() {
                    let (er, or) = (&e[(y + 1) * w..][..w], &o[(y + 1) * w..][..w]);
                    for (x, d) in row.iter_mut().enumerate() {
                        *d += if x % 2 == 0 {
                            or[x / 2 * g + i]
                        } else {
                            er[x.div_ceil(2) * g + i]
                        };
                    }
                }
            }
        }
    }

    /// `z[co][i·s² + y·s + x]` for the group's images from `M` in `sc.m`.
    fn transform_output(&self, z: &mut [T], at: Group, sc: &mut Scratch<T>) {
        let Group { len, i0, g } = at;
        let (s, t, hw, p) = self.dims(g);
        let n = t * g;
        let cp = self.ch * p;
        let Scratch { m, rows, .. } = sc;
        rows.resize(12 * n, T::zero());
        for co in 0..self.ch {
            for ty in 0..t {
                let base = co * p + ty * n;
                // c[b][r]: Aᵀ over the rows a of column b; then y[r][q]: Aᵀ over b.
                let (c, y) = rows.split_at_mut(8 * n);
                for b in 0..4 {
                    let mm: [&[T]; 4] =
                        core::array::from_fn(|a| &m[(4 * a + b) * cp + base..][..n]);
                    let (c0, c1) = c[2 * b * n..][..2 * n].split_at_mut(n);
                    at_pair(mm, c0, c1);
                }
                for r in 0..2 {
                    let oy = 2 * ty + r;
                    if oy >= s {
                        break;
                    }
                    let cr: [&[T]; 4] = core::array::from_fn(|b| &c[(2 * b + r) * n..][..n]);
                    let (y0, y1) = y[..2 * n].split_at_mut(n);
                    at_pair(cr, y0, y1);
                    for i in 0..g {
                        let out = &mut z[co * len * hw + (i0 + i) * hw + oy * s..][..s];
                        for x in 0..t {
                            out[2 * x] = y0[x * g + i];
                            if 2 * x + 1 < s {
                                out[2 * x + 1] = y1[x * g + i];
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adjoint of [`transform_output`](Self::transform_output): `dM` (into `sc.m`) from
    /// the gradient `dz` of the group's outputs.
    fn transform_output_adjoint(&self, dz: &[T], at: Group, sc: &mut Scratch<T>) {
        let Group { len, i0, g } = at;
        let (s, t, hw, p) = self.dims(g);
        let n = t * g;
        let cp = self.ch * p;
        let Scratch { m, rows, .. } = sc;
        m.resize(XI * cp, T::zero());
        rows.resize(12 * n, T::zero());
        for co in 0..self.ch {
            for ty in 0..t {
                let (c, y) = rows.split_at_mut(8 * n);
                c.fill(T::zero());
                for r in 0..2 {
                    let oy = 2 * ty + r;
                    if oy >= s {
                        break;
                    }
                    // The gradient of output row oy, then dc[b][r] (row 2b + r of `c`).
                    let (y0, y1) = y[..2 * n].split_at_mut(n);
                    for i in 0..g {
                        let src = &dz[co * len * hw + (i0 + i) * hw + oy * s..][..s];
                        for x in 0..t {
                            y0[x * g + i] = src[2 * x];
                            y1[x * g + i] = if 2 * x + 1 < s {
                                src[2 * x + 1]
                            } else {
                                T::zero()
                            };
                        }
                    }
                    for b in 0..4 {
                        at_pair_adjoint(y0, y1, b, &mut c[(2 * b + r) * n..][..n]);
                    }
                }
                let base = co * p + ty * n;
                for b in 0..4 {
                    let (c0, c1) = (&c[2 * b * n..][..n], &c[(2 * b + 1) * n..][..n]);
                    for a in 0..4 {
                        at_pair_adjoint(c0, c1, a, &mut m[(4 * a + b) * cp + base..][..n]);
                    }
                }
            }
        }
    }

    /// The chunk `xc` (`[c_in][len·s²]`) convolved into `z` (`[ch][len·s²]`).
    pub(crate) fn run_into(&self, xc: &[T], sc: &mut Scratch<T>, z: &mut [T]) {
        let (ci, co) = (self.c_in, self.ch);
        let len = xc.len() / (ci * self.s * self.s);
        for (i0, g) in groups(len, self.group()) {
            let grp = Group { len, i0, g };
            self.transform_input(xc, grp, sc);
            let p = g * self.t() * self.t();
            sc.m.resize(XI * co * p, T::zero());
            for xi in 0..XI {
                gemm(
                    co,
                    ci,
                    p,
                    T::one(),
                    &self.u[xi * co * ci..][..co * ci],
                    ci,
                    1,
                    &sc.v[xi * ci * p..][..ci * p],
                    p,
                    1,
                    T::zero(),
                    &mut sc.m[xi * co * p..][..co * p],
                    p,
                    1,
                );
            }
            self.transform_output(z, grp, sc);
        }
    }

    /// The chunk's part of the backward pass given `dz` (`[ch][len·s²]`): `du`
    /// (`[ξ][c_out][c_in]`), when given, accumulates the Winograd-domain weight gradient
    /// for the input `xc` (`[c_in][len·s²]`; unread without `du`), and `din`, when given
    /// (`[c_in][len·s²]`), the input gradient.
    pub(crate) fn backward(
        &self,
        xc: &[T],
        dz: &[T],
        sc: &mut Scratch<T>,
        mut du: Option<&mut [T]>,
        mut din: Option<&mut [T]>,
    ) {
        let (ci, co) = (self.c_in, self.ch);
        let len = dz.len() / (co * self.s * self.s);
        for (i0, g) in groups(len, self.group()) {
            let grp = Group { len, i0, g };
            let p = g * self.t() * self.t();
            if du.is_some() {
                self.transform_input(xc, grp, sc);
            } else {
                // dV is written over V's room.
                sc.v.resize(XI * ci * p, T::zero());
            }
            self.transform_output_adjoint(dz, grp, sc);
            for xi in 0..XI {
                let dm = &sc.m[xi * co * p..][..co * p];
                // dU[ξ] += dM[ξ] · V[ξ]ᵀ
                if let Some(du) = du.as_deref_mut() {
                    gemm(
                        co,
                        p,
                        ci,
                        T::one(),
                        dm,
                        p,
                        1,
                        &sc.v[xi * ci * p..][..ci * p],
                        1,
                        p,
                        T::one(),
                        &mut du[xi * co * ci..][..co * ci],
                        ci,
                        1,
                    );
                }
                if din.is_some() {
                    // dV[ξ] = U[ξ]ᵀ · dM[ξ], over V[ξ] (no longer needed)
                    gemm(
                        ci,
                        co,
                        p,
                        T::one(),
                        &self.u[xi * co * ci..][..co * ci],
                        1,
                        ci,
                        dm,
                        p,
                        1,
                        T::zero(),
                        &mut sc.v[xi * ci * p..][..ci * p],
                        p,
                        1,
                    );
                }
            }
            if let Some(din) = din.as_deref_mut() {
                self.transform_input_adjoint(din, grp, sc);
            }
        }
    }
}

#[cfg(test)]
mod tests;
