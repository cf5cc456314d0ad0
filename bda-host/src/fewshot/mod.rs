//! `bda fewshot`: few-shot meta-learning (journal §8.3, Tables 3–4).
//!
//! * `bda fewshot [TRAIN FLAGS]` meta-trains the conv4 backbone ([`conv4`]) with the
//!   hypergradient of a per-task linear head ([`head`], bda-kernel's `unrolled`:
//!   `--method bda|rhg|trhg`), then tests it on `--episodes` episodes.
//! * `bda fewshot eval --checkpoint FILE | --random-backbone` tests a backbone.
//! * `bda fewshot bench` times meta-steps on random inputs with the PyTorch peer's shapes.
//!
//! See `docs/fewshot.md` for the design, the measured speed and the accuracy table.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bda_kernel::Method;
use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::CliError;
use crate::plot::{self, Panel, Series};

pub mod checkpoint;
pub mod conv4;
pub mod data;
pub mod gpu;
pub mod head;
pub mod train;

use checkpoint::{Checkpoint, RngState};
use conv4::Arch;
use train::{Adam, CpuMeta, HeadConfig, MetaBackend, MetaError, Task};

/// Meta-training methods of `--method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsMethod {
    /// Bi-level Descent Aggregation: head steps aggregate ∇F (query) and ∇f (support).
    Bda,
    /// Reverse-mode hypergradient through K plain head steps on the support loss.
    Rhg,
    /// RHG back-propagated through the last `--truncate` steps only.
    Trhg,
}

impl FsMethod {
    fn kernel(self) -> Method {
        match self {
            FsMethod::Bda => Method::Bda,
            FsMethod::Rhg => Method::Rhg,
            FsMethod::Trhg => Method::Trhg,
        }
    }
}

pub use crate::device::Device;

/// Which Omniglot-format split to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitArg {
    /// `images_background` (meta-training classes).
    Background,
    /// `images_evaluation` (meta-test classes).
    Evaluation,
}

/// The head and episode flags shared by training and evaluation.
#[derive(clap::Args, Debug, Clone)]
pub struct TaskFlags {
    /// Classes per episode (N-way).
    #[arg(long)]
    pub ways: Option<usize>,
    /// Support images per class (K-shot).
    #[arg(long)]
    pub shots: Option<usize>,
    /// Query images per class.
    #[arg(long)]
    pub queries: Option<usize>,
    /// Head steps K.
    #[arg(long = "K", visible_alias = "k")]
    pub k: Option<u32>,
    /// Head step size (s_u = s_l).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Episodes per batch-norm batch (and per meta-step in training).
    #[arg(long)]
    pub meta_batch: Option<usize>,
    /// Omniglot-format data folder (`images_background/`, `images_evaluation/`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Random images instead of data (the peer's timing inputs; accuracy is chance).
    #[arg(long, conflicts_with = "data_dir")]
    pub synthetic: bool,
    /// Rotations of each class as new classes (0, 90, 180, 270°) when reading data.
    #[arg(long)]
    pub no_rotations: bool,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// `cpu`, `cuda` (device 0) or `cuda:N` (verified on a CPU stand-in of CUDA only so far).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
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

/// Meta-training flags.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Episode and head flags.
    #[command(flatten)]
    pub task: TaskFlags,
    /// Hypergradient method.
    #[arg(long, value_enum, default_value_t = FsMethod::Bda)]
    pub method: FsMethod,
    /// T of T-RHG: back-propagate through the last T head steps.
    #[arg(long, default_value_t = 1)]
    pub truncate: u32,
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
    #[arg(long, default_value_t = 1e-3)]
    pub meta_lr: f64,
    /// Meta-steps (0: no training; the random backbone is tested).
    #[arg(long, default_value_t = 1000)]
    pub meta_steps: u64,
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
    /// Validation episodes (drawn once from the evaluation split).
    #[arg(long, default_value_t = 64)]
    pub val_episodes: usize,
    /// Write a checkpoint to this file (atomically) every `--save-every` steps and at
    /// the end.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Checkpoint interval in meta-steps.
    #[arg(long, default_value_t = 100)]
    pub save_every: u64,
    /// Continue the run stored in this checkpoint (its settings win over the flags,
    /// except `--meta-steps`, `--save*`, output and thread flags).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// SVG chart of the meta-training loss and the validation accuracy.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// `bda fewshot eval` flags.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The backbone to test.
    #[arg(long, required_unless_present = "random_backbone")]
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
    #[arg(long, value_enum, default_value_t = SplitArg::Evaluation)]
    pub split: SplitArg,
    /// Episode and head flags (defaults: the checkpoint's).
    #[command(flatten)]
    pub task: TaskFlags,
}

