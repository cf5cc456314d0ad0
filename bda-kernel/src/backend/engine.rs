//! [`Hypergrad`]: a dataset-scale method with the buffers it needs, allocated once through
//! the backend (argmin's "the solver owns its state"). A command's upper-level loop is then
//! two calls per iteration: [`Hypergrad::hypergradient`] and its optimizer step on `x`.

use alloc::vec::Vec;

use num_traits::Zero;

use super::methods::{self, CgReport, CgScratch, OneStageScratch};
use super::spec::MethodSpec;
use super::{Backend, LowerHessian, LowerStep, MethodError, StepAdjoint, UpperGradient};
use crate::method::Method;
use crate::scalar::Real;

/// A method's scratch: what its body borrows on every call.
enum Scratch<Y> {
    /// RHG, T-RHG, BDA: the kept states and the adjoint.
    Unrolled { tape: Vec<Y>, adj: Y },
    /// IHG.
    Implicit(CgScratch<Y>),
    /// O-BDA.
    OneStage(OneStageScratch<Y>),
}

/// The arguments of one call.
struct Call<'a, B: Backend> {
    b: &'a mut B,
    x: &'a B::X,
    y0: &'a B::Y,
    gx: &'a mut B::X,
    y_out: &'a mut B::Y,
}

/// `φ`, or why not.
type Phi<B> = Result<<B as Backend>::T, MethodError<<B as Backend>::Error>>;

/// The method body chosen at construction, where the backend's capabilities are known: the
/// calls then need only [`Backend`] (a backend without [`LowerHessian`] can still run the
/// unrolled methods).
type Body<B> = fn(
    &MethodSpec<<B as Backend>::T>,
    &mut Scratch<<B as Backend>::Y>,
    &mut CgReport<<B as Backend>::T>,
    Call<'_, B>,
) -> Phi<B>;

/// A hypergradient method over backend `B`, owning its buffers.
///
/// ## Requirements on the backend
///
/// | method | capabilities | built by |
/// |---|---|---|
/// | RHG, T-RHG, BDA | [`LowerStep`], [`UpperGradient`], [`StepAdjoint`] | [`Hypergrad::new`] or [`Hypergrad::unrolled`] |
/// | IHG, O-BDA | the above and [`LowerHessian`] | [`Hypergrad::new`] |
///
/// ## Buffers (in `y`-sized vectors)
///
/// RHG/BDA K + 2 (T-RHG T + 2: only the states its reverse pass revisits), IHG 4, O-BDA 3;
/// plus one for [`Hypergrad::solve_lower`] and, with warm start, one for the previous `y`.
/// With checkpoints every c states ([`MethodConfig::checkpoint_every`]) the unrolled
/// methods keep `⌈T/c⌉ + max(c − 1, 2) + 1` ([`MethodSpec::tape_len`] + the adjoint).
///
/// [`MethodConfig::checkpoint_every`]: super::MethodConfig::checkpoint_every
///
/// ```
/// use bda_kernel::Method;
/// use bda_kernel::backend::{Backend, FixedBackend, Hypergrad, MethodConfig};
/// use bda_kernel::synthetic::icml_example1;
///
/// // ICML Example 1 as a backend with Vec buffers; RHG with K = 32 steps of size 0.5.
/// let problem = icml_example1::<f64>();
/// let mut b = FixedBackend::<_, f64, 1, 2>::new(&problem);
/// let spec = MethodConfig::new(Method::Rhg, 32, 0.5).build().unwrap();
/// let mut hg = Hypergrad::new(&mut b, spec).unwrap();
/// let (x, y0) = (vec![0.5], vec![0.0, 0.0]);
/// let (mut gx, mut y) = (b.new_x().unwrap(), b.new_y().unwrap());
/// let phi = hg.hypergradient(&mut b, &x, &y0, &mut gx, &mut y).unwrap();
/// // RHG never moves y₂ (the lower level leaves it free), so φ = ½x² + ½(y₁ − 1)².
/// assert!((y[0] - 0.5).abs() < 1e-6 && y[1] == 0.0);
/// assert!((phi - 0.25).abs() < 1e-6);
/// ```
pub struct Hypergrad<B: Backend> {
    spec: MethodSpec<B::T>,
    scratch: Scratch<B::Y>,
    body: Body<B>,
    /// Ping-pong partner of `y_out` in [`Hypergrad::solve_lower`].
    spare: B::Y,
    /// `F`'s gradients when only its value is wanted.
    sink_y: B::Y,
    sink_x: B::X,
    /// The previous `y` (warm start and O-BDA), once there is one.
    warm: Option<B::Y>,
    warm_valid: bool,
    cg: CgReport<B::T>,
}

