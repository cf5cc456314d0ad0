//! The upper-level loop of data hyper-cleaning, generic over the math backend (CPU here,
//! CUDA in `bda-gpu`). The hypergradients come from the kernel's dataset-scale methods
//! ([`bda_kernel::backend`]); this module only chooses the method per row of Table 2,
//! runs the optimizer on `x` and records the history.

use std::fmt;
use std::time::Instant;

use bda_kernel::backend::{
    self, CgScratch, LowerHessian, LowerStep, MethodError, OneStageScratch, StepAdjoint,
    UpperGradient,
};
use bda_kernel::{Beta, LowerDynamics, Method, Real, Scalar, Schedule};

/// A row of the table: a hypergradient method, or a reference without upper level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    /// One of the papers' methods.
    Method(Method),
    /// All weights equal (`x = 0`, `σ = 1/2`), no upper-level iterations.
    NoClean,
    /// Exact weights 1 on clean and 0 on corrupted samples, no upper-level iterations.
    Oracle,
}

impl Row {
    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Row::Method(m) => m.name(),
            Row::NoClean => "noclean",
            Row::Oracle => "oracle",
        }
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Row {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "noclean" => Ok(Row::NoClean),
            "oracle" => Ok(Row::Oracle),
            other => other.parse::<Method>().map(Row::Method).map_err(|_| {
                "expected one of: bda, rhg, trhg, ihg, obda, noclean, oracle".to_string()
            }),
        }
    }
}

/// The upper-level optimizer on `x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Optimizer {
    /// Adam (β₁ = 0.9, β₂ = 0.999, ε = 1e-8, as `torch.optim.Adam`).
    Adam,
    /// Plain gradient descent.
    Sgd,
}

/// Everything the loop needs besides the backend and the data.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Which row.
    pub row: Row,
    /// Lower-level steps K.
    pub k: u32,
    /// T-RHG truncation T.
    pub truncate: u32,
    /// IHG conjugate-gradient iterations.
    pub cg_iters: u32,
    /// O-BDA finite-difference step ε.
    pub fd_eps: f64,
    /// μ of Eq. (9).
    pub mu: f64,
    /// `α_k = alpha/k`.
    pub alpha: f64,
    /// `β_k = beta`.
    pub beta: f64,
    /// Upper-level step in the LL iteration, `s_u`.
    pub s_u: f64,
    /// Lower-level step `s_l`.
    pub s_l: f64,
    /// Optimizer on `x`.
    pub optimizer: Optimizer,
    /// Its learning rate.
    pub ul_lr: f64,
    /// Upper-level iterations.
    pub ul_iters: u32,
}

impl TrainConfig {
    /// The LL dynamics of this row (the reference rows use plain LL steps).
    pub fn dynamics<T: Real>(&self) -> LowerDynamics<T> {
        let method = match self.row {
            Row::Method(m) => m,
            Row::NoClean | Row::Oracle => Method::Rhg,
        };
        let t = T::from_f64;
        method.dynamics(
            t(self.mu),
            Schedule::Harmonic(t(self.alpha)),
            Beta::Schedule(Schedule::Constant(t(self.beta))),
            t(self.s_u),
            t(self.s_l),
        )
    }

    /// Upper-level iterations actually run (0 for the reference rows).
    pub fn iterations(&self) -> u32 {
        match self.row {
            Row::Method(_) => self.ul_iters,
            Row::NoClean | Row::Oracle => 0,
        }
    }

    /// LL steps per upper iteration (O-BDA: 1).
    pub fn steps_per_iter(&self) -> u32 {
        match self.row {
            Row::Method(Method::Obda) => 1,
            _ => self.k,
        }
    }
}

/// One upper-level iteration of the history.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct IterRecord {
    /// `F(x_t, y_K(x_t))`.
    pub ul_loss: f64,
    /// Validation accuracy of `y_K(x_t)`, %.
    pub val_acc: f64,
    /// Clean-detection macro-F1 of `x_t`, %.
    pub clean_f1: f64,
}

/// What the loop hands back.
#[derive(Clone, Debug)]
pub struct Trained {
    /// Final `x`.
    pub x: Vec<f64>,
    /// `y_K(x)` at the final `x` (K steps of the row's dynamics from 0).
    pub y: Vec<f64>,
    /// Upper objective at the final `(x, y)`.
    pub ul_loss: f64,
    /// One record per upper iteration.
    pub history: Vec<IterRecord>,
    /// Seconds of the upper-level loop.
    pub loop_seconds: f64,
    /// Seconds of everything (loop and the final lower-level solve).
    pub seconds: f64,
}

