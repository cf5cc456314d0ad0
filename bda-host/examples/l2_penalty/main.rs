//! Your own bi-level problem through the engine: one L2 penalty per feature for multinomial
//! logistic regression, learned on a validation set — the classic gradient-based
//! hyper-parameter problem. None of the engine was written for it.
//!
//! ```text
//! cargo run --release -p bda-host --example l2_penalty -- [DATA_DIR] [bda|rhg|trhg|ihg|obda]
//! ```
//!
//! (DATA_DIR: a folder of MNIST-format files, default Fashion-MNIST.) Variables: `x ∈ R^d`,
//! the log-penalties (`e^{x_j}` weighs feature `j`), and `y = (W, b)`, `W ∈ R^{d×c}` row-major
//! then `b ∈ R^c`. With `CE_S` the mean cross-entropy of the classifier on a set `S`:
//!
//! * lower level `f(x, y) = CE_train(W, b) + ½ Σ_j e^{x_j} ‖W_j‖²`,
//! * upper level `F(x, y) = CE_val(W, b)` (does not depend on `x`).
//!
//! The backend implements the four capabilities ([`LowerStep`], [`UpperGradient`],
//! [`StepAdjoint`], [`LowerHessian`]) and nothing else; the five methods, their buffers and the
//! K-step loops are the engine's ([`Hypergrad`]); the upper-level loop is the ten lines of
//! `run`. Products are `f64` GEMMs (`bda_cpu::linalg::gemm`). For a set with features `X`, logits
//! `Z = XW + 1bᵀ`, `P = softmax(Z)`: `∇_W CE = Xᵀ(P − E)/n`; in a direction `(V, v)`, with
//! `T = XV + 1vᵀ` and `R = P⊙T − P·rowsum(P⊙T)`, the Hessian product is `(XᵀR/n, Σ_i R_i/n)`;
//! `∂_{x_j}⟨∇_y f, a⟩ = e^{x_j}⟨W_j, A_j⟩` and `∂_{x_j} f = ½e^{x_j}‖W_j‖²`.

use std::convert::Infallible;

use bda_cpu::linalg::gemm;
use bda_host::data::{Subset, hyperclean_split, load_mnist_dir};
use bda_host::optim::Adam;
use bda_kernel::Method;
use bda_kernel::backend::{
    HostBuffers, Hypergrad, LowerHessian, LowerStep, MethodConfig, StepAdjoint, UpperGradient,
};

/// One data set: `n × d` features row-major, labels `< c`.
struct Set {
    x: Vec<f64>,
    labels: Vec<u8>,
}

/// The problem: training and validation sets with `d` features and `c` classes.
struct L2Penalty {
    d: usize,
    c: usize,
    train: Set,
    val: Set,
}

impl L2Penalty {
    /// The problem on `n` training and `n` validation samples of an MNIST-format folder, and
    /// the rest as a test set.
    fn load(dir: &str, n: usize) -> Result<(L2Penalty, Set), String> {
        let ds = load_mnist_dir(dir.as_ref()).map_err(|e| e.to_string())?;
        let split = hyperclean_split(&ds, n, n, 0.0, 0).map_err(|e| e.to_string())?;
        let set = |s: &Subset| Set {
            x: s.x.iter().map(|&v| f64::from(v)).collect(),
            labels: s.labels.clone(),
        };
        let (train, val) = (set(&split.train), set(&split.val));
        Ok((
            L2Penalty {
                d: split.train.dim,
                c: 10,
                train,
                val,
            },
            set(&split.test),
        ))
    }

    /// `out (n × c) ← X·A_W + 1·a_bᵀ` for a `y`-shaped `a`.
    fn affine(&self, s: &Set, a: &[f64]) -> Vec<f64> {
        let (n, d, c) = (s.labels.len(), self.d, self.c);
        let mut out: Vec<f64> = (0..n).flat_map(|_| a[d * c..].iter().copied()).collect();
        gemm(n, d, c, 1.0, &s.x, d, 1, a, c, 1, 1.0, &mut out, c, 1);
        out
    }

