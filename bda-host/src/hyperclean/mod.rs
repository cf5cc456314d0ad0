//! `bda hyperclean`: data hyper-cleaning (journal §8.2, Table 2) at dataset scale.
//!
//! The problem is [`bda_kernel::hyperclean`]'s; the hypergradient methods are
//! [`bda_kernel::backend`]'s (RHG/T-RHG/BDA reverse mode, IHG, O-BDA). This module supplies
//! the fast CPU backend and the user interface (the obviously-right `f64` backend that the
//! gradient checks use is [`bda_kernel::hyperclean::Reference`]):
//!
//! | module | holds |
//! |---|---|
//! | [`blocks`] | the all-zero pixel blocks the products skip, and the sample order that makes many |
//! | [`cpu`] | the fast `f32` backend: byte pixels, AVX2+FMA, rayon, fixed-order reductions |
//! | [`driver`] | the upper-level loop, generic over the backend ([`driver::train`]) |
//! | [`metrics`] | accuracy, macro-F1, clean-detection F1 |
//! | [`report`] | the summary table, the JSON object and the SVG plot |

pub mod blocks;
pub mod cpu;
pub mod driver;
pub mod metrics;
pub mod report;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use bda_kernel::Method;
use bda_kernel::backend::{LowerHessian, LowerStep, StepAdjoint, UpperGradient};
use bda_kernel::hyperclean::HypercleanData;
use clap::ValueEnum;

use crate::error::CliError;
use driver::{IterRecord, Monitor, Optimizer, Row, TrainConfig};

/// Datasets known by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
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

/// Arguments of `bda hyperclean`.
#[derive(clap::Args, Debug, Clone)]
pub struct HypercleanArgs {
    /// Dataset name (sets the default --data-dir and the name in reports).
    #[arg(long, value_enum, default_value = "fashion-mnist")]
    pub dataset: DatasetName,
    /// Folder with the four MNIST-format files (train/t10k images/labels, plain or .gz).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Row of Table 2: bda, rhg, trhg, ihg, obda, or the references noclean, oracle.
    #[arg(long, default_value = "bda", value_parser = parse_row)]
    pub method: Row,
    /// Lower-level steps K (O-BDA trains with 1 step per upper iteration and evaluates
    /// with K).
    #[arg(long = "K", default_value_t = 50)]
    pub k: u32,
    /// T-RHG: back-propagate through the last T steps.
    #[arg(long, default_value_t = 25)]
    pub truncate: u32,
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
    /// s_u of Eq. (9) (default: --ll-lr).
    #[arg(long)]
    pub su: Option<f64>,
    /// s_l of Eq. (9) and the RHG step (default: --ll-lr).
    #[arg(long)]
    pub sl: Option<f64>,
    /// Lower-level learning rate (s_u = s_l unless given). The peer's 1.0 makes the lower
    /// level oscillate on this problem (see docs/hyperclean.md).
    #[arg(long, default_value_t = DEFAULT_LL_LR)]
    pub ll_lr: f64,
    /// λ of the upper-level regulariser λ‖W‖².
    #[arg(long, default_value_t = 1e-4)]
    pub lambda: f64,
    /// Optimizer on x.
    #[arg(long, value_enum, default_value = "adam")]
    pub optimizer: Optimizer,
    /// Upper-level learning rate.
    #[arg(long, default_value_t = DEFAULT_UL_LR)]
    pub ul_lr: f64,
    /// Upper-level iterations.
    #[arg(long, default_value_t = DEFAULT_UL_ITERS)]
    pub ul_iters: u32,
    /// Training samples.
    #[arg(long, default_value_t = 5000)]
    pub n_train: usize,
    /// Validation samples.
    #[arg(long, default_value_t = 5000)]
    pub n_val: usize,
    /// Fraction of training labels replaced by a different class.
    #[arg(long, default_value_t = 0.5)]
    pub noise: f64,
    /// Seed of the split and the corruption.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// cpu, or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write UL loss, validation accuracy and clean F1 per upper iteration to an SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Do not keep the softmax outputs of the K lower-level iterates for the reverse pass
    /// (saves (n_train + n_val)·10 floats per step of memory, costs one more product per
    /// set and step). Results are identical.
    #[arg(long)]
    pub no_prob_cache: bool,
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

fn parse_row(s: &str) -> Result<Row, String> {
    s.parse()
}

pub use crate::device::{Device, cuda_probe, parse_device};

/// The data of one run, on the host.
#[derive(Clone, Debug)]
pub struct HostData {
    /// Dataset name for reports.
    pub dataset: String,
    /// Features per sample.
    pub dim: usize,
    /// Classes.
    pub classes: usize,
    /// Training features (noisy labels below).
    pub train_x: Vec<f32>,
    /// Training labels (after corruption).
    pub train_labels: Vec<u8>,
    /// Validation features.
    pub val_x: Vec<f32>,
    /// Validation labels.
    pub val_labels: Vec<u8>,
    /// Test features.
    pub test_x: Vec<f32>,
    /// Test labels.
    pub test_labels: Vec<u8>,
    /// Which training labels were corrupted.
    pub corrupted: Vec<bool>,
}

impl HostData {
    /// The kernel's view.
    pub fn problem(&self, lambda: f32) -> HypercleanData<'_> {
        HypercleanData {
            dim: self.dim,
            classes: self.classes,
            train_x: &self.train_x,
            train_labels: &self.train_labels,
            val_x: &self.val_x,
            val_labels: &self.val_labels,
            lambda,
        }
    }

