//! The settings of a few-shot run as checkpoints store them ([`RunConfig`]), and their one
//! check ([`RunConfig::check`]): what the commands run is the [`Plan`] it returns, with the
//! head's method built once.

use std::path::{Path, PathBuf};

use bda_kernel::backend::{MethodConfig, default_truncate};
use bda_kernel::fewshot::{Conv4Shape, HeadProcedure, Network, NetworkProcedure};
use bda_kernel::{Beta, Schedule};
use serde::{Deserialize, Serialize};

use super::args::{EpisodeArgs, FsMethod, SourceArgs};
use super::data;
use super::projection::UlProjection;
use crate::check::{StepFlags, positive, spec_error};
use crate::error::CliError;

/// The largest backbone a run, a checkpoint or a `--config` file may describe: 16 times the
/// papers' 64 channels, 16 input channels (images have 1 or 3), 1024-pixel images (the
/// datasets have 28 and 84) and 16 blocks (conv4 has 4). A file's sizes are checked
/// against it before anything is computed from them (a parameter count, a buffer), so a
/// corrupt or hostile file gives a one-line error, not an overflow, a loop of its choosing
/// or an allocation of its choosing.
pub const MAX_SHAPE: Conv4Shape = Conv4Shape {
    channels: 1024,
    in_channels: 16,
    side: 1024,
    blocks: 16,
};

/// `Ok` when every size of `arch` is in `1..=` its bound in [`MAX_SHAPE`]; else one line
/// naming the first that is not.
pub fn check_shape(arch: &Conv4Shape) -> Result<(), String> {
    let m = MAX_SHAPE;
    for (name, v, max) in [
        ("channels", arch.channels, m.channels),
        ("input channels", arch.in_channels, m.in_channels),
        ("image side", arch.side, m.side),
        ("blocks", arch.blocks, m.blocks),
    ] {
        if !(1..=max).contains(&v) {
            return Err(format!("the backbone's {name} {v} is outside 1..={max}"));
        }
    }
    Ok(())
}

/// A checked run: its settings, how each task's head is fitted and differentiated (in the
/// backends' `f32`), and the layout of its data (detected once).
#[derive(Clone, Debug)]
pub struct Plan {
    /// The settings.
    pub cfg: RunConfig,
    /// The head's procedure in training (the evaluation's is [`HeadProcedure::evaluation`]).
    pub head: HeadProcedure,
    /// The data's layout (`None` for random images).
    pub format: Option<data::DataFormat>,
}

/// Settings of a run, stored in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Episode shape and method.
    #[serde(flatten)]
    pub episode: EpisodeArgs,
    /// T of T-RHG.
    pub truncate: u32,
    /// Head step size.
    pub ll_lr: f64,
    /// μ.
    pub mu: f64,
    /// α.
    pub alpha: f64,
    /// Head L2.
    pub l2: f64,
    /// Adam step size.
    pub ul_lr: f64,
    /// Proj_X on the convolution weights (absent in older checkpoints: none).
    #[serde(default)]
    pub ul_projection: UlProjection,
    /// Seed.
    pub seed: u64,
    /// Data folder (`None`: synthetic).
    pub data_dir: Option<PathBuf>,
    /// Layout of the data folder (absent in older checkpoints: detected).
    #[serde(default)]
    pub format: Option<data::DataFormat>,
    /// Class rotations (Omniglot).
    pub rotations: bool,
    /// Omniglot characters held out of the background split for validation (0: validate
    /// on the evaluation split; absent in older checkpoints).
    #[serde(default)]
    pub val_classes: usize,
    /// Backbone shape.
    pub arch: Conv4Shape,
    /// Keep every c-th lower-level iterate for the reverse pass (absent in older
    /// checkpoints: every iterate).
    #[serde(default)]
    pub checkpoint_every: Option<u32>,
}

impl RunConfig {
    /// The lower level's method: `s_u = s_l = ll_lr`, `β_k = 1`, as the peer (Meta-SGD:
    /// `s_l = 1`, its step sizes are in `x`).
    pub fn method_config(&self) -> MethodConfig<f64> {
        let method = self.episode.effective_method();
        let step = match method {
            FsMethod::Metasgd => 1.0,
            _ => self.ll_lr,
        };
        MethodConfig {
            truncate: Some(self.truncate),
            mu: self.mu,
            alpha: Schedule::Harmonic(self.alpha),
            beta: Beta::Schedule(Schedule::Constant(1.0)),
            cg_iters: self.episode.cg_iters,
            checkpoint_every: self.checkpoint_every,
            ..MethodConfig::new(method.kernel(), self.episode.k, step)
        }
    }

