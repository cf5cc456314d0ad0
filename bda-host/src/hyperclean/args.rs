//! The options of `bda hyperclean`: its configuration ([`HypercleanConfig`], recorded in
//! every report and read back by `--config`) and its output options.

use std::path::PathBuf;

use bda_kernel::backend::{MethodConfig, MethodSpec};
use bda_kernel::hyperclean::Classifier;
use bda_kernel::{Beta, Method, Schedule};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use super::driver::{Row, TrainConfig};
use super::init::Init;
use crate::check::{StepFlags, positive, spec_error};
use crate::config::OutputArgs;
use crate::device::PlaceArgs;
use crate::error::CliError;
use crate::optim::OptimizerKind;

/// Datasets known by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// Fashion-MNIST (default folder: Debian's `dataset-fashion-mnist`).
    FashionMnist,
    /// MNIST (default folder `/usr/share/datasets/mnist`).
    Mnist,
}

impl DatasetName {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Mnist => "mnist",
        }
    }
    /// Default folder.
    pub fn default_dir(self) -> &'static str {
        match self {
            DatasetName::FashionMnist => "/usr/share/datasets/fashion-mnist",
            DatasetName::Mnist => "/usr/share/datasets/mnist",
        }
    }
}

/// The classifier of the lower level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// Softmax regression `(W, b)`: the lower level is convex.
    #[default]
    Linear,
    /// `d → H (ReLU) → c`, the authors' classifier (784-300-10): not convex.
    Mlp,
}

/// Hidden units of `--model mlp` unless `--hidden` says otherwise (the authors' 300).
pub const DEFAULT_HIDDEN: usize = 300;

/// Sizes of the training and validation sets by protocol; the test set is the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// The journal's (Table 2): 5000 training, 5000 validation.
    Journal,
    /// The ICML paper's (Table 2, MNIST): 7000 training, 7000 validation.
    Icml,
}

impl Split {
    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Split::Journal => "journal",
            Split::Icml => "icml",
        }
    }
    /// `(n_train, n_val)`.
    pub fn sizes(self) -> (usize, usize) {
        match self {
            Split::Journal => (5000, 5000),
            Split::Icml => (7000, 7000),
        }
    }
}

/// Arguments of `bda hyperclean`.
#[derive(clap::Args, Debug, Clone)]
pub struct HypercleanArgs {
    /// What is computed.
    #[command(flatten)]
    pub run: HypercleanConfig,
    /// What is printed.
    #[command(flatten)]
    pub out: OutputArgs,
    /// Write UL loss, validation accuracy and clean F1 per upper iteration to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write the learned weight of every training sample to this CSV file: its file and index
    /// in the data folder, its given label, σ(x_i), whether it is flagged as noisy
    /// (σ(x_i) ≤ ½) and whether the protocol corrupted its label.
    #[arg(long, value_name = "FILE.csv")]
    pub weights_out: Option<PathBuf>,
}

// Defaults chosen for the accuracy table (docs/hyperclean.md); the speed benchmark passes
// the PyTorch peer's settings (ll-lr 1.0, beta 1, ul-lr 0.01) to both programs explicitly.
/// Default upper-level learning rate (the peer: 0.01).
pub const DEFAULT_UL_LR: f64 = 0.1;
/// Default upper-level iterations (as the peer).
pub const DEFAULT_UL_ITERS: u32 = 100;
/// Default lower-level learning rate (the peer: 1.0).
pub const DEFAULT_LL_LR: f64 = 0.3;
/// Default β (the peer: 1).
pub const DEFAULT_BETA: f64 = 2.0;

