//! `--weights-out FILE.csv`: what hyper-cleaning learned, one row per training sample —
//! where it came from, its given label, its weight `σ(x_i)`, whether the weights flag it as
//! noisy (`σ(x_i) ≤ ½`, the clean-F1's rule) and whether the protocol corrupted its label.

use std::fmt::Write as _;
use std::path::Path;

use super::HostData;
use crate::error::CliError;
use crate::output::write_atomic;

/// The header of the file.
pub const HEADER: &str = "file,index,label,weight,flagged_noisy,corrupted";

/// Whether the weight of logit `x` flags its sample as noisy.
pub fn flagged(x: f64) -> bool {
    x <= 0.0
}

/// The CSV text for the learned logits `x` of `data`'s training samples.
pub fn csv(data: &HostData, x: &[f64]) -> String {
    let mut out = String::with_capacity(48 * x.len());
    let _ = writeln!(out, "{HEADER}");
    let rows = data
        .origin
        .iter()
        .zip(&data.train.labels)
        .zip(x.iter().zip(&data.corrupted));
    for ((o, label), (&xi, &corrupted)) in rows {
        let weight = 1.0 / (1.0 + (-xi).exp());
        let _ = writeln!(
            out,
            "{},{},{label},{weight},{},{}",
            o.file,
            o.index,
            u8::from(flagged(xi)),
            u8::from(corrupted)
        );
    }
    out
}

/// Write the weights of `x` to `path` (atomically).
pub fn write(path: &Path, data: &HostData, x: &[f64]) -> Result<(), CliError> {
    write_atomic(path, csv(data, x).as_bytes()).map_err(|e| {
        CliError::run(format!(
            "--weights-out {}: cannot be written: {e}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_training_sample_in_training_order() {
        let data = HostData::synthetic(6, 3, 2, 4, 3, 0.5, 1);
        let x = [2.0, -1.0, 0.0, 30.0, -30.0, 0.5];
        let text = csv(&data, &x);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(lines.len(), 7);
        let row: Vec<&str> = lines[2].split(',').collect();
        assert_eq!(row[..2], ["synthetic", "1"]);
        assert_eq!(row[2], data.train.labels[1].to_string());
        let w: f64 = row[3].parse().unwrap();
        assert!((w - 1.0 / (1.0 + 1f64.exp())).abs() < 1e-15);
        assert_eq!(row[4], "1", "σ(−1) < ½: flagged");
        assert_eq!(lines[3].split(',').nth(4), Some("1"), "σ(0) = ½: flagged");
        assert_eq!(lines[4].split(',').nth(4), Some("0"));
        let corrupted: Vec<&str> = lines[1..].iter().map(|l| &l[l.len() - 1..]).collect();
        let want: Vec<String> = data
            .corrupted
            .iter()
            .map(|&c| u8::from(c).to_string())
            .collect();
        assert_eq!(corrupted, want);
    }
}
