//! Observers watch the upper-level loop without changing it (argmin's shape: init, each
//! iteration, final; all no-ops by default). [`History`] records the papers' metrics per
//! iteration in a fixed-capacity buffer, without allocating.

use nalgebra::SVector;

use crate::problem::KnownSolution;
use crate::scalar::Real;

/// The state of the upper-level loop at iteration `iter`, before `x` is updated.
#[derive(Clone, Copy, Debug)]
pub struct IterState<'a, T, const N: usize, const M: usize> {
    /// Upper-level iteration, 0-based.
    pub iter: u32,
    /// Current `x`.
    pub x: &'a SVector<T, N>,
    /// `y_K(x)`.
    pub y: &'a SVector<T, M>,
    /// `F(x, y_K(x))`.
    pub upper: T,
    /// `f(x, y_K(x))`.
    pub lower: T,
    /// `∇φ_K(x)`.
    pub grad: &'a SVector<T, N>,
    /// `‖∇φ_K(x)‖`.
    pub grad_norm: T,
}

/// Watches the upper-level loop. Every method has an empty default.
pub trait Observer<T, const N: usize, const M: usize> {
    /// Called once with the starting point.
    fn observe_init(&mut self, _x0: &SVector<T, N>, _y0: &SVector<T, M>) {}
    /// Called at every upper-level iteration, before the update of `x`.
    fn observe_iter(&mut self, _state: &IterState<'_, T, N, M>) {}
    /// Called once with the final state (`y_K` and values re-evaluated at the final `x`).
    fn observe_final(&mut self, _state: &IterState<'_, T, N, M>) {}
}

/// The observer that watches nothing.
impl<T, const N: usize, const M: usize> Observer<T, N, M> for () {}

/// One row of [`History`]: the metrics of the papers' Figures 1–6 at one iteration.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Record<T> {
    /// Upper-level iteration (the final row repeats the last index + 1).
    pub iter: u32,
    /// `F(x, y_K)`.
    pub upper: T,
    /// `|F(x, y_K) − F*|`, when the optimum is known.
    pub upper_gap: Option<T>,
    /// `f(x, y_K) − f*(x)`, when `f*` is known.
    pub lower_gap: Option<T>,
    /// `‖∇φ_K(x)‖`.
    pub grad_norm: T,
    /// `‖x − x*‖`, when known.
    pub x_err: Option<T>,
    /// `‖y_K − y*‖`, when known.
    pub y_err: Option<T>,
}

impl<T: Real> Record<T> {
    /// The metrics of one state; gaps and errors need the known optimum `reference`.
    pub fn of<const N: usize, const M: usize>(
        s: &IterState<'_, T, N, M>,
        reference: Option<&dyn KnownSolution<T, N, M>>,
    ) -> Self {
        let (upper_gap, lower_gap, x_err, y_err) = match reference {
            Some(r) => {
                let dx = s.x - r.x_star();
                let dy = s.y - r.y_star();
                (
                    Some((s.upper - r.upper_star()).abs()),
                    Some(s.lower - r.lower_min(s.x)),
                    Some(dx.dot(&dx).sqrt()),
                    Some(dy.dot(&dy).sqrt()),
                )
            }
            None => (None, None, None, None),
        };
        Record {
            iter: s.iter,
            upper: s.upper,
            upper_gap,
            lower_gap,
            grad_norm: s.grad_norm,
            x_err,
            y_err,
        }
    }
}

/// Records a [`Record`] per iteration (and one for the final state) into a
/// `heapless::Vec` of capacity `CAP`. When full, later rows are counted in
/// [`History::dropped`] rather than stored: recording never fails the solve.
pub struct History<'r, T, const N: usize, const M: usize, const CAP: usize> {
    reference: Option<&'r dyn KnownSolution<T, N, M>>,
    /// The recorded rows, oldest first.
    pub records: heapless::Vec<Record<T>, CAP>,
    /// Rows that did not fit.
    pub dropped: u32,
}

impl<'r, T: Real, const N: usize, const M: usize, const CAP: usize> History<'r, T, N, M, CAP> {
    /// A history without a known optimum (gaps and errors are `None`).
    pub fn new() -> Self {
        History {
            reference: None,
            records: heapless::Vec::new(),
            dropped: 0,
        }
    }

    /// A history that measures distances to a known optimum.
    pub fn with_reference(reference: &'r dyn KnownSolution<T, N, M>) -> Self {
        History {
            reference: Some(reference),
            records: heapless::Vec::new(),
            dropped: 0,
        }
    }

    fn push(&mut self, r: Record<T>) {
        if self.records.push(r).is_err() {
            self.dropped = self.dropped.saturating_add(1);
        }
    }
}

impl<T: Real, const N: usize, const M: usize, const CAP: usize> Default
    for History<'_, T, N, M, CAP>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Real, const N: usize, const M: usize, const CAP: usize> Observer<T, N, M>
    for History<'_, T, N, M, CAP>
{
    fn observe_iter(&mut self, state: &IterState<'_, T, N, M>) {
        let r = Record::of(state, self.reference);
        self.push(r);
    }
    fn observe_final(&mut self, state: &IterState<'_, T, N, M>) {
        let r = Record::of(state, self.reference);
        self.push(r);
    }
}
