//! The kernel's capability traits for [`HypercleanCpu`]: each product is one or two passes
//! over a set (training and, when the upper-level direction takes part, validation).

// Element loops index several arrays in lockstep.
#![allow(clippy::needless_range_loop)]

use bda_kernel::backend::{
    Backend, Hypergrad, LowerHessian, LowerStep, MethodError, MethodSpec, Methods, StepAdjoint,
    UpperGradient,
};

use super::pass::Pass;
use super::{CpuClassifier, CpuY, GRAD_LOSS, HypercleanCpu, Which, par_lanes};

/// Shorthands for the trait impls: a buffer, and a product's result.
type X = Vec<f32>;
type Y<C> = CpuY<<C as CpuClassifier>::Forward>;
type R<T = ()> = Result<T, String>;

impl<C: CpuClassifier> Backend for HypercleanCpu<C> {
    type T = f32;
    type X = Vec<f32>;
    type Y = Y<C>;
    type Error = String;

    fn new_x(&mut self) -> Result<Vec<f32>, String> {
        Ok(vec![0.0; self.train.n])
    }
    fn new_y(&mut self) -> Result<Y<C>, String> {
        Ok(CpuY::from_vec(vec![0.0; self.ylen()]))
    }
    /// With the cache on, room for both sets' forward passes, written once here: the
    /// network's 50-step tape is 630 MB of them, whose first-touch page faults took ≈ 0.5 s
    /// of system time in the first upper iteration.
    fn new_state(&mut self) -> Result<Y<C>, String> {
        let y = self.new_y()?;
        if self.cache_probs {
            let mut cache = y.cache.borrow_mut();
            let [tr, val] = &mut cache.sets;
            self.size_cache(Which::Train, tr);
            self.size_cache(Which::Val, val);
        }
        Ok(y)
    }
    fn copy_y(&mut self, src: &Y<C>, dst: &mut Y<C>) -> Result<(), String> {
        // The cache travels with the values (the kernel copies y_K out of its tape).
        dst.v.copy_from_slice(&src.v);
        let (s, d) = (src.cache.borrow(), dst.cache.get_mut());
        d.sets
            .iter_mut()
            .zip(&s.sets)
            .for_each(|(d, s)| d.copy_from(s));
        Ok(())
    }
    fn axpy_y(&mut self, a: f32, v: &Y<C>, y: &mut Y<C>) -> Result<(), String> {
        y.as_mut_slice()
            .iter_mut()
            .zip(&v.v)
            .for_each(|(y, v)| *y += a * v);
        Ok(())
    }
    fn scale_y(&mut self, a: f32, y: &mut Y<C>) -> Result<(), String> {
        y.as_mut_slice().iter_mut().for_each(|y| *y *= a);
        Ok(())
    }
    fn zero_y(&mut self, y: &mut Y<C>) -> Result<(), String> {
        y.as_mut_slice().iter_mut().for_each(|v| *v = 0.0);
        Ok(())
    }
    fn dot_y(&mut self, a: &Y<C>, b: &Y<C>) -> Result<f32, String> {
        Ok(a.v
            .iter()
            .zip(&b.v)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum::<f64>() as f32)
    }
    fn zero_x(&mut self, x: &mut Vec<f32>) -> Result<(), String> {
        x.iter_mut().for_each(|v| *v = 0.0);
        Ok(())
    }
    fn y_is_finite(&mut self, y: &Y<C>) -> Result<bool, String> {
        Ok(y.v.iter().all(|v| v.is_finite()))
    }
    fn upload_x(&mut self, src: &[f32], dst: &mut Vec<f32>) -> Result<(), String> {
        dst.copy_from_slice(src);
        Ok(())
    }
    fn download_x(&mut self, src: &Vec<f32>, dst: &mut [f32]) -> Result<(), String> {
        dst.copy_from_slice(src);
        Ok(())
    }
    fn upload_y(&mut self, src: &[f32], dst: &mut Y<C>) -> Result<(), String> {
        dst.as_mut_slice().copy_from_slice(src);
        Ok(())
    }
    fn download_y(&mut self, src: &Y<C>, dst: &mut [f32]) -> Result<(), String> {
        dst.copy_from_slice(&src.v);
        Ok(())
    }
}

