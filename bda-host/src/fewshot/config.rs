//! The settings of a meta-training run as checkpoints store them ([`RunConfig`]), checked in
//! one place, and where episodes come from ([`Source`]).

use std::path::{Path, PathBuf};

use bda_kernel::backend::{MethodConfig, Param};
use bda_kernel::{Beta, Schedule};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::args::{EpisodeArgs, SourceArgs, SplitArg};
use super::conv4::Arch;
use super::data;
use super::meta::{HeadProcedure, Task};
use super::miniimagenet;
use super::projection::UlProjection;
use crate::config::DataSource;
use crate::error::CliError;

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
    pub arch: Arch,
}

impl RunConfig {
    /// The head's method: `s_u = s_l = ll_lr`, `β_k = 1`, as the peer.
    pub fn method_config(&self) -> MethodConfig<f64> {
        MethodConfig {
            truncate: Some(self.truncate),
            mu: self.mu,
            alpha: Schedule::Harmonic(self.alpha),
            beta: Beta::Schedule(Schedule::Constant(1.0)),
            ..MethodConfig::new(self.episode.method.kernel(), self.episode.k, self.ll_lr)
        }
    }

    /// How each task's head is fitted and differentiated (checked by [`RunConfig::validate`]).
    pub fn head(&self) -> Result<HeadProcedure, CliError> {
        let spec = self.method_config().build().map_err(|e| {
            let flag = match e.param {
                Param::Steps => "--K",
                Param::Truncate => "--truncate",
                Param::Mu => "--mu",
                Param::Alpha => "--alpha",
                Param::StepUpper | Param::StepLower => "--ll-lr",
                Param::Beta | Param::CgIters | Param::FdEps | Param::CheckpointEvery => {
                    e.param.name()
                }
            };
            CliError::input(e.describe(flag).to_string())
        })?;
        Ok(HeadProcedure { spec, l2: self.l2 })
    }

    /// Check everything; errors name the flag (exit 2).
    pub fn validate(&self) -> Result<(), CliError> {
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
        if !(self.ul_lr.is_finite() && self.ul_lr > 0.0) {
            return bad(format!(
                "--ul-lr {}: must be positive and finite",
                self.ul_lr
            ));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad(format!("--l2 {}: must be finite and ≥ 0", self.l2));
        }
        self.head().map(drop)
    }

    /// `bda`, `rhg` or `trhg`.
    pub fn method_name(&self) -> &'static str {
        self.episode.method.kernel().name()
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

    /// The layout of the data folder (`None` for random images): the stored one, else
    /// detected.
    pub fn data_format(&self) -> Result<Option<data::DataFormat>, CliError> {
        data_format(self.data_dir.as_deref(), self.format)
    }

    /// The data folder, or `synthetic`.
    pub fn data_name(&self) -> String {
        self.data_dir
            .as_ref()
            .map_or_else(|| "synthetic".to_string(), |d| d.display().to_string())
    }
}

/// Episodes: random images (the peer's inputs), or a data split.
pub enum Source {
    /// Uniform random images.
    Synthetic {
        /// Pixels per image.
        pixels: usize,
    },
    /// An Omniglot-layout split, loaded in memory.
    Data(data::FewshotDataset),
}

impl Source {
    /// Random images when `data_dir` is `None`, else the split `split` of the folder,
    /// checked to give episodes of `cfg`'s shape and images of its backbone's input shape.
    pub fn open(
        data_dir: Option<&Path>,
        split: SplitArg,
        cfg: &RunConfig,
    ) -> Result<Source, CliError> {
        let Some(d) = data_dir else {
            return Ok(Source::Synthetic {
                pixels: cfg.arch.pixels(),
            });
        };
        let format = data_format(Some(d), cfg.format)?.expect("a data folder has a format");
        let ds = match format {
            data::DataFormat::Omniglot => {
                let ds =
                    data::load_omniglot(d, omniglot_split(split, cfg.val_classes), cfg.rotations)?;
                match (split, cfg.val_classes) {
                    (SplitArg::Test, _) | (_, 0) => ds,
                    (_, n) => {
                        hold_out(ds, n, cfg.rotations, split == SplitArg::Val).map_err(|m| {
                            CliError::input(format!("--val-classes {n}: {}: {m}", d.display()))
                        })?
                    }
                }
            }
            data::DataFormat::Miniimagenet if cfg.val_classes > 0 => {
                return Err(CliError::input(format!(
                    "--val-classes {}: {} is in the MiniImageNet layout, which has its own val split",
                    cfg.val_classes,
                    d.display()
                )));
            }
            data::DataFormat::Miniimagenet => {
                let split = match split {
                    SplitArg::Train => miniimagenet::Split::Train,
                    SplitArg::Val => miniimagenet::Split::Val,
                    SplitArg::Test => miniimagenet::Split::Test,
                };
                miniimagenet::load_miniimagenet(d, split)?
            }
        };
        let a = &cfg.arch;
        if (ds.channels, ds.side) != (a.in_channels, a.side) {
            return Err(CliError::input(format!(
                "{}: images are {}×{s}×{s}, the backbone expects {}×{t}×{t}",
                d.display(),
                ds.channels,
                a.in_channels,
                s = ds.side,
                t = a.side
            )));
        }
        let e = &cfg.episode;
        data::EpisodeSampler::new(&ds, e.ways, e.shots, e.queries).map_err(|e| {
            CliError::input(format!(
                "{} ({} split): {e}",
                d.display(),
                split_name(split)
            ))
        })?;
        Ok(Source::Data(ds))
    }