    /// A random instance with pixel values `q/255` and `noise` of the training labels
    /// replaced (tests, benchmarks without data files).
    pub fn synthetic(
        n_train: usize,
        n_val: usize,
        n_test: usize,
        dim: usize,
        classes: usize,
        noise: f64,
        seed: u64,
    ) -> Self {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        // Class prototypes; samples are noisy prototypes, so the task is learnable.
        let protos: Vec<f32> = (0..classes * dim).map(|_| rng.random::<f32>()).collect();
        let gen_set = |n: usize, rng: &mut rand_chacha::ChaCha8Rng| {
            let mut x = Vec::with_capacity(n * dim);
            let mut l = Vec::with_capacity(n);
            for _ in 0..n {
                let k = rng.random_range(0..classes);
                l.push(k as u8);
                for j in 0..dim {
                    let v = 0.6 * protos[k * dim + j] + 0.4 * rng.random::<f32>();
                    x.push((v * 255.0).round().clamp(0.0, 255.0) / 255.0);
                }
            }
            (x, l)
        };
        let (train_x, mut train_labels) = gen_set(n_train, &mut rng);
        let (val_x, val_labels) = gen_set(n_val, &mut rng);
        let (test_x, test_labels) = gen_set(n_test, &mut rng);
        let n_bad = (noise * n_train as f64).round() as usize;
        let mut corrupted = vec![false; n_train];
        for i in 0..n_bad.min(n_train) {
            corrupted[i] = true;
            let r = rng.random_range(1..classes);
            train_labels[i] = ((train_labels[i] as usize + r) % classes) as u8;
        }
        HostData {
            dataset: "synthetic".into(),
            dim,
            classes,
            train_x,
            train_labels,
            val_x,
            val_labels,
            test_x,
            test_labels,
            corrupted,
        }
    }
}

/// The outcome of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    /// Dataset name.
    pub dataset: String,
    /// Row name.
    pub method: String,
    /// Device.
    pub device: String,
    /// Lower-level steps K.
    #[serde(rename = "K")]
    pub k: u32,
    /// Upper iterations run.
    pub ul_iters: u32,
    /// Upper learning rate.
    pub ul_lr: f64,
    /// Optimizer.
    pub optimizer: String,
    /// Training / validation / test sizes.
    pub n_train: usize,
    /// Validation size.
    pub n_val: usize,
    /// Test size.
    pub n_test: usize,
    /// Label noise.
    pub noise: f64,
    /// Final upper objective.
    pub ul_loss: f64,
    /// Validation accuracy, %.
    pub val_acc: f64,
    /// Test accuracy, %.
    pub test_acc: f64,
    /// Test macro-F1, %.
    pub test_f1: f64,
    /// Clean-detection macro-F1 of σ(x) > 0.5, %.
    pub clean_f1: f64,
    /// Wall seconds of the training (loop and final lower-level solve).
    pub seconds: f64,
    /// Seconds per upper iteration (0 without upper iterations).
    pub s_per_ul_iter: f64,
    /// Seconds to load and split the data.
    pub load_seconds: f64,
    /// Seed.
    pub seed: u64,
    /// Threads.
    pub threads: usize,
    /// Kernel choice of the CPU backend.
    pub kernels: String,
    /// Per-iteration history.
    pub history: Vec<IterRecord>,
}

