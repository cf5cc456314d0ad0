//! `--ul-projection`: `Proj_X` of the journal's Algorithm 1 on the backbone. It acts on every
//! convolution's weight matrix (`channels × c_in·3·3`, one row per output filter) after
//! every Adam step. It is also applied once to the initial backbone, so every meta-gradient
//! is taken at a feasible point. Batch-norm γ and β are left alone (the convolutions have no
//! bias). This module also holds the orthogonality sum of the journal's Fig. 8.
//!
//! The projection runs on the host on the parameter vector that Adam updates, so
//! `--device cpu` and `--device cuda` share it and a checkpoint moves between them.
//!
//! Batch norm follows every convolution, so scaling a filter (max-norm) or a whole layer
//! (spectral normalisation) does not change the network's output: those two act only
//! through the optimisation (Adam's steps are a larger fraction of a smaller weight). The
//! spectral projection changes the filters' directions as well. The orthogonality sum does
//! not depend on the filters' scales.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use bda_cpu::projection::{max_norm_rows, orthogonality, spectral_clip, spectral_normalise};
use bda_kernel::fewshot::Conv4Shape;

/// Power-iteration steps of `sn:C` on the initial backbone (from random vectors), as
/// PyTorch's `spectral_norm` does when it is attached.
pub const SN_INIT_ITERS: usize = 15;
/// Power-iteration steps of `sn:C` per meta-step, from the kept vectors (the usual 1).
pub const SN_STEP_ITERS: usize = 1;

/// The constraint set `X` of the backbone's convolution weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum UlProjection {
    /// No constraint (plain Adam).
    #[default]
    None,
    /// Every filter's weight vector in the ball of radius C (max-norm).
    MaxNorm(f64),
    /// Every layer's largest singular value at most C: the Euclidean projection (singular
    /// values above C clipped to C).
    Spectral(f64),
    /// Spectral normalisation (the journal's "SN"): a layer is scaled by C/σ̂ when the
    /// power-iteration estimate σ̂ exceeds C, with the iteration vectors kept across steps
    /// and in checkpoints. Not a projection (see `bda_cpu::projection`).
    Sn(f64),
}

impl FromStr for UlProjection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(UlProjection::None);
        }
        let usage = "expected none, max-norm:C, spectral:C or sn:C";
        let (name, c) = s.split_once(':').ok_or_else(|| format!("{s:?}: {usage}"))?;
        let make: fn(f64) -> UlProjection = match name {
            "max-norm" => UlProjection::MaxNorm,
            "spectral" => UlProjection::Spectral,
            "sn" => UlProjection::Sn,
            _ => return Err(format!("unknown projection {name:?} ({usage})")),
        };
        let c: f64 = c
            .parse()
            .map_err(|_| format!("C {c:?} in {s:?} is not a number"))?;
        if !(c.is_finite() && c > 0.0) {
            return Err(format!("C must be positive and finite, got {c} in {s:?}"));
        }
        Ok(make(c))
    }
}

impl fmt::Display for UlProjection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UlProjection::None => write!(f, "none"),
            UlProjection::MaxNorm(c) => write!(f, "max-norm:{c}"),
            UlProjection::Spectral(c) => write!(f, "spectral:{c}"),
            UlProjection::Sn(c) => write!(f, "sn:{c}"),
        }
    }
}

impl TryFrom<String> for UlProjection {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<UlProjection> for String {
    fn from(p: UlProjection) -> String {
        p.to_string()
    }
}

/// Block `l`'s weight matrix in the parameter vector: its range, rows and columns.
fn layer(arch: Conv4Shape, l: usize) -> (std::ops::Range<usize>, usize, usize) {
    let (w, g, _) = arch.offsets(l);
    (w..g, arch.channels, arch.c_in(l) * 9)
}

impl UlProjection {
    /// The state a fresh run starts with: for `sn:C`, one random unit vector per block
    /// (length `channels`) drawn from `seed`; nothing otherwise.
    pub fn initial_state(&self, arch: Conv4Shape, seed: u64) -> Vec<Vec<f64>> {
        if !matches!(self, UlProjection::Sn(_)) {
            return Vec::new();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5_9e37_0001);
        (0..arch.blocks)
            .map(|_| {
                let u: Vec<f64> = (0..arch.channels)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                let n = u.iter().map(|x| x * x).sum::<f64>().sqrt();
                u.into_iter().map(|x| x / n).collect()
            })
            .collect()
    }

