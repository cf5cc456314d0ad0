//! Reports of `bda hyperclean`: a readable table, one JSON object, an SVG plot.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::Summary;
use crate::error::CliError;

/// The summary as a small table (one row, the columns of the papers' Table 2).
pub fn table(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "data hyper-cleaning: {} (n_train {}, n_val {}, n_test {}, noise {:.2}), K {}, {} upper iterations ({} lr {}), seed {}",
        s.dataset,
        s.n_train,
        s.n_val,
        s.n_test,
        s.noise,
        s.k,
        s.ul_iters,
        s.optimizer,
        s.ul_lr,
        s.seed
    );
    let _ = writeln!(
        out,
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>12}",
        "method", "val acc", "test acc", "test F1", "clean F1", "time (s)", "s/UL iter"
    );
    let _ = writeln!(
        out,
        "{:<8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.2} {:>12.4}",
        s.method, s.val_acc, s.test_acc, s.test_f1, s.clean_f1, s.seconds, s.s_per_ul_iter
    );
    out
}

/// The summary as one line of JSON.
pub fn json(s: &Summary) -> String {
    serde_json::to_string(s).expect("a summary serialises")
}

/// Fail early (before training) when the plot cannot be written.
pub fn check_plot_path(p: &Path) -> Result<(), CliError> {
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

/// Three panels, one per series, against the upper iteration.
pub fn plot(p: &Path, s: &Summary) -> Result<(), CliError> {
    let err = |e: String| CliError::run(format!("--plot {}: {e}", p.display()));
    let root = SVGBackend::new(p, (900, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let panels = root.split_evenly((3, 1));
    let n = s.history.len().max(1) as f64;
    type Getter = Box<dyn Fn(&super::driver::IterRecord) -> f64>;
    let series: [(&str, Getter, RGBColor); 3] = [
        ("upper-level loss F", Box::new(|r| r.ul_loss), BLUE),
        ("validation accuracy (%)", Box::new(|r| r.val_acc), RED),
        ("clean-detection F1 (%)", Box::new(|r| r.clean_f1), GREEN),
    ];
    for (area, (name, get, color)) in panels.iter().zip(series) {
        let vals: Vec<f64> = s.history.iter().map(&get).collect();
        let (mut lo, mut hi) = vals
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if !(lo.is_finite() && hi.is_finite()) {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo < 1e-9 {
            (lo, hi) = (lo - 0.5, hi + 0.5);
        }
        let pad = 0.05 * (hi - lo);
        let caption = format!("{} — {} ({}, K {})", name, s.method, s.dataset, s.k);
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n, (lo - pad)..(hi + pad))
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("upper iteration")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(
                vals.iter().enumerate().map(|(i, &v)| (i as f64, v)),
                &color,
            ))
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