/// Host-side evaluation: validation and test predictions with the CPU kernels.
pub struct Evaluator {
    kern: cpu::Kernels,
    classes: usize,
    val: cpu::Packed,
    test: cpu::Packed,
    corrupted: Vec<bool>,
    bar: Option<indicatif::ProgressBar>,
}

impl Evaluator {
    /// Pack validation and test sets.
    pub fn new(data: &HostData) -> Result<Self, String> {
        Ok(Evaluator {
            kern: cpu::Kernels::detect(data.classes),
            classes: data.classes,
            val: cpu::Packed::new(&data.val_x, &data.val_labels, data.dim)?,
            test: cpu::Packed::new(&data.test_x, &data.test_labels, data.dim)?,
            corrupted: data.corrupted.clone(),
            bar: None,
        })
    }

    fn y32(y: &[f64]) -> Vec<f32> {
        y.iter().map(|&v| v as f32).collect()
    }

    /// Validation predictions.
    pub fn predict_val(&self, y: &[f64]) -> Vec<u8> {
        cpu::predict(self.kern, &self.val, self.classes, &Self::y32(y))
    }

    /// Test predictions.
    pub fn predict_test(&self, y: &[f64]) -> Vec<u8> {
        cpu::predict(self.kern, &self.test, self.classes, &Self::y32(y))
    }
}

impl Monitor for Evaluator {
    fn val_acc(&mut self, y: &[f64]) -> f64 {
        100.0 * metrics::accuracy(&self.predict_val(y), self.val.labels())
    }
    fn clean_f1(&mut self, x: &[f64]) -> f64 {
        100.0 * metrics::clean_f1(x, &self.corrupted)
    }
    fn iter_done(&mut self, _t: u32, rec: &IterRecord) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "F {:.4}  val {:.2}%  clean-F1 {:.1}%",
                rec.ul_loss, rec.val_acc, rec.clean_f1
            ));
            b.inc(1);
        }
    }
}

/// Check the flags that the data layer does not.
fn check_args(a: &HypercleanArgs) -> Result<TrainConfig, CliError> {
    let pos = |v: f64, flag: &str| {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(CliError::input(format!(
                "--{flag} {v}: must be positive and finite"
            )))
        }
    };
    if a.k == 0 {
        return Err(CliError::input(
            "--K 0: at least one lower-level step is needed",
        ));
    }
    if a.k > 100_000 {
        return Err(CliError::input(format!(
            "--K {}: at most 100000 lower-level steps",
            a.k
        )));
    }
    if matches!(a.method, Row::Method(Method::Trhg)) && (a.truncate == 0 || a.truncate > a.k) {
        return Err(CliError::input(format!(
            "--truncate {}: must lie in 1..=K ({})",
            a.truncate, a.k
        )));
    }
    if !(a.mu > 0.0 && a.mu < 1.0) {
        return Err(CliError::input(format!(
            "--mu {}: must lie in (0, 1)",
            a.mu
        )));
    }
    if !(a.alpha.is_finite() && a.alpha >= 0.0) {
        return Err(CliError::input(format!(
            "--alpha {}: must be finite and non-negative",
            a.alpha
        )));
    }
    if !(a.beta.is_finite() && a.beta >= 0.0) {
        return Err(CliError::input(format!(
            "--beta {}: must be finite and non-negative",
            a.beta
        )));
    }
    if !(a.lambda.is_finite() && a.lambda >= 0.0) {
        return Err(CliError::input(format!(
            "--lambda {}: must be finite and non-negative",
            a.lambda
        )));
    }
    let ll_lr = pos(a.ll_lr, "ll-lr")?;
    let s_u = pos(a.su.unwrap_or(ll_lr), "su")?;
    let s_l = pos(a.sl.unwrap_or(ll_lr), "sl")?;
    let ul_lr = pos(a.ul_lr, "ul-lr")?;
    let fd_eps = pos(a.fd_eps, "fd-eps")?;
    let cfg = TrainConfig {
        row: a.method,
        k: a.k,
        truncate: a.truncate,
        cg_iters: a.cg_iters,
        fd_eps,
        mu: a.mu,
        alpha: a.alpha,
        beta: a.beta,
        s_u,
        s_l,
        optimizer: a.optimizer,
        ul_lr,
        ul_iters: a.ul_iters,
    };
    cfg.dynamics::<f64>()
        .validate()
        .map_err(|e| CliError::input(format!("--mu/--alpha/--beta/--su/--sl: {e}")))?;
    Ok(cfg)
}