    /// Check a state read from a checkpoint against this projection and backbone.
    pub fn check_state(&self, arch: Conv4Shape, state: &[Vec<f64>]) -> Result<(), String> {
        let want = if matches!(self, UlProjection::Sn(_)) {
            arch.blocks
        } else {
            0
        };
        let ok = state.len() == want
            && state
                .iter()
                .all(|u| u.len() == arch.channels && u.iter().all(|x| x.is_finite()));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "the power-iteration state of {self} must be {want} finite vectors of {} values",
                arch.channels
            ))
        }
    }

    /// Apply the constraint to every block's weights in `params`; `sn:C` runs `iters`
    /// power-iteration steps from `state` (see [`UlProjection::initial_state`]). A block
    /// that `spectral:C` cannot project (a non-finite weight, or an eigendecomposition that
    /// does not converge) is an error naming the projection and the block (0-based, as
    /// `bda fewshot bench` numbers them); the blocks before it are projected already.
    pub fn apply(
        &self,
        arch: Conv4Shape,
        params: &mut [f32],
        state: &mut [Vec<f64>],
        iters: usize,
    ) -> Result<(), String> {
        let mut vectors = state.iter_mut();
        for l in 0..arch.blocks {
            let (range, rows, cols) = layer(arch, l);
            let w = &mut params[range];
            match *self {
                UlProjection::None => {}
                UlProjection::MaxNorm(c) => {
                    max_norm_rows(w, cols, c);
                }
                UlProjection::Spectral(c) => {
                    spectral_clip(w, rows, cols, c)
                        .map_err(|e| format!("--ul-projection {self}, block {l}: {e}"))?;
                }
                UlProjection::Sn(c) => {
                    let u = vectors
                        .next()
                        .expect("one power-iteration vector per block");
                    spectral_normalise(w, rows, cols, u, c, iters);
                }
            }
        }
        Ok(())
    }
}

