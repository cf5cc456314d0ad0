//! Checkpoints of a meta-training run: one JSON document (format name and version, run
//! settings, meta-step counter, episode RNG position, backbone parameters, Adam state,
//! loss/validation history), written to `FILE.tmp` and renamed over `FILE` so that an
//! interruption never leaves a half-written checkpoint. f32 values round-trip exactly
//! (serde_json prints the shortest representation that parses back to the same float).
//!
//! Version 2 names the step sizes as every report does (`ll_lr`, `ul_lr`) and keeps
//! accuracies in percent; version 3 adds the run's whole configuration, the hash of its
//! data and its `--save-every`, so that `--resume` continues it as it was. Versions 1 and
//! 2 are read (1 converted).

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::args::TrainConfig;
use super::config::{Plan, RunConfig, check_shape};
use crate::config::DataSource;
use crate::error::{CliError, one_line};
use crate::optim::Adam;
use crate::output::write_atomic;

/// The `format` field of every checkpoint.
pub const FORMAT: &str = "bda-fewshot-checkpoint";
/// The current version.
pub const VERSION: u32 = 3;

/// Position of the episode RNG: its seed and the ChaCha word position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    /// `seed_from_u64` seed.
    pub seed: u64,
    /// `get_word_pos()` as a decimal string (u128).
    pub word_pos: String,
}

impl RngState {
    /// The state of `rng`, which was created with `seed_from_u64(seed)`.
    pub fn of(seed: u64, rng: &ChaCha8Rng) -> RngState {
        RngState {
            seed,
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    /// The RNG at this state (the word position was checked when loading).
    pub fn restore(&self) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_word_pos(self.word_pos.parse().unwrap_or(0));
        rng
    }
}

/// Loss and validation curves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// `(meta-step, mean φ_K, mean query accuracy of y_K in %)` per meta-step.
    pub loss: Vec<(u64, f64, f64)>,
    /// `(meta-step, validation accuracy in %)`.
    pub val: Vec<(u64, f64)>,
    /// `(meta-step, orthogonality sum)` at the start and at every validation (absent in
    /// older checkpoints).
    #[serde(default)]
    pub ortho: Vec<(u64, f64)>,
    /// `(meta-step, tasks)`: the meta-steps whose batch had tasks where iMAML's
    /// conjugate-gradient solve stopped at non-positive curvature, numbered as `loss`
    /// (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cg_stops: Vec<(u64, u64)>,
}

/// Version 1 → 2: `lr`/`meta_lr` become `ll_lr`/`ul_lr`, accuracies become percent.
fn upgrade_v1(v: &mut serde_json::Value) {
    use serde_json::Value;
    if let Some(Value::Object(c)) = v.get_mut("config") {
        for (old, new) in [("lr", "ll_lr"), ("meta_lr", "ul_lr")] {
            if let Some(x) = c.remove(old) {
                c.insert(new.into(), x);
            }
        }
    }
    // Accuracy is column 2 of a loss row `(step, loss, acc)`, column 1 of `(step, acc)`.
    for (key, col) in [("loss", 2), ("val", 1)] {
        let rows = v["history"].get_mut(key).and_then(Value::as_array_mut);
        for row in rows.into_iter().flatten() {
            if let Some(a) = row.get_mut(col).filter(|a| a.is_number()) {
                *a = Value::from(100.0 * a.as_f64().unwrap_or(0.0));
            }
        }
    }
    v["version"] = Value::from(VERSION);
}

/// A meta-training run's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The run's settings.
    pub config: RunConfig,
    /// Meta-steps done.
    pub step: u64,
    /// The episode RNG after `step` meta-steps.
    pub rng: RngState,
    /// Backbone parameters.
    pub params: Vec<f32>,
    /// Adam state.
    pub adam: Adam<f32>,
    /// The power-iteration vectors of `--ul-projection sn:C`, one per block (empty
    /// otherwise, and in older checkpoints).
    #[serde(default)]
    pub power: Vec<Vec<f64>>,
    /// Curves so far.
    pub history: History,
    /// With `--patience`: the best validated backbone so far (absent otherwise, and in
    /// older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<Best>,
    /// The run's whole configuration, as its report records it: what `--resume` continues
    /// (absent before version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<TrainConfig>,
    /// The data it read (absent for random images, and before version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataSource>,
    /// `--save-every` of the run (absent before version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_every: Option<u64>,
}

