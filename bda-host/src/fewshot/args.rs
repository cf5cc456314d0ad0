//! The options of `bda fewshot`, `bda fewshot eval` and `bda fewshot bench`: each command's
//! configuration (recorded in its report, read back by `--config`) and its output options.
//! Keys are shared with the other commands where the quantity is the same: `ul_iters` and
//! `ul_lr` (the meta-steps and Adam's step, `--meta-steps`/`--meta-lr` as aliases), `ll_lr`
//! (the head's step, alias `--lr`), `K`, `truncate`, `mu`, `alpha`.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use bda_kernel::fewshot::NetworkRule;

use super::data::DataFormat;
use super::projection::UlProjection;
use crate::config::OutputArgs;
use crate::device::PlaceArgs;

/// Meta-training methods of `--method`: the head as the lower level (`bda`, `rhg`, `trhg`,
/// the papers' few-shot experiments) or the whole network (the MAML family and `bda-net`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsMethod {
    /// Bi-level Descent Aggregation: head steps aggregate ∇F (query) and ∇f (support).
    Bda,
    /// Reverse-mode hypergradient through K plain head steps on the support loss.
    Rhg,
    /// RHG back-propagated through the last T steps only (training's `--truncate`; K/2 in
    /// the benchmark).
    Trhg,
    /// MAML: K steps of the whole network from the meta-learned initialisation, second
    /// order through them (RHG with y₀ = x; `rhg-net` is the same method).
    #[value(alias = "rhg-net")]
    #[serde(alias = "rhg-net")]
    Maml,
    /// First-order MAML: the query gradient at the adapted weights.
    Fomaml,
    /// Meta-SGD: MAML with a learned step size per weight (initialised to `--inner-lr`).
    Metasgd,
    /// Reptile: the optimizer steps along x − y_K.
    Reptile,
    /// iMAML: inner problem support loss + λ/2‖y − x‖² (`--lambda`), meta-gradient
    /// (I + H/λ)⁻¹∇F by `--cg-iters` conjugate-gradient steps.
    Imaml,
    /// BDA with the whole network as y: Eq. (9)'s aggregated steps from y₀ = x.
    BdaNet,
}

impl FsMethod {
    /// The kernel's method that runs the lower level (and, for MAML, iMAML and `bda-net`,
    /// the meta-gradient).
    pub fn kernel(self) -> bda_kernel::Method {
        use bda_kernel::Method;
        match self {
            FsMethod::Bda | FsMethod::BdaNet => Method::Bda,
            FsMethod::Trhg => Method::Trhg,
            FsMethod::Imaml => Method::Ihg,
            FsMethod::Rhg
            | FsMethod::Maml
            | FsMethod::Fomaml
            | FsMethod::Metasgd
            | FsMethod::Reptile => Method::Rhg,
        }
    }

    /// How the meta-gradient is formed when the whole network is the lower level; `None`
    /// for the head methods.
    pub fn network_rule(self) -> Option<NetworkRule> {
        match self {
            FsMethod::Bda | FsMethod::Rhg | FsMethod::Trhg => None,
            FsMethod::Maml | FsMethod::Imaml | FsMethod::BdaNet => Some(NetworkRule::Hypergradient),
            FsMethod::Metasgd => Some(NetworkRule::PerWeightSteps),
            FsMethod::Fomaml => Some(NetworkRule::FirstOrder),
            FsMethod::Reptile => Some(NetworkRule::Reptile),
        }
    }

    /// The name reports use (`--method`'s value).
    pub fn name(self) -> &'static str {
        match self {
            FsMethod::Bda => "bda",
            FsMethod::Rhg => "rhg",
            FsMethod::Trhg => "trhg",
            FsMethod::Maml => "maml",
            FsMethod::Fomaml => "fomaml",
            FsMethod::Metasgd => "metasgd",
            FsMethod::Reptile => "reptile",
            FsMethod::Imaml => "imaml",
            FsMethod::BdaNet => "bda-net",
        }
    }
}

