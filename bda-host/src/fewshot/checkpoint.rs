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
use super::config::{Plan, RunConfig};
use crate::config::DataSource;
use crate::error::CliError;
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
        let mut head: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("not a checkpoint (corrupt JSON: {e})")))?;
        if head.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(bad(format!("not a {FORMAT} file")));
        }
        let version = head.get("version").and_then(|v| v.as_u64());
        if version == Some(1) {
            upgrade_v1(&mut head);
        } else if !matches!(version, Some(2 | 3)) {
            return Err(bad(format!(
                "checkpoint version {} is not supported (expected {VERSION})",
                version.map_or("?".into(), |v| v.to_string())
            )));
        }
        let ck: Checkpoint =
            serde_json::from_value(head).map_err(|e| bad(format!("corrupt checkpoint: {e}")))?;
        let n = ck.config.arch.num_params();
        if ck.params.len() != n || ck.adam.m.len() != n || ck.adam.v.len() != n {
            return Err(bad(format!(
                "corrupt checkpoint: {} parameters for an architecture of {n}",
                ck.params.len()
            )));
        }
        if ck.rng.word_pos.parse::<u128>().is_err() {
            return Err(bad("corrupt checkpoint: bad RNG position".into()));
        }
        if ck
            .best
            .as_ref()
            .is_some_and(|b| b.params.len() != n || b.params.iter().any(|p| !p.is_finite()))
        {
            return Err(bad(
                "corrupt checkpoint: bad best-validated parameters".into()
            ));
        }
        if ck.params.iter().any(|p| !p.is_finite()) {
            return Err(bad("corrupt checkpoint: non-finite parameters".into()));
        }
        let proj = ck.config.ul_projection;
        proj.check_state(ck.config.arch, &ck.power)
            .map_err(|e| bad(format!("corrupt checkpoint: {e}")))?;
        let plan = ck
            .config
            .clone()
            .check()
            .map_err(|e| bad(format!("corrupt checkpoint: {e}")))?;
        Ok((ck, plan))
    }
}
