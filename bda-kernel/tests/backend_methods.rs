//! The dataset-scale methods of `bda_kernel::backend` (reverse mode, truncation, implicit,
//! one-stage) checked against the exact forward-mode hypergradient, through a backend that
//! wraps a fixed-size problem. This validates the one shared definition of the methods
//! independently of any CPU or GPU math backend.

use std::convert::Infallible;

use bda_kernel::HypergradientMethod;
use bda_kernel::backend::{
    self, CgScratch, HostBuffers, LowerHessian, LowerStep, OneStageScratch, StepAdjoint,
    UpperGradient,
};
use bda_kernel::prelude::*;
use nalgebra::{SMatrix, SVector};

const N: usize = 3;
const M: usize = 4;

/// A fixed-size problem seen as a backend with `Vec<f64>` buffers.
struct Fixed<U, L> {
    p: Bilevel<U, L>,
}

fn sv<const D: usize>(v: &[f64]) -> SVector<f64, D> {
    SVector::from_column_slice(v)
}

impl<U, L> Fixed<U, L>
where
    U: SecondOrder<f64, N, M>,
    L: SecondOrder<f64, N, M>,
{
    /// (H_yx, H_yy·v) of an objective from its tangent map T(Z) = H_yx + H_yy·Z.
    fn blocks<G: SecondOrder<f64, N, M>>(
        g: &G,
        x: &SVector<f64, N>,
        y: &SVector<f64, M>,
        v: &SVector<f64, M>,
    ) -> (SMatrix<f64, M, N>, SVector<f64, M>) {
        let h_yx = g.grad_y_tangent(x, y, &SMatrix::zeros());
        let mut z = SMatrix::<f64, M, N>::zeros();
        z.set_column(0, v);
        let hv = g.grad_y_tangent(x, y, &z).column(0) - h_yx.column(0);
        (h_yx, hv)
    }
}

impl<U, L> HostBuffers for Fixed<U, L> {
    type Scalar = f64;
    fn x_len(&self) -> usize {
        N
    }
    fn y_len(&self) -> usize {
        M
    }
}

impl<U: Gradient<f64, N, M>, L: Gradient<f64, N, M>> LowerStep for Fixed<U, L> {
    fn lower_step(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        w_u: f64,
        w_l: f64,
        y_out: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        let (x, y) = (sv::<N>(x), sv::<M>(y));
        let next = y - self.p.upper.grad_y(&x, &y) * w_u - self.p.lower.grad_y(&x, &y) * w_l;
        y_out.copy_from_slice(next.as_slice());
        Ok(())
    }
}

impl<U: Objective<f64, N, M> + Gradient<f64, N, M>, L> UpperGradient for Fixed<U, L> {
    fn upper_grad(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        gy: &mut Vec<f64>,
        gx: &mut Vec<f64>,
        s: f64,
    ) -> Result<f64, Infallible> {
        let (xs, ys) = (sv::<N>(x), sv::<M>(y));
        gy.copy_from_slice(self.p.upper.grad_y(&xs, &ys).as_slice());
        let g = self.p.upper.grad_x(&xs, &ys);
        gx.iter_mut().zip(g.iter()).for_each(|(a, b)| *a += s * b);
        Ok(self.p.upper.value(&xs, &ys))
    }
}

impl<U: SecondOrder<f64, N, M>, L: SecondOrder<f64, N, M>> StepAdjoint for Fixed<U, L> {
    fn step_adjoint(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        w_u: f64,
        w_l: f64,
        a: &mut Vec<f64>,
        gx: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        let (xs, ys, av) = (sv::<N>(x), sv::<M>(y), sv::<M>(a));
        let (fyx, fv) = Self::blocks(&self.p.upper, &xs, &ys, &av);
        let (lyx, lv) = Self::blocks(&self.p.lower, &xs, &ys, &av);
        let dx = (fyx * w_u + lyx * w_l).transpose() * av;
        gx.iter_mut().zip(dx.iter()).for_each(|(g, d)| *g -= d);
        let next = av - fv * w_u - lv * w_l;
        a.copy_from_slice(next.as_slice());
        Ok(())
    }
}

impl<U: SecondOrder<f64, N, M>, L: SecondOrder<f64, N, M> + Gradient<f64, N, M>> LowerHessian
    for Fixed<U, L>
{
    fn lower_hvp(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        v: &Vec<f64>,
        out: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        let (_, hv) = Self::blocks(&self.p.lower, &sv(x), &sv(y), &sv(v));
        out.copy_from_slice(hv.as_slice());
        Ok(())
    }
    fn lower_mixed_vjp(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        v: &Vec<f64>,
        s: f64,
        gx: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        let vs = sv::<M>(v);
        let (hyx, _) = Self::blocks(&self.p.lower, &sv(x), &sv(y), &vs);
        let d = hyx.transpose() * vs;
        gx.iter_mut().zip(d.iter()).for_each(|(g, d)| *g += s * d);
        Ok(())
    }
    fn lower_grad_x(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        s: f64,
        gx: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        let g = self.p.lower.grad_x(&sv(x), &sv(y));
        gx.iter_mut().zip(g.iter()).for_each(|(a, b)| *a += s * b);
        Ok(())
    }
}