/// Which split of the data to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitArg {
    /// Meta-training classes (Omniglot: `images_background`; MiniImageNet: `train`).
    #[value(alias = "background")]
    #[serde(alias = "background")]
    Train,
    /// Validation classes (MiniImageNet: `val`; Omniglot: the `--val-classes` characters
    /// held out of `images_background`, else `images_evaluation`).
    #[value(alias = "validation")]
    Val,
    /// Meta-test classes (Omniglot: `images_evaluation`; MiniImageNet: `test`).
    #[value(alias = "evaluation")]
    #[serde(alias = "evaluation")]
    Test,
}

/// Arguments of `bda fewshot` (meta-training) and its subcommands.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FewshotArgs {
    /// `eval` or `bench`; without one, meta-train.
    #[command(subcommand)]
    pub command: Option<FewshotCommand>,
    /// Meta-training flags.
    #[command(flatten)]
    pub train: TrainArgs,
}

/// Subcommands of `bda fewshot`.
#[derive(Subcommand, Debug)]
pub enum FewshotCommand {
    /// Test a backbone (a checkpoint, or a random one) on episodes, with a 95% CI.
    Eval(EvalArgs),
    /// Time meta-steps on random inputs with the PyTorch peer's shapes.
    Bench(BenchArgs),
}

/// Meta-training: the configuration and the output options.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// What is computed.
    #[command(flatten)]
    pub run: TrainConfig,
    /// What is printed.
    #[command(flatten)]
    pub out: OutputArgs,
    /// SVG chart of the meta-training loss and the validation accuracy.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write a checkpoint to this file (atomically) every `--save-every` steps and at
    /// the end.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Checkpoint interval in meta-steps.
    #[arg(long, default_value_t = 100)]
    pub save_every: u64,
}

/// The episode shape and the method: what training and the benchmark share (the
/// benchmark's defaults are the PyTorch peer's, and so are training's).
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeArgs {
    /// Classes per episode (N-way).
    #[arg(long, default_value_t = 5)]
    pub ways: usize,
    /// Support images per class (K-shot).
    #[arg(long, default_value_t = 1)]
    pub shots: usize,
    /// Query images per class.
    #[arg(long, default_value_t = 15)]
    pub queries: usize,
    /// Episodes per meta-step (and per batch-norm batch).
    #[arg(long, default_value_t = 16)]
    pub meta_batch: usize,
    /// Hypergradient method.
    #[arg(long, value_enum, default_value_t = FsMethod::Bda)]
    pub method: FsMethod,
    /// Lower-level steps K (of the head, or of the whole network).
    #[arg(id = "K", long = "K", visible_alias = "k", default_value_t = 5)]
    #[serde(rename = "K")]
    pub k: u32,
    /// `--method maml` only: first-order MAML (the same as `--method fomaml`).
    #[arg(long)]
    #[serde(default)]
    pub first_order: bool,
    /// iMAML: λ of the inner problem's proximal term λ/2‖y − x‖².
    #[arg(long, default_value_t = 2.0)]
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    /// iMAML: conjugate-gradient iterations of the meta-gradient.
    #[arg(long, default_value_t = 5)]
    #[serde(default = "default_cg_iters")]
    pub cg_iters: u32,
}

fn default_lambda() -> f64 {
    2.0
}

fn default_cg_iters() -> u32 {
    5
}

impl EpisodeArgs {
    /// The method that runs: `--first-order` turns MAML into first-order MAML.
    pub fn effective_method(&self) -> FsMethod {
        match (self.method, self.first_order) {
            (FsMethod::Maml, true) => FsMethod::Fomaml,
            (m, _) => m,
        }
    }
}