/// How the loop reports, measures and is told the truth.
pub trait Monitor {
    /// Validation accuracy (%) of `y` (host copy, layout of `HypercleanData`).
    fn val_acc(&mut self, y: &[f64]) -> f64;
    /// Clean-detection F1 (%) of `x`.
    fn clean_f1(&mut self, x: &[f64]) -> f64;
    /// Called after each upper iteration (progress bar).
    fn iter_done(&mut self, _t: u32, _rec: &IterRecord) {}
}

/// Failure of the loop.
#[derive(Debug)]
pub enum TrainError<E> {
    /// The hypergradient method failed at upper iteration `ul_iter` (0-based).
    Method {
        /// Upper iteration.
        ul_iter: u32,
        /// The kernel's error (names the lower step of a divergence).
        err: MethodError<E>,
    },
    /// The hypergradient or the upper objective was not finite at `ul_iter`.
    NonFiniteGradient {
        /// Upper iteration.
        ul_iter: u32,
    },
}

impl<E: fmt::Display> fmt::Display for TrainError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Method { ul_iter, err } => write!(f, "upper iteration {ul_iter}: {err}"),
            TrainError::NonFiniteGradient { ul_iter } => write!(
                f,
                "upper iteration {ul_iter}: the hypergradient became non-finite (diverging: reduce --ul-lr or the step sizes)"
            ),
        }
    }
}

fn method_err<E>(ul_iter: u32) -> impl Fn(MethodError<E>) -> TrainError<E> {
    move |err| TrainError::Method { ul_iter, err }
}

/// Host copy of a backend buffer in `f64`.
fn to_host_y<B: backend::Backend>(b: &mut B, y: &B::Y, len: usize) -> Result<Vec<f64>, B::Error> {
    let mut h = vec![B::T::from_f64(0.0); len];
    b.download_y(y, &mut h)?;
    Ok(h.into_iter().map(|v| v.to_f64()).collect())
}

