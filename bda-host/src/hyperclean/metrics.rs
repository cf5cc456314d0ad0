//! Classification metrics of the hyper-cleaning report.

/// Fraction of `pred[i] == truth[i]` (0 for empty input).
pub fn accuracy(pred: &[u8], truth: &[u8]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    let ok = pred.iter().zip(truth).filter(|(p, t)| p == t).count();
    ok as f64 / truth.len() as f64
}

/// Macro-averaged F1 over classes `0..classes`: the mean over classes of
/// `2·tp / (2·tp + fp + fn)`, a class without any true or predicted sample counting 0
/// (as in the PyTorch peer).
pub fn macro_f1(pred: &[u8], truth: &[u8], classes: usize) -> f64 {
    if classes == 0 {
        return 0.0;
    }
    let mut tp = vec![0usize; classes];
    let mut fp = vec![0usize; classes];
    let mut fneg = vec![0usize; classes];
    for (&p, &t) in pred.iter().zip(truth) {
        let (p, t) = (p as usize, t as usize);
        if p == t {
            if p < classes {
                tp[p] += 1;
            }
        } else {
            if p < classes {
                fp[p] += 1;
            }
            if t < classes {
                fneg[t] += 1;
            }
        }
    }
    let sum: f64 = (0..classes)
        .map(|k| {
            let den = 2 * tp[k] + fp[k] + fneg[k];
            if den == 0 {
                0.0
            } else {
                2.0 * tp[k] as f64 / den as f64
            }
        })
        .sum();
    sum / classes as f64
}

/// Macro-F1 of the two classes {removed, kept} of the prediction "kept ⇔ σ(x_i) > 0.5
/// ⇔ x_i > 0" against the truth "kept ⇔ not corrupted" (the peer's `clean_detect_f1`).
pub fn clean_f1<T: Copy + Into<f64>>(x: &[T], corrupted: &[bool]) -> f64 {
    let pred: Vec<u8> = x.iter().map(|&v| u8::from(v.into() > 0.0)).collect();
    let truth: Vec<u8> = corrupted.iter().map(|&c| u8::from(!c)).collect();
    macro_f1(&pred, &truth, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_by_hand() {
        // class 0: tp 1, fp 1, fn 1 → 0.5; class 1: tp 1, fp 1, fn 1 → 0.5; class 2: none → 0
        let pred = [0, 1, 1, 0];
        let truth = [0, 0, 1, 1];
        assert!((macro_f1(&pred, &truth, 2) - 0.5).abs() < 1e-12);
        assert!((macro_f1(&pred, &truth, 3) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(accuracy(&pred, &truth), 0.5);
        assert_eq!(accuracy(&[], &[]), 0.0);
    }

    #[test]
    fn clean_f1_perfect_and_initial() {
        let corrupted = [true, false, false, true];
        assert_eq!(clean_f1(&[-1.0f32, 2.0, 3.0, -4.0], &corrupted), 1.0);
        // x = 0 everywhere: nothing kept; F1 = (2·2/(4+2) + 0)/2 = 1/3
        let f = clean_f1(&[0.0f64; 4], &corrupted);
        assert!((f - 1.0 / 3.0).abs() < 1e-12);
    }
}