/// `bda fewshot bench` flags.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Hypergradient method.
    #[arg(long, value_enum, default_value_t = FsMethod::Bda)]
    pub method: FsMethod,
    /// Classes per episode.
    #[arg(long, default_value_t = 5)]
    pub ways: usize,
    /// Support images per class.
    #[arg(long, default_value_t = 1)]
    pub shots: usize,
    /// Query images per class.
    #[arg(long, default_value_t = 15)]
    pub queries: usize,
    /// Episodes per meta-step.
    #[arg(long, default_value_t = 16)]
    pub meta_batch: usize,
    /// Head steps K.
    #[arg(long = "K", visible_alias = "k", default_value_t = 5)]
    pub k: u32,
    /// Timed meta-steps (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// `cpu`, `cuda` (device 0) or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `bda fewshot`.
pub fn run(args: &FewshotArgs) -> Result<(), CliError> {
    let (threads, device) = match &args.command {
        None => (args.train.task.threads, args.train.task.device),
        Some(FewshotCommand::Eval(e)) => (e.task.threads, e.task.device),
        Some(FewshotCommand::Bench(b)) => (b.threads, b.device),
    };
    check_device(device)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| CliError::run(format!("cannot start threads: {e}")))?;
    pool.install(|| match &args.command {
        None => run_train(&args.train),
        Some(FewshotCommand::Eval(e)) => run_eval(e),
        Some(FewshotCommand::Bench(b)) => run_bench(b),
    })
}

/// Probes the device before anything else (data loading, checkpoints): a missing driver or
/// device is one line and exit 2.
fn check_device(device: Device) -> Result<(), CliError> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda(n) => bda_gpu::probe(n)
            .map(drop)
            .map_err(|e| CliError::input(format!("--device {device}: {e}"))),
    }
}

/// The backend computing meta-gradients and evaluations for backbones of shape `arch`.
fn open_backend(device: Device, arch: Arch) -> Result<Box<dyn MetaBackend>, CliError> {
    match device {
        Device::Cpu => Ok(Box::new(CpuMeta)),
        Device::Cuda(n) => {
            check_device(device)?;
            let gpu = gpu::GpuMeta::new(n, arch)
                .map_err(|e| CliError::run(format!("--device {device}: {e}")))?;
            Ok(Box::new(gpu))
        }
    }
}

/// The one-line error of a failed meta-gradient at meta-step `step` (1-based).
fn meta_error(e: MetaError, step: u64) -> CliError {
    match e {
        MetaError::NonFinite => CliError::run(format!(
            "diverged at meta-step {step}: the meta-loss or its gradient is not finite (reduce --lr or --meta-lr)"
        )),
        MetaError::Device(m) => CliError::run(format!("meta-step {step}: {m}")),
    }
}

/// The one-line error of a failed benchmark meta-step (no training step to name).
fn bench_error(e: MetaError) -> CliError {
    match e {
        MetaError::NonFinite => CliError::run("bench: the meta-loss or its gradient is not finite"),
        MetaError::Device(m) => CliError::run(format!("bench: {m}")),
    }
}

