//! Evaluation of a hyper-cleaning run on the host, whatever device trained it: validation
//! accuracy per upper iteration, test predictions at the end, clean-detection F1. It packs
//! the validation and test sets once ([`Packed`]) and predicts with the SIMD logits of
//! [`super::simd`]; it never touches a backend.

use super::cpu::mlp;
use super::driver::{IterRecord, Monitor};
use super::packed::{Packed, predict};
use super::simd::Kernels;
use super::{HostData, metrics};

/// Validation and test sets packed for prediction (as dense rows for the network), and the
/// corruption flags.
pub struct Evaluator<'a> {
    kern: Kernels,
    /// The network and the data, when the classifier has a hidden layer.
    net: Option<(mlp::Net, &'a HostData)>,
    classes: usize,
    val: Packed,
    test: Packed,
    corrupted: Vec<bool>,
    /// Drawn on after each upper iteration, if any.
    pub bar: Option<indicatif::ProgressBar>,
}

impl<'a> Evaluator<'a> {
    /// Pack the validation and test sets of `data`.
    pub fn new(data: &'a HostData) -> Result<Self, String> {
        let net = (data.hidden > 0).then(|| (mlp::Net::of(&data.problem(0.0)), data));
        Ok(Evaluator {
            kern: Kernels::detect(data.classes),
            net,
            classes: data.classes,
            val: Packed::new(&data.val.x, &data.val.labels, data.val.dim)?,
            test: Packed::new(&data.test.x, &data.test.labels, data.test.dim)?,
            corrupted: data.corrupted.clone(),
            bar: None,
        })
    }

    fn y32(y: &[f64]) -> Vec<f32> {
        y.iter().map(|&v| v as f32).collect()
    }

    /// Validation predictions of the classifier `y`.
    pub fn predict_val(&self, y: &[f64]) -> Vec<u8> {
        match self.net {
            Some((net, data)) => mlp::predict(net, &data.val.x, &Self::y32(y)),
            None => predict(self.kern, &self.val, self.classes, &Self::y32(y)),
        }
    }

    /// Test predictions of the classifier `y`.
    pub fn predict_test(&self, y: &[f64]) -> Vec<u8> {
        match self.net {
            Some((net, data)) => mlp::predict(net, &data.test.x, &Self::y32(y)),
            None => predict(self.kern, &self.test, self.classes, &Self::y32(y)),
        }
    }
}

impl Monitor for Evaluator<'_> {
    fn val_acc(&mut self, y: &[f64]) -> f64 {
        100.0 * metrics::accuracy(&self.predict_val(y), self.val.labels())
    }
    fn clean_f1(&mut self, x: &[f64]) -> f64 {
        100.0 * metrics::clean_f1(x, &self.corrupted)
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
