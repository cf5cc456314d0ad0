//! SVG charts: a grid of line-chart panels, one or more named series per panel.
//!
//! plotters with only its SVG backend needs no system library and no font file (SVG text
//! is laid out by the viewer), so plots work on any machine the CLI runs on.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::error::CliError;

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
    /// Label of the horizontal axis.
    pub x_label: String,
    /// Logarithmic vertical axis (non-positive values are clamped to the smallest positive).
    pub y_log: bool,
    /// The curves.
    pub series: Vec<Series>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// Fail early (before any work) when a plot cannot be written to `p`.
pub fn check_path(p: &Path) -> Result<(), CliError> {
    if p.extension().and_then(|e| e.to_str()) != Some("svg") {
        return Err(CliError::input(format!(
            "--plot {}: the file name must end in .svg",
            p.display()
        )));
    }
    match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(CliError::input(format!(
            "--plot {}: folder {} does not exist",
            p.display(),
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// Draw `panels` in a grid of `cols` columns into the SVG file `path`.
pub fn write_svg(path: &Path, title: &str, panels: &[Panel], cols: usize) -> Result<(), CliError> {
    let cols = cols.max(1);
    let rows = panels.len().div_ceil(cols).max(1);
    let size = (480 * cols as u32, 360 * rows as u32 + 40);
    let fail = |e: &dyn std::fmt::Display| {
        CliError::input(format!("{}: cannot write plot: {e}", path.display()))
    };
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| fail(&e))?;
    let areas = root.split_evenly((rows, cols));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        draw_panel(panel, area).map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw_panel<'a>(panel: &Panel, area: &Area<'a>) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let points = panel.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut min_pos = f64::INFINITY;
    for &(x, y) in points {
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
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(60);
    let floor = min_pos.min(1e300);
    if panel.y_log {
        let hi = if y1 > floor { y1 } else { floor * 10.0 };
        // Half a decade of margin below and above, so curves do not sit on the frame.
        let mut chart = builder.build_cartesian_2d(x0..x1, (floor / 3.0..hi * 3.0).log_scale())?;
        chart
            .configure_mesh()
            .x_desc(panel.x_label.as_str())
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()?;
        draw_series(&mut chart, panel, |y| y.max(floor))?;
    } else {
        let pad = ((y1 - y0) * 0.05).max(1e-12);
        let mut chart = builder.build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))?;
        chart
            .configure_mesh()
            .x_desc(panel.x_label.as_str())
            .draw()?;
        draw_series(&mut chart, panel, |y| y)?;
    }
    Ok(())
}

/// The curves of `panel` and their legend, with `map_y` applied to every value (log axes
/// clamp non-positive values).
fn draw_series<'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    panel: &Panel,
    map_y: impl Fn(f64) -> f64,
) -> Result<(), Box<dyn std::error::Error + 'a>>
where
    Y: Ranged<ValueType = f64>,
{
    for (i, s) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| (x, map_y(y)));
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