/// The configuration of a `bda hyperclean` run: every option that decides what is computed.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HypercleanConfig {
    /// Dataset name: the default --data-dir, and the name in reports when --data-dir is not
    /// given (with --data-dir, reports name the folder that was read).
    #[arg(long, value_enum, default_value = "fashion-mnist")]
    pub dataset: DatasetName,
    /// Folder with the four MNIST-format files (train/t10k images/labels, plain or .gz).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Row of Table 2: bda, rhg, trhg, ihg, obda, or the references noclean, oracle.
    #[arg(long, default_value = "bda")]
    pub method: Row,
    /// Classifier: softmax regression, or the authors' ReLU network d → H → c.
    #[arg(long, value_enum, default_value = "linear")]
    #[serde(default)]
    pub model: Model,
    /// Hidden units of --model mlp [default: 300].
    #[arg(long, value_name = "H")]
    #[serde(default)]
    pub hidden: Option<usize>,
    /// The lower level's starting point: zero, or Xavier-uniform weights (zero biases)
    /// re-drawn at every upper iteration from --seed [default: zero for linear, xavier
    /// for mlp].
    #[arg(long, value_enum)]
    #[serde(default)]
    pub init: Option<Init>,
    /// Lower-level steps K (O-BDA trains with 1 step per upper iteration and evaluates
    /// with K).
    #[arg(id = "K", long = "K", visible_alias = "k", default_value_t = 50)]
    #[serde(rename = "K")]
    pub k: u32,
    /// T-RHG: back-propagate through the last T steps [default: K/2, the papers' ratio
    /// (25 of 50, 100 of 200)].
    #[arg(long)]
    pub truncate: Option<u32>,
    /// IHG: conjugate-gradient iterations.
    #[arg(long, default_value_t = 20)]
    pub cg_iters: u32,
    /// O-BDA: finite-difference step ε.
    #[arg(long, default_value_t = 1e-2)]
    pub fd_eps: f64,
    /// μ ∈ (0, 1) of Eq. (9).
    #[arg(long, default_value_t = 0.5)]
    pub mu: f64,
    /// α_k = alpha/k.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f64,
    /// β_k = beta. The default 2 = 1/(1−μ) gives BDA the same step on f as RHG,
    /// (1−μ)·β·s_l = s_l (the PyTorch peer uses β = 1; see docs/hyperclean.md).
    #[arg(long, default_value_t = DEFAULT_BETA)]
    pub beta: f64,
    /// s_u of Eq. (9) [default: --ll-lr].
    #[arg(long)]
    pub su: Option<f64>,
    /// s_l of Eq. (9) and the step of RHG, T-RHG, IHG [default: --ll-lr].
    #[arg(long)]
    pub sl: Option<f64>,
    /// Lower-level learning rate (s_u = s_l unless given). The peer's 1.0 makes the lower
    /// level oscillate on this problem (see docs/hyperclean.md).
    #[arg(long, default_value_t = DEFAULT_LL_LR)]
    pub ll_lr: f64,
    /// Start each upper iteration's lower level from the previous y_K instead of 0 (O-BDA
    /// always does).
    #[arg(long)]
    pub warm_start: bool,
    /// λ of the upper-level regulariser λ‖W‖².
    #[arg(long, default_value_t = 1e-4)]
    pub lambda: f64,
    /// Optimizer on x.
    #[arg(long, value_enum, default_value = "adam")]
    pub optimizer: OptimizerKind,
    /// Upper-level learning rate.
    #[arg(long, default_value_t = DEFAULT_UL_LR)]
    pub ul_lr: f64,
    /// Upper-level iterations.
    #[arg(long, default_value_t = DEFAULT_UL_ITERS)]
    pub ul_iters: u32,
    /// Set sizes by protocol: journal (5000 / 5000 / rest) or icml (7000 / 7000 / rest);
    /// --n-train and --n-val give them one by one [default: journal].
    #[arg(long, value_enum, conflicts_with_all = ["n_train", "n_val"])]
    #[serde(default)]
    pub split: Option<Split>,
    /// Training samples [default: 5000].
    #[arg(long)]
    pub n_train: Option<usize>,
    /// Validation samples [default: 5000].
    #[arg(long)]
    pub n_val: Option<usize>,
    /// Fraction of training labels replaced by a different class.
    #[arg(long, default_value_t = 0.5)]
    pub noise: f64,
    /// Seed of the split and the corruption.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device and threads.
    #[command(flatten)]
    #[serde(flatten)]
    pub place: PlaceArgs,
    /// RHG, T-RHG, BDA: keep every c-th lower-level iterate for the reverse pass and
    /// recompute the others (same hypergradient; about one more forward pass; about
    /// T/c + c iterates kept instead of T + 1). 0 keeps every iterate. [default: 0 when the
    /// full tape fits in 1 GiB, else ⌈√T⌉]
    #[arg(long, value_name = "c")]
    pub checkpoint_every: Option<u32>,
    /// Do not keep the softmax outputs of the K lower-level iterates for the reverse pass
    /// (saves (n_train + n_val)·10 floats per step of memory, costs one more product per
    /// set and step). Results are identical.
    #[arg(long)]
    pub no_prob_cache: bool,
}

/// A checked run: the configuration as given and what the loop needs, the method's spec
/// built once.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The configuration (defaults not yet written out: see [`HypercleanConfig::resolved`]).
    pub config: HypercleanConfig,
    /// What the upper-level loop runs.
    pub train: TrainConfig,
}