/// The orthogonality sum of the journal's Fig. 8: `Σ_l ‖Ŵ_l Ŵ_lᵀ − I‖_F` over the blocks,
/// with `Ŵ_l` block `l`'s filters scaled to unit norm. Block 1 has 9 columns, fewer than its
/// filters, so its term is bounded away from 0.
pub fn orthogonality_sum(arch: Conv4Shape, params: &[f32]) -> f64 {
    (0..arch.blocks)
        .map(|l| {
            let (range, rows, cols) = layer(arch, l);
            orthogonality(&params[range], rows, cols)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCH: Conv4Shape = Conv4Shape {
        channels: 6,
        in_channels: 1,
        side: 12,
        blocks: 3,
    };

    #[test]
    fn names_round_trip_and_bad_values_are_refused() {
        for s in ["none", "max-norm:2", "spectral:0.5", "sn:1.25"] {
            let p: UlProjection = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<UlProjection>(&json).unwrap(), p);
        }
        for (s, why) in [
            ("max-norm:0", "positive"),
            ("spectral:-1", "positive"),
            ("sn:NaN", "positive"),
            ("spectral:inf", "positive"),
            ("max-norm:x", "not a number"),
            ("frobenius:1", "unknown projection"),
            ("spectral", "expected none"),
        ] {
            let e = s.parse::<UlProjection>().unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn only_convolution_weights_move_and_every_layer_ends_in_the_set() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let init: Vec<f32> = bda_cpu::conv4::init_params(&ARCH, &mut rng);
        // Weights ×3, γ and β set to values a projection must not touch.
        let mut p = init.clone();
        for l in 0..ARCH.blocks {
            let (w, g, b) = ARCH.offsets(l);
            p[w..g].iter_mut().for_each(|x| *x *= 3.0);
            p[g..b + ARCH.channels].iter_mut().for_each(|x| *x = 5.0);
        }
        for proj in ["max-norm:0.5", "spectral:0.8", "sn:0.8"] {
            let proj: UlProjection = proj.parse().unwrap();
            let mut q = p.clone();
            let mut state = proj.initial_state(ARCH, 1);
            proj.check_state(ARCH, &state).unwrap();
            proj.apply(ARCH, &mut q, &mut state, 100).unwrap();
            for l in 0..ARCH.blocks {
                let (range, rows, cols) = layer(ARCH, l);
                let w = &q[range.clone()];
                assert_ne!(w, &p[range.clone()], "{proj}: block {l} is outside");
                match proj {
                    UlProjection::MaxNorm(c) => {
                        for row in w.chunks(cols) {
                            let n = row.iter().map(|&x| (x as f64).powi(2)).sum::<f64>();
                            assert!(n.sqrt() <= c * (1.0 + 1e-6));
                        }
                    }
                    _ => {
                        let top = bda_cpu::projection::singular_values(w, rows, cols).unwrap()[0];
                        assert!((top - 0.8).abs() < 1e-5, "{proj}: block {l}: σ = {top}");
                    }
                }
                let end = range.end + 2 * ARCH.channels;
                assert!(q[range.end..end].iter().all(|&x| x == 5.0));
            }
        }
    }

    /// A backbone whose filters are known: block 0's six filters are orthogonal (multiples
    /// of distinct unit vectors, with different lengths), block 1's are all the same
    /// vector, and block 2's alternate between two orthogonal vectors. With `Ŵ` the unit
    /// filters, `ŴŴᵀ − I` is 0, then the 6 × 6 all-ones matrix less its diagonal (30 ones),
    /// then 12 ones (each filter matches the two others of its parity): the sum is
    /// `0 + √30 + √12`, worked out by hand. Scaling filters changes nothing.
    #[test]
    fn orthogonality_sum_of_known_filters() {
        // Where each block's 6 filters start, and their length, counted by hand: 6 × 1·9
        // weights, γ and β (6 each), 6 × 6·9 weights, γ, β, 6 × 6·9 weights, γ, β.
        let blocks = [(0, 9), (66, 54), (402, 54)];
        let mut p = vec![0.0f32; 738];
        assert_eq!(ARCH.num_params(), p.len());
        let mut filters = |l: usize, f: &dyn Fn(usize, usize) -> f32| {
            let (start, cols) = blocks[l];
            for (i, row) in p[start..start + 6 * cols].chunks_mut(cols).enumerate() {
                for (j, x) in row.iter_mut().enumerate() {
                    *x = f(i, j);
                }
            }
        };
        filters(0, &|i, j| if i == j { (i + 1) as f32 } else { 0.0 });
        filters(1, &|_, j| (j % 7) as f32 - 3.0);
        filters(2, &|i, j| match (i % 2, j % 2) {
            (0, 0) => 1.0 + i as f32,
            (1, 1) => -2.0,
            _ => 0.0,
        });
        let want = 30f64.sqrt() + 12f64.sqrt();
        let got = orthogonality_sum(ARCH, &p);
        assert!((got - want).abs() < 1e-12, "{got} vs √30 + √12 = {want}");
        let mut q = p.clone();
        UlProjection::MaxNorm(1e-3)
            .apply(ARCH, &mut q, &mut [], 0)
            .unwrap();
        assert!((orthogonality_sum(ARCH, &q) - want).abs() < 1e-6);
    }

    /// A block `spectral:C` cannot decompose is an error naming it; the blocks before it
    /// are projected, the ones after it untouched.
    #[test]
    fn a_block_that_cannot_be_projected_is_named() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut p: Vec<f32> = bda_cpu::conv4::init_params(&ARCH, &mut rng);
        for l in 0..ARCH.blocks {
            let (w, g, _) = ARCH.offsets(l);
            p[w..g].iter_mut().for_each(|x| *x *= 10.0);
        }
        let (w1, _, _) = ARCH.offsets(1);
        p[w1 + 3] = f32::NAN;
        let mut q = p.clone();
        let e = UlProjection::Spectral(0.5)
            .apply(ARCH, &mut q, &mut [], 0)
            .unwrap_err();
        assert_eq!(
            e,
            "--ul-projection spectral:0.5, block 1: the 6×6 Gram matrix is not finite (no eigendecomposition)"
        );
        let block = |v: &[f32], l| v[layer(ARCH, l).0].to_vec();
        assert_ne!(block(&q, 0), block(&p, 0));
        for l in 1..ARCH.blocks {
            let same = block(&q, l)
                .iter()
                .zip(block(&p, l))
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "block {l} changed");
        }
    }

    #[test]
    fn a_wrong_power_state_is_named() {
        let sn = UlProjection::Sn(1.0);
        assert!(sn.check_state(ARCH, &[]).is_err());
        assert!(sn.check_state(ARCH, &vec![vec![0.0; 5]; 3]).is_err());
        assert!(UlProjection::None.check_state(ARCH, &[]).is_ok());
        assert!(UlProjection::None.check_state(ARCH, &[vec![1.0]]).is_err());
    }
}
