//! SVG charts: a grid of line-chart panels, one or more named series per panel, and
//! `bda plot` ([`overlay`]), which draws the histories of saved reports.
//!
//! plotters with only its SVG backend needs no system library and no font file (SVG text
//! is laid out by the viewer), so plots work on any machine the CLI runs on.
//!
//! The horizontal axis of a panel is an iteration count (upper or lower level: integer
//! ticks, one range for all the figure's panels of that kind) or, for a path in a plane,
//! a value ([`XAxis`]). The grid is light major lines only; series with few points get a small circle at each point
//! ([`wants_markers`]), so a validation curve measured twice is not mistaken for a line.

pub mod axes;
pub mod invariants;
pub mod legend;
pub mod overlay;
pub mod reports;

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use axes::{Ticked, X_TICKS, Y_TICKS, log_label};
pub use axes::{iteration_label, iteration_ticks, log_ticks, nice_step, ticks, value_label};

use crate::error::CliError;
use crate::output::write_atomic;

/// One named curve: `(x, y)` points.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (the papers draw RHG dashed beside a solid BDA).
    pub dashed: bool,
    /// Index into the colour cycle; `None`: the series' position in its panel.
    pub color: Option<usize>,
}

impl Series {
    /// A solid series in the colour of its position.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            ..Series::default()
        }
    }
}

/// What the horizontal axis of a panel counts.
#[derive(Clone, Debug, PartialEq)]
pub enum XAxis {
    /// Upper-level iterations ([`X_LABEL`]).
    Upper,
    /// Lower-level steps `k` within one upper iteration.
    Lower,
    /// A value, labelled so (a coordinate of a path in a plane): the panel's own range.
    Value(String),
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
    /// The horizontal axis.
    pub x_axis: XAxis,
    /// A point marked with a cross and its legend label (the optimum of a path).
    pub mark: Option<(String, (f64, f64))>,
}

impl Panel {
    /// A panel against the upper iterations, without mark.
    pub fn upper(title: impl Into<String>, y_log: bool, series: Vec<Series>) -> Self {
        Panel {
            title: title.into(),
            y_log,
            series,
            x_axis: XAxis::Upper,
            mark: None,
        }
    }
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
            .map(|(name, rows)| {
                let points = rows
                    .iter()
                    .filter_map(|r| get(r).map(|v| (iter(r), v)))
                    .collect();
                Series::new(name.clone(), points)
            })
            .collect()
    };
    metrics
        .iter()
        .map(|&(title, get)| Panel::upper(title, y_log, series(get)))
        .collect()
}

/// The label of an upper-iteration axis: all commands count the same upper-level
/// iterations.
pub const X_LABEL: &str = "upper iteration";

/// The label of a lower-iteration axis.
pub const LL_X_LABEL: &str = "lower iteration k";

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
    write_svg_grid(path, title, panels, columns(panels.len()))
}

/// [`write_svg`] with `cols` columns (a figure whose columns mean something: one upper
/// iteration each).
pub fn write_svg_grid(
    path: &Path,
    title: &str,
    panels: &[Panel],
    cols: usize,
) -> Result<(), CliError> {
    let svg = render_svg(title, panels, cols)
        .map_err(|e| CliError::input(format!("{}: cannot draw the plot: {e}", path.display())))?;
    write_atomic(path, svg.as_bytes())
        .map_err(|e| CliError::input(format!("{}: cannot write plot: {e}", path.display())))
}