/// The configuration of a meta-training run.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Episode shape and method.
    #[command(flatten)]
    #[serde(flatten)]
    pub episode: EpisodeArgs,
    /// T of T-RHG: back-propagate through the last T head steps [default: K/2].
    #[arg(long)]
    pub truncate: Option<u32>,
    /// Lower-level step size (s_u = s_l) [default: the head's 25.6 / the backbone's
    /// features, at most 0.1 (0.1 for 28×28 grey images, 0.0222 for 84×84 RGB and 32
    /// channels: the head's curvature grows with its number of features); 0.4, the peer's,
    /// for the whole network].
    #[arg(long, visible_alias = "lr", visible_alias = "inner-lr")]
    #[serde(default)]
    pub ll_lr: Option<f64>,
    /// RHG, T-RHG, BDA and the MAML family: keep every c-th lower-level iterate for the
    /// reverse pass and recompute the others (less memory, about one more forward pass;
    /// the same meta-gradient).
    #[arg(long)]
    #[serde(default)]
    pub checkpoint_every: Option<u32>,
    /// Aggregation weight μ of BDA.
    #[arg(long, default_value_t = 0.5)]
    pub mu: f64,
    /// α of BDA's α_k = α/k.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f64,
    /// L2 weight λ of the head's lower level (0: the peer's plain cross-entropy).
    #[arg(long, default_value_t = 0.0)]
    pub l2: f64,
    /// Adam step size on the backbone.
    #[arg(long, visible_alias = "meta-lr", default_value_t = 1e-3)]
    pub ul_lr: f64,
    /// Proj_X on every convolution's weights after each Adam step (and on the initial
    /// backbone): none, max-norm:C (each filter's norm ≤ C), spectral:C (each layer's
    /// largest singular value ≤ C, the Euclidean projection) or sn:C (spectral
    /// normalisation: the layer scaled by C/σ̂, σ̂ by one power-iteration step per meta-step).
    #[arg(
        long,
        default_value = "none",
        value_name = "none|max-norm:C|spectral:C|sn:C"
    )]
    #[serde(default)]
    pub ul_projection: UlProjection,
    /// Meta-steps (0: no training; the random backbone is tested).
    #[arg(long, visible_alias = "meta-steps", default_value_t = 1000)]
    pub ul_iters: u64,
    /// Convolution channels (64 in the papers; smaller for quick tests).
    #[arg(long, default_value_t = 64)]
    pub channels: usize,
    /// Seed of the initialisation and the episodes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Test episodes after training (0: skip the test).
    #[arg(long, default_value_t = 600)]
    pub episodes: usize,
    /// Validate every this many meta-steps (0: never).
    #[arg(long, default_value_t = 50)]
    pub val_every: u64,
    /// Early stopping: stop after this many validations without a better validation
    /// accuracy, and test the best validated backbone (0: train `--ul-iters` meta-steps and
    /// test the last). Needs a validation split that is not the test split (MiniImageNet,
    /// or Omniglot with `--val-classes`).
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub patience: u64,
    /// Validation episodes (drawn once from the validation split: MiniImageNet's `val`,
    /// Omniglot's `--val-classes` held-out characters or its evaluation split).
    #[arg(long, default_value_t = 64)]
    pub val_episodes: usize,
    /// Where episodes come from.
    #[command(flatten)]
    #[serde(flatten)]
    pub source: SourceArgs,
    /// Continue the run stored in this checkpoint, with its configuration and data. A flag
    /// that contradicts them is refused, except `--ul-iters`, `--data-dir` (a copy of the
    /// same data), `--threads`, `--device` and the output flags.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Device and threads.
    #[command(flatten)]
    #[serde(flatten)]
    pub place: PlaceArgs,
}

/// Where episodes come from: a data folder, or random images.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceArgs {
    /// Data folder: Omniglot layout (`images_background/`, `images_evaluation/`) or
    /// MiniImageNet layout (`images/` + `train.csv`, `val.csv`, `test.csv`, or `train/`,
    /// `val/`, `test/` class folders).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Layout of `--data-dir` [default: detected from its contents].
    #[arg(long, value_enum, requires = "data_dir")]
    #[serde(default)]
    pub format: Option<DataFormat>,
    /// Random images instead of data (the peer's timing inputs; accuracy is chance).
    #[arg(long, conflicts_with = "data_dir")]
    pub synthetic: bool,
    /// Omniglot layout: hold out the last N characters of `images_background` (with their
    /// rotations) as the validation split, so that settings are chosen without the test
    /// classes. 0: validate on `images_evaluation`, the test classes (monitoring only).
    /// MiniImageNet has its own `val` split.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub val_classes: usize,
    /// Do not add the 90°, 180° and 270° rotations of each character as new classes
    /// (Omniglot; MiniImageNet is never rotated).
    #[arg(long)]
    pub no_rotations: bool,
}

