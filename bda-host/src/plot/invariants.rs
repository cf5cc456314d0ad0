//! What `bda plot` promises on any report file (the `plot` fuzz target and the corpus test
//! `bda-host/tests/fuzz_corpus.rs`): reading it and drawing its default figure never
//! panic, and every error is one line naming the file.

use clap::{Args, FromArgMatches};

use super::overlay::{PlotArgs, figure};
use super::render_svg;
use super::reports::parse_reports;
use crate::fewshot::image::assert_one_line;

/// The file name the checks give the bytes.
const FILE: &str = "fuzz.json";

/// The reports read from `bytes` as `bda plot fuzz.json --out fuzz.svg` reads them: at least
/// one; every point of every curve at an integer iteration, with finite coordinates. Then
/// that command's figure: SVG text, or a one-line error. A refused file is a one-line error
/// that starts with the file's name, exit code 2.
pub fn check_plot_invariants(bytes: &[u8]) {
    let reports = match parse_reports(bytes, FILE) {
        Ok(r) => r,
        Err(e) => {
            let m = e.to_string();
            assert_one_line(&m);
            assert!(m.starts_with(FILE), "{m}");
            assert_eq!(e.exit_code(), 2, "{m}");
            return;
        }
    };
    assert!(!reports.is_empty());
    for r in &reports {
        assert!(r.origin.starts_with(FILE), "{}", r.origin);
        let all = r
            .curves
            .values()
            .chain(r.ll_curves.values().flat_map(|c| c.values()));
        for (x, y) in all.flatten() {
            assert!(
                x.is_finite() && x.fract() == 0.0 && y.is_finite(),
                "({x}, {y})"
            );
        }
    }
    let matches = PlotArgs::augment_args(clap::Command::new("plot"))
        .try_get_matches_from(["plot", FILE, "--out", "fuzz.svg"])
        .expect("the arguments of the default figure");
    let args = PlotArgs::from_arg_matches(&matches).expect("the default figure's PlotArgs");
    match figure(&args, &reports) {
        Ok((title, panels, cols)) => match render_svg(&title, &panels, cols) {
            Ok(svg) => assert!(svg.starts_with("<svg"), "not SVG"),
            Err(m) => assert_one_line(&m),
        },
        Err(e) => assert_one_line(&e.to_string()),
    }
}