/// F = ‖y − Ax‖² + ¼Σ sin(x_i y_i), f = ½ yᵀQy − yᵀ tanh(Bx) + (1/50)Σ y⁴: smooth, f
/// strongly convex in y.
struct Up {
    a: SMatrix<f64, M, N>,
}
struct Lo {
    q: SMatrix<f64, M, M>,
    b: SMatrix<f64, M, N>,
}
impl Smooth<N, M> for Up {
    fn eval<S: Scalar>(&self, x: &SVector<S, N>, y: &SVector<S, M>) -> S {
        let mut s = S::zero();
        for i in 0..M {
            let mut ax = S::zero();
            for j in 0..N {
                ax += S::from_f64(self.a[(i, j)]) * x[j];
            }
            s += (y[i] - ax).square();
        }
        for i in 0..N {
            s += S::from_f64(0.25) * (x[i] * y[i]).sin();
        }
        s
    }
}
impl Smooth<N, M> for Lo {
    fn eval<S: Scalar>(&self, x: &SVector<S, N>, y: &SVector<S, M>) -> S {
        let mut s = S::zero();
        for i in 0..M {
            let mut qy = S::zero();
            for j in 0..M {
                qy += S::from_f64(self.q[(i, j)]) * y[j];
            }
            let mut bx = S::zero();
            for j in 0..N {
                bx += S::from_f64(self.b[(i, j)]) * x[j];
            }
            s += S::from_f64(0.5) * y[i] * qy - y[i] * bx.tanh() + S::from_f64(0.02) * y[i].powi(4);
        }
        s
    }
}

fn problem() -> Fixed<AutoDiff<Up>, AutoDiff<Lo>> {
    let a = SMatrix::<f64, M, N>::from_fn(|i, j| ((i * 3 + j) as f64 * 0.7).sin());
    let b = SMatrix::<f64, M, N>::from_fn(|i, j| ((i + 5 * j) as f64 * 0.3).cos());
    let r = SMatrix::<f64, M, M>::from_fn(|i, j| ((i * 7 + j * 2) as f64 * 0.45).sin());
    let q = r.transpose() * r / 4.0 + SMatrix::identity();
    Fixed {
        p: Bilevel::new(AutoDiff(Up { a }), AutoDiff(Lo { q, b })),
    }
}

fn x0() -> SVector<f64, N> {
    SVector::from([0.4, -0.3, 0.8])
}
fn y0() -> SVector<f64, M> {
    SVector::from([0.1, 0.0, -0.2, 0.3])
}

fn bda() -> LowerDynamics<f64> {
    LowerDynamics::Aggregated {
        mu: 0.4,
        alpha: Schedule::Harmonic(0.9),
        beta: Beta::Schedule(Schedule::Constant(1.0)),
        s_u: 0.2,
        s_l: 0.4,
    }
}

fn forward(
    b: &Fixed<AutoDiff<Up>, AutoDiff<Lo>>,
    dynamics: LowerDynamics<f64>,
    steps: u32,
) -> (SVector<f64, N>, f64) {
    let cfg = LowerConfig {
        steps,
        dynamics,
        projection: Projection::None,
    };
    let hg = ForwardMode
        .hypergradient(&b.p, &cfg, &x0(), &y0(), 0)
        .unwrap();
    (hg.grad, hg.upper)
}

fn run_unrolled(
    b: &mut Fixed<AutoDiff<Up>, AutoDiff<Lo>>,
    dynamics: LowerDynamics<f64>,
    steps: u32,
    truncate: Option<u32>,
) -> (Vec<f64>, f64) {
    let mut tape = vec![vec![0.0; M]; backend::tape_len(steps, truncate)];
    let (mut adj, mut gx, mut y) = (vec![0.0; M], vec![0.0; N], vec![0.0; M]);
    let up = backend::unrolled(
        b,
        &x0().as_slice().to_vec(),
        &y0().as_slice().to_vec(),
        &dynamics,
        steps,
        truncate,
        &mut tape,
        &mut adj,
        &mut gx,
        &mut y,
    )
    .unwrap();
    (gx, up)
}

fn close(a: &[f64], b: &SVector<f64, N>, tol: f64) -> bool {
    let d: f64 = a
        .iter()
        .zip(b.iter())
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    d <= tol * b.norm().max(1e-12)
}

#[test]
fn reverse_mode_equals_forward_mode_for_bda_and_rhg() {
    let mut b = problem();
    for dynamics in [bda(), LowerDynamics::LowerOnly { s_l: 0.4 }] {
        for steps in [1, 2, 7, 30] {
            let (want, up) = forward(&b, dynamics, steps);
            let (got, up2) = run_unrolled(&mut b, dynamics, steps, None);
            assert!(close(&got, &want, 1e-12), "K={steps}: {got:?} vs {want:?}");
            assert!((up - up2).abs() < 1e-14);
        }
    }
}

