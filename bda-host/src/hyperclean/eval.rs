//! Evaluation of a hyper-cleaning run on the host, whatever device trained it: validation
//! accuracy per upper iteration, test predictions at the end, clean-detection F1. The
//! predictions come from the classifier's CPU backend ([`Predictor`], chosen with the
//! backend in [`crate::device::hyperclean_backend`]); the sets are prepared once.

use bda_cpu::hyperclean::Predictor;

use super::driver::{IterRecord, Monitor};
use super::{HostData, metrics};
use crate::device::PredictorFn;
use crate::output::Interrupt;
use crate::ranks;
use bda_kernel::collective::{chunk_rows, owned};

/// The validation and test sets prepared for prediction (on several ranks, each rank's
/// share of their rows), and the corruption flags.
pub struct Evaluator<'a> {
    val: Share<'a>,
    test: Share<'a>,
    val_labels: &'a [u8],
    corrupted: &'a [bool],
    /// Drawn on after each upper iteration, if any.
    pub bar: Option<indicatif::ProgressBar>,
    /// Stops the loop after the current upper iteration when it reports a signal.
    pub interrupt: Option<Interrupt>,
}

impl<'a> Evaluator<'a> {
    /// Prepare the validation and test sets of `data` with the classifier's `predictor`.
    pub fn new(data: &'a HostData, predictor: PredictorFn) -> Result<Self, String> {
        let problem = data.problem(0.0);
        let share = |x: &'a [f32], labels: &'a [u8]| -> Result<Share<'a>, String> {
            let n = labels.len();
            let rows = rows_of(n, ranks::comm().rank(), ranks::size());
            let d = problem.dim;
            let x = &x[rows.start * d..rows.end * d];
            Ok(Share {
                predictor: predictor(&problem, x, &labels[rows])?,
                rows: n,
            })
        };
        Ok(Evaluator {
            val: share(&data.val.x, &data.val.labels)?,
            test: share(&data.test.x, &data.test.labels)?,
            val_labels: &data.val.labels,
            corrupted: &data.corrupted,
            bar: None,
            interrupt: None,
        })
    }

    fn y32(y: &[f64]) -> Vec<f32> {
        y.iter().map(|&v| v as f32).collect()
    }

    /// Validation predictions of the classifier `y` (every rank calls it together).
    pub fn predict_val(&self, y: &[f64]) -> Vec<u8> {
        self.val.predict(&Self::y32(y))
    }

    /// Test predictions of the classifier `y` (every rank calls it together).
    pub fn predict_test(&self, y: &[f64]) -> Vec<u8> {
        self.test.predict(&Self::y32(y))
    }
}

/// Rows a rank predicts: contiguous, in rank order, in whole groups of [`ROWS`] (each
/// row's prediction is its own: any split gives the same classes).
const ROWS: usize = 64;

fn rows_of(n: usize, rank: usize, ranks: usize) -> std::ops::Range<usize> {
    chunk_rows(owned(n.div_ceil(ROWS), rank, ranks), ROWS, n)
}

/// A set's predictor on this rank's rows of it.
struct Share<'a> {
    predictor: Predictor<'a>,
    /// The set's rows (all ranks').
    rows: usize,
}

impl Share<'_> {
    /// The classes of every row of the set: this rank's, gathered with the others'.
    fn predict(&self, y: &[f32]) -> Vec<u8> {
        let mine = self.predictor.predict(y);
        let p = ranks::size();
        if p == 1 {
            return mine;
        }
        let counts: Vec<usize> = (0..p).map(|r| rows_of(self.rows, r, p).len()).collect();
        let mine: Vec<f32> = mine.into_iter().map(f32::from).collect();
        let mut all = vec![0.0f32; self.rows];
        ranks::comm().gather_f32(&mine, &counts, &mut all);
        all.into_iter().map(|c| c as u8).collect()
    }
}

impl Monitor for Evaluator<'_> {
    fn val_acc(&mut self, y: &[f64]) -> f64 {
        100.0 * metrics::accuracy(&self.predict_val(y), self.val_labels)
    }
    fn clean_f1(&mut self, x: &[f64]) -> f64 {
        100.0 * metrics::clean_f1(x, self.corrupted)
    }
    /// A signal stops every rank after the same upper iteration ([`Interrupt::poll`]).
    fn should_stop(&self) -> bool {
        self.interrupt.as_ref().is_some_and(|i| i.poll().is_some())
    }
    fn iter_done(&mut self, rec: &IterRecord) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "F {:.4}  val {:.2}%  clean-F1 {:.1}%",
                rec.ul_loss, rec.val_acc, rec.clean_f1
            ));
            b.inc(1);
        }
    }
}