/// The backbone with the highest validation accuracy so far (early stopping).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// Meta-step of the validation.
    pub step: u64,
    /// Validation accuracy, %.
    pub val_acc: f64,
    /// The backbone's parameters then.
    pub params: Vec<f32>,
}

impl Checkpoint {
    /// A run at meta-step 0.
    pub fn new(config: RunConfig, params: Vec<f32>, adam: Adam<f32>, rng: RngState) -> Checkpoint {
        Checkpoint {
            format: FORMAT.into(),
            version: VERSION,
            config,
            step: 0,
            rng,
            params,
            adam,
            power: Vec::new(),
            history: History::default(),
            best: None,
            run: None,
            data: None,
            save_every: None,
        }
    }

    /// Write atomically: `path.tmp`, then rename.
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let fail = |e: &dyn std::fmt::Display| {
            CliError::input(format!("{}: cannot write checkpoint: {e}", path.display()))
        };
        let text = serde_json::to_vec(self).map_err(|e| fail(&e))?;
        write_atomic(path, &text).map_err(|e| fail(&e))
    }

    /// Read and check a checkpoint, and the plan of its run; any problem is one line
    /// (exit 2).
    pub fn load(path: &Path) -> Result<(Checkpoint, Plan), CliError> {
        let bad = |m: String| CliError::input(format!("{}: {m}", path.display()));
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read checkpoint: {e}")))?;
        let ck = Checkpoint::parse(&bytes).map_err(bad)?;
        let plan = ck
            .config
            .clone()
            .check()
            .map_err(|e| bad(format!("corrupt checkpoint: {e}")))?;
        Ok((ck, plan))
    }

    /// A checkpoint from the bytes of its file, with everything checked that needs no file
    /// system (the run's settings are checked by [`Checkpoint::load`], which may look at the
    /// data folder): format and version, the backbone's shape (against
    /// [`super::config::MAX_SHAPE`], before any size is computed from it), then the lengths of
    /// the parameters and of Adam's moments, finite values, the RNG position, the
    /// best-validated backbone and the power-iteration state. An error is one line, without
    /// the file's name.
    pub fn parse(bytes: &[u8]) -> Result<Checkpoint, String> {
        let corrupt = |m: &dyn std::fmt::Display| one_line(&format!("corrupt checkpoint: {m}"));
        let mut head: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| one_line(&format!("not a checkpoint (corrupt JSON: {e})")))?;
        if head.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(format!("not a {FORMAT} file"));
        }
        let version = head.get("version").and_then(|v| v.as_u64());
        if version == Some(1) {
            upgrade_v1(&mut head);
        } else if !matches!(version, Some(2 | 3)) {
            return Err(format!(
                "checkpoint version {} is not supported (expected {VERSION})",
                version.map_or("?".into(), |v| v.to_string())
            ));
        }
        let ck: Checkpoint = serde_json::from_value(head).map_err(|e| corrupt(&e))?;
        check_shape(&ck.config.arch).map_err(|e| corrupt(&e))?;
        let Some(n) = ck.config.meta_params() else {
            return Err(corrupt(&"the network's size overflows"));
        };
        if ck.params.len() != n || ck.adam.m.len() != n || ck.adam.v.len() != n {
            return Err(corrupt(&format!(
                "{} parameters for a {} run of {n}",
                ck.params.len(),
                ck.config.method_name()
            )));
        }
        if ck.rng.word_pos.parse::<u128>().is_err() {
            return Err(corrupt(&"bad RNG position"));
        }
        if ck
            .best
            .as_ref()
            .is_some_and(|b| b.params.len() != n || b.params.iter().any(|p| !p.is_finite()))
        {
            return Err(corrupt(&"bad best-validated parameters"));
        }
        if ck.params.iter().any(|p| !p.is_finite()) {
            return Err(corrupt(&"non-finite parameters"));
        }
        // Adam divides by √v: a negative or non-finite moment would make every step NaN.
        let (m, v) = (&ck.adam.m, &ck.adam.v);
        if m.iter().any(|x| !x.is_finite()) || v.iter().any(|x| !(x.is_finite() && *x >= 0.0)) {
            return Err(corrupt(&"bad Adam moments"));
        }
        let proj = ck.config.ul_projection;
        proj.check_state(ck.config.arch, &ck.power)
            .map_err(|e| corrupt(&e))?;
        Ok(ck)
    }
}

