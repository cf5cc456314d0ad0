//! Where episodes come from ([`Source`]): random images, or a split of an Omniglot- or
//! MiniImageNet-layout folder, opened and checked against the plan once.

use std::path::{Path, PathBuf};

use bda_kernel::fewshot::Task;
use rand_chacha::ChaCha8Rng;

use super::args::SplitArg;
use super::config::Plan;
use super::{data, miniimagenet};
use crate::config::DataSource;
use crate::error::CliError;

/// Episodes: random images (the peer's inputs), or a data split with its sampler, checked
/// once when the data are opened.
pub enum Source {
    /// Uniform random images.
    Synthetic {
        /// The episode shape.
        ways: usize,
        /// Support images per class.
        shots: usize,
        /// Query images per class.
        queries: usize,
        /// Pixels per image.
        pixels: usize,
    },
    /// A split loaded in memory, and its sampler.
    Data(data::EpisodeSampler<data::FewshotDataset>),
}

impl Source {
    /// Random images when the plan has no data, else the split `split` of its folder,
    /// checked to give episodes of the plan's shape and images of its backbone's input
    /// shape.
    pub fn open(plan: &Plan, split: SplitArg) -> Result<Source, CliError> {
        let cfg = &plan.cfg;
        let e = &cfg.episode;
        let (Some(d), Some(format)) = (cfg.data_dir.as_deref(), plan.format) else {
            return Ok(Source::Synthetic {
                ways: e.ways,
                shots: e.shots,
                queries: e.queries,
                pixels: cfg.arch.pixels(),
            });
        };
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
        let sampler = data::EpisodeSampler::new(ds, e.ways, e.shots, e.queries).map_err(|e| {
            CliError::input(format!(
                "{} ({} split): {e}",
                d.display(),
                split_name(split)
            ))
        })?;
        Ok(Source::Data(sampler))
    }

    /// One episode.
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> Task {
        match self {
            &Source::Synthetic {
                ways,
                shots,
                queries,
                pixels,
            } => data::synthetic_task(ways, shots, queries, pixels, rng),
            Source::Data(sampler) => sampler.sample(rng).task,
        }
    }

    /// `n` episodes.
    pub fn tasks(&self, n: usize, rng: &mut ChaCha8Rng) -> Vec<Task> {
        (0..n).map(|_| self.sample(rng)).collect()
    }

    /// The files read (none for random images).
    pub fn files(&self) -> &[PathBuf] {
        match self {
            Source::Synthetic { .. } => &[],
            Source::Data(sampler) => &sampler.dataset().files,
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

/// The split's name in messages and tables.
pub fn split_name(split: SplitArg) -> &'static str {
    match split {
        SplitArg::Train => "train",
        SplitArg::Val => "val",
        SplitArg::Test => "test",
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
