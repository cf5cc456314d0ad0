//! The upper-level loop of data hyper-cleaning, generic over the math backend (CPU here,
//! CUDA in `bda-gpu`): the engine ([`Hypergrad`](bda_kernel::backend::Hypergrad)) gives `(φ, ∇φ, y_K)`, this loop runs the
//! optimizer on `x`, asks the [`Monitor`] for the metrics and records the history. It
//! knows no method: the row's [`MethodSpec`] decides everything below, and the backend
//! says which methods it runs ([`Methods`]).

use std::fmt;
use std::time::Instant;

use bda_kernel::backend::{Backend, MethodError, MethodSpec, Methods};
use bda_kernel::{Method, Scalar};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::init::{Init, InitDraw};
use crate::optim::{Optimizer, OptimizerKind};

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

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Everything the loop needs besides the backend and the data.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Which row.
    pub row: Row,
    /// The method, checked (the reference rows fit `y` with RHG's).
    pub spec: MethodSpec<f64>,
    /// Optimizer on `x`.
    pub optimizer: OptimizerKind,
    /// Its learning rate.
    pub ul_lr: f64,
    /// Upper-level iterations.
    pub ul_iters: u32,
    /// The lower level's starting point.
    pub init: Init,
    /// Seed of its draws.
    pub seed: u64,
    /// An upper-level loss above this is a divergence even while finite; the command sets
    /// it from the data ([`crate::error::blow_up_bound`]). `None`: only non-finite values
    /// are.
    pub diverge_above: Option<f64>,
}

impl TrainConfig {
    /// Upper-level iterations actually run (0 for the reference rows).
    pub fn iterations(&self) -> u32 {
        match self.row {
            Row::Method(_) => self.ul_iters,
            Row::NoClean | Row::Oracle => 0,
        }
    }
}

/// One upper-level iteration of the history.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct IterRecord {
    /// The upper iteration (0-based, as in error messages): the record is taken at `x_t`, before its update.
    pub ul_iter: u32,
    /// `F(x_t, y_K(x_t))`.
    pub ul_loss: f64,
    /// Validation accuracy of `y_K(x_t)`, %.
    pub val_acc: f64,
    /// Clean-detection macro-F1 of `x_t`, %.
    pub clean_f1: f64,
    /// IHG: how its conjugate-gradient solve went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cg: Option<CgRecord>,
}

/// How one IHG conjugate-gradient solve went ([`bda_kernel::backend::CgReport`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CgRecord {
    /// Iterations run.
    pub iters: u32,
    /// `‖r‖/‖∇_y F‖` at the end.
    pub relative_residual: f64,
    /// The CG iteration (1-based) that met a direction of non-positive curvature
    /// `pᵀHp ≤ 0` — possible when the lower level is not convex (`--model mlp`); CG stops
    /// there and the hypergradient uses the solution so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative_curvature_at: Option<u32>,
    /// `pᵀHp/pᵀp` of that direction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curvature: Option<f64>,
}

/// What the loop hands back.
#[derive(Clone, Debug)]
pub struct Trained {
    /// Final `x`.
    pub x: Vec<f64>,
    /// `y_K(x)` at the final `x` (K steps of the row's dynamics from `y₀`).
    pub y: Vec<f64>,
    /// Upper objective at the final `(x, y)`.
    pub ul_loss: f64,
    /// Upper iterations run (fewer than asked when stopped early).
    pub iterations: u32,
    /// Stopped early at the monitor's request.
    pub interrupted: bool,
    /// One record per upper iteration, then the final state's (`ul_iter` = iterations).
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
    fn iter_done(&mut self, _rec: &IterRecord) {}
    /// Whether to stop after the current upper iteration (SIGINT, SIGTERM).
    fn should_stop(&self) -> bool {
        false
    }
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
    /// The upper objective exceeded [`TrainConfig::diverge_above`] at `ul_iter`.
    Exploded {
        /// Upper iteration.
        ul_iter: u32,
        /// The upper objective.
        loss: f64,
        /// The bound.
        bound: f64,
    },
    /// The method does not fit the backend: its numbers do not fit the backend's scalar
    /// type (e.g. 1e300 in `f32`), or it needs products the backend does not have.
    Config(String),
}