fn eval_error(e: MetaError) -> CliError {
    match e {
        MetaError::NonFinite => CliError::run("evaluation: a head became non-finite"),
        MetaError::Device(m) => CliError::run(format!("evaluation: {m}")),
    }
}

/// Settings of a run, stored in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Classes per episode.
    pub ways: usize,
    /// Support images per class.
    pub shots: usize,
    /// Query images per class.
    pub queries: usize,
    /// Episodes per meta-step.
    pub meta_batch: usize,
    /// Method.
    pub method: FsMethod,
    /// Head steps K.
    #[serde(rename = "K")]
    pub k: u32,
    /// T of T-RHG.
    pub truncate: u32,
    /// Head step size.
    pub lr: f64,
    /// μ.
    pub mu: f64,
    /// α.
    pub alpha: f64,
    /// Head L2.
    pub l2: f64,
    /// Adam step size.
    pub meta_lr: f64,
    /// Seed.
    pub seed: u64,
    /// Data folder (`None`: synthetic).
    pub data_dir: Option<PathBuf>,
    /// Class rotations.
    pub rotations: bool,
    /// Backbone shape.
    pub arch: Arch,
}

impl RunConfig {
    fn head(&self) -> HeadConfig {
        HeadConfig {
            method: self.method.kernel(),
            steps: self.k,
            truncate: Some(self.truncate),
            lr: self.lr,
            mu: self.mu,
            alpha: self.alpha,
            l2: self.l2,
        }
    }

    fn validate(&self) -> Result<(), CliError> {
        let bad = |m: &str| Err(CliError::input(m.to_string()));
        if self.ways < 2 || self.ways > 255 {
            return bad("--ways must be in 2..=255");
        }
        if self.shots == 0 || self.queries == 0 || self.meta_batch == 0 {
            return bad("--shots, --queries and --meta-batch must be positive");
        }
        if self.k == 0 {
            return bad("--K must be positive");
        }
        if self.method == FsMethod::Trhg && (self.truncate == 0 || self.truncate > self.k) {
            return bad("--truncate must be in 1..=K");
        }
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if !pos(self.lr) || !pos(self.meta_lr) {
            return bad("--lr and --meta-lr must be positive");
        }
        if self.mu <= 0.0 || self.mu >= 1.0 || self.mu.is_nan() || !pos(self.alpha) {
            return bad("--mu must be in (0, 1) and --alpha positive");
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad("--l2 must be ≥ 0");
        }
        if self.arch.channels == 0 {
            return bad("--channels must be positive");
        }
        Ok(())
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
    fn open(
        data_dir: Option<&Path>,
        synthetic: bool,
        split: SplitArg,
        cfg: &RunConfig,
    ) -> Result<Source, CliError> {
        match (data_dir, synthetic) {
            (_, true) | (None, _) => Ok(Source::Synthetic {
                pixels: cfg.arch.pixels(),
            }),
            (Some(d), false) => {
                let split = match split {
                    SplitArg::Background => data::Split::Background,
                    SplitArg::Evaluation => data::Split::Evaluation,
                };
                let ds = data::load_omniglot(d, split, cfg.rotations)
                    .map_err(|e| CliError::input(e.to_string()))?;
                if ds.side != cfg.arch.side {
                    return Err(CliError::input(format!(
                        "{}: images are {0}×{0}, the backbone expects {1}×{1}",
                        ds.side, cfg.arch.side
                    )));
                }
                data::EpisodeSampler::new(&ds, cfg.ways, cfg.shots, cfg.queries).map_err(|e| {
                    CliError::input(format!("{} ({split} split): {e}", d.display()))
                })?;
                Ok(Source::Data(ds))
            }
        }
    }

    fn sample(&self, c: &RunConfig, rng: &mut ChaCha8Rng) -> Task {
        match self {
            Source::Synthetic { pixels } => {
                Task::synthetic(c.ways, c.shots, c.queries, *pixels, rng)
            }
            Source::Data(ds) => {
                // Checked in `open`.
                let sampler = data::EpisodeSampler::new(ds, c.ways, c.shots, c.queries)
                    .expect("episode shape checked when the data was opened");
                let e = sampler.sample(rng);
                Task {
                    ways: e.ways,
                    support: e.support,
                    support_labels: e.support_labels,
                    query: e.query,
                    query_labels: e.query_labels,
                }
            }
        }
    }
}

/// Mean query accuracy and its 95% CI half-width (1.96·std/√n) over episodes.
pub fn mean_ci(accs: &[f64]) -> (f64, f64) {
    let n = accs.len() as f64;
    if accs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = accs.iter().sum::<f64>() / n;
    let var = accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.96 * var.sqrt() / n.sqrt())
}

