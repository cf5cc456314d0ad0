//! What `bda toy` records of a run: the papers' metrics at every upper iteration, and,
//! at the upper iterations asked for, the K lower-level steps themselves.

use bda_kernel::{
    Bilevel, Gradient, IterState, KnownSolution, LowerConfig, Objective, Observer, Record,
};
use nalgebra::SVector;
use serde::Serialize;

/// One upper iteration of a run (a `history` row of the report).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Upper-level iteration (the final row repeats the last index + 1).
    pub ul_iter: u32,
    /// `F(x, y_K) = φ_K(x)`.
    pub upper: f64,
    /// `|F − F*|`.
    pub upper_gap: f64,
    /// `f(x, y_K) − f*(x)`.
    pub lower_gap: f64,
    /// `‖∇φ_K(x)‖`.
    pub grad_norm: f64,
    /// `‖x − x*‖`.
    pub x_err: f64,
    /// `‖y_K − y*‖`.
    pub y_err: f64,
    /// `‖x − x*‖² / ‖x*‖²` (the ICML paper's Figs. 1–3).
    pub x_err_sq_rel: f64,
    /// `‖y_K − y*‖² / ‖y*‖²`.
    pub y_err_sq_rel: f64,
    /// `φ*(x) = F(x, y*(x))`, the value at the lower-level solution best for `F`.
    pub phi_star: f64,
    /// `|φ_K(x) − φ*(x)|` (the journal's Fig. 2).
    pub phi_gap: f64,
    /// `‖y_K − y*(x)‖`.
    pub y_best_err: f64,
    /// The mean of `x`'s coordinates (`x` itself for Example 1).
    pub x_mean: f64,
    /// The mean of the lower-level coordinates that Example 1's lower level leaves free:
    /// `y₂` (Example 1, Remark 4), `z` (Eq. 40). With `x_mean` the plane of the papers'
    /// path figures: the optimum is (1, 1), RHG never moves these coordinates.
    pub free_mean: f64,
    /// `x`, with `--record-iterates`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<Vec<f64>>,
    /// `y_K(x)`, with `--record-iterates`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<Vec<f64>>,
}

/// The K lower-level steps at one upper iteration (an `ll_history` entry).
#[derive(Clone, Debug, Serialize)]
pub struct LlTrace {
    /// The upper iteration whose `x` the steps use.
    pub ul_iter: u32,
    /// `k = 0..=K`: the starting point, then each step.
    pub steps: Vec<LlRow>,
}

/// One lower-level iterate `y_k` at a fixed `x`.
#[derive(Clone, Debug, Serialize)]
pub struct LlRow {
    /// `k`.
    pub ll_iter: u32,
    /// `F(x, y_k)`.
    pub upper: f64,
    /// `f(x, y_k) − f*(x)`.
    pub lower_gap: f64,
    /// `‖y_k − y*‖`.
    pub y_err: f64,
    /// `‖y_k − y*(x)‖`.
    pub y_best_err: f64,
}

/// Records every upper iteration (the host has an allocator; the kernel's `History` is
/// bounded), and replays the K steps at the iterations of `trace_at`.
pub(super) struct Recorder<'a, U, L, const N: usize, const M: usize> {
    pub(super) problem: &'a Bilevel<U, L>,
    pub(super) reference: &'a dyn KnownSolution<f64, N, M>,
    pub(super) lower: &'a LowerConfig<f64, M>,
    pub(super) warm_start: bool,
    pub(super) trace_at: &'a [u32],
    pub(super) iterates: bool,
    /// The coordinates of `y` behind `free_mean`.
    pub(super) free: std::ops::Range<usize>,
    /// Where the K steps of the next upper iteration start (as the solver's own).
    pub(super) y_start: SVector<f64, M>,
    pub(super) rows: Vec<Row>,
    pub(super) traces: Vec<LlTrace>,
}

fn dist<const D: usize>(a: &SVector<f64, D>, b: &SVector<f64, D>) -> f64 {
    (a - b).norm()
}

impl<U, L, const N: usize, const M: usize> Recorder<'_, U, L, N, M>
where
    U: Objective<f64, N, M> + Gradient<f64, N, M>,
    L: Objective<f64, N, M> + Gradient<f64, N, M>,
{
    /// `y*(x)`: the reference's, or (for a problem that does not know it) `y*`.
    fn best(&self, x: &SVector<f64, N>) -> SVector<f64, M> {
        self.reference
            .lower_best(x)
            .unwrap_or_else(|| self.reference.y_star())
    }

    fn row(&self, s: &IterState<'_, f64, N, M>) -> Row {
        let r = Record::of(s, Some(self.reference));
        let nan = f64::NAN;
        let (x_err, y_err) = (r.x_err.unwrap_or(nan), r.y_err.unwrap_or(nan));
        let rel = |err: f64, star: f64| {
            if star > 0.0 {
                err * err / (star * star)
            } else {
                err * err
            }
        };
        let best = self.best(s.x);
        let phi_star = self.problem.upper.value(s.x, &best);
        Row {
            ul_iter: r.iter,
            upper: r.upper,
            upper_gap: r.upper_gap.unwrap_or(nan),
            lower_gap: r.lower_gap.unwrap_or(nan),
            grad_norm: r.grad_norm,
            x_err,
            y_err,
            x_err_sq_rel: rel(x_err, self.reference.x_star().norm()),
            y_err_sq_rel: rel(y_err, self.reference.y_star().norm()),
            phi_star,
            phi_gap: (s.upper - phi_star).abs(),
            y_best_err: dist(s.y, &best),
            x_mean: s.x.mean(),
            free_mean: s.y.rows_range(self.free.clone()).mean(),
            x: self.iterates.then(|| s.x.iter().copied().collect()),
            y: self.iterates.then(|| s.y.iter().copied().collect()),
        }
    }

    /// The K steps at `x` from this iteration's start, replayed with the solver's own step.
    fn trace(&self, ul_iter: u32, x: &SVector<f64, N>) -> LlTrace {
        let (best, star) = (self.best(x), self.reference.y_star());
        let f_min = self.reference.lower_min(x);
        let row = |k: u32, y: &SVector<f64, M>| LlRow {
            ll_iter: k,
            upper: self.problem.upper.value(x, y),
            lower_gap: self.problem.lower.value(x, y) - f_min,
            y_err: dist(y, &star),
            y_best_err: dist(y, &best),
        };
        let mut y = self.y_start;
        let mut steps = vec![row(0, &y)];
        for k in 1..=self.lower.steps {
            y = self.lower.step(self.problem, x, &y, k).1;
            steps.push(row(k, &y));
        }
        LlTrace { ul_iter, steps }
    }

    fn record(&mut self, s: &IterState<'_, f64, N, M>) {
        self.rows.push(self.row(s));
        if self.trace_at.contains(&s.iter) {
            let t = self.trace(s.iter, s.x);
            self.traces.push(t);
        }
    }
}

impl<U, L, const N: usize, const M: usize> Observer<f64, N, M> for Recorder<'_, U, L, N, M>
where
    U: Objective<f64, N, M> + Gradient<f64, N, M>,
    L: Objective<f64, N, M> + Gradient<f64, N, M>,
{
    fn observe_iter(&mut self, s: &IterState<'_, f64, N, M>) {
        self.record(s);
        if self.warm_start {
            self.y_start = *s.y;
        }
    }
    fn observe_final(&mut self, s: &IterState<'_, f64, N, M>) {
        self.record(s);
    }
}