/// `bda fewshot eval`: the configuration and the output options.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// What is computed.
    #[command(flatten)]
    pub run: EvalConfig,
    /// What is printed.
    #[command(flatten)]
    pub out: OutputArgs,
}

/// The configuration of an evaluation; the episode and head options default to the
/// checkpoint's (a report records the values used).
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    /// The backbone to test.
    #[arg(long, required_unless_present_any = ["random_backbone", "config"])]
    pub checkpoint: Option<PathBuf>,
    /// Test a randomly initialised backbone (`--seed`, `--channels`) instead.
    #[arg(long, conflicts_with = "checkpoint")]
    pub random_backbone: bool,
    /// Seed of the episodes (and of the random backbone).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Channels of a random backbone.
    #[arg(long, default_value_t = 64)]
    pub channels: usize,
    /// Test episodes.
    #[arg(long, default_value_t = 600)]
    pub episodes: usize,
    /// Data split to test on.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    pub split: SplitArg,
    /// Classes per episode (N-way) [default: the checkpoint's; 5 for a random backbone].
    #[arg(long)]
    pub ways: Option<usize>,
    /// Support images per class (K-shot) [default: the checkpoint's; 1 for a random
    /// backbone].
    #[arg(long)]
    pub shots: Option<usize>,
    /// Query images per class [default: the checkpoint's; 15 for a random backbone].
    #[arg(long)]
    pub queries: Option<usize>,
    /// Episodes per batch-norm batch [default: the checkpoint's; 16 for a random backbone].
    #[arg(long)]
    pub meta_batch: Option<usize>,
    /// Head steps K [default: the checkpoint's; 5 for a random backbone].
    #[arg(id = "K", long = "K", visible_alias = "k")]
    #[serde(rename = "K")]
    pub k: Option<u32>,
    /// Head step size [default: the checkpoint's; 25.6 / features, at most 0.1, for a random backbone].
    #[arg(long, visible_alias = "lr")]
    pub ll_lr: Option<f64>,
    /// Where episodes come from [default: the checkpoint's data].
    #[command(flatten)]
    #[serde(flatten)]
    pub source: SourceArgs,
    /// Device and threads.
    #[command(flatten)]
    #[serde(flatten)]
    pub place: PlaceArgs,
}

/// `bda fewshot bench`: the configuration and the output options.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// What is measured.
    #[command(flatten)]
    pub run: BenchConfig,
    /// What is printed.
    #[command(flatten)]
    pub out: OutputArgs,
}

/// The configuration of a benchmark (the PyTorch peer's shapes by default).
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchConfig {
    /// Episode shape and method.
    #[command(flatten)]
    #[serde(flatten)]
    pub episode: EpisodeArgs,
    /// Timed meta-steps (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Lower-level step size [default: as `bda fewshot`'s: the head's, or 0.4, the peer's,
    /// for the whole network].
    #[arg(long, visible_alias = "lr", visible_alias = "inner-lr")]
    #[serde(default)]
    pub ll_lr: Option<f64>,
    /// Keep every c-th lower-level iterate for the reverse pass (see `bda fewshot`).
    #[arg(long)]
    #[serde(default)]
    pub checkpoint_every: Option<u32>,
    /// Side of the square random images (28: Omniglot; 84: MiniImageNet).
    #[arg(long, default_value_t = 28)]
    pub image_size: usize,
    /// Channels of the random images (1: Omniglot; 3: MiniImageNet's RGB).
    #[arg(long, default_value_t = 1)]
    pub in_channels: usize,
    /// Convolution channels (64: Omniglot; 32: the MiniImageNet standard).
    #[arg(long, default_value_t = 64)]
    pub channels: usize,
    /// Device and threads.
    #[command(flatten)]
    #[serde(flatten)]
    pub place: PlaceArgs,
}