/// The SVG text of `panels` in a grid of `cols` columns under `title`.
pub fn render_svg(title: &str, panels: &[Panel], cols: usize) -> Result<String, String> {
    // A legend too long for a panel gets a cell of its own after the panels.
    let crowded = panels.iter().find(|p| p.series.len() > LEGEND_IN_PANEL_MAX);
    let cells = panels.len() + usize::from(crowded.is_some());
    let cols = if crowded.is_some() {
        cols.max(2)
    } else {
        cols.max(1)
    };
    let rows = cells.div_ceil(cols).max(1);
    let size = (480 * cols as u32, 360 * rows as u32 + 40);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(|e| e.to_string())?;
        let areas = root.split_evenly((rows, cols));
        // One iteration axis per kind for the whole figure: a curve measured only now and
        // then (validation) is drawn against the same iterations as the others.
        let shared = |kind: &XAxis| {
            panels
                .iter()
                .filter(|p| &p.x_axis == kind)
                .map(|p| bounds(p).x)
                .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
                .unwrap_or((0.0, 1.0))
        };
        let (upper, lower) = (shared(&XAxis::Upper), shared(&XAxis::Lower));
        for (panel, area) in panels.iter().zip(areas.iter()) {
            let x = match panel.x_axis {
                XAxis::Upper => upper,
                XAxis::Lower => lower,
                XAxis::Value(_) => padded(bounds(panel).x),
            };
            draw_panel(panel, x, area).map_err(|e| e.to_string())?;
        }
        if let (Some(panel), Some(area)) = (crowded, areas.get(panels.len())) {
            draw_legend_cell(panel, area).map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// A panel with more series than this lists them in a cell of their own.
pub const LEGEND_IN_PANEL_MAX: usize = 10;

/// The legend of `panel` (its series, then its mark) as a cell of the grid: one entry per
/// line, in as many columns as the cell needs.
fn draw_legend_cell(panel: &Panel, area: &Area<'_>) -> DrawResult {
    let (w, h) = area.dim_in_pixel();
    let per_col = ((h as i32 - 40) / 18).max(1) as usize;
    let entries = panel.series.len() + usize::from(panel.mark.is_some());
    let col_w = (w as i32 - 20) / entries.div_ceil(per_col).max(1) as i32;
    let anchor = Pos::new(HPos::Left, VPos::Center);
    let font = TextStyle::from(("sans-serif", 13).into_font()).pos(anchor);
    for i in 0..entries {
        let (x, y) = (
            20 + (i / per_col) as i32 * col_w,
            30 + (i % per_col) as i32 * 18,
        );
        let text = match panel.series.get(i) {
            Some(s) => {
                let style = COLORS[s.color.unwrap_or(i) % COLORS.len()].stroke_width(2);
                let dashes: &[(i32, i32)] = if s.dashed {
                    &[(0, 8), (13, 21)]
                } else {
                    &[(0, 21)]
                };
                for &(a, b) in dashes {
                    area.draw(&PathElement::new(vec![(x + a, y), (x + b, y)], style))?;
                }
                s.name.as_str()
            }
            None => {
                area.draw(&Cross::new((x + 10, y), 5, BLACK.stroke_width(2)))?;
                panel.mark.as_ref().map_or("", |m| m.0.as_str())
            }
        };
        area.draw(&Text::new(text, (x + 28, y), font.clone()))?;
    }
    Ok(())
}

/// Whether a series of `n` points gets a marker at each point, in a panel whose densest
/// series has `densest` points: when it has few points, or when it is much sparser than
/// the others (a validation curve next to a training curve).
pub fn wants_markers(n: usize, densest: usize) -> bool {
    n <= MARKER_MAX_POINTS || (n <= 100 && 4 * n <= densest)
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
    let marked = panel.mark.iter().map(|m| &m.1);
    for &(x, y) in panel
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .chain(marked)
    {
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

/// `(lo, hi)` with 5 % of the span added on each side, so that a path does not run along
/// the frame.
fn padded((lo, hi): (f64, f64)) -> (f64, f64) {
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// Draw `panel` over the horizontal range `x` (for iterations: the whole figure's) into
/// `area`.
fn draw_panel(panel: &Panel, (x0, x1): (f64, f64), area: &Area<'_>) -> DrawResult {
    let b = bounds(panel);
    let x_step = nice_step(x1 - x0, X_TICKS);
    let (x_ticks, x_desc) = match &panel.x_axis {
        XAxis::Upper => (iteration_ticks(x0, x1), X_LABEL.to_string()),
        XAxis::Lower => (iteration_ticks(x0, x1), LL_X_LABEL.to_string()),
        XAxis::Value(label) => (ticks(x0, x1, x_step), label.clone()),
    };
    let x_axis = Ticked::linear(x0, x1, x_ticks);
    let is_value = matches!(panel.x_axis, XAxis::Value(_));
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(60);
    let grid = BLACK.mix(0.12);
    let x_fmt = |v: &f64| {
        if is_value {
            value_label(*v, x_step)
        } else {
            iteration_label(*v)
        }
    };
    // The same axes for a log and a linear value axis (two chart types, one look): a
    // light major grid only, integer iteration labels.
    macro_rules! draw_mesh {
        ($chart:expr, $y_fmt:expr) => {
            $chart
                .configure_mesh()
                .bold_line_style(grid)
                .light_line_style(TRANSPARENT)
                .max_light_lines(0)
                .x_desc(x_desc.as_str())
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
    let entries = panel.series.len() + usize::from(panel.mark.is_some());
    let h = ((entries * 17 + 14) as f64 / 290.0).min(1.0);
    let corners = [
        (SeriesLabelPosition::UpperRight, 1.0 - w, 1.0 - h),
        (SeriesLabelPosition::LowerRight, 1.0 - w, 0.0),
        (SeriesLabelPosition::UpperLeft, 0.0, 1.0 - h),
        (SeriesLabelPosition::LowerLeft, 0.0, 0.0),
    ];
    let mut covered = [0usize; 4];
    // A mark hidden by the legend would be lost: it weighs as much as a whole curve.
    if let Some((_, (x, y))) = &panel.mark {
        let (ux, uy) = ((x - x0) / (x1 - x0), unit_y(*y));
        for (c, &(_, cx, cy)) in covered.iter_mut().zip(&corners) {
            if (cx..=cx + w).contains(&ux) && (cy..=cy + h).contains(&uy) {
                *c += 1000;
            }
        }
    }
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
    let legend = panel.series.len() <= LEGEND_IN_PANEL_MAX;
    for (i, s) in panel.series.iter().enumerate() {
        let color = COLORS[s.color.unwrap_or(i) % COLORS.len()];
        let pts = finite(s);
        let markers = wants_markers(pts.len(), densest);
        let style = color.stroke_width(2);
        let anno = if s.dashed {
            chart.draw_series(DashedLineSeries::new(pts.iter().copied(), 8, 5, style))?
        } else {
            chart.draw_series(LineSeries::new(pts.iter().copied(), style))?
        };
        // A dashed legend line is two dashes, a solid one two touching halves.
        let (a, b) = if s.dashed {
            ((0, 6), (10, 16))
        } else {
            ((0, 8), (8, 16))
        };
        let line = move |(x, y): (i32, i32)| {
            EmptyElement::at((x, y))
                + PathElement::new(vec![(a.0, 0), (a.1, 0)], style)
                + PathElement::new(vec![(b.0, 0), (b.1, 0)], style)
        };
        if legend && markers {
            let anno = anno.label(s.name.as_str());
            anno.legend(move |p| line(p) + Circle::new((8, 0), MARKER_RADIUS, color.filled()));
        } else if legend {
            anno.label(s.name.as_str()).legend(line);
        }
        if markers {
            chart.draw_series(
                pts.iter()
                    .map(|&p| Circle::new(p, MARKER_RADIUS, color.filled())),
            )?;
        }
    }
    if let Some((label, (x, y))) = &panel.mark {
        let mark = Cross::new((*x, map_y(*y)), 7, BLACK.stroke_width(3));
        let anno = chart.draw_series(std::iter::once(mark))?;
        if legend {
            anno.label(label.as_str())
                .legend(|(x, y)| Cross::new((x + 8, y), 5, BLACK.stroke_width(2)));
        }
    }
    if !legend {
        return Ok(()); // drawn in a cell of its own
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
        let panel = |n: u32| {
            let points = (0..n).map(|i| (f64::from(i), 50.0 + f64::from(i)));
            let series = vec![Series::new("bda K=50", points.collect())];
            Panel::upper("validation accuracy (%)", false, series)
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
            .map(|i| {
                let points = (0..200).map(|x| (f64::from(x), f64::from(x * i)));
                Series::new(format!("run {i}"), points.collect())
            })
            .collect();
        let panel = Panel::upper("validation accuracy (%)", false, series);
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
        let points = vec![(0.0, 1.0), (1.0, 1e-3), (2.0, 0.0), (3.0, 1e-6)];
        let panel = Panel::upper("|F − F*|", true, vec![Series::new("BDA (K=16)", points)]);
        let svg = render_svg("t", &[panel], 1).unwrap();
        let labels = texts(&svg);
        assert!(labels.iter().any(|l| l == "BDA (K=16)"), "{labels:?}");
        assert!(labels.iter().any(|l| l == "1e-6"), "{labels:?}");
    }
}