impl<B> Hypergrad<B>
where
    B: LowerStep + UpperGradient + StepAdjoint + LowerHessian,
{
    /// Allocates the buffers of `spec`'s method (any of the five).
    pub fn new(b: &mut B, spec: MethodSpec<B::T>) -> Result<Self, MethodError<B::Error>> {
        let body: Body<B> = match spec.method() {
            Method::Rhg | Method::Trhg | Method::Bda => unrolled_body::<B>,
            Method::Ihg => |spec, scratch, report, c| {
                let Scratch::Implicit(cg) = scratch else {
                    unreachable!("the body is chosen with its scratch")
                };
                let (k, iters, d) = (spec.steps(), spec.cg_iters(), spec.dynamics());
                methods::implicit(c.b, c.x, c.y0, d, k, iters, cg, report, c.gx, c.y_out)
            },
            Method::Obda => |spec, scratch, _, c| {
                let Scratch::OneStage(s) = scratch else {
                    unreachable!("the body is chosen with its scratch")
                };
                let (d, eps) = (spec.dynamics(), spec.fd_eps());
                methods::one_stage(c.b, c.x, c.y0, d, eps, s, c.gx, c.y_out)
            },
        };
        Self::with_body(b, spec, body)
    }
}

impl<B> Hypergrad<B>
where
    B: LowerStep + UpperGradient + StepAdjoint,
{
    /// For a backend without [`LowerHessian`]: RHG, T-RHG or BDA; IHG and O-BDA are
    /// [`MethodError::Unsupported`].
    pub fn unrolled(b: &mut B, spec: MethodSpec<B::T>) -> Result<Self, MethodError<B::Error>> {
        match spec.method() {
            Method::Rhg | Method::Trhg | Method::Bda => {
                Self::with_body(b, spec, unrolled_body::<B>)
            }
            method => Err(MethodError::Unsupported { method }),
        }
    }
}

/// The methods a backend can run, named once by the backend: with [`LowerHessian`] it
/// overrides [`Methods::hypergrad`] with [`Hypergrad::new`] (all five methods); without,
/// the default gives the unrolled ones ([`Hypergrad::unrolled`]), and IHG or O-BDA is
/// [`MethodError::Unsupported`] — one line a command can show.
///
/// A command's loop is written once over `B: Methods` and never demands Hessian products
/// from a backend that has none.
pub trait Methods: LowerStep + UpperGradient + StepAdjoint + Sized {
    /// The engine of `spec`'s method with this backend's buffers.
    fn hypergrad(
        &mut self,
        spec: MethodSpec<Self::T>,
    ) -> Result<Hypergrad<Self>, MethodError<Self::Error>> {
        Hypergrad::unrolled(self, spec)
    }
}

impl<B: Backend> Hypergrad<B> {
    fn with_body(
        b: &mut B,
        spec: MethodSpec<B::T>,
        body: Body<B>,
    ) -> Result<Self, MethodError<B::Error>> {
        let scratch = match spec.method() {
            Method::Rhg | Method::Trhg | Method::Bda => {
                let n = spec.tape_len();
                let mut tape = Vec::new();
                tape.try_reserve_exact(n)
                    .map_err(|_| MethodError::OutOfMemory { buffers: n })?;
                for _ in 0..n {
                    tape.push(b.new_state()?);
                }
                Scratch::Unrolled {
                    tape,
                    adj: b.new_y()?,
                }
            }
            Method::Ihg => Scratch::Implicit(CgScratch {
                r: b.new_y()?,
                p: b.new_y()?,
                hp: b.new_y()?,
                v: b.new_y()?,
            }),
            Method::Obda => Scratch::OneStage(OneStageScratch {
                g: b.new_y()?,
                h: b.new_y()?,
                sink: b.new_y()?,
            }),
        };
        let warm = if spec.warm_start() {
            Some(b.new_state()?)
        } else {
            None
        };
        Ok(Hypergrad {
            spec,
            scratch,
            body,
            spare: b.new_state()?,
            sink_y: b.new_y()?,
            sink_x: b.new_x()?,
            warm,
            warm_valid: false,
            cg: CgReport::empty(),
        })
    }

