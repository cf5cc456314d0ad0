//! Reports of `bda fewshot` and `bda fewshot eval`: a table or one JSON object (accuracies
//! in percent), and the SVG chart of a training run.

use std::path::Path;

use serde::Serialize;

use super::checkpoint::{Checkpoint, History};
use super::config::RunConfig;
use crate::config::ReportHeader;
use crate::error::CliError;
use crate::plot::{self, Panel, Series};

/// One state of the backbone in the history: the parameters after `ul_iter` meta-steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StepRecord {
    /// Meta-steps done (0-based, as in every command's history: the record of the state the
    /// next update starts from).
    pub ul_iter: u64,
    /// Mean `φ_K` over the meta-batch the next update used (the upper-level loss).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ul_loss: Option<f64>,
    /// Mean query accuracy of the heads `y_K` on that meta-batch, %.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_acc: Option<f64>,
    /// Validation accuracy, %, where it was measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_acc: Option<f64>,
    /// The orthogonality sum of the convolution filters (`fewshot::projection`), at the
    /// start and at every validation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orthogonality: Option<f64>,
    /// Tasks of that meta-batch whose conjugate-gradient solve (iMAML) stopped at a
    /// direction of non-positive curvature (absent when none did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cg_negative_curvature: Option<u64>,
}

/// The history of a checkpoint as report records. The checkpoint numbers a loss by the
/// meta-step it led to and a validation by the step it followed, so the loss of step
/// `t + 1` and the validation after step `t` describe the same parameters: record `t`.
pub fn history(h: &History) -> Vec<StepRecord> {
    let mut rows: std::collections::BTreeMap<u64, StepRecord> = Default::default();
    let empty = |ul_iter| StepRecord {
        ul_iter,
        ul_loss: None,
        train_acc: None,
        val_acc: None,
        orthogonality: None,
        cg_negative_curvature: None,
    };
    for &(step, loss, acc) in &h.loss {
        let t = step.saturating_sub(1);
        let r = rows.entry(t).or_insert_with(|| empty(t));
        (r.ul_loss, r.train_acc) = (Some(loss), Some(acc));
    }
    for &(step, tasks) in &h.cg_stops {
        let t = step.saturating_sub(1);
        rows.entry(t)
            .or_insert_with(|| empty(t))
            .cg_negative_curvature = Some(tasks);
    }
    for &(step, acc) in &h.val {
        rows.entry(step).or_insert_with(|| empty(step)).val_acc = Some(acc);
    }
    for &(step, o) in &h.ortho {
        rows.entry(step)
            .or_insert_with(|| empty(step))
            .orthogonality = Some(o);
    }
    rows.into_values().collect()
}

/// The report of a training or evaluation run (`--json`).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Command, version, effective configuration, data read.
    #[serde(flatten)]
    pub header: ReportHeader,
    /// What the data is called: the folder, or `synthetic`.
    pub dataset: String,
    /// Classes per episode.
    pub ways: usize,
    /// Support images per class.
    pub shots: usize,
    /// Query images per class.
    pub queries: usize,
    /// Method the backbone was trained with (`random` for an untrained backbone).
    pub method: String,
    /// Head steps K.
    #[serde(rename = "K")]
    pub k: u32,
    /// T of T-RHG (when the method is trhg).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncate: Option<u32>,
    /// Meta-steps trained.
    pub ul_iters: u64,
    /// Episodes per meta-step.
    pub meta_batch: usize,
    /// Mean test accuracy, % (absent without test episodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_acc: Option<f64>,
    /// 95% CI half-width of `test_acc`, percentage points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci95: Option<f64>,
    /// Test episodes.
    pub episodes: usize,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// Seconds per meta-step (training only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s_per_ul_iter: Option<f64>,
    /// Seed.
    pub seed: u64,
    /// Where it ran (`cpu`, `cuda (device name)`).
    pub device: String,
    /// Processes the run was split over (MPI ranks; 1 without a launcher).
    pub ranks: usize,
    /// Final upper-level loss: the mean `φ_K` of the last 10 meta-steps (training only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ul_loss: Option<f64>,
    /// With `--patience`: the meta-step whose backbone was tested (the best validated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_ul_iter: Option<u64>,
    /// With `--patience`: its validation accuracy, %.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_val_acc: Option<f64>,
    /// Per meta-step records (training only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<StepRecord>,
    /// Stopped early by SIGINT or SIGTERM (present only then): training ended after the
    /// meta-step in `ul_iters`, the test ran on the `episodes` done.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

impl Report {
    /// The report of `cfg`'s episodes: the test accuracies `accs` (%, one per episode) and
    /// where they were computed; training fields are absent until set.
    pub fn new(
        header: ReportHeader,
        cfg: &RunConfig,
        method: &str,
        accs: &[f64],
        device: String,
    ) -> Report {
        let (test_acc, ci95) = match accs {
            [] => (None, None),
            _ => {
                let (m, c) = mean_ci(accs);
                (Some(m), Some(c))
            }
        };
        let e = &cfg.episode;
        Report {
            header,
            dataset: cfg.data_name(),
            ways: e.ways,
            shots: e.shots,
            queries: e.queries,
            method: method.into(),
            k: e.k,
            truncate: None,
            ul_iters: 0,
            meta_batch: e.meta_batch,
            test_acc,
            ci95,
            episodes: accs.len(),
            seconds: 0.0,
            s_per_ul_iter: None,
            ranks: crate::ranks::size(),
            seed: cfg.seed,
            device,
            ul_loss: None,
            best_ul_iter: None,
            best_val_acc: None,
            history: Vec::new(),
            interrupted: false,
        }
    }
}