    /// One episode of `c`'s shape.
    pub fn sample(&self, c: &RunConfig, rng: &mut ChaCha8Rng) -> Task {
        let c = &c.episode;
        match self {
            Source::Synthetic { pixels } => {
                Task::synthetic(c.ways, c.shots, c.queries, *pixels, rng)
            }
            Source::Data(ds) => {
                // Checked in `open`.
                let sampler = data::EpisodeSampler::new(ds, c.ways, c.shots, c.queries)
                    .expect("episode shape checked when the data was opened");
                sampler.sample(rng).task
            }
        }
    }

    /// The files read (none for random images).
    pub fn files(&self) -> &[PathBuf] {
        match self {
            Source::Synthetic { .. } => &[],
            Source::Data(ds) => &ds.files,
        }
    }
}

/// The Omniglot folder read for a split: validation reads `images_background` when
/// characters are held out of it (`val_classes > 0`), else `images_evaluation` as the test.
pub fn omniglot_split(split: SplitArg, val_classes: usize) -> data::Split {
    match split {
        SplitArg::Train => data::Split::Background,
        SplitArg::Val if val_classes > 0 => data::Split::Background,
        SplitArg::Val | SplitArg::Test => data::Split::Evaluation,
    }
}

/// The last `n` characters of an Omniglot background split (`val`), or all the others
/// (training). With rotations a character is four adjacent classes, kept together.
fn hold_out(
    mut ds: data::FewshotDataset,
    n: usize,
    rotations: bool,
    val: bool,
) -> Result<data::FewshotDataset, String> {
    let per = if rotations { 4 } else { 1 };
    let chars = ds.classes.len() / per;
    if n >= chars {
        return Err(format!(
            "the background split has {chars} characters, at least one must stay for training"
        ));
    }
    let cut = (chars - n) * per;
    ds.classes = if val {
        ds.classes.split_off(cut)
    } else {
        ds.classes.truncate(cut);
        ds.classes
    };
    Ok(ds)
}

fn split_name(split: SplitArg) -> &'static str {
    match split {
        SplitArg::Train => "train",
        SplitArg::Val => "val",
        SplitArg::Test => "test",
    }
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

/// The backbone for `channels` convolution channels on the images of `format` (Omniglot's
/// 1×28×28 for random images).
pub fn arch_for(format: Option<data::DataFormat>, channels: usize) -> Arch {
    let (in_channels, side) = format.map_or((1, data::SIDE), data::DataFormat::image_shape);
    Arch {
        channels,
        in_channels,
        side,
        ..Arch::CONV4
    }
}

/// The data behind `sources` (all from the folder `dir`), hashed; `None` for random images.
pub fn data_source(
    dir: Option<&Path>,
    sources: &[&Source],
) -> Result<Option<DataSource>, CliError> {
    let Some(dir) = dir else { return Ok(None) };
    let files: Vec<PathBuf> = sources
        .iter()
        .flat_map(|s| s.files().iter().cloned())
        .collect();
    DataSource::of_files(dir, &files).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(classes: usize) -> data::FewshotDataset {
        data::FewshotDataset {
            classes: (0..classes)
                .map(|k| data::ClassImages {
                    name: format!("c{k}"),
                    images: vec![k as f32; 4],
                    n: 1,
                })
                .collect(),
            side: 2,
            channels: 1,
            files: Vec::new(),
        }
    }

    #[test]
    fn held_out_characters_keep_their_rotations_together() {
        // 5 characters × 4 rotations: the last 2 characters are validation.
        let names = |ds: data::FewshotDataset| -> Vec<String> {
            ds.classes.into_iter().map(|c| c.name).collect()
        };
        let val = names(hold_out(dataset(20), 2, true, true).unwrap());
        let train = names(hold_out(dataset(20), 2, true, false).unwrap());
        assert_eq!(val, (12..20).map(|k| format!("c{k}")).collect::<Vec<_>>());
        assert_eq!(train.len(), 12);
        assert!(train.iter().all(|t| !val.contains(t)));
        // Without rotations a character is one class.
        assert_eq!(
            hold_out(dataset(5), 2, false, true).unwrap().classes.len(),
            2
        );
        // Every character held out: an error, not an empty training split.
        let e = hold_out(dataset(20), 5, true, false).unwrap_err();
        assert!(e.contains("has 5 characters"), "{e}");
    }
}