    /// `g_W += scale·Xᵀ·R/n`, `g_b += scale·Σ_i R_i/n` for an `n × c` matrix `R`.
    fn scatter(&self, s: &Set, r: &[f64], scale: f64, g: &mut [f64]) {
        let (n, d, c) = (s.labels.len(), self.d, self.c);
        let k = scale / n as f64;
        // Xᵀ is X's storage read with swapped strides.
        gemm(d, n, c, k, &s.x, 1, d, r, c, 1, 1.0, g, c, 1);
        for row in r.chunks_exact(c) {
            g[d * c..]
                .iter_mut()
                .zip(row)
                .for_each(|(g, v)| *g += k * v);
        }
    }

    /// Softmax rows of the logits of `y` on `s`, and the mean cross-entropy.
    fn probs(&self, s: &Set, y: &[f64]) -> (Vec<f64>, f64) {
        let mut p = self.affine(s, y);
        let mut loss = 0.0;
        for (row, &l) in p.chunks_exact_mut(self.c).zip(&s.labels) {
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
            loss += m + z.ln() - row[l as usize];
            row.iter_mut().for_each(|v| *v = (*v - m).exp() / z);
        }
        (p, loss / s.labels.len() as f64)
    }

    /// `g += scale·∇_y CE_s`; returns `CE_s`.
    fn ce_grad(&self, s: &Set, y: &[f64], scale: f64, g: &mut [f64]) -> f64 {
        let (mut p, loss) = self.probs(s, y);
        for (row, &l) in p.chunks_exact_mut(self.c).zip(&s.labels) {
            row[l as usize] -= 1.0;
        }
        self.scatter(s, &p, scale, g);
        loss
    }

    /// `out += scale·∇²_y CE_s·v`.
    fn ce_hvp(&self, s: &Set, y: &[f64], v: &[f64], scale: f64, out: &mut [f64]) {
        let (p, _) = self.probs(s, y);
        let mut r = self.affine(s, v);
        for (rr, pp) in r.chunks_exact_mut(self.c).zip(p.chunks_exact(self.c)) {
            let pt: f64 = rr.iter().zip(pp).map(|(t, p)| t * p).sum();
            rr.iter_mut().zip(pp).for_each(|(t, p)| *t = p * (*t - pt));
        }
        self.scatter(s, &r, scale, out);
    }

    /// `out_W += scale·e^{x_j}·v_W[j, ·]`: the penalty's Hessian (or gradient at `v = y`).
    fn penalty(&self, x: &[f64], v: &[f64], scale: f64, out: &mut [f64]) {
        for (j, (o, w)) in out
            .chunks_exact_mut(self.c)
            .zip(v.chunks_exact(self.c))
            .enumerate()
            .take(self.d)
        {
            let k = scale * x[j].exp();
            o.iter_mut().zip(w).for_each(|(o, w)| *o += k * w);
        }
    }

    /// `gx_j += scale·e^{x_j}·⟨a_j, b_j⟩` over the rows of `W`.
    fn rows_dot(&self, x: &[f64], a: &[f64], b: &[f64], scale: f64, gx: &mut [f64]) {
        let rows = a.chunks_exact(self.c).zip(b.chunks_exact(self.c));
        for ((g, xj), (a, b)) in gx.iter_mut().zip(x).zip(rows) {
            *g += scale * xj.exp() * a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
        }
    }
}

type V = Vec<f64>;
type Io<T = ()> = Result<T, Infallible>;

impl HostBuffers for L2Penalty {
    type Scalar = f64;
    fn x_len(&self) -> usize {
        self.d
    }
    fn y_len(&self) -> usize {
        (self.d + 1) * self.c
    }
}

impl LowerStep for L2Penalty {
    fn lower_step(&mut self, x: &V, y: &V, w_u: f64, w_l: f64, out: &mut V) -> Io {
        out.copy_from_slice(y);
        if w_u != 0.0 {
            self.ce_grad(&self.val, y, -w_u, out);
        }
        self.ce_grad(&self.train, y, -w_l, out);
        self.penalty(x, y, -w_l, out);
        Ok(())
    }
}

