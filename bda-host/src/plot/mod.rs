//! SVG charts: a grid of line-chart panels, one or more named series per panel, and
//! `bda plot` ([`overlay`]), which draws the histories of saved reports.
//!
//! plotters with only its SVG backend needs no system library and no font file (SVG text
//! is laid out by the viewer), so plots work on any machine the CLI runs on.
//!
//! The horizontal axis of every panel is an iteration count: its ticks are integers. The
//! grid is light major lines only; series with few points get a small circle at each point
//! ([`wants_markers`]), so a validation curve measured twice is not mistaken for a line.

pub mod overlay;

use std::ops::Range;
use std::path::Path;

use plotters::coord::combinators::LogCoord;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::error::CliError;
use crate::output::write_atomic;

/// One named curve: `(x, y)` points.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// One chart of the grid.
#[derive(Clone, Debug)]
pub struct Panel {
    /// Title above the chart.
    pub title: String,
    /// Logarithmic vertical axis (non-positive values are clamped to the smallest positive).
    pub y_log: bool,
    /// The curves.
    pub series: Vec<Series>,
}

/// Series colours in order (the ten of Tableau/d3's category10, so that an overlay of the
/// three methods × three seeds of a ranking stays unambiguous); an 11th series reuses the
/// first colour.
const COLORS: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// A series of at most this many points gets a marker at every point.
pub const MARKER_MAX_POINTS: usize = 30;

/// Marker radius, pixels.
const MARKER_RADIUS: i32 = 3;

/// Ticks on the iteration axis and on a linear value axis (at most about).
const X_TICKS: usize = 8;
const Y_TICKS: usize = 6;

/// A metric of a record: its panel title and its value, if the record has one.
pub type Metric<'a, R> = (&'a str, fn(&R) -> Option<f64>);