impl<E: fmt::Display> fmt::Display for TrainError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Method { ul_iter, err } => write!(f, "upper iteration {ul_iter}: {err}"),
            TrainError::NonFiniteGradient { ul_iter } => write!(
                f,
                "upper iteration {ul_iter}: the hypergradient became non-finite (diverging: reduce --ul-lr or the step sizes)"
            ),
            TrainError::Exploded {
                ul_iter,
                loss,
                bound,
            } => write!(
                f,
                "upper iteration {ul_iter}: the upper-level loss {loss:.3e} exceeds {bound:.3e}, 1000 times a uniform guess's (diverging: reduce --ll-lr or the step sizes)"
            ),
            TrainError::Config(m) => f.write_str(m),
        }
    }
}

/// A backend failure at upper iteration `ul_iter`.
fn at<E>(ul_iter: u32) -> impl Fn(E) -> TrainError<E> {
    move |e| TrainError::Method {
        ul_iter,
        err: MethodError::Backend(e),
    }
}

/// Host copy of a backend buffer in `f64`.
fn to_host_y<B: Backend>(b: &mut B, y: &B::Y, len: usize) -> Result<Vec<f64>, B::Error> {
    let mut h = vec![B::T::from_f64(0.0); len];
    b.download_y(y, &mut h)?;
    Ok(h.into_iter().map(|v| v.to_f64()).collect())
}

