//! Axes: round tick steps, integer iteration ticks, value and log labels, and the
//! `Ticked` axis that draws exactly the ticks chosen.

use std::ops::Range;

use plotters::coord::combinators::LogCoord;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Ticks on the iteration axis and on a linear value axis (at most about).
pub(super) const X_TICKS: usize = 8;
pub(super) const Y_TICKS: usize = 6;

/// A round step (1, 2 or 5 times a power of ten) that cuts `span` into at most about
/// `max_ticks` intervals.
pub fn nice_step(span: f64, max_ticks: usize) -> f64 {
    let raw = span.abs() / max_ticks.max(1) as f64;
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag)
}

/// The multiples of `step` in `[lo, hi]`.
pub fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    if !(step > 0.0 && lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Ticks of an iteration axis over `[lo, hi]`: integers, a round step of at least 1.
pub fn iteration_ticks(lo: f64, hi: f64) -> Vec<f64> {
    ticks(lo, hi, nice_step(hi - lo, X_TICKS).max(1.0))
}

/// The label of an iteration tick: an integer (`10`, not `10.0`).
pub fn iteration_label(v: f64) -> String {
    format!("{}", v.round() as i64)
}

/// The label of `v` on a linear axis whose ticks are `step` apart: as many decimals as the
/// step needs (none for a step of 1 or more), scientific notation for very large values or
/// very fine steps.
pub fn value_label(v: f64, step: f64) -> String {
    let v = if v.abs() < step.abs() * 1e-6 { 0.0 } else { v };
    if v != 0.0 && (v.abs() >= 1e6 || step < 1e-4) {
        let digits = (v.abs().log10().floor() - step.log10().floor()).clamp(0.0, 6.0) as usize;
        return format!("{v:.digits$e}");
    }
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10() - 1e-9).ceil() as usize
    };
    format!("{v:.decimals$}")
}

/// The label of a tick of a logarithmic axis over `[lo, hi]`: written out when the whole
/// axis lies within 0.001 … 10⁴ (`0.01`, `100`), else in scientific notation (`1e-8`), the
/// same way for every tick of the axis.
pub(super) fn log_label(v: f64, (lo, hi): (f64, f64)) -> String {
    if lo >= 0.99e-3 && hi <= 1.01e4 {
        let d = (-(v.log10() + 1e-9).floor()).max(0.0) as usize;
        format!("{v:.d$}")
    } else {
        format!("{v:.0e}")
    }
}

/// An axis (`R`: plotters' linear or logarithmic coordinate) with the ticks given and no
/// light lines: plotters' own choice gives `10.0, 20.0` on an iteration axis, and a label at
/// every integer multiple within a decade of a log axis, which collide on a short one.
pub(super) struct Ticked<R> {
    range: R,
    ticks: Vec<f64>,
}

impl Ticked<RangedCoordf64> {
    /// A linear axis over `[lo, hi]`.
    pub(super) fn linear(lo: f64, hi: f64, ticks: Vec<f64>) -> Self {
        Ticked {
            range: (lo..hi).into(),
            ticks,
        }
    }
}

impl Ticked<LogCoord<f64>> {
    /// A logarithmic axis over `[lo, hi]` (`lo > 0`), ticked by [`log_ticks`].
    pub(super) fn log(lo: f64, hi: f64) -> Self {
        Ticked {
            range: (lo..hi).log_scale().into(),
            ticks: log_ticks(lo, hi),
        }
    }
}

impl<R: Ranged<ValueType = f64>> Ranged for Ticked<R> {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.range.map(value, limit)
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.range()
    }
}

/// Ticks of a logarithmic axis over `[lo, hi]`: powers of ten (every second or fifth one
/// when there are many), with 2× and 5× multiples added when fewer than three decades fit.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return Vec::new();
    }
    let (first, last) = (lo.log10().ceil() as i32, hi.log10().floor() as i32);
    let decades: Vec<i32> = (first..=last).collect();
    let every = match decades.len() {
        0..=8 => 1,
        9..=16 => 2,
        17..=40 => 5,
        _ => 10,
    };
    let mut t: Vec<f64> = decades
        .iter()
        .filter(|&&d| d.rem_euclid(every) == 0)
        .map(|&d| 10f64.powi(d))
        .collect();
    if decades.len() < 3 {
        t = (first - 1..=last)
            .flat_map(|d| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(d)))
            .filter(|v| (lo..=hi).contains(v))
            .collect();
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(4.0, 8), 0.5);
        assert_eq!(nice_step(1000.0, 8), 200.0);
        assert_eq!(nice_step(99.0, 8), 20.0);
        assert_eq!(nice_step(0.1, 6), 0.02);
        assert_eq!(nice_step(0.0, 6), 1.0);
    }

    #[test]
    fn iteration_ticks_are_integers() {
        assert_eq!(iteration_ticks(0.0, 4.0), [0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(iteration_ticks(1.0, 2.0), [1.0, 2.0]);
        assert_eq!(
            iteration_ticks(0.0, 1000.0),
            [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]
        );
        assert_eq!(
            iteration_ticks(1.0, 60.0),
            [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
        );
        for t in iteration_ticks(3.0, 17.0) {
            assert_eq!(t.fract(), 0.0);
        }
        assert_eq!(iteration_label(10.0), "10");
        assert_eq!(iteration_label(0.0), "0");
    }

    #[test]
    fn value_labels_have_the_precision_of_the_step() {
        assert_eq!(value_label(50.0, 2.0), "50");
        assert_eq!(value_label(1.62, 0.02), "1.62");
        assert_eq!(value_label(1.6, 0.02), "1.60");
        assert_eq!(value_label(0.5, 0.1), "0.5");
        assert_eq!(value_label(-1e-17, 0.1), "0.0");
        assert_eq!(value_label(2e6, 5e5), "2.0e6");
        assert_eq!(value_label(3e-5, 1e-5), "3e-5");
        assert_eq!(log_label(0.01, (0.005, 300.0)), "0.01");
        assert_eq!(log_label(100.0, (0.005, 300.0)), "100");
        assert_eq!(log_label(1e-8, (1e-9, 3.0)), "1e-8");
        assert_eq!(log_label(1.0, (1e-9, 3.0)), "1e0");
    }

    #[test]
    fn log_ticks_are_decades_or_1_2_5_within_the_range() {
        let close = |got: Vec<f64>, want: &[f64]| {
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (g, w) in got.iter().zip(want) {
                assert!((g / w - 1.0).abs() < 1e-12, "{got:?} vs {want:?}");
            }
        };
        close(log_ticks(0.009, 1.5), &[0.01, 0.1, 1.0]);
        // Within one decade: 1-2-5 ticks, never outside the range.
        close(log_ticks(0.15, 1.5), &[0.2, 0.5, 1.0]);
        close(log_ticks(0.05, 3.0), &[0.05, 0.1, 0.2, 0.5, 1.0, 2.0]);
        // Sixteen decades: every second one, so the labels do not overlap.
        let t = log_ticks(1e-15, 1.0);
        assert_eq!(t.len(), 8, "{t:?}");
        assert!((t[0] / 1e-14 - 1.0).abs() < 1e-12 && t[7] == 1.0, "{t:?}");
        assert!(log_ticks(0.0, 1.0).is_empty() && log_ticks(2.0, 1.0).is_empty());
        // One notation per axis.
        assert_eq!(log_label(0.01, (0.005, 2.0)), "0.01");
        assert_eq!(log_label(100.0, (0.005, 2e3)), "100");
        assert_eq!(log_label(1e-8, (1e-9, 1.0)), "1e-8");
    }
}