/// One panel per metric, one series per run (its name and its records), against the
/// records' iteration `iter`.
pub fn metric_panels<R>(
    metrics: &[Metric<'_, R>],
    runs: &[(String, &[R])],
    iter: fn(&R) -> f64,
    y_log: bool,
) -> Vec<Panel> {
    let series = |get: fn(&R) -> Option<f64>| {
        runs.iter()
            .map(|(name, rows)| Series {
                name: name.clone(),
                points: rows
                    .iter()
                    .filter_map(|r| get(r).map(|v| (iter(r), v)))
                    .collect(),
            })
            .collect()
    };
    metrics
        .iter()
        .map(|&(title, get)| Panel {
            title: title.to_string(),
            y_log,
            series: series(get),
        })
        .collect()
}

/// The label of every panel's horizontal axis: all commands count the same upper-level
/// iterations.
pub const X_LABEL: &str = "upper iteration";

/// Columns of the grid: a row of up to three panels, 2×2 for four, rows of three beyond.
pub fn columns(panels: usize) -> usize {
    match panels {
        0..=3 => panels.max(1),
        4 => 2,
        _ => 3,
    }
}

/// Draw `panels` in a grid of [`columns`] into the SVG file `path` (written atomically:
/// a temporary file next to it, then a rename).
pub fn write_svg(path: &Path, title: &str, panels: &[Panel]) -> Result<(), CliError> {
    let svg = render_svg(title, panels, columns(panels.len()))
        .map_err(|e| CliError::input(format!("{}: cannot draw the plot: {e}", path.display())))?;
    write_atomic(path, svg.as_bytes())
        .map_err(|e| CliError::input(format!("{}: cannot write plot: {e}", path.display())))
}

/// The SVG text of `panels` in a grid of `cols` columns under `title`.
pub fn render_svg(title: &str, panels: &[Panel], cols: usize) -> Result<String, String> {
    let cols = cols.max(1);
    let rows = panels.len().div_ceil(cols).max(1);
    let size = (480 * cols as u32, 360 * rows as u32 + 40);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(|e| e.to_string())?;
        let areas = root.split_evenly((rows, cols));
        // One iteration axis for the whole figure: a curve measured only now and then
        // (validation) is drawn against the same iterations as the others.
        let x = panels
            .iter()
            .map(|p| bounds(p).x)
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
            .unwrap_or((0.0, 1.0));
        for (panel, area) in panels.iter().zip(areas.iter()) {
            draw_panel(panel, x, area).map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

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
fn log_label(v: f64, (lo, hi): (f64, f64)) -> String {
    if lo >= 0.99e-3 && hi <= 1.01e4 {
        let d = (-(v.log10() + 1e-9).floor()).max(0.0) as usize;
        format!("{v:.d$}")
    } else {
        format!("{v:.0e}")
    }
}

/// Whether a series of `n` points gets a marker at each point, in a panel whose densest
/// series has `densest` points: when it has few points, or when it is much sparser than
/// the others (a validation curve next to a training curve).
pub fn wants_markers(n: usize, densest: usize) -> bool {
    n <= MARKER_MAX_POINTS || (n <= 100 && 4 * n <= densest)
}

/// An axis (`R`: plotters' linear or logarithmic coordinate) with the ticks given and no
/// light lines: plotters' own choice gives `10.0, 20.0` on an iteration axis, and a label at
/// every integer multiple within a decade of a log axis, which collide on a short one.
struct Ticked<R> {
    range: R,
    ticks: Vec<f64>,
}

impl Ticked<RangedCoordf64> {
    /// A linear axis over `[lo, hi]`.
    fn linear(lo: f64, hi: f64, ticks: Vec<f64>) -> Self {
        Ticked {
            range: (lo..hi).into(),
            ticks,
        }
    }
}

impl Ticked<LogCoord<f64>> {
    /// A logarithmic axis over `[lo, hi]` (`lo > 0`), ticked by [`log_ticks`].
    fn log(lo: f64, hi: f64) -> Self {
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

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// The finite points of `panel`: x range, y range, the smallest positive y.
struct Bounds {
    x: (f64, f64),
    y: (f64, f64),
    min_pos: f64,
}

fn bounds(panel: &Panel) -> Bounds {
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut min_pos = f64::INFINITY;
    for &(x, y) in panel.series.iter().flat_map(|s| s.points.iter()) {
        if !(x.is_finite() && y.is_finite()) {
            continue;
        }
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
        if y > 0.0 {
            min_pos = min_pos.min(y);
        }
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1, min_pos) = (0.0, 1.0, 0.0, 1.0, 1e-16);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    Bounds {
        x: (x0, x1),
        y: (y0, y1),
        min_pos,
    }
}

/// Draw `panel` over the iterations `x` (the whole figure's range) into `area`.
fn draw_panel(panel: &Panel, (x0, x1): (f64, f64), area: &Area<'_>) -> DrawResult {
    let b = bounds(panel);
    let x_axis = Ticked::linear(x0, x1, iteration_ticks(x0, x1));
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(60);
    let grid = BLACK.mix(0.12);
    let x_fmt = |v: &f64| iteration_label(*v);
    // The same axes for a log and a linear value axis (two chart types, one look): a
    // light major grid only, integer iteration labels.
    macro_rules! draw_mesh {
        ($chart:expr, $y_fmt:expr) => {
            $chart
                .configure_mesh()
                .bold_line_style(grid)
                .light_line_style(TRANSPARENT)
                .max_light_lines(0)
                .x_desc(X_LABEL)
                .x_label_formatter(&x_fmt)
                .y_label_formatter($y_fmt)
                .label_style(("sans-serif", 13))
                .draw()?
        };
    }
    if panel.y_log {
        let floor = b.min_pos.min(1e300);
        let hi = if b.y.1 > floor { b.y.1 } else { floor * 10.0 };
        // Half a decade of margin below and above, so curves do not sit on the frame.
        let (lo, hi) = (floor / 3.0, hi * 3.0);
        let y_axis = Ticked::log(lo, hi);
        let mut chart = builder.build_cartesian_2d(x_axis, y_axis)?;
        draw_mesh!(chart, &|v: &f64| log_label(*v, (lo, hi)));
        let ly = |y: f64| (y.max(floor).ln() - lo.ln()) / (hi.ln() - lo.ln());
        let corner = legend_corner(panel, (x0, x1), ly);
        draw_series(&mut chart, panel, |y| y.max(floor), corner)?;
    } else {
        let (mut y0, mut y1) = b.y;
        if y1 - y0 <= 1e-12 * y0.abs().max(1.0) {
            // A constant: a band around it, not a range of rounding errors.
            let half = if y0 == 0.0 { 1.0 } else { 0.05 * y0.abs() };
            (y0, y1) = (y0 - half, y1 + half);
        }
        let pad = (y1 - y0) * 0.05;
        let (lo, hi) = (y0 - pad, y1 + pad);
        let step = nice_step(hi - lo, Y_TICKS);
        let y_axis = Ticked::linear(lo, hi, ticks(lo, hi, step));
        let mut chart = builder.build_cartesian_2d(x_axis, y_axis)?;
        let y_fmt = |v: &f64| value_label(*v, step);
        draw_mesh!(chart, &y_fmt);
        let ly = |y: f64| (y - lo) / (hi - lo);
        let corner = legend_corner(panel, (x0, x1), ly);
        draw_series(&mut chart, panel, |y| y, corner)?;
    }
    Ok(())
}

/// Where the legend hides the least: of the four corners (upper right first), the one
/// whose legend box covers the fewest samples of the curves. `unit_y` maps a value to
/// `[0, 1]` of the plotting area's height.
fn legend_corner(
    panel: &Panel,
    (x0, x1): (f64, f64),
    unit_y: impl Fn(f64) -> f64,
) -> SeriesLabelPosition {
    // The box in fractions of a plotting area of about 400 × 290 pixels.
    let chars = panel
        .series
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0);
    let w = ((chars * 7 + 50) as f64 / 400.0).min(1.0);
    let h = ((panel.series.len() * 17 + 14) as f64 / 290.0).min(1.0);
    let corners = [
        (SeriesLabelPosition::UpperRight, 1.0 - w, 1.0 - h),
        (SeriesLabelPosition::LowerRight, 1.0 - w, 0.0),
        (SeriesLabelPosition::UpperLeft, 0.0, 1.0 - h),
        (SeriesLabelPosition::LowerLeft, 0.0, 0.0),
    ];
    let mut covered = [0usize; 4];
    let unit = |(x, y): (f64, f64)| ((x - x0) / (x1 - x0), unit_y(y));
    for s in &panel.series {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&p| unit(p))
            .collect();
        // The points and 8 samples along each segment.
        let samples = pts.windows(2).flat_map(|ab| {
            let ((ax, ay), (bx, by)) = (ab[0], ab[1]);
            (0..8).map(move |k| {
                let t = f64::from(k) / 8.0;
                (ax + t * (bx - ax), ay + t * (by - ay))
            })
        });
        for (x, y) in samples.chain(pts.last().copied()) {
            for (c, &(_, cx, cy)) in covered.iter_mut().zip(&corners) {
                if (cx..=cx + w).contains(&x) && (cy..=cy + h).contains(&y) {
                    *c += 1;
                }
            }
        }
    }
    let best = (0..4).min_by_key(|&i| covered[i]).unwrap_or(0);
    corners[best].0.clone()
}

/// The curves of `panel` and their legend, with `map_y` applied to every value (log axes
/// clamp non-positive values).
fn draw_series<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    panel: &Panel,
    map_y: impl Fn(f64) -> f64,
    corner: SeriesLabelPosition,
) -> DrawResult
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let finite = |s: &Series| -> Vec<(f64, f64)> {
        s.points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| (x, map_y(y)))
            .collect()
    };
    let densest = panel
        .series
        .iter()
        .map(|s| s.points.len())
        .max()
        .unwrap_or(0);
    for (i, s) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts = finite(s);
        let markers = wants_markers(pts.len(), densest);
        let anno =
            chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
        let line = move || PathElement::new(vec![(0, 0), (16, 0)], color.stroke_width(2));
        let anno = anno.label(s.name.as_str());
        if markers {
            anno.legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + line()
                    + Circle::new((8, 0), MARKER_RADIUS, color.filled())
            });
        } else {
            anno.legend(move |(x, y)| EmptyElement::at((x, y)) + line());
        }
        if markers {
            chart.draw_series(
                pts.iter()
                    .map(|&p| Circle::new(p, MARKER_RADIUS, color.filled())),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .position(corner)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use bda_testkit::report::svg_texts as texts;

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
    fn markers_on_few_or_sparse_points() {
        assert!(wants_markers(2, 2));
        assert!(wants_markers(MARKER_MAX_POINTS, 1000));
        assert!(!wants_markers(200, 200));
        assert!(wants_markers(50, 1000)); // validation every 20 of 1000 steps
        assert!(!wants_markers(50, 100));
        assert!(!wants_markers(500, 10_000));
    }

    #[test]
    fn svg_has_integer_iteration_ticks_and_markers() {
        let panel = |n: u32| Panel {
            title: "validation accuracy (%)".into(),
            y_log: false,
            series: vec![Series {
                name: "bda K=50".into(),
                points: (0..n)
                    .map(|i| (f64::from(i), 50.0 + f64::from(i)))
                    .collect(),
            }],
        };
        let svg = render_svg("t", &[panel(5)], 1).unwrap();
        let labels = texts(&svg);
        for t in ["0", "1", "2", "3", "4"] {
            assert!(labels.iter().any(|l| l == t), "no tick {t}: {labels:?}");
        }
        for t in ["1.0", "2.0", "0.5"] {
            assert!(!labels.iter().any(|l| l == t), "tick {t}: {labels:?}");
        }
        assert!(svg.contains("<circle"));
        assert!(labels.iter().any(|l| l == "bda K=50"), "{labels:?}");
        let svg = render_svg("t", &[panel(300)], 1).unwrap();
        assert!(!svg.contains("<circle"));
    }

    #[test]
    fn nine_series_get_nine_colours() {
        // Three methods × three seeds: the overlay a ranking draws.
        let series = (0..9)
            .map(|i| Series {
                name: format!("run {i}"),
                points: (0..200).map(|x| (f64::from(x), f64::from(x * i))).collect(),
            })
            .collect();
        let panel = Panel {
            title: "validation accuracy (%)".into(),
            y_log: false,
            series,
        };
        let svg = render_svg("t", &[panel], 1).unwrap();
        let strokes: std::collections::BTreeSet<&str> = svg
            .split("<polyline")
            .skip(1)
            .filter_map(|p| p.split("stroke=\"").nth(1)?.split('"').next())
            .filter(|&c| c != "#000000") // the axes
            .collect();
        assert_eq!(strokes.len(), 9, "{strokes:?}");
    }

    #[test]
    fn log_panel_clamps_and_draws() {
        let panel = Panel {
            title: "|F − F*|".into(),
            y_log: true,
            series: vec![Series {
                name: "BDA (K=16)".into(),
                points: vec![(0.0, 1.0), (1.0, 1e-3), (2.0, 0.0), (3.0, 1e-6)],
            }],
        };
        let svg = render_svg("t", &[panel], 1).unwrap();
        let labels = texts(&svg);
        assert!(labels.iter().any(|l| l == "BDA (K=16)"), "{labels:?}");
        assert!(labels.iter().any(|l| l == "1e-6"), "{labels:?}");
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