/// Run the row described by `cfg` from `x0` (the oracle passes its ±large weights, every
/// other row zeros); `init` draws each upper iteration's `y₀` (and knows `y`'s length).
pub fn train<B>(
    b: &mut B,
    cfg: &TrainConfig,
    x0: &[f64],
    init: &InitDraw,
    monitor: &mut dyn Monitor,
) -> Result<Trained, TrainError<B::Error>>
where
    B: Methods,
{
    let start = Instant::now();
    let spec = cfg
        .spec
        .cast::<B::T>()
        .map_err(|e| TrainError::Config(format!("in the backend's precision, {e}")))?;
    let t = B::T::from_f64;
    let n = x0.len();
    let mut hg = b.hypergrad(spec).map_err(|err| match err {
        MethodError::Unsupported { method } => TrainError::Config(format!(
            "--method {method}: needs lower-level Hessian products, which this backend does not provide"
        )),
        err => TrainError::Method { ul_iter: 0, err },
    })?;
    let mut x = b.new_x().map_err(at(0))?;
    let mut gx = b.new_x().map_err(at(0))?;
    let y_len = init.y_len();
    let mut y0 = b.new_y().map_err(at(0))?;
    let mut y0_host = vec![0.0f64; y_len];
    let mut y0_t = vec![t(0.0); y_len];
    // `y₀` of upper iteration `it` into the backend's buffer (zero stays as allocated).
    let mut start_at = |b: &mut B, y0: &mut B::Y, it: u32| -> Result<(), B::Error> {
        if init.redrawn() {
            init.draw(it, &mut y0_host);
            y0_t.iter_mut().zip(&y0_host).for_each(|(d, &v)| *d = t(v));
            b.upload_y(&y0_t, y0)?;
        }
        Ok(())
    };
    let mut y_out = b.new_state().map_err(at(0))?;
    let mut x_host = x0.to_vec();
    let mut x_t: Vec<B::T> = x_host.iter().map(|&v| t(v)).collect();
    let mut g_host = vec![t(0.0); n];
    let mut g64 = vec![0.0f64; n];
    let mut opt = Optimizer::<f64>::new(cfg.optimizer, cfg.ul_lr, n);
    let iters = cfg.iterations();
    let mut history = Vec::with_capacity(iters as usize);
    let loop_start = Instant::now();
    for it in 0..iters {
        b.upload_x(&x_t, &mut x).map_err(at(it))?;
        start_at(b, &mut y0, it).map_err(at(it))?;
        let phi = hg
            .hypergradient(b, &x, &y0, &mut gx, &mut y_out)
            .map_err(|err| TrainError::Method { ul_iter: it, err })?;
        let ul_loss = phi.to_f64();
        b.download_x(&gx, &mut g_host).map_err(at(it))?;
        g64.iter_mut()
            .zip(&g_host)
            .for_each(|(d, g)| *d = g.to_f64());
        if !ul_loss.is_finite() || g64.iter().any(|g| !g.is_finite()) {
            return Err(TrainError::NonFiniteGradient { ul_iter: it });
        }
        exploded(cfg, it, ul_loss)?;
        let y_h = to_host_y(b, &y_out, y_len).map_err(at(it))?;
        let cg =
            (cfg.spec.method() == Method::Ihg && matches!(cfg.row, Row::Method(_))).then(|| {
                let r = hg.cg_report();
                CgRecord {
                    iters: r.iters,
                    relative_residual: r.relative_residual.to_f64(),
                    negative_curvature_at: r.non_positive_curvature.map(|(i, _)| i),
                    curvature: r.non_positive_curvature.map(|(_, v)| v.to_f64()),
                }
            });
        let rec = IterRecord {
            ul_iter: it,
            ul_loss,
            val_acc: monitor.val_acc(&y_h),
            clean_f1: monitor.clean_f1(&x_host),
            cg,
        };
        opt.step(&mut x_host, &g64);
        for (xt, &xh) in x_t.iter_mut().zip(&x_host) {
            *xt = t(xh);
        }
        monitor.iter_done(&rec);
        history.push(rec);
        if monitor.should_stop() {
            break;
        }
    }
    let done = history.len() as u32;
    let loop_seconds = loop_start.elapsed().as_secs_f64();
    // The final classifier: K steps of the row's dynamics from a fresh y₀ at the final x.
    b.upload_x(&x_t, &mut x).map_err(at(done))?;
    start_at(b, &mut y0, done).map_err(at(done))?;
    let ul_loss = hg
        .solve_lower(b, &x, &y0, &mut y_out)
        .map_err(|err| TrainError::Method { ul_iter: done, err })?
        .to_f64();
    exploded(cfg, done, ul_loss)?;
    let y = to_host_y(b, &y_out, y_len).map_err(at(done))?;
    history.push(IterRecord {
        ul_iter: done,
        ul_loss,
        val_acc: monitor.val_acc(&y),
        clean_f1: monitor.clean_f1(&x_host),
        cg: None,
    });
    Ok(Trained {
        x: x_host,
        y,
        ul_loss,
        iterations: done,
        interrupted: done < iters,
        history,
        loop_seconds,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// [`TrainError::Exploded`] when `loss` at upper iteration `ul_iter` exceeds the bound.
fn exploded<E>(cfg: &TrainConfig, ul_iter: u32, loss: f64) -> Result<(), TrainError<E>> {
    match cfg.diverge_above {
        Some(bound) if loss > bound => Err(TrainError::Exploded {
            ul_iter,
            loss,
            bound,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use bda_kernel::backend::MethodConfig;
    use bda_kernel::fewshot::FeatureHead;
    use bda_kernel::hyperclean::{Classifier, HypercleanData};

    use super::*;

    struct Silent;
    impl Monitor for Silent {
        fn val_acc(&mut self, _: &[f64]) -> f64 {
            0.0
        }
        fn clean_f1(&mut self, _: &[f64]) -> f64 {
            0.0
        }
    }

    /// The loop asks the backend which methods it runs: one without Hessian products (the
    /// few-shot head: its `x` is 4 rows of 2 features, its `y` a 2-way head) trains with
    /// the unrolled methods and refuses IHG and O-BDA in one line naming the flag.
    #[test]
    fn a_backend_without_hessians_runs_the_unrolled_methods_only() {
        let mut head = FeatureHead::new(2, 2, vec![0, 1], vec![1, 0], 0.0_f64);
        let x0 = [0.3, -0.1, 0.2, 0.5, -0.4, 0.1, 0.0, 0.2];
        let (features, labels) = ([0.0f32; 2], [0u8]);
        // A problem of the head's `y` length (3·2) for the draws of `y₀` (zero).
        let shape = HypercleanData {
            dim: 2,
            classes: 2,
            classifier: Classifier::Linear,
            train_x: &features,
            train_labels: &labels,
            val_x: &features,
            val_labels: &labels,
            lambda: 0.0,
        };
        let init = InitDraw::new(Init::Zero, 0, &shape);
        for method in Method::ALL {
            let cfg = TrainConfig {
                row: Row::Method(method),
                spec: MethodConfig::new(method, 3, 0.5).build().unwrap(),
                optimizer: OptimizerKind::Sgd,
                ul_lr: 0.1,
                ul_iters: 2,
                init: Init::Zero,
                seed: 0,
                diverge_above: None,
            };
            match train(&mut head, &cfg, &x0, &init, &mut Silent) {
                Ok(t) => {
                    assert!(!matches!(method, Method::Ihg | Method::Obda), "{method}");
                    assert_eq!(t.history.len(), 3, "two iterations and the final state");
                    assert!(t.x != x0 && t.ul_loss.is_finite(), "{method}: x moved");
                }
                Err(TrainError::Config(m)) => {
                    assert!(matches!(method, Method::Ihg | Method::Obda), "{m}");
                    assert_eq!(
                        m,
                        format!(
                            "--method {method}: needs lower-level Hessian products, which this backend does not provide"
                        )
                    );
                }
                Err(e) => panic!("{method}: {e}"),
            }
        }
    }
}