impl UpperGradient for L2Penalty {
    fn upper_depends_on_x(&self) -> bool {
        false
    }
    fn upper_grad(&mut self, _: &V, y: &V, gy: &mut V, _: &mut V, _: f64) -> Io<f64> {
        gy.fill(0.0);
        Ok(self.ce_grad(&self.val, y, 1.0, gy))
    }
}

impl StepAdjoint for L2Penalty {
    fn step_adjoint(&mut self, x: &V, y: &V, w_u: f64, w_l: f64, a: &mut V, gx: &mut V) -> Io {
        self.rows_dot(x, y, a, -w_l, gx);
        let mut next = a.clone();
        if w_u != 0.0 {
            self.ce_hvp(&self.val, y, a, -w_u, &mut next);
        }
        self.ce_hvp(&self.train, y, a, -w_l, &mut next);
        self.penalty(x, a, -w_l, &mut next);
        *a = next;
        Ok(())
    }
}

impl LowerHessian for L2Penalty {
    fn lower_hvp(&mut self, x: &V, y: &V, v: &V, out: &mut V) -> Io {
        out.fill(0.0);
        self.ce_hvp(&self.train, y, v, 1.0, out);
        self.penalty(x, v, 1.0, out);
        Ok(())
    }
    fn lower_mixed_vjp(&mut self, x: &V, y: &V, v: &V, s: f64, gx: &mut V) -> Io {
        self.rows_dot(x, y, v, s, gx);
        Ok(())
    }
    fn lower_grad_x(&mut self, x: &V, y: &V, s: f64, gx: &mut V) -> Io {
        self.rows_dot(x, y, y, 0.5 * s, gx);
        Ok(())
    }
}

/// Adam on the log-penalties from `x = ln 1e-3`; returns the validation loss `φ` per upper
/// iteration and the final `(x, y_K)`.
fn run(p: &mut L2Penalty, method: Method, ul_iters: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let spec = MethodConfig::new(method, 20, 0.5)
        .build()
        .expect("valid numbers");
    let mut hg = Hypergrad::new(p, spec).expect("Vec buffers");
    let (mut x, y0) = (vec![(1e-3f64).ln(); p.d], vec![0.0; p.y_len()]);
    let (mut gx, mut y) = (vec![0.0; p.d], vec![0.0; p.y_len()]);
    let mut adam = Adam::new(0.1, p.d);
    let mut curve = Vec::new();
    for _ in 0..ul_iters {
        curve.push(
            hg.hypergradient(p, &x, &y0, &mut gx, &mut y)
                .expect("finite"),
        );
        adam.step(&mut x, &gx);
    }
    hg.solve_lower(p, &x, &y0, &mut y).expect("finite");
    (curve, x, y)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| bda_host::data::FASHION_MNIST_DIR.into());
    let loaded = args
        .next()
        .map_or(Ok(Method::Bda), |m| m.parse().map_err(|e| format!("{e}")));
    let ((mut p, test), method) = match loaded.and_then(|m| Ok((L2Penalty::load(&dir, 1000)?, m))) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("l2_penalty: {e}");
            std::process::exit(2)
        }
    };
    let (curve, x, y) = run(&mut p, method, 30);
    let (probs, test_ce) = p.probs(&test, &y);
    let rows = probs.chunks_exact(p.c).zip(&test.labels);
    let hits = rows
        .filter(|&(r, &l)| r.iter().all(|&v| v <= r[l as usize]))
        .count();
    let acc = 100.0 * hits as f64 / test.labels.len() as f64;
    let (lo, hi) = x
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let n = curve.len();
    println!(
        "{method}: validation CE {:.4} → {:.4} in {n} upper iterations",
        curve[0],
        curve[n - 1]
    );
    println!(
        "test CE {test_ce:.4}, accuracy {acc:.2} %; penalties {:.1e} to {:.1e}",
        lo.exp(),
        hi.exp()
    );
}

#[cfg(test)]
mod tests;