/// Run the row described by `cfg` from `x0` (the oracle passes its ±large weights, every
/// other row zeros). `y_len` is the length of a `y` buffer.
pub fn train<B>(
    b: &mut B,
    cfg: &TrainConfig,
    x0: &[f64],
    y_len: usize,
    monitor: &mut dyn Monitor,
) -> Result<Trained, TrainError<B::Error>>
where
    B: LowerStep + UpperGradient + StepAdjoint + LowerHessian,
{
    let start = Instant::now();
    let dynamics = cfg.dynamics::<B::T>();
    let n = x0.len();
    let t = B::T::from_f64;
    let be = |ul_iter| method_err::<B::Error>(ul_iter);
    let wrap = |ul_iter: u32| {
        move |e: B::Error| TrainError::Method {
            ul_iter,
            err: MethodError::Backend(e),
        }
    };

    let mut x_host = x0.to_vec();
    let mut x_t: Vec<B::T> = x_host.iter().map(|&v| t(v)).collect();
    let mut x = b.new_x().map_err(wrap(0))?;
    let mut gx = b.new_x().map_err(wrap(0))?;
    let y0 = b.new_y().map_err(wrap(0))?;
    let mut y_out = b.new_y().map_err(wrap(0))?;
    let mut adj = b.new_y().map_err(wrap(0))?;
    let mut g_host = vec![t(0.0); n];
    let (mut m1, mut m2) = (vec![0.0f64; n], vec![0.0f64; n]);
    let iters = cfg.iterations();
    let row_method = match cfg.row {
        Row::Method(m) => Some(m),
        _ => None,
    };
    // Buffers per method, allocated once.
    let truncate = match row_method {
        Some(Method::Trhg) => Some(cfg.truncate),
        _ => None,
    };
    let needs_tape = matches!(row_method, Some(Method::Rhg | Method::Bda | Method::Trhg));
    let mut tape = Vec::new();
    if needs_tape {
        for _ in 0..backend::tape_len(cfg.k, truncate) {
            tape.push(b.new_y().map_err(wrap(0))?);
        }
    }
    let mut cg = if row_method == Some(Method::Ihg) {
        Some(CgScratch {
            r: b.new_y().map_err(wrap(0))?,
            p: b.new_y().map_err(wrap(0))?,
            hp: b.new_y().map_err(wrap(0))?,
            v: b.new_y().map_err(wrap(0))?,
        })
    } else {
        None
    };
    let mut one = if row_method == Some(Method::Obda) {
        Some(OneStageScratch {
            g: b.new_y().map_err(wrap(0))?,
            h: b.new_y().map_err(wrap(0))?,
            sink: b.new_y().map_err(wrap(0))?,
        })
    } else {
        None
    };
    // O-BDA is single-loop: its one LL step per upper iteration starts from the previous y.
    let mut y_warm = b.new_y().map_err(wrap(0))?;

    let mut history = Vec::with_capacity(iters as usize);
    let loop_start = Instant::now();
    for it in 0..iters {
        b.upload_x(&x_t, &mut x).map_err(wrap(it))?;
        let upper = match row_method {
            Some(Method::Rhg | Method::Bda | Method::Trhg) => backend::unrolled(
                b, &x, &y0, &dynamics, cfg.k, truncate, &mut tape, &mut adj, &mut gx, &mut y_out,
            ),
            Some(Method::Ihg) => {
                let cg = cg.as_mut().expect("allocated for IHG");
                backend::implicit(
                    b,
                    &x,
                    &y0,
                    &dynamics,
                    cfg.k,
                    cfg.cg_iters,
                    cg,
                    &mut gx,
                    &mut y_out,
                )
            }
            Some(Method::Obda) => {
                let one = one.as_mut().expect("allocated for O-BDA");
                let r = backend::one_stage(
                    b,
                    &x,
                    &y_warm,
                    &dynamics,
                    t(cfg.fd_eps),
                    one,
                    &mut gx,
                    &mut y_out,
                );
                if r.is_ok() {
                    b.copy_y(&y_out, &mut y_warm).map_err(wrap(it))?;
                }
                r
            }
            None => unreachable!("reference rows run no upper iterations"),
        }
        .map_err(be(it))?;
        let ul_loss = upper.to_f64();
        b.download_x(&gx, &mut g_host).map_err(wrap(it))?;
        if !ul_loss.is_finite() || g_host.iter().any(|g| !g.is_finite()) {
            return Err(TrainError::NonFiniteGradient { ul_iter: it });
        }
        let y_h = to_host_y(b, &y_out, y_len).map_err(wrap(it))?;
        let rec = IterRecord {
            ul_loss,
            val_acc: monitor.val_acc(&y_h),
            clean_f1: monitor.clean_f1(&x_host),
        };
        // Optimizer step on x.
        match cfg.optimizer {
            Optimizer::Adam => {
                let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
                let step = f64::from(it + 1);
                let (c1, c2) = (1.0 - b1.powf(step), 1.0 - b2.powf(step));
                for i in 0..n {
                    let g = g_host[i].to_f64();
                    m1[i] = b1 * m1[i] + (1.0 - b1) * g;
                    m2[i] = b2 * m2[i] + (1.0 - b2) * g * g;
                    x_host[i] -= cfg.ul_lr * (m1[i] / c1) / ((m2[i] / c2).sqrt() + eps);
                }
            }
            Optimizer::Sgd => {
                for i in 0..n {
                    x_host[i] -= cfg.ul_lr * g_host[i].to_f64();
                }
            }
        }
        for (xt, &xh) in x_t.iter_mut().zip(&x_host) {
            *xt = t(xh);
        }
        monitor.iter_done(it, &rec);
        history.push(rec);
    }
    let loop_seconds = loop_start.elapsed().as_secs_f64();

    // Final classifier: K steps of the row's dynamics from 0 at the final x (the forward
    // half of `unrolled` with nothing kept for the reverse pass).
    b.upload_x(&x_t, &mut x).map_err(wrap(iters))?;
    let mut tape1 = vec![b.new_y().map_err(wrap(iters))?];
    let ul_loss = backend::unrolled(
        b,
        &x,
        &y0,
        &dynamics,
        cfg.k,
        Some(0),
        &mut tape1,
        &mut adj,
        &mut gx,
        &mut y_out,
    )
    .map_err(be(iters))?
    .to_f64();
    let y = to_host_y(b, &y_out, y_len).map_err(wrap(iters))?;
    Ok(Trained {
        x: x_host,
        y,
        ul_loss,
        history,
        loop_seconds,
        seconds: start.elapsed().as_secs_f64(),
    })
}
