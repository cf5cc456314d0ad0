//! `StepAdjoint::step_adjoint_last` may leave the adjoint `a` as anything: the engine must
//! call it only for the step after which `a` is never read. A backend that poisons `a` there
//! (NaN) proves it: every unrolled method, with and without checkpoints and truncation,
//! gives exactly the hypergradient of the backend that does not.

use bda_kernel::Method;
use bda_kernel::backend::{
    Backend, HostBuffers, Hypergrad, LowerStep, MethodConfig, StepAdjoint, UpperGradient,
};
use bda_kernel::hyperclean::HypercleanReference;
use bda_testkit::Rng;
use bda_testkit::instance::Problem;

type V = Vec<f64>;
type Io<T = ()> = Result<T, std::convert::Infallible>;

/// The reference, with `step_adjoint_last` overwriting `a` with NaN after its update.
struct Poisoned<'a>(HypercleanReference<'a>);

impl HostBuffers for Poisoned<'_> {
    type Scalar = f64;
    fn x_len(&self) -> usize {
        self.0.x_len()
    }
    fn y_len(&self) -> usize {
        self.0.y_len()
    }
}

impl LowerStep for Poisoned<'_> {
    fn lower_step(&mut self, x: &V, y: &V, w_u: f64, w_l: f64, y_out: &mut V) -> Io {
        self.0.lower_step(x, y, w_u, w_l, y_out)
    }
}

impl UpperGradient for Poisoned<'_> {
    fn upper_depends_on_x(&self) -> bool {
        self.0.upper_depends_on_x()
    }
    fn upper_grad(&mut self, x: &V, y: &V, gy: &mut V, gx: &mut V, s: f64) -> Io<f64> {
        self.0.upper_grad(x, y, gy, gx, s)
    }
}

impl StepAdjoint for Poisoned<'_> {
    fn step_adjoint(&mut self, x: &V, y: &V, w_u: f64, w_l: f64, a: &mut V, gx: &mut V) -> Io {
        self.0.step_adjoint(x, y, w_u, w_l, a, gx)
    }
    fn step_adjoint_last(&mut self, x: &V, y: &V, w_u: f64, w_l: f64, a: &mut V, gx: &mut V) -> Io {
        self.0.step_adjoint(x, y, w_u, w_l, a, gx)?;
        a.fill(f64::NAN);
        Ok(())
    }
}

fn hypergradient<B>(b: &mut B, cfg: &MethodConfig<f64>, x: &V, y0: &V) -> (f64, V)
where
    B: LowerStep + UpperGradient + StepAdjoint + Backend<T = f64, X = V, Y = V>,
    B::Error: std::fmt::Debug,
{
    let mut hg = Hypergrad::unrolled(b, cfg.build().unwrap()).unwrap();
    let (mut gx, mut y) = (b.new_x().unwrap(), b.new_y().unwrap());
    let phi = hg.hypergradient(b, x, y0, &mut gx, &mut y).unwrap();
    (phi, gx)
}

#[test]
fn the_last_step_adjoint_is_called_only_for_the_last_step() {
    for hidden in [0, 5] {
        let p = Problem::random(7, 6, 3, 17, 11, 0.05).with_hidden(hidden);
        let data = p.data();
        let mut r = Rng::new(4);
        let x: V = (0..p.n_tr()).map(|_| r.range(-2.0, 2.0) as f64).collect();
        let y0: V = (0..data.y_len())
            .map(|_| r.range(-0.5, 0.5) as f64)
            .collect();
        for method in [Method::Rhg, Method::Trhg, Method::Bda] {
            for truncate in [None, Some(1), Some(3), Some(7)] {
                for checkpoint_every in [None, Some(1), Some(2), Some(3)] {
                    let cfg = MethodConfig {
                        truncate,
                        checkpoint_every,
                        ..MethodConfig::new(method, 7, 0.3)
                    };
                    let plain = hypergradient(&mut HypercleanReference::new(&data), &cfg, &x, &y0);
                    let poisoned = hypergradient(
                        &mut Poisoned(HypercleanReference::new(&data)),
                        &cfg,
                        &x,
                        &y0,
                    );
                    assert!(plain.1.iter().all(|g| g.is_finite()));
                    assert!(plain.1.iter().any(|&g| g != 0.0));
                    assert_eq!(
                        plain, poisoned,
                        "{method} hidden {hidden} T {truncate:?} checkpoints {checkpoint_every:?}"
                    );
                }
            }
        }
    }
}