/// Options of a run that are not part of the method.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// λ of the regulariser.
    pub lambda: f64,
    /// Seed (reported).
    pub seed: u64,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// CPU backend: keep the softmax outputs for the reverse pass.
    pub prob_cache: bool,
    /// Where to run.
    pub device: Device,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            lambda: 1e-4,
            seed: 0,
            progress: false,
            prob_cache: true,
            device: Device::Cpu,
        }
    }
}

/// Train, evaluate and summarise a row on prepared data, on the CPU or a CUDA device.
pub fn run_on(
    data: &HostData,
    cfg: &TrainConfig,
    opt: &RunOptions,
) -> Result<(Summary, driver::Trained), CliError> {
    let problem = data.problem(opt.lambda as f32);
    problem
        .validate()
        .map_err(|e| CliError::input(format!("data: {e}")))?;
    match opt.device {
        Device::Cpu => {
            let mut backend =
                cpu::Cpu::new(&problem).map_err(|e| CliError::input(format!("data: {e}")))?;
            backend.set_prob_cache(opt.prob_cache);
            let kernels = format!("{:?}", backend.kernels()).to_lowercase();
            run_with(&mut backend, "cpu".into(), kernels, data, cfg, opt)
        }
        Device::Cuda(n) => {
            let name =
                cuda_probe(n).map_err(|e| CliError::input(format!("--device cuda:{n}: {e}")))?;
            let mut backend = bda_gpu::SoftmaxGpu::new(n, &problem)
                .map_err(|e| CliError::run(format!("--device cuda:{n}: {e}")))?;
            run_with(
                &mut backend,
                format!("cuda:{n}"),
                format!("cuda ({name})"),
                data,
                cfg,
                opt,
            )
        }
    }
}

/// The generic part of [`run_on`]: any backend with the four capabilities.
pub fn run_with<B>(
    backend: &mut B,
    device: String,
    kernels: String,
    data: &HostData,
    cfg: &TrainConfig,
    opt: &RunOptions,
) -> Result<(Summary, driver::Trained), CliError>
where
    B: LowerStep + UpperGradient + StepAdjoint + LowerHessian,
    B::Error: std::fmt::Display,
{
    let mut eval = Evaluator::new(data).map_err(|e| CliError::input(format!("data: {e}")))?;
    let iters = cfg.iterations();
    if opt.progress && iters > 0 {
        let bar = indicatif::ProgressBar::new(u64::from(iters));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed}/{eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(cfg.row.name());
        eval.bar = Some(bar);
    }
    let x0: Vec<f64> = match cfg.row {
        Row::Oracle => data
            .corrupted
            .iter()
            .map(|&c| if c { -1e4 } else { 1e4 })
            .collect(),
        _ => vec![0.0; data.train_labels.len()],
    };
    let y_len = (data.dim + 1) * data.classes;
    let trained = driver::train(backend, cfg, &x0, y_len, &mut eval)
        .map_err(|e| CliError::run(e.to_string()))?;
    if let Some(b) = eval.bar.take() {
        b.finish_and_clear();
    }
    let val_pred = eval.predict_val(&trained.y);
    let test_pred = eval.predict_test(&trained.y);
    let pct = |v: f64| (v * 1e4).round() / 100.0;
    let summary = Summary {
        dataset: data.dataset.clone(),
        method: cfg.row.name().to_string(),
        device,
        k: cfg.k,
        ul_iters: iters,
        ul_lr: cfg.ul_lr,
        optimizer: format!("{:?}", cfg.optimizer).to_lowercase(),
        n_train: data.train_labels.len(),
        n_val: data.val_labels.len(),
        n_test: data.test_labels.len(),
        noise: data.corrupted.iter().filter(|&&c| c).count() as f64
            / data.corrupted.len().max(1) as f64,
        ul_loss: trained.ul_loss,
        val_acc: pct(metrics::accuracy(&val_pred, &data.val_labels)),
        test_acc: pct(metrics::accuracy(&test_pred, &data.test_labels)),
        test_f1: pct(metrics::macro_f1(
            &test_pred,
            &data.test_labels,
            data.classes,
        )),
        clean_f1: pct(metrics::clean_f1(&trained.x, &data.corrupted)),
        seconds: trained.seconds,
        s_per_ul_iter: if iters > 0 {
            trained.loop_seconds / f64::from(iters)
        } else {
            0.0
        },
        load_seconds: 0.0,
        seed: opt.seed,
        threads: rayon::current_num_threads(),
        kernels,
        history: trained.history.clone(),
    };
    Ok((summary, trained))
}