impl<C: CpuClassifier> LowerStep for HypercleanCpu<C> {
    fn lower_step(&mut self, x: &X, y: &Y<C>, w_u: f32, w_l: f32, y_out: &mut Y<C>) -> R {
        self.set_omega_tr(x);
        let with_upper = w_u != 0.0;
        let grad = Pass::Grad {
            grad: true,
            loss: false,
        };
        self.passes(y, Some(grad), with_upper.then_some(GRAD_LOSS));
        self.take(true, with_upper.then_some(&y.v[..]));
        let (yv, gu, gf) = (&y.v[..], &self.gu[..], &self.gf[..]);
        par_lanes(y_out.as_mut_slice(), |i0, out| {
            for (i, o) in out.iter_mut().enumerate() {
                let i = i0 + i;
                *o = match with_upper {
                    true => yv[i] - (w_u * gu[i] + w_l * gf[i]),
                    false => yv[i] - w_l * gf[i],
                };
            }
        });
        Ok(())
    }
}

impl<C: CpuClassifier> UpperGradient for HypercleanCpu<C> {
    /// `F` is the validation loss: it does not depend on the sample weights.
    fn upper_depends_on_x(&self) -> bool {
        false
    }

    fn upper_grad(
        &mut self,
        _x: &X,
        y: &Y<C>,
        gy: &mut Y<C>,
        _gx: &mut X,
        _gx_scale: f32,
    ) -> R<f32> {
        let f = self.upper_into_gu(y);
        gy.as_mut_slice().copy_from_slice(&self.gu);
        Ok(f)
    }
}

impl<C: CpuClassifier> StepAdjoint for HypercleanCpu<C> {
    fn step_adjoint(&mut self, x: &X, y: &Y<C>, w_u: f32, w_l: f32, a: &mut Y<C>, gx: &mut X) -> R {
        self.set_omega_tr(x);
        let with_upper = w_u != 0.0;
        let hess = Pass::Hess {
            v: &a.v,
            grad: true,
        };
        self.passes(y, Some(hess), with_upper.then_some(hess));
        self.take(true, with_upper.then_some(&a.v[..]));
        self.add_mixed(x, -w_l, gx);
        let (gu, gf) = (&self.gu[..], &self.gf[..]);
        par_lanes(a.as_mut_slice(), |i0, a| {
            for (i, a) in a.iter_mut().enumerate() {
                let i = i0 + i;
                *a -= match with_upper {
                    true => w_u * gu[i] + w_l * gf[i],
                    false => w_l * gf[i],
                };
            }
        });
        Ok(())
    }

    /// The mixed term alone: the training set's tangent pass without its `Uᵀ·G` and no
    /// validation pass (`F` does not depend on `x`): 1 of the step's 4 large products.
    fn step_adjoint_last(
        &mut self,
        x: &X,
        y: &Y<C>,
        _: f32,
        w_l: f32,
        a: &mut Y<C>,
        gx: &mut X,
    ) -> R {
        self.train_hess(x, y, &a.v, false);
        self.add_mixed(x, -w_l, gx);
        Ok(())
    }
}

/// Every method: the backend has Hessian products.
impl<C: CpuClassifier> Methods for HypercleanCpu<C> {
    fn hypergrad(&mut self, spec: MethodSpec<f32>) -> Result<Hypergrad<Self>, MethodError<String>> {
        Hypergrad::new(self, spec)
    }
}

impl<C: CpuClassifier> LowerHessian for HypercleanCpu<C> {
    fn lower_hvp(&mut self, x: &X, y: &Y<C>, v: &Y<C>, out: &mut Y<C>) -> R {
        self.train_hess(x, y, &v.v, true);
        out.as_mut_slice().copy_from_slice(&self.gf);
        Ok(())
    }
    fn lower_mixed_vjp(&mut self, x: &X, y: &Y<C>, v: &Y<C>, scale: f32, gx: &mut X) -> R {
        self.train_hess(x, y, &v.v, false);
        self.add_mixed(x, scale, gx);
        Ok(())
    }
    fn lower_grad_x(&mut self, x: &X, y: &Y<C>, scale: f32, gx: &mut X) -> R {
        self.set_omega_tr(x);
        let loss = Pass::Grad {
            grad: false,
            loss: true,
        };
        self.passes(y, Some(loss), None);
        self.add_mixed(x, scale, gx);
        Ok(())
    }
}