/// What the checkpoint reader promises on any bytes (the `checkpoint` fuzz target and the
/// corpus test): no panic, and no loop or allocation sized by the numbers in the file
/// rather than by its length; an accepted checkpoint has a shape within
/// [`super::config::MAX_SHAPE`], parameters and Adam moments of that shape's length, finite
/// values, and writes back to bytes that read back to the same checkpoint; the check of its
/// settings (when that needs no data folder) gives a plan or one line; an error is one
/// non-empty line.
pub fn check_checkpoint_invariants(bytes: &[u8]) {
    match Checkpoint::parse(bytes) {
        Ok(ck) => {
            assert_eq!(check_shape(&ck.config.arch), Ok(()));
            let n = ck.config.meta_params().expect("checked");
            assert!(ck.params.len() == n && ck.adam.m.len() == n && ck.adam.v.len() == n);
            assert!(ck.params.iter().all(|p| p.is_finite()));
            let text = serde_json::to_vec(&ck).expect("a checkpoint serialises");
            assert_eq!(Checkpoint::parse(&text).as_ref(), Ok(&ck), "round trip");
            if ck.config.data_dir.is_none() || ck.config.format.is_some() {
                if let Err(e) = ck.config.clone().check() {
                    super::image::assert_one_line(&e.to_string());
                }
            }
        }
        Err(m) => super::image::assert_one_line(&m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fewshot::args::{EpisodeArgs, FsMethod};
    use bda_kernel::fewshot::Conv4Shape;

    /// A fresh checkpoint of a 2-channel, 1-block backbone on 4×4 images, as JSON.
    fn small() -> serde_json::Value {
        let arch = Conv4Shape {
            channels: 2,
            in_channels: 1,
            side: 4,
            blocks: 1,
        };
        let episode = EpisodeArgs {
            ways: 2,
            shots: 1,
            queries: 1,
            meta_batch: 1,
            method: FsMethod::Bda,
            k: 2,
            first_order: false,
            lambda: 2.0,
            cg_iters: 5,
        };
        let n = arch.num_params();
        let ck = Checkpoint::new(
            RunConfig::untrained(episode, arch, 0),
            vec![0.5; n],
            Adam::new(1e-3, n),
            RngState::of(0, &ChaCha8Rng::seed_from_u64(0)),
        );
        serde_json::to_value(&ck).unwrap()
    }

    #[test]
    fn a_small_checkpoint_reads_back_and_keeps_its_invariants() {
        let bytes = serde_json::to_vec(&small()).unwrap();
        let ck = Checkpoint::parse(&bytes).unwrap();
        assert_eq!(ck.params.len(), 2 * 9 + 4);
        check_checkpoint_invariants(&bytes);
    }

    #[test]
    fn adam_moments_that_would_poison_every_step_are_refused() {
        for (key, value) in [("v", -1.0), ("m", 1e39)] {
            let mut v = small();
            v["adam"][key][0] = value.into();
            let e = Checkpoint::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
            assert_eq!(e, "corrupt checkpoint: bad Adam moments", "{key}");
        }
    }
}