impl HypercleanConfig {
    /// The configuration with every derived default written out from the checked `spec`
    /// (T = K/2, s_u = s_l = ll-lr, the checkpoint stride): what a report records and what
    /// runs.
    pub fn resolved(&self, spec: &MethodSpec<f64>) -> HypercleanConfig {
        let (n_train, n_val) = self.sizes();
        let m = spec.config();
        HypercleanConfig {
            hidden: Some(self.classifier().hidden()),
            init: Some(self.initial()),
            n_train: Some(n_train),
            n_val: Some(n_val),
            truncate: Some(m.effective_truncate()),
            su: Some(m.s_u),
            sl: Some(m.s_l),
            checkpoint_every: Some(m.checkpoint_every.unwrap_or(0)),
            ..self.clone()
        }
    }

    /// The classifier of the lower level.
    pub fn classifier(&self) -> Classifier {
        match self.model {
            Model::Linear => Classifier::Linear,
            Model::Mlp => Classifier::Mlp {
                hidden: self.hidden.unwrap_or(DEFAULT_HIDDEN),
            },
        }
    }

    /// The starting point of the lower level.
    pub fn initial(&self) -> Init {
        self.init.unwrap_or(match self.model {
            Model::Linear => Init::Zero,
            Model::Mlp => Init::Xavier,
        })
    }

    /// `(n_train, n_val)`: given one by one, or by the protocol.
    pub fn sizes(&self) -> (usize, usize) {
        let (t, v) = self.split.unwrap_or(Split::Journal).sizes();
        (self.n_train.unwrap_or(t), self.n_val.unwrap_or(v))
    }

    /// The numbers of the method (the reference rows fit `y` like RHG).
    fn method_config(&self) -> MethodConfig<f64> {
        let method = match self.method {
            Row::Method(m) => m,
            Row::NoClean | Row::Oracle => Method::Rhg,
        };
        MethodConfig {
            method,
            steps: self.k,
            truncate: self.truncate,
            cg_iters: self.cg_iters,
            fd_eps: self.fd_eps,
            mu: self.mu,
            alpha: Schedule::Harmonic(self.alpha),
            beta: Beta::Schedule(Schedule::Constant(self.beta)),
            s_u: self.su.unwrap_or(self.ll_lr),
            s_l: self.sl.unwrap_or(self.ll_lr),
            warm_start: self.warm_start,
            checkpoint_every: self.checkpoint_every.filter(|&c| c > 0),
        }
    }

    /// Check every option that the data layer does not, once; errors name the flag
    /// (exit 2).
    pub fn check(&self) -> Result<Checked, CliError> {
        positive("ll-lr", self.ll_lr)?;
        positive("ul-lr", self.ul_lr)?;
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(CliError::input(format!(
                "--lambda {}: must be finite and non-negative",
                self.lambda
            )));
        }
        if !(self.noise.is_finite() && (0.0..=1.0).contains(&self.noise)) {
            return Err(CliError::input(format!(
                "--noise {}: must be a fraction in [0, 1]",
                self.noise
            )));
        }
        match (self.model, self.hidden) {
            (Model::Linear, Some(h)) if h > 0 => {
                return Err(CliError::input(format!(
                    "--hidden {h}: softmax regression has no hidden layer (add --model mlp)"
                )));
            }
            (Model::Mlp, Some(0)) => {
                return Err(CliError::input(
                    "--hidden 0: --model mlp needs at least one hidden unit",
                ));
            }
            _ => {}
        }
        let spec = self
            .method_config()
            .build()
            .map_err(|e| spec_error(e, StepFlags::Separate))?;
        Ok(Checked {
            config: self.clone(),
            train: TrainConfig {
                row: self.method,
                spec,
                optimizer: self.optimizer,
                ul_lr: self.ul_lr,
                ul_iters: self.ul_iters,
                init: self.initial(),
                seed: self.seed,
                diverge_above: None,
            },
        })
    }
}

/// The memory the full tape of lower-level iterates may take before `--checkpoint-every`
/// defaults to `⌈√T⌉`.
pub const TAPE_BUDGET_BYTES: usize = 1 << 30;

/// `--checkpoint-every`'s default for `kept` iterates of `state_bytes` each: 0 (keep all)
/// when they fit in [`TAPE_BUDGET_BYTES`], else `⌈√kept⌉` (the stride that keeps the
/// fewest iterates, about `2√kept`).
pub fn auto_checkpoint(kept: u32, state_bytes: usize) -> u32 {
    if (kept as usize + 1).saturating_mul(state_bytes) <= TAPE_BUDGET_BYTES {
        0
    } else {
        (f64::from(kept).sqrt().ceil() as u32).max(1)
    }
}