#[test]
fn truncation_keeps_only_the_last_t_steps() {
    let mut b = problem();
    let steps = 9;
    // T = K is the full hypergradient; T = 0 is ∇_x F at y_K.
    let (full, _) = forward(&b, bda(), steps);
    assert!(close(
        &run_unrolled(&mut b, bda(), steps, Some(steps)).0,
        &full,
        1e-12
    ));
    assert!(close(
        &run_unrolled(&mut b, bda(), steps, Some(50)).0,
        &full,
        1e-12
    ));
    let cfg = LowerConfig {
        steps,
        dynamics: bda(),
        projection: Projection::None,
    };
    let y_k = cfg.solve(&b.p, &x0(), &y0(), 0).unwrap();
    let (t0, _) = run_unrolled(&mut b, bda(), steps, Some(0));
    assert!(close(&t0, &b.p.upper.grad_x(&x0(), &y_k), 1e-14));
    // 0 < T < K: the derivative of F(x, y_K) where steps 1..K−T see x as a constant.
    for t in [1, 4, 8] {
        let phi = |xp: &SVector<f64, N>| {
            let mut y = y0();
            for k in 1..=steps {
                let xs = if k <= steps - t { x0() } else { *xp };
                y = cfg.step(&b.p, &xs, &y, k).1;
            }
            b.p.upper.value(xp, &y)
        };
        let h = 1e-6;
        let fd = SVector::<f64, N>::from_fn(|i, _| {
            let mut e = SVector::<f64, N>::zeros();
            e[i] = h;
            (phi(&(x0() + e)) - phi(&(x0() - e))) / (2.0 * h)
        });
        let (got, _) = run_unrolled(&mut b, bda(), steps, Some(t));
        assert!(close(&got, &fd, 1e-7), "T={t}: {got:?} vs {fd:?}");
    }
}

#[test]
fn implicit_matches_forward_mode_once_the_lower_level_has_converged() {
    let mut b = problem();
    let steps = 400;
    let dynamics = LowerDynamics::LowerOnly { s_l: 0.4 };
    let (want, _) = forward(&b, dynamics, steps);
    let mut cg = CgScratch {
        r: vec![0.0; M],
        p: vec![0.0; M],
        hp: vec![0.0; M],
        v: vec![0.0; M],
    };
    let (mut gx, mut y) = (vec![0.0; N], vec![0.0; M]);
    backend::implicit(
        &mut b,
        &x0().as_slice().to_vec(),
        &y0().as_slice().to_vec(),
        &dynamics,
        steps,
        20,
        &mut cg,
        &mut gx,
        &mut y,
    )
    .unwrap();
    assert!(close(&gx, &want, 1e-8), "{gx:?} vs {want:?}");
}

#[test]
fn one_stage_matches_the_exact_one_step_hypergradient() {
    let mut b = problem();
    let (want, up) = forward(&b, bda(), 1);
    let mut s = OneStageScratch {
        g: vec![0.0; M],
        h: vec![0.0; M],
        sink: vec![0.0; M],
    };
    let (mut gx, mut y) = (vec![0.0; N], vec![0.0; M]);
    let up2 = backend::one_stage(
        &mut b,
        &x0().as_slice().to_vec(),
        &y0().as_slice().to_vec(),
        &bda(),
        1e-4,
        &mut s,
        &mut gx,
        &mut y,
    )
    .unwrap();
    assert!((up - up2).abs() < 1e-14);
    // Central differences: O(ε²) error.
    assert!(close(&gx, &want, 1e-7), "{gx:?} vs {want:?}");
}

#[test]
fn a_short_tape_is_an_error_not_a_panic() {
    let mut b = problem();
    let mut tape = vec![vec![0.0; M]; 3];
    let (mut adj, mut gx, mut y) = (vec![0.0; M], vec![0.0; N], vec![0.0; M]);
    let r = backend::unrolled(
        &mut b,
        &vec![0.0; N],
        &vec![0.0; M],
        &bda(),
        5,
        None,
        &mut tape,
        &mut adj,
        &mut gx,
        &mut y,
    );
    assert_eq!(r, Err(backend::MethodError::TapeTooShort { needed: 6 }));
}

#[test]
fn divergence_is_located_at_its_lower_step() {
    let mut b = problem();
    let steps = 400;
    let dynamics = LowerDynamics::LowerOnly { s_l: 5.0 };
    let mut tape = vec![vec![0.0; M]; steps as usize + 1];
    let (mut adj, mut gx, mut y) = (vec![0.0; M], vec![0.0; N], vec![0.0; M]);
    let r = backend::unrolled(
        &mut b,
        &x0().as_slice().to_vec(),
        &y0().as_slice().to_vec(),
        &dynamics,
        steps,
        None,
        &mut tape,
        &mut adj,
        &mut gx,
        &mut y,
    );
    match r {
        Err(backend::MethodError::NonFinite { ll_iter }) => {
            assert!(ll_iter > 0 && ll_iter < steps, "{ll_iter}")
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
}