    /// The whole network as the lower level: its procedure (`None` for the head methods).
    pub fn network(&self) -> Option<NetworkProcedure> {
        let method = self.episode.effective_method();
        method.network_rule().map(|rule| NetworkProcedure {
            rule,
            prox: if method == FsMethod::Imaml {
                self.episode.lambda
            } else {
                0.0
            },
        })
    }

    /// Length of the meta-parameters: the backbone's, or for the whole-network methods
    /// every weight of the network (and Meta-SGD's step sizes); `None` when a file's sizes
    /// overflow.
    pub fn meta_params(&self) -> Option<usize> {
        let Some(p) = self.network() else {
            return Some(self.arch.num_params());
        };
        let head = self
            .arch
            .features()
            .checked_add(1)?
            .checked_mul(self.episode.ways)?;
        let weights = self.arch.num_params().checked_add(head)?;
        weights.checked_mul(p.meta_params(1))
    }

    /// The settings of a backbone that no run trained (a random one, or the benchmark's):
    /// episodes of `episode`'s shape, the default lower-level step ([`default_step`]), Adam
    /// step 1e-3, T = K/2.
    pub fn untrained(episode: EpisodeArgs, arch: Conv4Shape, seed: u64) -> RunConfig {
        RunConfig {
            truncate: default_truncate(episode.k),
            ll_lr: default_step(arch, episode.effective_method()),
            episode,
            mu: 0.5,
            alpha: 0.5,
            l2: 0.0,
            ul_lr: 1e-3,
            ul_projection: UlProjection::default(),
            seed,
            data_dir: None,
            format: None,
            rotations: false,
            val_classes: 0,
            arch,
            checkpoint_every: None,
        }
    }

    /// Check everything once; errors name the flag (exit 2). The head's method is built
    /// here, in `f64` and in the backends' `f32`.
    pub fn check(self) -> Result<Plan, CliError> {
        let bad = |m: String| Err(CliError::input(m));
        let e = &self.episode;
        if e.ways < 2 || e.ways > 255 {
            return bad(format!("--ways {}: must be in 2..=255", e.ways));
        }
        for (flag, v) in [
            ("--shots", e.shots),
            ("--queries", e.queries),
            ("--meta-batch", e.meta_batch),
            ("--channels", self.arch.channels),
        ] {
            if v == 0 {
                return bad(format!("{flag} 0: must be positive"));
            }
        }
        if self.arch.channels > MAX_SHAPE.channels {
            return bad(format!(
                "--channels {}: at most {}",
                self.arch.channels, MAX_SHAPE.channels
            ));
        }
        check_shape(&self.arch).map_err(CliError::input)?;
        positive("ul-lr", self.ul_lr)?;
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad(format!("--l2 {}: must be finite and ≥ 0", self.l2));
        }
        let method = self.episode.effective_method();
        if e.first_order && e.method != FsMethod::Maml {
            return bad(format!(
                "--first-order: only with --method maml (first-order MAML), not {}",
                e.method.name()
            ));
        }
        if method == FsMethod::Imaml && !(e.lambda.is_finite() && e.lambda > 0.0) {
            return bad(format!("--lambda {}: must be finite and > 0", e.lambda));
        }
        if method == FsMethod::Imaml && e.cg_iters == 0 {
            return bad("--cg-iters 0: must be positive".into());
        }
        if self.checkpoint_every == Some(0) {
            return bad("--checkpoint-every 0: must be positive".into());
        }
        let named = |e| spec_error(e, StepFlags::Shared);
        let spec = self.method_config().build().map_err(named)?;
        let head = HeadProcedure {
            spec: spec.cast::<f32>().map_err(named)?,
            l2: self.l2 as f32,
            network: self.network(),
        };
        let format = data_format(self.data_dir.as_deref(), self.format)?;
        Ok(Plan {
            cfg: self,
            head,
            format,
        })
    }

    /// `--method`'s name (`fomaml` for `maml --first-order`).
    pub fn method_name(&self) -> &'static str {
        self.episode.effective_method().name()
    }

    /// The whole network for tasks of this run's ways.
    pub fn network_of(&self) -> Network {
        Network {
            shape: self.arch,
            ways: self.episode.ways,
        }
    }

    /// The source options that give this run's data.
    pub fn source(&self) -> SourceArgs {
        SourceArgs {
            data_dir: self.data_dir.clone(),
            format: self.format,
            synthetic: self.data_dir.is_none(),
            val_classes: self.val_classes,
            no_rotations: !self.rotations,
        }
    }

    /// The data folder, or `synthetic`.
    pub fn data_name(&self) -> String {
        self.data_dir
            .as_ref()
            .map_or_else(|| "synthetic".to_string(), |d| d.display().to_string())
    }
}