/// Load the data of `args` (the data layer's protocol).
fn load(args: &HypercleanArgs) -> Result<HostData, CliError> {
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(args.dataset.default_dir()));
    HostData::load_mnist(
        &dir,
        args.dataset.name(),
        args.n_train,
        args.n_val,
        args.noise,
        args.seed,
    )
    .map_err(CliError::input)
}

impl HostData {
    /// The MNIST-format folder `dir` split by the protocol ([`crate::data::hyperclean_split`]);
    /// `name` is what reports call the dataset. Errors are one line naming the file or flag.
    pub fn load_mnist(
        dir: &std::path::Path,
        name: &str,
        n_train: usize,
        n_val: usize,
        noise: f64,
        seed: u64,
    ) -> Result<HostData, String> {
        let ds = crate::data::load_mnist_dir(dir).map_err(|e| e.to_string())?;
        let split = crate::data::hyperclean_split(&ds, n_train, n_val, noise, seed)
            .map_err(|e| e.to_string())?;
        Ok(HostData {
            dataset: name.to_string(),
            dim: split.train.dim,
            classes: 10,
            train_x: split.train.x,
            train_labels: split.train.labels,
            val_x: split.val.x,
            val_labels: split.val.labels,
            test_x: split.test.x,
            test_labels: split.test.labels,
            corrupted: split.corrupted,
        })
    }
}

/// Run `bda hyperclean`.
pub fn run(args: &HypercleanArgs) -> Result<(), CliError> {
    let cfg = check_args(args)?;
    if !(args.noise.is_finite() && (0.0..=1.0).contains(&args.noise)) {
        return Err(CliError::input(format!(
            "--noise {}: must be a fraction in [0, 1]",
            args.noise
        )));
    }
    let device = parse_device(&args.device)?;
    if let Device::Cuda(n) = device {
        // Fail before loading any data when there is no usable device.
        cuda_probe(n).map_err(|e| CliError::input(format!("--device {}: {e}", args.device)))?;
    }
    if args.threads > 0 {
        // Fails only if the global pool was already built (then it is used as it is).
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(args.threads)
            .build_global();
    }
    if let Some(p) = &args.plot {
        report::check_plot_path(p)?;
    }
    let t0 = Instant::now();
    let data = load(args)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let opt = RunOptions {
        lambda: args.lambda,
        seed: args.seed,
        progress,
        prob_cache: !args.no_prob_cache,
        device,
    };
    let (mut summary, _trained) = run_on(&data, &cfg, &opt)?;
    summary.load_seconds = load_seconds;
    if let Some(p) = &args.plot {
        report::plot(p, &summary)?;
    }
    if args.json {
        println!("{}", report::json(&summary));
    } else {
        print!("{}", report::table(&summary));
    }
    Ok(())
}