/// Test `params` on `episodes` episodes drawn with `rng`, `meta_batch` episodes per
/// forward pass (batch-norm statistics).
fn test_backbone(
    backend: &mut dyn MetaBackend,
    cfg: &RunConfig,
    params: &[f32],
    source: &Source,
    episodes: usize,
    rng: &mut ChaCha8Rng,
    bar: &ProgressBar,
) -> Result<Vec<f64>, CliError> {
    let head = cfg.head();
    let mut accs = Vec::with_capacity(episodes);
    while accs.len() < episodes {
        let b = cfg.meta_batch.min(episodes - accs.len());
        let tasks: Vec<Task> = (0..b).map(|_| source.sample(cfg, rng)).collect();
        accs.extend(
            backend
                .evaluate_tasks(cfg.arch, params, &tasks, &head)
                .map_err(eval_error)?,
        );
        bar.inc(b as u64);
    }
    Ok(accs)
}

fn progress(len: u64, quiet: bool, what: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(&format!(
        "{what} {{bar:40}} {{pos}}/{{len}} [{{elapsed_precise}} < {{eta_precise}}] {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// The report of a training or evaluation run (`--json`).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Classes per episode.
    pub ways: usize,
    /// Support images per class.
    pub shots: usize,
    /// Query images per class.
    pub queries: usize,
    /// Method the backbone was trained with (`random` for an untrained backbone).
    pub method: String,
    /// Head steps K.
    #[serde(rename = "K")]
    pub k: u32,
    /// T of T-RHG (when the method is trhg).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncate: Option<u32>,
    /// Meta-steps trained.
    pub meta_steps: u64,
    /// Episodes per meta-step.
    pub meta_batch: usize,
    /// Mean test accuracy.
    pub test_acc: f64,
    /// 95% CI half-width of `test_acc`.
    pub ci95: f64,
    /// Test episodes.
    pub episodes: usize,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// Seconds per meta-step (training only).
    pub s_per_meta_step: f64,
    /// Seed.
    pub seed: u64,
    /// Where it ran (`cpu`, `cuda (device name)`).
    pub device: String,
    /// Data: the folder, or `synthetic`.
    pub data: String,
    /// Final meta-training loss (mean of the last 10 steps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
}

fn print_report(r: &Report, json: bool) -> Result<(), CliError> {
    if json {
        println!(
            "{}",
            serde_json::to_string(r).map_err(|e| CliError::run(e.to_string()))?
        );
        return Ok(());
    }
    println!(
        "{:<6} {:>4} {:>5} {:>3} {:>10} {:>18} {:>9} {:>10}",
        "method", "ways", "shots", "K", "meta-steps", "test acc (95% CI)", "episodes", "s/step"
    );
    println!(
        "{:<6} {:>4} {:>5} {:>3} {:>10} {:>9.2}% ± {:>5.2}% {:>9} {:>10.3}",
        r.method,
        r.ways,
        r.shots,
        r.k,
        r.meta_steps,
        100.0 * r.test_acc,
        100.0 * r.ci95,
        r.episodes,
        r.s_per_meta_step
    );
    println!("data: {}, seed {}, {:.1} s", r.data, r.seed, r.seconds);
    Ok(())
}

fn data_name(cfg: &RunConfig) -> String {
    cfg.data_dir
        .as_ref()
        .map_or_else(|| "synthetic".to_string(), |d| d.display().to_string())
}

fn run_train(a: &TrainArgs) -> Result<(), CliError> {
    let t0 = Instant::now();
    let t = &a.task;
    let mut ck = match &a.resume {
        Some(path) => Checkpoint::load(path)?,
        None => {
            let arch = Arch {
                channels: a.channels,
                ..Arch::CONV4
            };
            let cfg = RunConfig {
                ways: t.ways.unwrap_or(5),
                shots: t.shots.unwrap_or(1),
                queries: t.queries.unwrap_or(15),
                meta_batch: t.meta_batch.unwrap_or(16),
                method: a.method,
                k: t.k.unwrap_or(5),
                truncate: a.truncate,
                lr: t.lr.unwrap_or(0.1),
                mu: a.mu,
                alpha: a.alpha,
                l2: a.l2,
                meta_lr: a.meta_lr,
                seed: a.seed,
                data_dir: t.data_dir.clone(),
                rotations: !t.no_rotations,
                arch,
            };
            cfg.validate()?;
            if cfg.data_dir.is_none() && !t.synthetic {
                return Err(CliError::input(
                    "bda fewshot: give --data-dir DIR (Omniglot layout) or --synthetic",
                ));
            }
            let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
            let params: Vec<f32> = arch.init(&mut rng);
            let adam = Adam::new(cfg.meta_lr, params.len());
            Checkpoint::new(cfg, params, adam, RngState::of(a.seed, &rng))
        }
    };
    let cfg = ck.config.clone();
    let synthetic = cfg.data_dir.is_none();
    let source_train = Source::open(
        cfg.data_dir.as_deref(),
        synthetic,
        SplitArg::Background,
        &cfg,
    )?;
    let source_test = Source::open(
        cfg.data_dir.as_deref(),
        synthetic,
        SplitArg::Evaluation,
        &cfg,
    )?;
    let head = cfg.head();
    let mut backend = open_backend(t.device, cfg.arch)?;
    // Validation episodes: drawn once from the evaluation split with their own seed, so a
    // resumed run validates on the same ones.
    let mut val_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5a5a_0001);
    let val_tasks: Vec<Task> = if a.val_every > 0 {
        (0..a.val_episodes)
            .map(|_| source_test.sample(&cfg, &mut val_rng))
            .collect()
    } else {
        Vec::new()
    };
    let mut rng = ck.rng.restore();
    let total = a.meta_steps;
    let start = ck.step;
    let bar = progress(total.saturating_sub(start), t.quiet, "meta-train");
    let t_train = Instant::now();
    for step in start..total {
        let tasks: Vec<Task> = (0..cfg.meta_batch)
            .map(|_| source_train.sample(&cfg, &mut rng))
            .collect();
        let mg = backend
            .meta_gradient(cfg.arch, &ck.params, &tasks, &head)
            .map_err(|e| meta_error(e, step + 1))?;
        ck.adam.step(&mut ck.params, &mg.grad);
        ck.step = step + 1;
        ck.rng = RngState::of(cfg.seed, &rng);
        ck.history.loss.push((ck.step, mg.loss, mg.acc));
        if a.val_every > 0 && ck.step % a.val_every == 0 {
            let accs = val_accuracy(backend.as_mut(), &cfg, &ck.params, &val_tasks, &head)?;
            ck.history.val.push((ck.step, accs));
            bar.set_message(format!("loss {:.3} val {:.1}%", mg.loss, 100.0 * accs));
        }
        if let Some(path) = &a.save
            && a.save_every > 0
            && ck.step % a.save_every == 0
        {
            ck.save(path)?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let trained = total.saturating_sub(start);
    let s_per = if trained > 0 {
        t_train.elapsed().as_secs_f64() / trained as f64
    } else {
        0.0
    };
    if let Some(path) = &a.save {
        ck.save(path)?;
    }
    let mut test_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x7e57);
    let tbar = progress(a.episodes as u64, t.quiet, "test");
    let accs = test_backbone(
        backend.as_mut(),
        &cfg,
        &ck.params,
        &source_test,
        a.episodes,
        &mut test_rng,
        &tbar,
    )?;
    tbar.finish_and_clear();
    let (acc, ci) = mean_ci(&accs);
    if let Some(path) = &a.plot {
        write_plot(path, &ck)?;
    }
    let last = &ck.history.loss[ck.history.loss.len().saturating_sub(10)..];
    let report = Report {
        ways: cfg.ways,
        shots: cfg.shots,
        queries: cfg.queries,
        method: cfg.method_name(),
        k: cfg.k,
        truncate: (cfg.method == FsMethod::Trhg).then_some(cfg.truncate),
        meta_steps: ck.step,
        meta_batch: cfg.meta_batch,
        test_acc: acc,
        ci95: ci,
        episodes: a.episodes,
        seconds: t0.elapsed().as_secs_f64(),
        s_per_meta_step: s_per,
        seed: cfg.seed,
        device: backend.device(),
        data: data_name(&cfg),
        train_loss: (!last.is_empty())
            .then(|| last.iter().map(|l| l.1).sum::<f64>() / last.len() as f64),
    };
    print_report(&report, t.json)?;
    if let Some(path) = &a.plot
        && !t.json
    {
        println!("plot written to {}", path.display());
    }
    Ok(())
}

impl RunConfig {
    fn method_name(&self) -> String {
        match self.method {
            FsMethod::Bda => "bda",
            FsMethod::Rhg => "rhg",
            FsMethod::Trhg => "trhg",
        }
        .to_string()
    }
}

fn val_accuracy(
    backend: &mut dyn MetaBackend,
    cfg: &RunConfig,
    params: &[f32],
    tasks: &[Task],
    head: &HeadConfig,
) -> Result<f64, CliError> {
    let mut accs = Vec::with_capacity(tasks.len());
    for chunk in tasks.chunks(cfg.meta_batch) {
        accs.extend(
            backend
                .evaluate_tasks(cfg.arch, params, chunk, head)
                .map_err(eval_error)?,
        );
    }
    Ok(mean_ci(&accs).0)
}

fn write_plot(path: &Path, ck: &Checkpoint) -> Result<(), CliError> {
    let loss = Series {
        name: "meta-train loss φ_K".into(),
        points: ck
            .history
            .loss
            .iter()
            .map(|&(s, l, _)| (s as f64, l))
            .collect(),
    };
    let train_acc = Series {
        name: "meta-train query acc".into(),
        points: ck
            .history
            .loss
            .iter()
            .map(|&(s, _, a)| (s as f64, a))
            .collect(),
    };
    let val = Series {
        name: "validation acc".into(),
        points: ck.history.val.iter().map(|&(s, a)| (s as f64, a)).collect(),
    };
    let c = &ck.config;
    plot::write_svg(
        path,
        &format!(
            "few-shot {}-way {}-shot, {} K={}",
            c.ways,
            c.shots,
            c.method_name(),
            c.k
        ),
        &[
            Panel {
                title: "meta-training loss".into(),
                x_label: "meta-step".into(),
                y_log: false,
                series: vec![loss],
            },
            Panel {
                title: "accuracy".into(),
                x_label: "meta-step".into(),
                y_log: false,
                series: vec![train_acc, val],
            },
        ],
        2,
    )
}

fn run_eval(e: &EvalArgs) -> Result<(), CliError> {
    let t0 = Instant::now();
    let t = &e.task;
    let (base, params, steps, method) = match (&e.checkpoint, e.random_backbone) {
        (Some(path), _) => {
            let ck = Checkpoint::load(path)?;
            let m = ck.config.method_name();
            (ck.config, ck.params, ck.step, m)
        }
        (None, _) => {
            let arch = Arch {
                channels: e.channels,
                ..Arch::CONV4
            };
            let cfg = RunConfig {
                ways: 5,
                shots: 1,
                queries: 15,
                meta_batch: 16,
                method: FsMethod::Rhg,
                k: 5,
                truncate: 1,
                lr: 0.1,
                mu: 0.5,
                alpha: 0.5,
                l2: 0.0,
                meta_lr: 1e-3,
                seed: e.seed,
                data_dir: None,
                rotations: true,
                arch,
            };
            let mut rng = ChaCha8Rng::seed_from_u64(e.seed);
            let params = arch.init(&mut rng);
            (cfg, params, 0, "random".to_string())
        }
    };
    let cfg = RunConfig {
        ways: t.ways.unwrap_or(base.ways),
        shots: t.shots.unwrap_or(base.shots),
        queries: t.queries.unwrap_or(base.queries),
        meta_batch: t.meta_batch.unwrap_or(base.meta_batch),
        k: t.k.unwrap_or(base.k),
        lr: t.lr.unwrap_or(base.lr),
        data_dir: t.data_dir.clone().or(base.data_dir.clone()),
        rotations: base.rotations && !t.no_rotations,
        ..base
    };
    cfg.validate()?;
    if e.random_backbone && cfg.data_dir.is_none() && !t.synthetic {
        return Err(CliError::input(
            "bda fewshot eval: give --data-dir DIR (Omniglot layout) or --synthetic",
        ));
    }
    let synthetic = t.synthetic || cfg.data_dir.is_none();
    let data_dir = if t.synthetic {
        None
    } else {
        cfg.data_dir.as_deref()
    };
    let source = Source::open(data_dir, synthetic, e.split, &cfg)?;
    let mut backend = open_backend(t.device, cfg.arch)?;
    let mut rng = ChaCha8Rng::seed_from_u64(e.seed ^ 0x7e57);
    let bar = progress(e.episodes as u64, t.quiet, "test");
    let accs = test_backbone(
        backend.as_mut(),
        &cfg,
        &params,
        &source,
        e.episodes,
        &mut rng,
        &bar,
    )?;
    bar.finish_and_clear();
    let (acc, ci) = mean_ci(&accs);
    let report = Report {
        ways: cfg.ways,
        shots: cfg.shots,
        queries: cfg.queries,
        method,
        k: cfg.k,
        truncate: None,
        meta_steps: steps,
        meta_batch: cfg.meta_batch,
        test_acc: acc,
        ci95: ci,
        episodes: e.episodes,
        seconds: t0.elapsed().as_secs_f64(),
        s_per_meta_step: 0.0,
        seed: e.seed,
        device: backend.device(),
        data: if synthetic {
            "synthetic".into()
        } else {
            data_name(&cfg)
        },
        train_loss: None,
    };
    print_report(&report, t.json)
}

/// The result of `bda fewshot bench` (`--json`).
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Always `bda`.
    pub impl_name: &'static str,
    /// `cpu`, or `cuda (device name)`.
    pub device: String,
    /// Method.
    pub method: FsMethod,
    /// Classes.
    pub ways: usize,
    /// Shots.
    pub shots: usize,
    /// Queries per class.
    pub queries: usize,
    /// Episodes per meta-step.
    pub meta_batch: usize,
    /// Head steps.
    #[serde(rename = "K")]
    pub k: u32,
    /// Rayon threads (the CPU path; the host side of the CUDA path).
    pub threads: usize,
    /// Seconds per meta-step (forward, K head steps and their reverse pass per task,
    /// backward, Adam).
    pub s_per_meta_step: f64,
    /// Convolution FLOPs (forward + backward) per meta-step / seconds per meta-step.
    pub gflops_meta_step: f64,
    /// Seconds of the backbone's forward + backward alone (one meta-batch).
    pub s_backbone: f64,
    /// Convolution FLOPs per backbone forward + backward / `s_backbone`.
    pub gflops_backbone: f64,
}

fn run_bench(b: &BenchArgs) -> Result<(), CliError> {
    let cfg = RunConfig {
        ways: b.ways,
        shots: b.shots,
        queries: b.queries,
        meta_batch: b.meta_batch,
        method: b.method,
        k: b.k,
        truncate: 1,
        lr: 0.1,
        mu: 0.5,
        alpha: 0.5,
        l2: 0.0,
        meta_lr: 1e-3,
        seed: 0,
        data_dir: None,
        rotations: false,
        arch: Arch::CONV4,
    };
    cfg.validate()?;
    if b.steps == 0 {
        return Err(CliError::input("--steps must be positive"));
    }
    let arch = cfg.arch;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut params: Vec<f32> = arch.init(&mut rng);
    let mut adam = Adam::new(cfg.meta_lr, params.len());
    // Fixed random inputs, as the peer.
    let tasks: Vec<Task> = (0..cfg.meta_batch)
        .map(|_| Task::synthetic(cfg.ways, cfg.shots, cfg.queries, arch.pixels(), &mut rng))
        .collect();
    let head = cfg.head();
    let mut backend = open_backend(b.device, arch)?;
    let mut step = |backend: &mut dyn MetaBackend, params: &mut Vec<f32>| -> Result<(), CliError> {
        let mg = backend
            .meta_gradient(arch, params, &tasks, &head)
            .map_err(bench_error)?;
        adam.step(params, &mg.grad);
        Ok(())
    };
    step(backend.as_mut(), &mut params)?; // warm-up
    let t0 = Instant::now();
    for _ in 0..b.steps {
        step(backend.as_mut(), &mut params)?;
    }
    let s_step = t0.elapsed().as_secs_f64() / b.steps as f64;
    // The backbone alone.
    let n = cfg.meta_batch * cfg.ways * (cfg.shots + cfg.queries);
    let imgs: Vec<f32> = tasks
        .iter()
        .flat_map(|t| t.support.iter().chain(&t.query).copied())
        .collect();
    let dfeats = vec![1e-3f32; n * arch.features()];
    let reps = b.steps.max(1);
    let t1 = Instant::now();
    for _ in 0..reps {
        backend
            .backbone_pass(arch, &params, &imgs, n, &dfeats)
            .map_err(bench_error)?;
    }
    let s_bb = t1.elapsed().as_secs_f64() / reps as f64;
    let (f, bw) = arch.conv_flops(n);
    let flops = f + bw;
    let r = BenchReport {
        impl_name: "bda",
        device: backend.device(),
        method: b.method,
        ways: cfg.ways,
        shots: cfg.shots,
        queries: cfg.queries,
        meta_batch: cfg.meta_batch,
        k: cfg.k,
        threads: rayon::current_num_threads(),
        s_per_meta_step: s_step,
        gflops_meta_step: flops / s_step / 1e9,
        s_backbone: s_bb,
        gflops_backbone: flops / s_bb / 1e9,
    };
    if b.json {
        println!(
            "{}",
            serde_json::to_string(&r).map_err(|e| CliError::run(e.to_string()))?
        );
    } else {
        println!(
            "{}-way {}-shot, {} queries, meta-batch {}, K = {}, {} on {} ({} threads): {:.3} s/meta-step",
            r.ways,
            r.shots,
            r.queries,
            r.meta_batch,
            r.k,
            b.method.kernel(),
            r.device,
            r.threads,
            r.s_per_meta_step
        );
        println!(
            "conv FLOPs {:.1} G per meta-step: {:.1} GFLOP/s over the meta-step, {:.1} GFLOP/s in the backbone alone ({:.3} s)",
            flops / 1e9,
            r.gflops_meta_step,
            r.gflops_backbone,
            r.s_backbone
        );
    }
    Ok(())
}