    /// The method.
    pub fn spec(&self) -> &MethodSpec<B::T> {
        &self.spec
    }

    /// `φ(x)` (returned), its hypergradient `∇φ(x)` (into `gx`) and the lower-level iterate it
    /// was taken at (`y_K`, O-BDA's `y₁`; into `y_out`), starting from `y0` — or, with warm
    /// start, from the previous call's `y_out` once there is one.
    ///
    /// A non-finite iterate is [`MethodError::NonFinite`] with the lower step where it first
    /// appeared; a warm start is then not advanced.
    pub fn hypergradient(
        &mut self,
        b: &mut B,
        x: &B::X,
        y0: &B::Y,
        gx: &mut B::X,
        y_out: &mut B::Y,
    ) -> Result<B::T, MethodError<B::Error>> {
        let start = match &self.warm {
            Some(w) if self.warm_valid => w,
            _ => y0,
        };
        let call = Call {
            b: &mut *b,
            x,
            y0: start,
            gx,
            y_out: &mut *y_out,
        };
        let phi = (self.body)(&self.spec, &mut self.scratch, &mut self.cg, call)?;
        if let Some(w) = &mut self.warm {
            b.copy_y(y_out, w)?;
            self.warm_valid = true;
        }
        Ok(phi)
    }

    /// Forget the previous `y`: the next call starts from its `y0` again.
    pub fn reset_warm_start(&mut self) {
        self.warm_valid = false;
    }

    /// How IHG's conjugate gradient went in the last call (all zero for other methods).
    pub fn cg_report(&self) -> &CgReport<B::T> {
        &self.cg
    }
}

impl<B: LowerStep + UpperGradient> Hypergrad<B> {
    /// The lower-level solve alone: K steps of the spec's dynamics from `y0` (never a warm
    /// start: this is the fit that evaluates an `x`) into `y_out`; returns `F(x, y_K)`.
    /// O-BDA runs K steps here too: one step is how it trains, K how it is evaluated.
    pub fn solve_lower(
        &mut self,
        b: &mut B,
        x: &B::X,
        y0: &B::Y,
        y_out: &mut B::Y,
    ) -> Result<B::T, MethodError<B::Error>> {
        let (steps, dynamics) = (self.spec.steps(), *self.spec.dynamics());
        methods::forward(b, x, y0, &dynamics, steps, y_out, &mut self.spare, false)?;
        b.zero_x(&mut self.sink_x)?;
        let upper = b.upper_grad(x, y_out, &mut self.sink_y, &mut self.sink_x, B::T::zero())?;
        if !upper.is_finite() || !b.y_is_finite(y_out)? {
            let buffers = (&mut self.spare, &mut self.sink_y);
            return Err(methods::diverged(b, x, y0, (&dynamics, steps), buffers));
        }
        Ok(upper)
    }

    /// `∇_y F(x, y_K)` of the last successful [`Self::solve_lower`], which computes it
    /// with `F`: first-order methods (first-order MAML) step along it without a second
    /// evaluation.
    pub fn solved_upper_grad(&self) -> &B::Y {
        &self.sink_y
    }
}

fn unrolled_body<B: LowerStep + UpperGradient + StepAdjoint>(
    spec: &MethodSpec<B::T>,
    scratch: &mut Scratch<B::Y>,
    _: &mut CgReport<B::T>,
    c: Call<'_, B>,
) -> Phi<B> {
    let Scratch::Unrolled { tape, adj } = scratch else {
        unreachable!("the body is chosen with its scratch")
    };
    let shape = (
        spec.steps(),
        spec.truncate(),
        spec.checkpoint_every().unwrap_or(1),
    );
    methods::unrolled(
        c.b,
        c.x,
        c.y0,
        spec.dynamics(),
        shape,
        tape,
        adj,
        c.gx,
        c.y_out,
    )
}
