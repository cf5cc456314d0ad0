//! The linear head on the features, `z = W·f + b`, its mean cross-entropy, adjoint and
//! tangent. Rows are images; `W` is `ways × features`, row-major.

use crate::linalg::Float;

/// Softmax probabilities (`n × ways`), the mean cross-entropy and its gradient at the
/// logits, `d = (p − onehot)/n`.
pub(super) fn forward<T: Float>(
    (w, b): (&[T], &[T]),
    f: &[T],
    labels: &[u8],
) -> (T, Vec<T>, Vec<T>) {
    let (n, ways) = (labels.len(), b.len());
    let nf = f.len() / n.max(1);
    let mut p = vec![T::zero(); n * ways];
    let mut d = vec![T::zero(); n * ways];
    let mut loss = 0.0;
    let inv_n = T::from_f64(1.0 / n as f64);
    for (i, &label) in labels.iter().enumerate() {
        let fi = &f[i * nf..][..nf];
        let z: Vec<f64> = (0..ways)
            .map(|k| dot(&w[k * nf..][..nf], fi).to_f64() + b[k].to_f64())
            .collect();
        let top = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|&v| (v - top).exp()).sum();
        loss += s.ln() + top - z[label as usize];
        for k in 0..ways {
            let pk = T::from_f64((z[k] - top).exp() / s);
            p[i * ways + k] = pk;
            let onehot = if k == label as usize {
                T::one()
            } else {
                T::zero()
            };
            d[i * ways + k] = (pk - onehot) * inv_n;
        }
    }
    (T::from_f64(loss / n as f64), p, d)
}

/// The adjoint for logit gradients `d`: adds `dᵀ·f` to `gw` and `Σ d` to `gb`, returns the
/// features' gradient `d·W`.
pub(super) fn backward<T: Float>(w: &[T], f: &[T], d: &[T], gw: &mut [T], gb: &mut [T]) -> Vec<T> {
    let ways = gb.len();
    let n = d.len() / ways;
    let nf = f.len() / n.max(1);
    let mut df = vec![T::zero(); f.len()];
    for i in 0..n {
        let (fi, dfi) = (&f[i * nf..][..nf], &mut df[i * nf..][..nf]);
        for k in 0..ways {
            let dk = d[i * ways + k];
            gb[k] += dk;
            let (gwk, wk) = (&mut gw[k * nf..][..nf], &w[k * nf..][..nf]);
            for j in 0..nf {
                gwk[j] += dk * fi[j];
                dfi[j] += dk * wk[j];
            }
        }
    }
    df
}

/// The tangent of the logit gradient, `ḋ = (p ⊙ (ż − ⟨p, ż⟩))/n` with
/// `ż = v_W·f + W·ḟ + v_b`.
pub(super) fn d_tangent<T: Float>(
    (w, vw, vb): (&[T], &[T], &[T]),
    (f, f_dot): (&[T], &[T]),
    p: &[T],
) -> Vec<T> {
    let ways = vb.len();
    let n = p.len() / ways;
    let nf = f.len() / n.max(1);
    let inv_n = T::from_f64(1.0 / n as f64);
    let mut out = vec![T::zero(); p.len()];
    for i in 0..n {
        let (fi, fdi) = (&f[i * nf..][..nf], &f_dot[i * nf..][..nf]);
        let z: Vec<T> = (0..ways)
            .map(|k| dot(&vw[k * nf..][..nf], fi) + dot(&w[k * nf..][..nf], fdi) + vb[k])
            .collect();
        let pi = &p[i * ways..][..ways];
        let pz = dot(pi, &z);
        for k in 0..ways {
            out[i * ways + k] = pi[k] * (z[k] - pz) * inv_n;
        }
    }
    out
}

fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::zero(), |s, (&x, &y)| s + x * y)
}