/// The initial meta-parameters: the backbone (PyTorch's initialisation, drawn first, so
/// that the head methods draw what they always drew), then for the whole network the head's
/// `W` and `b` uniform in ±1/√features (PyTorch's `Linear`), then Meta-SGD's step sizes,
/// all `ll_lr`.
pub fn init_meta_params(cfg: &RunConfig, rng: &mut impl rand::Rng) -> Vec<f32> {
    let mut p: Vec<f32> = bda_cpu::conv4::init_params(&cfg.arch, rng);
    if let Some(procedure) = cfg.network() {
        let net = cfg.network_of();
        let bound = 1.0 / (cfg.arch.features() as f64).sqrt();
        p.extend((0..net.num_params() - p.len()).map(|_| rng.random_range(-bound..bound) as f32));
        let steps = procedure.meta_params(net.num_params()) - p.len();
        p.extend(std::iter::repeat_n(cfg.ll_lr as f32, steps));
    }
    p
}

/// The layout of `dir`: `format` if given, else detected; `None` without a folder.
pub fn data_format(
    dir: Option<&Path>,
    format: Option<data::DataFormat>,
) -> Result<Option<data::DataFormat>, CliError> {
    match (dir, format) {
        (None, _) => Ok(None),
        (Some(_), Some(f)) => Ok(Some(f)),
        (Some(d), None) => Ok(Some(data::DataFormat::detect(d)?)),
    }
}

/// The head's step size when `--ll-lr` is not given: `25.6 / features`, at most 0.1. The
/// head's cross-entropy has curvature proportional to the squared norm of its
/// (batch-normed) features, which grows with their number, so a step that is stable for
/// 256 features (0.1, the peer's on Omniglot) must shrink with more: 0.0222 for
/// MiniImageNet's 1152 (84×84 RGB, 32 channels), where 0.1 leaves the query loss above a
/// uniform guess. It is not raised above 0.1 for fewer features: on the kanji stand-in
/// with 128 features, 0.1 already validated worse than 0.02.
pub fn default_ll_lr(arch: Conv4Shape) -> f64 {
    default_step(arch, FsMethod::Rhg)
}

/// The lower level's step when `--ll-lr`/`--inner-lr` is not given: the head's
/// ([`default_ll_lr`]), or 0.4 for the whole network (the peer's and MAML's Omniglot
/// step).
pub fn default_step(arch: Conv4Shape, method: FsMethod) -> f64 {
    if method.network_rule().is_some() {
        return 0.4;
    }
    let step = (25.6 / arch.features() as f64).min(0.1);
    // Three significant digits, so that reports and checkpoints read cleanly.
    let scale = 10f64.powi(2 - step.log10().floor() as i32);
    (step * scale).round() / scale
}

/// The backbone for `channels` convolution channels on the images of `format` (Omniglot's
/// 1×28×28 for random images).
pub fn arch_for(format: Option<data::DataFormat>, channels: usize) -> Conv4Shape {
    let (in_channels, side) = format.map_or((1, data::SIDE), data::DataFormat::image_shape);
    Conv4Shape {
        channels,
        in_channels,
        side,
        ..Conv4Shape::CONV4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_head_step_shrinks_with_the_features_up_to_the_peers() {
        assert_eq!(default_ll_lr(Conv4Shape::CONV4), 0.1);
        let mini = Conv4Shape {
            channels: 32,
            in_channels: 3,
            side: 84,
            ..Conv4Shape::CONV4
        };
        assert_eq!(mini.features(), 1152);
        assert_eq!(default_ll_lr(mini), 0.0222);
        let wide = Conv4Shape {
            channels: 64,
            ..mini
        };
        assert_eq!(default_ll_lr(wide), 0.0111);
        // Fewer features than the peer's 256: not above its 0.1.
        let narrow = Conv4Shape {
            channels: 32,
            ..Conv4Shape::CONV4
        };
        assert_eq!(narrow.features(), 128);
        assert_eq!(default_ll_lr(narrow), 0.1);
    }

    #[test]
    fn shapes_beyond_the_bound_are_named() {
        assert!(check_shape(&Conv4Shape::CONV4).is_ok());
        assert!(check_shape(&MAX_SHAPE).is_ok());
        for (arch, want) in [
            (
                Conv4Shape {
                    blocks: 1 << 40,
                    ..Conv4Shape::CONV4
                },
                "the backbone's blocks 1099511627776 is outside 1..=16",
            ),
            (
                Conv4Shape {
                    side: 0,
                    ..Conv4Shape::CONV4
                },
                "the backbone's image side 0 is outside 1..=1024",
            ),
            (
                Conv4Shape {
                    in_channels: 17,
                    ..Conv4Shape::CONV4
                },
                "the backbone's input channels 17 is outside 1..=16",
            ),
        ] {
            assert_eq!(check_shape(&arch).unwrap_err(), want);
        }
    }
}