/// Print the report: one JSON line, or a table. `split` names the episodes' split in the
/// table's heading.
pub fn print(r: &Report, json: bool, split: &str) -> Result<(), CliError> {
    if json {
        println!(
            "{}",
            serde_json::to_string(r).map_err(|e| CliError::run(e.to_string()))?
        );
        return Ok(());
    }
    let head = format!("{split} acc (95% CI)");
    println!(
        "{:<7} {:>4} {:>5} {:>3} {:>10} {:>18} {:>9} {:>10}",
        "method", "ways", "shots", "K", "UL iters", head, "episodes", "s/UL iter"
    );
    let acc = match (r.test_acc, r.ci95) {
        (Some(a), Some(c)) => format!("{a:>9.2}% ± {c:>5.2}%"),
        _ => format!("{:>18}", "–"),
    };
    let s_step = r
        .s_per_ul_iter
        .map_or("–".to_string(), |s| format!("{s:.3}"));
    println!(
        "{:<7} {:>4} {:>5} {:>3} {:>10} {acc} {:>9} {:>10}",
        r.method, r.ways, r.shots, r.k, r.ul_iters, r.episodes, s_step
    );
    let stopped = if r.interrupted { " (interrupted)" } else { "" };
    println!(
        "data: {}, seed {}, {:.1} s{stopped}",
        r.dataset, r.seed, r.seconds
    );
    let stops: Vec<u64> = r
        .history
        .iter()
        .filter_map(|h| h.cg_negative_curvature)
        .collect();
    if let Some(first) = r.history.iter().find(|h| h.cg_negative_curvature.is_some()) {
        println!(
            "CG met non-positive curvature in {} tasks over {} meta-steps (first at meta-step {}): the implicit meta-gradient was partial there (a --lambda above the support Hessian's most negative eigenvalue makes the system definite)",
            stops.iter().sum::<u64>(),
            stops.len(),
            first.ul_iter + 1
        );
    }
    Ok(())
}

/// Mean query accuracy and its 95% CI half-width (1.96·std/√n) over episodes, in the
/// accuracies' unit.
pub fn mean_ci(accs: &[f64]) -> (f64, f64) {
    let n = accs.len() as f64;
    if accs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = accs.iter().sum::<f64>() / n;
    let var = accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.96 * var.sqrt() / n.sqrt())
}

/// The meta-training loss and the accuracies (training queries, validation) per meta-step.
pub fn write_plot(path: &Path, ck: &Checkpoint) -> Result<(), CliError> {
    let h = history(&ck.history);
    let series = |name: &str, get: fn(&StepRecord) -> Option<f64>| {
        let points = h
            .iter()
            .filter_map(|r| get(r).map(|v| (r.ul_iter as f64, v)));
        Series::new(name, points.collect())
    };
    let c = &ck.config;
    let mut panels = vec![
        Panel::upper(
            "meta-training loss φ_K",
            false,
            vec![series("meta-train loss", |r| r.ul_loss)],
        ),
        Panel::upper(
            "accuracy (%)",
            false,
            vec![
                series("meta-train query acc", |r| r.train_acc),
                series("validation acc", |r| r.val_acc),
            ],
        ),
    ];
    if ck.history.ortho.len() > 1 {
        let label = format!("projection {}", c.ul_projection);
        panels.push(Panel::upper(
            "orthogonality sum Σ‖ŴŴᵀ − I‖_F",
            false,
            vec![series(&label, |r| r.orthogonality)],
        ));
    }
    plot::write_svg(
        path,
        &format!(
            "few-shot {}-way {}-shot, {} K={}",
            c.episode.ways,
            c.episode.shots,
            c.method_name(),
            c.episode.k
        ),
        &panels,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_joins_the_loss_of_the_same_parameters() {
        let h = History {
            loss: vec![(1, 2.0, 40.0), (2, 1.5, 50.0)],
            val: vec![(2, 60.0)],
            ortho: vec![(0, 30.0), (2, 25.0)],
            cg_stops: vec![(2, 3)],
        };
        let r = history(&h);
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].ul_iter, r[0].ul_loss, r[0].val_acc),
            (0, Some(2.0), None)
        );
        assert_eq!((r[1].ul_iter, r[1].ul_loss), (1, Some(1.5)));
        // After two steps: validated, not trained further.
        assert_eq!(
            (r[2].ul_iter, r[2].ul_loss, r[2].val_acc),
            (2, None, Some(60.0))
        );
        assert_eq!((r[0].orthogonality, r[1].orthogonality), (Some(30.0), None));
        assert_eq!(r[2].orthogonality, Some(25.0));
        // The CG stops of step 2's batch belong with its loss, record 1.
        let stops: Vec<_> = r.iter().map(|r| r.cg_negative_curvature).collect();
        assert_eq!(stops, [None, Some(3), None]);
    }
}
